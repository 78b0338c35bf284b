//! Reading and writing `Daemon` resources the way the API server stores objects: JSON without
//! `metadata.resourceVersion` (the store's revision is the resource version), with `uid`,
//! `creationTimestamp` and `generation` set on create.

use std::collections::BTreeMap;
use std::time::SystemTime;

use riptides_wire::resource::core::DaemonSpec;
use riptides_wire::resource::{self, Daemon, ResourceType, ValidationContext};
use riptides_wire::spiffe::SpiffeId;
use serde_json::{json, Map, Value};

use super::{AttestError, VerifiedNode};
use crate::store::{ObjectKey, Store, StoreExt};

/// Path prefix of daemon SPIFFE IDs made by the default template.
pub(crate) const DAEMON_PATH_PREFIX: &str = "/riptides/daemon/";

fn daemons() -> Result<&'static ResourceType, AttestError> {
    resource::by_name("daemons").ok_or_else(|| AttestError::Internal("Daemon kind is not registered".into()))
}

/// A random RFC 4122 version 4 UUID for `metadata.uid` (as the API server makes them).
fn new_uid() -> Result<String, AttestError> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| AttestError::Internal("the system random generator failed".into()))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
}

/// Creates the `Daemon` named after the daemon id, or updates it on re-attestation: the spec
/// is replaced, `status.host` and `status.lastSeen` are set, everything else (labels, other
/// status fields, uid) is kept.
pub(crate) async fn record(
    store: &dyn Store,
    namespace: &str,
    node: &VerifiedNode,
    host: BTreeMap<String, String>,
    now: SystemTime,
) -> Result<(), AttestError> {
    let rt = daemons()?;
    let key = ObjectKey::new(rt.store_key(), namespace, &node.daemon_id);
    let ctx = ValidationContext { trust_domain: node.spiffe_id.trust_domain() };
    let mut spec = json!({
        "id": node.daemon_id,
        "spiffeID": node.spiffe_id.as_str(),
        "verifier": node.verifier,
    });
    if let Some(g) = &node.group {
        spec["group"] = json!(g);
    }
    let now_s = crate::api::rfc3339(now);
    // Made once, outside the CAS closure (which must be free of side effects).
    let uid = new_uid()?;
    let mut failure: Option<AttestError> = None;
    store
        .update_with(&key, |current| {
            failure = None;
            let built = match current {
                None => Ok(json!({
                    "apiVersion": rt.api_version(),
                    "kind": rt.kind,
                    "metadata": {
                        "name": node.daemon_id,
                        "namespace": namespace,
                        "uid": uid,
                        "creationTimestamp": now_s,
                        "generation": 1,
                    },
                    "spec": spec,
                    "status": { "host": host, "lastSeen": now_s },
                })),
                Some(obj) => updated(&obj.value, &spec, &host, &now_s),
            };
            let checked = built.and_then(|v| {
                rt.validate(&v, &ctx).map_err(|errs| {
                    let msg: Vec<String> = errs.iter().map(ToString::to_string).collect();
                    AttestError::Internal(format!("Daemon object is invalid: {}", msg.join("; ")))
                })
            });
            match checked.and_then(to_stored) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) => {
                    failure = Some(e);
                    Ok(None)
                }
            }
        })
        .await?;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// How a method may attest a daemon id that already has a `Daemon` (see
/// [`super::methods::Reattestation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimRule {
    /// Trust on first use: only a retry with the same key.
    FirstUseOnly,
    /// Any new proof; the same bearer token only with the same key.
    NewProof,
}

/// What an attestation claims a daemon id with.
pub(crate) struct ClaimAttempt<'a> {
    /// The Verifier method (`AWSIID`, ...).
    pub method: &'static str,
    /// `sha256:<hex>` of the CSR key.
    pub key: Option<&'a str>,
    /// `sha256:<hex>` of a bearer proof.
    pub proof: Option<&'a str>,
    pub rule: ClaimRule,
    pub now: SystemTime,
}

