//! The GraphQL API at `/graphql` on the API listener, for the web UI and scripts.
//!
//! It reads the same store as the REST API and writes through the very same REST handlers
//! (so validation, server-owned metadata, write-only fields and optimistic concurrency are
//! identical). Who may do what comes from the [`Caller`](crate::api::Caller): operators with a
//! role (admin client certificate, or an OIDC access token) may query; writes need the role
//! [`Role::needed_to_write`] names for the kind. Secrets never leave: a CredentialSource's
//! `secretValue` and a JoinToken's `tokenHash` are not part of the schema, and every JSON
//! `spec` is scrubbed before it is returned.
//!
//! Queries are bounded: depth ([`MAX_DEPTH`]), complexity ([`MAX_COMPLEXITY`], where fields
//! that ask daemons over the tunnel cost [`TUNNEL_COST`]) and body size.

mod model;
mod policy;
mod schema;
mod subscription;

use std::sync::Arc;

use async_graphql::Schema;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

pub use schema::{MutationRoot, QueryRoot};
pub use subscription::{upgrade as subscribe, ResourceChange, SubscriptionRoot};

use crate::api::{ApiState, Caller};
use crate::oidc::Role;

/// Deepest selection nesting accepted.
pub const MAX_DEPTH: usize = 10;
/// Largest query cost accepted (each field costs 1, lists multiply, tunnel fields cost more).
pub const MAX_COMPLEXITY: usize = 2000;
/// Cost of a field that asks connected daemons over the tunnel.
pub const TUNNEL_COST: usize = 100;
/// Largest GraphQL request body.
pub const MAX_BODY: usize = 256 * 1024;

pub type ApiSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// What the `/graphql` routes share.
pub struct GqlState {
    pub schema: Arc<ApiSchema>,
    pub api: Arc<ApiState>,
}

impl GqlState {
    pub fn new(api: Arc<ApiState>) -> Arc<GqlState> {
        Arc::new(GqlState { schema: Arc::new(schema(api.clone())), api })
    }
}

/// The authenticated operator of one GraphQL request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub subject: String,
    pub role: Role,
}

/// Builds the schema with its limits; `state` is what every resolver reads and writes.
pub fn schema(state: Arc<ApiState>) -> ApiSchema {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .data(state)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .limit_recursive_depth(64)
        .limit_directives(16)
        .finish()
}

/// The SDL of the schema (for docs and the frontend's type generation).
pub fn sdl() -> String {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot).finish().sdl()
}

fn gql_error(code: StatusCode, message: &str, kind: &str) -> Response {
    let body = serde_json::json!({"errors": [{"message": message, "extensions": {"code": kind}}]});
    (code, Json(body)).into_response()
}

/// `POST /graphql` with the JSON body `{query, variables, operationName}`.
pub async fn handle(State(gs): State<Arc<GqlState>>, req: Request) -> Response {
    let principal = match req.extensions().get::<Caller>() {
        Some(c) => match c.operator() {
            Some((subject, role)) => Principal { subject, role },
            None if matches!(c, Caller::Identity(_)) => {
                return gql_error(StatusCode::FORBIDDEN, "this identity is not an operator", "FORBIDDEN")
            }
            None => return gql_error(
                StatusCode::UNAUTHORIZED,
                "sign in first: send an OIDC access token (Authorization: Bearer) or an operator client certificate",
                "UNAUTHENTICATED",
            ),
        },
        None => return gql_error(StatusCode::UNAUTHORIZED, "sign in first", "UNAUTHENTICATED"),
    };
    // Only JSON: a browser cannot send it cross-site without a CORS preflight (which this API
    // never grants), so a page elsewhere cannot make a signed-in browser (or one holding a
    // client certificate) run mutations with a form post.
    let ctype = req.headers().get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let base = ctype.split(';').next().unwrap_or_default().trim();
    if !matches!(base, "application/json" | "application/graphql-response+json") {
        return gql_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("send the GraphQL request as application/json, not {base:?}"),
            "BAD_REQUEST",
        );
    }
    let gql_req: async_graphql::Request = {
        let bytes: Bytes = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
            Ok(b) => b,
            Err(_) => {
                return gql_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the GraphQL request is larger than {MAX_BODY} bytes"),
                    "TOO_LARGE",
                )
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                return gql_error(
                    StatusCode::BAD_REQUEST,
                    &format!("the body is not a GraphQL request (JSON with \"query\"): {e}"),
                    "BAD_REQUEST",
                )
            }
        }
    };
    let mut resp = gs.schema.execute(gql_req.data(principal)).await;
    for e in &mut resp.errors {
        explain_limit(e);
    }
    Json(resp).into_response()
}

/// Replaces async-graphql's terse limit errors with ones that say which limit and what to do.
fn explain_limit(e: &mut async_graphql::ServerError) {
    let (msg, code) = match e.message.as_str() {
        "Query is nested too deep." => (
            format!("query refused: its selections are nested deeper than the limit of {MAX_DEPTH} levels; split it into smaller queries"),
            "DEPTH_LIMIT",
        ),
        "Query is too complex." => (
            format!("query refused: its cost exceeds the limit of {MAX_COMPLEXITY} (each field costs 1, list fields multiply, fields that ask daemons cost {TUNNEL_COST}); ask for fewer fields or fewer daemons at once"),
            "COST_LIMIT",
        ),
        _ => return,
    };
    e.message = msg;
    let mut ext = async_graphql::ErrorExtensionValues::default();
    ext.set("code", code);
    e.extensions = Some(ext);
}
