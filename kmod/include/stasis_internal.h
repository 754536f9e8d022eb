/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Functions shared by the C files of stasis.ko (not part of any ABI).
 */
#ifndef STASIS_INTERNAL_H
#define STASIS_INTERNAL_H

#include <linux/types.h>

struct task_struct;
struct user_regset;
struct user_regset_view;

/* Counted allocations (the module reports any left at unload). */
void *stasis_kmalloc(size_t size);
void *stasis_kzalloc(size_t size);
void stasis_kfree(void *p);
void *stasis_kvzalloc(size_t size);
void stasis_kvfree(void *p);

/* The task of @pid in the caller's pid namespace, referenced, or NULL. */
struct task_struct *stasis_get_task(int pid);

/* May current read and change the state of @task (ptrace attach rules)? */
int stasis_may_freeze(struct task_struct *task);

/* The regset of @view with core note type @note (NT_PRSTATUS, NT_X86_XSTATE), or NULL. */
const struct user_regset *stasis_regset(const struct user_regset_view *view,
					unsigned int note);

/* STASIS_IOC_RESTART_THREAD (stasis_restart.c); @buf holds the ioctl argument. */
long stasis_restart_thread(const void *buf, size_t len);

#endif
