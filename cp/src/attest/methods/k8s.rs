//! Kubernetes service-account tokens (method `K8sSAT`), checked offline.
//!
//! The daemon (a DaemonSet pod) sends its projected service-account token. It is verified
//! against the cluster issuer's JWKS (`kubectl get --raw /openid/v1/jwks`), issuer and
//! audiences; its `kubernetes.io` claim must bind it to a node (projected tokens carry
//! `node.name` since Kubernetes 1.30), and the service account may be restricted. The daemon
//! id is `k8s-<cluster>-<node>`: one daemon per node. TokenReview (asking the API server
//! whether the token, pod and node still exist) is not done: a token stays valid until its
//! `exp` even if its pod was deleted; keep projected token lifetimes short.

use std::collections::BTreeMap;
use std::time::SystemTime;

use riptides_wire::resource::auth::{K8sSatSettings, VerifierMethod};
use serde_json::Value;

use super::{invalid, jwt_refusal, make_id, Checked};
use crate::attest::jose::{self, shown, Expectations, Jwks};
use crate::attest::AttestError;

const M: VerifierMethod = VerifierMethod::K8sSat;

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str().filter(|s| !s.is_empty() && s.len() <= 253)
}

pub(super) fn check(set: &K8sSatSettings, token: &str, now: SystemTime) -> Result<Checked, AttestError> {
    let jwks = Jwks::parse(&set.jwks).map_err(|e| AttestError::Misconfigured(format!("k8sSAT.jwks: {e}")))?;
    let t = jose::verify(token, &jwks, &Expectations { issuer: &set.issuer, audiences: &set.audiences, now })
        .map_err(|e| jwt_refusal(M, e))?;
    let k = t
        .claims
        .get("kubernetes.io")
        .ok_or_else(|| invalid(M, "kubernetes.io", "not a projected service-account token (no kubernetes.io claim)"))?;
    let ns = s(k, &["namespace"]).ok_or_else(|| invalid(M, "kubernetes.io", "no namespace"))?;
    let sa = s(k, &["serviceaccount", "name"]).ok_or_else(|| invalid(M, "kubernetes.io", "no serviceaccount"))?;
    let node = s(k, &["node", "name"])
        .ok_or_else(|| invalid(M, "node", "the token is not bound to a node (needs a projected token from a pod)"))?;
    if t.str("sub") != Some(format!("system:serviceaccount:{ns}:{sa}").as_str()) {
        return Err(invalid(M, "sub", "sub does not match the kubernetes.io service account"));
    }
    if !set.service_accounts.is_empty() && !set.service_accounts.iter().any(|a| *a == format!("{ns}:{sa}")) {
        return Err(invalid(M, "serviceAccount", format!("{}:{} is not allowed", shown(ns), shown(sa))));
    }
    let mut claims = BTreeMap::from([
        ("cluster".to_owned(), set.cluster.clone()),
        ("namespace".to_owned(), ns.to_owned()),
        ("service_account".to_owned(), sa.to_owned()),
        ("node_name".to_owned(), node.to_owned()),
    ]);
    for (claim, path) in [
        ("service_account_uid", &["serviceaccount", "uid"][..]),
        ("pod_name", &["pod", "name"][..]),
        ("pod_uid", &["pod", "uid"][..]),
        ("node_uid", &["node", "uid"][..]),
    ] {
        if let Some(v) = s(k, path) {
            claims.insert(claim.to_owned(), v.to_owned());
        }
    }
    Ok(Checked { id: make_id("k8s", &[&set.cluster, node]), claims })
}
