//! A small JWT (JWS compact) and JWKS verifier on aws-lc-rs, for the token methods.
//!
//! Deliberately narrow: RS256, ES256 and EdDSA (Ed25519) only; `none` and every other `alg`
//! refused; the key is found by `kid` (or is the only key of a matching type when the token
//! has no `kid`); `exp` required, `nbf`/`iat` checked, all with a bounded leeway; sizes
//! bounded before anything is decoded. Errors name the failed check and never carry the token.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};

/// Longest token accepted (bytes of the compact form).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Longest JWKS document accepted.
pub const MAX_JWKS_LEN: usize = 256 * 1024;
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 60;
/// Tokens issued (`iat`) further in the future than this are refused.
const MAX_KEYS: usize = 64;

/// Why a token was refused: the check that failed and a detail without secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{check}: {detail}")]
pub struct JwtError {
    pub check: &'static str,
    pub detail: String,
}

fn err(check: &'static str, detail: impl Into<String>) -> JwtError {
    JwtError { check, detail: detail.into() }
}

/// A value from a token shown in an error: at most 64 printable characters.
pub fn shown(v: &str) -> String {
    let mut s: String = v.chars().filter(|c| !c.is_control()).take(64).collect();
    if v.chars().count() > 64 {
        s.push('…');
    }
    s
}

#[derive(Clone)]
enum KeyMaterial {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed SEC1 point (0x04 || x || y).
    P256(Vec<u8>),
    Ed25519(Vec<u8>),
}

impl KeyMaterial {
    fn alg(&self) -> &'static str {
        match self {
            KeyMaterial::Rsa { .. } => "RS256",
            KeyMaterial::P256(_) => "ES256",
            KeyMaterial::Ed25519(_) => "EdDSA",
        }
    }
}

#[derive(Clone)]
struct Jwk {
    kid: Option<String>,
    key: KeyMaterial,
}

/// Parsed verification keys.
#[derive(Clone)]
pub struct Jwks {
    keys: Vec<Jwk>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|k| k.kid.as_deref().unwrap_or("-")).collect();
        f.debug_struct("Jwks").field("kids", &kids).finish()
    }
}

fn b64(field: &str, v: &Value) -> Result<Vec<u8>, String> {
    let s = v.as_str().ok_or_else(|| format!("{field} is missing"))?;
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).map_err(|_| format!("{field} is not base64url"))
}

impl Jwks {
    /// Parses a JWKS document. Keys of unsupported types, and keys marked `use: enc`, are
    /// skipped; a document without one usable key is an error.
    pub fn parse(text: &str) -> Result<Jwks, String> {
        if text.len() > MAX_JWKS_LEN {
            return Err(format!("JWKS is larger than {MAX_JWKS_LEN} bytes"));
        }
        let v: Value = serde_json::from_str(text).map_err(|e| format!("JWKS is not JSON: {e}"))?;
        let list = v["keys"].as_array().ok_or("JWKS has no \"keys\" array")?;
        let mut keys = Vec::new();
        for (i, k) in list.iter().take(MAX_KEYS).enumerate() {
            if k["use"].as_str().is_some_and(|u| u != "sig") {
                continue;
            }
            let kid = k["kid"].as_str().map(str::to_owned);
            let alg = k["alg"].as_str();
            let key = match (k["kty"].as_str(), k["crv"].as_str()) {
                (Some("RSA"), _) if alg.is_none_or(|a| a == "RS256") => KeyMaterial::Rsa {
                    n: b64(&format!("keys[{i}].n"), &k["n"])?,
                    e: b64(&format!("keys[{i}].e"), &k["e"])?,
                },
                (Some("EC"), Some("P-256")) if alg.is_none_or(|a| a == "ES256") => {
                    let x = b64(&format!("keys[{i}].x"), &k["x"])?;
                    let y = b64(&format!("keys[{i}].y"), &k["y"])?;
                    if x.len() != 32 || y.len() != 32 {
                        return Err(format!("keys[{i}]: P-256 coordinates must be 32 bytes"));
                    }
                    let mut p = vec![4u8];
                    p.extend_from_slice(&x);
                    p.extend_from_slice(&y);
                    KeyMaterial::P256(p)
                }
                (Some("OKP"), Some("Ed25519")) if alg.is_none_or(|a| a == "EdDSA") => {
                    let x = b64(&format!("keys[{i}].x"), &k["x"])?;
                    if x.len() != 32 {
                        return Err(format!("keys[{i}]: Ed25519 keys are 32 bytes"));
                    }
                    KeyMaterial::Ed25519(x)
                }
                _ => continue,
            };
            keys.push(Jwk { kid, key });
        }
        if keys.is_empty() {
            return Err("JWKS holds no usable RS256, ES256 or EdDSA signing key".into());
        }
        Ok(Jwks { keys })
    }
}

