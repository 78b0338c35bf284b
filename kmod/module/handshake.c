// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The handover (KERNEL_PATH.md): HANDSHAKE_REQUEST multicast, SET_VERDICT,
 * HANDSHAKE_ACCEPT (a new fd for the application's socket file in the agent's table, as
 * net/handshake does for tlshd) and HANDSHAKE_DONE (kTLS installed + status 0 + ALLOW ->
 * ESTABLISHED with the kTLS ops restored; anything else -> REFUSED).
 *
 * Only the namespace's registered agent (the netlink portid that sent SET_CONFIG) may
 * send these three commands.
 */
#include <linux/file.h>
#include <linux/fcntl.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <net/genetlink.h>
#include <net/sock.h>
#include <net/tcp.h>
#include <net/tls.h>
#include "riptides.h"

#define rt_hs_reject(info, err, msg) ({					\
	rt_count_reject(info);						\
	GENL_SET_ERR_MSG(info, msg);					\
	(err);								\
})

static bool rt_from_agent(struct rt_net *rn, struct genl_info *info)
{
	u32 portid = READ_ONCE(rn->agent_portid);

	return portid && portid == info->snd_portid;
}

static bool rt_missing_attr(struct genl_info *info, int attr)
{
	if (!GENL_REQ_ATTR_CHECK(info, attr))
		return false;
	rt_count_reject(info);
	return true;
}

/* Work item: the egress record reached ESTABLISHED, or an ingress record was accepted. */
void rt_send_request(struct rt_conn *c)
{
	struct rt_net *rn = c->rn;
	struct sk_buff *msg;
	u8 ev = 0xff;
	void *hdr;

	spin_lock_bh(&rt_lock);
	if (c->state != RIPTIDES_CONN_PENDING || c->requested || !c->linked) {
		spin_unlock_bh(&rt_lock);
		return;
	}
	if (!rn->agent_portid) {
		rt_count(rn, conns_no_daemon);
		if (READ_ONCE(rn->cfg.fail_mode) == RIPTIDES_FAIL_OPEN) {
			rt_conn_settle_locked(c, RIPTIDES_CONN_PASSTHROUGH, 0, false);
			rt_count(rn, conns_passthrough);
			ev = RIPTIDES_EVENT_PASSTHROUGH;
		} else {
			rt_conn_settle_locked(c, RIPTIDES_CONN_REFUSED, ECONNREFUSED, true);
			rt_count(rn, hs_failed);
			ev = RIPTIDES_EVENT_REFUSED;
		}
		spin_unlock_bh(&rt_lock);
		rt_conn_wake(c);
		rt_conn_event(c, ev, GFP_KERNEL);
		return;
	}
	c->requested = true;
	rt_conn_fill_tuple(c);
	rt_conn_get(c);
	if (!queue_delayed_work(rt_wq, &c->timeout,
				msecs_to_jiffies(READ_ONCE(rn->cfg.handshake_timeout_ms))))
		rt_conn_put(c);
	spin_unlock_bh(&rt_lock);

	rt_count(rn, hs_requested);
	msg = genlmsg_new(NLMSG_GOODSIZE, GFP_KERNEL);
	if (!msg)
		return;		/* the timeout refuses it */
	hdr = rt_genlmsg_put(msg, 0, 0, 0, RIPTIDES_CMD_HANDSHAKE_REQUEST);
	if (!hdr || rt_conn_put_attrs(msg, c)) {
		nlmsg_free(msg);
		return;
	}
	genlmsg_end(msg, hdr);
	rt_multicast(rn, msg, GFP_KERNEL);
}

