// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Per network namespace state (pernet_operations + net_generic) and the registration of
 * the namespace's handshake agent: SET_CONFIG makes the sender's netlink portid and tgid
 * the agent; it is cleared when that netlink socket is released (NETLINK_URELEASE) and
 * the namespace's held connections are then refused or released by its fail mode.
 */
#include <linux/netlink.h>
#include <linux/notifier.h>
#include <linux/slab.h>
#include <net/net_namespace.h>
#include <net/netns/generic.h>
#include "riptides.h"

unsigned int rt_net_id __read_mostly;

struct rt_net *rt_net(const struct net *net)
{
	return net_generic(net, rt_net_id);
}

static void rt_agent_gone_work(struct work_struct *w)
{
	rt_agent_gone(container_of(w, struct rt_net, agent_gone_work));
}

static int __net_init rt_net_init(struct net *net)
{
	struct rt_net *rn = rt_net(net);

	rn->net = net;
	mutex_init(&rn->lock);
	rt_config_defaults(rn);
	INIT_LIST_HEAD(&rn->conns);
	INIT_WORK(&rn->agent_gone_work, rt_agent_gone_work);
	return 0;
}

static void __net_exit rt_net_exit(struct net *net)
{
	struct rt_net *rn = rt_net(net);

	spin_lock_bh(&rt_lock);
	rn->agent_portid = 0;
	rn->agent_tgid = 0;
	spin_unlock_bh(&rt_lock);
	/* No user socket of the namespace is left (each holds a reference to it). */
	rt_agent_gone(rn);
	cancel_work_sync(&rn->agent_gone_work);
	rt_state_free(rn);
}

static struct pernet_operations rt_net_ops = {
	.init = rt_net_init,
	.exit = rt_net_exit,
	.id = &rt_net_id,
	.size = sizeof(struct rt_net),
};

void rt_agent_register(struct rt_net *rn, u32 portid, pid_t tgid)
{
	spin_lock_bh(&rt_lock);
	WRITE_ONCE(rn->agent_portid, portid);
	WRITE_ONCE(rn->agent_tgid, tgid);
	spin_unlock_bh(&rt_lock);
}

bool rt_agent_present(struct rt_net *rn)
{
	return READ_ONCE(rn->agent_portid) != 0;
}

static int rt_netlink_event(struct notifier_block *nb, unsigned long event, void *ptr)
{
	struct netlink_notify *n = ptr;
	struct rt_net *rn;
	bool gone = false;

	if (event != NETLINK_URELEASE || n->protocol != NETLINK_GENERIC || !n->portid)
		return NOTIFY_DONE;
	rn = rt_net(n->net);
	spin_lock_bh(&rt_lock);
	if (rn->agent_portid == n->portid) {
		WRITE_ONCE(rn->agent_portid, 0);
		WRITE_ONCE(rn->agent_tgid, 0);
		gone = true;
	}
	spin_unlock_bh(&rt_lock);
	if (gone) {
		pr_info("riptides: handshake agent (portid %u) gone\n", n->portid);
		queue_work(rt_wq, &rn->agent_gone_work);
	}
	return NOTIFY_DONE;
}

static struct notifier_block rt_netlink_nb = {
	.notifier_call = rt_netlink_event,
};

int rt_pernet_init(void)
{
	int err = register_pernet_subsys(&rt_net_ops);

	if (err)
		return err;
	err = netlink_register_notifier(&rt_netlink_nb);
	if (err)
		unregister_pernet_subsys(&rt_net_ops);
	return err;
}

void rt_pernet_exit(void)
{
	unregister_pernet_subsys(&rt_net_ops);
}

/* Called first on unload: no agent can register or vanish afterwards. */
void rt_pernet_notifier_exit(void)
{
	netlink_unregister_notifier(&rt_netlink_nb);
}