/// What a token must satisfy.
#[derive(Debug, Clone)]
pub struct Expectations<'a> {
    /// Exact `iss`.
    pub issuer: &'a str,
    /// `aud` (string or array) must contain one of these.
    pub audiences: &'a [String],
    pub now: SystemTime,
}

/// A verified token's claims.
#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: Map<String, Value>,
}

impl Verified {
    pub fn str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// Top-level claims as strings (strings as they are, numbers and booleans printed),
    /// for `requiredMetadata` and templates; objects and arrays are left out.
    pub fn flat(&self) -> BTreeMap<String, String> {
        self.claims
            .iter()
            .filter_map(|(k, v)| {
                let s = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return None,
                };
                (s.len() <= 1024).then(|| (k.clone(), s))
            })
            .collect()
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Verifies `token` against `jwks` and `exp`.
pub fn verify(token: &str, jwks: &Jwks, exp: &Expectations<'_>) -> Result<Verified, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(err("size", format!("token is larger than {MAX_TOKEN_LEN} bytes")));
    }
    let token = token.trim();
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(err("format", "not a JWS compact token (three base64url parts)"));
    };
    let header_bytes = URL_SAFE_NO_PAD.decode(h64).map_err(|_| err("format", "header is not base64url"))?;
    let header: Value = serde_json::from_slice(&header_bytes).map_err(|_| err("format", "header is not JSON"))?;
    let alg = header["alg"].as_str().ok_or_else(|| err("alg", "header has no alg"))?;
    if !matches!(alg, "RS256" | "ES256" | "EdDSA") {
        return Err(err("alg", format!("algorithm {} is not accepted (RS256, ES256, EdDSA)", shown(alg))));
    }
    if header.get("crit").is_some() {
        return Err(err("format", "critical header parameters are not supported"));
    }
    let kid = header["kid"].as_str();
    let candidates: Vec<&Jwk> =
        jwks.keys.iter().filter(|k| k.key.alg() == alg && (kid.is_none() || k.kid.as_deref() == kid)).collect();
    let key = match (kid, candidates.as_slice()) {
        (_, [k]) => *k,
        (Some(kid), []) => return Err(err("key", format!("no {alg} key with kid {} in the JWKS", shown(kid)))),
        (None, []) => return Err(err("key", format!("no {alg} key in the JWKS"))),
        (_, _) => return Err(err("key", "the token has no kid and the JWKS has several keys for its algorithm")),
    };
    let sig = URL_SAFE_NO_PAD.decode(s64).map_err(|_| err("format", "signature is not base64url"))?;
    let signed = &token.as_bytes()[..h64.len() + 1 + p64.len()];
    let ok = match &key.key {
        KeyMaterial::Rsa { n, e } => RsaPublicKeyComponents { n: n.as_slice(), e: e.as_slice() }
            .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, &sig)
            .is_ok(),
        KeyMaterial::P256(p) => {
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, p).verify(signed, &sig).is_ok()
        }
        KeyMaterial::Ed25519(x) => UnparsedPublicKey::new(&signature::ED25519, x).verify(signed, &sig).is_ok(),
    };
    if !ok {
        return Err(err("signature", "does not verify with the configured keys"));
    }
    // Only now is the payload looked at.
    let payload = URL_SAFE_NO_PAD.decode(p64).map_err(|_| err("format", "payload is not base64url"))?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&payload).map_err(|_| err("format", "payload is not a JSON object"))?;
    let now = unix(exp.now);
    let time = |name: &'static str| -> Result<Option<u64>, JwtError> {
        match claims.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                .map(Some)
                .ok_or_else(|| err(name, "is not a NumericDate")),
        }
    };
    let expiry = time("exp")?.ok_or_else(|| err("exp", "the token has no expiry"))?;
    if now >= expiry.saturating_add(LEEWAY_SECS) {
        return Err(err("exp", "the token has expired"));
    }
    if let Some(nbf) = time("nbf")? {
        if now.saturating_add(LEEWAY_SECS) < nbf {
            return Err(err("nbf", "the token is not valid yet"));
        }
    }
    if let Some(iat) = time("iat")? {
        if now.saturating_add(LEEWAY_SECS) < iat {
            return Err(err("iat", "the token was issued in the future"));
        }
    }
    match claims.get("iss").and_then(Value::as_str) {
        Some(iss) if iss == exp.issuer => {}
        Some(iss) => return Err(err("issuer", format!("{} is not the expected issuer", shown(iss)))),
        None => return Err(err("issuer", "the token has no iss")),
    }
    let auds: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !auds.iter().any(|a| exp.audiences.iter().any(|want| want == a)) {
        let got: Vec<String> = auds.iter().take(4).map(|a| shown(a)).collect();
        return Err(err("audience", format!("token audience {got:?} is not an accepted audience")));
    }
    Ok(Verified { claims })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
    use serde_json::json;

    fn b64u(b: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    fn es256() -> (EcdsaKeyPair, String) {
        let k = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let p = k.public_key().as_ref().to_vec();
        let jwks =
            json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "x": b64u(&p[1..33]), "y": b64u(&p[33..])}]});
        (k, jwks.to_string())
    }

    fn sign_es(k: &EcdsaKeyPair, header: Value, claims: Value) -> String {
        let input = format!("{}.{}", b64u(header.to_string().as_bytes()), b64u(claims.to_string().as_bytes()));
        let sig = k.sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", b64u(sig.as_ref()))
    }

    fn now() -> u64 {
        unix(SystemTime::now())
    }

    fn expect(auds: &[String]) -> Expectations<'_> {
        Expectations { issuer: "https://issuer.test", audiences: auds, now: SystemTime::now() }
    }

    #[test]
    fn accepts_and_refuses() {
        let (k, jwks) = es256();
        let jwks = Jwks::parse(&jwks).unwrap();
        let auds = vec!["riptides".to_owned()];
        let good = json!({"iss": "https://issuer.test", "aud": ["x", "riptides"], "exp": now() + 300, "sub": "s"});
        let t = sign_es(&k, json!({"alg": "ES256", "kid": "k1"}), good.clone());
        assert_eq!(verify(&t, &jwks, &expect(&auds)).unwrap().str("sub"), Some("s"));

        let check = |header: Value, claims: Value| verify(&sign_es(&k, header, claims), &jwks, &expect(&auds));
        let h = json!({"alg": "ES256", "kid": "k1"});
        let mut c = good.clone();
        c["aud"] = json!("other");
        assert_eq!(check(h.clone(), c).unwrap_err().check, "audience");
        let mut c = good.clone();
        c["exp"] = json!(now() - 3600);
        assert_eq!(check(h.clone(), c).unwrap_err().check, "exp");
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove("exp");
        assert_eq!(check(h.clone(), c).unwrap_err().check, "exp");
        let mut c = good.clone();
        c["nbf"] = json!(now() + 3600);
        assert_eq!(check(h.clone(), c).unwrap_err().check, "nbf");
        let mut c = good.clone();
        c["iss"] = json!("https://evil.test");
        assert_eq!(check(h.clone(), c).unwrap_err().check, "issuer");
        assert_eq!(check(json!({"alg": "ES256", "kid": "nope"}), good.clone()).unwrap_err().check, "key");
        assert_eq!(check(json!({"alg": "HS256", "kid": "k1"}), good.clone()).unwrap_err().check, "alg");

        // alg none, tampered payload, garbage, oversized.
        let none = format!("{}.{}.", b64u(br#"{"alg":"none"}"#), b64u(good.to_string().as_bytes()));
        assert_eq!(verify(&none, &jwks, &expect(&auds)).unwrap_err().check, "alg");
        let parts: Vec<&str> = t.split('.').collect();
        let mut evil = good.clone();
        evil["sub"] = json!("admin");
        let tampered = format!("{}.{}.{}", parts[0], b64u(evil.to_string().as_bytes()), parts[2]);
        assert_eq!(verify(&tampered, &jwks, &expect(&auds)).unwrap_err().check, "signature");
        for garbage in ["", "a.b", "a.b.c.d", "!!.??.##", "e30.e30.e30"] {
            assert!(verify(garbage, &jwks, &expect(&auds)).is_err(), "{garbage}");
        }
        let big = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(verify(&big, &jwks, &expect(&auds)).unwrap_err().check, "size");
        // Errors never carry the token.
        let e = verify(&tampered, &jwks, &expect(&auds)).unwrap_err().to_string();
        assert!(!e.contains(parts[2]) && !e.contains(parts[0]), "{e}");
    }

    #[test]
    fn rsa_and_eddsa() {
        let ed = Ed25519KeyPair::generate().unwrap();
        let rsa_pkcs8 = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap().serialize_der();
        let rsa = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&rsa_pkcs8).unwrap();
        let comps: aws_lc_rs::rsa::PublicKeyComponents<Vec<u8>> = rsa.public_key().into();
        let jwks = json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64u(ed.public_key().as_ref())},
            {"kty": "RSA", "kid": "rsa", "n": b64u(&comps.n), "e": b64u(&comps.e)},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": b64u(&comps.n), "e": b64u(&comps.e)},
        ]})
        .to_string();
        let jwks = Jwks::parse(&jwks).unwrap();
        let auds = vec!["a".to_owned()];
        let claims = json!({"iss": "https://issuer.test", "aud": "a", "exp": now() + 60});
        let input = |alg: &str, kid: &str| {
            format!(
                "{}.{}",
                b64u(json!({"alg": alg, "kid": kid}).to_string().as_bytes()),
                b64u(claims.to_string().as_bytes())
            )
        };
        let i = input("EdDSA", "ed");
        let t = format!("{i}.{}", b64u(ed.sign(i.as_bytes()).as_ref()));
        verify(&t, &jwks, &expect(&auds)).unwrap();
        let i = input("RS256", "rsa");
        let mut sig = vec![0u8; rsa.public_modulus_len()];
        rsa.sign(&signature::RSA_PKCS1_SHA256, &aws_lc_rs::rand::SystemRandom::new(), i.as_bytes(), &mut sig).unwrap();
        let t = format!("{i}.{}", b64u(&sig));
        verify(&t, &jwks, &expect(&auds)).unwrap();
        // An encryption key is never used for signatures.
        let i = input("RS256", "enc");
        let mut sig = vec![0u8; rsa.public_modulus_len()];
        rsa.sign(&signature::RSA_PKCS1_SHA256, &aws_lc_rs::rand::SystemRandom::new(), i.as_bytes(), &mut sig).unwrap();
        assert_eq!(verify(&format!("{i}.{}", b64u(&sig)), &jwks, &expect(&auds)).unwrap_err().check, "key");
    }

    #[test]
    fn bad_jwks() {
        for j in ["", "{}", r#"{"keys": []}"#, r#"{"keys": [{"kty": "oct", "k": "AA"}]}"#] {
            assert!(Jwks::parse(j).is_err(), "{j}");
        }
    }
}
