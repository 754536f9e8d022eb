/* signals: handlers installed with SA_SIGINFO and specific masks and flags
 * (SA_RESTART, SA_ONSTACK), per-thread sigaltstacks (the SIGUSR1 handler
 * checks it runs on the alternate stack and that sigaltstack() says so),
 * SIGUSR2 (queued to the process with sigqueue, and sent to the raiser thread
 * alone with pthread_kill: a thread-private SI_TKILL that only that thread may
 * queue back) and two SIGRTMIN+3 (queued to the main thread with
 * pthread_sigqueue) left blocked and pending across the checkpoint, a 20 ms ITIMER_REAL whose SIGALRM ticks must keep coming
 * after restart, a thread blocked in read() on a pipe that keeps receiving
 * SIGUSR1 (SA_RESTART: read must never fail with EINTR), and sigaction()
 * answers compared with what was installed.
 * Damage range: the table of expected handlers, flags, masks, alt stacks and
 * queued values. */
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#define NTH 3 /* 0 main, 1 reader, 2 raiser */
#ifndef SA_RESTORER
#define SA_RESTORER 0x04000000 /* set by glibc in every sigaction it installs */
#endif
#define ALTSZ (64 * 1024)
#define TICK_US 20000

enum { S_USR1, S_USR2, S_RT, S_ALRM, NS };

struct expect {
    void *handler[NS];
    int flags[NS];
    uint64_t mask[NS];
    int signo[NS];
    void *alt_sp[NTH];
    size_t alt_size;
    int usr2_value;
    int rt_value[2];
    long tick_us;
    uint64_t main_blocked;
    uint64_t magic;
} __attribute__((aligned(64)));

static struct expect expect;
static uint64_t expect_hash;

static char altstack[NTH][ALTSZ] __attribute__((aligned(64)));
static __thread char *tls_alt_lo;
static __thread int tls_idx = -1;

static volatile unsigned long usr1_count[NTH];
static volatile unsigned long bad_alt, bad_altflag, bad_mask, bad_code;
static volatile unsigned long ticks;
static volatile int usr2_count, usr2_code, usr2_value, usr2_pid;
static volatile int rt_count, rt_code[4], rt_value[4];
static volatile int running[NTH];
static int rpipe[2];
static volatile unsigned long reader_eintr;
static volatile int reader_done;
static pthread_t th[NTH];

static uint64_t set2mask(const sigset_t *s)
{
    uint64_t m = 0;
    for (int sig = 1; sig <= 64; sig++) {
        if (sig == 32 || sig == 33 || sig == SIGKILL || sig == SIGSTOP)
            continue; /* glibc-internal or never blockable */
        if (sigismember(s, sig) == 1)
            m |= 1ULL << (sig - 1);
    }
    return m;
}

static void h_usr1(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    char here;
    int idx = tls_idx;
    if (idx < 0 || idx >= NTH || !tls_alt_lo || &here < tls_alt_lo || &here >= tls_alt_lo + ALTSZ)
        __atomic_add_fetch(&bad_alt, 1, __ATOMIC_RELAXED);
    stack_t cur;
    if (sigaltstack(NULL, &cur) != 0 || !(cur.ss_flags & SS_ONSTACK))
        __atomic_add_fetch(&bad_altflag, 1, __ATOMIC_RELAXED);
    sigset_t m;
    pthread_sigmask(SIG_SETMASK, NULL, &m);
    if (!sigismember(&m, SIGUSR1) || !sigismember(&m, SIGHUP) || !sigismember(&m, SIGWINCH))
        __atomic_add_fetch(&bad_mask, 1, __ATOMIC_RELAXED);
    if (sig != SIGUSR1 || si->si_signo != SIGUSR1 || si->si_code != SI_TKILL ||
        si->si_pid != getpid())
        __atomic_add_fetch(&bad_code, 1, __ATOMIC_RELAXED);
    if (idx >= 0 && idx < NTH)
        usr1_count[idx]++;
}

static void h_usr2(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    usr2_code = si->si_code;
    usr2_value = si->si_value.sival_int;
    usr2_pid = si->si_pid;
    sigset_t m;
    pthread_sigmask(SIG_SETMASK, NULL, &m);
    if (!sigismember(&m, SIGINT) || !sigismember(&m, SIGQUIT))
        __atomic_add_fetch(&bad_mask, 1, __ATOMIC_RELAXED);
    usr2_count++;
}

