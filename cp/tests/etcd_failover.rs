//! A three-member etcd cluster on loopback: the store keeps working when a member is killed
//! (requests fail over to the others), and a watch whose member dies resumes on another one
//! from the next revision, without gaps or duplicates.

mod etcd_support;

use std::time::Duration;

use etcd_support::EtcdCluster;
use futures_util::StreamExt;
use riptides_cp::store::{ObjectKey, Store, StoreError, WatchEvent, WatchStream};

const RES: &str = "core.riptides.io/services";

fn key(name: &str) -> ObjectKey {
    ObjectKey::new(RES, "default", name)
}

async fn next_ok(w: &mut WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(20), w.next())
        .await
        .expect("watch event within 20s")
        .expect("stream ended")
        .expect("watch error")
}

/// Retries a write whose outcome was unknown (the member died mid-call): reads back first.
async fn create_acknowledged(store: &dyn Store, k: &ObjectKey) {
    for _ in 0..20 {
        match store.create(k, k.name.as_bytes().to_vec()).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => return,
            Err(e) => {
                tracing::debug!(error = %e, "write failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    panic!("could not write {k}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_member_keeps_the_store_and_its_watches_going() {
    let mut etcd = EtcdCluster::start(3, false).await;
    let store = etcd.store().await;
    let base = store.current_revision().await.unwrap();
    let mut w = store.watch(Some(RES), None, base).await.unwrap();

    let mut acknowledged = Vec::new();
    for i in 0..10 {
        let k = key(&format!("before-{i}"));
        store.create(&k, vec![]).await.unwrap();
        acknowledged.push(k);
    }
    // The client prefers the first member; the watch is on it as well.
    etcd.kill(0);
    for i in 0..10 {
        let k = key(&format!("after-{i}"));
        create_acknowledged(&store, &k).await;
        acknowledged.push(k);
    }
    // Every acknowledged write is readable, and the watch saw each exactly once, in order.
    let (listed, _) = store.list(RES, None).await.unwrap();
    assert_eq!(listed.len(), acknowledged.len());
    let mut last = base;
    let mut seen = Vec::new();
    while seen.len() < acknowledged.len() {
        let ev = next_ok(&mut w).await;
        assert!(ev.revision() > last, "watch went backwards or repeated");
        last = ev.revision();
        seen.push(ev.key().name.clone());
    }
    let mut expected: Vec<String> = acknowledged.iter().map(|k| k.name.clone()).collect();
    expected.sort();
    seen.sort();
    assert_eq!(seen, expected);

    // The member comes back and catches up.
    etcd.restart(0).await;
    let mut only_first = etcd.config();
    only_first.endpoints = vec![etcd.endpoint(0)];
    let first = riptides_cp::store::EtcdStore::connect(&only_first, Default::default()).await.unwrap();
    assert_eq!(first.list(RES, None).await.unwrap().0.len(), acknowledged.len());
}
