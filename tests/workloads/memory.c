/* memory: a large MAP_NORESERVE anonymous reservation (--reserve-mib,
 * default 1024) of which --touch-mib (default 64) is touched in a scattered
 * pattern, a private file mapping modified privately, a shared anonymous
 * mapping updated by two threads, mprotect'ed holes (PROT_NONE and PROT_READ
 * pages inside a read-write region, checked in /proc/self/maps), a
 * brk-grown heap, never-touched pages that must read as zero and must not
 * have been populated, and a checksum over all fixed contents recomputed at
 * the end. Damage range: the first touched page of the reservation. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PG 4096UL
#define PRIV_LEN (16 * PG)
#define SHARED_LEN (1UL << 20)
#define HOLES_PAGES 16
#define BRK_LEN (256 * 1024UL)
#define NW 2
#define SLOTS 4096 /* words per worker in the shared mapping */

static unsigned char *reserve;
static size_t reserve_len, npages, ntouch, bucket;
static unsigned char *priv, *shared, *holes, *brk_area;
static char priv_path[600];
static long kernel_brk;
static uint64_t total_hash;
static volatile int running[NW];

static const char hole_perm[HOLES_PAGES] = {'w', 'w', 'w', 'w', '-', '-', 'w', 'w',
                                            'w', 'r', 'w', 'w', 'w', 'w', 'w', 'w'};

static uint64_t gen(uint64_t seed, uint64_t i) { return wl_mix(seed * 0x100000001b3ULL + i); }

static void fill(void *p, size_t len, uint64_t seed)
{
    uint64_t *w = p;
    for (size_t i = 0; i < len / 8; i++)
        w[i] = gen(seed, i);
}

static int check(const void *p, size_t len, uint64_t seed)
{
    const uint64_t *w = p;
    for (size_t i = 0; i < len / 8; i++)
        if (w[i] != gen(seed, i))
            return 0;
    return 1;
}

static uint64_t whash(const void *p, size_t len, uint64_t h)
{
    const uint64_t *w = p;
    for (size_t i = 0; i < len / 8; i++)
        h = (h ^ w[i]) * 0x9e3779b97f4a7c15ULL + (h >> 29);
    return h;
}

static size_t touched_page(size_t j) { return j * bucket + (size_t)(wl_mix(j) % bucket); }
static uint64_t page_seed(size_t j) { return 0x3e3000000ULL + j; }

static uint64_t all_hash(void)
{
    uint64_t h = 0x1234;
    for (size_t j = 0; j < ntouch; j++)
        h = whash(reserve + touched_page(j) * PG, PG, h);
    h = whash(priv, PRIV_LEN, h);
    for (int p = 0; p < HOLES_PAGES; p++)
        if (hole_perm[p] != '-')
            h = whash(holes + p * PG, PG, h);
    h = whash(brk_area, BRK_LEN, h);
    return h;
}

/* Permissions ("rw-p") and path of the mapping holding addr. */
static int maps_lookup(const void *addr, char perms[5], char *path, size_t pathlen)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    char line[1024];
    int found = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char pm[8];
        int off = 0;
        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s%n", &lo, &hi, pm, &off) < 3)
            continue;
        if ((unsigned long)addr >= lo && (unsigned long)addr < hi) {
            memcpy(perms, pm, 4);
            perms[4] = 0;
            if (path) {
                char *s = line + off;
                while (*s == ' ')
                    s++;
                s[strcspn(s, "\n")] = 0;
                snprintf(path, pathlen, "%s", s);
            }
            found = 0;
            break;
        }
    }
    fclose(f);
    return found;
}

static long reserve_rss_kib(long *huge_kib)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return -1;
    char line[1024];
    int in = 0;
    long rss = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            in = lo <= (unsigned long)reserve && (unsigned long)reserve < hi;
            continue;
        }
        if (in)
            sscanf(line, "Rss: %ld kB", &rss);
        if (in && sscanf(line, "AnonHugePages: %ld kB", huge_kib) == 1)
            break;
    }
    fclose(f);
    return rss;
}

static int check_layout(const char *when)
{
    char pm[5], path[700];
    for (int p = 0; p < HOLES_PAGES; p++) {
        const char *want = hole_perm[p] == 'w' ? "rw-p" : hole_perm[p] == 'r' ? "r--p" : "---p";
        if (maps_lookup(holes + p * PG, pm, NULL, 0) != 0 || strcmp(pm, want) != 0) {
            wl_fail("memory: holes page %d has protections %s, expected %s (%s)", p, pm, want,
                    when);
            return 0;
        }
    }
    if (maps_lookup(reserve, pm, NULL, 0) != 0 || strcmp(pm, "rw-p") != 0)
        return wl_fail("memory: reservation mapping is %s (%s)", pm, when), 0;
    if (maps_lookup(shared, pm, NULL, 0) != 0 || strcmp(pm, "rw-s") != 0)
        return wl_fail("memory: shared anonymous mapping is %s (%s)", pm, when), 0;
    if (maps_lookup(priv, pm, path, sizeof path) != 0 || strcmp(pm, "rw-p") != 0 ||
        strcmp(path, priv_path) != 0)
        return wl_fail("memory: private file mapping is %s '%s' (%s)", pm, path, when), 0;
    return 1;
}

