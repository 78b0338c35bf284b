//! Policy push with two replicas on one etcd cluster: a change written through one replica
//! reaches a daemon streaming from the other (each replica's push follows the store's watch),
//! and a daemon that moves to another replica resumes from its revision with deltas only,
//! getting a snapshot only when that revision has been compacted.

mod etcd_support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use etcd_support::EtcdCluster;
use riptides_cp::ca::{Ca, CaConfig};
use riptides_cp::policy::{DaemonScope, PolicyCompiler};
use riptides_cp::store::{ObjectKey, Store};
use riptides_wire::proto::messages::{PolicyItem, PolicyKind, PolicyUpdate};
use riptides_wire::TrustDomain;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn wi(name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"apiVersion": "core.riptides.io/v1alpha1", "kind": "WorkloadIdentity",
        "metadata": {"name": name, "namespace": "riptides-system"},
        "spec": {"workloadID": name, "scope": {"daemon": {"id": "node-1"}}}}))
    .unwrap()
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new("core.riptides.io/workloadidentities", "riptides-system", name)
}

fn start(c: &PolicyCompiler, resume: Option<u64>) -> (mpsc::Receiver<PolicyUpdate>, CancellationToken) {
    let (tx, rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let (c, token) = (c.clone(), cancel.clone());
    tokio::spawn(async move {
        let scope = DaemonScope { id: "node-1".into(), group: None };
        let _ = c
            .stream(
                &scope,
                resume,
                |u| {
                    let tx = tx.clone();
                    async move { tx.send(u).await.is_ok() }
                },
                token,
            )
            .await;
    });
    (rx, cancel)
}

async fn next(rx: &mut mpsc::Receiver<PolicyUpdate>) -> PolicyUpdate {
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("policy update in time").expect("stream open")
}

fn names(items: &[PolicyItem]) -> Vec<String> {
    let mut v: Vec<String> =
        items.iter().filter(|i| i.kind() == PolicyKind::WorkloadIdentity).map(|i| i.key().unwrap().name).collect();
    v.sort();
    v
}

/// Reads deltas until one upserts `name`; a snapshot is a failure.
async fn delta_with(rx: &mut mpsc::Receiver<PolicyUpdate>, name: &str) -> u64 {
    for _ in 0..5 {
        match next(rx).await {
            PolicyUpdate::Snapshot { .. } => panic!("a resume within history must not resend a snapshot"),
            PolicyUpdate::Delta { upserts, revision, .. } => {
                if names(&upserts).contains(&name.to_owned()) {
                    return revision;
                }
            }
        }
    }
    panic!("{name} never arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_follows_the_shared_store_and_resumes_on_another_replica() {
    let etcd = EtcdCluster::start(3, false).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(
        Ca::open(dir.path().join("ca"), CaConfig::new(TrustDomain::parse("example.com").unwrap()), SystemTime::now())
            .unwrap(),
    );
    let (a, b): (Arc<dyn Store>, Arc<dyn Store>) = (Arc::new(etcd.store().await), Arc::new(etcd.store().await));
    let (replica_a, replica_b) = (PolicyCompiler::new(a.clone(), ca.clone()), PolicyCompiler::new(b.clone(), ca));
    a.create(&key("one"), wi("one")).await.unwrap();

    // The daemon streams from replica A; a change applied through replica B reaches it.
    let (mut rx, cancel) = start(&replica_a, None);
    let PolicyUpdate::Snapshot { revision, document } = next(&mut rx).await else { panic!("snapshot first") };
    assert_eq!(names(&document.items), ["one"]);
    b.create(&key("two"), wi("two")).await.unwrap();
    let seen = delta_with(&mut rx, "two").await;
    assert!(seen > revision);

    // Replica A goes away; a change lands meanwhile; the daemon resumes on B from its revision.
    cancel.cancel();
    a.create(&key("three"), wi("three")).await.unwrap();
    let (mut rx, cancel) = start(&replica_b, Some(seen));
    delta_with(&mut rx, "three").await;
    cancel.cancel();

    // With that history compacted, resuming falls back to a full snapshot.
    b.create(&key("four"), wi("four")).await.unwrap();
    b.compact(0).await.unwrap();
    let (mut rx, cancel) = start(&replica_a, Some(seen));
    let PolicyUpdate::Snapshot { document, .. } = next(&mut rx).await else { panic!("compacted: snapshot") };
    assert_eq!(names(&document.items), ["four", "one", "three", "two"]);
    cancel.cancel();
}

/// Median and p99 of write -> delta latency over `n` sequential writes (printed, never asserted).
async fn propagation(writer: Arc<dyn Store>, compiler: &PolicyCompiler, n: usize) -> (Duration, Duration) {
    let (mut rx, cancel) = start(compiler, None);
    assert!(matches!(next(&mut rx).await, PolicyUpdate::Snapshot { .. }));
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("p{i}");
        let t0 = std::time::Instant::now();
        writer.create(&key(&name), wi(&name)).await.unwrap();
        delta_with(&mut rx, &name).await;
        lat.push(t0.elapsed());
    }
    cancel.cancel();
    lat.sort();
    (lat[n / 2], lat[(n * 99 / 100).min(n - 1)])
}

/// The single-replica figure (embedded store) beside the three-member etcd one with the write
/// applied on another replica than the one streaming to the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propagation_single_replica_vs_across_replicas() {
    const N: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(
        Ca::open(dir.path().join("ca"), CaConfig::new(TrustDomain::parse("example.com").unwrap()), SystemTime::now())
            .unwrap(),
    );
    let redb: Arc<dyn Store> = Arc::new(riptides_cp::store::RedbStore::open(dir.path().join("s.redb")).unwrap());
    let single = propagation(redb.clone(), &PolicyCompiler::new(redb, ca.clone()), N).await;

    let etcd = EtcdCluster::start(3, false).await;
    let (a, b): (Arc<dyn Store>, Arc<dyn Store>) = (Arc::new(etcd.store().await), Arc::new(etcd.store().await));
    let across = propagation(b, &PolicyCompiler::new(a, ca), N).await;
    eprintln!(
        "policy propagation, write -> delta at the daemon's stream, {N} sequential writes: \
         single replica (redb) p50 {:?} p99 {:?}; 3 etcd members, write on another replica p50 {:?} p99 {:?}",
        single.0, single.1, across.0, across.1
    );
}
