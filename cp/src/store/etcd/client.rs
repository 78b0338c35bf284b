//! A small etcd v3 client on the JSON gateway (`/v3/...`), over HTTP/1.1 with hyper, with
//! optional TLS (rustls on aws-lc-rs, CA file plus optional client certificate) and failover
//! between several endpoints.
//!
//! Unary calls take a pooled connection to the preferred endpoint; a call that cannot reach it
//! moves the preference to the next endpoint and tries again there. A mutation is retried on
//! another endpoint only when it certainly was not sent (connecting failed) or etcd answered
//! that it did not apply it; otherwise the outcome is unknown and the error is returned, as
//! the [`Store`](crate::store::Store) contract allows.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Largest unary response accepted (a list page is bounded by the page size and value limit).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Idle connections kept per endpoint.
const POOL_PER_ENDPOINT: usize = 8;

/// How to reach etcd.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// Client URLs, `http://host:port` or `https://host:port`.
    pub endpoints: Vec<String>,
    /// PEM file of the CA that signed the etcd servers' certificates (required for https).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key, for etcd's `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            ca_file: None,
            cert_file: None,
            key_file: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Why an etcd call failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint could be reached; nothing was sent.
    #[error("no etcd endpoint reachable: {0}")]
    Unreachable(String),
    /// The request may or may not have been applied (connection lost or timed out mid-call).
    #[error("etcd call {path} on {endpoint}: outcome unknown: {reason}")]
    Unknown { endpoint: String, path: String, reason: String },
    /// etcd answered with an error status.
    #[error("etcd {path}: {message} (grpc code {code})")]
    Status { path: String, code: i32, message: String },
    /// The answer could not be decoded.
    #[error("etcd {path}: undecodable answer: {reason}")]
    Decode { path: String, reason: String },
    #[error("etcd client configuration: {0}")]
    Config(String),
}

impl EtcdError {
    /// gRPC code 11 (OutOfRange): etcd says the revision was compacted.
    pub fn is_compacted(&self) -> bool {
        matches!(self, EtcdError::Status { code: 11, message, .. } if message.contains("compacted"))
    }
}

