//! The messages of the daemon <-> control plane protocol.
//!
//! Every stream is opened for exactly one exchange:
//!
//! | stream opened by | first frame | answer |
//! | --- | --- | --- |
//! | daemon | [`Request::Attest`] (bootstrap connection, server-authenticated TLS) | [`Response::Attested`] or [`Response::Error`] |
//! | daemon | [`Request::RenewDaemonSvid`] (mTLS with the daemon SVID) | [`Response::Svid`] or error |
//! | daemon | [`Request::SignWorkload`] (mTLS) | [`Response::Svid`] or error |
//! | daemon | [`Request::WatchPolicy`] (mTLS) | a stream of [`Response::Policy`], kept open |
//! | daemon | [`Request::ReportStatus`] (mTLS) | [`Response::Ack`] or error |
//! | daemon | [`Request::Ping`] | [`Response::Pong`] |
//! | daemon | [`Request::AttestProof`] (bootstrap; any attestation method) | [`Response::Attested`] or error; for X.509/SSH proof of possession first [`Response::Challenge`], then the daemon's [`Request::ChallengeAnswer`] on the same stream, then the verdict |
//! | control plane (tunnel) | [`TunnelRequest`] | one [`TunnelResponse`] |
//!
//! Any other frame at any point is an out-of-order frame: the receiver answers
//! [`ErrorCode::BadRequest`] where it can and resets the stream. Sizes are not bounded per field:
//! the frame limit bounds the whole message, and the decoder's budget bounds what any length
//! field may claim.
//!
//! bincode is not self-describing, so these types are the wire format: reordering fields or
//! variants is an incompatible change and needs a new [`super::PROTOCOL_VERSION`]; new enum
//! variants go at the end (old peers refuse them as undecodable, which is a typed error).

mod bytes;
mod policy;
mod tunnel;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use policy::{
    CredentialSet, CredentialSourceItem, PolicyDocument, PolicyItem, PolicyItemError, PolicyKey, PolicyKind,
    PolicyUpdate,
};
pub use tunnel::{ConnectionEntry, HealthReport, TunnelRequest, TunnelResponse};

use super::FrameError;

/// The first (and, except for [`Request::WatchPolicy`], only) frame on a daemon-opened stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Bootstrap: a daemon without a (valid) SVID proves itself with a join token and asks for its
    /// daemon SVID. Sent on the server-authenticated bootstrap connection. Answered with
    /// [`Response::Attested`], or [`Response::Error`] with [`ErrorCode::InvalidToken`],
    /// [`ErrorCode::TokenExpired`], [`ErrorCode::TokenUsed`], [`ErrorCode::RateLimited`] or
    /// [`ErrorCode::InvalidCsr`].
    Attest(AttestRequest),
    /// The daemon renews its own SVID (new key, same SPIFFE ID) over its mTLS connection.
    /// Answered with [`Response::Svid`] or an error.
    RenewDaemonSvid {
        /// PKCS#10 CSR (DER) for the daemon's new key. Only the public key is used.
        #[serde(with = "bytes::der")]
        csr_der: Vec<u8>,
    },
    /// The daemon asks for a workload SVID. The CP signs only workload IDs that a
    /// WorkloadIdentity scoped to this daemon allows. Answered with [`Response::Svid`], or
    /// [`ErrorCode::Unauthorized`] / [`ErrorCode::InvalidCsr`].
    SignWorkload(WorkloadCsr),
    /// The daemon subscribes to its policy. The CP answers with [`Response::Policy`] frames on
    /// the same stream for as long as it stays open: a [`PolicyUpdate::Snapshot`] first (unless it
    /// can resume from `resume_from`, in which case only the deltas after it), then
    /// [`PolicyUpdate::Delta`]s with increasing revisions.
    WatchPolicy {
        /// The last revision the daemon has applied (after a reconnect); `None` on first watch.
        resume_from: Option<u64>,
    },
    /// Periodic (and on-change) status for the `Daemon` resource's status. Answered with
    /// [`Response::Ack`].
    ReportStatus(DaemonStatusReport),
    /// Liveness probe of the application layer (QUIC keep-alive covers the transport).
    /// Answered with [`Response::Pong`].
    Ping,
    /// Bootstrap with any attestation method (added after `Ping`, so older peers refuse it as
    /// undecodable; join-token daemons keep sending [`Request::Attest`]). Answered with
    /// [`Response::Attested`] or [`Response::Error`]; for the proof-of-possession methods the
    /// CP first answers [`Response::Challenge`] on the same stream, and the daemon sends
    /// [`Request::ChallengeAnswer`] as the stream's second frame.
    AttestProof(ProofAttestRequest),
    /// Second frame of a challenge round: the signature over [`challenge_payload`]. Only valid
    /// right after a [`Response::Challenge`] on the same stream.
    ChallengeAnswer(ChallengeAnswerMsg),
}

