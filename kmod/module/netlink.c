// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Generic netlink family "riptides" (version 1), one instance per network namespace
 * (netnsok): every command acts on the sender's namespace (pernet.c).
 *
 * Every command has its own attribute policy and is validated strictly by the genetlink
 * core (no GENL_DONT_VALIDATE_* flag, resv_start_op = 0): attributes outside the command's
 * policy, wrong lengths, out-of-range values and trailing bytes are refused before the
 * handler runs. Handlers then check required attributes and cross-attribute rules, build the
 * new state completely and swap it in (config.c), so a refused command changes nothing.
 * Every command needs CAP_NET_ADMIN (GENL_ADMIN_PERM). The handshake commands are in
 * handshake.c; the "events" group carries HANDSHAKE_REQUEST and CONN_EVENT.
 */
#include <linux/kernel.h>
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/overflow.h>
#include <net/genetlink.h>
#include <net/sock.h>
#include "riptides.h"

static struct genl_family rt_genl_family;

/* Not const: 6.1's nla_policy.range is a non-const pointer. */
static struct netlink_range_validation rt_timeout_range = {
	.min = RIPTIDES_HANDSHAKE_TIMEOUT_MIN_MS,
	.max = RIPTIDES_HANDSHAKE_TIMEOUT_MAX_MS,
};

static const struct nla_policy rt_set_config_policy[RIPTIDES_ATTR_MAX + 1] = {
	[RIPTIDES_ATTR_TRUST_DOMAIN] = { .type = NLA_NUL_STRING,
					 .len = RIPTIDES_TRUST_DOMAIN_MAX_LEN },
	[RIPTIDES_ATTR_DAEMON_ID] = { .type = NLA_NUL_STRING, .len = RIPTIDES_DAEMON_ID_MAX_LEN },
	[RIPTIDES_ATTR_FAIL_MODE] = NLA_POLICY_MAX(NLA_U8, RIPTIDES_FAIL_MODE_MAX),
	[RIPTIDES_ATTR_HANDSHAKE_TIMEOUT_MS] = NLA_POLICY_FULL_RANGE(NLA_U32, &rt_timeout_range),
};

static const struct nla_policy rt_load_bundle_policy[RIPTIDES_ATTR_MAX + 1] = {
	[RIPTIDES_ATTR_GENERATION] = { .type = NLA_U64 },
	[RIPTIDES_ATTR_BUNDLE_CERT] = { .type = NLA_BINARY, .len = RIPTIDES_CERT_MAX_LEN },
};

static const struct nla_policy rt_pentry_policy[RIPTIDES_PENTRY_ATTR_MAX + 1] = {
	[RIPTIDES_PENTRY_ATTR_RULE_ID] = { .type = NLA_U32 },
	[RIPTIDES_PENTRY_ATTR_DIRECTION] = NLA_POLICY_MAX(NLA_U8, RIPTIDES_DIR_MAX),
	[RIPTIDES_PENTRY_ATTR_ACTION] = NLA_POLICY_MAX(NLA_U8, RIPTIDES_ACTION_MAX),
	[RIPTIDES_PENTRY_ATTR_ADDR4] = NLA_POLICY_EXACT_LEN(4),
	[RIPTIDES_PENTRY_ATTR_ADDR6] = NLA_POLICY_EXACT_LEN(16),
	[RIPTIDES_PENTRY_ATTR_PREFIX_LEN] = NLA_POLICY_MAX(NLA_U8, 128),
	[RIPTIDES_PENTRY_ATTR_PORT_MIN] = { .type = NLA_U16 },
	[RIPTIDES_PENTRY_ATTR_PORT_MAX] = { .type = NLA_U16 },
	[RIPTIDES_PENTRY_ATTR_UID] = { .type = NLA_U32 },
	[RIPTIDES_PENTRY_ATTR_GID] = { .type = NLA_U32 },
	[RIPTIDES_PENTRY_ATTR_COMM] = { .type = NLA_NUL_STRING, .len = RIPTIDES_COMM_MAX_LEN },
	[RIPTIDES_PENTRY_ATTR_EXE] = { .type = NLA_NUL_STRING, .len = RIPTIDES_EXE_MAX_LEN },
};

