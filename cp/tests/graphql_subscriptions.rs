//! GraphQL subscriptions over WebSocket (graphql-transport-ws) through the real TLS listener:
//! the access token in `connection_init`, resource changes filtered by kind, and a connection
//! without credentials refused.

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use riptides_cp::oidc::Role;
use riptides_cp::ControlPlane;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(10);

type Ws = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

async fn open(cp: &ControlPlane) -> Ws {
    open_with(cp, None, None).await
}

async fn open_with(
    cp: &ControlPlane,
    client: Option<(Vec<rustls_pki_types::CertificateDer<'static>>, rustls_pki_types::PrivateKeyDer<'static>)>,
    origin: Option<&str>,
) -> Ws {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut cp.ca().bundle().to_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let tls = match client {
        Some((chain, key)) => tls.with_client_auth_cert(chain, key).unwrap(),
        None => tls.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(cp.api_addr()).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(name, tcp).await.unwrap();
    let mut req = format!("wss://{}/graphql", cp.api_addr()).into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    let (ws, resp) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "graphql-transport-ws");
    ws
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next JSON message; `None` when the server closed the connection.
async fn recv(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(T, ws.next()).await.expect("a message in time")? {
            Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).unwrap()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// A viewer's WebSocket with subscription `1` running `query` from revision `rv`.
async fn subscribe_as_viewer(cp: &ControlPlane, query: &str, rv: &str) -> Ws {
    let token = cp.oidc().issue_access_token("vera", None, Role::Viewer);
    let mut ws = open(cp).await;
    send(&mut ws, json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}})).await;
    assert_eq!(recv(&mut ws).await.unwrap()["type"], "connection_ack");
    send(&mut ws, json!({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": {"rv": rv}}})).await;
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_changes_arrive_over_websocket() {
    let dir = tempfile::tempdir().unwrap();
    let cp = common::start(dir.path()).await;
    let admin = common::admin(&cp);

    // Subscribe from the revision of a list, so no change after it can be missed.
    let rv = admin.list(common::rt("wi"), None).await.unwrap().metadata.resource_version.unwrap();
    let mut ws = subscribe_as_viewer(
        &cp,
        "subscription($rv: String) { resourceChanges(kinds: [\"wi\"], resourceVersion: $rv) { change kind namespace name resourceVersion } }",
        &rv,
    )
    .await;

    let svc = json!({"apiVersion": "core.riptides.io/v1alpha1", "kind": "Service", "metadata": {"name": "orders"},
        "spec": {"labels": {"tier": "backend"}, "addresses": [{"address": "10.0.0.5", "port": 8080}]}});
    admin.create(common::rt("services"), "riptides-system", &svc).await.unwrap();
    let wi = common::yaml(common::SEED_WORKLOAD);
    let created = admin.create(common::rt("wi"), "riptides-system", &wi).await.unwrap();
    let name = created["metadata"]["name"].as_str().unwrap().to_owned();
    admin.delete(common::rt("wi"), "riptides-system", &name).await.unwrap();

    let first = recv(&mut ws).await.unwrap();
    assert_eq!(first["type"], "next", "{first}");
    assert_eq!(
        first["payload"]["data"]["resourceChanges"],
        json!({"change": "ADDED", "kind": "WorkloadIdentity", "namespace": "riptides-system", "name": name,
               "resourceVersion": created["metadata"]["resourceVersion"]})
    );
    let second = recv(&mut ws).await.unwrap();
    assert_eq!(second["payload"]["data"]["resourceChanges"]["change"], "DELETED", "{second}");
    assert_eq!(second["payload"]["data"]["resourceChanges"]["name"], name.as_str());
    send(&mut ws, json!({"id": "1", "type": "complete"})).await;

    // Without a token the connection is refused at init.
    let mut anon = open(&cp).await;
    send(&mut anon, json!({"type": "connection_init", "payload": {}})).await;
    let r = recv(&mut anon).await;
    assert!(r.is_none() || r.as_ref().unwrap()["type"] != "connection_ack", "{r:?}");

    // The admin client certificate authenticates a WebSocket from a program, but not from a
    // browser (Origin sent): a page elsewhere must not ride on a certificate the browser holds.
    let creds = riptides_wire::kubeconfig::Kubeconfig::parse(&std::fs::read_to_string(cp.kubeconfig_path()).unwrap())
        .unwrap()
        .credentials()
        .unwrap();
    let chain: Vec<_> =
        rustls_pemfile::certs(&mut creds.client_cert_pem.as_deref().unwrap()).map(|c| c.unwrap()).collect();
    let key = rustls_pemfile::private_key(&mut creds.client_key_pem.as_deref().unwrap()).unwrap().unwrap();
    let mut prog = open_with(&cp, Some((chain.clone(), key.clone_key())), None).await;
    send(&mut prog, json!({"type": "connection_init", "payload": {}})).await;
    assert_eq!(recv(&mut prog).await.unwrap()["type"], "connection_ack");
    let mut page = open_with(&cp, Some((chain, key)), Some("https://evil.example")).await;
    send(&mut page, json!({"type": "connection_init", "payload": {}})).await;
    let r = recv(&mut page).await;
    assert!(r.is_none() || r.as_ref().unwrap()["type"] != "connection_ack", "{r:?}");
    cp.shutdown().await;
}

/// A subscription without a kind filter sees API objects only: the store also holds the control
/// plane's own objects (sealed CA, OIDC signing key, refresh-session hashes), never shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfiltered_changes_never_show_internal_objects() {
    let dir = tempfile::tempdir().unwrap();
    let cp = common::start(dir.path()).await;
    let admin = common::admin(&cp);
    let rv = admin.list(common::rt("services"), None).await.unwrap().metadata.resource_version.unwrap();
    let mut ws = subscribe_as_viewer(
        &cp,
        "subscription($rv: String) { resourceChanges(resourceVersion: $rv) { change kind namespace name } }",
        &rv,
    )
    .await;

    let internal = riptides_cp::store::ObjectKey::new("internal.riptides.io/oidc-refresh", "", "0123abcd");
    cp.store().create(&internal, b"{}".to_vec()).await.unwrap();
    let svc = json!({"apiVersion": "core.riptides.io/v1alpha1", "kind": "Service", "metadata": {"name": "after"},
        "spec": {"labels": {"tier": "backend"}, "addresses": [{"address": "10.0.0.6", "port": 8080}]}});
    admin.create(common::rt("services"), "riptides-system", &svc).await.unwrap();

    let first = recv(&mut ws).await.unwrap();
    assert_eq!(
        first["payload"]["data"]["resourceChanges"],
        json!({"change": "ADDED", "kind": "Service", "namespace": "riptides-system", "name": "after"}),
        "the internal object must not be reported: {first}"
    );
    cp.shutdown().await;
}
