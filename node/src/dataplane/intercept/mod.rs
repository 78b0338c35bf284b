//! TLS intercept with credential injection (egress rule `connection.tls.intercept: true`).
//!
//! For a connection whose decision asks for intercept and whose application speaks TLS, the
//! node terminates the application's TLS (1.2 or 1.3) with a leaf minted for the name the
//! application asked for (SNI, else the destination IP) by the node's [`InterceptCa`], serves
//! the HTTP inside with hyper (HTTP/1.1 with keep-alive, chunked bodies and pipelining, or
//! HTTP/2 when the application negotiates `h2`), sets the header of the CredentialBinding that
//! applies (replacing whatever the application sent), and forwards every request over a new TLS
//! connection to the real destination, verified against the Service's `tls.caBundle` or the
//! system roots. An upstream that cannot be verified fails the request (502); there is no
//! plaintext or unverified fallback.
//!
//! Bounds: the application's handshake ([`InterceptConfig::handshake_timeout`]), request head
//! size (HTTP/1 buffer, HTTP/2 header list), header read time, idle connections
//! ([`InterceptConfig::idle_timeout`]), HTTP/2 concurrent streams. Bodies stream through (hyper
//! `Incoming` on both sides): nothing is buffered beyond hyper's own buffers.

pub mod ca;
mod proxy;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;

pub use ca::{CaError, InterceptCa};
pub use proxy::{serve, Injection, InterceptTarget};

use crate::credentials::{CredentialConfig, CredentialManager};

/// Settings of TLS intercept, defaults in one place.
#[derive(Debug, Clone)]
pub struct InterceptConfig {
    /// Where the intercept CA lives (`<data dir>/intercept`); `None` disables intercept
    /// (connections asking for it are refused, never passed unintercepted).
    pub dir: Option<PathBuf>,
    /// Opt-in: also write the CA certificate here (e.g.
    /// `/usr/local/share/ca-certificates/riptides-intercept.crt`).
    pub trust_store_path: Option<PathBuf>,
    /// Leaves minted per name; cached leaves are re-minted at half this.
    pub leaf_ttl: Duration,
    /// Leaves cached at most (least recently used evicted).
    pub leaf_cache: usize,
    /// Bound on the application's TLS handshake.
    pub handshake_timeout: Duration,
    /// A connection with no byte either way for this long is closed.
    pub idle_timeout: Duration,
    /// Bound on reading one request head (HTTP/1).
    pub header_read_timeout: Duration,
    /// Largest request head: HTTP/1 read buffer (min 8192) and HTTP/2 header list.
    pub max_header_bytes: usize,
    /// HTTP/2 streams at once per connection.
    pub max_h2_streams: u32,
    /// Token fetching.
    pub credentials: CredentialConfig,
}

impl Default for InterceptConfig {
    fn default() -> Self {
        InterceptConfig {
            dir: None,
            trust_store_path: None,
            leaf_ttl: Duration::from_secs(24 * 3600),
            leaf_cache: 1024,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_h2_streams: 100,
            credentials: CredentialConfig::default(),
        }
    }
}

/// The intercept machinery of one daemon: CA, credentials, limits.
pub struct Intercept {
    pub cfg: InterceptConfig,
    pub ca: InterceptCa,
    pub credentials: Arc<CredentialManager>,
}

impl std::fmt::Debug for Intercept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intercept").field("ca", &self.ca).finish_non_exhaustive()
    }
}

impl Intercept {
    /// Loads or creates the CA in `cfg.dir` and publishes it to the opt-in path.
    pub fn start(cfg: InterceptConfig) -> Result<Intercept, CaError> {
        let dir = cfg.dir.clone().ok_or_else(|| CaError::Invalid {
            path: String::new(),
            reason: "no intercept directory configured".into(),
        })?;
        let ca = InterceptCa::load_or_create(&dir, cfg.leaf_ttl, cfg.leaf_cache)?;
        if let Some(p) = &cfg.trust_store_path {
            ca.publish_to(p)?;
            tracing::info!(path = %p.display(), "intercept CA certificate written to the opted-in trust store path");
        }
        let credentials = CredentialManager::new(cfg.credentials.clone());
        Ok(Intercept { cfg, ca, credentials })
    }
}

/// The system's trust anchors (Debian's bundle; `SSL_CERT_FILE` overrides).
pub fn system_roots() -> Result<Vec<CertificateDer<'static>>, String> {
    let path = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
    let pem = std::fs::read(&path).map_err(|e| format!("reading the system roots {}: {e}", path.display()))?;
    let roots = riptides_wire::tls::load_certs_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
    if roots.is_empty() {
        return Err(format!("{} holds no certificates", path.display()));
    }
    Ok(roots)
}

