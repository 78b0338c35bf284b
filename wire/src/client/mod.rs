//! An HTTPS client for the control plane's Kubernetes-compatible resource API.
//!
//! It speaks to the REST paths of [`crate::resource::RESOURCE_TYPES`]
//! (`/apis/<group>/<version>/namespaces/<ns>/<plural>[/<name>]`) over HTTP/1.1 and TLS
//! (rustls with the aws-lc-rs provider). The server is trusted only through the CA of the
//! kubeconfig, and the client presents the kubeconfig's client certificate.
//!
//! Every request opens its own connection (the API is not chatty); a watch holds its own
//! connection for as long as its [`WatchStream`] lives. Non-2xx replies become
//! [`ApiError::Status`] with the server's Kubernetes `Status`; anything else that fails is a
//! typed [`ApiError`] saying which step failed.
//!
//! Limits: connect (TCP + TLS) 10 s, whole request 30 s (a watch: only until its response
//! headers), response bodies 64 MiB, watch event lines 16 MiB.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use riptides_wire::client::{ApiClient, ApiError};
//! use riptides_wire::resource::{by_name, DEFAULT_NAMESPACE};
//!
//! # async fn demo() -> Result<(), ApiError> {
//! let client = ApiClient::from_kubeconfig_file("riptides-data/admin.kubeconfig")?;
//! let verifiers = by_name("verifier").expect("known kind");
//! let ns = client.default_namespace().unwrap_or(DEFAULT_NAMESPACE).to_owned();
//!
//! let created = client
//!     .create(verifiers, &ns, &serde_json::json!({
//!         "apiVersion": "auth.riptides.io/v1alpha1",
//!         "kind": "Verifier",
//!         "metadata": { "name": "join" },
//!         "spec": { "method": "joinToken" },
//!     }))
//!     .await?;
//! let rv = created["metadata"]["resourceVersion"].as_str().map(str::to_owned);
//!
//! match client.get(verifiers, &ns, "missing").await {
//!     Err(e) if e.is_not_found() => {}
//!     other => panic!("{other:?}"),
//! }
//!
//! let list = client.list(verifiers, Some(&ns)).await?;
//! let mut events = client.watch(verifiers, Some(&ns), list.metadata.resource_version.as_deref()).await?;
//! while let Some(event) = events.next().await {
//!     let event = event?;
//!     println!("{:?} {}", event.kind, event.object["metadata"]["name"]);
//! }
//! # let _ = rv;
//! # Ok(()) }
//! ```

// `ApiError::Status` carries the whole Kubernetes `Status` by value (callers match on it); the
// errors are rare and a few hundred bytes, so the size lint is not worth a box here.
#![allow(clippy::result_large_err)]

mod error;
mod lines;
mod paths;
mod tls;

use std::collections::VecDeque;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Request bodies of [`ApiClient::raw_request`].
pub use bytes::Bytes;
use bytes::BytesMut;
use futures_util::Stream;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST, USER_AGENT};
/// Methods of [`ApiClient::raw_request`].
pub use hyper::Method;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

pub use error::ApiError;
pub use paths::{resource_path, watch_path};

use crate::kubeconfig::{ClientCredentials, Kubeconfig};
use crate::resource::{List, ResourceType, Status, WatchEvent, WatchEventType};
use lines::LineSplitter;
use paths::ServerUrl;

/// TCP connect plus TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole request, connect included (for a watch: until the response headers).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body read into memory.
pub const MAX_BODY_BYTES: usize = 64 << 20;
/// Longest event line accepted on a watch stream.
pub const MAX_WATCH_LINE_BYTES: usize = 16 << 20;

const MERGE_PATCH: &str = "application/merge-patch+json";
const JSON: &str = "application/json";

/// A client for the resource API. Cheap to clone; clones share the TLS configuration.
#[derive(Clone)]
pub struct ApiClient {
    inner: Arc<Inner>,
}

