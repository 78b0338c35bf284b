//! The OAuth 2.0 Device Authorization Grant (RFC 8628) for the CLI: pending device grants,
//! user codes, polling.
//!
//! A device grant is created by `POST /oidc/device_authorization` and lives [`DEFAULT_DEVICE_TTL`];
//! the operator enters (or confirms) its user code on the verification page, which *claims* it
//! (single use: a claimed code cannot be entered again) and sends the browser through the
//! upstream sign-in; the callback approves or denies it; the CLI polls the token endpoint
//! with the device code and gets `authorization_pending`, `slow_down` (polled faster than the
//! interval: the interval grows by 5 s, RFC 8628 3.5), `access_denied`, `expired_token` or
//! the tokens (once: an approved grant is gone after it is redeemed).
//!
//! Both codes are kept only as SHA-256 hashes and looked up by hash, so no comparison ever
//! runs over a secret. Bounds: at most [`MAX_DEVICE_GRANTS`] grants (expired ones are kept a
//! short while to answer `expired_token`); when full, new grants are refused (fail closed)
//! rather than old ones dropped. New grants and wrong user codes are rate limited globally.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::tokens::{random_token, sha256_b64};
use super::Role;

/// RFC 8628 6.1: consonants only (no vowels, so no words; no 0/O, 1/I/L confusion).
pub const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
/// Characters of a user code (20^8 ≈ 2.6e10 codes), shown as `XXXX-XXXX`.
pub const USER_CODE_LEN: usize = 8;
pub const DEFAULT_DEVICE_TTL: Duration = Duration::from_secs(600);
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Pending device grants at most; beyond it `POST /oidc/device_authorization` is refused.
pub const MAX_DEVICE_GRANTS: usize = 1000;
/// How long an expired grant is still answered with `expired_token` instead of `invalid_grant`.
const EXPIRED_GRACE: Duration = Duration::from_secs(120);
/// RFC 8628 3.5: each `slow_down` adds this to the interval.
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
/// Polls may arrive this much early (network jitter) before they count as too fast.
const POLL_SLACK: Duration = Duration::from_millis(250);
/// New device grants: a burst of 30, then one every 2 s.
const CREATE_BURST: f64 = 30.0;
const CREATE_PER_SEC: f64 = 0.5;
/// Wrong user codes entered on the verification page: a burst of 20, then one every 3 s.
/// When exhausted every code is refused until it refills (fail closed against guessing).
const GUESS_BURST: f64 = 20.0;
const GUESS_PER_SEC: f64 = 1.0 / 3.0;

/// What the upstream sign-in established, handed to the polling CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub subject: String,
    pub email: Option<String>,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Waiting for the operator to enter the user code.
    Pending,
    /// The user code was entered; the operator is signing in upstream.
    Claimed,
    Approved(Approval),
    Denied,
}

struct Entry {
    client_id: String,
    user_key: String,
    state: State,
    expires: Instant,
    interval: Duration,
    last_poll: Option<Instant>,
}

/// A token bucket.
struct Bucket {
    burst: f64,
    per_sec: f64,
    tokens: f64,
    at: Option<Instant>,
}

impl Bucket {
    fn new(burst: f64, per_sec: f64) -> Bucket {
        Bucket { burst, per_sec, tokens: burst, at: None }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(at) = self.at {
            let dt = now.saturating_duration_since(at).as_secs_f64();
            self.tokens = (self.tokens + dt * self.per_sec).min(self.burst);
        }
        self.at = Some(now);
    }

    fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn has(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }
}

struct Table {
    /// Keyed by the device code's hash.
    grants: HashMap<String, Entry>,
    /// User code hash -> device code hash.
    users: HashMap<String, String>,
    creates: Bucket,
    guesses: Bucket,
}

/// A new device grant, as returned to the CLI.
#[derive(Debug)]
pub struct NewGrant {
    pub device_code: String,
    /// Formatted `XXXX-XXXX`.
    pub user_code: String,
    pub expires_in: Duration,
    pub interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    #[error("too many sign-ins are pending; try again in a few minutes")]
    Full,
    #[error("too many sign-ins were started; try again in a minute")]
    RateLimited,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("this code is unknown, was already used, or has expired; run `riptides login` again")]
    Unknown,
    #[error("too many wrong codes were entered; wait a minute and try again")]
    RateLimited,
}

