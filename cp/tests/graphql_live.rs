//! Live state through GraphQL: a daemon (driven by a raw protocol client over real QUIC)
//! attests, reports its status and answers the control plane's tunnel requests; the GraphQL
//! API shows its status, asks it for health and its connection table, and flags mTLS and
//! refused connections.

mod common;
mod graphql_support;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

async fn gql(c: &riptides_wire::client::ApiClient, query: &str) -> Value {
    let body = json!({"query": query}).to_string();
    let (code, bytes) = c
        .raw_request(hyper::Method::POST, "/graphql", Some(("application/json", bytes::Bytes::from(body))))
        .await
        .unwrap();
    assert_eq!(code, 200);
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_and_their_live_connections() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let api = admin(&cp);
    let token = create_token(&cp, "tok", 600, Some("node-a")).await;

    let daemon = graphql_support::fake_daemon(&cp, token, graphql_support::sample_table()).await;
    let (att_id, conn) = (daemon.id.clone(), daemon.conn.clone());

    let v = gql(&api, "{ overview { daemons daemonsConnected daemonsUnhealthy }
        daemons { meta { name } id connected version dataplane daemonHealthy driverHealthy policyRevision transport lastSeen
                  health { ready components { key value } } } }").await;
    assert!(v["errors"].is_null(), "{v}");
    assert_eq!(v["data"]["overview"], json!({"daemons": 1, "daemonsConnected": 1, "daemonsUnhealthy": 1}));
    let d = &v["data"]["daemons"][0];
    assert_eq!(d["id"], att_id);
    assert_eq!(
        (
            d["connected"].clone(),
            d["version"].clone(),
            d["dataplane"].clone(),
            d["driverHealthy"].clone(),
            d["transport"].clone()
        ),
        (json!(true), json!("9.9.9"), json!("userspace"), json!(false), json!("quic"))
    );
    assert!(d["lastSeen"].is_string());
    assert_eq!(d["health"]["components"][0], json!({"key": "driver", "value": "ok"}));

    let v = gql(&api, "{ connections { connections { daemon remote peerId mode state mtls refused tlsVersion keyExchange bytesIn } errors { daemon message } } }").await;
    let c = &v["data"]["connections"];
    assert_eq!(c["errors"], json!([]), "{v}");
    let rows = c["connections"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{v}");
    assert_eq!((rows[0]["mtls"].clone(), rows[0]["refused"].clone()), (json!(true), json!(false)));
    assert_eq!((rows[1]["mtls"].clone(), rows[1]["refused"].clone()), (json!(false), json!(false)));
    assert_eq!((rows[2]["mtls"].clone(), rows[2]["refused"].clone()), (json!(false), json!(true)));
    assert_eq!(rows[0]["daemon"], att_id);
    assert_eq!(rows[0]["bytesIn"], "1200");
    // The negotiated TLS version and key exchange travel from the daemon; null where there was
    // no handshake (plaintext, refused).
    assert_eq!(
        (rows[0]["tlsVersion"].clone(), rows[0]["keyExchange"].clone()),
        (json!("TLSv1.3"), json!("X25519MLKEM768"))
    );
    assert_eq!((rows[1]["tlsVersion"].clone(), rows[1]["keyExchange"].clone()), (json!(null), json!(null)));
    assert_eq!(rows[2]["state"], "refused: peer not allowed");

    // A daemon that goes away is reported by name, not silently dropped.
    conn.close("test done");
    for _ in 0..100 {
        let d = api.get(rt("daemons"), "riptides-system", &att_id).await.unwrap();
        if d["status"]["connected"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let q =
        format!("{{ connections(daemon: \"{}\") {{ connections {{ remote }} errors {{ daemon message }} }} }}", att_id);
    let v = gql(&api, &q).await;
    assert_eq!(v["data"]["connections"]["errors"][0]["daemon"], att_id, "{v}");
    cp.shutdown().await;
}
