/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The interface between stasis.ko and its extension modules (stasis_<kind>.ko).
 * An extension registers the record kinds it handles with the core by calling
 * stasis_register_extension() from its init and stasis_unregister_extension()
 * from its exit. Its ids are those of the image format (stasis-abi EXT_*).
 */
#ifndef STASIS_EXT_H
#define STASIS_EXT_H

#include <linux/types.h>

struct module;

/* Bumped whenever struct stasis_extension_ops changes. */
#define STASIS_EXT_ABI 2

/* Extension ids (crates/abi: EXT_*; crates/image: Extension). */
#define STASIS_EXT_CORE   0
#define STASIS_EXT_FILES  1
#define STASIS_EXT_NET    2
#define STASIS_EXT_EVENTS 3
#define STASIS_EXT_IPC    4
#define STASIS_EXT_TREE   5
#define STASIS_EXT_MAX    63

/*
 * Record output during a checkpoint. record() appends one record (fixed part + one
 * tail) to the image; the core accepts only the extension's own kinds with their
 * exact fixed size. Returns 0 or -errno (stop and return it).
 */
struct stasis_emit {
	void *wctx;
	long (*record)(void *wctx, u32 kind, const void *fixed, size_t fixed_len,
		       const void *tail, size_t tail_len);
};

struct stasis_extension_ops {
	unsigned int abi;	/* STASIS_EXT_ABI */
	unsigned int id;	/* STASIS_EXT_*, 1..STASIS_EXT_MAX */
	const char *name;	/* "files": the module is stasis_<name>.ko */
	struct module *owner;	/* THIS_MODULE */
	/*
	 * Checkpoint: called in a parked thread of the target (current is the target;
	 * its other threads are parked) after the core's records. Writes this
	 * extension's records through @emit, or refuses with -EOPNOTSUPP after logging
	 * why. May sleep. NULL: nothing to write.
	 */
	long (*checkpoint)(const struct stasis_emit *emit);
};

/* Record kinds (crates/image records.rs kind::*) and layouts of the files extension. */
#define STASIS_KIND_FD_FILE	0x00010001u
#define STASIS_KIND_FILE_DATA	0x00010002u
#define STASIS_KIND_FD_PIPE	0x00010003u
#define STASIS_KIND_PIPE_DATA	0x00010004u

struct stasis_fd_file_rec {
	u32 fd, fd_flags, open_flags, kind, file_id, file_flags;
	u64 pos, size;
	u32 mode, path_len;
	u64 dev, ino, rdev;
};

struct stasis_fd_pipe_rec {
	u32 fd, fd_flags, open_flags, pipe_id, file_id, fifo, capacity, path_len;
	u64 ino;
};

/* FILE_DATA (emitted through record(): tail = the data, data_off filled by the core). */
struct stasis_file_data_rec {
	u32 file_id, _pad0;
	u64 size, data_off;
};

struct stasis_pipe_data_rec {
	u32 pipe_id, _pad0;
	u64 len;
};

#define STASIS_FILE_REGULAR	1
#define STASIS_FILE_DIRECTORY	2
#define STASIS_FILE_CHAR	3
#define STASIS_FILE_BLOCK	4
#define STASIS_FILE_TTY		5
#define STASIS_FILE_MEMFD	6

/* stasis_fd_file_rec.file_flags */
#define STASIS_FILE_DELETED	1

int stasis_register_extension(const struct stasis_extension_ops *ops);
void stasis_unregister_extension(const struct stasis_extension_ops *ops);

#endif