struct Inner {
    server: String,
    url: ServerUrl,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    namespace: Option<String>,
    /// Sent as `Authorization: Bearer` when present; never logged (`Debug` skips it).
    bearer_token: Option<String>,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("server", &self.inner.server)
            .field("server_name", &self.inner.server_name)
            .field("namespace", &self.inner.namespace)
            .finish_non_exhaustive()
    }
}

/// Aborts the task driving a connection when the request or watch that owns it is dropped.
struct ConnGuard(JoinHandle<()>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ApiClient {
    /// Reads a kubeconfig file and uses its current context.
    pub fn from_kubeconfig_file(path: impl AsRef<Path>) -> Result<Self, ApiError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| ApiError::KubeconfigRead { path: shown.clone(), source })?;
        let creds = Kubeconfig::parse(&text)
            .and_then(|k| k.credentials())
            .map_err(|source| ApiError::Kubeconfig { path: shown, source })?;
        Self::new(creds)
    }

    /// The in-cluster client of a pod: the API server from `KUBERNETES_SERVICE_HOST`/`_PORT`,
    /// trusted through the service account's `ca.crt`, authenticated by its `token`, both
    /// read from `sa_dir` (normally `/var/run/secrets/kubernetes.io/serviceaccount`).
    pub fn in_cluster(sa_dir: impl AsRef<Path>) -> Result<Self, ApiError> {
        let dir = sa_dir.as_ref();
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| ApiError::KubeconfigRead { path: path.display().to_string(), source })
        };
        let host = std::env::var("KUBERNETES_SERVICE_HOST")
            .map_err(|_| ApiError::TlsConfig("KUBERNETES_SERVICE_HOST is not set (not in a pod?)".into()))?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        let token = String::from_utf8(read("token")?)
            .map_err(|_| ApiError::TlsConfig("service-account token is not UTF-8".into()))?;
        let namespace = read("namespace").ok().and_then(|n| String::from_utf8(n).ok()).map(|n| n.trim().to_owned());
        Self::new(ClientCredentials {
            server: format!("https://{host}:{port}"),
            ca_pem: read("ca.crt")?,
            tls_server_name: None,
            client_cert_pem: None,
            client_key_pem: None,
            bearer_token: Some(token.trim().to_owned()),
            namespace,
        })
    }

    /// A client for `creds.server`, trusting only `creds.ca_pem`.
    pub fn new(creds: ClientCredentials) -> Result<Self, ApiError> {
        let url = ServerUrl::parse(&creds.server)?;
        let name = creds.tls_server_name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| url.host.clone());
        let server_name = ServerName::try_from(name.clone())
            .map_err(|_| ApiError::TlsConfig(format!("{name:?} is not a valid TLS server name")))?;
        let config =
            tls::client_config(&creds.ca_pem, creds.client_cert_pem.as_deref(), creds.client_key_pem.as_deref())?;
        Ok(ApiClient {
            inner: Arc::new(Inner {
                server: creds.server,
                url,
                server_name,
                tls: TlsConnector::from(config),
                namespace: creds.namespace.filter(|n| !n.is_empty()),
                bearer_token: creds.bearer_token,
                connect_timeout: CONNECT_TIMEOUT,
                request_timeout: REQUEST_TIMEOUT,
            }),
        })
    }

    /// Overrides the connect and request timeouts (tests, slow links).
    pub fn with_timeouts(self, connect: Duration, request: Duration) -> Self {
        let inner = &self.inner;
        ApiClient {
            inner: Arc::new(Inner {
                server: inner.server.clone(),
                url: inner.url.clone(),
                server_name: inner.server_name.clone(),
                tls: inner.tls.clone(),
                namespace: inner.namespace.clone(),
                bearer_token: inner.bearer_token.clone(),
                connect_timeout: connect,
                request_timeout: request,
            }),
        }
    }

    /// The server URL from the kubeconfig.
    pub fn server(&self) -> &str {
        &self.inner.server
    }

    /// The namespace of the kubeconfig's context, if it names one.
    pub fn default_namespace(&self) -> Option<&str> {
        self.inner.namespace.as_deref()
    }

    /// `GET .../namespaces/{ns}/{plural}/{name}`.
    pub async fn get(&self, rt: &ResourceType, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.json(Method::GET, &resource_path(rt, Some(namespace), Some(name)), None).await
    }

    /// Lists one namespace, or every namespace with `None`.
    pub async fn list(&self, rt: &ResourceType, namespace: Option<&str>) -> Result<List<Value>, ApiError> {
        self.json(Method::GET, &resource_path(rt, namespace, None), None).await
    }

    /// `POST`s a new object into `namespace`.
    pub async fn create(&self, rt: &ResourceType, namespace: &str, object: &Value) -> Result<Value, ApiError> {
        let path = resource_path(rt, Some(namespace), None);
        let body = encode(&Method::POST, &path, object)?;
        self.json(Method::POST, &path, Some((JSON, body))).await
    }

    /// `PUT`s a whole object; its `metadata.resourceVersion`, if set, must be current (else 409).
    pub async fn replace(
        &self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        object: &Value,
    ) -> Result<Value, ApiError> {
        let path = resource_path(rt, Some(namespace), Some(name));
        let body = encode(&Method::PUT, &path, object)?;
        self.json(Method::PUT, &path, Some((JSON, body))).await
    }

    /// `PATCH` with a JSON merge patch (RFC 7386).
    pub async fn merge_patch(
        &self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Value, ApiError> {
        let path = resource_path(rt, Some(namespace), Some(name));
        let body = encode(&Method::PATCH, &path, patch)?;
        self.json(Method::PATCH, &path, Some((MERGE_PATCH, body))).await
    }

    /// `DELETE`s an object; returns what the server answers (the object or a `Status`).
    pub async fn delete(&self, rt: &ResourceType, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.json(Method::DELETE, &resource_path(rt, Some(namespace), Some(name)), None).await
    }

    /// Watches one namespace (or all with `None`), from `resource_version` when given.
    ///
    /// The stream yields events (`BOOKMARK`s included: they carry only a `resourceVersion` to
    /// resume from) until the server ends the response (the control plane caps a watch's
    /// duration: watch again from the last `resourceVersion` seen) or the stream is dropped.
    /// An `ERROR` event is yielded as `Err(ApiError::Status(..))` (410 Gone: list again and
    /// watch from the list's `resourceVersion`).
    pub async fn watch(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        resource_version: Option<&str>,
    ) -> Result<WatchStream, ApiError> {
        let path = watch_path(rt, namespace, resource_version);
        let timeout = self.inner.request_timeout;
        let opened = tokio::time::timeout(timeout, async {
            let (response, guard) = self.send(Method::GET, &path, None).await?;
            if !response.status().is_success() {
                let code = response.status().as_u16();
                let body = read_body(response.into_body(), &Method::GET, &path).await?;
                return Err(ApiError::Status(error::status_from_reply(code, &body)));
            }
            Ok((response, guard))
        })
        .await
        .map_err(|_| timed_out(&Method::GET, &path, timeout))??;
        let (response, guard) = opened;
        Ok(WatchStream {
            body: response.into_body(),
            splitter: LineSplitter::new(MAX_WATCH_LINE_BYTES),
            pending: VecDeque::new(),
            done: false,
            path,
            _conn: guard,
        })
    }

    /// Any request on any path (for clients of other Kubernetes-style APIs, e.g. Nodes of
    /// the cluster API server), returning the status code and body whatever the status.
    pub async fn raw_request(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<(u16, Bytes), ApiError> {
        self.request(method, path, body).await
    }

    /// `GET`s any path (discovery, health) and returns the status code and body, whatever
    /// the status.
    pub async fn raw_get(&self, path: &str) -> Result<(u16, Bytes), ApiError> {
        self.request(Method::GET, path, None).await
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<T, ApiError> {
        let (code, bytes) = self.request(method.clone(), path, body).await?;
        if !(200..300).contains(&code) {
            return Err(ApiError::Status(error::status_from_reply(code, &bytes)));
        }
        serde_json::from_slice(&bytes).map_err(|source| ApiError::Decode {
            method: method.to_string(),
            path: path.to_owned(),
            source,
        })
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<(u16, Bytes), ApiError> {
        let timeout = self.inner.request_timeout;
        tokio::time::timeout(timeout, async {
            let (response, _conn) = self.send(method.clone(), path, body).await?;
            let code = response.status().as_u16();
            let bytes = read_body(response.into_body(), &method, path).await?;
            Ok((code, bytes))
        })
        .await
        .map_err(|_| timed_out(&method, path, timeout))?
    }

    /// Opens a connection and sends one request on it.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<(Response<Incoming>, ConnGuard), ApiError> {
        let http_err = |source| ApiError::Http { method: method.to_string(), path: path.to_owned(), source };
        let (mut sender, guard) = self.connect(&method, path).await?;
        let inner = &self.inner;
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("{}{}", inner.url.prefix, path))
            .header(HOST, inner.url.authority.as_str())
            .header(ACCEPT, JSON)
            .header(USER_AGENT, concat!("riptides/", env!("CARGO_PKG_VERSION")));
        if let Some(token) = &inner.bearer_token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {}", token.trim()));
        }
        let payload = match body {
            Some((content_type, bytes)) => {
                req = req.header(CONTENT_TYPE, content_type);
                bytes
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(payload)).map_err(|e| ApiError::Request {
            method: method.to_string(),
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let response = sender.send_request(req).await.map_err(http_err)?;
        Ok((response, guard))
    }

    async fn connect(&self, method: &Method, path: &str) -> Result<(SendRequest<Full<Bytes>>, ConnGuard), ApiError> {
        let inner = &self.inner;
        let addr = inner.url.authority.clone();
        let secs = inner.connect_timeout.as_secs();
        let attempt = async {
            let tcp = TcpStream::connect((inner.url.host.as_str(), inner.url.port))
                .await
                .map_err(|source| ApiError::Connect { addr: addr.clone(), source })?;
            let _ = tcp.set_nodelay(true);
            let tls = inner.tls.connect(inner.server_name.clone(), tcp).await.map_err(|source| ApiError::Tls {
                addr: addr.clone(),
                server_name: server_name_text(&inner.server_name),
                source,
            })?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|source| ApiError::Http { method: method.to_string(), path: path.to_owned(), source })?;
            let task = tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "API connection ended with an error");
                }
            });
            Ok((sender, ConnGuard(task)))
        };
        match tokio::time::timeout(inner.connect_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::ConnectTimeout { addr, secs }),
        }
    }
}

