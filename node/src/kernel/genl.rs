//! A minimal generic netlink codec and socket: netlink message headers, the generic netlink
//! header, and attributes (TLVs), written and parsed by hand with bounds checks everywhere,
//! plus family resolution through `nlctrl` (`CTRL_CMD_GETFAMILY`).
//!
//! Parsing never trusts a length field: every attribute and message length is checked against
//! what is left of the buffer, attribute counts are bounded ([`MAX_ATTRS`]), and nothing
//! allocates more than the input's size. Errors name what was wrong.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_sys::protocols::NETLINK_GENERIC;
use netlink_sys::{Socket, SocketAddr as NlAddr};

/// `struct nlmsghdr` size.
pub const NLMSG_HDRLEN: usize = 16;
/// `struct genlmsghdr` size.
pub const GENL_HDRLEN: usize = 4;
/// `struct nlattr` header size.
pub const NLA_HDRLEN: usize = 4;
/// Attribute type flag bits (`NLA_F_NESTED`, `NLA_F_NET_BYTEORDER`), masked off the type.
pub const NLA_TYPE_MASK: u16 = 0x3fff;
pub const NLA_F_NESTED: u16 = 0x8000;

pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;

/// `GENL_ID_CTRL`: the family id of `nlctrl`.
pub const GENL_ID_CTRL: u16 = 0x10;
pub const CTRL_CMD_GETFAMILY: u8 = 3;
pub const CTRL_ATTR_FAMILY_ID: u16 = 1;
pub const CTRL_ATTR_FAMILY_NAME: u16 = 2;
pub const CTRL_ATTR_VERSION: u16 = 3;
pub const CTRL_ATTR_MCAST_GROUPS: u16 = 7;
pub const CTRL_ATTR_MCAST_GRP_NAME: u16 = 1;
pub const CTRL_ATTR_MCAST_GRP_ID: u16 = 2;

/// Upper bound on attributes parsed from one attribute stream (the family's own limits are
/// far lower: 64 bundle certificates, 1024 policy entries).
pub const MAX_ATTRS: usize = 4096;
/// Upper bound on one netlink datagram we build or accept (the kernel's own messages fit in
/// a page or two; a full bundle is 64 x 8 KiB).
pub const MAX_MESSAGE: usize = 1 << 20;
/// Largest attribute payload (`nla_len` is a u16 including the header).
pub const MAX_ATTR_PAYLOAD: usize = u16::MAX as usize - NLA_HDRLEN;

/// What was wrong with bytes we were asked to parse or a value we were asked to encode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated { what: &'static str, need: usize, have: usize },
    #[error("{what}: length {len} is invalid")]
    BadLength { what: &'static str, len: usize },
    #[error("more than {max} attributes")]
    TooManyAttrs { max: usize },
    #[error("attribute {ty}: expected {expected} bytes, got {got}")]
    WrongSize { ty: u16, expected: usize, got: usize },
    #[error("attribute {ty}: string is not NUL-terminated")]
    NotNulTerminated { ty: u16 },
    #[error("attribute {ty}: string is not UTF-8")]
    NotUtf8 { ty: u16 },
    #[error("attribute {ty}: {len} bytes exceed the limit of {max}")]
    TooLong { ty: u16, len: usize, max: usize },
    #[error("attribute {ty}: string contains a NUL byte")]
    InteriorNul { ty: u16 },
    #[error("missing attribute {ty}")]
    Missing { ty: u16 },
    #[error("message of {len} bytes exceeds the limit of {max}")]
    MessageTooLarge { len: usize, max: usize },
    #[error("attribute {ty}: value {value} is out of range")]
    OutOfRange { ty: u16, value: u64 },
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One parsed attribute: its type (flags masked off) and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    pub ty: u16,
    pub nested: bool,
    pub payload: &'a [u8],
}

