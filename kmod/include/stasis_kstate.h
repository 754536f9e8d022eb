/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Plain data the C shim hands to the Rust core during a checkpoint. Mirrored field
 * for field in rust/src/kstate.rs; stasis_rs_init() checks the sizes.
 */
#ifndef STASIS_KSTATE_H
#define STASIS_KSTATE_H

#include <linux/types.h>

/* One thread, captured by the thread itself in its task_work callback. */
struct stasis_kthread {
	s32 tid;			/* in the target's pid namespace */
	u32 leader;
	u64 regs[27];			/* struct user_regs_struct, raw (no restart fixup) */
	u64 sigmask;
	u64 altstack_sp;
	u64 altstack_size;
	u32 altstack_flags;
	u32 rseq_sig;
	u64 clear_child_tid;
	u64 robust_list;
	u64 robust_list_len;
	u64 rseq_addr;
	u32 rseq_len;
	u32 xstate_size;		/* bytes at xstate (NT_X86_XSTATE layout) */
	u64 pending;			/* thread-private pending signals (mask) */
	u8 comm[16];
	const void *xstate;		/* owned by the freeze, valid while frozen */
};

/* The process, read by one of its parked threads (current) for the image. */
struct stasis_kproc {
	u32 pid, ppid, pgid, sid;
	u32 uid, euid, suid, fsuid, gid, egid, sgid, fsgid;
	u32 personality, dumpable, exit_signal, nice;
	u32 umask, auxv_words;
	u64 cap_effective, cap_permitted, cap_inheritable;
	u8 comm[16];
	u64 start_code, end_code, start_data, end_data, start_brk, brk, start_stack;
	u64 arg_start, arg_end, env_start, env_end, vdso;
	u64 auxv[64];
	u64 rlim[16][2];
	u64 sigactions[64][4];		/* handler, flags, restorer, mask */
	u64 itimer_real_interval_ns, itimer_real_value_ns;
	u64 shared_pending;		/* process-wide pending signals (mask) */
	u64 xcr0;
	u64 created_ns;
	u32 unsupported;		/* STASIS_UNSUP_* bits: state we cannot carry */
	u32 page_size;
	char release[64];
};

#define STASIS_UNSUP_ITIMER_CPU		(1u << 0)	/* ITIMER_VIRTUAL / ITIMER_PROF armed */
#define STASIS_UNSUP_POSIX_TIMERS	(1u << 1)
#define STASIS_UNSUP_SWAP		(1u << 2)	/* pages swapped out */
#define STASIS_UNSUP_COMPAT		(1u << 3)	/* 32-bit task */

/* One VMA of the snapshot. */
struct stasis_kvma {
	u64 start, end, offset, dev, ino, shm_id;
	u32 prot, flags, kind;		/* image vma_flags / vma_kind */
	u32 need_pages;			/* 0 none, 1 readable (nofault copy), 2 forced read */
	u32 unsupported;		/* non-zero: a mapping we cannot restore */
	u32 path_len;			/* of the path returned by stasis_job_vma */
};

/*
 * What a restarted thread sets in its own context once its process's address space
 * is the image's (filled by the RESTART caller from the image's THREAD record).
 */
struct stasis_rstate {
	u64 regs[27];			/* struct user_regs_struct; fs/gs bases not used */
	u64 sigmask;
	u64 altstack_sp;
	u64 altstack_size;
	u64 rseq_addr;
	u32 altstack_flags;
	u32 rseq_len;			/* 0 (none) or 32 */
	u32 rseq_sig;
	u32 _pad;
};

/* One entry of RESTART_THREAD's map_fds (stasis_abi::MapFd). */
struct stasis_mapfd {
	u64 start;
	s32 fd;
	u32 _reserved;
};

#endif
