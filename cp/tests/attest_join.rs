//! Daemon attestation with join tokens against a real redb store and CA: success, replay
//! (sequential and concurrent), refusals that must not consume the token, rate limiting.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, KeyPair, SanType};
use riptides_cp::attest::{
    hash_secret, AttestError, AttestationProof, Attestor, AttestorConfig, BucketConfig, RateLimitConfig, SigningPool,
};
use riptides_cp::ca::{Ca, CaConfig};
use riptides_cp::store::{ObjectKey, RedbStore, Store};
use riptides_wire::resource::{self, ValidationContext, DEFAULT_NAMESPACE};
use riptides_wire::spiffe::TrustDomain;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use serde_json::{json, Value};

const EPOCH: u64 = 1_750_000_000;
const SECRET: &str = "5ecret5ecret5ecret5ecret5ecret5ecret5ecret5ecret5ecret5ecret0000";

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(EPOCH + secs)
}

fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

struct Env {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    ca: Arc<Ca>,
    attestor: Arc<Attestor>,
}

fn env(config: AttestorConfig) -> Env {
    let _ = tracing_subscriber::fmt().with_env_filter("warn,riptides_cp=debug").with_test_writer().try_init();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("store.redb")).unwrap());
    let ca = Arc::new(Ca::open(dir.path().join("ca"), CaConfig::new(td()), t(0)).unwrap());
    let pool = Arc::new(SigningPool::new(ca.clone(), 4));
    let attestor = Arc::new(Attestor::new(store.clone(), pool, config));
    Env { _dir: dir, store, ca, attestor }
}

fn unlimited() -> AttestorConfig {
    AttestorConfig { rate_limit: RateLimitConfig::unlimited(), ..AttestorConfig::default() }
}

fn key(kind: &str, name: &str) -> ObjectKey {
    let rt = resource::by_name(kind).unwrap();
    ObjectKey::new(rt.store_key(), DEFAULT_NAMESPACE, name)
}

/// Stores an object the way the API server does: validated, normalised, no resourceVersion.
async fn put(store: &dyn Store, object: Value) {
    let ctx = ValidationContext { trust_domain: td() };
    let (rt, mut v) = resource::validate_object(&object, &ctx).unwrap();
    v["metadata"]["uid"] = json!("00000000-0000-4000-8000-000000000000");
    v["metadata"]["creationTimestamp"] = json!(riptides_cp::api::rfc3339(t(0)));
    v["metadata"]["generation"] = json!(1);
    let name = v["metadata"]["name"].as_str().unwrap().to_owned();
    let k = ObjectKey::new(rt.store_key(), DEFAULT_NAMESPACE, name);
    store.create(&k, serde_json::to_vec(&v).unwrap()).await.unwrap();
}

async fn get(store: &dyn Store, kind: &str, name: &str) -> Option<Value> {
    let obj = store.get(&key(kind, name)).await.unwrap()?;
    Some(serde_json::from_slice(&obj.value).unwrap())
}

/// Creates a JoinToken object as `riptides token create` does; returns the token text.
async fn token(
    store: &dyn Store,
    name: &str,
    expires: SystemTime,
    verifier: Option<&str>,
    daemon_id: Option<&str>,
) -> String {
    let mut spec = json!({
        "tokenHash": hash_secret(SECRET),
        "expiresAt": riptides_cp::api::rfc3339(expires),
    });
    if let Some(v) = verifier {
        spec["verifier"] = json!(v);
    }
    if let Some(d) = daemon_id {
        spec["daemonID"] = json!(d);
    }
    put(
        store,
        json!({
            "apiVersion": "auth.riptides.io/v1alpha1",
            "kind": "JoinToken",
            "metadata": { "name": name, "namespace": DEFAULT_NAMESPACE },
            "spec": spec,
        }),
    )
    .await;
    format!("{name}.{SECRET}")
}

fn proof(token: &str) -> AttestationProof {
    AttestationProof::JoinToken(token.to_owned())
}

fn csr() -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    CertificateParams::default().serialize_request(&key).unwrap().der().to_vec()
}

