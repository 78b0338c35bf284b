//! The daemon endpoint: the wire protocol on QUIC (`--quic-addr`, UDP) and, for networks that
//! block UDP, on TCP+TLS with yamux (`--tunnel-addr`). Both carry the same streams.
//!
//! Every connection is daemon-initiated. A connection without a client certificate is a
//! bootstrap connection and may only attest; a connection with a daemon SVID gets a session
//! actor (one per daemon, under the `sessions` supervisor) that serves the daemon's requests
//! and lets the control plane open tunnel streams back to it.

mod handler;
mod session;
mod status;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use riptides_wire::proto::{FrameConfig, ALPN};
use riptides_wire::transport::{Connection, QuicServer, TcpTlsServer, TransportConfig, TransportError};
use riptides_wire::SpiffeId;
use rustls::ServerConfig;
use tokio_util::sync::CancellationToken;

pub use session::{tunnel_request, SessionActor, SessionMsg};

use crate::attest::{Attestor, Authorizer};
use crate::ca::Ca;
use crate::policy::PolicyCompiler;
use crate::store::Store;

/// SPIFFE path of the control plane's own identity on the daemon link.
pub const CONTROLPLANE_PATH: &str = "riptides/controlplane";
/// SPIFFE path prefix of daemon identities.
pub const DAEMON_PATH_PREFIX: &str = "/riptides/daemon/";
/// How long a daemon has to send its request on a new stream.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Streams one connection may have in flight; more wait (QUIC also bounds them itself).
const STREAMS_PER_CONNECTION: usize = 32;
/// Lifetime of the link's serving certificate; renewed at half of it.
const SERVING_TTL: Duration = Duration::from_secs(24 * 3600);

/// Everything a session needs, shared by all of them.
pub struct EndpointContext {
    pub store: Arc<dyn Store>,
    pub ca: Arc<Ca>,
    pub attestor: Arc<Attestor>,
    pub authorizer: Arc<Authorizer>,
    pub policy: PolicyCompiler,
    pub frames: FrameConfig,
    pub daemon_svid_ttl: Duration,
    pub namespace: String,
    /// Registered name of the supervisor that holds one session actor per daemon.
    pub sessions: String,
}

impl EndpointContext {
    /// Signs a CSR for a daemon's own identity in the bounded signing pool.
    pub(crate) async fn attestor_pool_sign(
        &self,
        csr_der: &[u8],
        id: SpiffeId,
        now: SystemTime,
    ) -> Result<crate::ca::Svid, crate::attest::AttestError> {
        let pool = self.authorizer.pool();
        let permit = pool.acquire().await?;
        pool.sign(permit, csr_der, id, Some(self.daemon_svid_ttl), now).await
    }
}

/// The link's TLS server config, re-issued before its certificate expires and whenever the
/// trust bundle changes (so new roots are accepted for client certificates).
pub struct LinkTls {
    ca: Arc<Ca>,
    id: SpiffeId,
    current: Mutex<Option<(Arc<ServerConfig>, u64, SystemTime)>>,
}

impl LinkTls {
    pub fn new(ca: Arc<Ca>) -> anyhow::Result<Self> {
        let id = ca.trust_domain().workload_id(CONTROLPLANE_PATH)?;
        Ok(LinkTls { ca, id, current: Mutex::new(None) })
    }

    /// The config to use now, and whether it changed since the last call.
    pub fn config(&self) -> anyhow::Result<(Arc<ServerConfig>, bool)> {
        let now = SystemTime::now();
        let bundle = self.ca.bundle();
        let mut cur = self.current.lock().expect("link TLS lock poisoned");
        if let Some((cfg, seq, renew_at)) = cur.as_ref() {
            if *seq == bundle.sequence() && now < *renew_at {
                return Ok((cfg.clone(), false));
            }
        }
        let (svid, key) = self.ca.issue_with_new_key(&self.id, &[], &[], Some(SERVING_TTL), now)?;
        // The root goes along so that a daemon holding only a pin (`--ca-pin`) finds it.
        let mut chain = svid.chain.clone();
        chain.push(svid.issuer.clone());
        let cfg = riptides_wire::tls::server_config(chain, key.to_rustls(), bundle.roots(), &[ALPN])?;
        let lifetime = svid.not_after.duration_since(now).unwrap_or_default();
        *cur = Some((cfg.clone(), bundle.sequence(), now + lifetime / 2));
        tracing::info!(id = %self.id, "issued daemon-link serving certificate");
        Ok((cfg, true))
    }
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// No client certificate: may only attest.
    Bootstrap,
    /// A daemon SVID: `spiffe://<td>/riptides/daemon/<id>`, valid until `not_after`.
    Daemon { id: String, spiffe_id: SpiffeId, not_after: SystemTime },
    /// Some other identity of the trust domain: refused.
    Other(SpiffeId),
}

