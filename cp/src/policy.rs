//! Per-daemon policy: which resources concern a daemon, as one versioned document, and the
//! stream of changes to it.
//!
//! A daemon receives the WorkloadIdentities whose `scope` names it (by daemon id or daemon
//! group), every Service (egress rules select them by label, so the daemon needs them all to
//! map destinations), and the trust bundle. The first message is a full snapshot; after that,
//! deltas carry the store revision they reflect. A daemon that reconnects sends the last
//! revision it has and gets only what changed since — from the store's watch history — so a
//! control-plane restart does not turn into a full resync of every daemon. Only when that
//! history is gone (compacted) does it get a snapshot again.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use riptides_wire::proto::messages::{
    CredentialSet, CredentialSourceItem, PolicyDocument, PolicyItem, PolicyKey, PolicyKind, PolicyUpdate,
    TrustBundleMsg,
};
use riptides_wire::resource::{self, ResourceType};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::api::object::{from_stored, from_stored_with_secrets};
use crate::ca::{Ca, TrustBundle};
use crate::store::{Store, StoreError, StoredObject, WatchEvent};

/// Changes arriving within this window after the first are sent as one delta.
const COALESCE: Duration = Duration::from_millis(20);
/// How often the trust bundle is checked for a rotation step.
const BUNDLE_POLL: Duration = Duration::from_secs(1);

/// What a daemon is, for selecting its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonScope {
    pub id: String,
    pub group: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("the daemon's policy stream is closed")]
    Closed,
}

fn wi_type() -> &'static ResourceType {
    resource::by_name("workloadidentities").expect("WorkloadIdentity is a known kind")
}
fn svc_type() -> &'static ResourceType {
    resource::by_name("services").expect("Service is a known kind")
}
fn binding_type() -> &'static ResourceType {
    resource::by_name("credentialbindings").expect("CredentialBinding is a known kind")
}
fn source_type() -> &'static ResourceType {
    resource::by_name("credentialsources").expect("CredentialSource is a known kind")
}

/// Whether a WorkloadIdentity (stored JSON) may be carried by the daemon in `scope`.
pub fn in_scope(wi: &Value, scope: &DaemonScope) -> bool {
    let s = wi.pointer("/spec/scope");
    let by_id = s.and_then(|s| s.pointer("/daemon/id")).and_then(Value::as_str);
    let by_group = s.and_then(|s| s.pointer("/daemonGroup/id")).and_then(Value::as_str);
    by_id == Some(scope.id.as_str()) || (scope.group.is_some() && by_group == scope.group.as_deref())
}

pub fn bundle_msg(b: &TrustBundle) -> TrustBundleMsg {
    TrustBundleMsg {
        trust_domain: b.trust_domain().as_str().to_owned(),
        sequence: b.sequence(),
        roots_der: b.roots().iter().map(|r| r.as_ref().to_vec()).collect(),
    }
}

fn key_of(obj: &StoredObject, kind: PolicyKind) -> PolicyKey {
    PolicyKey { kind, namespace: obj.key.namespace.clone(), name: obj.key.name.clone() }
}

/// What one stored change means for one daemon: an upsert, a removal, or nothing.
enum Change {
    Upsert(PolicyItem),
    Remove(PolicyKey),
    None,
}

fn change_for(ev: &WatchEvent, scope: &DaemonScope, wi_key: &str, svc_key: &str) -> Change {
    let (obj, deleted_at) = match ev {
        WatchEvent::Put { object, .. } => (object, None),
        WatchEvent::Deleted { object, revision } => (object, Some(*revision)),
    };
    let kind = if obj.key.resource == wi_key {
        PolicyKind::WorkloadIdentity
    } else if obj.key.resource == svc_key {
        PolicyKind::Service
    } else {
        return Change::None;
    };
    if deleted_at.is_some() {
        return Change::Remove(key_of(obj, kind));
    }
    let Ok(value) = from_stored(obj, obj.mod_revision) else {
        tracing::error!(key = %obj.key, "corrupt stored object left out of policy");
        return Change::None;
    };
    match kind {
        PolicyKind::WorkloadIdentity if in_scope(&value, scope) => {
            Change::Upsert(PolicyItem::WorkloadIdentity(value.to_string()))
        }
        // Out of scope now: the daemon may hold it from before, so it must drop it.
        PolicyKind::WorkloadIdentity => Change::Remove(key_of(obj, kind)),
        _ => Change::Upsert(PolicyItem::Service(value.to_string())),
    }
}

