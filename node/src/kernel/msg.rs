//! The `riptides` family's messages (KERNEL_PATH.md, `linux/riptides.h`): requests the daemon
//! sends, and the kernel's events and replies decoded into typed values.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use riptides_kmod::uapi::*;

use super::genl::{Attr, AttrsExt, CodecError, MsgBuilder, NLM_F_ACK};

/// Which way an intercepted connection goes (egress = the application called `connect`, we
/// are the TLS client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KDirection {
    Egress,
    Ingress,
}

impl KDirection {
    pub fn from_u8(v: u8) -> Result<KDirection, CodecError> {
        match v {
            RIPTIDES_DIR_EGRESS => Ok(KDirection::Egress),
            RIPTIDES_DIR_INGRESS => Ok(KDirection::Ingress),
            other => Err(CodecError::OutOfRange { ty: RIPTIDES_ATTR_DIRECTION, value: other.into() }),
        }
    }
    pub fn as_u8(self) -> u8 {
        match self {
            KDirection::Egress => RIPTIDES_DIR_EGRESS,
            KDirection::Ingress => RIPTIDES_DIR_INGRESS,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
}

impl Verdict {
    pub fn as_u8(self) -> u8 {
        match self {
            Verdict::Allow => RIPTIDES_VERDICT_ALLOW,
            Verdict::Deny => RIPTIDES_VERDICT_DENY,
        }
    }
}

/// The connection context the kernel sends with `HANDSHAKE_REQUEST` (and the accept reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnContext {
    pub conn_id: u64,
    pub direction: KDirection,
    /// The application's end of the socket.
    pub local: SocketAddr,
    /// The remote end.
    pub peer: SocketAddr,
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    pub exe: String,
    pub cgroup_id: u64,
    pub netns_cookie: u64,
    pub rule_id: u32,
}

fn addr(a: &Attr<'_>) -> Result<IpAddr, CodecError> {
    match a.payload.len() {
        4 => Ok(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(a.payload).expect("4")))),
        16 => Ok(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(a.payload).expect("16")))),
        n => Err(CodecError::WrongSize { ty: a.ty, expected: 4, got: n }),
    }
}

