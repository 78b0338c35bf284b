//! Node-bound authorization of workload CSRs: by daemon id, by daemon group, refusals, and the
//! bounded signing pool under concurrency. Daemons are registered through real attestation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, KeyPair, SanType};
use riptides_cp::attest::{
    hash_secret, AttestError, AttestationProof, Attestor, AttestorConfig, Authorizer, AuthorizerConfig,
    RateLimitConfig, SigningPool,
};
use riptides_cp::ca::{Ca, CaConfig};
use riptides_cp::store::{ObjectKey, RedbStore, Store};
use riptides_wire::resource::{self, ValidationContext, DEFAULT_NAMESPACE};
use riptides_wire::spiffe::{SpiffeId, TrustDomain};
use serde_json::{json, Value};

const EPOCH: u64 = 1_750_000_000;
const SECRET: &str = "0123456789abcdef0123456789abcdef";
const POOL: usize = 2;

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(EPOCH + secs)
}

fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

struct Env {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    authorizer: Arc<Authorizer>,
    pool: Arc<SigningPool>,
    a: SpiffeId,
    b: SpiffeId,
}

async fn put(store: &dyn Store, object: Value) {
    let ctx = ValidationContext { trust_domain: td() };
    let (rt, mut v) = resource::validate_object(&object, &ctx).unwrap();
    v["metadata"]["uid"] = json!("00000000-0000-4000-8000-000000000000");
    v["metadata"]["generation"] = json!(1);
    let name = v["metadata"]["name"].as_str().unwrap().to_owned();
    let ns = v["metadata"]["namespace"].as_str().unwrap_or(DEFAULT_NAMESPACE).to_owned();
    store.create(&ObjectKey::new(rt.store_key(), ns, name), serde_json::to_vec(&v).unwrap()).await.unwrap();
}

fn csr_for(uri: Option<&str>) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    if let Some(u) = uri {
        p.subject_alt_names = vec![SanType::URI(u.try_into().unwrap())];
    }
    p.serialize_request(&key).unwrap().der().to_vec()
}

fn identity(name: &str, ns: &str, workload_id: &str, scope: Value, ttl: Option<&str>) -> Value {
    let mut spec = json!({ "workloadID": workload_id, "scope": scope });
    if let Some(ttl) = ttl {
        spec["svid"] = json!({ "x509": { "ttl": ttl, "dnsNames": ["web.example.org"] } });
    }
    json!({
        "apiVersion": "core.riptides.io/v1alpha1",
        "kind": "WorkloadIdentity",
        "metadata": { "name": name, "namespace": ns },
        "spec": spec,
    })
}

/// Daemon `node-a` in group `edge`, daemon `node-b` without a group, and identities:
/// `web` (daemon node-a, ttl 10m), `batch` (group edge, another namespace), `db` (daemon node-b).
async fn env() -> Env {
    let _ = tracing_subscriber::fmt().with_env_filter("warn,riptides_cp=debug").with_test_writer().try_init();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("store.redb")).unwrap());
    let ca = Arc::new(Ca::open(dir.path().join("ca"), CaConfig::new(td()), t(0)).unwrap());
    let pool = Arc::new(SigningPool::new(ca, POOL));
    let attestor = Attestor::new(
        store.clone(),
        pool.clone(),
        AttestorConfig { rate_limit: RateLimitConfig::unlimited(), ..AttestorConfig::default() },
    );
    put(
        store.as_ref(),
        json!({
            "apiVersion": "auth.riptides.io/v1alpha1",
            "kind": "Verifier",
            "metadata": { "name": "edge" },
            "spec": { "method": "joinToken", "daemonGroup": "edge" },
        }),
    )
    .await;
    let mut ids = Vec::new();
    for (tok, verifier, daemon) in [("toka", Some("edge"), "node-a"), ("tokb", None, "node-b")] {
        let mut spec = json!({
            "tokenHash": hash_secret(SECRET),
            "expiresAt": riptides_cp::api::rfc3339(t(3600)),
            "daemonID": daemon,
        });
        if let Some(v) = verifier {
            spec["verifier"] = json!(v);
        }
        put(
            store.as_ref(),
            json!({
                "apiVersion": "auth.riptides.io/v1alpha1",
                "kind": "JoinToken",
                "metadata": { "name": tok },
                "spec": spec,
            }),
        )
        .await;
        let a = attestor
            .attest(
                "127.0.0.1",
                &AttestationProof::JoinToken(format!("{tok}.{SECRET}")),
                &csr_for(None),
                BTreeMap::new(),
                t(1),
            )
            .await
            .unwrap();
        ids.push(a.spiffe_id);
    }
    put(
        store.as_ref(),
        identity("web", DEFAULT_NAMESPACE, "web", json!({ "daemon": { "id": "node-a" } }), Some("10m")),
    )
    .await;
    put(store.as_ref(), identity("batch", "jobs", "jobs/batch", json!({ "daemonGroup": { "id": "edge" } }), None))
        .await;
    put(store.as_ref(), identity("db", DEFAULT_NAMESPACE, "db", json!({ "daemon": { "id": "node-b" } }), None)).await;
    let authorizer = Arc::new(Authorizer::new(store.clone(), pool.clone(), AuthorizerConfig::default()));
    let b = ids.pop().unwrap();
    let a = ids.pop().unwrap();
    Env { _dir: dir, store, authorizer, pool, a, b }
}

fn unauthorized(r: Result<SpiffeId, AttestError>, what: &str) {
    match r {
        Err(AttestError::Unauthorized(msg)) => assert!(!msg.is_empty()),
        other => panic!("{what}: expected Unauthorized, got {other:?}"),
    }
}

