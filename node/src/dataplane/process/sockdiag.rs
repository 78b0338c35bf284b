//! Exact-socket lookup over `NETLINK_SOCK_DIAG` (`inet_diag`): the kernel finds the one TCP
//! socket with the given 4-tuple and reports its inode and owner uid, without dumping (and
//! without us parsing) every socket on the host the way `/proc/net/tcp` requires.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr as NlAddr};

use super::SocketOwner;

/// Upper bound on datagrams read for one request (the answer is one message, or an error).
const MAX_RECVS: usize = 8;

/// Looks up the TCP socket whose local end is `local` and remote end is `remote` (as seen by
/// the owning process). `Ok(None)` when no such socket exists.
///
/// The lookup happens in the network namespace of the calling thread.
pub fn lookup(local: SocketAddr, remote: SocketAddr, timeout: Duration) -> io::Result<Option<SocketOwner>> {
    let (local, remote) = (normalise(local), normalise(remote));
    let family = match (local.ip(), remote.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => AF_INET,
        (IpAddr::V6(_), IpAddr::V6(_)) => AF_INET6,
        _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, "local and remote address families differ")),
    };

    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NlAddr::new(0, 0))?;
    socket2::SockRef::from(&socket).set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;

    let mut header = NetlinkHeader::default();
    // No NLM_F_DUMP: an exact lookup (inet_diag_find_one_icsk), answered with one message.
    header.flags = NLM_F_REQUEST;
    header.sequence_number = 1;
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: SocketId {
                source_port: local.port(),
                destination_port: remote.port(),
                source_address: local.ip(),
                destination_address: remote.ip(),
                interface_id: 0,
                // All 0xff: "no cookie", match by tuple only.
                cookie: [0xff; 8],
            },
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let mut rx = vec![0u8; 16 * 1024];
    for _ in 0..MAX_RECVS {
        let n = socket.recv(&mut &mut rx[..], 0).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock => io::Error::new(io::ErrorKind::TimedOut, "sock_diag did not answer in time"),
            _ => e,
        })?;
        let mut off = 0;
        while off < n {
            let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&rx[off..n])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag answer: {e}")))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    return Ok(Some(SocketOwner { inode: u64::from(r.header.inode), uid: r.header.uid }));
                }
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    let err = e.to_io();
                    return if err.kind() == io::ErrorKind::NotFound { Ok(None) } else { Err(err) };
                }
                NetlinkPayload::Done(_) => return Ok(None),
                _ => {}
            }
            if len == 0 {
                break;
            }
            off += len;
        }
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "sock_diag sent no answer"))
}

/// A v4-mapped IPv6 pair is looked up as IPv4 (the kernel does the same for dual-stack
/// sockets), so callers can pass whatever their listener reported.
fn normalise(sa: SocketAddr) -> SocketAddr {
    match sa.ip() {
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), sa.port()),
            None => sa,
        },
        _ => sa,
    }
}
