//! The resource API's REST semantics, through the real TLS listener and the real client.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use riptides_wire::client::{ApiClient, ApiError};
use riptides_wire::kubeconfig::Kubeconfig;
use riptides_wire::resource::WatchEventType;
use serde_json::json;

const NS: &str = "riptides-system";

fn code(e: &ApiError) -> u16 {
    e.code().unwrap_or_else(|| panic!("expected an API status, got {e}"))
}

#[tokio::test]
async fn crud_with_server_owned_metadata_conflicts_and_validation() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let api = admin(&cp);
    let wi = rt("workloadidentities");

    let created = api.create(wi, NS, &yaml(SEED_WORKLOAD)).await.unwrap();
    assert_eq!(created["metadata"]["namespace"], NS);
    assert_eq!(created["metadata"]["generation"], 1);
    assert_eq!(created["metadata"]["uid"].as_str().unwrap().len(), 36);
    assert!(created["metadata"]["creationTimestamp"].is_string());
    let rv1 = rv(&created);

    let got = api.get(wi, NS, "frontend").await.unwrap();
    assert_eq!(got, created);
    let list = api.list(wi, Some(NS)).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.kind, "WorkloadIdentityList");
    assert!(list.metadata.resource_version.unwrap().parse::<u64>().unwrap() >= rv1);

    // Creating twice is 409 AlreadyExists.
    let err = api.create(wi, NS, &yaml(SEED_WORKLOAD)).await.unwrap_err();
    assert_eq!(code(&err), 409);
    assert_eq!(err.status().unwrap().reason, "AlreadyExists");

    // Update with the current resourceVersion works and bumps generation; with a stale one, 409.
    let mut changed = got.clone();
    changed["spec"]["ingress"][0]["port"] = json!(8001);
    let updated = api.replace(wi, NS, "frontend", &changed).await.unwrap();
    assert_eq!(updated["metadata"]["generation"], 2);
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
    assert!(rv(&updated) > rv1);
    let err = api.replace(wi, NS, "frontend", &changed).await.unwrap_err();
    assert_eq!(code(&err), 409, "stale resourceVersion must conflict: {err}");

    // Clients cannot overwrite server-owned fields.
    let mut forged = updated.clone();
    forged["metadata"]["uid"] = json!("forged");
    forged["metadata"]["creationTimestamp"] = json!("2000-01-01T00:00:00Z");
    let kept = api.replace(wi, NS, "frontend", &forged).await.unwrap();
    assert_eq!(kept["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(kept["metadata"]["creationTimestamp"], created["metadata"]["creationTimestamp"]);

    // Merge patch.
    let patched = api.merge_patch(wi, NS, "frontend", &json!({"metadata": {"labels": {"team": "web"}}})).await.unwrap();
    assert_eq!(patched["metadata"]["labels"]["team"], "web");
    assert_eq!(patched["spec"]["ingress"][0]["port"], 8001);
    let err = api
        .merge_patch(wi, NS, "frontend", &json!({"metadata": {"resourceVersion": "1"}, "spec": {}}))
        .await
        .unwrap_err();
    assert_eq!(code(&err), 409);

    // 422 names the field; nothing is written.
    let before = rv(&api.get(wi, NS, "frontend").await.unwrap());
    let err = api
        .merge_patch(wi, NS, "frontend", &json!({"spec": {"egress": [{"selectors": [{"tier": "x"}], "allowedSPIFFEIDs": ["spiffe://example.com/a/"]}]}}))
        .await
        .unwrap_err();
    assert_eq!(code(&err), 422);
    let causes = err.status().unwrap().details.clone().unwrap().causes;
    assert_eq!(causes[0].field, "spec.egress[0].allowedSPIFFEIDs[0]", "{causes:?}");
    let mut bad = yaml(SEED_WORKLOAD);
    bad["metadata"]["name"] = json!("other");
    bad["spec"]["ingress"][0]["port"] = json!(0);
    let err = api.create(wi, NS, &bad).await.unwrap_err();
    assert_eq!(code(&err), 422);
    assert_eq!(err.status().unwrap().details.clone().unwrap().causes[0].field, "spec.ingress[0].port");
    assert_eq!(rv(&api.get(wi, NS, "frontend").await.unwrap()), before);
    assert_eq!(code(&api.get(wi, NS, "other").await.unwrap_err()), 404);

    // Namespace in the body must match the path.
    let mut wrong_ns = yaml(SEED_WORKLOAD);
    wrong_ns["metadata"]["name"] = json!("x");
    wrong_ns["metadata"]["namespace"] = json!("elsewhere");
    assert_eq!(code(&api.create(wi, NS, &wrong_ns).await.unwrap_err()), 400);

    // Delete, then 404.
    api.delete(wi, NS, "frontend").await.unwrap();
    assert_eq!(code(&api.get(wi, NS, "frontend").await.unwrap_err()), 404);
    assert_eq!(code(&api.delete(wi, NS, "frontend").await.unwrap_err()), 404);

    // Unknown resources and paths are 404 with a Status body.
    let (status, body) = api.raw_get("/apis/core.riptides.io/v1alpha1/namespaces/x/pods").await.unwrap();
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("\"kind\":\"Status\""));
    cp.shutdown().await;
}