static void h_rt(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    int i = rt_count;
    if (i < 4) {
        rt_code[i] = si->si_code;
        rt_value[i] = si->si_value.sival_int;
    }
    rt_count = i + 1;
}

static void h_alrm(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)si;
    (void)uc;
    ticks++;
}

static int install(int which, int sig, void (*h)(int, siginfo_t *, void *), int flags,
                   const int *maskset)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = h;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    for (; *maskset; maskset++)
        sigaddset(&sa.sa_mask, *maskset);
    expect.handler[which] = (void *)h;
    expect.flags[which] = flags;
    expect.mask[which] = set2mask(&sa.sa_mask);
    expect.signo[which] = sig;
    return sigaction(sig, &sa, NULL);
}

static int check_actions(const char *when)
{
    int ok = 1;
    for (int i = 0; i < NS; i++) {
        struct sigaction cur;
        if (sigaction(expect.signo[i], NULL, &cur) != 0) {
            wl_fail("signals: sigaction(%d) query failed (%s)", expect.signo[i], when);
            return 0;
        }
        if ((void *)cur.sa_sigaction != expect.handler[i]) {
            wl_fail("signals: handler of signal %d changed (%s)", expect.signo[i], when);
            ok = 0;
        } else if ((cur.sa_flags & ~SA_RESTORER) != expect.flags[i]) {
            wl_fail("signals: flags of signal %d are %#x, expected %#x (%s)", expect.signo[i],
                    cur.sa_flags & ~SA_RESTORER, expect.flags[i], when);
            ok = 0;
        } else if (set2mask(&cur.sa_mask) != expect.mask[i]) {
            wl_fail("signals: sa_mask of signal %d is %#lx, expected %#lx (%s)", expect.signo[i],
                    (unsigned long)set2mask(&cur.sa_mask), (unsigned long)expect.mask[i], when);
            ok = 0;
        }
    }
    return ok;
}

static int check_altstack(int idx, const char *when)
{
    stack_t cur;
    if (sigaltstack(NULL, &cur) != 0) {
        wl_fail("signals: sigaltstack query failed in thread %d (%s)", idx, when);
        return 0;
    }
    if (cur.ss_sp != expect.alt_sp[idx] || cur.ss_size != expect.alt_size || cur.ss_flags != 0) {
        wl_fail("signals: thread %d sigaltstack is %p+%zu flags %d, expected %p+%zu (%s)", idx,
                cur.ss_sp, cur.ss_size, cur.ss_flags, expect.alt_sp[idx], expect.alt_size, when);
        return 0;
    }
    return 1;
}

static int setup_altstack(int idx)
{
    tls_idx = idx;
    tls_alt_lo = altstack[idx];
    stack_t ss = {.ss_sp = altstack[idx], .ss_size = ALTSZ, .ss_flags = 0};
    return sigaltstack(&ss, NULL);
}

static void *reader(void *a)
{
    (void)a;
    if (setup_altstack(1) != 0)
        wl_fail("signals: sigaltstack in reader failed");
    running[1] = 1;
    char c;
    ssize_t r;
    while ((r = read(rpipe[0], &c, 1)) < 0 && errno == EINTR)
        reader_eintr++;
    if (r != 1)
        wl_fail("signals: reader's read returned %zd errno %d", r, r < 0 ? errno : 0);
    else if (c != 'Q')
        wl_fail("signals: reader read %#x, expected 'Q'", (unsigned char)c);
    check_altstack(1, "reader final");
    reader_done = 1;
    return NULL;
}

