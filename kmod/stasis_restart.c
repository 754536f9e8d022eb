// SPDX-License-Identifier: GPL-2.0-only
/*
 * stasis.ko: the kernel half of a restart (the C shim; logic in rust/src/restart.rs).
 *
 * Every thread of the future process (created by `stasis restart` with the image's
 * TIDs, files, handlers and limits already in place) calls STASIS_IOC_RESTART_THREAD
 * and parks here, registered in a *group* keyed by its thread group. The restarting
 * helper (another process) calls STASIS_IOC_RESTART: it claims the group once every
 * thread is parked, sets each thread's XSAVE state through the regset API (the
 * threads are parked, not current, and their user FPU state was saved to memory
 * before they parked, so nothing writes it back over ours), hands the address-space
 * job to the parked leader and waits for it. The leader replaces its own address
 * space in its own context; on success every thread sets its registers, signal
 * mask, sigaltstack and rseq registration from current and returns to user mode in
 * the checkpointed context.
 *
 * Lifetimes: a group holds one reference per registered thread and one for its
 * claimer; thread entries are freed with the group. The Rust job (plan and image)
 * belongs to the claimer, which waits for the job to finish, even when killed.
 */
#define pr_fmt(fmt) "stasis: " fmt

#include <linux/module.h>
#include <linux/fs.h>
#include <linux/file.h>
#include <linux/fdtable.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/sched/task_stack.h>
#include <linux/sched/mm.h>
#include <linux/signal.h>
#include <linux/pid.h>
#include <linux/wait.h>
#include <linux/kref.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/list.h>
#include <linux/jiffies.h>
#include <linux/mm.h>
#include <linux/mman.h>
#include <linux/regset.h>
#include <linux/task_work.h>
#include <linux/elf.h>
#include <asm/fpu/api.h>
#include <asm/processor.h>
#include <asm/ptrace.h>
#include <asm/segment.h>
#include <asm/user.h>

#include "stasis_compat.h"
#include "stasis_shim.h"
#include "stasis_kstate.h"
#include "stasis_internal.h"

/* The Rust job (rust/src/restart.rs): replaces current's address space. Sets
 * *past to 1 once the old address space is touched. */
long stasis_rs_restart_job(void *job, const struct stasis_mapfd *fds, u32 nr_fds, u32 *past);

/* As stasis_abi::RestartThreadArgs. */
struct stasis_rt_args {
	u32 flags;
	u32 timeout_ms;
	u64 map_fds;
	u64 close_fds;
	u32 nr_map_fds;
	u32 nr_close_fds;
};

#define STASIS_RT_MAX_FDS 65536
#define STASIS_RT_DEFAULT_MS 30000
#define STASIS_RT_MAX_MS 600000

enum { RG_WAIT, RG_CLAIMED, RG_GO, RG_ABORT };

struct stasis_rthread {
	struct list_head node;		/* in group->threads, freed with the group */
	struct task_struct *task;	/* referenced */
	pid_t tid;			/* in the thread's own pid namespace */
	bool leader;
	bool gone;			/* left the group (timed out, killed) */
	bool has_state;
	struct stasis_rstate st;	/* set by the claimer before the job */
	/* The leader's: */
	struct stasis_mapfd *map_fds;
	int *close_fds;
	u32 nr_map_fds, nr_close_fds;
};

struct stasis_rgroup {
	struct list_head node;		/* stasis_rgroups, under stasis_rg_lock */
	struct kref ref;
	struct pid *tgid;		/* referenced */
	spinlock_t lock;
	wait_queue_head_t wq;
	struct list_head threads;	/* additions under stasis_rg_lock and lock */
	unsigned int nr;		/* registered and not gone */
	int state;			/* RG_*, under lock */
	long err;			/* RG_ABORT: RESTART_THREAD's result */
	void *job;			/* handed to the leader by the claimer */
	bool job_taken, job_done;
	long job_result;
};

