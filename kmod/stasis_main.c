// SPDX-License-Identifier: GPL-2.0-only
/*
 * stasis.ko: the C shim of the stasis kernel engine.
 *
 * This file owns everything that touches the kernel: the misc device, the
 * extension table, kmalloc, copy_{from,to}_user, task lookup, credentials,
 * task_work, wait queues and locking. The logic lives in Rust (rust/src/lib.rs,
 * linked in as stasis_rust.o), which sees only opaque pointers and the
 * #[repr(C)] structs of crates/abi.
 *
 * Quiesce (STASIS_IOC_FREEZE): a task_work queued with TWA_SIGNAL on every thread
 * of the target; each thread, in its own context, saves its registers with the
 * regset API and parks in a killable wait until the freezing file descriptor
 * thaws it or is closed. The target sees no signal, no stop and no tracer.
 */
#define pr_fmt(fmt) "stasis: " fmt

#include <linux/module.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/sched/mm.h>
#include <linux/sched/coredump.h>
#include <linux/task_work.h>
#include <linux/regset.h>
#include <linux/elf.h>
#include <linux/cred.h>
#include <linux/capability.h>
#include <linux/pid.h>
#include <linux/wait.h>
#include <linux/kref.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/list.h>
#include <linux/atomic.h>
#include <linux/jiffies.h>
#include <linux/fs_struct.h>
#include <linux/mm.h>
#include <linux/mman.h>
#include <linux/utsname.h>
#include <linux/hrtimer.h>
#include <linux/timekeeping.h>
#include <linux/futex.h>
#include <linux/magic.h>
#include <linux/dcache.h>
#include <linux/file.h>
#include <linux/rcupdate.h>
#include <linux/fdtable.h>
#include <linux/vmalloc.h>
#include <asm/cpufeature.h>
#include <asm/user.h>
#include <asm/fpu/xcr.h>

#include "stasis_compat.h"
#include "stasis_shim.h"
#include "stasis_ext.h"
#include "stasis_kstate.h"
#include "stasis_internal.h"

#define STASIS_IOC_MAGIC 0xB5
/* The two restart commands (stasis_abi: IOC_RESTART, IOC_RESTART_THREAD). */
#define STASIS_IOC_RESTART _IOWR(STASIS_IOC_MAGIC, 0x04, u8[40])
#define STASIS_IOC_RESTART_THREAD _IOW(STASIS_IOC_MAGIC, 0x05, u8[32])
/* Largest ioctl argument struct; _IOC_SIZE above it is refused before any copy. */
#define STASIS_IOC_BUF 256
/* Most threads one freeze handles (Rust: MAX_THREADS). */
#define STASIS_MAX_THREADS 4096

/* The Rust side (rust/src/lib.rs). */
long stasis_rs_init(size_t user_regs_size, size_t kthread_size, size_t kproc_size,
		    size_t kvma_size, size_t rstate_size, size_t mapfd_size);
long stasis_rs_write_image(void *job, void *unused);
long stasis_rs_ioctl(void *sess, unsigned int cmd, void *buf, size_t len);

/* ---- allocation, with a live count checked at unload ---------------------------- */

static atomic_long_t stasis_live_allocs = ATOMIC_LONG_INIT(0);

/* GFP_KERNEL: may sleep. Used by Rust's global allocator and by this file. */
void *stasis_kmalloc(size_t size)
{
	void *p;

	might_sleep();
	p = kmalloc(size, GFP_KERNEL | __GFP_NOWARN);
	if (p)
		atomic_long_inc(&stasis_live_allocs);
	return p;
}

void *stasis_kzalloc(size_t size)
{
	void *p = stasis_kmalloc(size);

	if (p)
		memset(p, 0, size);
	return p;
}

void stasis_kfree(void *p)
{
	if (!p)
		return;
	atomic_long_dec(&stasis_live_allocs);
	kfree(p);
}

/* Zeroed, possibly vmalloc'd (large arrays); free with stasis_kvfree. */
void *stasis_kvzalloc(size_t size)
{
	void *p;

	might_sleep();
	p = kvzalloc(size, GFP_KERNEL_ACCOUNT | __GFP_NOWARN);
	if (p)
		atomic_long_inc(&stasis_live_allocs);
	return p;
}

void stasis_kvfree(void *p)
{
	if (!p)
		return;
	atomic_long_dec(&stasis_live_allocs);
	kvfree(p);
}

/* ---- helpers for Rust ------------------------------------------------------------ */

void stasis_log(unsigned int level, const char *msg, size_t len)
{
	int n = len > 512 ? 512 : (int)len;

	if (level <= 3)
		printk(KERN_ERR "%.*s", n, msg);
	else if (level <= 4)
		printk(KERN_WARNING "%.*s", n, msg);
	else
		printk(KERN_INFO "%.*s", n, msg);
}

/* Called by the Rust panic handler, which nothing reachable should ever call. */
void __noreturn stasis_bug(void)
{
	BUG();
}

u64 stasis_now_ns(void)
{
	return ktime_get_ns();
}

long stasis_copy_to_user(u64 uaddr, const void *src, size_t len)
{
	if (len == 0)
		return 0;
	if (copy_to_user(u64_to_user_ptr(uaddr), src, len))
		return -EFAULT;
	return 0;
}

/* ---- extensions ------------------------------------------------------------------ */

static DEFINE_MUTEX(stasis_ext_lock);
static const struct stasis_extension_ops *stasis_exts[STASIS_EXT_MAX + 1];

int stasis_register_extension(const struct stasis_extension_ops *ops)
{
	int ret = 0;

	if (!ops || ops->abi != STASIS_EXT_ABI || ops->id == STASIS_EXT_CORE ||
	    ops->id > STASIS_EXT_MAX || !ops->name)
		return -EINVAL;
	mutex_lock(&stasis_ext_lock);
	if (stasis_exts[ops->id])
		ret = -EBUSY;
	else
		stasis_exts[ops->id] = ops;
	mutex_unlock(&stasis_ext_lock);
	if (!ret)
		pr_info("extension %s (id %u) registered\n", ops->name, ops->id);
	return ret;
}
EXPORT_SYMBOL_GPL(stasis_register_extension);

