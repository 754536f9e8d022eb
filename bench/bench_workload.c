/* bench_workload: the benchmark target for bench/run.sh.
 *
 *   bench_workload --threads N --touch-mib M --verdict FILE [--ready FILE] [--stop FILE]
 *                  [--spin ITER] [--sleep-us US]
 *
 * Follows the workload protocol of tests/workloads/README.md:
 *  - becomes a session leader (setsid) so that criu can dump it;
 *  - maps M MiB of private anonymous memory and has N threads fill it (each its own
 *    slice) with a pattern in which every 8-byte word is distinct and non-zero, so no
 *    page is a zero page and every page must be saved;
 *  - the threads then keep running: bursts of cheap LCG steps (--spin, default 20000),
 *    a spot check of one word of their slice, a nanosleep (--sleep-us, default 1000);
 *  - writes the ready file atomically: "ready pid=P damage=0xADDR len=4096";
 *  - when the stop file appears: checks that every thread still advances (proves they
 *    all run after a restart), stops them, and verifies every word of the memory, each
 *    thread's LCG state against its step count (jump-ahead from the seed), and its TID;
 *  - writes the verdict atomically: "ok" or "FAIL: <first failure> (+N more)".
 * Exit 0 ok, 1 fail, 2 usage, 3 setup error (no verdict then).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define LCG_A 6364136223846793005ULL
#define LCG_C 1442695040888963407ULL
#define PAT_K 0x9E3779B97F4A7C15ULL
#define PAT_SALT 0x5ca1ab1e0ddba11ULL
#define MAX_THREADS 256

struct thr {
    /* written by the thread, read by main */
    uint64_t x;       /* LCG state after n steps */
    uint64_t n;       /* steps done */
    uint64_t bursts;  /* bursts done (main watches it advance) */
    uint64_t seed;
    pid_t tid;        /* gettid() at start */
    int idx;
    pthread_t pt;
    uint64_t *lo, *hi; /* the slice of memory */
    char pad[64];
};

static const char *verdict_path, *ready_path, *stop_path;
static char ready_buf[4096], stop_buf[4096];
static int nthreads = 1;
static long touch_mib = 64, spin = 20000, sleep_us = 1000;
static uint64_t *mem;
static size_t mem_words;
static struct thr thr[MAX_THREADS];
static volatile int stopping;
static volatile int filled;

static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;
static char fail_msg[512];
static int fail_count;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    pthread_mutex_lock(&fail_lock);
    if (fail_count++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(fail_msg, sizeof fail_msg, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&fail_lock);
}

static int write_atomic(const char *path, const char *text)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    if (close(fd) != 0)
        return -1;
    return rename(tmp, path);
}

static inline uint64_t pattern(size_t i)
{
    return ((uint64_t)(i + 1) * PAT_K) ^ PAT_SALT;
}

static inline uint64_t lcg(uint64_t x)
{
    return x * LCG_A + LCG_C;
}

/* x after n LCG steps from x0, in O(log n). */
static uint64_t lcg_jump(uint64_t x0, uint64_t n)
{
    uint64_t cur_mult = LCG_A, cur_plus = LCG_C, acc_mult = 1, acc_plus = 0;
    while (n) {
        if (n & 1) {
            acc_mult *= cur_mult;
            acc_plus = acc_plus * cur_mult + cur_plus;
        }
        cur_plus = (cur_mult + 1) * cur_plus;
        cur_mult *= cur_mult;
        n >>= 1;
    }
    return acc_mult * x0 + acc_plus;
}

static pid_t gettid_raw(void)
{
    return (pid_t)syscall(SYS_gettid);
}

static void sleep_us_once(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    if (nanosleep(&ts, NULL) != 0 && errno != EINTR)
        fail("nanosleep: %s", strerror(errno));
}

static void *worker(void *arg)
{
    struct thr *t = arg;
    t->tid = gettid_raw();
    /* Fill this thread's slice. */
    for (uint64_t *p = t->lo; p < t->hi; p++)
        *p = pattern((size_t)(p - mem));
    __atomic_add_fetch(&filled, 1, __ATOMIC_SEQ_CST);

    uint64_t x = t->seed, n = 0, r = t->seed ^ 0xabcdef;
    size_t slice = (size_t)(t->hi - t->lo);
    while (!__atomic_load_n(&stopping, __ATOMIC_ACQUIRE)) {
        for (long k = 0; k < spin; k++)
            x = lcg(x);
        n += (uint64_t)spin;
        __atomic_store_n(&t->x, x, __ATOMIC_RELAXED);
        __atomic_store_n(&t->n, n, __ATOMIC_RELEASE);
        __atomic_add_fetch(&t->bursts, 1, __ATOMIC_RELEASE);
        /* Spot check one word of the slice. */
        if (slice) {
            r = lcg(r);
            size_t i = (size_t)(r >> 11) % slice;
            uint64_t *p = t->lo + i;
            if (*p != pattern((size_t)(p - mem)))
                fail("thread %d: word %zu is 0x%llx while running", t->idx, (size_t)(p - mem),
                     (unsigned long long)*p);
        }
        if (gettid_raw() != t->tid)
            fail("thread %d: tid %d, was %d", t->idx, gettid_raw(), t->tid);
        if (sleep_us > 0)
            sleep_us_once(sleep_us);
    }
    /* Verify the slice (in parallel with the other threads). */
    size_t bad = 0;
    for (uint64_t *p = t->lo; p < t->hi; p++)
        if (*p != pattern((size_t)(p - mem))) {
            if (bad++ == 0)
                fail("thread %d: word %zu is 0x%llx, expected 0x%llx", t->idx, (size_t)(p - mem),
                     (unsigned long long)*p, (unsigned long long)pattern((size_t)(p - mem)));
        }
    if (bad > 1)
        fail("thread %d: %zu bad words in all", t->idx, bad);
    if (x != lcg_jump(t->seed, n))
        fail("thread %d: LCG state 0x%llx does not match %llu steps", t->idx,
             (unsigned long long)x, (unsigned long long)n);
    if (gettid_raw() != t->tid)
        fail("thread %d: tid %d, was %d", t->idx, gettid_raw(), t->tid);
    return NULL;
}

