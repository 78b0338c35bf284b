/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/* Internal declarations shared by the files of riptides.ko. */
#ifndef RIPTIDES_INTERNAL_H
#define RIPTIDES_INTERNAL_H

#include <linux/atomic.h>
#include <linux/mutex.h>
#include <linux/types.h>
#include <linux/in6.h>
#include <linux/list.h>
#include <linux/refcount.h>
#include <linux/seq_file.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <linux/version.h>
#include <linux/riptides.h>

struct net;
struct sock;
struct socket;
struct proto_ops;
struct sk_buff;
struct genl_info;

/* ---- config.c: daemon-provided state of one network namespace ---- */

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
	struct rcu_head rcu;
	u64 generation;
	u32 nentries;
	bool has_exe;		/* some entry selects by executable */
	struct rt_pentry entries[];
};

/* Counters: one set per network namespace (GET_STATS, /proc) and one global (/sys). */
struct rt_counters {
	atomic64_t config_updates;
	atomic64_t bundle_loads;
	atomic64_t policy_loads;
	atomic64_t cmds_rejected;
	atomic64_t hs_requested;
	atomic64_t hs_ok;
	atomic64_t hs_failed;
	atomic64_t hs_timed_out;
	atomic64_t conns_no_daemon;
	atomic64_t conns_passthrough;
	atomic64_t conns_over_limit;
};

/* ---- pernet.c: per network namespace state ---- */
struct rt_net {
	struct net *net;
	struct mutex lock;		/* cfg, bundle and policy writers; bundle readers */
	struct rt_config cfg;		/* fields read locklessly with READ_ONCE */
	struct rt_bundle *bundle;
	struct rt_policy __rcu *policy;
	/* The handshake agent (the daemon): set by SET_CONFIG, cleared on URELEASE. */
	u32 agent_portid;		/* 0: none; written under rt_lock */
	pid_t agent_tgid;
	struct list_head conns;		/* rt_conn.nnode, ascending id, under rt_lock */
	atomic_t nconns;		/* records in conns */
	atomic_t npending;		/* records PENDING or HANDSHAKING */
	struct rt_counters c;
	struct work_struct agent_gone_work;
};

extern unsigned int rt_net_id;
struct rt_net *rt_net(const struct net *net);
int rt_pernet_init(void);
void rt_pernet_exit(void);
void rt_pernet_notifier_exit(void);
void rt_agent_register(struct rt_net *rn, u32 portid, pid_t tgid);
bool rt_agent_present(struct rt_net *rn);

void rt_config_defaults(struct rt_net *rn);
void rt_config_replace(struct rt_net *rn, const struct rt_config *cfg);
void rt_bundle_replace(struct rt_net *rn, struct rt_bundle *b);
void rt_policy_replace(struct rt_net *rn, struct rt_policy *p);
void rt_bundle_free(struct rt_bundle *b);
void rt_policy_free(struct rt_policy *p);
void rt_state_free(struct rt_net *rn);
bool rt_trust_domain_valid(const char *td);
bool rt_daemon_id_valid(const char *id);

/* ---- stats.c: global counters and parameters (/sys/module/riptides/parameters) ---- */
extern struct rt_counters rt_gstats;
extern atomic64_t rt_g_bundle_certs, rt_g_bundle_bytes, rt_g_policy_entries;
extern atomic64_t rt_g_connections;	/* tracked records, all namespaces */
extern atomic64_t rt_live_objects;	/* allocated records and their buffers */
extern unsigned int rt_param_fail_mode;
extern unsigned int rt_param_handshake_timeout_ms;
extern unsigned int rt_param_max_pending;
#define rt_count(rn, field) do {				\
	atomic64_inc(&(rn)->c.field);				\
	atomic64_inc(&rt_gstats.field);				\
} while (0)
void rt_stats_seq_show_json(struct seq_file *m, struct rt_net *rn);

/* ---- conn.c: connection records ---- */

#define RT_LISTENER	0xff	/* internal state of a gated listener (not a connection) */

struct rt_conn {
	struct hlist_node hnode;	/* rt_hash, by sk */
	struct list_head nnode;		/* rt_net.conns (not listeners) */
	struct list_head anode;		/* rt_all */
	struct rcu_head rcu;
	refcount_t ref;
	u64 id;
	struct rt_net *rn;
	struct sock *sk;		/* sock_hold()ed */
	struct socket *sock;		/* valid while linked and gated */
	const struct proto_ops *inner;	/* what the gate forwards to */
	wait_queue_head_t wq;		/* held callers */
	struct work_struct work;
	unsigned long work_bits;	/* RT_WORK_* */
	struct delayed_work timeout;
	u64 created_ns;
	/* Under rt_lock: */
	u8 state;			/* enum riptides_conn_state or RT_LISTENER */
	u8 direction;
	u8 family;			/* AF_INET / AF_INET6 of the 4-tuple below */
	bool linked, gated, requested, ktls;
	bool shut_wr;			/* we set SEND_SHUTDOWN for the kTLS install */
	u32 status;
	pid_t agent_tgid;		/* agent that accepted it */
	u32 rule_id;
	/* Process context (captured at connect/listen/accept). */
	pid_t pid;
	u32 uid, gid;
	u64 cgroup_id, netns_cookie;
	char comm[RIPTIDES_COMM_MAX_LEN + 1];
	char *exe;
	char *peer_id;
	/* 4-tuple (network order addresses, host order ports), filled when known. */
	u8 laddr[16], paddr[16];
	u16 lport, pport;
};

