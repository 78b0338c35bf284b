//! Shared helpers for the control plane's integration tests.
#![allow(dead_code)]

use riptides_cp::{Config, ControlPlane};
use riptides_wire::client::ApiClient;
use riptides_wire::resource::{self, ResourceType};
use serde_json::Value;

pub const SEED_WORKLOAD: &str = r#"
apiVersion: core.riptides.io/v1alpha1
kind: WorkloadIdentity
metadata:
  name: frontend
spec:
  workloadID: frontend
  scope:
    daemonGroup:
      id: web
  egress:
    - selectors:
        - tier: backend
      connection:
        tls:
          mode: MUTUAL
      allowedSPIFFEIDs:
        - "spiffe://example.com/orders-service"
        - "spiffe://example.com/inventory-service"
  ingress:
    - port: 8000
      allowedSPIFFEIDs:
        - "spiffe://example.com/frontend"
        - "spiffe://example.com/monitoring"
"#;

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
