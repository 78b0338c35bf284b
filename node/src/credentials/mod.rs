//! Credentials the daemon injects into intercepted HTTP requests (CredentialSource).
//!
//! The control plane delivers, only to daemons whose workloads a CredentialBinding names, the
//! sources those bindings use with their secret values (`PolicyItem::Credentials`). This module
//! turns each source into a current credential:
//!
//! - `static`: the secret value itself.
//! - `oAuth2ClientCredentials`: an access token from the token endpoint (client id + the secret
//!   as client secret, HTTP Basic), cached until shortly before it expires and refreshed in the
//!   background ([`token`]).
//! - `tokenExchange`: an RFC 8693 token exchange of the secret value (the subject token) for an
//!   access token, cached and refreshed the same way.
//!
//! Secrets and tokens are held in [`SecretValue`]s, whose `Debug` is redacted; nothing here
//! logs, counts or dumps a value. [`CredentialManager::status`] says per source whether a
//! credential is available, when it expires and the last error (never the value): that is
//! what `/config_dump` and `/readyz` show.

pub mod token;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use riptides_wire::resource::core::{CredentialSourceSpec, CredentialSourceType, SecretValue};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use token::{TokenClient, TokenError, TokenResponse};

/// A CredentialSource as the daemon received it (secret included), keyed by namespace/name.
#[derive(Clone, PartialEq)]
pub struct SourceConfig {
    pub namespace: String,
    pub name: String,
    pub spec: CredentialSourceSpec,
}

impl std::fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `spec` holds the secret in a redacting wrapper; spelled out anyway to keep it that way.
        f.debug_struct("SourceConfig")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("type", &self.spec.source_type)
            .finish_non_exhaustive()
    }
}

impl SourceConfig {
    pub fn key(&self) -> SourceKey {
        SourceKey { namespace: self.namespace.clone(), name: self.name.clone() }
    }
}

/// namespace/name of a CredentialSource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for SourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Limits and timings, defaults in one place.
#[derive(Debug, Clone)]
pub struct CredentialConfig {
    /// Bound on one token request, connect to last body byte.
    pub fetch_timeout: Duration,
    /// Largest token endpoint answer read.
    pub max_response_bytes: usize,
    /// Refresh this long before expiry at most (tokens living less refresh at 80 % of
    /// their life).
    pub refresh_margin: Duration,
    /// Floor between two fetches of one source, so a token endpoint handing out 0-second
    /// tokens cannot make the daemon spin.
    pub min_refresh: Duration,
    /// Lifetime assumed when the endpoint gives no `expires_in`.
    pub default_lifetime: Duration,
    /// Backoff after a failed fetch: first, cap.
    pub retry_first: Duration,
    pub retry_max: Duration,
    /// How long a request waits for the first credential of a source that is still pending.
    pub first_wait: Duration,
    /// fwmark for the daemon's own sockets (never captured).
    pub mark: u32,
}

impl Default for CredentialConfig {
    fn default() -> Self {
        CredentialConfig {
            fetch_timeout: Duration::from_secs(10),
            max_response_bytes: 64 * 1024,
            refresh_margin: Duration::from_secs(60),
            min_refresh: Duration::from_secs(1),
            default_lifetime: Duration::from_secs(300),
            retry_first: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            first_wait: Duration::from_secs(10),
            mark: crate::dataplane::capture::DEFAULT_MARK,
        }
    }
}

/// Why no credential can be injected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("credential source {0} is not delivered to this node")]
    UnknownSource(SourceKey),
    #[error("credential source {key} has no usable credential: {reason}")]
    Unavailable { key: SourceKey, reason: String },
    #[error("credential source {0}: no credential yet (first fetch still running)")]
    Pending(SourceKey),
}

/// The current credential of one source.
#[derive(Clone, Debug, Default)]
enum Current {
    #[default]
    Pending,
    Ready {
        value: SecretValue,
        /// `None`: does not expire (static).
        expires: Option<Instant>,
    },
    Failed {
        reason: String,
        /// The last token, still used while it has not expired.
        last: Option<(SecretValue, Option<Instant>)>,
    },
}

impl Current {
    fn usable(&self, now: Instant) -> Option<SecretValue> {
        let ok = |e: &Option<Instant>| e.is_none_or(|e| e > now);
        match self {
            Current::Ready { value, expires } if ok(expires) => Some(value.clone()),
            Current::Failed { last: Some((value, expires)), .. } if ok(expires) => Some(value.clone()),
            _ => None,
        }
    }
}

/// Per-source status for `/config_dump` and `/readyz` (never the value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    pub source: String,
    #[serde(rename = "type")]
    pub source_type: String,
    /// `ready`, `pending`, `failing` (a last token still valid), `unavailable`.
    pub state: String,
    /// RFC 3339; absent for static secrets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Tokens fetched so far by this daemon process.
    pub fetches: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

