// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Interception: a probe on the sock:inet_sock_set_state tracepoint (no global patch of
 * tcp_prot) and the namespace's policy.
 *
 *   CLOSE -> SYN_SENT  (inside connect(), the application's context): egress policy; a
 *                      PROTECT match gates the socket (sock->ops -> gated copy) and creates
 *                      the record with the process context.
 *   SYN_SENT -> ESTABLISHED: the record's HANDSHAKE_REQUEST is sent from a work item.
 *   CLOSE -> LISTEN    (inside listen()): a listener an ingress PROTECT entry could select
 *                      is gated; the gated accept() evaluates every accepted socket.
 *   * -> CLOSE         a held record is refused; an ungated record (ESTABLISHED,
 *                      PASSTHROUGH) is dropped.
 *
 * The probe runs with preemption disabled (sometimes in softirq): it allocates atomically
 * and leaves everything that sleeps to work items.
 */
#include <linux/tracepoint.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/sched.h>
#include <net/sock.h>
#include <net/inet_sock.h>
#include <net/ipv6.h>
#include <net/tcp.h>
#include "riptides.h"

static struct tracepoint *rt_tp;

/* ---- policy ---- */

static bool rt_prefix_match(const u8 *a, const u8 *net, u8 plen)
{
	u8 full = plen / 8, rem = plen % 8;

	if (memcmp(a, net, full))
		return false;
	if (rem && ((a[full] ^ net[full]) & (0xff00 >> rem)))
		return false;
	return true;
}

/*
 * First match wins. addr/alen: the peer address (4 or 16 bytes, NULL for any); port: the
 * destination port (egress) or local port (ingress). any_peer: only decide whether some
 * entry could match whatever the peer (listeners).
 */
const struct rt_pentry *rt_policy_match(struct rt_net *rn, u8 dir, const u8 *addr, int alen,
					u16 port, const struct rt_proc *p, bool any_peer)
{
	const struct rt_policy *pol = rcu_dereference(rn->policy);
	const struct rt_pentry *e;
	u32 i;

	if (!pol)
		return NULL;
	for (i = 0; i < pol->nentries; i++) {
		e = &pol->entries[i];
		if (e->direction != dir)
			continue;
		if (port < e->port_min || port > e->port_max)
			continue;
		if ((e->flags & RT_PENTRY_HAS_UID) && e->uid != p->uid)
			continue;
		if ((e->flags & RT_PENTRY_HAS_GID) && e->gid != p->gid)
			continue;
		if (e->comm[0] && strcmp(e->comm, p->comm))
			continue;
		if (e->exe && (!p->exe || strcmp(e->exe, p->exe)))
			continue;
		if (any_peer) {
			if (e->action == RIPTIDES_ACTION_PROTECT)
				return e;
			continue;
		}
		if (e->flags & RT_PENTRY_HAS_ADDR4) {
			if (alen != 4 || !rt_prefix_match(addr, (const u8 *)&e->addr, e->prefix_len))
				continue;
		} else if (e->flags & RT_PENTRY_HAS_ADDR6) {
			if (alen != 16 || !rt_prefix_match(addr, (const u8 *)&e->addr, e->prefix_len))
				continue;
		}
		return e;
	}
	return NULL;
}

/* The socket's 4-tuple; v4-mapped IPv6 addresses are reported as IPv4. */
void rt_tuple_of(const struct sock *sk, u8 *laddr, u16 *lport, u8 *paddr, u16 *pport,
		 u8 *family)
{
	const struct inet_sock *inet = inet_sk(sk);

	*lport = ntohs(inet->inet_sport);
	*pport = ntohs(inet->inet_dport);
#if IS_ENABLED(CONFIG_IPV6)
	if (sk->sk_family == AF_INET6 && !ipv6_addr_v4mapped(&sk->sk_v6_daddr)) {
		memcpy(laddr, &sk->sk_v6_rcv_saddr, 16);
		memcpy(paddr, &sk->sk_v6_daddr, 16);
		*family = AF_INET6;
		return;
	}
#endif
	memcpy(laddr, &inet->inet_rcv_saddr, 4);
	memcpy(paddr, &inet->inet_daddr, 4);
	*family = AF_INET;
}

static bool rt_pending_reserve(struct rt_net *rn)
{
	if (atomic_inc_return(&rn->npending) <= (int)READ_ONCE(rt_param_max_pending))
		return true;
	atomic_dec(&rn->npending);
	return false;
}

/*
 * Decides the fate of a socket the policy protects: PENDING (held, agent present),
 * REFUSED (fail-closed), or -1 = leave it alone (fail-open). Counts the outcome.
 */
static int rt_protect_state(struct rt_net *rn)
{
	bool open = READ_ONCE(rn->cfg.fail_mode) == RIPTIDES_FAIL_OPEN;

	if (!rt_agent_present(rn)) {
		rt_count(rn, conns_no_daemon);
		if (open) {
			rt_count(rn, conns_passthrough);
			return -1;
		}
		return RIPTIDES_CONN_REFUSED;
	}
	if (!rt_pending_reserve(rn)) {
		rt_count(rn, conns_over_limit);
		if (open) {
			rt_count(rn, conns_passthrough);
			return -1;
		}
		return RIPTIDES_CONN_REFUSED;
	}
	return RIPTIDES_CONN_PENDING;
}

static bool rt_is_agent(struct rt_net *rn)
{
	pid_t t = READ_ONCE(rn->agent_tgid);

	return t && t == task_tgid_nr(current);
}

static bool rt_user_socket(const struct sock *sk)
{
	struct socket *sock = sk->sk_socket;

	return sock && sock->file && !sk->sk_kern_sock && sk->sk_type == SOCK_STREAM &&
	       sk->sk_protocol == IPPROTO_TCP && !(current->flags & PF_KTHREAD) &&
	       rt_is_plain_stream_ops(sock->ops);
}

static void rt_on_connect(struct sock *sk)
{
	struct rt_net *rn = rt_net(sock_net(sk));
	const struct rt_pentry *e;
	const struct proto_ops *gate;
	struct rt_conn *c, *old;
	struct rt_proc p;
	u8 daddr[16], laddr[16], fam;
	u16 dport, lport;
	int st;

	if (!rcu_access_pointer(rn->policy) || rt_is_agent(rn) || !rt_user_socket(sk))
		return;
	old = rt_conn_lookup(sk);
	if (old) {		/* already tracked (refused socket reconnecting) */
		rt_conn_put(old);
		return;
	}
	rt_tuple_of(sk, laddr, &lport, daddr, &dport, &fam);
	rt_proc_capture(&p, GFP_ATOMIC);
	rcu_read_lock();
	e = rt_policy_match(rn, RIPTIDES_DIR_EGRESS, daddr, fam == AF_INET ? 4 : 16, dport, &p,
			    false);
	if (!e || e->action != RIPTIDES_ACTION_PROTECT) {
		rcu_read_unlock();
		goto out;
	}
	st = rt_protect_state(rn);
	c = st < 0 ? NULL : rt_conn_alloc(rn, sk, sk->sk_socket, sk->sk_socket->ops, st,
					   RIPTIDES_DIR_EGRESS, &p, e->rule_id, GFP_ATOMIC);
	rcu_read_unlock();
	if (st < 0)
		goto out;
	gate = c ? rt_gate_for(c->inner) : NULL;
	if (!gate) {
		/* No memory: a protected socket must not get through unprotected. */
		if (c)
			rt_conn_put(c);
		if (st == RIPTIDES_CONN_PENDING)
			atomic_dec(&rn->npending);
		WRITE_ONCE(sk->sk_err, ENOMEM);
		goto out;
	}
	c->family = fam;
	memcpy(c->paddr, daddr, 16);
	c->pport = dport;
	if (!rt_conn_link(c, gate)) {
		if (st == RIPTIDES_CONN_PENDING)
			atomic_dec(&rn->npending);
		rt_conn_put(c);
		goto out;
	}
	if (st == RIPTIDES_CONN_REFUSED) {
		c->status = ECONNREFUSED;
		rt_count(rn, hs_failed);
		rt_conn_queue(c, RT_WORK_ABORT);
		rt_conn_event(c, RIPTIDES_EVENT_REFUSED, GFP_ATOMIC);
	}
out:
	kfree(p.exe);
	if (p.exe)
		atomic64_dec(&rt_live_objects);
}

static void rt_on_listen(struct sock *sk)
{
	struct rt_net *rn = rt_net(sock_net(sk));
	const struct proto_ops *gate;
	const struct rt_pentry *e;
	struct rt_conn *c;
	struct rt_proc p;

	if (!rcu_access_pointer(rn->policy) || rt_is_agent(rn) || !rt_user_socket(sk))
		return;
	c = rt_conn_lookup(sk);
	if (c) {
		rt_conn_put(c);
		return;
	}
	rt_proc_capture(&p, GFP_ATOMIC);
	rcu_read_lock();
	e = rt_policy_match(rn, RIPTIDES_DIR_INGRESS, NULL, 0, ntohs(inet_sk(sk)->inet_sport),
			    &p, true);
	c = e ? rt_conn_alloc(rn, sk, sk->sk_socket, sk->sk_socket->ops, RT_LISTENER,
			      RIPTIDES_DIR_INGRESS, &p, e->rule_id, GFP_ATOMIC) : NULL;
	rcu_read_unlock();
	if (c) {
		gate = rt_gate_for(c->inner);
		if (!gate || !rt_conn_link(c, gate))
			rt_conn_put(c);
	}
	kfree(p.exe);
	if (p.exe)
		atomic64_dec(&rt_live_objects);
}

static void rt_on_established(struct sock *sk)
{
	struct rt_conn *c = rt_conn_lookup(sk);

	if (!c)
		return;
	if (c->state == RIPTIDES_CONN_PENDING && c->direction == RIPTIDES_DIR_EGRESS)
		rt_conn_queue(c, RT_WORK_REQUEST);
	rt_conn_put(c);
}

static void rt_on_close(struct sock *sk)
{
	struct rt_conn *c = rt_conn_lookup(sk);
	bool refused = false, dropped = false;

	if (!c)
		return;
	spin_lock_bh(&rt_lock);
	if (c->state != RT_LISTENER) {
		if (rt_conn_settle_locked(c, RIPTIDES_CONN_REFUSED, ECONNRESET, false)) {
			refused = true;
		} else if (!c->gated && c->linked) {
			rt_conn_unlink_locked(c);
			dropped = true;
		}
	}
	spin_unlock_bh(&rt_lock);
	if (refused) {
		rt_count(c->rn, hs_failed);
		rt_conn_wake(c);
		rt_conn_event(c, RIPTIDES_EVENT_REFUSED, GFP_ATOMIC);
	}
	if (dropped) {
		rt_conn_event(c, RIPTIDES_EVENT_CLOSED, GFP_ATOMIC);
		rt_conn_put(c);		/* the links' reference */
	}
	rt_conn_put(c);
}

static void rt_probe(void *data, const struct sock *csk, const int oldstate, const int newstate)
{
	struct sock *sk = (struct sock *)csk;

	if (sk->sk_protocol != IPPROTO_TCP)
		return;
	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT)
		rt_on_connect(sk);
	else if (oldstate == TCP_CLOSE && newstate == TCP_LISTEN)
		rt_on_listen(sk);
	else if (newstate == TCP_ESTABLISHED && oldstate == TCP_SYN_SENT)
		rt_on_established(sk);
	else if (newstate == TCP_CLOSE)
		rt_on_close(sk);
}

