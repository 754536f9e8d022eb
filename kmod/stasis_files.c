// SPDX-License-Identifier: GPL-2.0-only
/*
 * stasis_files.ko: the "files" extension of stasis.ko (extension id 1). It registers
 * with the core through stasis_register_extension(), which makes this module depend
 * on stasis.ko: the kernel refuses to load it without stasis.ko and to unload
 * stasis.ko before it. VERSION lists "files" exactly while it is loaded.
 *
 * Checkpoint: one FD_FILE record per descriptor on a regular file, directory, device
 * or terminal (fd flags, open flags, offset, identity, path; dup'ed descriptors share
 * a file_id), one FD_PIPE per pipe/FIFO end (pipe_id shared by both ends) and one
 * PIPE_DATA with the bytes buffered in each pipe, read without consuming them.
 * Refused (EOPNOTSUPP, logged): sockets (extension net), anonymous-inode files
 * (eventfd, epoll, signalfd, timerfd: extension events), sealed memfds, deleted
 * files over 256 MiB, FIFOs whose open file is not the inode's pipe. Deleted regular files and memfds
 * carry their contents (FILE_DATA after the first FD_FILE of the file).
 */
#define pr_fmt(fmt) "stasis_files: " fmt

#include <linux/module.h>
#include <linux/fs.h>
#include <linux/file.h>
#include <linux/fdtable.h>
#include <linux/pipe_fs_i.h>
#include <linux/highmem.h>
#include <linux/magic.h>
#include <linux/major.h>
#include <linux/kdev_t.h>
#include <linux/slab.h>
#include <linux/sched.h>
#include <linux/rcupdate.h>
#include <linux/dcache.h>
#include <linux/limits.h>
#include <linux/shmem_fs.h>
#include <linux/cred.h>
#include <uapi/linux/fcntl.h>
#include "stasis_compat.h"
#include "stasis_ext.h"

static_assert(sizeof(struct stasis_fd_file_rec) == 72);
static_assert(sizeof(struct stasis_fd_pipe_rec) == 40);
static_assert(sizeof(struct stasis_pipe_data_rec) == 16);
static_assert(sizeof(struct stasis_file_data_rec) == 24);

#define MAX_IDS 4096

struct files_ctx {
	const struct stasis_emit *emit;
	char *path;			/* PATH_MAX */
	const void **files;		/* open file descriptions seen (file_id = index + 1) */
	unsigned int nr_files;
	const void **pipes;		/* pipes seen (pipe_id = index + 1) */
	unsigned int nr_pipes;
};

/* Index + 1 of @p in @tab, adding it if new (*is_new). 0 when the table is full. */
static u32 files_id(const void **tab, unsigned int *nr, const void *p, bool *is_new)
{
	unsigned int i;

	*is_new = false;
	for (i = 0; i < *nr; i++)
		if (tab[i] == p)
			return i + 1;
	if (*nr >= MAX_IDS)
		return 0;
	tab[(*nr)++] = p;
	*is_new = true;
	return *nr;
}

static long files_path(struct files_ctx *c, struct file *f, bool anon_ok, u32 *len)
{
	char *s = d_path(&f->f_path, c->path, PATH_MAX);
	size_t n;

	*len = 0;
	if (IS_ERR(s))
		return anon_ok ? 0 : PTR_ERR(s);
	n = strlen(s);
	memmove(c->path, s, n);
	*len = n;
	return 0;
}

static bool files_is_tty(struct inode *inode)
{
	unsigned int major = imajor(inode);

	return major == TTY_MAJOR || major == TTYAUX_MAJOR ||
	       (major >= UNIX98_PTY_SLAVE_MAJOR &&
		major < UNIX98_PTY_SLAVE_MAJOR + UNIX98_PTY_MAJOR_COUNT);
}

/* The bytes buffered in @pipe, without consuming them. */
static long files_pipe_data(struct files_ctx *c, struct pipe_inode_info *pipe, u32 pipe_id)
{
	struct stasis_pipe_data_rec rec = { .pipe_id = pipe_id };
	unsigned int head, tail, mask;
	size_t len = 0, off = 0;
	u8 *buf = NULL;
	long r;

	pipe_lock(pipe);
	head = pipe->head;
	tail = pipe->tail;
	mask = pipe->ring_size - 1;
	for (; tail != head; tail++)
		len += pipe->bufs[tail & mask].len;
	if (len) {
		buf = kvmalloc(len, GFP_KERNEL);
		if (!buf) {
			pipe_unlock(pipe);
			return -ENOMEM;
		}
		for (tail = pipe->tail; tail != head; tail++) {
			struct pipe_buffer *b = &pipe->bufs[tail & mask];
			void *p;

			if (!b->len)
				continue;
			if (off + b->len > len)
				break;
			p = stasis_kmap_local(b->page);
			memcpy(buf + off, p + b->offset, b->len);
			stasis_kunmap_local(p);
			off += b->len;
		}
	}
	pipe_unlock(pipe);
	rec.len = off;
	r = c->emit->record(c->emit->wctx, STASIS_KIND_PIPE_DATA, &rec, sizeof(rec), buf, off);
	kvfree(buf);
	return r;
}

