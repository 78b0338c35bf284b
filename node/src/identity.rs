//! X509-SVIDs held by the daemon: keys generated here (P-256, never sent anywhere), CSRs, and
//! validity parsing.

use std::fmt;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context as _, Result};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};
use riptides_wire::tls::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

/// A fresh P-256 key.
pub fn new_key() -> Result<KeyPair> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating a P-256 key")
}

/// A PKCS#10 CSR (DER) for `key`, with `spiffe_id` as its URI SAN when given. The CP uses only
/// the public key and the (checked) SPIFFE ID.
pub fn csr_der(key: &KeyPair, spiffe_id: Option<&str>) -> Result<Vec<u8>> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Some(id) = spiffe_id {
        let uri = rcgen::string::Ia5String::try_from(id).map_err(|e| anyhow!("SPIFFE ID {id} is not IA5: {e}"))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
    }
    let csr = params.serialize_request(key).context("building the CSR")?;
    Ok(csr.der().to_vec())
}

/// NotBefore and NotAfter of a DER certificate.
pub fn validity(der: &[u8]) -> Result<(SystemTime, SystemTime)> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| anyhow!("certificate does not parse: {e}"))?;
    let conv = |t: i64| {
        if t >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(t as u64)
        } else {
            SystemTime::UNIX_EPOCH
        }
    };
    let v = cert.validity();
    Ok((conv(v.not_before.timestamp()), conv(v.not_after.timestamp())))
}

/// Unix seconds of a time (0 before the epoch).
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// An SVID with its private key. `Debug` never shows the key.
#[derive(Clone)]
pub struct Identity {
    pub spiffe_id: String,
    /// PKCS#8 PEM.
    key_pem: String,
    /// Leaf first (DER).
    pub chain_der: Vec<Vec<u8>>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("spiffe_id", &self.spiffe_id)
            .field("not_after", &unix(self.not_after))
            .field("chain_len", &self.chain_der.len())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Checks that the chain is non-empty and the leaf parses; takes validity from the leaf.
    pub fn new(spiffe_id: impl Into<String>, key_pem: String, chain_der: Vec<Vec<u8>>) -> Result<Self> {
        let leaf = chain_der.first().ok_or_else(|| anyhow!("empty certificate chain"))?;
        let (not_before, not_after) = validity(leaf)?;
        KeyPair::from_pem(&key_pem).context("private key does not parse")?;
        Ok(Identity { spiffe_id: spiffe_id.into(), key_pem, chain_der, not_before, not_after })
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        now >= self.not_before && now < self.not_after
    }

    /// Seconds until NotAfter (negative once expired).
    pub fn expires_in_secs(&self, now: SystemTime) -> i64 {
        match self.not_after.duration_since(now) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        }
    }

    /// The chain and key as rustls wants them (client authentication).
    pub fn rustls(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let chain = self.chain_der.iter().map(|c| CertificateDer::from(c.clone())).collect();
        let key = riptides_wire::tls::load_private_key_pem(self.key_pem.as_bytes()).context("loading the SVID key")?;
        Ok((chain, key))
    }
}

/// PEM-encodes DER blocks with `label` (e.g. `CERTIFICATE`).
pub fn pem_encode(label: &str, blocks: &[Vec<u8>]) -> String {
    let mut out = String::new();
    for der in blocks {
        out.push_str(&format!("-----BEGIN {label}-----\n"));
        let b64 = base64(der);
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
    }
    out
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        s.push(T[(n >> 18) as usize & 63] as char);
        s.push(T[(n >> 12) as usize & 63] as char);
        s.push(if chunk.len() > 1 { T[(n >> 6) as usize & 63] as char } else { '=' });
        s.push(if chunk.len() > 2 { T[n as usize & 63] as char } else { '=' });
    }
    s
}

/// Parses PEM certificates into DER blocks.
pub fn pem_decode_certs(pem: &str) -> Result<Vec<Vec<u8>>> {
    let certs = riptides_wire::tls::load_certs_pem(pem.as_bytes()).context("parsing PEM certificates")?;
    Ok(certs.into_iter().map(|c| c.to_vec()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn self_signed_round_trip() {
        let key = new_key().unwrap();
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![SanType::URI("spiffe://example.com/w".try_into().unwrap())];
        let cert = p.self_signed(&key).unwrap();
        let pem = pem_encode("CERTIFICATE", &[cert.der().to_vec()]);
        let back = pem_decode_certs(&pem).unwrap();
        assert_eq!(back, vec![cert.der().to_vec()]);
        let id = Identity::new("spiffe://example.com/w", key.serialize_pem(), back).unwrap();
        assert!(id.is_valid_at(SystemTime::now()));
        assert!(!format!("{id:?}").contains("PRIVATE"));
        id.rustls().unwrap();
        let csr = csr_der(&key, Some("spiffe://example.com/w")).unwrap();
        assert!(!csr.is_empty());
    }
}
