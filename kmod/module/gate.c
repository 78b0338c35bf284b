// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Gated proto_ops. A gated socket's sock->ops points at a module-owned copy of its inner
 * ops (inet_stream_ops, inet6_stream_ops, or kTLS's ops once the agent installed kTLS) in
 * which the calls that move application bytes or wait are wrapped:
 *
 *   sendmsg, recvmsg, splice_read, sendpage (< 6.5): held while PENDING/HANDSHAKING for
 *     every caller but the agent (blocking: sleep; non-blocking: -EAGAIN), -ECONNREFUSED
 *     once REFUSED. A blocking caller released to ESTABLISHED/PASSTHROUGH restarts its
 *     system call, which then reaches the inner ops directly: no application thread stays
 *     in module code once its socket is released.
 *   read_sock, read_skb, sendmsg_locked, sendpage_locked (in-kernel users): -EAGAIN while
 *     held.
 *   poll: the inner poll runs (so the wait queue is registered); IN/OUT are masked while
 *     held; REFUSED adds ERR|HUP. Release wakes the socket's wait queue.
 *   setsockopt: the agent installs kTLS (TCP_ULP "tls", SOL_TLS TLS_TX/TLS_RX) with
 *     SEND_SHUTDOWN set around the call; kTLS replaces sock->ops, so the new ops become
 *     the inner ops and the gate is re-installed around them.
 *   getsockopt: TCP_ZEROCOPY_RECEIVE refused while held.
 *   accept (listeners): waits for connections itself (so no thread sleeps inside the
 *     inner accept from here), then evaluates ingress policy on the new socket.
 *   release: unlinks the record (a held one is refused) before the inner release.
 * Everything else (bind, connect, getname, ioctl, shutdown, mmap, ...) is the inner op.
 *
 * Gates live in a static array for the module's lifetime; every wrapper counts itself in
 * rt_inflight so unload can wait until no thread is inside module code.
 */
#include <linux/net.h>
#include <linux/poll.h>
#include <linux/splice.h>
#include <linux/sched/signal.h>
#include <linux/wait_bit.h>
#include <linux/delay.h>
#include <net/sock.h>
#include <net/tcp.h>
#include <net/inet_connection_sock.h>
#include <net/request_sock.h>
#include <net/inet_common.h>
#include "riptides.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

struct rt_gate {
	struct proto_ops ops;
	const struct proto_ops *inner;
};

#define RT_MAX_GATES 64
static struct rt_gate rt_gates[RT_MAX_GATES];
static int rt_ngates;
static DEFINE_SPINLOCK(rt_gates_lock);
static const struct proto_ops *rt_inet6_ops;
atomic_t rt_inflight = ATOMIC_INIT(0);

bool rt_is_gate(const struct proto_ops *ops)
{
	uintptr_t p = (uintptr_t)ops;

	return p >= (uintptr_t)&rt_gates[0] && p < (uintptr_t)&rt_gates[RT_MAX_GATES];
}

bool rt_is_plain_stream_ops(const struct proto_ops *ops)
{
	return ops == &inet_stream_ops || (rt_inet6_ops && ops == rt_inet6_ops);
}

static const struct proto_ops *rt_inner_of(const struct socket *sock)
{
	const struct proto_ops *ops = READ_ONCE(sock->ops);

	if (rt_is_gate(ops))
		return container_of(ops, struct rt_gate, ops)->inner;
	return ops;
}

static void rt_enter(void)
{
	atomic_inc(&rt_inflight);
}

static void rt_leave(struct rt_conn *c)
{
	if (c)
		rt_conn_put(c);
	if (atomic_dec_and_test(&rt_inflight) && READ_ONCE(rt_unloading))
		wake_up_var(&rt_inflight);
}

void rt_inflight_wait(void)
{
	int i;

	for (i = 0; ; i++) {
		if (wait_var_event_timeout(&rt_inflight, !atomic_read(&rt_inflight), 5 * HZ))
			break;
		pr_warn("riptides: unload waits for %d thread(s) in gated socket calls\n",
			atomic_read(&rt_inflight));
	}
	/* A thread may have read a gated sock->ops just before it was restored. */
	synchronize_rcu();
	msleep(20);
	wait_var_event(&rt_inflight, !atomic_read(&rt_inflight));
}

static bool rt_caller_is_agent(const struct rt_conn *c)
{
	pid_t me = task_tgid_nr(current);
	pid_t a = READ_ONCE(c->rn->agent_tgid);

	return (a && a == me) || (c->agent_tgid && c->agent_tgid == me);
}

#define RT_RESTART 1

/*
 * The hold. Returns 0 to call the inner op, RT_RESTART to restart the system call (the
 * socket was released while we waited), or a negative errno.
 */
static int rt_hold(struct rt_conn *c, bool nonblock, long timeo)
{
	long r;
	u8 st;

	if (!c || c->state == RT_LISTENER || rt_caller_is_agent(c))
		return 0;
	for (;;) {
		st = READ_ONCE(c->state);
		if (st == RIPTIDES_CONN_REFUSED)
			return -ECONNREFUSED;
		if (!rt_state_held(st))
			return nonblock ? 0 : RT_RESTART;
		if (nonblock || !timeo)
			return -EAGAIN;
		r = wait_event_interruptible_timeout(c->wq, !rt_state_held(READ_ONCE(c->state)),
						     timeo);
		if (r < 0)
			return sock_intr_errno(timeo);
		if (r == 0)
			return -EAGAIN;
		timeo = r;
	}
}

static bool rt_file_nonblock(const struct socket *sock)
{
	return sock->file && (sock->file->f_flags & O_NONBLOCK);
}

static int rt_gate_sendmsg(struct socket *sock, struct msghdr *m, size_t len)
{
	bool nb = (m->msg_flags & MSG_DONTWAIT) || rt_file_nonblock(sock);
	struct rt_conn *c;
	int err;

	rt_enter();
	c = rt_conn_lookup(sock->sk);
	err = rt_hold(c, nb, sock_sndtimeo(sock->sk, nb));
	if (err == RT_RESTART)
		err = restart_syscall();
	else if (!err)
		err = rt_inner_of(sock)->sendmsg(sock, m, len);
	rt_leave(c);
	return err;
}

static int rt_gate_recvmsg(struct socket *sock, struct msghdr *m, size_t len, int flags)
{
	bool nb = (flags & MSG_DONTWAIT) || rt_file_nonblock(sock);
	struct rt_conn *c;
	int err;

	rt_enter();
	c = rt_conn_lookup(sock->sk);
	err = rt_hold(c, nb, sock_rcvtimeo(sock->sk, nb));
	if (err == RT_RESTART)
		err = restart_syscall();
	else if (!err)
		err = rt_inner_of(sock)->recvmsg(sock, m, len, flags);
	rt_leave(c);
	return err;
}

static ssize_t rt_gate_splice_read(struct socket *sock, loff_t *ppos,
				   struct pipe_inode_info *pipe, size_t len, unsigned int flags)
{
	bool nb = (flags & SPLICE_F_NONBLOCK) || rt_file_nonblock(sock);
	struct rt_conn *c;
	ssize_t err;

	rt_enter();
	c = rt_conn_lookup(sock->sk);
	err = rt_hold(c, nb, sock_rcvtimeo(sock->sk, nb));
	if (err == RT_RESTART)
		err = restart_syscall();
	else if (!err)
		err = rt_inner_of(sock)->splice_read(sock, ppos, pipe, len, flags);
	rt_leave(c);
	return err;
}

#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 5, 0)
static ssize_t rt_gate_sendpage(struct socket *sock, struct page *page, int offset,
				size_t size, int flags)
{
	bool nb = (flags & MSG_DONTWAIT) || rt_file_nonblock(sock);
	struct rt_conn *c;
	ssize_t err;

	rt_enter();
	c = rt_conn_lookup(sock->sk);
	err = rt_hold(c, nb, sock_sndtimeo(sock->sk, nb));
	if (err == RT_RESTART)
		err = restart_syscall();
	else if (!err)
		err = rt_inner_of(sock)->sendpage(sock, page, offset, size, flags);
	rt_leave(c);
	return err;
}

static int rt_gate_sendpage_locked(struct sock *sk, struct page *page, int offset,
				   size_t size, int flags)
{
	struct rt_conn *c;
	int err;

	rt_enter();
	c = rt_conn_lookup(sk);
	err = rt_hold(c, true, 0);
	if (!err)
		err = rt_inner_of(sk->sk_socket)->sendpage_locked(sk, page, offset, size, flags);
	rt_leave(c);
	return err;
}
#endif

static int rt_gate_read_sock(struct sock *sk, read_descriptor_t *desc,
			     sk_read_actor_t recv_actor)
{
	struct rt_conn *c;
	int err;

	rt_enter();
	c = rt_conn_lookup(sk);
	err = rt_hold(c, true, 0);
	if (!err)
		err = rt_inner_of(sk->sk_socket)->read_sock(sk, desc, recv_actor);
	rt_leave(c);
	return err;
}

static int rt_gate_read_skb(struct sock *sk, skb_read_actor_t recv_actor)
{
	struct rt_conn *c;
	int err;

	rt_enter();
	c = rt_conn_lookup(sk);
	err = rt_hold(c, true, 0);
	if (!err)
		err = rt_inner_of(sk->sk_socket)->read_skb(sk, recv_actor);
	rt_leave(c);
	return err;
}

static int rt_gate_sendmsg_locked(struct sock *sk, struct msghdr *msg, size_t size)
{
	struct rt_conn *c;
	int err;

	rt_enter();
	c = rt_conn_lookup(sk);
	err = rt_hold(c, true, 0);
	if (!err)
		err = rt_inner_of(sk->sk_socket)->sendmsg_locked(sk, msg, size);
	rt_leave(c);
	return err;
}

static __poll_t rt_gate_poll(struct file *file, struct socket *sock, poll_table *wait)
{
	struct rt_conn *c;
	__poll_t mask;
	u8 st;

	rt_enter();
	c = rt_conn_lookup(sock->sk);
	mask = rt_inner_of(sock)->poll(file, sock, wait);
	if (c && c->state != RT_LISTENER && !rt_caller_is_agent(c)) {
		smp_rmb();
		st = READ_ONCE(c->state);
		if (rt_state_held(st))
			mask &= ~(EPOLLIN | EPOLLRDNORM | EPOLLRDBAND | EPOLLPRI |
				  EPOLLOUT | EPOLLWRNORM | EPOLLWRBAND);
		else if (st == RIPTIDES_CONN_REFUSED)
			mask |= EPOLLERR | EPOLLHUP;
	}
	rt_leave(c);
	return mask;
}

static int rt_gate_getsockopt(struct socket *sock, int level, int optname, char __user *optval,
			      int __user *optlen)
{
	struct rt_conn *c;
	int err = 0;

	rt_enter();
	c = rt_conn_lookup(sock->sk);
	if (level == SOL_TCP && optname == TCP_ZEROCOPY_RECEIVE && c &&
	    rt_state_held(READ_ONCE(c->state)) && !rt_caller_is_agent(c))
		err = -EAGAIN;
	if (!err)
		err = rt_inner_of(sock)->getsockopt(sock, level, optname, optval, optlen);
	rt_leave(c);
	return err;
}

/*
 * kTLS builds its proto_ops from sock->ops the first time a socket of a given family/proto
 * attaches the "tls" ULP (tls_build_proto). A gated socket must not be that first one, or
 * kTLS's ops would be built on the gate: attach the ULP to a throwaway kernel socket
 * (plain ops) first; it fails with ENOTCONN after the ops are built.
 */
static void rt_prime_ktls(struct sock *sk)
{
	struct socket *s;

	if (sock_create_kern(sock_net(sk), sk->sk_family, SOCK_STREAM, IPPROTO_TCP, &s))
		return;
	s->ops->setsockopt(s, SOL_TCP, TCP_ULP, KERNEL_SOCKPTR("tls"), sizeof("tls") - 1);
	sock_release(s);
}

/*
 * The agent installs kTLS on a held socket. kTLS replaces sock->ops (update_sk_prot)
 * inside each call: the new ops become the inner ops and the gate goes back on top. An
 * application thread that enters in the instant between kTLS's write and ours reaches
 * kTLS's ops directly, so writes are shut (SEND_SHUTDOWN) from the agent's first kTLS call
 * until HANDSHAKE_DONE releases the socket: such a write fails (EPIPE) rather than leaving
 * before the keys are in place and the verdict is known. The agent writes nothing after
 * its first kTLS call.
 */
static int rt_agent_ktls_setsockopt(struct rt_conn *c, struct socket *sock, int level,
				    int optname, sockptr_t optval, unsigned int optlen)
{
	struct sock *sk = sock->sk;
	const struct proto_ops *now, *gate;
	bool refused = false;
	int err;

	if (level == SOL_TCP)
		rt_prime_ktls(sk);
	lock_sock(sk);
	if (!c->shut_wr && !(sk->sk_shutdown & SEND_SHUTDOWN)) {
		WRITE_ONCE(sk->sk_shutdown, sk->sk_shutdown | SEND_SHUTDOWN);
		c->shut_wr = true;
	}
	release_sock(sk);

	err = c->inner->setsockopt(sock, level, optname, optval, optlen);

	spin_lock_bh(&rt_lock);
	now = READ_ONCE(sock->ops);
	if (!rt_is_gate(now))
		c->inner = now;		/* kTLS's ops */
	if (c->gated) {
		gate = rt_gate_for(c->inner);
		if (gate) {
			WRITE_ONCE(sock->ops, gate);
		} else {
			/* No gate left: refuse (writes stay shut until the reset). */
			refused = rt_conn_settle_locked(c, RIPTIDES_CONN_REFUSED, ENOMEM, true);
			WRITE_ONCE(sock->ops, c->inner);
			c->gated = false;
		}
	}
	spin_unlock_bh(&rt_lock);
	if (refused)
		rt_conn_wake(c);
	return err;
}

static int rt_gate_setsockopt(struct socket *sock, int level, int optname, sockptr_t optval,
			      unsigned int optlen)
{
	bool ktls = (level == SOL_TCP && optname == TCP_ULP) || level == SOL_TLS;
	struct rt_conn *c;
	int err;
	u8 st;

	rt_enter();
	c = rt_conn_lookup(sock->sk);
	st = c ? READ_ONCE(c->state) : RT_LISTENER;
	if (!ktls || st == RT_LISTENER || (!rt_state_held(st) && st != RIPTIDES_CONN_REFUSED))
		err = rt_inner_of(sock)->setsockopt(sock, level, optname, optval, optlen);
	else if (st == RIPTIDES_CONN_REFUSED)
		/*
		 * A refused socket stays gated until its release: kTLS would put its own ops
		 * in sock->ops, the release would bypass the gate and the record would never
		 * be unlinked (a leak any application could repeat). There is nothing to
		 * protect on a refused connection.
		 */
		err = -ECONNREFUSED;
	else if (!rt_caller_is_agent(c))
		err = -EBUSY;	/* only the agent installs kTLS on a held socket */
	else
		err = rt_agent_ktls_setsockopt(c, sock, level, optname, optval, optlen);
	rt_leave(c);
	return err;
}

static int rt_gate_release(struct socket *sock)
{
	const struct proto_ops *inner = rt_inner_of(sock);
	struct rt_conn *c = sock->sk ? rt_conn_lookup(sock->sk) : NULL;
	bool held = false, unlinked = false, listener = false;
	int err;

	rt_enter();
	if (c) {
		spin_lock_bh(&rt_lock);
		listener = c->state == RT_LISTENER;
		if (c->linked && c->sock == sock) {
			held = rt_state_held(c->state);
			rt_conn_unlink_locked(c);	/* a held record becomes REFUSED */
			c->gated = false;
			unlinked = true;
		}
		spin_unlock_bh(&rt_lock);
		if (held) {
			rt_count(c->rn, hs_failed);
			rt_conn_wake(c);
		}
		if (unlinked && !listener)
			rt_conn_event(c, RIPTIDES_EVENT_CLOSED, GFP_KERNEL);
		if (unlinked)
			rt_conn_put(c);		/* the links' reference */
	}
	err = inner->release(sock);
	rt_leave(c);
	return err;
}

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 10, 0)
static int rt_inner_accept(const struct proto_ops *inner, struct socket *sock,
			   struct socket *newsock, struct proto_accept_arg *arg)
{
	struct proto_accept_arg a = *arg;
	int err;

