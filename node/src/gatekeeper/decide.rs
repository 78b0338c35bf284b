//! The admission rules, as pure functions of a review request and the [`Facts`].
//!
//! - **Pods that ask for protection** (label [`PROTECT_LABEL`]` = "true"`): refused when the
//!   node they are bound to has no ready daemon, or when the identity they request
//!   (annotation [`WORKLOAD_ID_ANNOTATION`]) does not exist or may not be requested from their
//!   namespace. A pod is usually created before it is scheduled, so the node is checked where
//!   it is known: `spec.nodeName` on the pod if set, and the `pods/binding` subresource the
//!   scheduler creates (the webhook registers for both).
//! - **WorkloadIdentity / CredentialBinding** objects that reference something that does not
//!   exist (a daemon scope, a credential source, a workload identity, services) are refused.
//!
//! Anything else (other kinds, DELETE, unprotected pods) is allowed: the gatekeeper only ever
//! narrows what the API server would accept.

use serde_json::Value;

use super::facts::{normalise_workload_id, Facts};
use super::review::{AdmissionRequest, AdmissionResponse};
use riptides_wire::resource::core::{CredentialBindingSpec, Selector, WorkloadIdentitySpec};

/// Pod label that asks for Riptides protection.
pub const PROTECT_LABEL: &str = "riptides.io/protected";
/// Pod annotation naming the workload identity the pod asks for (`orders` or a full SPIFFE ID).
pub const WORKLOAD_ID_ANNOTATION: &str = "riptides.io/workload-id";
/// Selector key of a WorkloadIdentity naming a namespace allowed to request it.
pub const NAMESPACE_SELECTOR: &str = "k8s:namespace";

/// Decides one admission request. `bound_pod` is the pod a `pods/binding` request binds, as
/// the webhook fetched it from the cluster (a Binding does not carry the pod's labels).
pub fn decide(req: &AdmissionRequest, facts: &Facts, bound_pod: Option<&Value>) -> AdmissionResponse {
    let uid = req.uid.as_str();
    if req.operation == "DELETE" || req.operation == "CONNECT" {
        return AdmissionResponse::allow(uid);
    }
    let kind = (req.kind.group.as_str(), req.kind.kind.as_str());
    let result = match (kind, req.sub_resource.as_deref()) {
        (("", "Pod"), None | Some("")) => pod(req, facts),
        (("", "Binding"), _) | (("", "Pod"), Some("binding")) => binding(req, facts, bound_pod),
        (("core.riptides.io", "WorkloadIdentity"), _) => workload_identity(req, facts),
        (("core.riptides.io", "CredentialBinding"), _) => credential_binding(req, facts),
        _ => Ok(()),
    };
    match result {
        Ok(()) => AdmissionResponse::allow(uid),
        Err(msg) => AdmissionResponse::deny(uid, msg),
    }
}

fn object(req: &AdmissionRequest) -> Result<&Value, String> {
    req.object.as_ref().ok_or_else(|| format!("{} request without an object", req.operation))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k)).and_then(Value::as_str)
}

fn protected(pod: &Value) -> bool {
    str_at(pod, &["metadata", "labels", PROTECT_LABEL]) == Some("true")
}

fn pod(req: &AdmissionRequest, facts: &Facts) -> Result<(), String> {
    let pod = object(req)?;
    if !protected(pod) {
        return Ok(());
    }
    let namespace = req.namespace.as_deref().or_else(|| str_at(pod, &["metadata", "namespace"])).unwrap_or("default");
    if let Some(id) = str_at(pod, &["metadata", "annotations", WORKLOAD_ID_ANNOTATION]) {
        identity_allowed(id, namespace, facts)?;
    }
    match str_at(pod, &["spec", "nodeName"]).filter(|n| !n.is_empty()) {
        Some(node) => node_ready(node, facts),
        None => Ok(()), // not scheduled yet: checked again at pods/binding
    }
}

