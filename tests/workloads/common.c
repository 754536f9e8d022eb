/* Shared code for the stasis self-checking workloads. See README.md. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_OPTS 32

static const char *verdict_path, *ready_path, *stop_path;
static char ready_buf[4096], stop_buf[4096], dir_buf[4096];
static const char *opt_names[MAX_OPTS], *opt_vals[MAX_OPTS];
static int nopts;
static const char *flag_names[MAX_OPTS];
static int nflags;

volatile int wl_stopping;

static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;
static char fail_msg[512];
static volatile int fail_count;

static void usage(const char *prog)
{
    fprintf(stderr, "usage: %s --verdict FILE [--ready FILE] [--stop FILE] [options]\n", prog);
    exit(2);
}

static int in_list(const char *const *l, const char *s)
{
    for (; l && *l; l++)
        if (strcmp(*l, s) == 0)
            return 1;
    return 0;
}

void wl_init(int argc, char **argv, const char *const *extra, const char *const *flags)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (in_list(flags, a)) {
            if (nflags < MAX_OPTS)
                flag_names[nflags++] = a;
            continue;
        }
        if (i + 1 >= argc)
            usage(argv[0]);
        const char *v = argv[++i];
        if (strcmp(a, "--verdict") == 0)
            verdict_path = v;
        else if (strcmp(a, "--ready") == 0)
            ready_path = v;
        else if (strcmp(a, "--stop") == 0)
            stop_path = v;
        else if (in_list(extra, a) && nopts < MAX_OPTS) {
            opt_names[nopts] = a;
            opt_vals[nopts++] = v;
        } else {
            fprintf(stderr, "%s: unknown option %s\n", argv[0], a);
            usage(argv[0]);
        }
    }
    if (!verdict_path)
        usage(argv[0]);
    if (!ready_path) {
        snprintf(ready_buf, sizeof ready_buf, "%s.ready", verdict_path);
        ready_path = ready_buf;
    }
    if (!stop_path) {
        snprintf(stop_buf, sizeof stop_buf, "%s.stop", verdict_path);
        stop_path = stop_buf;
    }
    snprintf(dir_buf, sizeof dir_buf, "%s", verdict_path);
    char *d = dirname(dir_buf);
    if (d != dir_buf)
        memmove(dir_buf, d, strlen(d) + 1);
}

const char *wl_opt(const char *name, const char *dflt)
{
    for (int i = nopts - 1; i >= 0; i--)
        if (strcmp(opt_names[i], name) == 0)
            return opt_vals[i];
    return dflt;
}

int wl_flag(const char *name)
{
    for (int i = 0; i < nflags; i++)
        if (strcmp(flag_names[i], name) == 0)
            return 1;
    return 0;
}

const char *wl_verdict_path(void) { return verdict_path; }
const char *wl_verdict_dir(void) { return dir_buf; }

int wl_write_file_atomic(const char *path, const char *text)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    size_t n = strlen(text), off = 0;
    while (off < n) {
        ssize_t w = write(fd, text + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    if (close(fd) != 0)
        return -1;
    return rename(tmp, path);
}

void wl_ready(const void *damage, size_t len)
{
    char line[256];
    snprintf(line, sizeof line, "ready pid=%d damage=%#lx len=%zu\n", (int)getpid(),
             (unsigned long)(uintptr_t)damage, len);
    if (wl_write_file_atomic(ready_path, line) != 0) {
        perror("write ready file");
        exit(3);
    }
}

int wl_stop_requested(void) { return access(stop_path, F_OK) == 0; }

void wl_wait_stop(void)
{
    while (!wl_stop_requested())
        wl_sleep_ms(10);
    __atomic_store_n(&wl_stopping, 1, __ATOMIC_SEQ_CST);
}

void wl_fail(const char *fmt, ...)
{
    pthread_mutex_lock(&fail_lock);
    if (fail_count++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(fail_msg, sizeof fail_msg, fmt, ap);
        va_end(ap);
        for (char *p = fail_msg; *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
    }
    pthread_mutex_unlock(&fail_lock);
}

int wl_failed(void) { return __atomic_load_n(&fail_count, __ATOMIC_SEQ_CST) != 0; }

int wl_finish(void)
{
    char line[700];
    int failed;
    pthread_mutex_lock(&fail_lock);
    failed = fail_count != 0;
    if (failed) {
        if (fail_count > 1)
            snprintf(line, sizeof line, "FAIL: %s (+%d more)\n", fail_msg, fail_count - 1);
        else
            snprintf(line, sizeof line, "FAIL: %s\n", fail_msg);
    } else {
        snprintf(line, sizeof line, "ok\n");
    }
    pthread_mutex_unlock(&fail_lock);
    if (wl_write_file_atomic(verdict_path, line) != 0) {
        perror("write verdict file");
        return 1;
    }
    return failed ? 1 : 0;
}

uint64_t wl_hash(const void *p, size_t n, uint64_t seed)
{
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ULL ^ seed;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return wl_mix(h);
}

uint64_t wl_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

void wl_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L}, rem;
    while (nanosleep(&ts, &rem) != 0 && errno == EINTR)
        ts = rem;
}

uint64_t wl_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

pid_t wl_gettid(void) { return (pid_t)syscall(SYS_gettid); }
