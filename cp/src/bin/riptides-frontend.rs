//! `riptides-frontend`: serves the web UI (the built `frontend/dist`) and proxies the control
//! plane's GraphQL API and OIDC endpoints, so the browser talks to one origin only.
//!
//! The browser never holds a client certificate: it signs in through the control plane's OIDC
//! provider (run the control plane with `--oidc-issuer` set to this server's URL, so the
//! provider's endpoints are reached through here) and sends its access token with every
//! GraphQL request; this proxy forwards the token and nothing else of the caller's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use clap::Parser;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;

/// Serves the Riptides web UI and proxies /graphql and sign-in to the control plane.
#[derive(Debug, Parser)]
#[command(name = "riptides-frontend", version)]
struct Args {
    /// Address to listen on (plain HTTP: put TLS in front of it, or keep it on loopback).
    #[arg(long, env = "RIPTIDES_FRONTEND_LISTEN", default_value = "127.0.0.1:8444")]
    listen: SocketAddr,
    /// The control plane's API URL.
    #[arg(long, env = "RIPTIDES_CP_URL", default_value = "https://127.0.0.1:8443")]
    cp_url: String,
    /// PEM trust bundle of the control plane (its `/trust-bundle.pem`).
    #[arg(long, env = "RIPTIDES_CP_CA", value_name = "FILE")]
    cp_ca: PathBuf,
    /// TLS server name of the control plane, when it differs from the URL's host.
    #[arg(long)]
    cp_server_name: Option<String>,
    /// The built UI (index.html and its assets).
    #[arg(long, env = "RIPTIDES_FRONTEND_ASSETS", default_value = "frontend/dist")]
    assets: PathBuf,
}

const MAX_BODY: usize = 1 << 20;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

struct Proxy {
    host: String,
    port: u16,
    server_name: rustls_pki_types::ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
    assets: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .try_init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn proxy_from(args: &Args) -> anyhow::Result<Proxy> {
    let rest = args.cp_url.strip_prefix("https://").ok_or_else(|| anyhow!("--cp-url must be https://"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h.to_owned(), p.parse().context("--cp-url port")?),
        _ => (authority.to_owned(), 443),
    };
    let pem = std::fs::read(&args.cp_ca).with_context(|| format!("reading {}", args.cp_ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c?)?;
    }
    if roots.is_empty() {
        return Err(anyhow!("{} holds no certificate", args.cp_ca.display()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = args.cp_server_name.clone().unwrap_or_else(|| host.trim_matches(['[', ']']).to_owned());
    let server_name = rustls_pki_types::ServerName::try_from(name).context("control plane server name")?;
    if !args.assets.join("index.html").is_file() {
        tracing::warn!(assets = %args.assets.display(), "no index.html: build the UI (cd frontend && npm ci && npm run build)");
    }
    Ok(Proxy {
        host,
        port,
        server_name,
        tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        assets: args.assets.clone(),
    })
}

fn run(args: Args) -> anyhow::Result<()> {
    let proxy = Arc::new(proxy_from(&args)?);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let app = Router::new()
            .route("/graphql", axum::routing::post(forward).get(subscribe))
            .route("/.well-known/openid-configuration", axum::routing::get(forward))
            .route("/oidc/{*rest}", axum::routing::any(forward))
            .fallback(axum::routing::get(static_file))
            .with_state(proxy)
            .layer(axum::middleware::from_fn(security_headers));
        let listener =
            tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        eprintln!("riptides-frontend: http://{} -> {}", listener.local_addr()?, args.cp_url);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            })
            .await?;
        Ok(())
    })
}

