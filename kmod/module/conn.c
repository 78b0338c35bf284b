// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Connection records: one per intercepted socket (and one per gated listener, which is not
 * shown as a connection). Records are found by socket (an RCU hash keyed by struct sock),
 * by namespace (rt_net.conns, ascending id, for dumps and /proc) and globally (rt_all, for
 * unload). rt_lock (a BH-safe spinlock) protects the links and every state change.
 *
 * A record holds a reference on its struct sock. It is unlinked when its gated socket is
 * released, or, once it no longer gates the socket (ESTABLISHED, PASSTHROUGH), when TCP
 * moves the socket to CLOSE (intercept.c). Work items (handshake request, TCP reset) and
 * the timeout run on rt_wq and each hold a reference.
 */
#include <linux/hashtable.h>
#include <linux/slab.h>
#include <linux/ktime.h>
#include <linux/cred.h>
#include <linux/cgroup.h>
#include <linux/sched.h>
#include <linux/mm.h>
#include <linux/fs.h>
#include <linux/dcache.h>
#include <linux/poll.h>
#include <net/sock.h>
#include <net/tcp.h>
#include <net/genetlink.h>
#include "riptides.h"

DEFINE_SPINLOCK(rt_lock);
static DEFINE_HASHTABLE(rt_hash, 10);
static LIST_HEAD(rt_all);
struct workqueue_struct *rt_wq;
bool rt_unloading;
atomic_t rt_nrecords = ATOMIC_INIT(0);
static atomic64_t rt_next_id = ATOMIC64_INIT(0);

static void rt_conn_workfn(struct work_struct *w);
static void rt_conn_timeoutfn(struct work_struct *w);

int rt_conn_init(void)
{
	rt_wq = alloc_workqueue("riptides", WQ_UNBOUND, 0);
	return rt_wq ? 0 : -ENOMEM;
}

/* Process context of current: pid, credentials, cgroup, comm and (bounded) exe path. */
void rt_proc_capture(struct rt_proc *p, gfp_t gfp)
{
	struct mm_struct *mm = current->mm;
	struct file *exe;
	char *buf, *path;

	memset(p, 0, sizeof(*p));
	p->pid = task_tgid_nr(current);
	p->uid = from_kuid_munged(&init_user_ns, current_uid());
	p->gid = from_kgid_munged(&init_user_ns, current_gid());
	strscpy(p->comm, current->comm, sizeof(p->comm));
	rcu_read_lock();
	p->cgroup_id = cgroup_id(task_dfl_cgroup(current));
	rcu_read_unlock();
	if (!mm)
		return;
	/* Bounded: a path longer than RIPTIDES_EXE_MAX_LEN is not reported (no EXE). */
	buf = kmalloc(RIPTIDES_EXE_MAX_LEN + 1, gfp);
	if (!buf)
		return;
	/* current's mm keeps its exe_file referenced while current runs this syscall. */
	rcu_read_lock();
	exe = rcu_dereference(mm->exe_file);
	path = exe ? d_path(&exe->f_path, buf, RIPTIDES_EXE_MAX_LEN + 1) : ERR_PTR(-ENOENT);
	rcu_read_unlock();
	if (!IS_ERR(path)) {
		p->exe = kstrndup(path, RIPTIDES_EXE_MAX_LEN, gfp);
		if (p->exe)
			atomic64_inc(&rt_live_objects);
	}
	kfree(buf);
}

struct rt_conn *rt_conn_alloc(struct rt_net *rn, struct sock *sk, struct socket *sock,
			      const struct proto_ops *inner, u8 state, u8 dir,
			      struct rt_proc *p, u32 rule_id, gfp_t gfp)
{
	struct rt_conn *c = kzalloc(sizeof(*c), gfp);

