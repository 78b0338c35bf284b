//! Assembles the control plane: opens the store and the CA, binds the listeners, writes the
//! admin kubeconfig on first start, and runs everything as one supervised actor tree:
//!
//! ```text
//! cp-N (root supervisor)
//! ├── store          compacts change history, publishes the store revision
//! ├── ca             drives CA rotation (prepare -> active -> old) on its schedule
//! ├── ca-sync        (etcd) follows the shared, sealed CA published by the leader
//! ├── api            HTTPS resource API (8443)
//! ├── health         /healthz, /readyz, /metrics (8080)
//! ├── token-gc       deletes join tokens long past their expiry
//! ├── sessions       one session actor per connected daemon (added at run time)
//! ├── quic           daemon endpoint on QUIC (9443/udp)
//! └── tunnel         the same protocol on TCP+TLS (8001/tcp) where UDP is blocked
//! ```
//!
//! With `--store etcd` several replicas share one store: every replica serves the API and
//! daemons and follows the store's watch for policy, while the controllers (store
//! compaction, CA rotation, token GC) act only on the replica holding the leader lease
//! ([`crate::leader`]); the CA is shared sealed through the store ([`crate::ca::SharedCa`]).

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use riptides_actors::{Supervisor, SupervisorConfig, SupervisorExit, SupervisorHandle};
use riptides_wire::kubeconfig::Kubeconfig;
use riptides_wire::resource::{ValidationContext, DEFAULT_NAMESPACE};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::api::{self, ApiState, ServingCert};
use crate::attest::{Attestor, AttestorConfig, Authorizer, AuthorizerConfig, SigningPool};
use crate::ca::{Ca, CaConfig, SharedCa};
use crate::config::{Config, StoreBackend};
use crate::endpoint::{self, EndpointContext, LinkTls};
use crate::health::{self, HealthState};
use crate::leader::{ElectionConfig, Leadership};
use crate::metrics::Metrics;
use crate::policy::PolicyCompiler;
use crate::store::{EtcdOptions, EtcdStore, ObjectKey, RedbOptions, RedbStore, Store};
use crate::task::task;

/// Admin client certificates are long-lived (capped by the CA's own lifetime).
const ADMIN_CERT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Join tokens are deleted this long after they expired (kept a while for `token list`).
const TOKEN_RETENTION: Duration = Duration::from_secs(3600);

static INSTANCE: AtomicU64 = AtomicU64::new(0);

/// A running control plane.
pub struct ControlPlane {
    api_addr: SocketAddr,
    health_addr: SocketAddr,
    quic_addr: SocketAddr,
    tunnel_addr: SocketAddr,
    sessions: String,
    kubeconfig: PathBuf,
    store: Arc<dyn Store>,
    ca: Arc<Ca>,
    oidc: Arc<crate::oidc::FlowState>,
    tree: SupervisorHandle,
    leadership: Leadership,
    /// Stops the leader election (revoking the lease) when the control plane goes away.
    _election: tokio_util::sync::DropGuard,
}

