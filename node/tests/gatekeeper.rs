//! The node gatekeeper end to end: the real `riptides-node-gatekeeper` binary reading a real
//! in-process control plane, driven with real `AdmissionReview` JSON over HTTPS, and the taint
//! controller against a small Kubernetes-style API server (Nodes and Pods, bearer token,
//! `resourceVersion` preconditions) started by the test.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use common::*;
use riptides_cp::store::ObjectKey;
use riptides_node::gatekeeper::cert::RotatingCert;
use riptides_node::gatekeeper::facts::{FactSource, Facts};
use riptides_node::gatekeeper::taint::{self, TAINT_KEY};
use riptides_node::gatekeeper::{webhook, WebhookConfig};
use riptides_wire::client::{ApiClient, Bytes, Method};
use riptides_wire::kubeconfig::ClientCredentials;
use riptides_wire::resource::{self, DEFAULT_NAMESPACE};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(30);

/// A Daemon object with a status, written through the store as the CP's endpoint would.
async fn put_daemon(cp: &riptides_cp::ControlPlane, id: &str, hostname: &str, status: Value) {
    let rt = resource::by_name("daemon").unwrap();
    let mut status = status;
    status["host"] = json!({ "hostname": hostname });
    let v = json!({
        "apiVersion": "core.riptides.io/v1alpha1", "kind": "Daemon",
        "metadata": { "name": id, "namespace": DEFAULT_NAMESPACE, "uid": format!("00000000-0000-4000-8000-0000000000{:02}", id.len()), "generation": 1 },
        "spec": { "id": id },
        "status": status,
    });
    let key = ObjectKey::new(rt.store_key(), DEFAULT_NAMESPACE, id);
    let bytes = serde_json::to_vec(&v).unwrap();
    match cp.store().get(&key).await.unwrap() {
        Some(_) => drop(cp.store().update(&key, bytes, None).await.unwrap()),
        None => drop(cp.store().create(&key, bytes).await.unwrap()),
    }
}

fn ready_status() -> Value {
    json!({ "connected": true, "daemonHealthy": true, "driverHealthy": true, "dataplane": "kernel", "policyRevision": 7 })
}

async fn seed(cp: &riptides_cp::ControlPlane) {
    put(
        cp,
        json!({
            "apiVersion": "core.riptides.io/v1alpha1", "kind": "Service",
            "metadata": { "name": "orders", "namespace": DEFAULT_NAMESPACE },
            "spec": { "labels": { "app": "orders" }, "addresses": [{ "address": "10.0.0.5", "port": 8080 }] },
        }),
    )
    .await;
    put(
        cp,
        json!({
            "apiVersion": "core.riptides.io/v1alpha1", "kind": "WorkloadIdentity",
            "metadata": { "name": "web", "namespace": DEFAULT_NAMESPACE },
            "spec": { "workloadID": "web", "scope": { "daemon": { "id": "node-1" } },
                      "selectors": [{ "k8s:namespace": "shop", "k8s:app": "web" }] },
        }),
    )
    .await;
    put(
        cp,
        json!({
            "apiVersion": "core.riptides.io/v1alpha1", "kind": "CredentialSource",
            "metadata": { "name": "vault", "namespace": DEFAULT_NAMESPACE },
            "spec": { "type": "static" },
        }),
    )
    .await;
    put_daemon(cp, "node-1", "node-a", ready_status()).await;
    put_daemon(
        cp,
        "node-2",
        "node-b",
        json!({ "connected": false, "daemonHealthy": true, "dataplane": "userspace", "policyRevision": 3 }),
    )
    .await;
}

fn pod(ns: &str, labels: Value, annotations: Value, node: Option<&str>) -> Value {
    let mut p = json!({ "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "p", "namespace": ns, "labels": labels, "annotations": annotations },
        "spec": { "containers": [{ "name": "c", "image": "busybox" }] } });
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    p
}

