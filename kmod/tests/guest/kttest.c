// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * kttest: interception and handover scenarios for riptides.ko, run inside the qemu guest
 * between two network namespaces A (client side, 10.99.0.1 / fd99::1 on veth "va") and
 * B (server side, 10.99.0.2 / fd99::2 on veth "vb") that init.sh creates with iproute2.
 *
 * Everything is plaintext TCP from the applications' side. The handshake agents are fake
 * (no TLS handshake): each namespace's agent accepts the held socket's fd, exchanges a
 * fixed hello with the peer's agent over it, installs real kTLS (TLS 1.2 AES-GCM-128) with
 * fixed test keys mirrored on both ends, and answers HANDSHAKE_DONE; other agent modes
 * answer DENY, a bad status, no kTLS, a verdict, or nothing.
 *
 * Prints "RIPTIDES-KMOD <scenario> PASS|FAIL <details>" lines.
 * Usage: kttest all | kttest rmmod <path-to-ko>   (the last one reloads the module)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/genetlink.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <linux/tls.h>
#include <linux/riptides.h>

static int failures;
static int read_file(const char *path, char *buf, size_t len);
static const char *stage = "start";	/* printed if a client child hangs */
static volatile sig_atomic_t g_stop;	/* SIGUSR1: a sniffer/listener child drains and exits */

static void on_usr1(int sig)
{
	(void)sig;
	g_stop = 1;
}
static int g_check_busy;	/* the next agents started check a second ACCEPT (-EBUSY) */
static int g_self_port;		/* the next agent started connects there itself, once */
static int tcp_connect(int family, int port, int nonblock);
static int roundtrip(int fd, const char *msg);

static void result(int ok, const char *scenario, const char *fmt, ...)
{
	va_list ap;
	char buf[1024];

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	printf("RIPTIDES-KMOD %s %s %s\n", scenario, ok ? "PASS" : "FAIL", buf);
	fflush(stdout);
	if (!ok)
		failures++;
}

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void msleep(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static int enter_ns(const char *ns)
{
	char path[128];
	int fd, err;

	snprintf(path, sizeof(path), "/run/netns/%s", ns);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(path, sizeof(path), "/var/run/netns/%s", ns);
		fd = open(path, O_RDONLY | O_CLOEXEC);
	}
	if (fd < 0)
		return -1;
	err = setns(fd, CLONE_NEWNET);
	close(fd);
	return err;
}

/* ---------------------------------------------------------------- netlink */

#define BUFSZ 65536

struct nl {
	int fd;
	uint16_t fam;
	uint32_t grp;
	uint32_t seq;
	uint32_t portid;
};

#define GENLMSG_BUFSZ BUFSZ
#include "genlmsg.h"

static void msg_init(struct msg *m, uint16_t type, uint16_t flags, uint8_t cmd, uint32_t seq)
{
	struct nlmsghdr *n = (struct nlmsghdr *)m->buf;
	struct genlmsghdr *g = (struct genlmsghdr *)(m->buf + NLMSG_HDRLEN);

	memset(m->buf, 0, NLMSG_HDRLEN + GENL_HDRLEN);
	n->nlmsg_type = type;
	n->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
	n->nlmsg_seq = seq;
	g->cmd = cmd;
	g->version = RIPTIDES_GENL_VERSION;
	m->len = NLMSG_HDRLEN + GENL_HDRLEN;
}

static void *adata(struct nlattr *a) { return (char *)a + NLA_HDRLEN; }

#define for_each_attr(a, start, rem) \
	for (a = (start); rem >= (int)NLA_HDRLEN && a->nla_len >= NLA_HDRLEN && a->nla_len <= rem; \
	     rem -= NLA_ALIGN(a->nla_len), a = (struct nlattr *)((char *)a + NLA_ALIGN(a->nla_len)))

static struct nlattr *attrs_first(struct nlmsghdr *n, int *rem)
{
	*rem = n->nlmsg_len - NLMSG_HDRLEN - GENL_HDRLEN;
	return (struct nlattr *)((char *)NLMSG_DATA(n) + GENL_HDRLEN);
}

typedef void (*msg_cb)(struct nlmsghdr *n, void *arg);

/* Multicast messages that arrive while a request waits for its answer. */
static msg_cb mcast_cb;
static void *mcast_arg;

static char rbuf[BUFSZ] __attribute__((aligned(4)));

/* Handles one batch of received messages; returns 1 when seq's answer completed. */
static int nl_dispatch(char *buf, ssize_t r, uint32_t seq, int dump, msg_cb cb, void *arg,
		       int *err)
{
	struct nlmsghdr *n;

	for (n = (struct nlmsghdr *)buf; NLMSG_OK(n, r); n = NLMSG_NEXT(n, r)) {
		if (n->nlmsg_seq == 0 && n->nlmsg_pid == 0 && n->nlmsg_type != NLMSG_ERROR) {
			if (mcast_cb)
				mcast_cb(n, mcast_arg);
			continue;
		}
		if (!seq || n->nlmsg_seq != seq)
			continue;
		if (n->nlmsg_type == NLMSG_ERROR) {
			*err = ((struct nlmsgerr *)NLMSG_DATA(n))->error;
			return 1;
		}
		if (n->nlmsg_type == NLMSG_DONE) {
			*err = 0;
			if (dump)
				return 1;
			continue;
		}
		if (cb)
			cb(n, arg);
	}
	return 0;
}