void stasis_unregister_extension(const struct stasis_extension_ops *ops)
{
	if (!ops || ops->id > STASIS_EXT_MAX)
		return;
	mutex_lock(&stasis_ext_lock);
	if (stasis_exts[ops->id] == ops)
		stasis_exts[ops->id] = NULL;
	mutex_unlock(&stasis_ext_lock);
	pr_info("extension %s unregistered\n", ops->name);
}
EXPORT_SYMBOL_GPL(stasis_unregister_extension);

/* Run every loaded extension's checkpoint hook (job context). Without the files
 * extension, a process with open file descriptors is refused. */
long stasis_ext_checkpoint(void *wctx, long (*record)(void *, u32, const void *, size_t,
						      const void *, size_t))
{
	struct stasis_emit emit = { .wctx = wctx, .record = record };
	unsigned int i;
	long r = 0;

	for (i = 1; i <= STASIS_EXT_MAX && !r; i++) {
		const struct stasis_extension_ops *ops;

		mutex_lock(&stasis_ext_lock);
		ops = stasis_exts[i];
		if (ops && (!ops->checkpoint || !try_module_get(ops->owner)))
			ops = NULL;
		mutex_unlock(&stasis_ext_lock);
		if (!ops) {
			if (i == STASIS_EXT_FILES) {
				unsigned int fd = 0;
				struct file *f = stasis_next_file(&fd);

				if (f) {
					fput(f);
					pr_warn("checkpoint refused: open file descriptors need extension files (module stasis_files.ko)\n");
					r = -EOPNOTSUPP;
				}
			}
			continue;
		}
		r = ops->checkpoint(&emit);
		module_put(ops->owner);
	}
	return r;
}

u64 stasis_ext_mask(void)
{
	u64 mask = 1ULL << STASIS_EXT_CORE;
	unsigned int i;

	mutex_lock(&stasis_ext_lock);
	for (i = 1; i <= STASIS_EXT_MAX; i++)
		if (stasis_exts[i])
			mask |= 1ULL << i;
	mutex_unlock(&stasis_ext_lock);
	return mask;
}

/* ---- quiesce --------------------------------------------------------------------- */

enum { ST_QUEUED, ST_PARKED, ST_GONE, ST_FAILED };

struct stasis_freeze;

struct stasis_job;

struct stasis_thread {
	struct callback_head work;
	struct list_head node;
	struct stasis_freeze *fz;
	struct task_struct *task;	/* referenced */
	int state;			/* ST_*, under fz->lock */
	bool dead;			/* killed while parked (under fz->lock) */
	struct stasis_job *job;		/* work handed to this parked thread (under fz->lock) */
	struct stasis_kthread ks;	/* written by the thread before ST_PARKED */
};

/* A checkpoint job, run by one parked thread of the target in its own context. */
struct stasis_job {
	struct kref ref;		/* the caller's + the runner's */
	struct stasis_freeze *fz;	/* the runner's work holds a reference */
	struct file *file;
	loff_t pos;
	u64 stats[4];			/* bytes, pages, threads, vmas (stasis_job_set_stats) */
	long result;
	bool done, cancel;
	unsigned int nr_vmas;
	struct stasis_kvma *vmas;
	struct file **vma_files;
};

struct stasis_freeze {
	struct kref ref;		/* the session's + one per queued work */
	spinlock_t lock;
	wait_queue_head_t wq;		/* parked threads and the freezer wait here */
	struct list_head threads;	/* only the freezer adds; freed with fz */
	unsigned int nr;		/* entries in threads */
	unsigned int pending;		/* queued works that have not run yet */
	unsigned int parked;
	unsigned int failed;
	bool released;
	struct task_struct *leader;	/* referenced */
};

/* Per open file descriptor. */
struct stasis_session {
	struct mutex lock;
	struct stasis_freeze *fz;	/* non-NULL while a freeze holds threads */
	void *kept;			/* a validated image (RESTART_KEEP), Rust's */
};

/* Rust (rust/src/restart.rs): frees a kept image. */
void stasis_rs_kept_free(void *kept);

/* Takes the session's kept image (NULL if none). */
void *stasis_session_take_kept(void *sp)
{
	struct stasis_session *s = sp;
	void *k;

	mutex_lock(&s->lock);
	k = s->kept;
	s->kept = NULL;
	mutex_unlock(&s->lock);
	return k;
}

/* Keeps @k in the session, freeing the one kept before. */
void stasis_session_keep(void *sp, void *k)
{
	struct stasis_session *s = sp;
	void *old;

	mutex_lock(&s->lock);
	old = s->kept;
	s->kept = k;
	mutex_unlock(&s->lock);
	if (old)
		stasis_rs_kept_free(old);
}

static void stasis_freeze_free(struct kref *ref)
{
	struct stasis_freeze *fz = container_of(ref, struct stasis_freeze, ref);
	struct stasis_thread *t, *n;

	list_for_each_entry_safe(t, n, &fz->threads, node) {
		put_task_struct(t->task);
		stasis_kfree((void *)t->ks.xstate);
		stasis_kfree(t);
	}
	if (fz->leader)
		put_task_struct(fz->leader);
	stasis_kfree(fz);
}

static void stasis_release_threads(struct stasis_freeze *fz)
{
	spin_lock(&fz->lock);
	WRITE_ONCE(fz->released, true);
	spin_unlock(&fz->lock);
	wake_up_all(&fz->wq);
	kref_put(&fz->ref, stasis_freeze_free);
}

const struct user_regset *stasis_regset(const struct user_regset_view *view,
					unsigned int note)
{
	unsigned int i;

	for (i = 0; i < view->n; i++)
		if (view->regsets[i].core_note_type == note)
			return &view->regsets[i];
	return NULL;
}