static DEFINE_MUTEX(stasis_rg_lock);
static LIST_HEAD(stasis_rgroups);
static DECLARE_WAIT_QUEUE_HEAD(stasis_rg_wq);	/* registrations, for claimers */
static unsigned long stasis_rg_seq;		/* bumped on every registration */

static void stasis_rt_free(struct stasis_rthread *t)
{
	put_task_struct(t->task);
	stasis_kvfree(t->map_fds);
	stasis_kvfree(t->close_fds);
	stasis_kfree(t);
}

/* Called with stasis_rg_lock held (kref_put_mutex). */
static void stasis_rg_free(struct kref *ref)
{
	struct stasis_rgroup *g = container_of(ref, struct stasis_rgroup, ref);
	struct stasis_rthread *t, *n;

	list_del(&g->node);
	mutex_unlock(&stasis_rg_lock);
	list_for_each_entry_safe(t, n, &g->threads, node)
		stasis_rt_free(t);
	put_pid(g->tgid);
	stasis_kfree(g);
}

static void stasis_rg_put(struct stasis_rgroup *g)
{
	kref_put_mutex(&g->ref, stasis_rg_free, &stasis_rg_lock);
}

/* The group of @tgid still open for threads; under stasis_rg_lock. */
static struct stasis_rgroup *stasis_rg_find(struct pid *tgid)
{
	struct stasis_rgroup *g;

	list_for_each_entry(g, &stasis_rgroups, node)
		if (g->tgid == tgid && (g->state == RG_WAIT || g->state == RG_CLAIMED))
			return g;
	return NULL;
}

/* Ends a group that never got to its job: its threads return @err. */
static void stasis_rg_set_state(struct stasis_rgroup *g, int state, long err)
{
	spin_lock(&g->lock);
	g->state = state;
	g->err = err;
	spin_unlock(&g->lock);
	wake_up_all(&g->wq);
}

/* Copies the leader's fd tables from user memory into @t. */
static long stasis_rt_copy_fds(struct stasis_rthread *t, const struct stasis_rt_args *a)
{
	size_t n;

	if (a->nr_map_fds) {
		n = (size_t)a->nr_map_fds * sizeof(*t->map_fds);
		t->map_fds = stasis_kvzalloc(n);
		if (!t->map_fds)
			return -ENOMEM;
		if (copy_from_user(t->map_fds, u64_to_user_ptr(a->map_fds), n))
			return -EFAULT;
		t->nr_map_fds = a->nr_map_fds;
	}
	if (a->nr_close_fds) {
		n = (size_t)a->nr_close_fds * sizeof(*t->close_fds);
		t->close_fds = stasis_kvzalloc(n);
		if (!t->close_fds)
			return -ENOMEM;
		if (copy_from_user(t->close_fds, u64_to_user_ptr(a->close_fds), n))
			return -EFAULT;
		t->nr_close_fds = a->nr_close_fds;
	}
	return 0;
}


/* Registers current in its group (created on first use). */
static struct stasis_rgroup *stasis_rt_register(struct stasis_rthread *t)
{
	struct pid *tgid = task_tgid(current);
	struct stasis_rgroup *g;

	mutex_lock(&stasis_rg_lock);
	g = stasis_rg_find(tgid);
	if (g && g->state != RG_WAIT) {
		mutex_unlock(&stasis_rg_lock);
		return ERR_PTR(-EBUSY);
	}
	if (!g) {
		g = stasis_kzalloc(sizeof(*g));
		if (!g) {
			mutex_unlock(&stasis_rg_lock);
			return ERR_PTR(-ENOMEM);
		}
		kref_init(&g->ref);	/* this thread's */
		g->tgid = get_pid(tgid);
		spin_lock_init(&g->lock);
		init_waitqueue_head(&g->wq);
		INIT_LIST_HEAD(&g->threads);
		list_add(&g->node, &stasis_rgroups);
	} else {
		kref_get(&g->ref);
	}
	spin_lock(&g->lock);
	list_add_tail(&t->node, &g->threads);
	g->nr++;
	spin_unlock(&g->lock);
	stasis_rg_seq++;
	mutex_unlock(&stasis_rg_lock);
	wake_up_all(&stasis_rg_wq);
	return g;
}

