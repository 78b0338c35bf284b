//! The Riptides daemon (`riptides-daemon`): attests to the control plane, keeps its own and its
//! workloads' X509-SVIDs current, holds the policy pushed to it, and (in later releases) drives
//! the dataplane.
//!
//! The daemon is a supervised actor tree (see [`Daemon::start`]):
//!
//! ```text
//! daemon-<n>                      root supervisor (one-for-one, restart budget)
//! ├── metadata                    host metadata (hostname, OS, kernel, arch; cloud/k8s traits)
//! ├── policy                      current document + revision; persists; feeds connector + certs
//! ├── certs                       daemon SVID + one SVID per WorkloadIdentity; rotation
//! ├── cp-session                  connect/attest/reconnect; policy watch; status; tunnel; CSRs
//! └── admin                       /healthz /readyz /metrics /config_dump
//! ```
//!
//! Actors talk through messages; the only shared state is [`state::Shared`], a read-only
//! snapshot each actor publishes its part of (for accessors, the admin listener and the tunnel).

pub mod admin;
pub mod attest;
pub mod backoff;
pub mod certs;
pub mod config;
pub mod credentials;
pub mod datadir;
pub mod dataplane;
pub mod gatekeeper;
pub mod identity;
pub mod kernel;
pub mod link;
pub mod metadata;
pub mod policy;
pub mod policy_actor;
pub mod session;
pub mod state;
pub mod userspace;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use ractor::ActorRef;
use riptides_actors::{Backoff, ChildSpec, Supervisor, SupervisorConfig, SupervisorExit, SupervisorHandle};
use riptides_wire::proto::messages::PolicyDocument;

pub use config::{CaTrust, DaemonConfig, DataplaneMode, JoinToken};
pub use state::{IdentityInfo, Problem, Status, TransportKind};

use crate::certs::{CertActor, CertMsg};
use crate::datadir::DataDir;
use crate::metadata::{MetadataActor, MetadataMsg, NoCloud, NoPod};
use crate::policy_actor::{NoDataplane, PolicyActor, PolicyMsg};
use crate::session::{SessionActor, SessionMsg};
use crate::state::Shared;

/// The daemon's version string.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

static INSTANCE: AtomicU64 = AtomicU64::new(0);

/// What every actor of one daemon shares (immutable, plus the published snapshot).
#[derive(Debug)]
pub struct Ctx {
    /// Registered name of the root supervisor; children are `<root>/<name>`.
    pub root: String,
    pub config: DaemonConfig,
    pub data: DataDir,
    pub shared: Shared,
    /// Workload SVIDs (chain + key) for the dataplane, published by the certificate manager.
    pub credentials: tokio::sync::watch::Sender<userspace::Credentials>,
    /// Live connections of the dataplane (empty without one).
    pub connections: Arc<dataplane::table::ConnectionTable>,
}

impl Ctx {
    fn child<M: ractor::Message>(&self, name: &str) -> Option<ActorRef<M>> {
        ractor::registry::where_is(format!("{}/{name}", self.root)).map(ActorRef::from)
    }
    pub fn policy(&self) -> Option<ActorRef<PolicyMsg>> {
        self.child("policy")
    }
    pub fn certs(&self) -> Option<ActorRef<CertMsg>> {
        self.child("certs")
    }
    pub fn session(&self) -> Option<ActorRef<SessionMsg>> {
        self.child("cp-session")
    }
    pub fn metadata(&self) -> Option<ActorRef<MetadataMsg>> {
        self.child("metadata")
    }
}

/// A running daemon.
pub struct Daemon {
    ctx: Arc<Ctx>,
    root: SupervisorHandle,
    userspace: Option<userspace::Userspace>,
    kernel: Option<kernel::Kernel>,
}