impl ControlPlane {
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        create_private_dir(&config.data_dir)?;
        let store_path = config.store_path();
        let history = config.watch_history_revisions;
        let election = tokio_util::sync::CancellationToken::new();
        let (store, leadership): (Arc<dyn Store>, Leadership) = match &config.store {
            StoreBackend::Redb => {
                let store = tokio::task::spawn_blocking(move || {
                    RedbStore::open_with(
                        &store_path,
                        RedbOptions { history_revisions: history, ..RedbOptions::default() },
                    )
                })
                .await?
                .with_context(|| format!("opening store {}", config.store_path().display()))?;
                (Arc::new(store), Leadership::always())
            }
            StoreBackend::Etcd(etcd) => {
                let opts = EtcdOptions { prefix: config.etcd_prefix.clone(), ..EtcdOptions::default() };
                let store = EtcdStore::connect(etcd, opts)
                    .await
                    .with_context(|| format!("connecting to etcd at {}", etcd.endpoints.join(",")))?;
                let identity = config.replica_name.clone().unwrap_or_else(|| default_replica_name(&config));
                let election_config = ElectionConfig {
                    // Beside the object prefix, never inside it (watches of every object skip it).
                    key: format!("{}.leader/controllers", config.etcd_prefix.trim_end_matches('/')),
                    ttl: config.leader_lease_ttl,
                    ..ElectionConfig::new(identity)
                };
                let leadership =
                    crate::leader::start_etcd_election(store.client().clone(), election_config, election.clone());
                (Arc::new(store), leadership)
            }
        };
        let election_guard = election.drop_guard();
        let ca_config = CaConfig {
            ca_lifetime: config.ca_lifetime,
            default_svid_ttl: config.default_svid_ttl,
            max_svid_ttl: config.max_svid_ttl,
            publish_lead: config.max_svid_ttl * 2,
            ..CaConfig::new(config.trust_domain.clone())
        };
        let shared_ca = match &config.store {
            StoreBackend::Redb => None,
            StoreBackend::Etcd(_) => {
                let key = config.ca_seal_key.clone().context(
                    "a shared store needs the CA seal key (--ca-seal-key-file or RIPTIDES_CA_SEAL_KEY): \
                     CA keys are never stored in the clear",
                )?;
                Some(
                    SharedCa::open(store.clone(), config.ca_dir(), ca_config.clone(), key)
                        .await
                        .context("opening the shared CA")?,
                )
            }
        };
        let ca = match &shared_ca {
            Some(shared) => shared.ca.clone(),
            None => Arc::new(Ca::open(config.ca_dir(), ca_config, SystemTime::now()).context("opening the CA")?),
        };
        let metrics = Arc::new(Metrics::new());

        let api_listener = bind(config.api_addr, "API")?;
        let health_listener = bind(config.health_addr, "health")?;
        let api_addr = api_listener.local_addr()?;
        let health_addr = health_listener.local_addr()?;

        let mut names = config.api_server_names.clone();
        names.push(api_addr.ip().to_string());
        let serving = Arc::new(ServingCert::new(ca.clone(), &names)?);
        serving.server_config().context("issuing the API serving certificate")?;

        let server_url = config.advertise_url.clone().unwrap_or_else(|| {
            let host = if api_addr.ip().is_unspecified() { "127.0.0.1".to_owned() } else { api_addr.ip().to_string() };
            let host = if host.contains(':') { format!("[{host}]") } else { host };
            format!("https://{host}:{}", api_addr.port())
        });
        let kubeconfig = config.kubeconfig_path();
        let (oidc_dir, oidc_issuer) =
            (config.data_dir.join("oidc"), config.oidc.issuer.clone().unwrap_or_else(|| server_url.clone()));
        let provider = match (&shared_ca, &config.ca_seal_key) {
            // Replicas on one store share the sealed signing key and the refresh sessions.
            (Some(_), Some(seal)) => crate::oidc::Provider::open_shared(
                &oidc_dir,
                oidc_issuer,
                config.oidc.clone(),
                store.clone(),
                seal,
                config.trust_domain.as_str(),
            )
            .await
            .context("opening the shared OIDC provider")?,
            _ => crate::oidc::Provider::open(&oidc_dir, oidc_issuer, config.oidc.clone())?,
        };
        let oidc = crate::oidc::FlowState::new(provider)?;
        write_admin_kubeconfig(&ca, &kubeconfig, &server_url).context("writing admin.kubeconfig")?;

