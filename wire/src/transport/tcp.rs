//! TLS over TCP with a yamux session on top, for networks that block UDP.
//!
//! TLS comes from tokio-rustls with the same configs as QUIC; yamux multiplexes streams over
//! it (driven by [`super::session`]). What differs from QUIC, and why:
//!
//! - Keep-alive: yamux 0.14 has no keep-alive pings of its own, so each side writes one byte
//!   every `keep_alive` on a control stream (the client's first stream, never handed to the
//!   application). Idle timeout: the session closes when nothing at all was read from the
//!   socket for `idle_timeout`.
//! - Stream limits: yamux tears the whole session down when its own limit is crossed, so the
//!   limit is enforced in front of it: `open_bi` waits for a permit, and streams a peer opens
//!   beyond `max_streams` are reset individually.
//! - No address migration: a NAT rebinding breaks the TCP connection and the daemon redials.
//! - `close(reason)`: yamux cannot carry a reason; it is only logged.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Mutex, Semaphore};
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};
use tokio_util::sync::CancellationToken;

use super::session::{self, Role};
use super::{Connection, TransportConfig, TransportError};

/// A TCP+TLS server. Handshakes run in the background under the handshake timeout; a client
/// that never finishes (or sends garbage) is dropped without affecting anyone else.
pub struct TcpTlsServer {
    local_addr: SocketAddr,
    tls: Arc<RwLock<Arc<rustls::ServerConfig>>>,
    incoming: Mutex<mpsc::Receiver<Arc<dyn Connection>>>,
    /// Ends the accept loop.
    stop: CancellationToken,
    /// Parent of every accepted connection's close token: [`TcpTlsServer::close`] closes them.
    close_all: CancellationToken,
}

impl TcpTlsServer {
    /// Binds the listener and starts accepting.
    pub async fn bind(
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        cfg: &TransportConfig,
    ) -> Result<Self, TransportError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| TransportError::Bind { addr, source })?;
        let local_addr = listener.local_addr()?;
        let tls = Arc::new(RwLock::new(tls));
        let (tx, rx) = mpsc::channel(cfg.pending().min(256));
        let stop = CancellationToken::new();
        let close_all = CancellationToken::new();
        tokio::spawn(accept_loop(listener, tls.clone(), tx, stop.clone(), close_all.clone(), cfg.clone()));
        Ok(Self { local_addr, tls, incoming: Mutex::new(rx), stop, close_all })
    }

    /// The next connection whose handshake completed. `Err(EndpointClosed)` after
    /// [`TcpTlsServer::close`].
    pub async fn accept(&self) -> Result<Arc<dyn Connection>, TransportError> {
        self.incoming.lock().await.recv().await.ok_or(TransportError::EndpointClosed)
    }

    /// Replaces the TLS config (server certificate, client roots) for new connections.
    pub fn set_server_config(&self, tls: Arc<rustls::ServerConfig>) {
        *self.tls.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = tls;
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and closes every connection this server accepted.
    pub fn close(&self, reason: &str) {
        tracing::debug!(addr = %self.local_addr, reason, "closing TCP+TLS server");
        self.stop.cancel();
        self.close_all.cancel();
    }
}

impl Drop for TcpTlsServer {
    /// Dropping the server stops accepting; established connections live on until they close.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<RwLock<Arc<rustls::ServerConfig>>>,
    tx: mpsc::Sender<Arc<dyn Connection>>,
    stop: CancellationToken,
    close_all: CancellationToken,
    cfg: TransportConfig,
) {
    let pending = Arc::new(Semaphore::new(cfg.pending()));
    loop {
        let (tcp, remote) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning or giving up.
                    tracing::warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            tracing::warn!(%remote, "too many TLS handshakes in flight; dropping connection");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(tls.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone());
        let (tx, stop, close_all, cfg) = (tx.clone(), stop.clone(), close_all.clone(), cfg.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let timeout = cfg.handshake_timeout;
            let handshake = tokio::select! {
                _ = stop.cancelled() => return,
                r = tokio::time::timeout(timeout, acceptor.accept(tcp)) => r,
            };
            let tls = match handshake {
                Err(_) => {
                    tracing::warn!(%remote, ?timeout, "TLS handshake timed out; dropping connection");
                    return;
                }
                Ok(Err(e)) => {
                    tracing::warn!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Ok(Ok(tls)) => tls,
            };
            let peer = owned_chain(tls.get_ref().1.peer_certificates());
            tracing::debug!(%remote, client_cert = peer.is_some(), "TCP+TLS connection established");
            let conn = session::start(TlsStream::from(tls), Role::Server, remote, peer, &cfg, close_all.child_token());
            tokio::select! {
                _ = stop.cancelled() => {} // dropping the last handle closes it
                _ = tx.send(conn) => {}
            }
        });
    }
    tracing::debug!("TCP+TLS accept loop ended");
}

/// Dials `server_addr` over TCP, runs the TLS handshake, and starts a yamux session. The
/// whole dial (TCP connect + TLS) is bounded by the handshake timeout. `server_name` only
/// satisfies the TLS API: the SPIFFE verifier ignores it and SNI is off.
pub async fn connect_tcp_tls(
    server_addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    server_name: &str,
    cfg: &TransportConfig,
) -> Result<Arc<dyn Connection>, TransportError> {
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| TransportError::Config(format!("server name {server_name:?}: {e}")))?;
    let connector = TlsConnector::from(tls);
    let dial = async {
        let tcp = TcpStream::connect(server_addr)
            .await
            .map_err(|e| TransportError::Connect { addr: server_addr, reason: e.to_string() })?;
        let _ = tcp.set_nodelay(true);
        connector
            .connect(name, tcp)
            .await
            .map_err(|e| TransportError::Handshake { addr: server_addr, reason: e.to_string() })
    };
    let tls = tokio::time::timeout(cfg.handshake_timeout, dial)
        .await
        .map_err(|_| TransportError::HandshakeTimeout { addr: server_addr, timeout: cfg.handshake_timeout })??;
    let peer = owned_chain(tls.get_ref().1.peer_certificates());
    Ok(session::start(TlsStream::from(tls), Role::Client, server_addr, peer, cfg, CancellationToken::new()))
}

fn owned_chain(chain: Option<&[CertificateDer<'_>]>) -> Option<Vec<CertificateDer<'static>>> {
    chain.filter(|c| !c.is_empty()).map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
}
