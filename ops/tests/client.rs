//! `riptides_wire::client::ApiClient` against a control plane started in-process.

mod common;

use std::time::Duration;

use common::Fixture;
use riptides_wire::client::{ApiClient, ApiError};
use riptides_wire::kubeconfig::Kubeconfig;
use riptides_wire::resource::{by_name, WatchEventType};
use serde_json::json;

fn service(name: &str, port: u16) -> serde_json::Value {
    json!({
        "apiVersion": "core.riptides.io/v1alpha1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {"tier": "backend"}},
        "spec": {"labels": {"tier": "backend"}, "addresses": [{"address": "10.0.0.1", "port": port}]},
    })
}

#[test]
fn crud_watch_and_errors() {
    let f = Fixture::start();
    let client = ApiClient::from_kubeconfig_file(&f.kubeconfig).expect("client");
    assert_eq!(client.default_namespace(), Some("riptides-system"));
    let svc = by_name("svc").unwrap();
    let ns = "riptides-system";
    f.rt.block_on(async {
        // Discovery and health-style raw GETs.
        let (code, body) = client.raw_get("/apis").await.unwrap();
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("core.riptides.io"));
        let (code, _) = client.raw_get("/no/such/path").await.unwrap();
        assert_eq!(code, 404);

        let list = client.list(svc, Some(ns)).await.unwrap();
        assert!(list.items.is_empty());
        let mut watch = client.watch(svc, Some(ns), list.metadata.resource_version.as_deref()).await.unwrap();

        let created = client.create(svc, ns, &service("orders", 8000)).await.unwrap();
        let rv = created["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
        assert_eq!(client.get(svc, ns, "orders").await.unwrap()["spec"]["addresses"][0]["port"], 8000);

        let err = client.create(svc, ns, &service("orders", 8000)).await.unwrap_err();
        assert!(err.is_conflict(), "{err:?}");

        let patched = client.merge_patch(svc, ns, "orders", &json!({"spec": {"external": true}})).await.unwrap();
        assert_eq!(patched["spec"]["external"], true);

        // A PUT with the stale resourceVersion is a 409 with the server's Status.
        let mut stale = service("orders", 9000);
        stale["metadata"]["resourceVersion"] = rv.clone().into();
        let err = client.replace(svc, ns, "orders", &stale).await.unwrap_err();
        assert!(err.is_conflict(), "{err:?}");
        let status = err.status().unwrap();
        assert_eq!(status.reason, "Conflict");
        stale["metadata"]["resourceVersion"] = patched["metadata"]["resourceVersion"].clone();
        let replaced = client.replace(svc, ns, "orders", &stale).await.unwrap();
        assert_eq!(replaced["spec"]["addresses"][0]["port"], 9000);

        // 422 with the field named.
        let err = client
            .create(svc, ns, &json!({"apiVersion": "core.riptides.io/v1alpha1", "kind": "Service", "metadata": {"name": "x"}, "spec": {}}))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(422), "{err:?}");
        assert!(err.to_string().contains("spec.addresses"), "{err}");

        client.delete(svc, ns, "orders").await.unwrap();
        let err = client.get(svc, ns, "orders").await.unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
        assert!(err.to_string().starts_with("error from server (NotFound):"), "{err}");

        let mut seen = Vec::new();
        while seen.len() < 4 {
            let event = tokio::time::timeout(Duration::from_secs(10), watch.next_event())
                .await
                .expect("event in time")
                .expect("stream open")
                .unwrap();
            assert_eq!(event.object["metadata"]["name"], "orders");
            seen.push(event.kind);
        }
        assert_eq!(seen, [WatchEventType::Added, WatchEventType::Modified, WatchEventType::Modified, WatchEventType::Deleted]);

        // All-namespaces list and watch.
        client.create(svc, "team-a", &service("db", 5432)).await.unwrap();
        let all = client.list(svc, None).await.unwrap();
        assert_eq!(all.items.len(), 1);
        assert_eq!(all.items[0]["metadata"]["namespace"], "team-a");
        let mut all_watch = client.watch(svc, None, None).await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(10), all_watch.next_event()).await.unwrap().unwrap().unwrap();
        assert_eq!((first.kind, first.object["metadata"]["name"].as_str()), (WatchEventType::Added, Some("db")));
    });
}

#[test]
fn transport_errors_are_typed() {
    let f = Fixture::start();
    let text = std::fs::read_to_string(&f.kubeconfig).unwrap();
    let creds = Kubeconfig::parse(&text).unwrap().credentials().unwrap();
    let svc = by_name("svc").unwrap();
    f.rt.block_on(async {
        // The serving certificate does not name this host: the TLS handshake fails.
        let mut wrong_name = creds.clone();
        wrong_name.tls_server_name = Some("not-the-cp.example.com".into());
        let err = ApiClient::new(wrong_name).unwrap().list(svc, None).await.unwrap_err();
        assert!(matches!(err, ApiError::Tls { .. }), "{err:?}");
        assert!(err.to_string().contains("not-the-cp.example.com"), "{err}");

        // Without a client certificate the server refuses us (at TLS or HTTP level).
        let mut anonymous = creds.clone();
        anonymous.client_cert_pem = None;
        anonymous.client_key_pem = None;
        let err = ApiClient::new(anonymous).unwrap().list(svc, None).await.unwrap_err();
        assert!(
            matches!(err, ApiError::Tls { .. } | ApiError::Http { .. }) || matches!(err.code(), Some(401 | 403)),
            "{err:?}"
        );

        // Nothing listens: a connect error naming the address.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let mut closed = creds.clone();
        closed.server = format!("https://127.0.0.1:{port}");
        let err = ApiClient::new(closed).unwrap().list(svc, None).await.unwrap_err();
        assert!(matches!(err, ApiError::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");

        // A listener that never answers: the request timeout fires.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut slow = creds.clone();
        slow.server = format!("https://{}", silent.local_addr().unwrap());
        let client =
            ApiClient::new(slow).unwrap().with_timeouts(Duration::from_millis(300), Duration::from_millis(500));
        let err = client.list(svc, None).await.unwrap_err();
        assert!(matches!(err, ApiError::ConnectTimeout { .. } | ApiError::Timeout { .. }), "{err:?}");
    });
}
