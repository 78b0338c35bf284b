//! `auth.riptides.io/v1alpha1`: how daemons prove who they are.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::duration::GoDuration;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VerifierMethod {
    #[default]
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

impl VerifierMethod {
    /// The name used in YAML (`spec.method`).
    pub fn as_str(&self) -> &'static str {
        match self {
            VerifierMethod::JoinToken => "joinToken",
            VerifierMethod::AwsIid => "AWSIID",
            VerifierMethod::GcpIit => "GCPIIT",
            VerifierMethod::K8sSat => "K8sSAT",
            VerifierMethod::Jwt => "JWT",
            VerifierMethod::GitHubActions => "GitHubActions",
            VerifierMethod::X509CertPop => "X509CertPOP",
            VerifierMethod::SshCertPop => "SSHCertPOP",
        }
    }

    /// The claims a method provides for `workloadIDTemplate` and `requiredMetadata`; `None`
    /// for the JWT methods, whose claims are whatever the issuer puts in its tokens.
    pub fn claims(&self) -> Option<&'static [&'static str]> {
        Some(match self {
            VerifierMethod::JoinToken => &["id", "token"],
            VerifierMethod::AwsIid => &[
                "id",
                "account",
                "region",
                "instance_id",
                "image_id",
                "instance_type",
                "availability_zone",
                "architecture",
            ],
            VerifierMethod::GcpIit => {
                &["id", "project_id", "project_number", "zone", "instance_id", "instance_name", "email", "sub"]
            }
            VerifierMethod::K8sSat => &[
                "id",
                "cluster",
                "namespace",
                "service_account",
                "service_account_uid",
                "pod_name",
                "pod_uid",
                "node_name",
                "node_uid",
            ],
            VerifierMethod::X509CertPop => &["id", "cn", "fingerprint", "serial", "issuer_cn"],
            VerifierMethod::SshCertPop => &["id", "key_id", "fingerprint", "serial", "principal"],
            VerifierMethod::Jwt | VerifierMethod::GitHubActions => return None,
        })
    }
}

/// AWS instance identity documents: the plaintext document with its base64 RSA/SHA-256
/// signature (`/latest/dynamic/instance-identity/signature`), checked against the AWS RSA
/// public certificate of the region(s).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsIidSettings {
    /// PEM: one or more AWS RSA public certificates (one per region family); a document must
    /// verify with one of them.
    pub certificates: String,
    /// Accepted `accountId`s (empty: any account).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
    /// Accepted `region`s (empty: any region).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
}

/// GCP instance identity tokens (`format=full`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcpIitSettings {
    /// JWKS (JSON) of Google's signing keys.
    pub jwks: String,
    /// The audience the daemon asks the metadata server for; tokens must carry it.
    pub audience: String,
    /// Accepted `project_id`s (empty: any project).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    /// Expected `iss` (default `https://accounts.google.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

/// Kubernetes (projected) service-account tokens, checked offline against the cluster's
/// issuer keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8sSatSettings {
    /// Cluster name used in daemon ids and the `cluster` claim.
    pub cluster: String,
    /// The cluster's service-account issuer (`--service-account-issuer`).
    pub issuer: String,
    /// JWKS (JSON) of the issuer (`kubectl get --raw /openid/v1/jwks`).
    pub jwks: String,
    /// Accepted audiences; the token must carry one of them.
    pub audiences: Vec<String>,
    /// Accepted service accounts as `namespace:name` (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
}

/// Generic JWT/OIDC tokens (methods `JWT` and `GitHubActions`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtSettings {
    /// Expected `iss`; required for `JWT`, defaults to GitHub's for `GitHubActions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// JWKS (JSON) of the issuer.
    pub jwks: String,
    /// Accepted audiences; the token must carry one of them.
    pub audiences: Vec<String>,
    /// Claims whose values identify one daemon (default `sub`; `GitHubActions`: `repository`,
    /// `run_id`, `run_attempt`).
    #[serde(rename = "daemonIDClaims", default, skip_serializing_if = "Vec::is_empty")]
    pub daemon_id_claims: Vec<String>,
}

/// X.509 proof of possession: a certificate chaining to `caBundle` and a signature over a
/// control-plane challenge made with its key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct X509CertPopSettings {
    /// PEM: the CA certificate(s) daemon certificates chain to.
    pub ca_bundle: String,
}

/// SSH certificate proof of possession: a host certificate signed by one of `certAuthorities`
/// and a signature over a control-plane challenge made with the host key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SshCertPopSettings {
    /// CA public keys in `authorized_keys` form (`ssh-ed25519 AAAA... comment`).
    pub cert_authorities: Vec<String>,
    /// If set, the certificate must list one of these principals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
}

/// Admits daemons that prove themselves with `method`, naming them by `workloadIDTemplate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// Claim values a proof must carry (e.g. `repository: org/repo`); a proof missing one, or
    /// with a different value, is refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub required_metadata: BTreeMap<String, String>,
    #[serde(rename = "awsIID", default, skip_serializing_if = "Option::is_none")]
    pub aws_iid: Option<AwsIidSettings>,
    #[serde(rename = "gcpIIT", default, skip_serializing_if = "Option::is_none")]
    pub gcp_iit: Option<GcpIitSettings>,
    #[serde(rename = "k8sSAT", default, skip_serializing_if = "Option::is_none")]
    pub k8s_sat: Option<K8sSatSettings>,
    /// For `JWT` and `GitHubActions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSettings>,
    #[serde(rename = "x509CertPOP", default, skip_serializing_if = "Option::is_none")]
    pub x509_cert_pop: Option<X509CertPopSettings>,
    #[serde(rename = "sshCertPOP", default, skip_serializing_if = "Option::is_none")]
    pub ssh_cert_pop: Option<SshCertPopSettings>,
}

/// How a daemon last attested (`Daemon.status.attestation`): what the re-attestation rules of
/// its method are checked against.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonAttestation {
    /// The Verifier method (`AWSIID`, `K8sSAT`, ...).
    pub method: String,
    /// `sha256:<hex>` of the key the daemon attested with (a retry with the same key after a
    /// lost answer is recognised).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `sha256:<hex>` of the bearer token used (the same token is not accepted twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    /// RFC 3339 time of the attestation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// `iss` of GitHub Actions OIDC tokens (the `GitHubActions` preset's default).
pub const GITHUB_ACTIONS_ISSUER: &str = "https://token.actions.githubusercontent.com";
/// `iss` of GCP instance identity tokens.
pub const GCP_ISSUER: &str = "https://accounts.google.com";

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
