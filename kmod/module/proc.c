// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * /proc/riptides/connections: JSON array of the connection records of the reader's network
 * namespace (one object per line). /proc/riptides/stats: JSON object with the namespace's
 * configuration summary and counters (the machine-wide totals are under
 * /sys/module/riptides/parameters).
 */
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <linux/nsproxy.h>
#include <linux/sched.h>
#include <net/net_namespace.h>
#include "riptides.h"

static struct proc_dir_entry *rt_proc_dir;

static int rt_proc_connections_show(struct seq_file *m, void *v)
{
	rt_conns_seq_show_json(m, rt_net(current->nsproxy->net_ns));
	return 0;
}

static int rt_proc_stats_show(struct seq_file *m, void *v)
{
	rt_stats_seq_show_json(m, rt_net(current->nsproxy->net_ns));
	return 0;
}

int rt_proc_init(void)
{
	rt_proc_dir = proc_mkdir("riptides", NULL);
	if (!rt_proc_dir)
		return -ENOMEM;
	if (!proc_create_single("connections", 0444, rt_proc_dir, rt_proc_connections_show) ||
	    !proc_create_single("stats", 0444, rt_proc_dir, rt_proc_stats_show)) {
		proc_remove(rt_proc_dir);
		rt_proc_dir = NULL;
		return -ENOMEM;
	}
	return 0;
}

void rt_proc_exit(void)
{
	proc_remove(rt_proc_dir);	/* removes the children too */
	rt_proc_dir = NULL;
}