/* In the thread's own context: everything a THREAD/XSTATE record needs. */
static int stasis_capture(struct stasis_thread *t)
{
	const struct user_regset_view *view = task_user_regset_view(current);
	const struct user_regset *rs;
	struct stasis_kthread *ks = &t->ks;
	int got;

	rs = stasis_regset(view, NT_PRSTATUS);
	/* A 32-bit (compat) task has another layout: not supported. */
	if (!rs || (size_t)rs->n * rs->size != sizeof(ks->regs))
		return -EOPNOTSUPP;
	got = regset_get(current, rs, sizeof(ks->regs), ks->regs);
	if (got != sizeof(ks->regs))
		return got < 0 ? got : -EIO;

	/* The FP state: the XSAVE area, or without XSAVE the FXSAVE image (512 bytes;
	 * stasis-image turns it into an x87|SSE area). */
	rs = stasis_regset(view, boot_cpu_has(X86_FEATURE_XSAVE) ? NT_X86_XSTATE : NT_PRFPREG);
	if (rs && rs->n && rs->size) {
		size_t size = (size_t)rs->n * rs->size;
		void *x = stasis_kmalloc(size);

		if (!x)
			return -ENOMEM;
		got = regset_get(current, rs, size, x);
		if (got <= 0) {
			stasis_kfree(x);
			return got < 0 ? got : -EIO;
		}
		ks->xstate = x;
		ks->xstate_size = got;
	}

	ks->tid = task_pid_vnr(current);
	ks->leader = thread_group_leader(current);
	ks->sigmask = current->blocked.sig[0];
	ks->altstack_sp = current->sas_ss_sp;
	ks->altstack_size = current->sas_ss_size;
	ks->altstack_flags = current->sas_ss_flags;
	ks->clear_child_tid = (unsigned long)current->clear_child_tid;
#ifdef CONFIG_FUTEX
	ks->robust_list = stasis_robust_list();
	ks->robust_list_len = ks->robust_list ? sizeof(struct robust_list_head) : 0;
#endif
#ifdef CONFIG_RSEQ
	stasis_rseq_get(&ks->rseq_addr, &ks->rseq_len, &ks->rseq_sig);
#endif
	spin_lock_irq(&current->sighand->siglock);
	ks->pending = current->pending.signal.sig[0];
	spin_unlock_irq(&current->sighand->siglock);
	get_task_comm(ks->comm, current);
	return 0;
}

static void stasis_job_free(struct kref *ref)
{
	struct stasis_job *job = container_of(ref, struct stasis_job, ref);
	unsigned int i;

	for (i = 0; i < job->nr_vmas; i++)
		if (job->vma_files && job->vma_files[i])
			fput(job->vma_files[i]);
	stasis_kfree(job->vma_files);
	stasis_kfree(job->vmas);
	fput(job->file);
	stasis_kfree(job);
}

static void stasis_job_finish(struct stasis_freeze *fz, struct stasis_job *job, long result)
{
	spin_lock(&fz->lock);
	job->result = result;
	WRITE_ONCE(job->done, true);
	spin_unlock(&fz->lock);
	wake_up_all(&fz->wq);
}

/* The task_work: runs in the target thread, from get_signal() (TWA_SIGNAL). */
static void stasis_park(struct callback_head *cb)
{
	struct stasis_thread *t = container_of(cb, struct stasis_thread, work);
	struct stasis_freeze *fz = t->fz;
	int state = ST_GONE;

	/* Exiting (the work runs from exit_task_work) or already released: do nothing. */
	if (!(current->flags & PF_EXITING) && !READ_ONCE(fz->released))
		state = stasis_capture(t) ? ST_FAILED : ST_PARKED;

	spin_lock(&fz->lock);
	t->state = state;
	fz->pending--;
	if (state == ST_PARKED)
		fz->parked++;
	else if (state == ST_FAILED)
		fz->failed++;
	spin_unlock(&fz->lock);
	wake_up_all(&fz->wq);

	/* Parked. Killable: SIGKILL still ends the thread (and so the process). Until
	 * released, run the jobs the freezer hands over (a checkpoint writes the image
	 * from here, in the target's own context). */
	while (state == ST_PARKED) {
		struct stasis_job *job;
		int killed = wait_event_killable(fz->wq, READ_ONCE(fz->released) ||
							  READ_ONCE(t->job));

		spin_lock(&fz->lock);
		job = t->job;
		t->job = NULL;
		if (killed)
			t->dead = true;
		spin_unlock(&fz->lock);
		if (job) {
			long r = killed ? -EINTR : stasis_rs_write_image(job, NULL);

			/* Never hand a kernel-internal errno (-ERESTART*) to the caller. */
			if (r <= -512 && r >= -4095)
				r = -EINTR;
			stasis_job_finish(fz, job, r);
			kref_put(&job->ref, stasis_job_free);
		}
		if (killed || (READ_ONCE(fz->released) && !READ_ONCE(t->job)))
			break;
	}

	kref_put(&fz->ref, stasis_freeze_free);
	/* Taken when queued: rmmod waits for every outstanding callback. */
	module_put(THIS_MODULE);
}

/* May the caller freeze (and so read the state of) @task? ptrace_may_access() is not
 * exported; this is its PTRACE_MODE_ATTACH_REALCREDS core without the LSM hook. */
int stasis_may_freeze(struct task_struct *task)
{
	const struct cred *me = current_cred(), *tc;
	struct mm_struct *mm;
	bool same, dumpable;

	if (task->flags & PF_KTHREAD)
		return -EPERM;
	rcu_read_lock();
	tc = __task_cred(task);
	same = uid_eq(me->uid, tc->euid) && uid_eq(me->uid, tc->suid) &&
	       uid_eq(me->uid, tc->uid) && gid_eq(me->gid, tc->egid) &&
	       gid_eq(me->gid, tc->sgid) && gid_eq(me->gid, tc->gid);
	rcu_read_unlock();
	mm = get_task_mm(task);
	if (!mm)
		return -ESRCH;
	dumpable = stasis_dumpable(task, mm) == STASIS_DUMPABLE_OWNER;
	mmput(mm);
	if (same && dumpable)
		return 0;
	if (capable(CAP_SYS_PTRACE) || capable(CAP_CHECKPOINT_RESTORE))
		return 0;
	return -EPERM;
}

/* The task of @pid in the caller's pid namespace, referenced, or NULL. */
struct task_struct *stasis_get_task(int pid)
{
	struct pid *p = find_get_pid(pid);
	struct task_struct *task;

	if (!p)
		return NULL;
	task = get_pid_task(p, PIDTYPE_PID);
	put_pid(p);
	return task;
}

static bool stasis_fz_has(struct stasis_freeze *fz, struct task_struct *task)
{
	struct stasis_thread *t;

	list_for_each_entry(t, &fz->threads, node)
		if (t->task == task)
			return true;
	return false;
}

/* Collect (referenced) threads of @leader not yet in @fz, at most @cap. */
static unsigned int stasis_collect(struct task_struct *leader, struct stasis_freeze *fz,
				   struct task_struct **out, unsigned int cap, bool *more)
{
	struct task_struct *t;
	unsigned int n = 0;

