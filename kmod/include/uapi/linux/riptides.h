/* SPDX-License-Identifier: ((GPL-2.0 WITH Linux-syscall-note) OR MIT) */
/*
 * riptides.h - userspace API of the riptides.ko generic netlink family.
 *
 * Mirrored in Rust by `riptides_kmod::uapi` (kmod/src/lib.rs); kmod/tests/uapi.rs compiles
 * a C program against this header and checks that every constant matches the Rust side.
 *
 * Conventions:
 *  - One generic netlink family "riptides", version 1, no family-specific header.
 *  - Every command needs CAP_NET_ADMIN (GENL_ADMIN_PERM) and is validated strictly: unknown
 *    attributes, attributes that do not belong to the command, wrong lengths and trailing
 *    data are refused with -EINVAL/-ERANGE; a missing required attribute with -EINVAL.
 *  - Strings are NUL-terminated (NLA_NUL_STRING); the *_MAX_LEN limits exclude the NUL.
 *  - Repeated attributes (bundle certificates, policy entries) are top-level attributes
 *    that appear several times in one message; their count is bounded by the limits below.
 */
#ifndef _UAPI_LINUX_RIPTIDES_H
#define _UAPI_LINUX_RIPTIDES_H

#define RIPTIDES_GENL_NAME		"riptides"
#define RIPTIDES_GENL_VERSION		1
#define RIPTIDES_GENL_MCGRP_EVENTS	"events"

/* Limits (enforced by the attribute policy or by the command handler). */
#define RIPTIDES_TRUST_DOMAIN_MAX_LEN	255	/* SPIFFE trust domain, bytes */
#define RIPTIDES_DAEMON_ID_MAX_LEN	128
#define RIPTIDES_SPIFFE_ID_MAX_LEN	2048
#define RIPTIDES_CERT_MAX_LEN		8192	/* one DER certificate */
#define RIPTIDES_BUNDLE_MAX_CERTS	64
#define RIPTIDES_POLICY_MAX_ENTRIES	1024
#define RIPTIDES_COMM_MAX_LEN		15	/* TASK_COMM_LEN - 1 */
#define RIPTIDES_EXE_MAX_LEN		1024
#define RIPTIDES_HANDSHAKE_TIMEOUT_MIN_MS	100
#define RIPTIDES_HANDSHAKE_TIMEOUT_MAX_MS	60000
#define RIPTIDES_MAX_PENDING		4096	/* held connections per network namespace */

/* Commands. Daemon -> kernel unless noted. */
enum riptides_cmd {
	RIPTIDES_CMD_UNSPEC,
	RIPTIDES_CMD_SET_CONFIG,	/* trust domain, daemon id, fail mode, timeout */
	RIPTIDES_CMD_LOAD_BUNDLE,	/* replaces the trust bundle (DER certificates) */
	RIPTIDES_CMD_LOAD_POLICY,	/* replaces the interception policy table */
	RIPTIDES_CMD_SET_VERDICT,	/* verdict for a held connection */
	RIPTIDES_CMD_HANDSHAKE_ACCEPT,	/* take a pending handshake: replies with a socket fd */
	RIPTIDES_CMD_HANDSHAKE_DONE,	/* handshake result: status, peer SPIFFE ID, verdict */
	RIPTIDES_CMD_GET_CONNECTIONS,	/* dump of tracked connections (NLM_F_DUMP) */
	RIPTIDES_CMD_GET_STATS,		/* reply: configuration summary and counters */
	RIPTIDES_CMD_HANDSHAKE_REQUEST,	/* kernel -> daemon, multicast "events" */
	RIPTIDES_CMD_CONN_EVENT,	/* kernel -> daemon, multicast "events" */
	__RIPTIDES_CMD_MAX,
};
#define RIPTIDES_CMD_MAX (__RIPTIDES_CMD_MAX - 1)