/// What a poll of the token endpoint yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    Pending,
    SlowDown,
    Denied,
    Expired,
    /// Unknown, already redeemed, or issued to another client.
    Invalid(&'static str),
    Approved(Approval),
}

pub struct DeviceGrants {
    ttl: Duration,
    interval: Duration,
    t: Mutex<Table>,
}

/// Upper-cases and keeps only characters of the alphabet (`bcdf-ghjk`, `BCDF GHJK` → `BCDFGHJK`);
/// `None` unless exactly [`USER_CODE_LEN`] remain.
pub fn normalize_user_code(input: &str) -> Option<String> {
    if input.len() > 64 {
        return None;
    }
    let mut out = String::with_capacity(USER_CODE_LEN);
    for c in input.chars() {
        let u = c.to_ascii_uppercase();
        if u.is_ascii() && USER_CODE_ALPHABET.contains(&(u as u8)) {
            out.push(u);
        } else if !matches!(c, '-' | ' ') {
            return None;
        }
    }
    (out.len() == USER_CODE_LEN).then_some(out)
}

fn random_user_code() -> String {
    // Rejection sampling: 256 is not a multiple of 20, so bytes >= 240 are redrawn.
    let n = USER_CODE_ALPHABET.len() as u8;
    let limit = 256 - (256 % n as u16) as u8 as u16;
    let mut out = String::with_capacity(USER_CODE_LEN + 1);
    let mut buf = [0u8; 32];
    while out.len() < USER_CODE_LEN + 1 {
        aws_lc_rs::rand::fill(&mut buf).expect("system randomness");
        for b in buf {
            if (b as u16) < limit && out.len() < USER_CODE_LEN + 1 {
                if out.len() == USER_CODE_LEN / 2 {
                    out.push('-');
                }
                out.push(USER_CODE_ALPHABET[(b % n) as usize] as char);
            }
        }
    }
    out
}