fn server_name_text(n: &ServerName<'_>) -> String {
    match n {
        ServerName::DnsName(d) => d.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

fn timed_out(method: &Method, path: &str, d: Duration) -> ApiError {
    ApiError::Timeout { method: method.to_string(), path: path.to_owned(), secs: d.as_secs() }
}

fn encode(method: &Method, path: &str, v: &Value) -> Result<Bytes, ApiError> {
    serde_json::to_vec(v).map(Bytes::from).map_err(|source| ApiError::Encode {
        method: method.to_string(),
        path: path.to_owned(),
        source,
    })
}

/// Reads a whole body, refusing more than [`MAX_BODY_BYTES`].
async fn read_body(mut body: Incoming, method: &Method, path: &str) -> Result<Bytes, ApiError> {
    let too_large =
        || ApiError::BodyTooLarge { method: method.to_string(), path: path.to_owned(), limit: MAX_BODY_BYTES };
    if body.size_hint().lower() > MAX_BODY_BYTES as u64 {
        return Err(too_large());
    }
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|source| ApiError::Http { method: method.to_string(), path: path.to_owned(), source })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_BODY_BYTES {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// The events of one watch, in order. Dropping it closes the connection.
pub struct WatchStream {
    body: Incoming,
    splitter: LineSplitter,
    pending: VecDeque<Vec<u8>>,
    done: bool,
    path: String,
    _conn: ConnGuard,
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream").field("path", &self.path).field("done", &self.done).finish_non_exhaustive()
    }
}

impl WatchStream {
    /// The next event, or `None` when the server ended the watch (same as `StreamExt::next`,
    /// for callers without `futures-util`).
    pub async fn next_event(&mut self) -> Option<Result<WatchEvent<Value>, ApiError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    fn decode(&self, line: &[u8]) -> Result<WatchEvent<Value>, ApiError> {
        decode_event(line, &self.path)
    }
}

fn decode_event(line: &[u8], path: &str) -> Result<WatchEvent<Value>, ApiError> {
    let event: WatchEvent<Value> = serde_json::from_slice(line).map_err(|source| ApiError::Decode {
        method: "WATCH".into(),
        path: path.to_owned(),
        source,
    })?;
    if event.kind == WatchEventType::Error {
        let status = serde_json::from_value::<Status>(event.object.clone())
            .unwrap_or_else(|_| Status::failure(500, "InternalError", format!("watch error event: {}", event.object)));
        return Err(ApiError::Status(status));
    }
    Ok(event)
}

impl Stream for WatchStream {
    type Item = Result<WatchEvent<Value>, ApiError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(line) = this.pending.pop_front() {
                return Poll::Ready(Some(this.decode(&line)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.done = true;
                    this.pending.extend(this.splitter.finish());
                }
                Poll::Ready(Some(Err(source))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(ApiError::Http {
                        method: "WATCH".into(),
                        path: this.path.clone(),
                        source,
                    })));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        let mut lines = Vec::new();
                        if this.splitter.push(&data, &mut lines).is_err() {
                            this.done = true;
                            return Poll::Ready(Some(Err(ApiError::WatchLineTooLong {
                                path: this.path.clone(),
                                limit: MAX_WATCH_LINE_BYTES,
                            })));
                        }
                        this.pending.extend(lines);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_events_decode() {
        let e = decode_event(br#"{"type":"ADDED","object":{"metadata":{"name":"a"}}}"#, "/p").unwrap();
        assert_eq!(e.kind, WatchEventType::Added);
        assert_eq!(e.object["metadata"]["name"], "a");
        let gone = decode_event(
            br#"{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old"}}"#,
            "/p",
        )
        .unwrap_err();
        assert!(gone.is_gone(), "{gone:?}");
        assert!(matches!(decode_event(b"{nope", "/p"), Err(ApiError::Decode { .. })));
    }

    fn creds(server: &str) -> ClientCredentials {
        ClientCredentials {
            server: server.into(),
            ca_pem: b"not a pem".to_vec(),
            tls_server_name: None,
            client_cert_pem: None,
            client_key_pem: None,
            bearer_token: None,
            namespace: Some("ns".into()),
        }
    }

    #[test]
    fn bad_credentials_are_clear_errors() {
        let e = ApiClient::new(creds("http://127.0.0.1:1")).unwrap_err();
        assert!(e.to_string().contains("only https://"), "{e}");
        let e = ApiClient::new(creds("https://127.0.0.1:1")).unwrap_err();
        assert!(e.to_string().contains("certificate-authority-data contains no PEM certificate"), "{e}");
        let e = ApiClient::from_kubeconfig_file("/nonexistent/admin.kubeconfig").unwrap_err();
        assert!(e.to_string().starts_with("cannot read kubeconfig /nonexistent/admin.kubeconfig"), "{e}");
    }
}
