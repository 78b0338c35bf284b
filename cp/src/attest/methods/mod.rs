//! The attestation methods beyond join tokens: AWS instance identity documents, GCP instance
//! identity tokens, Kubernetes service-account tokens, JWT/OIDC (generic and the GitHub
//! Actions preset), X.509 and SSH certificate proof of possession.
//!
//! One [`ProofVerifier`] per kind of proof does what all of them share: find the `Verifier`
//! resource (named by the daemon, or the only one of the method), run the method's check
//! (`aws.rs`, `gcp.rs`, ... — pure functions of the settings and the proof), enforce
//! `requiredMetadata`, derive the daemon id, render `workloadIDTemplate` into a SPIFFE ID, and
//! apply the method's re-attestation rule ([`reattestation`]) when consuming the proof.

mod aws;
mod gcp;
mod jwt;
mod k8s;
mod sshpop;
mod x509pop;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use riptides_wire::resource::auth::{sha256_tagged, VerifierMethod, VerifierSpec};
use riptides_wire::resource::{self, Verifier, DEFAULT_NAMESPACE};

use super::daemon::{self, ClaimRule};
use super::join_token::valid_daemon_id;
use super::jose::{shown, JwtError};
use super::verifier::{daemon_spiffe_id, load_verifier};
use super::{AttestError, AttestationProof, NodeVerifier, VerifiedNode, VerifyContext};
use crate::store::Store;

/// Which daemons a method may attest again once a `Daemon` exists for its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reattestation {
    /// Single use (join tokens): the proof itself is consumed.
    SingleUseProof,
    /// Trust on first use (AWS IID, GCP IIT): the instance identity never changes, so once a
    /// daemon attested with it, only a retry with the same key is accepted until the operator
    /// deletes the `Daemon`.
    TrustOnFirstUse,
    /// Short-lived bearer tokens (Kubernetes SAT, JWT, GitHub Actions): a new token re-attests
    /// the same daemon id; the token last used is not accepted again with another key.
    NewTokenOnly,
    /// Challenge-response (X.509, SSH): every attempt answers a fresh challenge, so the daemon
    /// may re-attest whenever it lost its identity.
    Always,
}

/// The re-attestation rule of a method.
pub fn reattestation(method: VerifierMethod) -> Reattestation {
    match method {
        VerifierMethod::JoinToken => Reattestation::SingleUseProof,
        VerifierMethod::AwsIid | VerifierMethod::GcpIit => Reattestation::TrustOnFirstUse,
        VerifierMethod::K8sSat | VerifierMethod::Jwt | VerifierMethod::GitHubActions => Reattestation::NewTokenOnly,
        VerifierMethod::X509CertPop | VerifierMethod::SshCertPop => Reattestation::Always,
    }
}

/// What a method's check established.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    /// Claims for `requiredMetadata` and the template (without `id`).
    pub claims: BTreeMap<String, String>,
    /// The daemon id (also the `{{id}}` claim).
    pub id: String,
}

/// A refusal naming the failed check.
pub(crate) fn invalid(method: VerifierMethod, check: impl Into<String>, detail: impl Into<String>) -> AttestError {
    AttestError::InvalidProof { method: method.as_str(), check: check.into(), detail: detail.into() }
}

pub(crate) fn jwt_refusal(method: VerifierMethod, e: JwtError) -> AttestError {
    invalid(method, e.check, e.detail)
}

/// `prefix-part-part...` lowercased when that is a valid daemon id, otherwise `prefix-` and 40
/// hex digits of a hash of the parts (stable for the same parts).
pub(crate) fn make_id(prefix: &str, parts: &[&str]) -> String {
    let plain = std::iter::once(prefix).chain(parts.iter().copied()).collect::<Vec<_>>().join("-").to_ascii_lowercase();
    if valid_daemon_id(&plain) {
        return plain;
    }
    hashed_id(prefix, parts)
}

/// `prefix-` and 40 hex digits of a hash of the parts.
pub(crate) fn hashed_id(prefix: &str, parts: &[&str]) -> String {
    let hash = sha256_tagged(parts.join("\n").as_bytes());
    format!("{prefix}-{}", &hash["sha256:".len().."sha256:".len() + 40])
}

/// Checks the proof of one kind against the Verifier resources of its method(s).
pub struct ProofVerifier {
    store: Arc<dyn Store>,
    namespace: String,
    kind: VerifierMethod,
}

impl std::fmt::Debug for ProofVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProofVerifier").field("kind", &self.kind).field("namespace", &self.namespace).finish()
    }
}

impl ProofVerifier {
    /// The verifier for proofs of `kind` (`Jwt` covers `JWT` and `GitHubActions`).
    pub fn new(store: Arc<dyn Store>, kind: VerifierMethod) -> Self {
        ProofVerifier { store, namespace: DEFAULT_NAMESPACE.to_owned(), kind }
    }

    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// One verifier per kind of proof beyond join tokens.
    pub fn all(store: Arc<dyn Store>, namespace: &str) -> Vec<Arc<dyn NodeVerifier>> {
        [
            VerifierMethod::AwsIid,
            VerifierMethod::GcpIit,
            VerifierMethod::K8sSat,
            VerifierMethod::Jwt,
            VerifierMethod::X509CertPop,
            VerifierMethod::SshCertPop,
        ]
        .into_iter()
        .map(|k| Arc::new(ProofVerifier::new(store.clone(), k).with_namespace(namespace)) as Arc<dyn NodeVerifier>)
        .collect()
    }