/* Ingress: the gated accept() calls this for every accepted socket (process context). */
void rt_intercept_accepted(struct socket *listener, struct socket *newsock,
			   const struct proto_ops *inner)
{
	struct sock *sk = newsock->sk;
	struct rt_net *rn = rt_net(sock_net(sk));
	const struct rt_pentry *e;
	struct rt_conn *c = NULL, *lc;
	struct rt_proc p;
	u8 laddr[16], paddr[16], fam;
	u16 lport, pport;
	int st = -1;

	lc = rt_conn_lookup(listener->sk);
	rt_proc_capture(&p, GFP_KERNEL);
	if (lc) {	/* the process that listened, if it is not the one accepting */
		p.pid = lc->pid;
		p.uid = lc->uid;
		p.gid = lc->gid;
	}
	rt_tuple_of(sk, laddr, &lport, paddr, &pport, &fam);
	rcu_read_lock();
	e = READ_ONCE(rt_unloading) || rt_is_agent(rn) ? NULL :
		rt_policy_match(rn, RIPTIDES_DIR_INGRESS, paddr, fam == AF_INET ? 4 : 16, lport,
				&p, false);
	if (e && e->action == RIPTIDES_ACTION_PROTECT) {
		st = rt_protect_state(rn);
		if (st >= 0)
			c = rt_conn_alloc(rn, sk, newsock, inner, st, RIPTIDES_DIR_INGRESS, &p,
					  e->rule_id, GFP_ATOMIC);
	}
	rcu_read_unlock();
	if (lc)
		rt_conn_put(lc);
	kfree(p.exe);
	if (p.exe)
		atomic64_dec(&rt_live_objects);

	if (st >= 0 && !c) {	/* protected but no memory: refuse */
		if (st == RIPTIDES_CONN_PENDING)
			atomic_dec(&rn->npending);
		WRITE_ONCE(newsock->ops, inner);
		tcp_abort(sk, ENOMEM);
		return;
	}
	if (!c) {
		WRITE_ONCE(newsock->ops, inner);	/* not protected: plain socket */
		return;
	}
	c->family = fam;
	memcpy(c->laddr, laddr, 16);
	memcpy(c->paddr, paddr, 16);
	c->lport = lport;
	c->pport = pport;
	/*
	 * newsock->ops is already the gate (copied from the listener). Owning the socket keeps
	 * softirq state changes (a reset) in the backlog until the record is linked, so the
	 * probe sees the record; a connection reset while it waited in the accept queue is
	 * left alone (it is CLOSE already and will never be released from CLOSE again).
	 */
	lock_sock(sk);
	if (sk->sk_state == TCP_CLOSE || !rt_conn_link(c, READ_ONCE(newsock->ops))) {
		release_sock(sk);
		WRITE_ONCE(newsock->ops, inner);
		if (st == RIPTIDES_CONN_PENDING)
			atomic_dec(&rn->npending);
		rt_conn_put(c);
		return;
	}
	release_sock(sk);
	if (st == RIPTIDES_CONN_REFUSED) {
		c->status = ECONNREFUSED;
		rt_count(rn, hs_failed);
		rt_conn_event(c, RIPTIDES_EVENT_REFUSED, GFP_KERNEL);
		tcp_abort(sk, ECONNREFUSED);
	} else {
		rt_conn_queue(c, RT_WORK_REQUEST);
	}
}

static void rt_find_tp(struct tracepoint *tp, void *priv)
{
	if (!strcmp(tp->name, "inet_sock_set_state"))
		*(struct tracepoint **)priv = tp;
}

int rt_intercept_init(void)
{
	int err;

	for_each_kernel_tracepoint(rt_find_tp, &rt_tp);
	if (!rt_tp) {
		pr_err("riptides: tracepoint sock:inet_sock_set_state not found\n");
		return -ENOENT;
	}
	err = tracepoint_probe_register(rt_tp, rt_probe, NULL);
	if (err)
		pr_err("riptides: cannot register the inet_sock_set_state probe: %d\n", err);
	return err;
}

void rt_intercept_exit(void)
{
	tracepoint_probe_unregister(rt_tp, rt_probe, NULL);
	tracepoint_synchronize_unregister();
}