static const struct nla_policy rt_load_policy_policy[RIPTIDES_ATTR_MAX + 1] = {
	[RIPTIDES_ATTR_GENERATION] = { .type = NLA_U64 },
	[RIPTIDES_ATTR_POLICY_ENTRY] = NLA_POLICY_NESTED(rt_pentry_policy),
};

static const struct nla_policy rt_set_verdict_policy[RIPTIDES_ATTR_MAX + 1] = {
	[RIPTIDES_ATTR_CONN_ID] = { .type = NLA_U64 },
	[RIPTIDES_ATTR_VERDICT] = NLA_POLICY_MAX(NLA_U8, RIPTIDES_VERDICT_MAX),
};

static const struct nla_policy rt_hs_accept_policy[RIPTIDES_ATTR_MAX + 1] = {
	[RIPTIDES_ATTR_CONN_ID] = { .type = NLA_U64 },
};

static const struct nla_policy rt_hs_done_policy[RIPTIDES_ATTR_MAX + 1] = {
	[RIPTIDES_ATTR_CONN_ID] = { .type = NLA_U64 },
	[RIPTIDES_ATTR_STATUS] = { .type = NLA_U32 },
	[RIPTIDES_ATTR_PEER_ID] = { .type = NLA_NUL_STRING, .len = RIPTIDES_SPIFFE_ID_MAX_LEN },
	[RIPTIDES_ATTR_VERDICT] = NLA_POLICY_MAX(NLA_U8, RIPTIDES_VERDICT_MAX),
	[RIPTIDES_ATTR_SOCKFD] = { .type = NLA_U32 },
};

static const struct nla_policy rt_get_connections_policy[RIPTIDES_ATTR_MAX + 1] = {
	[RIPTIDES_ATTR_CONN_ID] = { .type = NLA_U64 },	/* optional filter */
};

/* GET_STATS takes no attribute: no policy, so the core refuses any attribute. */

/* Counts a handler-level refusal; msg must be a string literal (extack keeps the pointer). */
#define rt_reject(info, err, msg) ({					\
	rt_count_reject(info);						\
	GENL_SET_ERR_MSG(info, msg);					\
	(err);								\
})

/* Returns true (and counts a rejection) if a required attribute is missing. */
static bool rt_missing(struct genl_info *info, int attr)
{
	if (!GENL_REQ_ATTR_CHECK(info, attr))
		return false;
	rt_count_reject(info);
	return true;
}

void rt_count_reject(struct genl_info *info)
{
	rt_count(rt_net(genl_info_net(info)), cmds_rejected);
}

#define rt_attrs_for_each(pos, info, rem)						\
	nla_for_each_attr(pos, genlmsg_data((info)->genlhdr), genlmsg_len((info)->genlhdr), rem)

static int rt_cmd_set_config(struct sk_buff *skb, struct genl_info *info)
{
	struct rt_net *rn = rt_net(genl_info_net(info));
	struct rt_config cfg;

	if (rt_missing(info, RIPTIDES_ATTR_TRUST_DOMAIN) ||
	    rt_missing(info, RIPTIDES_ATTR_DAEMON_ID))
		return -EINVAL;

	mutex_lock(&rn->lock);
	cfg = rn->cfg;		/* fail mode and timeout are optional: keep the current ones */
	mutex_unlock(&rn->lock);

	nla_strscpy(cfg.trust_domain, info->attrs[RIPTIDES_ATTR_TRUST_DOMAIN],
		    sizeof(cfg.trust_domain));
	nla_strscpy(cfg.daemon_id, info->attrs[RIPTIDES_ATTR_DAEMON_ID], sizeof(cfg.daemon_id));
	if (!rt_trust_domain_valid(cfg.trust_domain))
		return rt_reject(info, -EINVAL, "trust domain must be non-empty [a-z0-9._-]");
	if (!rt_daemon_id_valid(cfg.daemon_id))
		return rt_reject(info, -EINVAL, "daemon id must be non-empty [A-Za-z0-9._:/-]");
	if (info->attrs[RIPTIDES_ATTR_FAIL_MODE])
		cfg.fail_mode = nla_get_u8(info->attrs[RIPTIDES_ATTR_FAIL_MODE]);
	if (info->attrs[RIPTIDES_ATTR_HANDSHAKE_TIMEOUT_MS])
		cfg.handshake_timeout_ms =
			nla_get_u32(info->attrs[RIPTIDES_ATTR_HANDSHAKE_TIMEOUT_MS]);

	rt_config_replace(rn, &cfg);
	/* The sender becomes the namespace's handshake agent. */
	rt_agent_register(rn, info->snd_portid, task_tgid_nr(current));
	return 0;
}

