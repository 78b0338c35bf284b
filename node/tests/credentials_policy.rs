//! Credential delivery: the control plane's policy compiler (real store and CA) puts a
//! CredentialSource's secret only into the documents of daemons whose workloads a
//! CredentialBinding names, keeps it current through deltas and resumes, and the daemon's rules
//! compile it into bindings without showing the secret.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use riptides_cp::ca::{Ca, CaConfig};
use riptides_cp::policy::{DaemonScope, PolicyCompiler};
use riptides_cp::store::{ObjectKey, RedbStore, Store};
use riptides_node::dataplane::rules::Rules;
use riptides_wire::proto::messages::{CredentialSet, PolicyItem, PolicyUpdate};
use riptides_wire::TrustDomain;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const NS: &str = "riptides-system";
const SECRET: &str = "very-secret-value-0042";

fn key(plural: &str, name: &str) -> ObjectKey {
    ObjectKey::new(format!("core.riptides.io/{plural}"), NS, name)
}

fn obj(kind: &str, name: &str, spec: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"apiVersion": "core.riptides.io/v1alpha1", "kind": kind,
        "metadata": {"name": name, "namespace": NS}, "spec": spec}))
    .unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    compiler: PolicyCompiler,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
    let ca = Arc::new(
        Ca::open(dir.path().join("ca"), CaConfig::new(TrustDomain::parse("example.com").unwrap()), SystemTime::now())
            .unwrap(),
    );
    for (name, node) in [("web", "node-1"), ("batch", "node-2")] {
        store
            .create(
                &key("workloadidentities", name),
                obj(
                    "WorkloadIdentity",
                    name,
                    json!({"workloadID": name, "scope": {"daemon": {"id": node}}, "selectors": [{"process:name": name}],
                    "egress": [{"selectors": [{"tier": "api"}], "connection": {"tls": {"mode": "SIMPLE", "intercept": true}}}]}),
                ),
            )
            .await
            .unwrap();
    }
    store
        .create(
            &key("services", "api"),
            obj("Service", "api", json!({"labels": {"tier": "api"}, "external": true, "addresses": [{"address": "10.9.9.9", "port": 443}]})),
        )
        .await
        .unwrap();
    store
        .create(
            &key("credentialsources", "api-key"),
            obj("CredentialSource", "api-key", json!({"type": "static", "secretValue": SECRET})),
        )
        .await
        .unwrap();
    Fixture { compiler: PolicyCompiler::new(store.clone(), ca), store, _dir: dir }
}

fn binding(workload: &str) -> Vec<u8> {
    obj(
        "CredentialBinding",
        &format!("{workload}-api"),
        json!({"workloadID": workload, "serviceSelectors": [{"tier": "api"}], "credentialSource": "api-key",
            "injection": {"header": "Authorization", "format": "Bearer {{credential}}"}}),
    )
}

fn scope(id: &str) -> DaemonScope {
    DaemonScope { id: id.into(), group: None }
}

fn creds(items: &[PolicyItem]) -> Option<CredentialSet> {
    items.iter().find_map(|i| match i {
        PolicyItem::Credentials(c) => Some(c.clone()),
        _ => None,
    })
}