static void usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s --threads N --touch-mib M --verdict FILE [--ready FILE] [--stop FILE]"
            " [--spin ITER] [--sleep-us US]\n",
            prog);
    exit(2);
}

static long parse_long(const char *prog, const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        usage(prog);
    return v;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc)
            usage(argv[0]);
        const char *v = argv[++i];
        if (!strcmp(a, "--verdict"))
            verdict_path = v;
        else if (!strcmp(a, "--ready"))
            ready_path = v;
        else if (!strcmp(a, "--stop"))
            stop_path = v;
        else if (!strcmp(a, "--threads"))
            nthreads = (int)parse_long(argv[0], v, 1, MAX_THREADS);
        else if (!strcmp(a, "--touch-mib"))
            touch_mib = parse_long(argv[0], v, 0, 1 << 20);
        else if (!strcmp(a, "--spin"))
            spin = parse_long(argv[0], v, 1, 1L << 40);
        else if (!strcmp(a, "--sleep-us"))
            sleep_us = parse_long(argv[0], v, 0, 10000000);
        else
            usage(argv[0]);
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

    /* criu cannot dump a process that shares a session with its dumper's tty, and
     * run.sh runs us in the background of a script: become a session leader. */
    if (getsid(0) != getpid() && setsid() < 0)
        fprintf(stderr, "bench_workload: setsid: %s (continuing)\n", strerror(errno));

    size_t bytes = (size_t)touch_mib << 20;
    size_t map_bytes = bytes ? bytes : 4096;
    mem = mmap(NULL, map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        fprintf(stderr, "bench_workload: mmap %zu bytes: %s\n", map_bytes, strerror(errno));
        return 3;
    }
    mem_words = bytes / 8;
    size_t pages = bytes / 4096;
    double t0 = now_s();
    for (int i = 0; i < nthreads; i++) {
        struct thr *t = &thr[i];
        t->idx = i;
        t->seed = 0x1234567ULL * (uint64_t)(i + 1) + 0x9e37ULL;
        t->x = t->seed;
        /* Page-aligned slices. */
        t->lo = mem + (pages * (size_t)i / (size_t)nthreads) * 512;
        t->hi = mem + (pages * (size_t)(i + 1) / (size_t)nthreads) * 512;
        int e = pthread_create(&t->pt, NULL, worker, t);
        if (e) {
            fprintf(stderr, "bench_workload: pthread_create: %s\n", strerror(e));
            return 3;
        }
    }
    while (__atomic_load_n(&filled, __ATOMIC_SEQ_CST) < nthreads)
        usleep(2000);
    double t1 = now_s();
    /* Let every thread do a few bursts: steady state. */
    for (int i = 0; i < nthreads; i++)
        while (__atomic_load_n(&thr[i].bursts, __ATOMIC_ACQUIRE) < 2)
            usleep(2000);
    usleep(100000);
    fprintf(stderr, "bench_workload: %d threads, %ld MiB filled in %.3f s\n", nthreads, touch_mib,
            t1 - t0);

    char line[256];
    snprintf(line, sizeof line, "ready pid=%d damage=%p len=%d\n", (int)getpid(), (void *)mem,
             bytes ? 4096 : 0);
    if (write_atomic(ready_path, line) != 0) {
        fprintf(stderr, "bench_workload: cannot write %s: %s\n", ready_path, strerror(errno));
        return 3;
    }

    while (access(stop_path, F_OK) != 0)
        usleep(10000);

    /* Every thread must still advance: after a restart all of them must run. */
    uint64_t seen[MAX_THREADS];
    for (int i = 0; i < nthreads; i++)
        seen[i] = __atomic_load_n(&thr[i].bursts, __ATOMIC_ACQUIRE);
    double deadline = now_s() + 30;
    for (int i = 0; i < nthreads; i++) {
        while (__atomic_load_n(&thr[i].bursts, __ATOMIC_ACQUIRE) <= seen[i] && now_s() < deadline)
            usleep(2000);
        if (__atomic_load_n(&thr[i].bursts, __ATOMIC_ACQUIRE) <= seen[i])
            fail("thread %d made no progress in 30 s after the stop request", i);
    }
    __atomic_store_n(&stopping, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < nthreads; i++)
        pthread_join(thr[i].pt, NULL);
    if (gettid_raw() != getpid())
        fail("main: tid %d != pid %d", gettid_raw(), getpid());

    char verdict[700];
    if (fail_count == 0)
        snprintf(verdict, sizeof verdict, "ok\n");
    else if (fail_count == 1)
        snprintf(verdict, sizeof verdict, "FAIL: %s\n", fail_msg);
    else
        snprintf(verdict, sizeof verdict, "FAIL: %s (+%d more)\n", fail_msg, fail_count - 1);
    if (write_atomic(verdict_path, verdict) != 0) {
        fprintf(stderr, "bench_workload: cannot write %s: %s\n", verdict_path, strerror(errno));
        return 3;
    }
    return fail_count ? 1 : 0;
}