impl Daemon {
    /// Validates the configuration, loads what the data dir holds (identity, policy: served at
    /// once, even with the control plane unreachable) and starts the actor tree.
    pub async fn start(config: DaemonConfig) -> Result<Daemon> {
        let dataplane = config.dataplane.resolve()?;
        let data = DataDir::open(&config.data_dir)?;
        let persisted = data.load_identity().unwrap_or_else(|e| {
            tracing::error!(error = %format!("{e:#}"), "the identity in the data dir is unreadable");
            None
        });
        if persisted.is_none() && config.join_token.is_none() && config.attestation.method == attest::Method::Token {
            tracing::warn!("no identity in the data dir and no --join-token: the daemon cannot attest");
        }
        if persisted.is_none() && config.ca.is_none() {
            tracing::warn!(
                "no trust bundle in the data dir and neither --ca-bundle nor --ca-pin: the daemon cannot attest"
            );
        }
        let root = format!("daemon-{}", INSTANCE.fetch_add(1, Ordering::Relaxed));
        let shared = Shared::new(config.trust_domain.to_string(), dataplane.to_string());
        if let Some(p) = &persisted {
            tracing::info!(daemon_id = %p.daemon_id, spiffe_id = %p.identity.spiffe_id,
                not_after = identity::unix(p.identity.not_after), "loaded the daemon identity from the data dir");
            shared.update(|s| {
                s.daemon_id = Some(p.daemon_id.clone());
                s.spiffe_id = Some(p.identity.spiffe_id.clone());
            });
        }
        let (credentials, creds_rx) = tokio::sync::watch::channel(userspace::Credentials::default());
        let connections = dataplane::table::ConnectionTable::new(dataplane::table::DEFAULT_CAPACITY);
        tracing::info!(requested = %config.dataplane, dataplane = %dataplane, "dataplane selected");
        let userspace = match dataplane {
            DataplaneMode::Userspace => Some(
                userspace::Userspace::start(userspace_config(&config), creds_rx.clone(), connections.clone())
                    .await
                    .context("starting the userspace dataplane")?,
            ),
            _ => None,
        };
        let kernel = match dataplane {
            DataplaneMode::Kernel => Some(
                kernel::Kernel::start(
                    config.kernel.clone(),
                    config.trust_domain.to_string(),
                    shared.clone(),
                    creds_rx,
                    connections.clone(),
                )
                .await
                .context("starting the kernel dataplane")?,
            ),
            _ => None,
        };
        let connector: Arc<dyn policy_actor::Connector> = match (&userspace, &kernel) {
            (Some(u), _) => Arc::new(u.clone()),
            (None, Some(k)) => Arc::new(k.clone()),
            (None, None) => Arc::new(NoDataplane),
        };
        if let Some(i) = userspace.as_ref().and_then(|u| u.intercept()) {
            i.publish_status(shared.clone());
        }
        let ctx = Arc::new(Ctx { root: root.clone(), config, data, shared, credentials, connections });
        let backoff = Backoff::fixed_growth(Duration::from_millis(100), Duration::from_secs(10), 2.0);
        let children = vec![
            ChildSpec::actor("metadata", MetadataActor { cloud: Arc::new(NoCloud), pod: Arc::new(NoPod) }, ())
                .backoff(backoff.clone()),
            ChildSpec::actor("policy", PolicyActor { ctx: ctx.clone(), connector }, ()).backoff(backoff.clone()),
            ChildSpec::actor("certs", CertActor { ctx: ctx.clone() }, ()).backoff(backoff.clone()),
            ChildSpec::actor("cp-session", SessionActor { ctx: ctx.clone() }, ()).backoff(backoff.clone()),
            ChildSpec::actor("admin", admin::AdminActor { ctx: ctx.clone() }, ()).backoff(backoff),
        ];
        let handle =
            Supervisor::start(root.clone(), SupervisorConfig::with_budget(20, Duration::from_secs(60)), children)
                .await
                .with_context(|| format!("starting the daemon's actor tree {root}"))?;
        Ok(Daemon { ctx, root: handle, userspace, kernel })
    }

    /// The registered name of the root supervisor (unique per process).
    pub fn name(&self) -> &str {
        &self.ctx.root
    }

    /// A snapshot of everything the accessors below read.
    pub fn status(&self) -> Status {
        self.ctx.shared.get()
    }

