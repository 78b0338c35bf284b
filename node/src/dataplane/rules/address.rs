//! Matching a destination against a Service's `addresses` entries.
//!
//! An entry is an IP address, a CIDR, or a DNS name. IPs and CIDRs are compared with the
//! destination the connection was actually made to; a DNS name can only be compared with the
//! SNI the application put in its ClientHello (we never resolve names here: a lookup in the
//! connect path would add latency and a DNS answer can be forged, the ClientHello is what the
//! application itself asked for).

use std::net::{IpAddr, SocketAddr};

/// One parsed `addresses[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressMatch {
    Ip(IpAddr),
    Cidr {
        network: IpAddr,
        prefix: u8,
    },
    /// Lower-cased, without a trailing dot.
    Dns(String),
}

/// How precisely an address entry matched; higher is more specific. Used to order candidate
/// Services when several cover the same destination.
pub type Specificity = u32;

impl AddressMatch {
    /// Parses an entry. Anything that is neither an IP nor a CIDR is taken as a DNS name;
    /// `None` for a malformed CIDR (a `/` with a bad prefix), which must not silently become
    /// a name that never matches.
    pub fn parse(s: &str) -> Option<AddressMatch> {
        let s = s.trim();
        if let Some((net, prefix)) = s.split_once('/') {
            let network: IpAddr = net.parse().ok()?;
            let prefix: u8 = prefix.parse().ok()?;
            let max = if network.is_ipv4() { 32 } else { 128 };
            if prefix > max {
                return None;
            }
            return Some(AddressMatch::Cidr { network: canonical(network), prefix });
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Some(AddressMatch::Ip(canonical(ip)));
        }
        let name = s.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() {
            return None;
        }
        Some(AddressMatch::Dns(name))
    }

    /// Whether the destination (and the SNI, for DNS entries) matches; the specificity of the
    /// match if so. Exact IPs beat CIDRs (longer prefixes first), which beat DNS names.
    pub fn matches(&self, dest: &SocketAddr, sni: Option<&str>) -> Option<Specificity> {
        let ip = canonical(dest.ip());
        match self {
            AddressMatch::Ip(want) => (*want == ip).then_some(1000),
            AddressMatch::Cidr { network, prefix } => in_cidr(ip, *network, *prefix).then_some(500 + *prefix as u32),
            AddressMatch::Dns(name) => {
                let sni = sni?.trim_end_matches('.');
                sni.eq_ignore_ascii_case(name).then_some(100)
            }
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a dual-stack socket reports) are
/// compared as the IPv4 address they carry, so one policy entry covers both spellings.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn in_cidr(ip: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (ip, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix as u32) };
            (u32::from(a) & mask) == (u32::from(n) & mask)
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix as u32) };
            (u128::from(a) & mask) == (u128::from(n) & mask)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ip_cidr_and_dns() {
        let ip = AddressMatch::parse("10.0.0.5").unwrap();
        assert!(ip.matches(&dest("10.0.0.5:80"), None).is_some());
        assert!(ip.matches(&dest("[::ffff:10.0.0.5]:80"), None).is_some());
        assert!(ip.matches(&dest("10.0.0.6:80"), None).is_none());
        let net = AddressMatch::parse("10.0.0.0/24").unwrap();
        assert!(net.matches(&dest("10.0.0.200:1"), None).is_some());
        assert!(net.matches(&dest("10.0.1.1:1"), None).is_none());
        let all = AddressMatch::parse("0.0.0.0/0").unwrap();
        assert!(all.matches(&dest("192.0.2.1:1"), None).is_some());
        let v6 = AddressMatch::parse("fd00::/8").unwrap();
        assert!(v6.matches(&dest("[fd12::1]:1"), None).is_some());
        assert!(v6.matches(&dest("10.0.0.1:1"), None).is_none());
        let dns = AddressMatch::parse("Orders.Example.com.").unwrap();
        assert!(dns.matches(&dest("10.0.0.1:1"), Some("orders.example.com")).is_some());
        assert!(dns.matches(&dest("10.0.0.1:1"), None).is_none());
        assert!(AddressMatch::parse("10.0.0.0/33").is_none());
        assert!(AddressMatch::parse("10.0.0.0/x").is_none());
    }
}
