/* counters: 8 threads each advance a checksummed state machine in their own
 * memory (an LCG x, its step count n and a running accumulator acc, all
 * checkable in closed form from the seed by matrix jump-ahead), plus a shared
 * array guarded by a mutex whose sum must equal the increments every thread
 * recorded. Damage range: the per-thread state array (its constant part is
 * never rewritten, so corruption is always detected). */
#include "common.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NT 8
#define NSHARED 64
#define ACC_K 0x100000001b3ULL

struct cstate {
    /* constant after setup */
    uint64_t id, seed, a, c;
    /* advanced by the owning thread */
    uint64_t x, n, acc, contrib;
    uint64_t chk;
} __attribute__((aligned(128)));

static struct cstate states[NT];
static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t shared[NSHARED];
static uint64_t locked_contrib[NT];
static volatile int running[NT];

static uint64_t derive_seed(uint64_t id) { return wl_mix(0xc0ffee00ULL + id); }
static uint64_t derive_a(uint64_t id) { return (wl_mix(0xa000ULL + id) & ~3ULL) | 1ULL | 4ULL; }
static uint64_t derive_c(uint64_t id) { return wl_mix(0xc000ULL + id) | 1ULL; }

static uint64_t state_chk(const struct cstate *s)
{
    return wl_mix(s->x ^ wl_mix(s->n ^ wl_mix(s->acc ^ wl_mix(s->contrib ^ wl_mix(s->seed ^ s->id ^
                                                                             wl_mix(s->a ^ s->c))))));
}

typedef uint64_t mat[3][3];
static void matmul(mat r, mat p, mat q)
{
    mat t;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            uint64_t v = 0;
            for (int k = 0; k < 3; k++)
                v += p[i][k] * q[k][j];
            t[i][j] = v;
        }
    memcpy(r, t, sizeof t);
}

/* (x_n, acc_n) from x_0 = seed, acc_0 = 0 with x' = a x + c, acc' = K acc + x'. */
static void jump(uint64_t seed, uint64_t a, uint64_t c, uint64_t n, uint64_t *x, uint64_t *acc)
{
    mat m = {{a, 0, c}, {a, ACC_K, c}, {0, 0, 1}};
    mat r = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
    while (n) {
        if (n & 1)
            matmul(r, r, m);
        matmul(m, m, m);
        n >>= 1;
    }
    *x = r[0][0] * seed + r[0][2];
    *acc = r[1][0] * seed + r[1][2];
}

static int check_state(const struct cstate *s, int id, const char *when)
{
    if (s->id != (uint64_t)id || s->seed != derive_seed(id) || s->a != derive_a(id) ||
        s->c != derive_c(id)) {
        wl_fail("counters: thread %d constants corrupted (%s)", id, when);
        return 0;
    }
    if (state_chk(s) != s->chk) {
        wl_fail("counters: thread %d state checksum mismatch at n=%lu (%s)", id,
                (unsigned long)s->n, when);
        return 0;
    }
    uint64_t x, acc;
    jump(s->seed, s->a, s->c, s->n, &x, &acc);
    if (x != s->x || acc != s->acc) {
        wl_fail("counters: thread %d x/acc inconsistent with step count %lu (%s)", id,
                (unsigned long)s->n, when);
        return 0;
    }
    return 1;
}

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    struct cstate *s = &states[id];
    running[id] = 1;
    while (!wl_stopping) {
        for (int k = 0; k < 8192; k++) {
            if (state_chk(s) != s->chk) {
                wl_fail("counters: thread %d state checksum mismatch at n=%lu", id,
                        (unsigned long)s->n);
                return NULL;
            }
            uint64_t x = s->a * s->x + s->c;
            uint64_t acc = s->acc * ACC_K + x;
            uint64_t contrib = s->contrib;
            if ((k & 255) == 0) {
                pthread_mutex_lock(&shared_lock);
                shared[x >> 58]++;
                locked_contrib[id]++;
                contrib++;
                if (locked_contrib[id] != contrib) {
                    pthread_mutex_unlock(&shared_lock);
                    wl_fail("counters: thread %d shared contributions diverged", id);
                    return NULL;
                }
                pthread_mutex_unlock(&shared_lock);
            }
            s->x = x;
            s->acc = acc;
            s->n++;
            s->contrib = contrib;
            s->chk = state_chk(s);
        }
        if (!check_state(s, id, "running"))
            return NULL;
        pthread_mutex_lock(&shared_lock);
        uint64_t sum = 0, tot = 0;
        for (int i = 0; i < NSHARED; i++)
            sum += shared[i];
        for (int i = 0; i < NT; i++)
            tot += locked_contrib[i];
        pthread_mutex_unlock(&shared_lock);
        if (sum != tot) {
            wl_fail("counters: shared sum %lu != recorded increments %lu", (unsigned long)sum,
                    (unsigned long)tot);
            return NULL;
        }
        wl_sleep_ms(1);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, NULL, NULL);
    for (int i = 0; i < NT; i++) {
        struct cstate *s = &states[i];
        s->id = i;
        s->seed = derive_seed(i);
        s->a = derive_a(i);
        s->c = derive_c(i);
        s->x = s->seed;
        s->n = 0;
        s->acc = 0;
        s->contrib = 0;
        s->chk = state_chk(s);
    }
    pthread_t th[NT];
    for (int i = 0; i < NT; i++)
        if (pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i) != 0) {
            perror("pthread_create");
            return 3;
        }
    for (int i = 0; i < NT; i++)
        while (!running[i])
            wl_sleep_ms(1);
    wl_sleep_ms(20);
    wl_ready(states, sizeof states);
    wl_wait_stop();
    for (int i = 0; i < NT; i++)
        pthread_join(th[i], NULL);
    uint64_t sum = 0, tot = 0;
    for (int i = 0; i < NT; i++) {
        check_state(&states[i], i, "final");
        if (states[i].contrib != locked_contrib[i])
            wl_fail("counters: thread %d contrib %lu != locked record %lu", i,
                    (unsigned long)states[i].contrib, (unsigned long)locked_contrib[i]);
        if (states[i].n == 0)
            wl_fail("counters: thread %d never advanced", i);
        tot += locked_contrib[i];
    }
    for (int i = 0; i < NSHARED; i++)
        sum += shared[i];
    if (sum != tot)
        wl_fail("counters: final shared sum %lu != recorded increments %lu", (unsigned long)sum,
                (unsigned long)tot);
    return wl_finish();
}
