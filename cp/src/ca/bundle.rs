//! The trust bundle: every root currently published (prepared, active and old), as PEM, as a
//! SPIFFE bundle (JWKS) and as rustls trust anchors.

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use riptides_wire::spiffe::TrustDomain;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::FromDer;

use super::util;

/// Why a set of certificates or a SPIFFE bundle document cannot form a [`TrustBundle`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BundleError {
    #[error("root certificate {index} cannot be parsed: {reason}")]
    BadCertificate { index: usize, reason: String },
    #[error("root certificate {index} does not have a P-256 EC key (only P-256 roots are published as JWKs)")]
    UnsupportedRootKey { index: usize },
    #[error("SPIFFE bundle JSON is invalid: {0}")]
    Json(String),
    #[error("SPIFFE bundle key {index} is not usable: {reason}")]
    BadKey { index: usize, reason: String },
}

/// One published root with the coordinates its JWK needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Root {
    der: CertificateDer<'static>,
    x: Vec<u8>,
    y: Vec<u8>,
}

/// A snapshot of the trust domain's published roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustBundle {
    trust_domain: TrustDomain,
    roots: Vec<Root>,
    sequence: u64,
    refresh_hint: Duration,
}

/// `spiffe_refresh_hint`/`spiffe_sequence` plus JWKS `keys`, as the SPIFFE Trust Domain and
/// Bundle spec lays them out.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BundleDoc {
    keys: Vec<Jwk>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spiffe_sequence: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spiffe_refresh_hint: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Jwk {
    #[serde(rename = "use")]
    use_: String,
    kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    y: Option<String>,
    #[serde(default)]
    x5c: Vec<String>,
}

impl TrustBundle {
    /// Builds a bundle from DER roots. Each must be a certificate with a P-256 key, since the
    /// JWKS form names the curve and coordinates.
    pub fn new(
        trust_domain: TrustDomain,
        roots: Vec<CertificateDer<'static>>,
        sequence: u64,
        refresh_hint: Duration,
    ) -> Result<Self, BundleError> {
        let roots = roots
            .into_iter()
            .enumerate()
            .map(|(index, der)| {
                let (x, y) = p256_coordinates(&der, index)?;
                Ok(Root { der, x, y })
            })
            .collect::<Result<Vec<_>, BundleError>>()?;
        Ok(TrustBundle { trust_domain, roots, sequence, refresh_hint })
    }

    /// For the CA, which already knows the coordinates of its own roots.
    pub(crate) fn from_parts(
        trust_domain: TrustDomain,
        roots: Vec<(CertificateDer<'static>, Vec<u8>, Vec<u8>)>,
        sequence: u64,
        refresh_hint: Duration,
    ) -> Self {
        let roots = roots.into_iter().map(|(der, x, y)| Root { der, x, y }).collect();
        TrustBundle { trust_domain, roots, sequence, refresh_hint }
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// `spiffe_sequence`: grows whenever the set of roots changes.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    pub fn refresh_hint(&self) -> Duration {
        self.refresh_hint
    }

    /// The roots as rustls trust anchors' source certificates.
    pub fn roots(&self) -> Vec<CertificateDer<'static>> {
        self.roots.iter().map(|r| r.der.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.roots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    pub fn contains(&self, der: &[u8]) -> bool {
        self.roots.iter().any(|r| r.der.as_ref() == der)
    }

    /// A rustls root store holding every published root, for building verifiers.
    pub fn root_store(&self) -> rustls::RootCertStore {
        let mut store = rustls::RootCertStore::empty();
        // Our own roots always parse; a root webpki rejects is skipped rather than fatal.
        let _ = store.add_parsable_certificates(self.roots());
        store
    }

    /// Concatenated PEM certificates (what `ca.crt` files and kubeconfigs carry).
    pub fn to_pem(&self) -> String {
        self.roots.iter().map(|r| util::pem_encode("CERTIFICATE", &r.der)).collect()
    }

    /// The SPIFFE bundle document (JWKS with `use: "x509-svid"` keys).
    pub fn to_spiffe_bundle_json(&self) -> String {
        let doc = BundleDoc {
            keys: self
                .roots
                .iter()
                .map(|r| Jwk {
                    use_: "x509-svid".into(),
                    kty: "EC".into(),
                    crv: Some("P-256".into()),
                    x: Some(URL_SAFE_NO_PAD.encode(&r.x)),
                    y: Some(URL_SAFE_NO_PAD.encode(&r.y)),
                    x5c: vec![STANDARD.encode(&r.der)],
                })
                .collect(),
            spiffe_sequence: Some(self.sequence),
            spiffe_refresh_hint: Some(self.refresh_hint.as_secs()),
        };
        // Serializing plain strings and integers cannot fail.
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    }

    /// Reads a SPIFFE bundle document (the daemon's side of [`Self::to_spiffe_bundle_json`]).
    /// Keys whose `use` is not `x509-svid` (JWT keys) are skipped; each X.509 key must carry
    /// exactly one certificate in `x5c`, whose key must match the JWK coordinates.
    pub fn from_spiffe_bundle_json(trust_domain: TrustDomain, json: &str) -> Result<Self, BundleError> {
        let doc: BundleDoc = serde_json::from_str(json).map_err(|e| BundleError::Json(e.to_string()))?;
        let mut roots = Vec::new();
        for (index, key) in doc.keys.iter().enumerate() {
            if key.use_ != "x509-svid" {
                continue;
            }
            let bad = |reason: &str| BundleError::BadKey { index, reason: reason.into() };
            let [cert] = key.x5c.as_slice() else {
                return Err(bad("x509-svid key must have exactly one x5c certificate"));
            };
            let der = STANDARD.decode(cert).map_err(|_| bad("x5c is not base64"))?;
            let der = CertificateDer::from(der);
            let (x, y) = p256_coordinates(&der, index)?;
            let jx = key.x.as_deref().map(|s| URL_SAFE_NO_PAD.decode(s));
            let jy = key.y.as_deref().map(|s| URL_SAFE_NO_PAD.decode(s));
            if !matches!((jx, jy), (Some(Ok(jx)), Some(Ok(jy))) if jx == x && jy == y) {
                return Err(bad("JWK coordinates do not match the x5c certificate"));
            }
            roots.push(Root { der, x, y });
        }
        Ok(TrustBundle {
            trust_domain,
            roots,
            sequence: doc.spiffe_sequence.unwrap_or(0),
            refresh_hint: Duration::from_secs(doc.spiffe_refresh_hint.unwrap_or(0)),
        })
    }
}

fn p256_coordinates(der: &[u8], index: usize) -> Result<(Vec<u8>, Vec<u8>), BundleError> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|e| BundleError::BadCertificate { index, reason: e.to_string() })?;
    let spki = &cert.tbs_certificate.subject_pki;
    let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
    let point: &[u8] = &spki.subject_public_key.data;
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY
        || curve != Some(OID_EC_P256)
        || point.len() != 65
        || point[0] != 0x04
    {
        return Err(BundleError::UnsupportedRootKey { index });
    }
    Ok((point[1..33].to_vec(), point[33..].to_vec()))
}
