//! One CA generation in memory: its self-signed root certificate and signing key.

use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use riptides_wire::spiffe::TrustDomain;
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::FromDer;

use super::util;

/// The loaded key material of a CA generation. Immutable once built; lifecycle state lives in
/// the manifest so that this can be shared behind an `Arc` while signing.
pub(crate) struct CaGeneration {
    pub id: u64,
    pub cert_der: CertificateDer<'static>,
    pub not_before_unix: u64,
    pub not_after_unix: u64,
    /// Uncompressed EC point coordinates of the root key, for the JWKS form of the bundle.
    pub jwk_x: Vec<u8>,
    pub jwk_y: Vec<u8>,
    pub fingerprint: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for CaGeneration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The signing key is deliberately left out.
        f.debug_struct("CaGeneration")
            .field("id", &self.id)
            .field("not_before_unix", &self.not_before_unix)
            .field("not_after_unix", &self.not_after_unix)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Why a stored generation could not be loaded.
#[derive(Debug)]
pub(crate) enum LoadProblem {
    Pem(String),
    Key(rcgen::Error),
    Cert(String),
}

impl fmt::Display for LoadProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadProblem::Pem(e) => write!(f, "PEM: {e}"),
            LoadProblem::Key(e) => write!(f, "private key: {e}"),
            LoadProblem::Cert(e) => write!(f, "certificate: {e}"),
        }
    }
}

impl CaGeneration {
    /// Creates a new P-256 root for `trust_domain`, valid from `created - backdate` to
    /// `created + lifetime`. Returns the generation and its key as PKCS#8 PEM for storage.
    pub fn generate(
        id: u64,
        trust_domain: &TrustDomain,
        created_unix: u64,
        backdate_secs: u64,
        lifetime: std::time::Duration,
    ) -> Result<(CaGeneration, String), rcgen::Error> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Riptides");
        // A random tag keeps subjects of different installations and generations apart, which
        // helps path building and humans reading `openssl x509` output alike.
        let tag = util::hex(&util::random_serial()?[..4]);
        dn.push(DnType::CommonName, format!("Riptides CA {id} {tag}"));
        params.distinguished_name = dn;
        params.serial_number = Some(SerialNumber::from_slice(&util::random_serial()?));
        params.not_before = util::offset_time(created_unix.saturating_sub(backdate_secs));
        params.not_after = util::offset_time(util::add_secs(created_unix, lifetime));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        // The X509-SVID spec allows a signing certificate to carry the trust domain's ID.
        params.subject_alt_names = vec![SanType::URI(trust_domain.id().as_str().try_into()?)];
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        let cert_der = cert.der().clone();
        let generation = Self::from_parts(id, cert_der, key).map_err(|p| match p {
            LoadProblem::Key(e) => e,
            other => rcgen::Error::X509(other.to_string()),
        })?;
        Ok((generation, key_pem))
    }

    /// Rebuilds a generation from its stored certificate and key PEM, checking that they
    /// belong together.
    pub fn load(id: u64, cert_pem: &[u8], key_pem: &[u8]) -> Result<CaGeneration, LoadProblem> {
        use rustls_pki_types::pem::PemObject;
        let cert_der =
            CertificateDer::from_pem_slice(cert_pem).map_err(|e| LoadProblem::Pem(format!("certificate: {e}")))?;
        let key_pem =
            std::str::from_utf8(key_pem).map_err(|_| LoadProblem::Pem("private key file is not UTF-8".into()))?;
        let key = KeyPair::from_pem(key_pem).map_err(LoadProblem::Key)?;
        Self::from_parts(id, cert_der, key)
    }

    fn from_parts(id: u64, cert_der: CertificateDer<'static>, key: KeyPair) -> Result<CaGeneration, LoadProblem> {
        let (rest, cert) = x509_parser::certificate::X509Certificate::from_der(&cert_der)
            .map_err(|e| LoadProblem::Cert(e.to_string()))?;
        if !rest.is_empty() {
            return Err(LoadProblem::Cert("trailing bytes after the certificate".into()));
        }
        let spki = &cert.tbs_certificate.subject_pki;
        let point: &[u8] = &spki.subject_public_key.data;
        if point != key.public_key_raw() {
            return Err(LoadProblem::Cert("the private key does not match the certificate".into()));
        }
        // Uncompressed P-256 point: 0x04 || X (32) || Y (32).
        if point.len() != 65 || point[0] != 0x04 {
            return Err(LoadProblem::Cert("CA key is not an uncompressed P-256 point".into()));
        }
        let not_before = cert.validity().not_before.timestamp();
        let not_after = cert.validity().not_after.timestamp();
        if not_before < 0 || not_after <= not_before {
            return Err(LoadProblem::Cert("validity period is not usable".into()));
        }
        let jwk_x = point[1..33].to_vec();
        let jwk_y = point[33..].to_vec();
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| LoadProblem::Cert(e.to_string()))?;
        Ok(CaGeneration {
            id,
            fingerprint: util::sha256_hex(&cert_der),
            cert_der,
            not_before_unix: not_before as u64,
            not_after_unix: not_after as u64,
            jwk_x,
            jwk_y,
            issuer,
        })
    }

    pub fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    pub fn cert_pem(&self) -> String {
        util::pem_encode("CERTIFICATE", &self.cert_der)
    }
}
