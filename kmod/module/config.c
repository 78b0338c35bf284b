// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Daemon-provided state: configuration, trust bundle and policy table.
 *
 * Every object is built completely by the netlink handler (bounded by the limits in the
 * UAPI header), then swapped in under rt_state_lock; the replaced object is freed after the
 * lock is dropped. Readers (GET_STATS, /proc) take the same lock. All of it is freed on unload.
 */
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/mm.h>
#include "riptides.h"

DEFINE_MUTEX(rt_state_lock);
struct rt_config rt_cfg;
struct rt_bundle *rt_bundle_cur;
struct rt_policy *rt_policy_cur;

void rt_config_init(u8 fail_mode, u32 handshake_timeout_ms)
{
	mutex_lock(&rt_state_lock);
	memset(&rt_cfg, 0, sizeof(rt_cfg));
	rt_cfg.fail_mode = fail_mode;
	rt_cfg.handshake_timeout_ms = handshake_timeout_ms;
	mutex_unlock(&rt_state_lock);
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

void rt_config_replace(const struct rt_config *cfg)
{
	mutex_lock(&rt_state_lock);
	rt_cfg = *cfg;
	mutex_unlock(&rt_state_lock);
	atomic64_inc(&rt_stats.config_updates);
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

void rt_bundle_replace(struct rt_bundle *b)
{
	struct rt_bundle *old;

	mutex_lock(&rt_state_lock);
	old = rt_bundle_cur;
	rt_bundle_cur = b;
	atomic64_set(&rt_stats.bundle_certs, b ? b->ncerts : 0);
	atomic64_set(&rt_stats.bundle_bytes, b ? b->total_bytes : 0);
	mutex_unlock(&rt_state_lock);
	atomic64_inc(&rt_stats.bundle_loads);
	rt_bundle_free(old);
}

void rt_policy_replace(struct rt_policy *p)
{
	struct rt_policy *old;

	mutex_lock(&rt_state_lock);
	old = rt_policy_cur;
	rt_policy_cur = p;
	atomic64_set(&rt_stats.policy_entries, p ? p->nentries : 0);
	mutex_unlock(&rt_state_lock);
	atomic64_inc(&rt_stats.policy_loads);
	rt_policy_free(old);
}

void rt_state_free_all(void)
{
	struct rt_bundle *b;
	struct rt_policy *p;

	mutex_lock(&rt_state_lock);
	b = rt_bundle_cur;
	p = rt_policy_cur;
	rt_bundle_cur = NULL;
	rt_policy_cur = NULL;
	memset(&rt_cfg, 0, sizeof(rt_cfg));
	mutex_unlock(&rt_state_lock);
	rt_bundle_free(b);
	rt_policy_free(p);
}
