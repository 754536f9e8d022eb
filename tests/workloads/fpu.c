/* fpu: threads hold distinct per-thread values in vector and x87 registers
 * while blocked in nanosleep (a raw syscall inside the asm block) and while
 * spinning in user space, then store and compare them against the expected
 * table. Thread kinds: SSE (xmm0-15 with legacy encoding, plus the 8 x87
 * stack registers), AVX (ymm0-15, upper halves included) and, when the CPU
 * has AVX-512F/BW, AVX-512 (zmm0-31 and k1-k7). Every thread also sets its
 * own non-default x87 control word and MXCSR and checks them each round.
 * Damage range: the expected-values table (its hash is kept elsewhere). */
#include "common.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>

#define MAXT 8

enum kind { K_SSE, K_AVX, K_AVX512 };

struct regs {
    uint8_t xmm[16][16];
    uint8_t ymm[16][32];
    uint8_t zmm[32][64];
    uint64_t k[8]; /* k1..k7 used */
    long double st[8];
} __attribute__((aligned(64)));

struct expect {
    struct regs r;
    uint16_t fcw;
    uint32_t mxcsr;
    int kind;
} __attribute__((aligned(64)));

static struct expect expect[MAXT];
static uint64_t expect_hash[MAXT]; /* outside the damage range */
static int nthreads;
static volatile int running[MAXT];
static long spins = 2000000;
static long sleep_ns = 10000000;

static const char *kind_name(int k) { return k == K_SSE ? "sse" : k == K_AVX ? "avx" : "avx512"; }

/* Load, block in nanosleep, spin, store. Returns the nanosleep result. */
static long sse_round(const struct regs *in, struct regs *out, const struct timespec *ts, long n)
{
    long ret = SYS_nanosleep;
    __asm__ volatile(
#define L(i) "movdqu " #i "*16(%[in]), %%xmm" #i "\n\t"
        L(0) L(1) L(2) L(3) L(4) L(5) L(6) L(7) L(8) L(9) L(10) L(11) L(12) L(13) L(14) L(15)
#undef L
        "fldt 7*16(%[sti])\n\t"
        "fldt 6*16(%[sti])\n\t"
        "fldt 5*16(%[sti])\n\t"
        "fldt 4*16(%[sti])\n\t"
        "fldt 3*16(%[sti])\n\t"
        "fldt 2*16(%[sti])\n\t"
        "fldt 1*16(%[sti])\n\t"
        "fldt 0*16(%[sti])\n\t"
        "syscall\n\t"
        "1: dec %[n]\n\t"
        "jnz 1b\n\t"
#define S(i) "movdqu %%xmm" #i ", " #i "*16(%[out])\n\t"
        S(0) S(1) S(2) S(3) S(4) S(5) S(6) S(7) S(8) S(9) S(10) S(11) S(12) S(13) S(14) S(15)
#undef S
        "fstpt 0*16(%[sto])\n\t"
        "fstpt 1*16(%[sto])\n\t"
        "fstpt 2*16(%[sto])\n\t"
        "fstpt 3*16(%[sto])\n\t"
        "fstpt 4*16(%[sto])\n\t"
        "fstpt 5*16(%[sto])\n\t"
        "fstpt 6*16(%[sto])\n\t"
        "fstpt 7*16(%[sto])\n\t"
        : [n] "+r"(n), "+a"(ret)
        : [in] "r"(in->xmm), [out] "r"(out->xmm), [sti] "r"(in->st), [sto] "r"(out->st),
          "D"(ts), "S"(NULL)
        : "memory", "cc", "rcx", "r11", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6",
          "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "st",
          "st(1)", "st(2)", "st(3)", "st(4)", "st(5)", "st(6)", "st(7)");
    return ret;
}