fn start(f: &Fixture, id: &str, resume: Option<u64>) -> (mpsc::Receiver<PolicyUpdate>, CancellationToken) {
    let (tx, rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let (c, token, s) = (f.compiler.clone(), cancel.clone(), scope(id));
    tokio::spawn(async move {
        let _ = c
            .stream(
                &s,
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

/// The next delta carrying a credential set.
async fn next_creds(rx: &mut mpsc::Receiver<PolicyUpdate>) -> CredentialSet {
    loop {
        if let PolicyUpdate::Delta { upserts, .. } = next(rx).await {
            if let Some(c) = creds(&upserts) {
                return c;
            }
        }
    }
}

#[tokio::test]
async fn secrets_reach_only_daemons_with_a_binding() {
    let f = fixture().await;
    // No binding yet: nobody gets the source.
    for id in ["node-1", "node-2", "node-3"] {
        let (_, doc) = f.compiler.snapshot(&scope(id)).await.unwrap();
        assert!(creds(&doc.items).is_none(), "{id}");
    }
    f.store.create(&key("credentialbindings", "web-api"), binding("web")).await.unwrap();
    let (_, doc) = f.compiler.snapshot(&scope("node-1")).await.unwrap();
    let set = creds(&doc.items).expect("node-1 runs web, which the binding names");
    assert_eq!(set.bindings.len(), 1);
    assert_eq!(set.sources.len(), 1);
    assert_eq!(set.sources[0].secret.as_ref().unwrap().expose(), SECRET);
    assert!(!set.sources[0].resource.contains(SECRET), "the secret travels apart from the resource");
    assert!(!format!("{doc:?}").contains(SECRET), "Debug of a document never shows a secret");
    for id in ["node-2", "node-3"] {
        let (_, doc) = f.compiler.snapshot(&scope(id)).await.unwrap();
        assert!(creds(&doc.items).is_none(), "{id} has no bound workload");
    }

    // The daemon compiles it: the binding applies to web -> api, the source has its secret.
    let rules = Rules::compile(&doc).unwrap();
    let w = rules.workloads().iter().find(|w| w.name == "web").unwrap().clone();
    let svc = match rules.egress_decision(&w, "10.9.9.9:443".parse().unwrap(), None) {
        riptides_node::dataplane::rules::EgressDecision::Mtls { service, intercept, .. } => {
            assert!(intercept);
            service
        }
        d => panic!("{d:?}"),
    };
    let b = rules.binding_for(&w, &svc).expect("binding applies");
    assert_eq!(b.display_name(), "riptides-system/web-api");
    assert_eq!(b.format, "Bearer {{credential}}");
    assert_eq!(rules.credential_sources()[0].spec.secret_value.as_ref().unwrap().expose(), SECRET);
    assert!(!format!("{:?}", rules.credential_sources()).contains(SECRET));
}

#[tokio::test]
async fn bindings_follow_deltas_and_resumes() {
    let f = fixture().await;
    let (mut rx, cancel) = start(&f, "node-2", None);
    let PolicyUpdate::Snapshot { revision, document } = next(&mut rx).await else { panic!("snapshot first") };
    assert!(creds(&document.items).is_none());

    // A binding for batch (node-2's workload) arrives as a delta with the secret...
    f.store.create(&key("credentialbindings", "batch-api"), binding("batch")).await.unwrap();
    let set = next_creds(&mut rx).await;
    assert_eq!(set.sources[0].secret.as_ref().unwrap().expose(), SECRET);
    // ...a new secret value replaces it...
    let cur = f.store.get(&key("credentialsources", "api-key")).await.unwrap().unwrap();
    f.store
        .update(
            &key("credentialsources", "api-key"),
            obj("CredentialSource", "api-key", json!({"type": "static", "secretValue": "rotated-value"})),
            Some(cur.mod_revision),
        )
        .await
        .unwrap();
    let set = next_creds(&mut rx).await;
    assert_eq!(set.sources[0].secret.as_ref().unwrap().expose(), "rotated-value");
    // ...and deleting the binding clears the set (the secret leaves the daemon).
    let cur = f.store.get(&key("credentialbindings", "batch-api")).await.unwrap().unwrap();
    f.store.delete(&key("credentialbindings", "batch-api"), Some(cur.mod_revision)).await.unwrap();
    let set = next_creds(&mut rx).await;
    assert!(set.bindings.is_empty() && set.sources.is_empty());
    cancel.cancel();

    // A daemon resuming from an old revision gets the current set first (it may hold a stale one).
    f.store.create(&key("credentialbindings", "batch-api"), binding("batch")).await.unwrap();
    let (mut rx, cancel) = start(&f, "node-2", Some(revision));
    let PolicyUpdate::Delta { upserts, .. } = next(&mut rx).await else { panic!("resumed without a snapshot") };
    let set = creds(&upserts).expect("the current credential set on resume");
    assert_eq!(set.bindings.len(), 1);
    cancel.cancel();
}
