/* blocked: threads that are blocked at checkpoint time in
 *   - pthread_cond_wait (futex), with a predicate
 *   - pthread_mutex_lock on an error-checking mutex held by main (futex whose
 *     owner is a TID: main's unlock fails with EPERM if its TID changed)
 *   - clock_nanosleep(CLOCK_MONOTONIC) 2.5 s and nanosleep() 2 s loops that
 *     resume with the remaining time on EINTR
 *   - read() on an empty pipe
 *   - poll() on an empty pipe
 * Each thread announces itself just before blocking; main waits until all
 * have, then 200 ms more (and until /proc shows them sleeping) before writing
 * the ready file. At stop they are woken the proper way (cond broadcast,
 * unlock, SIGUSR1 for the sleepers, writes to the pipes) and each must
 * complete its wait with the right result and no error other than EINTR.
 * Damage range: the table of expected results. */
#include "common.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { T_COND, T_MUTEX, T_CLOCK_NANOSLEEP, T_NANOSLEEP, T_READ, T_POLL, NT };
static const char *const tname[NT] = {"cond_wait", "mutex_lock", "clock_nanosleep",
                                      "nanosleep", "pipe_read", "poll"};

struct expect {
    unsigned char pipe_msg[64];
    unsigned char poll_msg[16];
    uint64_t cond_payload;
    uint64_t mutex_payload;
    uint64_t magic;
} __attribute__((aligned(64)));

static struct expect expect;
static uint64_t expect_hash;

static volatile int announced[NT], done[NT];
static pid_t tids[NT];
static pthread_mutex_t cmtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int go;
static uint64_t cond_payload;
static pthread_mutex_t emtx;
static uint64_t mutex_payload;
static int rpipe[2], ppipe[2];
static volatile unsigned long eintr_count[NT];
static volatile int waking; /* set by main when it starts waking threads */

static void gen_msg(unsigned char *b, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)wl_mix(seed + i);
}
static uint64_t gen_cond(void) { return wl_mix(0xc0dd); }
static uint64_t gen_mutex(void) { return wl_mix(0x3073); }

static void announce(int id)
{
    tids[id] = gettid();
    __atomic_store_n(&announced[id], 1, __ATOMIC_SEQ_CST);
}

static void on_usr1(int sig) { (void)sig; }

static void *t_cond(void *a)
{
    (void)a;
    pthread_mutex_lock(&cmtx);
    announce(T_COND);
    while (!go) {
        int r = pthread_cond_wait(&cond, &cmtx);
        if (r != 0) {
            wl_fail("blocked: pthread_cond_wait returned %d", r);
            break;
        }
    }
    if (!go)
        wl_fail("blocked: cond predicate false after wait");
    else if (cond_payload != expect.cond_payload)
        wl_fail("blocked: cond payload %#lx != expected %#lx", (unsigned long)cond_payload,
                (unsigned long)expect.cond_payload);
    pthread_mutex_unlock(&cmtx);
    done[T_COND] = 1;
    return NULL;
}

static void *t_mutex(void *a)
{
    (void)a;
    announce(T_MUTEX);
    int r = pthread_mutex_lock(&emtx);
    if (r != 0) {
        wl_fail("blocked: pthread_mutex_lock returned %d", r);
    } else {
        if (mutex_payload != expect.mutex_payload)
            wl_fail("blocked: mutex payload %#lx != expected %#lx", (unsigned long)mutex_payload,
                    (unsigned long)expect.mutex_payload);
        r = pthread_mutex_unlock(&emtx);
        if (r != 0)
            wl_fail("blocked: worker pthread_mutex_unlock returned %d", r);
    }
    done[T_MUTEX] = 1;
    return NULL;
}

