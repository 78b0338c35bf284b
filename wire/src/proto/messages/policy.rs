//! Policy push: the per-daemon policy document and its deltas.
//!
//! Resources travel as their canonical JSON (the control plane's serialization of the
//! `wire::resource` types), so those types stay the one schema for both the API and the push
//! protocol; bincode could not carry `serde_json::Value` anyway (it is not self-describing).

use serde::{Deserialize, Serialize};

use super::TrustBundleMsg;

/// One frame of a policy watch ([`super::Request::WatchPolicy`]), sent by the CP as
/// [`super::Response::Policy`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyUpdate {
    /// The whole document at `revision`: sent first on a watch, and again whenever the CP cannot
    /// resume from the daemon's revision (compacted history) or the delta would be larger.
    /// Replaces whatever the daemon had.
    Snapshot { revision: u64, document: PolicyDocument },
    /// The changes from the previous revision the daemon saw to `revision` (strictly greater).
    /// Upserts replace the item with the same [`PolicyKey`]; removals delete it.
    Delta { revision: u64, upserts: Vec<PolicyItem>, removals: Vec<PolicyKey> },
}

impl PolicyUpdate {
    /// The revision the daemon is at after applying this update; what it sends as
    /// `resume_from` after a reconnect.
    pub fn revision(&self) -> u64 {
        match self {
            PolicyUpdate::Snapshot { revision, .. } | PolicyUpdate::Delta { revision, .. } => *revision,
        }
    }
}

/// Everything one daemon needs to enforce policy, compiled by the CP for that daemon: the
/// WorkloadIdentities scoped to it, the Services they reach, and trust bundles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDocument {
    /// The control plane's trust domain (`example.org`, no scheme).
    pub trust_domain: String,
    /// The trust bundle of `trust_domain`. A [`PolicyItem::TrustBundle`] upsert for the same
    /// trust domain replaces it (CA rotation).
    pub bundle: TrustBundleMsg,
    /// WorkloadIdentities, Services and federated trust bundles, at most one per [`PolicyKey`].
    pub items: Vec<PolicyItem>,
}

/// One resource of a policy document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyItem {
    /// A `core.riptides.io/v1alpha1` WorkloadIdentity, as canonical JSON.
    WorkloadIdentity(String),
    /// A `core.riptides.io/v1alpha1` Service, as canonical JSON.
    Service(String),
    /// The bundle of a (federated, or the own) trust domain.
    TrustBundle(TrustBundleMsg),
    /// The CredentialBindings naming this daemon's workloads and the CredentialSources they
    /// use, with the sources' secret values. One item for the whole set (key: kind
    /// `Credentials`, empty namespace and name): an upsert replaces the set, so a binding that
    /// no longer concerns the daemon disappears with its secret. Appended last, so the
    /// encoding of the older variants is unchanged.
    Credentials(CredentialSet),
}

/// What a daemon needs to inject credentials: see [`PolicyItem::Credentials`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialSet {
    /// `core.riptides.io/v1alpha1` CredentialBindings, as canonical JSON.
    pub bindings: Vec<String>,
    /// The CredentialSources those bindings name.
    pub sources: Vec<CredentialSourceItem>,
}

/// One CredentialSource: the resource without its secret, and the secret apart (its `Debug`
/// is redacted, so logging a policy document cannot show it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialSourceItem {
    /// The resource as canonical JSON, `spec.secretValue` removed.
    pub resource: String,
    pub secret: Option<crate::resource::core::SecretValue>,
}

/// Which kind of resource a [`PolicyKey`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PolicyKind {
    WorkloadIdentity,
    Service,
    TrustBundle,
    Credentials,
}

/// Identifies an item across deltas: kind, namespace and name of the resource. For trust
/// bundles the namespace is empty and the name is the trust domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyKey {
    pub kind: PolicyKind,
    pub namespace: String,
    pub name: String,
}

impl PolicyKey {
    /// The key of the one [`PolicyItem::Credentials`] item.
    pub fn credentials() -> PolicyKey {
        PolicyKey { kind: PolicyKind::Credentials, namespace: String::new(), name: String::new() }
    }
}

/// A policy item or delta that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyItemError {
    #[error("{kind:?} item is not a resource with metadata.name: {reason}")]
    BadResource { kind: PolicyKind, reason: String },
    #[error("the bundle of the document's own trust domain {0} cannot be removed")]
    OwnBundleRemoved(String),
}

#[derive(Deserialize)]
struct ResourceHead {
    metadata: ResourceMeta,
}

#[derive(Deserialize)]
struct ResourceMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

impl PolicyItem {
    pub fn kind(&self) -> PolicyKind {
        match self {
            PolicyItem::WorkloadIdentity(_) => PolicyKind::WorkloadIdentity,
            PolicyItem::Service(_) => PolicyKind::Service,
            PolicyItem::TrustBundle(_) => PolicyKind::TrustBundle,
            PolicyItem::Credentials(_) => PolicyKind::Credentials,
        }
    }

    /// The item's key, read from the resource's `metadata` (only that part of the JSON is
    /// looked at; the full resource is parsed by whoever enforces it).
    pub fn key(&self) -> Result<PolicyKey, PolicyItemError> {
        let kind = self.kind();
        let json = match self {
            PolicyItem::WorkloadIdentity(j) | PolicyItem::Service(j) => j,
            PolicyItem::TrustBundle(b) => {
                return Ok(PolicyKey { kind, namespace: String::new(), name: b.trust_domain.clone() })
            }
            PolicyItem::Credentials(_) => return Ok(PolicyKey::credentials()),
        };
        let head: ResourceHead =
            serde_json::from_str(json).map_err(|e| PolicyItemError::BadResource { kind, reason: e.to_string() })?;
        if head.metadata.name.is_empty() {
            return Err(PolicyItemError::BadResource { kind, reason: "empty metadata.name".into() });
        }
        Ok(PolicyKey { kind, namespace: head.metadata.namespace.unwrap_or_default(), name: head.metadata.name })
    }
}

impl PolicyDocument {
    /// Applies a delta's upserts and removals. All keys are checked first, so a bad delta leaves
    /// the document unchanged (the daemon then asks for a fresh snapshot).
    pub fn apply_delta(&mut self, upserts: Vec<PolicyItem>, removals: &[PolicyKey]) -> Result<(), PolicyItemError> {
        let keyed: Vec<(PolicyKey, PolicyItem)> =
            upserts.into_iter().map(|i| i.key().map(|k| (k, i))).collect::<Result<_, _>>()?;
        if let Some(r) = removals.iter().find(|r| r.kind == PolicyKind::TrustBundle && r.name == self.trust_domain) {
            return Err(PolicyItemError::OwnBundleRemoved(r.name.clone()));
        }
        // Keys of existing items; an item whose key cannot be computed never matches.
        let mut keys: Vec<Option<PolicyKey>> = self.items.iter().map(|i| i.key().ok()).collect();
        for removal in removals {
            while let Some(pos) = keys.iter().position(|k| k.as_ref() == Some(removal)) {
                keys.remove(pos);
                self.items.remove(pos);
            }
        }
        for (key, item) in keyed {
            if let PolicyItem::TrustBundle(b) = &item {
                if b.trust_domain == self.trust_domain {
                    self.bundle = b.clone();
                    continue;
                }
            }
            match keys.iter().position(|k| k.as_ref() == Some(&key)) {
                Some(pos) => self.items[pos] = item,
                None => {
                    keys.push(Some(key));
                    self.items.push(item);
                }
            }
        }
        Ok(())
    }
}
