//! The TLS listener under the API: serving certificate from our own CA (renewed before it
//! expires and whenever the trust bundle changes), optional client certificates, one hyper
//! HTTP/1.1 connection per accepted socket, bounded concurrency and handshake time.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Extension;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use riptides_wire::SpiffeId;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Caller, ADMIN_PATH_PREFIX};
use crate::ca::Ca;
use crate::metrics::Metrics;

/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Lifetime of the API serving certificate; renewed at half of it.
const SERVING_CERT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The API's serving identity `spiffe://<td>/riptides/controlplane`, with the DNS names and
/// addresses clients use to reach it, and the rustls config built from it.
pub struct ServingCert {
    ca: Arc<Ca>,
    id: SpiffeId,
    dns_names: Vec<String>,
    ips: Vec<IpAddr>,
    current: Mutex<Option<Current>>,
}

struct Current {
    config: Arc<ServerConfig>,
    bundle_sequence: u64,
    renew_at: SystemTime,
}

impl ServingCert {
    pub fn new(ca: Arc<Ca>, names: &[String]) -> anyhow::Result<Self> {
        let id = ca.trust_domain().workload_id("riptides/controlplane")?;
        let mut dns_names = vec!["localhost".to_owned()];
        let mut ips: Vec<IpAddr> = vec!["127.0.0.1".parse()?, "::1".parse()?];
        for n in names {
            match n.parse::<IpAddr>() {
                Ok(ip) if !ip.is_unspecified() => ips.push(ip),
                Ok(_) => {}
                Err(_) => dns_names.push(n.clone()),
            }
        }
        dns_names.dedup();
        ips.dedup();
        Ok(ServingCert { ca, id, dns_names, ips, current: Mutex::new(None) })
    }

    /// The rustls config to use for the next handshake, re-issued when due.
    pub fn server_config(&self) -> anyhow::Result<Arc<ServerConfig>> {
        let now = SystemTime::now();
        let bundle = self.ca.bundle();
        let mut cur = self.current.lock().expect("serving cert lock poisoned");
        if let Some(c) = cur.as_ref() {
            if c.bundle_sequence == bundle.sequence() && now < c.renew_at {
                return Ok(c.config.clone());
            }
        }
        let (svid, key) =
            self.ca.issue_with_new_key(&self.id, &self.dns_names, &self.ips, Some(SERVING_CERT_TTL), now)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(bundle.root_store()), provider.clone())
            .allow_unauthenticated()
            .build()?;
        let chain = svid.chain.clone();
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key.to_rustls())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        let lifetime = svid.not_after.duration_since(now).unwrap_or_default();
        tracing::info!(id = %self.id, not_after = %super::rfc3339(svid.not_after), "issued API serving certificate");
        *cur =
            Some(Current { config: config.clone(), bundle_sequence: bundle.sequence(), renew_at: now + lifetime / 2 });
        Ok(config)
    }
}

/// Maps a verified client certificate to a caller.
fn caller_from_cert(chain: &[rustls_pki_types::CertificateDer<'_>], ca: &Ca) -> Caller {
    // An X509-SVID has exactly one URI SAN; anything else is not an identity we issued.
    match riptides_wire::tls::peer_spiffe_id(chain) {
        Ok(id) if id.is_member_of(ca.trust_domain()) => {
            if id.path().starts_with(ADMIN_PATH_PREFIX) {
                Caller::Admin(id)
            } else {
                Caller::Identity(id)
            }
        }
        _ => Caller::Anonymous,
    }
}

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServingCert>,
    router: Router,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => p?,
        };
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let config = tls.server_config()?;
        let ca = tls.ca.clone();
        let router = router.clone();
        let metrics = metrics.clone();
        let span = tracing::debug_span!("api_conn", %peer);
        conns.spawn(
            async move {
                let _permit = permit;
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(tcp)).await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        metrics.tls_handshake_failures.inc();
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        metrics.tls_handshake_failures.inc();
                        tracing::debug!("TLS handshake timed out");
                        return;
                    }
                };
                let caller = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|chain| caller_from_cert(chain, &ca))
                    .unwrap_or(Caller::Anonymous);
                tracing::debug!(?caller, "API connection");
                let svc = TowerToHyperService::new(router.layer(Extension(caller)));
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), svc)
                    // GraphQL subscriptions upgrade to WebSocket.
                    .with_upgrades();
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "API connection ended with an error");
                }
            }
            .instrument(span),
        );
        // Reap finished connections so the set does not grow without bound.
        while conns.try_join_next().is_some() {}
    }
    conns.shutdown().await;
    Ok(())
}
