//! Watch semantics of the redb store: replay, resume, compaction, live hand-over, filters, lag.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use riptides_cp::store::{ObjectKey, RedbOptions, RedbStore, Revision, Store, StoreError, WatchEvent, WatchStream};

const RES: &str = "core.riptides.io/workloadidentities";
const OTHER: &str = "core.riptides.io/policies";

fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(RES, ns, name)
}

fn open_with(dir: &tempfile::TempDir, opts: RedbOptions) -> RedbStore {
    RedbStore::open_with(dir.path().join("store.redb"), opts).expect("open store")
}

fn open(dir: &tempfile::TempDir) -> RedbStore {
    open_with(dir, RedbOptions::default())
}

/// Next event, failing the test instead of hanging if none arrives.
async fn next(w: &mut WatchStream) -> Option<Result<WatchEvent, StoreError>> {
    tokio::time::timeout(Duration::from_secs(10), w.next()).await.expect("watch event within 10s")
}

async fn next_ok(w: &mut WatchStream) -> WatchEvent {
    next(w).await.expect("stream ended").expect("watch error")
}

/// Asserts nothing is pending right now (the stream is idle, not ended).
async fn assert_idle(w: &mut WatchStream) {
    assert!(tokio::time::timeout(Duration::from_millis(100), w.next()).await.is_err(), "expected no further events");
}

#[tokio::test]
async fn watch_from_zero_replays_history_then_goes_live() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let a = store.create(&key("ns", "a"), b"a1".to_vec()).await.unwrap();
    store.create(&key("ns", "b"), b"b1".to_vec()).await.unwrap();
    let a2 = store.update(&key("ns", "a"), b"a2".to_vec(), None).await.unwrap();
    store.delete(&key("ns", "b"), None).await.unwrap();

    let mut w = store.watch(None, None, 0).await.unwrap();
    match next_ok(&mut w).await {
        WatchEvent::Put { object, created } => {
            assert!(created);
            assert_eq!(object, a);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(next_ok(&mut w).await, WatchEvent::Put { created: true, object } if object.key.name == "b"));
    assert!(matches!(next_ok(&mut w).await, WatchEvent::Put { created: false, object } if object == a2));
    match next_ok(&mut w).await {
        WatchEvent::Deleted { object, revision } => {
            assert_eq!(object.key.name, "b");
            assert_eq!(object.value, b"b1", "deleted event carries the last value");
            assert_eq!(revision, 4);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_idle(&mut w).await;

    let c = store.create(&key("ns", "c"), b"c1".to_vec()).await.unwrap();
    let ev = next_ok(&mut w).await;
    assert_eq!(ev.revision(), c.mod_revision);
    assert_eq!(ev.key(), &c.key);
}

#[tokio::test]
async fn watch_resumes_from_a_mid_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for i in 1..=10 {
        store.create(&key("ns", &i.to_string()), vec![]).await.unwrap();
    }
    let mut w = store.watch(None, None, 6).await.unwrap();
    for rev in 7..=10 {
        assert_eq!(next_ok(&mut w).await.revision(), rev);
    }
    assert_idle(&mut w).await;

    // Watching from the current revision yields only new events; a future revision skips
    // everything up to it (etcd semantics).
    let mut now = store.watch(None, None, 10).await.unwrap();
    let mut future = store.watch(None, None, 11).await.unwrap();
    store.create(&key("ns", "11"), vec![]).await.unwrap();
    store.create(&key("ns", "12"), vec![]).await.unwrap();
    assert_eq!(next_ok(&mut now).await.revision(), 11);
    assert_eq!(next_ok(&mut future).await.revision(), 12);
}

#[tokio::test]
async fn watch_from_compacted_revision_is_gone_and_history_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for i in 1..=10 {
        store.create(&key("ns", &i.to_string()), vec![]).await.unwrap();
    }
    assert_eq!(store.compact(4).await.unwrap(), 6);
    let err = store.watch(None, None, 3).await.unwrap_err();
    assert_eq!(err, StoreError::Gone { requested: 3, compacted: 6 });
    assert!(matches!(store.watch(None, None, 0).await, Err(StoreError::Gone { .. })));
    drop(store);

    let store = open(&dir);
    assert!(matches!(store.watch(None, None, 5).await, Err(StoreError::Gone { compacted: 6, .. })));
    let mut w = store.watch(None, None, 6).await.unwrap();
    for rev in 7..=10 {
        assert_eq!(next_ok(&mut w).await.revision(), rev);
    }
}

