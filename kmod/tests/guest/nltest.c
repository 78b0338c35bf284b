// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * nltest: generic netlink scenarios for riptides.ko, run inside the qemu guest.
 * Built with `gcc -static` against kmod/include/uapi. Prints one line per case:
 *   RIPTIDES-KMOD <scenario> PASS|FAIL <details>
 * Usage: nltest all | nltest family | nltest fresh
 * Exit status: number of failed cases (capped at 100).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/riptides.h>

static int failures, passes;

static void result(int ok, const char *scenario, const char *fmt, ...)
{
	va_list ap;

	printf("RIPTIDES-KMOD %s %s ", scenario, ok ? "PASS" : "FAIL");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	if (ok)
		passes++;
	else
		failures++;
}

/* ---------------------------------------------------------------- message building */

#define BUFSZ (1 << 20)
static uint32_t next_seq;

#define GENLMSG_BUFSZ BUFSZ
#include "genlmsg.h"

static struct msg M;		/* request */
static struct msg SM;		/* GET_STATS requests */
static char rbuf[BUFSZ] __attribute__((aligned(4)));	/* response */
static uint16_t family_id;
static uint32_t events_grp;
static char last_extack[512];

static struct nlmsghdr *msg_hdr(struct msg *m) { return (struct nlmsghdr *)m->buf; }

static void msg_init(struct msg *m, uint16_t type, uint16_t flags, uint8_t cmd, uint8_t version)
{
	struct nlmsghdr *n = msg_hdr(m);
	struct genlmsghdr *g;

	memset(m->buf, 0, NLMSG_HDRLEN + GENL_HDRLEN);
	n->nlmsg_type = type;
	n->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
	m->seq = ++next_seq;
	n->nlmsg_seq = m->seq;
	g = (struct genlmsghdr *)(m->buf + NLMSG_HDRLEN);
	g->cmd = cmd;
	g->version = version;
	m->len = NLMSG_HDRLEN + GENL_HDRLEN;
}

static void riptides_msg(struct msg *m, uint8_t cmd) { msg_init(m, family_id, 0, cmd, 1); }

/* ---------------------------------------------------------------- send / receive */

static int nl_open(void)
{
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
	int one = 1;
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };

	if (fd < 0) {
		perror("socket");
		exit(100);
	}
	setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
	setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror("bind");
		exit(100);
	}
	return fd;
}

typedef void (*reply_cb)(struct nlmsghdr *n, void *arg);

static void parse_extack(struct nlmsghdr *n)
{
	struct nlmsgerr *e = NLMSG_DATA(n);
	size_t off = NLMSG_HDRLEN + sizeof(*e);
	struct nlattr *a;

	last_extack[0] = 0;
	if (!(n->nlmsg_flags & NLM_F_ACK_TLVS))
		return;
	if (!(n->nlmsg_flags & NLM_F_CAPPED))
		off += e->msg.nlmsg_len - NLMSG_HDRLEN;
	while (off + NLA_HDRLEN <= n->nlmsg_len) {
		a = (struct nlattr *)((char *)n + off);
		if (a->nla_len < NLA_HDRLEN)
			break;
		if ((a->nla_type & NLA_TYPE_MASK) == NLMSGERR_ATTR_MSG)
			snprintf(last_extack, sizeof(last_extack), "%.*s",
				 (int)(a->nla_len - NLA_HDRLEN), (char *)a + NLA_HDRLEN);
		off += NLA_ALIGN(a->nla_len);
	}
}

