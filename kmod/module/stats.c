// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Counters and module parameters. Everything is visible under
 * /sys/module/riptides/parameters/: the two defaults are settable at insmod time only
 * (0444), the counters are read-only and refuse writes even at load time.
 */
#include <linux/moduleparam.h>
#include <linux/sysfs.h>
#include "riptides.h"

struct rt_counters rt_gstats;
atomic64_t rt_g_bundle_certs, rt_g_bundle_bytes, rt_g_policy_entries, rt_g_connections;
atomic64_t rt_live_objects;

unsigned int rt_param_fail_mode = RIPTIDES_FAIL_CLOSED;
unsigned int rt_param_handshake_timeout_ms = 10000;
unsigned int rt_param_max_pending = RIPTIDES_MAX_PENDING;
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

static int rt_max_pending_set(const char *val, const struct kernel_param *kp)
{
	return param_set_uint_minmax(val, kp, 1, RIPTIDES_MAX_PENDING);
}

static const struct kernel_param_ops rt_max_pending_ops = {
	.set = rt_max_pending_set,
	.get = param_get_uint,
};

module_param_cb(max_pending, &rt_max_pending_ops, &rt_param_max_pending, 0644);
MODULE_PARM_DESC(max_pending, "Held connections per network namespace (1..4096); beyond it "
		 "protected sockets are refused (fail-closed) or passed (fail-open)");

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

#define RT_COUNTER_VAR(name, var, desc)					\
	module_param_cb(name, &rt_counter_ops, &(var), 0444);			\
	MODULE_PARM_DESC(name, desc " (read-only counter)")
#define RT_COUNTER(name, field, desc) RT_COUNTER_VAR(name, rt_gstats.field, desc)

RT_COUNTER(config_updates, config_updates, "Accepted SET_CONFIG commands");
RT_COUNTER(bundle_loads, bundle_loads, "Accepted LOAD_BUNDLE commands");
RT_COUNTER(policy_loads, policy_loads, "Accepted LOAD_POLICY commands");
RT_COUNTER(cmds_rejected, cmds_rejected, "Commands refused by a handler after attribute validation");
RT_COUNTER_VAR(bundle_certs, rt_g_bundle_certs, "Certificates in the current trust bundles");
RT_COUNTER_VAR(bundle_bytes, rt_g_bundle_bytes, "DER bytes in the current trust bundles");
RT_COUNTER_VAR(policy_entries, rt_g_policy_entries, "Entries in the current policy tables");
RT_COUNTER_VAR(connections, rt_g_connections, "Tracked connections");
RT_COUNTER(handshakes_requested, hs_requested, "HANDSHAKE_REQUESTs sent");
RT_COUNTER(handshakes_ok, hs_ok, "Connections released over kTLS");
RT_COUNTER(handshakes_failed, hs_failed, "Connections refused (daemon, verdict, close, no daemon)");
RT_COUNTER(handshakes_timed_out, hs_timed_out, "Handshakes not done within the timeout");
RT_COUNTER(conns_no_daemon, conns_no_daemon, "Protected sockets seen with no daemon registered");
RT_COUNTER(conns_passthrough, conns_passthrough, "Protected sockets released in plaintext");
RT_COUNTER(conns_over_limit, conns_over_limit, "Protected sockets beyond max_pending");
RT_COUNTER_VAR(live_objects, rt_live_objects, "Allocated connection records and their buffers");

#define RT_J(rn, f) (long long)atomic64_read(&(rn)->c.f)

/* The reader's namespace: configuration and its counters. */
void rt_stats_seq_show_json(struct seq_file *m, struct rt_net *rn)
{
	struct rt_policy *pol;

	mutex_lock(&rn->lock);
	pol = rcu_dereference_protected(rn->policy, lockdep_is_held(&rn->lock));
	seq_printf(m, "{\"trust_domain\":\"%s\",\"daemon_id\":\"%s\",\"fail_mode\":\"%s\","
		   "\"handshake_timeout_ms\":%u,",
		   rn->cfg.trust_domain, rn->cfg.daemon_id,
		   rn->cfg.fail_mode == RIPTIDES_FAIL_OPEN ? "open" : "closed",
		   rn->cfg.handshake_timeout_ms);
	seq_printf(m, "\"bundle_generation\":%llu,\"policy_generation\":%llu,",
		   rn->bundle ? rn->bundle->generation : 0ULL, pol ? pol->generation : 0ULL);
	seq_printf(m, "\"config_updates\":%lld,\"bundle_loads\":%lld,\"policy_loads\":%lld,"
		   "\"cmds_rejected\":%lld,\"bundle_certs\":%u,\"bundle_bytes\":%u,"
		   "\"policy_entries\":%u,",
		   RT_J(rn, config_updates), RT_J(rn, bundle_loads), RT_J(rn, policy_loads),
		   RT_J(rn, cmds_rejected), rn->bundle ? rn->bundle->ncerts : 0,
		   rn->bundle ? rn->bundle->total_bytes : 0, pol ? pol->nentries : 0);
	mutex_unlock(&rn->lock);
	seq_printf(m, "\"daemon_connected\":%s,\"pending\":%d,\"handshakes_requested\":%lld,"
		   "\"handshakes_ok\":%lld,\"handshakes_failed\":%lld,"
		   "\"handshakes_timed_out\":%lld,\"conns_no_daemon\":%lld,"
		   "\"conns_passthrough\":%lld,\"conns_over_limit\":%lld,\"connections\":%d}\n",
		   rt_agent_present(rn) ? "true" : "false", atomic_read(&rn->npending),
		   RT_J(rn, hs_requested), RT_J(rn, hs_ok), RT_J(rn, hs_failed),
		   RT_J(rn, hs_timed_out), RT_J(rn, conns_no_daemon), RT_J(rn, conns_passthrough),
		   RT_J(rn, conns_over_limit), atomic_read(&rn->nconns));
}
