//! Test-made proofs for every attestation method: JWT issuers with their own JWKS, an RSA key
//! and certificate standing in for AWS's, an X.509 CA, an SSH CA. Shared by the control
//! plane's and the daemon's tests (`#[path]`).
#![allow(dead_code)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING,
    ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use serde_json::{json, Value};

/// Base64 without a crate (the daemon's tests share this file and have no base64 dependency).
pub struct B64(&'static [u8; 64], bool);
pub const STANDARD: B64 = B64(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", true);
pub const URL_SAFE_NO_PAD: B64 = B64(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", false);

impl B64 {
    pub fn encode(&self, data: impl AsRef<[u8]>) -> String {
        let mut out = String::new();
        for chunk in data.as_ref().chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(self.0[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
            if self.1 {
                out.push_str(&"=="[..2 - (chunk.len() - 1)]);
            }
        }
        out
    }

    pub fn decode(&self, s: &str) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0u32);
        for c in s.bytes().filter(|c| *c != b'=') {
            let v = self.0.iter().position(|x| *x == c).ok_or("not base64")? as u32;
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        Ok(out)
    }
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn b64u(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// A JWT issuer with an ES256 (or RS256) key and its JWKS.
pub struct Issuer {
    pub iss: String,
    kid: String,
    ec: Option<EcdsaKeyPair>,
    rsa: Option<RsaKeyPair>,
}

impl Issuer {
    pub fn es256(iss: &str) -> Issuer {
        let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        Issuer { iss: iss.into(), kid: format!("k{}", now_unix() % 1000), ec: Some(ec), rsa: None }
    }

    pub fn rs256(iss: &str) -> Issuer {
        let der = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap().serialize_der();
        Issuer { iss: iss.into(), kid: "rsa-1".into(), ec: None, rsa: Some(RsaKeyPair::from_pkcs8(&der).unwrap()) }
    }

    pub fn jwks(&self) -> String {
        let k = if let Some(ec) = &self.ec {
            let p = ec.public_key().as_ref();
            json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "x": b64u(&p[1..33]), "y": b64u(&p[33..])})
        } else {
            let c: aws_lc_rs::rsa::PublicKeyComponents<Vec<u8>> = self.rsa.as_ref().unwrap().public_key().into();
            json!({"kty": "RSA", "kid": self.kid, "alg": "RS256", "n": b64u(&c.n), "e": b64u(&c.e)})
        };
        json!({ "keys": [k] }).to_string()
    }

    /// A token with `claims` plus `iss`, `iat` and `exp` (in `ttl` seconds) unless given.
    pub fn token(&self, claims: Value) -> String {
        let mut c = claims;
        let now = now_unix();
        for (k, v) in [("iss", json!(self.iss)), ("iat", json!(now)), ("exp", json!(now + 300))] {
            if c.get(k).is_none() {
                c[k] = v;
            }
        }
        let alg = if self.ec.is_some() { "ES256" } else { "RS256" };
        let input = format!(
            "{}.{}",
            b64u(json!({"alg": alg, "kid": self.kid, "typ": "JWT"}).to_string().as_bytes()),
            b64u(c.to_string().as_bytes())
        );
        let sig = if let Some(ec) = &self.ec {
            ec.sign(&SystemRandom::new(), input.as_bytes()).unwrap().as_ref().to_vec()
        } else {
            let rsa = self.rsa.as_ref().unwrap();
            let mut sig = vec![0u8; rsa.public_modulus_len()];
            rsa.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut sig).unwrap();
            sig
        };
        format!("{input}.{}", b64u(&sig))
    }
}

/// An RSA key and self-signed certificate standing in for AWS's instance identity signer.
pub struct AwsSigner {
    pub cert_pem: String,
    key: RsaKeyPair,
}

impl AwsSigner {
    pub fn new() -> AwsSigner {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let key = RsaKeyPair::from_pkcs8(&kp.serialize_der()).unwrap();
        let cert = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().self_signed(&kp).unwrap();
        AwsSigner { cert_pem: cert.pem(), key }
    }

    pub fn document(account: &str, region: &str, instance: &str) -> String {
        // Pretty-printed as AWS serves it; the bytes are what is signed.
        serde_json::to_string_pretty(&json!({
            "accountId": account,
            "architecture": "x86_64",
            "availabilityZone": format!("{region}a"),
            "imageId": "ami-0123456789abcdef0",
            "instanceId": instance,
            "instanceType": "t3.micro",
            "pendingTime": "2026-01-01T00:00:00Z",
            "privateIp": "10.1.2.3",
            "region": region,
            "version": "2017-09-30",
        }))
        .unwrap()
    }

    /// The base64 signature as `/latest/dynamic/instance-identity/signature` serves it (with
    /// line breaks).
    pub fn sign(&self, document: &str) -> String {
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), document.as_bytes(), &mut sig).unwrap();
        let b = STANDARD.encode(sig);
        b.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join("\n")
    }
}

/// An X.509 CA for proof of possession, and leaves it issues.
pub struct X509Ca {
    pub pem: String,
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

pub struct Leaf {
    pub chain_der: Vec<Vec<u8>>,
    pub cert_pem: String,
    /// PKCS#8 PEM of the leaf's P-256 key.
    pub key_pem: String,
    key: EcdsaKeyPair,
}

impl Leaf {
    /// ECDSA P-256 (ASN.1) signature over `msg`.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.key.sign(&SystemRandom::new(), msg).unwrap().as_ref().to_vec()
    }
}