async fn security_headers(req: Request, next: axum::middleware::Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'"),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

fn error(code: StatusCode, msg: String) -> Response {
    let body = serde_json::json!({"errors": [{"message": msg, "extensions": {"code": "PROXY"}}]});
    (code, axum::Json(body)).into_response()
}

/// Forwards the request to the control plane: method, path and query, body, and only the
/// headers the API needs (content type, accept, authorization).
async fn forward(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    match tokio::time::timeout(UPSTREAM_TIMEOUT, forward_inner(&p, req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => error(StatusCode::BAD_GATEWAY, format!("the control plane cannot be reached: {e:#}")),
        Err(_) => error(StatusCode::GATEWAY_TIMEOUT, "the control plane did not answer in time".into()),
    }
}

async fn forward_inner(p: &Proxy, req: Request) -> anyhow::Result<Response> {
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, MAX_BODY).collect().await.map_err(|e| anyhow!("request body: {e}"))?.to_bytes();
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
    let mut out = hyper::Request::builder()
        .method(parts.method.clone())
        .uri(path)
        .header(header::HOST, format!("{}:{}", p.host, p.port));
    for h in [header::CONTENT_TYPE, header::ACCEPT, header::AUTHORIZATION] {
        if let Some(v) = parts.headers.get(&h) {
            out = out.header(h, v);
        }
    }
    let out = out.body(Full::new(body))?;
    let tcp = tokio::net::TcpStream::connect((p.host.trim_matches(['[', ']']), p.port)).await?;
    let tls = p.tls.connect(p.server_name.clone(), tcp).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let resp = send.send_request(out).await?;
    let (parts, body) = resp.into_parts();
    let bytes: Bytes =
        Limited::new(body, 16 << 20).collect().await.map_err(|e| anyhow!("response body: {e}"))?.to_bytes();
    let mut r = Response::builder().status(parts.status);
    for h in [header::CONTENT_TYPE, header::LOCATION, header::CACHE_CONTROL] {
        if let Some(v) = parts.headers.get(&h) {
            r = r.header(h, v);
        }
    }
    Ok(r.body(Body::from(bytes))?)
}

/// `GET /graphql` with a WebSocket upgrade: a second WebSocket to the control plane, and the
/// messages of both passed through (the access token travels in `connection_init`).
async fn subscribe(
    State(p): State<Arc<Proxy>>,
    headers: axum::http::HeaderMap,
    ws: axum::extract::ws::WebSocketUpgrade,
) -> Response {
    use axum::extract::ws::Message as A;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message as T;

    let protocol = headers
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|l| l.split(',').map(str::trim).find(|p| *p == "graphql-transport-ws" || *p == "graphql-ws"))
        .unwrap_or("graphql-transport-ws")
        .to_owned();
    let upstream = async {
        let tcp = tokio::net::TcpStream::connect((p.host.trim_matches(['[', ']']), p.port)).await?;
        let tls = p.tls.connect(p.server_name.clone(), tcp).await?;
        let mut req = format!("wss://{}:{}/graphql", p.host, p.port).into_client_request()?;
        req.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_str(&protocol)?);
        let (ws, _) = tokio_tungstenite::client_async(req, tls).await?;
        anyhow::Ok(ws)
    };
    let upstream = match tokio::time::timeout(UPSTREAM_TIMEOUT, upstream).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => return error(StatusCode::BAD_GATEWAY, format!("the control plane cannot be reached: {e:#}")),
        Err(_) => return error(StatusCode::GATEWAY_TIMEOUT, "the control plane did not answer in time".into()),
    };
    ws.protocols([protocol]).on_upgrade(move |browser| async move {
        let (mut up_tx, mut up_rx) = upstream.split();
        let (mut br_tx, mut br_rx) = browser.split();
        let to_cp = async {
            while let Some(Ok(m)) = br_rx.next().await {
                let m = match m {
                    A::Text(t) => T::Text(t.as_str().into()),
                    A::Binary(b) => T::Binary(b),
                    A::Close(_) => break,
                    _ => continue,
                };
                if up_tx.send(m).await.is_err() {
                    break;
                }
            }
            let _ = up_tx.close().await;
        };
        let to_browser = async {
            while let Some(Ok(m)) = up_rx.next().await {
                let m = match m {
                    T::Text(t) => A::Text(t.as_str().into()),
                    T::Binary(b) => A::Binary(b),
                    T::Close(_) => break,
                    _ => continue,
                };
                if br_tx.send(m).await.is_err() {
                    break;
                }
            }
            let _ = br_tx.close().await;
        };
        tokio::select! {
            _ = to_cp => {}
            _ = to_browser => {}
        }
    })
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("map") => "application/json",
        _ => "application/octet-stream",
    }
}

/// Files of the built UI; any other path is the single-page app's (index.html).
async fn static_file(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let rel = req.uri().path().trim_start_matches('/');
    let safe = !rel.split('/').any(|s| s == ".." || s.starts_with('.'));
    let candidate = p.assets.join(rel);
    let file = if safe && !rel.is_empty() && candidate.is_file() { candidate } else { p.assets.join("index.html") };
    match tokio::fs::read(&file).await {
        Ok(bytes) => {
            let cache = if file.ends_with("index.html") { "no-cache" } else { "public, max-age=300" };
            ([(header::CONTENT_TYPE, content_type(&file)), (header::CACHE_CONTROL, cache)], bytes).into_response()
        }
        Err(_) => (
            StatusCode::NOT_FOUND,
            "the web UI is not built: run `npm ci && npm run build` in frontend/ (or pass --assets)",
        )
            .into_response(),
    }
}
