/* files: regular files in --dir DIR (default: the verdict file's directory):
 *   - a file open for reading at a non-zero offset (the next read must return
 *     the bytes at that offset)
 *   - a dup()ed pair sharing one offset
 *   - an O_APPEND file whose offset was moved back to 0 (appends must still
 *     go to the end: the flag, not just the offset, must survive)
 *   - a deleted-but-open file (content and offset checked through the fd)
 *   - a MAP_SHARED file mapping whose fd was closed: pages written before the
 *     checkpoint and after it must reach the file (read back with pread)
 *   - an fd at number 77 with FD_CLOEXEC and O_NONBLOCK
 * A checker thread verifies offsets, flags and contents continuously.
 * Damage range: the table of expected fds, offsets and content seeds. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define READ_LEN 65536
#define APP_LEN0 1000
#define APP_LEN1 500
#define DEL_LEN 8192
#define MAP_LEN 16384
#define FLAGS_FD 77

struct expect {
    int fd_read, fd_dup_a, fd_dup_b, fd_app, fd_del, fd_flags;
    off_t read_off, dup_off, del_off;
    uint64_t seed_read, seed_app, seed_del, seed_map;
    unsigned char *map;
    char path_read[512], path_app[512], path_map[512];
    uint64_t magic;
} __attribute__((aligned(64)));

static struct expect expect;
static uint64_t expect_hash;
static volatile int checker_running;

static unsigned char gen(uint64_t seed, size_t i) { return (unsigned char)wl_mix(seed + i); }

static int match(const unsigned char *b, size_t n, uint64_t seed, size_t start)
{
    for (size_t i = 0; i < n; i++)
        if (b[i] != gen(seed, start + i))
            return 0;
    return 1;
}

static int write_gen(int fd, uint64_t seed, size_t start, size_t n)
{
    unsigned char buf[4096];
    while (n) {
        size_t k = n < sizeof buf ? n : sizeof buf;
        for (size_t i = 0; i < k; i++)
            buf[i] = gen(seed, start + i);
        ssize_t w = write(fd, buf, k);
        if (w != (ssize_t)k)
            return -1;
        start += k;
        n -= k;
    }
    return 0;
}

static int read_full(int fd, unsigned char *b, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, b + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

static int pread_full(int fd, unsigned char *b, size_t n, off_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, b + got, n - got, off + (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

/* Checks that do not move any offset; used continuously and at the end. */
static int passive_checks(const char *when)
{
    const struct expect *e = &expect;
    static __thread unsigned char buf[DEL_LEN];
    if (e->magic != 0xf11e5)
        return wl_fail("files: expected table corrupted (%s)", when), 0;
    off_t o = lseek(e->fd_read, 0, SEEK_CUR);
    if (o != e->read_off)
        return wl_fail("files: read fd %d offset %ld, expected %ld (%s)", e->fd_read, (long)o,
                       (long)e->read_off, when), 0;
    o = lseek(e->fd_dup_a, 0, SEEK_CUR);
    if (o != e->dup_off || lseek(e->fd_dup_b, 0, SEEK_CUR) != e->dup_off)
        return wl_fail("files: dup pair offset %ld, expected %ld (%s)", (long)o, (long)e->dup_off,
                       when), 0;
    int fl = fcntl(e->fd_app, F_GETFL);
    if (fl < 0 || !(fl & O_APPEND) || (fl & O_ACCMODE) != O_WRONLY)
        return wl_fail("files: append fd %d status flags %#x (%s)", e->fd_app, fl, when), 0;
    struct stat st;
    if (fstat(e->fd_del, &st) != 0 || st.st_nlink != 0 || st.st_size != DEL_LEN)
        return wl_fail("files: deleted fd %d: nlink/size wrong (%s)", e->fd_del, when), 0;
    if (pread_full(e->fd_del, buf, DEL_LEN, 0) != 0 || !match(buf, DEL_LEN, e->seed_del, 0))
        return wl_fail("files: deleted file content wrong (%s)", when), 0;
    if (lseek(e->fd_del, 0, SEEK_CUR) != e->del_off)
        return wl_fail("files: deleted fd offset wrong (%s)", when), 0;
    int fdf = fcntl(e->fd_flags, F_GETFD);
    fl = fcntl(e->fd_flags, F_GETFL);
    if (fdf != FD_CLOEXEC || fl < 0 || !(fl & O_NONBLOCK) || (fl & O_ACCMODE) != O_RDONLY)
        return wl_fail("files: fd %d fd flags %#x status flags %#x, expected FD_CLOEXEC and "
                       "O_NONBLOCK (%s)", e->fd_flags, fdf, fl, when), 0;
    int others[] = {e->fd_read, e->fd_dup_a, e->fd_dup_b, e->fd_app, e->fd_del};
    for (unsigned i = 0; i < sizeof others / sizeof *others; i++) {
        fdf = fcntl(others[i], F_GETFD);
        fl = fcntl(others[i], F_GETFL);
        if (fdf != 0 || fl < 0 || (fl & O_NONBLOCK))
            return wl_fail("files: fd %d has fd flags %#x status flags %#x (%s)", others[i], fdf,
                           fl, when), 0;
    }
    if (!match(e->map, MAP_LEN / 2, e->seed_map, 0))
        return wl_fail("files: shared file mapping content wrong (%s)", when), 0;
    return 1;
}

