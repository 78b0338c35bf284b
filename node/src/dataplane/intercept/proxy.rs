//! One intercepted connection: the application's TLS terminated, its HTTP requests forwarded
//! (credential applied) over a verified TLS connection to the real destination.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Intercept;
use crate::credentials::{CredentialManager, SourceKey};
use crate::dataplane::handshake::{connect_simple, HandshakeConfig};
use crate::dataplane::table::{ByteCounters, ConnectionRow};

/// How a binding's credential goes into requests.
#[derive(Clone)]
pub struct Injection {
    /// `namespace/name` of the CredentialBinding (shown in `/connections`).
    pub binding: String,
    pub source: SourceKey,
    pub header: HeaderName,
    /// With `{{credential}}` where the value goes; `{{credential}}` alone when unset.
    pub format: String,
}

impl std::fmt::Debug for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injection").field("binding", &self.binding).field("header", &self.header).finish()
    }
}

/// What the intercept needs to know about the destination.
#[derive(Debug, Clone)]
pub struct InterceptTarget {
    /// The name the minted leaf carries: the application's SNI, else the destination IP.
    pub leaf_name: String,
    /// The name the real server must prove (the Service's `tls.serverName`, else SNI, else IP).
    pub server_name: String,
    /// Roots that verify the real server.
    pub roots: Vec<CertificateDer<'static>>,
    pub injection: Option<Arc<Injection>>,
}

type RespBody = BoxBody<Bytes, hyper::Error>;

#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

enum Upstream {
    H1(tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Incoming>>),
    H2(hyper::client::conn::http2::SendRequest<Incoming>),
    /// The real server could not be reached or verified: every request fails with this.
    Failed(String),
}

/// Serves one intercepted connection until the application closes it, it idles out, or an
/// error ends it. `upstream` is a connected stream to the destination (or an mTLS tunnel to
/// it); TLS to the real server is started on it here.
pub async fn serve<C, U>(
    icpt: &Intercept,
    client: C,
    upstream: U,
    target: InterceptTarget,
    row: Arc<ConnectionRow>,
) -> anyhow::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = &icpt.cfg;
    let leaf = icpt.ca.leaf_for(&target.leaf_name).context("minting the intercept certificate")?;
    let mut server = ServerConfig::builder_with_provider(riptides_wire::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(FixedCert(leaf)));
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let accept = tokio_rustls::TlsAcceptor::from(Arc::new(server)).accept(client);
    let tls = match tokio::time::timeout(cfg.handshake_timeout, accept).await {
        Err(_) => anyhow::bail!(
            "the application did not finish its TLS handshake within {:?} (intercept)",
            cfg.handshake_timeout
        ),
        Ok(Err(e)) => return Err(anyhow::anyhow!(e).context("the application's TLS handshake (intercept) failed")),
        Ok(Ok(t)) => t,
    };
    let down_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let down_version = tls.get_ref().1.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default();

    let hs = HandshakeConfig { handshake_timeout: cfg.handshake_timeout, ..HandshakeConfig::default() };
    let alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let up = match connect_simple(upstream, &target.server_name, &target.roots, true, &alpn, &hs).await {
        Ok((up_tls, info)) => {
            row.set_handshake(&info);
            let up_h2 = up_tls.get_ref().1.alpn_protocol() == Some(b"h2");
            tracing::info!(
                server = %target.server_name, upstream = %info.tls_version_name(), app_tls = %down_version,
                app_h2 = down_h2, upstream_h2 = up_h2,
                binding = target.injection.as_ref().map(|i| i.binding.as_str()).unwrap_or("none"),
                "TLS intercept established"
            );
            let io = TokioIo::new(up_tls);
            if up_h2 {
                let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .handshake(io)
                    .await
                    .context("HTTP/2 to the real server")?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
                    }
                });
                Upstream::H2(sender)
            } else {
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(io).await.context("HTTP/1.1 to the real server")?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended");
                    }
                });
                Upstream::H1(tokio::sync::Mutex::new(sender))
            }
        }
        Err(e) => {
            // Fail closed: the application gets 502 for every request; nothing is forwarded.
            let msg = format!("TLS to the real server {} failed: {e}", target.server_name);
            tracing::warn!(server = %target.server_name, error = %e, "intercept: upstream TLS failed; requests refused (502)");
            row.set_state("upstream-failed");
            Upstream::Failed(msg)
        }
    };
    let up = Arc::new(up);
    row.set_state("established");

    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Metered { inner: tls, counters: row.counters.clone(), activity: activity.clone() });
    let creds = icpt.credentials.clone();
    let injection = target.injection.clone();
    let default_authority = target.leaf_name.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let up = up.clone();
        let creds = creds.clone();
        let injection = injection.clone();
        let default_authority = default_authority.clone();
        async move {
            Ok::<_, Infallible>(forward(req, &up, &creds, injection.as_deref(), &default_authority, down_h2).await)
        }
    });
    let idle = idle_watch(activity, cfg.idle_timeout);
    let served = if down_h2 {
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(cfg.max_h2_streams)
            .serve_connection(io, svc);
        tokio::select! {
            r = conn => r.map_err(|e| anyhow::anyhow!("HTTP/2 from the application: {e}")),
            _ = idle => Err(anyhow::anyhow!("idle for {:?}; closed", cfg.idle_timeout)),
        }
    } else {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .max_buf_size(cfg.max_header_bytes.max(8192))
            .header_read_timeout(cfg.header_read_timeout)
            .keep_alive(true)
            .serve_connection(io, svc);
        tokio::select! {
            r = conn => r.map_err(|e| anyhow::anyhow!("HTTP/1.1 from the application: {e}")),
            _ = idle => Err(anyhow::anyhow!("idle for {:?}; closed", cfg.idle_timeout)),
        }
    };
    served
}

