//! The control plane's resource types, in the Kubernetes object shape.
//!
//! Every kind is listed once in [`RESOURCE_TYPES`]: the API server builds its routes and
//! discovery documents from that table, and the CLI resolves `riptides ctl get <kind>` with it,
//! so a new kind is added in one place.
//!
//! Objects travel as JSON. [`validate_object`] turns an incoming object into its typed form
//! (refusing unknown `spec` fields, with the JSON path of the first problem), applies the
//! semantic rules of its kind and returns the normalised object to store.

pub mod auth;
pub mod core;
pub mod duration;
pub mod examples;
pub mod meta;
mod validate;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spiffe::TrustDomain;
pub use meta::{List, ListMeta, ObjectMeta, Status, StatusCause, StatusDetails, WatchEvent, WatchEventType};
pub use validate::FieldError;

pub const CORE_GROUP: &str = "core.riptides.io";
pub const AUTH_GROUP: &str = "auth.riptides.io";
pub const VERSION: &str = "v1alpha1";
/// Namespace used when a request names none.
pub const DEFAULT_NAMESPACE: &str = "riptides-system";

/// A resource of any kind with a typed spec and status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource<S, St = Value> {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: S,
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    pub status: Option<St>,
}

pub type WorkloadIdentity = Resource<core::WorkloadIdentitySpec>;
pub type Service = Resource<core::ServiceSpec>;
pub type Daemon = Resource<core::DaemonSpec, core::DaemonStatus>;
pub type CredentialSource = Resource<core::CredentialSourceSpec>;
pub type CredentialBinding = Resource<core::CredentialBindingSpec>;
pub type Verifier = Resource<auth::VerifierSpec>;
pub type JoinToken = Resource<auth::JoinTokenSpec, auth::JoinTokenStatus>;

/// What the validator needs to know about the control plane.
#[derive(Debug, Clone)]
pub struct ValidationContext {
    pub trust_domain: TrustDomain,
}

/// One row of the kind table.
#[derive(Debug)]
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    /// Kinds whose `status` only the control plane writes: a client's `status` is ignored.
    pub has_status: bool,
    validate: fn(&Value, &ValidationContext) -> Result<Value, Vec<FieldError>>,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    /// The key the store files objects of this type under.
    pub fn store_key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    /// Checks an object of this type and returns it normalised (unknown metadata dropped).
    pub fn validate(&self, object: &Value, ctx: &ValidationContext) -> Result<Value, Vec<FieldError>> {
        let mut errors = Vec::new();
        let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        if api_version != self.api_version() {
            errors.push(FieldError::new("apiVersion", format!("must be {:?}", self.api_version())));
        }
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default();
        if kind != self.kind {
            errors.push(FieldError::new("kind", format!("must be {:?}", self.kind)));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        (self.validate)(object, ctx)
    }

    /// Accepts any of the names kubectl users type: kind, plural, singular, short names,
    /// optionally qualified with the group (`workloadidentities.core.riptides.io`).
    pub fn matches_name(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        let (base, group) = match name.split_once('.') {
            Some((b, g)) => (b.to_owned(), Some(g.to_owned())),
            None => (name.clone(), None),
        };
        if let Some(g) = group {
            if g != self.group {
                return false;
            }
        }
        base == self.kind.to_ascii_lowercase()
            || base == self.plural
            || base == self.singular
            || self.short_names.contains(&base.as_str())
    }
}

macro_rules! resource_type {
    ($group:expr, $kind:literal, $singular:literal, $plural:literal, [$($short:literal),*], $spec:ty, $status:ty, $has_status:expr, $check:path) => {
        ResourceType {
            group: $group,
            version: VERSION,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            short_names: &[$($short),*],
            namespaced: true,
            has_status: $has_status,
            validate: |v, ctx| validate::typed::<$spec, $status>(v, ctx, $check),
        }
    };
}

/// Every kind the control plane serves.
pub static RESOURCE_TYPES: &[ResourceType] = &[
    resource_type!(
        CORE_GROUP,
        "WorkloadIdentity",
        "workloadidentity",
        "workloadidentities",
        ["wi"],
        core::WorkloadIdentitySpec,
        Value,
        false,
        validate::workload_identity
    ),
    resource_type!(
        CORE_GROUP,
        "Service",
        "service",
        "services",
        ["svc"],
        core::ServiceSpec,
        Value,
        false,
        validate::service
    ),
    resource_type!(
        CORE_GROUP,
        "Daemon",
        "daemon",
        "daemons",
        ["dmn"],
        core::DaemonSpec,
        core::DaemonStatus,
        true,
        validate::daemon
    ),
    resource_type!(
        CORE_GROUP,
        "CredentialSource",
        "credentialsource",
        "credentialsources",
        ["cs"],
        core::CredentialSourceSpec,
        Value,
        false,
        validate::credential_source
    ),
    resource_type!(
        CORE_GROUP,
        "CredentialBinding",
        "credentialbinding",
        "credentialbindings",
        ["cb"],
        core::CredentialBindingSpec,
        Value,
        false,
        validate::credential_binding
    ),
    resource_type!(
        AUTH_GROUP,
        "Verifier",
        "verifier",
        "verifiers",
        ["vf"],
        auth::VerifierSpec,
        Value,
        false,
        validate::verifier
    ),
    resource_type!(
        AUTH_GROUP,
        "JoinToken",
        "jointoken",
        "jointokens",
        ["jt"],
        auth::JoinTokenSpec,
        auth::JoinTokenStatus,
        true,
        validate::join_token
    ),
];

/// Finds a type by group and plural, as in a REST path.
pub fn by_path(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCE_TYPES.iter().find(|t| t.group == group && t.version == version && t.plural == plural)
}

/// Finds a type by any name a user may type (`wi`, `workloadidentity`, `WorkloadIdentity`...).
pub fn by_name(name: &str) -> Option<&'static ResourceType> {
    RESOURCE_TYPES.iter().find(|t| t.matches_name(name))
}

/// Finds a type by `apiVersion` and `kind`, as in an object.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    RESOURCE_TYPES.iter().find(|t| t.kind == kind && t.api_version() == api_version)
}

/// Validates `object` against its kind found from its own `apiVersion`/`kind`.
pub fn validate_object(
    object: &Value,
    ctx: &ValidationContext,
) -> Result<(&'static ResourceType, Value), Vec<FieldError>> {
    let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default();
    let rt = by_kind(api_version, kind)
        .ok_or_else(|| vec![FieldError::new("kind", format!("unknown kind {kind:?} in apiVersion {api_version:?}"))])?;
    Ok((rt, rt.validate(object, ctx)?))
}

/// Decodes a stored or received object into its typed form.
pub fn from_value<S: DeserializeOwned, St: DeserializeOwned>(v: Value) -> Result<Resource<S, St>, serde_json::Error> {
    serde_json::from_value(v)
}

#[cfg(test)]
mod tests;