	if (!c)
		return NULL;
	atomic64_inc(&rt_live_objects);
	refcount_set(&c->ref, 1);	/* the links' reference */
	c->id = atomic64_inc_return(&rt_next_id);
	c->rn = rn;
	sock_hold(sk);
	c->sk = sk;
	c->sock = sock;
	c->inner = inner;
	init_waitqueue_head(&c->wq);
	INIT_WORK(&c->work, rt_conn_workfn);
	INIT_DELAYED_WORK(&c->timeout, rt_conn_timeoutfn);
	c->created_ns = ktime_get_ns();
	c->state = state;
	c->direction = dir;
	c->rule_id = rule_id;
	c->pid = p->pid;
	c->uid = p->uid;
	c->gid = p->gid;
	c->cgroup_id = p->cgroup_id;
	c->netns_cookie = sock_net(sk)->net_cookie;
	memcpy(c->comm, p->comm, sizeof(c->comm));
	c->exe = p->exe;	/* takes ownership */
	p->exe = NULL;
	return c;
}

void rt_conn_get(struct rt_conn *c)
{
	refcount_inc(&c->ref);
}

void rt_conn_put(struct rt_conn *c)
{
	if (!refcount_dec_and_test(&c->ref))
		return;
	sock_put(c->sk);
	if (c->exe)
		atomic64_dec(&rt_live_objects);
	if (c->peer_id)
		atomic64_dec(&rt_live_objects);
	kfree(c->exe);
	kfree(c->peer_id);
	atomic64_dec(&rt_live_objects);
	kfree_rcu(c, rcu);
}

/*
 * Links a new record and gates its socket with `gate`. Refused (the socket gets its inner
 * ops back, the caller drops the record) once unload has begun.
 */
bool rt_conn_link(struct rt_conn *c, const struct proto_ops *gate)
{
	spin_lock_bh(&rt_lock);
	if (READ_ONCE(rt_unloading)) {
		WRITE_ONCE(c->sock->ops, c->inner);
		spin_unlock_bh(&rt_lock);
		return false;
	}
	WRITE_ONCE(c->sock->ops, gate);
	c->gated = true;
	hash_add_rcu(rt_hash, &c->hnode, (unsigned long)c->sk);
	list_add_tail(&c->anode, &rt_all);
	if (c->state != RT_LISTENER) {
		list_add_tail(&c->nnode, &c->rn->conns);
		atomic_inc(&c->rn->nconns);
		atomic64_inc(&rt_g_connections);
	}
	c->linked = true;
	atomic_inc(&rt_nrecords);
	spin_unlock_bh(&rt_lock);
	return true;
}

/* Caller holds rt_lock and puts the links' reference after dropping it. */
void rt_conn_unlink_locked(struct rt_conn *c)
{
	if (!c->linked)
		return;
	if (rt_state_held(c->state)) {
		c->state = RIPTIDES_CONN_REFUSED;
		c->status = ECONNRESET;
		atomic_dec(&c->rn->npending);
		if (cancel_delayed_work(&c->timeout))
			rt_conn_put(c);	/* caller's reference keeps it alive */
	}
	hash_del_rcu(&c->hnode);
	list_del(&c->anode);
	if (c->state != RT_LISTENER) {
		list_del(&c->nnode);
		atomic_dec(&c->rn->nconns);
		atomic64_dec(&rt_g_connections);
	}
	c->linked = false;
	atomic_dec(&rt_nrecords);
}

struct rt_conn *rt_conn_lookup(const struct sock *sk)
{
	struct rt_conn *c;

	if (!atomic_read(&rt_nrecords))
		return NULL;
	rcu_read_lock();
	hash_for_each_possible_rcu(rt_hash, c, hnode, (unsigned long)sk) {
		if (c->sk == sk && refcount_inc_not_zero(&c->ref)) {
			rcu_read_unlock();
			return c;
		}
	}
	rcu_read_unlock();
	return NULL;
}

struct rt_conn *rt_conn_find_id(struct rt_net *rn, u64 id)
{
	struct rt_conn *c;

