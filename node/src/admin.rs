//! The admin listener (axum): `/healthz`, `/readyz`, `/metrics`, `/config_dump`.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio_util::sync::CancellationToken;

use crate::state::Status;
use crate::Ctx;

pub fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/config_dump", get(config_dump))
        .route("/connections", get(connections))
        .with_state(ctx)
}

async fn readyz(State(ctx): State<Arc<Ctx>>) -> Response {
    let (ready, body) = ctx.shared.get().readyz_body(SystemTime::now());
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, body).into_response()
}

/// Live connections of the dataplane: endpoints, mode, TLS version and group, both SPIFFE
/// IDs, bytes each way. Never keys. Recently refused connections are listed too, with the state
/// `refused: <reason>` (bounded: see `dataplane::table::RefusedLimits`), because a refusal is
/// what an operator debugging "A cannot reach B" needs to see.
async fn connections(State(ctx): State<Arc<Ctx>>) -> Response {
    axum::Json(ctx.connections.to_json()).into_response()
}

async fn config_dump(State(ctx): State<Arc<Ctx>>) -> Response {
    axum::Json(ctx.shared.get().config_dump()).into_response()
}

/// Renders the Prometheus text exposition of a status snapshot.
pub fn render_metrics(s: &Status, now: SystemTime, table: &crate::dataplane::table::ConnectionTable) -> String {
    let mut reg = Registry::with_prefix("riptides_daemon");
    {
        use std::sync::atomic::Ordering::Relaxed;
        let t = table.totals();
        let conns: Family<Vec<(String, String)>, Counter> = Family::default();
        for (dir, n) in [("outbound", &t.outbound), ("inbound", &t.inbound)] {
            conns.get_or_create(&vec![("direction".to_owned(), dir.to_owned())]).inc_by(n.load(Relaxed));
        }
        reg.register("dataplane_connections", "Connections the dataplane handled, by direction", conns);
        let failed: Family<Vec<(String, String)>, Counter> = Family::default();
        failed
            .get_or_create(&vec![("direction".to_owned(), "outbound".to_owned())])
            .inc_by(t.outbound_failed.load(Relaxed));
        failed
            .get_or_create(&vec![("direction".to_owned(), "inbound".to_owned())])
            .inc_by(t.inbound_failed.load(Relaxed));
        reg.register(
            "dataplane_connection_failures",
            "Connections refused or failed (policy, handshake, dial)",
            failed,
        );
        let active: Gauge = Gauge::default();
        active.set(table.len() as i64);
        reg.register("dataplane_connections_active", "Connections in the table now", active);
        let bytes: Family<Vec<(String, String)>, Counter> = Family::default();
        bytes.get_or_create(&vec![("direction".to_owned(), "in".to_owned())]).inc_by(t.bytes_in.load(Relaxed));
        bytes.get_or_create(&vec![("direction".to_owned(), "out".to_owned())]).inc_by(t.bytes_out.load(Relaxed));
        reg.register("dataplane_bytes", "Bytes relayed by closed connections", bytes);
    }
    let connected: Gauge = Gauge::default();
    connected.set(i64::from(s.connected));
    reg.register("connected", "Whether the daemon is connected to the control plane", connected);
    let reconnects: Counter = Counter::default();
    reconnects.inc_by(s.reconnects);
    reg.register("reconnects", "Connections to the control plane after the first", reconnects);
    let revision: Gauge = Gauge::default();
    revision.set(s.policy_revision.map_or(-1, |r| r as i64));
    reg.register("policy_revision", "Revision of the applied policy (-1: none)", revision);
    let snapshots: Counter = Counter::default();
    snapshots.inc_by(s.snapshots);
    reg.register("policy_snapshots", "Policy snapshots received", snapshots);
    let deltas: Counter = Counter::default();
    deltas.inc_by(s.deltas);
    reg.register("policy_deltas", "Policy deltas received", deltas);
    let failures: Counter = Counter::default();
    failures.inc_by(s.csr_failures);
    reg.register("csr_failures", "CSRs that failed (refused or errored)", failures);
    let expiry: Family<Vec<(String, String)>, Gauge> = Family::default();
    for i in &s.identities {
        let secs = i.not_after as i64 - crate::identity::unix(now) as i64;
        expiry
            .get_or_create(&vec![("spiffe_id".to_owned(), i.spiffe_id.clone()), ("kind".to_owned(), i.kind.to_owned())])
            .set(secs);
    }
    reg.register("svid_expiry_seconds", "Seconds until each SVID expires", expiry);
    let mut out = String::new();
    let _ = encode(&mut out, &reg);
    out
}

async fn metrics(State(ctx): State<Arc<Ctx>>) -> Response {
    let body = render_metrics(&ctx.shared.get(), SystemTime::now(), &ctx.connections);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

#[derive(Clone)]
pub struct AdminActor {
    pub ctx: Arc<Ctx>,
}

pub struct AdminState {
    cancel: CancellationToken,
}

impl Actor for AdminActor {
    type Msg = ();
    type State = AdminState;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<AdminState, ActorProcessingErr> {
        // After a restart of this actor, rebind the port it had (an ephemeral port stays stable).
        let addr = self.ctx.shared.get().admin_addr.unwrap_or(self.ctx.config.admin_addr);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot bind the admin listener on {addr}: {e}"))?;
        let local = listener.local_addr()?;
        self.ctx.shared.update(|s| s.admin_addr = Some(local));
        tracing::info!(addr = %local, "admin listener up");
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let app = router(self.ctx.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await {
                tracing::error!(error = %e, "admin listener failed");
            }
        });
        Ok(AdminState { cancel })
    }

    async fn handle(&self, _: ActorRef<()>, _: (), _: &mut AdminState) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<()>, st: &mut AdminState) -> Result<(), ActorProcessingErr> {
        st.cancel.cancel();
        Ok(())
    }
}
