//! CRUD, revision and concurrency semantics of the redb store, on real files in tempdirs.

use std::sync::Arc;

use riptides_cp::store::{ObjectKey, RedbOptions, RedbStore, Store, StoreError, StoreExt, StoredObject};

const RES: &str = "core.riptides.io/workloadidentities";

fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(RES, ns, name)
}

fn open(dir: &tempfile::TempDir) -> RedbStore {
    RedbStore::open(dir.path().join("store.redb")).expect("open store")
}

#[tokio::test]
async fn crud_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let k = key("default", "web");

    assert_eq!(store.get(&k).await.unwrap(), None);
    let created = store.create(&k, b"v1".to_vec()).await.unwrap();
    assert_eq!(created.value, b"v1");
    assert_eq!(created.create_revision, created.mod_revision);
    assert_eq!(store.get(&k).await.unwrap(), Some(created.clone()));

    let err = store.create(&k, b"again".to_vec()).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");

    let updated = store.update(&k, b"v2".to_vec(), None).await.unwrap();
    assert_eq!(updated.create_revision, created.create_revision);
    assert!(updated.mod_revision > created.mod_revision);
    assert_eq!(store.get(&k).await.unwrap().unwrap().value, b"v2");

    let deleted = store.delete(&k, None).await.unwrap();
    assert_eq!(deleted, updated, "delete returns the last stored value");
    assert_eq!(store.get(&k).await.unwrap(), None);

    let missing = key("default", "nope");
    assert!(matches!(store.update(&missing, b"x".to_vec(), None).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(store.delete(&missing, None).await, Err(StoreError::NotFound { .. })));

    // Recreating after delete starts a new lifetime.
    let again = store.create(&k, b"v3".to_vec()).await.unwrap();
    assert!(again.create_revision > deleted.mod_revision);
}

#[tokio::test]
async fn invalid_keys_and_values_are_rejected_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        RedbStore::open_with(dir.path().join("s.redb"), RedbOptions { max_value_bytes: 16, ..RedbOptions::default() })
            .unwrap();
    for bad in [
        ObjectKey::new("", "ns", "a"),
        ObjectKey::new(RES, "ns", ""),
        ObjectKey::new(RES, "n\0s", "a"),
        ObjectKey::new(RES, "ns", "a\0b"),
        ObjectKey::new(RES, "ns", "x".repeat(5000)),
    ] {
        let err = store.create(&bad, b"{}".to_vec()).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidKey { .. }), "{bad:?}: {err}");
        assert!(matches!(store.get(&bad).await, Err(StoreError::InvalidKey { .. })));
    }
    assert!(matches!(store.list("", None).await, Err(StoreError::InvalidKey { .. })));
    assert!(matches!(store.watch(Some("a\0"), None, 0).await, Err(StoreError::InvalidKey { .. })));
    let err = store.create(&key("", "big"), vec![b'x'; 17]).await.unwrap_err();
    assert_eq!(err, StoreError::ValueTooLarge { size: 17, max: 16 });
    // Cluster-scoped keys (empty namespace) are fine.
    store.create(&key("", "ok"), b"{}".to_vec()).await.unwrap();
    assert_eq!(store.current_revision().await.unwrap(), 1);
}

#[tokio::test]
async fn revisions_strictly_increase_and_persist_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut last = 0;
    let mut seen = Vec::new();
    for round in 0..3 {
        let store = open(&dir);
        assert_eq!(store.current_revision().await.unwrap(), last);
        for i in 0..5 {
            let k = key("ns", &format!("o-{round}-{i}"));
            let o = store.create(&k, format!("{round}-{i}").into_bytes()).await.unwrap();
            assert!(o.mod_revision > last, "revision must strictly increase");
            last = o.mod_revision;
            seen.push(o);
        }
        // A failed write does not consume a revision.
        let _ = store.create(&seen[0].key, b"dup".to_vec()).await.unwrap_err();
        let u = store.update(&seen[0].key, b"upd".to_vec(), None).await.unwrap();
        assert!(u.mod_revision > last);
        last = u.mod_revision;
        seen[0] = u;
        assert_eq!(store.current_revision().await.unwrap(), last);
        drop(store);
    }
    let store = open(&dir);
    for o in &seen {
        assert_eq!(store.get(&o.key).await.unwrap().as_ref(), Some(o));
    }
}