/* Top-level attributes (one space for all commands; each command accepts a subset). */
enum riptides_attr {
	RIPTIDES_ATTR_UNSPEC,
	RIPTIDES_ATTR_TRUST_DOMAIN,	/* NUL string, <= TRUST_DOMAIN_MAX_LEN */
	RIPTIDES_ATTR_DAEMON_ID,	/* NUL string, <= DAEMON_ID_MAX_LEN */
	RIPTIDES_ATTR_FAIL_MODE,	/* u8, enum riptides_fail_mode */
	RIPTIDES_ATTR_HANDSHAKE_TIMEOUT_MS,	/* u32, HANDSHAKE_TIMEOUT_MIN_MS..MAX_MS */
	RIPTIDES_ATTR_GENERATION,	/* u64, caller-chosen version of a bundle/policy */
	RIPTIDES_ATTR_BUNDLE_CERT,	/* binary DER, <= CERT_MAX_LEN, repeated */
	RIPTIDES_ATTR_POLICY_ENTRY,	/* nested enum riptides_pentry_attr, repeated */
	RIPTIDES_ATTR_CONN_ID,		/* u64 */
	RIPTIDES_ATTR_VERDICT,		/* u8, enum riptides_verdict */
	RIPTIDES_ATTR_STATUS,		/* u32, 0 or a positive errno */
	RIPTIDES_ATTR_PEER_ID,		/* NUL string, <= SPIFFE_ID_MAX_LEN */
	RIPTIDES_ATTR_SOCKFD,		/* u32 */
	RIPTIDES_ATTR_STATS,		/* nested enum riptides_stat_attr (replies only) */
	RIPTIDES_ATTR_PAD,
	/* Connection context: HANDSHAKE_REQUEST, CONN_EVENT, HANDSHAKE_ACCEPT reply, dumps. */
	RIPTIDES_ATTR_DIRECTION,	/* u8, enum riptides_direction (egress = TLS client) */
	RIPTIDES_ATTR_LOCAL_ADDR,	/* binary, 4 or 16 bytes (network order) */
	RIPTIDES_ATTR_LOCAL_PORT,	/* u16, host order */
	RIPTIDES_ATTR_PEER_ADDR,	/* binary, 4 or 16 bytes (network order) */
	RIPTIDES_ATTR_PEER_PORT,	/* u16, host order */
	RIPTIDES_ATTR_PID,		/* u32, tgid of the process that connected/listened */
	RIPTIDES_ATTR_UID,		/* u32, its uid (init user namespace) */
	RIPTIDES_ATTR_GID,		/* u32, its gid */
	RIPTIDES_ATTR_COMM,		/* NUL string, <= COMM_MAX_LEN */
	RIPTIDES_ATTR_EXE,		/* NUL string, <= EXE_MAX_LEN (may be truncated) */
	RIPTIDES_ATTR_CGROUP_ID,	/* u64, cgroup v2 id of the process */
	RIPTIDES_ATTR_NETNS_COOKIE,	/* u64, cookie of the socket's network namespace */
	RIPTIDES_ATTR_RULE_ID,		/* u32, policy entry that selected the socket */
	RIPTIDES_ATTR_CONN_STATE,	/* u8, enum riptides_conn_state */
	RIPTIDES_ATTR_EVENT,		/* u8, enum riptides_event (CONN_EVENT) */
	RIPTIDES_ATTR_KTLS,		/* u8, 1 when kTLS (TCP_ULP "tls") is installed */
	__RIPTIDES_ATTR_MAX,
};
#define RIPTIDES_ATTR_MAX (__RIPTIDES_ATTR_MAX - 1)

/* One policy entry (inside RIPTIDES_ATTR_POLICY_ENTRY). */
enum riptides_pentry_attr {
	RIPTIDES_PENTRY_ATTR_UNSPEC,
	RIPTIDES_PENTRY_ATTR_RULE_ID,	/* u32, required */
	RIPTIDES_PENTRY_ATTR_DIRECTION,	/* u8, enum riptides_direction, required */
	RIPTIDES_PENTRY_ATTR_ACTION,	/* u8, enum riptides_action, required */
	RIPTIDES_PENTRY_ATTR_ADDR4,	/* binary, exactly 4 bytes (network order) */
	RIPTIDES_PENTRY_ATTR_ADDR6,	/* binary, exactly 16 bytes */
	RIPTIDES_PENTRY_ATTR_PREFIX_LEN,	/* u8, <= 32 (v4) / 128 (v6) */
	RIPTIDES_PENTRY_ATTR_PORT_MIN,	/* u16, host order */
	RIPTIDES_PENTRY_ATTR_PORT_MAX,	/* u16, host order, >= PORT_MIN */
	RIPTIDES_PENTRY_ATTR_UID,	/* u32, process selector */
	RIPTIDES_PENTRY_ATTR_GID,	/* u32, process selector */
	RIPTIDES_PENTRY_ATTR_COMM,	/* NUL string, <= COMM_MAX_LEN, process selector */
	RIPTIDES_PENTRY_ATTR_EXE,	/* NUL string, <= EXE_MAX_LEN, process selector */
	__RIPTIDES_PENTRY_ATTR_MAX,
};
#define RIPTIDES_PENTRY_ATTR_MAX (__RIPTIDES_PENTRY_ATTR_MAX - 1)

