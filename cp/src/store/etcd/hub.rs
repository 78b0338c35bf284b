//! One etcd watch per replica, fanned out in-process to every watcher of the store.
//!
//! Every daemon policy stream, API watch and GraphQL subscription watches the store. Given
//! its own etcd watch each, a replica with hundreds of daemons holds hundreds of HTTP watch
//! streams, and every change is encoded, sent and decoded once per stream: the fan-out on the
//! etcd members grows with the fleet, and it was what kept a change applied on one replica
//! from reaching daemons on the others within the single-replica bound. Here the replica
//! watches its whole key prefix once, keeps a bounded window of recent events, and serves
//! watchers from that window and a broadcast channel (the embedded store's "replay, then
//! live" merge). A watcher asking for history older than the window gets its own etcd watch,
//! as before, so resuming from any retained etcd revision still works. Whether a start is
//! compacted is asked of etcd before the window is consulted (`EtcdStore::watch`), so the
//! window never serves history another replica has compacted.
//!
//! The hub starts on the first watch and stops when the store is dropped. If its etcd watch
//! fails for good (every member gone for a while, or compaction overtook it), the hub ends:
//! its watchers get the error and the next watch starts a new hub.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures_util::stream::{self, StreamExt};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::super::watch::{replay_then_live, History, HistoryChunk, WatchFilter};
use super::{Revision, StoreError, WatchEvent, WatchStream};

/// Bounds of the hub's window of recent events.
#[derive(Clone, Copy, Debug)]
pub(super) struct HubLimits {
    /// Events kept for watchers that start behind the live edge.
    pub events: usize,
    /// Total value bytes kept (large objects shrink the window rather than grow memory).
    pub bytes: usize,
    /// Events a watcher may fall behind the live edge before its stream ends with
    /// [`StoreError::WatchLagged`].
    pub lag: usize,
}

/// The window: every event with revision `> floor` is in `events`.
struct Window {
    events: VecDeque<Arc<WatchEvent>>,
    bytes: usize,
    floor: Revision,
    /// Highest revision published.
    seen: Revision,
    /// `None` once the hub has ended.
    live: Option<broadcast::Sender<Arc<WatchEvent>>>,
    /// Why the hub ended, for its watchers.
    failure: Option<String>,
}

/// A running hub: its window, shared by the pump task and the watchers.
pub(super) struct Hub {
    window: Mutex<Window>,
    limits: HubLimits,
    _stop: DropGuard,
}

fn size_of(ev: &WatchEvent) -> usize {
    match ev {
        WatchEvent::Put { object, .. } | WatchEvent::Deleted { object, .. } => object.value.len() + 64,
    }
}

impl Hub {
    /// A hub whose window starts after `base`, fed by `events` (an etcd watch from
    /// `base + 1` on the whole prefix) until the hub is dropped.
    pub(super) fn start(
        base: Revision,
        limits: HubLimits,
        mut events: mpsc::Receiver<Result<WatchEvent, StoreError>>,
    ) -> Arc<Hub> {
        let stop = CancellationToken::new();
        let (live, _) = broadcast::channel(limits.lag.max(1));
        let hub = Arc::new(Hub {
            window: Mutex::new(Window {
                events: VecDeque::new(),
                bytes: 0,
                floor: base,
                seen: base,
                live: Some(live),
                failure: None,
            }),
            limits,
            _stop: stop.clone().drop_guard(),
        });
        // The pump holds the window only weakly: dropping the store (and with it the hub)
        // stops it, which drops `events` and ends the etcd watch task.
        let weak = Arc::downgrade(&hub);
        tokio::spawn(async move {
            let failure = loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    ev = events.recv() => ev,
                };
                let Some(hub) = weak.upgrade() else { return };
                match next {
                    Some(Ok(ev)) => hub.publish(ev),
                    Some(Err(e)) => break e.to_string(),
                    None => break "etcd watch ended".to_owned(),
                }
            };
            tracing::warn!(%failure, "replica's etcd watch ended; its watchers restart");
            if let Some(hub) = weak.upgrade() {
                let mut w = hub.window.lock().expect("hub window lock");
                w.failure = Some(failure);
                w.live = None;
            }
        });
        hub
    }

    fn publish(&self, ev: WatchEvent) {
        let ev = Arc::new(ev);
        let mut w = self.window.lock().expect("hub window lock");
        if ev.revision() <= w.seen {
            return;
        }
        w.seen = ev.revision();
        w.bytes += size_of(&ev);
        w.events.push_back(ev.clone());
        while w.events.len() > self.limits.events || (w.bytes > self.limits.bytes && w.events.len() > 1) {
            let old = w.events.pop_front().expect("window is not empty");
            w.bytes -= size_of(&old);
            w.floor = old.revision();
        }
        if let Some(live) = &w.live {
            // No receiver is fine: nobody watches right now.
            let _ = live.send(ev);
        }
    }

    /// Whether the hub has ended (a new one must be started).
    pub(super) fn ended(&self) -> bool {
        self.window.lock().expect("hub window lock").live.is_none()
    }

    /// Every matching change after `after`, from the window and then live; `None` when the
    /// window does not reach back to `after` (or the hub has ended): the caller watches etcd
    /// itself.
    pub(super) fn subscribe(self: &Arc<Self>, after: Revision, filter: WatchFilter) -> Option<WatchStream> {
        let (first, live) = {
            let w = self.window.lock().expect("hub window lock");
            let live = w.live.as_ref()?;
            if after < w.floor {
                return None;
            }
            // Subscribed under the lock that `publish` holds: every event is either in the
            // window read here or arrives on `live`, and `seen` tells them apart.
            let live = live.subscribe();
            let events: Vec<WatchEvent> = w
                .events
                .iter()
                .filter(|e| e.revision() > after && filter.matches(e.key()))
                .map(|e| (**e).clone())
                .collect();
            (HistoryChunk { events, scanned_to: w.seen.max(after), complete: true }, live)
        };
        // An error ends the stream (at most one error per stream).
        let errored = Arc::new(AtomicBool::new(false));
        let flag = errored.clone();
        let merged = replay_then_live(Arc::new(WindowOnly), first, live, filter).inspect(move |item| {
            if item.is_err() {
                flag.store(true, Ordering::Relaxed);
            }
        });
        // When the hub ends, its watchers end with the reason rather than a silent `None`
        // (which means "the store shut down").
        let hub = Arc::downgrade(self);
        let tail = stream::once(async move {
            if errored.load(Ordering::Relaxed) {
                return None;
            }
            let failure = hub.upgrade().and_then(|h| h.window.lock().expect("hub window lock").failure.clone());
            failure.map(|f| Err(StoreError::Backend(format!("watch: {f}"))))
        })
        .filter_map(|x| async move { x });
        Some(WatchStream::new(merged.chain(tail)))
    }
}

/// The first chunk handed to the merge is always complete, so it never reads history again.
struct WindowOnly;

#[async_trait]
impl History for WindowOnly {
    async fn read_after(&self, after: Revision, _filter: &WatchFilter) -> Result<HistoryChunk, StoreError> {
        Err(StoreError::Backend(format!("watch hub: no history read after {after} (window was complete)")))
    }
}
