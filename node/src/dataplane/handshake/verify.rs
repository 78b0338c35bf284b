//! Peer certificate verification for node-to-node mTLS.
//!
//! Each trust domain's certificates are checked against *that* domain's bundle only: a
//! certificate claiming `spiffe://a/...` that chains to the root of federated domain `b` is
//! refused, which a single merged root store would accept. The chain itself is checked by
//! webpki (through `riptides_wire::tls::SpiffeServerVerifier` for servers and rustls'
//! `WebPkiClientVerifier` for clients); what we add is the per-domain bundle choice and the
//! `allowedSPIFFEIDs` check, both inside the handshake so a refused peer never completes it.
//!
//! rustls can only carry an alert code out of a verifier, so each verifier also records a
//! [`Refusal`] naming the identity it refused; the handshake functions turn that into their
//! typed error. Verifiers are built per connection (the allowed list is per rule), so the
//! record is never shared between connections.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use riptides_wire::tls::{peer_spiffe_id, provider, ExpectedId, ServerTrust, SpiffeServerVerifier};
use riptides_wire::{SpiffeId, TrustDomain};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::HandshakeError;

/// The roots of the own trust domain and of federated ones.
#[derive(Clone)]
pub struct TrustBundles {
    own: TrustDomain,
    roots: BTreeMap<TrustDomain, Vec<CertificateDer<'static>>>,
}

impl fmt::Debug for TrustBundles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (td, r) in &self.roots {
            m.entry(&td.as_str(), &format!("{} roots", r.len()));
        }
        m.finish()
    }
}

impl TrustBundles {
    pub fn new(own: TrustDomain, roots: Vec<CertificateDer<'static>>) -> TrustBundles {
        let mut map = BTreeMap::new();
        map.insert(own.clone(), roots);
        TrustBundles { own, roots: map }
    }

    /// Adds or replaces the bundle of a (federated) trust domain.
    pub fn insert(&mut self, td: TrustDomain, roots: Vec<CertificateDer<'static>>) {
        self.roots.insert(td, roots);
    }

    /// The trust domain an empty `allowedSPIFFEIDs` list stands for.
    pub fn own_trust_domain(&self) -> &TrustDomain {
        &self.own
    }

    pub fn roots(&self, td: &TrustDomain) -> Option<&[CertificateDer<'static>]> {
        self.roots.get(td).map(Vec::as_slice)
    }

    pub fn trust_domains(&self) -> impl Iterator<Item = &TrustDomain> {
        self.roots.keys()
    }

    /// The IDs a peer must carry: the listed ones, or any ID of the own trust domain.
    pub fn expected(&self, allowed: &[SpiffeId]) -> ExpectedId {
        if allowed.is_empty() {
            ExpectedId::TrustDomain(self.own.clone())
        } else {
            ExpectedId::AnyOf(allowed.to_vec())
        }
    }
}

/// Why a verifier refused a peer's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotAllowed { peer: SpiffeId, allowed: String },
    Untrusted { peer: Option<SpiffeId>, reason: String },
}

impl From<Refusal> for HandshakeError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::NotAllowed { peer, allowed } => HandshakeError::PeerNotAllowed { peer, allowed },
            Refusal::Untrusted { peer, reason } => HandshakeError::UntrustedPeer { peer, reason },
        }
    }
}

/// Where a verifier leaves its refusal for the handshake function that built it.
pub(crate) type RefusalSlot = Arc<Mutex<Option<Refusal>>>;

pub(crate) fn take_refusal(slot: &RefusalSlot) -> Option<Refusal> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// The identity part shared by both verifiers.
#[derive(Debug)]
struct IdentityCheck {
    expected: ExpectedId,
    slot: RefusalSlot,
}

impl IdentityCheck {
    fn refuse(&self, refusal: Refusal, err: CertificateError) -> rustls::Error {
        tracing::warn!(?refusal, "peer certificate refused in the handshake");
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(refusal);
        rustls::Error::InvalidCertificate(err)
    }

    /// The leaf's SPIFFE ID, read before the chain is verified only to pick the bundle; it is
    /// trusted only once the chain checks out.
    fn claimed_id(&self, end_entity: &CertificateDer<'_>) -> Result<SpiffeId, rustls::Error> {
        peer_spiffe_id(std::slice::from_ref(end_entity)).map_err(|e| {
            self.refuse(
                Refusal::Untrusted { peer: None, reason: format!("no usable SPIFFE ID: {e}") },
                CertificateError::BadEncoding,
            )
        })
    }