static void *checker(void *a)
{
    (void)a;
    checker_running = 1;
    while (!wl_stopping) {
        if (!passive_checks("running"))
            return NULL;
        wl_sleep_ms(20);
    }
    return NULL;
}

static int must(int v, const char *what)
{
    if (v < 0) {
        perror(what);
        exit(3);
    }
    return v;
}

int main(int argc, char **argv)
{
    static const char *const extra[] = {"--dir", NULL};
    wl_init(argc, argv, extra, NULL);
    const char *dir = wl_opt("--dir", wl_verdict_dir());
    struct expect *e = &expect;
    int pid = (int)getpid();
    e->magic = 0xf11e5;
    e->seed_read = 0x4eadULL << 20;
    e->seed_app = 0xa99ULL << 20;
    e->seed_del = 0xde1ULL << 20;
    e->seed_map = 0x3a9ULL << 20;
    snprintf(e->path_read, sizeof e->path_read, "%s/files-%d.read", dir, pid);
    snprintf(e->path_app, sizeof e->path_app, "%s/files-%d.append", dir, pid);
    snprintf(e->path_map, sizeof e->path_map, "%s/files-%d.mmap", dir, pid);
    char path_del[600];
    snprintf(path_del, sizeof path_del, "%s/files-%d.deleted", dir, pid);

    int fd = must(open(e->path_read, O_WRONLY | O_CREAT | O_TRUNC, 0644), "create read file");
    must(write_gen(fd, e->seed_read, 0, READ_LEN), "write read file");
    close(fd);
    unsigned char buf[DEL_LEN];
    e->fd_read = must(open(e->path_read, O_RDONLY), "open read file");
    must((int)lseek(e->fd_read, 12345, SEEK_SET), "lseek");
    if (read_full(e->fd_read, buf, 100) != 0 || !match(buf, 100, e->seed_read, 12345)) {
        fprintf(stderr, "files: initial read wrong\n");
        return 3;
    }
    e->read_off = 12445;

    e->fd_dup_a = must(open(e->path_read, O_RDONLY), "open dup file");
    must((int)lseek(e->fd_dup_a, 5000, SEEK_SET), "lseek");
    e->fd_dup_b = must(dup(e->fd_dup_a), "dup");
    e->dup_off = 5000;

    e->fd_app = must(open(e->path_app, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644), "append");
    must(write_gen(e->fd_app, e->seed_app, 0, APP_LEN0), "write append file");
    must((int)lseek(e->fd_app, 0, SEEK_SET), "lseek append");

    e->fd_del = must(open(path_del, O_RDWR | O_CREAT | O_TRUNC, 0644), "create deleted file");
    must(write_gen(e->fd_del, e->seed_del, 0, DEL_LEN), "write deleted file");
    must(unlink(path_del), "unlink");
    e->del_off = 4096;
    must((int)lseek(e->fd_del, e->del_off, SEEK_SET), "lseek deleted");

    fd = must(open(e->path_map, O_RDWR | O_CREAT | O_TRUNC, 0644), "create map file");
    must(ftruncate(fd, MAP_LEN), "ftruncate");
    e->map = mmap(NULL, MAP_LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (e->map == MAP_FAILED) {
        perror("mmap");
        return 3;
    }
    close(fd); /* the mapping alone keeps the file */
    for (size_t i = 0; i < MAP_LEN / 2; i++)
        e->map[i] = gen(e->seed_map, i);

    fd = must(open(e->path_read, O_RDONLY | O_CLOEXEC | O_NONBLOCK), "open flags file");
    e->fd_flags = must(dup3(fd, FLAGS_FD, O_CLOEXEC), "dup3");
    close(fd);
    expect_hash = wl_hash(e, sizeof *e, 0);

    if (!passive_checks("setup")) {
        return wl_finish();
    }
    pthread_t th;
    if (pthread_create(&th, NULL, checker, NULL) != 0) {
        perror("pthread_create");
        return 3;
    }
    while (!checker_running)
        wl_sleep_ms(1);
    wl_ready(e, sizeof *e);
    wl_wait_stop();
    pthread_join(th, NULL);

    if (wl_hash(e, sizeof *e, 0) != expect_hash)
        wl_fail("files: expected table corrupted");
    if (!passive_checks("final"))
        return wl_finish();
    /* Reads continue at the saved offsets. */
    if (read_full(e->fd_read, buf, 256) != 0 || !match(buf, 256, e->seed_read, e->read_off))
        wl_fail("files: read at saved offset returned wrong bytes");
    if (read_full(e->fd_dup_b, buf, 100) != 0 || !match(buf, 100, e->seed_read, e->dup_off))
        wl_fail("files: read through dup returned wrong bytes");
    else if (lseek(e->fd_dup_a, 0, SEEK_CUR) != e->dup_off + 100)
        wl_fail("files: dup'ed fds no longer share their offset");
    if (read_full(e->fd_del, buf, DEL_LEN - e->del_off) != 0 ||
        !match(buf, DEL_LEN - e->del_off, e->seed_del, e->del_off))
        wl_fail("files: read of deleted file at saved offset returned wrong bytes");
    char link[64], target[700];
    snprintf(link, sizeof link, "/proc/self/fd/%d", e->fd_del);
    ssize_t tl = readlink(link, target, sizeof target - 1);
    target[tl > 0 ? tl : 0] = 0;
    if (tl < 10 || strcmp(target + tl - 10, " (deleted)") != 0)
        wl_fail("files: deleted fd links to '%s'", target);
    /* Append goes to the end although the offset was set to 0. */
    if (write_gen(e->fd_app, e->seed_app, APP_LEN0, APP_LEN1) != 0)
        wl_fail("files: append write failed: %s", strerror(errno));
    static unsigned char big[READ_LEN];
    fd = open(e->path_app, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size != APP_LEN0 + APP_LEN1)
        wl_fail("files: append file has size %ld, expected %d", fd < 0 ? -1L : (long)st.st_size,
                APP_LEN0 + APP_LEN1);
    else if (pread_full(fd, big, APP_LEN0 + APP_LEN1, 0) != 0 ||
             !match(big, APP_LEN0 + APP_LEN1, e->seed_app, 0))
        wl_fail("files: append file content wrong");
    if (fd >= 0)
        close(fd);
    /* Shared mapping: new writes reach the file. */
    for (size_t i = MAP_LEN / 2; i < MAP_LEN; i++)
        e->map[i] = gen(e->seed_map, i);
    fd = open(e->path_map, O_RDONLY);
    if (fd < 0 || pread_full(fd, big, MAP_LEN, 0) != 0)
        wl_fail("files: cannot read back mapped file");
    else if (!match(big, MAP_LEN / 2, e->seed_map, 0))
        wl_fail("files: pages written through the shared mapping before stop are not in the file");
    else if (!match(big + MAP_LEN / 2, MAP_LEN / 2, e->seed_map, MAP_LEN / 2))
        wl_fail("files: pages written through the shared mapping after stop are not in the file");
    if (fd >= 0)
        close(fd);
    int ok = !wl_failed();
    int rc = wl_finish();
    if (ok) {
        unlink(e->path_read);
        unlink(e->path_app);
        unlink(e->path_map);
    }
    return rc;
}
