/* poke PID ADDR LEN: flip (XOR 0xff) every byte of [ADDR, ADDR+LEN) in
 * process PID, using process_vm_readv / process_vm_writev. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s PID ADDR LEN\n", argv[0]);
        return 2;
    }
    char *end;
    errno = 0;
    long pid = strtol(argv[1], &end, 10);
    if (errno || *end || pid <= 0) {
        fprintf(stderr, "poke: bad pid %s\n", argv[1]);
        return 2;
    }
    unsigned long addr = strtoul(argv[2], &end, 0);
    if (errno || *end) {
        fprintf(stderr, "poke: bad address %s\n", argv[2]);
        return 2;
    }
    unsigned long len = strtoul(argv[3], &end, 0);
    if (errno || *end) {
        fprintf(stderr, "poke: bad length %s\n", argv[3]);
        return 2;
    }
    static unsigned char buf[1 << 20];
    while (len > 0) {
        size_t n = len < sizeof buf ? len : sizeof buf;
        struct iovec local = {buf, n}, remote = {(void *)addr, n};
        ssize_t r = process_vm_readv((pid_t)pid, &local, 1, &remote, 1, 0);
        if (r != (ssize_t)n) {
            fprintf(stderr, "poke: process_vm_readv(%ld, %#lx, %zu): %s\n", pid, addr, n,
                    r < 0 ? strerror(errno) : "short read");
            return 1;
        }
        for (size_t i = 0; i < n; i++)
            buf[i] ^= 0xff;
        r = process_vm_writev((pid_t)pid, &local, 1, &remote, 1, 0);
        if (r != (ssize_t)n) {
            fprintf(stderr, "poke: process_vm_writev(%ld, %#lx, %zu): %s\n", pid, addr, n,
                    r < 0 ? strerror(errno) : "short write");
            return 1;
        }
        addr += n;
        len -= n;
    }
    return 0;
}