struct Entry {
    config: SourceConfig,
    current: watch::Sender<Current>,
    fetches: Arc<std::sync::atomic::AtomicU64>,
    cancel: CancellationToken,
}

/// Holds the current credential of every delivered source and refreshes the fetched ones.
pub struct CredentialManager {
    cfg: CredentialConfig,
    entries: Mutex<HashMap<SourceKey, Arc<Entry>>>,
    /// Bumped on every state change, for whoever publishes [`CredentialManager::status`].
    changed: watch::Sender<u64>,
}

impl std::fmt::Debug for CredentialManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialManager").finish_non_exhaustive()
    }
}

impl CredentialManager {
    pub fn new(cfg: CredentialConfig) -> Arc<CredentialManager> {
        Arc::new(CredentialManager { cfg, entries: Mutex::new(HashMap::new()), changed: watch::Sender::new(0) })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<SourceKey, Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the set of sources. Unchanged sources keep their token and refresh task;
    /// removed ones are stopped and their secrets dropped; new or changed ones start over.
    /// Must be called inside a tokio runtime (fetching sources spawn a task).
    pub fn apply(self: &Arc<Self>, sources: Vec<SourceConfig>) {
        let mut entries = self.entries();
        let mut next: HashMap<SourceKey, Arc<Entry>> = HashMap::new();
        for s in sources {
            let key = s.key();
            if let Some(e) = entries.get(&key).filter(|e| e.config == s) {
                next.insert(key, e.clone());
                continue;
            }
            let entry = Arc::new(Entry {
                config: s.clone(),
                current: watch::Sender::new(Current::Pending),
                fetches: Default::default(),
                cancel: CancellationToken::new(),
            });
            match s.spec.source_type {
                CredentialSourceType::Static => {
                    let current = match &s.spec.secret_value {
                        Some(v) => Current::Ready { value: v.clone(), expires: None },
                        None => Current::Failed { reason: "the source has no secret value".into(), last: None },
                    };
                    entry.current.send_replace(current);
                }
                CredentialSourceType::OAuth2ClientCredentials | CredentialSourceType::TokenExchange => {
                    tokio::spawn(refresh_loop(self.clone(), entry.clone()));
                }
            }
            tracing::info!(source = %key, r#type = ?s.spec.source_type, "credential source configured");
            next.insert(key, entry);
        }
        for (key, old) in entries.iter() {
            if next.get(key).is_none_or(|n| !Arc::ptr_eq(n, old)) {
                old.cancel.cancel();
                if !next.contains_key(key) {
                    tracing::info!(source = %key, "credential source removed");
                }
            }
        }
        *entries = next;
        drop(entries);
        self.changed.send_modify(|n| *n += 1);
    }

    /// The credential of `key` now; waits up to `first_wait` for a source still fetching
    /// its first token.
    pub async fn get(&self, key: &SourceKey) -> Result<SecretValue, CredentialError> {
        let entry = self.entries().get(key).cloned().ok_or_else(|| CredentialError::UnknownSource(key.clone()))?;
        let mut rx = entry.current.subscribe();
        let wait = async {
            loop {
                {
                    let cur = rx.borrow_and_update();
                    if let Some(v) = cur.usable(Instant::now()) {
                        return Ok(v);
                    }
                    match &*cur {
                        Current::Pending => {}
                        Current::Failed { reason, .. } => {
                            return Err(CredentialError::Unavailable { key: key.clone(), reason: reason.clone() })
                        }
                        Current::Ready { .. } => {
                            return Err(CredentialError::Unavailable {
                                key: key.clone(),
                                reason: "the token expired and no new one was fetched yet".into(),
                            })
                        }
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(CredentialError::Unavailable { key: key.clone(), reason: "source removed".into() });
                }
            }
        };
        match tokio::time::timeout(self.cfg.first_wait, wait).await {
            Ok(r) => r,
            Err(_) => Err(CredentialError::Pending(key.clone())),
        }
    }

    /// A receiver that changes whenever some source's state does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Every source's state, sorted by namespace/name; never a value.
    pub fn status(&self) -> Vec<SourceStatus> {
        let now = Instant::now();
        let sys = SystemTime::now();
        let at = |i: Instant| -> String {
            let t = sys + i.saturating_duration_since(now);
            time::OffsetDateTime::from(t).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
        };
        let mut out: Vec<SourceStatus> = self
            .entries()
            .values()
            .map(|e| {
                let cur = e.current.borrow().clone();
                let usable = cur.usable(now).is_some();
                let (state, expires, err) = match &cur {
                    Current::Pending => ("pending", None, None),
                    Current::Ready { expires, .. } if usable => ("ready", *expires, None),
                    Current::Ready { .. } => ("unavailable", None, Some("the token expired".to_owned())),
                    Current::Failed { reason, last } if usable => {
                        ("failing", last.as_ref().and_then(|l| l.1), Some(reason.clone()))
                    }
                    Current::Failed { reason, .. } => ("unavailable", None, Some(reason.clone())),
                };
                SourceStatus {
                    source: e.config.key().to_string(),
                    source_type: format!("{:?}", e.config.spec.source_type),
                    state: state.into(),
                    expires_at: expires.map(at),
                    fetches: e.fetches.load(std::sync::atomic::Ordering::Relaxed),
                    last_error: err,
                }
            })
            .collect();
        out.sort_by(|a, b| a.source.cmp(&b.source));
        out
    }

    /// One line per source that is not healthy, for `/readyz`.
    pub fn problems(&self) -> Vec<String> {
        self.status()
            .into_iter()
            .filter(|s| s.state != "ready")
            .map(|s| match &s.last_error {
                Some(e) => format!("credential source {} is {}: {e}", s.source, s.state),
                None => format!("credential source {} is {}", s.source, s.state),
            })
            .collect()
    }
}

/// When to fetch again after a token living `lifetime`: `refresh_margin` before expiry, or
/// at 80 % of the life for short-lived tokens, never sooner than `min_refresh`.
pub fn refresh_after(cfg: &CredentialConfig, lifetime: Duration) -> Duration {
    let margin = cfg.refresh_margin.min(lifetime / 5);
    lifetime.saturating_sub(margin).max(cfg.min_refresh)
}

async fn refresh_loop(mgr: Arc<CredentialManager>, entry: Arc<Entry>) {
    let key = entry.config.key();
    let client = TokenClient::new(mgr.cfg.clone());
    let mut backoff = mgr.cfg.retry_first;
    loop {
        let fetch = client.fetch(&entry.config);
        let result = tokio::select! {
            _ = entry.cancel.cancelled() => return,
            r = fetch => r,
        };
        let wait = match result {
            Ok(tok) => {
                backoff = mgr.cfg.retry_first;
                let lifetime = tok.expires_in.unwrap_or(mgr.cfg.default_lifetime);
                let n = entry.fetches.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                entry
                    .current
                    .send_replace(Current::Ready { value: tok.access_token, expires: Some(Instant::now() + lifetime) });
                let next = refresh_after(&mgr.cfg, lifetime);
                tracing::info!(source = %key, fetches = n, expires_in = ?lifetime, refresh_in = ?next, "credential token fetched");
                next
            }
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(source = %key, error = %reason, retry_in = ?backoff, "credential token fetch failed");
                entry.current.send_modify(|c| {
                    let last = match std::mem::take(c) {
                        Current::Ready { value, expires } => Some((value, expires)),
                        Current::Failed { last, .. } => last,
                        Current::Pending => None,
                    };
                    *c = Current::Failed { reason, last };
                });
                let w = backoff;
                backoff = (backoff * 2).min(mgr.cfg.retry_max);
                w
            }
        };
        mgr.changed.send_modify(|n| *n += 1);
        tokio::select! {
            _ = entry.cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_schedule() {
        let cfg = CredentialConfig::default();
        assert_eq!(refresh_after(&cfg, Duration::from_secs(3600)), Duration::from_secs(3540));
        assert_eq!(refresh_after(&cfg, Duration::from_secs(10)), Duration::from_secs(8));
        assert_eq!(refresh_after(&cfg, Duration::from_secs(2)), Duration::from_millis(1600));
        assert_eq!(refresh_after(&cfg, Duration::ZERO), cfg.min_refresh);
    }

    #[tokio::test]
    async fn static_sources_and_removal() {
        let mgr = CredentialManager::new(CredentialConfig::default());
        let src = SourceConfig {
            namespace: "default".into(),
            name: "api".into(),
            spec: CredentialSourceSpec {
                source_type: CredentialSourceType::Static,
                token_endpoint: None,
                secret_value: Some(SecretValue::new("s3cr3t-value")),
            },
        };
        mgr.apply(vec![src.clone()]);
        assert_eq!(mgr.get(&src.key()).await.unwrap().expose(), "s3cr3t-value");
        let status = format!("{:?} {}", mgr.status(), serde_json::to_string(&mgr.status()).unwrap());
        assert!(!status.contains("s3cr3t"), "{status}");
        assert!(!format!("{src:?}").contains("s3cr3t"));
        assert!(mgr.problems().is_empty());
        mgr.apply(vec![]);
        assert!(matches!(mgr.get(&src.key()).await, Err(CredentialError::UnknownSource(_))));
    }
}
