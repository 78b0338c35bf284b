//! Daemon attestation and workload CSR authorization, independent of any transport.
//!
//! The QUIC (and TCP+TLS fallback) endpoint decodes requests and calls into this module; nothing
//! here knows about frames or connections, so every rule can be tested against a real store and
//! CA without a network.
//!
//! - [`Attestor`]: a daemon proves itself (join token first), sends a CSR and gets its SVID
//!   `spiffe://<td>/riptides/daemon/<id>` plus the trust bundle; a `Daemon` resource records it.
//! - [`NodeVerifier`]: one implementation per kind of proof: [`JoinTokenVerifier`], and
//!   [`ProofVerifier`] for the cloud, Kubernetes, JWT and proof-of-possession methods
//!   (`methods/`, with [`jose`] for JWTs and [`sshcert`] for OpenSSH certificates).
//! - [`Authorizer`]: a daemon may get workload SVIDs only for the `workloadID`s of
//!   WorkloadIdentities scoped to it (by daemon id or daemon group).
//! - [`SigningPool`]: every signature runs under one semaphore, so a burst of CSRs queues
//!   instead of exhausting memory or starving the async runtime.
//! - [`RateLimiter`]: token buckets per source and globally, checked before anything else.
//!
//! ## Order of attestation (fail closed, no burnt tokens)
//!
//! 1. rate limit (a refused attempt touches nothing);
//! 2. [`NodeVerifier::verify`]: read-only check of the proof, decides the daemon id and SPIFFE ID;
//! 3. sign the CSR: a bad CSR fails here, *before* the single-use proof is consumed;
//! 4. [`NodeVerifier::consume`]: the atomic (compare-and-swap) claim of the single-use proof.
//!    Of N racing attempts exactly one gets past this step; the others' signed SVIDs are
//!    dropped without ever leaving the process;
//! 5. create or update the `Daemon` resource. If this write fails the token is already spent
//!    and the caller gets [`AttestError::Store`]; the operator issues a new token. (Recording
//!    first would leave orphan `Daemon` objects for every loser of a race.)

mod authorize;
mod daemon;
mod join_token;
pub mod jose;
pub mod methods;
mod pool;
mod rate_limit;
pub mod sshcert;
mod verifier;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use riptides_wire::resource::auth::VerifierMethod;
use riptides_wire::resource::DEFAULT_NAMESPACE;
use riptides_wire::spiffe::SpiffeId;
use tracing::Instrument as _;

use crate::ca::{Svid, TrustBundle};
use crate::store::{Store, StoreError};

pub use authorize::{Authorizer, AuthorizerConfig};
pub use join_token::{hash_secret, JoinTokenVerifier, RANDOM_ID_LEN};
pub use methods::{reattestation, ProofVerifier, Reattestation};
pub use pool::{SigningPermit, SigningPool, MAX_CSR_BYTES};
pub use rate_limit::{BucketConfig, RateLimitConfig, RateLimiter};
pub use verifier::{
    render_template, NodeVerifier, VerifiedNode, VerifyContext, DEFAULT_DAEMON_TEMPLATE, DEFAULT_VERIFIER_NAME,
};

/// Why attestation or a workload CSR was refused. Each variant maps onto one protocol error
/// code ([`AttestError::code`]). Messages never contain a token secret.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// Malformed, unknown or wrong-secret token. Deliberately one variant for all three so that
    /// a caller cannot probe which token names exist.
    #[error("invalid join token")]
    InvalidToken,
    #[error("join token has expired")]
    TokenExpired,
    #[error("join token has already been used")]
    TokenUsed,
    #[error("too many attestation attempts; retry in {retry_after:?}")]
    RateLimited { retry_after: Duration },
    /// The caller is not allowed what it asked for (a workload ID outside its scope, an unknown
    /// daemon, a proof of an unsupported method).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("invalid CSR: {0}")]
    InvalidCsr(String),
    /// The resources the decision depends on are inconsistent (a token naming a missing
    /// Verifier, a template that renders an invalid SPIFFE path): the operator must fix them.
    #[error("attestation is misconfigured: {0}")]
    Misconfigured(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
    /// A proof of a cloud, Kubernetes, JWT or proof-of-possession method failed a check.
    /// `check` names it (signature, audience, exp, account, requiredMetadata...); `detail`
    /// never holds a token, a signature or a key.
    #[error("invalid {method} proof: {check} check failed: {detail}")]
    InvalidProof { method: &'static str, check: String, detail: String },
    /// A trust-on-first-use proof already attested a daemon (or its daemon id is taken).
    #[error("already attested: {0}")]
    AlreadyAttested(String),
}

impl AttestError {
    /// A stable, machine-readable code for the wire protocol and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            AttestError::InvalidToken => "invalid_token",
            AttestError::TokenExpired => "token_expired",
            AttestError::TokenUsed => "token_used",
            AttestError::RateLimited { .. } => "rate_limited",
            AttestError::Unauthorized(_) => "unauthorized",
            AttestError::InvalidCsr(_) => "invalid_csr",
            AttestError::Misconfigured(_) => "misconfigured",
            AttestError::Store(_) => "store",
            AttestError::Internal(_) => "internal",
            AttestError::InvalidProof { .. } => "invalid_proof",
            AttestError::AlreadyAttested(_) => "already_attested",
        }
    }

    /// Whether retrying the same request later can succeed (the daemon's backoff uses this).
    pub fn is_retryable(&self) -> bool {
        matches!(self, AttestError::RateLimited { .. } | AttestError::Store(_) | AttestError::Internal(_))
    }
}

