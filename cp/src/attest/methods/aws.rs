//! AWS instance identity documents (method `AWSIID`).
//!
//! The daemon sends the plaintext document and the base64 signature from
//! `/latest/dynamic/instance-identity/signature`: an RSA PKCS#1 v1.5 signature over the
//! document's SHA-256 (AWS: "verify with `openssl dgst -sha256 -verify`"). It must verify with
//! the public key of one of the configured AWS RSA certificates. AWS's regional RSA
//! certificates for this signature carry 1024-bit keys, so this method (and only this one)
//! accepts RSA keys from 1024 bits; the key always comes from the operator's configuration,
//! never from the proof. The document's `accountId` and `region` are then checked against the
//! allow-lists. Trust on first use: see [`super::Reattestation::TrustOnFirstUse`].

use std::collections::BTreeMap;

use aws_lc_rs::signature::{UnparsedPublicKey, RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use riptides_wire::resource::auth::{AwsIidSettings, VerifierMethod};
use serde_json::Value;
use x509_parser::prelude::FromDer as _;

use super::{invalid, make_id, Checked};
use crate::attest::jose::shown;
use crate::attest::AttestError;

const M: VerifierMethod = VerifierMethod::AwsIid;
/// Real documents are well under 1 KiB.
const MAX_DOCUMENT: usize = 16 * 1024;
const MAX_SIGNATURE: usize = 4 * 1024;

/// The RSA public keys (PKCS#1 DER) of the configured certificates.
fn keys(pem: &str) -> Result<Vec<Vec<u8>>, AttestError> {
    let mut out = Vec::new();
    for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
        let cert = cert.map_err(|e| AttestError::Misconfigured(format!("awsIID.certificates: {e}")))?;
        let (_, c) = x509_parser::certificate::X509Certificate::from_der(&cert)
            .map_err(|e| AttestError::Misconfigured(format!("awsIID.certificates: not a certificate: {e}")))?;
        let spki = c.public_key();
        if spki.algorithm.algorithm != x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION {
            return Err(AttestError::Misconfigured("awsIID.certificates: only RSA certificates are supported".into()));
        }
        out.push(spki.subject_public_key.data.to_vec());
    }
    if out.is_empty() {
        return Err(AttestError::Misconfigured("awsIID.certificates holds no certificate".into()));
    }
    Ok(out)
}

fn field<'a>(doc: &'a Value, name: &str) -> Option<&'a str> {
    doc.get(name).and_then(Value::as_str).filter(|s| !s.is_empty() && s.len() <= 256)
}

pub(super) fn check(s: &AwsIidSettings, document: &str, signature: &str) -> Result<Checked, AttestError> {
    if document.len() > MAX_DOCUMENT || signature.len() > MAX_SIGNATURE {
        return Err(invalid(M, "size", "the document or its signature is too large"));
    }
    let sig_text: String = signature.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let sig = STANDARD.decode(sig_text).map_err(|_| invalid(M, "signature", "the signature is not base64"))?;
    let verified = keys(&s.certificates)?.iter().any(|k| {
        UnparsedPublicKey::new(&RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY, k)
            .verify(document.as_bytes(), &sig)
            .is_ok()
    });
    if !verified {
        return Err(invalid(
            M,
            "signature",
            "the document's signature does not verify with the configured AWS certificates",
        ));
    }
    let doc: Value =
        serde_json::from_str(document).map_err(|_| invalid(M, "document", "the signed document is not JSON"))?;
    let account = field(&doc, "accountId").ok_or_else(|| invalid(M, "document", "no accountId"))?;
    let region = field(&doc, "region").ok_or_else(|| invalid(M, "document", "no region"))?;
    let instance = field(&doc, "instanceId").ok_or_else(|| invalid(M, "document", "no instanceId"))?;
    if !s.accounts.is_empty() && !s.accounts.iter().any(|a| a == account) {
        return Err(invalid(M, "account", format!("account {} is not allowed", shown(account))));
    }
    if !s.regions.is_empty() && !s.regions.iter().any(|r| r == region) {
        return Err(invalid(M, "region", format!("region {} is not allowed", shown(region))));
    }
    let mut claims = BTreeMap::new();
    for (claim, key) in [
        ("account", "accountId"),
        ("region", "region"),
        ("instance_id", "instanceId"),
        ("image_id", "imageId"),
        ("instance_type", "instanceType"),
        ("availability_zone", "availabilityZone"),
        ("architecture", "architecture"),
    ] {
        if let Some(v) = field(&doc, key) {
            claims.insert(claim.to_owned(), v.to_owned());
        }
    }
    Ok(Checked { id: make_id("aws", &[account, region, instance]), claims })
}
