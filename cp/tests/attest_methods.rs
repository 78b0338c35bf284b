//! Attestation methods beyond join tokens against a real redb store and CA, with proofs the
//! tests make themselves: accepted proofs, and refusals for a wrong signature, wrong audience,
//! expiry, replay (trust on first use), missing required claims, templates that yield invalid
//! IDs, and oversized or garbage input.

#[path = "attest_support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use riptides_cp::attest::{AttestError, AttestationProof, Attestor, AttestorConfig, RateLimitConfig, SigningPool};
use riptides_cp::ca::{Ca, CaConfig};
use riptides_cp::store::{ObjectKey, RedbStore, Store};
use riptides_wire::proto::messages::challenge_payload;
use riptides_wire::resource::{self, ValidationContext, DEFAULT_NAMESPACE};
use riptides_wire::spiffe::TrustDomain;
use serde_json::{json, Value};
use support::*;

fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

struct Env {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    attestor: Arc<Attestor>,
}

fn env() -> Env {
    let _ = tracing_subscriber::fmt().with_env_filter("warn,riptides_cp=debug").with_test_writer().try_init();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("store.redb")).unwrap());
    let ca = Arc::new(Ca::open(dir.path().join("ca"), CaConfig::new(td()), SystemTime::now()).unwrap());
    let pool = Arc::new(SigningPool::new(ca, 4));
    let config = AttestorConfig { rate_limit: RateLimitConfig::unlimited(), ..AttestorConfig::default() };
    let attestor = Arc::new(Attestor::new(store.clone(), pool, config));
    Env { _dir: dir, store, attestor }
}

fn validate(object: &Value) -> Result<Value, Vec<String>> {
    let ctx = ValidationContext { trust_domain: td() };
    resource::validate_object(object, &ctx).map(|(_, v)| v).map_err(|e| e.iter().map(ToString::to_string).collect())
}

fn verifier(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "auth.riptides.io/v1alpha1",
        "kind": "Verifier",
        "metadata": { "name": name, "namespace": DEFAULT_NAMESPACE },
        "spec": spec,
    })
}

impl Env {
    async fn put(&self, object: Value) {
        let mut v = validate(&object).unwrap_or_else(|e| panic!("invalid test object: {e:?}"));
        v["metadata"]["uid"] = json!("00000000-0000-4000-8000-000000000000");
        v["metadata"]["generation"] = json!(1);
        let rt = resource::by_name(v["kind"].as_str().unwrap()).unwrap();
        let k = ObjectKey::new(rt.store_key(), DEFAULT_NAMESPACE, v["metadata"]["name"].as_str().unwrap());
        self.store.create(&k, serde_json::to_vec(&v).unwrap()).await.unwrap();
    }

    async fn daemon(&self, id: &str) -> Option<Value> {
        let rt = resource::by_name("daemons").unwrap();
        let obj = self.store.get(&ObjectKey::new(rt.store_key(), DEFAULT_NAMESPACE, id)).await.unwrap()?;
        Some(serde_json::from_slice(&obj.value).unwrap())
    }

    async fn delete_daemon(&self, id: &str) {
        let rt = resource::by_name("daemons").unwrap();
        self.store.delete(&ObjectKey::new(rt.store_key(), DEFAULT_NAMESPACE, id), None).await.unwrap();
    }

    async fn attest(&self, proof: &AttestationProof, csr: &[u8]) -> Result<riptides_cp::attest::Attested, AttestError> {
        self.attestor.attest("10.0.0.1", proof, csr, BTreeMap::new(), SystemTime::now()).await
    }
}

fn check_of(e: &AttestError) -> String {
    match e {
        AttestError::InvalidProof { check, .. } => check.clone(),
        other => panic!("expected an invalid proof, got {other:?}"),
    }
}

fn jwt(token: &str) -> AttestationProof {
    AttestationProof::Jwt { verifier: None, token: token.to_owned() }
}