impl<'a> Attr<'a> {
    fn exact<const N: usize>(&self) -> Result<[u8; N], CodecError> {
        self.payload.try_into().map_err(|_| CodecError::WrongSize { ty: self.ty, expected: N, got: self.payload.len() })
    }
    pub fn u8(&self) -> Result<u8, CodecError> {
        Ok(self.exact::<1>()?[0])
    }
    pub fn u16(&self) -> Result<u16, CodecError> {
        Ok(u16::from_ne_bytes(self.exact()?))
    }
    pub fn u32(&self) -> Result<u32, CodecError> {
        Ok(u32::from_ne_bytes(self.exact()?))
    }
    pub fn u64(&self) -> Result<u64, CodecError> {
        Ok(u64::from_ne_bytes(self.exact()?))
    }
    /// A NUL-terminated UTF-8 string of at most `max` bytes (without the NUL).
    pub fn str(&self, max: usize) -> Result<&'a str, CodecError> {
        let Some((&0, body)) = self.payload.split_last() else {
            return Err(CodecError::NotNulTerminated { ty: self.ty });
        };
        // A NUL before the end: the kernel's NLA_NUL_STRING takes the first one; so do we.
        let body = match body.iter().position(|b| *b == 0) {
            Some(i) => &body[..i],
            None => body,
        };
        if body.len() > max {
            return Err(CodecError::TooLong { ty: self.ty, len: body.len(), max });
        }
        std::str::from_utf8(body).map_err(|_| CodecError::NotUtf8 { ty: self.ty })
    }
    /// Raw bytes of at most `max`.
    pub fn bytes(&self, max: usize) -> Result<&'a [u8], CodecError> {
        if self.payload.len() > max {
            return Err(CodecError::TooLong { ty: self.ty, len: self.payload.len(), max });
        }
        Ok(self.payload)
    }
    /// The attributes nested inside this one.
    pub fn nested_attrs(&self) -> Result<Vec<Attr<'a>>, CodecError> {
        parse_attrs(self.payload)
    }
}

/// Parses an attribute stream. Every attribute must fit whole; padding after the last one
/// may be absent (the kernel does not always send it), anything else left over is an error.
pub fn parse_attrs(mut buf: &[u8]) -> Result<Vec<Attr<'_>>, CodecError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        if out.len() >= MAX_ATTRS {
            return Err(CodecError::TooManyAttrs { max: MAX_ATTRS });
        }
        if buf.len() < NLA_HDRLEN {
            return Err(CodecError::Truncated { what: "attribute header", need: NLA_HDRLEN, have: buf.len() });
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]);
        if len < NLA_HDRLEN {
            return Err(CodecError::BadLength { what: "attribute", len });
        }
        if len > buf.len() {
            return Err(CodecError::Truncated { what: "attribute", need: len, have: buf.len() });
        }
        out.push(Attr { ty: ty & NLA_TYPE_MASK, nested: ty & NLA_F_NESTED != 0, payload: &buf[NLA_HDRLEN..len] });
        buf = &buf[align4(len).min(buf.len())..];
    }
    Ok(out)
}

/// Lookups over a parsed attribute list.
pub trait AttrsExt<'a> {
    /// The first attribute of type `ty`.
    fn attr(&self, ty: u16) -> Option<Attr<'a>>;
    /// The first attribute of type `ty`, or [`CodecError::Missing`].
    fn need(&self, ty: u16) -> Result<Attr<'a>, CodecError>;
    /// How many attributes of type `ty` there are.
    fn count_of(&self, ty: u16) -> usize;
}

impl<'a> AttrsExt<'a> for [Attr<'a>] {
    fn attr(&self, ty: u16) -> Option<Attr<'a>> {
        self.iter().find(|a| a.ty == ty).copied()
    }
    fn need(&self, ty: u16) -> Result<Attr<'a>, CodecError> {
        self.attr(ty).ok_or(CodecError::Missing { ty })
    }
    fn count_of(&self, ty: u16) -> usize {
        self.iter().filter(|a| a.ty == ty).count()
    }
}

