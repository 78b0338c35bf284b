//! The store contract on a real etcd (Debian's etcd-server, started by the test on loopback):
//! the same CRUD, concurrency, watch and compaction semantics the embedded store's tests
//! check, with revisions taken relative to the cluster's starting revision (etcd starts at 1
//! and lease or election writes share its counter).

mod etcd_support;

use std::sync::Arc;
use std::time::Duration;

use etcd_support::EtcdCluster;
use futures_util::StreamExt;
use riptides_cp::store::{
    EtcdOptions, EtcdStore, ObjectKey, Revision, Store, StoreError, StoreExt, WatchEvent, WatchStream,
};

const RES: &str = "core.riptides.io/workloadidentities";
const OTHER: &str = "core.riptides.io/policies";

fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(RES, ns, name)
}

async fn next(w: &mut WatchStream) -> Option<Result<WatchEvent, StoreError>> {
    tokio::time::timeout(Duration::from_secs(10), w.next()).await.expect("watch event within 10s")
}

async fn next_ok(w: &mut WatchStream) -> WatchEvent {
    next(w).await.expect("stream ended").expect("watch error")
}

async fn assert_idle(w: &mut WatchStream) {
    assert!(tokio::time::timeout(Duration::from_millis(200), w.next()).await.is_err(), "expected no further events");
}

