//! The control plane's configuration, with every default in one place.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use riptides_wire::TrustDomain;

use crate::attest::RateLimitConfig;
use crate::ca::SealKey;
use crate::store::EtcdConfig;

/// Where resources are stored.
#[derive(Debug, Clone, Default)]
pub enum StoreBackend {
    /// The embedded redb file in the data dir: one replica.
    #[default]
    Redb,
    /// An etcd cluster shared by several replicas.
    Etcd(EtcdConfig),
}

/// Everything `riptides-controlplane` can be told. Flags map one to one onto these fields.
#[derive(Debug, Clone)]
pub struct Config {
    /// Holds the store (`store.redb`), the CA (`ca/`), the serving certificate and
    /// `admin.kubeconfig`.
    pub data_dir: PathBuf,
    pub trust_domain: TrustDomain,
    /// HTTPS resource API (Kubernetes-compatible).
    pub api_addr: SocketAddr,
    /// QUIC daemon endpoint (daemon link issue).
    pub quic_addr: SocketAddr,
    /// TCP+TLS tunnel for networks that block UDP (daemon link issue).
    pub tunnel_addr: SocketAddr,
    /// Plain HTTP health, readiness and Prometheus metrics.
    pub health_addr: SocketAddr,
    /// The API URL written into `admin.kubeconfig`; derived from `api_addr` when absent.
    pub advertise_url: Option<String>,
    /// Extra DNS names / IPs for the API serving certificate.
    pub api_server_names: Vec<String>,
    /// How many revisions of change history the store keeps for watch resume.
    pub watch_history_revisions: u64,
    /// Largest request body the API accepts (Kubernetes uses 3 MiB).
    pub max_request_body: usize,
    /// Longest a single watch request stays open before the client must re-watch.
    pub max_watch_duration: Duration,
    /// How often the CA rotation schedule and controllers run.
    pub controller_interval: Duration,
    /// CA lifetime and SVID TTL policy.
    pub ca_lifetime: Duration,
    pub default_svid_ttl: Duration,
    pub max_svid_ttl: Duration,
    /// Lifetime of daemon SVIDs. Separate from workload SVIDs so that a daemon cut off for a
    /// while still holds a valid identity to reconnect with when the partition heals.
    pub daemon_svid_ttl: Duration,
    /// Attestation attempts allowed per source address and in total.
    pub attest_rate_limit: RateLimitConfig,
    /// Largest daemon-protocol frame accepted.
    pub max_frame: usize,
    /// Operator sign-in: the OIDC provider's issuer URL, upstream issuer and clients.
    pub oidc: crate::oidc::OidcConfig,
    /// The resource store (embedded redb by default, or etcd for several replicas).
    pub store: StoreBackend,
    /// Key prefix of this control plane's objects in etcd.
    pub etcd_prefix: String,
    /// Seals the CA material shared between replicas through etcd (required with etcd).
    pub ca_seal_key: Option<Arc<SealKey>>,
    /// TTL of the controller leader lease on etcd: how long controllers may go without a
    /// leader after the leader dies.
    pub leader_lease_ttl: Duration,
    /// This replica's name in the leader election (default: host name and API address).
    pub replica_name: Option<String>,
}

pub const DEFAULT_TRUST_DOMAIN: &str = "riptides.local";

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>, trust_domain: TrustDomain) -> Self {
        Config {
            data_dir: data_dir.into(),
            trust_domain,
            api_addr: "0.0.0.0:8443".parse().expect("valid literal"),
            quic_addr: "0.0.0.0:9443".parse().expect("valid literal"),
            tunnel_addr: "0.0.0.0:8001".parse().expect("valid literal"),
            health_addr: "0.0.0.0:8080".parse().expect("valid literal"),
            advertise_url: None,
            api_server_names: Vec::new(),
            watch_history_revisions: 10_000,
            max_request_body: 3 * 1024 * 1024,
            max_watch_duration: Duration::from_secs(30 * 60),
            controller_interval: Duration::from_secs(30),
            ca_lifetime: Duration::from_secs(365 * 24 * 3600),
            default_svid_ttl: Duration::from_secs(3600),
            max_svid_ttl: Duration::from_secs(24 * 3600),
            daemon_svid_ttl: Duration::from_secs(24 * 3600),
            attest_rate_limit: RateLimitConfig::default(),
            max_frame: riptides_wire::proto::DEFAULT_MAX_FRAME,
            oidc: crate::oidc::OidcConfig::default(),
            store: StoreBackend::Redb,
            etcd_prefix: crate::store::etcd::DEFAULT_PREFIX.to_owned(),
            ca_seal_key: None,
            leader_lease_ttl: Duration::from_secs(10),
            replica_name: None,
        }
    }

    /// Loopback, ephemeral ports, trust domain `example.com`: for tests in one process.
    pub fn for_tests(data_dir: &Path) -> Self {
        let any = "127.0.0.1:0".parse().expect("valid literal");
        Config {
            api_addr: any,
            quic_addr: any,
            tunnel_addr: any,
            health_addr: any,
            controller_interval: Duration::from_secs(1),
            // Hundreds of simulated daemons attest from one loopback address.
            attest_rate_limit: RateLimitConfig::unlimited(),
            ..Config::new(data_dir, TrustDomain::parse("example.com").expect("valid literal"))
        }
    }

    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("store.redb")
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.data_dir.join("ca")
    }

    pub fn kubeconfig_path(&self) -> PathBuf {
        self.data_dir.join("admin.kubeconfig")
    }
}