/// The latest list of one resource, shared by every daemon stream of a compiler.
///
/// A change to a WorkloadIdentity, CredentialBinding or CredentialSource makes every daemon
/// stream recompute its credential set from these lists. Listed per stream, that is two or
/// three store lists per connected daemon per change: cheap on the embedded store, but on etcd
/// each is a range request over the network, and hundreds of them per change queue up on the
/// etcd members (measured: ~550 ms of the ~590 ms a delta took with 167 daemons per replica).
/// Shared, one list per resource serves every stream that needs a state at least as new as the
/// change it is processing.
#[derive(Default)]
struct SharedList {
    /// The last list and the store revision it reflects.
    latest: tokio::sync::Mutex<Option<(u64, Arc<Vec<StoredObject>>)>>,
}

impl SharedList {
    /// The objects of `resource` as of a revision `>= min` and that revision. Concurrent
    /// callers wait for one list instead of each making their own (the lock is held across the
    /// list on purpose).
    async fn at_least(
        &self,
        store: &dyn Store,
        resource: &str,
        min: u64,
    ) -> Result<(Arc<Vec<StoredObject>>, u64), StoreError> {
        let mut latest = self.latest.lock().await;
        if let Some((rev, objects)) = latest.as_ref() {
            if *rev >= min {
                return Ok((objects.clone(), *rev));
            }
        }
        let (objects, rev) = store.list(resource, None).await?;
        let objects = Arc::new(objects);
        // A list is a snapshot at the store's current revision, which is at least that of
        // any change a watch has delivered: `rev >= min` whenever `min` came from a watch.
        *latest = Some((rev, objects.clone()));
        Ok((objects, rev))
    }
}

/// Lists shared by the daemon streams of one compiler (see [`SharedList`]).
#[derive(Default)]
struct SharedLists {
    workload_identities: SharedList,
    bindings: SharedList,
    sources: SharedList,
}

/// Builds documents and deltas for daemons from the store and the CA.
#[derive(Clone)]
pub struct PolicyCompiler {
    store: Arc<dyn Store>,
    ca: Arc<Ca>,
    lists: Arc<SharedLists>,
}

impl PolicyCompiler {
    pub fn new(store: Arc<dyn Store>, ca: Arc<Ca>) -> Self {
        PolicyCompiler { store, ca, lists: Arc::default() }
    }

    /// The full document for `scope` and the revision it reflects. Two lists are two
    /// snapshots; the document is labelled with the older revision, so replaying changes from
    /// it can only repeat (idempotent) upserts, never miss one.
    pub async fn snapshot(&self, scope: &DaemonScope) -> Result<(u64, PolicyDocument), PolicyError> {
        let (wis, r1) = self.store.list(&wi_type().store_key(), None).await?;
        let (svcs, r2) = self.store.list(&svc_type().store_key(), None).await?;
        let mut items = Vec::new();
        for w in &wis {
            match from_stored(w, w.mod_revision) {
                Ok(v) if in_scope(&v, scope) => items.push(PolicyItem::WorkloadIdentity(v.to_string())),
                Ok(_) => {}
                Err(e) => tracing::error!(key = %w.key, error = %e, "corrupt stored object left out of policy"),
            }
        }
        for s in &svcs {
            match from_stored(s, s.mod_revision) {
                Ok(v) => items.push(PolicyItem::Service(v.to_string())),
                Err(e) => tracing::error!(key = %s.key, error = %e, "corrupt stored object left out of policy"),
            }
        }
        let (creds, r3) = self.credentials(&wis, scope, r1).await?;
        if !creds.bindings.is_empty() {
            items.push(PolicyItem::Credentials(creds));
        }
        let bundle = bundle_msg(&self.ca.bundle());
        let doc = PolicyDocument { trust_domain: bundle.trust_domain.clone(), bundle, items };
        Ok((r1.min(r2).min(r3), doc))
    }

