//! A daemon for the GraphQL tests, driven by a raw protocol client over real QUIC: attests
//! with a join token, connects with its SVID, reports a status and answers the control
//! plane's tunnel requests with a fixed health report and connection table.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use riptides_cp::ControlPlane;
use riptides_wire::proto::messages::*;
use riptides_wire::proto::{read_frame_timeout, write_frame, FrameConfig, ALPN};
use riptides_wire::tls::{client_config, spki_sha256, ExpectedId, ServerTrust};
use riptides_wire::transport::{connect_quic, Connection, TransportConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const T: Duration = Duration::from_secs(10);

async fn connect(
    cp: &ControlPlane,
    trust: ServerTrust,
    ident: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Arc<dyn Connection> {
    let id = ExpectedId::Exact(cp.ca().trust_domain().workload_id("riptides/controlplane").unwrap());
    let tls = client_config(trust, id, ident, &[ALPN]).unwrap();
    connect_quic("127.0.0.1:0".parse().unwrap(), cp.quic_addr(), tls, &TransportConfig::default()).await.unwrap()
}

pub async fn call(conn: &dyn Connection, req: &Request) -> Response {
    let cfg = FrameConfig::default();
    let mut s = conn.open_bi().await.unwrap();
    write_frame(&mut s.send, req, &cfg).await.unwrap();
    read_frame_timeout(&mut s.recv, &cfg, T).await.unwrap()
}

pub fn entry(remote: &str, peer: Option<&str>, mode: &str, state: &str) -> ConnectionEntry {
    ConnectionEntry {
        local: "10.0.0.1:40000".into(),
        remote: remote.into(),
        workload_id: Some("spiffe://example.com/app/web".into()),
        peer_id: peer.map(str::to_owned),
        mode: mode.into(),
        state: state.into(),
        bytes_in: 1200,
        bytes_out: 300,
        tls_version: None,
        key_exchange: None,
    }
}

/// An mTLS connection, a plaintext one and a refused one, as the daemons name them.
pub fn sample_table() -> Vec<ConnectionEntry> {
    vec![
        ConnectionEntry {
            tls_version: Some("TLSv1.3".into()),
            key_exchange: Some("X25519MLKEM768".into()),
            ..entry("10.0.0.5:8080", Some("spiffe://example.com/app/orders"), "MUTUAL", "established")
        },
        entry("10.0.0.6:8080", None, "permissive-plaintext", "established"),
        entry("10.0.0.7:8080", Some("spiffe://example.com/app/intruder"), "MUTUAL", "refused: peer not allowed"),
    ]
}

pub struct FakeDaemon {
    pub id: String,
    pub conn: Arc<dyn Connection>,
}

/// Attests with `token`, connects, answers tunnel requests with `table`, and reports version
/// 9.9.9 on the userspace dataplane with an unhealthy driver.
pub async fn fake_daemon(cp: &ControlPlane, token: String, table: Vec<ConnectionEntry>) -> FakeDaemon {
    let pin = ServerTrust::Pin(spki_sha256(cp.ca().bundle().roots()[0].as_ref()).unwrap());
    let boot = connect(cp, pin, None).await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::default().serialize_request(&key).unwrap().der().to_vec();
    let host = HostInfo { hostname: "host-a".into(), ..Default::default() };
    let att = call(boot.as_ref(), &Request::Attest(AttestRequest { token, csr_der: csr, host }))
        .await
        .expect_attested()
        .unwrap();
    let chain = att.svid_chain_der.into_iter().map(CertificateDer::from).collect();
    let ident = (chain, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())));
    let conn = connect(cp, ServerTrust::Bundle(cp.ca().bundle().roots()), Some(ident)).await;
    {
        let conn = conn.clone();
        tokio::spawn(async move {
            let cfg = FrameConfig::default();
            while let Ok(mut s) = conn.accept_bi().await {
                let Ok(req) = read_frame_timeout::<TunnelRequest, _>(&mut s.recv, &cfg, T).await else { continue };
                let resp = match req {
                    TunnelRequest::Health => TunnelResponse::Health(HealthReport {
                        ready: true,
                        details: vec![("driver".into(), "ok".into()), ("policy".into(), "applied".into())],
                    }),
                    TunnelRequest::ConnectionTable => TunnelResponse::ConnectionTable(table.clone()),
                    TunnelRequest::ConfigDump => TunnelResponse::ConfigDump("{}".into()),
                };
                let _ = write_frame(&mut s.send, &resp, &cfg).await;
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
    FakeDaemon { id: att.daemon_id, conn }
}
