//! Exponential restart backoff with jitter.

use std::time::Duration;

/// Exponential backoff between restarts of one child.
///
/// The n-th consecutive restart (n = 0, 1, 2, ...) waits
/// `min(max, initial * multiplier^n)`, then jitter of up to `jitter` (a fraction,
/// `0.0..=1.0`) of that delay is applied in either direction (never above `max`).
/// The consecutive-failure count is reset once the child has run for at least
/// `reset_after` before failing again.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// Delay before the first restart after a healthy period.
    pub initial: Duration,
    /// Upper bound on any delay.
    pub max: Duration,
    /// Growth factor between consecutive failures (values below 1.0 are treated as 1.0).
    pub multiplier: f64,
    /// Jitter as a fraction of the computed delay, `0.0..=1.0`; 0 disables jitter.
    pub jitter: f64,
    /// A child that ran at least this long before failing is considered healthy:
    /// its next restart starts again from `initial`.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
            reset_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// A backoff without jitter (deterministic), mostly useful in tests.
    pub fn fixed_growth(initial: Duration, max: Duration, multiplier: f64) -> Self {
        Self { initial, max, multiplier, jitter: 0.0, ..Self::default() }
    }

    /// Set the jitter fraction.
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Set the healthy-run period after which the backoff resets.
    pub fn with_reset_after(mut self, reset_after: Duration) -> Self {
        self.reset_after = reset_after;
        self
    }

    /// Delay without jitter for the `attempt`-th consecutive restart (0-based).
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let mult = if self.multiplier.is_finite() && self.multiplier >= 1.0 { self.multiplier } else { 1.0 };
        let max = self.max.as_secs_f64();
        let exp = mult.powi(attempt.min(i32::MAX as u32) as i32);
        let secs = (self.initial.as_secs_f64() * exp).min(max);
        if secs.is_finite() && secs >= 0.0 {
            Duration::from_secs_f64(secs)
        } else {
            self.max
        }
    }

    /// Delay with jitter for the `attempt`-th consecutive restart (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.base_delay(attempt);
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 || base.is_zero() {
            return base;
        }
        // factor in [1 - jitter, 1 + jitter)
        let factor = 1.0 + jitter * (2.0 * random_unit() - 1.0);
        let secs = (base.as_secs_f64() * factor).clamp(0.0, self.max.as_secs_f64());
        Duration::from_secs_f64(secs)
    }
}

/// A uniformly distributed number in `[0, 1)`; not cryptographic, only for jitter.
fn random_unit() -> f64 {
    use std::cell::Cell;
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};

    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut h = RandomState::new().build_hasher();
            h.write_u64(0x9e37_79b9_7f4a_7c15);
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        // xorshift64*
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (v >> 11) as f64 / (1u64 << 53) as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let b = Backoff::fixed_growth(Duration::from_millis(10), Duration::from_millis(50), 2.0);
        assert_eq!(b.delay(0), Duration::from_millis(10));
        assert_eq!(b.delay(1), Duration::from_millis(20));
        assert_eq!(b.delay(2), Duration::from_millis(40));
        assert_eq!(b.delay(3), Duration::from_millis(50));
        assert_eq!(b.delay(1000), Duration::from_millis(50));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let b = Backoff::fixed_growth(Duration::from_millis(100), Duration::from_secs(1), 2.0).with_jitter(0.5);
        for _ in 0..1000 {
            let d = b.delay(1);
            assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(300), "{d:?}");
            assert!(b.delay(10) <= Duration::from_secs(1));
        }
    }

    #[test]
    fn degenerate_multiplier_is_constant() {
        let b = Backoff::fixed_growth(Duration::from_millis(10), Duration::from_secs(1), 0.1);
        assert_eq!(b.delay(5), Duration::from_millis(10));
    }
}
