//! Resource storage under the Kubernetes-compatible API.
//!
//! The [`Store`] trait is deliberately shaped like etcd's data model so that an etcd backend can be
//! added later without touching callers:
//!
//! - one **global revision** counter, bumped by every successful write (etcd's revision);
//! - every object carries `create_revision` and `mod_revision` (the API's `resourceVersion` is
//!   the `mod_revision`);
//! - writes are compare-and-swap on `mod_revision` (optimistic concurrency, HTTP 409);
//! - [`Store::watch`] resumes from any retained revision; history older than the compaction point
//!   is gone ([`StoreError::Gone`], HTTP 410) and the caller must re-list.
//!
//! Values are opaque bytes (JSON); the store never parses them.
//!
//! [`RedbStore`] is the embedded default. Nothing redb-specific appears in this module's types.

mod codec;
mod error;
pub mod etcd;
mod redb;
mod watch;

use std::fmt;

use async_trait::async_trait;

pub use self::error::StoreError;
pub use self::etcd::{EtcdConfig, EtcdOptions, EtcdStore};
pub use self::redb::{RedbOptions, RedbStore};
pub use self::watch::{WatchFilter, WatchStream};

/// A global, strictly increasing store revision. `0` means "before the first write".
pub type Revision = u64;

/// Upper bound on the encoded key length; keeps keys small enough for any backend (etcd's limit
/// on keys is generous, but Kubernetes names are at most 253 bytes anyway).
pub const MAX_KEY_BYTES: usize = 4096;

/// Identifies one stored object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The resource collection, e.g. `core.riptides.io/workloadidentities`.
    pub resource: String,
    /// The namespace, or `""` for cluster-scoped resources.
    pub namespace: String,
    /// The object name (non-empty).
    pub name: String,
}

impl ObjectKey {
    pub fn new(resource: impl Into<String>, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey { resource: resource.into(), namespace: namespace.into(), name: name.into() }
    }

    /// Checks the key can be stored unambiguously. Backends encode keys as
    /// `resource NUL namespace NUL name`, so NUL is the one reserved byte; emptiness is rejected
    /// because an empty resource or name would make prefix scans ambiguous.
    pub fn validate(&self) -> Result<(), StoreError> {
        validate_part("resource", &self.resource, false)?;
        validate_part("namespace", &self.namespace, true)?;
        validate_part("name", &self.name, false)?;
        let len = self.resource.len() + self.namespace.len() + self.name.len() + 2;
        if len > MAX_KEY_BYTES {
            return Err(StoreError::InvalidKey { reason: format!("key is {len} bytes, the limit is {MAX_KEY_BYTES}") });
        }
        Ok(())
    }
}

/// Validates one key component (also used for list/watch filters).
pub(crate) fn validate_part(what: &str, value: &str, may_be_empty: bool) -> Result<(), StoreError> {
    if !may_be_empty && value.is_empty() {
        return Err(StoreError::InvalidKey { reason: format!("{what} must not be empty") });
    }
    if value.contains('\0') {
        return Err(StoreError::InvalidKey { reason: format!("{what} must not contain NUL") });
    }
    if value.len() > MAX_KEY_BYTES {
        return Err(StoreError::InvalidKey { reason: format!("{what} is longer than {MAX_KEY_BYTES} bytes") });
    }
    Ok(())
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.resource, self.name)
        } else {
            write!(f, "{}/{}/{}", self.resource, self.namespace, self.name)
        }
    }
}

/// An object as stored, with the revisions the API exposes as `resourceVersion` and friends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    pub key: ObjectKey,
    /// Opaque value bytes (JSON in practice).
    pub value: Vec<u8>,
    /// The revision of the write that created the object.
    pub create_revision: Revision,
    /// The revision of the last write to the object; the CAS token for `update`/`delete`.
    pub mod_revision: Revision,
}

/// One change, as delivered to watchers in revision order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// The object was created (`created == true`) or updated; its `mod_revision` is the event's
    /// revision.
    Put { object: StoredObject, created: bool },
    /// The object was deleted at `revision`; `object` is its last stored value (with the
    /// revisions it had before deletion).
    Deleted { object: StoredObject, revision: Revision },
}

impl WatchEvent {
    /// The global revision at which this change happened.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put { object, .. } => object.mod_revision,
            WatchEvent::Deleted { revision, .. } => *revision,
        }
    }

    /// The key of the changed object.
    pub fn key(&self) -> &ObjectKey {
        match self {
            WatchEvent::Put { object, .. } | WatchEvent::Deleted { object, .. } => &object.key,
        }
    }
}

