//! The daemon against a real in-process control plane on loopback.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use riptides_node::{Daemon, Problem, TransportKind};
use riptides_wire::proto::messages::TunnelRequest;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attestation_restart_without_token_and_admin() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start_cp(cp_config(&dir.path().join("cp"), None)).await;
    let token = create_token(&cp, "tok-attest", Some("node-1"), 600).await;
    put(&cp, workload_identity("web", "web", "node-1")).await;
    let data = dir.path().join("node");
    let cfg = daemon_config(cp.quic_addr(), cp.tunnel_addr(), &data, Some(ca_pin(&cp)), Some(token));

    let t0 = Instant::now();
    let d = Daemon::start(cfg.clone()).await.unwrap();
    let s = d
        .wait_for(T, |s| {
            s.connected && s.policy_revision.is_some() && s.identities.iter().any(|i| i.kind == "workload")
        })
        .await
        .unwrap();
    println!("attested, connected, policy + workload SVID in {:?}", t0.elapsed());
    assert_eq!(s.daemon_id.as_deref(), Some("node-1"));
    assert_eq!(s.spiffe_id.as_deref(), Some("spiffe://example.com/riptides/daemon/node-1"));
    assert_eq!(s.transport, Some(TransportKind::Quic));
    assert_eq!(s.snapshots, 1);
    assert!(s.identities.iter().any(|i| i.spiffe_id == "spiffe://example.com/web"));
    // The Daemon resource exists.
    let daemon = get_daemon(&cp, "node-1").await.expect("Daemon resource created at attestation");
    assert_eq!(daemon["spec"]["id"], "node-1");
    // SVID, key (0600), bundle, policy on disk.
    let mode = std::fs::metadata(data.join("daemon.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "daemon key mode");
    assert!(std::fs::read_to_string(data.join("daemon.pem")).unwrap().contains("BEGIN CERTIFICATE"));
    assert!(data.join("bundle.pem").exists() && data.join("policy.json").exists());
    // Status reached the CP.
    let deadline = Instant::now() + T;
    loop {
        let d = get_daemon(&cp, "node-1").await.unwrap();
        if d["status"]["policyRevision"].as_u64() == s.policy_revision {
            break;
        }
        assert!(Instant::now() < deadline, "status never reported: {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Admin endpoints.
    let admin = d.admin_addr().unwrap();
    assert_eq!(http_get(admin, "/healthz").await.0, 200);
    assert_eq!(http_get(admin, "/readyz").await.0, 200);
    let (code, dump) = http_get(admin, "/config_dump").await;
    assert_eq!(code, 200);
    assert!(dump.contains("spiffe://example.com/web") && dump.contains("notAfter"), "{dump}");
    assert!(!dump.contains("PRIVATE"), "config_dump must never contain keys");
    let (code, metrics) = http_get(admin, "/metrics").await;
    assert_eq!(code, 200);
    assert!(metrics.contains("riptides_daemon_connected 1"), "{metrics}");
    assert!(metrics.contains("riptides_daemon_svid_expiry_seconds{"), "{metrics}");
    // Tunnel: the CP asks the daemon over the connection the daemon dialed.
    let health = riptides_cp::endpoint::tunnel_request(cp.sessions_supervisor(), "node-1", TunnelRequest::Health)
        .await
        .unwrap()
        .expect_health()
        .unwrap();
    assert!(health.ready, "{health:?}");
    let table =
        riptides_cp::endpoint::tunnel_request(cp.sessions_supervisor(), "node-1", TunnelRequest::ConnectionTable)
            .await
            .unwrap()
            .expect_connection_table()
            .unwrap();
    assert!(table.is_empty());
    let dump = riptides_cp::endpoint::tunnel_request(cp.sessions_supervisor(), "node-1", TunnelRequest::ConfigDump)
        .await
        .unwrap()
        .expect_config_dump()
        .unwrap();
    assert!(dump.contains("spiffe://example.com/riptides/daemon/node-1"));
    d.shutdown().await;

    // Restart without a token (and without pin): reconnects over mTLS with the persisted SVID.
    let mut again = cfg.clone();
    again.join_token = None;
    again.ca = None;
    let t0 = Instant::now();
    let d = Daemon::start(again).await.unwrap();
    let s = d.wait_for(T, |s| s.connected).await.unwrap();
    println!("restarted daemon reconnected without a token in {:?}", t0.elapsed());
    assert_eq!(s.daemon_id.as_deref(), Some("node-1"));
    // Resumed from its persisted revision: no new snapshot.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(d.snapshots_received(), 0, "resume after restart must not need a snapshot");
    d.shutdown().await;
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_svids_rotation_policy_latency() {
    let dir = tempfile::tempdir().unwrap();
    // 8 s SVIDs: rotation at ~4 s (+-10%).
    let cp = start_cp(cp_config(&dir.path().join("cp"), Some(Duration::from_secs(8)))).await;
    let token = create_token(&cp, "tok-rot", Some("node-2"), 600).await;
    put(&cp, workload_identity("web", "web", "node-2")).await;
    put(&cp, workload_identity("other", "other", "node-elsewhere")).await;
    let cfg = daemon_config(cp.quic_addr(), cp.tunnel_addr(), &dir.path().join("node"), Some(ca_pin(&cp)), Some(token));
    let d = Daemon::start(cfg).await.unwrap();
    let s = d.wait_for(T, |s| s.identities.iter().any(|i| i.spiffe_id == "spiffe://example.com/web")).await.unwrap();
    assert!(
        !s.identities.iter().any(|i| i.spiffe_id.ends_with("/other")),
        "out-of-scope identity issued: {:?}",
        s.identities
    );
    let first = s.identities.iter().find(|i| i.spiffe_id.ends_with("/web")).unwrap().clone();
    // Rotation on the short TTL.
    let t0 = Instant::now();
    let s =
        d.wait_for(T, |s| s.identities.iter().any(|i| i.spiffe_id.ends_with("/web") && i.issued >= 2)).await.unwrap();
    let second = s.identities.iter().find(|i| i.spiffe_id.ends_with("/web")).unwrap();
    assert!(second.not_after > first.not_after);
    println!(
        "workload SVID rotated after {:?} (lifetime {} s incl. 10 s backdate)",
        t0.elapsed(),
        first.not_after - first.not_before
    );
    // The daemon SVID rotates too.
    d.wait_for(T, |s| s.daemon_identity().is_some_and(|i| i.issued >= 2)).await.unwrap();
    assert_eq!(d.status().csr_failures, 0);

    // Policy change through the store reaches the daemon: measure.
    let rev0 = d.policy_revision().unwrap();
    let t0 = Instant::now();
    put(&cp, workload_identity("api", "api", "node-2")).await;
    let s = d
        .wait_for(T, |s| {
            s.policy_revision > Some(rev0) && s.policy.items.iter().any(|i| format!("{i:?}").contains("\\\"api\\\""))
        })
        .await
        .unwrap();
    let latency = t0.elapsed();
    println!(
        "policy change reached the daemon in {latency:?} (revision {rev0} -> {:?}, deltas {})",
        s.policy_revision, s.deltas
    );
    assert!(s.deltas >= 1);
    assert!(latency < Duration::from_secs(1), "policy push took {latency:?}");
    d.wait_for(T, |s| s.identities.iter().any(|i| i.spiffe_id == "spiffe://example.com/api")).await.unwrap();
    println!("SVID for the new identity after {:?}", t0.elapsed());
    // Removing the identity drops its SVID.
    delete(&cp, workload_identity("web", "web", "node-2")).await;
    d.wait_for(T, |s| !s.identities.iter().any(|i| i.spiffe_id.ends_with("/web"))).await.unwrap();
    d.shutdown().await;
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cp_restart_resumes_with_delta_and_static_stability() {
    let dir = tempfile::tempdir().unwrap();
    let cp_dir = dir.path().join("cp");
    let cp = start_cp(cp_config(&cp_dir, None)).await;
    let token = create_token(&cp, "tok-restart", Some("node-3"), 600).await;
    put(&cp, workload_identity("web", "web", "node-3")).await;
    let (quic, tunnel) = (cp.quic_addr(), cp.tunnel_addr());
    let d = Daemon::start(daemon_config(quic, tunnel, &dir.path().join("node"), Some(ca_pin(&cp)), Some(token)))
        .await
        .unwrap();
    let s = d.wait_for(T, |s| s.connected && s.policy_revision.is_some() && s.identities.len() == 2).await.unwrap();
    assert_eq!(s.snapshots, 1);
    let rev = s.policy_revision;

    // CP down: the daemon keeps serving its policy and identities.
    let restart_cfg = same_ports(cp_config(&cp_dir, None), &cp);
    cp.shutdown().await;
    let t_down = Instant::now();
    d.wait_for(T, |s| !s.connected).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = d.status();
    assert_eq!(s.policy_revision, rev);
    assert_eq!(s.identities.len(), 2, "cached identities kept while the CP is down");
    let admin = d.admin_addr().unwrap();
    assert_eq!(http_get(admin, "/readyz").await.0, 200, "ready on cached state");
    assert!(http_get(admin, "/config_dump").await.1.contains("spiffe://example.com/web"));

    // CP back on the same ports: reconnect (jittered backoff) and resume without a snapshot.
    let cp = start_cp(restart_cfg).await;
    let t_up = Instant::now();
    let s = d.wait_for(T, |s| s.connected).await.unwrap();
    println!(
        "CP down {:?}; daemon reconnected {:?} after the CP came back (reconnects {})",
        t_up - t_down,
        t_up.elapsed(),
        s.reconnects
    );
    assert!(s.reconnects >= 1);
    put(&cp, workload_identity("api", "api", "node-3")).await;
    let s = d.wait_for(T, |s| s.policy_revision > rev && s.deltas >= 1).await.unwrap();
    assert_eq!(s.snapshots, 1, "resumed with deltas, not a new snapshot");
    d.shutdown().await;
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_blocked_falls_back_to_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start_cp(cp_config(&dir.path().join("cp"), None)).await;
    let token = create_token(&cp, "tok-udp", Some("node-4"), 600).await;
    // A UDP socket that swallows everything: QUIC handshakes time out.
    let (hole_addr, _, sink) = udp_black_hole().await;
    let mut cfg = daemon_config(hole_addr, cp.tunnel_addr(), &dir.path().join("node"), Some(ca_pin(&cp)), Some(token));
    cfg.quic_connect_timeout = Duration::from_secs(1);
    let t0 = Instant::now();
    let d = Daemon::start(cfg).await.unwrap();
    let s = d.wait_for(T, |s| s.connected && s.policy_revision.is_some()).await.unwrap();
    println!("attested and connected over TCP+TLS with UDP blocked in {:?}", t0.elapsed());
    assert_eq!(s.transport, Some(TransportKind::TcpTls));
    assert!(s.daemon_identity().is_some());
    d.shutdown().await;
    sink.abort();
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_stability_at_start_and_expired_svid() {
    let dir = tempfile::tempdir().unwrap();
    let cp_dir = dir.path().join("cp");
    // Short SVIDs so the daemon's can expire while it is down.
    let cp = start_cp(cp_config(&cp_dir, Some(Duration::from_secs(4)))).await;
    let token = create_token(&cp, "tok-static", Some("node-5"), 600).await;
    put(&cp, workload_identity("web", "web", "node-5")).await;
    let data = dir.path().join("node");
    let cfg = daemon_config(cp.quic_addr(), cp.tunnel_addr(), &data, Some(ca_pin(&cp)), Some(token.clone()));
    let d = Daemon::start(cfg.clone()).await.unwrap();
    let s = d.wait_for(T, |s| s.connected && s.policy_revision.is_some() && s.identities.len() == 2).await.unwrap();
    let rev = s.policy_revision;
    d.shutdown().await;
    let restart_cfg = same_ports(cp_config(&cp_dir, Some(Duration::from_secs(4))), &cp);
    cp.shutdown().await;

    // CP unreachable: a fresh daemon process serves its cached policy and identities at once.
    let mut offline = cfg.clone();
    offline.join_token = None;
    let d = Daemon::start(offline.clone()).await.unwrap();
    let s = d.wait_for(Duration::from_secs(5), |s| s.admin_addr.is_some() && !s.identities.is_empty()).await.unwrap();
    assert!(!s.connected);
    assert_eq!(s.policy_revision, rev);
    assert!(s.identities.iter().any(|i| i.kind == "daemon"));
    let dump = http_get(s.admin_addr.unwrap(), "/config_dump").await.1;
    assert!(dump.contains("\"revision\""), "{dump}");
    d.shutdown().await;

    // Wait until the persisted SVIDs have expired (4 s TTL), then start with the CP up but no
    // token: the daemon says exactly what to do.
    let not_after = s.daemon_identity().unwrap().not_after_time();
    while SystemTime::now() < not_after + Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cp = start_cp(restart_cfg).await;
    let d = Daemon::start(offline.clone()).await.unwrap();
    let s = d.wait_for(T, |s| s.problem.is_some()).await.unwrap();
    let Some(Problem::NeedsJoinToken(msg)) = &s.problem else { panic!("{:?}", s.problem) };
    assert!(msg.contains("riptides token create") && msg.contains("--join-token"), "{msg}");
    let (code, body) = http_get(s.admin_addr.unwrap(), "/readyz").await;
    assert_eq!(code, 503);
    assert!(body.contains("riptides token create"), "{body}");
    println!("/readyz with an expired SVID and no token:\n{body}");
    d.shutdown().await;

    // The already-used token is refused by the CP, and the daemon surfaces it.
    let mut used = offline.clone();
    used.join_token = Some(token);
    let d = Daemon::start(used).await.unwrap();
    let s = d.wait_for(T, |s| s.problem.is_some()).await.unwrap();
    let Some(Problem::AttestationRefused(msg)) = &s.problem else { panic!("{:?}", s.problem) };
    assert!(msg.contains("already used") && msg.contains("riptides token create"), "{msg}");
    d.shutdown().await;

    // A fresh token re-attests (same data dir).
    let fresh = create_token(&cp, "tok-static-2", Some("node-5b"), 600).await;
    let mut ok = offline;
    ok.join_token = Some(fresh);
    let d = Daemon::start(ok).await.unwrap();
    let s = d.wait_for(T, |s| s.connected && s.problem.is_none()).await.unwrap();
    assert_eq!(s.daemon_id.as_deref(), Some("node-5b"));
    d.shutdown().await;
    cp.shutdown().await;
}

/// With several control-plane endpoints, one that swallows everything (QUIC datagrams dropped,
/// TCP accepted and never answered) does not hold up the next one: that is dialled beside it
/// after `endpoint_stagger`. Both connect timeouts are 120 s here, so dialling one endpoint
/// after the other could not connect within the 60 s wait. The first endpoint is random per
/// start (daemons spread over replicas): the daemon is restarted until it has started at the
/// silent one, which the silent socket sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_endpoint_does_not_hold_up_the_next_one() {
    use std::sync::atomic::Ordering;

    let dir = tempfile::tempdir().unwrap();
    let cp = start_cp(cp_config(&dir.path().join("cp"), None)).await;
    let token = create_token(&cp, "tok-stagger", Some("node-9"), 600).await;
    let (udp_addr, datagrams, sink) = udp_black_hole().await;
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let mute = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = tcp.accept().await {
            held.push(s);
        }
    });
    let mut cfg =
        daemon_config(cp.quic_addr(), cp.tunnel_addr(), &dir.path().join("node"), Some(ca_pin(&cp)), Some(token));
    cfg.controlplane = format!("{udp_addr},{}", cp.quic_addr());
    cfg.controlplane_tunnel = Some(format!("{tcp_addr},{}", cp.tunnel_addr()));
    cfg.quic_connect_timeout = Duration::from_secs(120);
    cfg.tcp_connect_timeout = Duration::from_secs(120);
    cfg.endpoint_stagger = Duration::from_millis(300);

    let mut starts_at_silent = 0;
    for _ in 0..12 {
        let before = datagrams.load(Ordering::SeqCst);
        let d = Daemon::start(cfg.clone()).await.unwrap();
        let s = d
            .wait_for(Duration::from_secs(60), |s| s.connected)
            .await
            .expect("connected to the answering endpoint despite the silent one");
        assert_eq!(s.transport, Some(TransportKind::Quic), "the answering endpoint over QUIC");
        d.shutdown().await;
        if datagrams.load(Ordering::SeqCst) > before {
            starts_at_silent += 1;
            break;
        }
    }
    assert_eq!(starts_at_silent, 1, "in 12 starts the daemon never began with the silent endpoint");
    sink.abort();
    mute.abort();
    cp.shutdown().await;
}

/// A loopback UDP socket that reads and drops every datagram (QUIC handshakes to it time
/// out): its address, how many datagrams it has swallowed, and the task to abort.
async fn udp_black_hole(
) -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>, tokio::task::JoinHandle<()>) {
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while udp.recv_from(&mut buf).await.is_ok() {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    (addr, seen, task)
}