fn host() -> BTreeMap<String, String> {
    BTreeMap::from([("hostname".to_owned(), "node-a.example".to_owned())])
}

async fn assert_unused(store: &dyn Store, name: &str) {
    let v = get(store, "jointoken", name).await.expect("token still exists");
    assert!(!v["status"]["used"].as_bool().unwrap_or(false), "token {name} must not be consumed: {v}");
}

fn verifies(leaf: &CertificateDer<'static>, roots: &[CertificateDer<'static>], at: SystemTime) -> bool {
    let mut store = rustls::RootCertStore::empty();
    store.add_parsable_certificates(roots.iter().cloned());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider).build().unwrap();
    let now = UnixTime::since_unix_epoch(at.duration_since(UNIX_EPOCH).unwrap());
    verifier.verify_client_cert(leaf, &[], now).is_ok()
}

#[tokio::test]
async fn attestation_registers_the_daemon_and_returns_a_chaining_svid() {
    let e = env(unlimited());
    let tok = token(e.store.as_ref(), "tok1", t(3600), None, None).await;

    let a = e.attestor.attest("10.0.0.1", &proof(&tok), &csr(), host(), t(10)).await.unwrap();

    // A generated id, the default template, and an SVID for exactly that ID.
    assert!(a.daemon_id.starts_with("d-") && a.daemon_id.len() == 12, "{}", a.daemon_id);
    let want = format!("spiffe://example.org/riptides/daemon/{}", a.daemon_id);
    assert_eq!(a.spiffe_id.as_str(), want);
    assert_eq!(a.svid.spiffe_id, a.spiffe_id);
    assert_eq!(a.bundle, e.ca.bundle());
    assert!(verifies(&a.svid.leaf, &a.bundle.roots(), t(20)));

    // The Daemon resource.
    let d = get(e.store.as_ref(), "daemon", &a.daemon_id).await.expect("Daemon created");
    assert_eq!(d["kind"], "Daemon");
    assert_eq!(d["spec"]["id"], a.daemon_id.as_str());
    assert_eq!(d["spec"]["spiffeID"], want.as_str());
    assert_eq!(d["spec"]["verifier"], "default");
    assert!(d["spec"].get("group").is_none());
    assert_eq!(d["status"]["host"]["hostname"], "node-a.example");
    assert!(d["metadata"]["uid"].is_string());
    assert!(d["metadata"].get("resourceVersion").is_none());

    // The token is spent, by this daemon.
    let tk = get(e.store.as_ref(), "jointoken", "tok1").await.unwrap();
    assert_eq!(tk["status"]["used"], true);
    assert_eq!(tk["status"]["usedBy"], a.daemon_id.as_str());
    assert_eq!(tk["status"]["usedAt"], riptides_cp::api::rfc3339(t(10)).as_str());
}