#define DELETED_SUFFIX " (deleted)"
#define DELETED_SUFFIX_LEN (sizeof(DELETED_SUFFIX) - 1)
/* Largest deleted file (or memfd) whose contents a checkpoint carries. */
#define FILES_MAX_DATA (256u << 20)

/* Seals other than F_SEAL_SEAL could not be put back: refuse such memfds. */
static long files_check_seals(unsigned int fd, struct file *f)
{
	struct inode *inode = file_inode(f);

	if (inode->i_sb->s_magic == TMPFS_MAGIC && (SHMEM_I(inode)->seals & ~F_SEAL_SEAL)) {
		pr_warn("checkpoint refused: fd %u is a sealed memfd (seals are not restored)\n", fd);
		return -EOPNOTSUPP;
	}
	return 0;
}

/* FILE_DATA: the contents of a deleted file or memfd, read without moving its offset
 * (through a second, read-only open of the same file when @f is write-only). */
static long files_data(struct files_ctx *c, unsigned int fd, struct file *f, u32 file_id,
		       u64 size)
{
	struct stasis_file_data_rec rec = { .file_id = file_id, .size = size };
	struct file *rf = f;
	loff_t pos = 0;
	u8 *buf = NULL;
	long r = 0;

	if (size > FILES_MAX_DATA) {
		pr_warn("checkpoint refused: fd %u: deleted file of %llu bytes (at most %u are carried)\n",
			fd, size, FILES_MAX_DATA);
		return -EOPNOTSUPP;
	}
	if (!(f->f_mode & FMODE_READ)) {
		rf = dentry_open(&f->f_path, O_RDONLY | O_LARGEFILE, current_cred());
		if (IS_ERR(rf))
			return PTR_ERR(rf);
	}
	if (size) {
		buf = kvmalloc(size, GFP_KERNEL);
		if (!buf)
			r = -ENOMEM;
	}
	while (!r && pos < size) {
		ssize_t n = kernel_read(rf, buf + pos, size - pos, &pos);

		if (n < 0)
			r = n;
		else if (n == 0)
			r = -EIO;	/* shrank while the process was parked: cannot be */
	}
	if (!r)
		r = c->emit->record(c->emit->wctx, STASIS_KIND_FILE_DATA, &rec, sizeof(rec), buf,
				    size);
	kvfree(buf);
	if (rf != f)
		fput(rf);
	return r;
}

