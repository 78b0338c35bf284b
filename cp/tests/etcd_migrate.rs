//! `riptides-controlplane migrate`: a redb data dir copied into etcd and back, verified object
//! by object; re-running is harmless, and a differing object in the target is refused.

mod etcd_support;

use std::process::Command;

use etcd_support::EtcdCluster;
use riptides_cp::store::etcd::migrate::{all_resources, migrate, MigrationError};
use riptides_cp::store::{ObjectKey, RedbStore, Store};

const SVC: &str = "core.riptides.io/services";

async fn fill(store: &RedbStore) -> Vec<ObjectKey> {
    let mut keys = Vec::new();
    for i in 0..25 {
        let k = ObjectKey::new(SVC, if i % 2 == 0 { "a" } else { "b" }, format!("s{i}"));
        store.create(&k, format!("{{\"i\":{i}}}").into_bytes()).await.unwrap();
        keys.push(k);
    }
    let wi = ObjectKey::new("core.riptides.io/workloadidentities", "a", "web");
    store.create(&wi, b"{}".to_vec()).await.unwrap();
    store.update(&wi, b"{\"v\":2}".to_vec(), None).await.unwrap();
    keys.push(wi);
    keys
}

#[tokio::test]
async fn redb_to_etcd_and_back() {
    let etcd = EtcdCluster::single().await;
    let dir = tempfile::tempdir().unwrap();
    let source = RedbStore::open(dir.path().join("store.redb")).unwrap();
    let keys = fill(&source).await;
    let target = etcd.store().await;

    let report = migrate(&source, &target, &all_resources()).await.unwrap();
    assert_eq!((report.copied, report.verified), (keys.len(), keys.len()));
    for k in &keys {
        assert_eq!(target.get(k).await.unwrap().unwrap().value, source.get(k).await.unwrap().unwrap().value);
    }
    // Re-running skips what is there.
    let again = migrate(&source, &target, &all_resources()).await.unwrap();
    assert_eq!((again.copied, again.unchanged), (0, keys.len()));

    // And back into a fresh redb.
    let back_dir = tempfile::tempdir().unwrap();
    let back = RedbStore::open(back_dir.path().join("store.redb")).unwrap();
    let report = migrate(&target, &back, &all_resources()).await.unwrap();
    assert_eq!(report.verified, keys.len());

    // A differing object in the target is never overwritten.
    target.update(&keys[0], b"changed".to_vec(), None).await.unwrap();
    assert!(matches!(migrate(&source, &target, &all_resources()).await, Err(MigrationError::Differs { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_migrates_a_data_dir() {
    let etcd = EtcdCluster::single().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = {
        let source = RedbStore::open(dir.path().join("store.redb")).unwrap();
        fill(&source).await
    };
    let out = Command::new(env!("CARGO_BIN_EXE_riptides-controlplane"))
        .arg("migrate")
        .arg("--from")
        .arg(format!("redb:{}", dir.path().display()))
        .arg("--to")
        .arg(format!("etcd:{}", etcd.endpoints().join(",")))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("{} verified equal", keys.len())), "{stdout}");
    let target = etcd.store().await;
    assert_eq!(target.list(SVC, None).await.unwrap().0.len(), 25);
}
