//! The Kubernetes-compatible HTTPS resource API.
//!
//! Clients authenticate with a client certificate from our CA (the admin certificate in
//! `admin.kubeconfig`); the TLS layer accepts connections without one so that the API can answer
//! `401 Unauthorized` as Kubernetes does instead of failing the handshake.
//!
//! Layout: [`server`] accepts TLS connections and identifies the [`Caller`]; [`resources`] and
//! [`watch`] implement the REST semantics on the [`Store`](crate::store::Store); [`discovery`]
//! describes the kinds to kubectl.

mod discovery;
mod error;
pub(crate) mod object;
mod resources;
mod selector;
mod server;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use riptides_wire::resource::ValidationContext;
use riptides_wire::SpiffeId;

pub use error::ApiError;
pub use object::rfc3339;
pub use server::{serve, ServingCert};

use crate::ca::Ca;
use crate::metrics::Metrics;
use crate::store::Store;

/// Who is calling, from the verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// `spiffe://<td>/riptides/admin/<name>`: full access to the API.
    Admin(SpiffeId),
    /// Any other identity of our trust domain (daemons, workloads): no API access yet.
    Identity(SpiffeId),
    /// No client certificate.
    Anonymous,
}

/// SPIFFE path prefix of operator identities.
pub const ADMIN_PATH_PREFIX: &str = "/riptides/admin/";

/// Shared by every request handler.
pub struct ApiState {
    pub store: Arc<dyn Store>,
    pub ca: Arc<Ca>,
    /// Supervisor of the daemon sessions, for tunnel requests.
    pub sessions: String,
    pub validation: ValidationContext,
    pub max_request_body: usize,
    pub max_watch_duration: Duration,
    pub metrics: Arc<Metrics>,
}

/// Builds the API router. Every route requires an admin caller.
pub fn router(state: Arc<ApiState>) -> Router {
    use resources as r;
    let metrics = state.metrics.clone();
    // The trust bundle is public: daemons fetch it before they have any identity (and check
    // it against the pin they were installed with).
    let public = Router::new()
        .route("/trust-bundle.pem", get(bundle_pem))
        .route("/.well-known/spiffe-bundle", get(bundle_spiffe));
    let protected = Router::new()
        .route("/api", get(discovery::core_versions))
        .route("/apis", get(discovery::groups))
        .route("/apis/{group}", get(discovery::group))
        .route("/apis/{group}/{version}", get(discovery::resources))
        .route("/version", get(discovery::version))
        .route("/openapi/v2", get(discovery::openapi_v2))
        .route("/apis/{group}/{version}/{plural}", get(r::list_all))
        .route("/apis/{group}/{version}/namespaces/{ns}/{plural}", get(r::list_namespaced).post(r::create))
        .route(
            "/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}",
            get(r::get).put(r::replace).patch(r::patch).delete(r::delete),
        )
        .route(
            "/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}/status",
            get(r::get_status).put(r::replace_status),
        )
        .route("/apis/{group}/{version}/namespaces/{ns}/daemons/{name}/tunnel/{what}", get(tunnel))
        .fallback(|| async { ApiError::NotFound("the server could not find the requested resource".into()) })
        .layer(middleware::from_fn(authorize));
    public
        .merge(protected)
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let metrics = metrics.clone();
            async move {
                let verb = req.method().as_str().to_owned();
                let resp = next.run(req).await;
                metrics.api_request(&verb, resp.status().as_u16());
                resp
            }
        }))
        .with_state(state)
}

/// 401 without a client certificate, 403 for identities that are not operators.
async fn authorize(req: Request, next: Next) -> Response {
    match req.extensions().get::<Caller>() {
        Some(Caller::Admin(_)) => next.run(req).await,
        Some(Caller::Identity(id)) => {
            ApiError::Forbidden(format!("{id} is not allowed to use the resource API")).into_response()
        }
        Some(Caller::Anonymous) | None => ApiError::Unauthorized.into_response(),
    }
}

async fn bundle_pem(axum::extract::State(st): axum::extract::State<Arc<ApiState>>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/x-pem-file")], st.ca.bundle().to_pem()).into_response()
}

async fn bundle_spiffe(axum::extract::State(st): axum::extract::State<Arc<ApiState>>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], st.ca.bundle().to_spiffe_bundle_json()).into_response()
}

/// `GET .../daemons/<name>/tunnel/{health,connections,config}`: asks the daemon itself, over a
/// stream the control plane opens on the daemon's own connection (works behind NAT).
async fn tunnel(
    axum::extract::State(st): axum::extract::State<Arc<ApiState>>,
    axum::extract::Path((group, _version, _ns, name, what)): axum::extract::Path<(
        String,
        String,
        String,
        String,
        String,
    )>,
) -> Result<Response, ApiError> {
    use riptides_wire::proto::messages::{TunnelRequest, TunnelResponse};
    if group != riptides_wire::resource::CORE_GROUP {
        return Err(ApiError::NotFound("the server could not find the requested resource".into()));
    }
    let req = match what.as_str() {
        "health" => TunnelRequest::Health,
        "connections" => TunnelRequest::ConnectionTable,
        "config" => TunnelRequest::ConfigDump,
        other => {
            return Err(ApiError::NotFound(format!(
                "unknown tunnel query {other:?}; use health, connections or config"
            )))
        }
    };
    let resp = crate::endpoint::tunnel_request(&st.sessions, &name, req).await.map_err(ApiError::Unavailable)?;
    let body = match resp {
        TunnelResponse::Health(h) => {
            serde_json::json!({"ready": h.ready, "details": h.details.into_iter().collect::<std::collections::BTreeMap<_, _>>()})
        }
        TunnelResponse::ConnectionTable(rows) => {
            serde_json::json!({"connections": rows.into_iter().map(|c| serde_json::json!({
            "local": c.local, "remote": c.remote, "workloadID": c.workload_id, "peerID": c.peer_id,
            "mode": c.mode, "state": c.state, "bytesIn": c.bytes_in, "bytesOut": c.bytes_out})).collect::<Vec<_>>()})
        }
        TunnelResponse::ConfigDump(text) => serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        TunnelResponse::Error(e) => return Err(ApiError::Unavailable(format!("daemon {name} answered: {e}"))),
    };
    Ok(axum::Json(body).into_response())
}
