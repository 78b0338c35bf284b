//! The daemon's configuration, with every default in one place.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use riptides_wire::TrustDomain;

/// Default trust domain (the CP's identity is `spiffe://<td>/riptides/controlplane`).
pub const DEFAULT_TRUST_DOMAIN: &str = "riptides.local";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/riptides";
/// Default admin listener.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:15000";
/// Default port of the TCP+TLS fallback (`--controlplane-tunnel`).
pub const DEFAULT_TUNNEL_PORT: u16 = 8001;
/// SPIFFE path of the control plane on the daemon link.
pub const CONTROLPLANE_PATH: &str = "riptides/controlplane";

/// How the daemon first trusts the control plane (before it has a bundle from attestation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaTrust {
    /// A PEM file with the CA root(s).
    Bundle(PathBuf),
    /// `sha256:<hex>` of the SPKI of a CA certificate in the CP's chain.
    Pin(String),
}

/// Which dataplane enforces policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataplaneMode {
    #[default]
    Auto,
    Kernel,
    Userspace,
    None,
}

impl DataplaneMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            DataplaneMode::Auto => "auto",
            DataplaneMode::Kernel => "kernel",
            DataplaneMode::Userspace => "userspace",
            DataplaneMode::None => "none",
        }
    }

    /// The dataplane actually used: `auto` picks the kernel path when the `riptides` generic
    /// netlink family is registered (riptides.ko loaded), else the userspace path; `kernel`
    /// fails clearly without the module.
    pub fn resolve(self) -> anyhow::Result<DataplaneMode> {
        self.resolve_with(crate::kernel::family_present)
    }

    /// [`DataplaneMode::resolve`] with the module check given (for tests).
    pub fn resolve_with(self, family_present: impl FnOnce() -> bool) -> anyhow::Result<DataplaneMode> {
        match self {
            DataplaneMode::None => Ok(DataplaneMode::None),
            DataplaneMode::Userspace => Ok(DataplaneMode::Userspace),
            DataplaneMode::Auto => {
                if family_present() {
                    tracing::info!(
                        "--dataplane auto: the riptides kernel module is loaded: using the kernel dataplane"
                    );
                    Ok(DataplaneMode::Kernel)
                } else {
                    tracing::info!(
                        "--dataplane auto: the riptides kernel module is not loaded: using the userspace dataplane \
                         (nftables capture)"
                    );
                    Ok(DataplaneMode::Userspace)
                }
            }
            DataplaneMode::Kernel => {
                if family_present() {
                    Ok(DataplaneMode::Kernel)
                } else {
                    anyhow::bail!(
                        "--dataplane kernel: the riptides generic netlink family is not registered; load riptides.ko \
                         (insmod riptides.ko / modprobe riptides) or use --dataplane userspace"
                    )
                }
            }
        }
    }
}

impl FromStr for DataplaneMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DataplaneMode::Auto),
            "kernel" => Ok(DataplaneMode::Kernel),
            "userspace" => Ok(DataplaneMode::Userspace),
            "none" => Ok(DataplaneMode::None),
            other => Err(format!("unknown dataplane {other:?} (expected auto, kernel, userspace or none)")),
        }
    }
}

impl fmt::Display for DataplaneMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A join token; `Debug`/`Display` show only its public id.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken(String);

impl JoinToken {
    pub fn new(token: impl Into<String>) -> Self {
        JoinToken(token.into().trim().to_owned())
    }
    pub fn secret_text(&self) -> &str {
        &self.0
    }
    pub fn id(&self) -> &str {
        self.0.split_once('.').map_or("<malformed>", |(id, _)| id)
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinToken({}.<redacted>)", self.id())
    }
}

/// Everything `riptides-daemon` can be told. Flags map onto these fields; tests set the
/// timing knobs small.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// QUIC endpoint `HOST:PORT`, or several separated by commas (control-plane replicas);
    /// a host name resolving to several addresses counts as several endpoints. The daemon
    /// starts at a random one (spreading daemons over replicas) and moves on to the next when
    /// a connection fails or is lost.
    pub controlplane: String,
    /// TCP+TLS fallback `HOST:PORT` (or one per `controlplane` entry, comma-separated);
    /// `None` = each `controlplane` host, port 8001.
    pub controlplane_tunnel: Option<String>,
    pub trust_domain: TrustDomain,
    /// Initial trust in the CP; required when the data dir holds no bundle yet.
    pub ca: Option<CaTrust>,
    pub join_token: Option<JoinToken>,
    /// How the daemon attests (`--attestation`; join tokens by default).
    pub attestation: crate::attest::AttestationConfig,
    pub data_dir: PathBuf,
    pub admin_addr: SocketAddr,
    pub dataplane: DataplaneMode,
    /// Reconnect backoff: full jitter on `min(cap, base * 2^attempt)`.
    pub reconnect_base: Duration,
    pub reconnect_cap: Duration,
    /// How long a QUIC handshake may take before falling back to TCP+TLS.
    pub quic_connect_timeout: Duration,
    /// TCP connect + TLS handshake timeout.
    pub tcp_connect_timeout: Duration,
    /// While on the TCP fallback, how often QUIC is tried again.
    pub quic_retry_interval: Duration,
    /// With several control-plane endpoints, how long a dial may go unanswered before the next
    /// endpoint is dialled beside it: a dead replica then costs this rather than the connect
    /// timeouts.
    pub endpoint_stagger: Duration,
    /// Period of `ReportStatus`.
    pub status_interval: Duration,
    /// Timeout of one request/response exchange with the CP.
    pub request_timeout: Duration,
    /// Per-identity CSR retry backoff.
    pub csr_backoff_min: Duration,
    pub csr_backoff_max: Duration,
    /// CSRs in flight at once.
    pub max_inflight_csrs: usize,
    /// How often the certificate manager looks for due rotations.
    pub cert_tick: Duration,
    /// Requested workload SVID lifetime (`None`: the CP's / WorkloadIdentity's default).
    pub workload_ttl: Option<Duration>,
    /// Settings of the userspace dataplane (capture table, listener ports, timeouts).
    pub userspace: crate::userspace::UserspaceConfig,
    /// Settings of the kernel dataplane's connector.
    pub kernel: crate::kernel::KernelConfig,
}