static void *raiser(void *a)
{
    (void)a;
    if (setup_altstack(2) != 0)
        wl_fail("signals: sigaltstack in raiser failed");
    /* SIGUSR2 is blocked here (inherited from main): it stays pending on this
     * thread alone until the end. */
    pthread_kill(pthread_self(), SIGUSR2);
    running[2] = 1;
    while (!wl_stopping) {
        pthread_kill(pthread_self(), SIGUSR1);
        if (!check_altstack(2, "running") || !check_actions("running"))
            return NULL;
        wl_sleep_ms(10);
    }
    /* main has handled the process-wide SIGUSR2 by now (usr2_count 1). */
    sigset_t pend, un;
    sigpending(&pend);
    if (!sigismember(&pend, SIGUSR2)) {
        wl_fail("signals: the raiser's own SIGUSR2 is no longer pending");
        return NULL;
    }
    int before = usr2_count;
    sigemptyset(&un);
    sigaddset(&un, SIGUSR2);
    pthread_sigmask(SIG_UNBLOCK, &un, NULL);
    for (int i = 0; i < 100 && usr2_count == before; i++)
        wl_sleep_ms(2);
    if (usr2_count != before + 1)
        wl_fail("signals: the raiser's SIGUSR2 handled %d times, expected 1", usr2_count - before);
    else if (usr2_code != SI_TKILL || usr2_pid != getpid())
        wl_fail("signals: the raiser's SIGUSR2 siginfo code %d pid %d, expected %d %d", usr2_code,
                usr2_pid, SI_TKILL, (int)getpid());
    return NULL;
}

