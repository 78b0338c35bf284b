//! The policy document the daemon enforces: applying snapshots and deltas, and what the
//! certificate manager needs from it.

use std::time::Duration;

use riptides_wire::proto::messages::{PolicyDocument, PolicyItem, PolicyItemError, PolicyUpdate};
use riptides_wire::resource::WorkloadIdentity;
use riptides_wire::TrustDomain;

/// The current document and the revision it is at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyState {
    pub revision: Option<u64>,
    pub document: PolicyDocument,
}

/// What an update was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Snapshot,
    Delta,
}

/// Why an update could not be applied; the watch restarts with a fresh snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("delta to revision {got} does not follow revision {have:?}")]
    OutOfOrder { have: Option<u64>, got: u64 },
    #[error("bad delta: {0}")]
    Item(#[from] PolicyItemError),
}

impl PolicyState {
    pub fn apply(&mut self, update: PolicyUpdate) -> Result<Applied, ApplyError> {
        match update {
            PolicyUpdate::Snapshot { revision, document } => {
                self.revision = Some(revision);
                self.document = document;
                Ok(Applied::Snapshot)
            }
            PolicyUpdate::Delta { revision, upserts, removals } => {
                // A delta at the revision already held is a re-send of state at that revision
                // (a control plane resuming the stream re-checks the trust bundle at the
                // resume revision): applying it again is idempotent. Only an older one is out
                // of order.
                match self.revision {
                    Some(have) if revision >= have => {}
                    have => return Err(ApplyError::OutOfOrder { have, got: revision }),
                }
                let mut doc = self.document.clone();
                doc.apply_delta(upserts, &removals)?;
                self.document = doc;
                self.revision = Some(revision);
                Ok(Applied::Delta)
            }
        }
    }
}

/// One workload identity the daemon should hold an SVID for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WantedIdentity {
    /// `spiffe://<td>/<workloadID>`.
    pub spiffe_id: String,
    /// The WorkloadIdentity's `workloadID` (what `SignWorkload` carries).
    pub workload_id: String,
    /// `svid.x509.ttl`, when set.
    pub ttl: Option<Duration>,
}

/// The workload identities in a document (the CP only sends those scoped to this daemon).
/// Items that do not parse are skipped with a warning.
pub fn wanted_identities(doc: &PolicyDocument) -> Vec<WantedIdentity> {
    let td = match TrustDomain::parse(&doc.trust_domain) {
        Ok(td) => td,
        Err(e) => {
            if !doc.trust_domain.is_empty() {
                tracing::warn!(trust_domain = %doc.trust_domain, error = %e, "policy has an invalid trust domain");
            }
            return Vec::new();
        }
    };
    let mut out: Vec<WantedIdentity> = doc
        .items
        .iter()
        .filter_map(|item| match item {
            PolicyItem::WorkloadIdentity(json) => match serde_json::from_str::<WorkloadIdentity>(json) {
                Ok(wi) => match td.workload_id(&wi.spec.workload_id) {
                    Ok(id) => Some(WantedIdentity {
                        spiffe_id: id.to_string(),
                        workload_id: wi.spec.workload_id.clone(),
                        ttl: wi.spec.svid.as_ref().and_then(|s| s.x509.as_ref()).and_then(|x| x.ttl.as_ref()).map(|t| t.as_duration()),
                    }),
                    Err(e) => {
                        tracing::warn!(workload_id = %wi.spec.workload_id, error = %e, "skipping WorkloadIdentity with a bad workloadID");
                        None
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a WorkloadIdentity that does not parse");
                    None
                }
            },
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.spiffe_id == b.spiffe_id);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use riptides_wire::proto::messages::{PolicyKey, PolicyKind, TrustBundleMsg};

    fn wi(name: &str, workload: &str, ttl: Option<&str>) -> PolicyItem {
        let mut spec = serde_json::json!({ "workloadID": workload, "scope": { "daemon": { "id": "d1" } } });
        if let Some(t) = ttl {
            spec["svid"] = serde_json::json!({ "x509": { "ttl": t } });
        }
        PolicyItem::WorkloadIdentity(
            serde_json::json!({
                "apiVersion": "core.riptides.io/v1alpha1", "kind": "WorkloadIdentity",
                "metadata": { "name": name, "namespace": "default" }, "spec": spec,
            })
            .to_string(),
        )
    }

    fn doc(items: Vec<PolicyItem>) -> PolicyDocument {
        PolicyDocument {
            trust_domain: "example.com".into(),
            bundle: TrustBundleMsg { trust_domain: "example.com".into(), sequence: 1, roots_der: vec![vec![1]] },
            items,
        }
    }

    #[test]
    fn snapshot_then_deltas() {
        let mut s = PolicyState::default();
        // A delta before any snapshot is out of order.
        assert!(matches!(
            s.apply(PolicyUpdate::Delta { revision: 3, upserts: vec![], removals: vec![] }),
            Err(ApplyError::OutOfOrder { have: None, got: 3 })
        ));
        assert_eq!(
            s.apply(PolicyUpdate::Snapshot { revision: 5, document: doc(vec![wi("a", "a", None)]) }),
            Ok(Applied::Snapshot)
        );
        assert_eq!(s.revision, Some(5));
        let d = PolicyUpdate::Delta { revision: 7, upserts: vec![wi("b", "ns/b", Some("10m"))], removals: vec![] };
        assert_eq!(s.apply(d), Ok(Applied::Delta));
        assert_eq!(s.revision, Some(7));
        let wanted = wanted_identities(&s.document);
        assert_eq!(wanted.len(), 2);
        assert_eq!(wanted[0].spiffe_id, "spiffe://example.com/a");
        assert_eq!(wanted[1].spiffe_id, "spiffe://example.com/ns/b");
        assert_eq!(wanted[1].ttl, Some(Duration::from_secs(600)));
        // Stale delta refused, state unchanged; a re-send at the held revision is idempotent.
        let before = s.clone();
        assert!(s.apply(PolicyUpdate::Delta { revision: 6, upserts: vec![], removals: vec![] }).is_err());
        assert_eq!(s, before);
        s.apply(PolicyUpdate::Delta { revision: 7, upserts: vec![], removals: vec![] }).unwrap();
        assert_eq!(s, before);
        // Removal.
        let rm = PolicyKey { kind: PolicyKind::WorkloadIdentity, namespace: "default".into(), name: "a".into() };
        s.apply(PolicyUpdate::Delta { revision: 9, upserts: vec![], removals: vec![rm] }).unwrap();
        assert_eq!(wanted_identities(&s.document).len(), 1);
        // A bad delta leaves the document unchanged.
        let before = s.clone();
        let bad =
            PolicyUpdate::Delta { revision: 10, upserts: vec![PolicyItem::Service("{}".into())], removals: vec![] };
        assert!(matches!(s.apply(bad), Err(ApplyError::Item(_))));
        assert_eq!(s, before);
    }
}