static void *t_clock_nanosleep(void *a)
{
    (void)a;
    announce(T_CLOCK_NANOSLEEP);
    while (!waking) {
        struct timespec req = {2, 500000000L}, rem;
        int r;
        while ((r = clock_nanosleep(CLOCK_MONOTONIC, 0, &req, &rem)) == EINTR) {
            eintr_count[T_CLOCK_NANOSLEEP]++;
            if (waking)
                break;
            if (rem.tv_sec < 0 || rem.tv_nsec < 0 || rem.tv_nsec > 999999999L ||
                rem.tv_sec > req.tv_sec) {
                wl_fail("blocked: clock_nanosleep remaining time bogus: %ld.%09ld",
                        (long)rem.tv_sec, rem.tv_nsec);
                goto out;
            }
            req = rem;
        }
        if (r != 0 && r != EINTR) {
            wl_fail("blocked: clock_nanosleep returned %d (%s)", r, strerror(r));
            break;
        }
    }
out:
    done[T_CLOCK_NANOSLEEP] = 1;
    return NULL;
}

static void *t_nanosleep(void *a)
{
    (void)a;
    announce(T_NANOSLEEP);
    while (!waking) {
        struct timespec req = {2, 0}, rem;
        int r;
        while ((r = nanosleep(&req, &rem)) != 0 && errno == EINTR) {
            eintr_count[T_NANOSLEEP]++;
            if (waking)
                break;
            if (rem.tv_sec < 0 || rem.tv_nsec < 0 || rem.tv_nsec > 999999999L ||
                rem.tv_sec > req.tv_sec) {
                wl_fail("blocked: nanosleep remaining time bogus: %ld.%09ld", (long)rem.tv_sec,
                        rem.tv_nsec);
                goto out;
            }
            req = rem;
        }
        if (r != 0 && errno != EINTR) {
            wl_fail("blocked: nanosleep failed with errno %d (%s)", errno, strerror(errno));
            break;
        }
    }
out:
    done[T_NANOSLEEP] = 1;
    return NULL;
}

static void *t_read(void *a)
{
    (void)a;
    unsigned char buf[sizeof expect.pipe_msg + 1];
    size_t got = 0;
    announce(T_READ);
    while (got < sizeof expect.pipe_msg) {
        ssize_t r = read(rpipe[0], buf + got, sizeof buf - got);
        if (r < 0 && errno == EINTR) {
            eintr_count[T_READ]++;
            continue;
        }
        if (r < 0) {
            wl_fail("blocked: read on pipe failed: errno %d (%s)", errno, strerror(errno));
            goto out;
        }
        if (r == 0) {
            wl_fail("blocked: read on pipe hit EOF after %zu bytes", got);
            goto out;
        }
        got += (size_t)r;
    }
    if (got != sizeof expect.pipe_msg)
        wl_fail("blocked: read %zu bytes from pipe, expected %zu", got, sizeof expect.pipe_msg);
    else if (memcmp(buf, expect.pipe_msg, got) != 0)
        wl_fail("blocked: bytes read from pipe differ from those written");
out:
    done[T_READ] = 1;
    return NULL;
}

static void *t_poll(void *a)
{
    (void)a;
    struct pollfd pfd = {.fd = ppipe[0], .events = POLLIN};
    announce(T_POLL);
    int r;
    while ((r = poll(&pfd, 1, -1)) < 0 && errno == EINTR)
        eintr_count[T_POLL]++;
    if (r < 0) {
        wl_fail("blocked: poll failed: errno %d (%s)", errno, strerror(errno));
    } else if (r != 1 || pfd.revents != POLLIN) {
        wl_fail("blocked: poll returned %d revents %#x, expected 1 POLLIN", r, pfd.revents);
    } else {
        unsigned char buf[sizeof expect.poll_msg];
        ssize_t n = read(ppipe[0], buf, sizeof buf);
        if (n != (ssize_t)sizeof buf)
            wl_fail("blocked: read after poll returned %zd", n);
        else if (memcmp(buf, expect.poll_msg, sizeof buf) != 0)
            wl_fail("blocked: bytes read after poll differ from those written");
    }
    done[T_POLL] = 1;
    return NULL;
}

static char proc_state(pid_t tid)
{
    char p[64], buf[512];
    snprintf(p, sizeof p, "/proc/self/task/%d/stat", (int)tid);
    FILE *f = fopen(p, "r");
    if (!f)
        return '?';
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *c = strrchr(buf, ')');
    return (c && c[1] == ' ') ? c[2] : '?';
}

