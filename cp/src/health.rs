//! The plain-HTTP health listener: `/healthz` (process alive), `/readyz` (store answers and
//! every supervised child is running) and `/metrics` (Prometheus text).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use riptides_actors::{ChildStatus, SupervisorRef};

use crate::metrics::Metrics;
use crate::store::Store;

pub struct HealthState {
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    /// Name of the root supervisor whose children must all be running for readiness.
    pub supervisor: String,
}

pub fn router(state: Arc<HealthState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(st): State<Arc<HealthState>>) -> Response {
    let mut problems = Vec::new();
    if let Err(e) = st.store.current_revision().await {
        problems.push(format!("store: {e}"));
    }
    match SupervisorRef::where_is(&st.supervisor) {
        None => problems.push("supervisor not running".to_owned()),
        Some(sup) => match sup.list_children().await {
            Ok(children) => {
                for c in children {
                    if c.status != ChildStatus::Running {
                        problems.push(format!("{}: {:?}", c.name, c.status));
                    }
                }
            }
            Err(e) => problems.push(format!("supervisor: {e}")),
        },
    }
    if problems.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", problems.join("; "))).into_response()
    }
}

async fn metrics(State(st): State<Arc<HealthState>>) -> Response {
    if let Ok(rev) = st.store.current_revision().await {
        st.metrics.store_revision.set(rev as i64);
    }
    ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], st.metrics.render()).into_response()
}
