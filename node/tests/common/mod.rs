//! Helpers for the daemon's integration tests: an in-process control plane, resources written
//! through its store, and a tiny HTTP client for the admin listener.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use riptides_cp::store::ObjectKey;
use riptides_cp::{Config, ControlPlane};
use riptides_node::{CaTrust, DaemonConfig, DataplaneMode, JoinToken};
use riptides_wire::resource::{self, ValidationContext, DEFAULT_NAMESPACE};
use riptides_wire::TrustDomain;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,riptides_node=info".into()))
        .with_test_writer()
        .try_init();
}

pub fn td() -> TrustDomain {
    TrustDomain::parse("example.com").unwrap()
}

/// A test CP config; `svid_ttl` shortens SVID lifetimes (the CA backdates NotBefore by 10 s).
pub fn cp_config(dir: &Path, svid_ttl: Option<Duration>) -> Config {
    let mut c = Config::for_tests(dir);
    if let Some(t) = svid_ttl {
        c.default_svid_ttl = t;
        c.max_svid_ttl = t;
    }
    c
}

pub async fn start_cp(config: Config) -> ControlPlane {
    init_tracing();
    ControlPlane::start(config).await.expect("control plane starts")
}

/// Same data dir and the same ports as `cp` had (for a restart).
pub fn same_ports(mut c: Config, old: &ControlPlane) -> Config {
    c.api_addr = old.api_addr();
    c.quic_addr = old.quic_addr();
    c.tunnel_addr = old.tunnel_addr();
    c.health_addr = old.health_addr();
    c
}

fn key_of(v: &Value) -> (ObjectKey, Value) {
    let ctx = ValidationContext { trust_domain: td() };
    let (rt, mut v) = resource::validate_object(v, &ctx).unwrap_or_else(|e| panic!("invalid test object: {e:?}"));
    if v["metadata"]["uid"].is_null() {
        v["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", rand_u64() & 0xffff_ffff_ffff));
    }
    v["metadata"]["generation"] = json!(1);
    let name = v["metadata"]["name"].as_str().unwrap().to_owned();
    let ns = v["metadata"]["namespace"].as_str().unwrap_or(DEFAULT_NAMESPACE).to_owned();
    (ObjectKey::new(rt.store_key(), ns, name), v)
}

/// Creates a resource through the CP's store, as the API would after validation.
pub async fn put(cp: &ControlPlane, object: Value) {
    let (key, v) = key_of(&object);
    cp.store().create(&key, serde_json::to_vec(&v).unwrap()).await.expect("store create");
}

/// Replaces a resource's spec.
pub async fn replace(cp: &ControlPlane, object: Value) {
    let (key, v) = key_of(&object);
    cp.store().update(&key, serde_json::to_vec(&v).unwrap(), None).await.expect("store update");
}

pub async fn delete(cp: &ControlPlane, object: Value) {
    let (key, _) = key_of(&object);
    cp.store().delete(&key, None).await.expect("store delete");
}

pub async fn get_daemon(cp: &ControlPlane, id: &str) -> Option<Value> {
    let rt = resource::by_name("daemon").unwrap();
    let obj = cp.store().get(&ObjectKey::new(rt.store_key(), DEFAULT_NAMESPACE, id)).await.unwrap()?;
    Some(serde_json::from_slice(&obj.value).unwrap())
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    aws_lc_rs_fill(&mut b);
    u64::from_le_bytes(b)
}

fn aws_lc_rs_fill(b: &mut [u8]) {
    // No direct aws-lc-rs dev-dependency: borrow randomness from the daemon's helper.
    for chunk in b.chunks_mut(8) {
        let v = (riptides_node::backoff::random_unit() * (u64::MAX as f64)) as u64;
        chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
    }
}

/// A join token stored as `riptides token create` does; returns `<name>.<secret>`.
pub async fn create_token(cp: &ControlPlane, name: &str, daemon_id: Option<&str>, ttl_secs: i64) -> JoinToken {
    let secret = format!("{:016x}{:016x}", rand_u64(), rand_u64());
    let expires = time::OffsetDateTime::now_utc() + time::Duration::seconds(ttl_secs);
    let mut spec = json!({
        "tokenHash": riptides_cp::attest::hash_secret(&secret),
        "expiresAt": expires.format(&time::format_description::well_known::Rfc3339).unwrap(),
    });
    if let Some(d) = daemon_id {
        spec["daemonID"] = d.into();
    }
    put(cp, json!({"apiVersion": "auth.riptides.io/v1alpha1", "kind": "JoinToken", "metadata": {"name": name}, "spec": spec})).await;
    JoinToken::new(format!("{name}.{secret}"))
}

pub fn workload_identity(name: &str, workload_id: &str, daemon_id: &str) -> Value {
    json!({
        "apiVersion": "core.riptides.io/v1alpha1",
        "kind": "WorkloadIdentity",
        "metadata": { "name": name, "namespace": DEFAULT_NAMESPACE },
        "spec": { "workloadID": workload_id, "scope": { "daemon": { "id": daemon_id } } },
    })
}

/// The CA pin (`sha256:<hex>` of the active root's SPKI), as an operator would pass it.
pub fn ca_pin(cp: &ControlPlane) -> String {
    let root = cp.ca().active_root().expect("active root");
    riptides_wire::tls::format_pin(&riptides_wire::tls::spki_sha256(&root).unwrap())
}

/// A daemon config against `cp` with test timings (reconnect cap 2 s, fast status reports).
pub fn daemon_config(
    cp_quic: SocketAddr,
    cp_tunnel: SocketAddr,
    data_dir: &Path,
    pin: Option<String>,
    token: Option<JoinToken>,
) -> DaemonConfig {
    let mut c = DaemonConfig::new(cp_quic.to_string(), data_dir);
    c.controlplane_tunnel = Some(cp_tunnel.to_string());
    c.trust_domain = td();
    c.ca = pin.map(CaTrust::Pin);
    c.join_token = token;
    c.admin_addr = "127.0.0.1:0".parse().unwrap();
    c.dataplane = DataplaneMode::None;
    c.reconnect_base = Duration::from_millis(100);
    c.reconnect_cap = Duration::from_secs(2);
    c.quic_connect_timeout = Duration::from_secs(2);
    c.tcp_connect_timeout = Duration::from_secs(2);
    c.status_interval = Duration::from_secs(2);
    c.request_timeout = Duration::from_secs(5);
    c
}

/// `GET path` on the admin listener: (status code, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("admin listener reachable");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (code, body)
}
