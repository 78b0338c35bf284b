//! GCP instance identity tokens (method `GCPIIT`).
//!
//! The daemon asks the metadata server for
//! `instance/service-accounts/default/identity?audience=<aud>&format=full`: a JWT signed by
//! Google (RS256) whose `google.compute_engine` claim names the project, zone and instance.
//! Checked against the configured JWKS, issuer (`https://accounts.google.com`), audience and
//! project allow-list. Trust on first use, like SPIRE's `gcp_iit`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use riptides_wire::resource::auth::{GcpIitSettings, VerifierMethod, GCP_ISSUER};
use serde_json::Value;

use super::{invalid, jwt_refusal, make_id, Checked};
use crate::attest::jose::{self, shown, Expectations, Jwks};
use crate::attest::AttestError;

const M: VerifierMethod = VerifierMethod::GcpIit;

pub(super) fn check(s: &GcpIitSettings, token: &str, now: SystemTime) -> Result<Checked, AttestError> {
    let jwks = Jwks::parse(&s.jwks).map_err(|e| AttestError::Misconfigured(format!("gcpIIT.jwks: {e}")))?;
    let audiences = [s.audience.clone()];
    let issuer = s.issuer.as_deref().unwrap_or(GCP_ISSUER);
    let t = jose::verify(token, &jwks, &Expectations { issuer, audiences: &audiences, now })
        .map_err(|e| jwt_refusal(M, e))?;
    let ce = t.claims.get("google").and_then(|g| g.get("compute_engine")).ok_or_else(|| {
        invalid(M, "compute_engine", "the token has no google.compute_engine claims (request format=full)")
    })?;
    let get = |k: &str| -> Option<String> {
        match ce.get(k)? {
            Value::String(s) if !s.is_empty() && s.len() <= 256 => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let project = get("project_id").ok_or_else(|| invalid(M, "compute_engine", "no project_id"))?;
    let instance = get("instance_id").ok_or_else(|| invalid(M, "compute_engine", "no instance_id"))?;
    if !s.projects.is_empty() && !s.projects.contains(&project) {
        return Err(invalid(M, "project", format!("project {} is not allowed", shown(&project))));
    }
    let mut claims = BTreeMap::new();
    for k in ["project_id", "project_number", "zone", "instance_id", "instance_name"] {
        if let Some(v) = get(k) {
            claims.insert(k.to_owned(), v);
        }
    }
    for k in ["email", "sub"] {
        if let Some(v) = t.str(k).filter(|v| v.len() <= 256) {
            claims.insert(k.to_owned(), v.to_owned());
        }
    }
    Ok(Checked { id: make_id("gcp", &[&project, &instance]), claims })
}
