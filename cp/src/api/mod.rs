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
pub(crate) mod resources;
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
use crate::oidc::Role;
use crate::store::Store;

/// Who is calling, from the verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// `spiffe://<td>/riptides/admin/<name>`: full access to the API.
    Admin(SpiffeId),
    /// A human operator signed in through the OIDC provider (`Authorization: Bearer`).
    Operator { subject: String, role: Role },
    /// Any other identity of our trust domain (daemons, workloads): no API access yet.
    Identity(SpiffeId),
    /// No client certificate.
    Anonymous,
}

impl Caller {
    /// The operator's name and role, for callers that are operators.
    pub fn operator(&self) -> Option<(String, Role)> {
        match self {
            Caller::Admin(id) => Some((id.to_string(), Role::Admin)),
            Caller::Operator { subject, role } => Some((subject.clone(), *role)),
            _ => None,
        }
    }
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
    /// The OIDC provider: verifies operators' bearer tokens and serves the sign-in flow.
    pub oidc: Arc<crate::oidc::FlowState>,
}

/// Builds the API router. The resource routes require an operator: viewers may read, writes
/// need the role [`Role::needed_to_write`] names for the kind.
pub fn router(state: Arc<ApiState>) -> Router {
    use resources as r;
    let metrics = state.metrics.clone();
    let oidc = state.oidc.clone();
    let graphql = Router::new()
        .route("/graphql", axum::routing::post(crate::graphql::handle).get(crate::graphql::subscribe))
        .with_state(crate::graphql::GqlState::new(state.clone()));
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
        .with_state(state)
        .merge(crate::oidc::flow_router(oidc.clone()))
        .merge(graphql)
        .layer(middleware::from_fn(move |req: Request, next: Next| bearer(oidc.clone(), req, next)))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let metrics = metrics.clone();
            async move {
                let verb = req.method().as_str().to_owned();
                let resp = next.run(req).await;
                metrics.api_request(&verb, resp.status().as_u16());
                resp
            }
        }))
}

/// A caller without a client certificate may present an access token of our OIDC provider.
/// An invalid token is refused outright (401) rather than treated as anonymous.
async fn bearer(oidc: Arc<crate::oidc::FlowState>, mut req: Request, next: Next) -> Response {
    let anonymous = matches!(req.extensions().get::<Caller>(), None | Some(Caller::Anonymous));
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::to_owned);
    if let (true, Some(token)) = (anonymous, token) {
        if !req.uri().path().starts_with("/oidc/") {
            match oidc.provider.verify_access_token(token.trim()) {
                Ok(c) => {
                    req.extensions_mut().insert(Caller::Operator { subject: c.subject, role: c.role });
                }
                Err(e) => {
                    let status =
                        riptides_wire::resource::Status::failure(401, "Unauthorized", format!("{e}; sign in again"));
                    return (axum::http::StatusCode::UNAUTHORIZED, axum::Json(status)).into_response();
                }
            }
        }
    }
    next.run(req).await
}

/// 401 without credentials, 403 for identities that are not operators and for operators
/// whose role does not allow the request (viewers read; writes need the kind's role).
async fn authorize(req: Request, next: Next) -> Response {
    match req.extensions().get::<Caller>() {
        Some(Caller::Admin(_)) => next.run(req).await,
        Some(Caller::Operator { subject, role }) => {
            let read = matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD);
            if read {
                return next.run(req).await;
            }
            let needed = write_role(req.uri().path());
            if *role >= needed {
                next.run(req).await
            } else {
                ApiError::Forbidden(format!(
                    "{subject} has role {role} and may not {} {}: that needs role {needed}",
                    req.method(),
                    req.uri().path()
                ))
                .into_response()
            }
        }
        Some(Caller::Identity(id)) => {
            ApiError::Forbidden(format!("{id} is not allowed to use the resource API")).into_response()
        }
        Some(Caller::Anonymous) | None => ApiError::Unauthorized.into_response(),
    }
}

/// The role needed to write at a REST path `/apis/<group>/<version>/namespaces/<ns>/<plural>...`.
fn write_role(path: &str) -> Role {
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match seg.as_slice() {
        ["apis", group, version, "namespaces", _, plural, ..] => {
            match riptides_wire::resource::by_path(group, version, plural) {
                Some(rt) => Role::needed_to_write(rt.group, rt.kind),
                None => Role::Admin,
            }
        }
        _ => Role::Admin,
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