/// The storage contract behind the resource API. Implementations must be safe to share across
/// tasks (`Arc<dyn Store>`), and every `Ok` from a write means the change is durable. A write
/// whose future is dropped before completing may or may not have been applied (as with etcd);
/// callers that need to know must read back.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one object.
    async fn get(&self, key: &ObjectKey) -> Result<Option<StoredObject>, StoreError>;

    /// Lists a resource (optionally one namespace) from one consistent snapshot, sorted by
    /// (namespace, name), together with the revision that snapshot reflects. Watching from that
    /// revision yields exactly the changes made after the list.
    async fn list(&self, resource: &str, namespace: Option<&str>) -> Result<(Vec<StoredObject>, Revision), StoreError>;

    /// Creates an object; fails with [`StoreError::AlreadyExists`] if the key is taken.
    async fn create(&self, key: &ObjectKey, value: Vec<u8>) -> Result<StoredObject, StoreError>;

    /// Replaces an object's value. With `expect = Some(rev)` this is an atomic compare-and-swap:
    /// it fails with [`StoreError::Conflict`] unless the stored `mod_revision` equals `rev`.
    /// Fails with [`StoreError::NotFound`] if the object does not exist.
    async fn update(
        &self,
        key: &ObjectKey,
        value: Vec<u8>,
        expect: Option<Revision>,
    ) -> Result<StoredObject, StoreError>;

    /// Deletes an object (optionally only if its `mod_revision` equals `expect`) and returns its
    /// last value with the revisions it had; the deletion's own revision is carried by the
    /// [`WatchEvent::Deleted`] event.
    async fn delete(&self, key: &ObjectKey, expect: Option<Revision>) -> Result<StoredObject, StoreError>;

    /// Streams every change with revision `> after` that matches the filters, first from history
    /// and then live, without gaps or duplicates. `after = 0` replays all retained history.
    /// Fails with [`StoreError::Gone`] if history after `after` has been compacted. The stream
    /// ends with [`StoreError::WatchLagged`] if the consumer falls too far behind.
    async fn watch(
        &self,
        resource: Option<&str>,
        namespace: Option<&str>,
        after: Revision,
    ) -> Result<WatchStream, StoreError>;

    /// The revision of the latest committed write.
    async fn current_revision(&self) -> Result<Revision, StoreError>;

    /// Drops event history up to `current - keep_revisions` and returns the new compaction
    /// point (watches must start at or after it). Does not change the current revision.
    async fn compact(&self, keep_revisions: u64) -> Result<Revision, StoreError>;
}

/// How many times [`StoreExt::update_with`] re-reads and retries after losing a race before it
/// gives up with the last conflict. Contention on one key is expected to be low.
const UPDATE_WITH_ATTEMPTS: usize = 64;

/// Helpers built only on the [`Store`] contract, so they work on every backend and on
/// `dyn Store`.
#[async_trait]
pub trait StoreExt: Store {
    /// Guarded read-modify-write. `f` sees the current object (or `None`) and returns the new
    /// value to write, or `None` to leave it unchanged (an `Err` from `f` aborts and is
    /// returned as is). The write is a compare-and-swap against what `f` saw, and `f` is
    /// re-run on a lost race, so two concurrent callers can never both act on the same state:
    /// this is what makes "single use" tokens safe. Because it may run several times, `f` must
    /// not have side effects.
    ///
    /// Returns the object as stored afterwards (`None` if it is absent and `f` wrote nothing).
    async fn update_with<F>(&self, key: &ObjectKey, mut f: F) -> Result<Option<StoredObject>, StoreError>
    where
        F: FnMut(Option<&StoredObject>) -> Result<Option<Vec<u8>>, StoreError> + Send,
    {
        let mut last_err = None;
        for _ in 0..UPDATE_WITH_ATTEMPTS {
            let current = self.get(key).await?;
            let Some(new_value) = f(current.as_ref())? else {
                return Ok(current);
            };
            let result = match &current {
                None => self.create(key, new_value).await,
                Some(obj) => self.update(key, new_value, Some(obj.mod_revision)).await,
            };
            match result {
                Ok(stored) => return Ok(Some(stored)),
                // Someone else changed, created or deleted the object in between: re-read.
                Err(
                    e @ (StoreError::Conflict { .. } | StoreError::AlreadyExists { .. } | StoreError::NotFound { .. }),
                ) => {
                    tracing::debug!(%key, error = %e, "update_with lost a race, retrying");
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| StoreError::Backend("update_with: no attempt made".into())))
    }
}

impl<S: Store + ?Sized> StoreExt for S {}