/// gRPC codes after which etcd has certainly not applied a request and another member may.
fn not_applied(code: i32, message: &str) -> bool {
    // 14 Unavailable ("no leader", "not capable"), 13 with "leader changed" is ambiguous; keep
    // to the clear cases.
    code == 14 && (message.contains("no leader") || message.contains("not capable") || message.contains("stopped"))
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: i32,
    #[serde(default)]
    message: String,
    #[serde(default)]
    error: String,
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

struct Endpoint {
    url: String,
    host: String,
    port: u16,
    tls: bool,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

/// A cloneable handle on the etcd cluster.
#[derive(Clone)]
pub struct EtcdClient {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<Endpoint>,
    preferred: AtomicUsize,
    tls: Option<tokio_rustls::TlsConnector>,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl std::fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self.inner.endpoints.iter().map(|e| e.url.as_str()).collect();
        f.debug_struct("EtcdClient").field("endpoints", &urls).finish_non_exhaustive()
    }
}

fn parse_endpoint(url: &str) -> Result<Endpoint, EtcdError> {
    let bad = |why: &str| EtcdError::Config(format!("endpoint {url:?}: {why}"));
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(bad("must start with http:// or https://"));
    };
    let authority = rest.trim_end_matches('/');
    if authority.contains('/') {
        return Err(bad("must not have a path"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6.split_once("]:").ok_or_else(|| bad("expected [v6]:port"))?;
        (h.to_owned(), p)
    } else {
        let (h, p) = authority.rsplit_once(':').ok_or_else(|| bad("missing :port"))?;
        (h.to_owned(), p)
    };
    let port = port.parse().map_err(|_| bad("bad port"))?;
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    Ok(Endpoint { url: url.trim_end_matches('/').to_owned(), host, port, tls, idle: Mutex::new(Vec::new()) })
}

fn read_pem_certs(path: &Path) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, EtcdError> {
    use rustls_pki_types::pem::PemObject;
    let certs: Result<Vec<_>, _> = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| EtcdError::Config(format!("reading {}: {e}", path.display())))?
        .collect();
    let certs = certs.map_err(|e| EtcdError::Config(format!("parsing {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(EtcdError::Config(format!("{} holds no certificate", path.display())));
    }
    Ok(certs)
}

fn tls_connector(config: &EtcdConfig) -> Result<tokio_rustls::TlsConnector, EtcdError> {
    use rustls_pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let ca = config.ca_file.as_deref().ok_or_else(|| EtcdError::Config("https endpoints need --etcd-ca".into()))?;
    for cert in read_pem_certs(ca)? {
        roots.add(cert).map_err(|e| EtcdError::Config(format!("CA {}: {e}", ca.display())))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| EtcdError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let mut cfg = match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_pem_certs(cert)?;
            let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
                .map_err(|e| EtcdError::Config(format!("key {}: {e}", key.display())))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| EtcdError::Config(e.to_string()))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(EtcdError::Config("--etcd-cert and --etcd-key go together".into())),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

/// A connection attempt's failure: whether anything could have been sent.
enum CallError {
    /// Nothing was sent: safe to retry anywhere.
    NotSent(String),
    /// Sent (or possibly sent): retry only reads.
    Ambiguous(String),
    Status {
        code: i32,
        message: String,
    },
}

impl EtcdClient {
    pub fn new(config: &EtcdConfig) -> Result<Self, EtcdError> {
        if config.endpoints.is_empty() {
            return Err(EtcdError::Config("at least one etcd endpoint is needed".into()));
        }
        let endpoints: Vec<Endpoint> = config.endpoints.iter().map(|u| parse_endpoint(u)).collect::<Result<_, _>>()?;
        let tls = if endpoints.iter().any(|e| e.tls) { Some(tls_connector(config)?) } else { None };
        Ok(EtcdClient {
            inner: Arc::new(Inner {
                endpoints,
                preferred: AtomicUsize::new(0),
                tls,
                connect_timeout: config.connect_timeout,
                request_timeout: config.request_timeout,
            }),
        })
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.inner.endpoints.iter().map(|e| e.url.clone()).collect()
    }

    /// A read-only call (range, status): retried on every endpoint on any transport failure.
    pub async fn read<T: DeserializeOwned>(&self, path: &str, body: &serde_json::Value) -> Result<T, EtcdError> {
        self.call(path, body, true).await
    }

    /// A mutation: retried elsewhere only when it certainly was not applied.
    pub async fn write<T: DeserializeOwned>(&self, path: &str, body: &serde_json::Value) -> Result<T, EtcdError> {
        self.call(path, body, false).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
        idempotent: bool,
    ) -> Result<T, EtcdError> {
        let payload = Bytes::from(serde_json::to_vec(body).map_err(|e| EtcdError::Config(e.to_string()))?);
        let n = self.inner.endpoints.len();
        let start = self.inner.preferred.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        // Two rounds: a member that just lost its leader usually has a new one a moment later.
        for attempt in 0..2 * n {
            if attempt == n {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let idx = (start + attempt) % n;
            let ep = &self.inner.endpoints[idx];
            match self.unary(ep, path, payload.clone()).await {
                Ok(bytes) => {
                    self.inner.preferred.store(idx, Ordering::Relaxed);
                    return serde_json::from_slice(&bytes)
                        .map_err(|e| EtcdError::Decode { path: path.to_owned(), reason: e.to_string() });
                }
                Err(CallError::Status { code, message }) => {
                    if not_applied(code, &message) || (idempotent && code == 14) {
                        tracing::debug!(endpoint = %ep.url, code, %message, "etcd member unavailable; trying the next");
                        failures.push(format!("{}: {message}", ep.url));
                        self.inner.preferred.store((idx + 1) % n, Ordering::Relaxed);
                        continue;
                    }
                    return Err(EtcdError::Status { path: path.to_owned(), code, message });
                }
                Err(CallError::NotSent(reason)) => {
                    tracing::debug!(endpoint = %ep.url, %reason, "etcd endpoint unreachable; trying the next");
                    failures.push(format!("{}: {reason}", ep.url));
                    self.inner.preferred.store((idx + 1) % n, Ordering::Relaxed);
                }
                Err(CallError::Ambiguous(reason)) => {
                    self.inner.preferred.store((idx + 1) % n, Ordering::Relaxed);
                    if !idempotent {
                        return Err(EtcdError::Unknown { endpoint: ep.url.clone(), path: path.to_owned(), reason });
                    }
                    failures.push(format!("{}: {reason}", ep.url));
                }
            }
        }
        Err(EtcdError::Unreachable(failures.join("; ")))
    }

    async fn connect(&self, ep: &Endpoint) -> Result<SendRequest<Full<Bytes>>, CallError> {
        let attempt = async {
            let tcp = TcpStream::connect((ep.host.as_str(), ep.port)).await.map_err(|e| e.to_string())?;
            let _ = tcp.set_nodelay(true);
            let io: Box<dyn Io> = if ep.tls {
                let connector = self.inner.tls.as_ref().ok_or("no TLS configuration")?;
                let name = ServerName::try_from(ep.host.clone()).map_err(|e| e.to_string())?;
                Box::new(connector.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?)
            } else {
                Box::new(tcp)
            };
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::trace!(error = %e, "etcd connection ended");
                }
            });
            Ok::<_, String>(sender)
        };
        match tokio::time::timeout(self.inner.connect_timeout, attempt).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(CallError::NotSent(e)),
            Err(_) => Err(CallError::NotSent("connect timed out".into())),
        }
    }

    fn request(ep: &Endpoint, path: &str, payload: Bytes) -> hyper::Request<Full<Bytes>> {
        hyper::Request::post(path)
            .header(hyper::header::HOST, format!("{}:{}", ep.host, ep.port))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(payload))
            .expect("static request parts are valid")
    }

    /// One unary call on one endpoint: returns the whole body of a 200 answer.
    async fn unary(&self, ep: &Endpoint, path: &str, payload: Bytes) -> Result<Bytes, CallError> {
        let pooled = {
            let mut idle = ep.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let mut found = None;
            while let Some(s) = idle.pop() {
                if !s.is_closed() {
                    found = Some(s);
                    break;
                }
            }
            found
        };
        let mut sender = match pooled {
            Some(s) => s,
            None => self.connect(ep).await?,
        };
        let req = Self::request(ep, path, payload);
        let call = async {
            if sender.ready().await.is_err() {
                return Err(CallError::NotSent("connection closed".into()));
            }
            let resp = sender.send_request(req).await.map_err(|e| CallError::Ambiguous(e.to_string()))?;
            let status = resp.status();
            let body = read_limited(resp.into_body()).await.map_err(CallError::Ambiguous)?;
            Ok((status, body))
        };
        let (status, body) = match tokio::time::timeout(self.inner.request_timeout, call).await {
            Ok(r) => r?,
            Err(_) => return Err(CallError::Ambiguous("request timed out".into())),
        };
        {
            let mut idle = ep.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < POOL_PER_ENDPOINT {
                idle.push(sender);
            }
        }
        if status.is_success() {
            return Ok(body);
        }
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => {
                Err(CallError::Status { code: e.code, message: if e.message.is_empty() { e.error } else { e.message } })
            }
            Err(_) => Err(CallError::Status { code: -1, message: format!("HTTP {status}") }),
        }
    }

    /// Opens a streaming call (watch, lease keep-alive) on the first endpoint that accepts it,
    /// starting with `from` (an index into the endpoint list). Returns the endpoint index used
    /// and the line stream of JSON messages.
    pub async fn stream(
        &self,
        path: &str,
        body: &serde_json::Value,
        from: usize,
    ) -> Result<(usize, JsonLines), EtcdError> {
        let payload = Bytes::from(serde_json::to_vec(body).map_err(|e| EtcdError::Config(e.to_string()))?);
        let n = self.inner.endpoints.len();
        let mut failures = Vec::new();
        for attempt in 0..n {
            let idx = (from + attempt) % n;
            let ep = &self.inner.endpoints[idx];
            let mut sender = match self.connect(ep).await {
                Ok(s) => s,
                Err(CallError::NotSent(e) | CallError::Ambiguous(e)) => {
                    failures.push(format!("{}: {e}", ep.url));
                    continue;
                }
                Err(CallError::Status { message, .. }) => {
                    failures.push(format!("{}: {message}", ep.url));
                    continue;
                }
            };
            let req = Self::request(ep, path, payload.clone());
            let resp = match tokio::time::timeout(self.inner.request_timeout, sender.send_request(req)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    failures.push(format!("{}: {e}", ep.url));
                    continue;
                }
                Err(_) => {
                    failures.push(format!("{}: timed out", ep.url));
                    continue;
                }
            };
            if !resp.status().is_success() {
                failures.push(format!("{}: HTTP {}", ep.url, resp.status()));
                continue;
            }
            return Ok((idx, JsonLines { body: resp.into_body(), buf: BytesMut::new(), _sender: sender }));
        }
        Err(EtcdError::Unreachable(failures.join("; ")))
    }

    pub fn endpoint_count(&self) -> usize {
        self.inner.endpoints.len()
    }

    pub fn preferred(&self) -> usize {
        self.inner.preferred.load(Ordering::Relaxed)
    }
}