fn review(uid: &str, group: &str, kind: &str, sub: Option<&str>, ns: &str, name: &str, object: Value) -> Value {
    let mut req = json!({ "uid": uid, "kind": { "group": group, "version": "v1", "kind": kind },
        "resource": { "group": group, "version": "v1", "resource": "x" },
        "name": name, "namespace": ns, "operation": "CREATE", "object": object });
    if let Some(s) = sub {
        req["subResource"] = json!(s);
    }
    json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req })
}

struct Webhook {
    client: ApiClient,
}

impl Webhook {
    fn new(addr: SocketAddr, tls_dir: &Path) -> Webhook {
        let ca_pem = std::fs::read(tls_dir.join("ca.crt")).expect("gatekeeper wrote ca.crt");
        let client = ApiClient::new(ClientCredentials {
            server: format!("https://{addr}"),
            ca_pem,
            tls_server_name: Some("gatekeeper.test".into()),
            client_cert_pem: None,
            client_key_pem: None,
            bearer_token: None,
            namespace: None,
        })
        .unwrap();
        Webhook { client }
    }

    async fn raw(&self, body: Vec<u8>) -> (u16, String) {
        let (code, b) = self
            .client
            .raw_request(Method::POST, "/validate", Some(("application/json", Bytes::from(body))))
            .await
            .unwrap();
        (code, String::from_utf8_lossy(&b).into_owned())
    }

    /// Sends a review; returns (allowed, message) after checking the envelope.
    async fn decide(&self, review: Value) -> (bool, String) {
        let uid = review["request"]["uid"].as_str().unwrap().to_owned();
        let (code, body) = self.raw(serde_json::to_vec(&review).unwrap()).await;
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(v["kind"], "AdmissionReview");
        assert_eq!(v["response"]["uid"], uid.as_str(), "response must echo the request uid");
        let allowed = v["response"]["allowed"].as_bool().unwrap();
        (allowed, v["response"]["status"]["message"].as_str().unwrap_or("").to_owned())
    }
}

// ---------------------------------------------------------------- fake cluster API server

#[derive(Default)]
struct Cluster {
    nodes: BTreeMap<String, Value>,
    pods: BTreeMap<(String, String), Value>,
    rv: u64,
    patches: u64,
}

type Shared = Arc<Mutex<Cluster>>;
const TOKEN: &str = "test-sa-token";

fn authorized(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

async fn list_nodes(State(c): State<Shared>, h: HeaderMap) -> (StatusCode, Json<Value>) {
    if !authorized(&h) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"kind": "Status", "code": 401})));
    }
    let c = c.lock().unwrap();
    (
        StatusCode::OK,
        Json(json!({ "kind": "NodeList", "apiVersion": "v1", "items": c.nodes.values().cloned().collect::<Vec<_>>() })),
    )
}

async fn patch_node(
    State(c): State<Shared>,
    UrlPath(name): UrlPath<String>,
    h: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    if !authorized(&h) {
        return (StatusCode::UNAUTHORIZED, Json(json!({})));
    }
    assert_eq!(h.get("content-type").unwrap(), "application/merge-patch+json");
    let patch: Value = serde_json::from_slice(&body).unwrap();
    let mut c = c.lock().unwrap();
    c.rv += 1;
    let rv = 100 + c.rv;
    c.patches += 1;
    let Some(node) = c.nodes.get_mut(&name) else { return (StatusCode::NOT_FOUND, Json(json!({}))) };
    if patch["metadata"]["resourceVersion"] != node["metadata"]["resourceVersion"] {
        return (StatusCode::CONFLICT, Json(json!({"kind": "Status", "code": 409})));
    }
    node["spec"]["taints"] = patch["spec"]["taints"].clone();
    node["metadata"]["resourceVersion"] = json!(rv.to_string());
    (StatusCode::OK, Json(node.clone()))
}