#[tokio::test]
async fn github_actions_preset_and_generic_jwt() {
    let e = env();
    let gh = Issuer::es256("https://token.actions.githubusercontent.com");
    e.put(verifier(
        "github",
        json!({
            "method": "GitHubActions",
            "workloadIDTemplate": "riptides/daemon/gha/{{repository}}/{{id}}",
            "requiredMetadata": { "repository": "acme/app", "ref": "refs/heads/main" },
            "jwt": { "jwks": gh.jwks(), "audiences": ["riptides"] },
        }),
    ))
    .await;
    let claims = |repo: &str, r#ref: &str, run: u64| {
        json!({"aud": "riptides", "sub": format!("repo:{repo}:ref:{}", r#ref), "repository": repo, "ref": r#ref,
               "run_id": run.to_string(), "run_attempt": "1", "workflow": "ci"})
    };
    let (csr1, _) = csr();
    let token = gh.token(claims("acme/app", "refs/heads/main", 1));
    let a = e.attest(&jwt(&token), &csr1).await.unwrap();
    assert!(
        a.spiffe_id.as_str().starts_with("spiffe://example.org/riptides/daemon/gha/acme/app/gha-"),
        "{}",
        a.spiffe_id
    );
    let d = e.daemon(&a.daemon_id).await.unwrap();
    assert_eq!(d["spec"]["verifier"], "github");
    assert_eq!(d["status"]["attestation"]["method"], "GitHubActions");

    // Same token, same key: an idempotent retry. Same token, another key: a replay.
    let again = e.attest(&jwt(&token), &csr1).await.unwrap();
    assert_eq!(again.daemon_id, a.daemon_id);
    let (csr2, _) = csr();
    let err = e.attest(&jwt(&token), &csr2).await.unwrap_err();
    assert_eq!(check_of(&err), "replay", "{err}");
    // A new token of the same run re-attests the same daemon (bearer tokens may re-attest).
    let fresh = gh.token(json!({"aud": "riptides", "repository": "acme/app", "ref": "refs/heads/main",
                                "run_id": "1", "run_attempt": "1", "jti": "second"}));
    assert_eq!(e.attest(&jwt(&fresh), &csr2).await.unwrap().daemon_id, a.daemon_id);

    // Refusals, each naming its check, none echoing the token.
    let (csr3, _) = csr();
    let cases: Vec<(&str, String)> = vec![
        ("requiredMetadata", gh.token(claims("evil/app", "refs/heads/main", 2))),
        (
            "requiredMetadata",
            gh.token(json!({"aud": "riptides", "repository": "acme/app", "run_id": "3", "run_attempt": "1"})),
        ),
        (
            "audience",
            gh.token({
                let mut c = claims("acme/app", "refs/heads/main", 4);
                c["aud"] = json!("other");
                c
            }),
        ),
        (
            "exp",
            gh.token({
                let mut c = claims("acme/app", "refs/heads/main", 5);
                c["exp"] = json!(now_unix() - 600);
                c
            }),
        ),
        (
            "issuer",
            gh.token({
                let mut c = claims("acme/app", "refs/heads/main", 6);
                c["iss"] = json!("https://evil");
                c
            }),
        ),
        // Another key (same kid when made in the same second: then the signature fails).
        ("signature", Issuer::es256(&gh.iss).token(claims("acme/app", "refs/heads/main", 7))),
        ("format", "not-a-jwt".to_owned()),
        ("size", "a".repeat(20_000)),
    ];
    for (want, tok) in cases {
        let err = e.attest(&jwt(&tok), &csr3).await.unwrap_err();
        let got = match &err {
            AttestError::InvalidProof { check, .. } => check.clone(),
            other => format!("{other:?}"),
        };
        // A different key has a different kid unless it collides: then "signature", else "key".
        assert!(got == want || (want == "signature" && got == "key"), "want {want}, got {err}");
        if tok.len() > 40 {
            let tail = &tok[tok.len() - 40..];
            assert!(!err.to_string().contains(tail), "error echoes the token: {err}");
        }
    }

    // Generic JWT: the template renders `sub`, which holds ':' — not a valid SPIFFE path.
    let other = Issuer::es256("https://issuer.example");
    e.put(verifier(
        "generic",
        json!({
            "method": "JWT",
            "workloadIDTemplate": "riptides/daemon/jwt/{{sub}}",
            "jwt": { "issuer": "https://issuer.example", "jwks": other.jwks(), "audiences": ["cp"] },
        }),
    ))
    .await;
    let tok = other.token(json!({"aud": "cp", "sub": "system:node:one"}));
    let proof = AttestationProof::Jwt { verifier: Some("generic".into()), token: tok };
    let err = e.attest(&proof, &csr3).await.unwrap_err();
    assert!(matches!(err, AttestError::Misconfigured(ref m) if m.contains("not a valid SPIFFE path")), "{err}");
    // A verifier that does not exist, or of another method.
    let named = |v: &str| AttestationProof::Jwt { verifier: Some(v.into()), token: "x.y.z".into() };
    let err = e.attest(&named("nope"), &csr3).await.unwrap_err();
    assert!(matches!(err, AttestError::Unauthorized(ref m) if m.contains("no Verifier")), "{err}");
    let err = e.attest(&AttestationProof::K8sSat { verifier: Some("generic".into()), token: "x".into() }, &csr3).await;
    assert!(matches!(err, Err(AttestError::Unauthorized(ref m)) if m.contains("admits method JWT")), "{err:?}");
    // Two verifiers accept JWTs: an unnamed proof is refused.
    let err = e.attest(&jwt(&other.token(json!({"aud": "cp", "sub": "x"}))), &csr3).await.unwrap_err();
    assert!(matches!(err, AttestError::Unauthorized(ref m) if m.contains("must name one")), "{err}");
}

