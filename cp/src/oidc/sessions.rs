//! Refresh-token sessions kept in the resource store, for replicas sharing one (etcd): any
//! replica refreshes a session another issued, and a restart signs nobody out.
//!
//! One object per refresh token under [`REFRESH_RESOURCE`] (not an API resource), named by the
//! token's SHA-256 (the token itself is never stored). Rotation is a compare-and-swap that
//! marks the used token `rotated` before the new one is created, so of two concurrent uses of
//! one token only one wins; a use of a rotated token (or a lost race) revokes the whole family,
//! as in memory. Expired records are deleted at most every [`GC_EVERY`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::tokens::{random_token, sha256_b64, RefreshError, Session};
use super::Role;
use crate::store::{ObjectKey, Store, StoreError};

/// Where the sessions live in the store.
pub const REFRESH_RESOURCE: &str = "internal.riptides.io/oidc-refresh";
const GC_EVERY: Duration = Duration::from_secs(600);

#[derive(Serialize, Deserialize)]
struct Record {
    client_id: String,
    subject: String,
    email: Option<String>,
    role: String,
    family: String,
    /// Unix seconds.
    expires: u64,
    rotated: bool,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn key(hash: &str) -> ObjectKey {
    ObjectKey::new(REFRESH_RESOURCE, "", hash)
}

fn unavailable(e: StoreError) -> RefreshError {
    tracing::warn!(error = %e, "OIDC session store unavailable");
    RefreshError::Unavailable
}

pub struct StoreSessions {
    store: Arc<dyn Store>,
    last_gc: Mutex<Option<Instant>>,
}

impl StoreSessions {
    pub fn new(store: Arc<dyn Store>) -> StoreSessions {
        StoreSessions { store, last_gc: Mutex::new(None) }
    }

    pub async fn add(
        &self,
        ttl: Duration,
        client_id: &str,
        subject: &str,
        email: Option<&str>,
        role: Role,
        family: Option<String>,
    ) -> Result<String, RefreshError> {
        self.gc().await;
        let token = random_token(32);
        let rec = Record {
            client_id: client_id.to_owned(),
            subject: subject.to_owned(),
            email: email.map(str::to_owned),
            role: role.as_str().to_owned(),
            family: family.unwrap_or_else(|| random_token(12)),
            expires: unix_now() + ttl.as_secs(),
            rotated: false,
        };
        let value = serde_json::to_vec(&rec).expect("a record serialises");
        self.store.create(&key(&sha256_b64(&token)), value).await.map_err(unavailable)?;
        Ok(token)
    }

    pub async fn rotate(&self, ttl: Duration, token: &str, client_id: &str) -> Result<Session, RefreshError> {
        let k = key(&sha256_b64(token));
        let unknown = || RefreshError::Invalid("unknown or expired refresh token".into());
        let obj = self.store.get(&k).await.map_err(unavailable)?.ok_or_else(unknown)?;
        let mut rec: Record = serde_json::from_slice(&obj.value).map_err(|_| unknown())?;
        let reused =
            || RefreshError::Invalid("refresh token was already used; the session is revoked, sign in again".into());
        if rec.rotated {
            self.revoke_family(&rec.family).await;
            return Err(reused());
        }
        rec.rotated = true;
        let value = serde_json::to_vec(&rec).expect("a record serialises");
        match self.store.update(&k, value, Some(obj.mod_revision)).await {
            Ok(_) => {}
            // Used twice at the same time (or revoked meanwhile): treat as reuse.
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {
                self.revoke_family(&rec.family).await;
                return Err(reused());
            }
            Err(e) => return Err(unavailable(e)),
        }
        if rec.expires <= unix_now() {
            return Err(RefreshError::Invalid("refresh token expired; sign in again".into()));
        }
        if rec.client_id != client_id {
            return Err(RefreshError::Invalid("refresh token was issued to another client".into()));
        }
        let role = Role::parse(&rec.role).ok_or_else(unknown)?;
        let new = self.add(ttl, client_id, &rec.subject, rec.email.as_deref(), role, Some(rec.family)).await?;
        Ok(Session { subject: rec.subject, email: rec.email, role, refresh: new })
    }

    /// Sign-out: the token's whole family.
    pub async fn revoke(&self, token: &str) {
        match self.store.get(&key(&sha256_b64(token))).await {
            Ok(Some(obj)) => {
                if let Ok(rec) = serde_json::from_slice::<Record>(&obj.value) {
                    self.revoke_family(&rec.family).await;
                }
            }
            Ok(None) => {}
            Err(e) => {
                unavailable(e);
            }
        }
    }

    async fn revoke_family(&self, family: &str) {
        let objs = match self.store.list(REFRESH_RESOURCE, None).await {
            Ok((objs, _)) => objs,
            Err(e) => {
                unavailable(e);
                return;
            }
        };
        for o in objs {
            if serde_json::from_slice::<Record>(&o.value).is_ok_and(|r| r.family == family) {
                let _ = self.store.delete(&o.key, None).await;
            }
        }
    }

    async fn gc(&self) {
        {
            let mut last = self.last_gc.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < GC_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let Ok((objs, _)) = self.store.list(REFRESH_RESOURCE, None).await else { return };
        let now = unix_now();
        for o in objs {
            let expired = serde_json::from_slice::<Record>(&o.value).map_or(true, |r| r.expires <= now);
            if expired {
                let _ = self.store.delete(&o.key, Some(o.mod_revision)).await;
            }
        }
    }
}