/*
 * rax is set last, by a task_work run on the way out to user mode: sys_ioctl keeps
 * its result in an int, so the ioctl's own return value (stored into regs->ax by the
 * syscall exit) cannot carry a 64-bit register. The work runs after that store, and
 * before any signal frame is built (get_signal runs pending task_works first).
 */
struct stasis_ax_work {
	struct callback_head work;
	u64 ax;
};

static void stasis_set_ax(struct callback_head *cb)
{
	struct stasis_ax_work *w = container_of(cb, struct stasis_ax_work, work);

	task_pt_regs(current)->ax = w->ax;
	stasis_kfree(w);
	/* Taken when queued: rmmod waits for every outstanding callback. */
	module_put(THIS_MODULE);
}

#define STASIS_FLAG_MASK (X86_EFLAGS_CF | X86_EFLAGS_PF | X86_EFLAGS_AF | X86_EFLAGS_ZF | \
			  X86_EFLAGS_SF | X86_EFLAGS_TF | X86_EFLAGS_DF | X86_EFLAGS_OF | \
			  X86_EFLAGS_RF | X86_EFLAGS_AC | X86_EFLAGS_NT)

/*
 * In the thread's own context, its address space already the image's: registers
 * (returned to user mode by the syscall exit; rax is the return value), signal
 * mask, sigaltstack, rseq; rax through @w (see stasis_set_ax). Values were checked
 * by the Rust side (user addresses, 64-bit selectors). orig_ax = -1: no
 * syscall-restart logic runs on the way out.
 */
static long stasis_rt_apply(const struct stasis_rstate *st, struct stasis_ax_work *w)
{
	const struct user_regs_struct *u = (const void *)st->regs;
	struct pt_regs *regs = task_pt_regs(current);
	sigset_t set;

	regs->r15 = u->r15;
	regs->r14 = u->r14;
	regs->r13 = u->r13;
	regs->r12 = u->r12;
	regs->bp = u->bp;
	regs->bx = u->bx;
	regs->r11 = u->r11;
	regs->r10 = u->r10;
	regs->r9 = u->r9;
	regs->r8 = u->r8;
	regs->cx = u->cx;
	regs->dx = u->dx;
	regs->si = u->si;
	regs->di = u->di;
	regs->ax = u->ax;
	regs->orig_ax = -1;
	regs->ip = u->ip;
	regs->cs = __USER_CS;
	regs->flags = (regs->flags & ~STASIS_FLAG_MASK) | (u->flags & STASIS_FLAG_MASK);
	regs->sp = u->sp;
	regs->ss = __USER_DS;

	current->sas_ss_sp = st->altstack_sp;
	current->sas_ss_size = st->altstack_size;
	current->sas_ss_flags = st->altstack_flags;
#ifdef CONFIG_RSEQ
	if (st->rseq_len)
		stasis_rseq_set(st->rseq_addr, st->rseq_len, st->rseq_sig);
#endif
	siginitset(&set, 0);
	set.sig[0] = st->sigmask;
	sigprocmask(SIG_SETMASK, &set, NULL);

	w->ax = u->ax;
	init_task_work(&w->work, stasis_set_ax);
	__module_get(THIS_MODULE);
	if (task_work_add(current, &w->work, TWA_RESUME)) {
		/* Exiting: never returns to user mode. */
		module_put(THIS_MODULE);
		stasis_kfree(w);
	}
	return 0;
}

