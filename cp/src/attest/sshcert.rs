//! OpenSSH certificates (PROTOCOL.certkeys) and SSH signatures, parsed by hand and verified
//! with aws-lc-rs.
//!
//! Why not the `ssh-key` crate: it verifies signatures only through its RustCrypto backends
//! (features `ed25519` → ed25519-dalek, `p256`, `rsa`), i.e. a second crypto provider beside
//! aws-lc-rs. Used without them it could only parse, still pulling its own sha2/cipher
//! crates, and it exposes no "bytes covered by the CA signature" to verify with aws-lc-rs, so
//! the signed prefix would be carved out by hand anyway. The wire format is small: strings,
//! integers and mpints.
//!
//! Supported: `ssh-ed25519`, `ecdsa-sha2-nistp256` and `ssh-rsa` keys (certificates
//! `*-cert-v01@openssh.com`); signatures `ssh-ed25519`, `ecdsa-sha2-nistp256`,
//! `rsa-sha2-256` and `rsa-sha2-512` (SHA-1 `ssh-rsa` signatures are refused).

use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// Longest certificate line accepted.
pub const MAX_CERT_LINE: usize = 16 * 1024;

/// A reader of SSH wire-format fields.
pub struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Reader { b }
    }

    pub fn remaining(&self) -> usize {
        self.b.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.b.len() < n {
            return Err("truncated".into());
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }

    pub fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().map_err(|_| "truncated")?))
    }

    pub fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().map_err(|_| "truncated")?))
    }

    pub fn string(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    pub fn text(&mut self) -> Result<String, String> {
        String::from_utf8(self.string()?.to_vec()).map_err(|_| "a text field is not UTF-8".to_owned())
    }
}

/// An mpint as unsigned big-endian bytes without leading zeros.
fn unsigned(m: &[u8]) -> &[u8] {
    let first = m.iter().position(|b| *b != 0).unwrap_or(m.len());
    &m[first..]
}

/// A public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    Ed25519(Vec<u8>),
    /// Uncompressed SEC1 point.
    EcdsaP256(Vec<u8>),
    Rsa {
        e: Vec<u8>,
        n: Vec<u8>,
    },
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

impl PublicKey {
    /// Reads the key fields that follow the type name (in a key blob or a certificate).
    fn read_fields(kind: &str, r: &mut Reader<'_>) -> Result<PublicKey, String> {
        match kind {
            "ssh-ed25519" => {
                let k = r.string()?;
                if k.len() != 32 {
                    return Err("an Ed25519 key is 32 bytes".into());
                }
                Ok(PublicKey::Ed25519(k.to_vec()))
            }
            "ecdsa-sha2-nistp256" => {
                if r.string()? != b"nistp256" {
                    return Err("curve is not nistp256".into());
                }
                let q = r.string()?;
                if q.len() != 65 || q[0] != 4 {
                    return Err("not an uncompressed P-256 point".into());
                }
                Ok(PublicKey::EcdsaP256(q.to_vec()))
            }
            "ssh-rsa" => {
                let e = unsigned(r.string()?).to_vec();
                let n = unsigned(r.string()?).to_vec();
                Ok(PublicKey::Rsa { e, n })
            }
            other => Err(format!("key type {:?} is not supported", crate::attest::jose::shown(other))),
        }
    }

    /// Parses a public key blob (`string type, fields...`).
    pub fn from_blob(blob: &[u8]) -> Result<PublicKey, String> {
        let mut r = Reader::new(blob);
        let kind = r.text()?;
        let k = Self::read_fields(&kind, &mut r)?;
        if r.remaining() != 0 {
            return Err("trailing bytes after the key".into());
        }
        Ok(k)
    }

