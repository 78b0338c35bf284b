//! Typed errors of the CA. Callers (the daemon endpoint, the API server) map them to
//! protocol errors, so each refusal says precisely which rule the request broke.

use std::path::PathBuf;
use std::time::Duration;

use riptides_wire::spiffe::{SpiffeId, SpiffeIdError};

/// A [`super::CaConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid CA configuration: {0}")]
    Invalid(String),
}

/// Reading or writing the CA directory failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("CA store I/O on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("CA manifest {path} is not valid: {source}")]
    Manifest { path: PathBuf, source: serde_json::Error },
    #[error("CA store {path} is inconsistent: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io { path: path.into(), source }
    }
}

/// Opening the CA or changing its generations failed.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the CA directory belongs to trust domain {stored:?}, but the configuration names {configured:?}")]
    TrustDomainMismatch { stored: String, configured: String },
    #[error("generating CA generation {generation}: {source}")]
    Generate { generation: u64, source: rcgen::Error },
    #[error("a CA generation ({generation}) is already prepared")]
    AlreadyPrepared { generation: u64 },
    #[error("no CA generation is prepared")]
    NothingPrepared,
    #[error(
        "CA generation {generation} has been published for {published_for:?}, less than the required {required:?}; \
         activating it now could hand out certificates that daemons do not trust yet (use force to override)"
    )]
    NotPublishedLongEnough { generation: u64, published_for: Duration, required: Duration },
    #[error("time {0:?} is before the Unix epoch or too far in the future")]
    BadTime(std::time::SystemTime),
}

/// Issuing a certificate failed for a reason on the CA's side (not the request's).
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("{id} is not in the CA's trust domain {trust_domain}")]
    ForeignTrustDomain { id: SpiffeId, trust_domain: String },
    #[error("{0} is a trust domain ID; SVIDs are only issued for IDs with a path")]
    TrustDomainId(SpiffeId),
    #[error("requested TTL must be at least one second")]
    ZeroTtl,
    #[error("the CA has no active generation")]
    NoActiveCa,
    #[error("the active CA (generation {generation}) has expired or has less than a second left at this time")]
    CaExpired { generation: u64 },
    #[error("the active CA (generation {generation}) is not valid yet at this time; is the clock going backwards?")]
    CaNotYetValid { generation: u64 },
    #[error("invalid DNS name {name:?} for a SAN: {reason}")]
    BadDnsName { name: String, reason: String },
    #[error("time {0:?} is before the Unix epoch or too far in the future")]
    BadTime(std::time::SystemTime),
    #[error("building the certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("generating a key: {0}")]
    KeyGen(rcgen::Error),
    #[error("recording a long-lived certificate in the CA store: {0}")]
    Store(#[from] StoreError),
}

/// Why a certificate signing request was refused.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("CSR is not valid DER: {0}")]
    Malformed(String),
    #[error("CSR PEM is not valid: {0}")]
    BadPem(String),
    #[error("CSR signature does not verify with the CSR's own public key")]
    BadSignature,
    #[error("CSR key type {0} is not supported (use ECDSA P-256; P-384 and Ed25519 are also accepted)")]
    UnsupportedKey(String),
    #[error("CSR signature algorithm {algorithm} does not fit its {key} key")]
    UnsupportedSignatureAlgorithm { algorithm: String, key: String },
    #[error("CSR asks for a CA certificate (basicConstraints cA=true); SVIDs are never CAs")]
    CaRequested,
    #[error("CSR has a basicConstraints extension that cannot be parsed")]
    BadBasicConstraints,
    #[error("CSR has {0} URI SANs; an X509-SVID has exactly one")]
    MultipleUriSans(usize),
    #[error("CSR URI SAN {uri:?} is not a valid SPIFFE ID: {source}")]
    InvalidSpiffeId { uri: String, source: SpiffeIdError },
    #[error("CSR URI SAN {csr} differs from the requested ID {requested}")]
    IdMismatch { csr: SpiffeId, requested: SpiffeId },
    #[error("CSR has a subjectAltName extension that cannot be parsed")]
    BadSubjectAltName,
    #[error(transparent)]
    Issue(#[from] IssueError),
}
