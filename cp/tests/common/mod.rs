//! Shared helpers for the control plane's integration tests.
#![allow(dead_code)]

use riptides_cp::{Config, ControlPlane};
use riptides_wire::client::ApiClient;
use riptides_wire::resource::{self, ResourceType};
use serde_json::Value;

#[allow(unused_imports)]
pub use riptides_wire::resource::examples::SEED_WORKLOAD_IDENTITY as SEED_WORKLOAD;

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt().with_env_filter("warn,riptides_cp=info").with_test_writer().try_init();
}

pub async fn start(dir: &std::path::Path) -> ControlPlane {
    init_tracing();
    ControlPlane::start(Config::for_tests(dir)).await.expect("control plane starts")
}

pub fn admin(cp: &ControlPlane) -> ApiClient {
    ApiClient::from_kubeconfig_file(cp.kubeconfig_path()).expect("admin kubeconfig loads")
}

pub fn rt(name: &str) -> &'static ResourceType {
    resource::by_name(name).expect("known kind")
}

pub fn yaml(s: &str) -> Value {
    serde_yaml_ng::from_str(s).expect("test YAML parses")
}

pub fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"].as_str().expect("resourceVersion").parse().expect("numeric resourceVersion")
}

/// A JoinToken stored as `riptides token create` would: returns the token text `<name>.<secret>`.
pub async fn create_token(cp: &ControlPlane, name: &str, ttl_secs: i64, daemon_id: Option<&str>) -> String {
    let secret = format!("{:064x}", rand_u128(name));
    let expires = time::OffsetDateTime::now_utc() + time::Duration::seconds(ttl_secs);
    let mut spec = serde_json::json!({
        "tokenHash": riptides_cp::attest::hash_secret(&secret),
        "expiresAt": expires.format(&time::format_description::well_known::Rfc3339).unwrap(),
    });
    if let Some(d) = daemon_id {
        spec["daemonID"] = d.into();
    }
    let obj = serde_json::json!({"apiVersion": "auth.riptides.io/v1alpha1", "kind": "JoinToken",
        "metadata": {"name": name, "namespace": "riptides-system"}, "spec": spec});
    admin(cp).create(rt("jointokens"), "riptides-system", &obj).await.expect("create join token");
    format!("{name}.{secret}")
}

fn rand_u128(salt: &str) -> u128 {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    u128::from_le_bytes(b) ^ salt.len() as u128
}