    /// Wakes on every state change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Status> {
        self.ctx.shared.subscribe()
    }

    /// Waits until `pred` holds (checking at every change), up to `timeout`.
    pub async fn wait_for(&self, timeout: Duration, mut pred: impl FnMut(&Status) -> bool) -> Result<Status> {
        let mut rx = self.subscribe();
        let fut = async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if pred(&s) {
                        return s.clone();
                    }
                }
                // Identities can expire without a state change: re-check at least every 250 ms.
                let _ = tokio::time::timeout(Duration::from_millis(250), rx.changed()).await;
            }
        };
        tokio::time::timeout(timeout, fut).await.map_err(|_| {
            let s = self.status();
            anyhow::anyhow!(
                "condition not met within {timeout:?}; connected={} transport={:?} revision={:?} identities={} problem={:?} last_error={:?}",
                s.connected, s.transport, s.policy_revision, s.identities.len(), s.problem, s.last_error
            )
        })
    }

    pub fn daemon_id(&self) -> Option<String> {
        self.status().daemon_id
    }
    pub fn spiffe_id(&self) -> Option<String> {
        self.status().spiffe_id
    }
    pub fn policy_revision(&self) -> Option<u64> {
        self.status().policy_revision
    }
    pub fn policy_document(&self) -> Arc<PolicyDocument> {
        self.status().policy
    }
    /// The daemon SVID and the workload SVIDs held, with expiry (never keys).
    pub fn identities(&self) -> Vec<IdentityInfo> {
        self.status().identities
    }
    pub fn transport(&self) -> Option<TransportKind> {
        self.status().transport
    }
    pub fn is_connected(&self) -> bool {
        self.status().connected
    }
    pub fn snapshots_received(&self) -> u64 {
        self.status().snapshots
    }
    pub fn deltas_received(&self) -> u64 {
        self.status().deltas
    }
    pub fn reconnects(&self) -> u64 {
        self.status().reconnects
    }
    /// What the operator must do, if the daemon cannot get an identity on its own.
    pub fn problem(&self) -> Option<Problem> {
        self.status().problem
    }
    /// Where the admin listener is bound.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.status().admin_addr
    }
    /// Whether `/readyz` would say ready.
    pub fn is_ready(&self) -> bool {
        self.status().not_ready_reasons(SystemTime::now()).is_empty()
    }
    pub fn data_dir(&self) -> &std::path::Path {
        self.ctx.data.path()
    }

    /// Waits for the tree to end (escalation or a shutdown elsewhere).
    pub async fn wait(&self) -> SupervisorExit {
        self.root.wait().await
    }

    /// Stops the tree in order (admin, session, certs, policy, metadata).
    pub async fn shutdown(self) -> SupervisorExit {
        let exit = self.root.shutdown(Some("daemon shutdown".into())).await;
        if let Some(u) = &self.userspace {
            u.stop().await;
        }
        if let Some(k) = &self.kernel {
            k.stop().await;
        }
        exit
    }

    /// The live connection table of the dataplane.
    pub fn connections(&self) -> &Arc<dataplane::table::ConnectionTable> {
        &self.ctx.connections
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    bytes.iter().flat_map(|b| [D[(b >> 4) as usize] as char, D[(b & 15) as usize] as char]).collect()
}

/// Inverse of [`hex`].
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// RFC 3339 (UTC) of Unix seconds.
pub fn rfc3339(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// The userspace dataplane's settings with what comes from the daemon's: the intercept CA
/// lives in `<data dir>/intercept`, token requests carry the capture mark.
fn userspace_config(config: &DaemonConfig) -> userspace::UserspaceConfig {
    let mut c = config.userspace.clone();
    if c.intercept.dir.is_none() {
        c.intercept.dir = Some(config.data_dir.join("intercept"));
    }
    c.intercept.credentials.mark = c.capture.mark;
    c
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_round_trip() {
        let s = super::hex(b"spiffe://x/y");
        assert_eq!(super::unhex(&s).unwrap(), b"spiffe://x/y");
        assert!(super::unhex("abc").is_none());
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