async fn get_pod(
    State(c): State<Shared>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    h: HeaderMap,
) -> (StatusCode, Json<Value>) {
    if !authorized(&h) {
        return (StatusCode::UNAUTHORIZED, Json(json!({})));
    }
    match c.lock().unwrap().pods.get(&(ns, name)) {
        Some(p) => (StatusCode::OK, Json(p.clone())),
        None => (StatusCode::NOT_FOUND, Json(json!({"kind": "Status", "code": 404}))),
    }
}

fn node(name: &str, taints: Value) -> Value {
    json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": name, "resourceVersion": "1" }, "spec": { "taints": taints } })
}

/// Serves the fake cluster API over TLS; returns its address and a kubeconfig for it.
async fn start_cluster(dir: &Path, cluster: Shared) -> (SocketAddr, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(vec!["kubernetes.test".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(riptides_wire::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let app = Router::new()
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/nodes/{name}", axum::routing::patch(patch_node))
        .route("/api/v1/namespaces/{ns}/pods/{name}", get(get_pod))
        .with_state(cluster);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    let mut kc = riptides_wire::kubeconfig::Kubeconfig::single(
        "cluster",
        &format!("https://{addr}"),
        ca.pem().as_bytes(),
        b"",
        b"",
        "default",
    );
    kc.clusters[0].cluster.tls_server_name = Some("kubernetes.test".into());
    kc.users[0].user.client_certificate_data = None;
    kc.users[0].user.client_key_data = None;
    kc.users[0].user.token = Some(TOKEN.into());
    let path = dir.join("cluster.kubeconfig");
    std::fs::write(&path, kc.to_yaml()).unwrap();
    (addr, path)
}

struct Gatekeeper {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Drop for Gatekeeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_gatekeeper(cp_kubeconfig: &Path, cluster_kubeconfig: &Path, tls_dir: &Path) -> Gatekeeper {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_riptides-node-gatekeeper"))
        .args(["--listen", "127.0.0.1:0", "--dns-name", "gatekeeper.test", "--taint-interval-secs", "1"])
        .arg("--tls-dir")
        .arg(tls_dir)
        .arg("--controlplane-kubeconfig")
        .arg(cp_kubeconfig)
        .arg("--cluster-kubeconfig")
        .arg(cluster_kubeconfig)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn riptides-node-gatekeeper");
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(out).lines();
        if let Some(Ok(first)) = lines.next() {
            let _ = tx.send(first);
        }
        for _ in lines {}
    });
    let mut gk = Gatekeeper { child, addr: "0.0.0.0:0".parse().unwrap() };
    let line = rx.recv_timeout(T).expect("gatekeeper prints its address");
    gk.addr = line.rsplit("https://").next().unwrap().trim_end_matches("/validate").parse().unwrap();
    gk
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_and_taint_controller_against_control_plane_and_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start_cp(cp_config(&dir.path().join("cp"), None)).await;
    seed(&cp).await;

    let cluster: Shared = Arc::default();
    {
        let mut c = cluster.lock().unwrap();
        c.nodes.insert(
            "node-a".into(),
            node("node-a", json!([{ "key": TAINT_KEY, "value": "true", "effect": "NoSchedule" }])),
        );
        c.nodes.insert("node-b".into(), node("node-b", json!([{ "key": "other.io/keep", "effect": "NoExecute" }])));
        let protected = pod("shop", json!({ "riptides.io/protected": "true" }), json!({}), None);
        c.pods.insert(("shop".into(), "prot".into()), protected);
        c.pods.insert(("shop".into(), "plain".into()), pod("shop", json!({}), json!({}), None));
    }
    let (_cluster_addr, cluster_kc) = start_cluster(dir.path(), cluster.clone()).await;
    let tls_dir = dir.path().join("tls");
    let gk = start_gatekeeper(cp.kubeconfig_path(), &cluster_kc, &tls_dir);
    let wh = Webhook::new(gk.addr, &tls_dir);

    let prot = json!({ "riptides.io/protected": "true" });
    let want_web = json!({ "riptides.io/workload-id": "web" });
    // Unprotected pods are never refused, wherever they go.
    let (ok, _) =
        wh.decide(review("u1", "", "Pod", None, "shop", "p", pod("shop", json!({}), json!({}), Some("node-z")))).await;
    assert!(ok);
    // Protected, identity allowed in its namespace, on a ready node.
    let (ok, msg) = wh
        .decide(review("u2", "", "Pod", None, "shop", "p", pod("shop", prot.clone(), want_web.clone(), Some("node-a"))))
        .await;
    assert!(ok, "{msg}");
    // Protected pod not yet scheduled: allowed now, checked at binding.
    let (ok, msg) =
        wh.decide(review("u3", "", "Pod", None, "shop", "p", pod("shop", prot.clone(), json!({}), None))).await;
    assert!(ok, "{msg}");
    // Node whose daemon is disconnected.
    let (ok, msg) = wh
        .decide(review("u4", "", "Pod", None, "shop", "p", pod("shop", prot.clone(), json!({}), Some("node-b"))))
        .await;
    assert!(!ok);
    assert!(msg.contains("node node-b is not ready") && msg.contains("daemon node-2 is not connected"), "{msg}");
    // Node without any daemon.
    let (ok, msg) = wh
        .decide(review("u5", "", "Pod", None, "shop", "p", pod("shop", prot.clone(), json!({}), Some("node-z"))))
        .await;
    assert!(!ok);
    assert!(msg.contains("node node-z has no Riptides daemon"), "{msg}");
    // A namespace that may not request the identity.
    let (ok, msg) = wh
        .decide(review(
            "u6",
            "",
            "Pod",
            None,
            "other",
            "p",
            pod("other", prot.clone(), want_web.clone(), Some("node-a")),
        ))
        .await;
    assert!(!ok);
    assert!(msg.contains("namespace \"other\" may not request workload identity \"web\""), "{msg}");
    // An identity that does not exist (full SPIFFE ID form).
    let ghost = json!({ "riptides.io/workload-id": "spiffe://example.com/ghost" });
    let (ok, msg) =
        wh.decide(review("u7", "", "Pod", None, "shop", "p", pod("shop", prot.clone(), ghost, Some("node-a")))).await;
    assert!(!ok);
    assert!(msg.contains("no WorkloadIdentity with workloadID \"ghost\""), "{msg}");
    // pods/binding: the webhook fetches the bound pod from the cluster for its labels.
    let binding = |name: &str, node: &str| json!({ "apiVersion": "v1", "kind": "Binding", "metadata": { "name": name, "namespace": "shop" }, "target": { "kind": "Node", "name": node } });
    let (ok, msg) =
        wh.decide(review("u8", "", "Binding", Some("binding"), "shop", "prot", binding("prot", "node-b"))).await;
    assert!(!ok && msg.contains("node node-b is not ready"), "{msg}");
    let (ok, msg) =
        wh.decide(review("u9", "", "Binding", Some("binding"), "shop", "prot", binding("prot", "node-a"))).await;
    assert!(ok, "{msg}");
    let (ok, msg) =
        wh.decide(review("u10", "", "Binding", Some("binding"), "shop", "plain", binding("plain", "node-b"))).await;
    assert!(ok, "unprotected pods bind anywhere: {msg}");
    // WorkloadIdentity references.
    let wi = |scope_daemon: &str, sel: Value| {
        json!({ "apiVersion": "core.riptides.io/v1alpha1", "kind": "WorkloadIdentity",
        "metadata": { "name": "x", "namespace": "default" },
        "spec": { "workloadID": "x", "scope": { "daemon": { "id": scope_daemon } }, "egress": [{ "selectors": [sel] }] } })
    };
    let (ok, msg) = wh
        .decide(review(
            "u11",
            "core.riptides.io",
            "WorkloadIdentity",
            None,
            "default",
            "x",
            wi("node-1", json!({ "app": "orders" })),
        ))
        .await;
    assert!(ok, "{msg}");
    let (ok, msg) = wh
        .decide(review(
            "u12",
            "core.riptides.io",
            "WorkloadIdentity",
            None,
            "default",
            "x",
            wi("ghost", json!({ "app": "orders" })),
        ))
        .await;
    assert!(!ok && msg.contains("spec.scope.daemon.id: no Daemon \"ghost\""), "{msg}");
    let (ok, msg) = wh
        .decide(review(
            "u13",
            "core.riptides.io",
            "WorkloadIdentity",
            None,
            "default",
            "x",
            wi("node-1", json!({ "app": "nothing" })),
        ))
        .await;
    assert!(!ok && msg.contains("spec.egress[0].selectors[0]: selects no Service"), "{msg}");
    // CredentialBinding references.
    let cb = |wid: &str, src: &str| {
        json!({ "apiVersion": "core.riptides.io/v1alpha1", "kind": "CredentialBinding",
        "metadata": { "name": "b", "namespace": "default" },
        "spec": { "workloadID": wid, "serviceSelectors": [{ "app": "orders" }], "credentialSource": src, "injection": { "header": "Authorization" } } })
    };
    let (ok, msg) = wh
        .decide(review(
            "u14",
            "core.riptides.io",
            "CredentialBinding",
            None,
            DEFAULT_NAMESPACE,
            "b",
            cb("web", "vault"),
        ))
        .await;
    assert!(ok, "{msg}");
    let (ok, msg) = wh
        .decide(review(
            "u15",
            "core.riptides.io",
            "CredentialBinding",
            None,
            DEFAULT_NAMESPACE,
            "b",
            cb("web", "missing"),
        ))
        .await;
    assert!(!ok && msg.contains("spec.credentialSource: no CredentialSource \"missing\""), "{msg}");
    let (ok, msg) = wh
        .decide(review(
            "u16",
            "core.riptides.io",
            "CredentialBinding",
            None,
            DEFAULT_NAMESPACE,
            "b",
            cb("nobody", "vault"),
        ))
        .await;
    assert!(!ok && msg.contains("spec.workloadID: no WorkloadIdentity"), "{msg}");
    let mut bad_spec = cb("web", "vault");
    bad_spec["spec"]["injection"] = json!("header");
    let (ok, msg) =
        wh.decide(review("u17", "core.riptides.io", "CredentialBinding", None, DEFAULT_NAMESPACE, "b", bad_spec)).await;
    assert!(!ok && msg.contains("spec.injection"), "{msg}");

    // Malformed and oversized requests.
    let (code, body) = wh.raw(b"{not json".to_vec()).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("not an AdmissionReview"), "{body}");
    let (code, body) = wh.raw(br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE"}}"#.to_vec()).await;
    assert_eq!(code, 400);
    assert!(body.contains("expected admission.k8s.io/v1 AdmissionReview"), "{body}");
    let (code, body) =
        wh.raw(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7}}"#.to_vec()).await;
    assert_eq!(code, 400);
    assert!(body.contains("request.uid"), "{body}");
    let (code, body) = wh.raw(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec()).await;
    assert_eq!(code, 400);
    assert!(body.contains("without request"), "{body}");
    let mut huge = review("u18", "", "Pod", None, "shop", "p", pod("shop", json!({}), json!({}), None));
    huge["request"]["object"]["metadata"]["annotations"]["big"] = json!("x".repeat(4 << 20));
    let (code, _) = wh.raw(serde_json::to_vec(&huge).unwrap()).await;
    assert_eq!(code, 413, "an oversized review is refused before it is parsed");
    // Still serving after all that.
    let (ok, _) = wh.decide(review("u19", "", "Pod", None, "shop", "p", pod("shop", json!({}), json!({}), None))).await;
    assert!(ok);

    // Taint controller (running inside the gatekeeper, 1 s passes): node-a's daemon is ready,
    // so the taint it had goes; node-b's is not, so it gets one, and keeps its other taint.
    let deadline = Instant::now() + T;
    loop {
        let (a, b) = {
            let c = cluster.lock().unwrap();
            (c.nodes["node-a"]["spec"]["taints"].clone(), c.nodes["node-b"]["spec"]["taints"].clone())
        };
        let has = |t: &Value| t.as_array().unwrap().iter().any(|x| x["key"] == TAINT_KEY);
        if !has(&a) && has(&b) {
            assert!(b.as_array().unwrap().iter().any(|x| x["key"] == "other.io/keep"), "other taints are kept: {b}");
            break;
        }
        assert!(Instant::now() < deadline, "taints never converged: a={a} b={b}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // node-b's daemon becomes ready: the taint is lifted.
    put_daemon(&cp, "node-2", "node-b", ready_status()).await;
    let deadline = Instant::now() + T;
    loop {
        let b = cluster.lock().unwrap().nodes["node-b"]["spec"]["taints"].clone();
        if !b.as_array().unwrap().iter().any(|x| x["key"] == TAINT_KEY) {
            assert_eq!(b.as_array().unwrap().len(), 1, "{b}");
            break;
        }
        assert!(Instant::now() < deadline, "taint never lifted: {b}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(gk);
    cp.shutdown().await;
}

/// Stale `resourceVersion` -> 409, nothing overwritten; a CP outage changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taint_pass_respects_conflicts_and_control_plane_outages() {
    let dir = tempfile::tempdir().unwrap();
    let cluster: Shared = Arc::default();
    cluster.lock().unwrap().nodes.insert("n1".into(), node("n1", json!([])));
    let (_addr, kc) = start_cluster(dir.path(), cluster.clone()).await;
    let kube = ApiClient::from_kubeconfig_file(&kc).unwrap();

    struct Failing;
    #[async_trait::async_trait]
    impl FactSource for Failing {
        async fn facts(&self) -> Result<Arc<Facts>, String> {
            Err("connection refused".into())
        }
    }
    let e = taint::reconcile(&kube, &Failing).await.unwrap_err();
    assert!(e.to_string().contains("control plane: connection refused"), "{e}");
    assert_eq!(cluster.lock().unwrap().patches, 0, "no patch without control-plane facts");

    // No daemon anywhere: every node should be tainted.
    struct NoDaemons;
    #[async_trait::async_trait]
    impl FactSource for NoDaemons {
        async fn facts(&self) -> Result<Arc<Facts>, String> {
            Ok(Arc::new(Facts::default()))
        }
    }
    let r = taint::reconcile(&kube, &NoDaemons).await.unwrap();
    assert_eq!(r.tainted, vec!["n1".to_string()]);
    // A write based on the version the controller listed before its own patch (what a
    // racing writer would send) is refused, and changes nothing.
    let stale = json!({ "metadata": { "resourceVersion": "1" }, "spec": { "taints": [] } });
    let (code, _) = kube
        .raw_request(
            Method::PATCH,
            "/api/v1/nodes/n1",
            Some(("application/merge-patch+json", Bytes::from(serde_json::to_vec(&stale).unwrap()))),
        )
        .await
        .unwrap();
    assert_eq!(code, 409, "the fake server enforces preconditions like the real one");
    let taints = cluster.lock().unwrap().nodes["n1"]["spec"]["taints"].clone();
    assert_eq!(taints.as_array().unwrap().len(), 1, "the conflicting write changed nothing: {taints}");
    // Steady state: a second pass changes nothing.
    let r = taint::reconcile(&kube, &NoDaemons).await.unwrap();
    assert!(r.tainted.is_empty() && r.untainted.is_empty() && r.unchanged == 1, "{r:?}");
}

/// The webhook fails closed for protected pods when the control plane cannot be read, and
/// keeps answering unprotected ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_outage_refuses_only_what_needs_it() {
    struct Down;
    #[async_trait::async_trait]
    impl FactSource for Down {
        async fn facts(&self) -> Result<Arc<Facts>, String> {
            Err("connect to 127.0.0.1:8443: connection refused".into())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let cert =
        Arc::new(RotatingCert::open(dir.path(), &["gatekeeper.test".to_string()], Duration::from_secs(3600)).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server =
        tokio::spawn(webhook::serve(listener, cert, Arc::new(Down), None, WebhookConfig::default(), stop.clone()));
    let wh = Webhook::new(addr, dir.path());
    let (ok, msg) = wh
        .decide(review(
            "o1",
            "",
            "Pod",
            None,
            "shop",
            "p",
            pod("shop", json!({ "riptides.io/protected": "true" }), json!({}), Some("node-a")),
        ))
        .await;
    assert!(!ok && msg.contains("cannot read the Riptides control plane"), "{msg}");
    let (ok, msg) =
        wh.decide(review("o2", "", "Pod", None, "shop", "p", pod("shop", json!({}), json!({}), Some("node-a")))).await;
    assert!(ok, "{msg}");
    stop.cancel();
    server.await.unwrap().unwrap();
}

/// Self-managed certificates rotate under a stable CA; mounted ones are reloaded on change.
#[test]
fn serving_certificate_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let names = vec!["gatekeeper.test".to_string()];
    let rc = RotatingCert::open(dir.path(), &names, Duration::from_secs(3600)).unwrap();
    let ca = std::fs::read(dir.path().join("ca.crt")).unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.path().join("ca.key")).unwrap().permissions())
            & 0o777;
    assert_eq!(mode, 0o600);
    let first = rc.current().cert[0].clone();
    assert_eq!(rc.current().cert[0], first, "not rotated before it is due");
    rc.rotate_now();
    let second = rc.current().cert[0].clone();
    assert_ne!(first, second, "a new leaf after rotation");
    assert_eq!(std::fs::read(dir.path().join("ca.crt")).unwrap(), ca, "the CA (caBundle) is stable");
    // Reopening keeps the CA.
    let again = RotatingCert::open(dir.path(), &names, Duration::from_secs(3600)).unwrap();
    assert_eq!(again.current().cert[1].as_ref(), rustls_pemfile::certs(&mut &ca[..]).next().unwrap().unwrap().as_ref());

    // Mounted: tls.crt/tls.key from another issuer, replaced on disk.
    let mounted = tempfile::tempdir().unwrap();
    let write = |cn: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![cn.to_string()]).unwrap().self_signed(&key).unwrap();
        std::fs::write(mounted.path().join("tls.crt"), cert.pem()).unwrap();
        std::fs::write(mounted.path().join("tls.key"), key.serialize_pem()).unwrap();
        cert.der().clone()
    };
    let a = write("a.test");
    let rc = RotatingCert::open(mounted.path(), &names, Duration::from_secs(3600)).unwrap();
    assert_eq!(rc.current().cert[0], a);
    std::thread::sleep(Duration::from_millis(20));
    let b = write("b.test");
    // mtime resolution: make sure the stamp differs even on coarse filesystems.
    let later = std::time::SystemTime::now() + Duration::from_secs(2);
    for f in ["tls.crt", "tls.key"] {
        std::fs::File::options().write(true).open(mounted.path().join(f)).unwrap().set_modified(later).unwrap();
    }
    rc.rotate_now();
    assert_eq!(rc.current().cert[0], b, "a changed mounted certificate is picked up");
    // A broken pair keeps the last good certificate.
    std::fs::write(mounted.path().join("tls.key"), "garbage").unwrap();
    std::fs::File::options()
        .write(true)
        .open(mounted.path().join("tls.key"))
        .unwrap()
        .set_modified(later + Duration::from_secs(5))
        .unwrap();
    rc.rotate_now();
    assert_eq!(rc.current().cert[0], b);
}
