//! QUIC transport (quinn) with the rustls configs from [`crate::tls`].
//!
//! Quinn already does what the link needs: keep-alive and idle timeout in the transport, a
//! peer-enforced limit on concurrent streams, and connection migration (kept enabled on the
//! server so a daemon behind a NAT that rebinds its port stays connected).

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, IdleTimeout, VarInt};
use rustls_pki_types::CertificateDer;
use tokio::sync::{mpsc, Mutex, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{BiStream, Connection, TransportConfig, TransportError, TransportKind};

/// The TLS server name quinn requires on connect. Our verifiers ignore it and SNI is off.
const SERVER_NAME: &str = "riptides-cp";

fn transport_config(cfg: &TransportConfig) -> Result<Arc<quinn::TransportConfig>, TransportError> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval((!cfg.keep_alive.is_zero()).then_some(cfg.keep_alive));
    let idle = if cfg.idle_timeout.is_zero() {
        None
    } else {
        Some(
            IdleTimeout::try_from(cfg.idle_timeout)
                .map_err(|_| TransportError::Config(format!("idle timeout {:?} is too large", cfg.idle_timeout)))?,
        )
    };
    t.max_idle_timeout(idle);
    t.max_concurrent_bidi_streams(VarInt::from_u32(cfg.streams()));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    Ok(Arc::new(t))
}

fn server_config(
    tls: Arc<rustls::ServerConfig>,
    transport: &Arc<quinn::TransportConfig>,
    cfg: &TransportConfig,
) -> Result<quinn::ServerConfig, TransportError> {
    let crypto = QuicServerConfig::try_from(tls)
        .map_err(|e| TransportError::Config(format!("server TLS config unusable for QUIC: {e}")))?;
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    sc.transport_config(transport.clone());
    sc.migration(true);
    sc.max_incoming(cfg.pending());
    Ok(sc)
}

/// A QUIC connection; clients also keep their endpoint alive through it.
struct QuicConnection {
    conn: quinn::Connection,
    /// The client endpoint this connection was dialed from (None on the server, whose
    /// endpoint outlives its connections anyway).
    _endpoint: Option<Endpoint>,
}

#[async_trait]
impl Connection for QuicConnection {
    async fn open_bi(&self) -> Result<BiStream, TransportError> {
        let (send, recv) = self.conn.open_bi().await.map_err(|e| {
            tracing::debug!(remote = %self.conn.remote_address(), error = %e, "open_bi on a closed QUIC connection");
            TransportError::Closed
        })?;
        Ok(BiStream { send: Box::new(send), recv: Box::new(recv) })
    }

    async fn accept_bi(&self) -> Result<BiStream, TransportError> {
        let (send, recv) = self.conn.accept_bi().await.map_err(|e| {
            tracing::debug!(remote = %self.conn.remote_address(), error = %e, "QUIC connection ended");
            TransportError::Closed
        })?;
        Ok(BiStream { send: Box::new(send), recv: Box::new(recv) })
    }

    fn peer_certificates(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.conn.peer_identity().and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok()).map(|certs| *certs)
    }

    fn remote_addr(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    fn kind(&self) -> TransportKind {
        TransportKind::Quic
    }

    fn close(&self, reason: &str) {
        self.conn.close(VarInt::from_u32(0), reason.as_bytes());
    }

    async fn closed(&self) {
        self.conn.closed().await;
    }
}

/// A QUIC server endpoint. Handshakes run in the background, each under the handshake
/// timeout; completed connections are handed out by [`QuicServer::accept`]. A failed or slow
/// handshake is logged and skipped and never ends the accept loop.
pub struct QuicServer {
    endpoint: Endpoint,
    transport: Arc<quinn::TransportConfig>,
    cfg: TransportConfig,
    incoming: Mutex<mpsc::Receiver<Arc<dyn Connection>>>,
    stop: CancellationToken,
}

impl QuicServer {
    /// Binds the UDP socket and starts accepting.
    pub async fn bind(
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        cfg: &TransportConfig,
    ) -> Result<Self, TransportError> {
        let transport = transport_config(cfg)?;
        let sc = server_config(tls, &transport, cfg)?;
        let endpoint = Endpoint::server(sc, addr).map_err(|source| TransportError::Bind { addr, source })?;
        let (tx, rx) = mpsc::channel(cfg.pending().min(256));
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(endpoint.clone(), tx, stop.clone(), cfg.clone()));
        Ok(Self { endpoint, transport, cfg: cfg.clone(), incoming: Mutex::new(rx), stop })
    }

    /// The next connection whose handshake completed. `Err(EndpointClosed)` after
    /// [`QuicServer::close`].
    pub async fn accept(&self) -> Result<Arc<dyn Connection>, TransportError> {
        self.incoming.lock().await.recv().await.ok_or(TransportError::EndpointClosed)
    }

    /// Replaces the TLS config (server certificate, client roots) for new connections;
    /// established connections keep the one they were made with.
    pub fn set_server_config(&self, tls: Arc<rustls::ServerConfig>) -> Result<(), TransportError> {
        let sc = server_config(tls, &self.transport, &self.cfg)?;
        self.endpoint.set_server_config(Some(sc));
        Ok(())
    }

    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        Ok(self.endpoint.local_addr()?)
    }

    /// Stops accepting and closes every connection of this endpoint.
    pub fn close(&self, reason: &str) {
        self.stop.cancel();
        self.endpoint.close(VarInt::from_u32(0), reason.as_bytes());
    }
}