	*more = false;
	rcu_read_lock();
	for_each_thread(leader, t) {
		if (t->flags & PF_EXITING)
			continue;
		if (stasis_fz_has(fz, t))
			continue;
		if (n == cap) {
			*more = true;
			break;
		}
		get_task_struct(t);
		out[n++] = t;
	}
	rcu_read_unlock();
	return n;
}

#define STASIS_COLLECT_BATCH 64

/*
 * Park every thread of @pid. Returns the number parked, or -errno with nothing
 * left parked. Called with the session lock held.
 */
long stasis_freeze(void *sp, int pid, unsigned int timeout_ms, unsigned int max_threads)
{
	struct stasis_session *s = sp;
	struct task_struct *leader, **batch = NULL;
	struct stasis_freeze *fz;
	long left = msecs_to_jiffies(timeout_ms);
	long ret;

	if (s->fz)
		return -EBUSY;
	if (pid <= 0)
		return -EINVAL;
	leader = stasis_get_task(pid);
	if (!leader)
		return -ESRCH;
	if (same_thread_group(leader, current)) {
		ret = -EDEADLK;
		goto out_task;
	}
	ret = stasis_may_freeze(leader);
	if (ret)
		goto out_task;

	batch = stasis_kmalloc(sizeof(*batch) * STASIS_COLLECT_BATCH);
	fz = stasis_kzalloc(sizeof(*fz));
	if (!batch || !fz) {
		stasis_kfree(fz);
		ret = -ENOMEM;
		goto out_task;
	}
	kref_init(&fz->ref);
	get_task_struct(leader);
	fz->leader = leader;
	spin_lock_init(&fz->lock);
	init_waitqueue_head(&fz->wq);
	INIT_LIST_HEAD(&fz->threads);

	/*
	 * Queue a work on every thread, wait until all have run, and scan again: a
	 * thread in the middle of clone() may add a thread after a scan. Done when a
	 * scan made after every queued work ran finds no new thread.
	 */
	for (;;) {
		unsigned int n, i;
		bool more;

		n = stasis_collect(leader, fz, batch, STASIS_COLLECT_BATCH, &more);
		for (i = 0; i < n; i++) {
			struct stasis_thread *t = NULL;

			if (ret == 0 && fz->nr >= max_threads)
				ret = -E2BIG;
			if (ret == 0) {
				t = stasis_kzalloc(sizeof(*t));
				if (!t)
					ret = -ENOMEM;
			}
			if (!t) {
				put_task_struct(batch[i]);
				continue;
			}
			t->fz = fz;
			t->task = batch[i];
			t->state = ST_QUEUED;
			init_task_work(&t->work, stasis_park);
			list_add_tail(&t->node, &fz->threads);
			fz->nr++;
			kref_get(&fz->ref);
			__module_get(THIS_MODULE);
			spin_lock(&fz->lock);
			fz->pending++;
			spin_unlock(&fz->lock);
			if (task_work_add(t->task, &t->work, TWA_SIGNAL)) {
				/* Past exit_task_work(): exiting, will never run it. */
				spin_lock(&fz->lock);
				fz->pending--;
				t->state = ST_GONE;
				spin_unlock(&fz->lock);
				kref_put(&fz->ref, stasis_freeze_free); /* not the last: ours */
				module_put(THIS_MODULE);
			}
		}
		if (ret)
			goto fail;
		if (more)
			continue;

		ret = wait_event_interruptible_timeout(fz->wq, READ_ONCE(fz->pending) == 0, left);
		if (ret == 0) {
			ret = -ETIMEDOUT;
			goto fail;
		}
		if (ret < 0) {
			ret = -EINTR;
			goto fail;
		}
		left = ret;
		ret = 0;
		if (n == 0)
			break;
	}

	spin_lock(&fz->lock);
	if (fz->failed)
		ret = -EIO;
	else if (fz->parked == 0)
		ret = -ESRCH;	/* the whole process exited meanwhile */
	else
		ret = fz->parked;
	spin_unlock(&fz->lock);
	if (ret < 0)
		goto fail;
	s->fz = fz;
	goto out_batch;

fail:
	stasis_release_threads(fz);
out_batch:
	stasis_kfree(batch);
out_task:
	put_task_struct(leader);
	return ret;
}


/* Call @fn for each parked thread of the session's freeze; stops at the first
 * non-zero return (negative: returned as the error). */
long stasis_frozen_each(void *sp, stasis_report_fn fn, void *ctx)
{
	struct stasis_session *s = sp;
	struct stasis_thread *t;
	long r;

	if (!s->fz)
		return -EINVAL;
	/* The list does not change while frozen; parked threads do not touch regs. */
	list_for_each_entry(t, &s->fz->threads, node) {
		int state;

		/* The lock orders the thread's writes to t->regs before our reads. */
		spin_lock(&s->fz->lock);
		state = t->state;
		spin_unlock(&s->fz->lock);
		if (state != ST_PARKED)
			continue;
		r = fn(ctx, task_pid_vnr(t->task), t->ks.regs, sizeof(t->ks.regs));
		if (r < 0)
			return r;
		if (r > 0)
			break;
	}
	return 0;
}

long stasis_thaw(void *sp)
{
	struct stasis_session *s = sp;

	if (!s->fz)
		return -EINVAL;
	stasis_release_threads(s->fz);
	s->fz = NULL;
	return 0;
}

/* ---- checkpoint: run in a parked target thread ------------------------------------ */

/*
 * Hand a job to one parked thread of the session's freeze and wait for it. On
 * success @stats gets bytes, pages, threads, vmas. If the caller is killed meanwhile
 * the job is cancelled and left to finish on its own (it holds its own references).
 */