static int rt_cmd_load_bundle(struct sk_buff *skb, struct genl_info *info)
{
	const struct nlattr *a;
	struct rt_bundle *b;
	u32 n = 0, total = 0, i = 0, off = 0;
	int rem;

	if (rt_missing(info, RIPTIDES_ATTR_GENERATION) ||
	    rt_missing(info, RIPTIDES_ATTR_BUNDLE_CERT))
		return -EINVAL;

	rt_attrs_for_each(a, info, rem) {
		if (nla_type(a) != RIPTIDES_ATTR_BUNDLE_CERT)
			continue;
		/* A DER certificate is a SEQUENCE: at least tag 0x30 and a length. */
		if (nla_len(a) < 2 || ((const u8 *)nla_data(a))[0] != 0x30) {
			NL_SET_BAD_ATTR(info->extack, a);
			return rt_reject(info, -EINVAL, "certificate is not DER (SEQUENCE)");
		}
		if (++n > RIPTIDES_BUNDLE_MAX_CERTS)
			return rt_reject(info, -E2BIG, "too many certificates");
		total += nla_len(a);	/* <= 64 * 8192: no overflow */
	}

	b = kzalloc(sizeof(*b), GFP_KERNEL);
	if (!b)
		return -ENOMEM;
	b->offsets = kcalloc(n + 1, sizeof(*b->offsets), GFP_KERNEL);
	b->der = kvmalloc(total, GFP_KERNEL);
	if (!b->offsets || !b->der) {
		rt_bundle_free(b);
		return -ENOMEM;
	}
	rt_attrs_for_each(a, info, rem) {
		if (nla_type(a) != RIPTIDES_ATTR_BUNDLE_CERT)
			continue;
		b->offsets[i++] = off;
		memcpy(b->der + off, nla_data(a), nla_len(a));
		off += nla_len(a);
	}
	b->offsets[i] = off;
	b->ncerts = n;
	b->total_bytes = total;
	b->generation = nla_get_u64(info->attrs[RIPTIDES_ATTR_GENERATION]);

	rt_bundle_replace(rt_net(genl_info_net(info)), b);
	return 0;
}

static int rt_parse_pentry(const struct nlattr *nest, struct rt_pentry *e,
			   struct genl_info *info)
{
	struct nlattr *tb[RIPTIDES_PENTRY_ATTR_MAX + 1];
	u8 maxprefix = 0;
	int err;

	/* Already validated against rt_pentry_policy by the core; this only indexes it. */
	err = nla_parse_nested(tb, RIPTIDES_PENTRY_ATTR_MAX, nest, rt_pentry_policy,
			       info->extack);
	if (err)
		return err;

	if (NL_REQ_ATTR_CHECK(info->extack, nest, tb, RIPTIDES_PENTRY_ATTR_RULE_ID) ||
	    NL_REQ_ATTR_CHECK(info->extack, nest, tb, RIPTIDES_PENTRY_ATTR_DIRECTION) ||
	    NL_REQ_ATTR_CHECK(info->extack, nest, tb, RIPTIDES_PENTRY_ATTR_ACTION))
		return -EINVAL;

	e->rule_id = nla_get_u32(tb[RIPTIDES_PENTRY_ATTR_RULE_ID]);
	e->direction = nla_get_u8(tb[RIPTIDES_PENTRY_ATTR_DIRECTION]);
	e->action = nla_get_u8(tb[RIPTIDES_PENTRY_ATTR_ACTION]);

