//! What the gatekeeper knows about the fleet: daemons and their health, workload identities,
//! services and credential sources, read from the control plane's resource API.
//!
//! Admission decisions must be quick (the API server waits on them, 10 s at most) and the
//! control plane must not be hammered by a deployment of a thousand pods, so a snapshot is
//! cached for a short time. When the control plane cannot be read the snapshot is an error,
//! and every decision that needs it fails closed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use riptides_wire::client::ApiClient;
use riptides_wire::resource::by_name;
use riptides_wire::resource::core::{DaemonSpec, DaemonStatus, ServiceSpec, WorkloadIdentitySpec};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Mutex;

/// One object of a kind, with the fields decisions use.
#[derive(Debug, Clone)]
pub struct Named<T> {
    pub name: String,
    pub namespace: String,
    pub spec: T,
}

/// A daemon as the control plane last saw it.
#[derive(Debug, Clone)]
pub struct DaemonFacts {
    pub name: String,
    pub spec: DaemonSpec,
    pub status: DaemonStatus,
}

impl DaemonFacts {
    /// Whether this daemon runs on Kubernetes node `node`: its reported `kubernetes.node`
    /// host label, else its hostname (a DaemonSet on the host network reports the node's).
    pub fn runs_on(&self, node: &str) -> bool {
        match self.status.host.get("kubernetes.node") {
            Some(n) => n == node,
            None => self.status.host.get("hostname").is_some_and(|h| h == node),
        }
    }

    /// Ready to protect workloads: connected, healthy, a driver that is not unhealthy, and a
    /// policy applied. `None` names what is missing, for the refusal message.
    pub fn not_ready_reason(&self) -> Option<String> {
        let s = &self.status;
        if s.connected != Some(true) {
            return Some(format!("daemon {} is not connected to the control plane", self.name));
        }
        if s.daemon_healthy != Some(true) {
            return Some(format!("daemon {} reports itself unhealthy", self.name));
        }
        if s.driver_healthy == Some(false) {
            return Some(format!(
                "the {} dataplane of daemon {} is unhealthy",
                s.dataplane.as_deref().unwrap_or("?"),
                self.name
            ));
        }
        if s.dataplane.as_deref().is_none_or(|d| d == "none") {
            return Some(format!("daemon {} runs no dataplane", self.name));
        }
        if s.policy_revision.is_none() {
            return Some(format!("daemon {} has not applied a policy yet", self.name));
        }
        None
    }
}

/// A consistent-enough view of the control plane's objects.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub daemons: Vec<DaemonFacts>,
    pub identities: Vec<Named<WorkloadIdentitySpec>>,
    pub services: Vec<Named<ServiceSpec>>,
    pub credential_sources: Vec<Named<Value>>,
}

impl Facts {
    /// Daemons on `node` (normally one).
    pub fn daemons_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a DaemonFacts> + 'a {
        self.daemons.iter().filter(move |d| d.runs_on(node))
    }

    /// The identity with SPIFFE path `workload_id` (leading `/` and a `spiffe://<td>` prefix
    /// are ignored, so both forms work in annotations).
    pub fn identity(&self, workload_id: &str) -> Option<&Named<WorkloadIdentitySpec>> {
        let want = normalise_workload_id(workload_id);
        self.identities.iter().find(|i| normalise_workload_id(&i.spec.workload_id) == want)
    }
}

/// `spiffe://td/a/b`, `/a/b` and `a/b` all become `a/b`.
pub fn normalise_workload_id(id: &str) -> &str {
    let path = match id.strip_prefix("spiffe://") {
        Some(rest) => rest.split_once('/').map(|(_, p)| p).unwrap_or(""),
        None => id,
    };
    path.trim_start_matches('/')
}

/// Where facts come from (the control plane in production, a fixed set in unit tests).
#[async_trait::async_trait]
pub trait FactSource: Send + Sync + 'static {
    async fn facts(&self) -> Result<Arc<Facts>, String>;
}

/// Facts read from the control plane, cached for `ttl`.
pub struct ControlPlaneFacts {
    client: ApiClient,
    ttl: Duration,
    cache: Mutex<Option<(Instant, Arc<Facts>)>>,
}

impl ControlPlaneFacts {
    pub fn new(client: ApiClient, ttl: Duration) -> ControlPlaneFacts {
        ControlPlaneFacts { client, ttl, cache: Mutex::new(None) }
    }

    async fn list(&self, kind: &str) -> Result<Vec<Value>, String> {
        let rt = by_name(kind).ok_or_else(|| format!("unknown kind {kind}"))?;
        let list = self.client.list(rt, None).await.map_err(|e| format!("cannot list {}: {e}", rt.plural))?;
        Ok(list.items)
    }

    async fn load(&self) -> Result<Facts, String> {
        let mut facts = Facts::default();
        for v in self.list("daemon").await? {
            let Some((name, _, spec)) = typed::<DaemonSpec>(&v) else { continue };
            let status = v.get("status").cloned().map(serde_json::from_value).and_then(Result::ok).unwrap_or_default();
            facts.daemons.push(DaemonFacts { name, spec, status });
        }
        for v in self.list("workloadidentity").await? {
            if let Some((name, namespace, spec)) = typed(&v) {
                facts.identities.push(Named { name, namespace, spec });
            }
        }
        for v in self.list("service").await? {
            if let Some((name, namespace, spec)) = typed(&v) {
                facts.services.push(Named { name, namespace, spec });
            }
        }
        for v in self.list("credentialsource").await? {
            if let Some((name, namespace, spec)) = typed::<Value>(&v) {
                facts.credential_sources.push(Named { name, namespace, spec });
            }
        }
        Ok(facts)
    }
}

#[async_trait::async_trait]
impl FactSource for ControlPlaneFacts {
    async fn facts(&self) -> Result<Arc<Facts>, String> {
        let mut cache = self.cache.lock().await;
        if let Some((at, f)) = cache.as_ref() {
            if at.elapsed() < self.ttl {
                return Ok(f.clone());
            }
        }
        let f = Arc::new(self.load().await?);
        *cache = Some((Instant::now(), f.clone()));
        Ok(f)
    }
}

/// Name, namespace and typed spec of a stored object; objects the control plane should never
/// have stored (it validates on write) are skipped with a warning rather than failing all.
fn typed<T: DeserializeOwned>(v: &Value) -> Option<(String, String, T)> {
    let meta = v.get("metadata")?;
    let name = meta.get("name")?.as_str()?.to_owned();
    let namespace = meta.get("namespace").and_then(Value::as_str).unwrap_or_default().to_owned();
    match serde_json::from_value(v.get("spec").cloned().unwrap_or(Value::Object(Default::default()))) {
        Ok(spec) => Some((name, namespace, spec)),
        Err(e) => {
            tracing::warn!(%name, error = %e, "skipping an object whose spec does not parse");
            None
        }
    }
}