fn text(status: StatusCode, msg: String, close: bool) -> Response<RespBody> {
    let mut r = Response::new(Full::new(Bytes::from(msg + "\n")).map_err(|never: Infallible| match never {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if close {
        r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and the ones a version change invalidates.
fn strip_hop_by_hop(h: &mut HeaderMap, keep_te_trailers: bool) {
    let listed: Vec<HeaderName> = h
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in listed {
        h.remove(n);
    }
    let te_trailers = h.get(hyper::header::TE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for n in ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "expect"] {
        h.remove(n);
    }
    if keep_te_trailers && te_trailers {
        h.insert(hyper::header::TE, HeaderValue::from_static("trailers"));
    }
}

async fn forward(
    mut req: Request<Incoming>,
    up: &Upstream,
    creds: &CredentialManager,
    injection: Option<&Injection>,
    default_authority: &str,
    down_h2: bool,
) -> Response<RespBody> {
    let up_h2 = matches!(up, Upstream::H2(_));
    if let Upstream::Failed(msg) = up {
        return text(StatusCode::BAD_GATEWAY, format!("riptides intercept: {msg}"), true);
    }
    // The credential: fail closed (503) when the binding's source has none usable, rather
    // than forward a request the policy says must carry one.
    if let Some(inj) = injection {
        match creds.get(&inj.source).await {
            Ok(secret) => {
                let value = inj.format.replace("{{credential}}", secret.expose());
                match HeaderValue::from_str(&value) {
                    Ok(mut v) => {
                        v.set_sensitive(true);
                        req.headers_mut().remove(&inj.header);
                        req.headers_mut().insert(inj.header.clone(), v);
                    }
                    Err(_) => {
                        tracing::warn!(binding = %inj.binding, "credential is not a valid header value; request refused");
                        return text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!(
                                "riptides intercept: the credential of binding {} is not a valid header value",
                                inj.binding
                            ),
                            false,
                        );
                    }
                }
            }
            Err(e) => {
                tracing::warn!(binding = %inj.binding, error = %e, "no credential to inject; request refused");
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("riptides intercept: no credential for binding {}: {e}", inj.binding),
                    false,
                );
            }
        }
    }
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| req.headers().get(HOST).and_then(|h| h.to_str().ok()).map(str::to_owned))
        .unwrap_or_else(|| default_authority.to_owned());
    let pq = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into());
    strip_hop_by_hop(req.headers_mut(), up_h2);
    let uri: Result<Uri, _> = if up_h2 { format!("https://{authority}{pq}").parse() } else { pq.parse() };
    let Ok(uri) = uri else {
        return text(StatusCode::BAD_REQUEST, "riptides intercept: request target not understood".into(), false);
    };
    *req.uri_mut() = uri;
    if up_h2 {
        req.headers_mut().remove(HOST);
        *req.version_mut() = Version::HTTP_2;
    } else {
        if !req.headers().contains_key(HOST) {
            if let Ok(v) = HeaderValue::from_str(&authority) {
                req.headers_mut().insert(HOST, v);
            }
        }
        *req.version_mut() = Version::HTTP_11;
    }
    let sent = match up {
        Upstream::H2(s) => {
            let mut s = s.clone();
            match s.ready().await {
                Ok(()) => s.send_request(req).await,
                Err(e) => Err(e),
            }
        }
        Upstream::H1(m) => {
            // One request at a time on an HTTP/1.1 upstream; `ready` waits until the previous
            // response body has been read.
            let mut s = m.lock().await;
            match s.ready().await {
                Ok(()) => s.send_request(req).await,
                Err(e) => Err(e),
            }
        }
        Upstream::Failed(_) => unreachable!("handled above"),
    };
    match sent {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers, false);
            parts.version = if down_h2 { Version::HTTP_2 } else { Version::HTTP_11 };
            Response::from_parts(parts, body.boxed())
        }
        Err(e) => {
            tracing::info!(error = %e, "intercept: forwarding to the real server failed");
            text(StatusCode::BAD_GATEWAY, format!("riptides intercept: the real server failed: {e}"), true)
        }
    }
}

/// Milliseconds since `start` of the last byte either way.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity { start: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        self.start.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Resolves once the connection has been idle for `limit`.
async fn idle_watch(activity: Arc<Activity>, limit: Duration) {
    let tick = (limit / 4).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(tick).await;
        if activity.idle() >= limit {
            return;
        }
    }
}

/// The application side, counting plaintext bytes into the connection's row.
struct Metered<S> {
    inner: S,
    counters: Arc<ByteCounters>,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.counters.add_out(n as u64);
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            if *n > 0 {
                self.counters.add_in(*n as u64);
                self.activity.touch();
            }
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h.contains_key("x-kept") && h.contains_key("te"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
    }
}