impl Request {
    /// A stable name for logs, metrics and [`FrameError::UnexpectedMessage`].
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Attest(_) => "Attest",
            Request::RenewDaemonSvid { .. } => "RenewDaemonSvid",
            Request::SignWorkload(_) => "SignWorkload",
            Request::WatchPolicy { .. } => "WatchPolicy",
            Request::ReportStatus(_) => "ReportStatus",
            Request::Ping => "Ping",
            Request::AttestProof(_) => "AttestProof",
            Request::ChallengeAnswer(_) => "ChallengeAnswer",
        }
    }
}

/// Attestation with a join token. Its `Debug` hides the token's secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestRequest {
    /// The join token, `"<id>.<secret>"`. The CP stores only a hash of the secret.
    pub token: String,
    /// PKCS#10 CSR (DER) for the daemon's key. Only the public key is used; the CP decides the
    /// SPIFFE ID (`spiffe://<td>/riptides/daemon/<id>`).
    #[serde(with = "bytes::der")]
    pub csr_der: Vec<u8>,
    /// What the daemon says about its host, recorded on the `Daemon` resource.
    pub host: HostInfo,
}

impl AttestRequest {
    /// The public id part of the token (before the first `.`), safe to log.
    pub fn token_id(&self) -> &str {
        self.token.split_once('.').map_or(self.token.as_str(), |(id, _)| id)
    }
}

impl fmt::Debug for AttestRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttestRequest")
            .field("token", &format_args!("{}.<redacted>", self.token_id()))
            .field("csr_der", &format_args!("<{} bytes>", self.csr_der.len()))
            .field("host", &self.host)
            .finish()
    }
}

/// Attestation with any method; the CP picks the Verifier named by `verifier` (or the only
/// Verifier of the proof's method).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofAttestRequest {
    /// Name of the Verifier resource to check the proof against.
    pub verifier: Option<String>,
    pub proof: ProofMsg,
    /// PKCS#10 CSR (DER) for the daemon's key. Only the public key is used.
    #[serde(with = "bytes::der")]
    pub csr_der: Vec<u8>,
    pub host: HostInfo,
}

/// What the daemon presents, per method. Its `Debug` never shows a token or signature.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProofMsg {
    /// `<name>.<secret>`.
    JoinToken(String),
    /// The AWS instance identity document as served (bytes are signed: sent verbatim) and its
    /// base64 RSA/SHA-256 signature (`/latest/dynamic/instance-identity/signature`).
    AwsIid { document: String, signature: String },
    /// A GCP instance identity token (JWT, `format=full`).
    GcpIit(String),
    /// A Kubernetes (projected) service-account token.
    K8sSat(String),
    /// A JWT/OIDC token (methods `JWT` and `GitHubActions`).
    Jwt(String),
    /// X.509 certificate chain (leaf first, DER); the key's signature follows in the
    /// challenge round.
    X509Pop {
        #[serde(with = "bytes::der_chain")]
        chain_der: Vec<Vec<u8>>,
    },
    /// An OpenSSH host certificate (`ssh-ed25519-cert-v01@openssh.com AAAA...`); the host
    /// key's signature follows in the challenge round.
    SshPop { certificate: String },
}

impl ProofMsg {
    /// The method's name for logs (and whether a challenge round follows).
    pub fn kind(&self) -> &'static str {
        match self {
            ProofMsg::JoinToken(_) => "joinToken",
            ProofMsg::AwsIid { .. } => "AWSIID",
            ProofMsg::GcpIit(_) => "GCPIIT",
            ProofMsg::K8sSat(_) => "K8sSAT",
            ProofMsg::Jwt(_) => "JWT",
            ProofMsg::X509Pop { .. } => "X509CertPOP",
            ProofMsg::SshPop { .. } => "SSHCertPOP",
        }
    }

    /// Proof-of-possession methods need a [`Response::Challenge`] round.
    pub fn needs_challenge(&self) -> bool {
        matches!(self, ProofMsg::X509Pop { .. } | ProofMsg::SshPop { .. })
    }
}

