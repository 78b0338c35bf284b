//! Fallback socket lookup through `/proc/net/tcp` and `/proc/net/tcp6`, for kernels or
//! sandboxes where `NETLINK_SOCK_DIAG` is unavailable. Slower (the kernel formats every socket
//! of the namespace) and bounded by a line limit.

use std::io::{self, BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use super::SocketOwner;

/// Lines read per file at most: beyond this the lookup gives up rather than stall a connection.
pub const MAX_LINES: usize = 200_000;

/// Looks up the socket `local` -> `remote` in `<proc_root>/net/tcp{,6}`.
pub fn lookup(proc_root: &Path, local: SocketAddr, remote: SocketAddr) -> io::Result<Option<SocketOwner>> {
    let mut last_err = None;
    for file in ["net/tcp", "net/tcp6"] {
        match scan(&proc_root.join(file), local, remote) {
            Ok(Some(o)) => return Ok(Some(o)),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
    }
    match last_err {
        // Both files unreadable: the fallback is unavailable, not "no such socket".
        Some(e) if !proc_root.join("net/tcp").exists() && !proc_root.join("net/tcp6").exists() => Err(e),
        _ => Ok(None),
    }
}

fn scan(path: &Path, local: SocketAddr, remote: SocketAddr) -> io::Result<Option<SocketOwner>> {
    let f = BufReader::new(std::fs::File::open(path)?);
    for line in f.lines().skip(1).take(MAX_LINES) {
        let line = line?;
        if let Some((l, r, owner)) = parse_line(&line) {
            if same(l, local) && same(r, remote) {
                return Ok(Some(owner));
            }
        }
    }
    Ok(None)
}

/// Compares allowing IPv4-mapped addresses on either side (dual-stack sockets show up in
/// `tcp6` with mapped addresses).
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    let unmap = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    a.port() == b.port() && unmap(a.ip()) == unmap(b.ip())
}

/// `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...`
pub fn parse_line(line: &str) -> Option<(SocketAddr, SocketAddr, SocketOwner)> {
    let f: Vec<&str> = line.split_whitespace().take(10).collect();
    if f.len() < 10 {
        return None;
    }
    let local = parse_addr(f[1])?;
    let remote = parse_addr(f[2])?;
    let uid = f[7].parse().ok()?;
    let inode = f[9].parse().ok()?;
    Some((local, remote, SocketOwner { inode, uid }))
}

/// `0100007F:1F90` (IPv4: one 32-bit word in host byte order) or 32 hex digits (IPv6: four
/// such words), then the port in hex.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (a, p) = s.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    // The kernel prints each word with %08X of its in-memory (native-endian) value.
    let word = |i: usize| u32::from_str_radix(a.get(i * 8..i * 8 + 8)?, 16).ok().map(u32::to_ne_bytes);
    let ip = match a.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v4_and_v6_lines() {
        // Little-endian host: 127.0.0.1 prints as 0100007F.
        let l = "   1: 0100007F:B576 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0 100 0 0 10 0";
        let (a, b, o) = parse_line(l).unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(a, "127.0.0.1:46454".parse().unwrap());
            assert_eq!(b, "127.0.0.1:8080".parse().unwrap());
        }
        assert_eq!(o, SocketOwner { inode: 4242, uid: 1000 });
        let l6 = "   0: 0000000000000000FFFF00000100007F:1F90 00000000000000000000000001000000:0050 01 00000000:00000000 00:00000000 00000000     0        0 77 1";
        let (a, b, _) = parse_line(l6).unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(a, "[::ffff:127.0.0.1]:8080".parse().unwrap());
            assert_eq!(b, "[::1]:80".parse().unwrap());
            assert!(same(a, "127.0.0.1:8080".parse().unwrap()));
        }
        assert!(parse_line("garbage").is_none());
    }
}