        let root_name = format!("cp-{}", INSTANCE.fetch_add(1, Ordering::Relaxed));
        let sessions = format!("{root_name}/sessions");
        let pool = Arc::new(SigningPool::with_default_size(ca.clone()));
        let namespace = DEFAULT_NAMESPACE.to_owned();
        let endpoint_ctx = Arc::new(EndpointContext {
            store: store.clone(),
            ca: ca.clone(),
            attestor: Arc::new(Attestor::new(
                store.clone(),
                pool.clone(),
                AttestorConfig {
                    namespace: namespace.clone(),
                    daemon_svid_ttl: Some(config.daemon_svid_ttl),
                    rate_limit: config.attest_rate_limit.clone(),
                },
            )),
            authorizer: Arc::new(Authorizer::new(store.clone(), pool, AuthorizerConfig::default())),
            policy: PolicyCompiler::new(store.clone(), ca.clone()),
            frames: riptides_wire::proto::FrameConfig::with_max_frame(config.max_frame),
            daemon_svid_ttl: config.daemon_svid_ttl,
            namespace,
            sessions: sessions.clone(),
        });
        let link_tls = Arc::new(LinkTls::new(ca.clone())?);
        let transport = riptides_wire::transport::TransportConfig::default();
        let (quic_server, tcp_server) =
            endpoint::bind(config.quic_addr, config.tunnel_addr, &link_tls, &transport).await?;
        let quic_addr = quic_server.local_addr()?;
        let tunnel_addr = tcp_server.local_addr();

        let api_state = Arc::new(ApiState {
            store: store.clone(),
            ca: ca.clone(),
            sessions: sessions.clone(),
            validation: ValidationContext { trust_domain: config.trust_domain.clone() },
            max_request_body: config.max_request_body,
            max_watch_duration: config.max_watch_duration,
            metrics: metrics.clone(),
            oidc: oidc.clone(),
        });
        let health_state =
            Arc::new(HealthState { store: store.clone(), metrics: metrics.clone(), supervisor: root_name.clone() });
        let interval = config.controller_interval;

        let mut children = vec![
            {
                let store = store.clone();
                let metrics = metrics.clone();
                let leadership = leadership.clone();
                task("store", move |cancel| {
                    let (store, metrics, leadership) = (store.clone(), metrics.clone(), leadership.clone());
                    async move { store_maintenance(store, metrics, leadership, history, interval, cancel).await }
                })
            },
            {
                let ca = ca.clone();
                let shared = shared_ca.clone();
                let leadership = leadership.clone();
                task("ca", move |cancel| {
                    let (ca, shared, leadership) = (ca.clone(), shared.clone(), leadership.clone());
                    async move { ca_rotation(ca, shared, leadership, interval, cancel).await }
                })
            },
            {
                let router = api::router(api_state);
                let listener = api_listener;
                task("api", move |cancel| {
                    let router = router.clone();
                    let serving = serving.clone();
                    let metrics = metrics.clone();
                    let listener = listener.try_clone();
                    async move {
                        let listener =
                            tokio::net::TcpListener::from_std(listener.context("cloning the API listener")?)?;
                        api::serve(listener, serving, router, metrics, cancel).await
                    }
                })
            },
            {
                let router = health::router(health_state);
                let listener = health_listener;
                task("health", move |cancel| {
                    let router = router.clone();
                    let listener = listener.try_clone();
                    async move {
                        let listener =
                            tokio::net::TcpListener::from_std(listener.context("cloning the health listener")?)?;
                        axum::serve(listener, router).with_graceful_shutdown(cancel.cancelled_owned()).await?;
                        Ok(())
                    }
                })
            },
            {
                let store = store.clone();
                let leadership = leadership.clone();
                task("token-gc", move |cancel| {
                    let (store, leadership) = (store.clone(), leadership.clone());
                    async move { token_gc(store, leadership, interval, cancel).await }
                })
            },
            riptides_actors::ChildSpec::supervisor(
                "sessions",
                SupervisorConfig::with_budget(u32::MAX, Duration::from_secs(1)),
                vec![],
            ),
            link_task("quic", quic_server, quic_addr, link_tls.clone(), endpoint_ctx.clone()),
            link_task("tunnel", tcp_server, tunnel_addr, link_tls, endpoint_ctx),
        ];
        if let Some(shared) = shared_ca.clone() {
            children.push(task("ca-sync", move |cancel| {
                let shared = shared.clone();
                async move { shared.follow(cancel).await }
            }));
        }
        let tree =
            Supervisor::start(root_name.clone(), SupervisorConfig::with_budget(10, Duration::from_secs(60)), children)
                .await
                .context("starting the control plane's actor tree")?;
        tracing::info!(%api_addr, %health_addr, %quic_addr, %tunnel_addr, trust_domain = %config.trust_domain, data_dir = %config.data_dir.display(), supervisor = %root_name, "control plane started");
        Ok(ControlPlane {
            api_addr,
            health_addr,
            quic_addr,
            tunnel_addr,
            sessions,
            kubeconfig,
            store,
            ca,
            oidc,
            tree,
            leadership,
            _election: election_guard,
        })
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    pub fn health_addr(&self) -> SocketAddr {
        self.health_addr
    }