	if (tb[RIPTIDES_PENTRY_ATTR_ADDR4] && tb[RIPTIDES_PENTRY_ATTR_ADDR6]) {
		NL_SET_ERR_MSG_ATTR(info->extack, nest, "both ADDR4 and ADDR6");
		return -EINVAL;
	}
	if (tb[RIPTIDES_PENTRY_ATTR_ADDR4]) {
		e->flags |= RT_PENTRY_HAS_ADDR4;
		memcpy(&e->addr, nla_data(tb[RIPTIDES_PENTRY_ATTR_ADDR4]), 4);
		maxprefix = 32;
	} else if (tb[RIPTIDES_PENTRY_ATTR_ADDR6]) {
		e->flags |= RT_PENTRY_HAS_ADDR6;
		memcpy(&e->addr, nla_data(tb[RIPTIDES_PENTRY_ATTR_ADDR6]), 16);
		maxprefix = 128;
	}
	e->prefix_len = maxprefix;
	if (tb[RIPTIDES_PENTRY_ATTR_PREFIX_LEN]) {
		u8 plen = nla_get_u8(tb[RIPTIDES_PENTRY_ATTR_PREFIX_LEN]);

		if (!maxprefix || plen > maxprefix) {
			NL_SET_ERR_MSG_ATTR(info->extack, tb[RIPTIDES_PENTRY_ATTR_PREFIX_LEN],
					    "prefix length without address or too long");
			return -EINVAL;
		}
		e->prefix_len = plen;
	}

	e->port_min = 0;
	e->port_max = 65535;
	if (tb[RIPTIDES_PENTRY_ATTR_PORT_MIN]) {
		e->port_min = nla_get_u16(tb[RIPTIDES_PENTRY_ATTR_PORT_MIN]);
		e->port_max = tb[RIPTIDES_PENTRY_ATTR_PORT_MAX] ?
			nla_get_u16(tb[RIPTIDES_PENTRY_ATTR_PORT_MAX]) : e->port_min;
	} else if (tb[RIPTIDES_PENTRY_ATTR_PORT_MAX]) {
		NL_SET_ERR_MSG_ATTR(info->extack, tb[RIPTIDES_PENTRY_ATTR_PORT_MAX],
				    "PORT_MAX without PORT_MIN");
		return -EINVAL;
	}
	if (e->port_min > e->port_max) {
		NL_SET_ERR_MSG_ATTR(info->extack, nest, "PORT_MIN > PORT_MAX");
		return -EINVAL;
	}

	if (tb[RIPTIDES_PENTRY_ATTR_UID]) {
		e->flags |= RT_PENTRY_HAS_UID;
		e->uid = nla_get_u32(tb[RIPTIDES_PENTRY_ATTR_UID]);
	}
	if (tb[RIPTIDES_PENTRY_ATTR_GID]) {
		e->flags |= RT_PENTRY_HAS_GID;
		e->gid = nla_get_u32(tb[RIPTIDES_PENTRY_ATTR_GID]);
	}
	if (tb[RIPTIDES_PENTRY_ATTR_COMM]) {
		nla_strscpy(e->comm, tb[RIPTIDES_PENTRY_ATTR_COMM], sizeof(e->comm));
		if (!e->comm[0]) {
			NL_SET_ERR_MSG_ATTR(info->extack, tb[RIPTIDES_PENTRY_ATTR_COMM],
					    "empty process name");
			return -EINVAL;
		}
	}
	if (tb[RIPTIDES_PENTRY_ATTR_EXE]) {
		const char *exe = nla_data(tb[RIPTIDES_PENTRY_ATTR_EXE]);

		if (exe[0] != '/') {
			NL_SET_ERR_MSG_ATTR(info->extack, tb[RIPTIDES_PENTRY_ATTR_EXE],
					    "executable path must be absolute");
			return -EINVAL;
		}
		e->exe = kstrndup(exe, RIPTIDES_EXE_MAX_LEN, GFP_KERNEL);
		if (!e->exe)
			return -ENOMEM;
	}
	return 0;
}

