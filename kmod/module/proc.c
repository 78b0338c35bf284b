// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * /proc/riptides/connections: JSON array of tracked connections. Interception does not
 * exist yet (next increment), so no connection is ever tracked and the array is empty.
 * /proc/riptides/stats: JSON object with the configuration summary and counters.
 */
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include "riptides.h"

static struct proc_dir_entry *rt_proc_dir;

static int rt_proc_connections_show(struct seq_file *m, void *v)
{
	seq_puts(m, "[]\n");
	return 0;
}

static int rt_proc_stats_show(struct seq_file *m, void *v)
{
	mutex_lock(&rt_state_lock);
	rt_stats_seq_show_json(m);
	mutex_unlock(&rt_state_lock);
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
