/* memcpy_bw: the machine's memory copy bandwidth, for reading bench results against.
 *   memcpy_bw [MIB (256)] [REPS (5)]
 * Allocates and touches two MIB buffers, copies one to the other REPS times, and prints
 *   LIMIT name=memcpy mib=MIB reps=REPS best_mib_s=X median_mib_s=Y
 *   memcpy_bw --write FILE MIB
 * Writes MIB MiB to a new FILE in 8 MiB write()s from a touched non-zero buffer, fsyncs,
 * and prints  LIMIT name=file_write mib=MIB ms=T mib_s=X  (what a checkpointer writing
 * its image from memory can at best do; dd from /dev/zero also pays for the zeroing).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int write_test(const char *path, long mib)
{
    size_t chunk = 8u << 20;
    char *buf = malloc(chunk);
    if (!buf || mib <= 0) {
        fprintf(stderr, "memcpy_bw: bad size or no memory\n");
        return 2;
    }
    for (size_t i = 0; i < chunk; i++)
        buf[i] = (char)(i * 7 + 1);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        perror(path);
        return 3;
    }
    size_t total = (size_t)mib << 20, done = 0;
    double t0 = now_s();
    while (done < total) {
        size_t n = total - done < chunk ? total - done : chunk;
        ssize_t w = write(fd, buf, n);
        if (w <= 0) {
            perror("write");
            return 3;
        }
        done += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        perror("fsync/close");
        return 3;
    }
    double t1 = now_s();
    unlink(path);
    printf("LIMIT name=file_write mib=%ld ms=%.1f mib_s=%.1f\n", mib, (t1 - t0) * 1000,
           (double)mib / (t1 - t0));
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--write") == 0)
        return write_test(argv[2], atol(argv[3]));
    long mib = argc > 1 ? atol(argv[1]) : 256;
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    if (mib <= 0 || reps <= 0 || reps > 100) {
        fprintf(stderr, "usage: %s [MIB] [REPS]\n", argv[0]);
        return 2;
    }
    size_t n = (size_t)mib << 20;
    char *a = malloc(n), *b = malloc(n);
    if (!a || !b) {
        perror("malloc");
        return 3;
    }
    memset(a, 0x5a, n);
    memset(b, 0xa5, n);
    double rate[100];
    for (int i = 0; i < reps; i++) {
        double t0 = now_s();
        memcpy(b, a, n);
        double t1 = now_s();
        a[i] ^= b[n - 1 - (size_t)i]; /* keep the copies observable */
        rate[i] = (double)mib / (t1 - t0);
    }
    qsort(rate, (size_t)reps, sizeof rate[0], cmp);
    printf("LIMIT name=memcpy mib=%ld reps=%d best_mib_s=%.1f median_mib_s=%.1f\n", mib, reps,
           rate[reps - 1], rate[reps / 2]);
    return a[0] == 0x42 ? 1 : 0;
}