static int rt_cmd_load_policy(struct sk_buff *skb, struct genl_info *info)
{
	const struct nlattr *a;
	struct rt_policy *p;
	u32 n = 0;
	int rem, err;

	if (rt_missing(info, RIPTIDES_ATTR_GENERATION))
		return -EINVAL;

	rt_attrs_for_each(a, info, rem) {
		if (nla_type(a) == RIPTIDES_ATTR_POLICY_ENTRY &&
		    ++n > RIPTIDES_POLICY_MAX_ENTRIES)
			return rt_reject(info, -E2BIG, "too many policy entries");
	}

	p = kvzalloc(struct_size(p, entries, n), GFP_KERNEL);
	if (!p)
		return -ENOMEM;
	rt_attrs_for_each(a, info, rem) {
		if (nla_type(a) != RIPTIDES_ATTR_POLICY_ENTRY)
			continue;
		/* nentries counts parsed entries so rt_policy_free frees their strings. */
		err = rt_parse_pentry(a, &p->entries[p->nentries], info);
		p->nentries++;
		if (err) {
			rt_policy_free(p);
			rt_count_reject(info);
			return err;
		}
	}
	p->generation = nla_get_u64(info->attrs[RIPTIDES_ATTR_GENERATION]);
	for (n = 0; n < p->nentries; n++)
		p->has_exe |= !!p->entries[n].exe;

	rt_policy_replace(rt_net(genl_info_net(info)), p);
	return 0;
}

/* ---- GET_CONNECTIONS: one message per record, resumable (cb->args[0] = last id) ---- */

static int rt_get_connections_start(struct netlink_callback *cb)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 2, 0)
	struct nlattr **attrs = genl_dumpit_info(cb)->info.attrs;
#else
	struct nlattr **attrs = genl_dumpit_info(cb)->attrs;
#endif

	cb->args[0] = 0;
	cb->args[1] = 0;
	if (attrs && attrs[RIPTIDES_ATTR_CONN_ID]) {
		cb->args[1] = 1;
		cb->args[2] = nla_get_u64(attrs[RIPTIDES_ATTR_CONN_ID]);
	}
	return 0;
}

static int rt_get_connections_dumpit(struct sk_buff *skb, struct netlink_callback *cb)
{
	struct rt_net *rn = rt_net(sock_net(cb->skb->sk));
	struct rt_conn *c;
	void *hdr;

	spin_lock_bh(&rt_lock);
	list_for_each_entry(c, &rn->conns, nnode) {
		if (c->id <= cb->args[0] || (cb->args[1] && c->id != cb->args[2]))
			continue;
		hdr = rt_genlmsg_put(skb, NETLINK_CB(cb->skb).portid, cb->nlh->nlmsg_seq,
				     NLM_F_MULTI, RIPTIDES_CMD_GET_CONNECTIONS);
		if (!hdr)
			break;
		if (rt_conn_put_attrs(skb, c)) {
			genlmsg_cancel(skb, hdr);
			break;
		}
		genlmsg_end(skb, hdr);
		cb->args[0] = c->id;
	}
	spin_unlock_bh(&rt_lock);
	return skb->len;
}

#define RT_PUT_C64(msg, attr, rn, field) \
	nla_put_u64_64bit(msg, attr, atomic64_read(&(rn)->c.field), RIPTIDES_STAT_ATTR_PAD)

