//! One connection abstraction over two transports, so the protocol code above never knows
//! which one it runs on.
//!
//! - [`quic`]: QUIC (quinn), the default daemon<->CP link (9443/udp).
//! - [`tcp`]: TLS over TCP with a yamux session on top, for networks that block UDP (8001/tcp).
//!
//! Either side of a [`Connection`] may open bidirectional streams, one request per stream.
//! That symmetry matters: the control plane opens streams on a daemon's connection for the
//! tunnel, and it can only do that because the daemon dialed (so it works behind NAT).
//!
//! # Stream semantics (both transports)
//!
//! - **The opener writes first.** A QUIC stream becomes visible to the peer's `accept_bi` only
//!   when its first byte (or FIN) arrives, so opening a stream and then waiting to read from it
//!   without writing deadlocks. (On TCP `open_bi` announces the stream at once, but code must
//!   not rely on that.) An empty request — open, then `shutdown()` — reaches the peer on both.
//! - `send.shutdown().await` finishes the sending direction (QUIC FIN / yamux FIN): the peer
//!   reads EOF, and the other direction stays open for the reply. Always shut down explicitly:
//!   dropping an unfinished send half finishes the stream on QUIC but resets it on TCP.
//! - Dropping `recv` before EOF tells the peer to stop sending (QUIC STOP_SENDING; on TCP the
//!   stream is reset once both halves are gone).
//! - At most [`TransportConfig::max_streams`] streams opened by the peer are live at once;
//!   `open_bi` waits while the peer's limit is reached.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;

pub mod quic;
mod session;
pub mod tcp;

pub use quic::{connect_quic, QuicClient, QuicServer};
pub use tcp::{connect_tcp_tls, TcpTlsServer};

/// A bidirectional stream: one request and its response.
///
/// See the [module documentation](self) for finish/shutdown semantics.
pub struct BiStream {
    pub send: Box<dyn AsyncWrite + Send + Unpin>,
    pub recv: Box<dyn AsyncRead + Send + Unpin>,
}

impl std::fmt::Debug for BiStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BiStream")
    }
}

/// Which transport a connection runs on (for logs, metrics and the daemon's status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    Quic,
    TcpTls,
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportKind::Quic => "quic",
            TransportKind::TcpTls => "tcp+tls",
        })
    }
}

/// An established, authenticated connection on either transport.
#[async_trait]
pub trait Connection: Send + Sync + 'static {
    /// Opens a stream to the peer. Waits while the peer's stream limit is reached.
    /// `Err(Closed)` once the connection is gone.
    async fn open_bi(&self) -> Result<BiStream, TransportError>;
    /// The next stream the peer opened. `Err(Closed)` when the connection ends, for whatever
    /// reason (local or remote close, idle timeout, transport error).
    async fn accept_bi(&self) -> Result<BiStream, TransportError>;
    /// The peer's verified certificate chain (leaf first), or `None` if it presented none
    /// (a server accepting a bootstrap client without a certificate).
    fn peer_certificates(&self) -> Option<Vec<CertificateDer<'static>>>;
    /// The peer's address as last seen (QUIC follows NAT rebinding).
    fn remote_addr(&self) -> SocketAddr;
    fn kind(&self) -> TransportKind;
    /// Closes the connection and every stream on it. QUIC sends `reason` to the peer; yamux
    /// has no place for it, so on TCP it is only logged.
    fn close(&self, reason: &str);
    /// Resolves when the connection is gone.
    async fn closed(&self);
}

/// Keep-alive period of the daemon <-> control plane link (both sides use the defaults).
///
/// It must stay well below the shortest NAT UDP mapping timeout a daemon may sit behind:
/// Linux conntrack forgets an unreplied UDP flow after 30 s (`nf_conntrack_udp_timeout`) and
/// some home and carrier NATs are as short, although RFC 4787 asks for 2 min. 5 s also makes
/// [`DEFAULT_IDLE_TIMEOUT`] three keep-alive periods. The cost: an idle QUIC connection carries
/// one PING per side per period plus the ACKs, about 4 packets of ~60 bytes per 5 s, so 10,000
/// daemons cost the control plane ~8,000 packets/s (~0.5 MB/s), spread over its replicas
/// (twice the 10 s figure; negligible beside policy pushes and certificate renewals).
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(5);

/// How long a connection may receive nothing before it is considered dead.
///
/// This is how long a daemon takes to notice a control-plane replica that died without
/// closing (kill -9, host or network loss) and move to the next one, so it bounds HA failover.
/// 15 s is three keep-alive periods: two consecutive lost keep-alives (and their ACKs) do not
/// tear down a healthy connection over a lossy path, a third means the peer is gone. With 30 s
/// failover took 30-35 s (`chaos-tests/tests/chaos_ha.rs`); QUIC uses the smaller of the two
/// peers' values, so a daemon or replica still on 30 s gets 15 s as soon as the other side has it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// Transport tuning, with the defaults in one place.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// How often an idle connection sends something so NAT bindings stay alive
    /// ([`DEFAULT_KEEP_ALIVE`]: why that value). Zero disables keep-alives.
    pub keep_alive: Duration,
    /// A connection that received nothing for this long is closed ([`DEFAULT_IDLE_TIMEOUT`]:
    /// why that value). Must exceed `keep_alive` (the peer's keep-alives are what keep a
    /// healthy idle connection open). Zero disables it.
    pub idle_timeout: Duration,
    /// How long a peer may take to complete the TLS/QUIC handshake (and, for clients, the TCP
    /// connect) before it is dropped, so a silent client cannot hold a slot forever.
    pub handshake_timeout: Duration,
    /// Streams the peer may have open at once on one connection (at least 1). Bounded so a
    /// misbehaving peer cannot exhaust the server.
    pub max_streams: u32,
    /// Handshakes (plus handshaken connections not yet taken by `accept`) in flight per
    /// server; beyond this new connections are refused rather than queued.
    pub max_pending_handshakes: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            keep_alive: DEFAULT_KEEP_ALIVE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            handshake_timeout: Duration::from_secs(10),
            max_streams: 64,
            max_pending_handshakes: 1024,
        }
    }
}

impl TransportConfig {
    pub(crate) fn streams(&self) -> u32 {
        self.max_streams.max(1)
    }

    pub(crate) fn pending(&self) -> usize {
        self.max_pending_handshakes.max(1)
    }
}

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("binding {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("connecting to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("handshake with {addr} failed: {reason}")]
    Handshake { addr: SocketAddr, reason: String },
    #[error("handshake with {addr} did not complete within {timeout:?}")]
    HandshakeTimeout { addr: SocketAddr, timeout: Duration },
    #[error("transport configuration: {0}")]
    Config(String),
    #[error("connection closed")]
    Closed,
    #[error("server is no longer accepting connections")]
    EndpointClosed,
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

/// Wraps one half of a stream so the stream-limit permit lives as long as either half.
pub(crate) struct Guarded<T> {
    inner: T,
    _permit: Arc<OwnedSemaphorePermit>,
}

impl<T> Guarded<T> {
    pub(crate) fn new(inner: T, permit: Arc<OwnedSemaphorePermit>) -> Self {
        Self { inner, _permit: permit }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
