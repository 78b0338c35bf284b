//! The join-token method: single-use, expiring secrets stored only as hashes.
//!
//! A token is `<name>.<secret>` (see `ops/src/token.rs`): `name` is the JoinToken object's
//! `metadata.name`, and the object holds `spec.tokenHash = "sha256:" + hex(sha256(secret))`
//! where the secret is the ASCII text after the first dot.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use aws_lc_rs::constant_time::verify_slices_are_equal;
use riptides_wire::resource::auth::VerifierMethod;
use riptides_wire::resource::{self, JoinToken, DEFAULT_NAMESPACE};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::verifier::{daemon_spiffe_id, load_verifier, DEFAULT_VERIFIER_NAME};
use super::{AttestError, AttestationProof, NodeVerifier, VerifiedNode, VerifyContext};
use crate::store::{ObjectKey, Store, StoreExt};

/// Length of the random part of generated daemon ids (`d-` + this many characters).
pub const RANDOM_ID_LEN: usize = 10;
/// Longest token text accepted; anything longer is refused before hashing or a store read.
const MAX_TOKEN_LEN: usize = 512;
/// Compared against when the token name is unknown, so that path costs the same hash
/// comparison as a wrong secret.
const DUMMY_HASH: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// `sha256:<lowercase hex>` of the secret text, as `riptides token create` stores it.
pub use riptides_wire::resource::auth::token_hash as hash_secret;

/// Verifies join tokens against `JoinToken` and `Verifier` resources in one namespace.
pub struct JoinTokenVerifier {
    store: Arc<dyn Store>,
    namespace: String,
}

impl std::fmt::Debug for JoinTokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinTokenVerifier").field("namespace", &self.namespace).finish()
    }
}

/// A token split into its parts, with the hash of the presented secret.
struct Presented<'a> {
    name: &'a str,
    hash: String,
}

/// Why a stored token was refused while consuming it (kept `Clone` for the CAS closure).
#[derive(Clone)]
enum Refusal {
    Invalid,
    Used,
    Expired,
    Corrupt(String),
}

impl From<Refusal> for AttestError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Invalid => AttestError::InvalidToken,
            Refusal::Used => AttestError::TokenUsed,
            Refusal::Expired => AttestError::TokenExpired,
            Refusal::Corrupt(m) => AttestError::Internal(m),
        }
    }
}

impl JoinTokenVerifier {
    /// Tokens in `riptides-system`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        JoinTokenVerifier { store, namespace: DEFAULT_NAMESPACE.to_owned() }
    }

    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn key(&self, name: &str) -> Result<ObjectKey, AttestError> {
        let rt = resource::by_name("jointokens")
            .ok_or_else(|| AttestError::Internal("JoinToken kind is not registered".into()))?;
        Ok(ObjectKey::new(rt.store_key(), &self.namespace, name))
    }

    /// Splits `<name>.<secret>`. Anything malformed is [`AttestError::InvalidToken`], like an
    /// unknown token.
    fn parse(proof: &AttestationProof) -> Result<Presented<'_>, AttestError> {
        let AttestationProof::JoinToken(token) = proof else {
            return Err(AttestError::InvalidToken);
        };
        if token.len() > MAX_TOKEN_LEN {
            return Err(AttestError::InvalidToken);
        }
        let (name, secret) = token.split_once('.').ok_or(AttestError::InvalidToken)?;
        let name_ok = !name.is_empty()
            && name.len() <= 253
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !name_ok || secret.is_empty() {
            return Err(AttestError::InvalidToken);
        }
        Ok(Presented { name, hash: hash_secret(secret) })
    }
}

fn hashes_equal(stored: &str, presented: &str) -> bool {
    verify_slices_are_equal(stored.as_bytes(), presented.as_bytes()).is_ok()
}

fn is_expired(expires_at: &str, now: SystemTime) -> Result<bool, Refusal> {
    let t = OffsetDateTime::parse(expires_at, &Rfc3339)
        .map_err(|_| Refusal::Corrupt(format!("token expiresAt {expires_at:?} is not RFC 3339")))?;
    Ok(OffsetDateTime::from(now) >= t)
}