impl fmt::Debug for ProofMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProofMsg::JoinToken(t) => {
                write!(f, "JoinToken({}.<redacted>)", t.split_once('.').map_or("<malformed>", |(n, _)| n))
            }
            ProofMsg::X509Pop { chain_der } => write!(f, "X509Pop(<{} certificates>)", chain_der.len()),
            ProofMsg::SshPop { certificate } => write!(f, "SshPop(<{} bytes>)", certificate.len()),
            ProofMsg::AwsIid { document, .. } => write!(f, "AwsIid(<{} byte document>)", document.len()),
            ProofMsg::GcpIit(t) | ProofMsg::K8sSat(t) | ProofMsg::Jwt(t) => {
                write!(f, "{}(<{} byte token>)", self.kind(), t.len())
            }
        }
    }
}

/// The control plane's challenge for a proof-of-possession method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestChallengeMsg {
    /// 32 random bytes, fresh for this stream.
    pub nonce: Vec<u8>,
}

/// The daemon's answer to an [`AttestChallengeMsg`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeAnswerMsg {
    /// X.509: the key's signature (ECDSA: ASN.1 DER; RSA: PKCS#1 v1.5 SHA-256; Ed25519: raw)
    /// over [`challenge_payload`]. SSH: the signature blob (`string algorithm, string sig`).
    pub signature: Vec<u8>,
}

impl fmt::Debug for ChallengeAnswerMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChallengeAnswer(<{} byte signature>)", self.signature.len())
    }
}

/// The bytes a daemon signs in a challenge round: a context string, the method, the nonce and
/// `sha256:<hex>` of the SubjectPublicKeyInfo of the key in its CSR, so a signature answers
/// exactly one challenge for exactly one daemon key.
pub fn challenge_payload(method: &str, nonce: &[u8], csr_key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + nonce.len() * 2 + csr_key.len());
    out.extend_from_slice(b"riptides attestation challenge v1\n");
    out.extend_from_slice(method.as_bytes());
    out.push(b'\n');
    for b in nonce {
        out.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(csr_key.as_bytes());
    out
}

/// Host metadata reported at attestation (self-asserted: informative, never used for
/// authorization).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub daemon_version: String,
    /// Extra metadata (cloud instance, Kubernetes node...), in a stable order.
    pub labels: Vec<(String, String)>,
}

/// A workload SVID request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadCsr {
    /// The SPIFFE path under the trust domain (a WorkloadIdentity's `workloadID`, e.g.
    /// `/ns/default/sa/web`).
    pub workload_id: String,
    /// PKCS#10 CSR (DER) for the workload's key. Only the public key is used.
    #[serde(with = "bytes::der")]
    pub csr_der: Vec<u8>,
    /// Requested lifetime; the CP caps it by the WorkloadIdentity's `svid.x509.ttl` and its CA.
    pub ttl_secs: Option<u32>,
}

/// What the daemon reports about itself; lands in the `Daemon` resource's status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatusReport {
    /// The daemon's version string.
    pub version: String,
    /// The dataplane in use: `kernel`, `userspace` or `none`.
    pub dataplane: String,
    pub daemon_healthy: bool,
    /// Health of the kernel driver; `None` when no driver is in use.
    pub driver_healthy: Option<bool>,
    /// The policy revision the daemon enforces; `None` before the first snapshot.
    pub policy_revision: Option<u64>,
}

/// A frame sent by the control plane on a daemon-opened stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Attest`]: the daemon's identity, SVID and trust bundle. The daemon
    /// persists these and reconnects with mutual TLS.
    Attested(AttestResponse),
    /// Answer to [`Request::RenewDaemonSvid`] and [`Request::SignWorkload`].
    Svid(SvidMsg),
    /// One step of a policy watch ([`Request::WatchPolicy`]).
    Policy(PolicyUpdate),
    /// Answer to [`Request::Ping`].
    Pong,
    /// Answer to [`Request::ReportStatus`].
    Ack,
    /// The request was refused or failed; the stream ends after it.
    Error(ProtoError),
    /// A challenge for [`Request::AttestProof`] with a proof-of-possession method.
    Challenge(AttestChallengeMsg),
}