impl DaemonConfig {
    pub fn new(controlplane: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        DaemonConfig {
            controlplane: controlplane.into(),
            controlplane_tunnel: None,
            trust_domain: TrustDomain::parse(DEFAULT_TRUST_DOMAIN).expect("valid literal"),
            ca: None,
            join_token: None,
            attestation: crate::attest::AttestationConfig::default(),
            data_dir: data_dir.into(),
            admin_addr: DEFAULT_ADMIN_ADDR.parse().expect("valid literal"),
            dataplane: DataplaneMode::Auto,
            reconnect_base: Duration::from_millis(200),
            reconnect_cap: Duration::from_secs(30),
            quic_connect_timeout: Duration::from_secs(5),
            tcp_connect_timeout: Duration::from_secs(10),
            quic_retry_interval: Duration::from_secs(300),
            endpoint_stagger: Duration::from_secs(1),
            status_interval: Duration::from_secs(15),
            request_timeout: Duration::from_secs(15),
            csr_backoff_min: Duration::from_millis(500),
            csr_backoff_max: Duration::from_secs(150),
            max_inflight_csrs: 8,
            cert_tick: Duration::from_millis(250),
            workload_ttl: None,
            userspace: crate::userspace::UserspaceConfig::default(),
            kernel: crate::kernel::KernelConfig::default(),
        }
    }

    /// The TCP+TLS fallback address of the first endpoint: explicit, or the QUIC host with
    /// port 8001.
    pub fn tunnel_addr(&self) -> String {
        self.tunnel_addrs().into_iter().next().unwrap_or_default()
    }

    /// The configured QUIC endpoints (`controlplane` split at commas).
    pub fn controlplane_addrs(&self) -> Vec<String> {
        split_list(&self.controlplane)
    }

    /// One TCP+TLS fallback address per [`DaemonConfig::controlplane_addrs`] entry: the
    /// matching explicit entry, the single explicit one for all, or the QUIC host with port
    /// 8001.
    pub fn tunnel_addrs(&self) -> Vec<String> {
        let explicit = self.controlplane_tunnel.as_deref().map(split_list).unwrap_or_default();
        let cps = self.controlplane_addrs();
        cps.iter()
            .enumerate()
            .map(|(i, cp)| {
                if explicit.len() == cps.len() {
                    return explicit[i].clone();
                }
                if let Some(one) = explicit.first() {
                    return one.clone();
                }
                let host = match cp.rsplit_once(':') {
                    Some((host, _port)) => host.to_owned(),
                    None => cp.clone(),
                };
                format!("{host}:{DEFAULT_TUNNEL_PORT}")
            })
            .collect()
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_defaults_to_port_8001() {
        let mut c = DaemonConfig::new("cp.example:9443", "/tmp/x");
        assert_eq!(c.tunnel_addr(), "cp.example:8001");
        c.controlplane = "[::1]:9443".into();
        assert_eq!(c.tunnel_addr(), "[::1]:8001");
        c.controlplane_tunnel = Some("other:1".into());
        assert_eq!(c.tunnel_addr(), "other:1");
    }

    #[test]
    fn several_controlplanes() {
        let mut c = DaemonConfig::new("cp1:9443, cp2:9443,[::1]:9443", "/tmp/x");
        assert_eq!(c.controlplane_addrs(), ["cp1:9443", "cp2:9443", "[::1]:9443"]);
        assert_eq!(c.tunnel_addrs(), ["cp1:8001", "cp2:8001", "[::1]:8001"]);
        c.controlplane_tunnel = Some("lb:8001".into());
        assert_eq!(c.tunnel_addrs(), ["lb:8001", "lb:8001", "lb:8001"]);
        c.controlplane_tunnel = Some("a:1,b:2,c:3".into());
        assert_eq!(c.tunnel_addrs(), ["a:1", "b:2", "c:3"]);
    }

    #[test]
    fn dataplane_resolution() {
        assert_eq!(DataplaneMode::Auto.resolve_with(|| true).unwrap(), DataplaneMode::Kernel);
        assert_eq!(DataplaneMode::Auto.resolve_with(|| false).unwrap(), DataplaneMode::Userspace);
        assert_eq!(DataplaneMode::Kernel.resolve_with(|| true).unwrap(), DataplaneMode::Kernel);
        let e = DataplaneMode::Kernel.resolve_with(|| false).unwrap_err().to_string();
        assert!(e.contains("riptides.ko") && e.contains("--dataplane userspace"), "{e}");
        // Explicit modes never look at the kernel.
        assert_eq!(DataplaneMode::None.resolve_with(|| panic!("looked")).unwrap(), DataplaneMode::None);
        assert_eq!(DataplaneMode::Userspace.resolve_with(|| panic!("looked")).unwrap(), DataplaneMode::Userspace);
        assert_eq!("none".parse::<DataplaneMode>().unwrap(), DataplaneMode::None);
        assert!("bogus".parse::<DataplaneMode>().is_err());
    }

    #[test]
    fn token_debug_is_redacted() {
        let t = JoinToken::new("abc.supersecret");
        assert_eq!(format!("{t:?}"), "JoinToken(abc.<redacted>)");
    }
}