impl DeviceGrants {
    pub fn new(ttl: Duration, interval: Duration) -> DeviceGrants {
        DeviceGrants {
            ttl,
            interval,
            t: Mutex::new(Table {
                grants: HashMap::new(),
                users: HashMap::new(),
                creates: Bucket::new(CREATE_BURST, CREATE_PER_SEC),
                guesses: Bucket::new(GUESS_BURST, GUESS_PER_SEC),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.t.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `POST /oidc/device_authorization`.
    pub fn start(&self, client_id: &str, now: Instant) -> Result<NewGrant, StartError> {
        let mut t = self.lock();
        let t = &mut *t;
        t.grants.retain(|_, e| now < e.expires + EXPIRED_GRACE);
        let grants = &t.grants;
        t.users.retain(|_, d| grants.contains_key(d));
        if t.grants.len() >= MAX_DEVICE_GRANTS {
            return Err(StartError::Full);
        }
        if !t.creates.take(now) {
            return Err(StartError::RateLimited);
        }
        let device_code = random_token(32);
        let (user_code, user_key) = loop {
            let code = random_user_code();
            let key = sha256_b64(&normalize_user_code(&code).expect("a generated code is well-formed"));
            if !t.users.contains_key(&key) {
                break (code, key);
            }
        };
        let device_key = sha256_b64(&device_code);
        t.users.insert(user_key.clone(), device_key.clone());
        t.grants.insert(
            device_key,
            Entry {
                client_id: client_id.to_owned(),
                user_key,
                state: State::Pending,
                expires: now + self.ttl,
                interval: self.interval,
                last_poll: None,
            },
        );
        Ok(NewGrant { device_code, user_code, expires_in: self.ttl, interval: self.interval })
    }

    /// The operator entered `user_code`: single use, so it moves the grant from pending to
    /// claimed and returns the grant's key for [`DeviceGrants::approve`]/[`DeviceGrants::deny`].
    /// Wrong codes draw on a global budget; when it is spent every code is refused for a while.
    pub fn claim(&self, user_code: &str, now: Instant) -> Result<String, ClaimError> {
        let mut t = self.lock();
        if !t.guesses.has(now) {
            return Err(ClaimError::RateLimited);
        }
        let found = normalize_user_code(user_code).and_then(|c| {
            let device_key = t.users.get(&sha256_b64(&c))?.clone();
            let e = t.grants.get_mut(&device_key)?;
            (e.state == State::Pending && now < e.expires).then(|| {
                e.state = State::Claimed;
                device_key
            })
        });
        match found {
            Some(k) => Ok(k),
            None => {
                t.guesses.take(now);
                Err(ClaimError::Unknown)
            }
        }
    }

    /// The client a claimed grant belongs to.
    pub fn client_of(&self, key: &str) -> Option<String> {
        self.lock().grants.get(key).map(|e| e.client_id.clone())
    }

    /// The upstream sign-in of a claimed grant succeeded.
    pub fn approve(&self, key: &str, approval: Approval, now: Instant) -> bool {
        let mut t = self.lock();
        match t.grants.get_mut(key) {
            Some(e) if e.state == State::Claimed && now < e.expires => {
                e.state = State::Approved(approval);
                true
            }
            _ => false,
        }
    }

    /// The operator refused, or the upstream sign-in failed.
    pub fn deny(&self, key: &str) {
        if let Some(e) = self.lock().grants.get_mut(key) {
            if matches!(e.state, State::Pending | State::Claimed) {
                e.state = State::Denied;
            }
        }
    }

    /// The token endpoint's `urn:ietf:params:oauth:grant-type:device_code` grant.
    pub fn poll(&self, device_code: &str, client_id: &str, now: Instant) -> Poll {
        let mut t = self.lock();
        let key = sha256_b64(device_code);
        let Some(e) = t.grants.get_mut(&key) else {
            return Poll::Invalid("unknown or already used device_code");
        };
        if e.client_id != client_id {
            return Poll::Invalid("device_code was issued to another client");
        }
        let outcome = if now >= e.expires {
            Poll::Expired
        } else if e.last_poll.is_some_and(|last| now.saturating_duration_since(last) + POLL_SLACK < e.interval) {
            e.interval += SLOW_DOWN_STEP;
            e.last_poll = Some(now);
            return Poll::SlowDown;
        } else {
            e.last_poll = Some(now);
            match &e.state {
                State::Pending | State::Claimed => return Poll::Pending,
                State::Denied => Poll::Denied,
                State::Approved(a) => Poll::Approved(a.clone()),
            }
        };
        // Final answers end the grant: a device code is redeemed once.
        if let Some(e) = t.grants.remove(&key) {
            t.users.remove(&e.user_key);
        }
        outcome
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().grants.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn grants() -> DeviceGrants {
        DeviceGrants::new(Duration::from_secs(600), Duration::from_secs(5))
    }

    fn viewer() -> Approval {
        Approval { subject: "idp#u".into(), email: None, role: Role::Viewer }
    }

    #[test]
    fn user_codes_use_the_unambiguous_alphabet() {
        for _ in 0..200 {
            let c = random_user_code();
            assert_eq!(c.len(), 9, "{c}");
            assert_eq!(&c[4..5], "-");
            assert!(c.chars().filter(|&c| c != '-').all(|c| USER_CODE_ALPHABET.contains(&(c as u8))), "{c}");
        }
        assert_eq!(normalize_user_code("bcdf-ghjk").as_deref(), Some("BCDFGHJK"));
        assert_eq!(normalize_user_code(" BCDF GHJK ").as_deref(), Some("BCDFGHJK"));
        assert_eq!(normalize_user_code("BCDF-GHJ"), None, "too short");
        assert_eq!(normalize_user_code("BCDF-GHJA"), None, "vowels are not in the alphabet");
        assert_eq!(normalize_user_code("BCDF-GHJ0"), None);
        assert_eq!(normalize_user_code(&"B".repeat(100)), None);
    }

    #[test]
    fn pending_slow_down_then_approved_once() {
        let g = grants();
        let t0 = Instant::now();
        let n = g.start("cli", t0).unwrap();
        assert_eq!(n.interval, 5 * S);
        assert_eq!(g.poll(&n.device_code, "cli", t0), Poll::Pending);
        // Faster than the interval: slow_down, and the interval grows by 5 s.
        assert_eq!(g.poll(&n.device_code, "cli", t0 + 2 * S), Poll::SlowDown);
        assert_eq!(g.poll(&n.device_code, "cli", t0 + 8 * S), Poll::SlowDown, "now 10 s are needed");
        assert_eq!(g.poll(&n.device_code, "cli", t0 + 23 * S), Poll::Pending);
        // Another client cannot redeem it.
        assert!(matches!(g.poll(&n.device_code, "other", t0 + 40 * S), Poll::Invalid(_)));

        let key = g.claim(&n.user_code.to_lowercase(), t0 + 30 * S).unwrap();
        assert_eq!(g.claim(&n.user_code, t0 + 31 * S), Err(ClaimError::Unknown), "a user code is single use");
        assert_eq!(g.poll(&n.device_code, "cli", t0 + 45 * S), Poll::Pending, "claimed is still pending");
        assert!(g.approve(&key, viewer(), t0 + 50 * S));
        assert_eq!(g.poll(&n.device_code, "cli", t0 + 60 * S), Poll::Approved(viewer()));
        // Reuse of the device code after redemption.
        assert!(matches!(g.poll(&n.device_code, "cli", t0 + 80 * S), Poll::Invalid(_)));
        assert_eq!(g.len(), 0);
    }

    #[test]
    fn denied_and_expired() {
        let g = grants();
        let t0 = Instant::now();
        let n = g.start("cli", t0).unwrap();
        let key = g.claim(&n.user_code, t0 + S).unwrap();
        g.deny(&key);
        assert!(!g.approve(&key, viewer(), t0 + 2 * S), "a denied grant cannot be approved afterwards");
        assert_eq!(g.poll(&n.device_code, "cli", t0 + 10 * S), Poll::Denied);
        assert!(matches!(g.poll(&n.device_code, "cli", t0 + 20 * S), Poll::Invalid(_)));

        let n = g.start("cli", t0).unwrap();
        assert_eq!(g.poll(&n.device_code, "cli", t0 + 601 * S), Poll::Expired);
        assert!(matches!(g.poll(&n.device_code, "cli", t0 + 610 * S), Poll::Invalid(_)));
        // An expired user code cannot be claimed, nor an expired grant approved.
        let n = g.start("cli", t0).unwrap();
        assert_eq!(g.claim(&n.user_code, t0 + 601 * S), Err(ClaimError::Unknown));
        let n = g.start("cli", t0).unwrap();
        let key = g.claim(&n.user_code, t0 + 10 * S).unwrap();
        assert!(!g.approve(&key, viewer(), t0 + 601 * S));
        assert_eq!(g.poll(&n.device_code, "cli", t0 + 602 * S), Poll::Expired);
    }

    #[test]
    fn floods_are_refused() {
        let g = grants();
        let t0 = Instant::now();
        for _ in 0..CREATE_BURST as usize {
            g.start("cli", t0).unwrap();
        }
        assert_eq!(g.start("cli", t0).unwrap_err(), StartError::RateLimited);
        assert!(g.start("cli", t0 + 2 * S).is_ok(), "the bucket refills");
        // Bounded: at the limit, new grants are refused.
        let t = t0 + 2 * S;
        while g.len() < MAX_DEVICE_GRANTS {
            g.lock().creates.tokens = 10.0;
            g.start("cli", t).unwrap();
        }
        g.lock().creates.tokens = 10.0;
        assert_eq!(g.start("cli", t).unwrap_err(), StartError::Full, "fail closed, nothing is evicted");
        // Once they expire (and their grace passes) there is room again.
        assert!(g.start("cli", t + 600 * S + EXPIRED_GRACE).is_ok());
    }

    #[test]
    fn guessing_user_codes_is_rate_limited() {
        let g = grants();
        let t0 = Instant::now();
        let n = g.start("cli", t0).unwrap();
        for _ in 0..GUESS_BURST as usize {
            assert_eq!(g.claim("BBBB-BBBB", t0), Err(ClaimError::Unknown));
        }
        // Budget spent: even the right code is refused until it refills.
        assert_eq!(g.claim(&n.user_code, t0), Err(ClaimError::RateLimited));
        assert!(g.claim(&n.user_code, t0 + 4 * S).is_ok());
    }
}