impl X509Ca {
    pub fn new(name: &str) -> X509Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let cert = p.self_signed(&key).unwrap();
        X509Ca { pem: cert.pem(), cert, key }
    }

    /// A leaf for `cn`, valid from `not_before` to `not_after` (Unix seconds).
    pub fn leaf_valid(&self, cn: &str, not_before: i64, not_after: i64) -> Leaf {
        let kp = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        p.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_der(self.cert.der(), &self.key).unwrap();
        let cert = p.signed_by(&kp, &issuer).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &kp.serialize_der()).unwrap();
        Leaf { chain_der: vec![cert.der().to_vec()], cert_pem: cert.pem(), key_pem: kp.serialize_pem(), key }
    }

    pub fn leaf(&self, cn: &str) -> Leaf {
        let now = now_unix() as i64;
        self.leaf_valid(cn, now - 3600, now + 86400)
    }
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// An Ed25519 SSH CA.
pub struct SshCa {
    key: Ed25519KeyPair,
}

/// An Ed25519 host key with its certificate.
pub struct SshHost {
    pub cert_line: String,
    seed: Vec<u8>,
    key: Ed25519KeyPair,
}

fn ed_blob(pk: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    put_string(&mut b, b"ssh-ed25519");
    put_string(&mut b, pk);
    b
}

fn ed_sig_blob(sig: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    put_string(&mut b, b"ssh-ed25519");
    put_string(&mut b, sig);
    b
}

impl SshCa {
    pub fn new() -> SshCa {
        SshCa { key: Ed25519KeyPair::generate().unwrap() }
    }

    /// The CA's `authorized_keys` line.
    pub fn line(&self) -> String {
        format!("ssh-ed25519 {} test-ca", STANDARD.encode(ed_blob(self.key.public_key().as_ref())))
    }

    /// A host certificate (type 2 unless `cert_type` says otherwise).
    pub fn host(&self, principals: &[&str], valid_after: u64, valid_before: u64, cert_type: u32) -> SshHost {
        let seed = {
            let mut s = vec![0u8; 32];
            aws_lc_rs::rand::fill(&mut s).unwrap();
            s
        };
        let key = Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
        let mut b = Vec::new();
        put_string(&mut b, b"ssh-ed25519-cert-v01@openssh.com");
        put_string(&mut b, &[7u8; 32]);
        put_string(&mut b, key.public_key().as_ref());
        b.extend_from_slice(&42u64.to_be_bytes());
        b.extend_from_slice(&cert_type.to_be_bytes());
        put_string(&mut b, b"host-key-id");
        let mut p = Vec::new();
        for pr in principals {
            put_string(&mut p, pr.as_bytes());
        }
        put_string(&mut b, &p);
        b.extend_from_slice(&valid_after.to_be_bytes());
        b.extend_from_slice(&valid_before.to_be_bytes());
        put_string(&mut b, b"");
        put_string(&mut b, b"");
        put_string(&mut b, b"");
        put_string(&mut b, &ed_blob(self.key.public_key().as_ref()));
        let sig = self.key.sign(&b);
        put_string(&mut b, &ed_sig_blob(sig.as_ref()));
        SshHost { cert_line: format!("ssh-ed25519-cert-v01@openssh.com {} host", STANDARD.encode(b)), seed, key }
    }
}

impl SshHost {
    /// An SSH signature blob over `msg`.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        ed_sig_blob(self.key.sign(msg).as_ref())
    }

    /// The host key as an unencrypted OpenSSH private key file.
    pub fn private_key_file(&self) -> String {
        let pk = self.key.public_key().as_ref().to_vec();
        let mut body = Vec::new();
        body.extend_from_slice(b"openssh-key-v1\0");
        put_string(&mut body, b"none");
        put_string(&mut body, b"none");
        put_string(&mut body, b"");
        body.extend_from_slice(&1u32.to_be_bytes());
        put_string(&mut body, &ed_blob(&pk));
        let mut private = Vec::new();
        private.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        private.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        put_string(&mut private, b"ssh-ed25519");
        put_string(&mut private, &pk);
        let mut sk = self.seed.clone();
        sk.extend_from_slice(&pk);
        put_string(&mut private, &sk);
        put_string(&mut private, b"host");
        let mut pad = 1u8;
        while private.len() % 8 != 0 {
            private.push(pad);
            pad += 1;
        }
        put_string(&mut body, &private);
        let b64 = STANDARD.encode(body);
        let lines: Vec<&str> = b64.as_bytes().chunks(70).map(|c| std::str::from_utf8(c).unwrap()).collect();
        format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n", lines.join("\n"))
    }
}

/// A CSR for a fresh P-256 key, and `sha256:<hex>` of its SubjectPublicKeyInfo.
pub fn csr() -> (Vec<u8>, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().serialize_request(&key).unwrap();
    let spki = riptides_wire::resource::auth::sha256_tagged(&rcgen::PublicKeyData::subject_public_key_info(&key));
    (csr.der().to_vec(), spki)
}
