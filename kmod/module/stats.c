// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Counters and module parameters. Everything is visible under
 * /sys/module/riptides/parameters/: the two defaults are settable at insmod time only
 * (0444), the counters are read-only and refuse writes even at load time.
 */
#include <linux/moduleparam.h>
#include <linux/sysfs.h>
#include "riptides.h"

struct rt_stats rt_stats;

unsigned int rt_param_fail_mode = RIPTIDES_FAIL_CLOSED;
unsigned int rt_param_handshake_timeout_ms = 10000;

static int rt_fail_mode_set(const char *val, const struct kernel_param *kp)
{
	return param_set_uint_minmax(val, kp, 0, RIPTIDES_FAIL_MODE_MAX);
}

static const struct kernel_param_ops rt_fail_mode_ops = {
	.set = rt_fail_mode_set,
	.get = param_get_uint,
};

static int rt_timeout_set(const char *val, const struct kernel_param *kp)
{
	return param_set_uint_minmax(val, kp, RIPTIDES_HANDSHAKE_TIMEOUT_MIN_MS,
				     RIPTIDES_HANDSHAKE_TIMEOUT_MAX_MS);
}

static const struct kernel_param_ops rt_timeout_ops = {
	.set = rt_timeout_set,
	.get = param_get_uint,
};

module_param_cb(default_fail_mode, &rt_fail_mode_ops, &rt_param_fail_mode, 0444);
MODULE_PARM_DESC(default_fail_mode,
		 "Fail mode until the daemon sets one: 0 = closed (refuse), 1 = open (plaintext)");
module_param_cb(default_handshake_timeout_ms, &rt_timeout_ops, &rt_param_handshake_timeout_ms,
		0444);
MODULE_PARM_DESC(default_handshake_timeout_ms,
		 "Handshake timeout until the daemon sets one (100..60000 ms)");

static int rt_counter_set(const char *val, const struct kernel_param *kp)
{
	return -EPERM;
}

static int rt_counter_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%lld\n", (long long)atomic64_read((atomic64_t *)kp->arg));
}

static const struct kernel_param_ops rt_counter_ops = {
	.set = rt_counter_set,
	.get = rt_counter_get,
};

#define RT_COUNTER(name, desc)							\
	module_param_cb(name, &rt_counter_ops, &rt_stats.name, 0444);		\
	MODULE_PARM_DESC(name, desc " (read-only counter)")

RT_COUNTER(config_updates, "Accepted SET_CONFIG commands");
RT_COUNTER(bundle_loads, "Accepted LOAD_BUNDLE commands");
RT_COUNTER(policy_loads, "Accepted LOAD_POLICY commands");
RT_COUNTER(cmds_rejected, "Commands refused by a handler after attribute validation");
RT_COUNTER(bundle_certs, "Certificates in the current trust bundle");
RT_COUNTER(bundle_bytes, "DER bytes in the current trust bundle");
RT_COUNTER(policy_entries, "Entries in the current policy table");
RT_COUNTER(connections, "Tracked connections");

/* Caller holds rt_state_lock. */
void rt_stats_seq_show_json(struct seq_file *m)
{
	seq_printf(m, "{\"trust_domain\":\"%s\",\"daemon_id\":\"%s\",\"fail_mode\":\"%s\","
		   "\"handshake_timeout_ms\":%u,",
		   rt_cfg.trust_domain, rt_cfg.daemon_id,
		   rt_cfg.fail_mode == RIPTIDES_FAIL_OPEN ? "open" : "closed",
		   rt_cfg.handshake_timeout_ms);
	seq_printf(m, "\"bundle_generation\":%llu,\"policy_generation\":%llu,",
		   rt_bundle_cur ? rt_bundle_cur->generation : 0ULL,
		   rt_policy_cur ? rt_policy_cur->generation : 0ULL);
	seq_printf(m, "\"config_updates\":%lld,\"bundle_loads\":%lld,\"policy_loads\":%lld,"
		   "\"cmds_rejected\":%lld,\"bundle_certs\":%lld,\"bundle_bytes\":%lld,"
		   "\"policy_entries\":%lld,\"connections\":%lld}\n",
		   (long long)atomic64_read(&rt_stats.config_updates),
		   (long long)atomic64_read(&rt_stats.bundle_loads),
		   (long long)atomic64_read(&rt_stats.policy_loads),
		   (long long)atomic64_read(&rt_stats.cmds_rejected),
		   (long long)atomic64_read(&rt_stats.bundle_certs),
		   (long long)atomic64_read(&rt_stats.bundle_bytes),
		   (long long)atomic64_read(&rt_stats.policy_entries),
		   (long long)atomic64_read(&rt_stats.connections));
}