    fn accepts(&self, m: VerifierMethod) -> bool {
        m == self.kind || (self.kind == VerifierMethod::Jwt && m == VerifierMethod::GitHubActions)
    }

    /// The Verifier named by the proof, or the only one of this kind in the namespace.
    async fn select(&self, name: Option<&str>) -> Result<(String, VerifierSpec), AttestError> {
        if let Some(name) = name {
            let ok = !name.is_empty()
                && name.len() <= 253
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
            if !ok {
                return Err(AttestError::Unauthorized("the verifier name is not a valid object name".into()));
            }
            let rt = resource::by_name("verifiers")
                .ok_or_else(|| AttestError::Internal("Verifier kind is not registered".into()))?;
            let key = crate::store::ObjectKey::new(rt.store_key(), &self.namespace, name);
            if self.store.get(&key).await?.is_none() {
                return Err(AttestError::Unauthorized(format!("no Verifier {name:?} in namespace {}", self.namespace)));
            }
            let spec = load_verifier(self.store.as_ref(), &self.namespace, name).await?;
            if !self.accepts(spec.method) {
                return Err(AttestError::Unauthorized(format!(
                    "verifier {name:?} admits method {}, not {} proofs",
                    spec.method.as_str(),
                    self.kind.as_str()
                )));
            }
            return Ok((name.to_owned(), spec));
        }
        let rt = resource::by_name("verifiers")
            .ok_or_else(|| AttestError::Internal("Verifier kind is not registered".into()))?;
        let (objects, _) = self.store.list(&rt.store_key(), Some(&self.namespace)).await?;
        let mut found: Vec<(String, VerifierSpec)> = objects
            .iter()
            .filter_map(|o| serde_json::from_slice::<Verifier>(&o.value).ok().map(|v| (o.key.name.clone(), v.spec)))
            .filter(|(_, s)| self.accepts(s.method))
            .collect();
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(AttestError::Unauthorized(format!(
                "no Verifier admits {} proofs in namespace {}",
                self.kind.as_str(),
                self.namespace
            ))),
            n => Err(AttestError::Unauthorized(format!(
                "{n} Verifiers admit {} proofs; the daemon must name one (--attestation-verifier)",
                self.kind.as_str()
            ))),
        }
    }

    /// Runs the method's check.
    fn check(
        &self,
        spec: &VerifierSpec,
        proof: &AttestationProof,
        ctx: &VerifyContext,
    ) -> Result<Checked, AttestError> {
        let missing = |what: &str| AttestError::Misconfigured(format!("the verifier has no {what} settings"));
        match proof {
            AttestationProof::AwsIid { document, signature, .. } => {
                aws::check(spec.aws_iid.as_ref().ok_or_else(|| missing("awsIID"))?, document, signature)
            }
            AttestationProof::GcpIit { token, .. } => {
                gcp::check(spec.gcp_iit.as_ref().ok_or_else(|| missing("gcpIIT"))?, token, ctx.now)
            }
            AttestationProof::K8sSat { token, .. } => {
                k8s::check(spec.k8s_sat.as_ref().ok_or_else(|| missing("k8sSAT"))?, token, ctx.now)
            }
            AttestationProof::Jwt { token, verifier } => jwt::check(
                spec.method,
                spec.jwt.as_ref().ok_or_else(|| missing("jwt"))?,
                verifier.as_deref().unwrap_or(""),
                token,
                ctx.now,
            ),
            AttestationProof::X509Pop { chain_der, nonce, signature, .. } => x509pop::check(
                spec.x509_cert_pop.as_ref().ok_or_else(|| missing("x509CertPOP"))?,
                chain_der,
                nonce,
                signature,
                ctx,
            ),
            AttestationProof::SshPop { certificate, nonce, signature, .. } => sshpop::check(
                spec.ssh_cert_pop.as_ref().ok_or_else(|| missing("sshCertPOP"))?,
                certificate,
                nonce,
                signature,
                ctx,
            ),
            AttestationProof::JoinToken(_) => Err(AttestError::Unauthorized("join tokens are not checked here".into())),
        }
    }

    fn bearer_hash(proof: &AttestationProof) -> Option<String> {
        match proof {
            AttestationProof::GcpIit { token, .. }
            | AttestationProof::K8sSat { token, .. }
            | AttestationProof::Jwt { token, .. } => Some(sha256_tagged(token.trim().as_bytes())),
            AttestationProof::AwsIid { document, .. } => Some(sha256_tagged(document.as_bytes())),
            _ => None,
        }
    }
}