static int write_all(int fd, const void *b, size_t n)
{
    const char *p = b;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, NULL, NULL);
    gen_msg(expect.pipe_msg, sizeof expect.pipe_msg, 0x917e);
    gen_msg(expect.poll_msg, sizeof expect.poll_msg, 0x9011);
    expect.cond_payload = gen_cond();
    expect.mutex_payload = gen_mutex();
    expect.magic = 0xb10cced;
    expect_hash = wl_hash(&expect, sizeof expect, 0);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1; /* no SA_RESTART: sleepers see EINTR */
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) != 0 || pipe(rpipe) != 0 || pipe(ppipe) != 0) {
        perror("setup");
        return 3;
    }
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_init(&emtx, &ma);
    if (pthread_mutex_lock(&emtx) != 0) {
        perror("lock");
        return 3;
    }

    void *(*fns[NT])(void *) = {t_cond, t_mutex, t_clock_nanosleep, t_nanosleep, t_read, t_poll};
    pthread_t th[NT];
    for (int i = 0; i < NT; i++)
        if (pthread_create(&th[i], NULL, fns[i], NULL) != 0) {
            perror("pthread_create");
            return 3;
        }
    for (int i = 0; i < NT; i++)
        while (!__atomic_load_n(&announced[i], __ATOMIC_SEQ_CST))
            wl_sleep_ms(1);
    wl_sleep_ms(200);
    /* Give them up to 2 s more to show up as sleeping in /proc. */
    for (int tries = 0; tries < 200; tries++) {
        int all = 1;
        for (int i = 0; i < NT; i++)
            if (proc_state(tids[i]) != 'S')
                all = 0;
        if (all)
            break;
        wl_sleep_ms(10);
    }
    for (int i = 0; i < NT; i++)
        if (done[i])
            wl_fail("blocked: %s thread finished before being woken", tname[i]);
    wl_ready(&expect, sizeof expect);
    wl_wait_stop();

    for (int i = 0; i < NT; i++)
        if (done[i])
            wl_fail("blocked: %s thread finished before being woken", tname[i]);
    /* Wake everyone the proper way. */
    waking = 1;
    pthread_mutex_lock(&cmtx);
    cond_payload = gen_cond();
    go = 1;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&cmtx);

    mutex_payload = gen_mutex();
    int r = pthread_mutex_unlock(&emtx);
    if (r != 0)
        wl_fail("blocked: main's unlock of its error-checking mutex returned %d (owner TID?)", r);

    unsigned char msg[64];
    gen_msg(msg, sizeof expect.pipe_msg, 0x917e);
    if (write_all(rpipe[1], msg, 32) != 0 || write_all(rpipe[1], msg + 32, 32) != 0)
        wl_fail("blocked: writing to the read pipe failed");
    gen_msg(msg, sizeof expect.poll_msg, 0x9011);
    if (write_all(ppipe[1], msg, sizeof expect.poll_msg) != 0)
        wl_fail("blocked: writing to the poll pipe failed");

    uint64_t t0 = wl_now_ns();
    while (!done[T_CLOCK_NANOSLEEP] || !done[T_NANOSLEEP]) {
        if (!done[T_CLOCK_NANOSLEEP])
            pthread_kill(th[T_CLOCK_NANOSLEEP], SIGUSR1);
        if (!done[T_NANOSLEEP])
            pthread_kill(th[T_NANOSLEEP], SIGUSR1);
        wl_sleep_ms(20);
        if (wl_now_ns() - t0 > 10ULL * 1000000000ULL) {
            wl_fail("blocked: sleeper threads did not finish within 10 s");
            break;
        }
    }
    /* The others must finish promptly too. */
    t0 = wl_now_ns();
    for (int i = 0; i < NT; i++)
        while (!done[i] && wl_now_ns() - t0 < 10ULL * 1000000000ULL)
            wl_sleep_ms(5);
    for (int i = 0; i < NT; i++) {
        if (!done[i]) {
            wl_fail("blocked: %s thread did not complete its wait after wake-up", tname[i]);
            return wl_finish(); /* cannot join a stuck thread */
        }
        pthread_join(th[i], NULL);
    }
    if (wl_hash(&expect, sizeof expect, 0) != expect_hash)
        wl_fail("blocked: expected-results table corrupted");
    return wl_finish();
}
