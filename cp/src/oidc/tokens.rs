//! Access tokens (ES256 JWTs, short-lived) and the provider's in-memory state for the flows:
//! pending sign-ins, authorization codes (single use, one minute) and refresh tokens (opaque,
//! stored hashed, rotated on every use; reusing a rotated one revokes the whole family).
//! Pending sign-ins and codes are per process (they live a minute or ten); refresh tokens too,
//! unless the control plane shares a store between replicas: then they are kept (hashed) in the
//! store ([`super::sessions`]), so any replica refreshes them and a restart signs nobody out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;

use super::{Provider, Role, API_AUDIENCE};
use crate::attest::jose;

/// Codes are exchanged right after the redirect.
pub const CODE_TTL: Duration = Duration::from_secs(60);
/// A sign-in must come back from the upstream issuer within this.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// Bounds on the in-memory tables (oldest entries are dropped beyond them).
const MAX_PENDING: usize = 10_000;
const MAX_REFRESH: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    pub subject: String,
    pub email: Option<String>,
    pub role: Role,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid access token: {0}")]
    Invalid(String),
}

pub fn random_token(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut b).expect("system randomness");
    URL_SAFE_NO_PAD.encode(b)
}

pub fn sha256_b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes()).as_ref())
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub(crate) fn issue_access(p: &Provider, subject: &str, email: Option<&str>, role: Role, ttl: Duration) -> String {
    let now = unix(SystemTime::now());
    let mut claims = json!({
        "iss": p.issuer, "sub": subject, "aud": API_AUDIENCE, "iat": now, "nbf": now,
        "exp": now + ttl.as_secs(), "jti": random_token(12), "role": role.as_str(),
    });
    if let Some(e) = email {
        claims["email"] = e.into();
    }
    p.key.sign(json!({"typ": "at+jwt"}), &claims)
}

pub(crate) fn issue_id_token(
    p: &Provider,
    client_id: &str,
    subject: &str,
    email: Option<&str>,
    role: Role,
    nonce: Option<&str>,
) -> String {
    let now = unix(SystemTime::now());
    let mut claims = json!({
        "iss": p.issuer, "sub": subject, "aud": client_id, "iat": now,
        "exp": now + p.config.access_ttl.as_secs(), "role": role.as_str(),
    });
    if let Some(e) = email {
        claims["email"] = e.into();
    }
    if let Some(n) = nonce {
        claims["nonce"] = n.into();
    }
    p.key.sign(json!({"typ": "JWT"}), &claims)
}

pub(crate) fn verify_access(p: &Provider, token: &str) -> Result<AccessClaims, TokenError> {
    let jwks = jose::Jwks::parse(&p.key.jwks_json()).map_err(TokenError::Invalid)?;
    let aud = [API_AUDIENCE.to_owned()];
    let v =
        jose::verify(token, &jwks, &jose::Expectations { issuer: &p.issuer, audiences: &aud, now: SystemTime::now() })
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
    let subject = v.str("sub").filter(|s| !s.is_empty()).ok_or_else(|| TokenError::Invalid("no subject".into()))?;
    let role = v.str("role").and_then(Role::parse).ok_or_else(|| TokenError::Invalid("no valid role".into()))?;
    Ok(AccessClaims { subject: subject.to_owned(), email: v.str("email").map(str::to_owned), role })
}

/// A sign-in on its way through the upstream issuer.
#[derive(Debug, Clone)]
pub struct PendingLogin {
    pub client_id: String,
    pub redirect_uri: String,
    /// The client's `state`, echoed back to it.
    pub client_state: Option<String>,
    pub client_nonce: Option<String>,
    /// The client's PKCE challenge (S256).
    pub code_challenge: String,
    /// Our own PKCE verifier and nonce towards the upstream issuer.
    pub upstream_verifier: String,
    pub upstream_nonce: String,
    /// For a CLI sign-in (device grant): the grant's key; `redirect_uri` is unused then.
    pub device: Option<String>,
    pub created: SystemTime,
}

/// An authorization code issued to a client.
#[derive(Debug, Clone)]
pub struct Grant {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub nonce: Option<String>,
    pub subject: String,
    pub email: Option<String>,
    pub role: Role,
    pub created: SystemTime,
}

#[derive(Debug, Clone)]
struct Refresh {
    client_id: String,
    subject: String,
    email: Option<String>,
    role: Role,
    family: String,
    expires: SystemTime,
}

#[derive(Default)]
struct Tables {
    /// Keyed by our `state` towards upstream.
    pending: HashMap<String, PendingLogin>,
    /// Keyed by the code's hash.
    codes: HashMap<String, Grant>,
    /// Keyed by the refresh token's hash.
    refresh: HashMap<String, Refresh>,
    /// Hashes of rotated refresh tokens -> family, to detect reuse.
    rotated: HashMap<String, String>,
}

/// A redeemed refresh token: who it is for, and its successor.
#[derive(Debug)]
pub struct Session {
    pub subject: String,
    pub email: Option<String>,
    pub role: Role,
    pub refresh: String,
}

#[derive(Debug)]
pub enum RefreshError {
    /// Unknown, expired, reused, or another client's (`invalid_grant`).
    Invalid(String),
    /// The shared session store cannot be reached (`temporarily_unavailable`).
    Unavailable,
}

