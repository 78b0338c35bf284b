//! What the capture table is configured with ([`CaptureConfig`], fixed for the table's life) and
//! what it currently captures ([`CaptureRules`], replaced on every policy change).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::CaptureError;

/// The nftables table the daemon owns unless configured otherwise (family `inet`).
pub const DEFAULT_TABLE: &str = "riptides";
/// Local port of the outbound listener that captured outbound connections are redirected to.
pub const DEFAULT_OUTBOUND_PORT: u16 = 15001;
/// Local port of the inbound listener that captured inbound connections are redirected to.
pub const DEFAULT_INBOUND_PORT: u16 = 15006;
/// The fwmark on the daemon's own sockets ("RIP"): packets carrying it are never captured, so
/// the daemon's upstream connections do not loop back into its own listener.
pub const DEFAULT_MARK: u32 = 0x0052_4950;
/// Priority of the nat chains: `dstnat` (-100), where redirects belong.
pub const DEFAULT_PRIORITY: i32 = -100;
/// How long one `nft` invocation may take before it is killed.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// How the capture table is set up. All defaults live here ([`Default`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CaptureConfig {
    /// Table name (family `inet`). Configurable so tests (and several daemons in one network
    /// namespace) do not collide.
    pub table: String,
    /// Port of the local outbound listener (bound on loopback: `redirect` in the output hook
    /// rewrites the destination to 127.0.0.1 / ::1).
    pub outbound_port: u16,
    /// Port of the local inbound listener (bound on the wildcard address: `redirect` in the
    /// prerouting hook rewrites the destination to the receiving interface's primary address).
    pub inbound_port: u16,
    /// The daemon's socket mark; see [`DEFAULT_MARK`].
    pub mark: u32,
    /// Hook priority of both nat chains.
    pub priority: i32,
    /// The `nft` executable.
    pub nft: PathBuf,
    /// Run `nft` inside this named network namespace (`ip netns exec NAME nft ...`) instead of
    /// the daemon's own. Used by tests and when a daemon manages a namespace it does not live in.
    pub netns: Option<String>,
    /// Upper bound for one `nft` invocation, in milliseconds.
    pub command_timeout_ms: u64,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            table: DEFAULT_TABLE.to_owned(),
            outbound_port: DEFAULT_OUTBOUND_PORT,
            inbound_port: DEFAULT_INBOUND_PORT,
            mark: DEFAULT_MARK,
            priority: DEFAULT_PRIORITY,
            nft: PathBuf::from("nft"),
            netns: None,
            command_timeout_ms: DEFAULT_COMMAND_TIMEOUT.as_millis() as u64,
        }
    }
}

impl CaptureConfig {
    /// The table name and namespace end up inside an nft script and a command line, so only
    /// a conservative character set is accepted (no quoting games).
    pub fn validate(&self) -> Result<(), CaptureError> {
        if !is_identifier(&self.table) {
            return Err(CaptureError::Config(format!(
                "table name {:?} must be 1-64 characters of [A-Za-z0-9_-] starting with a letter",
                self.table
            )));
        }
        if let Some(ns) = &self.netns {
            if ns.is_empty() || ns.len() > 64 || !ns.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
                return Err(CaptureError::Config(format!("network namespace name {ns:?} is not acceptable")));
            }
        }
        if self.outbound_port == 0 || self.inbound_port == 0 {
            return Err(CaptureError::Config("listener ports must be non-zero".into()));
        }
        if self.outbound_port == self.inbound_port {
            return Err(CaptureError::Config("the outbound and inbound listener ports must differ".into()));
        }
        if self.mark == 0 {
            // Mark 0 is what every unmarked packet carries: nothing would ever be captured.
            return Err(CaptureError::Config("the daemon's socket mark must be non-zero".into()));
        }
        Ok(())
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms.max(1))
    }
}