/* The leader, in its own context: run the address-space job the claimer handed us. */
static void stasis_rt_run_job(struct stasis_rgroup *g, struct stasis_rthread *t)
{
	u32 past = 0;
	long r = stasis_rs_restart_job(g->job, t->map_fds, t->nr_map_fds, &past);

	if (r <= -512 && r >= -4095)
		r = -EINTR;
	if (r < 0 && past) {
		/* Half replaced: nothing can run any more. */
		pr_warn("restart of %d failed after its address space was changed (%ld): killed\n",
			task_tgid_nr(current), r);
		kill_pid(task_tgid(current), SIGKILL, 1);
	}
	spin_lock(&g->lock);
	g->job_done = true;
	g->job_result = r;
	if (r < 0) {
		g->state = RG_ABORT;
		g->err = -ECANCELED;
	} else {
		g->state = RG_GO;
	}
	spin_unlock(&g->lock);
	wake_up_all(&g->wq);
}

/* The leader's last step: close the fds `stasis restart` left for us. Safe for this
 * very /dev/stasis fd too: the final fput runs at return to user mode. */
static void stasis_rt_close_fds(const struct stasis_rthread *t)
{
	u32 i;

	for (i = 0; i < t->nr_close_fds; i++)
		if (t->close_fds[i] >= 0)
			close_fd(t->close_fds[i]);
}

long stasis_restart_thread(const void *buf, size_t len)
{
	const struct stasis_rt_args *a = buf;
	struct stasis_rthread *t;
	struct stasis_rgroup *g;
	struct stasis_ax_work *w;
	unsigned int ms;
	long left, ret;

	if (len != sizeof(*a))
		return -EINVAL;
	if (a->flags || a->nr_map_fds > STASIS_RT_MAX_FDS || a->nr_close_fds > STASIS_RT_MAX_FDS)
		return -EINVAL;
	if (!thread_group_leader(current) && (a->nr_map_fds || a->nr_close_fds))
		return -EINVAL;
	if (current->flags & PF_KTHREAD || !current->mm)
		return -EINVAL;
	ms = a->timeout_ms ? min_t(u32, a->timeout_ms, STASIS_RT_MAX_MS) : STASIS_RT_DEFAULT_MS;

	t = stasis_kzalloc(sizeof(*t));
	w = stasis_kzalloc(sizeof(*w));	/* allocated now: applying cannot fail */
	if (!t || !w) {
		stasis_kfree(t);
		stasis_kfree(w);
		return -ENOMEM;
	}
	get_task_struct(current);
	t->task = current;
	t->tid = task_pid_vnr(current);
	t->leader = thread_group_leader(current);
	ret = stasis_rt_copy_fds(t, a);
	if (ret) {
		stasis_rt_free(t);
		stasis_kfree(w);
		return ret;
	}
	/* Our user FPU state to memory, TIF_NEED_FPU_LOAD set: from now on it is only
	 * read back at return to user mode, so the claimer may replace it. */
	kernel_fpu_begin();
	kernel_fpu_end();

	g = stasis_rt_register(t);
	if (IS_ERR(g)) {
		stasis_rt_free(t);
		stasis_kfree(w);
		return PTR_ERR(g);
	}

	left = msecs_to_jiffies(ms);
	for (;;) {
		bool job = false;
		int state;

		ret = wait_event_killable_timeout(g->wq,
			READ_ONCE(g->state) >= RG_GO ||
			(t->leader && READ_ONCE(g->job) && !READ_ONCE(g->job_taken)), left);
		spin_lock(&g->lock);
		state = g->state;
		if ((ret < 0 && state < RG_GO) || (ret == 0 && state == RG_WAIT)) {
			/* Killed, or nobody came: leave. A claimer seeing us gone fails;
			 * a job handed to a leader that leaves ends here. */
			t->gone = true;
			g->nr--;
			if (t->leader && g->job && !g->job_taken) {
				g->job_taken = true;
				g->job_done = true;
				g->job_result = -EINTR;
				g->state = RG_ABORT;
				g->err = -ECANCELED;
			}
			spin_unlock(&g->lock);
			wake_up_all(&g->wq);
			ret = ret < 0 ? -EINTR : -ETIMEDOUT;
			break;
		}
		if (ret == 0)		/* claimed: the claimer decides from now on */
			left = MAX_SCHEDULE_TIMEOUT;
		else
			left = ret;
		if (t->leader && g->job && !g->job_taken && state == RG_CLAIMED) {
			g->job_taken = true;
			job = true;
		}
		spin_unlock(&g->lock);
		if (job) {
			stasis_rt_run_job(g, t);
			continue;
		}
		if (state == RG_GO) {
			if (t->has_state) {
				ret = stasis_rt_apply(&t->st, w);
				w = NULL;	/* the task_work's now */
				if (t->leader)
					stasis_rt_close_fds(t);
			} else {
				ret = -EIO;	/* cannot happen: the claimer checked */
			}
			break;
		}
		if (state == RG_ABORT) {
			ret = g->err;
			break;
		}
	}
	stasis_rg_put(g);
	stasis_kfree(w);
	return ret;
}

