/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The interface between stasis.ko and its extension modules (stasis_<kind>.ko).
 * An extension registers the record kinds it handles with the core by calling
 * stasis_register_extension() from its init and stasis_unregister_extension()
 * from its exit. Its ids are those of the image format (stasis-abi EXT_*).
 */
#ifndef STASIS_EXT_H
#define STASIS_EXT_H

#include <linux/types.h>

struct module;

/* Bumped whenever struct stasis_extension_ops changes. */
#define STASIS_EXT_ABI 1

/* Extension ids (crates/abi: EXT_*; crates/image: Extension). */
#define STASIS_EXT_CORE   0
#define STASIS_EXT_FILES  1
#define STASIS_EXT_NET    2
#define STASIS_EXT_EVENTS 3
#define STASIS_EXT_IPC    4
#define STASIS_EXT_TREE   5
#define STASIS_EXT_MAX    63

struct stasis_extension_ops {
	unsigned int abi;	/* STASIS_EXT_ABI */
	unsigned int id;	/* STASIS_EXT_*, 1..STASIS_EXT_MAX */
	const char *name;	/* "files": the module is stasis_<name>.ko */
	struct module *owner;	/* THIS_MODULE */
};

int stasis_register_extension(const struct stasis_extension_ops *ops);
void stasis_unregister_extension(const struct stasis_extension_ops *ops);

#endif
