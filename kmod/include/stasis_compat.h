/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The kernel APIs that differ between the stock kernels stasis builds against
 * (Debian's 5.10, 6.1, 6.12 and the newest), each behind one helper. Kernel version
 * checks live in this file only; the rest of the shim (and all of the Rust) is
 * written once. tests/matrix/run.sh --kernels builds and tests against each of them.
 */
#ifndef STASIS_COMPAT_H
#define STASIS_COMPAT_H

#include <linux/version.h>
#include <linux/mm.h>
#include <linux/fs.h>
#include <linux/file.h>
#include <linux/fdtable.h>
#include <linux/capability.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/highmem.h>
#include <linux/string.h>
#if __has_include(<linux/rseq.h>)
#include <linux/rseq.h>
#endif

/*
 * Whether this kernel is within the range the matrix has passed (docs/MATRIX.md:
 * 5.10, 6.1, 6.12, 7.2). The shim reaches into task and mm internals that change
 * between releases (7.x moved rseq, dumpability and the robust list), so a kernel
 * newer than the newest one tested loads only with allow_untested_kernel=1 (the
 * matrix passes it) instead of risking an oops.
 */
#define STASIS_KERNEL_VALIDATED	(LINUX_VERSION_CODE < KERNEL_VERSION(7, 3, 0))

/*
 * Walking an mm's VMAs (the caller holds mmap_lock): the maple-tree iterator since
 * 6.1, the mm->mmap list before.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 1, 0)
#define STASIS_VMA_WALK(it, mm)		VMA_ITERATOR(it, mm, 0)
#define stasis_for_each_vma(it, vma)	for_each_vma(it, vma)
#else
#define STASIS_VMA_WALK(it, mm)		struct mm_struct *it = (mm)
#define stasis_for_each_vma(it, vma)	for (vma = (it)->mmap; vma; vma = vma->vm_next)
#endif

/*
 * Setting and clearing VM_* flags of a VMA (the caller holds mmap_lock for writing):
 * vm_flags is read-only outside the mm core since 6.3.
 */
static inline void stasis_vma_flags_mod(struct vm_area_struct *vma, unsigned long set,
					unsigned long clear)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	vm_flags_mod(vma, set, clear);
#else
	vma->vm_flags = (vma->vm_flags & ~clear) | set;
#endif
}

/*
 * Whether a special mapping's name is the vDSO data: [vvar], and since 6.13 also
 * [vvar_vclock] (adjacent to it; both are kept in place as one group).
 */
static inline bool stasis_is_vvar(const char *name)
{
	return !strncmp(name, "[vvar", 5);
}

/* A capability set as one 64-bit mask (an array of two u32 before 6.3). */
static inline u64 stasis_cap64(kernel_cap_t c)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	return c.val;
#else
	return (u64)c.cap[0] | ((u64)c.cap[1] << 32);
#endif
}

/*
 * The first open file of current at descriptor *fd or above, with a reference taken
 * (fput it), *fd set to its number; NULL when there is none.
 */
static inline struct file *stasis_next_file(unsigned int *fd)
{
	struct file *f;

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 13, 0)
	f = fget_task_next(current, fd);
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
	rcu_read_lock();
	f = task_lookup_next_fdget_rcu(current, fd);
	rcu_read_unlock();
#else
	struct files_struct *files = current->files;

	f = NULL;
	rcu_read_lock();
	for (; *fd < files_fdtable(files)->max_fds; (*fd)++) {
		f = files_lookup_fd_rcu(files, *fd);
		/* A file being closed (count 0) is skipped. */
		if (f && get_file_rcu(f))
			break;
		f = NULL;
	}
	rcu_read_unlock();
#endif
	return f;
}

/* Whether current's descriptor fd is close-on-exec. */
static inline bool stasis_fd_cloexec(unsigned int fd)
{
	bool r;

	rcu_read_lock();
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 8, 0)
	r = close_on_exec(fd, current->files);
#else
	r = close_on_exec(fd, files_fdtable(current->files));
#endif
	rcu_read_unlock();
	return r;
}

/* The mm's executable file with a reference taken (fput it), or NULL. */
static inline struct file *stasis_exe_file(struct mm_struct *mm)
{
	struct file *f;

	rcu_read_lock();
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
	f = get_file_rcu(&mm->exe_file);
#else
	f = rcu_dereference(mm->exe_file);
	if (f && !get_file_rcu(f))
		f = NULL;
#endif
	rcu_read_unlock();
	return f;
}

/* A page mapped for a short copy (kmap_local since 5.11; kmap_atomic before). */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 11, 0)
#define stasis_kmap_local(page)		kmap_local_page(page)
#define stasis_kunmap_local(addr)	kunmap_local(addr)
#else
#define stasis_kmap_local(page)		kmap_atomic(page)
#define stasis_kunmap_local(addr)	kunmap_atomic(addr)
#endif