long stasis_run_job(void *sp, int fd, u64 *stats)
{
	struct stasis_session *s = sp;
	struct stasis_freeze *fz = s->fz;
	struct stasis_thread *t, *runner = NULL;
	struct stasis_job *job;
	struct file *file;
	long ret;

	if (!fz)
		return -EINVAL;
	file = fget(fd);
	if (!file)
		return -EBADF;
	if (!(file->f_mode & FMODE_WRITE)) {
		fput(file);
		return -EBADF;
	}
	job = stasis_kzalloc(sizeof(*job));
	if (!job) {
		fput(file);
		return -ENOMEM;
	}
	kref_init(&job->ref);
	job->fz = fz;
	job->file = file;	/* the job's reference now */
	job->pos = file->f_pos;

	spin_lock(&fz->lock);
	list_for_each_entry(t, &fz->threads, node) {
		if (t->state != ST_PARKED || t->dead)
			continue;
		if (!runner || t->task == fz->leader)
			runner = t;
	}
	if (runner) {
		kref_get(&job->ref);	/* the runner's */
		runner->job = job;
	}
	spin_unlock(&fz->lock);
	if (!runner) {
		kref_put(&job->ref, stasis_job_free);
		return -ESRCH;
	}
	wake_up_all(&fz->wq);
	if (wait_event_killable(fz->wq, READ_ONCE(job->done))) {
		/* Checked by the job between steps; the runner drops the last reference. */
		WRITE_ONCE(job->cancel, true);
		kref_put(&job->ref, stasis_job_free);
		return -EINTR;
	}
	ret = job->result;
	if (ret >= 0) {
		memcpy(stats, job->stats, sizeof(job->stats));
		if (!(file->f_mode & FMODE_STREAM))
			file->f_pos = job->pos;
	}
	kref_put(&job->ref, stasis_job_free);
	return ret;
}

void stasis_job_set_stats(struct stasis_job *job, u64 bytes, u64 pages, u64 threads, u64 vmas)
{
	job->stats[0] = bytes;
	job->stats[1] = pages;
	job->stats[2] = threads;
	job->stats[3] = vmas;
}

long stasis_kill_frozen(void *sp)
{
	struct stasis_session *s = sp;

	if (!s->fz)
		return -EINVAL;
	return kill_pid(task_tgid(s->fz->leader), SIGKILL, 1);
}

long stasis_job_check(struct stasis_job *job)
{
	if (READ_ONCE(job->cancel) || fatal_signal_pending(current))
		return -EINTR;
	return 0;
}

long stasis_job_write(struct stasis_job *job, const void *buf, size_t len)
{
	while (len) {
		ssize_t n;
		long r = stasis_job_check(job);

		if (r)
			return r;
		n = kernel_write(job->file, buf, min_t(size_t, len, MAX_RW_COUNT), &job->pos);
		if (n < 0)
			return n;
		if (n == 0)
			return -EIO;
		buf += n;
		len -= n;
	}
	return 0;
}


/* Every parked thread's captured state, leader first. The pending-signal masks are
 * read again now (a signal may have arrived since the thread parked). */
long stasis_job_threads(struct stasis_job *job, stasis_kthread_fn fn, void *ctx)
{
	struct stasis_freeze *fz = job->fz;
	struct stasis_thread *t;
	int pass;
	long r;

	spin_lock_irq(&current->sighand->siglock);
	list_for_each_entry(t, &fz->threads, node)
		if (READ_ONCE(t->state) == ST_PARKED)
			t->ks.pending = t->task->pending.signal.sig[0];
	spin_unlock_irq(&current->sighand->siglock);

	for (pass = 0; pass < 2; pass++) {
		list_for_each_entry(t, &fz->threads, node) {
			int state;
			bool dead;

			spin_lock(&fz->lock);
			state = t->state;
			dead = t->dead;
			spin_unlock(&fz->lock);
			if (state != ST_PARKED)
				continue;
			if (dead)
				return -EINTR;
			if (!!t->ks.leader != (pass == 0))
				continue;
			r = fn(ctx, &t->ks);
			if (r)
				return r;
		}
	}
	return 0;
}

/* Pending signals of @p as 128-byte siginfo_t slots (kernel_siginfo is its prefix):
 * every queued entry, plus SI_USER entries for mask bits without one. Returns the
 * count (may exceed @cap: only @cap are written). Under siglock. */
static long stasis_fill_pending(struct sigpending *p, u8 *buf, size_t cap)
{
	struct sigqueue *q;
	u64 queued = 0;
	size_t n = 0;
	int sig;

	list_for_each_entry(q, &p->list, list) {
		if (buf && n < cap) {
			memset(buf + n * 128, 0, 128);
			memcpy(buf + n * 128, &q->info, min_t(size_t, sizeof(q->info), 128));
		}
		n++;
		if (q->info.si_signo >= 1 && q->info.si_signo <= 64)
			queued |= 1ULL << (q->info.si_signo - 1);
	}
	for (sig = 1; sig <= 64 && sig <= _NSIG; sig++) {
		if (!sigismember(&p->signal, sig) || (queued & (1ULL << (sig - 1))))
			continue;
		if (buf && n < cap) {
			kernel_siginfo_t *i = (kernel_siginfo_t *)(buf + n * 128);

			memset(buf + n * 128, 0, 128);
			i->si_signo = sig;
			i->si_code = SI_USER;
		}
		n++;
	}
	return n;
}

/* Pending signals of thread @tid (as in its captured state), or of the process when
 * @tid is 0, into @buf (@cap slots of 128 bytes; NULL to count). -EAGAIN when more
 * than @cap are pending now. */
long stasis_job_siginfo(struct stasis_job *job, s32 tid, u8 *buf, size_t cap)
{
	struct stasis_freeze *fz = job->fz;
	struct stasis_thread *t, *found = NULL;
	long n;

	if (tid != 0) {
		list_for_each_entry(t, &fz->threads, node)
			if (READ_ONCE(t->state) == ST_PARKED && t->ks.tid == tid)
				found = t;
		if (!found)
			return -ESRCH;
	}
	spin_lock_irq(&current->sighand->siglock);
	if (found)
		n = stasis_fill_pending(&found->task->pending, buf, cap);
	else
		n = stasis_fill_pending(&current->signal->shared_pending, buf, cap);
	spin_unlock_irq(&current->sighand->siglock);
	if (buf && n > cap)
		return -EAGAIN;
	return n;
}

