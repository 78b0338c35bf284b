//! Errors returned by every [`Store`](super::Store) implementation.
//!
//! The variants are backend-neutral on purpose: the API layer maps them onto Kubernetes status
//! codes (404, 409, 410, ...) without knowing whether redb or etcd sits underneath.

use super::{ObjectKey, Revision};

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The key (or a resource/namespace filter) is malformed: empty, or contains a reserved byte.
    #[error("invalid object key: {reason}")]
    InvalidKey { reason: String },

    /// The value exceeds the store's size limit; rejected before any write happens.
    #[error("value of {size} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge { size: usize, max: usize },

    /// `update`/`delete` on a key that does not exist.
    #[error("{key} not found")]
    NotFound { key: ObjectKey },

    /// `create` on a key that already exists.
    #[error("{key} already exists")]
    AlreadyExists { key: ObjectKey },

    /// The caller's expected `mod_revision` is stale; `current` is what is stored now.
    #[error("conflict on {key}: expected a different revision, current is {current}")]
    Conflict { key: ObjectKey, current: Revision },

    /// The requested watch start lies before the retained history; the caller must re-list.
    #[error("revision {requested} has been compacted (history starts after {compacted})")]
    Gone { requested: Revision, compacted: Revision },

    /// The watcher consumed events too slowly and `missed` events were dropped from its buffer.
    /// The stream ends after this error; the caller must re-list and watch again.
    #[error("watcher fell behind and missed {missed} events; re-list and watch again")]
    WatchLagged { missed: u64 },

    /// The storage engine failed; the message names the operation that failed.
    #[error("storage backend: {0}")]
    Backend(String),
}

impl StoreError {
    /// Wraps a backend error with the operation it happened in, so logs say what was attempted.
    pub fn backend(context: &str, err: impl std::fmt::Display) -> Self {
        StoreError::Backend(format!("{context}: {err}"))
    }
}
