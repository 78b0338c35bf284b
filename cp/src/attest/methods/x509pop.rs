//! X.509 certificate proof of possession (method `X509CertPOP`).
//!
//! The daemon presents a certificate chain (leaf first); webpki checks it chains to the
//! configured CA bundle (signatures, validity at `now`, basic constraints, and the client-auth
//! EKU when the leaf has an EKU extension). In the same attempt the control plane sent a fresh
//! random nonce, and the daemon answers with the leaf key's signature over
//! [`challenge_payload`] (nonce + the key of its CSR), which proves it holds the key now.
//! Every attempt has its own challenge, so daemons may re-attest at any time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use riptides_wire::proto::messages::challenge_payload;
use riptides_wire::resource::auth::{sha256_tagged, VerifierMethod, X509CertPopSettings};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use x509_parser::prelude::FromDer as _;

use super::{invalid, make_id, Checked};
use crate::attest::{AttestError, VerifyContext};

const M: VerifierMethod = VerifierMethod::X509CertPop;
const MAX_CHAIN: usize = 8;
const MAX_CERT: usize = 16 * 1024;
pub(crate) const NONCE_LEN: usize = 32;

/// Verifies `signature` over `message` with the key of `spki` (X.509 SubjectPublicKeyInfo):
/// ECDSA P-256/P-384 (ASN.1 signature), RSA PKCS#1 v1.5 SHA-256 (2048+ bits) or Ed25519.
pub(crate) fn verify_with_spki(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>, message: &[u8], sig: &[u8]) -> bool {
    use x509_parser::oid_registry as oids;
    let key = &spki.subject_public_key.data;
    let alg = &spki.algorithm.algorithm;
    if *alg == oids::OID_KEY_TYPE_EC_PUBLIC_KEY {
        [&signature::ECDSA_P256_SHA256_ASN1, &signature::ECDSA_P384_SHA384_ASN1]
            .iter()
            .any(|a| UnparsedPublicKey::new(*a, key).verify(message, sig).is_ok())
    } else if *alg == oids::OID_PKCS1_RSAENCRYPTION {
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, key).verify(message, sig).is_ok()
    } else if *alg == oids::OID_SIG_ED25519 {
        UnparsedPublicKey::new(&signature::ED25519, key).verify(message, sig).is_ok()
    } else {
        false
    }
}

pub(super) fn check(
    s: &X509CertPopSettings,
    chain: &[Vec<u8>],
    nonce: &[u8],
    sig: &[u8],
    ctx: &VerifyContext,
) -> Result<Checked, AttestError> {
    if chain.is_empty() || chain.len() > MAX_CHAIN || chain.iter().any(|c| c.is_empty() || c.len() > MAX_CERT) {
        return Err(invalid(
            M,
            "chain",
            format!("1-{MAX_CHAIN} certificates of at most {MAX_CERT} bytes are accepted"),
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut s.ca_bundle.as_bytes()) {
        let c = c.map_err(|e| AttestError::Misconfigured(format!("x509CertPOP.caBundle: {e}")))?;
        roots.add(c).map_err(|e| AttestError::Misconfigured(format!("x509CertPOP.caBundle: {e}")))?;
    }
    if roots.is_empty() {
        return Err(AttestError::Misconfigured("x509CertPOP.caBundle holds no certificate".into()));
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), riptides_wire::tls::provider())
        .build()
        .map_err(|e| AttestError::Misconfigured(format!("x509CertPOP.caBundle: {e}")))?;
    let leaf = CertificateDer::from(chain[0].as_slice());
    let intermediates: Vec<CertificateDer<'_>> =
        chain[1..].iter().map(|c| CertificateDer::from(c.as_slice())).collect();
    let now = UnixTime::since_unix_epoch(ctx.now.duration_since(UNIX_EPOCH).unwrap_or_default());
    verifier
        .verify_client_cert(&leaf, &intermediates, now)
        .map_err(|e| invalid(M, "chain", format!("the certificate does not chain to the configured CA: {e}")))?;

    let csr_key = ctx.csr_key.as_deref().ok_or_else(|| AttestError::InvalidCsr("the CSR does not parse".into()))?;
    if nonce.len() != NONCE_LEN {
        return Err(invalid(M, "challenge", "no challenge was answered"));
    }
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&chain[0])
        .map_err(|_| invalid(M, "chain", "the leaf does not parse"))?;
    if !verify_with_spki(cert.public_key(), &challenge_payload(M.as_str(), nonce, csr_key), sig) {
        return Err(invalid(M, "challenge", "the challenge signature does not verify with the certificate's key"));
    }
    let fingerprint = sha256_tagged(&chain[0])["sha256:".len()..].to_owned();
    let mut claims = BTreeMap::from([
        ("fingerprint".to_owned(), fingerprint.clone()),
        ("serial".to_owned(), cert.raw_serial_as_string().replace(':', "")),
    ]);
    if let Some(cn) = cert.subject().iter_common_name().next().and_then(|c| c.as_str().ok()) {
        claims.insert("cn".into(), cn.to_owned());
    }
    if let Some(cn) = cert.issuer().iter_common_name().next().and_then(|c| c.as_str().ok()) {
        claims.insert("issuer_cn".into(), cn.to_owned());
    }
    Ok(Checked { id: make_id("x509", &[&fingerprint[..40]]), claims })
}