/* ---- the claimer's side (called from rust/src/restart.rs) -------------------------- */

/*
 * Waits up to @timeout_ms until every one of the @nr threads of process @pid (the
 * caller's pid namespace) is parked in RESTART_THREAD, then claims the group.
 * Returns the group (referenced) in *out.
 */
long stasis_rg_claim(int pid, u32 nr, u32 timeout_ms, void **out)
{
	struct task_struct *task;
	long left = msecs_to_jiffies(timeout_ms);
	long ret;

	*out = NULL;
	if (pid <= 0 || nr == 0)
		return -EINVAL;
	task = stasis_get_task(pid);
	if (!task)
		return -ESRCH;
	if (!thread_group_leader(task) || same_thread_group(task, current)) {
		ret = -EINVAL;
		goto out;
	}
	ret = stasis_may_freeze(task);
	if (ret)
		goto out;
	for (;;) {
		struct stasis_rgroup *g;
		unsigned long seq;
		bool ready = false, leader = false;
		struct stasis_rthread *t;

		mutex_lock(&stasis_rg_lock);
		seq = stasis_rg_seq;
		g = stasis_rg_find(task_tgid(task));
		if (g && g->state != RG_WAIT) {
			mutex_unlock(&stasis_rg_lock);
			ret = -EBUSY;
			goto out;
		}
		if (g) {
			spin_lock(&g->lock);
			list_for_each_entry(t, &g->threads, node)
				if (!t->gone && t->leader)
					leader = true;
			ready = leader && g->nr == nr && get_nr_threads(task) == nr;
			if (ready) {
				g->state = RG_CLAIMED;
				kref_get(&g->ref);
			}
			spin_unlock(&g->lock);
		}
		mutex_unlock(&stasis_rg_lock);
		if (ready) {
			*out = g;
			ret = 0;
			goto out;
		}
		if (g && g->nr > nr) {
			ret = -E2BIG;
			goto out;
		}
		ret = wait_event_interruptible_timeout(stasis_rg_wq,
						       READ_ONCE(stasis_rg_seq) != seq, left);
		if (ret < 0) {
			ret = -EINTR;
			goto out;
		}
		if (ret == 0) {
			ret = -ETIMEDOUT;
			goto out;
		}
		left = ret;
	}
out:
	put_task_struct(task);
	return ret;
}

/*
 * Gives the parked thread @tid its state: @st for itself to apply, and its XSAVE
 * area (standard format, @xsize bytes, padded with zeros to this CPU's size) set
 * now, from here, as PTRACE_SETREGSET does.
 */