/// The scheduler binds a pod to a node by creating `pods/binding`. The Binding names the
/// target node but not the pod's labels, so the pod itself (fetched by the webhook) says
/// whether it is protected; without it, the Binding's own labels are used.
fn binding(req: &AdmissionRequest, facts: &Facts, bound_pod: Option<&Value>) -> Result<(), String> {
    let b = object(req)?;
    let node = str_at(b, &["target", "name"]).ok_or("Binding without target.name")?;
    if str_at(b, &["target", "kind"]).is_some_and(|k| k != "Node") {
        return Ok(());
    }
    if bound_pod.map_or_else(|| protected(b), protected) {
        node_ready(node, facts)?;
    }
    Ok(())
}

fn node_ready(node: &str, facts: &Facts) -> Result<(), String> {
    let mut reasons = Vec::new();
    for d in facts.daemons_on(node) {
        match d.not_ready_reason() {
            None => return Ok(()),
            Some(r) => reasons.push(r),
        }
    }
    if reasons.is_empty() {
        Err(format!("node {node} has no Riptides daemon; a protected pod would run without mTLS there"))
    } else {
        Err(format!("node {node} is not ready for protected pods: {}", reasons.join("; ")))
    }
}

fn identity_allowed(id: &str, namespace: &str, facts: &Facts) -> Result<(), String> {
    let wi = facts
        .identity(id)
        .ok_or_else(|| format!("no WorkloadIdentity with workloadID {:?}", normalise_workload_id(id)))?;
    let allowed = wi.spec.selectors.iter().any(|s| s.get(NAMESPACE_SELECTOR).is_some_and(|n| n == namespace));
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "namespace {namespace:?} may not request workload identity {:?} (WorkloadIdentity {} selects no {NAMESPACE_SELECTOR}={namespace})",
            normalise_workload_id(id),
            wi.name
        ))
    }
}

fn spec<T: serde::de::DeserializeOwned>(req: &AdmissionRequest) -> Result<T, String> {
    let v = object(req)?.get("spec").cloned().ok_or("object without spec")?;
    serde_path_to_error::deserialize(v).map_err(|e| format!("spec.{}: {}", e.path(), e.inner()))
}

fn workload_identity(req: &AdmissionRequest, facts: &Facts) -> Result<(), String> {
    let s: WorkloadIdentitySpec = spec(req)?;
    if let Some(d) = &s.scope.daemon {
        if !facts.daemons.iter().any(|x| x.spec.id == d.id || x.name == d.id) {
            return Err(format!("spec.scope.daemon.id: no Daemon {:?}", d.id));
        }
    }
    if let Some(g) = &s.scope.daemon_group {
        if !facts.daemons.iter().any(|x| x.spec.group.as_deref() == Some(g.id.as_str())) {
            return Err(format!("spec.scope.daemonGroup.id: no Daemon in group {:?}", g.id));
        }
    }
    for (i, rule) in s.egress.iter().enumerate() {
        for (j, sel) in rule.selectors.iter().enumerate() {
            if !facts.services.iter().any(|svc| selects(sel, &svc.spec.labels)) {
                return Err(format!("spec.egress[{i}].selectors[{j}]: selects no Service"));
            }
        }
    }
    Ok(())
}

fn credential_binding(req: &AdmissionRequest, facts: &Facts) -> Result<(), String> {
    let s: CredentialBindingSpec = spec(req)?;
    if facts.identity(&s.workload_id).is_none() {
        return Err(format!("spec.workloadID: no WorkloadIdentity with workloadID {:?}", s.workload_id));
    }
    let ns = req.namespace.as_deref().unwrap_or("default");
    if !facts.credential_sources.iter().any(|c| c.name == s.credential_source && c.namespace == ns) {
        return Err(format!(
            "spec.credentialSource: no CredentialSource {:?} in namespace {ns:?}",
            s.credential_source
        ));
    }
    for (j, sel) in s.service_selectors.iter().enumerate() {
        if !facts.services.iter().any(|svc| selects(sel, &svc.spec.labels)) {
            return Err(format!("spec.serviceSelectors[{j}]: selects no Service"));
        }
    }
    Ok(())
}

fn selects(selector: &Selector, labels: &std::collections::BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}
