//! Generic JWT/OIDC tokens (method `JWT`) and the GitHub Actions preset (`GitHubActions`).
//!
//! Verified against the configured JWKS, issuer and audiences. Every top-level string, number
//! or boolean claim is available to `requiredMetadata` and the template (GitHub's
//! `repository`, `ref`, `workflow`, `run_id`...). The daemon id is a hash of the
//! `daemonIDClaims` values (default `sub`; GitHub Actions: `repository`, `run_id`,
//! `run_attempt`, so every workflow run is its own daemon) and the Verifier's name.

use std::time::SystemTime;

use riptides_wire::resource::auth::{JwtSettings, VerifierMethod, GITHUB_ACTIONS_ISSUER};

use super::{hashed_id, invalid, jwt_refusal, Checked};
use crate::attest::jose::{self, Expectations, Jwks};
use crate::attest::AttestError;

pub(super) fn check(
    method: VerifierMethod,
    s: &JwtSettings,
    verifier: &str,
    token: &str,
    now: SystemTime,
) -> Result<Checked, AttestError> {
    let jwks = Jwks::parse(&s.jwks).map_err(|e| AttestError::Misconfigured(format!("jwt.jwks: {e}")))?;
    let github = method == VerifierMethod::GitHubActions;
    let issuer = match (&s.issuer, github) {
        (Some(i), _) => i.as_str(),
        (None, true) => GITHUB_ACTIONS_ISSUER,
        (None, false) => return Err(AttestError::Misconfigured("jwt.issuer is required for method JWT".into())),
    };
    let t = jose::verify(token, &jwks, &Expectations { issuer, audiences: &s.audiences, now })
        .map_err(|e| jwt_refusal(method, e))?;
    let claims = t.flat();
    let default_claims: &[&str] = if github { &["repository", "run_id", "run_attempt"] } else { &["sub"] };
    let id_claims: Vec<&str> = if s.daemon_id_claims.is_empty() {
        default_claims.to_vec()
    } else {
        s.daemon_id_claims.iter().map(String::as_str).collect()
    };
    let mut parts = vec![verifier];
    for c in &id_claims {
        parts.push(
            claims.get(*c).ok_or_else(|| invalid(method, "daemonIDClaims", format!("the token has no claim {c:?}")))?,
        );
    }
    // Always hashed: claim values (`repo:org/x:ref:...`) are rarely valid ids.
    let id = hashed_id(if github { "gha" } else { "jwt" }, &parts);
    Ok(Checked { id, claims })
}