#[tokio::test]
async fn kubernetes_service_account_tokens() {
    let e = env();
    let k8s = Issuer::es256("https://kubernetes.default.svc.cluster.local");
    e.put(verifier(
        "k8s",
        json!({
            "method": "K8sSAT",
            "workloadIDTemplate": "riptides/daemon/k8s/{{cluster}}/{{node_name}}/{{namespace}}/{{service_account}}",
            "k8sSAT": { "cluster": "prod", "issuer": k8s.iss, "jwks": k8s.jwks(), "audiences": ["riptides-cp"],
                        "serviceAccounts": ["riptides:daemon"] },
        }),
    ))
    .await;
    let claims = |ns: &str, sa: &str, node: Option<&str>| {
        let mut k = json!({"namespace": ns, "serviceaccount": {"name": sa, "uid": "sa-uid"}, "pod": {"name": "riptides-x", "uid": "pod-uid"}});
        if let Some(n) = node {
            k["node"] = json!({"name": n, "uid": "node-uid"});
        }
        json!({"aud": ["riptides-cp"], "sub": format!("system:serviceaccount:{ns}:{sa}"), "kubernetes.io": k})
    };
    let p = |t: String| AttestationProof::K8sSat { verifier: None, token: t };
    let (csr1, _) = csr();
    let a = e.attest(&p(k8s.token(claims("riptides", "daemon", Some("node-1")))), &csr1).await.unwrap();
    assert_eq!(a.daemon_id, "k8s-prod-node-1");
    assert_eq!(a.spiffe_id.as_str(), "spiffe://example.org/riptides/daemon/k8s/prod/node-1/riptides/daemon");
    let err = e.attest(&p(k8s.token(claims("default", "default", Some("node-1")))), &csr1).await.unwrap_err();
    assert_eq!(check_of(&err), "serviceAccount");
    let err = e.attest(&p(k8s.token(claims("riptides", "daemon", None))), &csr1).await.unwrap_err();
    assert_eq!(check_of(&err), "node");
    let mut wrong_aud = claims("riptides", "daemon", Some("node-1"));
    wrong_aud["aud"] = json!(["https://kubernetes.default.svc"]);
    assert_eq!(check_of(&e.attest(&p(k8s.token(wrong_aud)), &csr1).await.unwrap_err()), "audience");
    // A legacy (non-projected) token has no kubernetes.io claim.
    let legacy = k8s.token(json!({"aud": "riptides-cp", "sub": "system:serviceaccount:riptides:daemon"}));
    assert_eq!(check_of(&e.attest(&p(legacy), &csr1).await.unwrap_err()), "kubernetes.io");
    // A new token re-attests the same node's daemon.
    let (csr2, _) = csr();
    assert_eq!(
        e.attest(&p(k8s.token(claims("riptides", "daemon", Some("node-1")))), &csr2).await.unwrap().daemon_id,
        a.daemon_id
    );
}