#[tokio::test]
async fn stale_expect_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let k = key("ns", "a");
    let v1 = store.create(&k, b"1".to_vec()).await.unwrap();
    let v2 = store.update(&k, b"2".to_vec(), Some(v1.mod_revision)).await.unwrap();
    let err = store.update(&k, b"3".to_vec(), Some(v1.mod_revision)).await.unwrap_err();
    assert_eq!(err, StoreError::Conflict { key: k.clone(), current: v2.mod_revision });
    let err = store.delete(&k, Some(v1.mod_revision)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { current, .. } if current == v2.mod_revision));
    assert_eq!(store.get(&k).await.unwrap().unwrap().value, b"2");
    store.delete(&k, Some(v2.mod_revision)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_cas_has_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir));
    let k = key("ns", "token");
    let base = store.create(&k, b"unused".to_vec()).await.unwrap();

    let mut tasks = Vec::new();
    for i in 0..32 {
        let store = store.clone();
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            store.update(&k, format!("used-by-{i}").into_bytes(), Some(base.mod_revision)).await
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(o) => winners.push(o),
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one CAS may win");
    assert_eq!(store.get(&k).await.unwrap(), Some(winners[0].clone()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn update_with_makes_single_use_tokens_safe() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(open(&dir));
    let k = key("ns", "join-token");
    store.create(&k, b"unused".to_vec()).await.unwrap();

    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            store
                .update_with(&k, |cur: Option<&StoredObject>| match cur {
                    Some(o) if o.value == b"unused" => Ok(Some(format!("used-{i}").into_bytes())),
                    _ => {
                        Err(StoreError::Conflict { key: k.clone(), current: cur.map(|o| o.mod_revision).unwrap_or(0) })
                    }
                })
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 1, "a single-use token can be consumed once");

    // Absent + Some(value) creates; absent + None leaves it absent.
    let fresh = key("ns", "fresh");
    assert_eq!(store.update_with(&fresh, |_| Ok(None)).await.unwrap(), None);
    let made = store
        .update_with(&fresh, |cur| {
            assert!(cur.is_none());
            Ok(Some(b"made".to_vec()))
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(made.value, b"made");
}

#[tokio::test]
async fn list_is_filtered_sorted_and_reports_its_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for (ns, name) in [("b", "2"), ("a", "2"), ("b", "1"), ("a", "1"), ("ab", "1")] {
        store.create(&key(ns, name), b"{}".to_vec()).await.unwrap();
    }
    store.create(&ObjectKey::new("other.io/things", "a", "1"), b"{}".to_vec()).await.unwrap();
    store.create(&ObjectKey::new(format!("{RES}x"), "a", "1"), b"{}".to_vec()).await.unwrap();

    let (all, rev) = store.list(RES, None).await.unwrap();
    assert_eq!(rev, store.current_revision().await.unwrap());
    let names: Vec<_> = all.iter().map(|o| format!("{}/{}", o.key.namespace, o.key.name)).collect();
    assert_eq!(names, ["a/1", "a/2", "ab/1", "b/1", "b/2"]);

    let (in_a, _) = store.list(RES, Some("a")).await.unwrap();
    assert_eq!(in_a.len(), 2);
    assert!(in_a.iter().all(|o| o.key.namespace == "a"));
    let (none, _) = store.list(RES, Some("zzz")).await.unwrap();
    assert!(none.is_empty());

    // The list revision is a snapshot: later writes do not show up in it, and it is exactly
    // the revision before them.
    let (before, rev_before) = store.list(RES, Some("a")).await.unwrap();
    let later = store.create(&key("a", "3"), b"{}".to_vec()).await.unwrap();
    assert_eq!(later.mod_revision, rev_before + 1);
    assert_eq!(before.len(), 2);
}

#[tokio::test]
async fn compaction_keeps_recent_history_and_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        RedbStore::open_with(dir.path().join("s.redb"), RedbOptions { history_revisions: 5, ..RedbOptions::default() })
            .unwrap();
    for i in 0..20 {
        store.create(&key("ns", &i.to_string()), vec![]).await.unwrap();
    }
    // Automatic trimming keeps the last 5 revisions: watching after 15 works, after 14 is gone.
    assert!(store.watch(None, None, 15).await.is_ok());
    assert!(matches!(store.watch(None, None, 14).await, Err(StoreError::Gone { compacted: 15, requested: 14 })));
    // Manual compaction never moves backwards and does not change the revision.
    assert_eq!(store.compact(100).await.unwrap(), 15);
    assert_eq!(store.compact(2).await.unwrap(), 18);
    assert_eq!(store.current_revision().await.unwrap(), 20);
    assert_eq!(store.list(RES, None).await.unwrap().0.len(), 20);
    drop(store);
    // The compaction point survives a restart.
    let store = RedbStore::open(dir.path().join("s.redb")).unwrap();
    assert!(matches!(store.watch(None, None, 17).await, Err(StoreError::Gone { compacted: 18, .. })));
    let mut w = store.watch(None, None, 18).await.unwrap();
    assert_eq!(w.recv().await.unwrap().unwrap().revision(), 19);
}