    /// The credential part of `scope`'s document: the CredentialBindings whose `workloadID`
    /// is that of a WorkloadIdentity in scope (same namespace), and the CredentialSources they
    /// name, secrets included. Nothing else ever carries a secret to a daemon. The bindings
    /// and sources are the shared lists as of a revision `>= min`. Also returns the older of
    /// the two list revisions.
    async fn credentials(
        &self,
        wis: &[StoredObject],
        scope: &DaemonScope,
        min: u64,
    ) -> Result<(CredentialSet, u64), PolicyError> {
        let (bindings, r1) = self.lists.bindings.at_least(&*self.store, &binding_type().store_key(), min).await?;
        if bindings.is_empty() {
            // No binding, no credential: skip decoding every WorkloadIdentity, which with many
            // daemons and identities is most of the CPU a change costs each daemon stream.
            return Ok((CredentialSet::default(), r1));
        }
        let mut local: BTreeSet<(String, String)> = BTreeSet::new();
        for w in wis {
            let Ok(v) = from_stored(w, w.mod_revision) else { continue };
            if !in_scope(&v, scope) {
                continue;
            }
            if let Some(id) = v.pointer("/spec/workloadID").and_then(Value::as_str) {
                local.insert((w.key.namespace.clone(), id.trim_start_matches('/').to_owned()));
            }
        }
        let mut set = CredentialSet::default();
        let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
        for b in bindings.iter() {
            let Ok(v) = from_stored(b, b.mod_revision) else {
                tracing::error!(key = %b.key, "corrupt stored object left out of policy");
                continue;
            };
            let Some(id) = v.pointer("/spec/workloadID").and_then(Value::as_str) else { continue };
            if !local.contains(&(b.key.namespace.clone(), id.trim_start_matches('/').to_owned())) {
                continue;
            }
            if let Some(src) = v.pointer("/spec/credentialSource").and_then(Value::as_str) {
                wanted.insert((b.key.namespace.clone(), src.to_owned()));
            }
            set.bindings.push(v.to_string());
        }
        if set.bindings.is_empty() {
            return Ok((set, r1));
        }
        let (sources, r2) = self.lists.sources.at_least(&*self.store, &source_type().store_key(), min).await?;
        for s in sources.iter() {
            if !wanted.contains(&(s.key.namespace.clone(), s.key.name.clone())) {
                continue;
            }
            let Ok(mut v) = from_stored_with_secrets(s, s.mod_revision) else {
                tracing::error!(key = %s.key, "corrupt stored object left out of policy");
                continue;
            };
            let secret = v
                .pointer_mut("/spec")
                .and_then(Value::as_object_mut)
                .and_then(|spec| spec.remove("secretValue"))
                .and_then(|s| s.as_str().map(riptides_wire::resource::core::SecretValue::new));
            set.sources.push(CredentialSourceItem { resource: v.to_string(), secret });
        }
        Ok((set, r1.min(r2)))
    }

    /// The credential set as of a revision `>= min` (the changes up to `min` are in it), for a
    /// delta: `None` when it has not changed since `last`.
    async fn credentials_delta(
        &self,
        scope: &DaemonScope,
        min: u64,
        last: &mut Option<CredentialSet>,
    ) -> Result<Option<PolicyItem>, PolicyError> {
        let (wis, _) = self.lists.workload_identities.at_least(&*self.store, &wi_type().store_key(), min).await?;
        let (set, _) = self.credentials(&wis, scope, min).await?;
        if last.as_ref() == Some(&set) {
            return Ok(None);
        }
        *last = Some(set.clone());
        Ok(Some(PolicyItem::Credentials(set)))
    }

