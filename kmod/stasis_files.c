// SPDX-License-Identifier: GPL-2.0-only
/*
 * stasis_files.ko: the "files" extension of stasis.ko (regular files, pipes, FIFOs,
 * terminals). For now it only registers its record kinds (extension id 1) with the
 * core, so STASIS_IOC_VERSION lists "files" exactly while this module is loaded.
 * Calling stasis_register_extension() makes this module depend on stasis.ko: the
 * kernel refuses to load it without stasis.ko and to unload stasis.ko before it.
 */
#define pr_fmt(fmt) "stasis_files: " fmt

#include <linux/module.h>
#include "stasis_ext.h"

static const struct stasis_extension_ops stasis_files_ops = {
	.abi = STASIS_EXT_ABI,
	.id = STASIS_EXT_FILES,
	.name = "files",
	.owner = THIS_MODULE,
};

static int __init stasis_files_init(void)
{
	return stasis_register_extension(&stasis_files_ops);
}

static void __exit stasis_files_exit(void)
{
	stasis_unregister_extension(&stasis_files_ops);
}

module_init(stasis_files_init);
module_exit(stasis_files_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("stasis: files extension (regular files, pipes, terminals)");
MODULE_VERSION("0.1.0");
MODULE_SOFTDEP("pre: stasis");