pub struct TokenStore {
    refresh_ttl: Duration,
    t: Mutex<Tables>,
    shared: Option<super::sessions::StoreSessions>,
}

impl TokenStore {
    pub fn new(refresh_ttl: Duration) -> Self {
        TokenStore { refresh_ttl, t: Mutex::new(Tables::default()), shared: None }
    }

    /// Refresh tokens in `store`, shared by every replica on it.
    pub fn with_store(refresh_ttl: Duration, store: std::sync::Arc<dyn crate::store::Store>) -> Self {
        TokenStore {
            refresh_ttl,
            t: Mutex::new(Tables::default()),
            shared: Some(super::sessions::StoreSessions::new(store)),
        }
    }

    pub async fn add_refresh(
        &self,
        client_id: &str,
        subject: &str,
        email: Option<&str>,
        role: Role,
        family: Option<String>,
    ) -> Result<String, RefreshError> {
        match &self.shared {
            Some(s) => s.add(self.refresh_ttl, client_id, subject, email, role, family).await,
            None => Ok(self.mem_add_refresh(client_id, subject, email, role, family)),
        }
    }

    /// Redeems a refresh token for `client_id`: returns the session and a new refresh token.
    /// A token that was already rotated revokes its whole family (theft detection).
    pub async fn rotate_refresh(&self, token: &str, client_id: &str) -> Result<Session, RefreshError> {
        match &self.shared {
            Some(s) => s.rotate(self.refresh_ttl, token, client_id).await,
            None => self
                .mem_rotate_refresh(token, client_id)
                .map(|(subject, email, role, refresh)| Session { subject, email, role, refresh })
                .map_err(RefreshError::Invalid),
        }
    }

    /// Sign-out: revokes the refresh token's whole family.
    pub async fn revoke_refresh(&self, token: &str) {
        match &self.shared {
            Some(s) => s.revoke(token).await,
            None => self.mem_revoke_refresh(token),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.t.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add_pending(&self, state: String, p: PendingLogin) {
        let mut t = self.lock();
        let now = SystemTime::now();
        t.pending.retain(|_, p| now.duration_since(p.created).unwrap_or_default() < LOGIN_TTL);
        if t.pending.len() >= MAX_PENDING {
            return;
        }
        t.pending.insert(state, p);
    }

    pub fn take_pending(&self, state: &str) -> Option<PendingLogin> {
        let p = self.lock().pending.remove(state)?;
        (SystemTime::now().duration_since(p.created).unwrap_or_default() < LOGIN_TTL).then_some(p)
    }

    pub fn add_code(&self, g: Grant) -> String {
        let code = random_token(32);
        let mut t = self.lock();
        let now = SystemTime::now();
        t.codes.retain(|_, g| now.duration_since(g.created).unwrap_or_default() < CODE_TTL);
        if t.codes.len() < MAX_PENDING {
            t.codes.insert(sha256_b64(&code), g);
        }
        code
    }

    /// Single use: the code is gone after this, whatever the outcome.
    pub fn take_code(&self, code: &str) -> Option<Grant> {
        let g = self.lock().codes.remove(&sha256_b64(code))?;
        (SystemTime::now().duration_since(g.created).unwrap_or_default() < CODE_TTL).then_some(g)
    }

    fn mem_add_refresh(
        &self,
        client_id: &str,
        subject: &str,
        email: Option<&str>,
        role: Role,
        family: Option<String>,
    ) -> String {
        let token = random_token(32);
        let mut t = self.lock();
        let now = SystemTime::now();
        t.refresh.retain(|_, r| r.expires > now);
        if t.refresh.len() >= MAX_REFRESH {
            return token;
        }
        t.refresh.insert(
            sha256_b64(&token),
            Refresh {
                client_id: client_id.to_owned(),
                subject: subject.to_owned(),
                email: email.map(str::to_owned),
                role,
                family: family.unwrap_or_else(|| random_token(12)),
                expires: now + self.refresh_ttl,
            },
        );
        token
    }

    fn mem_rotate_refresh(
        &self,
        token: &str,
        client_id: &str,
    ) -> Result<(String, Option<String>, Role, String), String> {
        let h = sha256_b64(token);
        let r = {
            let mut t = self.lock();
            if let Some(family) = t.rotated.get(&h).cloned() {
                t.refresh.retain(|_, r| r.family != family);
                return Err("refresh token was already used; the session is revoked, sign in again".into());
            }
            let Some(r) = t.refresh.remove(&h) else { return Err("unknown or expired refresh token".into()) };
            if t.rotated.len() >= MAX_REFRESH {
                t.rotated.clear();
            }
            t.rotated.insert(h, r.family.clone());
            r
        };
        if r.expires <= SystemTime::now() {
            return Err("refresh token expired; sign in again".into());
        }
        if r.client_id != client_id {
            return Err("refresh token was issued to another client".into());
        }
        let new = self.mem_add_refresh(client_id, &r.subject, r.email.as_deref(), r.role, Some(r.family));
        Ok((r.subject, r.email, r.role, new))
    }

    fn mem_revoke_refresh(&self, token: &str) {
        let h = sha256_b64(token);
        let mut t = self.lock();
        if let Some(r) = t.refresh.remove(&h) {
            let fam = r.family;
            t.refresh.retain(|_, r| r.family != fam);
        }
    }
}