#[tokio::test]
async fn authorization_by_daemon_id_and_by_group() {
    let e = env().await;
    assert_eq!(e.a.as_str(), "spiffe://example.org/riptides/daemon/node-a");
    let z = &e.authorizer;
    assert_eq!(z.authorize_workload(&e.a, "web").await.unwrap(), id("spiffe://example.org/web"));
    assert_eq!(z.authorize_workload(&e.a, "/web").await.unwrap(), id("spiffe://example.org/web"));
    assert_eq!(z.authorize_workload(&e.a, "spiffe://example.org/web").await.unwrap(), id("spiffe://example.org/web"));
    // By group, from a WorkloadIdentity in another namespace.
    assert_eq!(z.authorize_workload(&e.a, "jobs/batch").await.unwrap(), id("spiffe://example.org/jobs/batch"));
    assert_eq!(z.authorize_workload(&e.b, "db").await.unwrap(), id("spiffe://example.org/db"));
}

#[tokio::test]
async fn everything_else_is_refused() {
    let e = env().await;
    let z = &e.authorizer;
    // Another daemon's identities.
    unauthorized(z.authorize_workload(&e.b, "web").await, "b asks for a's web");
    unauthorized(z.authorize_workload(&e.a, "db").await, "a asks for b's db");
    // Group scope does not cover a daemon outside the group.
    unauthorized(z.authorize_workload(&e.b, "jobs/batch").await, "b is not in edge");
    // No such identity, malformed IDs, other trust domains.
    unauthorized(z.authorize_workload(&e.a, "nope").await, "unknown workload ID");
    unauthorized(z.authorize_workload(&e.a, "a//b").await, "malformed");
    unauthorized(z.authorize_workload(&e.a, "spiffe://other.org/web").await, "foreign td");
    // Daemon identities are never workload identities, not even its own.
    unauthorized(z.authorize_workload(&e.a, "riptides/daemon/node-b").await, "other daemon's id");
    unauthorized(z.authorize_workload(&e.a, "riptides/daemon/node-a").await, "own daemon id");
    // Callers that are not registered daemons.
    let ghost = id("spiffe://example.org/riptides/daemon/ghost");
    unauthorized(z.authorize_workload(&ghost, "web").await, "unregistered daemon");
    let foreign = id("spiffe://other.org/riptides/daemon/node-a");
    unauthorized(z.authorize_workload(&foreign, "web").await, "foreign daemon");

    // A Daemon object whose recorded SPIFFE ID differs does not vouch for the caller.
    put(
        e.store.as_ref(),
        json!({
            "apiVersion": "core.riptides.io/v1alpha1",
            "kind": "Daemon",
            "metadata": { "name": "node-c" },
            "spec": { "id": "node-a", "spiffeID": "spiffe://example.org/somebody/else" },
        }),
    )
    .await;
    let c = id("spiffe://example.org/riptides/daemon/node-c");
    unauthorized(z.authorize_workload(&c, "web").await, "mismatched Daemon object");

    // sign_workload refuses the same way and signs nothing.
    let err = z.sign_workload(&e.b, "web", &csr_for(None), None, t(10)).await.unwrap_err();
    assert!(matches!(err, AttestError::Unauthorized(_)), "{err}");
}

#[tokio::test]
async fn sign_workload_uses_the_identity_ttl() {
    let e = env().await;
    let z = &e.authorizer;
    let now = t(100);
    let svid = z.sign_workload(&e.a, "web", &csr_for(None), None, now).await.unwrap();
    assert_eq!(svid.spiffe_id, id("spiffe://example.org/web"));
    assert_eq!(svid.not_after, now + Duration::from_secs(600), "ttl from spec.svid.x509.ttl");

    let svid = z
        .sign_workload(&e.a, "web", &csr_for(Some("spiffe://example.org/web")), Some(Duration::from_secs(300)), now)
        .await
        .unwrap();
    assert_eq!(svid.not_after, now + Duration::from_secs(300), "shorter request honoured");

    let svid = z.sign_workload(&e.a, "web", &csr_for(None), Some(Duration::from_secs(7200)), now).await.unwrap();
    assert_eq!(svid.not_after, now + Duration::from_secs(600), "capped by the identity's ttl");

    // No ttl on the identity: the CA default (1 h).
    let svid = z.sign_workload(&e.a, "jobs/batch", &csr_for(None), None, now).await.unwrap();
    assert_eq!(svid.not_after, now + Duration::from_secs(3600));

    // A CSR naming another ID, or garbage, is an invalid CSR.
    let err = z.sign_workload(&e.a, "web", &csr_for(Some("spiffe://example.org/db")), None, now).await.unwrap_err();
    assert!(matches!(err, AttestError::InvalidCsr(_)), "{err}");
    let err = z.sign_workload(&e.a, "web", b"junk", None, now).await.unwrap_err();
    assert!(matches!(err, AttestError::InvalidCsr(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signing_pool_bounds_concurrency() {
    let e = env().await;
    let csr = Arc::new(csr_for(None));
    let mut tasks = Vec::new();
    for i in 0..48 {
        let z = e.authorizer.clone();
        let csr = csr.clone();
        let daemon = if i % 2 == 0 { e.a.clone() } else { e.b.clone() };
        let path = if i % 2 == 0 { "web" } else { "db" };
        tasks.push(tokio::spawn(async move { z.sign_workload(&daemon, path, &csr, None, t(10)).await }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert!(e.pool.peak_in_flight() >= 1);
    assert!(e.pool.peak_in_flight() <= POOL, "peak {} exceeds the pool size {POOL}", e.pool.peak_in_flight());
    assert_eq!(e.pool.in_flight(), 0);
}