#[tokio::test]
async fn verifier_sets_group_template_and_daemon_id() {
    let e = env(unlimited());
    put(
        e.store.as_ref(),
        json!({
            "apiVersion": "auth.riptides.io/v1alpha1",
            "kind": "Verifier",
            "metadata": { "name": "edge" },
            "spec": {
                "method": "joinToken",
                "workloadIDTemplate": "riptides/daemon/{{id}}",
                "daemonGroup": "edge",
            },
        }),
    )
    .await;
    let tok = token(e.store.as_ref(), "tok2", t(3600), Some("edge"), Some("node-a")).await;
    let a = e.attestor.attest("10.0.0.1", &proof(&tok), &csr(), host(), t(10)).await.unwrap();
    assert_eq!(a.daemon_id, "node-a");
    assert_eq!(a.spiffe_id.as_str(), "spiffe://example.org/riptides/daemon/node-a");
    let d = get(e.store.as_ref(), "daemon", "node-a").await.unwrap();
    assert_eq!(d["spec"]["group"], "edge");
    assert_eq!(d["spec"]["verifier"], "edge");
    let uid = d["metadata"]["uid"].clone();

    // Re-attesting the same daemon id with a new token updates the object in place.
    let tok = token(e.store.as_ref(), "tok3", t(3600), Some("edge"), Some("node-a")).await;
    let mut h = host();
    h.insert("os".into(), "linux".into());
    e.attestor.attest("10.0.0.1", &proof(&tok), &csr(), h, t(20)).await.unwrap();
    let d = get(e.store.as_ref(), "daemon", "node-a").await.unwrap();
    assert_eq!(d["metadata"]["uid"], uid);
    assert_eq!(d["metadata"]["generation"], 1, "spec unchanged");
    assert_eq!(d["status"]["host"]["os"], "linux");

    // A custom template with the token claim.
    put(
        e.store.as_ref(),
        json!({
            "apiVersion": "auth.riptides.io/v1alpha1",
            "kind": "Verifier",
            "metadata": { "name": "lab" },
            "spec": { "method": "joinToken", "workloadIDTemplate": "lab/{{token}}/{{ id }}" },
        }),
    )
    .await;
    let tok = token(e.store.as_ref(), "tok4", t(3600), Some("lab"), Some("n1")).await;
    let a = e.attestor.attest("10.0.0.1", &proof(&tok), &csr(), host(), t(10)).await.unwrap();
    assert_eq!(a.spiffe_id.as_str(), "spiffe://example.org/lab/tok4/n1");
}

#[tokio::test]
async fn missing_verifier_is_refused_without_consuming_the_token() {
    let e = env(unlimited());
    let tok = token(e.store.as_ref(), "tok5", t(3600), Some("nope"), None).await;
    let err = e.attestor.attest("10.0.0.1", &proof(&tok), &csr(), host(), t(10)).await.unwrap_err();
    assert!(matches!(err, AttestError::Misconfigured(_)), "{err}");
    assert_unused(e.store.as_ref(), "tok5").await;
}

#[tokio::test]
async fn replay_is_refused() {
    let e = env(unlimited());
    let tok = token(e.store.as_ref(), "tok6", t(3600), None, None).await;
    e.attestor.attest("10.0.0.1", &proof(&tok), &csr(), host(), t(10)).await.unwrap();
    let err = e.attestor.attest("10.0.0.2", &proof(&tok), &csr(), host(), t(11)).await.unwrap_err();
    assert!(matches!(err, AttestError::TokenUsed), "{err}");
    assert_eq!(err.code(), "token_used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_replay_admits_exactly_one() {
    let e = env(unlimited());
    let tok = token(e.store.as_ref(), "tok7", t(3600), None, None).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let attestor = e.attestor.clone();
        let tok = tok.clone();
        tasks.push(tokio::spawn(async move {
            attestor.attest(&format!("10.0.0.{i}"), &proof(&tok), &csr(), host(), t(10)).await
        }));
    }
    let mut ok = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(a) => ok.push(a),
            Err(AttestError::TokenUsed) => {}
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(ok.len(), 1, "exactly one attempt may use the token");
    // And exactly one Daemon exists: the losers left nothing behind.
    let rt = resource::by_name("daemon").unwrap();
    let (daemons, _) = e.store.list(&rt.store_key(), None).await.unwrap();
    assert_eq!(daemons.len(), 1);
    assert_eq!(daemons[0].key.name, ok[0].daemon_id);
    let tk = get(e.store.as_ref(), "jointoken", "tok7").await.unwrap();
    assert_eq!(tk["status"]["usedBy"], ok[0].daemon_id.as_str());
}