/// What the userspace dataplane knows about an outbound connection that asks for intercept.
pub struct OutboundIntercept<'a> {
    pub dst: std::net::SocketAddr,
    /// The application's SNI, if it sent one.
    pub sni: Option<String>,
    pub mode: riptides_wire::resource::core::TlsMode,
    pub allowed: &'a [riptides_wire::SpiffeId],
    pub service: &'a super::rules::ServiceInfo,
    pub workload: &'a super::rules::LocalWorkload,
    pub rules: &'a super::rules::Rules,
    /// The workload's SVID: needed when the destination is a Riptides node (MUTUAL), where
    /// the re-encrypted TLS travels inside the node-to-node mTLS (ALPN passthrough).
    pub svid: Option<Arc<super::handshake::Svid>>,
    pub handshake: &'a super::handshake::HandshakeConfig,
}

impl Intercept {
    /// Intercepts one outbound connection: `client` is the application's side (its TLS
    /// ClientHello not yet consumed), `upstream` a connected socket to the destination.
    pub async fn outbound<C>(
        &self,
        client: C,
        upstream: tokio::net::TcpStream,
        o: OutboundIntercept<'_>,
        row: Arc<super::table::ConnectionRow>,
    ) -> anyhow::Result<()>
    where
        C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        use anyhow::Context as _;
        use riptides_wire::resource::core::TlsMode;
        let roots = match &o.service.ca_bundle {
            Some(pem) => riptides_wire::tls::load_certs_pem(pem.as_bytes())
                .ok()
                .filter(|c| !c.is_empty())
                .with_context(|| format!("Service {}: tls.caBundle holds no usable certificate", o.service.name))?,
            None => system_roots().map_err(|e| anyhow::anyhow!("no roots to verify {}: {e}", o.service.name))?,
        };
        let ip = o.dst.ip().to_string();
        let leaf_name = o.sni.clone().unwrap_or_else(|| ip.clone());
        let server_name = o.service.server_name.clone().or_else(|| o.sni.clone()).unwrap_or(ip);
        let injection = match o.rules.binding_for(o.workload, o.service) {
            Some(b) => {
                row.set_binding(b.display_name());
                tracing::Span::current().record("binding", tracing::field::display(b.display_name()));
                Some(Arc::new(Injection {
                    binding: b.display_name(),
                    source: b.source.clone(),
                    header: hyper::header::HeaderName::from_bytes(b.header.as_bytes())
                        .with_context(|| format!("binding {}: bad header name", b.display_name()))?,
                    format: b.format.clone(),
                }))
            }
            None => None,
        };
        row.set_mode(format!("intercept ({})", format!("{:?}", o.mode).to_uppercase()));
        let target = InterceptTarget { leaf_name, server_name, roots, injection };
        if o.mode == TlsMode::Mutual {
            let svid =
                o.svid.with_context(|| format!("no SVID for {} yet; refusing (fail closed)", o.workload.spiffe_id))?;
            let (tls, info) = super::handshake::connect_mtls(
                upstream,
                &svid,
                o.allowed,
                o.rules.bundles(),
                super::handshake::Alpn::Passthrough,
                o.handshake,
            )
            .await
            .map_err(|e| anyhow::anyhow!(e).context(format!("mTLS to {} failed (intercept, MUTUAL)", o.dst)))?;
            tracing::info!(peer = ?info.peer_id, "intercept: node-to-node mTLS established");
            serve(self, client, tls, target, row).await
        } else {
            serve(self, client, upstream, target, row).await
        }
    }
}

impl Intercept {
    /// Keeps the daemon's status (`/config_dump`, `/readyz`) current with the CA and the
    /// credential sources' states, until the runtime stops.
    pub fn publish_status(self: &Arc<Self>, shared: crate::state::Shared) {
        let this = self.clone();
        let mut changes = self.credentials.subscribe();
        tokio::spawn(async move {
            loop {
                let status = this.credentials.status();
                let problems = this.credentials.problems();
                let doc = serde_json::json!({
                    "caCertificate": this.ca.cert_path().display().to_string(),
                    "cachedLeaves": this.ca.cached(),
                    "credentialSources": status,
                });
                shared.update(|s| {
                    s.intercept = doc;
                    s.credential_problems = problems;
                });
                // Also on a timer: a token can expire without any fetch result.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), changes.changed()).await;
            }
        });
    }
}