__attribute__((target("avx"))) static long avx_round(const struct regs *in, struct regs *out,
                                                      const struct timespec *ts, long n)
{
    long ret = SYS_nanosleep;
    __asm__ volatile(
#define L(i) "vmovdqu " #i "*32(%[in]), %%ymm" #i "\n\t"
        L(0) L(1) L(2) L(3) L(4) L(5) L(6) L(7) L(8) L(9) L(10) L(11) L(12) L(13) L(14) L(15)
#undef L
        "syscall\n\t"
        "1: dec %[n]\n\t"
        "jnz 1b\n\t"
#define S(i) "vmovdqu %%ymm" #i ", " #i "*32(%[out])\n\t"
        S(0) S(1) S(2) S(3) S(4) S(5) S(6) S(7) S(8) S(9) S(10) S(11) S(12) S(13) S(14) S(15)
#undef S
        "vzeroupper\n\t"
        : [n] "+r"(n), "+a"(ret)
        : [in] "r"(in->ymm), [out] "r"(out->ymm), "D"(ts), "S"(NULL)
        : "memory", "cc", "rcx", "r11", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6",
          "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
    return ret;
}

__attribute__((target("avx512f,avx512bw"))) static long avx512_round(const struct regs *in,
                                                                      struct regs *out,
                                                                      const struct timespec *ts,
                                                                      long n)
{
    long ret = SYS_nanosleep;
    __asm__ volatile(
#define L(i) "vmovdqu64 " #i "*64(%[in]), %%zmm" #i "\n\t"
        L(0) L(1) L(2) L(3) L(4) L(5) L(6) L(7) L(8) L(9) L(10) L(11) L(12) L(13) L(14) L(15)
        L(16) L(17) L(18) L(19) L(20) L(21) L(22) L(23) L(24) L(25) L(26) L(27) L(28) L(29)
        L(30) L(31)
#undef L
#define LK(i) "kmovq " #i "*8(%[kin]), %%k" #i "\n\t"
        LK(1) LK(2) LK(3) LK(4) LK(5) LK(6) LK(7)
#undef LK
        "syscall\n\t"
        "1: dec %[n]\n\t"
        "jnz 1b\n\t"
#define S(i) "vmovdqu64 %%zmm" #i ", " #i "*64(%[out])\n\t"
        S(0) S(1) S(2) S(3) S(4) S(5) S(6) S(7) S(8) S(9) S(10) S(11) S(12) S(13) S(14) S(15)
        S(16) S(17) S(18) S(19) S(20) S(21) S(22) S(23) S(24) S(25) S(26) S(27) S(28) S(29)
        S(30) S(31)
#undef S
#define SK(i) "kmovq %%k" #i ", " #i "*8(%[kout])\n\t"
        SK(1) SK(2) SK(3) SK(4) SK(5) SK(6) SK(7)
#undef SK
        "vzeroupper\n\t"
        : [n] "+r"(n), "+a"(ret)
        : [in] "r"(in->zmm), [out] "r"(out->zmm), [kin] "r"(in->k), [kout] "r"(out->k),
          "D"(ts), "S"(NULL)
        : "memory", "cc", "rcx", "r11", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6",
          "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16",
          "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25",
          "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31", "k1", "k2", "k3", "k4", "k5",
          "k6", "k7");
    return ret;
}

static uint16_t get_fcw(void)
{
    uint16_t v;
    __asm__ volatile("fnstcw %0" : "=m"(v));
    return v;
}
static uint32_t get_mxcsr(void)
{
    uint32_t v;
    __asm__ volatile("stmxcsr %0" : "=m"(v));
    return v;
}

static void fill(int id, int kind)
{
    struct expect *e = &expect[id];
    memset(e, 0, sizeof *e);
    e->kind = kind;
    uint64_t s = 0xf00d0000ULL + (uint64_t)id * 0x10001ULL;
    uint64_t *p = (uint64_t *)&e->r;
    size_t nwords = offsetof(struct regs, st) / 8;
    for (size_t i = 0; i < nwords; i++)
        p[i] = wl_mix(s + i);
    for (int i = 0; i < 8; i++)
        e->r.st[i] = (long double)(id * 1000 + i) + 0.375L + (long double)i / 1024.0L;
    /* x87 CW: exceptions masked (bit 6 reads as 1), per-thread precision and rounding control. */
    unsigned pc = (unsigned)(id % 3 == 0 ? 0 : id % 3 == 1 ? 2 : 3);
    unsigned rc = (unsigned)((id + 1) % 4);
    e->fcw = (uint16_t)(0x7f | (pc << 8) | (rc << 10));
    /* MXCSR: exceptions masked, per-thread rounding mode, FZ, DAZ. */
    uint32_t m = 0x1f80 | ((uint32_t)((id + 1) % 4) << 13);
    if (id & 1)
        m |= 1u << 15;
    if (id % 3 == 0)
        m |= 1u << 6;
    e->mxcsr = m;
    expect_hash[id] = wl_hash(e, sizeof *e, 0);
}

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    const struct expect *e = &expect[id];
    struct regs *out = aligned_alloc(64, sizeof(struct regs));
    if (!out) {
        wl_fail("fpu: out of memory");
        running[id] = 1;
        return NULL;
    }
    uint16_t fcw = e->fcw;
    uint32_t mxcsr = e->mxcsr;
    __asm__ volatile("fldcw %0" ::"m"(fcw));
    __asm__ volatile("ldmxcsr %0" ::"m"(mxcsr));
    struct timespec ts = {0, sleep_ns};
    const char *kn = kind_name(e->kind);
    unsigned long round = 0;
    running[id] = 1;
    while (!wl_stopping) {
        memset(out, 0, sizeof *out);
        long r;
        if (e->kind == K_SSE)
            r = sse_round(&e->r, out, &ts, spins);
        else if (e->kind == K_AVX)
            r = avx_round(&e->r, out, &ts, spins);
        else
            r = avx512_round(&e->r, out, &ts, spins);
        round++;
        if (wl_hash(e, sizeof *e, 0) != expect_hash[id]) {
            wl_fail("fpu: thread %d expected-values table corrupted", id);
            break;
        }
        if (r != 0 && r != -4) {
            wl_fail("fpu: thread %d (%s) raw nanosleep returned %ld", id, kn, r);
            break;
        }
        int bad = -1;
        const char *what = "";
        if (e->kind == K_SSE) {
            what = "xmm";
            for (int i = 0; i < 16 && bad < 0; i++)
                if (memcmp(out->xmm[i], e->r.xmm[i], 16))
                    bad = i;
            if (bad < 0) {
                what = "st";
                for (int i = 0; i < 8 && bad < 0; i++)
                    if (memcmp(&out->st[i], &e->r.st[i], 10))
                        bad = i;
            }
        } else if (e->kind == K_AVX) {
            what = "ymm";
            for (int i = 0; i < 16 && bad < 0; i++)
                if (memcmp(out->ymm[i], e->r.ymm[i], 32))
                    bad = i;
        } else {
            what = "zmm";
            for (int i = 0; i < 32 && bad < 0; i++)
                if (memcmp(out->zmm[i], e->r.zmm[i], 64))
                    bad = i;
            if (bad < 0) {
                what = "k";
                for (int i = 1; i < 8 && bad < 0; i++)
                    if (out->k[i] != e->r.k[i])
                        bad = i;
            }
        }
        if (bad >= 0) {
            wl_fail("fpu: thread %d (%s) %s%d mismatch in round %lu", id, kn, what, bad, round);
            break;
        }
        uint16_t f = get_fcw();
        uint32_t m = get_mxcsr() & ~0x3fu; /* ignore sticky exception flags */
        if (f != e->fcw || m != e->mxcsr) {
            wl_fail("fpu: thread %d control words fcw=%#x mxcsr=%#x, expected %#x %#x", id, f, m,
                    e->fcw, e->mxcsr);
            break;
        }
    }
    free(out);
    return NULL;
}