#[tokio::test]
async fn daemon_status_is_owned_by_the_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let api = admin(&cp);
    let daemons = rt("daemons");
    let obj = json!({
        "apiVersion": "core.riptides.io/v1alpha1", "kind": "Daemon",
        "metadata": {"name": "node-1"},
        "spec": {"id": "node-1"},
        "status": {"connected": true}
    });
    let created = api.create(daemons, NS, &obj).await.unwrap();
    assert!(created.get("status").is_none(), "status from a client must be ignored: {created}");
    cp.shutdown().await;
}

#[tokio::test]
async fn watch_streams_resumes_and_answers_410_for_compacted_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let api = admin(&cp);
    let svc = rt("services");
    let service = |name: &str, port: u16| {
        json!({"apiVersion": "core.riptides.io/v1alpha1", "kind": "Service", "metadata": {"name": name},
               "spec": {"labels": {"tier": "backend"}, "addresses": [{"address": "10.0.0.1", "port": port}]}})
    };
    let a = api.create(svc, NS, &service("a", 80)).await.unwrap();
    let b = api.create(svc, NS, &service("b", 81)).await.unwrap();

    // From "0": the current state as ADDED, then live changes.
    let mut w = api.watch(svc, Some(NS), Some("0")).await.unwrap();
    let names: Vec<String> = [w.next().await, w.next().await]
        .into_iter()
        .map(|e| {
            let e = e.unwrap().unwrap();
            assert_eq!(e.kind, WatchEventType::Added);
            e.object["metadata"]["name"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(names, ["a", "b"]);
    api.delete(svc, NS, "a").await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), w.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(e.kind, WatchEventType::Deleted);
    assert_eq!(e.object["metadata"]["name"], "a");
    let deleted_rv = rv(&e.object);
    assert!(deleted_rv > rv(&b));

    // Resume from a's creation: exactly the later changes, in order.
    let mut w = api.watch(svc, Some(NS), Some(&rv(&a).to_string())).await.unwrap();
    let e1 = w.next().await.unwrap().unwrap();
    assert_eq!((e1.kind, e1.object["metadata"]["name"].as_str().unwrap()), (WatchEventType::Added, "b"));
    let e2 = w.next().await.unwrap().unwrap();
    assert_eq!((e2.kind, rv(&e2.object)), (WatchEventType::Deleted, deleted_rv));

    // Compact everything: resuming from an old revision is 410 Gone.
    api.create(svc, NS, &service("c", 82)).await.unwrap();
    cp.store().compact(0).await.unwrap();
    let err = api.watch(svc, Some(NS), Some(&rv(&a).to_string())).await.unwrap_err();
    assert_eq!(err.code(), Some(410), "{err}");
    assert!(err.is_gone());
    cp.shutdown().await;
}

#[tokio::test]
async fn callers_without_an_admin_certificate_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let text = std::fs::read_to_string(cp.kubeconfig_path()).unwrap();
    let creds = Kubeconfig::parse(&text).unwrap().credentials().unwrap();

    // No client certificate: 401.
    let mut anon = creds.clone();
    anon.client_cert_pem = None;
    anon.client_key_pem = None;
    let api = ApiClient::new(anon).unwrap();
    let err = api.list(rt("wi"), Some(NS)).await.unwrap_err();
    assert_eq!(err.code(), Some(401), "{err}");
    let (status, _) = api.raw_get("/apis").await.unwrap();
    assert_eq!(status, 401);
    // The trust bundle is public, as PEM and as a SPIFFE bundle.
    let (status, pem) = api.raw_get("/trust-bundle.pem").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8_lossy(&pem), cp.ca().bundle().to_pem());
    let (status, json) = api.raw_get("/.well-known/spiffe-bundle").await.unwrap();
    assert_eq!(status, 200);
    let bundle: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(bundle["keys"][0]["use"], "x509-svid");
    assert!(bundle["spiffe_sequence"].as_u64().is_some());

    // A valid identity of the trust domain that is not an operator: 403.
    let daemon_id = cp.ca().trust_domain().workload_id("riptides/daemon/node-1").unwrap();
    let (svid, key) = cp.ca().issue_with_new_key(&daemon_id, &[], &[], None, std::time::SystemTime::now()).unwrap();
    let mut daemon = creds.clone();
    daemon.client_cert_pem = Some(svid.chain_pem().into_bytes());
    daemon.client_key_pem = Some(key.to_pem().into_bytes());
    let err = ApiClient::new(daemon).unwrap().list(rt("wi"), Some(NS)).await.unwrap_err();
    assert_eq!(err.code(), Some(403), "{err}");

    // A certificate from another CA does not even complete the handshake as an identity.
    let other_dir = tempfile::tempdir().unwrap();
    let other = riptides_cp::ca::Ca::open(
        other_dir.path(),
        riptides_cp::ca::CaConfig::new(cp.ca().trust_domain().clone()),
        std::time::SystemTime::now(),
    )
    .unwrap();
    let admin_id = cp.ca().trust_domain().workload_id("riptides/admin/admin").unwrap();
    let (svid, key) = other.issue_with_new_key(&admin_id, &[], &[], None, std::time::SystemTime::now()).unwrap();
    let mut forged = creds;
    forged.client_cert_pem = Some(svid.chain_pem().into_bytes());
    forged.client_key_pem = Some(key.to_pem().into_bytes());
    let err = ApiClient::new(forged).unwrap().list(rt("wi"), Some(NS)).await.unwrap_err();
    assert!(err.code().is_none(), "a foreign CA's admin certificate must fail the handshake, got {err}");
    cp.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let api = admin(&cp);
    let wi = rt("wi");
    let not_an_object = json!(["x"]);
    assert_eq!(api.create(wi, NS, &not_an_object).await.unwrap_err().code(), Some(400));
    let wrong_kind =
        json!({"apiVersion": "core.riptides.io/v1alpha1", "kind": "Service", "metadata": {"name": "x"}, "spec": {}});
    let err = api.create(wi, NS, &wrong_kind).await.unwrap_err();
    assert_eq!(err.code(), Some(422));
    let mut huge = yaml(SEED_WORKLOAD);
    huge["metadata"]["annotations"] = json!({"big": "x".repeat(4 * 1024 * 1024)});
    let err = api.create(wi, NS, &huge).await.unwrap_err();
    assert_eq!(err.code(), Some(413), "{err}");
    cp.shutdown().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let api = admin(&cp);
    api.list(rt("wi"), None).await.unwrap();
    let addr = cp.health_addr();
    let get = |path: &'static str| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
    let mut ready = String::new();
    for _ in 0..50 {
        ready = get("/readyz").await;
        if ready.starts_with("HTTP/1.1 200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let metrics = get("/metrics").await;
    assert!(metrics.contains("riptides_cp_api_requests_total{verb=\"GET\",code=\"200\"}"), "{metrics}");
    assert!(metrics.contains("riptides_cp_store_revision"), "{metrics}");
    cp.shutdown().await;
}