/// `requiredMetadata`: every listed claim present with exactly that value.
fn required(method: VerifierMethod, spec: &VerifierSpec, claims: &BTreeMap<String, String>) -> Result<(), AttestError> {
    for (k, want) in &spec.required_metadata {
        match claims.get(k) {
            Some(v) if v == want => {}
            Some(v) => {
                return Err(invalid(
                    method,
                    "requiredMetadata",
                    format!("claim {k:?} is {:?}, not the required value", shown(v)),
                ))
            }
            None => return Err(invalid(method, "requiredMetadata", format!("the proof has no claim {k:?}"))),
        }
    }
    Ok(())
}

#[async_trait]
impl NodeVerifier for ProofVerifier {
    fn method(&self) -> VerifierMethod {
        self.kind
    }

    async fn verify(&self, proof: &AttestationProof, ctx: &VerifyContext) -> Result<VerifiedNode, AttestError> {
        if proof.method() != self.kind {
            return Err(AttestError::Internal(format!(
                "{:?} proof sent to the {:?} verifier",
                proof.method(),
                self.kind
            )));
        }
        let (name, spec) = self.select(proof.verifier()).await?;
        let method = spec.method;
        let checked = self.check(&spec, proof, ctx)?;
        required(method, &spec, &checked.claims)?;
        if !valid_daemon_id(&checked.id) {
            return Err(invalid(method, "daemon id", format!("{:?} is not a valid daemon id", shown(&checked.id))));
        }
        let mut claims = checked.claims;
        claims.insert("id".into(), checked.id.clone());
        let spiffe_id = daemon_spiffe_id(&spec, &claims, &ctx.trust_domain)?;
        // Two daemons must never share a SPIFFE ID: a template without an instance-specific
        // claim would merge them.
        if let Some(other) = daemon::find_by_spiffe_id(self.store.as_ref(), &self.namespace, &spiffe_id).await? {
            if other.id != checked.id {
                return Err(AttestError::Misconfigured(format!(
                    "the workloadIDTemplate of verifier {name:?} renders {spiffe_id}, which daemon {} already holds; \
                     include {{{{id}}}} or an instance-specific claim",
                    other.id
                )));
            }
        }
        let node = VerifiedNode { claims, daemon_id: checked.id, group: spec.daemon_group, verifier: name, spiffe_id };
        // Read-only pre-check of the re-attestation rule, so a refused attempt is not signed;
        // `consume` decides atomically.
        if let Some((by, prev)) = daemon::attestation_of(self.store.as_ref(), self.namespace(), &node.daemon_id).await?
        {
            let same_key = ctx.csr_key.is_some() && prev["key"].as_str() == ctx.csr_key.as_deref();
            if by.as_deref() != Some(node.verifier.as_str()) {
                return Err(AttestError::AlreadyAttested(format!(
                    "daemon id {} belongs to a daemon admitted by another verifier",
                    node.daemon_id
                )));
            }
            if reattestation(method) == Reattestation::TrustOnFirstUse && !same_key {
                return Err(AttestError::AlreadyAttested(format!(
                    "daemon {} was already attested with this instance identity (trust on first use); delete the \
                     Daemon resource to allow a new attestation",
                    node.daemon_id
                )));
            }
        }
        Ok(node)
    }

    async fn consume(
        &self,
        proof: &AttestationProof,
        node: &VerifiedNode,
        ctx: &VerifyContext,
    ) -> Result<(), AttestError> {
        let spec = load_verifier(self.store.as_ref(), &self.namespace, &node.verifier).await?;
        let rule = match reattestation(spec.method) {
            Reattestation::TrustOnFirstUse => ClaimRule::FirstUseOnly,
            _ => ClaimRule::NewProof,
        };
        let bearer = match reattestation(spec.method) {
            Reattestation::NewTokenOnly | Reattestation::TrustOnFirstUse => Self::bearer_hash(proof),
            _ => None,
        };
        let attempt = daemon::ClaimAttempt {
            method: spec.method.as_str(),
            key: ctx.csr_key.as_deref(),
            proof: bearer.as_deref(),
            rule,
            now: ctx.now,
        };
        daemon::claim(self.store.as_ref(), &self.namespace, node, attempt).await
    }
}

impl ProofVerifier {
    fn namespace(&self) -> &str {
        &self.namespace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(make_id("aws", &["123456789012", "us-east-1", "i-0abc"]), "aws-123456789012-us-east-1-i-0abc");
        let h = make_id("jwt", &["repo:org/x:ref:refs/heads/main"]);
        assert!(h.starts_with("jwt-") && h.len() == 44 && valid_daemon_id(&h), "{h}");
        assert_eq!(h, make_id("jwt", &["repo:org/x:ref:refs/heads/main"]));
    }

    #[test]
    fn rules() {
        assert_eq!(reattestation(VerifierMethod::AwsIid), Reattestation::TrustOnFirstUse);
        assert_eq!(reattestation(VerifierMethod::K8sSat), Reattestation::NewTokenOnly);
        assert_eq!(reattestation(VerifierMethod::X509CertPop), Reattestation::Always);
    }
}