/*
 * Whether the signal struct holds POSIX timers (the caller holds siglock): a
 * list_head before 6.12, an hlist_head since, plus a second list for ignored timers
 * since 6.13. _Generic picks the test by the field's type.
 */
static inline bool stasis_has_posix_timers(struct signal_struct *sig)
{
	bool r = !_Generic(&sig->posix_timers,
			   struct list_head * : list_empty,
			   struct hlist_head * : hlist_empty)(&sig->posix_timers);
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 13, 0)
	r = r || !hlist_empty(&sig->ignored_posix_timers);
#endif
	return r;
}

/*
 * @task's dumpability (0 off, 1 by its owner, 2 as root; the values are ABI): the mm's
 * flag until the per-task exec state (linux/sched/exec_state.h, 7.x) took it over.
 */
#if __has_include(<linux/sched/exec_state.h>)
#include <linux/sched/exec_state.h>
static inline int stasis_dumpable(struct task_struct *task, struct mm_struct *mm)
{
	const struct task_exec_state *es;
	int r;

	rcu_read_lock();
	es = rcu_dereference(task->exec_state);
	r = es ? es->dumpable : 0;
	rcu_read_unlock();
	return r;
}
#else
#include <linux/sched/coredump.h>
static inline int stasis_dumpable(struct task_struct *task, struct mm_struct *mm)
{
	return get_dumpable(mm);
}
#endif
#define STASIS_DUMPABLE_OWNER	1

#ifdef CONFIG_FUTEX
/* current's robust futex list head (moved into task->futex in 7.x). */
static inline unsigned long stasis_robust_list(void)
{
#if __has_include(<linux/futex_types.h>)
	return (unsigned long)current->futex.robust_list;
#else
	return (unsigned long)current->robust_list;
#endif
}
#endif

#ifdef CONFIG_RSEQ
/* current's rseq registration: address, length (0: none) and signature. */
static inline void stasis_rseq_get(u64 *addr, u32 *len, u32 *sig)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 19, 0)
	*addr = (unsigned long)current->rseq.usrptr;
	*len = current->rseq.usrptr ? current->rseq.len : 0;
	*sig = current->rseq.sig;
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	*addr = (unsigned long)current->rseq;
	*len = current->rseq ? current->rseq_len : 0;
	*sig = current->rseq_sig;
#else
	*addr = (unsigned long)current->rseq;
	*len = current->rseq ? 32 : 0;	/* the original struct rseq, the only size */
	*sig = current->rseq_sig;
#endif
}

/*
 * Registers rseq for current as the rseq system call would (its checks were made at
 * checkpoint time and by the image validation); the area is refreshed on the way back
 * to user mode.
 */
static inline void stasis_rseq_set(u64 addr, u32 len, u32 sig)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 19, 0)
	/* As rseq_register() in kernel/rseq.c (read in 7.2): v2 for extended areas. */
	current->rseq.usrptr = u64_to_user_ptr(addr);
	current->rseq.len = len;
	current->rseq.sig = sig;
	current->rseq.event.has_rseq =
		(IS_ENABLED(CONFIG_GENERIC_IRQ_ENTRY) && len > 32) ? 2 : 1;
	rseq_force_update();
#else
	current->rseq = u64_to_user_ptr(addr);
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	current->rseq_len = len;
#endif
	current->rseq_sig = sig;
	rseq_set_notify_resume(current);
#endif
}
#endif

/*
 * Calls func(arg) with the stack pointer at @stack (the top of a private stack; the
 * old rsp is stored in its top word and popped back after the call): the kernel's own
 * call_on_stack() (asm/irq_stack.h, a pattern objtool knows) since 5.12. Before 5.12
 * the same instruction sequence is written out here (that objtool may warn about the
 * stack switch; the call itself is the same).
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 12, 0)
#include <asm/irq_stack.h>
#define stasis_call_on_stack(stack, func, arg)				\
	call_on_stack(stack, func, ASM_CALL_ARG1, , [arg1] "r" (arg))
#else
#include <asm/asm.h>
#define stasis_call_on_stack(stack, func, arg)				\
{									\
	register void *tos asm("r11");					\
									\
	tos = ((void *)(stack));					\
	asm volatile("movq	%%rsp, (%[tos])\n"			\
		     "movq	%[tos], %%rsp\n"				\
		     "movq	%[arg1], %%rdi\n"				\
		     "call	%P[__func]\n"				\
		     "popq	%%rsp\n"					\
		     : "+r" (tos), ASM_CALL_CONSTRAINT			\
		     : [__func] "i" (func), [tos] "r" (tos), [arg1] "r" (arg) \
		     : "cc", "rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9",	\
		       "r10", "memory");					\
}
#endif

#endif /* STASIS_COMPAT_H */