static int rt_put_stats(struct sk_buff *msg, struct rt_net *rn)
{
	struct rt_policy *pol;
	struct nlattr *nest;
	u32 pentries;
	u64 pgen;

	/* Caller holds rn->lock. */
	pol = rcu_dereference_protected(rn->policy, lockdep_is_held(&rn->lock));
	pentries = pol ? pol->nentries : 0;
	pgen = pol ? pol->generation : 0;
	if (nla_put_string(msg, RIPTIDES_ATTR_TRUST_DOMAIN, rn->cfg.trust_domain) ||
	    nla_put_string(msg, RIPTIDES_ATTR_DAEMON_ID, rn->cfg.daemon_id) ||
	    nla_put_u8(msg, RIPTIDES_ATTR_FAIL_MODE, rn->cfg.fail_mode) ||
	    nla_put_u32(msg, RIPTIDES_ATTR_HANDSHAKE_TIMEOUT_MS, rn->cfg.handshake_timeout_ms))
		return -EMSGSIZE;

	nest = nla_nest_start(msg, RIPTIDES_ATTR_STATS);
	if (!nest)
		return -EMSGSIZE;
	if (RT_PUT_C64(msg, RIPTIDES_STAT_ATTR_CONFIG_UPDATES, rn, config_updates) ||
	    RT_PUT_C64(msg, RIPTIDES_STAT_ATTR_BUNDLE_LOADS, rn, bundle_loads) ||
	    RT_PUT_C64(msg, RIPTIDES_STAT_ATTR_POLICY_LOADS, rn, policy_loads) ||
	    nla_put_u32(msg, RIPTIDES_STAT_ATTR_BUNDLE_CERTS, rn->bundle ? rn->bundle->ncerts : 0) ||
	    nla_put_u32(msg, RIPTIDES_STAT_ATTR_BUNDLE_BYTES,
			rn->bundle ? rn->bundle->total_bytes : 0) ||
	    nla_put_u64_64bit(msg, RIPTIDES_STAT_ATTR_BUNDLE_GENERATION,
			      rn->bundle ? rn->bundle->generation : 0, RIPTIDES_STAT_ATTR_PAD) ||
	    nla_put_u32(msg, RIPTIDES_STAT_ATTR_POLICY_ENTRIES, pentries) ||
	    nla_put_u64_64bit(msg, RIPTIDES_STAT_ATTR_POLICY_GENERATION, pgen,
			      RIPTIDES_STAT_ATTR_PAD) ||
	    RT_PUT_C64(msg, RIPTIDES_STAT_ATTR_CMDS_REJECTED, rn, cmds_rejected) ||
	    nla_put_u32(msg, RIPTIDES_STAT_ATTR_CONNECTIONS, atomic_read(&rn->nconns)) ||
	    RT_PUT_C64(msg, RIPTIDES_STAT_ATTR_HANDSHAKES_REQUESTED, rn, hs_requested) ||
	    RT_PUT_C64(msg, RIPTIDES_STAT_ATTR_HANDSHAKES_OK, rn, hs_ok) ||
	    RT_PUT_C64(msg, RIPTIDES_STAT_ATTR_HANDSHAKES_FAILED, rn, hs_failed) ||
	    RT_PUT_C64(msg, RIPTIDES_STAT_ATTR_HANDSHAKES_TIMED_OUT, rn, hs_timed_out) ||
	    RT_PUT_C64(msg, RIPTIDES_STAT_ATTR_CONNS_NO_DAEMON, rn, conns_no_daemon) ||
	    RT_PUT_C64(msg, RIPTIDES_STAT_ATTR_CONNS_PASSTHROUGH, rn, conns_passthrough) ||
	    nla_put_u8(msg, RIPTIDES_STAT_ATTR_DAEMON_CONNECTED, rt_agent_present(rn))) {
		nla_nest_cancel(msg, nest);
		return -EMSGSIZE;
	}
	nla_nest_end(msg, nest);
	return 0;
}

static int rt_cmd_get_stats(struct sk_buff *skb, struct genl_info *info)
{
	struct rt_net *rn = rt_net(genl_info_net(info));
	struct sk_buff *msg;
	void *hdr;
	int err;

	msg = genlmsg_new(NLMSG_DEFAULT_SIZE, GFP_KERNEL);
	if (!msg)
		return -ENOMEM;
	hdr = genlmsg_put_reply(msg, info, &rt_genl_family, 0, RIPTIDES_CMD_GET_STATS);
	if (!hdr) {
		nlmsg_free(msg);
		return -EMSGSIZE;
	}
	mutex_lock(&rn->lock);
	err = rt_put_stats(msg, rn);
	mutex_unlock(&rn->lock);
	if (err) {
		nlmsg_free(msg);
		return err;
	}
	genlmsg_end(msg, hdr);
	return genlmsg_reply(msg, info);
}