/// Builds one generic netlink request: header, genl header, attributes.
#[derive(Debug, Clone)]
pub struct MsgBuilder {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl MsgBuilder {
    /// A message for `family` with command `cmd`, version `version`, and `flags`
    /// (`NLM_F_REQUEST` is always set). The sequence number is filled in when sent.
    pub fn new(family: u16, cmd: u8, version: u8, flags: u16) -> MsgBuilder {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish()
        buf.extend_from_slice(&family.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // seq
        buf.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills it in
        buf.extend_from_slice(&[cmd, version, 0, 0]);
        MsgBuilder { buf, nests: Vec::new() }
    }

    fn put(&mut self, ty: u16, payload: &[u8]) -> Result<&mut Self, CodecError> {
        if payload.len() > MAX_ATTR_PAYLOAD {
            return Err(CodecError::TooLong { ty, len: payload.len(), max: MAX_ATTR_PAYLOAD });
        }
        if self.buf.len() + align4(NLA_HDRLEN + payload.len()) > MAX_MESSAGE {
            return Err(CodecError::MessageTooLarge { len: self.buf.len() + payload.len(), max: MAX_MESSAGE });
        }
        self.buf.extend_from_slice(&((NLA_HDRLEN + payload.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align4(self.buf.len()), 0);
        Ok(self)
    }

    pub fn u8(&mut self, ty: u16, v: u8) -> Result<&mut Self, CodecError> {
        self.put(ty, &[v])
    }
    pub fn u16(&mut self, ty: u16, v: u16) -> Result<&mut Self, CodecError> {
        self.put(ty, &v.to_ne_bytes())
    }
    pub fn u32(&mut self, ty: u16, v: u32) -> Result<&mut Self, CodecError> {
        self.put(ty, &v.to_ne_bytes())
    }
    pub fn u64(&mut self, ty: u16, v: u64) -> Result<&mut Self, CodecError> {
        self.put(ty, &v.to_ne_bytes())
    }
    /// A NUL-terminated string of at most `max` bytes (without the NUL), without interior NULs.
    pub fn str(&mut self, ty: u16, s: &str, max: usize) -> Result<&mut Self, CodecError> {
        if s.len() > max {
            return Err(CodecError::TooLong { ty, len: s.len(), max });
        }
        if s.as_bytes().contains(&0) {
            return Err(CodecError::InteriorNul { ty });
        }
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.put(ty, &v)
    }
    pub fn bytes(&mut self, ty: u16, b: &[u8], max: usize) -> Result<&mut Self, CodecError> {
        if b.len() > max {
            return Err(CodecError::TooLong { ty, len: b.len(), max });
        }
        self.put(ty, b)
    }
    /// Opens a nested attribute (closed by [`MsgBuilder::end_nested`]).
    pub fn begin_nested(&mut self, ty: u16) -> Result<&mut Self, CodecError> {
        if self.buf.len() + NLA_HDRLEN > MAX_MESSAGE {
            return Err(CodecError::MessageTooLarge { len: self.buf.len(), max: MAX_MESSAGE });
        }
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        Ok(self)
    }
    pub fn end_nested(&mut self) -> Result<&mut Self, CodecError> {
        let start = self.nests.pop().expect("end_nested without begin_nested");
        let len = self.buf.len() - start;
        if len > u16::MAX as usize {
            return Err(CodecError::TooLong { ty: 0, len, max: u16::MAX as usize });
        }
        self.buf[start..start + 2].copy_from_slice(&(len as u16).to_ne_bytes());
        Ok(self)
    }

    /// The finished message with sequence number `seq`.
    pub fn finish(&self, seq: u32) -> Vec<u8> {
        assert!(self.nests.is_empty(), "unclosed nested attribute");
        let mut b = self.buf.clone();
        let len = b.len() as u32;
        b[0..4].copy_from_slice(&len.to_ne_bytes());
        b[8..12].copy_from_slice(&seq.to_ne_bytes());
        b
    }
}

/// One netlink message out of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NlMsg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub pid: u32,
    /// Everything after the netlink header.
    pub payload: &'a [u8],
}

impl<'a> NlMsg<'a> {
    /// For `NLMSG_ERROR`: the (negative) errno, 0 for an ACK.
    pub fn error_code(&self) -> Result<i32, CodecError> {
        if self.payload.len() < 4 {
            return Err(CodecError::Truncated { what: "nlmsgerr", need: 4, have: self.payload.len() });
        }
        Ok(i32::from_ne_bytes(self.payload[0..4].try_into().expect("4 bytes")))
    }

    /// For a generic netlink message: the command, version and attributes.
    pub fn genl(&self) -> Result<(u8, u8, Vec<Attr<'a>>), CodecError> {
        if self.payload.len() < GENL_HDRLEN {
            return Err(CodecError::Truncated { what: "genlmsghdr", need: GENL_HDRLEN, have: self.payload.len() });
        }
        Ok((self.payload[0], self.payload[1], parse_attrs(&self.payload[GENL_HDRLEN..])?))
    }
}

/// Splits a datagram into netlink messages (each length checked).
pub fn parse_messages(mut buf: &[u8]) -> Result<Vec<NlMsg<'_>>, CodecError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        if out.len() >= MAX_ATTRS {
            return Err(CodecError::TooManyAttrs { max: MAX_ATTRS });
        }
        if buf.len() < NLMSG_HDRLEN {
            return Err(CodecError::Truncated { what: "nlmsghdr", need: NLMSG_HDRLEN, have: buf.len() });
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().expect("4")) as usize;
        if len < NLMSG_HDRLEN {
            return Err(CodecError::BadLength { what: "netlink message", len });
        }
        if len > buf.len() {
            return Err(CodecError::Truncated { what: "netlink message", need: len, have: buf.len() });
        }
        out.push(NlMsg {
            ty: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes(buf[8..12].try_into().expect("4")),
            pid: u32::from_ne_bytes(buf[12..16].try_into().expect("4")),
            payload: &buf[NLMSG_HDRLEN..len],
        });
        buf = &buf[align4(len).min(buf.len())..];
    }
    Ok(out)
}

