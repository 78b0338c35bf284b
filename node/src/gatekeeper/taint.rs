//! The node readiness taint: `riptides.io/not-ready:NoSchedule` on every node whose daemon
//! is not ready (see [`DaemonFacts::not_ready_reason`](super::facts::DaemonFacts)), removed
//! once it is. Pods that tolerate the taint (the daemon's own DaemonSet) still schedule, so
//! the daemon can come up on a tainted node and lift the taint by becoming ready.
//!
//! Level-triggered: every `interval` the controller lists the cluster's Nodes and the
//! control plane's Daemons and patches only the nodes whose taint is wrong, with the node's
//! `resourceVersion` as a precondition so a concurrent change to the node's taints by
//! someone else is never overwritten (a 409 is retried on the next pass). Other taints are
//! kept as they are. If the control plane cannot be read, nothing is changed: a control
//! plane outage must not taint (and so drain new pods from) the whole cluster.

use std::sync::Arc;
use std::time::Duration;

use riptides_wire::client::{ApiClient, Bytes, Method};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::facts::{FactSource, Facts};

/// Taint key the controller owns.
pub const TAINT_KEY: &str = "riptides.io/not-ready";
/// Its effect.
pub const TAINT_EFFECT: &str = "NoSchedule";

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub tainted: Vec<String>,
    pub untainted: Vec<String>,
    pub unchanged: usize,
    pub conflicts: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TaintError {
    #[error("control plane: {0}")]
    ControlPlane(String),
    #[error("cluster API {path}: {reason}")]
    Cluster { path: String, reason: String },
}

fn cluster_err(path: &str, reason: impl ToString) -> TaintError {
    TaintError::Cluster { path: path.to_owned(), reason: reason.to_string() }
}

/// Runs passes every `interval` until `shutdown`.
pub async fn run(kube: ApiClient, facts: Arc<dyn FactSource>, interval: Duration, shutdown: CancellationToken) {
    loop {
        match reconcile(&kube, facts.as_ref()).await {
            Ok(r) if !r.tainted.is_empty() || !r.untainted.is_empty() || !r.conflicts.is_empty() => {
                tracing::info!(tainted = ?r.tainted, untainted = ?r.untainted, conflicts = ?r.conflicts, "node taints reconciled")
            }
            Ok(_) => tracing::debug!("node taints up to date"),
            Err(e) => tracing::warn!(error = %e, "node taint pass failed; nothing changed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// One pass: reads Nodes and Daemons, fixes the taints that are wrong.
pub async fn reconcile(kube: &ApiClient, facts: &dyn FactSource) -> Result<PassReport, TaintError> {
    let facts = facts.facts().await.map_err(TaintError::ControlPlane)?;
    let path = "/api/v1/nodes";
    let (code, body) = kube.raw_request(Method::GET, path, None).await.map_err(|e| cluster_err(path, e))?;
    if code != 200 {
        return Err(cluster_err(path, format!("HTTP {code}")));
    }
    let list: Value = serde_json::from_slice(&body).map_err(|e| cluster_err(path, e))?;
    let items = list.get("items").and_then(Value::as_array).ok_or_else(|| cluster_err(path, "no items"))?;
    let mut report = PassReport::default();
    for node in items {
        let Some(name) = node.pointer("/metadata/name").and_then(Value::as_str) else { continue };
        let want = !ready(name, &facts);
        let taints: Vec<Value> = node.pointer("/spec/taints").and_then(Value::as_array).cloned().unwrap_or_default();
        let has = taints.iter().any(is_ours);
        if want == has {
            report.unchanged += 1;
            continue;
        }
        let mut new: Vec<Value> = taints.into_iter().filter(|t| !is_ours(t)).collect();
        if want {
            new.push(json!({ "key": TAINT_KEY, "value": "true", "effect": TAINT_EFFECT }));
        }
        let rv = node.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null);
        let patch = json!({ "metadata": { "resourceVersion": rv }, "spec": { "taints": new } });
        let npath = format!("/api/v1/nodes/{name}");
        let bytes = Bytes::from(serde_json::to_vec(&patch).expect("JSON value serialises"));
        let (code, _) = kube
            .raw_request(Method::PATCH, &npath, Some(("application/merge-patch+json", bytes)))
            .await
            .map_err(|e| cluster_err(&npath, e))?;
        match code {
            200 if want => report.tainted.push(name.to_owned()),
            200 => report.untainted.push(name.to_owned()),
            409 => report.conflicts.push(name.to_owned()),
            other => return Err(cluster_err(&npath, format!("HTTP {other}"))),
        }
    }
    Ok(report)
}

fn is_ours(t: &Value) -> bool {
    t.get("key").and_then(Value::as_str) == Some(TAINT_KEY)
}

fn ready(node: &str, facts: &Facts) -> bool {
    facts.daemons_on(node).any(|d| d.not_ready_reason().is_none())
}