#[tokio::test]
async fn gcp_instance_identity_tokens_are_trusted_on_first_use() {
    let e = env();
    let google = Issuer::rs256("https://accounts.google.com");
    e.put(verifier(
        "gcp",
        json!({
            "method": "GCPIIT",
            "workloadIDTemplate": "riptides/daemon/gcp/{{project_id}}/{{zone}}/{{instance_name}}",
            "gcpIIT": { "jwks": google.jwks(), "audience": "riptides-cp", "projects": ["acme-prod"] },
        }),
    ))
    .await;
    let claims = |project: &str, instance: u64| {
        json!({"aud": "riptides-cp", "sub": "1234", "email": "vm@acme.iam.gserviceaccount.com",
               "google": {"compute_engine": {"project_id": project, "project_number": 99, "zone": "europe-west1-b",
                                             "instance_id": instance.to_string(), "instance_name": "vm-1"}}})
    };
    let p = |t: String| AttestationProof::GcpIit { verifier: None, token: t };
    let (csr1, _) = csr();
    let tok = google.token(claims("acme-prod", 777));
    let a = e.attest(&p(tok.clone()), &csr1).await.unwrap();
    assert_eq!(a.daemon_id, "gcp-acme-prod-777");
    assert_eq!(a.spiffe_id.as_str(), "spiffe://example.org/riptides/daemon/gcp/acme-prod/europe-west1-b/vm-1");
    // Retry with the same key: same daemon. Any other key, even with a fresh token: refused.
    assert_eq!(e.attest(&p(tok), &csr1).await.unwrap().daemon_id, a.daemon_id);
    let (csr2, _) = csr();
    let err = e.attest(&p(google.token(claims("acme-prod", 777))), &csr2).await.unwrap_err();
    assert!(matches!(err, AttestError::AlreadyAttested(_)), "{err}");
    assert_eq!(check_of(&e.attest(&p(google.token(claims("evil", 1))), &csr2).await.unwrap_err()), "project");
    let no_ce = google.token(json!({"aud": "riptides-cp", "sub": "1"}));
    assert_eq!(check_of(&e.attest(&p(no_ce), &csr2).await.unwrap_err()), "compute_engine");
    // The operator evicts the daemon: the instance may attest again.
    e.delete_daemon(&a.daemon_id).await;
    e.attest(&p(google.token(claims("acme-prod", 777))), &csr2).await.unwrap();
}