/* Sends M, returns 0 or the negative errno of the ack; calls cb for every data message. */
static int transact_m(int fd, struct msg *m, reply_cb cb, void *arg)
{
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
	struct nlmsghdr *n;
	int dump = msg_hdr(m)->nlmsg_flags & NLM_F_DUMP;
	ssize_t r;

	msg_hdr(m)->nlmsg_len = m->len;
	if (sendto(fd, m->buf, m->len, 0, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -errno;
	for (;;) {
		r = recv(fd, rbuf, sizeof(rbuf), 0);
		if (r < 0)
			return -errno;
		for (n = (struct nlmsghdr *)rbuf; NLMSG_OK(n, r); n = NLMSG_NEXT(n, r)) {
			if (n->nlmsg_seq != m->seq)
				continue;
			if (n->nlmsg_type == NLMSG_ERROR) {
				struct nlmsgerr *e = NLMSG_DATA(n);

				parse_extack(n);
				return e->error;
			}
			if (n->nlmsg_type == NLMSG_DONE) {
				if (dump)
					return 0;
				continue;
			}
			if (cb)
				cb(n, arg);
		}
	}
}

#define transact(fd, cb, arg) transact_m(fd, &M, cb, arg)

static struct nlattr *attrs_first(struct nlmsghdr *n, int *rem)
{
	*rem = n->nlmsg_len - NLMSG_HDRLEN - GENL_HDRLEN;
	return (struct nlattr *)((char *)NLMSG_DATA(n) + GENL_HDRLEN);
}

#define for_each_attr(a, start, rem) \
	for (a = (start); rem >= NLA_HDRLEN && a->nla_len >= NLA_HDRLEN && a->nla_len <= rem; \
	     rem -= NLA_ALIGN(a->nla_len), a = (struct nlattr *)((char *)a + NLA_ALIGN(a->nla_len)))

static void *adata(struct nlattr *a) { return (char *)a + NLA_HDRLEN; }

/* ---------------------------------------------------------------- nlctrl */

struct famreply {
	uint16_t id;
	uint32_t version;
	uint32_t events;
	int found;
};

static void family_cb(struct nlmsghdr *n, void *arg)
{
	struct famreply *f = arg;
	struct nlattr *a, *g, *ga;
	int rem, grem, garem;

	for_each_attr(a, attrs_first(n, &rem), rem) {
		switch (a->nla_type & NLA_TYPE_MASK) {
		case CTRL_ATTR_FAMILY_ID:
			f->id = *(uint16_t *)adata(a);
			f->found = 1;
			break;
		case CTRL_ATTR_VERSION:
			f->version = *(uint32_t *)adata(a);
			break;
		case CTRL_ATTR_MCAST_GROUPS:
			grem = a->nla_len - NLA_HDRLEN;
			for_each_attr(g, (struct nlattr *)adata(a), grem) {
				uint32_t id = 0;
				const char *name = NULL;

				garem = g->nla_len - NLA_HDRLEN;
				for_each_attr(ga, (struct nlattr *)adata(g), garem) {
					if ((ga->nla_type & NLA_TYPE_MASK) == CTRL_ATTR_MCAST_GRP_ID)
						id = *(uint32_t *)adata(ga);
					if ((ga->nla_type & NLA_TYPE_MASK) == CTRL_ATTR_MCAST_GRP_NAME)
						name = adata(ga);
				}
				if (name && !strcmp(name, RIPTIDES_GENL_MCGRP_EVENTS))
					f->events = id;
			}
			break;
		}
	}
}

static int resolve(int fd, struct famreply *f)
{
	memset(f, 0, sizeof(*f));
	msg_init(&M, GENL_ID_CTRL, 0, CTRL_CMD_GETFAMILY, 1);
	put_str(&M, CTRL_ATTR_FAMILY_NAME, RIPTIDES_GENL_NAME);
	return transact(fd, family_cb, f);
}

/* ---------------------------------------------------------------- stats */

struct stats {
	char trust_domain[300];
	char daemon_id[200];
	uint8_t fail_mode;
	uint32_t timeout_ms;
	uint64_t config_updates, bundle_loads, policy_loads, bundle_gen, policy_gen;
	uint32_t bundle_certs, bundle_bytes, policy_entries, connections;
	uint64_t cmds_rejected;
	uint8_t daemon_connected;
	int ok;
};

static void stats_cb(struct nlmsghdr *n, void *arg)
{
	struct stats *s = arg;
	struct nlattr *a, *b;
	int rem, brem;

	for_each_attr(a, attrs_first(n, &rem), rem) {
		switch (a->nla_type & NLA_TYPE_MASK) {
		case RIPTIDES_ATTR_TRUST_DOMAIN:
			snprintf(s->trust_domain, sizeof(s->trust_domain), "%s", (char *)adata(a));
			break;
		case RIPTIDES_ATTR_DAEMON_ID:
			snprintf(s->daemon_id, sizeof(s->daemon_id), "%s", (char *)adata(a));
			break;
		case RIPTIDES_ATTR_FAIL_MODE:
			s->fail_mode = *(uint8_t *)adata(a);
			break;
		case RIPTIDES_ATTR_HANDSHAKE_TIMEOUT_MS:
			s->timeout_ms = *(uint32_t *)adata(a);
			break;
		case RIPTIDES_ATTR_STATS:
			s->ok = 1;
			brem = a->nla_len - NLA_HDRLEN;
			for_each_attr(b, (struct nlattr *)adata(a), brem) {
				uint64_t v64 = 0;
				uint32_t v32 = 0;

				if (b->nla_len == NLA_HDRLEN + 8)
					memcpy(&v64, adata(b), 8);
				if (b->nla_len == NLA_HDRLEN + 4)
					memcpy(&v32, adata(b), 4);
				switch (b->nla_type) {
				case RIPTIDES_STAT_ATTR_CONFIG_UPDATES: s->config_updates = v64; break;
				case RIPTIDES_STAT_ATTR_BUNDLE_LOADS: s->bundle_loads = v64; break;
				case RIPTIDES_STAT_ATTR_POLICY_LOADS: s->policy_loads = v64; break;
				case RIPTIDES_STAT_ATTR_BUNDLE_CERTS: s->bundle_certs = v32; break;
				case RIPTIDES_STAT_ATTR_BUNDLE_BYTES: s->bundle_bytes = v32; break;
				case RIPTIDES_STAT_ATTR_BUNDLE_GENERATION: s->bundle_gen = v64; break;
				case RIPTIDES_STAT_ATTR_POLICY_ENTRIES: s->policy_entries = v32; break;
				case RIPTIDES_STAT_ATTR_POLICY_GENERATION: s->policy_gen = v64; break;
				case RIPTIDES_STAT_ATTR_CMDS_REJECTED: s->cmds_rejected = v64; break;
				case RIPTIDES_STAT_ATTR_CONNECTIONS: s->connections = v32; break;
				case RIPTIDES_STAT_ATTR_DAEMON_CONNECTED:
					s->daemon_connected = *(uint8_t *)adata(b);
					break;
				}
			}
			break;
		}
	}
}

static int get_stats(int fd, struct stats *s)
{
	int err;

	memset(s, 0, sizeof(*s));
	msg_init(&SM, family_id, 0, RIPTIDES_CMD_GET_STATS, 1);
	err = transact_m(fd, &SM, stats_cb, s);
	if (!err && !s->ok)
		err = -ENODATA;
	return err;
}

/* Daemon-provided state only (not the rejection counter). */
static int same_state(const struct stats *a, const struct stats *b)
{
	return !strcmp(a->trust_domain, b->trust_domain) && !strcmp(a->daemon_id, b->daemon_id) &&
	       a->fail_mode == b->fail_mode && a->timeout_ms == b->timeout_ms &&
	       a->config_updates == b->config_updates && a->bundle_loads == b->bundle_loads &&
	       a->policy_loads == b->policy_loads && a->bundle_gen == b->bundle_gen &&
	       a->policy_gen == b->policy_gen && a->bundle_certs == b->bundle_certs &&
	       a->bundle_bytes == b->bundle_bytes && a->policy_entries == b->policy_entries &&
	       a->connections == b->connections;
}

static const char *errname(int e)
{
	static char buf[32];

	switch (e) {
	case 0: return "0";
	case -EINVAL: return "EINVAL";
	case -ERANGE: return "ERANGE";
	case -E2BIG: return "E2BIG";
	case -EPERM: return "EPERM";
	case -EOPNOTSUPP: return "EOPNOTSUPP";
	case -EMSGSIZE: return "EMSGSIZE";
	case -ENOENT: return "ENOENT";
	case -EBUSY: return "EBUSY";
	}
	snprintf(buf, sizeof(buf), "%d", e);
	return buf;
}

/* Sends the prepared message M, expects `want`, and checks the state did not change. */
static void expect_refused(int fd, const char *scenario, int want)
{
	struct stats before, after;
	char extack[sizeof(last_extack)];
	int err, e1, e2;

	e1 = get_stats(fd, &before);
	err = transact(fd, NULL, NULL);
	memcpy(extack, last_extack, sizeof(extack));
	e2 = get_stats(fd, &after);
	result(err == want && !e1 && !e2 && same_state(&before, &after), scenario,
	       "want=%s got=%s state=%s extack=\"%s\"", errname(want), errname(err),
	       (!e1 && !e2 && same_state(&before, &after)) ? "unchanged" : "CHANGED-or-unreadable",
	       extack);
}

/* ---------------------------------------------------------------- scenarios */

static char big[RIPTIDES_EXE_MAX_LEN + RIPTIDES_SPIFFE_ID_MAX_LEN + RIPTIDES_CERT_MAX_LEN + 16];

static const char *str_of(size_t n)
{
	memset(big, 'a', n);
	big[n] = 0;
	return big;
}

static const uint8_t *der_of(size_t n)
{
	memset(big, 0x42, n);
	big[0] = 0x30;
	return (uint8_t *)big;
}

static void good_config(const char *td, const char *id)
{
	riptides_msg(&M, RIPTIDES_CMD_SET_CONFIG);
	put_str(&M, RIPTIDES_ATTR_TRUST_DOMAIN, td);
	put_str(&M, RIPTIDES_ATTR_DAEMON_ID, id);
	put_u8(&M, RIPTIDES_ATTR_FAIL_MODE, RIPTIDES_FAIL_OPEN);
	put_u32(&M, RIPTIDES_ATTR_HANDSHAKE_TIMEOUT_MS, 5000);
}

static void good_bundle(uint64_t gen)
{
	riptides_msg(&M, RIPTIDES_CMD_LOAD_BUNDLE);
	put_u64(&M, RIPTIDES_ATTR_GENERATION, gen);
	put(&M, RIPTIDES_ATTR_BUNDLE_CERT, der_of(100), 100);
	put(&M, RIPTIDES_ATTR_BUNDLE_CERT, der_of(700), 700);
	put(&M, RIPTIDES_ATTR_BUNDLE_CERT, der_of(RIPTIDES_CERT_MAX_LEN), RIPTIDES_CERT_MAX_LEN);
}

static void put_entry_v4(struct msg *m, uint32_t rule)
{
	size_t n = nest_start(m, RIPTIDES_ATTR_POLICY_ENTRY);
	uint8_t a4[4] = { 10, 0, 0, 0 };

	put_u32(m, RIPTIDES_PENTRY_ATTR_RULE_ID, rule);
	put_u8(m, RIPTIDES_PENTRY_ATTR_DIRECTION, RIPTIDES_DIR_EGRESS);
	put_u8(m, RIPTIDES_PENTRY_ATTR_ACTION, RIPTIDES_ACTION_PROTECT);
	put(m, RIPTIDES_PENTRY_ATTR_ADDR4, a4, 4);
	put_u8(m, RIPTIDES_PENTRY_ATTR_PREFIX_LEN, 8);
	put_u16(m, RIPTIDES_PENTRY_ATTR_PORT_MIN, 8000);
	put_u16(m, RIPTIDES_PENTRY_ATTR_PORT_MAX, 8100);
	put_u32(m, RIPTIDES_PENTRY_ATTR_UID, 1000);
	nest_end(m, n);
}

static void good_policy(uint64_t gen)
{
	uint8_t a6[16] = { 0xfd, 0 };
	size_t n;

	riptides_msg(&M, RIPTIDES_CMD_LOAD_POLICY);
	put_u64(&M, RIPTIDES_ATTR_GENERATION, gen);
	put_entry_v4(&M, 1);
	n = nest_start(&M, RIPTIDES_ATTR_POLICY_ENTRY);
	put_u32(&M, RIPTIDES_PENTRY_ATTR_RULE_ID, 2);
	put_u8(&M, RIPTIDES_PENTRY_ATTR_DIRECTION, RIPTIDES_DIR_INGRESS);
	put_u8(&M, RIPTIDES_PENTRY_ATTR_ACTION, RIPTIDES_ACTION_PROTECT);
	put(&M, RIPTIDES_PENTRY_ATTR_ADDR6, a6, 16);
	put_u8(&M, RIPTIDES_PENTRY_ATTR_PREFIX_LEN, 64);
	put_u16(&M, RIPTIDES_PENTRY_ATTR_PORT_MIN, 443);
	put_str(&M, RIPTIDES_PENTRY_ATTR_EXE, "/usr/bin/server");
	nest_end(&M, n);
	n = nest_start(&M, RIPTIDES_ATTR_POLICY_ENTRY);
	put_u32(&M, RIPTIDES_PENTRY_ATTR_RULE_ID, 3);
	put_u8(&M, RIPTIDES_PENTRY_ATTR_DIRECTION, RIPTIDES_DIR_EGRESS);
	put_u8(&M, RIPTIDES_PENTRY_ATTR_ACTION, RIPTIDES_ACTION_PASS);
	put_str(&M, RIPTIDES_PENTRY_ATTR_COMM, "curl");
	put_u32(&M, RIPTIDES_PENTRY_ATTR_GID, 100);
	nest_end(&M, n);
}

static int file_contains(const char *path, const char *needle)
{
	static char fbuf[8192];
	FILE *f = fopen(path, "r");
	size_t n;

	if (!f)
		return 0;
	n = fread(fbuf, 1, sizeof(fbuf) - 1, f);
	fclose(f);
	fbuf[n] = 0;
	return strstr(fbuf, needle) != NULL;
}

static int scenario_family(int fd)
{
	struct famreply f;
	int err = resolve(fd, &f);

	result(!err && f.found && f.version == RIPTIDES_GENL_VERSION && f.events, "family-resolves",
	       "err=%s id=%u version=%u events_group=%u", errname(err), f.id, f.version, f.events);
	family_id = f.id;
	events_grp = f.events;
	return !err && f.found;
}

static void scenario_fresh(int fd)
{
	struct stats s;
	int err = get_stats(fd, &s);

	result(!err && !s.trust_domain[0] && !s.config_updates && !s.bundle_loads &&
	       !s.policy_loads && !s.bundle_certs && !s.policy_entries, "fresh-state-after-reload",
	       "err=%s trust_domain=\"%s\" config_updates=%llu bundle_certs=%u policy_entries=%u",
	       errname(err), s.trust_domain, (unsigned long long)s.config_updates, s.bundle_certs,
	       s.policy_entries);
}

static void scenario_roundtrips(int fd)
{
	struct stats s0, s;
	int err;

	get_stats(fd, &s0);
	good_config("example.org", "node-1");
	err = transact(fd, NULL, NULL);
	get_stats(fd, &s);
	result(!err && !strcmp(s.trust_domain, "example.org") && !strcmp(s.daemon_id, "node-1") &&
	       s.fail_mode == RIPTIDES_FAIL_OPEN && s.timeout_ms == 5000 &&
	       s.config_updates == s0.config_updates + 1 &&
	       file_contains("/proc/riptides/stats", "\"trust_domain\":\"example.org\"") &&
	       s.daemon_connected == 1, "set-config-stats-roundtrip",
	       "err=%s trust_domain=%s daemon_id=%s fail_mode=%u timeout_ms=%u config_updates=%llu "
	       "daemon_connected=%u", errname(err), s.trust_domain, s.daemon_id, s.fail_mode,
	       s.timeout_ms, (unsigned long long)s.config_updates, s.daemon_connected);

	good_bundle(7);
	err = transact(fd, NULL, NULL);
	get_stats(fd, &s);
	result(!err && s.bundle_certs == 3 && s.bundle_bytes == 800 + RIPTIDES_CERT_MAX_LEN &&
	       s.bundle_gen == 7 && s.bundle_loads == s0.bundle_loads + 1,
	       "load-bundle-stats-roundtrip", "err=%s certs=%u bytes=%u generation=%llu", errname(err),
	       s.bundle_certs, s.bundle_bytes, (unsigned long long)s.bundle_gen);

	good_policy(9);
	err = transact(fd, NULL, NULL);
	get_stats(fd, &s);
	result(!err && s.policy_entries == 3 && s.policy_gen == 9 &&
	       s.policy_loads == s0.policy_loads + 1 &&
	       file_contains("/proc/riptides/stats", "\"policy_entries\":3"),
	       "load-policy-stats-roundtrip", "err=%s entries=%u generation=%llu", errname(err),
	       s.policy_entries, (unsigned long long)s.policy_gen);

	/* Replacing with an empty policy is allowed (intercept nothing). */
	riptides_msg(&M, RIPTIDES_CMD_LOAD_POLICY);
	put_u64(&M, RIPTIDES_ATTR_GENERATION, 10);
	err = transact(fd, NULL, NULL);
	get_stats(fd, &s);
	result(!err && s.policy_entries == 0 && s.policy_gen == 10, "load-empty-policy-replaces",
	       "err=%s entries=%u generation=%llu", errname(err), s.policy_entries,
	       (unsigned long long)s.policy_gen);
	good_policy(11);
	transact(fd, NULL, NULL);
}

static void scenario_malformed(int fd)
{
	uint8_t a4[5] = { 1, 2, 3, 4, 5 };
	size_t n;
	int i;

	/* SET_CONFIG */
	riptides_msg(&M, RIPTIDES_CMD_SET_CONFIG);
	put_str(&M, RIPTIDES_ATTR_DAEMON_ID, "node-2");
	expect_refused(fd, "malformed/set-config/missing-trust-domain", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_SET_CONFIG);
	put_str(&M, RIPTIDES_ATTR_TRUST_DOMAIN, "other.org");
	expect_refused(fd, "malformed/set-config/missing-daemon-id", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_SET_CONFIG);
	put_u32(&M, RIPTIDES_ATTR_TRUST_DOMAIN, 0x41414141);
	put_str(&M, RIPTIDES_ATTR_DAEMON_ID, "node-2");
	expect_refused(fd, "malformed/set-config/trust-domain-wrong-type", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_SET_CONFIG);
	put_str(&M, RIPTIDES_ATTR_TRUST_DOMAIN, str_of(RIPTIDES_TRUST_DOMAIN_MAX_LEN + 1));
	put_str(&M, RIPTIDES_ATTR_DAEMON_ID, "node-2");
	expect_refused(fd, "malformed/set-config/trust-domain-oversized", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_SET_CONFIG);
	put_str(&M, RIPTIDES_ATTR_TRUST_DOMAIN, "other.org");
	put_str(&M, RIPTIDES_ATTR_DAEMON_ID, str_of(RIPTIDES_DAEMON_ID_MAX_LEN + 1));
	expect_refused(fd, "malformed/set-config/daemon-id-oversized", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_SET_CONFIG);
	put_str(&M, RIPTIDES_ATTR_TRUST_DOMAIN, "Other.ORG");
	put_str(&M, RIPTIDES_ATTR_DAEMON_ID, "node-2");
	expect_refused(fd, "malformed/set-config/trust-domain-bad-chars", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_SET_CONFIG);
	put_str(&M, RIPTIDES_ATTR_TRUST_DOMAIN, "other.org");
	put_str(&M, RIPTIDES_ATTR_DAEMON_ID, "node-2");
	put_u32(&M, RIPTIDES_ATTR_FAIL_MODE, 1);
	expect_refused(fd, "malformed/set-config/fail-mode-wrong-type", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_SET_CONFIG);
	put_str(&M, RIPTIDES_ATTR_TRUST_DOMAIN, "other.org");
	put_str(&M, RIPTIDES_ATTR_DAEMON_ID, "node-2");
	put_u8(&M, RIPTIDES_ATTR_FAIL_MODE, 2);
	expect_refused(fd, "malformed/set-config/fail-mode-out-of-range", -ERANGE);
	riptides_msg(&M, RIPTIDES_CMD_SET_CONFIG);
	put_str(&M, RIPTIDES_ATTR_TRUST_DOMAIN, "other.org");
	put_str(&M, RIPTIDES_ATTR_DAEMON_ID, "node-2");
	put_u32(&M, RIPTIDES_ATTR_HANDSHAKE_TIMEOUT_MS, 50);
	expect_refused(fd, "malformed/set-config/timeout-out-of-range", -ERANGE);
	riptides_msg(&M, RIPTIDES_CMD_SET_CONFIG);
	put_str(&M, RIPTIDES_ATTR_TRUST_DOMAIN, "other.org");
	put_str(&M, RIPTIDES_ATTR_DAEMON_ID, "node-2");
	put_u64(&M, RIPTIDES_ATTR_CONN_ID, 1);
	expect_refused(fd, "malformed/set-config/foreign-attribute", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_SET_CONFIG);
	put_str(&M, RIPTIDES_ATTR_TRUST_DOMAIN, "other.org");
	put_str(&M, RIPTIDES_ATTR_DAEMON_ID, "node-2");
	put_u32(&M, 200, 1);
	expect_refused(fd, "malformed/set-config/unknown-attribute", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_SET_CONFIG);
	put_str(&M, RIPTIDES_ATTR_TRUST_DOMAIN, "other.org");
	put_str(&M, RIPTIDES_ATTR_DAEMON_ID, "node-2");
	memset(M.buf + M.len, 0xff, 4);	/* trailing bytes that are not an attribute */
	M.len += 4;
	expect_refused(fd, "malformed/set-config/trailing-garbage", -EINVAL);
	good_config("other.org", "node-2");
	((struct genlmsghdr *)(M.buf + NLMSG_HDRLEN))->reserved = 1;
	expect_refused(fd, "malformed/set-config/reserved-header-nonzero", -EINVAL);

	/* LOAD_BUNDLE */
	riptides_msg(&M, RIPTIDES_CMD_LOAD_BUNDLE);
	put(&M, RIPTIDES_ATTR_BUNDLE_CERT, der_of(100), 100);
	expect_refused(fd, "malformed/load-bundle/missing-generation", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_LOAD_BUNDLE);
	put_u64(&M, RIPTIDES_ATTR_GENERATION, 8);
	expect_refused(fd, "malformed/load-bundle/missing-cert", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_LOAD_BUNDLE);
	put_u32(&M, RIPTIDES_ATTR_GENERATION, 8);
	put(&M, RIPTIDES_ATTR_BUNDLE_CERT, der_of(100), 100);
	expect_refused(fd, "malformed/load-bundle/generation-wrong-type", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_LOAD_BUNDLE);
	put_u64(&M, RIPTIDES_ATTR_GENERATION, 8);
	put(&M, RIPTIDES_ATTR_BUNDLE_CERT, der_of(RIPTIDES_CERT_MAX_LEN + 1),
	    RIPTIDES_CERT_MAX_LEN + 1);
	expect_refused(fd, "malformed/load-bundle/cert-oversized", -ERANGE);
	riptides_msg(&M, RIPTIDES_CMD_LOAD_BUNDLE);
	put_u64(&M, RIPTIDES_ATTR_GENERATION, 8);
	put(&M, RIPTIDES_ATTR_BUNDLE_CERT, der_of(100), 100);
	put(&M, RIPTIDES_ATTR_BUNDLE_CERT, "AAAA", 4);
	expect_refused(fd, "malformed/load-bundle/cert-not-der", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_LOAD_BUNDLE);
	put_u64(&M, RIPTIDES_ATTR_GENERATION, 8);
	for (i = 0; i < RIPTIDES_BUNDLE_MAX_CERTS + 1; i++)
		put(&M, RIPTIDES_ATTR_BUNDLE_CERT, der_of(64), 64);
	expect_refused(fd, "malformed/load-bundle/too-many-certs", -E2BIG);

	/* LOAD_POLICY */
	riptides_msg(&M, RIPTIDES_CMD_LOAD_POLICY);
	put_entry_v4(&M, 1);
	expect_refused(fd, "malformed/load-policy/missing-generation", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_LOAD_POLICY);
	put_u64(&M, RIPTIDES_ATTR_GENERATION, 12);
	n = nest_start(&M, RIPTIDES_ATTR_POLICY_ENTRY);
	put_u8(&M, RIPTIDES_PENTRY_ATTR_DIRECTION, RIPTIDES_DIR_EGRESS);
	put_u8(&M, RIPTIDES_PENTRY_ATTR_ACTION, RIPTIDES_ACTION_PROTECT);
	nest_end(&M, n);
	expect_refused(fd, "malformed/load-policy/entry-missing-rule-id", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_LOAD_POLICY);
	put_u64(&M, RIPTIDES_ATTR_GENERATION, 12);
	put_u32(&M, RIPTIDES_ATTR_POLICY_ENTRY, 1);
	expect_refused(fd, "malformed/load-policy/entry-not-nested", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_LOAD_POLICY);
	put_u64(&M, RIPTIDES_ATTR_GENERATION, 12);
	n = nest_start(&M, RIPTIDES_ATTR_POLICY_ENTRY);
	put_u32(&M, RIPTIDES_PENTRY_ATTR_RULE_ID, 1);
	put_u8(&M, RIPTIDES_PENTRY_ATTR_DIRECTION, RIPTIDES_DIR_EGRESS);
	put_u8(&M, RIPTIDES_PENTRY_ATTR_ACTION, RIPTIDES_ACTION_PROTECT);
	put(&M, RIPTIDES_PENTRY_ATTR_ADDR4, a4, 5);
	nest_end(&M, n);
	expect_refused(fd, "malformed/load-policy/addr4-wrong-length", -ERANGE);
	riptides_msg(&M, RIPTIDES_CMD_LOAD_POLICY);
	put_u64(&M, RIPTIDES_ATTR_GENERATION, 12);
	n = nest_start(&M, RIPTIDES_ATTR_POLICY_ENTRY);
	put_u32(&M, RIPTIDES_PENTRY_ATTR_RULE_ID, 1);
	put_u8(&M, RIPTIDES_PENTRY_ATTR_DIRECTION, 5);
	put_u8(&M, RIPTIDES_PENTRY_ATTR_ACTION, RIPTIDES_ACTION_PROTECT);
	nest_end(&M, n);
	expect_refused(fd, "malformed/load-policy/direction-out-of-range", -ERANGE);
	riptides_msg(&M, RIPTIDES_CMD_LOAD_POLICY);
	put_u64(&M, RIPTIDES_ATTR_GENERATION, 12);
	n = nest_start(&M, RIPTIDES_ATTR_POLICY_ENTRY);
	put_u32(&M, RIPTIDES_PENTRY_ATTR_RULE_ID, 1);
	put_u8(&M, RIPTIDES_PENTRY_ATTR_DIRECTION, RIPTIDES_DIR_EGRESS);
	put_u8(&M, RIPTIDES_PENTRY_ATTR_ACTION, RIPTIDES_ACTION_PROTECT);
	put_str(&M, RIPTIDES_PENTRY_ATTR_EXE, str_of(RIPTIDES_EXE_MAX_LEN + 1));
	nest_end(&M, n);
	expect_refused(fd, "malformed/load-policy/exe-oversized", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_LOAD_POLICY);
	put_u64(&M, RIPTIDES_ATTR_GENERATION, 12);
	n = nest_start(&M, RIPTIDES_ATTR_POLICY_ENTRY);
	put_u32(&M, RIPTIDES_PENTRY_ATTR_RULE_ID, 1);
	put_u8(&M, RIPTIDES_PENTRY_ATTR_DIRECTION, RIPTIDES_DIR_EGRESS);
	put_u8(&M, RIPTIDES_PENTRY_ATTR_ACTION, RIPTIDES_ACTION_PROTECT);
	put_u16(&M, RIPTIDES_PENTRY_ATTR_PORT_MIN, 9000);
	put_u16(&M, RIPTIDES_PENTRY_ATTR_PORT_MAX, 8000);
	nest_end(&M, n);
	expect_refused(fd, "malformed/load-policy/port-min-above-max", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_LOAD_POLICY);
	put_u64(&M, RIPTIDES_ATTR_GENERATION, 12);
	put_entry_v4(&M, 1);	/* a valid entry first: its allocation must be freed */
	n = nest_start(&M, RIPTIDES_ATTR_POLICY_ENTRY);
	put_u32(&M, RIPTIDES_PENTRY_ATTR_RULE_ID, 2);
	put_u8(&M, RIPTIDES_PENTRY_ATTR_DIRECTION, RIPTIDES_DIR_EGRESS);
	put_u8(&M, RIPTIDES_PENTRY_ATTR_ACTION, RIPTIDES_ACTION_PROTECT);
	put_str(&M, RIPTIDES_PENTRY_ATTR_EXE, "relative/path");
	nest_end(&M, n);
	expect_refused(fd, "malformed/load-policy/exe-not-absolute", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_LOAD_POLICY);
	put_u64(&M, RIPTIDES_ATTR_GENERATION, 12);
	for (i = 0; i < RIPTIDES_POLICY_MAX_ENTRIES + 1; i++)
		put_entry_v4(&M, i);
	expect_refused(fd, "malformed/load-policy/too-many-entries", -E2BIG);

	/* SET_VERDICT */
	riptides_msg(&M, RIPTIDES_CMD_SET_VERDICT);
	put_u8(&M, RIPTIDES_ATTR_VERDICT, RIPTIDES_VERDICT_ALLOW);
	expect_refused(fd, "malformed/set-verdict/missing-conn-id", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_SET_VERDICT);
	put_u64(&M, RIPTIDES_ATTR_CONN_ID, 1);
	expect_refused(fd, "malformed/set-verdict/missing-verdict", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_SET_VERDICT);
	put_u32(&M, RIPTIDES_ATTR_CONN_ID, 1);
	put_u8(&M, RIPTIDES_ATTR_VERDICT, RIPTIDES_VERDICT_ALLOW);
	expect_refused(fd, "malformed/set-verdict/conn-id-wrong-type", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_SET_VERDICT);
	put_u64(&M, RIPTIDES_ATTR_CONN_ID, 1);
	put_u8(&M, RIPTIDES_ATTR_VERDICT, 7);
	expect_refused(fd, "malformed/set-verdict/verdict-out-of-range", -ERANGE);
	riptides_msg(&M, RIPTIDES_CMD_SET_VERDICT);
	put_u64(&M, RIPTIDES_ATTR_CONN_ID, 1);
	put_u64(&M, RIPTIDES_ATTR_VERDICT, RIPTIDES_VERDICT_ALLOW);
	expect_refused(fd, "malformed/set-verdict/verdict-oversized", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_SET_VERDICT);
	put_u64(&M, RIPTIDES_ATTR_CONN_ID, 1);
	put_u8(&M, RIPTIDES_ATTR_VERDICT, RIPTIDES_VERDICT_ALLOW);
	put_str(&M, RIPTIDES_ATTR_PEER_ID, "spiffe://x/y");
	expect_refused(fd, "malformed/set-verdict/foreign-attribute", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_SET_VERDICT);
	put_u64(&M, RIPTIDES_ATTR_CONN_ID, 123456789);
	put_u8(&M, RIPTIDES_ATTR_VERDICT, RIPTIDES_VERDICT_ALLOW);
	expect_refused(fd, "handshake/set-verdict/unknown-id", -ENOENT);

	/* HANDSHAKE_ACCEPT */
	riptides_msg(&M, RIPTIDES_CMD_HANDSHAKE_ACCEPT);
	expect_refused(fd, "malformed/handshake-accept/missing-conn-id", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_HANDSHAKE_ACCEPT);
	put_u8(&M, RIPTIDES_ATTR_CONN_ID, 1);
	expect_refused(fd, "malformed/handshake-accept/conn-id-wrong-type", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_HANDSHAKE_ACCEPT);
	put_u64(&M, RIPTIDES_ATTR_CONN_ID, 1);
	put_u8(&M, RIPTIDES_ATTR_VERDICT, RIPTIDES_VERDICT_ALLOW);
	expect_refused(fd, "malformed/handshake-accept/foreign-attribute", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_HANDSHAKE_ACCEPT);
	put(&M, RIPTIDES_ATTR_CONN_ID, der_of(16), 16);
	expect_refused(fd, "malformed/handshake-accept/conn-id-oversized", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_HANDSHAKE_ACCEPT);
	put_u64(&M, RIPTIDES_ATTR_CONN_ID, 123456789);
	expect_refused(fd, "handshake/handshake-accept/unknown-id", -ENOENT);

	/* HANDSHAKE_DONE */
	riptides_msg(&M, RIPTIDES_CMD_HANDSHAKE_DONE);
	put_u32(&M, RIPTIDES_ATTR_STATUS, 0);
	expect_refused(fd, "malformed/handshake-done/missing-conn-id", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_HANDSHAKE_DONE);
	put_u64(&M, RIPTIDES_ATTR_CONN_ID, 1);
	expect_refused(fd, "malformed/handshake-done/missing-status", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_HANDSHAKE_DONE);
	put_u64(&M, RIPTIDES_ATTR_CONN_ID, 1);
	put_u8(&M, RIPTIDES_ATTR_STATUS, 0);
	expect_refused(fd, "malformed/handshake-done/status-wrong-type", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_HANDSHAKE_DONE);
	put_u64(&M, RIPTIDES_ATTR_CONN_ID, 1);
	put_u32(&M, RIPTIDES_ATTR_STATUS, 0);
	put_str(&M, RIPTIDES_ATTR_PEER_ID, str_of(RIPTIDES_SPIFFE_ID_MAX_LEN + 1));
	expect_refused(fd, "malformed/handshake-done/peer-id-oversized", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_HANDSHAKE_DONE);
	put_u64(&M, RIPTIDES_ATTR_CONN_ID, 1);
	put_u32(&M, RIPTIDES_ATTR_STATUS, 0);
	put_str(&M, RIPTIDES_ATTR_PEER_ID, "spiffe://example.org/a");
	put_u8(&M, RIPTIDES_ATTR_VERDICT, RIPTIDES_VERDICT_ALLOW);
	put_u32(&M, RIPTIDES_ATTR_SOCKFD, 3);
	expect_refused(fd, "handshake/handshake-done/unknown-id", -ENOENT);
	riptides_msg(&M, RIPTIDES_CMD_HANDSHAKE_DONE);
	put_u64(&M, RIPTIDES_ATTR_CONN_ID, 1);
	put_u64(&M, RIPTIDES_ATTR_STATUS, 0);
	expect_refused(fd, "malformed/handshake-done/status-oversized", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_HANDSHAKE_DONE);
	put_u64(&M, RIPTIDES_ATTR_CONN_ID, 1);
	put_u32(&M, RIPTIDES_ATTR_STATUS, 0);
	put_u8(&M, RIPTIDES_ATTR_VERDICT, 9);
	expect_refused(fd, "malformed/handshake-done/verdict-out-of-range", -ERANGE);
	riptides_msg(&M, RIPTIDES_CMD_HANDSHAKE_DONE);
	put_u64(&M, RIPTIDES_ATTR_CONN_ID, 1);
	put_u32(&M, RIPTIDES_ATTR_STATUS, 0);
	put(&M, RIPTIDES_ATTR_PEER_ID, "ABCD", 4);	/* binary, not a NUL-terminated string */
	expect_refused(fd, "malformed/handshake-done/peer-id-wrong-type", -EINVAL);
	riptides_msg(&M, RIPTIDES_CMD_HANDSHAKE_DONE);
	put_u64(&M, RIPTIDES_ATTR_CONN_ID, 1);
	put_u32(&M, RIPTIDES_ATTR_STATUS, 0);
	put_str(&M, RIPTIDES_ATTR_TRUST_DOMAIN, "x.org");
	expect_refused(fd, "malformed/handshake-done/foreign-attribute", -EINVAL);

	/* GET_CONNECTIONS (dump) */
	msg_init(&M, family_id, NLM_F_DUMP, RIPTIDES_CMD_GET_CONNECTIONS, 1);
	put_u32(&M, RIPTIDES_ATTR_CONN_ID, 1);
	expect_refused(fd, "malformed/get-connections/conn-id-wrong-type", -EINVAL);
	msg_init(&M, family_id, NLM_F_DUMP, RIPTIDES_CMD_GET_CONNECTIONS, 1);
	put_str(&M, RIPTIDES_ATTR_TRUST_DOMAIN, "x");
	expect_refused(fd, "malformed/get-connections/foreign-attribute", -EINVAL);
	msg_init(&M, family_id, NLM_F_DUMP, RIPTIDES_CMD_GET_CONNECTIONS, 1);
	put(&M, RIPTIDES_ATTR_CONN_ID, der_of(12), 12);
	expect_refused(fd, "malformed/get-connections/conn-id-oversized", -EINVAL);
	msg_init(&M, family_id, NLM_F_DUMP, RIPTIDES_CMD_GET_CONNECTIONS, 1);
	expect_refused(fd, "get-connections/well-formed-empty-dump", 0);

	/* GET_STATS */
	riptides_msg(&M, RIPTIDES_CMD_GET_STATS);
	put_u64(&M, RIPTIDES_ATTR_CONN_ID, 1);
	expect_refused(fd, "malformed/get-stats/any-attribute", -EINVAL);

	/* Unknown command */
	riptides_msg(&M, 99);
	expect_refused(fd, "malformed/unknown-command", -EOPNOTSUPP);
}

/* The handshake commands from a CAP_NET_ADMIN socket that is not the registered agent. */
static void scenario_not_agent(int fd)
{
	int other = nl_open();

	(void)fd;
	riptides_msg(&M, RIPTIDES_CMD_SET_VERDICT);
	put_u64(&M, RIPTIDES_ATTR_CONN_ID, 1);
	put_u8(&M, RIPTIDES_ATTR_VERDICT, RIPTIDES_VERDICT_DENY);
	expect_refused(other, "not-agent/set-verdict", -EPERM);
	riptides_msg(&M, RIPTIDES_CMD_HANDSHAKE_ACCEPT);
	put_u64(&M, RIPTIDES_ATTR_CONN_ID, 1);
	expect_refused(other, "not-agent/handshake-accept", -EPERM);
	riptides_msg(&M, RIPTIDES_CMD_HANDSHAKE_DONE);
	put_u64(&M, RIPTIDES_ATTR_CONN_ID, 1);
	put_u32(&M, RIPTIDES_ATTR_STATUS, 0);
	expect_refused(other, "not-agent/handshake-done", -EPERM);
	close(other);
}

/* Every command, well-formed, from a process without CAP_NET_ADMIN. */
static void unpriv_child(void)
{
	struct { const char *name; int dump; } cmds[] = {
		{ "set-config", 0 }, { "load-bundle", 0 }, { "load-policy", 0 },
		{ "set-verdict", 0 }, { "handshake-accept", 0 }, { "handshake-done", 0 },
		{ "get-connections", 1 }, { "get-stats", 0 },
	};
	char scen[96];
	int fd, i, err, grp;

	if (setgroups(0, NULL) || setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534)) {
		result(0, "unprivileged/drop", "setresuid: %s", strerror(errno));
		exit(1);
	}
	fd = nl_open();
	for (i = 0; i < 8; i++) {
		switch (i) {
		case 0: good_config("evil.org", "evil"); break;
		case 1: good_bundle(99); break;
		case 2: good_policy(99); break;
		case 3:
			riptides_msg(&M, RIPTIDES_CMD_SET_VERDICT);
			put_u64(&M, RIPTIDES_ATTR_CONN_ID, 1);
			put_u8(&M, RIPTIDES_ATTR_VERDICT, RIPTIDES_VERDICT_ALLOW);
			break;
		case 4:
			riptides_msg(&M, RIPTIDES_CMD_HANDSHAKE_ACCEPT);
			put_u64(&M, RIPTIDES_ATTR_CONN_ID, 1);
			break;
		case 5:
			riptides_msg(&M, RIPTIDES_CMD_HANDSHAKE_DONE);
			put_u64(&M, RIPTIDES_ATTR_CONN_ID, 1);
			put_u32(&M, RIPTIDES_ATTR_STATUS, 0);
			break;
		case 6:
			msg_init(&M, family_id, NLM_F_DUMP, RIPTIDES_CMD_GET_CONNECTIONS, 1);
			break;
		case 7: riptides_msg(&M, RIPTIDES_CMD_GET_STATS); break;
		}
		err = transact(fd, NULL, NULL);
		snprintf(scen, sizeof(scen), "unprivileged/%s", cmds[i].name);
		result(err == -EPERM, scen, "uid=%d want=EPERM got=%s", (int)geteuid(), errname(err));
	}
	grp = events_grp;
	err = setsockopt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &grp, sizeof(grp)) ? -errno : 0;
	result(err == -EPERM, "unprivileged/join-events-group", "want=EPERM got=%s", errname(err));
	close(fd);
	fflush(stdout);
	_exit(failures > 100 ? 100 : failures);
}

