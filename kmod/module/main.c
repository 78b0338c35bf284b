// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * riptides.ko - workload identity and transparent mTLS, kernel side.
 *
 * This increment contains the control plane of the module only: the generic netlink
 * family (netlink.c), the daemon-provided state (config.c), counters and parameters
 * (stats.c) and /proc/riptides (proc.c). Socket interception and the kTLS handoff are
 * not implemented yet; the commands that need them answer -EOPNOTSUPP.
 */
#include <linux/module.h>
#include <linux/init.h>
#include <net/genetlink.h>
#include "riptides.h"

static int __init riptides_init(void)
{
	int err;

	rt_config_init(rt_param_fail_mode, rt_param_handshake_timeout_ms);

	err = rt_proc_init();
	if (err)
		return err;
	err = rt_netlink_init();
	if (err) {
		rt_proc_exit();
		return err;
	}
	pr_info("riptides: loaded (genl family %s v%d)\n", RIPTIDES_GENL_NAME,
		RIPTIDES_GENL_VERSION);
	return 0;
}

static void __exit riptides_exit(void)
{
	/* No new commands after this; genl waits for running handlers. */
	rt_netlink_exit();
	rt_proc_exit();
	rt_state_free_all();
	pr_info("riptides: unloaded\n");
}

module_init(riptides_init);
module_exit(riptides_exit);

MODULE_LICENSE("Dual MIT/GPL");
MODULE_AUTHOR("Riptides in Rust contributors");
MODULE_DESCRIPTION("Riptides workload identity and transparent mTLS");
MODULE_ALIAS_GENL_FAMILY(RIPTIDES_GENL_NAME);