#[tokio::test]
async fn aws_instance_identity_documents() {
    let e = env();
    let aws = AwsSigner::new();
    e.put(verifier(
        "aws",
        json!({
            "method": "AWSIID",
            "workloadIDTemplate": "riptides/daemon/aws/{{account}}/{{region}}/{{instance_id}}",
            "requiredMetadata": { "instance_type": "t3.micro" },
            "awsIID": { "certificates": aws.cert_pem, "accounts": ["123456789012"], "regions": ["eu-west-1"] },
        }),
    ))
    .await;
    let p =
        |doc: &str, sig: &str| AttestationProof::AwsIid { verifier: None, document: doc.into(), signature: sig.into() };
    let doc = AwsSigner::document("123456789012", "eu-west-1", "i-0abc");
    let sig = aws.sign(&doc);
    let (csr1, _) = csr();
    let a = e.attest(&p(&doc, &sig), &csr1).await.unwrap();
    assert_eq!(a.daemon_id, "aws-123456789012-eu-west-1-i-0abc");
    assert_eq!(a.spiffe_id.as_str(), "spiffe://example.org/riptides/daemon/aws/123456789012/eu-west-1/i-0abc");
    // Lost answer: the same key gets the same identity again.
    assert_eq!(e.attest(&p(&doc, &sig), &csr1).await.unwrap().daemon_id, a.daemon_id);
    // Replay by anyone else: trust on first use.
    let (csr2, _) = csr();
    assert!(matches!(e.attest(&p(&doc, &sig), &csr2).await.unwrap_err(), AttestError::AlreadyAttested(_)));

    let tampered = doc.replace("i-0abc", "i-0abd");
    assert_eq!(check_of(&e.attest(&p(&tampered, &sig), &csr2).await.unwrap_err()), "signature");
    let other_signer = AwsSigner::new();
    let d2 = AwsSigner::document("123456789012", "eu-west-1", "i-0new");
    assert_eq!(check_of(&e.attest(&p(&d2, &other_signer.sign(&d2)), &csr2).await.unwrap_err()), "signature");
    let d3 = AwsSigner::document("999999999999", "eu-west-1", "i-0x");
    assert_eq!(check_of(&e.attest(&p(&d3, &aws.sign(&d3)), &csr2).await.unwrap_err()), "account");
    let d4 = AwsSigner::document("123456789012", "us-east-1", "i-0x");
    assert_eq!(check_of(&e.attest(&p(&d4, &aws.sign(&d4)), &csr2).await.unwrap_err()), "region");
    let d5 = d2.replace("t3.micro", "m5.large");
    assert_eq!(check_of(&e.attest(&p(&d5, &aws.sign(&d5)), &csr2).await.unwrap_err()), "requiredMetadata");
    assert_eq!(check_of(&e.attest(&p(&doc, "!!garbage!!"), &csr2).await.unwrap_err()), "signature");
    assert_eq!(check_of(&e.attest(&p(&"x".repeat(20_000), &sig), &csr2).await.unwrap_err()), "size");
    let not_json = "not json";
    assert_eq!(check_of(&e.attest(&p(not_json, &aws.sign(not_json)), &csr2).await.unwrap_err()), "document");
    // A fresh instance attests.
    e.attest(&p(&d2, &aws.sign(&d2)), &csr2).await.unwrap();
}

#[tokio::test]
async fn x509_proof_of_possession() {
    let e = env();
    let ca = X509Ca::new("fleet CA");
    e.put(verifier(
        "x509",
        json!({
            "method": "X509CertPOP",
            "workloadIDTemplate": "riptides/daemon/x509/{{cn}}",
            "x509CertPOP": { "caBundle": ca.pem },
        }),
    ))
    .await;
    let nonce = vec![9u8; 32];
    let p = |leaf: &Leaf, sig: Vec<u8>, nonce: &[u8]| AttestationProof::X509Pop {
        verifier: Some("x509".into()),
        chain_der: leaf.chain_der.clone(),
        nonce: nonce.to_vec(),
        signature: sig,
    };
    let (csr1, key1) = csr();
    let leaf = ca.leaf("host-1");
    let sig = leaf.sign(&challenge_payload("X509CertPOP", &nonce, &key1));
    let a = e.attest(&p(&leaf, sig.clone(), &nonce), &csr1).await.unwrap();
    assert_eq!(a.spiffe_id.as_str(), "spiffe://example.org/riptides/daemon/x509/host-1");
    assert!(a.daemon_id.starts_with("x509-"));
    // Re-attestation with a fresh challenge is allowed.
    let (csr2, key2) = csr();
    let n2 = vec![1u8; 32];
    e.attest(&p(&leaf, leaf.sign(&challenge_payload("X509CertPOP", &n2, &key2)), &n2), &csr2).await.unwrap();

    // The signature answers another challenge, or was made for another CSR key.
    assert_eq!(check_of(&e.attest(&p(&leaf, sig.clone(), &n2), &csr1).await.unwrap_err()), "challenge");
    assert_eq!(check_of(&e.attest(&p(&leaf, sig.clone(), &nonce), &csr2).await.unwrap_err()), "challenge");
    // Someone else's key signs.
    let other = ca.leaf("host-2");
    let forged = other.sign(&challenge_payload("X509CertPOP", &nonce, &key1));
    assert_eq!(check_of(&e.attest(&p(&leaf, forged, &nonce), &csr1).await.unwrap_err()), "challenge");
    // Another CA, an expired leaf, garbage.
    let rogue = X509Ca::new("rogue").leaf("host-1");
    let s = rogue.sign(&challenge_payload("X509CertPOP", &nonce, &key1));
    assert_eq!(check_of(&e.attest(&p(&rogue, s, &nonce), &csr1).await.unwrap_err()), "chain");
    let now = now_unix() as i64;
    let old = ca.leaf_valid("host-1", now - 7200, now - 3600);
    let s = old.sign(&challenge_payload("X509CertPOP", &nonce, &key1));
    let err = e.attest(&p(&old, s, &nonce), &csr1).await.unwrap_err();
    assert_eq!(check_of(&err), "chain", "{err}");
    let garbage = AttestationProof::X509Pop {
        verifier: None,
        chain_der: vec![b"garbage".to_vec()],
        nonce: nonce.clone(),
        signature: sig,
    };
    assert_eq!(check_of(&e.attest(&garbage, &csr1).await.unwrap_err()), "chain");
    let too_many = AttestationProof::X509Pop {
        verifier: None,
        chain_der: vec![leaf.chain_der[0].clone(); 9],
        nonce,
        signature: vec![],
    };
    assert_eq!(check_of(&e.attest(&too_many, &csr1).await.unwrap_err()), "chain");
}

