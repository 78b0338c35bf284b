//! Unit tests of the CA internals; end-to-end behaviour is in `cp/tests/ca_*.rs`.

use std::path::Path;
use std::time::Duration;

use super::config::{CaConfig, DEFAULT_TRUST_DOMAIN};
use super::rotation::removable_after;
use super::store::{GenerationRecord, GenerationState, Manifest};
use super::util;

#[test]
fn default_config_is_valid_and_matches_the_documented_defaults() {
    let c = CaConfig::default();
    c.validate().unwrap();
    assert_eq!(c.trust_domain.as_str(), DEFAULT_TRUST_DOMAIN);
    assert_eq!(c.ca_lifetime, Duration::from_secs(365 * 24 * 3600));
    assert_eq!(c.default_svid_ttl, Duration::from_secs(3600));
    assert_eq!(c.max_svid_ttl, Duration::from_secs(24 * 3600));
    assert_eq!(c.backdate, Duration::from_secs(10));
    assert_eq!(c.publish_lead, c.max_svid_ttl * 2);
}

#[test]
fn inconsistent_configs_are_refused() {
    let base = CaConfig::default();
    let bad = [
        CaConfig { default_svid_ttl: base.max_svid_ttl * 2, ..base.clone() },
        CaConfig { max_svid_ttl: base.ca_lifetime, ..base.clone() },
        CaConfig { prepare_at: 1.0, ..base.clone() },
        CaConfig { prepare_at: f64::NAN, ..base.clone() },
        CaConfig { ca_lifetime: Duration::ZERO, ..base.clone() },
        CaConfig { publish_lead: base.ca_lifetime, ..base.clone() },
        CaConfig { refresh_hint: Duration::ZERO, ..base.clone() },
    ];
    for c in bad {
        assert!(c.validate().is_err(), "{c:?}");
    }
}

#[test]
fn serials_are_positive_and_sixteen_bytes() {
    for _ in 0..100 {
        let s = util::random_serial().unwrap();
        assert_eq!(s.len(), 16);
        assert_eq!(s[0] & 0x80, 0);
        assert!(s.iter().any(|&b| b != 0));
    }
}

#[test]
fn pem_lines_are_64_columns() {
    let pem = util::pem_encode("CERTIFICATE", &[0xAB; 100]);
    let lines: Vec<&str> = pem.lines().collect();
    assert_eq!(lines.first(), Some(&"-----BEGIN CERTIFICATE-----"));
    assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
    assert!(lines[1..lines.len() - 1].iter().all(|l| l.len() <= 64));
}

#[test]
fn times_outside_certificate_range_are_refused() {
    assert_eq!(util::unix_secs(std::time::UNIX_EPOCH - Duration::from_secs(1)), None);
    assert_eq!(util::unix_secs(std::time::UNIX_EPOCH + Duration::from_secs(300_000_000_000)), None);
    assert_eq!(util::add_secs(u64::MAX - 1, Duration::from_secs(10)), 253_402_300_799);
}

fn record(id: u64, state: GenerationState) -> GenerationRecord {
    GenerationRecord {
        id,
        state,
        cert_file: format!("ca-{id}.crt.pem"),
        key_file: format!("ca-{id}.key.pem"),
        created_unix: 0,
        not_after_unix: 100,
        activated_unix: None,
        retired_unix: None,
        prune_after_unix: None,
        long_lived_until_unix: None,
    }
}

#[test]
fn removal_waits_for_long_lived_certificates_but_never_past_not_after() {
    let mut r = record(1, GenerationState::Old);
    r.prune_after_unix = Some(20);
    assert_eq!(removable_after(&r), 20);
    r.long_lived_until_unix = Some(50);
    assert_eq!(removable_after(&r), 50);
    r.long_lived_until_unix = Some(500);
    assert_eq!(removable_after(&r), 100);
}

#[test]
fn manifest_structure_is_checked() {
    let p = Path::new("manifest.json");
    let mut m = Manifest::new("example.org");
    assert!(m.check(p).is_err(), "no active generation");
    m.generations.push(record(1, GenerationState::Active));
    m.next_generation = 2;
    m.check(p).unwrap();

    let mut two_active = m.clone();
    two_active.generations.push(record(2, GenerationState::Active));
    two_active.next_generation = 3;
    assert!(two_active.check(p).is_err());

    let mut stale_next = m.clone();
    stale_next.next_generation = 1;
    assert!(stale_next.check(p).is_err());

    let mut escape = m.clone();
    escape.generations[0].key_file = "../secret".into();
    assert!(escape.check(p).is_err());

    let json = serde_json::to_string(&m).unwrap();
    assert!(json.contains("\"state\":\"active\""), "{json}");
    assert_eq!(serde_json::from_str::<Manifest>(&json).unwrap(), m);
}