/// What a daemon presents to prove who it is. One variant per supported kind of proof; all
/// but join tokens may name the Verifier to check them against (`None`: the only Verifier of
/// that method in the namespace).
#[derive(Clone, PartialEq, Eq)]
pub enum AttestationProof {
    /// `<name>.<secret>` as printed by `riptides token create`.
    JoinToken(String),
    /// An AWS instance identity document and its base64 RSA/SHA-256 signature.
    AwsIid { verifier: Option<String>, document: String, signature: String },
    /// A GCP instance identity token.
    GcpIit { verifier: Option<String>, token: String },
    /// A Kubernetes service-account token.
    K8sSat { verifier: Option<String>, token: String },
    /// A JWT/OIDC token (methods `JWT` and `GitHubActions`).
    Jwt { verifier: Option<String>, token: String },
    /// An X.509 chain (leaf first) and the leaf key's signature over the challenge `nonce`
    /// the control plane issued on this attempt.
    X509Pop { verifier: Option<String>, chain_der: Vec<Vec<u8>>, nonce: Vec<u8>, signature: Vec<u8> },
    /// An OpenSSH host certificate and the host key's signature (SSH signature blob) over the
    /// challenge `nonce`.
    SshPop { verifier: Option<String>, certificate: String, nonce: Vec<u8>, signature: Vec<u8> },
}

impl AttestationProof {
    /// The kind of proof; the Attestor picks its verifier by this. `JWT` covers both the
    /// `JWT` and the `GitHubActions` methods.
    pub fn method(&self) -> VerifierMethod {
        match self {
            AttestationProof::JoinToken(_) => VerifierMethod::JoinToken,
            AttestationProof::AwsIid { .. } => VerifierMethod::AwsIid,
            AttestationProof::GcpIit { .. } => VerifierMethod::GcpIit,
            AttestationProof::K8sSat { .. } => VerifierMethod::K8sSat,
            AttestationProof::Jwt { .. } => VerifierMethod::Jwt,
            AttestationProof::X509Pop { .. } => VerifierMethod::X509CertPop,
            AttestationProof::SshPop { .. } => VerifierMethod::SshCertPop,
        }
    }

    /// The Verifier the proof names, if any.
    pub fn verifier(&self) -> Option<&str> {
        match self {
            AttestationProof::JoinToken(_) => None,
            AttestationProof::AwsIid { verifier, .. }
            | AttestationProof::GcpIit { verifier, .. }
            | AttestationProof::K8sSat { verifier, .. }
            | AttestationProof::Jwt { verifier, .. }
            | AttestationProof::X509Pop { verifier, .. }
            | AttestationProof::SshPop { verifier, .. } => verifier.as_deref(),
        }
    }
}

/// Never prints a secret: only the token name (the part before the dot) of a join token, and
/// only sizes of other proofs.
impl fmt::Debug for AttestationProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttestationProof::JoinToken(t) => {
                let name = t.split_once('.').map_or("<malformed>", |(n, _)| n);
                write!(f, "JoinToken({name}.<redacted>)")
            }
            AttestationProof::AwsIid { document, .. } => write!(f, "AwsIid(<{} byte document>)", document.len()),
            AttestationProof::GcpIit { token, .. }
            | AttestationProof::K8sSat { token, .. }
            | AttestationProof::Jwt { token, .. } => write!(f, "{:?}(<{} byte token>)", self.method(), token.len()),
            AttestationProof::X509Pop { chain_der, .. } => write!(f, "X509Pop(<{} certificates>)", chain_der.len()),
            AttestationProof::SshPop { certificate, .. } => write!(f, "SshPop(<{} bytes>)", certificate.len()),
        }
    }
}

/// The result of a successful attestation, for the endpoint to send back.
#[derive(Debug, Clone)]
pub struct Attested {
    pub daemon_id: String,
    pub spiffe_id: SpiffeId,
    pub svid: Svid,
    pub bundle: TrustBundle,
}

/// Settings of the [`Attestor`].
#[derive(Debug, Clone)]
pub struct AttestorConfig {
    /// Namespace of `Daemon` resources (and, for the join-token verifier, of JoinTokens and
    /// Verifiers).
    pub namespace: String,
    /// Lifetime of daemon SVIDs; `None` uses the CA's default.
    pub daemon_svid_ttl: Option<Duration>,
    pub rate_limit: RateLimitConfig,
}

impl Default for AttestorConfig {
    fn default() -> Self {
        AttestorConfig {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            daemon_svid_ttl: None,
            rate_limit: RateLimitConfig::default(),
        }
    }
}