async fn read_limited(mut body: Incoming) -> Result<Bytes, String> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_RESPONSE_BYTES {
                return Err(format!("response larger than {MAX_RESPONSE_BYTES} bytes"));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// The newline-delimited JSON messages of a gateway stream.
pub struct JsonLines {
    body: Incoming,
    buf: BytesMut,
    _sender: SendRequest<Full<Bytes>>,
}

impl JsonLines {
    /// The next message; `Ok(None)` when the stream ended cleanly.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, EtcdError> {
        let err = |reason: String| EtcdError::Unknown { endpoint: String::new(), path: "stream".into(), reason };
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(pos + 1);
                let line = &line[..pos];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(line)
                    .map(Some)
                    .map_err(|e| EtcdError::Decode { path: "stream".into(), reason: e.to_string() });
            }
            if self.buf.len() > MAX_RESPONSE_BYTES {
                return Err(err("stream message too large".into()));
            }
            match self.body.frame().await {
                None => {
                    if self.buf.iter().all(u8::is_ascii_whitespace) {
                        return Ok(None);
                    }
                    let line = std::mem::take(&mut self.buf);
                    return serde_json::from_slice(&line)
                        .map(Some)
                        .map_err(|e| EtcdError::Decode { path: "stream".into(), reason: e.to_string() });
                }
                Some(Err(e)) => return Err(err(e.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}
