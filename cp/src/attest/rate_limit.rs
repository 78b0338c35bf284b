//! Token buckets for attestation attempts: one per source (remote address) and one global.
//!
//! Checked before any store read or signature, so a flood of bogus tokens costs a mutex and a
//! map lookup. Time is passed in (the attestation's `now`) so tests drive it; a clock that
//! goes backwards refills nothing.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use super::AttestError;

/// One bucket's shape: up to `burst` attempts at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketConfig {
    pub burst: u32,
    pub per_second: f64,
}

/// Limits on attestation attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    pub per_source: BucketConfig,
    pub global: BucketConfig,
    /// Most sources tracked at once; bounds memory under a flood from many addresses.
    pub max_sources: usize,
}

impl Default for RateLimitConfig {
    /// A daemon retries with backoff, so a handful per second per address is plenty; the global
    /// bucket caps the signing and store load a flood can cause. Raise both for tests that
    /// attest hundreds of daemons from one loopback address.
    fn default() -> Self {
        RateLimitConfig {
            per_source: BucketConfig { burst: 10, per_second: 2.0 },
            global: BucketConfig { burst: 200, per_second: 100.0 },
            max_sources: 10_000,
        }
    }
}

impl RateLimitConfig {
    /// Effectively no limit (for tests and benchmarks).
    pub fn unlimited() -> Self {
        let big = BucketConfig { burst: u32::MAX, per_second: f64::MAX };
        RateLimitConfig { per_source: big, global: big, max_sources: usize::MAX }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: SystemTime,
}

impl Bucket {
    fn full(cfg: BucketConfig, now: SystemTime) -> Self {
        Bucket { tokens: f64::from(cfg.burst), last: now }
    }

    fn refill(&mut self, cfg: BucketConfig, now: SystemTime) {
        if let Ok(elapsed) = now.duration_since(self.last) {
            let add = elapsed.as_secs_f64() * cfg.per_second;
            self.tokens = (self.tokens + add).min(f64::from(cfg.burst));
            self.last = now;
        }
    }

    fn is_full(&self, cfg: BucketConfig) -> bool {
        self.tokens >= f64::from(cfg.burst)
    }

    /// Time until one whole token is available.
    fn wait(&self, cfg: BucketConfig) -> Duration {
        if self.tokens >= 1.0 || cfg.per_second <= 0.0 {
            return Duration::from_secs(if self.tokens >= 1.0 { 0 } else { 60 });
        }
        Duration::from_secs_f64(((1.0 - self.tokens) / cfg.per_second).min(3600.0))
    }
}

struct Inner {
    global: Bucket,
    sources: HashMap<String, Bucket>,
}

/// A per-source plus global token-bucket limiter.
pub struct RateLimiter {
    config: RateLimitConfig,
    inner: Mutex<Option<Inner>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").field("config", &self.config).finish_non_exhaustive()
    }
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        RateLimiter { config, inner: Mutex::new(None) }
    }

    /// Takes one attempt from `source`'s bucket and the global one, or refuses with
    /// [`AttestError::RateLimited`]. A refusal takes nothing from either bucket, so a source
    /// that is refused globally does not also lose its own allowance.
    pub fn check(&self, source: &str, now: SystemTime) -> Result<(), AttestError> {
        let cfg = &self.config;
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let inner =
            guard.get_or_insert_with(|| Inner { global: Bucket::full(cfg.global, now), sources: HashMap::new() });
        inner.global.refill(cfg.global, now);

        if !inner.sources.contains_key(source) && inner.sources.len() >= cfg.max_sources {
            // A bucket that has refilled completely is indistinguishable from a new one.
            inner.sources.retain(|_, b| {
                b.refill(cfg.per_source, now);
                !b.is_full(cfg.per_source)
            });
            if inner.sources.len() >= cfg.max_sources {
                return Err(AttestError::RateLimited { retry_after: Duration::from_secs(1) });
            }
        }
        let src = inner.sources.entry(source.to_owned()).or_insert_with(|| Bucket::full(cfg.per_source, now));
        src.refill(cfg.per_source, now);

        if src.tokens < 1.0 || inner.global.tokens < 1.0 {
            let retry_after = src.wait(cfg.per_source).max(inner.global.wait(cfg.global));
            return Err(AttestError::RateLimited { retry_after });
        }
        src.tokens -= 1.0;
        inner.global.tokens -= 1.0;
        Ok(())
    }

    /// How many sources are tracked (for metrics and tests).
    pub fn tracked_sources(&self) -> usize {
        let guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        guard.as_ref().map_or(0, |i| i.sources.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(ms)
    }

    fn cfg(src_burst: u32, src_rate: f64, g_burst: u32, g_rate: f64) -> RateLimitConfig {
        RateLimitConfig {
            per_source: BucketConfig { burst: src_burst, per_second: src_rate },
            global: BucketConfig { burst: g_burst, per_second: g_rate },
            max_sources: 3,
        }
    }

    #[test]
    fn per_source_burst_then_refill() {
        let rl = RateLimiter::new(cfg(3, 1.0, 100, 100.0));
        for _ in 0..3 {
            rl.check("a", t(0)).unwrap();
        }
        let Err(AttestError::RateLimited { retry_after }) = rl.check("a", t(0)) else {
            panic!("fourth attempt must be refused");
        };
        assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1));
        // Another source is unaffected.
        rl.check("b", t(0)).unwrap();
        // One second later one more attempt is allowed, not two.
        rl.check("a", t(1000)).unwrap();
        assert!(rl.check("a", t(1000)).is_err());
    }

    #[test]
    fn global_bucket_caps_all_sources_without_draining_them() {
        let rl = RateLimiter::new(cfg(5, 1.0, 2, 1.0));
        rl.check("a", t(0)).unwrap();
        rl.check("b", t(0)).unwrap();
        assert!(rl.check("c", t(0)).is_err());
        // c's own bucket was not touched by the refusal: after the global refill it still has
        // its whole burst minus the one that succeeds now.
        rl.check("c", t(1000)).unwrap();
    }

    #[test]
    fn source_map_is_bounded() {
        let rl = RateLimiter::new(cfg(1, 1.0, 100, 100.0));
        for s in ["a", "b", "c"] {
            rl.check(s, t(0)).unwrap();
        }
        // All three are empty, so a fourth source cannot be tracked yet.
        assert!(rl.check("d", t(0)).is_err());
        // Once they refill they are evicted and d gets a bucket.
        rl.check("d", t(5000)).unwrap();
        assert_eq!(rl.tracked_sources(), 1);
    }

    #[test]
    fn clock_going_backwards_refills_nothing() {
        let rl = RateLimiter::new(cfg(1, 1.0, 100, 100.0));
        rl.check("a", t(10_000)).unwrap();
        assert!(rl.check("a", t(0)).is_err());
        assert!(rl.check("a", t(10_500)).is_err());
        rl.check("a", t(11_000)).unwrap();
    }

    #[test]
    fn unlimited_is_unlimited() {
        let rl = RateLimiter::new(RateLimitConfig::unlimited());
        for _ in 0..10_000 {
            rl.check("a", t(0)).unwrap();
        }
    }
}