static int wait_for(volatile unsigned long *ctr, unsigned long target, int ms)
{
    for (int i = 0; i < ms / 5; i++) {
        if (*ctr >= target)
            return 1;
        wl_sleep_ms(5);
    }
    return *ctr >= target;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, NULL, NULL);
    expect.magic = 0x5167a15;
    expect.alt_size = ALTSZ;
    for (int i = 0; i < NTH; i++)
        expect.alt_sp[i] = altstack[i];
    expect.usr2_value = 0x5eed1234;
    expect.rt_value[0] = 0x11aa;
    expect.rt_value[1] = 0x22bb;
    expect.tick_us = TICK_US;
    const int m1[] = {SIGHUP, SIGWINCH, 0}, m2[] = {SIGINT, SIGQUIT, 0},
              m3[] = {SIGRTMIN + 5, 0}, m4[] = {SIGTERM, 0};
    if (install(S_USR1, SIGUSR1, h_usr1, SA_SIGINFO | SA_RESTART | SA_ONSTACK, m1) ||
        install(S_USR2, SIGUSR2, h_usr2, SA_SIGINFO, m2) ||
        install(S_RT, SIGRTMIN + 3, h_rt, SA_SIGINFO | SA_RESTART, m3) ||
        install(S_ALRM, SIGALRM, h_alrm, SA_SIGINFO | SA_RESTART, m4) || pipe(rpipe) != 0 ||
        setup_altstack(0) != 0) {
        perror("setup");
        return 3;
    }
    /* SIGUSR2 and SIGRTMIN+3 blocked everywhere; SIGALRM only reaches main. */
    sigset_t blk;
    sigemptyset(&blk);
    sigaddset(&blk, SIGUSR2);
    sigaddset(&blk, SIGRTMIN + 3);
    sigaddset(&blk, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &blk, NULL);
    th[0] = pthread_self();
    if (pthread_create(&th[1], NULL, reader, NULL) || pthread_create(&th[2], NULL, raiser, NULL)) {
        perror("pthread_create");
        return 3;
    }
    sigemptyset(&blk);
    sigaddset(&blk, SIGALRM);
    pthread_sigmask(SIG_UNBLOCK, &blk, NULL);
    sigset_t now;
    pthread_sigmask(SIG_SETMASK, NULL, &now);
    expect.main_blocked = set2mask(&now);

    union sigval v = {.sival_int = expect.usr2_value};
    if (sigqueue(getpid(), SIGUSR2, v) != 0) {
        perror("sigqueue");
        return 3;
    }
    for (int i = 0; i < 2; i++) {
        union sigval rv = {.sival_int = expect.rt_value[i]};
        if (pthread_sigqueue(pthread_self(), SIGRTMIN + 3, rv) != 0) {
            perror("pthread_sigqueue");
            return 3;
        }
    }
    struct itimerval it = {{0, TICK_US}, {0, TICK_US}};
    if (setitimer(ITIMER_REAL, &it, NULL) != 0) {
        perror("setitimer");
        return 3;
    }
    while (!running[1] || !running[2])
        wl_sleep_ms(1);
    pthread_kill(pthread_self(), SIGUSR1);
    if (!wait_for(&ticks, 2, 2000))
        wl_fail("signals: SIGALRM ticks not arriving before ready");
    expect_hash = wl_hash(&expect, sizeof expect, 0);
    wl_ready(&expect, sizeof expect);

    while (!wl_stop_requested()) {
        pthread_kill(th[1], SIGUSR1);
        wl_sleep_ms(10);
    }

    /* Checks after stop (after restart, when there was one). */
    unsigned long t0 = ticks;
    if (!wait_for(&ticks, t0 + 3, 3000))
        wl_fail("signals: SIGALRM ticks stopped (%lu at stop, %lu 3 s later)", t0, ticks);
    struct itimerval cur;
    if (getitimer(ITIMER_REAL, &cur) != 0 || cur.it_interval.tv_sec != 0 ||
        cur.it_interval.tv_usec != expect.tick_us)
        wl_fail("signals: itimer interval is %ld.%06ld, expected 0.%06ld",
                (long)cur.it_interval.tv_sec, (long)cur.it_interval.tv_usec, expect.tick_us);
    unsigned long c1 = usr1_count[1], c2 = usr1_count[2], c0 = usr1_count[0];
    pthread_kill(pthread_self(), SIGUSR1);
    if (usr1_count[0] != c0 + 1)
        wl_fail("signals: SIGUSR1 raised in main after stop was not handled");
    pthread_kill(th[1], SIGUSR1);
    if (!wait_for(&usr1_count[1], c1 + 1, 2000) || !wait_for(&usr1_count[2], c2 + 1, 2000))
        wl_fail("signals: SIGUSR1 not handled in worker threads after stop");

    sigset_t pend;
    sigpending(&pend);
    if (!sigismember(&pend, SIGUSR2))
        wl_fail("signals: SIGUSR2 no longer pending");
    if (!sigismember(&pend, SIGRTMIN + 3))
        wl_fail("signals: SIGRTMIN+3 no longer pending");
    if (usr2_count || rt_count)
        wl_fail("signals: blocked signals were delivered early");
    pthread_sigmask(SIG_SETMASK, NULL, &now);
    if (set2mask(&now) != expect.main_blocked)
        wl_fail("signals: main thread mask %#lx, expected %#lx", (unsigned long)set2mask(&now),
                (unsigned long)expect.main_blocked);
    check_actions("final");
    check_altstack(0, "main final");

    sigemptyset(&blk);
    sigaddset(&blk, SIGUSR2);
    sigaddset(&blk, SIGRTMIN + 3);
    pthread_sigmask(SIG_UNBLOCK, &blk, NULL);
    for (int i = 0; i < 100 && (usr2_count < 1 || rt_count < 2); i++)
        wl_sleep_ms(2);
    if (usr2_count != 1)
        wl_fail("signals: SIGUSR2 handled %d times after unblocking, expected 1", usr2_count);
    else if (usr2_code != SI_QUEUE || usr2_value != expect.usr2_value || usr2_pid != getpid())
        wl_fail("signals: SIGUSR2 siginfo code %d value %#x pid %d, expected %d %#x %d",
                usr2_code, usr2_value, usr2_pid, SI_QUEUE, expect.usr2_value, (int)getpid());
    if (rt_count != 2)
        wl_fail("signals: SIGRTMIN+3 handled %d times, expected 2", rt_count);
    else
        for (int i = 0; i < 2; i++)
            if (rt_code[i] != SI_QUEUE || rt_value[i] != expect.rt_value[i])
                wl_fail("signals: SIGRTMIN+3 #%d code %d value %#x, expected %d %#x", i,
                        rt_code[i], rt_value[i], SI_QUEUE, expect.rt_value[i]);

    wl_stopping = 1;
    if (write(rpipe[1], "Q", 1) != 1)
        wl_fail("signals: write to reader pipe failed");
    pthread_join(th[1], NULL);
    pthread_join(th[2], NULL);
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);

    if (reader_eintr)
        wl_fail("signals: read() failed with EINTR %lu times despite SA_RESTART", reader_eintr);
    if (bad_alt)
        wl_fail("signals: SIGUSR1 handler ran off the alternate stack %lu times", bad_alt);
    if (bad_altflag)
        wl_fail("signals: sigaltstack() lacked SS_ONSTACK inside the handler %lu times",
                bad_altflag);
    if (bad_mask)
        wl_fail("signals: handler ran with a wrong signal mask %lu times", bad_mask);
    if (bad_code)
        wl_fail("signals: SIGUSR1 siginfo wrong %lu times", bad_code);
    if (wl_hash(&expect, sizeof expect, 0) != expect_hash)
        wl_fail("signals: expected-values table corrupted");
    return wl_finish();
}