/* Statistics (inside RIPTIDES_ATTR_STATS of a GET_STATS reply). */
enum riptides_stat_attr {
	RIPTIDES_STAT_ATTR_UNSPEC,
	RIPTIDES_STAT_ATTR_CONFIG_UPDATES,	/* u64 */
	RIPTIDES_STAT_ATTR_BUNDLE_LOADS,	/* u64 */
	RIPTIDES_STAT_ATTR_POLICY_LOADS,	/* u64 */
	RIPTIDES_STAT_ATTR_BUNDLE_CERTS,	/* u32, certificates in the current bundle */
	RIPTIDES_STAT_ATTR_BUNDLE_BYTES,	/* u32, DER bytes in the current bundle */
	RIPTIDES_STAT_ATTR_BUNDLE_GENERATION,	/* u64 */
	RIPTIDES_STAT_ATTR_POLICY_ENTRIES,	/* u32, entries in the current policy */
	RIPTIDES_STAT_ATTR_POLICY_GENERATION,	/* u64 */
	RIPTIDES_STAT_ATTR_CMDS_REJECTED,	/* u64, refused by a handler after policy checks */
	RIPTIDES_STAT_ATTR_CONNECTIONS,		/* u32, tracked connections */
	RIPTIDES_STAT_ATTR_PAD,
	RIPTIDES_STAT_ATTR_HANDSHAKES_REQUESTED,	/* u64 */
	RIPTIDES_STAT_ATTR_HANDSHAKES_OK,	/* u64, released with kTLS */
	RIPTIDES_STAT_ATTR_HANDSHAKES_FAILED,	/* u64, refused by the daemon or the verdict */
	RIPTIDES_STAT_ATTR_HANDSHAKES_TIMED_OUT,	/* u64 */
	RIPTIDES_STAT_ATTR_CONNS_NO_DAEMON,	/* u64, protected sockets seen with no daemon */
	RIPTIDES_STAT_ATTR_CONNS_PASSTHROUGH,	/* u64, released in plaintext by verdict or fail-open */
	RIPTIDES_STAT_ATTR_DAEMON_CONNECTED,	/* u8, a daemon is registered in this netns */
	__RIPTIDES_STAT_ATTR_MAX,
};
#define RIPTIDES_STAT_ATTR_MAX (__RIPTIDES_STAT_ATTR_MAX - 1)

enum riptides_fail_mode {
	RIPTIDES_FAIL_CLOSED,		/* refuse protected sockets when no daemon answers */
	RIPTIDES_FAIL_OPEN,		/* let them through in plaintext */
	__RIPTIDES_FAIL_MODE_MAX,
};
#define RIPTIDES_FAIL_MODE_MAX (__RIPTIDES_FAIL_MODE_MAX - 1)

enum riptides_direction {
	RIPTIDES_DIR_EGRESS,		/* connect() */
	RIPTIDES_DIR_INGRESS,		/* accept() */
	__RIPTIDES_DIR_MAX,
};
#define RIPTIDES_DIR_MAX (__RIPTIDES_DIR_MAX - 1)

enum riptides_action {
	RIPTIDES_ACTION_PASS,		/* do not intercept */
	RIPTIDES_ACTION_PROTECT,	/* hand the socket to the daemon for mTLS */
	__RIPTIDES_ACTION_MAX,
};
#define RIPTIDES_ACTION_MAX (__RIPTIDES_ACTION_MAX - 1)

enum riptides_verdict {
	RIPTIDES_VERDICT_ALLOW,
	RIPTIDES_VERDICT_DENY,
	__RIPTIDES_VERDICT_MAX,
};
#define RIPTIDES_VERDICT_MAX (__RIPTIDES_VERDICT_MAX - 1)

/*
 * Life of an intercepted connection. PENDING: held, HANDSHAKE_REQUEST multicast, waiting
 * for HANDSHAKE_ACCEPT. HANDSHAKING: the daemon has the fd. ESTABLISHED: HANDSHAKE_DONE
 * with status 0, verdict ALLOW and kTLS installed; the application is released.
 * PASSTHROUGH: released in plaintext (SET_VERDICT ALLOW before accept, or fail-open).
 * REFUSED: failed (daemon status, DENY, timeout, no daemon in fail-closed mode); the
 * application's I/O fails with ECONNREFUSED and the TCP connection is reset.
 */
enum riptides_conn_state {
	RIPTIDES_CONN_PENDING,
	RIPTIDES_CONN_HANDSHAKING,
	RIPTIDES_CONN_ESTABLISHED,
	RIPTIDES_CONN_PASSTHROUGH,
	RIPTIDES_CONN_REFUSED,
	__RIPTIDES_CONN_STATE_MAX,
};
#define RIPTIDES_CONN_STATE_MAX (__RIPTIDES_CONN_STATE_MAX - 1)

/* CONN_EVENT kinds. */
enum riptides_event {
	RIPTIDES_EVENT_ESTABLISHED,	/* handshake done, application released over kTLS */
	RIPTIDES_EVENT_PASSTHROUGH,	/* released in plaintext */
	RIPTIDES_EVENT_REFUSED,		/* refused (status carries the errno) */
	RIPTIDES_EVENT_TIMED_OUT,	/* no HANDSHAKE_DONE within the timeout */
	RIPTIDES_EVENT_CLOSED,		/* an intercepted socket was released */
	__RIPTIDES_EVENT_MAX,
};
#define RIPTIDES_EVENT_MAX (__RIPTIDES_EVENT_MAX - 1)

#endif /* _UAPI_LINUX_RIPTIDES_H */