#[tokio::test]
async fn ssh_certificate_proof_of_possession() {
    let e = env();
    let ca = SshCa::new();
    e.put(verifier(
        "ssh",
        json!({
            "method": "SSHCertPOP",
            "workloadIDTemplate": "riptides/daemon/ssh/{{principal}}",
            "sshCertPOP": { "certAuthorities": [ca.line()], "principals": ["host-1.example.org"] },
        }),
    ))
    .await;
    let now = now_unix();
    let nonce = vec![3u8; 32];
    let p = |h: &SshHost, sig: Vec<u8>| AttestationProof::SshPop {
        verifier: None,
        certificate: h.cert_line.clone(),
        nonce: nonce.clone(),
        signature: sig,
    };
    let (csr1, key1) = csr();
    let payload = challenge_payload("SSHCertPOP", &nonce, &key1);
    let host = ca.host(&["host-1.example.org"], now - 60, now + 3600, 2);
    let a = e.attest(&p(&host, host.sign(&payload)), &csr1).await.unwrap();
    assert_eq!(a.spiffe_id.as_str(), "spiffe://example.org/riptides/daemon/ssh/host-1.example.org");

    let other_ca = SshCa::new().host(&["host-1.example.org"], now - 60, now + 3600, 2);
    assert_eq!(check_of(&e.attest(&p(&other_ca, other_ca.sign(&payload)), &csr1).await.unwrap_err()), "authority");
    let user = ca.host(&["host-1.example.org"], now - 60, now + 3600, 1);
    assert_eq!(check_of(&e.attest(&p(&user, user.sign(&payload)), &csr1).await.unwrap_err()), "certificate type");
    let expired = ca.host(&["host-1.example.org"], now - 7200, now - 3600, 2);
    assert_eq!(check_of(&e.attest(&p(&expired, expired.sign(&payload)), &csr1).await.unwrap_err()), "validity");
    let wrong = ca.host(&["other.example.org"], now - 60, now + 3600, 2);
    assert_eq!(check_of(&e.attest(&p(&wrong, wrong.sign(&payload)), &csr1).await.unwrap_err()), "principals");
    // The host key of another certificate signs the challenge.
    let thief = ca.host(&["x"], now - 60, now + 3600, 2);
    assert_eq!(check_of(&e.attest(&p(&host, thief.sign(&payload)), &csr1).await.unwrap_err()), "challenge");
    // A tampered certificate (another serial): the CA signature no longer verifies.
    let (kind, b64) = host.cert_line.split_once(' ').unwrap();
    let mut blob = STANDARD.decode(b64.split_whitespace().next().unwrap()).unwrap();
    let serial_at = 4 + 32 + 4 + 32 + 4 + 32; // type name, nonce, key
    blob[serial_at + 7] ^= 1;
    let tampered = AttestationProof::SshPop {
        verifier: None,
        certificate: format!("{kind} {}", STANDARD.encode(&blob)),
        nonce: nonce.clone(),
        signature: host.sign(&payload),
    };
    assert_eq!(check_of(&e.attest(&tampered, &csr1).await.unwrap_err()), "signature");
    let garbage = AttestationProof::SshPop {
        verifier: None,
        certificate: "ssh-ed25519-cert-v01@openssh.com AAAA".into(),
        nonce: nonce.clone(),
        signature: vec![],
    };
    assert_eq!(check_of(&e.attest(&garbage, &csr1).await.unwrap_err()), "certificate");
}

