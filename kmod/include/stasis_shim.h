/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The C functions the Rust object of stasis.ko calls (kmod/rust declares them in its
 * extern blocks): each has its prototype here, so the compiler checks the C side
 * (-Wmissing-prototypes). The Rust declarations are still written by hand; generating
 * them from this header is issue "One mechanism, two engines".
 */
#ifndef STASIS_SHIM_H
#define STASIS_SHIM_H

#include <linux/types.h>
#include <linux/compiler.h>

struct stasis_job;
struct stasis_kproc;
struct stasis_kthread;
struct stasis_kvma;
struct stasis_rstate;

typedef long (*stasis_report_fn)(void *ctx, int tid, const void *regs, size_t len);
typedef long (*stasis_kthread_fn)(void *ctx, const struct stasis_kthread *ks);

/* Logging, time, failure (stasis_main.c). */
void stasis_log(unsigned int level, const char *msg, size_t len);
void __noreturn stasis_bug(void);
u64 stasis_now_ns(void);
u32 stasis_page_size(void);
long stasis_copy_to_user(u64 uaddr, const void *src, size_t len);
long stasis_on_big_stack(long (*fn)(void *), void *arg);

/* Extensions. */
long stasis_ext_checkpoint(void *wctx, long (*record)(void *, u32, const void *, size_t,
						      const void *, size_t));
u64 stasis_ext_mask(void);

/* Sessions, freezing. */
void *stasis_session_take_kept(void *sp);
void stasis_session_keep(void *sp, void *k);
long stasis_freeze(void *sp, int pid, unsigned int timeout_ms, unsigned int max_threads);
long stasis_frozen_each(void *sp, stasis_report_fn fn, void *ctx);
long stasis_thaw(void *sp);
long stasis_kill_frozen(void *sp);

/* The checkpoint job (runs in the target's leader). */
long stasis_run_job(void *sp, int fd, u64 *stats);
void stasis_job_set_stats(struct stasis_job *job, u64 bytes, u64 pages, u64 threads, u64 vmas);
long stasis_job_check(struct stasis_job *job);
long stasis_job_write(struct stasis_job *job, const void *buf, size_t len);
long stasis_job_threads(struct stasis_job *job, stasis_kthread_fn fn, void *ctx);
long stasis_job_siginfo(struct stasis_job *job, s32 tid, u8 *buf, size_t cap);
long stasis_job_proc(struct stasis_job *job, struct stasis_kproc *kp, size_t size);
long stasis_job_path(struct stasis_job *job, unsigned int which, char *buf, size_t len);
long stasis_job_vmas(struct stasis_job *job);
long stasis_job_vma(struct stasis_job *job, unsigned int idx, struct stasis_kvma *out,
		    size_t size, char *buf, size_t len);
long stasis_job_read_page(struct stasis_job *job, u64 addr, void *buf, unsigned int mode);

/* Images held in kernel memory. */
long stasis_image_load(int fd, u64 max, void **out, u64 *out_len);
void stasis_image_free(void *p);

/* Restart: the future process's thread group and address space (stasis_restart.c). */
long stasis_rg_claim(int pid, u32 nr, u32 timeout_ms, void **out);
void stasis_rg_release(void *gp);
long stasis_rg_run(void *gp, void *job);
long stasis_rg_set_thread(void *gp, s32 tid, const struct stasis_rstate *st,
			  const void *xstate, u32 xsize);
bool stasis_is_err(const void *p);
long stasis_mm_specials(u64 *out);
u64 stasis_mm_task_size(void);
long stasis_mm_unmap(u64 start, u64 end);
void *stasis_mm_fget(int fd);
void stasis_mm_fput(void *f);
long stasis_mm_map(void *file, u64 start, u64 len, u32 prot, u32 flags, u64 off);
long stasis_mm_fill(u64 addr, const void *src, u64 len, u32 force);
long stasis_mm_vma_flags(u64 start, u64 end, u32 flags);

#endif