int main(int argc, char **argv)
{
    static const char *const extra[] = {"--spins", "--sleep-ms", NULL};
    wl_init(argc, argv, extra, NULL);
    spins = atol(wl_opt("--spins", "2000000"));
    if (spins < 1)
        spins = 1;
    sleep_ns = atol(wl_opt("--sleep-ms", "10")) * 1000000L;
    if (sleep_ns < 0 || sleep_ns > 999999999L)
        sleep_ns = 10000000L;

    __builtin_cpu_init();
    int have_avx = __builtin_cpu_supports("avx");
    int have_512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    int kinds[6] = {K_SSE, K_SSE, have_avx ? K_AVX : K_SSE, have_avx ? K_AVX : K_SSE,
                    have_512 ? K_AVX512 : (have_avx ? K_AVX : K_SSE),
                    have_512 ? K_AVX512 : K_SSE};
    nthreads = 6;
    for (int i = 0; i < nthreads; i++)
        fill(i, kinds[i]);
    pthread_t th[MAXT];
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i) != 0) {
            perror("pthread_create");
            return 3;
        }
    for (int i = 0; i < nthreads; i++)
        while (!running[i])
            wl_sleep_ms(1);
    wl_sleep_ms(50);
    wl_ready(expect, sizeof expect);
    wl_wait_stop();
    for (int i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < nthreads; i++)
        if (wl_hash(&expect[i], sizeof expect[i], 0) != expect_hash[i])
            wl_fail("fpu: expected-values table of thread %d corrupted (final)", i);
    return wl_finish();
}