#[test]
fn verifier_validation_names_the_field() {
    let gh = Issuer::es256("https://token.actions.githubusercontent.com");
    let errs = |spec: Value| validate(&verifier("v", spec)).unwrap_err().join("; ");
    let e = errs(json!({"method": "GitHubActions", "jwt": {"jwks": gh.jwks(), "audiences": ["a"]}}));
    assert!(e.contains("spec.requiredMetadata") && e.contains("any workflow"), "{e}");
    let e = errs(json!({"method": "AWSIID"}));
    assert!(e.contains("spec.awsIID: is required"), "{e}");
    let e = errs(
        json!({"method": "AWSIID", "awsIID": {"certificates": "nope", "accounts": ["12"]}, "jwt": {"jwks": "{}", "audiences": []}}),
    );
    assert!(
        e.contains("spec.awsIID.certificates")
            && e.contains("spec.awsIID.accounts[0]")
            && e.contains("spec.jwt: does not apply"),
        "{e}"
    );
    let e = errs(json!({"method": "K8sSAT", "workloadIDTemplate": "riptides/{{pod_name}}/{{nope}}",
                        "k8sSAT": {"cluster": "c", "issuer": "https://k", "jwks": "{\"keys\": []}", "audiences": ["a"]}}));
    assert!(e.contains("provides no claim \"nope\"") && e.contains("spec.k8sSAT.jwks"), "{e}");
    let e = errs(json!({"method": "X509CertPOP", "requiredMetadata": {"cn": ""}, "x509CertPOP": {"caBundle": "x"}}));
    assert!(e.contains("spec.requiredMetadata.cn") && e.contains("spec.x509CertPOP.caBundle"), "{e}");
    let e = errs(json!({"method": "SSHCertPOP", "sshCertPOP": {"certAuthorities": ["ssh-dss AAAA"]}}));
    assert!(e.contains("spec.sshCertPOP.certAuthorities[0]"), "{e}");
    let e = errs(json!({"method": "JWT", "jwt": {"jwks": gh.jwks(), "audiences": ["a"]}}));
    assert!(e.contains("spec.jwt.issuer"), "{e}");
    // A valid one round-trips.
    validate(&verifier(
        "v",
        json!({"method": "JWT", "workloadIDTemplate": "riptides/daemon/{{repository}}/{{id}}",
        "jwt": {"issuer": "https://i", "jwks": gh.jwks(), "audiences": ["a"], "daemonIDClaims": ["sub"]}}),
    ))
    .unwrap();
}

#[test]
fn support_base64_matches_the_crate() {
    use base64::Engine as _;
    for data in [&b""[..], b"h", b"he", b"hel", b"hello!?\xff\x00"] {
        assert_eq!(STANDARD.encode(data), base64::engine::general_purpose::STANDARD.encode(data));
        assert_eq!(URL_SAFE_NO_PAD.encode(data), base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data));
        assert_eq!(STANDARD.decode(&STANDARD.encode(data)).unwrap(), data);
    }
}