#[tokio::test]
async fn watch_filters_by_resource_and_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut by_res = store.watch(Some(RES), None, 0).await.unwrap();
    let mut by_ns = store.watch(Some(RES), Some("a"), 0).await.unwrap();
    let mut cluster = store.watch(Some(OTHER), Some(""), 0).await.unwrap();

    store.create(&key("a", "1"), vec![]).await.unwrap(); // 1
    store.create(&key("b", "1"), vec![]).await.unwrap(); // 2
    store.create(&ObjectKey::new(OTHER, "a", "1"), vec![]).await.unwrap(); // 3
    store.create(&ObjectKey::new(OTHER, "", "c"), vec![]).await.unwrap(); // 4
    store.create(&ObjectKey::new(format!("{RES}2"), "a", "1"), vec![]).await.unwrap(); // 5
    store.delete(&key("a", "1"), None).await.unwrap(); // 6

    for (w, expected) in [(&mut by_res, vec![1, 2, 6]), (&mut by_ns, vec![1, 6]), (&mut cluster, vec![4])] {
        for rev in expected {
            assert_eq!(next_ok(w).await.revision(), rev);
        }
        assert_idle(w).await;
    }

    // The same filters apply to replayed history.
    let mut replay = store.watch(Some(RES), Some("b"), 0).await.unwrap();
    assert_eq!(next_ok(&mut replay).await.revision(), 2);
    assert_idle(&mut replay).await;
}

/// Reads until `until`, asserting revisions are exactly consecutive (an unfiltered watch sees
/// every revision) starting after `after`.
async fn collect_consecutive(w: &mut WatchStream, after: Revision, until: Revision) {
    let mut expect = after + 1;
    while expect <= until {
        let ev = next_ok(w).await;
        assert_eq!(ev.revision(), expect, "gap or duplicate in watch stream");
        expect += 1;
    }
    assert_idle(w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_hands_over_to_live_without_gaps_under_concurrent_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_with(&dir, RedbOptions { watch_buffer: 8192, ..RedbOptions::default() }));
    // Enough history that replay spans several pages.
    for i in 0..300 {
        store.create(&key("pre", &i.to_string()), vec![]).await.unwrap();
    }

    let writers: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..150 {
                    let k = key(&format!("w{t}"), &i.to_string());
                    store.create(&k, b"x".to_vec()).await.unwrap();
                    if i % 3 == 0 {
                        store.update(&k, b"y".to_vec(), None).await.unwrap();
                    }
                }
            })
        })
        .collect();

    // Start watchers from different points while the writers are running.
    let mut watchers = Vec::new();
    for after in [0, 150, 299] {
        watchers.push((after, store.watch(None, None, after).await.unwrap()));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let current = store.current_revision().await.unwrap();
    watchers.push((current, store.watch(None, None, current).await.unwrap()));

    for w in writers {
        w.await.unwrap();
    }
    let last = store.current_revision().await.unwrap();
    assert_eq!(last, 300 + 4 * 150 + 4 * 50);
    for (after, mut w) in watchers {
        collect_consecutive(&mut w, after, last).await;
    }
}

#[tokio::test]
async fn lagging_watcher_gets_an_error_and_the_stream_ends() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(&dir, RedbOptions { watch_buffer: 4, ..RedbOptions::default() });
    let mut slow = store.watch(None, None, 0).await.unwrap();
    let mut fast = store.watch(None, None, 0).await.unwrap();
    let mut fast_seen = 0;
    for i in 0..20 {
        store.create(&key("ns", &i.to_string()), vec![]).await.unwrap();
        assert_eq!(next_ok(&mut fast).await.revision(), i + 1);
        fast_seen += 1;
    }
    assert_eq!(fast_seen, 20);

    let mut last = 0;
    loop {
        match next(&mut slow).await {
            Some(Ok(ev)) => {
                assert_eq!(ev.revision(), last + 1, "no silent gaps before the error");
                last = ev.revision();
            }
            Some(Err(StoreError::WatchLagged { missed })) => {
                assert!(missed > 0);
                break;
            }
            other => panic!("expected lag error, got {other:?}"),
        }
    }
    assert!(next(&mut slow).await.is_none(), "stream ends after the lag error");
    // Writes are never blocked by a slow watcher.
    store.create(&key("ns", "after"), vec![]).await.unwrap();
}

#[tokio::test]
async fn watchers_end_when_the_store_closes_and_do_not_pin_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for i in 0..600 {
        store.create(&key("ns", &i.to_string()), vec![]).await.unwrap();
    }
    // A watcher in the middle of a multi-page replay, dropped early.
    let mut replaying = store.watch(None, None, 0).await.unwrap();
    assert_eq!(next_ok(&mut replaying).await.revision(), 1);
    drop(replaying);

    // A live watcher ends (None) once the store is gone.
    let mut live = store.watch(None, None, 600).await.unwrap();
    drop(store);
    assert!(next(&mut live).await.is_none());

    // Nothing holds the database any more: it can be reopened in this process.
    let store = open(&dir);
    assert_eq!(store.current_revision().await.unwrap(), 600);
}