	spin_lock_bh(&rt_lock);
	list_for_each_entry(c, &rn->conns, nnode) {
		if (c->id == id) {
			rt_conn_get(c);
			spin_unlock_bh(&rt_lock);
			return c;
		}
	}
	spin_unlock_bh(&rt_lock);
	return NULL;
}

void rt_conn_queue(struct rt_conn *c, int bit)
{
	set_bit(bit, &c->work_bits);
	rt_conn_get(c);
	if (!queue_work(rt_wq, &c->work))
		rt_conn_put(c);
}

static void rt_conn_workfn(struct work_struct *w)
{
	struct rt_conn *c = container_of(w, struct rt_conn, work);

	if (test_and_clear_bit(RT_WORK_REQUEST, &c->work_bits))
		rt_send_request(c);
	if (test_and_clear_bit(RT_WORK_ABORT, &c->work_bits))
		tcp_abort(c->sk, ECONNREFUSED);	/* RST to the peer, sk_err for the app */
	rt_conn_put(c);
}

bool rt_conn_settle_locked(struct rt_conn *c, u8 state, u32 status, bool abort)
{
	if (!rt_state_held(c->state))
		return false;
	c->state = state;
	c->status = status;
	atomic_dec(&c->rn->npending);
	if (state != RIPTIDES_CONN_REFUSED && c->gated) {
		/* Nothing of the socket points at module code any more. */
		WRITE_ONCE(c->sock->ops, c->inner);
		c->gated = false;
	}
	if (cancel_delayed_work(&c->timeout))
		rt_conn_put(c);		/* the caller holds a reference */
	if (abort)
		rt_conn_queue(c, RT_WORK_ABORT);
	return true;
}

void rt_conn_wake(struct rt_conn *c)
{
	struct socket_wq *wq;

	wake_up_all(&c->wq);
	rcu_read_lock();
	wq = rcu_dereference(c->sk->sk_wq);
	if (wq)
		wake_up_interruptible_poll(&wq->wait, EPOLLIN | EPOLLPRI | EPOLLRDNORM |
					   EPOLLRDBAND | EPOLLOUT | EPOLLWRNORM |
					   EPOLLWRBAND | EPOLLERR | EPOLLHUP);
	rcu_read_unlock();
}

static void rt_conn_timeoutfn(struct work_struct *w)
{
	struct rt_conn *c = container_of(to_delayed_work(w), struct rt_conn, timeout);
	bool settled;

	spin_lock_bh(&rt_lock);
	settled = rt_conn_settle_locked(c, RIPTIDES_CONN_REFUSED, ETIMEDOUT, true);
	spin_unlock_bh(&rt_lock);
	if (settled) {
		rt_count(c->rn, hs_timed_out);
		rt_conn_wake(c);
		rt_conn_event(c, RIPTIDES_EVENT_TIMED_OUT, GFP_KERNEL);
	}
	rt_conn_put(c);
}

/* The namespace's agent is gone: held records follow the fail mode. */
void rt_agent_gone(struct rt_net *rn)
{
	bool open = READ_ONCE(rn->cfg.fail_mode) == RIPTIDES_FAIL_OPEN;
	struct rt_conn *c;

	spin_lock_bh(&rt_lock);
	list_for_each_entry(c, &rn->conns, nnode) {
		if (!rt_state_held(c->state))
			continue;
		if (c->state == RIPTIDES_CONN_PENDING && rn->agent_portid)
			continue;	/* a new agent registered meanwhile */
		if (c->state == RIPTIDES_CONN_PENDING && open) {
			rt_conn_settle_locked(c, RIPTIDES_CONN_PASSTHROUGH, 0, false);
			rt_count(rn, conns_passthrough);
			rt_conn_wake(c);
			rt_conn_event(c, RIPTIDES_EVENT_PASSTHROUGH, GFP_ATOMIC);
		} else {
			rt_conn_settle_locked(c, RIPTIDES_CONN_REFUSED, ECONNREFUSED, true);
			rt_count(rn, hs_failed);
			rt_conn_wake(c);
			rt_conn_event(c, RIPTIDES_EVENT_REFUSED, GFP_ATOMIC);
		}
	}
	spin_unlock_bh(&rt_lock);
}