impl Response {
    /// A stable name for logs, metrics and [`FrameError::UnexpectedMessage`].
    pub fn kind(&self) -> &'static str {
        match self {
            Response::Attested(_) => "Attested",
            Response::Svid(_) => "Svid",
            Response::Policy(_) => "Policy",
            Response::Pong => "Pong",
            Response::Ack => "Ack",
            Response::Error(_) => "Error",
            Response::Challenge(_) => "Challenge",
        }
    }
}

/// Generates an `expect_*` helper (inside an `impl` block): the expected variant's content,
/// [`FrameError::Remote`] for an `Error` answer, [`FrameError::UnexpectedMessage`] otherwise.
macro_rules! expect_fn {
    ($ty:ident, $(#[$m:meta])* $fn:ident => $variant:ident($out:ty)) => {
        $(#[$m])*
        pub fn $fn(self) -> Result<$out, FrameError> {
            match self {
                $ty::$variant(v) => Ok(v),
                $ty::Error(e) => Err(FrameError::Remote(e)),
                other => Err(FrameError::UnexpectedMessage { expected: stringify!($variant), got: other.kind() }),
            }
        }
    };
    ($ty:ident, $(#[$m:meta])* $fn:ident => $variant:ident) => {
        $(#[$m])*
        pub fn $fn(self) -> Result<(), FrameError> {
            match self {
                $ty::$variant => Ok(()),
                $ty::Error(e) => Err(FrameError::Remote(e)),
                other => Err(FrameError::UnexpectedMessage { expected: stringify!($variant), got: other.kind() }),
            }
        }
    };
}

impl Response {
    expect_fn!(Response,
        /// The answer to [`Request::Attest`].
        expect_attested => Attested(AttestResponse));
    expect_fn!(Response,
        /// The answer to [`Request::RenewDaemonSvid`] / [`Request::SignWorkload`].
        expect_svid => Svid(SvidMsg));
    expect_fn!(Response,
        /// A frame of a policy watch.
        expect_policy => Policy(PolicyUpdate));
    expect_fn!(Response,
        /// A challenge round's first answer.
        expect_challenge => Challenge(AttestChallengeMsg));
    expect_fn!(Response,
        /// The answer to [`Request::Ping`].
        expect_pong => Pong);
    expect_fn!(Response,
        /// The answer to [`Request::ReportStatus`].
        expect_ack => Ack);
}

impl TunnelResponse {
    expect_fn!(TunnelResponse,
        /// The answer to [`TunnelRequest::ConnectionTable`].
        expect_connection_table => ConnectionTable(Vec<ConnectionEntry>));
    expect_fn!(TunnelResponse,
        /// The answer to [`TunnelRequest::Health`].
        expect_health => Health(HealthReport));
    expect_fn!(TunnelResponse,
        /// The answer to [`TunnelRequest::ConfigDump`].
        expect_config_dump => ConfigDump(String));
}

/// The result of a successful attestation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestResponse {
    /// The daemon's id (name of its `Daemon` resource); persisted by the daemon.
    pub daemon_id: String,
    /// `spiffe://<td>/riptides/daemon/<id>`.
    pub spiffe_id: String,
    /// The daemon SVID, leaf first, then intermediates (DER).
    #[serde(with = "bytes::der_chain")]
    pub svid_chain_der: Vec<Vec<u8>>,
    /// The trust bundle to verify the CP (and peers) with from now on.
    pub bundle: TrustBundleMsg,
}

/// An issued X509-SVID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SvidMsg {
    pub spiffe_id: String,
    /// Leaf first, then intermediates (DER).
    #[serde(with = "bytes::der_chain")]
    pub chain_der: Vec<Vec<u8>>,
    /// The leaf's NotAfter, as Unix seconds, so the daemon can schedule rotation without
    /// parsing the certificate.
    pub not_after_unix: u64,
}

/// The X.509 roots of one trust domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustBundleMsg {
    pub trust_domain: String,
    /// The SPIFFE bundle sequence number; increases with every change (CA rotation), so a
    /// receiver can ignore stale bundles.
    pub sequence: u64,
    /// Root certificates (DER); during a CA rotation both the old and the new root.
    #[serde(with = "bytes::der_chain")]
    pub roots_der: Vec<Vec<u8>>,
}

/// A typed refusal or failure, sent as the last frame of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtoError {
    pub code: ErrorCode,
    /// Human-readable detail for logs; never contains secrets.
    pub message: String,
    /// For [`ErrorCode::RateLimited`] and [`ErrorCode::Unavailable`]: when to retry, if known.
    pub retry_after_secs: Option<u32>,
}

