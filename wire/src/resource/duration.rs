//! Durations written the way Kubernetes writes them (Go's `time.Duration` text: `1h30m`, `90s`,
//! `1.5h`, `500ms`), so `ttl: 1h` in a resource means what an operator expects.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration with Go's text form. It serialises back to the exact text it was
/// parsed from, so that an object an operator applies twice is unchanged the second time.
#[derive(Debug, Clone)]
pub struct GoDuration(pub Duration, Option<Box<str>>);

impl PartialEq for GoDuration {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for GoDuration {}
impl PartialOrd for GoDuration {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for GoDuration {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (examples: \"90s\", \"10m\", \"1h30m\")")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

impl GoDuration {
    pub fn parse(s: &str) -> Result<Self, DurationError> {
        let err = |reason| DurationError { input: s.chars().take(64).collect(), reason };
        if s.is_empty() {
            return Err(err("empty"));
        }
        if s == "0" {
            return Ok(GoDuration(Duration::ZERO, Some(s.into())));
        }
        let mut rest = s;
        let mut total = 0f64;
        while !rest.is_empty() {
            let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
            if num_len == 0 {
                return Err(err("expected a number"));
            }
            let value: f64 = rest[..num_len].parse().map_err(|_| err("bad number"))?;
            rest = &rest[num_len..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
            let scale = match &rest[..unit_len] {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                "" => return Err(err("missing unit")),
                _ => return Err(err("unknown unit")),
            };
            rest = &rest[unit_len..];
            total += value * scale;
        }
        if !total.is_finite() || total > 100.0 * 365.0 * 86400.0 {
            return Err(err("too large"));
        }
        Ok(GoDuration(Duration::from_secs_f64(total), Some(s.into())))
    }

    pub fn as_duration(&self) -> Duration {
        self.0
    }
}

impl From<Duration> for GoDuration {
    fn from(d: Duration) -> Self {
        GoDuration(d, None)
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(text) = &self.1 {
            return f.write_str(text);
        }
        let d = self.0;
        if d.subsec_nanos() != 0 && d.as_secs() == 0 {
            return write!(f, "{}ms", d.as_millis());
        }
        let secs = d.as_secs();
        let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if h > 0 || m > 0 {
            write!(f, "{m}m")?;
        }
        write!(f, "{s}s")
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        GoDuration::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        for (s, secs) in [
            ("1h", 3600.0),
            ("10m", 600.0),
            ("1h30m", 5400.0),
            ("1.5h", 5400.0),
            ("500ms", 0.5),
            ("0", 0.0),
            ("2h0m5s", 7205.0),
        ] {
            assert_eq!(GoDuration::parse(s).unwrap().0.as_secs_f64(), secs, "{s}");
        }
        for bad in ["", "1", "h", "1d", "-1h", "1h-", "1..2h", "1e400h"] {
            assert!(GoDuration::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(GoDuration::from(Duration::from_secs(5400)).to_string(), "1h30m0s");
        assert_eq!(GoDuration::parse("1.5h").unwrap().to_string(), "1.5h");
        assert_eq!(GoDuration::parse("90s").unwrap(), GoDuration::parse("1m30s").unwrap());
        assert_eq!(GoDuration::from(Duration::from_secs(90)).to_string(), "1m30s");
        assert_eq!(GoDuration::from(Duration::from_millis(500)).to_string(), "500ms");
    }
}