/* Unload, step 1: refuse held records, restore the inner ops of every gated socket. */
void rt_conn_exit_refuse_all(void)
{
	struct rt_conn *c;

	spin_lock_bh(&rt_lock);
	WRITE_ONCE(rt_unloading, true);
	list_for_each_entry(c, &rt_all, anode) {
		if (rt_conn_settle_locked(c, RIPTIDES_CONN_REFUSED, ECONNABORTED, true))
			rt_count(c->rn, hs_failed);
		if (c->gated) {
			WRITE_ONCE(c->sock->ops, c->inner);
			c->gated = false;
		}
		rt_conn_wake(c);
	}
	spin_unlock_bh(&rt_lock);
}

/* Unload, last step (work queue drained): drop every record. */
void rt_conn_exit_free_all(void)
{
	struct rt_conn *c;

	destroy_workqueue(rt_wq);
	spin_lock_bh(&rt_lock);
	while (!list_empty(&rt_all)) {
		c = list_first_entry(&rt_all, struct rt_conn, anode);
		rt_conn_unlink_locked(c);
		spin_unlock_bh(&rt_lock);
		rt_conn_put(c);
		spin_lock_bh(&rt_lock);
	}
	spin_unlock_bh(&rt_lock);
	synchronize_rcu();
	rcu_barrier();		/* kfree_rcu callbacks of the records */
}

/* ---- messages ---- */

int rt_conn_put_attrs(struct sk_buff *msg, struct rt_conn *c)
{
	int alen = c->family == AF_INET6 ? 16 : 4;

	if (nla_put_u64_64bit(msg, RIPTIDES_ATTR_CONN_ID, c->id, RIPTIDES_ATTR_PAD) ||
	    nla_put_u8(msg, RIPTIDES_ATTR_DIRECTION, c->direction) ||
	    nla_put_u8(msg, RIPTIDES_ATTR_CONN_STATE, c->state) ||
	    nla_put_u32(msg, RIPTIDES_ATTR_PID, c->pid) ||
	    nla_put_u32(msg, RIPTIDES_ATTR_UID, c->uid) ||
	    nla_put_u32(msg, RIPTIDES_ATTR_GID, c->gid) ||
	    nla_put_string(msg, RIPTIDES_ATTR_COMM, c->comm) ||
	    nla_put_u64_64bit(msg, RIPTIDES_ATTR_CGROUP_ID, c->cgroup_id, RIPTIDES_ATTR_PAD) ||
	    nla_put_u64_64bit(msg, RIPTIDES_ATTR_NETNS_COOKIE, c->netns_cookie,
			      RIPTIDES_ATTR_PAD) ||
	    nla_put_u32(msg, RIPTIDES_ATTR_RULE_ID, c->rule_id) ||
	    nla_put_u8(msg, RIPTIDES_ATTR_KTLS, c->ktls) ||
	    nla_put_u32(msg, RIPTIDES_ATTR_STATUS, c->status))
		return -EMSGSIZE;
	if (c->exe && nla_put_string(msg, RIPTIDES_ATTR_EXE, c->exe))
		return -EMSGSIZE;
	if (c->peer_id && nla_put_string(msg, RIPTIDES_ATTR_PEER_ID, c->peer_id))
		return -EMSGSIZE;
	if (c->family &&
	    (nla_put(msg, RIPTIDES_ATTR_LOCAL_ADDR, alen, c->laddr) ||
	     nla_put_u16(msg, RIPTIDES_ATTR_LOCAL_PORT, c->lport) ||
	     nla_put(msg, RIPTIDES_ATTR_PEER_ADDR, alen, c->paddr) ||
	     nla_put_u16(msg, RIPTIDES_ATTR_PEER_PORT, c->pport)))
		return -EMSGSIZE;
	return 0;
}

