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
