//! Socket helpers for the userspace dataplane: the original destination of a redirected
//! connection, and the mark that keeps the daemon's own connections out of the capture.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use socket2::SockRef;

use super::ruleset::unmap_sa;

/// The destination the application asked for, before the nftables `redirect` rewrote it
/// (`SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST`, answered from the conntrack entry).
///
/// Works for `std` and `tokio` streams alike. The family is chosen from the socket's local
/// address (an IPv4-mapped address means an IPv4 flow on a dual-stack socket); the other
/// family is tried if the first fails. IPv4-mapped results are returned as plain IPv4.
/// For a connection that was not redirected the answer is its own local address when
/// conntrack tracks it, and `ENOENT` when it does not: callers compare with `local_addr()`
/// when they must tell the two apart.
pub fn original_dst<S: AsFd>(stream: &S) -> io::Result<SocketAddr> {
    let sock = SockRef::from(stream);
    let local = sock.local_addr()?.as_socket();
    let v6_first = matches!(local, Some(SocketAddr::V6(a)) if a.ip().to_ipv4_mapped().is_none());
    let attempt = |v6: bool| if v6 { sock.original_dst_v6() } else { sock.original_dst_v4() };
    let addr = match attempt(v6_first) {
        Ok(a) => a,
        Err(first) => attempt(!v6_first).map_err(|_| first)?,
    };
    addr.as_socket()
        .map(unmap_sa)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "SO_ORIGINAL_DST returned a non-IP address"))
}

/// Sets `SO_MARK` so the capture rules skip this socket's packets. Must be called before
/// `connect` (the output hook sees the SYN). Needs `CAP_NET_ADMIN`.
pub fn mark_socket<S: AsFd>(socket: &S, mark: u32) -> io::Result<()> {
    SockRef::from(socket).set_mark(mark)
}