void rt_conn_fill_tuple(struct rt_conn *c)
{
	rt_tuple_of(c->sk, c->laddr, &c->lport, c->paddr, &c->pport, &c->family);
}

/* CONN_EVENT multicast to the record's namespace (no listener: nothing to do). */
void rt_conn_event(struct rt_conn *c, u8 event, gfp_t gfp)
{
	struct sk_buff *msg;
	void *hdr;

	msg = genlmsg_new(NLMSG_GOODSIZE, gfp);
	if (!msg)
		return;
	hdr = rt_genlmsg_put(msg, 0, 0, 0, RIPTIDES_CMD_CONN_EVENT);
	if (!hdr || nla_put_u8(msg, RIPTIDES_ATTR_EVENT, event) || rt_conn_put_attrs(msg, c)) {
		nlmsg_free(msg);
		return;
	}
	genlmsg_end(msg, hdr);
	rt_multicast(c->rn, msg, gfp);
}

/* ---- /proc/riptides/connections ---- */

static void rt_seq_json_str(struct seq_file *m, const char *s)
{
	if (!s) {
		seq_puts(m, "null");
		return;
	}
	seq_putc(m, '"');
	for (; *s; s++) {
		unsigned char ch = *s;

		if (ch == '"' || ch == '\\')
			seq_printf(m, "\\%c", ch);
		else if (ch < 0x20 || ch == 0x7f)
			seq_printf(m, "\\u%04x", ch);
		else
			seq_putc(m, ch);
	}
	seq_putc(m, '"');
}

static void rt_seq_addr(struct seq_file *m, u8 family, const u8 *a, u16 port)
{
	if (family == AF_INET)
		seq_printf(m, "\"%pI4:%u\"", a, port);
	else if (family == AF_INET6)
		seq_printf(m, "\"[%pI6c]:%u\"", a, port);
	else
		seq_puts(m, "null");
}

static const char *const rt_state_names[] = {
	[RIPTIDES_CONN_PENDING] = "pending",
	[RIPTIDES_CONN_HANDSHAKING] = "handshaking",
	[RIPTIDES_CONN_ESTABLISHED] = "established",
	[RIPTIDES_CONN_PASSTHROUGH] = "passthrough",
	[RIPTIDES_CONN_REFUSED] = "refused",
};

void rt_conns_seq_show_json(struct seq_file *m, struct rt_net *rn)
{
	u64 now = ktime_get_ns();
	struct rt_conn *c;
	bool first = true;

	spin_lock_bh(&rt_lock);
	list_for_each_entry(c, &rn->conns, nnode) {
		seq_puts(m, first ? "[\n" : ",\n");
		first = false;
		seq_printf(m, "{\"id\":%llu,\"direction\":\"%s\",\"state\":\"%s\",\"local\":",
			   c->id, c->direction == RIPTIDES_DIR_EGRESS ? "egress" : "ingress",
			   c->state <= RIPTIDES_CONN_STATE_MAX ? rt_state_names[c->state] : "?");
		rt_seq_addr(m, c->family, c->laddr, c->lport);
		seq_puts(m, ",\"peer\":");
		rt_seq_addr(m, c->family, c->paddr, c->pport);
		seq_printf(m, ",\"pid\":%d,\"uid\":%u,\"comm\":", c->pid, c->uid);
		rt_seq_json_str(m, c->comm);
		seq_puts(m, ",\"exe\":");
		rt_seq_json_str(m, c->exe);
		seq_puts(m, ",\"peer_id\":");
		rt_seq_json_str(m, c->peer_id);
		seq_printf(m, ",\"rule_id\":%u,\"ktls\":%s,\"status\":%u,\"age_ms\":%llu}",
			   c->rule_id, c->ktls ? "true" : "false", c->status,
			   (now - c->created_ns) / NSEC_PER_MSEC);
	}
	spin_unlock_bh(&rt_lock);
	seq_puts(m, first ? "[]\n" : "\n]\n");
}
