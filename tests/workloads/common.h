/* Shared code for the stasis self-checking workloads. See README.md. */
#ifndef STASIS_WL_COMMON_H
#define STASIS_WL_COMMON_H

#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Parse the common options (--verdict, --ready, --stop). `extra` lists the
 * workload's own options that take a value (NULL-terminated, e.g.
 * {"--dir", NULL}); `flags` lists value-less options. Exits with status 2
 * on a usage error. */
void wl_init(int argc, char **argv, const char *const *extra, const char *const *flags);
/* Value of an extra option, or `dflt` when absent. */
const char *wl_opt(const char *name, const char *dflt);
/* Non-zero when a value-less flag was given. */
int wl_flag(const char *name);
const char *wl_verdict_path(void);
/* Directory of the verdict file (static buffer). */
const char *wl_verdict_dir(void);

/* Write the ready file atomically: "ready pid=P damage=0xADDR len=N". */
void wl_ready(const void *damage, size_t len);
/* Non-zero once the stop file exists. */
int wl_stop_requested(void);
/* Poll for the stop file every ~10 ms. Also sets wl_stopping. */
void wl_wait_stop(void);
/* Set by wl_wait_stop() when the stop file appeared; threads poll it. */
extern volatile int wl_stopping;

/* Record a failure (thread-safe, async-signal-unsafe); the first message wins,
 * later ones are counted. */
void wl_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int wl_failed(void);
/* Write the verdict file atomically and return the exit status (0 ok, 1 fail). */
int wl_finish(void);

/* Helpers. */
uint64_t wl_hash(const void *p, size_t n, uint64_t seed); /* FNV-1a style, 64 bit */
uint64_t wl_mix(uint64_t x);                              /* splitmix64 finaliser */
void wl_sleep_ms(long ms);                                /* nanosleep, EINTR-safe */
uint64_t wl_now_ns(void);                                 /* CLOCK_MONOTONIC */
pid_t wl_gettid(void);
/* Write a whole file atomically (path.tmp + rename). Returns 0 on success. */
int wl_write_file_atomic(const char *path, const char *text);

#endif