pub fn identify(conn: &dyn Connection, ca: &Ca) -> Peer {
    let Some(certs) = conn.peer_certificates().filter(|c| !c.is_empty()) else {
        return Peer::Bootstrap;
    };
    match riptides_wire::tls::peer_spiffe_id(&certs) {
        Ok(id) if id.is_member_of(ca.trust_domain()) => match id.path().strip_prefix(DAEMON_PATH_PREFIX) {
            Some(daemon) if !daemon.is_empty() && !daemon.contains('/') => {
                Peer::Daemon { id: daemon.to_owned(), spiffe_id: id, not_after: leaf_not_after(&certs[0]) }
            }
            _ => Peer::Other(id),
        },
        Ok(id) => Peer::Other(id),
        // The TLS layer verified the chain; an SVID without exactly one URI SAN is not ours.
        Err(_) => Peer::Bootstrap,
    }
}

/// NotAfter of a verified leaf (the handshake checked it; a long-lived connection may outlive it).
fn leaf_not_after(der: &[u8]) -> SystemTime {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .and_then(|(_, c)| u64::try_from(c.validity().not_after.timestamp()).ok())
        .map(|s| std::time::UNIX_EPOCH + Duration::from_secs(s))
        .unwrap_or(std::time::UNIX_EPOCH)
}

/// What the QUIC and TCP+TLS listeners have in common, so one accept loop serves both.
pub trait LinkListener: Sized + Send + Sync + 'static {
    /// Binds a fresh listener (a restarted task whose listener was dropped with it).
    fn bind(addr: SocketAddr, tls: Arc<ServerConfig>)
        -> impl std::future::Future<Output = anyhow::Result<Self>> + Send;
    fn accept(&self) -> impl std::future::Future<Output = Result<Arc<dyn Connection>, TransportError>> + Send;
    /// Swaps certificates and client roots for new handshakes.
    fn set_tls(&self, cfg: Arc<ServerConfig>) -> anyhow::Result<()>;
}

impl LinkListener for QuicServer {
    async fn bind(addr: SocketAddr, tls: Arc<ServerConfig>) -> anyhow::Result<Self> {
        Ok(QuicServer::bind(addr, tls, &TransportConfig::default()).await?)
    }
    fn accept(&self) -> impl std::future::Future<Output = Result<Arc<dyn Connection>, TransportError>> + Send {
        QuicServer::accept(self)
    }
    fn set_tls(&self, cfg: Arc<ServerConfig>) -> anyhow::Result<()> {
        Ok(self.set_server_config(cfg)?)
    }
}

impl LinkListener for TcpTlsServer {
    async fn bind(addr: SocketAddr, tls: Arc<ServerConfig>) -> anyhow::Result<Self> {
        Ok(TcpTlsServer::bind(addr, tls, &TransportConfig::default()).await?)
    }
    fn accept(&self) -> impl std::future::Future<Output = Result<Arc<dyn Connection>, TransportError>> + Send {
        TcpTlsServer::accept(self)
    }
    fn set_tls(&self, cfg: Arc<ServerConfig>) -> anyhow::Result<()> {
        self.set_server_config(cfg);
        Ok(())
    }
}

/// Serves a listener until cancelled, swapping its TLS config when [`LinkTls`] renews. The
/// listener is dropped when this returns, so a stopped control plane frees its ports.
pub async fn serve<L: LinkListener>(
    server: L,
    tls: Arc<LinkTls>,
    ctx: Arc<EndpointContext>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut refresh = tokio::time::interval(Duration::from_secs(5));
    loop {
        let conn = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = refresh.tick() => {
                let (cfg, changed) = tls.config()?;
                if changed {
                    server.set_tls(cfg)?;
                }
                continue;
            }
            c = server.accept() => c?,
        };
        tokio::spawn(session::serve_connection(conn, ctx.clone()));
    }
}

/// Binds both listeners (so their addresses are known before the tree starts).
pub async fn bind(
    quic_addr: SocketAddr,
    tunnel_addr: SocketAddr,
    tls: &LinkTls,
    cfg: &TransportConfig,
) -> anyhow::Result<(QuicServer, TcpTlsServer)> {
    use anyhow::Context;
    let (server_config, _) = tls.config()?;
    let quic = QuicServer::bind(quic_addr, server_config.clone(), cfg)
        .await
        .with_context(|| format!("binding QUIC on {quic_addr}"))?;
    let tcp = TcpTlsServer::bind(tunnel_addr, server_config, cfg)
        .await
        .with_context(|| format!("binding the TCP tunnel on {tunnel_addr}"))?;
    Ok((quic, tcp))
}
