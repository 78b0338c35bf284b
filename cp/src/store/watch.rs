//! Watch streams: the public [`WatchStream`] handle and the "replay history, then go live"
//! merge used by backends that keep their own event log.
//!
//! The merge is gap-free and duplicate-free because the backend subscribes to live events
//! *before* it reads history: anything committed after the subscription is in the live channel,
//! anything committed before it is in the log, and live events at or below the last revision
//! already scanned from the log are dropped.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::broadcast;

use super::{validate_part, ObjectKey, Revision, StoreError, WatchEvent};

/// Selects which events a watcher receives: one resource, optionally one namespace, or all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchFilter {
    resource: Option<String>,
    namespace: Option<String>,
}

impl WatchFilter {
    /// `namespace` is only meaningful with a `resource`; `Some("")` selects cluster-scoped
    /// objects of that resource.
    pub fn new(resource: Option<&str>, namespace: Option<&str>) -> Result<Self, StoreError> {
        if let Some(r) = resource {
            validate_part("resource", r, false)?;
        }
        if let Some(ns) = namespace {
            validate_part("namespace", ns, true)?;
        }
        Ok(WatchFilter { resource: resource.map(str::to_owned), namespace: namespace.map(str::to_owned) })
    }

    pub fn matches(&self, key: &ObjectKey) -> bool {
        self.resource.as_deref().is_none_or(|r| r == key.resource)
            && self.namespace.as_deref().is_none_or(|n| n == key.namespace)
    }
}

/// A stream of [`WatchEvent`]s in strictly increasing revision order.
///
/// Yields `Err` at most once (e.g. [`StoreError::WatchLagged`]) and then ends. It also ends
/// (`None`) when the store shuts down. Dropping it releases its buffer slot and any backend
/// resources immediately.
pub struct WatchStream {
    inner: Pin<Box<dyn Stream<Item = Result<WatchEvent, StoreError>> + Send>>,
}

impl WatchStream {
    /// Wraps any backend's event stream; backends must uphold the ordering and
    /// end-after-error guarantees documented on the type.
    pub fn new(stream: impl Stream<Item = Result<WatchEvent, StoreError>> + Send + 'static) -> Self {
        WatchStream { inner: Box::pin(stream) }
    }

    /// The next event, `Some(Err(..))` once if the watch broke, or `None` when it ended.
    pub async fn recv(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        self.inner.next().await
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchEvent, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchStream").finish_non_exhaustive()
    }
}

/// One page of history read from a backend's event log.
pub(crate) struct HistoryChunk {
    /// Matching events, in revision order.
    pub events: Vec<WatchEvent>,
    /// Every revision up to here has been examined (matching or not).
    pub scanned_to: Revision,
    /// No more history exists beyond `scanned_to` as of the snapshot that was read.
    pub complete: bool,
}

/// A backend's event log, read page by page so that replaying a long history does not need
/// to hold it all in memory.
#[async_trait]
pub(crate) trait History: Send + Sync + 'static {
    /// Reads matching events with revision `> after`. Fails with [`StoreError::Gone`] when that
    /// history has been compacted.
    async fn read_after(&self, after: Revision, filter: &WatchFilter) -> Result<HistoryChunk, StoreError>;
}

struct MergeState {
    /// Needed only while replaying; dropped when going live so that a watcher does not keep
    /// the backend alive.
    history: Option<Arc<dyn History>>,
    live: broadcast::Receiver<Arc<WatchEvent>>,
    filter: WatchFilter,
    pending: VecDeque<WatchEvent>,
    /// Highest revision already examined; live events at or below it are duplicates.
    seen: Revision,
    finished: bool,
}

/// Builds the watch stream from the first history page (already read by the caller, so that
/// `Gone` surfaces from `watch()` itself) and a live receiver subscribed *before* that read.
pub(crate) fn replay_then_live(
    history: Arc<dyn History>,
    first: HistoryChunk,
    live: broadcast::Receiver<Arc<WatchEvent>>,
    filter: WatchFilter,
) -> WatchStream {
    let state = MergeState {
        history: (!first.complete).then_some(history),
        live,
        filter,
        pending: first.events.into(),
        seen: first.scanned_to,
        finished: false,
    };
    WatchStream::new(stream::unfold(state, next_event))
}

async fn next_event(mut st: MergeState) -> Option<(Result<WatchEvent, StoreError>, MergeState)> {
    loop {
        if st.finished {
            return None;
        }
        if let Some(ev) = st.pending.pop_front() {
            return Some((Ok(ev), st));
        }
        if let Some(history) = st.history.clone() {
            match history.read_after(st.seen, &st.filter).await {
                Ok(chunk) => {
                    st.pending.extend(chunk.events);
                    st.seen = st.seen.max(chunk.scanned_to);
                    if chunk.complete {
                        st.history = None;
                    }
                    continue;
                }
                Err(e) => {
                    // Compaction overtook a slow replay, or the backend failed.
                    tracing::debug!(error = %e, "watch replay failed");
                    st.finished = true;
                    return Some((Err(e), st));
                }
            }
        }
        match st.live.recv().await {
            Ok(ev) => {
                if ev.revision() <= st.seen {
                    continue;
                }
                st.seen = ev.revision();
                if st.filter.matches(ev.key()) {
                    return Some((Ok((*ev).clone()), st));
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, after = st.seen, "watcher lagged; ending its stream");
                st.finished = true;
                return Some((Err(StoreError::WatchLagged { missed }), st));
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}