/// Atomically claims the daemon id for an attestation by `node` and records
/// `status.attestation`: creates the `Daemon` if it does not exist, otherwise applies `rule`.
/// A `Daemon` admitted by another Verifier is never taken over. Of concurrent claims for a
/// first-use id exactly one succeeds.
pub(crate) async fn claim(
    store: &dyn Store,
    namespace: &str,
    node: &VerifiedNode,
    attempt: ClaimAttempt<'_>,
) -> Result<(), AttestError> {
    let ClaimAttempt { method, key, proof, rule, now } = attempt;
    let rt = daemons()?;
    let key_obj = ObjectKey::new(rt.store_key(), namespace, &node.daemon_id);
    let now_s = crate::api::rfc3339(now);
    let mut attestation = json!({ "method": method, "at": now_s });
    if let Some(k) = key {
        attestation["key"] = json!(k);
    }
    if let Some(p) = proof {
        attestation["proof"] = json!(p);
    }
    let mut spec = json!({ "id": node.daemon_id, "spiffeID": node.spiffe_id.as_str(), "verifier": node.verifier });
    if let Some(g) = &node.group {
        spec["group"] = json!(g);
    }
    let uid = new_uid()?;
    let id = node.daemon_id.clone();
    let mut failure: Option<AttestError> = None;
    store
        .update_with(&key_obj, |current| {
            failure = None;
            let Some(obj) = current else {
                let v = json!({
                    "apiVersion": rt.api_version(),
                    "kind": rt.kind,
                    "metadata": { "name": id, "namespace": namespace, "uid": uid, "creationTimestamp": now_s, "generation": 1 },
                    "spec": spec,
                    "status": { "attestation": attestation },
                });
                return match to_stored(v) {
                    Ok(b) => Ok(Some(b)),
                    Err(e) => {
                        failure = Some(e);
                        Ok(None)
                    }
                };
            };
            let mut v: Value = match serde_json::from_slice(&obj.value) {
                Ok(v) => v,
                Err(e) => {
                    failure = Some(AttestError::Internal(format!("stored Daemon {id} is unreadable: {e}")));
                    return Ok(None);
                }
            };
            if v["spec"]["verifier"].as_str() != Some(node.verifier.as_str()) {
                failure = Some(AttestError::AlreadyAttested(format!(
                    "daemon id {id} belongs to a daemon admitted by another verifier"
                )));
                return Ok(None);
            }
            let prev = &v["status"]["attestation"];
            let same_key = key.is_some() && prev["key"].as_str() == key;
            match rule {
                ClaimRule::FirstUseOnly if same_key => return Ok(None),
                ClaimRule::FirstUseOnly => {
                    failure = Some(AttestError::AlreadyAttested(format!(
                        "daemon {id} was already attested with this proof (trust on first use); \
                         delete the Daemon resource to allow a new attestation"
                    )));
                    return Ok(None);
                }
                ClaimRule::NewProof if proof.is_some() && prev["proof"].as_str() == proof && !same_key => {
                    failure = Some(AttestError::InvalidProof {
                        method,
                        check: "replay".into(),
                        detail: format!("this token already attested daemon {id} with another key"),
                    });
                    return Ok(None);
                }
                ClaimRule::NewProof => {}
            }
            if !v["status"].is_object() {
                v["status"] = json!({});
            }
            v["status"]["attestation"] = attestation.clone();
            match to_stored(v) {
                Ok(b) => Ok(Some(b)),
                Err(e) => {
                    failure = Some(e);
                    Ok(None)
                }
            }
        })
        .await?;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The `status.attestation` of daemon `id`, if it exists (read-only pre-check).
pub(crate) async fn attestation_of(
    store: &dyn Store,
    namespace: &str,
    id: &str,
) -> Result<Option<(Option<String>, Value)>, AttestError> {
    let rt = daemons()?;
    let Some(obj) = store.get(&ObjectKey::new(rt.store_key(), namespace, id)).await? else { return Ok(None) };
    let v: Value = serde_json::from_slice(&obj.value)
        .map_err(|e| AttestError::Internal(format!("stored Daemon {id} is unreadable: {e}")))?;
    Ok(Some((v["spec"]["verifier"].as_str().map(str::to_owned), v["status"]["attestation"].clone())))
}

/// The stored Daemon with a new spec and attestation status.
fn updated(stored: &[u8], spec: &Value, host: &BTreeMap<String, String>, now_s: &str) -> Result<Value, AttestError> {
    let mut v: Value = serde_json::from_slice(stored)
        .map_err(|e| AttestError::Internal(format!("stored Daemon is unreadable: {e}")))?;
    let Some(obj) = v.as_object_mut() else {
        return Err(AttestError::Internal("stored Daemon is not an object".into()));
    };
    let spec_changed = obj.get("spec") != Some(spec);
    obj.insert("spec".into(), spec.clone());
    if spec_changed {
        let meta = obj.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
        let generation = meta.get("generation").and_then(Value::as_i64).unwrap_or(1);
        meta["generation"] = json!(generation + 1);
    }
    let status = obj.entry("status").or_insert_with(|| Value::Object(Map::new()));
    if !status.is_object() {
        *status = Value::Object(Map::new());
    }
    status["host"] = json!(host);
    status["lastSeen"] = json!(now_s);
    Ok(v)
}

fn to_stored(mut v: Value) -> Result<Vec<u8>, AttestError> {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&v).map_err(|e| AttestError::Internal(format!("encoding Daemon: {e}")))
}

/// Finds the `Daemon` whose SPIFFE ID is `id`. Daemons named by the default template are
/// found by name; others by scanning the namespace. The stored `spec.spiffeID` must match,
/// so a Daemon object alone (say, one created by hand) never vouches for a different ID.
pub(crate) async fn find_by_spiffe_id(
    store: &dyn Store,
    namespace: &str,
    id: &SpiffeId,
) -> Result<Option<DaemonSpec>, AttestError> {
    let rt = daemons()?;
    let matches = |d: &DaemonSpec| d.spiffe_id.as_ref() == Some(id);
    if let Some(name) = id.path().strip_prefix(DAEMON_PATH_PREFIX) {
        if !name.is_empty() && !name.contains('/') {
            let key = ObjectKey::new(rt.store_key(), namespace, name);
            if let Some(obj) = store.get(&key).await? {
                if let Some(d) = decode(&obj.value, name) {
                    if matches(&d) {
                        return Ok(Some(d));
                    }
                }
            }
        }
    }
    let (objects, _) = store.list(&rt.store_key(), Some(namespace)).await?;
    Ok(objects.iter().filter_map(|o| decode(&o.value, &o.key.name)).find(|d| matches(d)))
}

fn decode(value: &[u8], name: &str) -> Option<DaemonSpec> {
    match serde_json::from_slice::<Daemon>(value) {
        Ok(d) => Some(d.spec),
        Err(e) => {
            tracing::warn!(daemon = name, error = %e, "skipping unreadable Daemon object");
            None
        }
    }
}
