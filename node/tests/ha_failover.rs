//! A daemon given three control-plane replicas (separate processes on one three-member etcd
//! cluster on loopback) fails over when the replica it is connected to is killed with
//! SIGKILL, and gets the changes made after the kill from another replica.
//!
//! The replicas are this test binary re-executed (`replica_process`), each running an
//! in-process control plane until it is killed.

mod common;
#[path = "../../cp/tests/etcd_support/mod.rs"]
mod etcd_support;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use etcd_support::EtcdCluster;
use riptides_cp::store::{EtcdOptions, EtcdStore, ObjectKey, Store};
use riptides_node::{Daemon, JoinToken};
use riptides_wire::resource::{self, ValidationContext, DEFAULT_NAMESPACE};
use serde_json::{json, Value};

const SEAL_KEY: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";
const T: Duration = Duration::from_secs(60);

/// Entry point of a replica process; does nothing in a normal test run.
#[test]
fn replica_process() {
    let Ok(dir) = std::env::var("RIPTIDES_HA_REPLICA_DIR") else { return };
    let endpoints = std::env::var("RIPTIDES_HA_ETCD").unwrap();
    let quic: SocketAddr = std::env::var("RIPTIDES_HA_QUIC").unwrap().parse().unwrap();
    let tunnel: SocketAddr = std::env::var("RIPTIDES_HA_TUNNEL").unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let mut c = cp_config(std::path::Path::new(&dir), None);
        c.quic_addr = quic;
        c.tunnel_addr = tunnel;
        c.store = riptides_cp::config::StoreBackend::Etcd(riptides_cp::store::EtcdConfig::new(
            endpoints.split(',').map(str::to_owned).collect(),
        ));
        c.ca_seal_key = Some(std::sync::Arc::new(riptides_cp::ca::SealKey::parse(SEAL_KEY).unwrap()));
        c.leader_lease_ttl = Duration::from_secs(2);
        let cp = riptides_cp::ControlPlane::start(c).await.expect("replica starts");
        println!("REPLICA-READY {}", ca_pin(&cp));
        std::future::pending::<()>().await;
    });
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    u64::from_le_bytes(b)
}

fn free_addr() -> SocketAddr {
    // A port free for both TCP (tunnel) and UDP (QUIC) is not needed: each gets its own.
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

struct Replica {
    child: Option<Child>,
    pin: String,
}

impl Replica {
    fn spawn(dir: &std::path::Path, etcd: &EtcdCluster, quic: SocketAddr, tunnel: SocketAddr) -> Replica {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "replica_process", "--nocapture", "--test-threads=1"])
            .env("RIPTIDES_HA_REPLICA_DIR", dir)
            .env("RIPTIDES_HA_ETCD", etcd.endpoints().join(","))
            .env("RIPTIDES_HA_QUIC", quic.to_string())
            .env("RIPTIDES_HA_TUNNEL", tunnel.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let pin = loop {
            let line = lines.next().expect("replica exited before it was ready").unwrap();
            // The harness prints "test replica_process ... " on the same line first.
            if let Some((_, p)) = line.split_once("REPLICA-READY ") {
                break p.trim().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Replica { child: Some(child), pin }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes a resource through the shared store, as the API of any replica would.
async fn put(store: &EtcdStore, object: Value) {
    let ctx = ValidationContext { trust_domain: td() };
    let (rt, mut v) = resource::validate_object(&object, &ctx).unwrap_or_else(|e| panic!("invalid: {e:?}"));
    v["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", rand_u64() & 0xffff_ffff_ffff));
    v["metadata"]["generation"] = json!(1);
    let name = v["metadata"]["name"].as_str().unwrap().to_owned();
    let ns = v["metadata"]["namespace"].as_str().unwrap_or(DEFAULT_NAMESPACE).to_owned();
    store.create(&ObjectKey::new(rt.store_key(), ns, name), serde_json::to_vec(&v).unwrap()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_fails_over_between_replicas_and_resumes_its_policy() {
    init_tracing();
    let etcd = EtcdCluster::start(3, false).await;
    let store = EtcdStore::connect(&etcd.config(), EtcdOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<(SocketAddr, SocketAddr)> = (0..3).map(|_| (free_udp(), free_addr())).collect();

    // Only the first replica runs when the daemon starts, so it connects there.
    let mut replicas = vec![Replica::spawn(&dir.path().join("r0"), &etcd, addrs[0].0, addrs[0].1)];
    let secret = format!("{:016x}{:016x}", rand_u64(), rand_u64());
    let expires = time::OffsetDateTime::now_utc() + time::Duration::seconds(600);
    put(
        &store,
        json!({"apiVersion": "auth.riptides.io/v1alpha1", "kind": "JoinToken", "metadata": {"name": "tok"},
        "spec": {"tokenHash": riptides_cp::attest::hash_secret(&secret), "daemonID": "node-1",
                 "expiresAt": expires.format(&time::format_description::well_known::Rfc3339).unwrap()}}),
    )
    .await;
    put(&store, workload_identity("web", "web", "node-1")).await;

    let mut cfg = daemon_config(addrs[0].0, addrs[0].1, &dir.path().join("node"), Some(replicas[0].pin.clone()), None);
    cfg.join_token = Some(JoinToken::new(format!("tok.{secret}")));
    cfg.controlplane = addrs.iter().map(|a| a.0.to_string()).collect::<Vec<_>>().join(",");
    cfg.controlplane_tunnel = Some(addrs.iter().map(|a| a.1.to_string()).collect::<Vec<_>>().join(","));
    let d = Daemon::start(cfg).await.unwrap();
    let s = d.wait_for(T, |s| s.connected && s.policy_revision.is_some()).await.unwrap();
    assert_eq!(s.snapshots, 1);
    let connects = s.connects;

    // The other replicas come up (sharing the first one's CA), then the first is killed.
    for i in 1..3 {
        replicas.push(Replica::spawn(&dir.path().join(format!("r{i}")), &etcd, addrs[i].0, addrs[i].1));
        assert_eq!(replicas[i].pin, replicas[0].pin, "replicas share one CA");
    }
    replicas[0].kill();
    put(&store, workload_identity("api", "api", "node-1")).await;

    let s = d
        .wait_for(T, |s| {
            s.connected
                && s.connects > connects
                && s.policy.items.iter().any(|i| i.key().is_ok_and(|k| k.name == "api"))
        })
        .await
        .unwrap();
    // The new replica resumes the stream from the daemon's revision: no second snapshot,
    // the change made during the outage arrives as a delta (the CP's trust-bundle re-check
    // at the resume revision is applied idempotently).
    eprintln!("after failover: {} snapshots, {} deltas", s.snapshots, s.deltas);
    assert_eq!(s.snapshots, 1, "failover resumed the policy stream without a full resync");
    assert!(s.deltas >= 1);
    d.shutdown().await;
}