fn is_identifier(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// What is captured right now. An empty value captures nothing (the table still exists, so the
/// daemon's ownership of it is visible and crash recovery has something to find).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CaptureRules {
    /// Which outbound connections are redirected to the outbound listener.
    pub outbound: OutboundSelection,
    /// Local ports covered by ingress rules (or a workload's listening ports): inbound TCP to
    /// them is redirected to the inbound listener.
    pub inbound_ports: BTreeSet<u16>,
}

/// Outbound capture: connections from *selected workloads* to *selected destinations*.
///
/// A workload is selected when its socket's owner uid is in `uids`, OR its gid is in `gids`,
/// OR it lives in one of the `cgroups` (cgroup v2 paths relative to the cgroup2 root, e.g.
/// `system.slice/app.service`; nftables resolves them when the rules are loaded, so paths that
/// do not exist at that moment are skipped with a warning rather than failing the update).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OutboundSelection {
    pub uids: BTreeSet<u32>,
    pub gids: BTreeSet<u32>,
    pub cgroups: BTreeSet<String>,
    /// Every local process (the daemon's marked sockets excepted): for selectors on labels
    /// that nftables cannot see, such as `process:name`.
    pub all_processes: bool,
    pub destinations: Destinations,
}

/// Destinations whose connections are captured (loopback destinations never are).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Destinations {
    /// Every TCP destination except loopback: the daemon decides per connection (and passes
    /// unmanaged destinations through).
    All,
    /// Only these: exact service endpoints (address, port) and whole networks (any port).
    Only {
        #[serde(default)]
        services: BTreeSet<SocketAddr>,
        #[serde(default)]
        networks: BTreeSet<IpNet>,
    },
}

impl Default for Destinations {
    fn default() -> Self {
        Destinations::Only { services: BTreeSet::new(), networks: BTreeSet::new() }
    }
}

impl Destinations {
    /// Exact service endpoints only.
    pub fn services(services: impl IntoIterator<Item = SocketAddr>) -> Self {
        Destinations::Only { services: services.into_iter().collect(), networks: BTreeSet::new() }
    }
}

/// An address prefix (`10.0.0.0/8`, `fd00::/64`); host bits are cleared on construction so
/// equal networks compare equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn new(addr: IpAddr, prefix: u8) -> Result<IpNet, CaptureError> {
        // A v4-mapped prefix is the IPv4 prefix it denotes (that is how the kernel sees it).
        let (addr, prefix) = match addr {
            IpAddr::V6(a) if prefix >= 96 && a.to_ipv4_mapped().is_some() => {
                (IpAddr::V4(a.to_ipv4_mapped().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED)), prefix - 96)
            }
            a => (a, prefix),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(CaptureError::Config(format!("prefix /{prefix} is too long for {addr}")));
        }
        let addr = match addr {
            IpAddr::V4(a) => {
                let m = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
                IpAddr::V4((u32::from(a) & m).into())
            }
            IpAddr::V6(a) => {
                let m = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
                IpAddr::V6((u128::from(a) & m).into())
            }
        };
        Ok(IpNet { addr, prefix })
    }
    pub fn addr(&self) -> IpAddr {
        self.addr
    }
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for IpNet {
    type Err = CaptureError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CaptureError::Config(format!("{s:?} is not an address prefix"));
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let prefix = match p {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        IpNet::new(addr, prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_names_do_not() {
        CaptureConfig::default().validate().unwrap();
        for bad in ["", "1abc", "a b", "a;b", "x\"y"] {
            let c = CaptureConfig { table: bad.into(), ..Default::default() };
            assert!(c.validate().is_err(), "{bad:?}");
        }
        let c = CaptureConfig { inbound_port: DEFAULT_OUTBOUND_PORT, ..Default::default() };
        assert!(c.validate().is_err());
    }

    #[test]
    fn ipnet_normalises() {
        let n: IpNet = "10.1.2.3/8".parse().unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert_eq!("fd00::1/64".parse::<IpNet>().unwrap().to_string(), "fd00::/64");
        assert_eq!("::ffff:10.0.0.1".parse::<IpNet>().unwrap().to_string(), "10.0.0.1/32");
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
    }
}