    fn unknown_domain(&self, id: &SpiffeId) -> rustls::Error {
        self.refuse(
            Refusal::Untrusted {
                peer: Some(id.clone()),
                reason: format!("no trust bundle for trust domain {}", id.trust_domain_str()),
            },
            CertificateError::UnknownIssuer,
        )
    }

    fn chain_failed(&self, id: &SpiffeId, err: rustls::Error) -> rustls::Error {
        let reason = err.to_string();
        let cert_err = match err {
            rustls::Error::InvalidCertificate(e) => e,
            _ => CertificateError::UnknownIssuer,
        };
        self.refuse(Refusal::Untrusted { peer: Some(id.clone()), reason }, cert_err)
    }

    fn check_allowed(&self, id: &SpiffeId) -> Result<(), rustls::Error> {
        if self.expected.matches(id) {
            return Ok(());
        }
        Err(self.refuse(
            Refusal::NotAllowed { peer: id.clone(), allowed: self.expected.to_string() },
            CertificateError::ApplicationVerificationFailure,
        ))
    }
}

fn algs() -> WebPkiSupportedAlgorithms {
    provider().signature_verification_algorithms
}

/// Verifies a server for our client side (egress).
#[derive(Debug)]
pub(crate) struct ServerIdVerifier {
    by_domain: BTreeMap<TrustDomain, SpiffeServerVerifier>,
    check: IdentityCheck,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerIdVerifier {
    pub(crate) fn new(bundles: &TrustBundles, allowed: &[SpiffeId], slot: RefusalSlot) -> Result<Self, HandshakeError> {
        let mut by_domain = BTreeMap::new();
        for (td, roots) in &bundles.roots {
            let v = SpiffeServerVerifier::new(ServerTrust::Bundle(roots.clone()), ExpectedId::TrustDomain(td.clone()))
                .map_err(|e| HandshakeError::Config(format!("bundle of {td}: {e}")))?;
            by_domain.insert(td.clone(), v);
        }
        Ok(ServerIdVerifier {
            by_domain,
            check: IdentityCheck { expected: bundles.expected(allowed), slot },
            algs: algs(),
        })
    }
}

impl ServerCertVerifier for ServerIdVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let id = self.check.claimed_id(end_entity)?;
        let Some(inner) = self.by_domain.get(&id.trust_domain()) else {
            return Err(self.check.unknown_domain(&id));
        };
        inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            .map_err(|e| self.check.chain_failed(&id, e))?;
        self.check.check_allowed(&id)?;
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

/// Verifies a client for our server side (ingress). Client certificates are mandatory.
#[derive(Debug)]
pub(crate) struct ClientIdVerifier {
    by_domain: BTreeMap<TrustDomain, Arc<dyn ClientCertVerifier>>,
    check: IdentityCheck,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientIdVerifier {
    pub(crate) fn new(bundles: &TrustBundles, allowed: &[SpiffeId], slot: RefusalSlot) -> Result<Self, HandshakeError> {
        let mut by_domain = BTreeMap::new();
        for (td, roots) in &bundles.roots {
            let mut store = RootCertStore::empty();
            for (i, r) in roots.iter().enumerate() {
                store.add(r.clone()).map_err(|e| HandshakeError::Config(format!("bundle of {td}, root {i}: {e}")))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
                .build()
                .map_err(|e| HandshakeError::Config(format!("bundle of {td}: {e}")))?;
            by_domain.insert(td.clone(), v);
        }
        Ok(ClientIdVerifier {
            by_domain,
            check: IdentityCheck { expected: bundles.expected(allowed), slot },
            algs: algs(),
        })
    }
}

impl ClientCertVerifier for ClientIdVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No CA names are sent: our clients present their one SVID regardless, and the list
    /// would tell any scanner which trust domains this node federates with.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let id = self.check.claimed_id(end_entity)?;
        let Some(inner) = self.by_domain.get(&id.trust_domain()) else {
            return Err(self.check.unknown_domain(&id));
        };
        inner.verify_client_cert(end_entity, intermediates, now).map_err(|e| self.check.chain_failed(&id, e))?;
        self.check.check_allowed(&id)?;
        Ok(ClientCertVerified::assertion())
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