fn opt_u32(attrs: &[Attr<'_>], ty: u16) -> Result<u32, CodecError> {
    attrs.attr(ty).map(|a| a.u32()).transpose().map(Option::unwrap_or_default)
}
fn opt_u64(attrs: &[Attr<'_>], ty: u16) -> Result<u64, CodecError> {
    attrs.attr(ty).map(|a| a.u64()).transpose().map(Option::unwrap_or_default)
}
fn opt_str(attrs: &[Attr<'_>], ty: u16, max: usize) -> Result<String, CodecError> {
    Ok(attrs.attr(ty).map(|a| a.str(max)).transpose()?.unwrap_or_default().to_owned())
}

impl ConnContext {
    /// Decodes the context; CONN_ID, DIRECTION, both addresses and ports are required.
    pub fn from_attrs(attrs: &[Attr<'_>]) -> Result<ConnContext, CodecError> {
        let local = SocketAddr::new(
            addr(&attrs.need(RIPTIDES_ATTR_LOCAL_ADDR)?)?,
            attrs.need(RIPTIDES_ATTR_LOCAL_PORT)?.u16()?,
        );
        let peer =
            SocketAddr::new(addr(&attrs.need(RIPTIDES_ATTR_PEER_ADDR)?)?, attrs.need(RIPTIDES_ATTR_PEER_PORT)?.u16()?);
        Ok(ConnContext {
            conn_id: attrs.need(RIPTIDES_ATTR_CONN_ID)?.u64()?,
            direction: KDirection::from_u8(attrs.need(RIPTIDES_ATTR_DIRECTION)?.u8()?)?,
            local,
            peer,
            pid: opt_u32(attrs, RIPTIDES_ATTR_PID)?,
            uid: opt_u32(attrs, RIPTIDES_ATTR_UID)?,
            gid: opt_u32(attrs, RIPTIDES_ATTR_GID)?,
            comm: opt_str(attrs, RIPTIDES_ATTR_COMM, RIPTIDES_COMM_MAX_LEN)?,
            exe: opt_str(attrs, RIPTIDES_ATTR_EXE, RIPTIDES_EXE_MAX_LEN)?,
            cgroup_id: opt_u64(attrs, RIPTIDES_ATTR_CGROUP_ID)?,
            netns_cookie: opt_u64(attrs, RIPTIDES_ATTR_NETNS_COOKIE)?,
            rule_id: opt_u32(attrs, RIPTIDES_ATTR_RULE_ID)?,
        })
    }
}

/// A `CONN_EVENT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnEvent {
    pub conn_id: u64,
    pub event: u8,
    pub status: u32,
}

impl ConnEvent {
    pub fn from_attrs(attrs: &[Attr<'_>]) -> Result<ConnEvent, CodecError> {
        Ok(ConnEvent {
            conn_id: attrs.need(RIPTIDES_ATTR_CONN_ID)?.u64()?,
            event: attrs.need(RIPTIDES_ATTR_EVENT)?.u8()?,
            status: opt_u32(attrs, RIPTIDES_ATTR_STATUS)?,
        })
    }

    pub fn event_name(&self) -> &'static str {
        match self.event {
            RIPTIDES_EVENT_ESTABLISHED => "established",
            RIPTIDES_EVENT_PASSTHROUGH => "passthrough",
            RIPTIDES_EVENT_REFUSED => "refused",
            RIPTIDES_EVENT_TIMED_OUT => "timed-out",
            RIPTIDES_EVENT_CLOSED => "closed",
            _ => "unknown",
        }
    }
}

/// What the kernel multicasts to the "events" group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    HandshakeRequest(ConnContext),
    ConnEvent(ConnEvent),
}

impl Event {
    /// Decodes a multicast message by command; unknown commands are `Ok(None)` (a newer module).
    pub fn decode(cmd: u8, attrs: &[Attr<'_>]) -> Result<Option<Event>, CodecError> {
        match cmd {
            RIPTIDES_CMD_HANDSHAKE_REQUEST => Ok(Some(Event::HandshakeRequest(ConnContext::from_attrs(attrs)?))),
            RIPTIDES_CMD_CONN_EVENT => Ok(Some(Event::ConnEvent(ConnEvent::from_attrs(attrs)?))),
            _ => Ok(None),
        }
    }
}

/// The module's configuration and counters (`GET_STATS`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub trust_domain: String,
    pub daemon_id: String,
    pub fail_mode: u8,
    pub handshake_timeout_ms: u32,
    pub config_updates: u64,
    pub bundle_loads: u64,
    pub policy_loads: u64,
    pub bundle_certs: u32,
    pub bundle_generation: u64,
    pub policy_entries: u32,
    pub policy_generation: u64,
    pub cmds_rejected: u64,
    pub connections: u32,
    pub handshakes_requested: u64,
    pub handshakes_ok: u64,
    pub handshakes_failed: u64,
    pub handshakes_timed_out: u64,
    pub conns_no_daemon: u64,
    pub conns_passthrough: u64,
    pub daemon_connected: bool,
}

impl Stats {
    pub fn from_attrs(attrs: &[Attr<'_>]) -> Result<Stats, CodecError> {
        let mut s = Stats {
            trust_domain: opt_str(attrs, RIPTIDES_ATTR_TRUST_DOMAIN, RIPTIDES_TRUST_DOMAIN_MAX_LEN)?,
            daemon_id: opt_str(attrs, RIPTIDES_ATTR_DAEMON_ID, RIPTIDES_DAEMON_ID_MAX_LEN)?,
            fail_mode: attrs.attr(RIPTIDES_ATTR_FAIL_MODE).map(|a| a.u8()).transpose()?.unwrap_or_default(),
            handshake_timeout_ms: opt_u32(attrs, RIPTIDES_ATTR_HANDSHAKE_TIMEOUT_MS)?,
            ..Stats::default()
        };
        let Some(nest) = attrs.attr(RIPTIDES_ATTR_STATS) else { return Ok(s) };
        let st = nest.nested_attrs()?;
        let u64_of = |ty| opt_u64(&st, ty);
        let u32_of = |ty| opt_u32(&st, ty);
        s.config_updates = u64_of(RIPTIDES_STAT_ATTR_CONFIG_UPDATES)?;
        s.bundle_loads = u64_of(RIPTIDES_STAT_ATTR_BUNDLE_LOADS)?;
        s.policy_loads = u64_of(RIPTIDES_STAT_ATTR_POLICY_LOADS)?;
        s.bundle_certs = u32_of(RIPTIDES_STAT_ATTR_BUNDLE_CERTS)?;
        s.bundle_generation = u64_of(RIPTIDES_STAT_ATTR_BUNDLE_GENERATION)?;
        s.policy_entries = u32_of(RIPTIDES_STAT_ATTR_POLICY_ENTRIES)?;
        s.policy_generation = u64_of(RIPTIDES_STAT_ATTR_POLICY_GENERATION)?;
        s.cmds_rejected = u64_of(RIPTIDES_STAT_ATTR_CMDS_REJECTED)?;
        s.connections = u32_of(RIPTIDES_STAT_ATTR_CONNECTIONS)?;
        s.handshakes_requested = u64_of(RIPTIDES_STAT_ATTR_HANDSHAKES_REQUESTED)?;
        s.handshakes_ok = u64_of(RIPTIDES_STAT_ATTR_HANDSHAKES_OK)?;
        s.handshakes_failed = u64_of(RIPTIDES_STAT_ATTR_HANDSHAKES_FAILED)?;
        s.handshakes_timed_out = u64_of(RIPTIDES_STAT_ATTR_HANDSHAKES_TIMED_OUT)?;
        s.conns_no_daemon = u64_of(RIPTIDES_STAT_ATTR_CONNS_NO_DAEMON)?;
        s.conns_passthrough = u64_of(RIPTIDES_STAT_ATTR_CONNS_PASSTHROUGH)?;
        s.daemon_connected =
            st.attr(RIPTIDES_STAT_ATTR_DAEMON_CONNECTED).map(|a| a.u8()).transpose()?.unwrap_or_default() != 0;
        Ok(s)
    }
}

/// One entry of the kernel's interception table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PolicyEntry {
    pub direction: KDirection,
    pub protect: bool,
    /// Destination (egress) network; `None` = any address.
    pub addr: Option<(IpAddr, u8)>,
    pub port_min: u16,
    pub port_max: u16,
    pub comm: Option<String>,
    pub exe: Option<String>,
}

/// The daemon's configuration for the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSettings {
    pub trust_domain: String,
    pub daemon_id: String,
    pub fail_open: bool,
    pub handshake_timeout_ms: u32,
}

fn req(family: u16, cmd: u8) -> MsgBuilder {
    MsgBuilder::new(family, cmd, RIPTIDES_GENL_VERSION, NLM_F_ACK)
}

pub fn set_config(family: u16, s: &KernelSettings) -> Result<MsgBuilder, CodecError> {
    let mut m = req(family, RIPTIDES_CMD_SET_CONFIG);
    m.str(RIPTIDES_ATTR_TRUST_DOMAIN, &s.trust_domain, RIPTIDES_TRUST_DOMAIN_MAX_LEN)?;
    m.str(RIPTIDES_ATTR_DAEMON_ID, &s.daemon_id, RIPTIDES_DAEMON_ID_MAX_LEN)?;
    m.u8(RIPTIDES_ATTR_FAIL_MODE, if s.fail_open { RIPTIDES_FAIL_OPEN } else { RIPTIDES_FAIL_CLOSED })?;
    let t = s.handshake_timeout_ms.clamp(RIPTIDES_HANDSHAKE_TIMEOUT_MIN_MS, RIPTIDES_HANDSHAKE_TIMEOUT_MAX_MS);
    m.u32(RIPTIDES_ATTR_HANDSHAKE_TIMEOUT_MS, t)?;
    Ok(m)
}

pub fn load_bundle(family: u16, generation: u64, roots_der: &[Vec<u8>]) -> Result<MsgBuilder, CodecError> {
    if roots_der.len() > RIPTIDES_BUNDLE_MAX_CERTS {
        return Err(CodecError::TooLong {
            ty: RIPTIDES_ATTR_BUNDLE_CERT,
            len: roots_der.len(),
            max: RIPTIDES_BUNDLE_MAX_CERTS,
        });
    }
    let mut m = req(family, RIPTIDES_CMD_LOAD_BUNDLE);
    m.u64(RIPTIDES_ATTR_GENERATION, generation)?;
    for der in roots_der {
        m.bytes(RIPTIDES_ATTR_BUNDLE_CERT, der, RIPTIDES_CERT_MAX_LEN)?;
    }
    Ok(m)
}

pub fn load_policy(family: u16, generation: u64, entries: &[PolicyEntry]) -> Result<MsgBuilder, CodecError> {
    if entries.len() > RIPTIDES_POLICY_MAX_ENTRIES {
        return Err(CodecError::TooLong {
            ty: RIPTIDES_ATTR_POLICY_ENTRY,
            len: entries.len(),
            max: RIPTIDES_POLICY_MAX_ENTRIES,
        });
    }
    let mut m = req(family, RIPTIDES_CMD_LOAD_POLICY);
    m.u64(RIPTIDES_ATTR_GENERATION, generation)?;
    for (i, e) in entries.iter().enumerate() {
        m.begin_nested(RIPTIDES_ATTR_POLICY_ENTRY)?;
        m.u32(RIPTIDES_PENTRY_ATTR_RULE_ID, i as u32 + 1)?;
        m.u8(RIPTIDES_PENTRY_ATTR_DIRECTION, e.direction.as_u8())?;
        m.u8(RIPTIDES_PENTRY_ATTR_ACTION, if e.protect { RIPTIDES_ACTION_PROTECT } else { RIPTIDES_ACTION_PASS })?;
        match e.addr {
            Some((IpAddr::V4(a), p)) => {
                m.bytes(RIPTIDES_PENTRY_ATTR_ADDR4, &a.octets(), 4)?;
                m.u8(RIPTIDES_PENTRY_ATTR_PREFIX_LEN, p.min(32))?;
            }
            Some((IpAddr::V6(a), p)) => {
                m.bytes(RIPTIDES_PENTRY_ATTR_ADDR6, &a.octets(), 16)?;
                m.u8(RIPTIDES_PENTRY_ATTR_PREFIX_LEN, p.min(128))?;
            }
            None => {}
        }
        m.u16(RIPTIDES_PENTRY_ATTR_PORT_MIN, e.port_min)?;
        m.u16(RIPTIDES_PENTRY_ATTR_PORT_MAX, e.port_max.max(e.port_min))?;
        if let Some(c) = &e.comm {
            m.str(RIPTIDES_PENTRY_ATTR_COMM, c, RIPTIDES_COMM_MAX_LEN)?;
        }
        if let Some(x) = &e.exe {
            m.str(RIPTIDES_PENTRY_ATTR_EXE, x, RIPTIDES_EXE_MAX_LEN)?;
        }
        m.end_nested()?;
    }
    Ok(m)
}

pub fn set_verdict(family: u16, conn_id: u64, v: Verdict) -> Result<MsgBuilder, CodecError> {
    let mut m = req(family, RIPTIDES_CMD_SET_VERDICT);
    m.u64(RIPTIDES_ATTR_CONN_ID, conn_id)?.u8(RIPTIDES_ATTR_VERDICT, v.as_u8())?;
    Ok(m)
}

pub fn handshake_accept(family: u16, conn_id: u64) -> Result<MsgBuilder, CodecError> {
    let mut m = req(family, RIPTIDES_CMD_HANDSHAKE_ACCEPT);
    m.u64(RIPTIDES_ATTR_CONN_ID, conn_id)?;
    Ok(m)
}

/// `status` is 0 or a positive errno; a peer ID is sent only when known.
pub fn handshake_done(
    family: u16,
    conn_id: u64,
    status: u32,
    peer_id: Option<&str>,
    v: Verdict,
) -> Result<MsgBuilder, CodecError> {
    let mut m = req(family, RIPTIDES_CMD_HANDSHAKE_DONE);
    m.u64(RIPTIDES_ATTR_CONN_ID, conn_id)?.u32(RIPTIDES_ATTR_STATUS, status)?;
    if let Some(p) = peer_id {
        m.str(RIPTIDES_ATTR_PEER_ID, p, RIPTIDES_SPIFFE_ID_MAX_LEN)?;
    }
    m.u8(RIPTIDES_ATTR_VERDICT, v.as_u8())?;
    Ok(m)
}

pub fn get_stats(family: u16) -> MsgBuilder {
    req(family, RIPTIDES_CMD_GET_STATS)
}

/// The fd in a `HANDSHAKE_ACCEPT` reply.
pub fn accept_reply_fd(attrs: &[Attr<'_>]) -> Result<i32, CodecError> {
    let fd = attrs.need(RIPTIDES_ATTR_SOCKFD)?.u32()?;
    i32::try_from(fd).map_err(|_| CodecError::OutOfRange { ty: RIPTIDES_ATTR_SOCKFD, value: fd.into() })
}

#[cfg(test)]
mod tests {
    use super::super::genl::{parse_messages, GENL_HDRLEN, NLMSG_HDRLEN};
    use super::*;

    fn attrs_bytes(m: &MsgBuilder) -> Vec<u8> {
        m.finish(1)[NLMSG_HDRLEN + GENL_HDRLEN..].to_vec()
    }

    fn request_msg(direction: u8, v6: bool) -> MsgBuilder {
        let mut m = MsgBuilder::new(0x20, RIPTIDES_CMD_HANDSHAKE_REQUEST, 1, 0);
        m.u64(RIPTIDES_ATTR_CONN_ID, 77).unwrap().u8(RIPTIDES_ATTR_DIRECTION, direction).unwrap();
        if v6 {
            m.bytes(RIPTIDES_ATTR_LOCAL_ADDR, &Ipv6Addr::LOCALHOST.octets(), 16).unwrap();
            m.bytes(RIPTIDES_ATTR_PEER_ADDR, &"fd00::2".parse::<Ipv6Addr>().unwrap().octets(), 16).unwrap();
        } else {
            m.bytes(RIPTIDES_ATTR_LOCAL_ADDR, &[10, 0, 0, 1], 4).unwrap();
            m.bytes(RIPTIDES_ATTR_PEER_ADDR, &[10, 0, 0, 2], 4).unwrap();
        }
        m.u16(RIPTIDES_ATTR_LOCAL_PORT, 40000).unwrap().u16(RIPTIDES_ATTR_PEER_PORT, 8000).unwrap();
        m.u32(RIPTIDES_ATTR_PID, 1234).unwrap().u32(RIPTIDES_ATTR_UID, 1000).unwrap();
        m.str(RIPTIDES_ATTR_COMM, "curl", 15).unwrap().str(RIPTIDES_ATTR_EXE, "/usr/bin/curl", 1024).unwrap();
        m
    }

    #[test]
    fn handshake_request_decodes() {
        let w = request_msg(RIPTIDES_DIR_EGRESS, false).finish(0);
        let msgs = parse_messages(&w).unwrap();
        let (cmd, _, attrs) = msgs[0].genl().unwrap();
        let Some(Event::HandshakeRequest(c)) = Event::decode(cmd, &attrs).unwrap() else { panic!("not a request") };
        assert_eq!(c.conn_id, 77);
        assert_eq!(c.direction, KDirection::Egress);
        assert_eq!(c.local, "10.0.0.1:40000".parse().unwrap());
        assert_eq!(c.peer, "10.0.0.2:8000".parse().unwrap());
        assert_eq!((c.pid, c.uid, c.comm.as_str(), c.exe.as_str()), (1234, 1000, "curl", "/usr/bin/curl"));
        let a = attrs_bytes(&request_msg(RIPTIDES_DIR_INGRESS, true));
        let c = ConnContext::from_attrs(&super::super::genl::parse_attrs(&a).unwrap()).unwrap();
        assert_eq!(c.direction, KDirection::Ingress);
        assert_eq!(c.peer, "[fd00::2]:8000".parse().unwrap());
    }

    #[test]
    fn bad_requests_are_refused() {
        // Unknown direction.
        let a = attrs_bytes(&request_msg(7, false));
        assert!(ConnContext::from_attrs(&super::super::genl::parse_attrs(&a).unwrap()).is_err());
        // Missing conn id.
        let mut m = MsgBuilder::new(0x20, RIPTIDES_CMD_HANDSHAKE_REQUEST, 1, 0);
        m.u8(RIPTIDES_ATTR_DIRECTION, 0).unwrap();
        let a = attrs_bytes(&m);
        assert_eq!(
            ConnContext::from_attrs(&super::super::genl::parse_attrs(&a).unwrap()).unwrap_err(),
            CodecError::Missing { ty: RIPTIDES_ATTR_LOCAL_ADDR }
        );
        // A 5-byte address.
        let mut m = request_msg(0, false);
        m.bytes(RIPTIDES_ATTR_LOCAL_ADDR, &[1, 2, 3, 4, 5], 16).unwrap();
        let a = attrs_bytes(&m);
        // The first LOCAL_ADDR wins; a message with only the bad one is refused.
        assert!(ConnContext::from_attrs(&super::super::genl::parse_attrs(&a).unwrap()).is_ok());
        let bad = Attr { ty: RIPTIDES_ATTR_LOCAL_ADDR, nested: false, payload: &[1, 2, 3, 4, 5] };
        assert!(addr(&bad).is_err());
        // Unknown command: ignored, not an error.
        assert_eq!(Event::decode(200, &[]).unwrap(), None);
    }

    #[test]
    fn commands_encode_their_attributes() {
        let s = KernelSettings {
            trust_domain: "example.com".into(),
            daemon_id: "node-a".into(),
            fail_open: false,
            handshake_timeout_ms: 5,
        };
        let a = attrs_bytes(&set_config(0x20, &s).unwrap());
        let attrs = super::super::genl::parse_attrs(&a).unwrap();
        assert_eq!(attrs.need(RIPTIDES_ATTR_TRUST_DOMAIN).unwrap().str(255).unwrap(), "example.com");
        // Clamped into the module's accepted range.
        assert_eq!(attrs.need(RIPTIDES_ATTR_HANDSHAKE_TIMEOUT_MS).unwrap().u32().unwrap(), 100);
        assert_eq!(attrs.need(RIPTIDES_ATTR_FAIL_MODE).unwrap().u8().unwrap(), RIPTIDES_FAIL_CLOSED);

        let too_many = vec![vec![1u8]; RIPTIDES_BUNDLE_MAX_CERTS + 1];
        assert!(load_bundle(0x20, 1, &too_many).is_err());
        assert!(load_bundle(0x20, 1, &[vec![0u8; RIPTIDES_CERT_MAX_LEN + 1]]).is_err());
        let a = attrs_bytes(&load_bundle(0x20, 3, &[vec![1, 2], vec![3]]).unwrap());
        let attrs = super::super::genl::parse_attrs(&a).unwrap();
        assert_eq!(attrs.count_of(RIPTIDES_ATTR_BUNDLE_CERT), 2);

        let a = attrs_bytes(&handshake_done(0x20, 9, 0, Some("spiffe://example.com/x"), Verdict::Allow).unwrap());
        let attrs = super::super::genl::parse_attrs(&a).unwrap();
        assert_eq!(attrs.need(RIPTIDES_ATTR_CONN_ID).unwrap().u64().unwrap(), 9);
        assert_eq!(attrs.need(RIPTIDES_ATTR_PEER_ID).unwrap().str(2048).unwrap(), "spiffe://example.com/x");
        assert_eq!(attrs.need(RIPTIDES_ATTR_VERDICT).unwrap().u8().unwrap(), RIPTIDES_VERDICT_ALLOW);
        let a = attrs_bytes(&handshake_done(0x20, 9, 111, None, Verdict::Deny).unwrap());
        let attrs = super::super::genl::parse_attrs(&a).unwrap();
        assert!(attrs.attr(RIPTIDES_ATTR_PEER_ID).is_none());
        assert_eq!(attrs.need(RIPTIDES_ATTR_STATUS).unwrap().u32().unwrap(), 111);

        let e = PolicyEntry {
            direction: KDirection::Egress,
            protect: true,
            addr: Some(("10.1.0.0".parse().unwrap(), 16)),
            port_min: 8000,
            port_max: 8000,
            comm: Some("curl".into()),
            exe: None,
        };
        let a = attrs_bytes(&load_policy(0x20, 5, std::slice::from_ref(&e)).unwrap());
        let attrs = super::super::genl::parse_attrs(&a).unwrap();
        assert_eq!(attrs.need(RIPTIDES_ATTR_GENERATION).unwrap().u64().unwrap(), 5);
        let inner = attrs.need(RIPTIDES_ATTR_POLICY_ENTRY).unwrap().nested_attrs().unwrap();
        assert_eq!(inner.need(RIPTIDES_PENTRY_ATTR_RULE_ID).unwrap().u32().unwrap(), 1);
        assert_eq!(inner.need(RIPTIDES_PENTRY_ATTR_ADDR4).unwrap().bytes(4).unwrap(), &[10, 1, 0, 0]);
        assert_eq!(inner.need(RIPTIDES_PENTRY_ATTR_PREFIX_LEN).unwrap().u8().unwrap(), 16);
        assert_eq!(inner.need(RIPTIDES_PENTRY_ATTR_COMM).unwrap().str(15).unwrap(), "curl");
        assert!(inner.attr(RIPTIDES_PENTRY_ATTR_EXE).is_none());
        let long = PolicyEntry { comm: Some("a-very-long-process-name".into()), ..e.clone() };
        assert!(load_policy(0x20, 1, &[long]).is_err());
        assert!(load_policy(0x20, 1, &vec![e; RIPTIDES_POLICY_MAX_ENTRIES + 1]).is_err());
    }

    #[test]
    fn stats_decode_with_padding_attributes() {
        let mut m = MsgBuilder::new(0x20, RIPTIDES_CMD_GET_STATS, 1, 0);
        m.str(RIPTIDES_ATTR_TRUST_DOMAIN, "example.com", 255).unwrap();
        m.begin_nested(RIPTIDES_ATTR_STATS).unwrap();
        m.bytes(RIPTIDES_STAT_ATTR_PAD, &[], 0).unwrap();
        m.u64(RIPTIDES_STAT_ATTR_HANDSHAKES_OK, 3).unwrap();
        m.u8(RIPTIDES_STAT_ATTR_DAEMON_CONNECTED, 1).unwrap();
        m.u32(RIPTIDES_STAT_ATTR_CONNECTIONS, 2).unwrap();
        m.end_nested().unwrap();
        let a = attrs_bytes(&m);
        let s = Stats::from_attrs(&super::super::genl::parse_attrs(&a).unwrap()).unwrap();
        assert_eq!(s.trust_domain, "example.com");
        assert_eq!((s.handshakes_ok, s.daemon_connected, s.connections), (3, true, 2));
    }
}
