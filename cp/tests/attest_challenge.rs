//! The challenge round of proof-of-possession attestation over the real daemon endpoint (QUIC
//! and TCP+TLS), with a raw protocol client: the Verifier is created through the API, the
//! daemon answers the challenge and then uses its templated (multi-segment) identity over
//! mTLS; out-of-order frames and wrong answers get typed refusals.

mod common;
#[path = "attest_support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use riptides_cp::ControlPlane;
use riptides_wire::proto::messages::*;
use riptides_wire::proto::{read_frame_timeout, write_frame, FrameConfig, ALPN};
use riptides_wire::tls::{client_config, spki_sha256, ExpectedId, ServerTrust};
use riptides_wire::transport::{connect_quic, connect_tcp_tls, Connection, TransportConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;

const T: Duration = Duration::from_secs(10);

async fn connect(
    cp: &ControlPlane,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    tcp: bool,
) -> Arc<dyn Connection> {
    let trust = ServerTrust::Pin(spki_sha256(cp.ca().bundle().roots()[0].as_ref()).unwrap());
    let id = ExpectedId::Exact(cp.ca().trust_domain().workload_id("riptides/controlplane").unwrap());
    let tls = client_config(trust, id, client, &[ALPN]).unwrap();
    let cfg = TransportConfig::default();
    if tcp {
        connect_tcp_tls(cp.tunnel_addr(), tls, "riptides-controlplane", &cfg).await.unwrap()
    } else {
        connect_quic("127.0.0.1:0".parse().unwrap(), cp.quic_addr(), tls, &cfg).await.unwrap()
    }
}

fn request(leaf: &support::Leaf, csr_der: Vec<u8>) -> Request {
    Request::AttestProof(ProofAttestRequest {
        verifier: None,
        proof: ProofMsg::X509Pop { chain_der: leaf.chain_der.clone() },
        csr_der,
        host: HostInfo { hostname: "pop-host".into(), ..Default::default() },
    })
}

/// Sends `req`, expects a challenge, answers with `answer(nonce)`, returns the verdict.
async fn round(conn: &dyn Connection, req: &Request, answer: impl Fn(&[u8]) -> Request) -> Response {
    let f = FrameConfig::default();
    let mut s = conn.open_bi().await.unwrap();
    write_frame(&mut s.send, req, &f).await.unwrap();
    let c = read_frame_timeout::<Response, _>(&mut s.recv, &f, T).await.unwrap().expect_challenge().unwrap();
    assert_eq!(c.nonce.len(), 32);
    write_frame(&mut s.send, &answer(&c.nonce), &f).await.unwrap();
    read_frame_timeout(&mut s.recv, &f, T).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_challenge_round_over_quic_and_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let cp = common::start(dir.path()).await;
    let ca = support::X509Ca::new("fleet");
    let v = json!({"apiVersion": "auth.riptides.io/v1alpha1", "kind": "Verifier",
        "metadata": {"name": "x509", "namespace": "riptides-system"},
        "spec": {"method": "X509CertPOP", "workloadIDTemplate": "riptides/daemon/x509/{{cn}}",
                 "x509CertPOP": {"caBundle": ca.pem}}});
    common::admin(&cp).create(common::rt("verifiers"), "riptides-system", &v).await.unwrap();

    for (tcp, cn) in [(false, "quic-host"), (true, "tcp-host")] {
        let leaf = ca.leaf(cn);
        let (csr_der, csr_key) = support::csr();
        let conn = connect(&cp, None, tcp).await;
        let att = round(conn.as_ref(), &request(&leaf, csr_der.clone()), |nonce| {
            Request::ChallengeAnswer(ChallengeAnswerMsg {
                signature: leaf.sign(&challenge_payload("X509CertPOP", nonce, &csr_key)),
            })
        })
        .await
        .expect_attested()
        .expect("attested");
        assert_eq!(att.spiffe_id, format!("spiffe://example.com/riptides/daemon/x509/{cn}"));
        // A signature over another nonce (a recorded answer) does not answer this challenge.
        let conn = connect(&cp, None, tcp).await;
        let refused = round(conn.as_ref(), &request(&leaf, csr_der), |_| {
            let sig = leaf.sign(&challenge_payload("X509CertPOP", &[0u8; 32], &csr_key));
            Request::ChallengeAnswer(ChallengeAnswerMsg { signature: sig })
        })
        .await;
        match refused {
            Response::Error(e) => {
                assert_eq!(e.code, ErrorCode::InvalidProof);
                assert!(e.message.contains("challenge"), "{}", e.message);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_uses_its_templated_identity_and_bad_rounds_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cp = common::start(dir.path()).await;
    let ca = support::X509Ca::new("fleet");
    let v = json!({"apiVersion": "auth.riptides.io/v1alpha1", "kind": "Verifier",
        "metadata": {"name": "x509", "namespace": "riptides-system"},
        "spec": {"method": "X509CertPOP", "workloadIDTemplate": "riptides/daemon/x509/{{cn}}/{{id}}",
                 "x509CertPOP": {"caBundle": ca.pem}}});
    common::admin(&cp).create(common::rt("verifiers"), "riptides-system", &v).await.unwrap();
    let f = FrameConfig::default();
    let leaf = ca.leaf("node-7");

    // Attest with a key we keep, then connect with the SVID: the control plane resolves the
    // multi-segment ID to its Daemon and serves daemon requests.
    let key = rcgen::KeyPair::generate().unwrap();
    let csr_der = rcgen::CertificateParams::default().serialize_request(&key).unwrap().der().to_vec();
    let csr_key = riptides_wire::resource::auth::sha256_tagged(&rcgen::PublicKeyData::subject_public_key_info(&key));
    let conn = connect(&cp, None, false).await;
    let att = round(conn.as_ref(), &request(&leaf, csr_der), |nonce| {
        Request::ChallengeAnswer(ChallengeAnswerMsg {
            signature: leaf.sign(&challenge_payload("X509CertPOP", nonce, &csr_key)),
        })
    })
    .await
    .expect_attested()
    .unwrap();
    assert!(att.spiffe_id.starts_with("spiffe://example.com/riptides/daemon/x509/node-7/x509-"), "{}", att.spiffe_id);
    let chain: Vec<CertificateDer<'static>> = att.svid_chain_der.into_iter().map(CertificateDer::from).collect();
    let pk = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mtls = connect(&cp, Some((chain, pk)), false).await;
    let mut s = mtls.open_bi().await.unwrap();
    let report = Request::ReportStatus(DaemonStatusReport { version: "t".into(), ..Default::default() });
    write_frame(&mut s.send, &report, &f).await.unwrap();
    read_frame_timeout::<Response, _>(&mut s.recv, &f, T).await.unwrap().expect_ack().expect("served as a daemon");

    // A challenge answer out of the blue.
    let conn = connect(&cp, None, false).await;
    let mut s = conn.open_bi().await.unwrap();
    write_frame(&mut s.send, &Request::ChallengeAnswer(ChallengeAnswerMsg { signature: vec![1] }), &f).await.unwrap();
    let e = read_frame_timeout::<Response, _>(&mut s.recv, &f, T).await.unwrap();
    assert!(matches!(e, Response::Error(ref e) if e.code == ErrorCode::BadRequest), "{e:?}");
    // Something else where the answer belongs.
    let (csr_der, _) = support::csr();
    let r = round(conn.as_ref(), &request(&leaf, csr_der), |_| Request::Ping).await;
    assert!(
        matches!(r, Response::Error(ref e) if e.code == ErrorCode::BadRequest && e.message.contains("ChallengeAnswer")),
        "{r:?}"
    );
}