long stasis_job_proc(struct stasis_job *job, struct stasis_kproc *kp, size_t size)
{
	struct mm_struct *mm = current->mm;
	struct signal_struct *sig = current->signal;
	const struct cred *c = current_cred();
	struct user_namespace *ns = current_user_ns();
	unsigned int i;

	if (size != sizeof(*kp) || !mm)
		return -EINVAL;
	memset(kp, 0, sizeof(*kp));
	kp->pid = task_tgid_vnr(current);
	rcu_read_lock();
	kp->ppid = task_tgid_vnr(rcu_dereference(current->real_parent));
	rcu_read_unlock();
	kp->pgid = task_pgrp_vnr(current);
	kp->sid = task_session_vnr(current);
	kp->uid = from_kuid_munged(ns, c->uid);
	kp->euid = from_kuid_munged(ns, c->euid);
	kp->suid = from_kuid_munged(ns, c->suid);
	kp->fsuid = from_kuid_munged(ns, c->fsuid);
	kp->gid = from_kgid_munged(ns, c->gid);
	kp->egid = from_kgid_munged(ns, c->egid);
	kp->sgid = from_kgid_munged(ns, c->sgid);
	kp->fsgid = from_kgid_munged(ns, c->fsgid);
	kp->cap_effective = stasis_cap64(c->cap_effective);
	kp->cap_permitted = stasis_cap64(c->cap_permitted);
	kp->cap_inheritable = stasis_cap64(c->cap_inheritable);
	kp->personality = current->personality;
	kp->dumpable = stasis_dumpable(current, mm);
	kp->exit_signal = current->group_leader->exit_signal;
	kp->nice = task_nice(current) + 20;
	kp->umask = current_umask();
	get_task_comm(kp->comm, current->group_leader);

	if (mmap_read_lock_killable(mm))
		return -EINTR;
	kp->start_code = mm->start_code;
	kp->end_code = mm->end_code;
	kp->start_data = mm->start_data;
	kp->end_data = mm->end_data;
	kp->start_brk = mm->start_brk;
	kp->brk = mm->brk;
	kp->start_stack = mm->start_stack;
	spin_lock(&mm->arg_lock);
	kp->arg_start = mm->arg_start;
	kp->arg_end = mm->arg_end;
	kp->env_start = mm->env_start;
	kp->env_end = mm->env_end;
	spin_unlock(&mm->arg_lock);
	kp->vdso = (unsigned long)mm->context.vdso;
	for (i = 0; i + 1 < AT_VECTOR_SIZE && i + 1 < ARRAY_SIZE(kp->auxv); i += 2) {
		kp->auxv[i] = mm->saved_auxv[i];
		kp->auxv[i + 1] = mm->saved_auxv[i + 1];
		kp->auxv_words = i + 2;
		if (mm->saved_auxv[i] == AT_NULL)
			break;
	}
	if (get_mm_counter(mm, MM_SWAPENTS) > 0)
		kp->unsupported |= STASIS_UNSUP_SWAP;
	mmap_read_unlock(mm);

	task_lock(current->group_leader);
	for (i = 0; i < RLIM_NLIMITS && i < ARRAY_SIZE(kp->rlim); i++) {
		kp->rlim[i][0] = sig->rlim[i].rlim_cur;
		kp->rlim[i][1] = sig->rlim[i].rlim_max;
	}
	task_unlock(current->group_leader);

	spin_lock_irq(&current->sighand->siglock);
	for (i = 0; i < _NSIG && i < ARRAY_SIZE(kp->sigactions); i++) {
		const struct sigaction *sa = &current->sighand->action[i].sa;

		kp->sigactions[i][0] = (unsigned long)sa->sa_handler;
		kp->sigactions[i][1] = sa->sa_flags;
		kp->sigactions[i][2] = (unsigned long)sa->sa_restorer;
		kp->sigactions[i][3] = sa->sa_mask.sig[0];
	}
	kp->shared_pending = sig->shared_pending.signal.sig[0];
	kp->itimer_real_interval_ns = ktime_to_ns(sig->it_real_incr);
	if (hrtimer_active(&sig->real_timer)) {
		s64 left = ktime_to_ns(hrtimer_get_remaining(&sig->real_timer));

		kp->itimer_real_value_ns = left > 0 ? left : 1;
	}
	if (sig->it[0].expires || sig->it[1].expires)
		kp->unsupported |= STASIS_UNSUP_ITIMER_CPU;
	if (stasis_has_posix_timers(sig))
		kp->unsupported |= STASIS_UNSUP_POSIX_TIMERS;
	spin_unlock_irq(&current->sighand->siglock);

	if (test_thread_flag(TIF_ADDR32))
		kp->unsupported |= STASIS_UNSUP_COMPAT;
	if (boot_cpu_has(X86_FEATURE_OSXSAVE))
		kp->xcr0 = xgetbv(XCR_XFEATURE_ENABLED_MASK);
	kp->created_ns = ktime_get_real_ns();
	kp->page_size = PAGE_SIZE;
	strscpy(kp->release, utsname()->release, sizeof(kp->release));
	return 0;
}

static long stasis_path_str(const struct path *p, char *buf, size_t len)
{
	char *s;
	size_t n;

	if (len == 0)
		return -ENAMETOOLONG;
	s = d_path(p, buf, len);
	if (IS_ERR(s))
		return PTR_ERR(s);
	n = strlen(s);
	memmove(buf, s, n);
	return n;
}

/* 0: exe, 1: cwd, 2: root. Returns the length written to buf (no NUL). */
long stasis_job_path(struct stasis_job *job, unsigned int which, char *buf, size_t len)
{
	struct path p;
	long r;

	if (which == 0) {
		struct file *f;

		f = stasis_exe_file(current->mm);
		if (!f)
			return 0;
		r = stasis_path_str(&f->f_path, buf, len);
		fput(f);
		return r;
	}
	if (which == 1)
		get_fs_pwd(current->fs, &p);
	else if (which == 2)
		get_fs_root(current->fs, &p);
	else
		return -EINVAL;
	r = stasis_path_str(&p, buf, len);
	path_put(&p);
	return r;
}

