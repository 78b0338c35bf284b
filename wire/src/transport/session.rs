//! The yamux session over a TLS stream: one driver task per connection.
//!
//! A yamux `Connection` makes progress only while something polls it, and it must be polled
//! from one place. The driver task owns it: it polls for inbound streams (handing them to
//! `accept_bi` through a bounded channel), opens outbound streams on request from `open_bi`,
//! watches for idle timeout and local close, and ends the session when any of those say so.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Mutex, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsStream;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::{BiStream, Connection, Guarded, TransportConfig, TransportError, TransportKind};

/// The yamux id of the client's first stream, reserved for keep-alives.
const CONTROL_STREAM_ID: u32 = 1;
/// How long a closing session may take to flush its GoAway before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Client,
    Server,
}

type OpenReply = oneshot::Sender<Result<yamux::Stream, TransportError>>;

/// Starts the driver task for an established TLS stream and returns the connection handle.
pub(crate) fn start(
    io: TlsStream<TcpStream>,
    role: Role,
    remote: SocketAddr,
    peer_certs: Option<Vec<CertificateDer<'static>>>,
    cfg: &TransportConfig,
    close: CancellationToken,
) -> Arc<dyn Connection> {
    let streams = cfg.streams() as usize;
    let mut ycfg = yamux::Config::default();
    // Room for our outbound and inbound limits plus the control stream and streams the peer
    // opened beyond its limit that we reset immediately. Never reached in practice: crossing
    // it would make yamux end the whole session.
    let yamux_streams = streams.saturating_mul(2).saturating_add(8);
    ycfg.set_max_num_streams(yamux_streams);
    ycfg.set_max_connection_receive_window(Some(yamux_streams.saturating_mul(yamux::DEFAULT_CREDIT as usize)));

    let clock = Arc::new(Clock::new());
    let io = Activity { inner: io, clock: clock.clone() }.compat();
    let mode = match role {
        Role::Client => yamux::Mode::Client,
        Role::Server => yamux::Mode::Server,
    };
    let (open_tx, open_rx) = mpsc::channel(streams);
    let (inbound_tx, inbound_rx) = mpsc::channel(streams);
    let out_permits = Arc::new(Semaphore::new(streams));
    let in_permits = Arc::new(Semaphore::new(streams));
    let gone = CancellationToken::new();

    let idle_check = (!cfg.idle_timeout.is_zero()).then(|| {
        let period = (cfg.idle_timeout / 4).max(Duration::from_millis(50));
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let driver = Driver {
        conn: yamux::Connection::new(io, ycfg, mode),
        role,
        remote,
        open_rx,
        pending: VecDeque::new(),
        inbound_tx,
        in_permits: in_permits.clone(),
        close: Box::pin(close.clone().cancelled_owned()),
        closing: None,
        close_deadline: None,
        idle_check,
        idle_timeout: cfg.idle_timeout,
        clock,
        need_control: role == Role::Client,
        control_seen: false,
        keep_alive: cfg.keep_alive,
        gone: gone.clone(),
    };
    let task_gone = gone.clone();
    let task_out = out_permits.clone();
    tokio::spawn(async move {
        let why = driver.await;
        tracing::debug!(%remote, reason = %why, "TCP+TLS session ended");
        task_out.close();
        in_permits.close();
        task_gone.cancel();
    });

    Arc::new(TcpTlsConnection {
        open_tx,
        inbound: Mutex::new(inbound_rx),
        out_permits,
        close,
        gone,
        peer_certs,
        remote,
    })
}

struct TcpTlsConnection {
    open_tx: mpsc::Sender<OpenReply>,
    inbound: Mutex<mpsc::Receiver<BiStream>>,
    out_permits: Arc<Semaphore>,
    close: CancellationToken,
    gone: CancellationToken,
    peer_certs: Option<Vec<CertificateDer<'static>>>,
    remote: SocketAddr,
}

impl Drop for TcpTlsConnection {
    /// The last handle going away ends the session, as dropping a quinn connection does.
    fn drop(&mut self) {
        self.close.cancel();
    }
}

#[async_trait]
impl Connection for TcpTlsConnection {
    async fn open_bi(&self) -> Result<BiStream, TransportError> {
        let permit = tokio::select! {
            _ = self.gone.cancelled() => return Err(TransportError::Closed),
            p = self.out_permits.clone().acquire_owned() => p.map_err(|_| TransportError::Closed)?,
        };
        let (tx, rx) = oneshot::channel();
        self.open_tx.send(tx).await.map_err(|_| TransportError::Closed)?;
        let stream = rx.await.map_err(|_| TransportError::Closed)??;
        let mut stream = stream.compat();
        // yamux sends a stream's SYN with its first data frame, and a stream finished without
        // data never sends one at all (the peer would never see an empty request). An empty
        // write puts the SYN on the wire now, so the peer's accept_bi sees the stream at once.
        std::future::poll_fn(|cx| Pin::new(&mut stream).poll_write(cx, &[])).await?;
        Ok(split_compat(stream, permit))
    }

    async fn accept_bi(&self) -> Result<BiStream, TransportError> {
        self.inbound.lock().await.recv().await.ok_or(TransportError::Closed)
    }

    fn peer_certificates(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.peer_certs.clone()
    }

    fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    fn kind(&self) -> TransportKind {
        TransportKind::TcpTls
    }

    fn close(&self, reason: &str) {
        tracing::debug!(remote = %self.remote, reason, "closing TCP+TLS connection");
        self.close.cancel();
    }

    async fn closed(&self) {
        self.gone.cancelled().await;
    }
}

fn split(stream: yamux::Stream, permit: OwnedSemaphorePermit) -> BiStream {
    split_compat(stream.compat(), permit)
}

fn split_compat(stream: Compat<yamux::Stream>, permit: OwnedSemaphorePermit) -> BiStream {
    let permit = Arc::new(permit);
    let (recv, send) = tokio::io::split(stream);
    BiStream { send: Box::new(Guarded::new(send, permit.clone())), recv: Box::new(Guarded::new(recv, permit)) }
}

/// The socket under yamux: TLS over TCP, with read activity recorded, as futures-io.
type Io = Compat<Activity<TlsStream<TcpStream>>>;

struct Driver {
    conn: yamux::Connection<Io>,
    role: Role,
    remote: SocketAddr,
    open_rx: mpsc::Receiver<OpenReply>,
    pending: VecDeque<OpenReply>,
    inbound_tx: mpsc::Sender<BiStream>,
    in_permits: Arc<Semaphore>,
    close: Pin<Box<WaitForCancellationFutureOwned>>,
    closing: Option<&'static str>,
    close_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    idle_check: Option<tokio::time::Interval>,
    idle_timeout: Duration,
    clock: Arc<Clock>,
    /// Client: the control stream has yet to be opened (it must get id 1, so it comes first).
    need_control: bool,
    /// Server: the client's control stream has arrived.
    control_seen: bool,
    keep_alive: Duration,
    gone: CancellationToken,
}

impl Driver {
    fn start_control(&self, stream: yamux::Stream) {
        if self.keep_alive.is_zero() {
            // Keep the stream open but silent; the peer's heartbeats still count as activity.
            tokio::spawn(heartbeat(stream, None, self.gone.clone()));
        } else {
            tokio::spawn(heartbeat(stream, Some(self.keep_alive), self.gone.clone()));
        }
    }

    fn on_inbound(&mut self, stream: yamux::Stream) {
        if self.role == Role::Server && !self.control_seen && stream.id().val() == CONTROL_STREAM_ID {
            self.control_seen = true;
            self.start_control(stream);
            return;
        }
        let Ok(permit) = self.in_permits.clone().try_acquire_owned() else {
            tracing::warn!(remote = %self.remote, "peer exceeded its stream limit; resetting stream");
            return; // dropping an open yamux stream resets it
        };
        if let Err(e) = self.inbound_tx.try_send(split(stream, permit)) {
            tracing::debug!(remote = %self.remote, error = %e, "inbound stream not delivered");
        }
    }

    fn fail_pending(&mut self) {
        for reply in self.pending.drain(..) {
            let _ = reply.send(Err(TransportError::Closed));
        }
        self.open_rx.close();
        while let Ok(reply) = self.open_rx.try_recv() {
            let _ = reply.send(Err(TransportError::Closed));
        }
    }
}

impl Future for Driver {
    /// Why the session ended, for the log.
    type Output = String;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<String> {
        let this = self.get_mut();

        if this.closing.is_none() && this.close.as_mut().poll(cx).is_ready() {
            this.closing = Some("closed locally");
        }
        if this.closing.is_none() {
            if let Some(idle) = this.idle_check.as_mut() {
                while idle.poll_tick(cx).is_ready() {
                    if this.clock.idle_for() >= this.idle_timeout {
                        this.closing = Some("idle timeout");
                        break;
                    }
                }
            }
        }

        if this.closing.is_none() {
            // Requests from open_bi.
            loop {
                match this.open_rx.poll_recv(cx) {
                    Poll::Ready(Some(reply)) => this.pending.push_back(reply),
                    Poll::Ready(None) => {
                        this.closing = Some("all handles dropped");
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }

        if let Some(reason) = this.closing {
            this.fail_pending();
            let deadline = this.close_deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(CLOSE_GRACE)));
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(format!("{reason} (close did not finish in time)"));
            }
            return match this.conn.poll_close(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(reason.to_owned()),
                Poll::Ready(Err(e)) => Poll::Ready(format!("{reason}: {e}")),
                Poll::Pending => Poll::Pending,
            };
        }

        if this.need_control {
            match this.conn.poll_new_outbound(cx) {
                Poll::Ready(Ok(stream)) => {
                    this.need_control = false;
                    this.start_control(stream);
                }
                Poll::Ready(Err(e)) => {
                    this.fail_pending();
                    return Poll::Ready(format!("opening the control stream failed: {e}"));
                }
                Poll::Pending => {}
            }
        }

        while !this.need_control {
            while this.pending.front().is_some_and(|r| r.is_closed()) {
                this.pending.pop_front();
            }
            if this.pending.is_empty() {
                break;
            }
            match this.conn.poll_new_outbound(cx) {
                Poll::Ready(Ok(stream)) => {
                    if let Some(reply) = this.pending.pop_front() {
                        // If the caller gave up meanwhile the stream is dropped (reset).
                        let _ = reply.send(Ok(stream));
                    }
                }
                Poll::Ready(Err(e)) => {
                    this.fail_pending();
                    return Poll::Ready(format!("opening a stream failed: {e}"));
                }
                Poll::Pending => break,
            }
        }

        loop {
            match this.conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => this.on_inbound(stream),
                Poll::Ready(Some(Err(e))) => {
                    this.fail_pending();
                    return Poll::Ready(format!("session error: {e}"));
                }
                Poll::Ready(None) => {
                    this.fail_pending();
                    return Poll::Ready("closed by peer".to_owned());
                }
                Poll::Pending => break,
            }
        }
        Poll::Pending
    }
}

/// Writes a byte every `every` on the control stream and drains what the peer writes, until
/// the session ends. The bytes only matter as traffic: they keep NAT state and the peer's
/// idle timer alive.
async fn heartbeat(stream: yamux::Stream, every: Option<Duration>, gone: CancellationToken) {
    let (mut recv, mut send) = tokio::io::split(stream.compat());
    let mut buf = [0u8; 64];
    let period = every.unwrap_or(Duration::from_secs(3600));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = gone.cancelled() => break,
            _ = tick.tick() => {
                if every.is_some() && (send.write_all(&[0]).await.is_err() || send.flush().await.is_err()) {
                    break;
                }
            }
            r = recv.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
        }
    }
}

/// Time of the last byte read from the socket, for the idle timeout.
struct Clock {
    start: Instant,
    last_ms: AtomicU64,
}

impl Clock {
    fn new() -> Self {
        Self { start: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Records read activity on the socket below yamux.
struct Activity<T> {
    inner: T,
    clock: Arc<Clock>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.touch();
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