/// Admits daemons: rate limit, verify the proof, sign the daemon SVID, consume the proof,
/// record the `Daemon`. See the module docs for why in this order.
pub struct Attestor {
    store: Arc<dyn Store>,
    pool: Arc<SigningPool>,
    config: AttestorConfig,
    limiter: RateLimiter,
    verifiers: HashMap<VerifierMethod, Arc<dyn NodeVerifier>>,
}

impl fmt::Debug for Attestor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attestor")
            .field("config", &self.config)
            .field("methods", &self.verifiers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Attestor {
    /// An attestor with the join-token verifier over the same store and namespace.
    pub fn new(store: Arc<dyn Store>, pool: Arc<SigningPool>, config: AttestorConfig) -> Self {
        let join = JoinTokenVerifier::new(store.clone()).with_namespace(config.namespace.clone());
        let limiter = RateLimiter::new(config.rate_limit.clone());
        let mut verifiers: HashMap<VerifierMethod, Arc<dyn NodeVerifier>> = HashMap::new();
        verifiers.insert(VerifierMethod::JoinToken, Arc::new(join));
        for v in ProofVerifier::all(store.clone(), &config.namespace) {
            verifiers.insert(v.method(), v);
        }
        Attestor { store, pool, config, limiter, verifiers }
    }

    /// Adds (or replaces) the verifier for its method.
    pub fn with_verifier(mut self, verifier: Arc<dyn NodeVerifier>) -> Self {
        self.verifiers.insert(verifier.method(), verifier);
        self
    }

    pub fn config(&self) -> &AttestorConfig {
        &self.config
    }

    /// Attests a daemon connecting from `source` (the rate-limit key, e.g. the remote IP).
    ///
    /// `host_info` (hostname, OS, versions...) goes into the Daemon's `status.host`.
    pub async fn attest(
        &self,
        source: &str,
        proof: &AttestationProof,
        csr_der: &[u8],
        host_info: BTreeMap<String, String>,
        now: SystemTime,
    ) -> Result<Attested, AttestError> {
        let span = tracing::info_span!(
            "attest",
            %source,
            method = ?proof.method(),
            daemon_id = tracing::field::Empty,
            verifier = tracing::field::Empty,
        );
        let result = self.attest_inner(source, proof, csr_der, host_info, now).instrument(span.clone()).await;
        let _enter = span.enter();
        match &result {
            Ok(a) => tracing::info!(spiffe_id = %a.spiffe_id, serial = %a.svid.serial_hex(), "daemon attested"),
            Err(e) => tracing::warn!(code = e.code(), error = %e, "attestation refused"),
        }
        result
    }

    async fn attest_inner(
        &self,
        source: &str,
        proof: &AttestationProof,
        csr_der: &[u8],
        host_info: BTreeMap<String, String>,
        now: SystemTime,
    ) -> Result<Attested, AttestError> {
        self.limiter.check(source, now)?;
        let verifier = self.verifiers.get(&proof.method()).ok_or_else(|| {
            AttestError::Unauthorized(format!("attestation method {:?} is not enabled", proof.method()))
        })?;
        let ctx = VerifyContext {
            trust_domain: self.pool.ca().trust_domain().clone(),
            now,
            source: source.to_owned(),
            csr_key: csr_key_hash(csr_der),
        };
        let node = verifier.verify(proof, &ctx).await?;
        let span = tracing::Span::current();
        span.record("daemon_id", node.daemon_id.as_str());
        span.record("verifier", node.verifier.as_str());

        // Sign before consuming: a bad CSR must not burn the token.
        let permit = self.pool.acquire().await?;
        let svid = self.pool.sign(permit, csr_der, node.spiffe_id.clone(), self.config.daemon_svid_ttl, now).await?;

        verifier.consume(proof, &node, &ctx).await?;

        daemon::record(self.store.as_ref(), &self.config.namespace, &node, host_info, now).await?;

        Ok(Attested { daemon_id: node.daemon_id, spiffe_id: node.spiffe_id, svid, bundle: self.pool.ca().bundle() })
    }
}

/// The daemon id of the `Daemon` in `namespace` whose SPIFFE ID is `id` (for daemon IDs that a
/// `workloadIDTemplate` made with more than one path segment, where the id cannot be read off
/// the path).
pub async fn daemon_id_of(store: &dyn Store, namespace: &str, id: &SpiffeId) -> Result<Option<String>, AttestError> {
    Ok(daemon::find_by_spiffe_id(store, namespace, id).await?.map(|d| d.id))
}

/// `sha256:<hex>` of a CSR's SubjectPublicKeyInfo (`None` if it does not parse; signing will
/// then refuse the CSR anyway).
pub fn csr_key_hash(csr_der: &[u8]) -> Option<String> {
    use x509_parser::prelude::FromDer;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(csr_der).ok()?;
    Some(riptides_wire::resource::auth::sha256_tagged(csr.certification_request_info.subject_pki.raw))
}