long stasis_rg_set_thread(void *gp, s32 tid, const struct stasis_rstate *st,
			  const void *xstate, u32 xsize)
{
	struct stasis_rgroup *g = gp;
	struct stasis_rthread *t, *found = NULL;
	long ret = 0;

	spin_lock(&g->lock);
	list_for_each_entry(t, &g->threads, node)
		if (!t->gone && t->tid == tid)
			found = t;
	spin_unlock(&g->lock);
	if (!found || found->has_state)
		return -ESRCH;
	if (xsize) {
		/* Without XSAVE the FP regset is the FXSAVE image: the area's first 512 bytes. */
		bool xsave = boot_cpu_has(X86_FEATURE_XSAVE);
		const struct user_regset *rs = stasis_regset(task_user_regset_view(found->task),
							     xsave ? NT_X86_XSTATE : NT_PRFPREG);
		size_t size;
		void *buf;

		if (!rs || !rs->set || !rs->n)
			return -EOPNOTSUPP;
		size = (size_t)rs->n * rs->size;
		if (xsave ? xsize > size : xsize < size)
			return -EINVAL;
		if (!test_tsk_thread_flag(found->task, TIF_NEED_FPU_LOAD))
			return -EBUSY;
		buf = stasis_kvzalloc(size);
		if (!buf)
			return -ENOMEM;
		memcpy(buf, xstate, min_t(size_t, xsize, size));
		ret = rs->set(found->task, rs, 0, size, buf, NULL);
		stasis_kvfree(buf);
		if (ret)
			return ret;
	}
	found->st = *st;
	found->has_state = true;
	return 0;
}

/*
 * Hands @job to the group's leader and waits for it. If we are killed meanwhile,
 * the future process is killed too and we still wait (the job uses our memory).
 */
long stasis_rg_run(void *gp, void *job)
{
	struct stasis_rgroup *g = gp;
	struct stasis_rthread *t;
	bool ok = true, leader = false;

	spin_lock(&g->lock);
	list_for_each_entry(t, &g->threads, node) {
		if (t->gone)
			continue;
		if (!t->has_state)
			ok = false;
		if (t->leader)
			leader = true;
	}
	if (ok && leader && g->state == RG_CLAIMED)
		g->job = job;
	spin_unlock(&g->lock);
	if (!ok || !g->job)
		return -ESRCH;
	wake_up_all(&g->wq);
	if (wait_event_killable(g->wq, READ_ONCE(g->job_done))) {
		kill_pid(g->tgid, SIGKILL, 1);
		wait_event(g->wq, READ_ONCE(g->job_done));
	}
	return g->job_result;
}

/* Drops the claim. A group whose job never ran is aborted: its threads return
 * ECANCELED to user mode. */
void stasis_rg_release(void *gp)
{
	struct stasis_rgroup *g = gp;

	if (!g)
		return;
	mutex_lock(&stasis_rg_lock);
	if (g->state == RG_CLAIMED && !g->job)
		stasis_rg_set_state(g, RG_ABORT, -ECANCELED);
	mutex_unlock(&stasis_rg_lock);
	stasis_rg_put(g);
}

/* ---- the address-space job's primitives (leader context, current->mm) ---------- */

/*
 * The [vvar] and [vdso] of current: out = {vvar start, end, vdso start, end}. The
 * vvar range spans every [vvar*] mapping ([vvar] and, since 6.13, [vvar_vclock]).
 */
long stasis_mm_specials(u64 *out)
{
	struct mm_struct *mm = current->mm;
	struct vm_area_struct *vma;
	STASIS_VMA_WALK(vmi, mm);

	memset(out, 0, 4 * sizeof(u64));
	if (mmap_read_lock_killable(mm))
		return -EINTR;
	stasis_for_each_vma(vmi, vma) {
		const char *name = NULL;

		if (vma->vm_ops && vma->vm_ops->name)
			name = vma->vm_ops->name(vma);
		if (!name)
			continue;
		if (stasis_is_vvar(name)) {
			if (!out[1] || vma->vm_start < out[0])
				out[0] = vma->vm_start;
			if (vma->vm_end > out[1])
				out[1] = vma->vm_end;
		} else if (!strcmp(name, "[vdso]")) {
			out[2] = vma->vm_start;
			out[3] = vma->vm_end;
		}
	}
	mmap_read_unlock(mm);
	return 0;
}

