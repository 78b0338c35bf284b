//! Timing policies: reconnect backoff with full jitter, per-identity CSR backoff, and the
//! rotation schedule. Pure functions of their inputs (the random draw is a parameter), so the
//! bounds are unit-tested.

use std::time::{Duration, SystemTime};

/// A uniform random number in `[0, 1)` from the system CSPRNG (aws-lc-rs). Falls back to the
/// clock's sub-second noise if the generator fails, which only weakens jitter.
pub fn random_unit() -> f64 {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut buf = [0u8; 8];
    let v = match SystemRandom::new().fill(&mut buf) {
        Ok(()) => u64::from_le_bytes(buf),
        Err(_) => {
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.subsec_nanos() as u64).unwrap_or(0)
        }
    };
    // 53 random bits -> [0, 1).
    (v >> 11) as f64 / (1u64 << 53) as f64
}

/// Capped exponential backoff with FULL jitter (AWS architecture blog): the delay before
/// attempt `n` (0-based) is uniform in `[0, min(cap, base * 2^n)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullJitter {
    pub base: Duration,
    pub cap: Duration,
}

impl FullJitter {
    pub fn new(base: Duration, cap: Duration) -> Self {
        FullJitter { base, cap }
    }

    /// The upper bound of the delay for `attempt`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u64.checked_shl(attempt.min(40)).unwrap_or(u64::MAX);
        let nanos = (self.base.as_nanos() as u64).saturating_mul(factor);
        Duration::from_nanos(nanos).min(self.cap)
    }

    /// The delay for `attempt` given a uniform draw `r` in `[0, 1)`.
    pub fn delay_with(&self, attempt: u32, r: f64) -> Duration {
        self.ceiling(attempt).mul_f64(r.clamp(0.0, 1.0))
    }

    /// The delay for `attempt` with a fresh random draw.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, random_unit())
    }
}

/// Per-identity CSR retry backoff (ztunnel-like: 0.5 s doubling to 150 s), with +-10% jitter
/// so identities that failed together do not retry together. `failures` counts from 1.
pub fn csr_backoff(min: Duration, max: Duration, failures: u32, r: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(40);
    let base = Duration::from_nanos((min.as_nanos() as u64).saturating_mul(1u64 << exp)).min(max);
    let jitter = 0.9 + 0.2 * r.clamp(0.0, 1.0);
    base.mul_f64(jitter).min(max)
}

/// When to rotate a certificate valid from `not_before` to `not_after`: at half its lifetime,
/// +-10% (of that half life), given a uniform draw `r` in `[0, 1)`.
pub fn rotation_time(not_before: SystemTime, not_after: SystemTime, r: f64) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let half = lifetime / 2;
    let factor = 0.9 + 0.2 * r.clamp(0.0, 1.0);
    not_before + half.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_bounds() {
        let b = FullJitter::new(Duration::from_millis(200), Duration::from_secs(30));
        assert_eq!(b.ceiling(0), Duration::from_millis(200));
        assert_eq!(b.ceiling(1), Duration::from_millis(400));
        assert_eq!(b.ceiling(7), Duration::from_millis(25_600));
        assert_eq!(b.ceiling(8), Duration::from_secs(30));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(30));
        assert_eq!(b.delay_with(3, 0.0), Duration::ZERO);
        assert_eq!(b.delay_with(3, 0.5), Duration::from_millis(800));
        for attempt in 0..50 {
            for _ in 0..50 {
                let d = b.delay(attempt);
                assert!(d <= b.ceiling(attempt), "attempt {attempt}: {d:?}");
            }
        }
        // Full jitter really spreads: 1000 draws at the cap cover both ends of [0, 30s].
        let draws: Vec<Duration> = (0..1000).map(|_| b.delay(20)).collect();
        assert!(draws.iter().any(|d| *d < Duration::from_secs(3)));
        assert!(draws.iter().any(|d| *d > Duration::from_secs(27)));
    }

    #[test]
    fn random_unit_range() {
        for _ in 0..10_000 {
            let r = random_unit();
            assert!((0.0..1.0).contains(&r));
        }
    }

    #[test]
    fn csr_backoff_bounds() {
        let (min, max) = (Duration::from_millis(500), Duration::from_secs(150));
        assert_eq!(csr_backoff(min, max, 1, 0.5), Duration::from_millis(500));
        assert_eq!(csr_backoff(min, max, 2, 0.5), Duration::from_secs(1));
        assert_eq!(csr_backoff(min, max, 30, 0.5), max);
        assert_eq!(csr_backoff(min, max, 30, 0.99), max);
        for f in 1..40 {
            let lo = csr_backoff(min, max, f, 0.0);
            let hi = csr_backoff(min, max, f, 0.999);
            assert!(lo >= min.mul_f64(0.9) && hi <= max, "{f}: {lo:?} {hi:?}");
        }
    }

    #[test]
    fn rotation_at_half_life_with_ten_percent_jitter() {
        let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let na = nb + Duration::from_secs(3600);
        assert_eq!(rotation_time(nb, na, 0.5), nb + Duration::from_secs(1800));
        assert_eq!(rotation_time(nb, na, 0.0), nb + Duration::from_secs(1620));
        let hi = rotation_time(nb, na, 0.999_999);
        assert!(hi <= nb + Duration::from_secs(1980) && hi > nb + Duration::from_secs(1979));
        for _ in 0..1000 {
            let t = rotation_time(nb, na, random_unit());
            assert!(t >= nb + Duration::from_secs(1620) && t <= nb + Duration::from_secs(1980));
        }
        // Inverted validity never panics: rotate immediately.
        assert_eq!(rotation_time(na, nb, 0.5), na);
    }
}