int rt_cmd_set_verdict(struct sk_buff *skb, struct genl_info *info)
{
	struct rt_net *rn = rt_net(genl_info_net(info));
	struct rt_conn *c;
	u8 verdict, ev = 0xff;
	int err = 0;

	if (rt_missing_attr(info, RIPTIDES_ATTR_CONN_ID) ||
	    rt_missing_attr(info, RIPTIDES_ATTR_VERDICT))
		return -EINVAL;
	if (!rt_from_agent(rn, info))
		return rt_hs_reject(info, -EPERM, "only the registered handshake agent may do this");
	verdict = nla_get_u8(info->attrs[RIPTIDES_ATTR_VERDICT]);
	c = rt_conn_find_id(rn, nla_get_u64(info->attrs[RIPTIDES_ATTR_CONN_ID]));
	if (!c)
		return rt_hs_reject(info, -ENOENT, "unknown connection id");

	spin_lock_bh(&rt_lock);
	if (verdict == RIPTIDES_VERDICT_ALLOW) {
		if (c->state == RIPTIDES_CONN_PENDING && c->requested) {
			rt_conn_settle_locked(c, RIPTIDES_CONN_PASSTHROUGH, 0, false);
			ev = RIPTIDES_EVENT_PASSTHROUGH;
		} else {
			err = c->state == RIPTIDES_CONN_HANDSHAKING ? -EBUSY : -ENOENT;
		}
	} else if (rt_state_held(c->state)) {
		rt_conn_settle_locked(c, RIPTIDES_CONN_REFUSED, EACCES, true);
		ev = RIPTIDES_EVENT_REFUSED;
	} else {
		err = -ENOENT;
	}
	spin_unlock_bh(&rt_lock);

	if (ev == RIPTIDES_EVENT_PASSTHROUGH)
		rt_count(rn, conns_passthrough);
	else if (ev == RIPTIDES_EVENT_REFUSED)
		rt_count(rn, hs_failed);
	if (ev != 0xff) {
		rt_conn_wake(c);
		rt_conn_event(c, ev, GFP_KERNEL);
	}
	rt_conn_put(c);
	if (err == -EBUSY)
		return rt_hs_reject(info, err, "connection already accepted: answer HANDSHAKE_DONE");
	if (err)
		return rt_hs_reject(info, err, "connection closed or no longer held");
	return 0;
}

int rt_cmd_hs_accept(struct sk_buff *skb, struct genl_info *info)
{
	struct rt_net *rn = rt_net(genl_info_net(info));
	struct file *file = NULL;
	struct sk_buff *msg;
	struct rt_conn *c;
	void *hdr;
	int fd, err = 0;

	if (rt_missing_attr(info, RIPTIDES_ATTR_CONN_ID))
		return -EINVAL;
	if (!rt_from_agent(rn, info))
		return rt_hs_reject(info, -EPERM, "only the registered handshake agent may accept");
	c = rt_conn_find_id(rn, nla_get_u64(info->attrs[RIPTIDES_ATTR_CONN_ID]));
	if (!c)
		return rt_hs_reject(info, -ENOENT, "unknown connection id");
	msg = genlmsg_new(NLMSG_GOODSIZE, GFP_KERNEL);
	if (!msg) {
		rt_conn_put(c);
		return -ENOMEM;
	}
	fd = get_unused_fd_flags(O_CLOEXEC);
	if (fd < 0) {
		nlmsg_free(msg);
		rt_conn_put(c);
		return fd;
	}

	spin_lock_bh(&rt_lock);
	if (c->state == RIPTIDES_CONN_HANDSHAKING || c->state == RIPTIDES_CONN_ESTABLISHED ||
	    c->state == RIPTIDES_CONN_PASSTHROUGH) {
		err = -EBUSY;
	} else if (c->state != RIPTIDES_CONN_PENDING || !c->linked || !c->gated) {
		err = -ENOENT;
	} else if (!c->requested) {
		err = -EAGAIN;
	} else {
		/* Linked and gated: its release has not run, so the file is still there. */
		file = c->sock->file;
		if (!file || !atomic_long_inc_not_zero(&file->f_count)) {
			file = NULL;
			err = -ENOENT;
		} else {
			c->state = RIPTIDES_CONN_HANDSHAKING;
			c->agent_tgid = task_tgid_nr(current);
		}
	}
	spin_unlock_bh(&rt_lock);
	if (err) {
		put_unused_fd(fd);
		nlmsg_free(msg);
		rt_conn_put(c);
		if (err == -EBUSY)
			return rt_hs_reject(info, err, "connection already accepted");
		if (err == -EAGAIN)
			return rt_hs_reject(info, err, "connection not established yet");
		return rt_hs_reject(info, err, "connection closed or no longer held");
	}

	hdr = rt_genlmsg_put(msg, info->snd_portid, info->snd_seq, 0,
			     RIPTIDES_CMD_HANDSHAKE_ACCEPT);
	if (!hdr || nla_put_u32(msg, RIPTIDES_ATTR_SOCKFD, fd) || rt_conn_put_attrs(msg, c)) {
		bool settled;

		fput(file);
		put_unused_fd(fd);
		nlmsg_free(msg);
		spin_lock_bh(&rt_lock);
		settled = rt_conn_settle_locked(c, RIPTIDES_CONN_REFUSED, EMSGSIZE, true);
		spin_unlock_bh(&rt_lock);
		if (settled)
			rt_conn_wake(c);
		rt_conn_put(c);
		return -EMSGSIZE;
	}
	genlmsg_end(msg, hdr);
	fd_install(fd, file);
	rt_conn_put(c);
	return genlmsg_reply(msg, info);
}