impl ProtoError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtoError { code, message: message.into(), retry_after_secs: None }
    }

    pub fn with_retry_after(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }
}

/// Why the control plane (or, on the tunnel, the daemon) refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The join token is unknown or malformed.
    InvalidToken,
    /// The join token's TTL has passed.
    TokenExpired,
    /// The join token was already used (tokens are single use).
    TokenUsed,
    /// Too many attempts; retry later (see [`ProtoError::retry_after_secs`]).
    RateLimited,
    /// The caller may not have what it asked for (e.g. a workload ID not scoped to this daemon).
    Unauthorized,
    /// The CSR does not parse, its signature does not verify, or its key is unacceptable.
    InvalidCsr,
    /// The request is malformed or out of order.
    BadRequest,
    /// Temporarily unable to serve (overloaded, shutting down, store unavailable).
    Unavailable,
    /// A bug or unexpected failure on the serving side.
    Internal,
    /// An attestation proof failed a check (the message names which one).
    InvalidProof,
    /// A trust-on-first-use proof was already used to attest a daemon (the operator deletes
    /// that `Daemon` to allow a new attestation).
    AlreadyAttested,
}

impl ErrorCode {
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::InvalidToken => "InvalidToken",
            ErrorCode::TokenExpired => "TokenExpired",
            ErrorCode::TokenUsed => "TokenUsed",
            ErrorCode::RateLimited => "RateLimited",
            ErrorCode::Unauthorized => "Unauthorized",
            ErrorCode::InvalidCsr => "InvalidCsr",
            ErrorCode::BadRequest => "BadRequest",
            ErrorCode::Unavailable => "Unavailable",
            ErrorCode::Internal => "Internal",
            ErrorCode::InvalidProof => "InvalidProof",
            ErrorCode::AlreadyAttested => "AlreadyAttested",
        }
    }

    /// Whether retrying the same request later can succeed (drives the daemon's backoff versus
    /// "tell the operator").
    pub fn is_retryable(&self) -> bool {
        matches!(self, ErrorCode::RateLimited | ErrorCode::Unavailable | ErrorCode::Internal)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{decode, encode, FrameConfig};

    #[test]
    fn attestation_messages_round_trip_and_hide_secrets() {
        let cfg = FrameConfig::default();
        let req = Request::AttestProof(ProofAttestRequest {
            verifier: Some("aws".into()),
            proof: ProofMsg::Jwt("header.payload.signature-secret".into()),
            csr_der: vec![1, 2, 3],
            host: HostInfo::default(),
        });
        let frame = encode(&req, &cfg).unwrap();
        let back: Request = decode(&frame, &cfg).unwrap();
        assert_eq!(back, req);
        let dbg = format!("{req:?}");
        assert!(!dbg.contains("signature-secret") && dbg.contains("byte token"), "{dbg}");
        for r in [
            Response::Challenge(AttestChallengeMsg { nonce: vec![7; 32] }),
            Response::Error(ProtoError::new(ErrorCode::AlreadyAttested, "x")),
        ] {
            let back: Response = decode(&encode(&r, &cfg).unwrap(), &cfg).unwrap();
            assert_eq!(back, r);
        }
        let answer = Request::ChallengeAnswer(ChallengeAnswerMsg { signature: vec![9; 64] });
        assert!(!format!("{answer:?}").contains("9, 9"));
        assert!(ProofMsg::X509Pop { chain_der: vec![] }.needs_challenge());
        assert!(!ProofMsg::K8sSat(String::new()).needs_challenge());
    }

    #[test]
    fn challenge_payload_binds_method_nonce_and_key() {
        let a = challenge_payload("X509CertPOP", &[1, 2], "sha256:ab");
        assert_eq!(a, b"riptides attestation challenge v1\nX509CertPOP\n0102\nsha256:ab");
        assert_ne!(a, challenge_payload("SSHCertPOP", &[1, 2], "sha256:ab"));
        assert_ne!(a, challenge_payload("X509CertPOP", &[1, 3], "sha256:ab"));
        assert_ne!(a, challenge_payload("X509CertPOP", &[1, 2], "sha256:ac"));
    }
}
