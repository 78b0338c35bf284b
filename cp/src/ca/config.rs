//! CA policy knobs, with every default in one place ([`CaConfig::default`]).

use std::time::Duration;

use riptides_wire::spiffe::TrustDomain;

use super::error::ConfigError;

/// Trust domain used when the caller does not name one. Deployments are expected to set their
/// own; this only keeps `CaConfig::default()` total.
pub const DEFAULT_TRUST_DOMAIN: &str = "riptides.local";

/// How the CA issues certificates and rotates itself.
///
/// Durations are whole seconds in practice: X.509 validity has one-second precision, so
/// sub-second parts are truncated when they reach a certificate.
#[derive(Debug, Clone, PartialEq)]
pub struct CaConfig {
    /// Trust domain whose SPIFFE IDs this CA signs; every CSR is checked against it.
    pub trust_domain: TrustDomain,
    /// Lifetime of each CA generation's self-signed root (default 1 year).
    pub ca_lifetime: Duration,
    /// TTL of an SVID when the caller does not ask for one (default 1 h, SPIRE's default).
    pub default_svid_ttl: Duration,
    /// Largest TTL a CSR may obtain (default 24 h). It also bounds how long a retired CA must
    /// stay in the bundle, because no SVID from it can outlive its retirement by more.
    pub max_svid_ttl: Duration,
    /// How far NotBefore is set into the past, so that peers with slightly slow clocks accept
    /// a certificate the moment it is issued (default 10 s).
    pub backdate: Duration,
    /// Fraction of the active CA's lifetime after which [`super::Ca::tick`] prepares the next
    /// generation (default 0.5).
    pub prepare_at: f64,
    /// How long a prepared CA must have been published in the bundle before it may sign, so
    /// that every daemon already trusts it when the first certificate it signs shows up
    /// (default 2 x `max_svid_ttl`).
    pub publish_lead: Duration,
    /// `spiffe_refresh_hint` of the published bundle: how often consumers should re-fetch it
    /// (default 5 min).
    pub refresh_hint: Duration,
}

impl Default for CaConfig {
    fn default() -> Self {
        let max_svid_ttl = Duration::from_secs(24 * 3600);
        CaConfig {
            trust_domain: default_trust_domain(),
            ca_lifetime: Duration::from_secs(365 * 24 * 3600),
            default_svid_ttl: Duration::from_secs(3600),
            max_svid_ttl,
            backdate: Duration::from_secs(10),
            prepare_at: 0.5,
            publish_lead: max_svid_ttl * 2,
            refresh_hint: Duration::from_secs(300),
        }
    }
}

fn default_trust_domain() -> TrustDomain {
    // A constant, not input: a unit test proves it parses, so this cannot fire at run time.
    TrustDomain::parse(DEFAULT_TRUST_DOMAIN).expect("DEFAULT_TRUST_DOMAIN is a valid trust domain")
}

impl CaConfig {
    /// The defaults with a given trust domain, the usual way to build a config.
    pub fn new(trust_domain: TrustDomain) -> Self {
        CaConfig { trust_domain, ..CaConfig::default() }
    }

    /// Checks that the knobs are consistent, so that mistakes surface when the CA opens
    /// rather than as odd certificates later.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let secs = |d: Duration| d.as_secs();
        if secs(self.ca_lifetime) == 0 {
            return Err(ConfigError::Invalid("ca_lifetime must be at least 1 s".into()));
        }
        if secs(self.default_svid_ttl) == 0 || secs(self.max_svid_ttl) == 0 {
            return Err(ConfigError::Invalid("SVID TTLs must be at least 1 s".into()));
        }
        if self.default_svid_ttl > self.max_svid_ttl {
            return Err(ConfigError::Invalid(format!(
                "default_svid_ttl ({} s) exceeds max_svid_ttl ({} s)",
                secs(self.default_svid_ttl),
                secs(self.max_svid_ttl)
            )));
        }
        if self.max_svid_ttl >= self.ca_lifetime {
            return Err(ConfigError::Invalid(format!(
                "max_svid_ttl ({} s) must be shorter than ca_lifetime ({} s)",
                secs(self.max_svid_ttl),
                secs(self.ca_lifetime)
            )));
        }
        if !(self.prepare_at > 0.0 && self.prepare_at < 1.0) {
            return Err(ConfigError::Invalid(format!(
                "prepare_at must be strictly between 0 and 1, got {}",
                self.prepare_at
            )));
        }
        // After preparing, the next root needs publish_lead before it can sign, and SVIDs
        // signed meanwhile still want their full TTL: both must fit in the rest of the life.
        let remaining = self.ca_lifetime.as_secs_f64() * (1.0 - self.prepare_at);
        let needed = (self.publish_lead + self.max_svid_ttl).as_secs_f64();
        if needed > remaining {
            return Err(ConfigError::Invalid(format!(
                "publish_lead + max_svid_ttl ({needed} s) does not fit in the {remaining} s of CA life left after prepare_at"
            )));
        }
        if self.refresh_hint.as_secs() == 0 {
            return Err(ConfigError::Invalid("refresh_hint must be at least 1 s".into()));
        }
        Ok(())
    }
}
