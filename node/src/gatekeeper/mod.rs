//! `riptides-node-gatekeeper`: admission that keeps unprotected workloads off nodes where
//! Riptides is not ready (deployment seed: "an admission component that validates and
//! enforces node-level policies").
//!
//! - [`webhook`]: the validating admission webhook (`AdmissionReview` v1 over HTTPS) with the
//!   rules in [`decide`]; its serving certificate rotates ([`cert`]).
//! - [`taint`]: the controller keeping `riptides.io/not-ready:NoSchedule` on nodes whose
//!   daemon is not ready.
//! - [`facts`]: what both read from the control plane (daemons and their reported health,
//!   workload identities, services, credential sources), cached briefly.
//!
//! Recommended `failurePolicy`: `Fail` for the rule matching protected pods (label
//! [`decide::PROTECT_LABEL`]), so a gatekeeper outage keeps protected pods pending rather
//! than letting them run unprotected; unprotected pods never reach the webhook when the
//! webhook configuration's `objectSelector` matches only the label.

pub mod cert;
pub mod decide;
pub mod facts;
pub mod review;
pub mod taint;
pub mod webhook;

use std::time::Duration;

/// Limits of the webhook, defaults in one place.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Largest `AdmissionReview` body accepted (the API server's own object limit is 1.5 MiB
    /// and a review carries the object and the old object).
    pub max_body_bytes: usize,
    /// TLS handshake and request-header deadline.
    pub handshake_timeout: Duration,
    /// How long a decision may wait for the control plane (the API server gives the webhook
    /// 10 s by default; answering within it keeps `failurePolicy` out of play).
    pub facts_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            max_body_bytes: 3 << 20,
            handshake_timeout: Duration::from_secs(5),
            facts_timeout: Duration::from_secs(5),
            max_connections: 256,
        }
    }
}

/// How long control-plane facts are reused between decisions.
pub const FACTS_TTL: Duration = Duration::from_secs(2);
/// Validity of a self-managed serving certificate (rotated after two thirds).
pub const LEAF_TTL: Duration = Duration::from_secs(24 * 3600);
/// Interval of the taint controller's passes.
pub const TAINT_INTERVAL: Duration = Duration::from_secs(10);
