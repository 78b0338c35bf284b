//! The [`NodeVerifier`] trait (one implementation per `Verifier` method) and what all methods
//! share: loading a `Verifier` resource and rendering its `workloadIDTemplate`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use async_trait::async_trait;
use riptides_wire::resource::auth::{VerifierMethod, VerifierSpec};
use riptides_wire::resource::{self, Verifier};
use riptides_wire::spiffe::{SpiffeId, TrustDomain};

use super::{AttestError, AttestationProof};
use crate::store::{ObjectKey, Store};

/// Verifier used when a proof names none.
pub const DEFAULT_VERIFIER_NAME: &str = "default";
/// SPIFFE path of daemons admitted by the built-in default verifier.
pub const DEFAULT_DAEMON_TEMPLATE: &str = "riptides/daemon/{{id}}";

/// What the control plane knows about the caller while verifying.
#[derive(Debug, Clone)]
pub struct VerifyContext {
    /// Trust domain the daemon's SPIFFE ID is built in.
    pub trust_domain: TrustDomain,
    pub now: SystemTime,
    /// Where the attempt came from (remote address), for logs.
    pub source: String,
    /// `sha256:<hex>` of the CSR's public key, so a retry by the same daemon is recognised.
    pub csr_key: Option<String>,
}

/// A daemon whose proof checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedNode {
    /// Facts established by the proof (`id`, `token`, later cloud instance ids...); the
    /// template placeholders are filled from these.
    pub claims: BTreeMap<String, String>,
    /// Also the `Daemon` resource's name.
    pub daemon_id: String,
    /// Daemon group from the Verifier (WorkloadIdentity `scope.daemonGroup.id`).
    pub group: Option<String>,
    /// Name of the `Verifier` resource that admitted it (`default` for the built-in one).
    pub verifier: String,
    /// The rendered daemon SPIFFE ID.
    pub spiffe_id: SpiffeId,
}

/// One attestation method.
///
/// Verification is split in two so the [`Attestor`](super::Attestor) can validate the CSR in
/// between: [`verify`](Self::verify) has no side effects, [`consume`](Self::consume) claims
/// single-use proofs atomically. A method whose proofs may be reused (none yet) keeps the
/// default no-op `consume`.
#[async_trait]
pub trait NodeVerifier: Send + Sync {
    /// The proof kind this verifier handles.
    fn method(&self) -> VerifierMethod;

    /// Checks the proof and decides who the daemon is. Must not change any state.
    async fn verify(&self, proof: &AttestationProof, ctx: &VerifyContext) -> Result<VerifiedNode, AttestError>;

    /// Marks a single-use proof as used by `node`. Must be atomic: of several concurrent
    /// calls for the same proof at most one returns `Ok`. Re-checks everything `verify`
    /// checked that may have changed since.
    async fn consume(
        &self,
        _proof: &AttestationProof,
        _node: &VerifiedNode,
        _ctx: &VerifyContext,
    ) -> Result<(), AttestError> {
        Ok(())
    }
}

/// The built-in verifier used when no `default` Verifier resource exists, so a fresh control
/// plane admits join-token daemons as `riptides/daemon/<id>` without any setup.
pub(crate) fn builtin_default() -> VerifierSpec {
    VerifierSpec {
        method: VerifierMethod::JoinToken,
        workload_id_template: Some(DEFAULT_DAEMON_TEMPLATE.to_owned()),
        ..VerifierSpec::default()
    }
}

/// Loads the Verifier `name` in `namespace`. A missing `default` falls back to
/// [`builtin_default`]; any other missing name is a misconfiguration (fail closed).
pub(crate) async fn load_verifier(store: &dyn Store, namespace: &str, name: &str) -> Result<VerifierSpec, AttestError> {
    let rt = resource::by_name("verifiers")
        .ok_or_else(|| AttestError::Internal("Verifier kind is not registered".into()))?;
    let key = ObjectKey::new(rt.store_key(), namespace, name);
    let Some(obj) = store.get(&key).await? else {
        if name == DEFAULT_VERIFIER_NAME {
            return Ok(builtin_default());
        }
        return Err(AttestError::Misconfigured(format!("verifier {name:?} does not exist in namespace {namespace}")));
    };
    let v: Verifier = serde_json::from_slice(&obj.value)
        .map_err(|e| AttestError::Internal(format!("stored verifier {namespace}/{name} is unreadable: {e}")))?;
    Ok(v.spec)
}

/// Fills `{{claim}}` placeholders (whitespace inside the braces is ignored). An unknown claim
/// or an unbalanced brace is an error rather than an empty string, so a typo in a template
/// can never collapse many daemons onto one SPIFFE ID.
pub fn render_template(template: &str, claims: &BTreeMap<String, String>) -> Result<String, AttestError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| AttestError::Misconfigured(format!("template {template:?} has an unclosed {{{{")))?;
        let name = after[..end].trim();
        let value = claims.get(name).ok_or_else(|| {
            AttestError::Misconfigured(format!(
                "template {template:?} uses claim {name:?}, which this method does not provide"
            ))
        })?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    if rest.contains("}}") {
        return Err(AttestError::Misconfigured(format!("template {template:?} has an unmatched }}}}")));
    }
    out.push_str(rest);
    Ok(out)
}

/// Renders the daemon's SPIFFE ID from the verifier's template and checks it is a valid
/// SPIFFE path in the trust domain.
pub(crate) fn daemon_spiffe_id(
    spec: &VerifierSpec,
    claims: &BTreeMap<String, String>,
    trust_domain: &TrustDomain,
) -> Result<SpiffeId, AttestError> {
    let template = spec.workload_id_template.as_deref().unwrap_or(DEFAULT_DAEMON_TEMPLATE);
    let path = render_template(template, claims)?;
    if path.starts_with("spiffe://") {
        return Err(AttestError::Misconfigured(format!(
            "template {template:?} must render a path, not a full SPIFFE ID"
        )));
    }
    trust_domain.workload_id(&path).map_err(|e| {
        AttestError::Misconfigured(format!("template {template:?} renders {path:?}, not a valid SPIFFE path: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> BTreeMap<String, String> {
        BTreeMap::from([("id".to_owned(), "d-1".to_owned()), ("token".to_owned(), "abc".to_owned())])
    }

    #[test]
    fn renders_placeholders() {
        assert_eq!(render_template("riptides/daemon/{{id}}", &claims()).unwrap(), "riptides/daemon/d-1");
        assert_eq!(render_template("a/{{ token }}/{{id}}", &claims()).unwrap(), "a/abc/d-1");
        assert_eq!(render_template("plain", &claims()).unwrap(), "plain");
    }

    #[test]
    fn refuses_bad_templates() {
        for t in ["a/{{nope}}", "a/{{id", "a/id}}", "{{}}"] {
            assert!(matches!(render_template(t, &claims()), Err(AttestError::Misconfigured(_))), "{t}");
        }
    }

    #[test]
    fn spiffe_id_is_validated() {
        let td = TrustDomain::parse("example.org").unwrap();
        let mut spec = builtin_default();
        assert_eq!(
            daemon_spiffe_id(&spec, &claims(), &td).unwrap().as_str(),
            "spiffe://example.org/riptides/daemon/d-1"
        );
        spec.workload_id_template = Some("x/{{id}}/../y".into());
        assert!(daemon_spiffe_id(&spec, &claims(), &td).is_err());
        spec.workload_id_template = Some("spiffe://other/{{id}}".into());
        assert!(daemon_spiffe_id(&spec, &claims(), &td).is_err());
    }
}