static long files_one(struct files_ctx *c, unsigned int fd, struct file *f, bool cloexec)
{
	struct inode *inode = file_inode(f);
	umode_t mode = inode->i_mode;
	unsigned long magic = f->f_path.dentry->d_sb->s_magic;
	bool is_new, deleted;
	u32 file_id, plen;
	long r;

	file_id = files_id(c->files, &c->nr_files, f, &is_new);
	if (!file_id)
		return -E2BIG;

	if (S_ISSOCK(mode)) {
		pr_warn("checkpoint refused: fd %u is a socket (needs extension net, module stasis_net.ko)\n", fd);
		return -EOPNOTSUPP;
	}
	if (magic == ANON_INODE_FS_MAGIC) {
		pr_warn("checkpoint refused: fd %u is an eventfd/epoll/signalfd/timerfd or other anonymous inode (needs extension events)\n",
			fd);
		return -EOPNOTSUPP;
	}
	if (S_ISFIFO(mode)) {
		struct pipe_inode_info *pipe = f->private_data;
		struct stasis_fd_pipe_rec rec = {
			.fd = fd,
			.fd_flags = cloexec ? FD_CLOEXEC : 0,
			.open_flags = f->f_flags,
			.file_id = file_id,
			.fifo = magic != PIPEFS_MAGIC,
			.ino = inode->i_ino,
		};

		/* private_data is a pipe_inode_info only for pipefifo_fops files (not
		 * exported): a pipefs file is one; an open named FIFO is one when its
		 * private_data is the inode's pipe (fifo_open sets both). */
		if (!pipe || (magic != PIPEFS_MAGIC && pipe != READ_ONCE(inode->i_pipe))) {
			pr_warn("checkpoint refused: fd %u is a FIFO whose pipe cannot be proven\n", fd);
			return -EOPNOTSUPP;
		}
		rec.pipe_id = files_id(c->pipes, &c->nr_pipes, pipe, &is_new);
		if (!rec.pipe_id)
			return -E2BIG;
		rec.capacity = pipe->max_usage * PAGE_SIZE;
		plen = 0;
		if (rec.fifo) {
			r = files_path(c, f, false, &plen);
			if (r)
				return r;
		}
		rec.path_len = plen;
		r = c->emit->record(c->emit->wctx, STASIS_KIND_FD_PIPE, &rec, sizeof(rec), c->path, plen);
		if (r || !is_new)
			return r;
		return files_pipe_data(c, pipe, rec.pipe_id);
	}
	{
		struct stasis_fd_file_rec rec = {
			.fd = fd,
			.fd_flags = cloexec ? FD_CLOEXEC : 0,
			.open_flags = f->f_flags,
			.file_id = file_id,
			.pos = f->f_pos,
			.size = i_size_read(inode),
			.mode = mode,
			.dev = new_encode_dev(inode->i_sb->s_dev),
			.ino = inode->i_ino,
			.rdev = new_encode_dev(inode->i_rdev),
		};

		if (S_ISREG(mode))
			rec.kind = STASIS_FILE_REGULAR;
		else if (S_ISDIR(mode))
			rec.kind = STASIS_FILE_DIRECTORY;
		else if (S_ISCHR(mode))
			rec.kind = files_is_tty(inode) ? STASIS_FILE_TTY : STASIS_FILE_CHAR;
		else if (S_ISBLK(mode))
			rec.kind = STASIS_FILE_BLOCK;
		else
			return -EOPNOTSUPP;
		r = files_path(c, f, false, &plen);
		if (r)
			return r;
		if (rec.kind == STASIS_FILE_REGULAR && !strncmp(c->path, "/memfd:", 7))
			rec.kind = STASIS_FILE_MEMFD;
		deleted = rec.kind == STASIS_FILE_MEMFD ||
			  (rec.kind == STASIS_FILE_REGULAR && d_unlinked(f->f_path.dentry));
		if (deleted) {
			r = files_check_seals(fd, f);
			if (r)
				return r;
			rec.file_flags |= STASIS_FILE_DELETED;
			/* d_path's " (deleted)" is not part of the name. */
			if (plen >= DELETED_SUFFIX_LEN &&
			    !memcmp(c->path + plen - DELETED_SUFFIX_LEN, DELETED_SUFFIX,
				    DELETED_SUFFIX_LEN))
				plen -= DELETED_SUFFIX_LEN;
		} else if (d_unlinked(f->f_path.dentry)) {
			pr_warn("checkpoint refused: fd %u is a deleted file that is not a regular file\n",
				fd);
			return -EOPNOTSUPP;
		}
		rec.path_len = plen;
		r = c->emit->record(c->emit->wctx, STASIS_KIND_FD_FILE, &rec, sizeof(rec), c->path,
				    plen);
		if (r || !deleted || !is_new)
			return r;
		return files_data(c, fd, f, file_id, rec.size);
	}
}

static long stasis_files_checkpoint(const struct stasis_emit *emit)
{
	struct files_ctx c = { .emit = emit };
	unsigned int fd = 0;
	long r = 0;

	c.path = kmalloc(PATH_MAX, GFP_KERNEL);
	c.files = kvmalloc_array(MAX_IDS, sizeof(*c.files), GFP_KERNEL);
	c.pipes = kvmalloc_array(MAX_IDS, sizeof(*c.pipes), GFP_KERNEL);
	if (!c.path || !c.files || !c.pipes) {
		r = -ENOMEM;
		goto out;
	}
	for (;; fd++) {
		struct file *f = stasis_next_file(&fd);

		if (!f)
			break;
		r = files_one(&c, fd, f, stasis_fd_cloexec(fd));
		fput(f);
		if (r)
			break;
	}
out:
	kvfree(c.pipes);
	kvfree(c.files);
	kfree(c.path);
	return r;
}

static const struct stasis_extension_ops stasis_files_ops = {
	.abi = STASIS_EXT_ABI,
	.id = STASIS_EXT_FILES,
	.name = "files",
	.owner = THIS_MODULE,
	.checkpoint = stasis_files_checkpoint,
};

static int __init stasis_files_init(void)
{
	return stasis_register_extension(&stasis_files_ops);
}

static void __exit stasis_files_exit(void)
{
	stasis_unregister_extension(&stasis_files_ops);
}

module_init(stasis_files_init);
module_exit(stasis_files_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("stasis: files extension (regular files, pipes, terminals)");
MODULE_VERSION("0.1.0");
MODULE_SOFTDEP("pre: stasis");