#[tokio::test]
async fn bad_tokens_are_refused_without_consuming_anything() {
    let e = env(unlimited());
    let tok = token(e.store.as_ref(), "tok8", t(3600), None, None).await;
    let expired = token(e.store.as_ref(), "tok9", t(100), None, None).await;

    let cases = [
        ("unknown", "nosuchtoken.".to_owned() + SECRET),
        ("wrong secret", "tok8.not-the-secret".to_owned()),
        ("malformed", "tok8".to_owned()),
        ("empty", String::new()),
    ];
    for (what, text) in cases {
        let err = e.attestor.attest("10.0.0.1", &proof(&text), &csr(), host(), t(10)).await.unwrap_err();
        assert!(matches!(err, AttestError::InvalidToken), "{what}: {err}");
        assert!(!err.to_string().contains(SECRET), "{what}: message leaks the secret");
    }
    let err = e.attestor.attest("10.0.0.1", &proof(&expired), &csr(), host(), t(100)).await.unwrap_err();
    assert!(matches!(err, AttestError::TokenExpired), "{err}");

    assert_unused(e.store.as_ref(), "tok8").await;
    assert_unused(e.store.as_ref(), "tok9").await;
    let rt = resource::by_name("daemon").unwrap();
    assert!(e.store.list(&rt.store_key(), None).await.unwrap().0.is_empty());

    // The good token still works afterwards.
    e.attestor.attest("10.0.0.1", &proof(&tok), &csr(), host(), t(10)).await.unwrap();
}

#[tokio::test]
async fn a_bad_csr_does_not_burn_the_token() {
    let e = env(unlimited());
    let tok = token(e.store.as_ref(), "tok10", t(3600), Some("default"), Some("node-x")).await;

    let garbage = b"definitely not a CSR".to_vec();
    let err = e.attestor.attest("10.0.0.1", &proof(&tok), &garbage, host(), t(10)).await.unwrap_err();
    assert!(matches!(err, AttestError::InvalidCsr(_)), "{err}");
    assert_unused(e.store.as_ref(), "tok10").await;

    // A CSR asking for someone else's ID is refused the same way.
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::URI("spiffe://example.org/riptides/daemon/other".try_into().unwrap())];
    let other = p.serialize_request(&key).unwrap().der().to_vec();
    let err = e.attestor.attest("10.0.0.1", &proof(&tok), &other, host(), t(10)).await.unwrap_err();
    assert!(matches!(err, AttestError::InvalidCsr(_)), "{err}");
    assert_unused(e.store.as_ref(), "tok10").await;
    assert!(get(e.store.as_ref(), "daemon", "node-x").await.is_none());

    let a = e.attestor.attest("10.0.0.1", &proof(&tok), &csr(), host(), t(10)).await.unwrap();
    assert_eq!(a.daemon_id, "node-x");
}

#[tokio::test]
async fn rate_limit_refuses_bursts_and_recovers() {
    let e = env(AttestorConfig {
        rate_limit: RateLimitConfig {
            per_source: BucketConfig { burst: 3, per_second: 1.0 },
            global: BucketConfig { burst: 5, per_second: 1.0 },
            max_sources: 100,
        },
        ..AttestorConfig::default()
    });
    let tok = token(e.store.as_ref(), "tok11", t(3600), None, None).await;
    let bogus = proof("tok11.wrong");

    for _ in 0..3 {
        let err = e.attestor.attest("10.0.0.1", &bogus, &csr(), host(), t(10)).await.unwrap_err();
        assert!(matches!(err, AttestError::InvalidToken), "{err}");
    }
    // The burst is spent: even the valid token is refused, and not consumed.
    let err = e.attestor.attest("10.0.0.1", &proof(&tok), &csr(), host(), t(10)).await.unwrap_err();
    let AttestError::RateLimited { retry_after } = err else {
        panic!("expected rate limiting, got {err}");
    };
    assert!(retry_after <= Duration::from_secs(1));
    assert_unused(e.store.as_ref(), "tok11").await;

    // Another source still has its own allowance (global: 5 - 3 = 2 left).
    for _ in 0..2 {
        let err = e.attestor.attest("10.0.0.2", &bogus, &csr(), host(), t(10)).await.unwrap_err();
        assert!(matches!(err, AttestError::InvalidToken), "{err}");
    }
    // ...until the global bucket is empty.
    let err = e.attestor.attest("10.0.0.3", &bogus, &csr(), host(), t(10)).await.unwrap_err();
    assert!(matches!(err, AttestError::RateLimited { .. }), "{err}");

    // A second later both buckets have refilled enough for one attempt.
    e.attestor.attest("10.0.0.1", &proof(&tok), &csr(), host(), t(11)).await.unwrap();
}