/// A resolved generic netlink family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    pub name: String,
    pub id: u16,
    pub version: u32,
    /// Multicast groups by name.
    pub mcast_groups: Vec<(String, u32)>,
}

impl Family {
    pub fn group(&self, name: &str) -> Option<u32> {
        self.mcast_groups.iter().find(|(n, _)| n == name).map(|(_, id)| *id)
    }

    /// Parses a `CTRL_CMD_NEWFAMILY` answer's attributes.
    pub fn from_attrs(attrs: &[Attr<'_>]) -> Result<Family, CodecError> {
        let name = attrs.need(CTRL_ATTR_FAMILY_NAME)?.str(64)?.to_owned();
        let id = attrs.need(CTRL_ATTR_FAMILY_ID)?.u16()?;
        let version = attrs.attr(CTRL_ATTR_VERSION).map(|a| a.u32()).transpose()?.unwrap_or(0);
        let mut mcast_groups = Vec::new();
        if let Some(groups) = attrs.attr(CTRL_ATTR_MCAST_GROUPS) {
            for g in groups.nested_attrs()? {
                let inner = g.nested_attrs()?;
                let gname = inner.need(CTRL_ATTR_MCAST_GRP_NAME)?.str(64)?.to_owned();
                let gid = inner.need(CTRL_ATTR_MCAST_GRP_ID)?.u32()?;
                mcast_groups.push((gname, gid));
            }
        }
        Ok(Family { name, id, version, mcast_groups })
    }
}

/// The `CTRL_CMD_GETFAMILY` request for `name`.
pub fn getfamily_request(name: &str) -> Result<MsgBuilder, CodecError> {
    let mut m = MsgBuilder::new(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1, NLM_F_ACK);
    m.str(CTRL_ATTR_FAMILY_NAME, name, 64)?;
    Ok(m)
}

/// Opens a `NETLINK_GENERIC` socket bound to an automatic port id.
pub fn open_socket() -> io::Result<Socket> {
    let mut s = Socket::new(NETLINK_GENERIC)?;
    s.bind_auto()?;
    s.connect(&NlAddr::new(0, 0))?;
    Ok(s)
}

/// Resolves a family by name through `nlctrl`, blocking up to `timeout`. `Ok(None)` when
/// the kernel has no such family (the module is not loaded).
pub fn resolve_family(name: &str, timeout: Duration) -> io::Result<Option<Family>> {
    let s = open_socket()?;
    socket2::SockRef::from(&s).set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
    let seq = 1;
    let req = getfamily_request(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?.finish(seq);
    s.send(&req, 0)?;
    let mut family = None;
    let mut buf = vec![0u8; 64 * 1024];
    // Bounded: the answer is one message and an ACK; anything else is skipped a few times.
    for _ in 0..16 {
        let n = s.recv(&mut &mut buf[..], 0).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock => io::Error::new(io::ErrorKind::TimedOut, "nlctrl did not answer in time"),
            _ => e,
        })?;
        let msgs = parse_messages(&buf[..n]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        for m in msgs {
            if m.seq != seq {
                continue;
            }
            match m.ty {
                NLMSG_ERROR => {
                    let code = m.error_code().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    return match code {
                        0 => family
                            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "ACK without a family"))
                            .map(Some),
                        c if -c == libc::ENOENT => Ok(None),
                        c => Err(io::Error::from_raw_os_error(-c)),
                    };
                }
                GENL_ID_CTRL => {
                    let (_, _, attrs) = m.genl().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    family =
                        Some(Family::from_attrs(&attrs).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?);
                }
                _ => {}
            }
        }
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "nlctrl sent no ACK"))
}

