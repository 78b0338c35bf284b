//! The validating admission webhook: `POST /validate` with an `AdmissionReview`, over HTTPS
//! with the [`RotatingCert`](super::cert::RotatingCert).
//!
//! Bounded like every other listener: request bodies up to `max_body_bytes` (413 beyond),
//! a TLS handshake and header deadline, at most `max_connections` at once, and a deadline on
//! reading the control plane. A review that does not parse is a 400 naming the bad field,
//! never a guess; a decision that needs the control plane and cannot read it is a refusal
//! (fail closed), while requests that need nothing (unprotected pods, other kinds) are
//! allowed without touching it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use riptides_wire::client::{ApiClient, Method};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::cert::RotatingCert;
use super::decide::{decide, PROTECT_LABEL};
use super::facts::FactSource;
use super::review::{AdmissionRequest, AdmissionResponse, AdmissionReview, API_VERSION, KIND};
use super::WebhookConfig;

#[derive(Clone)]
struct AppState {
    facts: Arc<dyn FactSource>,
    kube: Option<ApiClient>,
    cfg: WebhookConfig,
}

/// Serves the webhook on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    cert: Arc<RotatingCert>,
    facts: Arc<dyn FactSource>,
    kube: Option<ApiClient>,
    cfg: WebhookConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut tls = rustls::ServerConfig::builder_with_provider(riptides_wire::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let router = router(AppState { facts, kube, cfg: cfg.clone() });
    let permits = Arc::new(Semaphore::new(cfg.max_connections));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => p.map_err(std::io::Error::other)?,
        };
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let handshake_timeout = cfg.handshake_timeout;
        conns.spawn(
            async move {
                let _permit = permit;
                let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => return tracing::debug!("TLS handshake timed out"),
                };
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(handshake_timeout)
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "webhook connection ended with an error");
                }
            }
            .instrument(tracing::debug_span!("webhook_conn", %peer)),
        );
        while conns.try_join_next().is_some() {}
    }
    conns.shutdown().await;
    Ok(())
}

fn router(state: AppState) -> Router {
    let limit = state.cfg.max_body_bytes;
    Router::new()
        .route("/validate", post(validate))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn bad_request(msg: String) -> Response {
    tracing::info!(reason = %msg, "refusing a malformed admission review");
    (StatusCode::BAD_REQUEST, msg).into_response()
}

async fn validate(State(st): State<AppState>, body: Bytes) -> Response {
    let review: AdmissionReview =
        match serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&body)) {
            Ok(r) => r,
            Err(e) => return bad_request(format!("not an AdmissionReview: {}: {}", e.path(), e.inner())),
        };
    if review.api_version != API_VERSION || review.kind != KIND {
        return bad_request(format!("expected {API_VERSION} {KIND}, got {} {}", review.api_version, review.kind));
    }
    let Some(req) = review.request else {
        return bad_request("AdmissionReview without request".into());
    };
    let span = tracing::info_span!(
        "admission",
        uid = %req.uid,
        kind = %req.kind.kind,
        op = %req.operation,
        namespace = req.namespace.as_deref().unwrap_or(""),
        name = req.name.as_deref().unwrap_or(""),
    );
    let response = review_one(&st, &req).instrument(span.clone()).await;
    span.in_scope(|| match &response.status {
        None => tracing::debug!("allowed"),
        Some(s) => tracing::info!(reason = %s.message, "refused"),
    });
    axum::Json(response.into_review()).into_response()
}

async fn review_one(st: &AppState, req: &AdmissionRequest) -> AdmissionResponse {
    let bound_pod = if is_binding(req) { fetch_bound_pod(st, req).await } else { None };
    if !needs_facts(req, bound_pod.as_ref()) {
        return decide(req, &Default::default(), None);
    }
    let facts = match tokio::time::timeout(st.cfg.facts_timeout, st.facts.facts()).await {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return AdmissionResponse::deny(&req.uid, format!("cannot read the Riptides control plane: {e}")),
        Err(_) => {
            return AdmissionResponse::deny(&req.uid, "the Riptides control plane did not answer in time".to_string())
        }
    };
    decide(req, &facts, bound_pod.as_ref())
}

fn is_binding(req: &AdmissionRequest) -> bool {
    req.kind.group.is_empty() && (req.kind.kind == "Binding" || req.sub_resource.as_deref() == Some("binding"))
}

fn needs_facts(req: &AdmissionRequest, bound_pod: Option<&Value>) -> bool {
    if req.operation == "DELETE" || req.operation == "CONNECT" {
        return false;
    }
    let protected = |v: Option<&Value>| {
        v.and_then(|v| v.pointer("/metadata/labels")).and_then(|l| l.get(PROTECT_LABEL)) == Some(&Value::from("true"))
    };
    match (req.kind.group.as_str(), req.kind.kind.as_str()) {
        ("", "Pod") if !is_binding(req) => protected(req.object.as_ref()),
        _ if is_binding(req) => bound_pod.map_or_else(|| protected(req.object.as_ref()), |p| protected(Some(p))),
        ("core.riptides.io", "WorkloadIdentity" | "CredentialBinding") => true,
        _ => false,
    }
}

/// The pod a Binding binds, read from the cluster API (a Binding does not carry labels).
async fn fetch_bound_pod(st: &AppState, req: &AdmissionRequest) -> Option<Value> {
    let kube = st.kube.as_ref()?;
    let ns = req.namespace.as_deref()?;
    let name = req.name.as_deref()?;
    let path = format!("/api/v1/namespaces/{ns}/pods/{name}");
    match kube.raw_request(Method::GET, &path, None).await {
        Ok((200, body)) => serde_json::from_slice(&body).ok(),
        Ok((code, _)) => {
            tracing::warn!(%path, code, "could not read the pod being bound");
            None
        }
        Err(e) => {
            tracing::warn!(%path, error = %e, "could not read the pod being bound");
            None
        }
    }
}
