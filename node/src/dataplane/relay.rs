//! The byte pump between the application side and the protected side of a connection.
//!
//! Each direction copies through its own fixed-size buffer (memory per connection is bounded
//! by `2 * buffer_size` whatever the peers do), counts bytes into the connection's table row,
//! and on end-of-stream shuts down the *write* half of the other side only (TCP FIN, or TLS
//! `close_notify` followed by FIN), so protocols that half-close (a client that sends a request
//! and then `shutdown(SHUT_WR)`) keep working. An idle timeout covering both directions
//! reclaims connections whose peers vanished without a FIN.
//!
//! A TLS peer that closes TCP without `close_notify` surfaces as an error, not as a clean
//! end of stream: forwarding it as a FIN would let an on-path attacker truncate data that the
//! application frames by end of stream.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use super::table::ByteCounters;

/// Relay limits, with their defaults in one place.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Buffer per direction.
    pub buffer_size: usize,
    /// A connection with no byte in either direction for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig { buffer_size: 16 * 1024, idle_timeout: Duration::from_secs(3600) }
    }
}

/// Bytes moved, from the local workload's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RelayStats {
    /// Local -> remote.
    pub bytes_out: u64,
    /// Remote -> local.
    pub bytes_in: u64,
}

/// Why a relay ended other than by both sides closing.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("idle for {0:?}")]
    Idle(Duration),
    #[error("{direction}: {source}")]
    Io { direction: &'static str, source: io::Error },
}

const OUT: &str = "local->remote";
const IN: &str = "remote->local";

/// Copies `local` <-> `remote` until both directions reached end of stream, one fails, or the
/// connection idles out. `counters` (the table row's) is updated as bytes are written.
pub async fn relay<L, R>(
    local: L,
    remote: R,
    counters: &ByteCounters,
    cfg: &RelayConfig,
) -> Result<RelayStats, RelayError>
where
    L: AsyncRead + AsyncWrite,
    R: AsyncRead + AsyncWrite,
{
    let start = Instant::now();
    // Milliseconds since `start` of the last byte moved in either direction.
    let last_activity = AtomicU64::new(0);
    let (mut lr, mut lw) = tokio::io::split(local);
    let (mut rr, mut rw) = tokio::io::split(remote);
    let size = cfg.buffer_size.max(1);
    let out = copy_one_way(&mut lr, &mut rw, size, OUT, start, &last_activity, |n| counters.add_out(n));
    let inn = copy_one_way(&mut rr, &mut lw, size, IN, start, &last_activity, |n| counters.add_in(n));
    let both = async { tokio::try_join!(out, inn) };
    tokio::pin!(both);
    loop {
        let idle_at = start + Duration::from_millis(last_activity.load(Ordering::Relaxed)) + cfg.idle_timeout;
        tokio::select! {
            r = &mut both => {
                let (bytes_out, bytes_in) = r?;
                tracing::debug!(bytes_out, bytes_in, "relay finished");
                return Ok(RelayStats { bytes_out, bytes_in });
            }
            _ = tokio::time::sleep_until(idle_at) => {
                let last = start + Duration::from_millis(last_activity.load(Ordering::Relaxed));
                if Instant::now().saturating_duration_since(last) >= cfg.idle_timeout {
                    tracing::debug!(idle = ?cfg.idle_timeout, "relay idle, closing");
                    return Err(RelayError::Idle(cfg.idle_timeout));
                }
            }
        }
    }
}

async fn copy_one_way<Rd, Wr>(
    reader: &mut Rd,
    writer: &mut Wr,
    size: usize,
    direction: &'static str,
    start: Instant,
    last_activity: &AtomicU64,
    count: impl Fn(u64),
) -> Result<u64, RelayError>
where
    Rd: AsyncRead + Unpin,
    Wr: AsyncWrite + Unpin,
{
    let err = |source| RelayError::Io { direction, source };
    let mut buf = vec![0u8; size];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).await.map_err(err)?;
        if n == 0 {
            // Half-close: the other side may still have bytes for us.
            match writer.shutdown().await {
                Ok(()) => {}
                // The other side already went away; nothing left to tell it.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                Err(e) => return Err(err(e)),
            }
            return Ok(total);
        }
        writer.write_all(&buf[..n]).await.map_err(err)?;
        total += n as u64;
        count(n as u64);
        let elapsed = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        last_activity.store(elapsed, Ordering::Relaxed);
    }
}

/// A stream that yields `prefix` before the inner stream's bytes: how bytes already read from
/// the application (e.g. a ClientHello parsed for passthrough) are forwarded unchanged.
/// Writes go straight to the inner stream.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Prefixed<S> {
        Prefixed { prefix, pos: 0, inner }
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.prefix.len() {
            let rest = &this.prefix[this.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
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
