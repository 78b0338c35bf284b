use super::*;

fn ctx() -> ValidationContext {
    ValidationContext { trust_domain: TrustDomain::parse("example.com").unwrap() }
}

fn yaml(s: &str) -> Value {
    serde_yaml_ng::from_str(s).unwrap()
}

use super::examples::SEED_WORKLOAD_IDENTITY as SEED_WORKLOAD;

#[test]
fn seed_yaml_is_accepted_as_written() {
    let (rt, v) = validate_object(&yaml(SEED_WORKLOAD), &ctx()).unwrap();
    assert_eq!(rt.kind, "WorkloadIdentity");
    let wi: WorkloadIdentity = from_value(v).unwrap();
    assert_eq!(wi.spec.egress[0].allowed_spiffe_ids.len(), 2);
    assert_eq!(wi.spec.egress[0].connection.as_ref().unwrap().tls.as_ref().unwrap().mode, Some(core::TlsMode::Mutual));
    assert_eq!(wi.spec.ingress[0].port, 8000);
    assert_eq!(wi.spec.selectors[0]["process:name"], "frontend");
}

fn expect_error(doc: &str, field: &str, needle: &str) {
    let errs = validate_object(&yaml(doc), &ctx()).unwrap_err();
    assert!(
        errs.iter().any(|e| e.field == field && e.message.contains(needle)),
        "expected {field}: ...{needle}... in {errs:?}"
    );
}

#[test]
fn bad_workload_identities_name_the_field() {
    let bad_id = SEED_WORKLOAD.replace("spiffe://example.com/monitoring", "spiffe://example.com/monitoring/");
    expect_error(&bad_id, "spec.ingress[0].allowedSPIFFEIDs[1]", "must not end with a slash");
    let other_td = SEED_WORKLOAD.replace("spiffe://example.com/orders-service", "spiffe://evil.org/orders-service");
    expect_error(&other_td, "spec.egress[0].allowedSPIFFEIDs[0]", "not in trust domain");
    let typo = SEED_WORKLOAD.replace(
        "allowedSPIFFEIDs:\n        - \"spiffe://example.com/orders",
        "allowedSpiffeIds:\n        - \"spiffe://example.com/orders",
    );
    expect_error(&typo, "spec.egress[0].allowedSpiffeIds", "unknown field `allowedSpiffeIds`");
    let mode = SEED_WORKLOAD.replace("mode: MUTUAL\n  egress", "mode: STRICT\n  egress");
    expect_error(&mode, "spec.connection.tls.mode", "unknown variant `STRICT`");
    let port = SEED_WORKLOAD.replace("port: 8000", "port: 70000");
    expect_error(&port, "spec.ingress[0].port", "not a port");
    let path = SEED_WORKLOAD.replace("workloadID: frontend", "workloadID: front/../end");
    expect_error(&path, "spec.workloadID", "not a valid SPIFFE path");
    let scope =
        SEED_WORKLOAD.replace("daemonGroup:\n      id: web", "daemon:\n      id: a\n    daemonGroup:\n      id: web");
    expect_error(&scope, "spec.scope", "exactly one");
    let name = SEED_WORKLOAD.replace("name: frontend", "name: Frontend_1");
    expect_error(&name, "metadata.name", "lowercase");
    let ttl = SEED_WORKLOAD.replace("ttl: 1h", "ttl: 1day");
    expect_error(&ttl, "spec.svid.x509.ttl", "invalid duration");
    let kind = SEED_WORKLOAD.replace("kind: WorkloadIdentity", "kind: Workload");
    expect_error(&kind, "kind", "unknown kind");
}

#[test]
fn service_verifier_and_token_rules() {
    let svc = r#"
apiVersion: core.riptides.io/v1alpha1
kind: Service
metadata: {name: orders}
spec:
  labels: {tier: backend}
  addresses: [{address: 10.0.0.0/24, port: 8080}, {address: orders.internal.example.com, port: 443}]
"#;
    validate_object(&yaml(svc), &ctx()).unwrap();
    expect_error(&svc.replace("10.0.0.0/24", "10.0.0.0/33"), "spec.addresses[0].address", "prefix length");
    expect_error(&svc.replace("port: 443", "port: 0"), "spec.addresses[1].port", "not a port");

    let verifier = r#"
apiVersion: auth.riptides.io/v1alpha1
kind: Verifier
metadata: {name: default}
spec:
  method: joinToken
  workloadIDTemplate: "riptides/daemon/{{id}}"
"#;
    validate_object(&yaml(verifier), &ctx()).unwrap();
    expect_error(&verifier.replace("{{id}}", "{{id}"), "spec.workloadIDTemplate", "unclosed");
    expect_error(&verifier.replace("joinToken", "magic"), "spec.method", "unknown variant");

    let token = r#"
apiVersion: auth.riptides.io/v1alpha1
kind: JoinToken
metadata: {name: t1}
spec:
  tokenHash: "sha256:0000000000000000000000000000000000000000000000000000000000000000"
  expiresAt: "2030-01-01T00:00:00Z"
"#;
    validate_object(&yaml(token), &ctx()).unwrap();
    expect_error(&token.replace("sha256:0", "md5:0"), "spec.tokenHash", "sha256");
    expect_error(&token.replace("2030-01-01T00:00:00Z", "tomorrow"), "spec.expiresAt", "RFC 3339");
}

#[test]
fn names_resolve_like_kubectl() {
    assert_eq!(by_name("wi").unwrap().kind, "WorkloadIdentity");
    assert_eq!(by_name("WorkloadIdentities").unwrap().kind, "WorkloadIdentity");
    assert_eq!(by_name("jointoken").unwrap().kind, "JoinToken");
    assert_eq!(by_name("verifiers.auth.riptides.io").unwrap().kind, "Verifier");
    assert!(by_name("verifiers.core.riptides.io").is_none());
    assert!(by_name("pods").is_none());
    assert_eq!(by_path("core.riptides.io", "v1alpha1", "services").unwrap().kind, "Service");
}
