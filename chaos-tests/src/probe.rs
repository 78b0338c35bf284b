//! Reachability probes that need no external tools: ICMP echo over a raw
//! socket (there is no `ping` binary on the build machine), UDP counting.

use std::io::Read;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::{Error, IoContext, Result};
use crate::netns::Namespace;

static ICMP_ID: AtomicU16 = AtomicU16::new(0x5200);

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word =
            if chunk.len() == 2 { u16::from_be_bytes([chunk[0], chunk[1]]) } else { u16::from_be_bytes([chunk[0], 0]) };
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn echo_once(target: Ipv4Addr, timeout: Duration) -> std::io::Result<Duration> {
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
    let id = ICMP_ID.fetch_add(1, Ordering::Relaxed);
    let mut pkt = vec![8u8, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&1u16.to_be_bytes());
    pkt.extend_from_slice(b"riptides-probe!!");
    let c = checksum(&pkt);
    pkt[2..4].copy_from_slice(&c.to_be_bytes());
    let start = Instant::now();
    let deadline = start + timeout;
    sock.send_to(&pkt, &SockAddr::from(SocketAddr::from((target, 0))))?;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        sock.set_read_timeout(Some(left))?;
        let n = match (&sock).read(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock) => {
                return Err(std::io::ErrorKind::TimedOut.into())
            }
            Err(e) => return Err(e),
        };
        if n < 20 {
            continue;
        }
        let ihl = usize::from(buf[0] & 0x0f) * 4;
        let src = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
        if n < ihl + 8 || src != target {
            continue;
        }
        let icmp = &buf[ihl..n];
        if icmp[0] == 0 && icmp[4..6] == id.to_be_bytes() {
            return Ok(start.elapsed());
        }
    }
}

impl Namespace {
    /// One ICMP echo from this namespace to `target`; the round-trip time,
    /// or a timeout error.
    pub fn ping(&self, target: Ipv4Addr, timeout: Duration) -> Result<Duration> {
        self.run_in(move || echo_once(target, timeout))?.map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => {
                Error::Timeout { what: format!("ICMP echo {} -> {target}", self.name()), after: timeout }
            }
            _ => Error::io(format!("ICMP echo {} -> {target}", self.name()), e),
        })
    }

    /// Whether an ICMP echo to `target` is answered within `timeout`.
    pub fn can_ping(&self, target: Ipv4Addr, timeout: Duration) -> bool {
        self.ping(target, timeout).is_ok()
    }

    /// Bind a UDP socket inside this namespace (e.g. `0.0.0.0:0`).
    pub fn udp_bind(&self, addr: SocketAddr) -> Result<UdpSocket> {
        self.run_in(move || UdpSocket::bind(addr))?.ctx(|| format!("binding UDP {addr} in {}", self.name()))
    }
}

/// Count datagrams arriving on `sock` until `quiet` passes without one
/// (bounded by `max_wait` overall). Returns (count, sources seen).
pub fn count_udp(sock: &UdpSocket, quiet: Duration, max_wait: Duration) -> Result<(usize, Vec<SocketAddr>)> {
    let deadline = Instant::now() + max_wait;
    let mut n = 0;
    let mut sources = Vec::new();
    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
    let s = socket2::SockRef::from(sock);
    while Instant::now() < deadline {
        s.set_read_timeout(Some(quiet)).ctx(|| "set_read_timeout".into())?;
        match s.recv_from(&mut buf) {
            Ok((_, from)) => {
                n += 1;
                if let Some(a) = from.as_socket() {
                    if !sources.contains(&a) {
                        sources.push(a);
                    }
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
            Err(e) => return Err(Error::io("receiving UDP", e)),
        }
    }
    Ok((n, sources))
}