/* Fill job->vmas from current->mm. Returns the number of VMAs. */
long stasis_job_vmas(struct stasis_job *job)
{
	struct mm_struct *mm = current->mm;
	struct vm_area_struct *vma;
	unsigned int n, i = 0;

	if (job->vmas)
		return -EBUSY;
	if (mmap_read_lock_killable(mm))
		return -EINTR;
	n = mm->map_count;
	job->vmas = stasis_kzalloc(sizeof(*job->vmas) * (n ? n : 1));
	job->vma_files = stasis_kzalloc(sizeof(*job->vma_files) * (n ? n : 1));
	if (!job->vmas || !job->vma_files) {
		mmap_read_unlock(mm);
		return -ENOMEM;
	}
	{
		STASIS_VMA_WALK(vmi, mm);

		stasis_for_each_vma(vmi, vma) {
			struct stasis_kvma *k = &job->vmas[i];
			unsigned long f = vma->vm_flags;
			const char *name = NULL;

			if (i == n)
				break;
			k->start = vma->vm_start;
			k->end = vma->vm_end;
			k->prot = (f & VM_READ ? PROT_READ : 0) | (f & VM_WRITE ? PROT_WRITE : 0) |
				  (f & VM_EXEC ? PROT_EXEC : 0);
			k->flags = (f & VM_SHARED ? 1 : 0) | (f & VM_GROWSDOWN ? 2 : 0) |
				   (f & VM_DONTCOPY ? 8 : 0) | (f & VM_DONTDUMP ? 16 : 0) |
				   (f & VM_LOCKED ? 32 : 0) | (f & VM_NORESERVE ? 64 : 0) |
				   (f & VM_HUGEPAGE ? 128 : 0) | (f & VM_NOHUGEPAGE ? 256 : 0);
			if (vma->vm_ops && vma->vm_ops->name)
				name = vma->vm_ops->name(vma);
			if (name && !strcmp(name, "[vdso]")) {
				k->kind = 5;
			} else if (name && stasis_is_vvar(name)) {
				k->kind = 6;
			} else if (vma->vm_file) {
				struct file *file = vma->vm_file;
				struct inode *inode = file_inode(file);
				const char *dname = file->f_path.dentry->d_name.name;
				bool shm = inode->i_sb->s_magic == TMPFS_MAGIC;

				if (f & VM_HUGETLB)
					k->unsupported = 1;
				k->dev = new_encode_dev(inode->i_sb->s_dev);
				k->ino = inode->i_ino;
				k->offset = (u64)vma->vm_pgoff << PAGE_SHIFT;
				if (shm && (f & VM_SHARED) && !strcmp(dname, "dev/zero")) {
					k->kind = 2;	/* shared anonymous (shmem) */
					k->shm_id = inode->i_ino;
					k->offset = 0;
					k->need_pages = f & VM_READ ? 1 : 2;
				} else if (shm && !strncmp(dname, "SYSV", 4)) {
					k->kind = 10;
					k->unsupported = 1;	/* SysV shm: extension not written */
				} else {
					if (d_unlinked(file->f_path.dentry))
						k->flags |= 4;
					k->kind = f & VM_SHARED ? 4 : 3;
					if (!(f & VM_SHARED) && vma->anon_vma)
						k->need_pages = f & VM_READ ? 1 : 2;
				}
				get_file(file);
				job->vma_files[i] = file;
			} else {
				if (f & (VM_IO | VM_PFNMAP | VM_MIXEDMAP))
					k->unsupported = 1;
				if (vma->vm_start <= mm->brk && vma->vm_end >= mm->start_brk)
					k->kind = 8;
				else if (vma->vm_start <= mm->start_stack &&
					 vma->vm_end >= mm->start_stack)
					k->kind = 9;
				else
					k->kind = 1;
				/* No anon_vma: never written, every page reads as zero. */
				if (vma->anon_vma)
					k->need_pages = f & VM_READ ? 1 : 2;
			}
			i++;
		}
	}
	job->nr_vmas = i;
	mmap_read_unlock(mm);
	return i;
}

/* VMA idx of the snapshot, and its path (length returned). */
long stasis_job_vma(struct stasis_job *job, unsigned int idx, struct stasis_kvma *out,
		    size_t size, char *buf, size_t len)
{
	long r = 0;

	if (idx >= job->nr_vmas || size != sizeof(*out))
		return -EINVAL;
	*out = job->vmas[idx];
	if (job->vma_files[idx])
		r = stasis_path_str(&job->vma_files[idx]->f_path, buf, len);
	if (r >= 0)
		out->path_len = r;
	return r;
}

/*
 * Copy the page at @addr of current's mm into @buf without faulting anything in:
 * 1 copied, 0 not present (never touched: reads as zero), <0 error. mode 2 (mapping
 * not readable): read through access_process_vm with FOLL_FORCE, like ptrace.
 */
long stasis_job_read_page(struct stasis_job *job, u64 addr, void *buf, unsigned int mode)
{
	if (addr & ~PAGE_MASK)
		return -EINVAL;
	if (mode == 1)
		return copy_from_user_nofault(buf, (const void __user *)(unsigned long)addr,
					      PAGE_SIZE) ? 0 : 1;
	if (mode == 2)
		return access_process_vm(current, addr, buf, PAGE_SIZE, FOLL_FORCE) ==
		       PAGE_SIZE ? 1 : 0;
	return -EINVAL;
}

/* ---- the device ------------------------------------------------------------------ */

static int stasis_open(struct inode *inode, struct file *file)
{
	struct stasis_session *s = stasis_kzalloc(sizeof(*s));

	if (!s)
		return -ENOMEM;
	mutex_init(&s->lock);
	file->private_data = s;
	return 0;
}

/* Last close, also when the caller dies: parked threads run on. */
static int stasis_release(struct inode *inode, struct file *file)
{
	struct stasis_session *s = file->private_data;

	mutex_lock(&s->lock);
	if (s->fz)
		stasis_thaw(s);
	mutex_unlock(&s->lock);
	if (s->kept)
		stasis_rs_kept_free(s->kept);
	mutex_destroy(&s->lock);
	stasis_kfree(s);
	return 0;
}

/* ---- restart: image loading ------------------------------------------------------- */

/*
 * Reads all of the regular file behind fd (pread semantics, from offset 0; the file
 * position is untouched) into a kvmalloc'd buffer, in 1 MiB kernel_read chunks.
 * Refuses files larger than max (EFBIG), empty or non-regular files (EINVAL), files not
 * open for reading (EBADF), and files that shrink while read (EIO). The buffer is
 * counted as a live allocation; free it with stasis_image_free.
 */
