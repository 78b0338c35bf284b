// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * riptides.ko - workload identity and transparent mTLS, kernel side (KERNEL_PATH.md).
 *
 *   pernet.c     per network namespace state, agent registration (NETLINK_URELEASE)
 *   config.c     config, trust bundle, policy of a namespace
 *   netlink.c    generic netlink family, policies, config/stats/dump commands
 *   handshake.c  HANDSHAKE_REQUEST, SET_VERDICT, HANDSHAKE_ACCEPT, HANDSHAKE_DONE
 *   intercept.c  sock:inet_sock_set_state probe, policy matching, accepted sockets
 *   gate.c       gated proto_ops (the hold) and the in-flight counter
 *   conn.c       connection records, timeouts, events, /proc rows
 *   stats.c      counters and module parameters; proc.c /proc/riptides
 */
#include <linux/module.h>
#include <linux/init.h>
#include <net/genetlink.h>
#include "riptides.h"

static int __init riptides_init(void)
{
	int err;

	err = rt_gate_init();
	if (err)
		return err;
	err = rt_conn_init();
	if (err)
		return err;
	err = rt_pernet_init();
	if (err)
		goto out_wq;
	err = rt_proc_init();
	if (err)
		goto out_pernet;
	err = rt_netlink_init();
	if (err)
		goto out_proc;
	err = rt_intercept_init();
	if (err)
		goto out_netlink;
	pr_info("riptides: loaded (genl family %s v%d)\n", RIPTIDES_GENL_NAME,
		RIPTIDES_GENL_VERSION);
	return 0;

out_netlink:
	rt_netlink_exit();
out_proc:
	rt_proc_exit();
out_pernet:
	rt_pernet_notifier_exit();
	rt_pernet_exit();
out_wq:
	rt_conn_exit_free_all();
	return err;
}

static void __exit riptides_exit(void)
{
	/* No new command, agent or intercepted socket after these. */
	rt_netlink_exit();
	rt_pernet_notifier_exit();
	rt_intercept_exit();
	/* Held records refused, every gated socket back on its inner ops. */
	rt_conn_exit_refuse_all();
	rt_inflight_wait();
	/* Work (requests, resets, timeouts) drained, records dropped. */
	rt_conn_exit_free_all();
	rt_proc_exit();
	rt_pernet_exit();
	pr_info("riptides: unloaded (live objects %lld)\n",
		(long long)atomic64_read(&rt_live_objects));
}

module_init(riptides_init);
module_exit(riptides_exit);

MODULE_LICENSE("Dual MIT/GPL");
MODULE_AUTHOR("Riptides in Rust contributors");
MODULE_DESCRIPTION("Riptides workload identity and transparent mTLS");
MODULE_ALIAS_GENL_FAMILY(RIPTIDES_GENL_NAME);