/* Worker t owns SLOTS words of the shared mapping: slot i holds the value
 * written at the last step n' <= n with n' % SLOTS == i. */
struct wstate {
    uint64_t n, chk;
};

static int verify_worker(int t, const char *when)
{
    uint64_t *v = (uint64_t *)(shared + (size_t)t * (SHARED_LEN / NW));
    struct wstate *ws = (struct wstate *)(v + SLOTS);
    uint64_t n = ws->n;
    if (ws->chk != wl_mix(n ^ (0x5a5a0000ULL + (uint64_t)t)))
        return wl_fail("memory: worker %d step counter corrupted (%s)", t, when), 0;
    for (uint64_t i = 0; i < SLOTS; i++) {
        uint64_t back = (n + SLOTS - i) % SLOTS;
        uint64_t want = back <= n && n - back >= 1 ? gen(0x70000ULL + (uint64_t)t, n - back) : 0;
        if (v[i] != want)
            return wl_fail("memory: worker %d shared slot %lu wrong at step %lu (%s)", t,
                           (unsigned long)i, (unsigned long)n, when), 0;
    }
    return 1;
}

static void *worker(void *arg)
{
    int t = (int)(intptr_t)arg;
    uint64_t *v = (uint64_t *)(shared + (size_t)t * (SHARED_LEN / NW));
    struct wstate *ws = (struct wstate *)(v + SLOTS);
    running[t] = 1;
    uint64_t r = 0;
    while (!wl_stopping) {
        for (int k = 0; k < 1000; k++) {
            uint64_t n = ws->n + 1;
            v[n % SLOTS] = gen(0x70000ULL + (uint64_t)t, n);
            ws->n = n;
            ws->chk = wl_mix(n ^ (0x5a5a0000ULL + (uint64_t)t));
        }
        if (!verify_worker(t, "running"))
            return NULL;
        /* Spot-check one touched page of the reservation. */
        size_t j = (size_t)(wl_mix(r++ ^ (uint64_t)t) % ntouch);
        if (!check(reserve + touched_page(j) * PG, PG, page_seed(j)))
            return wl_fail("memory: touched page %zu of the reservation corrupted (running)", j),
                   NULL;
        wl_sleep_ms(2);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    static const char *const extra[] = {"--reserve-mib", "--touch-mib", "--dir", NULL};
    wl_init(argc, argv, extra, NULL);
    long rmib = atol(wl_opt("--reserve-mib", "1024")), tmib = atol(wl_opt("--touch-mib", "64"));
    if (rmib < 1 || tmib < 1 || tmib > rmib) {
        fprintf(stderr, "memory: need 1 <= --touch-mib <= --reserve-mib\n");
        return 2;
    }
    const char *dir = wl_opt("--dir", wl_verdict_dir());
    reserve_len = (size_t)rmib << 20;
    npages = reserve_len / PG;
    ntouch = ((size_t)tmib << 20) / PG;
    bucket = npages / ntouch;

    reserve = mmap(NULL, reserve_len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (reserve == MAP_FAILED) {
        perror("mmap reserve");
        return 3;
    }
    madvise(reserve, reserve_len, MADV_NOHUGEPAGE); /* keep "untouched" meaningful */
    for (size_t j = 0; j < ntouch; j++)
        fill(reserve + touched_page(j) * PG, PG, page_seed(j));

    snprintf(priv_path, sizeof priv_path, "%s/memory-%d.priv", dir, (int)getpid());
    int fd = open(priv_path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        perror("create private-mapped file");
        return 3;
    }
    {
        static uint64_t buf[PRIV_LEN / 8];
        fill(buf, PRIV_LEN, 0xf11e);
        if (write(fd, buf, PRIV_LEN) != (ssize_t)PRIV_LEN) {
            perror("write");
            return 3;
        }
    }
    priv = mmap(NULL, PRIV_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    close(fd);
    if (priv == MAP_FAILED) {
        perror("mmap private file");
        return 3;
    }
    fill(priv + 1 * PG, PG, 0xb1);
    fill(priv + 3 * PG, PG, 0xb3);

    shared = mmap(NULL, SHARED_LEN, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    holes = mmap(NULL, HOLES_PAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
                 0);
    if (shared == MAP_FAILED || holes == MAP_FAILED) {
        perror("mmap");
        return 3;
    }
    for (int p = 0; p < HOLES_PAGES; p++)
        fill(holes + p * PG, PG, 0x401e0 + (uint64_t)p);
    for (int p = 0; p < HOLES_PAGES; p++)
        if (hole_perm[p] != 'w' &&
            mprotect(holes + p * PG, PG, hole_perm[p] == 'r' ? PROT_READ : PROT_NONE) != 0) {
            perror("mprotect");
            return 3;
        }

    pthread_t th[NW];
    for (int t = 0; t < NW; t++)
        if (pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t) != 0) {
            perror("pthread_create");
            return 3;
        }
    for (int t = 0; t < NW; t++)
        while (!running[t])
            wl_sleep_ms(1);
    if (!check_layout("setup"))
        return wl_finish();

    /* The heap grown with sbrk, last so nothing else moves the break. */
    brk_area = sbrk((intptr_t)BRK_LEN);
    if (brk_area == (void *)-1) {
        perror("sbrk");
        return 3;
    }
    fill(brk_area, BRK_LEN, 0xb4c);
    kernel_brk = syscall(SYS_brk, 0);
    if (kernel_brk != (long)(brk_area + BRK_LEN)) {
        fprintf(stderr, "memory: brk %#lx after sbrk, expected %p\n", kernel_brk,
                (void *)(brk_area + BRK_LEN));
        return 3;
    }
    total_hash = all_hash();
    wl_ready(reserve + touched_page(0) * PG, PG);
    wl_wait_stop();

    long b = syscall(SYS_brk, 0); /* first, before anything can malloc */
    if (b != kernel_brk)
        wl_fail("memory: program break is %#lx, expected %#lx", b, kernel_brk);
    for (int t = 0; t < NW; t++)
        pthread_join(th[t], NULL);
    for (int t = 0; t < NW; t++)
        verify_worker(t, "final");

    long huge = 0, rss = reserve_rss_kib(&huge);
    long limit = tmib * 1024 + (tmib * 512 > 8192 ? tmib * 512 : 8192);
    if (rss < 0)
        wl_fail("memory: reservation not found in /proc/self/smaps");
    else if (rss > limit)
        wl_fail("memory: %ld KiB of the reservation are resident (%ld KiB in huge pages: was "
                "MADV_NOHUGEPAGE lost?), only %ld MiB were touched",
                rss, huge, tmib);
    for (size_t j = 0; j < ntouch; j++)
        if (!check(reserve + touched_page(j) * PG, PG, page_seed(j))) {
            wl_fail("memory: touched page %zu (offset %#zx) of the reservation corrupted", j,
                    touched_page(j) * PG);
            break;
        }
    if (bucket > 1) {
        size_t step = ntouch > 1024 ? ntouch / 1024 : 1;
        for (size_t j = 0; j < ntouch; j += step) {
            size_t p = j * bucket + (size_t)((wl_mix(j) + 1) % bucket);
            const uint64_t *w = (const uint64_t *)(reserve + p * PG);
            for (size_t i = 0; i < PG / 8; i++)
                if (w[i]) {
                    wl_fail("memory: never-touched page at offset %#zx is not zero", p * PG);
                    j = ntouch;
                    break;
                }
        }
    }
    for (int p = 0; p < 16; p++) {
        uint64_t seed = p == 1 ? 0xb1 : p == 3 ? 0xb3 : 0xf11e;
        int ok = p == 1 || p == 3 ? check(priv + p * PG, PG, seed) : 1;
        if (!ok)
            wl_fail("memory: private file mapping page %d lost its private modification", p);
    }
    {
        static uint64_t buf[PRIV_LEN / 8];
        fill(buf, PRIV_LEN, 0xf11e);
        if (memcmp(priv, buf, PG) || memcmp(priv + 2 * PG, buf + 2 * PG / 8, PG) ||
            memcmp(priv + 4 * PG, buf + 4 * PG / 8, PRIV_LEN - 4 * PG))
            wl_fail("memory: unmodified pages of the private file mapping differ from the file");
        int f = open(priv_path, O_RDONLY);
        static uint64_t disk[PRIV_LEN / 8];
        if (f < 0 || pread(f, disk, PRIV_LEN, 0) != (ssize_t)PRIV_LEN)
            wl_fail("memory: cannot read back the privately mapped file");
        else if (memcmp(disk, buf, PRIV_LEN) != 0)
            wl_fail("memory: private modifications leaked into the file");
        if (f >= 0)
            close(f);
    }
    check_layout("final");
    for (int p = 0; p < HOLES_PAGES; p++) {
        if (hole_perm[p] == '-' && mprotect(holes + p * PG, PG, PROT_READ) != 0)
            wl_fail("memory: mprotect of a hole failed: %s", strerror(errno));
        if (!check(holes + p * PG, PG, 0x401e0 + (uint64_t)p))
            wl_fail("memory: content of holes page %d wrong", p);
    }
    if (!check(brk_area, BRK_LEN, 0xb4c))
        wl_fail("memory: brk heap content wrong");
    if (all_hash() != total_hash)
        wl_fail("memory: checksum over all fixed contents changed");
    int ok = !wl_failed();
    int rc = wl_finish();
    if (ok)
        unlink(priv_path);
    return rc;
}