long stasis_image_load(int fd, u64 max, void **out, u64 *out_len)
{
	struct file *f;
	loff_t size, pos = 0;
	u8 *buf = NULL;
	long ret = 0;

	*out = NULL;
	*out_len = 0;
	if (fd < 0)
		return -EBADF;
	f = fget(fd);
	if (!f)
		return -EBADF;
	if (!(f->f_mode & FMODE_READ)) {
		ret = -EBADF;
		goto out;
	}
	if (!S_ISREG(file_inode(f)->i_mode)) {
		ret = -EINVAL;
		goto out;
	}
	size = i_size_read(file_inode(f));
	if (size <= 0) {
		ret = -EINVAL;
		goto out;
	}
	if ((u64)size > max || (u64)size > INT_MAX) {
		ret = -EFBIG;
		goto out;
	}
	buf = kvmalloc(size, GFP_KERNEL_ACCOUNT | __GFP_NOWARN | __GFP_RETRY_MAYFAIL);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	while (pos < size) {
		size_t chunk = min_t(loff_t, size - pos, 1 << 20);
		ssize_t n = kernel_read(f, buf + pos, chunk, &pos);

		if (n < 0) {
			ret = n;
			break;
		}
		if (n == 0) {
			ret = -EIO;
			break;
		}
		if (fatal_signal_pending(current)) {
			ret = -EINTR;
			break;
		}
		cond_resched();
	}
	if (ret) {
		kvfree(buf);
		goto out;
	}
	atomic_long_inc(&stasis_live_allocs);
	*out = buf;
	*out_len = size;
out:
	fput(f);
	return ret;
}

void stasis_image_free(void *p)
{
	if (!p)
		return;
	atomic_long_dec(&stasis_live_allocs);
	kvfree(p);
}

/*
 * Runs fn(arg) on a separate 256 KiB vmalloc'd stack (guard pages around it), with the
 * kernel's own call_on_stack() (stasis_call_on_stack in stasis_compat.h). Used for
 * stasis-image's ProcessImage parser, whose frames (from_image ~7 KiB, recursive
 * sort_unstable with ~2.4 KiB frames) do not fit the 16 KiB task stack. The stack is
 * private to this call, so fn may sleep (GFP_KERNEL allocations).
 */
#define STASIS_BIG_STACK (256 * 1024)

struct stasis_big_call {
	long (*fn)(void *);
	void *arg;
	long ret;
};

static void stasis_big_tramp(struct stasis_big_call *c)
{
	c->ret = c->fn(c->arg);
}

long stasis_on_big_stack(long (*fn)(void *), void *arg)
{
	struct stasis_big_call *c;
	u8 *stack = __vmalloc(STASIS_BIG_STACK, GFP_KERNEL | __GFP_NOWARN);
	long ret;

	if (!stack)
		return -ENOMEM;
	atomic_long_inc(&stasis_live_allocs);
	/*
	 * The call block sits at the bottom of the new stack (which grows down from
	 * the top), not on this one: the address of a local may be passed in %rsp
	 * itself (GCC 16 does so), which the switch has changed by the time the
	 * trampoline reads it. The old rsp is stored at the top word and popped
	 * back after the call.
	 */
	c = (struct stasis_big_call *)stack;
	c->fn = fn;
	c->arg = arg;
	c->ret = -EINVAL;
	stasis_call_on_stack(stack + STASIS_BIG_STACK - 16, stasis_big_tramp, c);
	ret = c->ret;
	vfree(stack);
	atomic_long_dec(&stasis_live_allocs);
	return ret;
}

u32 stasis_page_size(void)
{
	return PAGE_SIZE;
}

static long stasis_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct stasis_session *s = file->private_data;
	u64 buf[STASIS_IOC_BUF / sizeof(u64)];
	size_t size = _IOC_SIZE(cmd);
	long ret;

	if (_IOC_TYPE(cmd) != STASIS_IOC_MAGIC)
		return -ENOTTY;
	if (size > sizeof(buf))
		return -EINVAL;
	memset(buf, 0, size);
	if ((_IOC_DIR(cmd) & _IOC_WRITE) && copy_from_user(buf, (void __user *)arg, size))
		return -EFAULT;
	/*
	 * The restart calls use no session state and block for long: not under the
	 * session lock (the future process's threads share the helper's open file).
	 * RESTART_THREAD returns to user mode in the restored context: its "return
	 * value" is the image's rax, and nothing is copied back.
	 */
	if (cmd == STASIS_IOC_RESTART_THREAD)
		return stasis_restart_thread(buf, size);
	if (cmd == STASIS_IOC_RESTART) {
		ret = stasis_rs_ioctl(s, cmd, buf, size);
	} else {
		if (mutex_lock_interruptible(&s->lock))
			return -ERESTARTSYS;
		ret = stasis_rs_ioctl(s, cmd, buf, size);
		mutex_unlock(&s->lock);
	}
	if (ret >= 0 && (_IOC_DIR(cmd) & _IOC_READ) &&
	    copy_to_user((void __user *)arg, buf, size))
		ret = -EFAULT;
	return ret;
}

static const struct file_operations stasis_fops = {
	.owner = THIS_MODULE,
	.open = stasis_open,
	.release = stasis_release,
	.unlocked_ioctl = stasis_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice stasis_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "stasis",
	.fops = &stasis_fops,
	.mode = 0666,
};

/*
 * Kernels newer than the newest one the matrix passes (docs/MATRIX.md) load only
 * when asked (STASIS_KERNEL_VALIDATED).
 */
static bool allow_untested_kernel;
module_param(allow_untested_kernel, bool, 0444);
MODULE_PARM_DESC(allow_untested_kernel,
		 "load on a kernel the kernel engine is not yet known to work on (tests only)");

static int __init stasis_init(void)
{
	long r;

	if (!STASIS_KERNEL_VALIDATED && !allow_untested_kernel) {
		pr_err("kernel engine not yet validated on this kernel (docs/MATRIX.md); use the user engine, or load with allow_untested_kernel=1 to test\n");
		return -EOPNOTSUPP;
	}
	r = stasis_rs_init(sizeof(struct user_regs_struct), sizeof(struct stasis_kthread),
				sizeof(struct stasis_kproc), sizeof(struct stasis_kvma),
				sizeof(struct stasis_rstate), sizeof(struct stasis_mapfd));

	if (r)
		return (int)r;
	return misc_register(&stasis_dev);
}

static void __exit stasis_exit(void)
{
	long live;

	misc_deregister(&stasis_dev);
	live = atomic_long_read(&stasis_live_allocs);
	if (live)
		pr_err("%ld allocations leaked\n", live);
}

module_init(stasis_init);
module_exit(stasis_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("stasis: transparent checkpoint/restart of multithreaded processes");
MODULE_VERSION("0.1.0");
