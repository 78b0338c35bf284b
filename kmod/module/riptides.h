/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/* Internal declarations shared by the files of riptides.ko. */
#ifndef RIPTIDES_INTERNAL_H
#define RIPTIDES_INTERNAL_H

#include <linux/atomic.h>
#include <linux/mutex.h>
#include <linux/types.h>
#include <linux/in6.h>
#include <linux/seq_file.h>
#include <linux/riptides.h>

/* ---- config.c: daemon-provided state, replaced atomically under rt_state_lock ---- */

struct rt_config {
	char trust_domain[RIPTIDES_TRUST_DOMAIN_MAX_LEN + 1];
	char daemon_id[RIPTIDES_DAEMON_ID_MAX_LEN + 1];
	u8 fail_mode;		/* enum riptides_fail_mode */
	u32 handshake_timeout_ms;
};

struct rt_bundle {
	u64 generation;
	u32 ncerts;
	u32 total_bytes;
	u32 *offsets;		/* ncerts + 1 offsets into der */
	u8 *der;		/* all certificates back to back */
};

#define RT_PENTRY_HAS_ADDR4	BIT(0)
#define RT_PENTRY_HAS_ADDR6	BIT(1)
#define RT_PENTRY_HAS_UID	BIT(2)
#define RT_PENTRY_HAS_GID	BIT(3)

struct rt_pentry {
	u32 rule_id;
	u32 flags;		/* RT_PENTRY_HAS_* */
	u8 direction;		/* enum riptides_direction */
	u8 action;		/* enum riptides_action */
	u8 prefix_len;
	struct in6_addr addr;	/* v4 in the first 4 bytes */
	u16 port_min, port_max;
	u32 uid, gid;
	char comm[RIPTIDES_COMM_MAX_LEN + 1];	/* empty: any */
	char *exe;		/* NULL: any */
};

struct rt_policy {
	u64 generation;
	u32 nentries;
	struct rt_pentry entries[];
};

/* Protects rt_cfg, rt_bundle_cur and rt_policy_cur (the pointers and what they point to). */
extern struct mutex rt_state_lock;
extern struct rt_config rt_cfg;
extern struct rt_bundle *rt_bundle_cur;
extern struct rt_policy *rt_policy_cur;

void rt_config_init(u8 fail_mode, u32 handshake_timeout_ms);
/* Takes ownership of the new object; frees the one it replaces. */
void rt_config_replace(const struct rt_config *cfg);
void rt_bundle_replace(struct rt_bundle *b);
void rt_policy_replace(struct rt_policy *p);
void rt_bundle_free(struct rt_bundle *b);
void rt_policy_free(struct rt_policy *p);
void rt_state_free_all(void);
bool rt_trust_domain_valid(const char *td);
bool rt_daemon_id_valid(const char *id);

/* ---- stats.c: counters, also exported read-only under /sys/module/riptides/parameters ---- */

struct rt_stats {
	atomic64_t config_updates;
	atomic64_t bundle_loads;
	atomic64_t policy_loads;
	atomic64_t cmds_rejected;
	atomic64_t bundle_certs;
	atomic64_t bundle_bytes;
	atomic64_t policy_entries;
	atomic64_t connections;	/* always 0 until interception exists */
};
extern struct rt_stats rt_stats;
extern unsigned int rt_param_fail_mode;
extern unsigned int rt_param_handshake_timeout_ms;
void rt_stats_seq_show_json(struct seq_file *m);

/* ---- netlink.c ---- */
int rt_netlink_init(void);
void rt_netlink_exit(void);

/* ---- proc.c ---- */
int rt_proc_init(void);
void rt_proc_exit(void);

#endif
