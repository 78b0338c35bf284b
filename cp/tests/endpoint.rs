//! The daemon endpoint, driven by a raw protocol client over real QUIC and TCP+TLS: attestation
//! and its refusals, mutual TLS afterwards, workload CSR authorization, policy push latency,
//! the tunnel, and garbage from the network.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use riptides_cp::ControlPlane;
use riptides_wire::proto::messages::*;
use riptides_wire::proto::{read_frame_timeout, write_frame, FrameConfig, ALPN};
use riptides_wire::tls::{client_config, spki_sha256, ExpectedId, ServerTrust};
use riptides_wire::transport::{connect_quic, connect_tcp_tls, Connection, TransportConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const T: Duration = Duration::from_secs(10);

struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn csr(id: Option<&str>) -> (Vec<u8>, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    if let Some(id) = id {
        params.subject_alt_names = vec![rcgen::SanType::URI(id.try_into().unwrap())];
    }
    let der = params.serialize_request(&key).unwrap().der().to_vec();
    (der, key)
}

fn pin(cp: &ControlPlane) -> ServerTrust {
    ServerTrust::Pin(spki_sha256(cp.ca().bundle().roots()[0].as_ref()).unwrap())
}

fn cp_id(cp: &ControlPlane) -> ExpectedId {
    ExpectedId::Exact(cp.ca().trust_domain().workload_id("riptides/controlplane").unwrap())
}

async fn connect(cp: &ControlPlane, trust: ServerTrust, who: Option<&Identity>, tcp: bool) -> Arc<dyn Connection> {
    let ident = who.map(|i| (i.chain.clone(), i.key.clone_key()));
    let tls = client_config(trust, cp_id(cp), ident, &[ALPN]).unwrap();
    let cfg = TransportConfig::default();
    if tcp {
        connect_tcp_tls(cp.tunnel_addr(), tls, "riptides-controlplane", &cfg).await.unwrap()
    } else {
        connect_quic("127.0.0.1:0".parse().unwrap(), cp.quic_addr(), tls, &cfg).await.unwrap()
    }
}

async fn call(conn: &dyn Connection, req: &Request) -> Response {
    let cfg = FrameConfig::default();
    let mut s = conn.open_bi().await.unwrap();
    write_frame(&mut s.send, req, &cfg).await.unwrap();
    read_frame_timeout(&mut s.recv, &cfg, T).await.unwrap()
}

fn attest_req(token: &str, csr_der: Vec<u8>) -> Request {
    Request::Attest(AttestRequest {
        token: token.into(),
        csr_der,
        host: HostInfo { hostname: "test-host".into(), ..Default::default() },
    })
}

/// Attests with `token` and returns the daemon id and its mTLS identity.
async fn attest(cp: &ControlPlane, token: &str, tcp: bool) -> (String, Identity) {
    let conn = connect(cp, pin(cp), None, tcp).await;
    let (der, key) = csr(None);
    let att = call(conn.as_ref(), &attest_req(token, der)).await.expect_attested().expect("attestation succeeds");
    assert!(att.spiffe_id.starts_with("spiffe://example.com/riptides/daemon/"));
    let chain = att.svid_chain_der.into_iter().map(CertificateDer::from).collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (att.daemon_id, Identity { chain, key })
}

fn code(r: Response) -> ErrorCode {
    match r {
        Response::Error(e) => e.code,
        other => panic!("expected an error, got {}", other.kind()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attestation_tokens_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let token = create_token(&cp, "tok-a", 600, Some("node-a")).await;
    let (id, _) = attest(&cp, &token, false).await;
    assert_eq!(id, "node-a");
    let daemon = admin(&cp).get(rt("daemons"), "riptides-system", "node-a").await.unwrap();
    assert_eq!(daemon["spec"]["spiffeID"], "spiffe://example.com/riptides/daemon/node-a");

    let conn = connect(&cp, pin(&cp), None, false).await;
    // Replay, sequential.
    assert_eq!(code(call(conn.as_ref(), &attest_req(&token, csr(None).0)).await), ErrorCode::TokenUsed);
    // Wrong secret and unknown token look the same.
    assert_eq!(code(call(conn.as_ref(), &attest_req("tok-a.00", csr(None).0)).await), ErrorCode::InvalidToken);
    assert_eq!(code(call(conn.as_ref(), &attest_req("nope.00", csr(None).0)).await), ErrorCode::InvalidToken);
    // A retry with the same key after a lost answer gets the same identity again; a
    // different key does not.
    let retry_tok = create_token(&cp, "tok-retry", 600, None).await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr_of = |k: &rcgen::KeyPair| rcgen::CertificateParams::default().serialize_request(k).unwrap().der().to_vec();
    let first = call(conn.as_ref(), &attest_req(&retry_tok, csr_of(&key))).await.expect_attested().unwrap();
    let again = call(conn.as_ref(), &attest_req(&retry_tok, csr_of(&key))).await.expect_attested().unwrap();
    assert_eq!(first.daemon_id, again.daemon_id, "the retry is the same daemon");
    assert_eq!(first.spiffe_id, again.spiffe_id);
    assert_eq!(code(call(conn.as_ref(), &attest_req(&retry_tok, csr(None).0)).await), ErrorCode::TokenUsed);
    let daemons = admin(&cp).list(rt("daemons"), Some("riptides-system")).await.unwrap();
    assert_eq!(daemons.items.iter().filter(|d| d["metadata"]["name"] == first.daemon_id.as_str()).count(), 1);
    // Expired.
    let expired = create_token(&cp, "tok-old", -5, None).await;
    assert_eq!(code(call(conn.as_ref(), &attest_req(&expired, csr(None).0)).await), ErrorCode::TokenExpired);
    // A garbage CSR does not burn the token.
    let fresh = create_token(&cp, "tok-b", 600, None).await;
    assert_eq!(code(call(conn.as_ref(), &attest_req(&fresh, b"not a csr".to_vec())).await), ErrorCode::InvalidCsr);
    // Concurrent replay: exactly one of many racing attempts wins.
    let mut racers = Vec::new();
    for _ in 0..12 {
        let conn = conn.clone();
        let fresh = fresh.clone();
        racers.push(tokio::spawn(async move { call(conn.as_ref(), &attest_req(&fresh, csr(None).0)).await }));
    }
    let mut wins = 0;
    for r in racers {
        match r.await.unwrap() {
            Response::Attested(_) => wins += 1,
            Response::Error(e) => assert_eq!(e.code, ErrorCode::TokenUsed),
            other => panic!("unexpected {}", other.kind()),
        }
    }
    assert_eq!(wins, 1);
    // Without a client certificate nothing but attestation is allowed.
    let req =
        Request::SignWorkload(WorkloadCsr { workload_id: "frontend".into(), csr_der: csr(None).0, ttl_secs: None });
    assert_eq!(code(call(conn.as_ref(), &req).await), ErrorCode::Unauthorized);
    assert_eq!(code(call(conn.as_ref(), &Request::WatchPolicy { resume_from: None }).await), ErrorCode::Unauthorized);
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pin_or_bundle_is_refused_in_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let tls = client_config(ServerTrust::Pin([7u8; 32]), cp_id(&cp), None, &[ALPN]).unwrap();
    let r = connect_quic("127.0.0.1:0".parse().unwrap(), cp.quic_addr(), tls, &TransportConfig::default()).await;
    assert!(r.is_err(), "a wrong pin must fail the handshake");
    let other = tempfile::tempdir().unwrap();
    let other_ca = riptides_cp::ca::Ca::open(
        other.path(),
        riptides_cp::ca::CaConfig::new(cp.ca().trust_domain().clone()),
        SystemTime::now(),
    )
    .unwrap();
    let tls = client_config(ServerTrust::Bundle(other_ca.bundle().roots()), cp_id(&cp), None, &[ALPN]).unwrap();
    let r = connect_tcp_tls(cp.tunnel_addr(), tls, "riptides-controlplane", &TransportConfig::default()).await;
    match r {
        Err(_) => {}
        Ok(c) => {
            // TLS 1.3 clients learn of a failed server verification only when they use the link.
            let mut s = c.open_bi().await;
            if let Ok(s) = s.as_mut() {
                let w = write_frame(&mut s.send, &Request::Ping, &FrameConfig::default()).await;
                let rd = read_frame_timeout::<Response, _>(&mut s.recv, &FrameConfig::default(), T).await;
                assert!(w.is_err() || rd.is_err(), "a foreign bundle must not reach the control plane");
            }
        }
    }
    cp.shutdown().await;
}

async fn daemon_session(tcp: bool) {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let api = admin(&cp);
    let token = create_token(&cp, "tok", 600, Some("node-1")).await;
    let (id, ident) = attest(&cp, &token, tcp).await;
    let bundle = ServerTrust::Bundle(cp.ca().bundle().roots());
    let conn = connect(&cp, bundle, Some(&ident), tcp).await;

    // Answer tunnel streams the control plane opens.
    {
        let conn = conn.clone();
        tokio::spawn(async move {
            let cfg = FrameConfig::default();
            while let Ok(mut s) = conn.accept_bi().await {
                let req: TunnelRequest = read_frame_timeout(&mut s.recv, &cfg, T).await.unwrap();
                let resp = match req {
                    TunnelRequest::Health => TunnelResponse::Health(HealthReport {
                        ready: true,
                        details: vec![("policy".into(), "applied".into())],
                    }),
                    TunnelRequest::ConnectionTable => TunnelResponse::ConnectionTable(vec![]),
                    TunnelRequest::ConfigDump => TunnelResponse::ConfigDump("{\"ok\":true}".into()),
                };
                write_frame(&mut s.send, &resp, &cfg).await.unwrap();
            }
        });
    }
    assert!(matches!(call(conn.as_ref(), &Request::Ping).await, Response::Pong));

    // Policy: snapshot, then a change applied through the API arrives quickly.
    let cfg = FrameConfig::default();
    let mut policy = conn.open_bi().await.unwrap();
    write_frame(&mut policy.send, &Request::WatchPolicy { resume_from: None }, &cfg).await.unwrap();
    let first = read_frame_timeout::<Response, _>(&mut policy.recv, &cfg, T).await.unwrap().expect_policy().unwrap();
    assert!(matches!(first, PolicyUpdate::Snapshot { .. }));
    let mut wi = yaml(SEED_WORKLOAD);
    wi["spec"]["scope"] = serde_json::json!({"daemon": {"id": id}});
    let applied = Instant::now();
    api.create(rt("wi"), "riptides-system", &wi).await.unwrap();
    let delta = read_frame_timeout::<Response, _>(&mut policy.recv, &cfg, T).await.unwrap().expect_policy().unwrap();
    let latency = applied.elapsed();
    let PolicyUpdate::Delta { upserts, .. } = delta else { panic!("expected a delta") };
    assert_eq!(upserts.len(), 1);
    eprintln!("policy push latency over {}: {latency:?}", if tcp { "tcp" } else { "quic" });
    assert!(latency < Duration::from_secs(1), "a change must reach the daemon within one second, took {latency:?}");

    // Workload CSRs: in scope yes, others no.
    let (der, _) = csr(Some("spiffe://example.com/frontend"));
    let svid = call(
        conn.as_ref(),
        &Request::SignWorkload(WorkloadCsr { workload_id: "frontend".into(), csr_der: der, ttl_secs: Some(600) }),
    )
    .await
    .expect_svid()
    .unwrap();
    assert_eq!(svid.spiffe_id, "spiffe://example.com/frontend");
    // The WorkloadIdentity's spec.svid.x509.dnsNames are granted as DNS SANs.
    let (_, leaf) = x509_parser::parse_x509_certificate(&svid.chain_der[0]).unwrap();
    let sans: Vec<String> =
        leaf.subject_alternative_name().unwrap().unwrap().value.general_names.iter().map(|n| n.to_string()).collect();
    assert!(sans.iter().any(|n| n.contains("frontend.internal.example.com")), "{sans:?}");
    assert!(sans.iter().any(|n| n.contains("spiffe://example.com/frontend")), "{sans:?}");
    let (der, _) = csr(None);
    let r = call(
        conn.as_ref(),
        &Request::SignWorkload(WorkloadCsr { workload_id: "payments".into(), csr_der: der, ttl_secs: None }),
    )
    .await;
    assert_eq!(code(r), ErrorCode::Unauthorized);
    let (der, _) = csr(None);
    let r = call(
        conn.as_ref(),
        &Request::SignWorkload(WorkloadCsr {
            workload_id: "riptides/daemon/other".into(),
            csr_der: der,
            ttl_secs: None,
        }),
    )
    .await;
    assert_eq!(code(r), ErrorCode::Unauthorized);
    // The daemon renews its own SVID over mTLS.
    let (der, _) = csr(None);
    let renewed = call(conn.as_ref(), &Request::RenewDaemonSvid { csr_der: der }).await.expect_svid().unwrap();
    assert_eq!(renewed.spiffe_id, format!("spiffe://example.com/riptides/daemon/{id}"));
    // Status report, then the Daemon resource shows it.
    let report = DaemonStatusReport {
        version: "0.1.0".into(),
        dataplane: "none".into(),
        daemon_healthy: true,
        driver_healthy: None,
        policy_revision: Some(delta_rev(&first)),
    };
    assert!(matches!(call(conn.as_ref(), &Request::ReportStatus(report)).await, Response::Ack));
    let d = api.get(rt("daemons"), "riptides-system", &id).await.unwrap();
    assert_eq!(d["status"]["connected"], true);
    assert_eq!(d["status"]["transport"], if tcp { "tcp" } else { "quic" });
    assert_eq!(d["status"]["version"], "0.1.0");

    // The tunnel: the API asks the daemon over its own connection.
    let (code_, body) = api
        .raw_get(&format!("/apis/core.riptides.io/v1alpha1/namespaces/riptides-system/daemons/{id}/tunnel/health"))
        .await
        .unwrap();
    assert_eq!(code_, 200, "{}", String::from_utf8_lossy(&body));
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["ready"], true);
    let (code_, _) = api
        .raw_get("/apis/core.riptides.io/v1alpha1/namespaces/riptides-system/daemons/ghost/tunnel/health")
        .await
        .unwrap();
    assert_eq!(code_, 503);

    // Closing the connection marks the daemon disconnected.
    conn.close("test done");
    let mut disconnected = false;
    for _ in 0..100 {
        let d = api.get(rt("daemons"), "riptides-system", &id).await.unwrap();
        if d["status"]["connected"] == false {
            disconnected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(disconnected, "the daemon must be shown disconnected");
    cp.shutdown().await;
}

fn delta_rev(u: &PolicyUpdate) -> u64 {
    u.revision()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_session_over_quic() {
    daemon_session(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_session_over_tcp_tls() {
    daemon_session(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_get_typed_errors_and_the_connection_survives() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let conn = connect(&cp, pin(&cp), None, false).await;
    let cfg = FrameConfig::default();
    // Oversized length prefix: refused before allocation.
    let mut s = conn.open_bi().await.unwrap();
    s.send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let r: Response = read_frame_timeout(&mut s.recv, &cfg, T).await.unwrap();
    assert_eq!(code(r), ErrorCode::BadRequest);
    // Undecodable body with a valid prefix and version.
    let mut s = conn.open_bi().await.unwrap();
    let mut frame = 10u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&1u16.to_be_bytes());
    frame.extend_from_slice(&[0xff; 8]);
    s.send.write_all(&frame).await.unwrap();
    let r: Response = read_frame_timeout(&mut s.recv, &cfg, T).await.unwrap();
    assert_eq!(code(r), ErrorCode::BadRequest);
    // Wrong protocol version.
    let mut s = conn.open_bi().await.unwrap();
    let mut frame = 3u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&99u16.to_be_bytes());
    frame.push(5);
    s.send.write_all(&frame).await.unwrap();
    let r: Response = read_frame_timeout(&mut s.recv, &cfg, T).await.unwrap();
    assert_eq!(code(r), ErrorCode::BadRequest);
    // A stream that never sends anything is dropped by the server's request timeout, and the
    // connection still serves other streams meanwhile.
    let _idle = conn.open_bi().await.unwrap();
    assert!(matches!(call(conn.as_ref(), &Request::Ping).await, Response::Pong));
    cp.shutdown().await;
}

/// 200 daemons (protocol-level simulations, each with its own QUIC connections, key and SVID)
/// attest against one control plane and receive their policy; prints the time it took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_daemons_attest_and_receive_policy() {
    const N: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let cp = Arc::new(start(dir.path()).await);
    // One group-scoped identity so every daemon's snapshot has content.
    let mut wi = yaml(SEED_WORKLOAD);
    wi["spec"]["scope"] = serde_json::json!({"daemonGroup": {"id": "fleet"}});
    admin(&cp).create(rt("wi"), "riptides-system", &wi).await.unwrap();
    let mut tokens = Vec::new();
    for i in 0..N {
        tokens.push(create_token(&cp, &format!("t{i}"), 600, Some(&format!("sim-{i}"))).await);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for token in tokens {
        let cp = cp.clone();
        tasks.push(tokio::spawn(async move {
            let (_id, ident) = attest(&cp, &token, false).await;
            let conn = connect(&cp, ServerTrust::Bundle(cp.ca().bundle().roots()), Some(&ident), false).await;
            let cfg = FrameConfig::default();
            let mut s = conn.open_bi().await.unwrap();
            write_frame(&mut s.send, &Request::WatchPolicy { resume_from: None }, &cfg).await.unwrap();
            let first = read_frame_timeout::<Response, _>(&mut s.recv, &cfg, Duration::from_secs(60))
                .await
                .unwrap()
                .expect_policy()
                .unwrap();
            let PolicyUpdate::Snapshot { document, .. } = first else { panic!("snapshot expected") };
            // Group scope is not set on these daemons, so only Services would be in it; the
            // document must at least carry the trust bundle.
            assert!(!document.bundle.roots_der.is_empty());
            conn
        }));
    }
    let mut conns = Vec::new();
    for t in tasks {
        conns.push(t.await.unwrap());
    }
    let took = started.elapsed();
    eprintln!("{N} daemons attested and received policy in {took:?}");
    let list = admin(&cp).list(rt("daemons"), Some("riptides-system")).await.unwrap();
    assert_eq!(list.items.len(), N);
    drop(conns);
    Arc::try_unwrap(cp).ok().expect("no other owners").shutdown().await;
}

/// The handshake checks the client certificate once; a daemon connection that outlives its
/// SVID gets refused on the next request instead of being served on a stale identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_after_the_daemon_svid_expired_are_refused() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut config = riptides_cp::Config::for_tests(dir.path());
    config.daemon_svid_ttl = Duration::from_secs(2);
    let cp = ControlPlane::start(config).await.unwrap();
    let token = create_token(&cp, "tok", 600, Some("node-1")).await;
    let (_, ident) = attest(&cp, &token, false).await;
    let conn = connect(&cp, ServerTrust::Bundle(cp.ca().bundle().roots()), Some(&ident), false).await;
    assert!(matches!(call(conn.as_ref(), &Request::ReportStatus(DaemonStatusReport::default())).await, Response::Ack));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = call(conn.as_ref(), &Request::RenewDaemonSvid { csr_der: csr(None).0 }).await;
    match r {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::Unauthorized);
            assert!(e.message.contains("expired"), "{}", e.message);
        }
        other => panic!("expected a refusal, got {}", other.kind()),
    }
    cp.shutdown().await;
}
