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

/// The control plane's SPIFFE ID.
pub fn controlplane_id(cfg: &DaemonConfig) -> Result<SpiffeId> {
    Ok(cfg.trust_domain.workload_id(CONTROLPLANE_PATH)?)
}

/// A rustls client config for the link.
pub fn tls(cfg: &DaemonConfig, trust: ServerTrust, identity: Option<&Identity>) -> Result<Arc<rustls::ClientConfig>> {
    let client = identity.map(|i| i.rustls()).transpose()?;
    Ok(client_config(trust, ExpectedId::Exact(controlplane_id(cfg)?), client, &[ALPN])?)
}

/// Dials QUIC (with the QUIC handshake timeout).
pub async fn dial_quic(
    cfg: &DaemonConfig,
    client: &mut Option<(QuicClient, bool)>,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Arc<dyn Connection>> {
    let addr = resolve(&cfg.controlplane).await?;
    let v6 = addr.is_ipv6();
    if client.as_ref().is_none_or(|(_, is_v6)| *is_v6 != v6) {
        let bind: SocketAddr = if v6 { "[::]:0".parse()? } else { "0.0.0.0:0".parse()? };
        let tc = TransportConfig { handshake_timeout: cfg.quic_connect_timeout, ..TransportConfig::default() };
        *client = Some((QuicClient::bind(bind, &tc)?, v6));
    }
    let (c, _) = client.as_ref().expect("set above");
    c.connect(addr, tls).await.with_context(|| format!("QUIC to {addr}"))
}

/// Dials TCP+TLS (yamux) on the tunnel address.
pub async fn dial_tcp(cfg: &DaemonConfig, tls: Arc<rustls::ClientConfig>) -> Result<Arc<dyn Connection>> {
    let addr = resolve(&cfg.tunnel_addr()).await?;
    let tc = TransportConfig { handshake_timeout: cfg.tcp_connect_timeout, ..TransportConfig::default() };
    connect_tcp_tls(addr, tls, "controlplane", &tc).await.with_context(|| format!("TCP+TLS to {addr}"))
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
