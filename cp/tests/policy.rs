//! Per-daemon policy documents and their change stream, on a real store and CA.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use riptides_cp::ca::{Ca, CaConfig};
use riptides_cp::policy::{DaemonScope, PolicyCompiler};
use riptides_cp::store::{ObjectKey, RedbStore, Store};
use riptides_wire::proto::messages::{PolicyItem, PolicyKind, PolicyUpdate};
use riptides_wire::TrustDomain;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn wi(name: &str, scope: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"apiVersion": "core.riptides.io/v1alpha1", "kind": "WorkloadIdentity",
        "metadata": {"name": name, "namespace": "riptides-system"},
        "spec": {"workloadID": name, "scope": scope}}))
    .unwrap()
}

fn key(plural: &str, name: &str) -> ObjectKey {
    ObjectKey::new(format!("core.riptides.io/{plural}"), "riptides-system", name)
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    compiler: PolicyCompiler,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
    let ca = Arc::new(
        Ca::open(dir.path().join("ca"), CaConfig::new(TrustDomain::parse("example.com").unwrap()), SystemTime::now())
            .unwrap(),
    );
    Fixture { compiler: PolicyCompiler::new(store.clone(), ca), store, _dir: dir }
}

fn scope() -> DaemonScope {
    DaemonScope { id: "node-1".into(), group: Some("web".into()) }
}

fn start(f: &Fixture, resume: Option<u64>) -> (mpsc::Receiver<PolicyUpdate>, CancellationToken) {
    let (tx, rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let (c, token) = (f.compiler.clone(), cancel.clone());
    tokio::spawn(async move {
        let _ = c
            .stream(
                &scope(),
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
    tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("policy update in time").expect("stream open")
}

fn names(items: &[PolicyItem], kind: PolicyKind) -> Vec<String> {
    let mut v: Vec<String> = items.iter().filter(|i| i.kind() == kind).map(|i| i.key().unwrap().name).collect();
    v.sort();
    v
}

#[tokio::test]
async fn snapshot_selects_by_daemon_and_group_then_streams_deltas() {
    let f = fixture();
    f.store
        .create(&key("workloadidentities", "by-id"), wi("by-id", json!({"daemon": {"id": "node-1"}})))
        .await
        .unwrap();
    f.store
        .create(&key("workloadidentities", "by-group"), wi("by-group", json!({"daemonGroup": {"id": "web"}})))
        .await
        .unwrap();
    f.store
        .create(&key("workloadidentities", "other"), wi("other", json!({"daemon": {"id": "node-2"}})))
        .await
        .unwrap();
    let (mut rx, cancel) = start(&f, None);
    let PolicyUpdate::Snapshot { revision, document } = next(&mut rx).await else {
        panic!("first update must be a snapshot")
    };
    assert_eq!(names(&document.items, PolicyKind::WorkloadIdentity), ["by-group", "by-id"]);
    assert_eq!(document.trust_domain, "example.com");
    assert!(!document.bundle.roots_der.is_empty());
    assert_eq!(revision, 3);

    // Moving "by-id" out of scope removes it; moving "other" in adds it; other daemons' changes
    // and unrelated kinds produce nothing.
    let cur = f.store.get(&key("workloadidentities", "by-id")).await.unwrap().unwrap();
    f.store
        .update(
            &key("workloadidentities", "by-id"),
            wi("by-id", json!({"daemon": {"id": "node-9"}})),
            Some(cur.mod_revision),
        )
        .await
        .unwrap();
    let PolicyUpdate::Delta { removals, upserts, revision: r } = next(&mut rx).await else { panic!("delta expected") };
    assert!(upserts.is_empty());
    assert_eq!(removals[0].name, "by-id");
    assert_eq!(r, 4);
    let cur = f.store.get(&key("workloadidentities", "other")).await.unwrap().unwrap();
    f.store
        .update(
            &key("workloadidentities", "other"),
            wi("other", json!({"daemonGroup": {"id": "web"}})),
            Some(cur.mod_revision),
        )
        .await
        .unwrap();
    let PolicyUpdate::Delta { upserts, .. } = next(&mut rx).await else { panic!("delta expected") };
    assert_eq!(names(&upserts, PolicyKind::WorkloadIdentity), ["other"]);
    f.store.delete(&key("workloadidentities", "by-group"), None).await.unwrap();
    let PolicyUpdate::Delta { removals, .. } = next(&mut rx).await else { panic!("delta expected") };
    assert_eq!(removals[0].name, "by-group");
    cancel.cancel();
}

#[tokio::test]
async fn resume_sends_only_changes_and_compaction_forces_a_snapshot() {
    let f = fixture();
    f.store.create(&key("workloadidentities", "a"), wi("a", json!({"daemon": {"id": "node-1"}}))).await.unwrap();
    let (mut rx, cancel) = start(&f, None);
    let first = next(&mut rx).await;
    assert!(matches!(first, PolicyUpdate::Snapshot { .. }));
    let seen = first.revision();
    cancel.cancel();

    // While the daemon is away: one change in scope.
    f.store.create(&key("workloadidentities", "b"), wi("b", json!({"daemon": {"id": "node-1"}}))).await.unwrap();
    let (mut rx, cancel) = start(&f, Some(seen));
    // Resumed: the bundle re-check may come first; no snapshot, and "b" arrives as a delta.
    let mut got_b = false;
    for _ in 0..3 {
        match next(&mut rx).await {
            PolicyUpdate::Snapshot { .. } => panic!("resume within history must not resend a snapshot"),
            PolicyUpdate::Delta { upserts, .. } => {
                if names(&upserts, PolicyKind::WorkloadIdentity) == ["b"] {
                    got_b = true;
                    break;
                }
            }
        }
    }
    assert!(got_b);
    cancel.cancel();

    f.store.compact(0).await.unwrap();
    let (mut rx, cancel) = start(&f, Some(seen));
    let PolicyUpdate::Snapshot { document, .. } = next(&mut rx).await else {
        panic!("compacted history means a snapshot")
    };
    assert_eq!(names(&document.items, PolicyKind::WorkloadIdentity), ["a", "b"]);
    cancel.cancel();
}