    /// Streams policy to one daemon through `send` until `cancel` fires or `send` fails:
    /// a snapshot (or, when `resume_from` is still in the store's history, only the changes
    /// after it), then deltas as the store changes and the trust bundle rotates.
    pub async fn stream<F, Fut>(
        &self,
        scope: &DaemonScope,
        resume_from: Option<u64>,
        mut send: F,
        cancel: CancellationToken,
    ) -> Result<(), PolicyError>
    where
        F: FnMut(PolicyUpdate) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let current = self.store.current_revision().await?;
        let resumed = match resume_from {
            Some(r) if r <= current => match self.store.watch(None, None, r).await {
                Ok(w) => Some((r, w)),
                Err(StoreError::Gone { .. }) => None,
                Err(e) => return Err(e.into()),
            },
            _ => None,
        };
        // The credential set last sent (`None`: unknown to us, e.g. after a resume, so the
        // next computation is sent whatever it is).
        let mut creds_sent: Option<CredentialSet> = None;
        let (mut revision, mut watch) = match resumed {
            Some((r, w)) => {
                tracing::info!(daemon = %scope.id, from = r, "policy stream resumed without snapshot");
                (r, w)
            }
            None => {
                let (rev, doc) = self.snapshot(scope).await?;
                creds_sent = Some(
                    doc.items
                        .iter()
                        .find_map(|i| match i {
                            PolicyItem::Credentials(c) => Some(c.clone()),
                            _ => None,
                        })
                        .unwrap_or_default(),
                );
                let watch = self.store.watch(None, None, rev).await?;
                tracing::info!(daemon = %scope.id, revision = rev, items = doc.items.len(), "policy snapshot sent");
                if !send(PolicyUpdate::Snapshot { revision: rev, document: doc }).await {
                    return Err(PolicyError::Closed);
                }
                (rev, watch)
            }
        };
        let mut bundle_seq = self.ca.bundle().sequence();
        if resume_from.is_some() {
            // The daemon may have missed a rotation while it was away.
            bundle_seq = 0;
        }
        let (wi_key, svc_key) = (wi_type().store_key(), svc_type().store_key());
        let cred_keys = [binding_type().store_key(), source_type().store_key()];
        if creds_sent.is_none() {
            // Resumed: the daemon may hold a set from before that changed meanwhile. Send the
            // current one, unless the feature is unused (no set now and none to clear).
            let mut last = None;
            if let Some(item) = self.credentials_delta(scope, current, &mut last).await? {
                let empty = matches!(&item, PolicyItem::Credentials(c) if c.bindings.is_empty());
                let used = !empty
                    || !self
                        .lists
                        .bindings
                        .at_least(&*self.store, &binding_type().store_key(), current)
                        .await?
                        .0
                        .is_empty();
                if used && !send(PolicyUpdate::Delta { revision, upserts: vec![item], removals: vec![] }).await {
                    return Err(PolicyError::Closed);
                }
            }
            creds_sent = last;
        }
        let mut bundle_tick = tokio::time::interval(BUNDLE_POLL);
        loop {
            let first = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = bundle_tick.tick() => {
                    let b = self.ca.bundle();
                    if b.sequence() != bundle_seq {
                        bundle_seq = b.sequence();
                        let up = PolicyUpdate::Delta { revision, upserts: vec![PolicyItem::TrustBundle(bundle_msg(&b))], removals: vec![] };
                        if !send(up).await { return Err(PolicyError::Closed); }
                    }
                    continue;
                }
                ev = watch.recv() => ev,
            };
            let t_first = std::time::Instant::now();
            let mut events = match first {
                None => return Err(PolicyError::Closed),
                Some(ev) => vec![ev?],
            };
            // Coalesce a burst into one delta.
            let deadline = tokio::time::Instant::now() + COALESCE;
            while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, watch.recv()).await {
                events.push(ev?);
            }
            let (mut upserts, mut removals) = (Vec::new(), Vec::new());
            // Bindings, sources and workload scopes decide the credential set: recompute it
            // whenever one of them changed, send it when it differs from the last one sent.
            let creds_touched = events
                .iter()
                .any(|ev| ev.key().resource == wi_key || cred_keys.iter().any(|k| *k == ev.key().resource));
            let mut touched = BTreeSet::new();
            // Later events for the same key win: walk backwards and keep the first seen.
            for ev in events.iter().rev() {
                revision = revision.max(ev.revision());
                if !touched.insert(ev.key().clone()) {
                    continue;
                }
                match change_for(ev, scope, &wi_key, &svc_key) {
                    Change::Upsert(i) => upserts.push(i),
                    Change::Remove(k) => removals.push(k),
                    Change::None => {}
                }
            }
            upserts.reverse();
            removals.reverse();
            let t_coalesced = t_first.elapsed();
            if creds_touched {
                if let Some(item) = self.credentials_delta(scope, revision, &mut creds_sent).await? {
                    upserts.push(item);
                }
            }
            if upserts.is_empty() && removals.is_empty() {
                continue;
            }
            tracing::debug!(daemon = %scope.id, revision, upserts = upserts.len(), removals = removals.len(), coalesce_us = t_coalesced.as_micros() as u64, total_us = t_first.elapsed().as_micros() as u64, "policy delta");
            if !send(PolicyUpdate::Delta { revision, upserts, removals }).await {
                return Err(PolicyError::Closed);
            }
        }
    }
}