    /// Parses an `authorized_keys` line (`type base64 [comment]`).
    pub fn from_line(line: &str) -> Result<PublicKey, String> {
        let mut parts = line.split_whitespace();
        let (Some(kind), Some(b64)) = (parts.next(), parts.next()) else {
            return Err("not a public key line".into());
        };
        let blob = STANDARD.decode(b64).map_err(|_| "the key is not base64".to_owned())?;
        let k = Self::from_blob(&blob)?;
        if k.type_name() != kind {
            return Err("the key type does not match its line".into());
        }
        Ok(k)
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            PublicKey::Ed25519(_) => "ssh-ed25519",
            PublicKey::EcdsaP256(_) => "ecdsa-sha2-nistp256",
            PublicKey::Rsa { .. } => "ssh-rsa",
        }
    }

    /// The key blob (what fingerprints hash and what a certificate's CA field holds).
    pub fn blob(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_string(&mut out, self.type_name().as_bytes());
        match self {
            PublicKey::Ed25519(k) => put_string(&mut out, k),
            PublicKey::EcdsaP256(q) => {
                put_string(&mut out, b"nistp256");
                put_string(&mut out, q);
            }
            PublicKey::Rsa { e, n } => {
                for m in [e, n] {
                    // mpint: a leading zero when the top bit is set.
                    let mut v = Vec::with_capacity(m.len() + 1);
                    if m.first().is_some_and(|b| b & 0x80 != 0) {
                        v.push(0);
                    }
                    v.extend_from_slice(m);
                    put_string(&mut out, &v);
                }
            }
        }
        out
    }

    /// Verifies an SSH signature blob (`string algorithm, string signature`) over `message`.
    pub fn verify(&self, message: &[u8], sig_blob: &[u8]) -> Result<(), String> {
        let mut r = Reader::new(sig_blob);
        let alg = r.text()?;
        let sig = r.string()?;
        let ok = match (self, alg.as_str()) {
            (PublicKey::Ed25519(k), "ssh-ed25519") => {
                UnparsedPublicKey::new(&signature::ED25519, k).verify(message, sig).is_ok()
            }
            (PublicKey::EcdsaP256(q), "ecdsa-sha2-nistp256") => {
                let mut s = Reader::new(sig);
                let (rr, ss) = (unsigned(s.string()?), unsigned(s.string()?));
                if rr.len() > 32 || ss.len() > 32 {
                    return Err("malformed ECDSA signature".into());
                }
                let mut fixed = [0u8; 64];
                fixed[32 - rr.len()..32].copy_from_slice(rr);
                fixed[64 - ss.len()..].copy_from_slice(ss);
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, q).verify(message, &fixed).is_ok()
            }
            (PublicKey::Rsa { e, n }, "rsa-sha2-256" | "rsa-sha2-512") => {
                let params = if alg == "rsa-sha2-256" {
                    &signature::RSA_PKCS1_2048_8192_SHA256
                } else {
                    &signature::RSA_PKCS1_2048_8192_SHA512
                };
                RsaPublicKeyComponents { n: n.as_slice(), e: e.as_slice() }.verify(params, message, sig).is_ok()
            }
            _ => {
                return Err(format!(
                    "signature algorithm {:?} does not fit a {} key",
                    crate::attest::jose::shown(&alg),
                    self.type_name()
                ))
            }
        };
        if ok {
            Ok(())
        } else {
            Err("the signature does not verify".into())
        }
    }
}

/// `SSH_CERT_TYPE_HOST`.
pub const HOST_CERT: u32 = 2;

/// A parsed certificate; the CA signature is *not* checked by parsing.
#[derive(Debug, Clone)]
pub struct Certificate {
    pub key: PublicKey,
    pub serial: u64,
    /// 1 = user, 2 = host.
    pub cert_type: u32,
    pub key_id: String,
    pub principals: Vec<String>,
    pub valid_after: u64,
    pub valid_before: u64,
    /// Names of critical options (none are understood, so any makes the certificate unusable).
    pub critical_options: Vec<String>,
    /// The CA's public key.
    pub signature_key: PublicKey,
    signed: Vec<u8>,
    signature: Vec<u8>,
}

impl Certificate {
    /// Parses a certificate line (`ssh-ed25519-cert-v01@openssh.com AAAA... [comment]`).
    pub fn parse(line: &str) -> Result<Certificate, String> {
        if line.len() > MAX_CERT_LINE {
            return Err("the certificate is too large".into());
        }
        let mut parts = line.split_whitespace();
        let (Some(kind), Some(b64)) = (parts.next(), parts.next()) else {
            return Err("not a certificate line".into());
        };
        let blob = STANDARD.decode(b64).map_err(|_| "the certificate is not base64".to_owned())?;
        let mut r = Reader::new(&blob);
        let cert_kind = r.text()?;
        if cert_kind != kind {
            return Err("the certificate type does not match its line".into());
        }
        let key_kind = cert_kind.strip_suffix("-cert-v01@openssh.com").ok_or("not an OpenSSH v01 certificate")?;
        let _nonce = r.string()?;
        let key = PublicKey::read_fields(key_kind, &mut r)?;
        let serial = r.u64()?;
        let cert_type = r.u32()?;
        let key_id = r.text()?;
        let mut principals = Vec::new();
        let mut pr = Reader::new(r.string()?);
        while pr.remaining() > 0 {
            principals.push(pr.text()?);
        }
        let valid_after = r.u64()?;
        let valid_before = r.u64()?;
        let mut critical_options = Vec::new();
        let mut cr = Reader::new(r.string()?);
        while cr.remaining() > 0 {
            critical_options.push(cr.text()?);
            let _ = cr.string()?;
        }
        let _extensions = r.string()?;
        let _reserved = r.string()?;
        let signature_key = PublicKey::from_blob(r.string()?)?;
        let signed_len = blob.len() - r.remaining();
        let signature = r.string()?.to_vec();
        if r.remaining() != 0 {
            return Err("trailing bytes after the signature".into());
        }
        Ok(Certificate {
            key,
            serial,
            cert_type,
            key_id,
            principals,
            valid_after,
            valid_before,
            critical_options,
            signature_key,
            signed: blob[..signed_len].to_vec(),
            signature,
        })
    }

    /// Checks the CA's signature over the certificate.
    pub fn verify_signature(&self) -> Result<(), String> {
        self.signature_key.verify(&self.signed, &self.signature)
    }
}