static void scenario_unprivileged(int fd)
{
	struct stats before, after;
	int status = 0, e1, e2, grp = events_grp, err;
	pid_t pid;

	e1 = get_stats(fd, &before);
	pid = fork();
	if (pid == 0)
		unpriv_child();
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status))
		failures++;
	else
		failures += WEXITSTATUS(status);
	e2 = get_stats(fd, &after);
	result(!e1 && !e2 && same_state(&before, &after) &&
	       before.cmds_rejected == after.cmds_rejected, "unprivileged/state-unchanged",
	       "trust_domain=%s config_updates=%llu->%llu cmds_rejected=%llu->%llu",
	       after.trust_domain, (unsigned long long)before.config_updates,
	       (unsigned long long)after.config_updates,
	       (unsigned long long)before.cmds_rejected, (unsigned long long)after.cmds_rejected);
	/* The privileged side may join the events group. */
	err = setsockopt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &grp, sizeof(grp)) ? -errno : 0;
	result(!err, "privileged/join-events-group", "group=%u got=%s", grp, errname(err));
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "all";
	int fd;

	setvbuf(stdout, NULL, _IOLBF, 0);
	fd = nl_open();
	if (!scenario_family(fd))
		return 1;
	if (!strcmp(mode, "fresh")) {
		scenario_fresh(fd);
	} else if (!strcmp(mode, "all")) {
		scenario_roundtrips(fd);
		scenario_malformed(fd);
		scenario_not_agent(fd);
		scenario_unprivileged(fd);
	}
	fflush(stdout);
	return failures > 100 ? 100 : failures;
}
