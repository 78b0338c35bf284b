//! Checking a PKCS#10 certificate signing request before the CA signs anything for it.
//!
//! Only two things are taken from a CSR: its public key and (if present) its SPIFFE ID, which
//! must equal the ID the caller has authorized. Everything else in the request (subject,
//! key usages, extra SANs, any other requested extension) is ignored, because the CA builds
//! every certificate from its own policy. rcgen's `CertificateSigningRequestParams::from_der`
//! is deliberately not used: it copies requested extensions into the certificate parameters
//! and refuses harmless unknown ones.
//!
//! The CSR signature is verified here with aws-lc-rs directly, not through x509-parser's
//! optional `verify` features, so the check cannot silently vanish with a feature change.

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use riptides_wire::spiffe::SpiffeId;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    Oid, OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_SIG_ECDSA_WITH_SHA256,
    OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ED25519, OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_SUBJECT_ALT_NAME,
};
use x509_parser::prelude::FromDer;

use super::error::CsrError;

/// Key types an SVID may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrKeyType {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

/// A CSR's public key in the form rcgen writes into a certificate.
#[derive(Debug, Clone)]
pub(crate) struct CsrPublicKey {
    bits: Vec<u8>,
    alg: &'static rcgen::SignatureAlgorithm,
}

impl rcgen::PublicKeyData for CsrPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.bits
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

impl CheckedCsr {
    /// The key to certify. rcgen serializes the SubjectPublicKeyInfo from the algorithm's
    /// key OIDs (id-ecPublicKey + curve, or id-Ed25519) and these bits.
    pub fn public_key(&self) -> CsrPublicKey {
        let alg = match self.key_type {
            CsrKeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            CsrKeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            CsrKeyType::Ed25519 => &rcgen::PKCS_ED25519,
        };
        CsrPublicKey { bits: self.key_bits.clone(), alg }
    }
}

/// What survives from a CSR once it has been checked.
#[derive(Debug, Clone)]
pub(crate) struct CheckedCsr {
    /// The subjectPublicKey BIT STRING contents (EC point or Ed25519 key).
    pub key_bits: Vec<u8>,
    pub key_type: CsrKeyType,
    /// The CSR's own SPIFFE ID, if it carried a URI SAN.
    pub uri_san: Option<SpiffeId>,
}

/// Parses and checks a DER CSR: well-formed, supported key, valid self-signature, no CA
/// request, at most one URI SAN and that one a valid SPIFFE ID.
pub(crate) fn check_csr(der: &[u8]) -> Result<CheckedCsr, CsrError> {
    let (rest, csr) = X509CertificationRequest::from_der(der).map_err(|e| CsrError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed(format!("{} trailing bytes after the CSR", rest.len())));
    }
    let info = &csr.certification_request_info;
    let spki = &info.subject_pki;

    let key_type = key_type(&spki.algorithm.algorithm, spki.algorithm.parameters.as_ref())?;
    let sig_oid = &csr.signature_algorithm.algorithm;
    let alg = verification_alg(key_type, sig_oid)?;
    UnparsedPublicKey::new(alg, &spki.subject_public_key.data)
        .verify(info.raw, &csr.signature_value.data)
        .map_err(|_| CsrError::BadSignature)?;

    let mut uris: Vec<&str> = Vec::new();
    // Walk every extensionRequest attribute (not just the first, as x509-parser's
    // `requested_extensions` does), so a second attribute cannot smuggle a CA request past us.
    for attr in info.iter_attributes() {
        let ParsedCriAttribute::ExtensionRequest(req) = attr.parsed_attribute() else {
            continue;
        };
        for ext in &req.extensions {
            match ext.parsed_extension() {
                ParsedExtension::BasicConstraints(bc) if bc.ca => {
                    return Err(CsrError::CaRequested);
                }
                ParsedExtension::BasicConstraints(_) => {}
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        if let GeneralName::URI(u) = name {
                            uris.push(u);
                        }
                    }
                }
                _ if ext.oid == OID_X509_EXT_BASIC_CONSTRAINTS => {
                    return Err(CsrError::BadBasicConstraints);
                }
                _ if ext.oid == OID_X509_EXT_SUBJECT_ALT_NAME => {
                    return Err(CsrError::BadSubjectAltName);
                }
                // Anything else requested is simply not granted.
                _ => {}
            }
        }
    }

    let uri_san = match uris.as_slice() {
        [] => None,
        [one] => {
            Some(SpiffeId::parse(one).map_err(|source| CsrError::InvalidSpiffeId { uri: (*one).to_owned(), source })?)
        }
        many => return Err(CsrError::MultipleUriSans(many.len())),
    };

    Ok(CheckedCsr { key_bits: spki.subject_public_key.data.to_vec(), key_type, uri_san })
}

fn key_type(alg: &Oid<'_>, params: Option<&x509_parser::asn1_rs::Any<'_>>) -> Result<CsrKeyType, CsrError> {
    if *alg == OID_SIG_ED25519 {
        return Ok(CsrKeyType::Ed25519);
    }
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = params.and_then(|p| p.as_oid().ok());
        return match curve {
            Some(c) if c == OID_EC_P256 => Ok(CsrKeyType::EcdsaP256),
            Some(c) if c == OID_NIST_EC_P384 => Ok(CsrKeyType::EcdsaP384),
            Some(c) => Err(CsrError::UnsupportedKey(format!("EC curve {c}"))),
            None => Err(CsrError::UnsupportedKey("EC key without a named curve".into())),
        };
    }
    Err(CsrError::UnsupportedKey(format!("algorithm {alg}")))
}

fn verification_alg(key: CsrKeyType, sig: &Oid<'_>) -> Result<&'static dyn VerificationAlgorithm, CsrError> {
    let alg: Option<&'static dyn VerificationAlgorithm> = match key {
        CsrKeyType::EcdsaP256 if *sig == OID_SIG_ECDSA_WITH_SHA256 => Some(&signature::ECDSA_P256_SHA256_ASN1),
        CsrKeyType::EcdsaP256 if *sig == OID_SIG_ECDSA_WITH_SHA384 => Some(&signature::ECDSA_P256_SHA384_ASN1),
        CsrKeyType::EcdsaP384 if *sig == OID_SIG_ECDSA_WITH_SHA384 => Some(&signature::ECDSA_P384_SHA384_ASN1),
        CsrKeyType::EcdsaP384 if *sig == OID_SIG_ECDSA_WITH_SHA256 => Some(&signature::ECDSA_P384_SHA256_ASN1),
        CsrKeyType::Ed25519 if *sig == OID_SIG_ED25519 => Some(&signature::ED25519),
        _ => None,
    };
    alg.ok_or_else(|| CsrError::UnsupportedSignatureAlgorithm {
        algorithm: sig.to_id_string(),
        key: format!("{key:?}"),
    })
}