/* kTLS is installed in both directions on the socket. */
static bool rt_ktls_installed(struct sock *sk)
{
	const struct inet_connection_sock *icsk = inet_csk(sk);
	const struct tls_context *ctx;

	if (!icsk->icsk_ulp_ops || strcmp(icsk->icsk_ulp_ops->name, "tls"))
		return false;
	ctx = tls_get_ctx(sk);
	return ctx && ctx->tx_conf != TLS_BASE && ctx->rx_conf != TLS_BASE;
}

int rt_cmd_hs_done(struct sk_buff *skb, struct genl_info *info)
{
	struct rt_net *rn = rt_net(genl_info_net(info));
	u8 verdict = RIPTIDES_VERDICT_DENY, ev = 0xff;
	char *peer_id = NULL;
	struct rt_conn *c;
	u32 status;
	int err = 0;

	if (rt_missing_attr(info, RIPTIDES_ATTR_CONN_ID) ||
	    rt_missing_attr(info, RIPTIDES_ATTR_STATUS))
		return -EINVAL;
	if (!rt_from_agent(rn, info))
		return rt_hs_reject(info, -EPERM, "only the registered handshake agent may do this");
	status = nla_get_u32(info->attrs[RIPTIDES_ATTR_STATUS]);
	if (info->attrs[RIPTIDES_ATTR_VERDICT])
		verdict = nla_get_u8(info->attrs[RIPTIDES_ATTR_VERDICT]);
	c = rt_conn_find_id(rn, nla_get_u64(info->attrs[RIPTIDES_ATTR_CONN_ID]));
	if (!c)
		return rt_hs_reject(info, -ENOENT, "unknown connection id");
	if (info->attrs[RIPTIDES_ATTR_PEER_ID]) {
		peer_id = nla_strdup(info->attrs[RIPTIDES_ATTR_PEER_ID], GFP_KERNEL);
		if (!peer_id) {
			rt_conn_put(c);
			return -ENOMEM;
		}
	}

	lock_sock(c->sk);	/* no kTLS setsockopt half done while we look */
	spin_lock_bh(&rt_lock);
	if (c->state != RIPTIDES_CONN_HANDSHAKING) {
		err = c->state == RIPTIDES_CONN_PENDING ? -EINVAL : -ENOENT;
	} else {
		c->ktls = rt_ktls_installed(c->sk);
		if (peer_id && !c->peer_id) {
			c->peer_id = peer_id;
			peer_id = NULL;
			atomic64_inc(&rt_live_objects);
		}
		if (!status && verdict == RIPTIDES_VERDICT_ALLOW && c->ktls) {
			if (c->shut_wr) {	/* keys installed: writes may go (encrypted) */
				WRITE_ONCE(c->sk->sk_shutdown,
					   c->sk->sk_shutdown & ~SEND_SHUTDOWN);
				c->shut_wr = false;
			}
			rt_conn_settle_locked(c, RIPTIDES_CONN_ESTABLISHED, 0, false);
			ev = RIPTIDES_EVENT_ESTABLISHED;
		} else {
			rt_conn_settle_locked(c, RIPTIDES_CONN_REFUSED,
					      status ? status :
					      verdict != RIPTIDES_VERDICT_ALLOW ? EACCES : EPROTO,
					      true);
			ev = RIPTIDES_EVENT_REFUSED;
		}
	}
	spin_unlock_bh(&rt_lock);
	release_sock(c->sk);
	kfree(peer_id);

	if (ev == RIPTIDES_EVENT_ESTABLISHED)
		rt_count(rn, hs_ok);
	else if (ev == RIPTIDES_EVENT_REFUSED)
		rt_count(rn, hs_failed);
	if (ev != 0xff) {
		rt_conn_wake(c);
		rt_conn_event(c, ev, GFP_KERNEL);
	}
	rt_conn_put(c);
	if (err == -EINVAL)
		return rt_hs_reject(info, err, "connection not accepted (HANDSHAKE_ACCEPT first)");
	if (err)
		return rt_hs_reject(info, err, "connection closed or no longer in a handshake");
	return 0;
}