    /// The daemon endpoint (QUIC, UDP).
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addr
    }

    /// The daemon endpoint's TCP+TLS fallback.
    pub fn tunnel_addr(&self) -> SocketAddr {
        self.tunnel_addr
    }

    /// Registered name of the supervisor holding one session actor per connected daemon.
    pub fn sessions_supervisor(&self) -> &str {
        &self.sessions
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn ca(&self) -> &Arc<Ca> {
        &self.ca
    }

    /// The OIDC provider operators sign in through.
    pub fn oidc(&self) -> &Arc<crate::oidc::Provider> {
        &self.oidc.provider
    }

    /// Whether this replica runs the controllers right now (always, on the embedded store).
    pub fn is_leader(&self) -> bool {
        self.leadership.is_leader()
    }

    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    /// Waits until the tree ends by itself (escalation) and says why.
    pub async fn wait(&self) -> SupervisorExit {
        self.tree.wait().await
    }

    /// Stops every child in reverse start order.
    pub async fn shutdown(self) -> SupervisorExit {
        self.tree.shutdown(Some("shutdown requested".into())).await
    }
}

/// A supervised daemon-endpoint listener (QUIC or TCP+TLS). The first incarnation serves the
/// listener bound at start (its address is already known); a restarted one binds it again.
fn link_task<L: endpoint::LinkListener>(
    name: &str,
    server: L,
    addr: SocketAddr,
    tls: Arc<LinkTls>,
    ctx: Arc<EndpointContext>,
) -> riptides_actors::ChildSpec {
    let bound = Arc::new(std::sync::Mutex::new(Some(server)));
    task(name, move |cancel| {
        let (bound, tls, ctx) = (bound.clone(), tls.clone(), ctx.clone());
        async move {
            let taken = bound.lock().unwrap_or_else(|p| p.into_inner()).take();
            let server = match taken {
                Some(s) => s,
                None => L::bind(addr, tls.config()?.0).await?,
            };
            endpoint::serve(server, tls, ctx, cancel).await
        }
    })
}

/// A replica name unique per process: host name, API address and process id.
fn default_replica_name(config: &Config) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}/{}/{}", host.trim(), config.api_addr, std::process::id())
}

fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<StdTcpListener> {
    let l = StdTcpListener::bind(addr).with_context(|| format!("binding the {what} listener on {addr}"))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), "data dir is accessible to other users");
    }
    Ok(())
}