#[tokio::test]
async fn crud_roundtrip_and_conflicts() {
    let etcd = EtcdCluster::single().await;
    let store = etcd.store().await;
    let k = key("default", "web");

    assert_eq!(store.get(&k).await.unwrap(), None);
    let created = store.create(&k, b"v1".to_vec()).await.unwrap();
    assert_eq!(created.value, b"v1");
    assert_eq!(created.create_revision, created.mod_revision);
    assert_eq!(store.get(&k).await.unwrap(), Some(created.clone()));
    assert!(matches!(store.create(&k, b"again".to_vec()).await, Err(StoreError::AlreadyExists { .. })));

    let updated = store.update(&k, b"v2".to_vec(), Some(created.mod_revision)).await.unwrap();
    assert_eq!(updated.create_revision, created.create_revision);
    assert!(updated.mod_revision > created.mod_revision);
    assert_eq!(store.get(&k).await.unwrap(), Some(updated.clone()));

    // A stale revision conflicts and reports what is current; nothing changes.
    match store.update(&k, b"stale".to_vec(), Some(created.mod_revision)).await {
        Err(StoreError::Conflict { current, .. }) => assert_eq!(current, updated.mod_revision),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(store.delete(&k, Some(created.mod_revision)).await, Err(StoreError::Conflict { .. })));
    assert!(matches!(store.update(&k, b"x".to_vec(), Some(0)).await, Err(StoreError::Conflict { .. })));
    assert_eq!(store.get(&k).await.unwrap().unwrap().value, b"v2");

    let unconditional = store.update(&k, b"v3".to_vec(), None).await.unwrap();
    let deleted = store.delete(&k, Some(unconditional.mod_revision)).await.unwrap();
    assert_eq!(deleted, unconditional, "delete returns the last stored value");
    assert_eq!(store.get(&k).await.unwrap(), None);

    let missing = key("default", "nope");
    assert!(matches!(store.update(&missing, b"x".to_vec(), None).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(store.update(&missing, b"x".to_vec(), Some(3)).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(store.delete(&missing, None).await, Err(StoreError::NotFound { .. })));
    let again = store.create(&k, b"v4".to_vec()).await.unwrap();
    assert!(again.create_revision > deleted.mod_revision);

    // Invalid keys and oversized values are refused before anything is sent.
    assert!(matches!(
        store.create(&ObjectKey::new(RES, "n\0s", "a"), vec![]).await,
        Err(StoreError::InvalidKey { .. })
    ));
    let small =
        EtcdStore::connect(&etcd.config(), EtcdOptions { max_value_bytes: 4, ..EtcdOptions::default() }).await.unwrap();
    assert!(matches!(small.create(&key("d", "big"), vec![0; 5]).await, Err(StoreError::ValueTooLarge { .. })));
}

#[tokio::test]
async fn list_is_sorted_scoped_paged_and_consistent() {
    let etcd = EtcdCluster::single().await;
    let store =
        EtcdStore::connect(&etcd.config(), EtcdOptions { list_page: 3, ..EtcdOptions::default() }).await.unwrap();
    for (ns, name) in [("b", "2"), ("a", "9"), ("b", "1"), ("a", "1"), ("", "c"), ("a", "10")] {
        store.create(&key(ns, name), name.as_bytes().to_vec()).await.unwrap();
    }
    store.create(&ObjectKey::new(format!("{RES}x"), "a", "1"), vec![]).await.unwrap();
    store.create(&ObjectKey::new(OTHER, "a", "1"), vec![]).await.unwrap();

    let (all, rev) = store.list(RES, None).await.unwrap();
    let names: Vec<(String, String)> = all.iter().map(|o| (o.key.namespace.clone(), o.key.name.clone())).collect();
    let expect = [("", "c"), ("a", "1"), ("a", "10"), ("a", "9"), ("b", "1"), ("b", "2")];
    assert_eq!(names, expect.map(|(a, b)| (a.to_owned(), b.to_owned())));
    assert_eq!(rev, store.current_revision().await.unwrap());
    let (a, _) = store.list(RES, Some("a")).await.unwrap();
    assert_eq!(a.len(), 3);
    let (cluster, _) = store.list(RES, Some("")).await.unwrap();
    assert_eq!(cluster.len(), 1);

    // Watching from a list's revision yields exactly the later changes.
    let mut w = store.watch(Some(RES), None, rev).await.unwrap();
    let c = store.create(&key("c", "1"), vec![]).await.unwrap();
    assert_eq!(next_ok(&mut w).await.revision(), c.mod_revision);
    assert_idle(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn update_with_is_exact_under_contention_from_two_clients() {
    let etcd = EtcdCluster::single().await;
    let (s1, s2) = (Arc::new(etcd.store().await), Arc::new(etcd.store().await));
    let k = key("ns", "counter");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = if i % 2 == 0 { s1.clone() } else { s2.clone() };
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                s.update_with(&k, |cur| {
                    let n: u64 = cur.map(|o| String::from_utf8_lossy(&o.value).parse().unwrap()).unwrap_or(0);
                    Ok(Some((n + 1).to_string().into_bytes()))
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s1.get(&k).await.unwrap().unwrap().value, b"80");
}

#[tokio::test]
async fn watch_replays_history_then_goes_live_with_deletions_carrying_the_last_value() {
    let etcd = EtcdCluster::single().await;
    let store = etcd.store().await;
    let base = store.current_revision().await.unwrap();
    let a = store.create(&key("ns", "a"), b"a1".to_vec()).await.unwrap();
    store.create(&key("ns", "b"), b"b1".to_vec()).await.unwrap();
    let a2 = store.update(&key("ns", "a"), b"a2".to_vec(), None).await.unwrap();
    store.delete(&key("ns", "b"), None).await.unwrap();

    let mut w = store.watch(None, None, base).await.unwrap();
    assert!(matches!(next_ok(&mut w).await, WatchEvent::Put { created: true, object } if object == a));
    assert!(matches!(next_ok(&mut w).await, WatchEvent::Put { created: true, object } if object.key.name == "b"));
    assert!(matches!(next_ok(&mut w).await, WatchEvent::Put { created: false, object } if object == a2));
    match next_ok(&mut w).await {
        WatchEvent::Deleted { object, revision } => {
            assert_eq!(object.key, key("ns", "b"));
            assert_eq!(object.value, b"b1");
            assert_eq!(revision, base + 4);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_idle(&mut w).await;
    let c = store.create(&key("ns", "c"), b"c1".to_vec()).await.unwrap();
    assert_eq!(next_ok(&mut w).await.revision(), c.mod_revision);

    // Resume from a mid revision, from now, and from the future (etcd semantics).
    let mut mid = store.watch(None, None, base + 2).await.unwrap();
    assert_eq!(next_ok(&mut mid).await.revision(), base + 3);
    let now = store.current_revision().await.unwrap();
    let mut at_now = store.watch(None, None, now).await.unwrap();
    let mut future = store.watch(None, None, now + 1).await.unwrap();
    store.create(&key("ns", "d"), vec![]).await.unwrap();
    store.create(&key("ns", "e"), vec![]).await.unwrap();
    assert_eq!(next_ok(&mut at_now).await.revision(), now + 1);
    assert_eq!(next_ok(&mut future).await.revision(), now + 2);
}

#[tokio::test]
async fn watch_filters_by_resource_and_namespace() {
    let etcd = EtcdCluster::single().await;
    let store = etcd.store().await;
    let base = store.current_revision().await.unwrap();
    let mut by_res = store.watch(Some(RES), None, base).await.unwrap();
    let mut by_ns = store.watch(Some(RES), Some("a"), base).await.unwrap();
    let mut cluster = store.watch(Some(OTHER), Some(""), base).await.unwrap();
    store.create(&key("a", "1"), vec![]).await.unwrap(); // 1
    store.create(&key("b", "1"), vec![]).await.unwrap(); // 2
    store.create(&ObjectKey::new(OTHER, "a", "1"), vec![]).await.unwrap(); // 3
    store.create(&ObjectKey::new(OTHER, "", "c"), vec![]).await.unwrap(); // 4
    store.create(&ObjectKey::new(format!("{RES}2"), "a", "1"), vec![]).await.unwrap(); // 5
    store.delete(&key("a", "1"), None).await.unwrap(); // 6
    for (w, expected) in [(&mut by_res, vec![1, 2, 6]), (&mut by_ns, vec![1, 6]), (&mut cluster, vec![4])] {
        for r in expected {
            assert_eq!(next_ok(w).await.revision(), base + r);
        }
        assert_idle(w).await;
    }
}

#[tokio::test]
async fn compaction_makes_old_revisions_gone_and_keeps_the_rest() {
    let etcd = EtcdCluster::single().await;
    let store = etcd.store().await;
    let base = store.current_revision().await.unwrap();
    for i in 1..=10 {
        store.create(&key("ns", &i.to_string()), vec![]).await.unwrap();
    }
    let compacted = store.compact(4).await.unwrap();
    assert_eq!(compacted, base + 6);
    let err = store.watch(None, None, base + 3).await.unwrap_err();
    assert_eq!(err, StoreError::Gone { requested: base + 3, compacted: base + 6 });
    assert!(matches!(store.watch(None, None, 0).await, Err(StoreError::Gone { .. })));
    assert!(matches!(store.watch(None, None, compacted - 1).await, Err(StoreError::Gone { .. })));
    let mut w = store.watch(None, None, compacted).await.unwrap();
    for r in 7..=10 {
        assert_eq!(next_ok(&mut w).await.revision(), base + r);
    }
    // Compacting again to the same point (another replica did it first) is not an error.
    assert_eq!(store.compact(4).await.unwrap(), compacted);
    // Objects are unaffected.
    assert_eq!(store.list(RES, None).await.unwrap().0.len(), 10);
}

/// Every revision in order, no gaps or duplicates, while writers race the replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_hands_over_to_live_without_gaps_under_concurrent_writes() {
    let etcd = EtcdCluster::single().await;
    let store = Arc::new(etcd.store().await);
    let base = store.current_revision().await.unwrap();
    for i in 0..50 {
        store.create(&key("pre", &i.to_string()), vec![]).await.unwrap();
    }
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..100 {
                store.create(&key("live", &i.to_string()), vec![]).await.unwrap();
            }
        })
    };
    let mut w = store.watch(None, None, base).await.unwrap();
    writer.await.unwrap();
    let until = store.current_revision().await.unwrap();
    let mut expect: Revision = base + 1;
    while expect <= until {
        assert_eq!(next_ok(&mut w).await.revision(), expect, "gap or duplicate");
        expect += 1;
    }
    assert_idle(&mut w).await;
}

#[tokio::test]
async fn tls_with_client_certificate() {
    let etcd = EtcdCluster::start(1, true).await;
    let store = etcd.store().await;
    let created = store.create(&key("ns", "tls"), b"x".to_vec()).await.unwrap();
    let mut w = store.watch(Some(RES), None, created.mod_revision - 1).await.unwrap();
    assert_eq!(next_ok(&mut w).await.revision(), created.mod_revision);

    // Without the client certificate etcd refuses the connection.
    let mut no_cert = etcd.config();
    no_cert.cert_file = None;
    no_cert.key_file = None;
    assert!(EtcdStore::connect(&no_cert, EtcdOptions::default()).await.is_err());
}

/// etcd's own count of open watchers (`etcd_debugging_mvcc_watcher_total`), read from its
/// `/metrics` over plain HTTP on loopback.
async fn etcd_watchers(etcd: &EtcdCluster) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = etcd.endpoint(0).trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect to etcd metrics");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: etcd\r\n\r\n").await.unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total "))
        .expect("etcd reports its watcher count")
        .trim()
        .parse()
        .expect("watcher count is a number")
}

/// Waits until etcd's watcher count satisfies `ok` (etcd updates it as streams come and go).
async fn watchers_settle(etcd: &EtcdCluster, ok: impl Fn(u64) -> bool) -> u64 {
    let mut n = etcd_watchers(etcd).await;
    for _ in 0..100 {
        if ok(n) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        n = etcd_watchers(etcd).await;
    }
    n
}

/// Many watchers on one replica cost etcd one watch: the replica fans it out in-process,
/// each watcher still gets exactly its own filtered events, and dropping the store ends it.
#[tokio::test]
async fn watchers_of_a_replica_share_one_etcd_watch() {
    let etcd = EtcdCluster::single().await;
    let before = etcd_watchers(&etcd).await;
    let store = etcd.store().await;
    let base = store.current_revision().await.unwrap();
    let mut all = Vec::new();
    let mut one_ns = Vec::new();
    let mut other = Vec::new();
    for _ in 0..20 {
        all.push(store.watch(None, None, base).await.unwrap());
        one_ns.push(store.watch(Some(RES), Some("a"), base).await.unwrap());
        other.push(store.watch(Some(OTHER), None, base).await.unwrap());
    }
    let n = watchers_settle(&etcd, |n| n == before + 1).await;
    assert_eq!(n, before + 1, "60 watchers should hold one etcd watch, etcd counts {n} (was {before})");

    let a = store.create(&key("a", "x"), b"1".to_vec()).await.unwrap();
    let b = store.create(&key("b", "y"), b"2".to_vec()).await.unwrap();
    let o = store.create(&ObjectKey::new(OTHER, "a", "p"), b"3".to_vec()).await.unwrap();
    for w in &mut all {
        for want in [a.mod_revision, b.mod_revision, o.mod_revision] {
            assert_eq!(next_ok(w).await.revision(), want);
        }
    }
    for w in &mut one_ns {
        assert_eq!(next_ok(w).await.key(), &key("a", "x"));
        assert_idle(w).await;
    }
    for w in &mut other {
        assert_eq!(next_ok(w).await.revision(), o.mod_revision);
        assert_idle(w).await;
    }
    // A watcher that starts a little behind is served from the replica's window.
    let mut late = store.watch(Some(RES), None, base).await.unwrap();
    assert_eq!(next_ok(&mut late).await.revision(), a.mod_revision);
    assert_eq!(next_ok(&mut late).await.revision(), b.mod_revision);
    assert_idle(&mut late).await;
    assert_eq!(etcd_watchers(&etcd).await, before + 1);

    drop((all, one_ns, other, late, store));
    let n = watchers_settle(&etcd, |n| n == before).await;
    assert_eq!(n, before, "the shared watch should end with the store");
}

/// A watcher starting before the replica's window gets an etcd watch of its own and the same
/// exact history; one starting inside the window does not.
#[tokio::test]
async fn watch_before_the_window_gets_its_own_etcd_watch() {
    let etcd = EtcdCluster::single().await;
    let store =
        EtcdStore::connect(&etcd.config(), EtcdOptions { watch_window: 5, ..EtcdOptions::default() }).await.unwrap();
    let base = store.current_revision().await.unwrap();
    let mut live = store.watch(None, None, base).await.unwrap();
    for i in 0..20 {
        store.create(&key("ns", &i.to_string()), vec![]).await.unwrap();
    }
    for r in 1..=20 {
        assert_eq!(next_ok(&mut live).await.revision(), base + r);
    }
    let shared = watchers_settle(&etcd, |_| true).await;

    let mut inside = store.watch(None, None, base + 17).await.unwrap();
    for r in 18..=20 {
        assert_eq!(next_ok(&mut inside).await.revision(), base + r);
    }
    assert_idle(&mut inside).await;
    assert_eq!(etcd_watchers(&etcd).await, shared, "inside the window: no etcd watch of its own");

    let mut behind = store.watch(None, None, base).await.unwrap();
    for r in 1..=20 {
        assert_eq!(next_ok(&mut behind).await.revision(), base + r, "gap or duplicate");
    }
    assert_idle(&mut behind).await;
    let n = watchers_settle(&etcd, |n| n == shared + 1).await;
    assert_eq!(n, shared + 1, "behind the window: its own etcd watch");
    // Both keep going live.
    let c = store.create(&key("ns", "after"), vec![]).await.unwrap();
    for w in [&mut live, &mut inside, &mut behind] {
        assert_eq!(next_ok(w).await.revision(), c.mod_revision);
    }
}

/// Compaction reaches the replica's window too: a watch from compacted history is `Gone`
/// whether or not the window still held those events.
#[tokio::test]
async fn compaction_also_trims_the_replica_window() {
    let etcd = EtcdCluster::single().await;
    let store = etcd.store().await;
    let base = store.current_revision().await.unwrap();
    let mut w = store.watch(None, None, base).await.unwrap();
    for i in 1..=10 {
        store.create(&key("ns", &i.to_string()), vec![]).await.unwrap();
    }
    for r in 1..=10 {
        assert_eq!(next_ok(&mut w).await.revision(), base + r);
    }
    let compacted = store.compact(4).await.unwrap();
    assert_eq!(compacted, base + 6);
    assert_eq!(
        store.watch(None, None, base + 3).await.unwrap_err(),
        StoreError::Gone { requested: base + 3, compacted: base + 6 }
    );
    let mut from = store.watch(None, None, compacted).await.unwrap();
    for r in 7..=10 {
        assert_eq!(next_ok(&mut from).await.revision(), base + r);
    }
}

/// A watcher that stops reading while the replica's watch runs ahead gets `WatchLagged` once
/// and its stream ends; the others are not held back.
#[tokio::test]
async fn a_stalled_watcher_lags_out_without_holding_back_the_others() {
    let etcd = EtcdCluster::single().await;
    let store =
        EtcdStore::connect(&etcd.config(), EtcdOptions { watch_buffer: 8, ..EtcdOptions::default() }).await.unwrap();
    let base = store.current_revision().await.unwrap();
    let mut stalled = store.watch(None, None, base).await.unwrap();
    let mut reader = store.watch(None, None, base).await.unwrap();
    for i in 0..40 {
        store.create(&key("ns", &i.to_string()), vec![]).await.unwrap();
        assert_eq!(next_ok(&mut reader).await.revision(), base + i + 1);
    }
    let mut lagged = false;
    while let Some(ev) = next(&mut stalled).await {
        if let Err(e) = ev {
            assert!(matches!(e, StoreError::WatchLagged { .. }), "{e:?}");
            lagged = true;
            break;
        }
    }
    assert!(lagged, "the stalled watcher should lag out");
    assert!(next(&mut stalled).await.is_none(), "one error, then the stream ends");
}

/// When etcd is gone for good, the replica's shared watch ends: its watchers get an error
/// (not a silent end), and once etcd is back the next watch starts a new shared watch.
#[tokio::test]
async fn shared_watch_ends_with_an_error_and_restarts_once_etcd_is_back() {
    let mut etcd = EtcdCluster::single().await;
    let store = etcd.store().await;
    let base = store.current_revision().await.unwrap();
    let mut w = store.watch(None, None, base).await.unwrap();
    etcd.kill(0);
    // The watch retries other members (there are none) for a while, then gives up.
    let end = tokio::time::timeout(Duration::from_secs(60), w.next()).await.expect("the watch gives up within 60 s");
    match end {
        Some(Err(StoreError::Backend(msg))) => assert!(msg.contains("watch"), "{msg}"),
        other => panic!("expected a backend error, got {other:?}"),
    }
    assert!(tokio::time::timeout(Duration::from_secs(5), w.next()).await.unwrap().is_none(), "then it ends");

    etcd.restart(0).await;
    let mut again = None;
    for _ in 0..50 {
        let at = store.current_revision().await;
        if let Ok(at) = at {
            again = Some((store.watch(None, None, at).await.expect("a new shared watch"), at));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (mut w, _) = again.expect("etcd answers again");
    let c = store.create(&key("ns", "back"), vec![]).await.unwrap();
    assert_eq!(next_ok(&mut w).await.revision(), c.mod_revision);
}
