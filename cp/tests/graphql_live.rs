//! Live state through GraphQL: a daemon (driven by a raw protocol client over real QUIC)
//! attests, reports its status and answers the control plane's tunnel requests; the GraphQL
//! API shows its status, asks it for health and its connection table, and flags mTLS and
//! refused connections.

mod common;

use std::time::Duration;

use common::*;
use riptides_cp::ControlPlane;
use riptides_wire::proto::messages::*;
use riptides_wire::proto::{read_frame_timeout, write_frame, FrameConfig, ALPN};
use riptides_wire::tls::{client_config, spki_sha256, ExpectedId, ServerTrust};
use riptides_wire::transport::{connect_quic, Connection, TransportConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

async fn connect(
    cp: &ControlPlane,
    trust: ServerTrust,
    ident: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> std::sync::Arc<dyn Connection> {
    let id = ExpectedId::Exact(cp.ca().trust_domain().workload_id("riptides/controlplane").unwrap());
    let tls = client_config(trust, id, ident, &[ALPN]).unwrap();
    connect_quic("127.0.0.1:0".parse().unwrap(), cp.quic_addr(), tls, &TransportConfig::default()).await.unwrap()
}

async fn call(conn: &dyn Connection, req: &Request) -> Response {
    let cfg = FrameConfig::default();
    let mut s = conn.open_bi().await.unwrap();
    write_frame(&mut s.send, req, &cfg).await.unwrap();
    read_frame_timeout(&mut s.recv, &cfg, T).await.unwrap()
}

fn entry(remote: &str, peer: Option<&str>, mode: &str, state: &str) -> ConnectionEntry {
    ConnectionEntry {
        local: "10.0.0.1:40000".into(),
        remote: remote.into(),
        workload_id: Some("spiffe://example.com/app/web".into()),
        peer_id: peer.map(str::to_owned),
        mode: mode.into(),
        state: state.into(),
        bytes_in: 1200,
        bytes_out: 300,
    }
}

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

    // Attest, then connect with the daemon SVID.
    let pin = ServerTrust::Pin(spki_sha256(cp.ca().bundle().roots()[0].as_ref()).unwrap());
    let boot = connect(&cp, pin, None).await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::default().serialize_request(&key).unwrap().der().to_vec();
    let att = call(
        boot.as_ref(),
        &Request::Attest(AttestRequest {
            token,
            csr_der: csr,
            host: HostInfo { hostname: "host-a".into(), ..Default::default() },
        }),
    )
    .await
    .expect_attested()
    .unwrap();
    let chain = att.svid_chain_der.into_iter().map(CertificateDer::from).collect();
    let ident = (chain, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())));
    let conn = connect(&cp, ServerTrust::Bundle(cp.ca().bundle().roots()), Some(ident)).await;
    {
        let conn = conn.clone();
        tokio::spawn(async move {
            let cfg = FrameConfig::default();
            while let Ok(mut s) = conn.accept_bi().await {
                let req: TunnelRequest = read_frame_timeout(&mut s.recv, &cfg, T).await.unwrap();
                let resp = match req {
                    TunnelRequest::Health => TunnelResponse::Health(HealthReport {
                        ready: true,
                        details: vec![("driver".into(), "ok".into()), ("policy".into(), "applied".into())],
                    }),
                    TunnelRequest::ConnectionTable => TunnelResponse::ConnectionTable(vec![
                        entry("10.0.0.5:8080", Some("spiffe://example.com/app/orders"), "MUTUAL", "established"),
                        entry("10.0.0.6:8080", None, "permissive-plaintext", "established"),
                        entry(
                            "10.0.0.7:8080",
                            Some("spiffe://example.com/app/intruder"),
                            "MUTUAL",
                            "refused: peer not allowed",
                        ),
                    ]),
                    TunnelRequest::ConfigDump => TunnelResponse::ConfigDump("{}".into()),
                };
                write_frame(&mut s.send, &resp, &cfg).await.unwrap();
            }
        });
    }
    let report = DaemonStatusReport {
        version: "9.9.9".into(),
        dataplane: "userspace".into(),
        daemon_healthy: true,
        driver_healthy: Some(false),
        policy_revision: Some(7),
    };
    assert!(matches!(call(conn.as_ref(), &Request::ReportStatus(report)).await, Response::Ack));

    let v = gql(&api, "{ overview { daemons daemonsConnected daemonsUnhealthy }
        daemons { meta { name } id connected version dataplane daemonHealthy driverHealthy policyRevision transport lastSeen
                  health { ready components { key value } } } }").await;
    assert!(v["errors"].is_null(), "{v}");
    assert_eq!(v["data"]["overview"], json!({"daemons": 1, "daemonsConnected": 1, "daemonsUnhealthy": 1}));
    let d = &v["data"]["daemons"][0];
    assert_eq!(d["id"], att.daemon_id);
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

    let v = gql(&api, "{ connections { connections { daemon remote peerId mode state mtls refused bytesIn } errors { daemon message } } }").await;
    let c = &v["data"]["connections"];
    assert_eq!(c["errors"], json!([]), "{v}");
    let rows = c["connections"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{v}");
    assert_eq!((rows[0]["mtls"].clone(), rows[0]["refused"].clone()), (json!(true), json!(false)));
    assert_eq!((rows[1]["mtls"].clone(), rows[1]["refused"].clone()), (json!(false), json!(false)));
    assert_eq!(rows[2]["refused"], true);
    assert_eq!(rows[0]["daemon"], att.daemon_id);
    assert_eq!(rows[0]["bytesIn"], "1200");

    // A daemon that goes away is reported by name, not silently dropped.
    conn.close("test done");
    for _ in 0..100 {
        let d = api.get(rt("daemons"), "riptides-system", &att.daemon_id).await.unwrap();
        if d["status"]["connected"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let q = format!(
        "{{ connections(daemon: \"{}\") {{ connections {{ remote }} errors {{ daemon message }} }} }}",
        att.daemon_id
    );
    let v = gql(&api, &q).await;
    assert_eq!(v["data"]["connections"]["errors"][0]["daemon"], att.daemon_id, "{v}");
    cp.shutdown().await;
}