/// Writes `admin.kubeconfig` (mode 0600: it holds the admin private key) on first start, and
/// rewrites it when the API address changed or the admin certificate is no longer trusted.
fn write_admin_kubeconfig(ca: &Ca, path: &Path, server_url: &str) -> anyhow::Result<()> {
    let bundle_pem = ca.bundle().to_pem();
    if let Ok(text) = std::fs::read_to_string(path) {
        if let Ok(mut kc) = Kubeconfig::parse(&text) {
            if let Ok(creds) = kc.credentials() {
                let cert_still_trusted = creds.client_cert_pem.as_ref().is_some_and(|c| cert_chains_to_bundle(c, ca));
                if cert_still_trusted {
                    if creds.server == server_url && creds.ca_pem == bundle_pem.as_bytes() {
                        return Ok(());
                    }
                    for c in &mut kc.clusters {
                        c.cluster.server = server_url.to_owned();
                        c.cluster.certificate_authority_data = Some(base64::Engine::encode(
                            &base64::engine::general_purpose::STANDARD,
                            bundle_pem.as_bytes(),
                        ));
                    }
                    return write_private(path, kc.to_yaml().as_bytes());
                }
            }
        }
    }
    let admin = ca.trust_domain().workload_id(&format!("{}admin", api::ADMIN_PATH_PREFIX.trim_start_matches('/')))?;
    let (svid, key) = ca.issue_with_new_key(&admin, &[], &[], Some(ADMIN_CERT_TTL), SystemTime::now())?;
    let kc = Kubeconfig::single(
        "riptides",
        server_url,
        bundle_pem.as_bytes(),
        svid.chain_pem().as_bytes(),
        key.to_pem().as_bytes(),
        DEFAULT_NAMESPACE,
    );
    write_private(path, kc.to_yaml().as_bytes())?;
    tracing::info!(path = %path.display(), identity = %admin, "wrote admin kubeconfig");
    Ok(())
}

fn cert_chains_to_bundle(cert_pem: &[u8], ca: &Ca) -> bool {
    use rustls_pki_types::pem::PemObject;
    let Some(Ok(leaf)) = rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem).next() else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
        return false;
    };
    let still_valid = cert.validity().time_to_expiration().is_some_and(|left| left.whole_days() > 30);
    still_valid
        && ca.bundle().roots().iter().any(|root| {
            x509_parser::parse_x509_certificate(root.as_ref())
                .is_ok_and(|(_, r)| cert.verify_signature(Some(r.public_key())).is_ok())
        })
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

async fn store_maintenance(
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    leadership: Leadership,
    keep: u64,
    interval: Duration,
    cancel: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let rev = store.current_revision().await?;
        metrics.store_revision.set(rev as i64);
        // One replica compacts a shared store.
        if leadership.is_leader() {
            store.compact(keep).await?;
        }
    }
}

async fn ca_rotation(
    ca: Arc<Ca>,
    shared: Option<Arc<SharedCa>>,
    leadership: Leadership,
    interval: Duration,
    cancel: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        // Followers load the leader's rotations through `ca-sync`.
        if !leadership.is_leader() {
            continue;
        }
        let ca = ca.clone();
        let outcome = tokio::task::spawn_blocking(move || ca.tick(SystemTime::now())).await??;
        if !outcome.is_empty() {
            tracing::info!(?outcome, "CA rotation step");
            if let Some(shared) = &shared {
                shared.publish().await?;
            }
        }
    }
}

async fn token_gc(
    store: Arc<dyn Store>,
    leadership: Leadership,
    interval: Duration,
    cancel: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let rt = riptides_wire::resource::by_name("jointokens").expect("JoinToken is a known kind");
    let mut tick = tokio::time::interval(interval.max(Duration::from_secs(1)));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        if !leadership.is_leader() {
            continue;
        }
        let (tokens, _) = store.list(&rt.store_key(), None).await?;
        let now = OffsetDateTime::now_utc();
        for t in tokens {
            let expired_long_ago = serde_json::from_slice::<serde_json::Value>(&t.value)
                .ok()
                .and_then(|v| v.pointer("/spec/expiresAt").and_then(|e| e.as_str()).map(str::to_owned))
                .and_then(|e| OffsetDateTime::parse(&e, &Rfc3339).ok())
                .is_some_and(|exp| exp + TOKEN_RETENTION < now);
            if expired_long_ago {
                let key: &ObjectKey = &t.key;
                match store.delete(key, Some(t.mod_revision)).await {
                    Ok(_) => {
                        tracing::info!(token = %key.name, namespace = %key.namespace, "deleted expired join token")
                    }
                    Err(e) => tracing::debug!(token = %key.name, error = %e, "join token changed; retry next round"),
                }
            }
        }
    }
}