/// The raw fd of a netlink socket (for `AsyncFd`).
pub fn raw_fd(s: &Socket) -> std::os::fd::RawFd {
    s.as_raw_fd()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs_of(m: &MsgBuilder) -> Vec<u8> {
        m.finish(7)[NLMSG_HDRLEN + GENL_HDRLEN..].to_vec()
    }

    #[test]
    fn round_trip_scalars_strings_nested() {
        let mut m = MsgBuilder::new(0x20, 5, 1, NLM_F_ACK);
        m.u8(1, 0xab).unwrap().u16(2, 0xbeef).unwrap().u32(3, 0xdead_beef).unwrap().u64(4, u64::MAX - 1).unwrap();
        m.str(5, "spiffe://x/y", 64).unwrap().bytes(6, &[1, 2, 3], 8).unwrap();
        m.begin_nested(7).unwrap().u32(1, 9).unwrap().str(2, "n", 4).unwrap().end_nested().unwrap();
        let wire = m.finish(42);
        let msgs = parse_messages(&wire).unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!((msgs[0].ty, msgs[0].seq), (0x20, 42));
        assert_eq!(msgs[0].flags, NLM_F_REQUEST | NLM_F_ACK);
        let (cmd, ver, attrs) = msgs[0].genl().unwrap();
        assert_eq!((cmd, ver), (5, 1));
        assert_eq!(attrs.need(1).unwrap().u8().unwrap(), 0xab);
        assert_eq!(attrs.need(2).unwrap().u16().unwrap(), 0xbeef);
        assert_eq!(attrs.need(3).unwrap().u32().unwrap(), 0xdead_beef);
        assert_eq!(attrs.need(4).unwrap().u64().unwrap(), u64::MAX - 1);
        assert_eq!(attrs.need(5).unwrap().str(64).unwrap(), "spiffe://x/y");
        assert_eq!(attrs.need(6).unwrap().bytes(8).unwrap(), &[1, 2, 3]);
        let n = attrs.need(7).unwrap();
        assert!(n.nested);
        let inner = n.nested_attrs().unwrap();
        assert_eq!(inner.need(1).unwrap().u32().unwrap(), 9);
        assert_eq!(inner.need(2).unwrap().str(4).unwrap(), "n");
        assert_eq!(attrs.need(99).unwrap_err(), CodecError::Missing { ty: 99 });
        // Every attribute starts 4-aligned: the total is a multiple of 4.
        assert_eq!(wire.len() % 4, 0);
    }

    #[test]
    fn repeated_attributes_are_all_kept() {
        let mut m = MsgBuilder::new(0x20, 2, 1, 0);
        for i in 0..5u32 {
            m.bytes(6, &i.to_ne_bytes(), 8).unwrap();
        }
        let a = attrs_of(&m);
        let attrs = parse_attrs(&a).unwrap();
        assert_eq!(attrs.count_of(6), 5);
    }

    #[test]
    fn truncated_and_garbage_input_is_refused() {
        let mut m = MsgBuilder::new(0x20, 2, 1, 0);
        m.u32(1, 5).unwrap().str(2, "abc", 8).unwrap();
        let a = attrs_of(&m);
        // Every strict prefix that cuts an attribute is an error, never a panic.
        for cut in 1..a.len() {
            if cut == 8 {
                continue; // exactly after the first attribute: a valid shorter stream
            }
            assert!(parse_attrs(&a[..cut]).is_err(), "prefix of {cut} bytes parsed");
        }
        // A length below the header size, or beyond the buffer.
        assert!(matches!(parse_attrs(&[2, 0, 1, 0]), Err(CodecError::BadLength { .. })));
        assert!(matches!(parse_attrs(&[200, 0, 1, 0, 0, 0, 0, 0]), Err(CodecError::Truncated { .. })));
        // Wrong sizes for scalar getters.
        let attrs = parse_attrs(&a).unwrap();
        assert!(matches!(attrs[0].u64(), Err(CodecError::WrongSize { expected: 8, got: 4, .. })));
        assert!(matches!(attrs[0].u8(), Err(CodecError::WrongSize { .. })));
        // Strings: not terminated, too long, not UTF-8.
        let unterminated = Attr { ty: 3, nested: false, payload: b"abc" };
        assert!(matches!(unterminated.str(8), Err(CodecError::NotNulTerminated { .. })));
        assert!(matches!(attrs[1].str(2), Err(CodecError::TooLong { .. })));
        let bad = Attr { ty: 3, nested: false, payload: &[0xff, 0xfe, 0] };
        assert!(matches!(bad.str(8), Err(CodecError::NotUtf8 { .. })));
        let empty = Attr { ty: 3, nested: false, payload: &[] };
        assert!(empty.str(8).is_err());
        // Messages: short header, bad length, truncated.
        assert!(parse_messages(&[0u8; 10]).is_err());
        let mut w = MsgBuilder::new(0x20, 1, 1, 0).finish(1);
        w[0..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(matches!(parse_messages(&w), Err(CodecError::BadLength { .. })));
        w[0..4].copy_from_slice(&400u32.to_ne_bytes());
        assert!(matches!(parse_messages(&w), Err(CodecError::Truncated { .. })));
        // Deterministic pseudo-random garbage never panics.
        let mut x: u32 = 0x1234_5678;
        for _ in 0..2000 {
            let len = (x % 64) as usize;
            let mut g = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                g.push(x as u8);
            }
            if let Ok(v) = parse_attrs(&g) {
                v.iter().for_each(|a| drop(a.nested_attrs()));
            }
            if let Ok(v) = parse_messages(&g) {
                v.iter().for_each(|m| drop(m.genl()));
            }
        }
    }

    #[test]
    fn oversized_values_are_refused_when_encoding() {
        let mut m = MsgBuilder::new(0x20, 1, 1, 0);
        assert!(matches!(m.str(1, "toolong", 3), Err(CodecError::TooLong { .. })));
        assert!(matches!(m.str(1, "a\0b", 8), Err(CodecError::InteriorNul { .. })));
        assert!(matches!(m.bytes(1, &[0; 10], 9), Err(CodecError::TooLong { .. })));
        let huge = vec![0u8; MAX_ATTR_PAYLOAD + 1];
        assert!(matches!(m.bytes(1, &huge, usize::MAX), Err(CodecError::TooLong { .. })));
        // The whole message is bounded too.
        let chunk = vec![0u8; 60_000];
        let mut filled = 0;
        let err = loop {
            match m.bytes(2, &chunk, usize::MAX) {
                Ok(_) => filled += 1,
                Err(e) => break e,
            }
            assert!(filled < 100, "the message limit never applied");
        };
        assert!(matches!(err, CodecError::MessageTooLarge { .. }));
    }

    #[test]
    fn attribute_count_is_bounded() {
        let one = [4u8, 0, 1, 0];
        let many: Vec<u8> = one.iter().copied().cycle().take(4 * (MAX_ATTRS + 1)).collect();
        assert_eq!(parse_attrs(&many).unwrap_err(), CodecError::TooManyAttrs { max: MAX_ATTRS });
        let ok: Vec<u8> = one.iter().copied().cycle().take(4 * MAX_ATTRS).collect();
        assert_eq!(parse_attrs(&ok).unwrap().len(), MAX_ATTRS);
    }

    #[test]
    fn family_answer_parses() {
        let mut m = MsgBuilder::new(GENL_ID_CTRL, 1, 2, 0);
        m.u16(CTRL_ATTR_FAMILY_ID, 0x1d).unwrap().str(CTRL_ATTR_FAMILY_NAME, "riptides", 64).unwrap();
        m.u32(CTRL_ATTR_VERSION, 1).unwrap();
        m.begin_nested(CTRL_ATTR_MCAST_GROUPS).unwrap();
        m.begin_nested(1).unwrap();
        m.str(CTRL_ATTR_MCAST_GRP_NAME, "events", 64).unwrap().u32(CTRL_ATTR_MCAST_GRP_ID, 11).unwrap();
        m.end_nested().unwrap().end_nested().unwrap();
        let w = m.finish(1);
        let msgs = parse_messages(&w).unwrap();
        let (_, _, attrs) = msgs[0].genl().unwrap();
        let f = Family::from_attrs(&attrs).unwrap();
        assert_eq!(
            f,
            Family { name: "riptides".into(), id: 0x1d, version: 1, mcast_groups: vec![("events".into(), 11)] }
        );
        assert_eq!(f.group("events"), Some(11));
        assert_eq!(f.group("other"), None);
    }
}