/// Valid both as a `Daemon` object name (DNS subdomain) and as one SPIFFE path segment.
pub(crate) fn valid_daemon_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// `d-` followed by [`RANDOM_ID_LEN`] random lowercase alphanumerics.
fn random_daemon_id() -> Result<String, AttestError> {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut id = String::from("d-");
    let mut buf = [0u8; 32];
    while id.len() < 2 + RANDOM_ID_LEN {
        aws_lc_rs::rand::fill(&mut buf)
            .map_err(|_| AttestError::Internal("the system random generator failed".into()))?;
        // Rejection sampling: 252 = 7 * 36 keeps every character equally likely.
        for b in buf.iter().filter(|b| **b < 252) {
            if id.len() < 2 + RANDOM_ID_LEN {
                id.push(ALPHABET[(*b % 36) as usize] as char);
            }
        }
    }
    Ok(id)
}

#[async_trait]
impl NodeVerifier for JoinTokenVerifier {
    fn method(&self) -> VerifierMethod {
        VerifierMethod::JoinToken
    }

    async fn verify(&self, proof: &AttestationProof, ctx: &VerifyContext) -> Result<VerifiedNode, AttestError> {
        let presented = Self::parse(proof)?;
        let key = self.key(presented.name)?;
        let Some(obj) = self.store.get(&key).await? else {
            // Same work and same error as a wrong secret: do not reveal which names exist.
            let _ = hashes_equal(DUMMY_HASH, &presented.hash);
            tracing::debug!(token = presented.name, "unknown join token");
            return Err(AttestError::InvalidToken);
        };
        let token: JoinToken = serde_json::from_slice(&obj.value)
            .map_err(|e| AttestError::Internal(format!("stored join token {} is unreadable: {e}", presented.name)))?;
        if !hashes_equal(&token.spec.token_hash, &presented.hash) {
            tracing::debug!(token = presented.name, "join token secret does not match");
            return Err(AttestError::InvalidToken);
        }
        if is_expired(&token.spec.expires_at, ctx.now).map_err(AttestError::from)? {
            return Err(AttestError::TokenExpired);
        }
        // A used token is refused, except for the daemon that used it retrying with the same
        // key (its answer was lost to a timeout): it gets the same daemon id again.
        let retry_of = match &token.status {
            Some(s) if s.used => match (&s.used_key, &ctx.csr_key, &s.used_by) {
                (Some(used), Some(presented), Some(by)) if used == presented => {
                    tracing::info!(daemon_id = %by, "retry of a completed attestation with the same key");
                    Some(by.clone())
                }
                _ => return Err(AttestError::TokenUsed),
            },
            _ => None,
        };

        let verifier_name = token.spec.verifier.clone().unwrap_or_else(|| DEFAULT_VERIFIER_NAME.to_owned());
        let spec = load_verifier(self.store.as_ref(), &self.namespace, &verifier_name).await?;
        if spec.method != VerifierMethod::JoinToken {
            return Err(AttestError::Misconfigured(format!(
                "join token {} names verifier {verifier_name:?}, whose method is {:?}",
                presented.name, spec.method
            )));
        }

        let daemon_id = match &token.spec.daemon_id {
            _ if retry_of.is_some() => retry_of.clone().unwrap_or_default(),
            Some(id) if valid_daemon_id(id) => id.clone(),
            Some(id) => {
                return Err(AttestError::Misconfigured(format!(
                    "join token {} assigns daemon id {id:?}, which is not a valid lowercase DNS name",
                    presented.name
                )))
            }
            None => random_daemon_id()?,
        };
        let claims =
            BTreeMap::from([("id".to_owned(), daemon_id.clone()), ("token".to_owned(), presented.name.to_owned())]);
        let spiffe_id = daemon_spiffe_id(&spec, &claims, &ctx.trust_domain)?;
        Ok(VerifiedNode { claims, daemon_id, group: spec.daemon_group, verifier: verifier_name, spiffe_id })
    }

