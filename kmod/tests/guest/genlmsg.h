/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * genlmsg.h - the generic netlink request builder shared by the guest test programs
 * (nltest.c, kttest.c): a fixed buffer, attributes appended with their padding, nests.
 * Define GENLMSG_BUFSZ before including. A request that would overflow the buffer ends the
 * program (exit 100): a test must never send a silently truncated message.
 */
#ifndef RIPTIDES_GUEST_GENLMSG_H
#define RIPTIDES_GUEST_GENLMSG_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/netlink.h>

#ifndef GENLMSG_BUFSZ
#error "define GENLMSG_BUFSZ before including genlmsg.h"
#endif

struct msg {
	size_t len;
	uint32_t seq;
	char buf[GENLMSG_BUFSZ] __attribute__((aligned(4)));
};

static inline void put(struct msg *m, uint16_t type, const void *data, size_t len)
{
	struct nlattr *a = (struct nlattr *)(m->buf + m->len);

	if (m->len + NLA_HDRLEN + NLA_ALIGN(len) > GENLMSG_BUFSZ) {
		fprintf(stderr, "genlmsg: message buffer overflow\n");
		exit(100);
	}
	a->nla_type = type;
	a->nla_len = NLA_HDRLEN + len;
	if (len)
		memcpy((char *)a + NLA_HDRLEN, data, len);
	memset((char *)a + NLA_HDRLEN + len, 0, NLA_ALIGN(len) - len);
	m->len += NLA_HDRLEN + NLA_ALIGN(len);
}

static inline void put_u8(struct msg *m, uint16_t t, uint8_t v) { put(m, t, &v, 1); }
static inline void put_u16(struct msg *m, uint16_t t, uint16_t v) { put(m, t, &v, 2); }
static inline void put_u32(struct msg *m, uint16_t t, uint32_t v) { put(m, t, &v, 4); }
static inline void put_u64(struct msg *m, uint16_t t, uint64_t v) { put(m, t, &v, 8); }
static inline void put_str(struct msg *m, uint16_t t, const char *s) { put(m, t, s, strlen(s) + 1); }

static inline size_t nest_start(struct msg *m, uint16_t type)
{
	size_t off = m->len;

	put(m, type | NLA_F_NESTED, NULL, 0);
	return off;
}

static inline void nest_end(struct msg *m, size_t off)
{
	((struct nlattr *)(m->buf + off))->nla_len = m->len - off;
}

#endif