u64 stasis_mm_task_size(void)
{
	return TASK_SIZE;
}

long stasis_mm_unmap(u64 start, u64 end)
{
	if (start >= end)
		return 0;
	return vm_munmap(start, end - start);
}

/* The file behind @fd of current (referenced), or an ERR_PTR. */
void *stasis_mm_fget(int fd)
{
	struct file *f = fd >= 0 ? fget(fd) : NULL;

	return f ? (void *)f : ERR_PTR(-EBADF);
}

void stasis_mm_fput(void *f)
{
	if (!IS_ERR_OR_NULL(f))
		fput(f);
}

bool stasis_is_err(const void *p)
{
	return IS_ERR(p);
}

/* vm_mmap at exactly @start (MAP_FIXED_NOREPLACE: the range must be free). */
long stasis_mm_map(void *file, u64 start, u64 len, u32 prot, u32 flags, u64 off)
{
	unsigned long r = vm_mmap(file, start, len, prot, flags | MAP_FIXED_NOREPLACE, off);

	if (IS_ERR_VALUE(r))
		return (long)r;
	return r == start ? 0 : -EEXIST;
}

/* The VMA [@start, @end): set madvise-like flags (image vma_flags bits). */
#define STASIS_VF_DONTFORK	(1u << 3)
#define STASIS_VF_DONTDUMP	(1u << 4)
#define STASIS_VF_HUGEPAGE	(1u << 7)
#define STASIS_VF_NOHUGEPAGE	(1u << 8)

long stasis_mm_vma_flags(u64 start, u64 end, u32 flags)
{
	struct mm_struct *mm = current->mm;
	struct vm_area_struct *vma;
	long ret = 0;

	if (mmap_write_lock_killable(mm))
		return -EINTR;
	vma = find_vma(mm, start);
	if (!vma || vma->vm_start != start || vma->vm_end != end) {
		ret = -ENOENT;	/* merged with a neighbour: cannot split from here */
		goto out;
	}
	if (flags & STASIS_VF_DONTFORK)
		stasis_vma_flags_mod(vma, VM_DONTCOPY, 0);
	if (flags & STASIS_VF_DONTDUMP)
		stasis_vma_flags_mod(vma, VM_DONTDUMP, 0);
#ifdef CONFIG_TRANSPARENT_HUGEPAGE
	if (flags & STASIS_VF_HUGEPAGE)
		stasis_vma_flags_mod(vma, VM_HUGEPAGE, VM_NOHUGEPAGE);
	if (flags & STASIS_VF_NOHUGEPAGE)
		stasis_vma_flags_mod(vma, VM_NOHUGEPAGE, VM_HUGEPAGE);
#endif
out:
	mmap_write_unlock(mm);
	return ret;
}

/*
 * Write @len bytes from @src to current's @addr: copy_to_user for a writable
 * mapping, else (@force) through access_process_vm with FOLL_FORCE, as ptrace
 * pokes a read-only private mapping. Checks for fatal signals every 4 MiB.
 */
#define STASIS_FILL_CHUNK (4u << 20)

long stasis_mm_fill(u64 addr, const void *src, u64 len, u32 force)
{
	while (len) {
		unsigned int n = min_t(u64, len, STASIS_FILL_CHUNK);

		if (fatal_signal_pending(current))
			return -EINTR;
		if (!force) {
			if (copy_to_user(u64_to_user_ptr(addr), src, n))
				return -EFAULT;
		} else if (access_process_vm(current, addr, (void *)src, n,
					     FOLL_FORCE | FOLL_WRITE) != n) {
			return -EFAULT;
		}
		addr += n;
		src += n;
		len -= n;
		cond_resched();
	}
	return 0;
}
