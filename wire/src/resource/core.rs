//! `core.riptides.io/v1alpha1`: workload identities and their policy, services, daemons,
//! credentials.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::duration::GoDuration;
use crate::spiffe::SpiffeId;

/// A label map; a list of them is OR'ed, keys inside one map are AND'ed.
pub type Selector = BTreeMap<String, String>;

/// Who is allowed to carry an identity: one daemon, or every daemon of a group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_group: Option<IdRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdRef {
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TlsMode {
    /// Both sides present SVIDs; never falls back to plaintext.
    Mutual,
    /// Only the server presents a certificate (external services).
    Simple,
    /// Plaintext and mTLS on the same port, for migration.
    Permissive,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TlsMode>,
    /// Terminate the application's own TLS locally (TLS intercept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intercept: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRule {
    /// Selects destination Services by their labels.
    #[serde(default)]
    pub selectors: Vec<Selector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionSettings>,
    /// The remote side must present one of these IDs (any ID in the trust domain if empty).
    #[serde(rename = "allowedSPIFFEIDs", default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_spiffe_ids: Vec<SpiffeId>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressRule {
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionSettings>,
    #[serde(rename = "allowedSPIFFEIDs", default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_spiffe_ids: Vec<SpiffeId>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct X509SvidSettings {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<GoDuration>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SvidSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x509: Option<X509SvidSettings>,
}

/// An identity workloads can be issued, who may carry it, and its connection policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadIdentitySpec {
    /// SPIFFE path under the trust domain (`orders-service` -> `spiffe://<td>/orders-service`).
    #[serde(rename = "workloadID")]
    pub workload_id: String,
    pub scope: Scope,
    /// Which local processes get this identity (`process:name`, `process:uid`, `k8s:...`).
    #[serde(default)]
    pub selectors: Vec<Selector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionSettings>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IngressRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svid: Option<SvidSettings>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAddress {
    /// An IP address, a CIDR or a DNS name.
    pub address: String,
    pub port: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TlsMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// PEM CA bundle for verifying an external service (system roots when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
}

/// A destination workloads connect to, selected by egress rules through its labels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub addresses: Vec<ServiceAddress>,
    #[serde(default)]
    pub external: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServiceTls>,
}

/// A registered daemon. Created by the control plane at attestation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DaemonSpec {
    /// The daemon's id (last path segment of its SPIFFE ID).
    pub id: String,
    #[serde(rename = "spiffeID", default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<SpiffeId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Name of the Verifier that admitted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_healthy: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_healthy: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_revision: Option<u64>,
    /// `quic` or `tcp`: how the daemon reaches the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub host: BTreeMap<String, String>,
    /// How it last attested (methods other than join tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<super::auth::DaemonAttestation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CredentialSourceType {
    /// A secret value held by the control plane, delivered only to daemons that need it.
    Static,
    /// OAuth2 client-credentials grant against a token endpoint.
    OAuth2ClientCredentials,
    /// RFC 8693 token exchange against a token endpoint.
    TokenExchange,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenEndpoint {
    #[serde(rename = "tokenURL", alias = "tokenUrl")]
    pub token_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// RFC 8693 `subject_token_type` of the token exchanged (the source's secret value);
    /// `urn:ietf:params:oauth:token-type:access_token` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_token_type: Option<String>,
    /// PEM CA bundle that verifies an `https` token endpoint (system roots when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
}

/// A secret string: serialised as itself (so it can be stored and delivered), but never shown
/// by `Debug`, so a logged or dumped structure cannot carry it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(s: impl Into<String>) -> SecretValue {
        SecretValue(s.into())
    }

    /// The secret itself; callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// Where an injected credential comes from.
///
/// `secretValue` is write-only through the API: the control plane stores it, never returns it
/// (reads, lists, watches), keeps it when an update omits it, and delivers it only to daemons
/// that hold a WorkloadIdentity some CredentialBinding of this source names. Its meaning by
/// type: `static`: the credential itself; `oAuth2ClientCredentials`: the client secret;
/// `tokenExchange`: the subject token exchanged (RFC 8693).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialSourceSpec {
    #[serde(rename = "type")]
    pub source_type: CredentialSourceType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<TokenEndpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_value: Option<SecretValue>,
}

/// The JSON path of the write-only field of a CredentialSource.
pub const CREDENTIAL_SECRET_POINTER: &str = "/spec/secretValue";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialInjection {
    /// HTTP header to set; replaces whatever the application sent.
    pub header: String,
    /// Format with `{{credential}}`, e.g. `Bearer {{credential}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// Ties a workload identity and destination services to a credential source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialBindingSpec {
    #[serde(rename = "workloadID")]
    pub workload_id: String,
    #[serde(default)]
    pub service_selectors: Vec<Selector>,
    pub credential_source: String,
    pub injection: CredentialInjection,
}
