//! The `Daemon` resource's status, written by the control plane: connected or not, last seen,
//! versions and health the daemon reports.

use std::time::SystemTime;

use riptides_wire::proto::messages::DaemonStatusReport;
use riptides_wire::resource::{self, Daemon};
use serde_json::Value;

use super::EndpointContext;
use crate::api::object::{rfc3339, to_stored};
use crate::attest::AttestError;
use crate::store::{ObjectKey, StoreExt};

fn key(ctx: &EndpointContext, id: &str) -> ObjectKey {
    let rt = resource::by_name("daemons").expect("Daemon is a known kind");
    ObjectKey::new(rt.store_key(), ctx.namespace.as_str(), id)
}

/// The daemon's registration, or `None` if an operator deleted it (which revokes it).
pub(super) async fn daemon_record(ctx: &EndpointContext, id: &str) -> Result<Option<Daemon>, AttestError> {
    let Some(obj) = ctx.store.get(&key(ctx, id)).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&obj.value)
        .map(Some)
        .map_err(|e| AttestError::Internal(format!("stored Daemon {id} is corrupt: {e}")))
}

/// Applies `f` to the daemon's status (a JSON object) with compare-and-swap; a deleted daemon
/// is left deleted.
pub(super) async fn update_status(
    ctx: &EndpointContext,
    id: &str,
    f: impl Fn(&mut serde_json::Map<String, Value>) + Send + Sync,
) -> Result<(), AttestError> {
    ctx.store
        .update_with(&key(ctx, id), |cur| {
            let Some(cur) = cur else { return Ok(None) };
            let mut v: Value = serde_json::from_slice(&cur.value)
                .map_err(|e| crate::store::StoreError::Backend(format!("corrupt Daemon: {e}")))?;
            let before = v.get("status").cloned();
            if !v.get("status").is_some_and(Value::is_object) {
                v["status"] = Value::Object(Default::default());
            }
            f(v["status"].as_object_mut().expect("just ensured"));
            if v.get("status") == before.as_ref() {
                return Ok(None);
            }
            Ok(Some(to_stored(v)))
        })
        .await?;
    Ok(())
}

pub(super) async fn connected(ctx: &EndpointContext, id: &str, transport: &str, up: bool) {
    let now = rfc3339(SystemTime::now());
    let transport = transport.to_owned();
    let r = update_status(ctx, id, move |s| {
        s.insert("connected".into(), Value::Bool(up));
        s.insert("lastSeen".into(), Value::String(now.clone()));
        if up {
            s.insert("transport".into(), Value::String(transport.clone()));
        }
    })
    .await;
    if let Err(e) = r {
        tracing::warn!(daemon = %id, error = %e, "could not record connection state");
    }
}

pub(super) async fn report(ctx: &EndpointContext, id: &str, r: &DaemonStatusReport) -> Result<(), AttestError> {
    let now = rfc3339(SystemTime::now());
    let r = r.clone();
    update_status(ctx, id, move |s| {
        s.insert("connected".into(), Value::Bool(true));
        s.insert("lastSeen".into(), Value::String(now.clone()));
        s.insert("version".into(), Value::String(r.version.clone()));
        s.insert("dataplane".into(), Value::String(r.dataplane.clone()));
        s.insert("daemonHealthy".into(), Value::Bool(r.daemon_healthy));
        match r.driver_healthy {
            Some(h) => s.insert("driverHealthy".into(), Value::Bool(h)),
            None => s.remove("driverHealthy"),
        };
        match r.policy_revision {
            Some(p) => s.insert("policyRevision".into(), Value::from(p)),
            None => s.remove("policyRevision"),
        };
    })
    .await
}
