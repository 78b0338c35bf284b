//! Private keys the proof-of-possession plugins sign challenges with: PEM keys for X.509
//! (PKCS#8 ECDSA P-256/P-384, Ed25519 or RSA; SEC1 EC keys) and unencrypted OpenSSH Ed25519
//! host keys. Signing is aws-lc-rs, like everything else.

use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::PrivateKeyDer;

/// A key that answers challenges.
pub enum Signer {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
    /// An SSH host key: answers are SSH signature blobs.
    SshEd25519(Ed25519KeyPair),
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Signer::Ecdsa(_) => "ecdsa",
            Signer::Ed25519(_) => "ed25519",
            Signer::Rsa(_) => "rsa",
            Signer::SshEd25519(_) => "ssh-ed25519",
        };
        write!(f, "Signer({kind})")
    }
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

impl Signer {
    /// X.509 key from a PEM file.
    pub fn from_pem_file(path: &Path) -> Result<Signer> {
        let key = PrivateKeyDer::from_pem_file(path).map_err(|e| anyhow!("reading key {}: {e}", path.display()))?;
        let der = key.secret_der();
        match &key {
            PrivateKeyDer::Pkcs8(_) => {
                for alg in [&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &signature::ECDSA_P384_SHA384_ASN1_SIGNING] {
                    if let Ok(k) = EcdsaKeyPair::from_pkcs8(alg, der) {
                        return Ok(Signer::Ecdsa(k));
                    }
                }
                if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
                    return Ok(Signer::Ed25519(k));
                }
                RsaKeyPair::from_pkcs8(der).map(Signer::Rsa).map_err(|_| anyhow!("{}: unsupported key", path.display()))
            }
            PrivateKeyDer::Sec1(_) => {
                for alg in [&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &signature::ECDSA_P384_SHA384_ASN1_SIGNING] {
                    if let Ok(k) = EcdsaKeyPair::from_private_key_der(alg, der) {
                        return Ok(Signer::Ecdsa(k));
                    }
                }
                bail!("{}: unsupported EC key", path.display())
            }
            PrivateKeyDer::Pkcs1(_) => RsaKeyPair::from_der(der)
                .map(Signer::Rsa)
                .map_err(|_| anyhow!("{}: unsupported RSA key", path.display())),
            _ => bail!("{}: unsupported key format", path.display()),
        }
    }

    /// An unencrypted OpenSSH Ed25519 private key file.
    pub fn from_openssh_file(path: &Path) -> Result<Signer> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        parse_openssh(&text).with_context(|| format!("{} is not a usable OpenSSH Ed25519 key", path.display()))
    }

    /// The answer to a challenge over `payload`.
    pub fn sign(&self, payload: &[u8]) -> Result<Vec<u8>> {
        let rng = SystemRandom::new();
        Ok(match self {
            Signer::Ecdsa(k) => k.sign(&rng, payload).map_err(|_| anyhow!("signing failed"))?.as_ref().to_vec(),
            Signer::Ed25519(k) => k.sign(payload).as_ref().to_vec(),
            Signer::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, payload, &mut sig).map_err(|_| anyhow!("signing failed"))?;
                sig
            }
            Signer::SshEd25519(k) => {
                let mut blob = Vec::new();
                put_string(&mut blob, b"ssh-ed25519");
                put_string(&mut blob, k.sign(payload).as_ref());
                blob
            }
        })
    }
}

/// Standard base64 (with or without padding; whitespace ignored).
pub fn base64_decode(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => bail!("not base64"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            bail!("truncated");
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Ok(h)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into()?))
    }
    fn string(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

fn parse_openssh(text: &str) -> Result<Signer> {
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let raw = base64_decode(&body)?;
    let rest = raw.strip_prefix(b"openssh-key-v1\0".as_slice()).ok_or_else(|| anyhow!("not an openssh-key-v1 file"))?;
    let mut r = Reader(rest);
    if r.string()? != b"none" {
        bail!("encrypted keys are not supported (the daemon reads the host key unattended)");
    }
    let _kdf = r.string()?;
    let _kdf_opts = r.string()?;
    if r.u32()? != 1 {
        bail!("exactly one key is supported");
    }
    let _public = r.string()?;
    let mut p = Reader(r.string()?);
    if p.u32()? != p.u32()? {
        bail!("corrupt private section");
    }
    if p.string()? != b"ssh-ed25519" {
        bail!("only ssh-ed25519 host keys are supported");
    }
    let pk = p.string()?;
    let sk = p.string()?;
    if pk.len() != 32 || sk.len() != 64 {
        bail!("malformed Ed25519 key");
    }
    let k = Ed25519KeyPair::from_seed_and_public_key(&sk[..32], pk).map_err(|e| anyhow!("{e}"))?;
    Ok(Signer::SshEd25519(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVs\nbG8").unwrap(), b"hello");
        assert!(base64_decode("a*b").is_err());
    }
}
