/* tls: per-thread __thread arrays and pthread_setspecific data that differ per
 * thread; threads verify them continuously against an expected table, and
 * verify pthread_self() and gettid() against values cached at start (the
 * restart engines restore TIDs, and glibc caches them in thread memory),
 * and each thread's name (PR_SET_NAME "tls-worker-N").
 * Damage range: the expected-values table. */
#include "common.h"

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#define NT 8
#define NV 16

struct expect {
    uint64_t tls[NV];    /* expected __thread values */
    uint64_t spec[NV];   /* expected pthread_getspecific() contents */
    char name[16];       /* expected thread name (prctl PR_GET_NAME) */
    uint64_t magic;
} __attribute__((aligned(64)));

static struct expect expect[NT];
static uint64_t expect_hash;           /* outside the damage range */
static pid_t tids[NT];                 /* written by each thread at start */
static pthread_t selves[NT];
static volatile int running[NT];
static pthread_key_t key;
static pid_t main_tid;

static __thread uint64_t tls_vals[NV];
static __thread int tls_id = -1;
static __thread pid_t tls_tid;
static __thread pthread_t tls_self;

static void gen(int id)
{
    for (int i = 0; i < NV; i++) {
        expect[id].tls[i] = wl_mix(0x7150000ULL + (uint64_t)id * 100 + i);
        expect[id].spec[i] = wl_mix(0x5bec000ULL + (uint64_t)id * 100 + i);
    }
    snprintf(expect[id].name, sizeof expect[id].name, "tls-worker-%d", id);
    expect[id].magic = 0x746c730000ULL + (uint64_t)id;
}

static int verify(int id, const char *when)
{
    const struct expect *e = &expect[id];
    if (e->magic != 0x746c730000ULL + (uint64_t)id) {
        wl_fail("tls: thread %d expected table corrupted (%s)", id, when);
        return 0;
    }
    if (tls_id != id) {
        wl_fail("tls: thread %d sees __thread id %d (%s)", id, tls_id, when);
        return 0;
    }
    for (int i = 0; i < NV; i++)
        if (tls_vals[i] != e->tls[i]) {
            wl_fail("tls: thread %d __thread value %d wrong (%s)", id, i, when);
            return 0;
        }
    const uint64_t *sp = pthread_getspecific(key);
    if (!sp) {
        wl_fail("tls: thread %d pthread_getspecific returned NULL (%s)", id, when);
        return 0;
    }
    for (int i = 0; i < NV; i++)
        if (sp[i] != e->spec[i]) {
            wl_fail("tls: thread %d specific value %d wrong (%s)", id, i, when);
            return 0;
        }
    pid_t t = gettid();
    if (t != tls_tid || t != tids[id]) {
        wl_fail("tls: thread %d gettid()=%d, cached %d/%d (%s)", id, (int)t, (int)tls_tid,
                (int)tids[id], when);
        return 0;
    }
    if (wl_gettid() != t) {
        wl_fail("tls: thread %d raw gettid %d != gettid() %d (%s)", id, (int)wl_gettid(), (int)t,
                when);
        return 0;
    }
    char nm[16] = {0};
    if (prctl(PR_GET_NAME, nm, 0, 0, 0) != 0 || strncmp(nm, e->name, sizeof nm) != 0) {
        wl_fail("tls: thread %d is named '%.16s', expected '%.16s' (%s)", id, nm, e->name, when);
        return 0;
    }
    pthread_t s = pthread_self();
    if (!pthread_equal(s, tls_self) || !pthread_equal(s, selves[id])) {
        wl_fail("tls: thread %d pthread_self() changed (%s)", id, when);
        return 0;
    }
    return 1;
}

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    tls_id = id;
    for (int i = 0; i < NV; i++)
        tls_vals[i] = expect[id].tls[i];
    uint64_t *sp = malloc(NV * sizeof *sp);
    if (!sp) {
        wl_fail("tls: out of memory");
        running[id] = 1;
        return NULL;
    }
    for (int i = 0; i < NV; i++)
        sp[i] = expect[id].spec[i];
    if (pthread_setspecific(key, sp) != 0)
        wl_fail("tls: pthread_setspecific failed");
    if (prctl(PR_SET_NAME, expect[id].name, 0, 0, 0) != 0)
        wl_fail("tls: PR_SET_NAME failed");
    tls_tid = gettid();
    tids[id] = tls_tid;
    tls_self = pthread_self();
    selves[id] = tls_self;
    __atomic_store_n(&running[id], 1, __ATOMIC_SEQ_CST);
    while (!wl_stopping) {
        if (!verify(id, "running"))
            return NULL;
        wl_sleep_ms(2);
    }
    verify(id, "final");
    return NULL;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, NULL, NULL);
    main_tid = gettid();
    if (main_tid != getpid()) {
        fprintf(stderr, "tls: main tid != pid\n");
        return 3;
    }
    if (pthread_key_create(&key, free) != 0) {
        perror("pthread_key_create");
        return 3;
    }
    for (int i = 0; i < NT; i++)
        gen(i);
    expect_hash = wl_hash(expect, sizeof expect, 0);
    pthread_t th[NT];
    for (int i = 0; i < NT; i++)
        if (pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i) != 0) {
            perror("pthread_create");
            return 3;
        }
    for (int i = 0; i < NT; i++)
        while (!__atomic_load_n(&running[i], __ATOMIC_SEQ_CST))
            wl_sleep_ms(1);
    for (int i = 0; i < NT; i++)
        if (!pthread_equal(th[i], selves[i]))
            wl_fail("tls: pthread_create handle of thread %d != its pthread_self()", i);
    wl_sleep_ms(20);
    pid_t pid = getpid();
    wl_ready(expect, sizeof expect);
    while (!wl_stop_requested())
        wl_sleep_ms(10);

    /* Before the threads are told to finish: every cached TID must still be a
     * thread of this process. */
    for (int i = 0; i < NT; i++) {
        char p[64];
        snprintf(p, sizeof p, "/proc/self/task/%d", (int)tids[i]);
        if (access(p, F_OK) != 0)
            wl_fail("tls: thread %d's TID %d is not in /proc/self/task", i, (int)tids[i]);
    }
    if (getpid() != pid || gettid() != main_tid || wl_gettid() != main_tid)
        wl_fail("tls: main pid/tid changed: getpid %d gettid %d, cached %d", (int)getpid(),
                (int)gettid(), (int)main_tid);
    wl_stopping = 1;
    for (int i = 0; i < NT; i++)
        pthread_join(th[i], NULL);
    if (wl_hash(expect, sizeof expect, 0) != expect_hash)
        wl_fail("tls: expected-values table corrupted (final)");
    return wl_finish();
}
