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
#include <asm/user.h>

#include "stasis_ext.h"

#define STASIS_IOC_MAGIC 0xB5
/* Largest ioctl argument struct; _IOC_SIZE above it is refused before any copy. */
#define STASIS_IOC_BUF 256
/* Most threads one freeze handles (Rust: MAX_THREADS). */
#define STASIS_MAX_THREADS 4096

/* The Rust side (rust/src/lib.rs). */
long stasis_rs_init(size_t user_regs_size);
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

static void *stasis_kzalloc(size_t size)
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

struct stasis_thread {
	struct callback_head work;
	struct list_head node;
	struct stasis_freeze *fz;
	struct task_struct *task;	/* referenced */
	int state;			/* ST_*, under fz->lock */
	struct user_regs_struct regs;	/* written by the thread before ST_PARKED */
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
};

/* Per open file descriptor. */
struct stasis_session {
	struct mutex lock;
	struct stasis_freeze *fz;	/* non-NULL while a freeze holds threads */
};

static void stasis_freeze_free(struct kref *ref)
{
	struct stasis_freeze *fz = container_of(ref, struct stasis_freeze, ref);
	struct stasis_thread *t, *n;

	list_for_each_entry_safe(t, n, &fz->threads, node) {
		put_task_struct(t->task);
		stasis_kfree(t);
	}
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

static int stasis_save_regs(struct stasis_thread *t)
{
	const struct user_regset_view *view = task_user_regset_view(current);
	unsigned int i;

	for (i = 0; i < view->n; i++) {
		const struct user_regset *rs = &view->regsets[i];
		int got;

		if (rs->core_note_type != NT_PRSTATUS)
			continue;
		/* A 32-bit (compat) task has another layout: not supported yet. */
		if ((size_t)rs->n * rs->size != sizeof(t->regs))
			return -EOPNOTSUPP;
		got = regset_get(current, rs, sizeof(t->regs), &t->regs);
		if (got < 0)
			return got;
		return got == sizeof(t->regs) ? 0 : -EIO;
	}
	return -ENOENT;
}

/* The task_work: runs in the target thread, from get_signal() (TWA_SIGNAL). */
static void stasis_park(struct callback_head *cb)
{
	struct stasis_thread *t = container_of(cb, struct stasis_thread, work);
	struct stasis_freeze *fz = t->fz;
	int state = ST_GONE;

	/* Exiting (the work runs from exit_task_work) or already released: do nothing. */
	if (!(current->flags & PF_EXITING) && !READ_ONCE(fz->released))
		state = stasis_save_regs(t) ? ST_FAILED : ST_PARKED;

	spin_lock(&fz->lock);
	t->state = state;
	fz->pending--;
	if (state == ST_PARKED)
		fz->parked++;
	else if (state == ST_FAILED)
		fz->failed++;
	spin_unlock(&fz->lock);
	wake_up_all(&fz->wq);

	if (state == ST_PARKED)
		/* Killable: SIGKILL still ends the thread (and so the process). */
		wait_event_killable(fz->wq, READ_ONCE(fz->released));

	kref_put(&fz->ref, stasis_freeze_free);
	/* Taken when queued: rmmod waits for every outstanding callback. */
	module_put(THIS_MODULE);
}

/* May the caller freeze (and so read the state of) @task? ptrace_may_access() is not
 * exported; this is its PTRACE_MODE_ATTACH_REALCREDS core without the LSM hook. */
static int stasis_may_freeze(struct task_struct *task)
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
	dumpable = get_dumpable(mm) == SUID_DUMP_USER;
	mmput(mm);
	if (same && dumpable)
		return 0;
	if (capable(CAP_SYS_PTRACE) || capable(CAP_CHECKPOINT_RESTORE))
		return 0;
	return -EPERM;
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
	struct pid *p;
	long left = msecs_to_jiffies(timeout_ms);
	long ret;

	if (s->fz)
		return -EBUSY;
	if (pid <= 0)
		return -EINVAL;
	p = find_get_pid(pid);
	if (!p)
		return -ESRCH;
	leader = get_pid_task(p, PIDTYPE_PID);
	put_pid(p);
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

typedef long (*stasis_report_fn)(void *ctx, int tid, const void *regs, size_t len);

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
		r = fn(ctx, task_pid_vnr(t->task), &t->regs, sizeof(t->regs));
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
	mutex_destroy(&s->lock);
	stasis_kfree(s);
	return 0;
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
	if (mutex_lock_interruptible(&s->lock))
		return -ERESTARTSYS;
	ret = stasis_rs_ioctl(s, cmd, buf, size);
	mutex_unlock(&s->lock);
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

static int __init stasis_init(void)
{
	long r = stasis_rs_init(sizeof(struct user_regs_struct));

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
