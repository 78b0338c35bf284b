//! SPIFFE-aware certificate verifiers.
//!
//! The chain checks (signatures, validity period, basic constraints, EKU) are webpki's, reached
//! through rustls' public primitives, so we do not re-implement path building. What we add is
//! the SPIFFE part: the identity is the leaf's single URI SAN, and the DNS name the client put
//! in its ClientHello plays no role at all.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::pin::{format_pin, spki_sha256};
use super::{provider, TlsError};
use crate::spiffe::{SpiffeId, SpiffeIdError, TrustDomain};

/// What a client trusts when it verifies a server's chain.
#[derive(Clone)]
pub enum ServerTrust {
    /// The trust bundle: the chain must end at one of these roots.
    Bundle(Vec<CertificateDer<'static>>),
    /// SHA-256 of the SPKI of a CA certificate the server must include in the chain it sends
    /// (the daemon's `--ca-pin`, used before it has a bundle). That certificate becomes the
    /// trust anchor; the leaf must chain to it and must not be it.
    Pin([u8; 32]),
}

impl fmt::Debug for ServerTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerTrust::Bundle(roots) => write!(f, "Bundle({} roots)", roots.len()),
            ServerTrust::Pin(pin) => write!(f, "Pin({})", format_pin(pin)),
        }
    }
}

/// Which server SPIFFE IDs a client accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedId {
    /// Exactly this ID.
    Exact(SpiffeId),
    /// Any ID in this trust domain.
    TrustDomain(TrustDomain),
    /// Any of these IDs (e.g. the control plane's ID across a rename).
    AnyOf(Vec<SpiffeId>),
}

impl ExpectedId {
    /// Whether `id` is acceptable.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            ExpectedId::Exact(want) => want == id,
            ExpectedId::TrustDomain(td) => id.is_member_of(td),
            ExpectedId::AnyOf(ids) => ids.iter().any(|want| want == id),
        }
    }
}

impl fmt::Display for ExpectedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedId::Exact(id) => write!(f, "{id}"),
            ExpectedId::TrustDomain(td) => write!(f, "any ID in trust domain {td}"),
            ExpectedId::AnyOf(ids) => {
                f.write_str("one of [")?;
                for (i, id) in ids.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{id}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// Why a peer's certificate does not carry a usable SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerIdError {
    #[error("peer presented no certificate")]
    NoCertificate,
    #[error("peer certificate is not valid DER X.509: {0}")]
    BadCertificate(String),
    #[error("peer certificate has no URI SAN")]
    NoUriSan,
    #[error("peer certificate has {0} URI SANs; an X509-SVID has exactly one")]
    MultipleUriSans(usize),
    #[error("peer certificate's URI SAN is not a SPIFFE ID: {0}")]
    NotSpiffe(#[from] SpiffeIdError),
}

/// The SPIFFE ID of a peer, from the leaf (first) certificate of its chain.
///
/// Only the identity is read here; the chain must already have been verified (the verifiers in
/// this module do that during the handshake).
pub fn peer_spiffe_id(chain: &[CertificateDer<'_>]) -> Result<SpiffeId, PeerIdError> {
    let leaf = chain.first().ok_or(PeerIdError::NoCertificate)?;
    spiffe_id_of(leaf)
}

fn spiffe_id_of(der: &[u8]) -> Result<SpiffeId, PeerIdError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| PeerIdError::BadCertificate(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PeerIdError::BadCertificate(e.to_string()))?
        .ok_or(PeerIdError::NoUriSan)?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(PeerIdError::NoUriSan),
        [one] => Ok(SpiffeId::parse(one)?),
        many => Err(PeerIdError::MultipleUriSans(many.len())),
    }
}

/// The message carried inside [`CertificateError::Other`] so a refusal says why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct VerifyError(String);

fn refuse(msg: String) -> rustls::Error {
    tracing::warn!(reason = %msg, "certificate refused");
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(VerifyError(msg)))))
}

fn is_ca(der: &[u8]) -> bool {
    X509Certificate::from_der(der)
        .ok()
        .and_then(|(_, c)| c.basic_constraints().ok().flatten().map(|bc| bc.value.ca))
        .unwrap_or(false)
}

