//! The provider's ES256 signing key (P-256, aws-lc-rs), persisted as PKCS#8 with mode 0600,
//! and its public JWKS.

use std::path::Path;

use anyhow::Context;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

pub struct SigningKey {
    pair: EcdsaKeyPair,
    kid: String,
    rng: SystemRandom,
}

impl SigningKey {
    pub fn load_or_create(path: &Path) -> anyhow::Result<SigningKey> {
        let pkcs8 = Self::load_or_create_pkcs8(path)?;
        Self::from_pkcs8(&pkcs8).with_context(|| format!("{} is not a P-256 PKCS#8 key", path.display()))
    }

    /// The PKCS#8 bytes of the key at `path`, generated (mode 0600) when there is none.
    pub fn load_or_create_pkcs8(path: &Path) -> anyhow::Result<Vec<u8>> {
        Ok(match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                    .map_err(|_| anyhow::anyhow!("generating the OIDC signing key failed"))?;
                write_private(path, doc.as_ref())?;
                tracing::info!(path = %path.display(), "created the OIDC signing key");
                doc.as_ref().to_vec()
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        })
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> anyhow::Result<SigningKey> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .map_err(|e| anyhow::anyhow!("invalid key: {e}"))?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, pair.public_key().as_ref());
        let kid = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12]);
        Ok(SigningKey { pair, kid, rng: SystemRandom::new() })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A JWS compact token over `header` (alg and kid are set here) and `claims`.
    pub fn sign(&self, mut header: serde_json::Value, claims: &serde_json::Value) -> String {
        header["alg"] = "ES256".into();
        header["kid"] = self.kid.clone().into();
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig = self.pair.sign(&self.rng, input.as_bytes()).expect("ECDSA signing with a valid key");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    pub fn jwks_json(&self) -> String {
        let p = self.pair.public_key().as_ref();
        serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..65]),
        }]})
        .to_string()
    }
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