#define RT_WORK_REQUEST	0
#define RT_WORK_ABORT	1

/* Process context of the current task. */
struct rt_proc {
	pid_t pid;
	u32 uid, gid;
	u64 cgroup_id;
	char comm[RIPTIDES_COMM_MAX_LEN + 1];
	char *exe;			/* allocated, may be NULL */
};

extern spinlock_t rt_lock;
extern struct workqueue_struct *rt_wq;
extern bool rt_unloading;
extern atomic_t rt_inflight;
extern atomic_t rt_nrecords;

static inline bool rt_state_held(u8 st)
{
	return st == RIPTIDES_CONN_PENDING || st == RIPTIDES_CONN_HANDSHAKING;
}

int rt_conn_init(void);
void rt_conn_exit_refuse_all(void);
void rt_conn_exit_free_all(void);
struct rt_conn *rt_conn_alloc(struct rt_net *rn, struct sock *sk, struct socket *sock,
			      const struct proto_ops *inner, u8 state, u8 dir,
			      struct rt_proc *p, u32 rule_id, gfp_t gfp);
bool rt_conn_link(struct rt_conn *c, const struct proto_ops *gate);
struct rt_conn *rt_conn_lookup(const struct sock *sk);	/* ref or NULL */
struct rt_conn *rt_conn_find_id(struct rt_net *rn, u64 id);	/* ref or NULL */
void rt_conn_put(struct rt_conn *c);
void rt_conn_get(struct rt_conn *c);
void rt_conn_queue(struct rt_conn *c, int bit);
void rt_conn_fill_tuple(struct rt_conn *c);
/*
 * Moves a held record to a final state (caller holds rt_lock): ESTABLISHED/PASSTHROUGH
 * restore the inner ops; REFUSED keeps the gate and queues the reset when abort is set.
 * Returns false if the record was not held. The caller wakes and emits events afterwards.
 */
bool rt_conn_settle_locked(struct rt_conn *c, u8 state, u32 status, bool abort);
void rt_conn_wake(struct rt_conn *c);
void rt_conn_event(struct rt_conn *c, u8 event, gfp_t gfp);
void rt_conn_unlink_locked(struct rt_conn *c);
void rt_proc_capture(struct rt_proc *p, gfp_t gfp);
void rt_agent_gone(struct rt_net *rn);
int rt_conn_put_attrs(struct sk_buff *msg, struct rt_conn *c);
void rt_conns_seq_show_json(struct seq_file *m, struct rt_net *rn);

/* ---- gate.c: gated proto_ops ---- */
int rt_gate_init(void);
const struct proto_ops *rt_gate_for(const struct proto_ops *inner);
bool rt_is_gate(const struct proto_ops *ops);
bool rt_is_plain_stream_ops(const struct proto_ops *ops);
void rt_inflight_wait(void);

/* ---- intercept.c: tracepoint probe and policy ---- */
int rt_intercept_init(void);
void rt_intercept_exit(void);
const struct rt_pentry *rt_policy_match(struct rt_net *rn, u8 dir, const u8 *addr, int alen,
					u16 port, const struct rt_proc *p, bool any_peer);
void rt_tuple_of(const struct sock *sk, u8 *laddr, u16 *lport, u8 *paddr, u16 *pport,
		 u8 *family);
/* Ingress: evaluates the accepted socket; keeps the gate or restores the plain ops. */
void rt_intercept_accepted(struct socket *listener, struct socket *newsock,
			   const struct proto_ops *inner);

/* ---- netlink.c / handshake.c ---- */
int rt_netlink_init(void);
void rt_netlink_exit(void);
int rt_multicast(struct rt_net *rn, struct sk_buff *msg, gfp_t gfp);
void *rt_genlmsg_put(struct sk_buff *msg, u32 portid, u32 seq, int flags, u8 cmd);
int rt_cmd_set_verdict(struct sk_buff *skb, struct genl_info *info);
int rt_cmd_hs_accept(struct sk_buff *skb, struct genl_info *info);
int rt_cmd_hs_done(struct sk_buff *skb, struct genl_info *info);
void rt_send_request(struct rt_conn *c);
void rt_count_reject(struct genl_info *info);

/* ---- proc.c ---- */
int rt_proc_init(void);
void rt_proc_exit(void);

#endif