static const struct genl_ops rt_genl_ops[] = {
	{
		.cmd = RIPTIDES_CMD_SET_CONFIG,
		.doit = rt_cmd_set_config,
		.policy = rt_set_config_policy,
		.maxattr = RIPTIDES_ATTR_MAX,
		.flags = GENL_ADMIN_PERM,
	},
	{
		.cmd = RIPTIDES_CMD_LOAD_BUNDLE,
		.doit = rt_cmd_load_bundle,
		.policy = rt_load_bundle_policy,
		.maxattr = RIPTIDES_ATTR_MAX,
		.flags = GENL_ADMIN_PERM,
	},
	{
		.cmd = RIPTIDES_CMD_LOAD_POLICY,
		.doit = rt_cmd_load_policy,
		.policy = rt_load_policy_policy,
		.maxattr = RIPTIDES_ATTR_MAX,
		.flags = GENL_ADMIN_PERM,
	},
	{
		.cmd = RIPTIDES_CMD_SET_VERDICT,
		.doit = rt_cmd_set_verdict,
		.policy = rt_set_verdict_policy,
		.maxattr = RIPTIDES_ATTR_MAX,
		.flags = GENL_ADMIN_PERM,
	},
	{
		.cmd = RIPTIDES_CMD_HANDSHAKE_ACCEPT,
		.doit = rt_cmd_hs_accept,
		.policy = rt_hs_accept_policy,
		.maxattr = RIPTIDES_ATTR_MAX,
		.flags = GENL_ADMIN_PERM,
	},
	{
		.cmd = RIPTIDES_CMD_HANDSHAKE_DONE,
		.doit = rt_cmd_hs_done,
		.policy = rt_hs_done_policy,
		.maxattr = RIPTIDES_ATTR_MAX,
		.flags = GENL_ADMIN_PERM,
	},
	{
		.cmd = RIPTIDES_CMD_GET_CONNECTIONS,
		.start = rt_get_connections_start,
		.dumpit = rt_get_connections_dumpit,
		.policy = rt_get_connections_policy,
		.maxattr = RIPTIDES_ATTR_MAX,
		.flags = GENL_ADMIN_PERM,
	},
	{
		.cmd = RIPTIDES_CMD_GET_STATS,
		.doit = rt_cmd_get_stats,
		.flags = GENL_ADMIN_PERM,
	},
};

static const struct genl_multicast_group rt_genl_mcgrps[] = {
	/* Events will carry process context: only CAP_NET_ADMIN may listen. */
	{ .name = RIPTIDES_GENL_MCGRP_EVENTS, .flags = GENL_MCAST_CAP_NET_ADMIN },
};

static struct genl_family rt_genl_family __ro_after_init = {
	.name = RIPTIDES_GENL_NAME,
	.version = RIPTIDES_GENL_VERSION,
	.hdrsize = 0,
	.netnsok = true,	/* one daemon per network namespace */
	.parallel_ops = false,
	.resv_start_op = 0,	/* strict validation and reserved-header checks for all ops */
	.module = THIS_MODULE,
	.ops = rt_genl_ops,
	.n_ops = ARRAY_SIZE(rt_genl_ops),
	.mcgrps = rt_genl_mcgrps,
	.n_mcgrps = ARRAY_SIZE(rt_genl_mcgrps),
};

void *rt_genlmsg_put(struct sk_buff *msg, u32 portid, u32 seq, int flags, u8 cmd)
{
	return genlmsg_put(msg, portid, seq, &rt_genl_family, flags, cmd);
}

/* To the "events" group of one namespace; a group nobody listens to is not an error. */
int rt_multicast(struct rt_net *rn, struct sk_buff *msg, gfp_t gfp)
{
	int err = genlmsg_multicast_netns(&rt_genl_family, rn->net, msg, 0, 0, gfp);

	return err == -ESRCH ? 0 : err;
}

int rt_netlink_init(void)
{
	return genl_register_family(&rt_genl_family);
}

void rt_netlink_exit(void)
{
	genl_unregister_family(&rt_genl_family);
}
