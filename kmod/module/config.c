// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Daemon-provided state of one network namespace: configuration, trust bundle and policy.
 *
 * Every object is built completely by the netlink handler (bounded by the limits in the
 * UAPI header), then swapped in under rn->lock; the replaced object is freed afterwards.
 * The policy is also read by the tracepoint probe, under RCU: it is published with
 * rcu_assign_pointer and freed after a grace period.
 */
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/mm.h>
#include "riptides.h"

void rt_config_defaults(struct rt_net *rn)
{
	memset(&rn->cfg, 0, sizeof(rn->cfg));
	rn->cfg.fail_mode = rt_param_fail_mode;
	rn->cfg.handshake_timeout_ms = rt_param_handshake_timeout_ms;
}

/* SPIFFE trust domain: lowercase letters, digits, '.', '-', '_'; not empty. */
bool rt_trust_domain_valid(const char *td)
{
	const char *p;

	if (!*td)
		return false;
	for (p = td; *p; p++) {
		char c = *p;

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '-' || c == '_'))
			return false;
	}
	return true;
}

/* Daemon id: non-empty, [A-Za-z0-9._:/-] (printed unescaped in /proc JSON). */
bool rt_daemon_id_valid(const char *id)
{
	const char *p;

	if (!*id)
		return false;
	for (p = id; *p; p++) {
		char c = *p;

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '-' || c == '_' || c == ':' || c == '/'))
			return false;
	}
	return true;
}

void rt_config_replace(struct rt_net *rn, const struct rt_config *cfg)
{
	mutex_lock(&rn->lock);
	memcpy(rn->cfg.trust_domain, cfg->trust_domain, sizeof(cfg->trust_domain));
	memcpy(rn->cfg.daemon_id, cfg->daemon_id, sizeof(cfg->daemon_id));
	WRITE_ONCE(rn->cfg.fail_mode, cfg->fail_mode);
	WRITE_ONCE(rn->cfg.handshake_timeout_ms, cfg->handshake_timeout_ms);
	mutex_unlock(&rn->lock);
	rt_count(rn, config_updates);
}

void rt_bundle_free(struct rt_bundle *b)
{
	if (!b)
		return;
	kvfree(b->der);
	kfree(b->offsets);
	kfree(b);
}

void rt_policy_free(struct rt_policy *p)
{
	u32 i;

	if (!p)
		return;
	for (i = 0; i < p->nentries; i++)
		kfree(p->entries[i].exe);
	kvfree(p);
}

void rt_bundle_replace(struct rt_net *rn, struct rt_bundle *b)
{
	struct rt_bundle *old;

	mutex_lock(&rn->lock);
	old = rn->bundle;
	rn->bundle = b;
	atomic64_add((b ? b->ncerts : 0) - (old ? (s64)old->ncerts : 0), &rt_g_bundle_certs);
	atomic64_add((b ? b->total_bytes : 0) - (old ? (s64)old->total_bytes : 0),
		     &rt_g_bundle_bytes);
	mutex_unlock(&rn->lock);
	rt_count(rn, bundle_loads);
	rt_bundle_free(old);
}

void rt_policy_replace(struct rt_net *rn, struct rt_policy *p)
{
	struct rt_policy *old;

	mutex_lock(&rn->lock);
	old = rcu_dereference_protected(rn->policy, lockdep_is_held(&rn->lock));
	rcu_assign_pointer(rn->policy, p);
	atomic64_add((p ? p->nentries : 0) - (old ? (s64)old->nentries : 0),
		     &rt_g_policy_entries);
	mutex_unlock(&rn->lock);
	rt_count(rn, policy_loads);
	if (old) {
		synchronize_rcu();	/* the probe may still be matching against it */
		rt_policy_free(old);
	}
}

/* Namespace exit / unload: nothing can read the state any more. */
void rt_state_free(struct rt_net *rn)
{
	struct rt_bundle *b;
	struct rt_policy *p;

	mutex_lock(&rn->lock);
	b = rn->bundle;
	p = rcu_dereference_protected(rn->policy, lockdep_is_held(&rn->lock));
	rn->bundle = NULL;
	RCU_INIT_POINTER(rn->policy, NULL);
	if (b) {
		atomic64_sub(b->ncerts, &rt_g_bundle_certs);
		atomic64_sub(b->total_bytes, &rt_g_bundle_bytes);
	}
	if (p)
		atomic64_sub(p->nentries, &rt_g_policy_entries);
	mutex_unlock(&rn->lock);
	rt_bundle_free(b);
	if (p) {
		synchronize_rcu();
		rt_policy_free(p);
	}
}
