//! Dialing the control plane (QUIC first, TCP+TLS fallback) and one-shot exchanges on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use riptides_wire::proto::messages::{Request, Response};
use riptides_wire::proto::{read_frame_timeout, write_frame, FrameConfig, FrameError, ALPN};
use riptides_wire::tls::{client_config, ExpectedId, ServerTrust};
use riptides_wire::transport::{connect_tcp_tls, Connection, QuicClient, TransportConfig};
use riptides_wire::SpiffeId;
use tokio::io::AsyncWriteExt as _;

use crate::config::{DaemonConfig, CONTROLPLANE_PATH};
use crate::identity::Identity;

/// Resolves `HOST:PORT` (the first address).
pub async fn resolve(addr: &str) -> Result<SocketAddr> {
    tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .ok_or_else(|| anyhow!("{addr} resolves to no address"))
}

/// One control-plane endpoint to dial: a QUIC address and its TCP+TLS fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpEndpoint {
    pub quic: SocketAddr,
    pub tunnel: String,
}

/// Every endpoint the configuration names, in order: each `--controlplane` entry, expanded
/// to every address its host name resolves to (a DNS name with several records is several
/// replicas). A fallback address on the same host is paired with each resolved address. An
/// entry that does not resolve is skipped (with a warning) while another one does.
pub async fn endpoints(cfg: &DaemonConfig) -> Result<Vec<CpEndpoint>> {
    let mut out: Vec<CpEndpoint> = Vec::new();
    let mut errors = Vec::new();
    for (quic, tunnel) in cfg.controlplane_addrs().into_iter().zip(cfg.tunnel_addrs()) {
        let addrs: Vec<SocketAddr> = match tokio::net::lookup_host(&quic).await {
            Ok(a) => a.collect(),
            Err(e) => {
                tracing::warn!(controlplane = %quic, error = %e, "cannot resolve a control-plane address");
                errors.push(format!("{quic}: {e}"));
                continue;
            }
        };
        let same_host = host_of(&quic) == host_of(&tunnel);
        let tunnel_port = tunnel.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
        for a in addrs {
            let tunnel = match (same_host, tunnel_port) {
                (true, Some(port)) => SocketAddr::new(a.ip(), port).to_string(),
                _ => tunnel.clone(),
            };
            let ep = CpEndpoint { quic: a, tunnel };
            if !out.contains(&ep) {
                out.push(ep);
            }
        }
    }
    if out.is_empty() {
        return Err(anyhow!("no control-plane address resolves: {}", errors.join("; ")));
    }
    Ok(out)
}

fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

/// The daemon's QUIC client endpoint for dialing `addr`'s address family: the one in
/// `client` when it has that family, else a new one (kept in `client`). Clones share the
/// UDP socket, so several dials may run at once.
pub fn quic_client(
    cfg: &DaemonConfig,
    client: &mut Option<(QuicClient, bool)>,
    addr: SocketAddr,
) -> Result<QuicClient> {
    let v6 = addr.is_ipv6();
    if client.as_ref().is_none_or(|(_, is_v6)| *is_v6 != v6) {
        let bind: SocketAddr = if v6 { "[::]:0".parse()? } else { "0.0.0.0:0".parse()? };
        let tc = TransportConfig { handshake_timeout: cfg.quic_connect_timeout, ..TransportConfig::default() };
        *client = Some((QuicClient::bind(bind, &tc)?, v6));
    }
    Ok(client.as_ref().expect("set above").0.clone())
}

/// Dials QUIC to one endpoint (with the QUIC handshake timeout).
pub async fn dial_quic_at(
    cfg: &DaemonConfig,
    client: &mut Option<(QuicClient, bool)>,
    tls: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
) -> Result<Arc<dyn Connection>> {
    let c = quic_client(cfg, client, addr)?;
    c.connect(addr, tls).await.with_context(|| format!("QUIC to {addr}"))
}

/// Dials TCP+TLS (yamux) to one endpoint's fallback address.
pub async fn dial_tcp_at(
    cfg: &DaemonConfig,
    tls: Arc<rustls::ClientConfig>,
    tunnel: &str,
) -> Result<Arc<dyn Connection>> {
    let addr = resolve(tunnel).await?;
    let tc = TransportConfig { handshake_timeout: cfg.tcp_connect_timeout, ..TransportConfig::default() };
    connect_tcp_tls(addr, tls, "controlplane", &tc).await.with_context(|| format!("TCP+TLS to {addr}"))
}

/// The control plane's SPIFFE ID.
pub fn controlplane_id(cfg: &DaemonConfig) -> Result<SpiffeId> {
    Ok(cfg.trust_domain.workload_id(CONTROLPLANE_PATH)?)
}

/// A rustls client config for the link.
pub fn tls(cfg: &DaemonConfig, trust: ServerTrust, identity: Option<&Identity>) -> Result<Arc<rustls::ClientConfig>> {
    let client = identity.map(|i| i.rustls()).transpose()?;
    Ok(client_config(trust, ExpectedId::Exact(controlplane_id(cfg)?), client, &[ALPN])?)
}

/// Dials QUIC to the first configured endpoint.
pub async fn dial_quic(
    cfg: &DaemonConfig,
    client: &mut Option<(QuicClient, bool)>,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Arc<dyn Connection>> {
    let first = cfg.controlplane_addrs().into_iter().next().unwrap_or_default();
    let addr = resolve(&first).await?;
    dial_quic_at(cfg, client, tls, addr).await
}

/// Dials TCP+TLS (yamux) on the first configured tunnel address.
pub async fn dial_tcp(cfg: &DaemonConfig, tls: Arc<rustls::ClientConfig>) -> Result<Arc<dyn Connection>> {
    dial_tcp_at(cfg, tls, &cfg.tunnel_addr()).await
}

/// One request, one response.
pub async fn exchange(
    conn: &dyn Connection,
    req: &Request,
    frames: &FrameConfig,
    timeout: Duration,
) -> Result<Response, FrameError> {
    let mut s = conn.open_bi().await.map_err(|e| FrameError::Io(std::io::Error::other(e.to_string())))?;
    write_frame(&mut s.send, req, frames).await?;
    let _ = s.send.shutdown().await;
    read_frame_timeout(&mut s.recv, frames, timeout).await
}