#[derive(Debug)]
enum Trust {
    Bundle(Arc<RootCertStore>),
    Pin([u8; 32]),
}

/// Verifies a server's X509-SVID for a client: chain to the bundle (or the pinned CA),
/// validity now, EKU serverAuth, and exactly one URI SAN matching [`ExpectedId`].
/// The DNS server name is ignored.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    trust: Trust,
    expected: ExpectedId,
    algs: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    /// Builds the verifier. A bundle must hold at least one usable root: an empty bundle would
    /// refuse every server, which is always a configuration mistake worth failing on early.
    pub fn new(trust: ServerTrust, expected: ExpectedId) -> Result<Self, TlsError> {
        let trust = match trust {
            ServerTrust::Bundle(roots) => Trust::Bundle(Arc::new(root_store(roots)?)),
            ServerTrust::Pin(pin) => Trust::Pin(pin),
        };
        Ok(Self { trust, expected, algs: provider().signature_verification_algorithms })
    }

    fn verify_chain(
        &self,
        leaf: &ParsedCertificate<'_>,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        match &self.trust {
            Trust::Bundle(roots) => {
                verify_server_cert_signed_by_trust_anchor(leaf, roots, intermediates, now, self.algs.all)
            }
            Trust::Pin(pin) => {
                if spki_sha256(end_entity).ok().as_ref() == Some(pin) {
                    return Err(refuse("server presented the pinned CA certificate itself as its leaf".into()));
                }
                let Some(idx) = intermediates.iter().position(|c| spki_sha256(c).ok().as_ref() == Some(pin)) else {
                    return Err(refuse(format!(
                        "no certificate in the server's chain matches the CA pin {}",
                        format_pin(pin)
                    )));
                };
                let anchor = &intermediates[idx];
                if !is_ca(anchor) {
                    return Err(refuse("the pinned certificate in the server's chain is not a CA (cA=false)".into()));
                }
                let mut roots = RootCertStore::empty();
                roots
                    .add(anchor.clone())
                    .map_err(|e| refuse(format!("the pinned CA certificate is not a usable trust anchor: {e}")))?;
                let rest: Vec<CertificateDer<'_>> =
                    intermediates.iter().enumerate().filter(|(i, _)| *i != idx).map(|(_, c)| c.clone()).collect();
                verify_server_cert_signed_by_trust_anchor(leaf, &roots, &rest, now, self.algs.all)
            }
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let leaf = ParsedCertificate::try_from(end_entity)?;
        self.verify_chain(&leaf, end_entity, intermediates, now).inspect_err(|e| {
            tracing::warn!(error = %e, "server certificate chain refused");
        })?;
        let id =
            spiffe_id_of(end_entity).map_err(|e| refuse(format!("server certificate has no usable SPIFFE ID: {e}")))?;
        if !self.expected.matches(&id) {
            return Err(refuse(format!("server SPIFFE ID {id} is not the expected {}", self.expected)));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Client-certificate verifier for servers: client auth is offered but optional (the
/// bootstrap connection of a daemon that has only a join token has no certificate; the
/// application decides what an anonymous peer may do). A presented certificate must chain to
/// the bundle roots, be valid now, carry EKU clientAuth and exactly one SPIFFE URI SAN.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl SpiffeClientVerifier {
    /// Builds the verifier from the bundle roots (at least one).
    pub fn new(roots: Vec<CertificateDer<'static>>) -> Result<Self, TlsError> {
        let roots = Arc::new(root_store(roots)?);
        let inner = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        Ok(Self { inner })
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner.verify_client_cert(end_entity, intermediates, now).inspect_err(|e| {
            tracing::warn!(error = %e, "client certificate chain refused");
        })?;
        spiffe_id_of(end_entity).map_err(|e| refuse(format!("client certificate has no usable SPIFFE ID: {e}")))?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn root_store(roots: Vec<CertificateDer<'static>>) -> Result<RootCertStore, TlsError> {
    if roots.is_empty() {
        return Err(TlsError::EmptyBundle);
    }
    let mut store = RootCertStore::empty();
    for (index, root) in roots.into_iter().enumerate() {
        store.add(root).map_err(|e| TlsError::BadRoot { index, reason: e.to_string() })?;
    }
    Ok(store)
}