static int nl_transact(struct nl *nl, struct msg *m, msg_cb cb, void *arg)
{
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
	struct nlmsghdr *h = (struct nlmsghdr *)m->buf;
	int dump = h->nlmsg_flags & NLM_F_DUMP, err = 0;
	ssize_t r;

	h->nlmsg_len = m->len;
	if (sendto(nl->fd, m->buf, m->len, 0, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -errno;
	for (;;) {
		r = recv(nl->fd, rbuf, sizeof(rbuf), 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (nl_dispatch(rbuf, r, h->nlmsg_seq, dump, cb, arg, &err))
			return err;
	}
}

struct famreply {
	uint16_t id;
	uint32_t grp;
};

static void family_cb(struct nlmsghdr *n, void *arg)
{
	struct famreply *f = arg;
	struct nlattr *a, *g, *ga;
	int rem, grem, garem;

	for_each_attr(a, attrs_first(n, &rem), rem) {
		if ((a->nla_type & NLA_TYPE_MASK) == CTRL_ATTR_FAMILY_ID)
			f->id = *(uint16_t *)adata(a);
		if ((a->nla_type & NLA_TYPE_MASK) != CTRL_ATTR_MCAST_GROUPS)
			continue;
		grem = a->nla_len - NLA_HDRLEN;
		for_each_attr(g, (struct nlattr *)adata(a), grem) {
			garem = g->nla_len - NLA_HDRLEN;
			for_each_attr(ga, (struct nlattr *)adata(g), garem)
				if ((ga->nla_type & NLA_TYPE_MASK) == CTRL_ATTR_MCAST_GRP_ID)
					f->grp = *(uint32_t *)adata(ga);
		}
	}
}

static struct msg M;

static int nl_open(struct nl *nl)
{
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
	socklen_t sl = sizeof(sa);
	struct famreply f = { 0, 0 };
	int one = 1, err;

	memset(nl, 0, sizeof(*nl));
	nl->fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
	if (nl->fd < 0)
		return -errno;
	setsockopt(nl->fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
	if (bind(nl->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -errno;
	getsockname(nl->fd, (struct sockaddr *)&sa, &sl);
	nl->portid = sa.nl_pid;
	nl->seq = 1000;
	msg_init(&M, GENL_ID_CTRL, 0, CTRL_CMD_GETFAMILY, ++nl->seq);
	((struct genlmsghdr *)(M.buf + NLMSG_HDRLEN))->version = 1;
	put_str(&M, CTRL_ATTR_FAMILY_NAME, RIPTIDES_GENL_NAME);
	err = nl_transact(nl, &M, family_cb, &f);
	if (err)
		return err;
	nl->fam = f.id;
	nl->grp = f.grp;
	return 0;
}

static void rmsg(struct nl *nl, struct msg *m, uint8_t cmd)
{
	msg_init(m, nl->fam, 0, cmd, ++nl->seq);
}

/* ---------------------------------------------------------------- policy and config */

static const uint8_t B4[4] = { 10, 99, 0, 2 };
static const uint8_t B6[16] = { 0xfd, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2 };

static int set_config(struct nl *nl, const char *id, int fail_mode, int timeout_ms)
{
	rmsg(nl, &M, RIPTIDES_CMD_SET_CONFIG);
	put_str(&M, RIPTIDES_ATTR_TRUST_DOMAIN, "test.org");
	put_str(&M, RIPTIDES_ATTR_DAEMON_ID, id);
	put_u8(&M, RIPTIDES_ATTR_FAIL_MODE, fail_mode);
	put_u32(&M, RIPTIDES_ATTR_HANDSHAKE_TIMEOUT_MS, timeout_ms);
	return nl_transact(nl, &M, NULL, NULL);
}

static void pentry(struct msg *m, uint32_t rule, int dir, const uint8_t *addr, int alen,
		   int plen)
{
	size_t n = nest_start(m, RIPTIDES_ATTR_POLICY_ENTRY);

	put_u32(m, RIPTIDES_PENTRY_ATTR_RULE_ID, rule);
	put_u8(m, RIPTIDES_PENTRY_ATTR_DIRECTION, dir);
	put_u8(m, RIPTIDES_PENTRY_ATTR_ACTION, RIPTIDES_ACTION_PROTECT);
	if (alen == 4)
		put(m, RIPTIDES_PENTRY_ATTR_ADDR4, addr, 4);
	if (alen == 16)
		put(m, RIPTIDES_PENTRY_ATTR_ADDR6, addr, 16);
	if (alen)
		put_u8(m, RIPTIDES_PENTRY_ATTR_PREFIX_LEN, plen);
	put_u16(m, RIPTIDES_PENTRY_ATTR_PORT_MIN, 7000);
	put_u16(m, RIPTIDES_PENTRY_ATTR_PORT_MAX, 7999);
	nest_end(m, n);
}

/* A: egress to B (v4 and v6) on 7000-7999. B: ingress on 7000-7999. */
static int load_policy(struct nl *nl, char side)
{
	uint8_t pass_port[4] = { 0 };
	size_t n;

	rmsg(nl, &M, RIPTIDES_CMD_LOAD_POLICY);
	put_u64(&M, RIPTIDES_ATTR_GENERATION, 1);
	if (side == 'A') {
		/* A PASS entry first: port 7999 is never intercepted (first match wins). */
		n = nest_start(&M, RIPTIDES_ATTR_POLICY_ENTRY);
		put_u32(&M, RIPTIDES_PENTRY_ATTR_RULE_ID, 9);
		put_u8(&M, RIPTIDES_PENTRY_ATTR_DIRECTION, RIPTIDES_DIR_EGRESS);
		put_u8(&M, RIPTIDES_PENTRY_ATTR_ACTION, RIPTIDES_ACTION_PASS);
		put_u16(&M, RIPTIDES_PENTRY_ATTR_PORT_MIN, 7999);
		nest_end(&M, n);
		pentry(&M, 10, RIPTIDES_DIR_EGRESS, B4, 4, 32);
		pentry(&M, 11, RIPTIDES_DIR_EGRESS, B6, 16, 128);
	} else {
		n = nest_start(&M, RIPTIDES_ATTR_POLICY_ENTRY);
		put_u32(&M, RIPTIDES_PENTRY_ATTR_RULE_ID, 19);
		put_u8(&M, RIPTIDES_PENTRY_ATTR_DIRECTION, RIPTIDES_DIR_INGRESS);
		put_u8(&M, RIPTIDES_PENTRY_ATTR_ACTION, RIPTIDES_ACTION_PASS);
		put_u16(&M, RIPTIDES_PENTRY_ATTR_PORT_MIN, 7999);
		nest_end(&M, n);
		pentry(&M, 20, RIPTIDES_DIR_INGRESS, NULL, 0, 0);
	}
	(void)pass_port;
	return nl_transact(nl, &M, NULL, NULL);
}

/* ---------------------------------------------------------------- fake agent */

enum amode {
	AM_KTLS,	/* hello exchange, kTLS, DONE 0 ALLOW */
	AM_IGNORE,	/* never answers */
	AM_VERDICT_ALLOW,
	AM_VERDICT_DENY,
	AM_DONE_DENY,	/* hello exchange, kTLS, DONE 0 DENY */
	AM_DONE_STATUS,	/* hello exchange, DONE EPROTO ALLOW */
	AM_DONE_NOKTLS,	/* hello exchange, no kTLS, DONE 0 ALLOW */
	AM_LATE_ACCEPT,	/* accepts 1 s late (expects ENOENT: the app closed) */
	AM_KTLS_FIRST,	/* AM_KTLS for the first request, AM_IGNORE afterwards */
	AM_ULP_RESET,	/* hello exchange, TCP_ULP, waits for the peer's reset, then TLS_TX */
};

struct agent {
	struct nl nl;
	char side;
	enum amode mode;
	int delay_ms;
	int donepipe[2];
	int nreq;
	uint64_t queue[256];
	uint8_t qdir[256];
	int qlen;
	int checked_busy;
	char name[32];
};

struct req_attrs {
	uint64_t id;
	int dir, cmd, have;
	uint32_t sockfd;
	char exe[256], comm[32];
	uint32_t pid;
	uint16_t pport, lport;
	int alen;
};

static void parse_conn(struct nlmsghdr *n, struct req_attrs *r)
{
	struct genlmsghdr *g = NLMSG_DATA(n);
	struct nlattr *a;
	int rem;

	memset(r, 0, sizeof(*r));
	r->cmd = g->cmd;
	for_each_attr(a, attrs_first(n, &rem), rem) {
		switch (a->nla_type & NLA_TYPE_MASK) {
		case RIPTIDES_ATTR_CONN_ID: memcpy(&r->id, adata(a), 8); r->have = 1; break;
		case RIPTIDES_ATTR_DIRECTION: r->dir = *(uint8_t *)adata(a); break;
		case RIPTIDES_ATTR_SOCKFD: memcpy(&r->sockfd, adata(a), 4); break;
		case RIPTIDES_ATTR_PID: memcpy(&r->pid, adata(a), 4); break;
		case RIPTIDES_ATTR_PEER_PORT: memcpy(&r->pport, adata(a), 2); break;
		case RIPTIDES_ATTR_LOCAL_PORT: memcpy(&r->lport, adata(a), 2); break;
		case RIPTIDES_ATTR_PEER_ADDR: r->alen = a->nla_len - NLA_HDRLEN; break;
		case RIPTIDES_ATTR_EXE:
			snprintf(r->exe, sizeof(r->exe), "%s", (char *)adata(a));
			break;
		case RIPTIDES_ATTR_COMM:
			snprintf(r->comm, sizeof(r->comm), "%s", (char *)adata(a));
			break;
		}
	}
}

static void agent_mcast(struct nlmsghdr *n, void *arg)
{
	struct agent *ag = arg;
	struct req_attrs r;

	parse_conn(n, &r);
	if (r.cmd != RIPTIDES_CMD_HANDSHAKE_REQUEST || !r.have || ag->qlen >= 256)
		return;
	ag->queue[ag->qlen] = r.id;
	ag->qdir[ag->qlen++] = r.dir;
	fprintf(stderr, "agent %s: request id=%llu dir=%d pid=%u comm=%s exe=%s ports %u->%u alen=%d\n",
		ag->name, (unsigned long long)r.id, r.dir, r.pid, r.comm, r.exe, r.lport, r.pport,
		r.alen);
}

/* Fixed test keys: "c2s" protects client -> server, "s2c" server -> client. */
static void crypto_info(struct tls12_crypto_info_aes_gcm_128 *ci, int c2s)
{
	int i;

	memset(ci, 0, sizeof(*ci));
	ci->info.version = TLS_1_2_VERSION;
	ci->info.cipher_type = TLS_CIPHER_AES_GCM_128;
	for (i = 0; i < TLS_CIPHER_AES_GCM_128_KEY_SIZE; i++)
		ci->key[i] = (c2s ? 0x11 : 0x77) + i;
	for (i = 0; i < TLS_CIPHER_AES_GCM_128_IV_SIZE; i++)
		ci->iv[i] = (c2s ? 0x21 : 0x87) + i;
	for (i = 0; i < TLS_CIPHER_AES_GCM_128_SALT_SIZE; i++)
		ci->salt[i] = (c2s ? 0x31 : 0x97) + i;
}

static int install_ktls(int fd, int egress)
{
	struct tls12_crypto_info_aes_gcm_128 tx, rx;

	if (setsockopt(fd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) < 0)
		return -errno;
	crypto_info(&tx, egress);
	crypto_info(&rx, !egress);
	if (setsockopt(fd, SOL_TLS, TLS_TX, &tx, sizeof(tx)) < 0)
		return -errno;
	if (setsockopt(fd, SOL_TLS, TLS_RX, &rx, sizeof(rx)) < 0)
		return -errno;
	return 0;
}

/* I/O on the shared file: never block on the file's flags (MSG_DONTWAIT + poll). */
static int io_exact(int fd, char *buf, size_t len, int send_it, int timeout_ms)
{
	size_t done = 0;
	long deadline = now_ms() + timeout_ms;
	ssize_t r;

	while (done < len) {
		struct pollfd p = { fd, send_it ? POLLOUT : POLLIN, 0 };

		r = send_it ? send(fd, buf + done, len - done, MSG_DONTWAIT | MSG_NOSIGNAL) :
			      recv(fd, buf + done, len - done, MSG_DONTWAIT);
		if (r > 0) {
			done += r;
			continue;
		}
		if (r == 0)
			return -EPIPE;
		if (errno != EAGAIN)
			return -errno;
		if (now_ms() > deadline)
			return -ETIMEDOUT;
		poll(&p, 1, 100);
	}
	return 0;
}

struct job {
	struct agent *ag;
	uint64_t id;
	int fd, egress;
	enum amode mode;
};

struct done_note {
	uint64_t id;
	int fd;
	uint32_t status;
	uint8_t verdict;
};

static void *agent_worker(void *arg)
{
	struct job *j = arg;
	struct done_note d = { j->id, j->fd, 0, RIPTIDES_VERDICT_ALLOW };
	char buf[16];
	int err;

	if (j->egress) {
		err = io_exact(j->fd, "RTHELLO-C", 9, 1, 5000);
		if (!err)
			err = io_exact(j->fd, buf, 9, 0, 5000);
		if (!err && memcmp(buf, "RTHELLO-S", 9))
			err = -EPROTO;
	} else {
		err = io_exact(j->fd, buf, 9, 0, 5000);
		if (!err && memcmp(buf, "RTHELLO-C", 9))
			err = -EPROTO;
		if (!err)
			err = io_exact(j->fd, "RTHELLO-S", 9, 1, 5000);
	}
	if (!err && j->mode == AM_ULP_RESET) {
		/*
		 * The peer refuses and resets after the hello: TCP_ULP went in while held, the
		 * rest of kTLS would come after the refusal. The gate must refuse it (kTLS would
		 * otherwise replace the gated ops and the record would outlive the socket).
		 */
		struct tls12_crypto_info_aes_gcm_128 tx;
		struct pollfd p = { j->fd, POLLIN, 0 };
		int ulp = setsockopt(j->fd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) ? errno : 0;
		int hup, tx_err;

		poll(&p, 1, 5000);
		hup = !!(p.revents & (POLLHUP | POLLERR));
		crypto_info(&tx, j->egress);
		tx_err = setsockopt(j->fd, SOL_TLS, TLS_TX, &tx, sizeof(tx)) ? errno : 0;
		result(!ulp && hup && tx_err == ECONNREFUSED, "refuse/ktls-after-refusal-refused",
		       "TCP_ULP while held: %s; reset seen=%d; TLS_TX after the refusal: want "
		       "ECONNREFUSED got %s", strerror(ulp), hup, strerror(tx_err));
		close(open("/tmp/ulp-reset.done", O_CREAT | O_WRONLY, 0600));
		err = -ECONNRESET;
	} else if (!err && j->mode != AM_DONE_NOKTLS && j->mode != AM_DONE_STATUS) {
		err = install_ktls(j->fd, j->egress);
	}
	if (err)
		fprintf(stderr, "agent %s: conn %llu exchange/kTLS failed: %s\n", j->ag->name,
			(unsigned long long)j->id, strerror(-err));
	if (j->ag->delay_ms)
		msleep(j->ag->delay_ms);
	if (err)
		d.status = -err;
	if (j->mode == AM_DONE_STATUS)
		d.status = EPROTO;
	if (j->mode == AM_DONE_DENY)
		d.verdict = RIPTIDES_VERDICT_DENY;
	if (write(j->ag->donepipe[1], &d, sizeof(d)) != sizeof(d))
		perror("write");
	free(j);
	return NULL;
}

static void agent_handle(struct agent *ag, uint64_t id, int dir)
{
	enum amode mode = ag->mode;
	struct req_attrs r;
	pthread_t t;
	struct job *j;
	int err;

	ag->nreq++;
	if (mode == AM_KTLS_FIRST)
		mode = ag->nreq == 1 ? AM_KTLS : AM_IGNORE;
	switch (mode) {
	case AM_IGNORE:
		return;
	case AM_VERDICT_ALLOW:
	case AM_VERDICT_DENY:
		rmsg(&ag->nl, &M, RIPTIDES_CMD_SET_VERDICT);
		put_u64(&M, RIPTIDES_ATTR_CONN_ID, id);
		put_u8(&M, RIPTIDES_ATTR_VERDICT, mode == AM_VERDICT_ALLOW ? RIPTIDES_VERDICT_ALLOW :
		       RIPTIDES_VERDICT_DENY);
		err = nl_transact(&ag->nl, &M, NULL, NULL);
		if (err)
			fprintf(stderr, "agent %s: SET_VERDICT %llu: %d\n", ag->name,
				(unsigned long long)id, err);
		return;
	case AM_LATE_ACCEPT:
		msleep(1000);
		rmsg(&ag->nl, &M, RIPTIDES_CMD_HANDSHAKE_ACCEPT);
		put_u64(&M, RIPTIDES_ATTR_CONN_ID, id);
		err = nl_transact(&ag->nl, &M, NULL, NULL);
		result(err == -ENOENT, "close-during-handshake/late-accept-enoent",
		       "side=%c accept after the application closed: want=-ENOENT got=%d",
		       ag->side, err);
		return;
	default:
		break;
	}
	rmsg(&ag->nl, &M, RIPTIDES_CMD_HANDSHAKE_ACCEPT);
	put_u64(&M, RIPTIDES_ATTR_CONN_ID, id);
	memset(&r, 0, sizeof(r));
	err = nl_transact(&ag->nl, &M, (msg_cb)parse_conn, &r);
	if (err || !r.sockfd) {
		fprintf(stderr, "agent %s: ACCEPT %llu failed: %d\n", ag->name,
			(unsigned long long)id, err);
		return;
	}
	if (!ag->checked_busy) {
		int flags = fcntl(r.sockfd, F_GETFD);

		ag->checked_busy = 1;
		rmsg(&ag->nl, &M, RIPTIDES_CMD_HANDSHAKE_ACCEPT);
		put_u64(&M, RIPTIDES_ATTR_CONN_ID, id);
		err = nl_transact(&ag->nl, &M, NULL, NULL);
		result(err == -EBUSY && (flags & FD_CLOEXEC) && r.id == id && r.dir == dir,
		       ag->side == 'A' ? "handover/accept-reply-and-ebusy-A" :
					 "handover/accept-reply-and-ebusy-B",
		       "fd=%u cloexec=%d reply id=%llu dir=%d; second accept want=-EBUSY got=%d",
		       r.sockfd, !!(flags & FD_CLOEXEC), (unsigned long long)r.id, r.dir, err);
	}
	j = calloc(1, sizeof(*j));
	j->ag = ag;
	j->id = id;
	j->fd = r.sockfd;
	j->egress = dir == RIPTIDES_DIR_EGRESS;
	j->mode = mode;
	pthread_create(&t, NULL, agent_worker, j);
	pthread_detach(t);
}

static void agent_done(struct agent *ag, struct done_note *d)
{
	int err;

	rmsg(&ag->nl, &M, RIPTIDES_CMD_HANDSHAKE_DONE);
	put_u64(&M, RIPTIDES_ATTR_CONN_ID, d->id);
	put_u32(&M, RIPTIDES_ATTR_STATUS, d->status);
	put_str(&M, RIPTIDES_ATTR_PEER_ID, ag->side == 'A' ? "spiffe://test.org/B" :
							     "spiffe://test.org/A");
	put_u8(&M, RIPTIDES_ATTR_VERDICT, d->verdict);
	err = nl_transact(&ag->nl, &M, NULL, NULL);
	if (err)
		fprintf(stderr, "agent %s: DONE %llu: %d\n", ag->name, (unsigned long long)d->id,
			err);
	close(d->fd);	/* the daemon closes its fd after DONE */
}

/* Runs in a child process inside the namespace; writes 1 byte to ready when registered. */
static void agent_main(char side, enum amode mode, int fail_mode, int timeout_ms, int delay_ms,
		       int ready)
{
	static struct agent ag;
	int grp;

	ag.side = side;
	ag.mode = mode;
	ag.delay_ms = delay_ms;
	ag.checked_busy = !g_check_busy;
	snprintf(ag.name, sizeof(ag.name), "%c/%d", side, mode);
	if (pipe(ag.donepipe) || nl_open(&ag.nl) ||
	    set_config(&ag.nl, side == 'A' ? "agent-A" : "agent-B", fail_mode, timeout_ms) ||
	    load_policy(&ag.nl, side)) {
		fprintf(stderr, "agent %c: setup failed\n", side);
		_exit(100);
	}
	grp = ag.nl.grp;
	if (setsockopt(ag.nl.fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &grp, sizeof(grp))) {
		perror("agent: join events");
		_exit(100);
	}
	mcast_cb = agent_mcast;
	mcast_arg = &ag;
	if (g_self_port) {
		/* The agent's own connections are never intercepted (its tgid). */
		int fd = tcp_connect(AF_INET, g_self_port, 0), err = -1;
		struct timeval tv = { 5, 0 };

		if (fd >= 0) {
			setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
			setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
			err = roundtrip(fd, "from the agent itself");
			close(fd);
		}
		result(fd >= 0 && !err && ag.nreq == 0 && ag.qlen == 0,
		       "policy/agent-own-connection-not-intercepted",
		       "connect=%d roundtrip=%d requests seen by the agent=%d", fd < 0 ? fd : 0,
		       err, ag.qlen);
	}
	if (write(ready, "R", 1) != 1)
		_exit(100);
	close(ready);
	for (;;) {
		struct pollfd p[2] = { { ag.nl.fd, POLLIN, 0 }, { ag.donepipe[0], POLLIN, 0 } };
		int dummy;

		while (ag.qlen) {
			uint64_t id = ag.queue[0];
			int dir = ag.qdir[0];

			ag.qlen--;
			memmove(ag.queue, ag.queue + 1, ag.qlen * sizeof(ag.queue[0]));
			memmove(ag.qdir, ag.qdir + 1, ag.qlen);
			agent_handle(&ag, id, dir);
		}
		if (poll(p, 2, 1000) <= 0)
			continue;
		if (p[0].revents & POLLIN) {
			ssize_t r = recv(ag.nl.fd, rbuf, sizeof(rbuf), MSG_DONTWAIT);

			if (r > 0)
				nl_dispatch(rbuf, r, 0, 0, NULL, NULL, &dummy);
		}
		if (p[1].revents & POLLIN) {
			struct done_note d;

			if (read(ag.donepipe[0], &d, sizeof(d)) == sizeof(d))
				agent_done(&ag, &d);
		}
	}
}

static pid_t start_agent(char side, enum amode mode, int fail_mode, int timeout_ms,
			 int delay_ms)
{
	int p[2];
	char c;
	pid_t pid;

	if (pipe(p))
		return -1;
	pid = fork();
	if (pid == 0) {
		close(p[0]);
		if (enter_ns(side == 'A' ? "A" : "B"))
			_exit(100);
		agent_main(side, mode, fail_mode, timeout_ms, delay_ms, p[1]);
		_exit(0);
	}
	close(p[1]);
	if (read(p[0], &c, 1) != 1) {
		close(p[0]);
		waitpid(pid, NULL, 0);
		return -1;
	}
	close(p[0]);
	return pid;
}

static void stop(pid_t pid)
{
	if (pid <= 0)
		return;
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/* No agent in the namespace: config + policy from a process that exits. */
static int configure_no_agent(char side, int fail_mode)
{
	pid_t pid = fork();
	int st;

	if (pid == 0) {
		struct nl nl;

		if (enter_ns(side == 'A' ? "A" : "B") || nl_open(&nl) ||
		    set_config(&nl, "loader", fail_mode, 3000) || load_policy(&nl, side))
			_exit(1);
		_exit(0);
	}
	waitpid(pid, &st, 0);
	msleep(100);	/* the URELEASE notifier has run when close() returned; be generous */
	return WIFEXITED(st) && !WEXITSTATUS(st) ? 0 : -1;
}

/* ---------------------------------------------------------------- test programs */

/* Echo server in B: each connection: read chunks, answer "pong:" + chunk, until EOF. */
static pid_t start_server(int family, int port)
{
	int p[2];
	char c;
	pid_t pid;

	if (pipe(p))
		return -1;
	pid = fork();
	if (pid == 0) {
		struct sockaddr_in6 s6 = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
		struct sockaddr_in s4 = { .sin_family = AF_INET, .sin_port = htons(port) };
		int one = 1, ls;

		close(p[0]);
		signal(SIGCHLD, SIG_IGN);
		if (enter_ns("B"))
			_exit(100);
		ls = socket(family, SOCK_STREAM, 0);
		setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if ((family == AF_INET ? bind(ls, (struct sockaddr *)&s4, sizeof(s4)) :
					 bind(ls, (struct sockaddr *)&s6, sizeof(s6))) ||
		    listen(ls, 128))
			_exit(101);
		if (write(p[1], "R", 1) != 1)
			_exit(100);
		for (;;) {
			int cs = accept(ls, NULL, NULL);

			if (cs < 0)
				continue;
			if (fork() == 0) {
				char buf[4096], out[4200];
				ssize_t r;

				close(ls);
				while ((r = recv(cs, buf, sizeof(buf), 0)) > 0) {
					memcpy(out, "pong:", 5);
					memcpy(out + 5, buf, r);
					if (send(cs, out, r + 5, MSG_NOSIGNAL) != r + 5)
						break;
				}
				_exit(0);
			}
			close(cs);
		}
	}
	close(p[1]);
	if (read(p[0], &c, 1) != 1) {
		close(p[0]);
		waitpid(pid, NULL, 0);
		return -1;
	}
	close(p[0]);
	return pid;
}

static void stop_server(pid_t pid)
{
	if (pid <= 0)
		return;
	/* The per-connection children exit on EOF; the listener goes now. */
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

static int tcp_connect(int family, int port, int nonblock)
{
	struct sockaddr_in6 s6 = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
	struct sockaddr_in s4 = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(family, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
	int r;

	memcpy(&s4.sin_addr, B4, 4);
	memcpy(&s6.sin6_addr, B6, 16);
	r = family == AF_INET ? connect(fd, (struct sockaddr *)&s4, sizeof(s4)) :
				connect(fd, (struct sockaddr *)&s6, sizeof(s6));
	if (r < 0 && errno == EINPROGRESS) {
		struct tcp_info ti;
		socklen_t l;
		int err = 0, i;

		/*
		 * POLLOUT is masked while the socket is held, so a non-blocking connect looks
		 * complete to poll only once the handshake is done: watch the TCP state.
		 */
		for (i = 0; i < 500; i++) {
			l = sizeof(ti);
			memset(&ti, 0, sizeof(ti));
			getsockopt(fd, SOL_TCP, TCP_INFO, &ti, &l);
			l = sizeof(err);
			getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l);
			if (err || ti.tcpi_state == 1 /* TCP_ESTABLISHED */)
				break;
			msleep(10);
		}
		if (err) {
			errno = err;
			r = -1;
		} else {
			r = ti.tcpi_state == 1 ? 0 : (errno = ETIMEDOUT, -1);
		}
	}
	if (r < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

/* Blocking round trip: send msg, expect "pong:"+msg. Returns 0 or -errno / -1000. */
static int roundtrip(int fd, const char *msg)
{
	char buf[4200];
	size_t want = strlen(msg) + 5, got = 0;
	ssize_t r;

	stage = "roundtrip send";
	if (send(fd, msg, strlen(msg), MSG_NOSIGNAL) != (ssize_t)strlen(msg))
		return -errno;
	stage = "roundtrip recv";
	while (got < want) {
		r = recv(fd, buf + got, sizeof(buf) - got, 0);
		if (r <= 0)
			return r < 0 ? -errno : -1000;
		got += r;
	}
	if (memcmp(buf, "pong:", 5) || memcmp(buf + 5, msg, strlen(msg)))
		return -1001;
	return 0;
}

static int read_file(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY);
	ssize_t r, tot = 0;

	if (fd < 0)
		return -1;
	while ((r = read(fd, buf + tot, len - 1 - tot)) > 0)
		tot += r;
	close(fd);
	buf[tot] = 0;
	return tot;
}

/* Reads a file as seen from a namespace (fork + setns). */
static int ns_read(const char *ns, const char *path, char *buf, size_t len)
{
	int p[2], st;
	ssize_t r, tot = 0;
	pid_t pid;

	if (pipe(p))
		return -1;
	pid = fork();
	if (pid == 0) {
		static char tmp[65536];
		int n;

		close(p[0]);
		if (enter_ns(ns))
			_exit(1);
		n = read_file(path, tmp, sizeof(tmp));
		if (n > 0 && write(p[1], tmp, n) != n)
			_exit(1);
		_exit(0);
	}
	close(p[1]);
	while ((r = read(p[0], buf + tot, len - 1 - tot)) > 0)
		tot += r;
	close(p[0]);
	buf[tot] = 0;
	waitpid(pid, &st, 0);
	return tot;
}

static long long json_num(const char *json, const char *key)
{
	char k[64];
	const char *p;

	snprintf(k, sizeof(k), "\"%s\":", key);
	p = strstr(json, k);
	return p ? atoll(p + strlen(k)) : -1;
}

static long long ns_stat(const char *ns, const char *key)
{
	static char buf[4096];

	if (ns_read(ns, "/proc/riptides/stats", buf, sizeof(buf)) <= 0)
		return -1;
	return json_num(buf, key);
}

static int ns_has(const char *ns, const char *path, const char *needle)
{
	static char buf[65536];

	if (ns_read(ns, path, buf, sizeof(buf)) <= 0)
		return 0;
	return strstr(buf, needle) != NULL;
}

#define NO_DAEMON(ns) ns_has(ns, "/proc/riptides/stats", "\"daemon_connected\":false")

static long long param(const char *name)
{
	char path[128], buf[64];

	snprintf(path, sizeof(path), "/sys/module/riptides/parameters/%s", name);
	if (read_file(path, buf, sizeof(buf)) <= 0)
		return -1;
	return atoll(buf);
}

/* ---------------------------------------------------------------- sniffer */

struct sniffer {
	pid_t pid;
};

#define SNIFF_MARKER 1
#define SNIFF_HELLO 2
#define SNIFF_TLSREC 4

static int memmem_ok(const char *h, size_t hl, const char *n)
{
	return memmem(h, hl, n, strlen(n)) != NULL;
}

/* AF_PACKET on veth "va" in A: which of the marker, the agent hello and a TLS application
 * data record header (0x17 0x03 0x03) crossed the link. */
static int start_sniffer(struct sniffer *s, const char *marker)
{
	int rp[2];
	char c;

	if (pipe(rp))
		return -1;
	s->pid = fork();
	if (s->pid == 0) {
		struct sockaddr_ll ll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL) };
		static char pkt[70000];
		int fd, seen = 0, last = 0;

		close(rp[0]);
		signal(SIGUSR1, on_usr1);
		if (enter_ns("A"))
			_exit(0x80);
		fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
		ll.sll_ifindex = if_nametoindex("va");
		if (fd < 0 || !ll.sll_ifindex || bind(fd, (struct sockaddr *)&ll, sizeof(ll)))
			_exit(0x80);
		if (write(rp[1], "R", 1) != 1)
			_exit(0x80);
		close(rp[1]);
		for (;;) {
			struct pollfd pf = { fd, POLLIN, 0 };
			ssize_t r;

			last = g_stop;
			poll(&pf, 1, 100);
			while ((r = recv(fd, pkt, sizeof(pkt), MSG_DONTWAIT)) > 0) {
				if (memmem_ok(pkt, r, marker))
					seen |= SNIFF_MARKER;
				if (memmem_ok(pkt, r, "RTHELLO"))
					seen |= SNIFF_HELLO;
				if (memmem(pkt, r, "\x17\x03\x03", 3))
					seen |= SNIFF_TLSREC;
			}
			if (last)
				_exit(seen);
		}
	}
	close(rp[1]);
	if (read(rp[0], &c, 1) != 1) {
		close(rp[0]);
		return -1;
	}
	close(rp[0]);
	return 0;
}

static int stop_sniffer(struct sniffer *s)
{
	int st;

	msleep(200);
	kill(s->pid, SIGUSR1);
	waitpid(s->pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 0x80;
}

/* ---------------------------------------------------------------- event listener */

#define EV_REQUEST 1
#define EV_ESTABLISHED 2
#define EV_CLOSED 4
#define EV_ANY 8

struct evl {
	pid_t pid;
};

static void ev_cb(struct nlmsghdr *n, void *arg)
{
	int *seen = arg;
	struct genlmsghdr *g = NLMSG_DATA(n);
	struct nlattr *a;
	int rem;

	*seen |= EV_ANY;
	if (g->cmd == RIPTIDES_CMD_HANDSHAKE_REQUEST)
		*seen |= EV_REQUEST;
	if (g->cmd != RIPTIDES_CMD_CONN_EVENT)
		return;
	for_each_attr(a, attrs_first(n, &rem), rem) {
		if ((a->nla_type & NLA_TYPE_MASK) != RIPTIDES_ATTR_EVENT)
			continue;
		if (*(uint8_t *)adata(a) == RIPTIDES_EVENT_ESTABLISHED)
			*seen |= EV_ESTABLISHED;
		if (*(uint8_t *)adata(a) == RIPTIDES_EVENT_CLOSED)
			*seen |= EV_CLOSED;
	}
}

/* Joins the "events" group in a namespace (NULL: the initial one) and reports what came. */
static int start_events(struct evl *e, const char *ns)
{
	int rp[2];
	char c;

	if (pipe(rp))
		return -1;
	e->pid = fork();
	if (e->pid == 0) {
		struct nl nl;
		int grp, seen = 0, dummy, last;

		close(rp[0]);
		signal(SIGUSR1, on_usr1);
		if ((ns && enter_ns(ns)) || nl_open(&nl))
			_exit(0x80);
		grp = nl.grp;
		if (setsockopt(nl.fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &grp, sizeof(grp)))
			_exit(0x80);
		mcast_cb = ev_cb;
		mcast_arg = &seen;
		if (write(rp[1], "R", 1) != 1)
			_exit(0x80);
		close(rp[1]);
		for (;;) {
			struct pollfd pf = { nl.fd, POLLIN, 0 };
			ssize_t r;

			last = g_stop;
			poll(&pf, 1, 100);
			while ((r = recv(nl.fd, rbuf, sizeof(rbuf), MSG_DONTWAIT)) > 0)
				nl_dispatch(rbuf, r, 0, 0, NULL, NULL, &dummy);
			if (last)
				_exit(seen);
		}
	}
	close(rp[1]);
	if (read(rp[0], &c, 1) != 1) {
		close(rp[0]);
		return -1;
	}
	close(rp[0]);
	return 0;
}

static int stop_events(struct evl *e)
{
	int st;

	msleep(300);
	kill(e->pid, SIGUSR1);
	waitpid(e->pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 0x80;
}

/* ---------------------------------------------------------------- scenarios */

static void on_alarm(int sig)
{
	static char buf[16384];
	int n;

	(void)sig;
	n = snprintf(buf, sizeof(buf), "TIMEOUT in stage %s; A connections: ", stage);
	if (write(2, buf, n) < 0)
		_exit(200);
	n = read_file("/proc/riptides/connections", buf, sizeof(buf));
	if (n > 0 && write(2, buf, n) < 0)
		_exit(200);
	_exit(200);
}

/* Runs fn in a child inside namespace A; returns its exit status (0 = ok), 200 on hang. */
static int in_a(int (*fn)(void *), void *arg, int timeout_s)
{
	pid_t pid = fork();
	int st;

	if (pid == 0) {
		signal(SIGALRM, on_alarm);
		alarm(timeout_s);
		if (enter_ns("A"))
			_exit(100);
		_exit(fn(arg));
	}
	waitpid(pid, &st, 0);
	if (WIFSIGNALED(st))
		return 200;
	return WEXITSTATUS(st);
}

struct cargs {
	int family, port;
	const char *msg;
	char detail[512];
	int v[8];
};

static struct cargs CA;

/* Shared memory would be nicer; details go to stderr and the exit code says what failed. */
static int c_ktls(void *arg)
{
	struct cargs *a = arg;
	static char conns[65536];
	int fd = tcp_connect(a->family, a->port, 0), err;

	if (fd < 0)
		return 1;
	err = roundtrip(fd, a->msg);
	if (err) {
		fprintf(stderr, "c_ktls: roundtrip %d\n", err);
		return 2;
	}
	read_file("/proc/riptides/connections", conns, sizeof(conns));
	fprintf(stderr, "A connections: %s", conns);
	if (!strstr(conns, "\"state\":\"established\"") || !strstr(conns, "\"ktls\":true") ||
	    !strstr(conns, "\"peer_id\":\"spiffe://test.org/B\"") ||
	    !strstr(conns, "\"direction\":\"egress\"") || !strstr(conns, "/bin/kttest"))
		return 3;
	err = roundtrip(fd, "second message over kTLS");
	if (err)
		return 4;
	close(fd);
	return 0;
}

static void scenario_ktls(int family, const char *scen)
{
	struct evl eva, ev0;
	int sa, s0;
	struct sniffer sn;
	pid_t aa, ab, srv;
	int rc, seen;
	long long ok0 = ns_stat("A", "handshakes_ok"), okb0 = ns_stat("B", "handshakes_ok");

	g_check_busy = family == AF_INET;
	aa = start_agent('A', AM_KTLS, RIPTIDES_FAIL_CLOSED, 5000, 0);
	ab = start_agent('B', AM_KTLS, RIPTIDES_FAIL_CLOSED, 5000, 0);
	g_check_busy = 0;
	srv = start_server(family, 7001);
	start_sniffer(&sn, "PLAINTEXT-MARKER-42");
	start_events(&eva, "A");
	start_events(&ev0, NULL);
	CA.family = family;
	CA.port = 7001;
	CA.msg = "PLAINTEXT-MARKER-42 hello";
	rc = in_a(c_ktls, &CA, 20);
	seen = stop_sniffer(&sn);
	sa = stop_events(&eva);
	s0 = stop_events(&ev0);
	if (family == AF_INET)
		result(sa == (EV_ANY | EV_REQUEST | EV_ESTABLISHED | EV_CLOSED) && s0 == 0,
		       "events/request-established-closed-in-own-namespace-only",
		       "namespace A saw request=%d established=%d closed=%d; initial namespace "
		       "saw anything=%d", !!(sa & EV_REQUEST), !!(sa & EV_ESTABLISHED),
		       !!(sa & EV_CLOSED), !!(s0 & EV_ANY));
	result(rc == 0 && !(seen & SNIFF_MARKER) && (seen & SNIFF_HELLO) && (seen & SNIFF_TLSREC) &&
	       ns_stat("A", "handshakes_ok") == ok0 + 1 && ns_stat("B", "handshakes_ok") == okb0 + 1,
	       scen, "client rc=%d (0 ok; 2 roundtrip, 3 /proc row) wire: marker=%d hello=%d "
	       "tls-records=%d handshakes_ok A=%lld B=%lld", rc, !!(seen & SNIFF_MARKER),
	       !!(seen & SNIFF_HELLO), !!(seen & SNIFF_TLSREC), ns_stat("A", "handshakes_ok"),
	       ns_stat("B", "handshakes_ok"));
	stop_server(srv);
	stop(aa);
	stop(ab);
}

/* Hold: non-blocking I/O, poll, epoll (edge) and a blocking send, agents 1.5 s late. */
static int c_hold(void *arg)
{
	struct cargs *a = arg;
	struct epoll_event ev = { .events = EPOLLOUT | EPOLLIN | EPOLLET }, out;
	int fd = tcp_connect(a->family, a->port, 1), ep, n, fails = 0;
	struct pollfd p;
	long t0 = now_ms(), t;
	char buf[64];
	ssize_t r;

	if (fd < 0)
		return 1;
	r = send(fd, "EARLY", 5, MSG_NOSIGNAL);
	if (!(r < 0 && errno == EAGAIN)) {
		fprintf(stderr, "hold: nonblocking send while held: r=%zd errno=%d\n", r, errno);
		fails |= 2;
	}
	r = recv(fd, buf, sizeof(buf), 0);
	if (!(r < 0 && errno == EAGAIN))
		fails |= 4;
	if (setsockopt(fd, SOL_TCP, TCP_ULP, "tls", 4) == 0 || errno != EBUSY)
		fails |= 8;	/* only the agent installs kTLS on a held socket */
	p.fd = fd;
	p.events = POLLOUT | POLLIN;
	p.revents = 0;
	if (poll(&p, 1, 0) != 0) {
		fprintf(stderr, "hold: poll while held: revents=%x\n", p.revents);
		fails |= 16;
	}
	ep = epoll_create1(0);
	epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
	n = epoll_wait(ep, &out, 1, 0);
	if (n != 0)
		fails |= 32;
	n = epoll_wait(ep, &out, 1, 8000);
	t = now_ms() - t0;
	if (n != 1 || !(out.events & EPOLLOUT) || t < 800) {
		fprintf(stderr, "hold: epoll after release n=%d events=%x after %ld ms\n", n,
			out.events, t);
		fails |= 64;
	}
	p.revents = 0;
	if (poll(&p, 1, 0) != 1 || !(p.revents & POLLOUT))
		fails |= 128;
	close(ep);
	/* now released: a (blocking) round trip works */
	fcntl(fd, F_SETFL, 0);
	if (roundtrip(fd, a->msg))
		fails |= 1;
	close(fd);
	return fails;
}

static int c_hold_blocking(void *arg)
{
	struct cargs *a = arg;
	long t0 = now_ms(), t;
	int fd, err;

	stage = "blocking connect";
	fd = tcp_connect(a->family, a->port, 0);
	if (fd < 0)
		return 1;
	stage = "blocking round trip";
	err = roundtrip(fd, a->msg);	/* the send sleeps until the agents are done */
	t = now_ms() - t0;
	fprintf(stderr, "hold-blocking: roundtrip %d after %ld ms\n", err, t);
	close(fd);
	if (err)
		return 2;
	return t >= 800 ? 0 : 3;
}

static void scenario_hold(void)
{
	pid_t aa, ab, srv;
	int rc;

	aa = start_agent('A', AM_KTLS, RIPTIDES_FAIL_CLOSED, 10000, 1500);
	ab = start_agent('B', AM_KTLS, RIPTIDES_FAIL_CLOSED, 10000, 1500);
	srv = start_server(AF_INET, 7002);
	CA.family = AF_INET;
	CA.port = 7002;
	CA.msg = "held then released";
	rc = in_a(c_hold, &CA, 30);
	result(rc == 0, "hold/nonblocking-poll-epoll",
	       "rc=%d (bits: 2 send!=EAGAIN 4 recv!=EAGAIN 8 app TCP_ULP!=EBUSY 16 poll ready "
	       "while held 32 epoll ready while held 64 no epoll EPOLLOUT after release 128 "
	       "poll not ready after release 1 roundtrip)", rc);
	rc = in_a(c_hold_blocking, &CA, 30);
	result(rc == 0, "hold/blocking-send-sleeps-until-done",
	       "rc=%d (0 ok: blocking send returned after the agents' 1.5 s delay, then "
	       "round trip over kTLS)", rc);
	stop_server(srv);
	stop(aa);
	stop(ab);
}

/* Expects the connection to be refused: the first send/recv fails with ECONNREFUSED. */
static int c_refused(void *arg)
{
	struct cargs *a = arg;
	int fd = tcp_connect(a->family, a->port, 0);
	long t0 = now_ms();
	char buf[16];
	ssize_t r;

	if (fd < 0) {
		fprintf(stderr, "refused: port %d connect %d\n", a->port, fd);
		return fd == -ECONNREFUSED ? 0 : 1;
	}
	r = send(fd, "NOPE", 4, MSG_NOSIGNAL);
	if (r >= 0)
		r = recv(fd, buf, sizeof(buf), 0);
	fprintf(stderr, "refused: r=%zd errno=%d after %ld ms\n", r, errno, now_ms() - t0);
	a->v[0] = (int)(now_ms() - t0);
	close(fd);
	return r < 0 && errno == ECONNREFUSED ? 0 : 2;
}

static int c_poll_refused(void *arg)
{
	struct cargs *a = arg;
	int fd = tcp_connect(a->family, a->port, 1);
	struct pollfd p = { fd, POLLIN | POLLOUT, 0 };

	if (fd < 0)
		return fd == -ECONNREFUSED ? 0 : 1;
	if (poll(&p, 1, 8000) != 1 || !(p.revents & POLLERR) || !(p.revents & POLLHUP)) {
		fprintf(stderr, "poll-refused: revents=%x\n", p.revents);
		return 2;
	}
	close(fd);
	return 0;
}

static void scenario_refusals(void)
{
	pid_t aa, ab, srv;
	long long v0, v1;
	int rc, i;

	srv = start_server(AF_INET, 7003);
	CA.family = AF_INET;
	CA.port = 7003;

	/* Timeout: the agents never answer; 600 ms. */
	v0 = ns_stat("A", "handshakes_timed_out");
	aa = start_agent('A', AM_IGNORE, RIPTIDES_FAIL_CLOSED, 600, 0);
	ab = start_agent('B', AM_IGNORE, RIPTIDES_FAIL_CLOSED, 600, 0);
	rc = in_a(c_refused, &CA, 20);
	v1 = ns_stat("A", "handshakes_timed_out");
	result(rc == 0 && v1 == v0 + 1, "refuse/timeout-econnrefused",
	       "rc=%d held send failed with ECONNREFUSED; handshakes_timed_out %lld -> %lld", rc,
	       v0, v1);
	rc = in_a(c_poll_refused, &CA, 20);
	result(rc == 0, "refuse/timeout-poll-err-hup", "rc=%d", rc);
	stop(aa);
	stop(ab);

	/* DENY verdicts */
	aa = start_agent('A', AM_VERDICT_DENY, RIPTIDES_FAIL_CLOSED, 5000, 0);
	ab = start_agent('B', AM_IGNORE, RIPTIDES_FAIL_CLOSED, 5000, 0);
	rc = in_a(c_refused, &CA, 20);
	result(rc == 0, "refuse/set-verdict-deny", "rc=%d", rc);
	stop(aa);
	stop(ab);

	aa = start_agent('A', AM_DONE_DENY, RIPTIDES_FAIL_CLOSED, 5000, 0);
	ab = start_agent('B', AM_KTLS, RIPTIDES_FAIL_CLOSED, 5000, 0);
	rc = in_a(c_refused, &CA, 20);
	result(rc == 0, "refuse/done-verdict-deny", "rc=%d (kTLS installed, verdict DENY)", rc);
	stop(aa);
	stop(ab);

	/* Only A refuses (B completes normally): no reset from B races with A's refusal. */
	aa = start_agent('A', AM_DONE_STATUS, RIPTIDES_FAIL_CLOSED, 5000, 0);
	ab = start_agent('B', AM_KTLS, RIPTIDES_FAIL_CLOSED, 5000, 0);
	rc = in_a(c_refused, &CA, 20);
	result(rc == 0, "refuse/done-bad-status", "rc=%d (status EPROTO)", rc);
	stop(aa);
	stop(ab);

	/*
	 * B refuses 1 s after the hello, by which time A's agent is half-way through
	 * installing kTLS (TCP_ULP in, keys not yet).
	 */
	aa = start_agent('A', AM_ULP_RESET, RIPTIDES_FAIL_CLOSED, 5000, 0);
	ab = start_agent('B', AM_DONE_STATUS, RIPTIDES_FAIL_CLOSED, 5000, 1000);
	unlink("/tmp/ulp-reset.done");
	rc = in_a(c_refused, &CA, 20);
	for (i = 0; i < 50 && access("/tmp/ulp-reset.done", F_OK); i++)
		msleep(100);	/* A's agent reports the kTLS refusal itself */
	result(rc == 0 && i < 50, "refuse/peer-refusal-during-ktls",
	       "rc=%d agent reported=%d", rc, i < 50);
	stop(aa);
	stop(ab);

	aa = start_agent('A', AM_DONE_NOKTLS, RIPTIDES_FAIL_CLOSED, 5000, 0);
	ab = start_agent('B', AM_KTLS, RIPTIDES_FAIL_CLOSED, 5000, 0);
	rc = in_a(c_refused, &CA, 20);
	result(rc == 0, "refuse/done-allow-without-ktls", "rc=%d", rc);
	stop(aa);
	stop(ab);

	/*
	 * No agent, fail-closed (in A; B lets it through, so that no reset from B races with
	 * A's own refusal).
	 */
	v0 = ns_stat("A", "conns_no_daemon");
	configure_no_agent('A', RIPTIDES_FAIL_CLOSED);
	configure_no_agent('B', RIPTIDES_FAIL_OPEN);
	rc = in_a(c_refused, &CA, 20);
	v1 = ns_stat("A", "conns_no_daemon");
	result(rc == 0 && v1 == v0 + 1 && NO_DAEMON("A"),
	       "refuse/no-agent-fail-closed", "rc=%d conns_no_daemon %lld -> %lld", rc, v0, v1);
	stop_server(srv);
}

static int c_plain(void *arg)
{
	struct cargs *a = arg;
	int fd = tcp_connect(a->family, a->port, 0), err;

	if (fd < 0)
		return 1;
	err = roundtrip(fd, a->msg);
	close(fd);
	return err ? 2 : 0;
}

static void scenario_passthrough(void)
{
	struct sniffer sn;
	pid_t aa, ab, srv;
	long long p0, p1;
	int rc, seen;

	srv = start_server(AF_INET, 7004);
	CA.family = AF_INET;
	CA.port = 7004;
	CA.msg = "PLAIN-MARKER-7 fail open";
	configure_no_agent('A', RIPTIDES_FAIL_OPEN);
	configure_no_agent('B', RIPTIDES_FAIL_OPEN);
	p0 = ns_stat("A", "conns_passthrough");
	start_sniffer(&sn, "PLAIN-MARKER-7");
	rc = in_a(c_plain, &CA, 20);
	seen = stop_sniffer(&sn);
	p1 = ns_stat("A", "conns_passthrough");
	result(rc == 0 && (seen & SNIFF_MARKER) && p1 == p0 + 1, "passthrough/no-agent-fail-open",
	       "rc=%d plaintext marker on the wire=%d (expected: fail-open is plaintext) "
	       "conns_passthrough %lld -> %lld", rc, !!(seen & SNIFF_MARKER), p0, p1);

	ab = start_agent('B', AM_VERDICT_ALLOW, RIPTIDES_FAIL_CLOSED, 5000, 0);
	p0 = ns_stat("A", "handshakes_requested");
	g_self_port = 7004;
	aa = start_agent('A', AM_VERDICT_ALLOW, RIPTIDES_FAIL_CLOSED, 5000, 0);
	g_self_port = 0;
	p1 = ns_stat("A", "handshakes_requested");
	result(p1 == p0, "policy/agent-own-connection-no-request",
	       "handshakes_requested in A %lld -> %lld", p0, p1);
	CA.msg = "verdict allow";
	rc = in_a(c_plain, &CA, 20);
	result(rc == 0, "passthrough/set-verdict-allow", "rc=%d", rc);
	/* Port 7999: a PASS entry matches first; no record, no hold, no agent involved. */
	CA.port = 7999;
	stop_server(srv);
	srv = start_server(AF_INET, 7999);
	p0 = param("handshakes_requested");
	rc = in_a(c_plain, &CA, 20);
	result(rc == 0 && param("handshakes_requested") == p0, "policy/pass-entry-first-match",
	       "rc=%d handshakes_requested unchanged=%d", rc, param("handshakes_requested") == p0);
	stop(aa);
	stop(ab);
	stop_server(srv);
}

static int c_close_pending(void *arg)
{
	struct cargs *a = arg;
	int fd = tcp_connect(a->family, a->port, 0);

	if (fd < 0)
		return 1;
	msleep(200);	/* the request is out; nothing accepted it yet */
	close(fd);
	msleep(2000);	/* the agent tries to accept after 1 s */
	return 0;
}

static void scenario_close_during_handshake(void)
{
	pid_t aa, ab, srv;
	long long f0;
	int rc;
	char conns[8192];

	srv = start_server(AF_INET, 7005);
	CA.family = AF_INET;
	CA.port = 7005;
	f0 = ns_stat("A", "handshakes_failed");
	aa = start_agent('A', AM_LATE_ACCEPT, RIPTIDES_FAIL_CLOSED, 5000, 0);
	ab = start_agent('B', AM_IGNORE, RIPTIDES_FAIL_CLOSED, 5000, 0);
	rc = in_a(c_close_pending, &CA, 20);
	ns_read("A", "/proc/riptides/connections", conns, sizeof(conns));
	result(rc == 0 && ns_stat("A", "handshakes_failed") == f0 + 1 && !strstr(conns, "pending"),
	       "close-during-handshake/record-dropped", "rc=%d handshakes_failed %lld -> %lld "
	       "connections=%s", rc, f0, ns_stat("A", "handshakes_failed"), conns);
	stop(aa);
	stop(ab);
	stop_server(srv);
}

/* max_pending = 2: the third protected socket is refused (fail-closed). */
static int c_over_limit(void *arg)
{
	struct cargs *a = arg;
	int f1 = tcp_connect(a->family, a->port, 0), f2, f3;
	char b[8];
	ssize_t r;

	f2 = tcp_connect(a->family, a->port, 0);
	msleep(300);
	f3 = tcp_connect(a->family, a->port, 0);
	if (f1 < 0 || f2 < 0)
		return 1;
	if (f3 >= 0) {
		r = recv(f3, b, sizeof(b), 0);
		if (!(r < 0 && errno == ECONNREFUSED))
			return 2;
		close(f3);
	} else if (f3 != -ECONNREFUSED) {
		return 3;
	}
	close(f1);
	close(f2);
	return 0;
}

static void scenario_max_pending(void)
{
	pid_t aa, ab, srv;
	long long o0;
	int rc, fd;

	srv = start_server(AF_INET, 7006);
	CA.family = AF_INET;
	CA.port = 7006;
	fd = open("/sys/module/riptides/parameters/max_pending", O_WRONLY);
	if (fd < 0 || write(fd, "2", 1) != 1)
		result(0, "limit/max-pending", "cannot set max_pending");
	if (fd >= 0)
		close(fd);
	o0 = param("conns_over_limit");
	aa = start_agent('A', AM_IGNORE, RIPTIDES_FAIL_CLOSED, 5000, 0);
	ab = start_agent('B', AM_VERDICT_ALLOW, RIPTIDES_FAIL_CLOSED, 5000, 0);
	rc = in_a(c_over_limit, &CA, 20);
	result(rc == 0 && param("conns_over_limit") == o0 + 1, "limit/max-pending-refuses-beyond",
	       "rc=%d conns_over_limit %lld -> %lld", rc, o0, param("conns_over_limit"));
	fd = open("/sys/module/riptides/parameters/max_pending", O_WRONLY);
	if (fd >= 0) {
		if (write(fd, "4096", 4) != 4)
			result(0, "limit/max-pending-reset", "write failed");
		close(fd);
	}
	stop(aa);
	stop(ab);
	stop_server(srv);
}

/* GET_CONNECTIONS: a dump of many records spans several dump callbacks. */
struct dumpacc {
	int n, bad;
	uint64_t last;
};

static void dump_cb(struct nlmsghdr *n, void *arg)
{
	struct dumpacc *d = arg;
	struct req_attrs r;

	parse_conn(n, &r);
	if (r.cmd != RIPTIDES_CMD_GET_CONNECTIONS || !r.have || r.id <= d->last)
		d->bad++;
	d->last = r.id;
	d->n++;
}

static int c_many(void *arg)
{
	struct cargs *a = arg;
	int fds[80], i, n = 0, err;
	struct nl nl;
	struct dumpacc d = { 0, 0, 0 };

	for (i = 0; i < 80; i++) {
		fds[i] = tcp_connect(a->family, a->port, 0);
		if (fds[i] >= 0 && !roundtrip(fds[i], "x"))
			n++;
	}
	if (nl_open(&nl))
		return 1;
	msg_init(&M, nl.fam, NLM_F_DUMP, RIPTIDES_CMD_GET_CONNECTIONS, ++nl.seq);
	err = nl_transact(&nl, &M, dump_cb, &d);
	fprintf(stderr, "dump: err=%d n=%d bad=%d connected=%d\n", err, d.n, d.bad, n);
	a->v[0] = d.n;
	for (i = 0; i < 80; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	return err || d.bad || n != 80 || d.n < 80 ? 2 : 0;
}

static void scenario_dump(void)
{
	pid_t aa, ab, srv;
	int rc;

	srv = start_server(AF_INET, 7007);
	CA.family = AF_INET;
	CA.port = 7007;
	aa = start_agent('A', AM_VERDICT_ALLOW, RIPTIDES_FAIL_CLOSED, 5000, 0);
	ab = start_agent('B', AM_VERDICT_ALLOW, RIPTIDES_FAIL_CLOSED, 5000, 0);
	rc = in_a(c_many, &CA, 60);
	result(rc == 0, "get-connections/dump-80-records", "rc=%d (80 passthrough connections "
	       "dumped in order, one message each, across dump callbacks)", rc);
	stop(aa);
	stop(ab);
	stop_server(srv);
}

/* Long-lived kTLS connection: survives the agents' death. */
static void scenario_agent_killed(void)
{
	pid_t aa, ab, srv, cl;
	int cp[2], rp[2], rc = -1, st;
	char c = 0;

	srv = start_server(AF_INET, 7008);
	aa = start_agent('A', AM_KTLS, RIPTIDES_FAIL_CLOSED, 5000, 0);
	ab = start_agent('B', AM_KTLS, RIPTIDES_FAIL_CLOSED, 5000, 0);
	if (pipe(cp) || pipe(rp))
		return;
	cl = fork();
	if (cl == 0) {
		int fd, e1, e2;

		if (enter_ns("A"))
			_exit(100);
		fd = tcp_connect(AF_INET, 7008, 0);
		e1 = fd < 0 ? fd : roundtrip(fd, "before the agents die");
		c = e1 ? 'E' : 'K';
		if (write(rp[1], &c, 1) != 1 || read(cp[0], &c, 1) != 1)
			_exit(100);
		e2 = roundtrip(fd, "after the agents died");
		fprintf(stderr, "agent-killed: before=%d after=%d\n", e1, e2);
		_exit(e1 ? 1 : e2 ? 2 : 0);
	}
	close(rp[1]);
	close(cp[0]);
	if (read(rp[0], &c, 1) == 1 && c == 'K') {
		stop(aa);
		stop(ab);
		aa = ab = 0;
		msleep(300);
		if (write(cp[1], "G", 1) == 1) {
			waitpid(cl, &st, 0);
			rc = WIFEXITED(st) ? WEXITSTATUS(st) : 200;
		}
	} else {
		kill(cl, SIGKILL);
		waitpid(cl, NULL, 0);
	}
	close(rp[0]);
	close(cp[1]);
	result(rc == 0 && NO_DAEMON("A"),
	       "agent-killed/established-ktls-keeps-working", "rc=%d (0: round trip over kTLS "
	       "after both agents were SIGKILLed)", rc);
	/* And new protected connections are refused (fail-closed, no agent in A). */
	stop(ab);
	ab = start_agent('B', AM_VERDICT_ALLOW, RIPTIDES_FAIL_CLOSED, 5000, 0);
	CA.family = AF_INET;
	CA.port = 7008;
	rc = in_a(c_refused, &CA, 20);
	result(rc == 0, "agent-killed/new-connections-refused", "rc=%d", rc);
	stop(aa);
	stop(ab);
	stop_server(srv);
}

/*
 * rmmod with live connections: one established over kTLS, one held (its agent ignores it,
 * a blocking recv waits on it). rmmod must succeed, wake the held one with ECONNREFUSED,
 * and leave the established one working. Then the module is loaded again.
 */
static void scenario_rmmod(const char *ko)
{
	pid_t aa, ab, srv, c1, c2;
	int p1[2], g1[2], p2[2], st1 = -1, st2 = -1, rs;
	char c = 0, cmd[256];

	srv = start_server(AF_INET, 7009);
	aa = start_agent('A', AM_KTLS_FIRST, RIPTIDES_FAIL_CLOSED, 60000, 0);
	ab = start_agent('B', AM_KTLS_FIRST, RIPTIDES_FAIL_CLOSED, 60000, 0);
	if (pipe(p1) || pipe(g1) || pipe(p2))
		return;
	c1 = fork();
	if (c1 == 0) {
		int fd, e1, e2;

		if (enter_ns("A"))
			_exit(100);
		fd = tcp_connect(AF_INET, 7009, 0);
		e1 = fd < 0 ? fd : roundtrip(fd, "established before rmmod");
		c = e1 ? 'E' : 'K';
		if (write(p1[1], &c, 1) != 1 || read(g1[0], &c, 1) != 1)
			_exit(100);
		e2 = roundtrip(fd, "still established after rmmod");
		fprintf(stderr, "rmmod: established before=%d after=%d\n", e1, e2);
		_exit(e1 ? 1 : e2 ? 2 : 0);
	}
	close(p1[1]);
	close(g1[0]);
	if (read(p1[0], &c, 1) != 1 || c != 'K') {
		result(0, "rmmod/live-connections", "first connection did not establish");
		kill(c1, SIGKILL);
		waitpid(c1, NULL, 0);
		stop(aa);
		stop(ab);
		stop_server(srv);
		return;
	}
	c2 = fork();
	if (c2 == 0) {
		int fd;
		char b[16];
		ssize_t r;

		if (enter_ns("A"))
			_exit(100);
		fd = tcp_connect(AF_INET, 7009, 0);
		if (fd < 0)
			_exit(1);
		if (write(p2[1], "H", 1) != 1)
			_exit(100);
		r = recv(fd, b, sizeof(b), 0);	/* held: blocks until rmmod refuses it */
		fprintf(stderr, "rmmod: held recv r=%zd errno=%d\n", r, errno);
		_exit(r < 0 && errno == ECONNREFUSED ? 0 : 2);
	}
	close(p2[1]);
	if (read(p2[0], &c, 1) != 1)
		c = 0;
	msleep(500);
	snprintf(cmd, sizeof(cmd), "rmmod riptides");
	rs = system(cmd);
	waitpid(c2, &st2, 0);
	if (write(g1[1], "G", 1) == 1)
		waitpid(c1, &st1, 0);
	result(rs == 0 && WIFEXITED(st2) && WEXITSTATUS(st2) == 0,
	       "rmmod/held-connection-refused", "rmmod rc=%d held client status=%d", rs,
	       WIFEXITED(st2) ? WEXITSTATUS(st2) : 200);
	result(rs == 0 && WIFEXITED(st1) && WEXITSTATUS(st1) == 0,
	       "rmmod/established-keeps-working", "rmmod rc=%d established client status=%d", rs,
	       WIFEXITED(st1) ? WEXITSTATUS(st1) : 200);
	/* The gated listener (its thread was blocked in the gated accept) serves plain TCP. */
	CA.family = AF_INET;
	CA.port = 7009;
	CA.msg = "after rmmod, plain";
	rs = in_a(c_plain, &CA, 20);
	result(rs == 0, "rmmod/gated-listener-restored", "rc=%d (new connection to the server "
	       "that was listening and blocked in accept() during rmmod)", rs);
	stop(aa);
	stop(ab);
	stop_server(srv);
	snprintf(cmd, sizeof(cmd), "insmod %s", ko);
	rs = system(cmd);
	result(rs == 0, "rmmod/reload", "insmod rc=%d", rs);
}

static void scenario_live_objects(void)
{
	long long lo = -1, conns = -1;
	int i;

	/* Records of closed sockets go when TCP reaches CLOSE (FIN handshakes, TIME_WAIT). */
	for (i = 0; i < 100; i++) {
		lo = param("live_objects");
		conns = param("connections");
		if (lo == 0 && conns == 0)
			break;
		msleep(100);
	}
	if (lo || conns) {
		static char ca[8192], cb[8192];

		ns_read("A", "/proc/riptides/connections", ca, sizeof(ca));
		ns_read("B", "/proc/riptides/connections", cb, sizeof(cb));
		fprintf(stderr, "live objects left: A=%s B=%s", ca, cb);
	}
	result(lo == 0 && conns == 0, "leaks/live-objects-zero",
	       "live_objects=%lld connections=%lld after all test sockets closed", lo, conns);
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "all";

	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	if (!strcmp(mode, "all")) {
		scenario_ktls(AF_INET, "ktls/ipv4-two-namespaces-no-plaintext-on-wire");
		scenario_ktls(AF_INET6, "ktls/ipv6-two-namespaces-no-plaintext-on-wire");
		scenario_hold();
		scenario_refusals();
		scenario_passthrough();
		scenario_close_during_handshake();
		scenario_max_pending();
		scenario_dump();
		scenario_agent_killed();
		scenario_live_objects();
	} else if (!strcmp(mode, "rmmod") && argc > 2) {
		scenario_rmmod(argv[2]);
	} else if (!strcmp(mode, "live-objects")) {
		scenario_live_objects();
	} else {
		fprintf(stderr, "usage: kttest all | rmmod <ko> | live-objects\n");
		return 100;
	}
	return failures > 100 ? 100 : failures;
}