    /// Marks the token used with a compare-and-swap on its revision, re-checking the hash,
    /// `used` and expiry against what is stored at that revision. Concurrent callers that
    /// lose the race re-read, see `used`, and get [`AttestError::TokenUsed`].
    async fn consume(
        &self,
        proof: &AttestationProof,
        node: &VerifiedNode,
        ctx: &VerifyContext,
    ) -> Result<(), AttestError> {
        let presented = Self::parse(proof)?;
        let key = self.key(presented.name)?;
        let used_at = crate::api::rfc3339(ctx.now);
        let now = ctx.now;
        let mut refusal: Option<Refusal> = None;
        self.store
            .update_with(&key, |current| {
                refusal = None;
                let Some(obj) = current else {
                    refusal = Some(Refusal::Invalid);
                    return Ok(None);
                };
                match mark_used(&obj.value, &presented.hash, &used_at, &node.daemon_id, ctx.csr_key.as_deref(), now) {
                    Ok(bytes) => Ok(bytes),
                    Err(r) => {
                        refusal = Some(r);
                        Ok(None)
                    }
                }
            })
            .await?;
        match refusal {
            Some(r) => Err(r.into()),
            None => {
                tracing::info!(token = presented.name, daemon_id = %node.daemon_id, "join token consumed");
                Ok(())
            }
        }
    }
}

/// The stored token with `status.used` set, or why it may not be used.
fn mark_used(
    stored: &[u8],
    presented_hash: &str,
    used_at: &str,
    daemon_id: &str,
    csr_key: Option<&str>,
    now: SystemTime,
) -> Result<Option<Vec<u8>>, Refusal> {
    let mut v: Value = serde_json::from_slice(stored)
        .map_err(|e| Refusal::Corrupt(format!("stored join token is unreadable: {e}")))?;
    let stored_hash = v["spec"]["tokenHash"].as_str().unwrap_or_default();
    if !hashes_equal(stored_hash, presented_hash) {
        return Err(Refusal::Invalid);
    }
    if v["status"]["used"].as_bool().unwrap_or(false) {
        // Idempotent retry by the same daemon with the same key: nothing to write.
        let same = csr_key.is_some()
            && v["status"]["usedKey"].as_str() == csr_key
            && v["status"]["usedBy"].as_str() == Some(daemon_id);
        return if same { Ok(None) } else { Err(Refusal::Used) };
    }
    let expires_at = v["spec"]["expiresAt"].as_str().unwrap_or_default().to_owned();
    if is_expired(&expires_at, now)? {
        return Err(Refusal::Expired);
    }
    let Some(obj) = v.as_object_mut() else {
        return Err(Refusal::Corrupt("stored join token is not an object".into()));
    };
    let mut status = json!({ "used": true, "usedAt": used_at, "usedBy": daemon_id });
    if let Some(k) = csr_key {
        status["usedKey"] = json!(k);
    }
    obj.insert("status".into(), status);
    serde_json::to_vec(&v).map(Some).map_err(|e| Refusal::Corrupt(format!("encoding join token: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_the_cli_format() {
        // sha256("abc")
        assert_eq!(hash_secret("abc"), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn parse_refuses_malformed_tokens() {
        for t in ["", "nodot", ".secret", "name.", "UPPER.secret", "a/b.secret"] {
            let p = AttestationProof::JoinToken(t.to_owned());
            assert!(matches!(JoinTokenVerifier::parse(&p), Err(AttestError::InvalidToken)), "{t}");
        }
        let long = format!("a.{}", "x".repeat(MAX_TOKEN_LEN));
        assert!(JoinTokenVerifier::parse(&AttestationProof::JoinToken(long)).is_err());
        let p = AttestationProof::JoinToken("abc.s3cret.with.dots".into());
        let ok = JoinTokenVerifier::parse(&p).unwrap();
        assert_eq!(ok.name, "abc");
        assert_eq!(ok.hash, hash_secret("s3cret.with.dots"));
    }

    #[test]
    fn debug_redacts_the_secret() {
        let p = AttestationProof::JoinToken("abc.topsecret".into());
        let s = format!("{p:?}");
        assert!(s.contains("abc") && !s.contains("topsecret"), "{s}");
    }

    #[test]
    fn random_ids_are_valid_and_distinct() {
        let a = random_daemon_id().unwrap();
        let b = random_daemon_id().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 2 + RANDOM_ID_LEN);
        assert!(valid_daemon_id(&a), "{a}");
    }

    #[test]
    fn daemon_id_rules() {
        for ok in ["node-1", "a", "n.example"] {
            assert!(valid_daemon_id(ok), "{ok}");
        }
        for bad in ["", "Node", "-a", "a-", "a..b", "a_b", "a/b"] {
            assert!(!valid_daemon_id(bad), "{bad}");
        }
    }
}