	a.flags |= O_NONBLOCK;
	err = inner->accept(sock, newsock, &a);
	arg->err = a.err;
	arg->is_empty = a.is_empty;
	return err;
}

static int rt_gate_accept(struct socket *sock, struct socket *newsock,
			  struct proto_accept_arg *arg)
{
	int flags = arg->flags;
#define RT_INNER_ACCEPT() rt_inner_accept(inner, sock, newsock, arg)
#else
static int rt_gate_accept(struct socket *sock, struct socket *newsock, int flags, bool kern)
{
#define RT_INNER_ACCEPT() inner->accept(sock, newsock, flags | O_NONBLOCK, kern)
#endif
	const struct proto_ops *inner = rt_inner_of(sock);
	struct sock *sk = sock->sk;
	bool nb = flags & O_NONBLOCK;
	long timeo = sock_rcvtimeo(sk, nb);
	long r;
	int err;

	rt_enter();
	for (;;) {
		err = RT_INNER_ACCEPT();
		if (err != -EAGAIN || nb)
			break;
		r = wait_event_interruptible_timeout(*sk_sleep(sk),
			!reqsk_queue_empty(&inet_csk(sk)->icsk_accept_queue) ||
			READ_ONCE(rt_unloading) || READ_ONCE(sk->sk_state) != TCP_LISTEN, timeo);
		if (r < 0) {
			err = sock_intr_errno(timeo);
			break;
		}
		if (r == 0) {
			err = -EAGAIN;
			break;
		}
		timeo = r;
		if (READ_ONCE(rt_unloading)) {
			err = restart_syscall();
			break;
		}
	}
	if (!err && rt_is_gate(READ_ONCE(newsock->ops)))
		rt_intercept_accepted(sock, newsock, inner);
	else if (err)
		WRITE_ONCE(newsock->ops, inner);	/* its release must not come back here */
	rt_leave(NULL);
	return err;
}
#undef RT_INNER_ACCEPT

const struct proto_ops *rt_gate_for(const struct proto_ops *inner)
{
	const struct proto_ops *found = NULL;
	unsigned long flags;
	struct rt_gate *g;
	int i;

	if (!inner || rt_is_gate(inner))
		return NULL;
	spin_lock_irqsave(&rt_gates_lock, flags);
	for (i = 0; i < rt_ngates; i++) {
		if (rt_gates[i].inner == inner) {
			found = &rt_gates[i].ops;
			goto out;
		}
	}
	if (rt_ngates == RT_MAX_GATES)
		goto out;
	g = &rt_gates[rt_ngates];
	g->ops = *inner;	/* family, owner and every pass-through op */
	g->inner = inner;
	g->ops.release = rt_gate_release;
	if (inner->accept)
		g->ops.accept = rt_gate_accept;
	if (inner->poll)
		g->ops.poll = rt_gate_poll;
	if (inner->setsockopt)
		g->ops.setsockopt = rt_gate_setsockopt;
	if (inner->getsockopt)
		g->ops.getsockopt = rt_gate_getsockopt;
	if (inner->sendmsg)
		g->ops.sendmsg = rt_gate_sendmsg;
	if (inner->recvmsg)
		g->ops.recvmsg = rt_gate_recvmsg;
	if (inner->splice_read)
		g->ops.splice_read = rt_gate_splice_read;
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 5, 0)
	if (inner->sendpage)
		g->ops.sendpage = rt_gate_sendpage;
	if (inner->sendpage_locked)
		g->ops.sendpage_locked = rt_gate_sendpage_locked;
#endif
	if (inner->read_sock)
		g->ops.read_sock = rt_gate_read_sock;
	if (inner->read_skb)
		g->ops.read_skb = rt_gate_read_skb;
	if (inner->sendmsg_locked)
		g->ops.sendmsg_locked = rt_gate_sendmsg_locked;
	smp_wmb();
	found = &g->ops;
	rt_ngates++;
out:
	spin_unlock_irqrestore(&rt_gates_lock, flags);
	return found;
}

int rt_gate_init(void)
{
	struct socket *s;
	int err;

	/* inet6_stream_ops is not exported: learn its address from a socket. */
	err = sock_create_kern(&init_net, AF_INET6, SOCK_STREAM, IPPROTO_TCP, &s);
	if (err) {
		pr_warn("riptides: no IPv6 TCP socket (%d): IPv6 is not intercepted\n", err);
		return 0;
	}
	rt_inet6_ops = s->ops;
	sock_release(s);
	return 0;
}
