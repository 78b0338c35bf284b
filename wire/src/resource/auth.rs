//! `auth.riptides.io/v1alpha1`: how daemons prove who they are.

use serde::{Deserialize, Serialize};

use super::duration::GoDuration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VerifierMethod {
    #[serde(rename = "joinToken")]
    JoinToken,
    #[serde(rename = "AWSIID")]
    AwsIid,
    #[serde(rename = "GCPIIT")]
    GcpIit,
    #[serde(rename = "K8sSAT")]
    K8sSat,
    #[serde(rename = "JWT")]
    Jwt,
    #[serde(rename = "GitHubActions")]
    GitHubActions,
    #[serde(rename = "X509CertPOP")]
    X509CertPop,
    #[serde(rename = "SSHCertPOP")]
    SshCertPop,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinTokenSettings {
    /// Longest TTL a token created for this verifier may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl: Option<GoDuration>,
}

/// Admits daemons that prove themselves with `method`, naming them by `workloadIDTemplate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifierSpec {
    pub method: VerifierMethod,
    /// SPIFFE path of admitted daemons, with `{{claim}}` placeholders filled from the proof
    /// (`riptides/daemon/{{id}}` for join tokens).
    #[serde(rename = "workloadIDTemplate", default, skip_serializing_if = "Option::is_none")]
    pub workload_id_template: Option<String>,
    /// Daemon group admitted daemons join (WorkloadIdentity `scope.daemonGroup.id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_token: Option<JoinTokenSettings>,
}

/// A single-use enrollment secret. Only its hash is stored; the secret is shown once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinTokenSpec {
    /// Name of the `joinToken` Verifier (same namespace) that admits this token's daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier: Option<String>,
    /// `sha256:<hex>` of the secret part of the token.
    pub token_hash: String,
    /// RFC 3339 time after which the token is refused.
    pub expires_at: String,
    /// Daemon id to assign (default: generated at attestation).
    #[serde(rename = "daemonID", default, skip_serializing_if = "Option::is_none")]
    pub daemon_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinTokenStatus {
    #[serde(default)]
    pub used: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_by: Option<String>,
    /// `sha256:<hex>` of the public key the token was used with: a retry by the same daemon
    /// (same key) after a lost answer gets its SVID again; anyone else gets TokenUsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_key: Option<String>,
}

/// `sha256:<lowercase hex>` of `bytes`: the form of `JoinToken.spec.tokenHash` and
/// `status.usedKey`. One definition, because the CLI that makes tokens and the control plane
/// that checks them must agree byte for byte.
pub fn sha256_tagged(bytes: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in d.as_ref() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The stored hash of a join token's secret part (the text after the dot).
pub fn token_hash(secret: &str) -> String {
    sha256_tagged(secret.as_bytes())
}