impl Drop for QuicServer {
    /// Dropping the server stops accepting; established connections live on until they close.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    endpoint: Endpoint,
    tx: mpsc::Sender<Arc<dyn Connection>>,
    stop: CancellationToken,
    cfg: TransportConfig,
) {
    let pending = Arc::new(Semaphore::new(cfg.pending()));
    loop {
        let incoming = tokio::select! {
            _ = stop.cancelled() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        let remote = incoming.remote_address();
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            tracing::warn!(%remote, "too many QUIC handshakes in flight; refusing connection");
            incoming.refuse();
            continue;
        };
        let (tx, stop, timeout) = (tx.clone(), stop.clone(), cfg.handshake_timeout);
        tokio::spawn(async move {
            let _permit = permit;
            let connecting = match incoming.accept() {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(%remote, error = %e, "QUIC connection refused before handshake");
                    return;
                }
            };
            let conn = match tokio::time::timeout(timeout, connecting).await {
                Err(_) => {
                    tracing::warn!(%remote, ?timeout, "QUIC handshake timed out");
                    return;
                }
                Ok(Err(e)) => {
                    tracing::warn!(%remote, error = %e, "QUIC handshake failed");
                    return;
                }
                Ok(Ok(conn)) => conn,
            };
            tracing::debug!(%remote, "QUIC connection established");
            let conn: Arc<dyn Connection> = Arc::new(QuicConnection { conn, _endpoint: None });
            tokio::select! {
                _ = stop.cancelled() => {} // dropping the last handle closes it
                _ = tx.send(conn) => {}
            }
        });
    }
    tracing::debug!("QUIC accept loop ended");
}

/// A client endpoint (one UDP socket) that can dial several connections, e.g. successive
/// reconnects of a daemon.
#[derive(Clone)]
pub struct QuicClient {
    endpoint: Endpoint,
    transport: Arc<quinn::TransportConfig>,
    handshake_timeout: std::time::Duration,
}

impl QuicClient {
    /// Binds the client's UDP socket (`0.0.0.0:0` or `[::]:0` for any).
    pub fn bind(bind_addr: SocketAddr, cfg: &TransportConfig) -> Result<Self, TransportError> {
        let transport = transport_config(cfg)?;
        let endpoint =
            Endpoint::client(bind_addr).map_err(|source| TransportError::Bind { addr: bind_addr, source })?;
        Ok(Self { endpoint, transport, handshake_timeout: cfg.handshake_timeout })
    }

    /// Dials `server_addr` and completes the handshake within the handshake timeout.
    pub async fn connect(
        &self,
        server_addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Arc<dyn Connection>, TransportError> {
        let crypto = QuicClientConfig::try_from(tls)
            .map_err(|e| TransportError::Config(format!("client TLS config unusable for QUIC: {e}")))?;
        let mut cc = quinn::ClientConfig::new(Arc::new(crypto));
        cc.transport_config(self.transport.clone());
        let connecting = self
            .endpoint
            .connect_with(cc, server_addr, SERVER_NAME)
            .map_err(|e| TransportError::Connect { addr: server_addr, reason: e.to_string() })?;
        let conn = match tokio::time::timeout(self.handshake_timeout, connecting).await {
            Err(_) => {
                return Err(TransportError::HandshakeTimeout { addr: server_addr, timeout: self.handshake_timeout })
            }
            Ok(Err(e)) => return Err(TransportError::Handshake { addr: server_addr, reason: e.to_string() }),
            Ok(Ok(conn)) => conn,
        };
        Ok(Arc::new(QuicConnection { conn, _endpoint: Some(self.endpoint.clone()) }))
    }

    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        Ok(self.endpoint.local_addr()?)
    }
}

/// Binds a client endpoint on `bind_addr` and dials `server_addr` (one-shot form of
/// [`QuicClient`]).
pub async fn connect_quic(
    bind_addr: SocketAddr,
    server_addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    cfg: &TransportConfig,
) -> Result<Arc<dyn Connection>, TransportError> {
    QuicClient::bind(bind_addr, cfg)?.connect(server_addr, tls).await
}
