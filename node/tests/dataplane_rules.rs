//! Policy compilation: workload selection, egress and ingress decisions.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use riptides_node::dataplane::rules::{CompileError, EgressDecision, ProcessLabels, Rules};
use riptides_wire::proto::messages::{PolicyDocument, PolicyItem, TrustBundleMsg};
use riptides_wire::resource::core::TlsMode;
use riptides_wire::resource::examples::SEED_WORKLOAD_IDENTITY;
use riptides_wire::SpiffeId;
use serde_json::{json, Value};

/// `SEED_WORKLOAD_IDENTITY` as the JSON the daemon receives.
fn seed() -> Value {
    serde_yaml_ng::from_str(SEED_WORKLOAD_IDENTITY).expect("the seed example parses")
}

fn workload(name: &str, path: &str, selectors: Value, egress: Value, ingress: Value) -> Value {
    json!({
        "apiVersion": "core.riptides.io/v1alpha1", "kind": "WorkloadIdentity",
        "metadata": {"name": name, "namespace": "riptides-system"},
        "spec": {"workloadID": path, "scope": {"daemonGroup": {"id": "web"}},
                 "selectors": selectors, "egress": egress, "ingress": ingress}
    })
}

fn service(name: &str, labels: Value, addresses: Value, tls: Option<Value>) -> Value {
    let mut v = json!({
        "apiVersion": "core.riptides.io/v1alpha1", "kind": "Service",
        "metadata": {"name": name, "namespace": "riptides-system"},
        "spec": {"labels": labels, "addresses": addresses}
    });
    if let Some(tls) = tls {
        v["spec"]["tls"] = tls;
    }
    v
}

fn doc(workloads: Vec<Value>, services: Vec<Value>) -> PolicyDocument {
    let mut items: Vec<PolicyItem> = workloads.iter().map(|w| PolicyItem::WorkloadIdentity(w.to_string())).collect();
    items.extend(services.iter().map(|s| PolicyItem::Service(s.to_string())));
    PolicyDocument {
        trust_domain: "example.com".into(),
        bundle: TrustBundleMsg { trust_domain: "example.com".into(), sequence: 1, roots_der: vec![vec![0x30, 0x00]] },
        items,
    }
}

fn labels(pairs: &[(&str, &str)]) -> ProcessLabels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn seed_rules() -> Rules {
    let services = vec![
        service(
            "orders",
            json!({"tier": "backend", "app": "orders"}),
            json!([{"address": "10.0.0.10", "port": 8080}]),
            None,
        ),
        service("inventory", json!({"tier": "backend"}), json!([{"address": "10.1.0.0/16", "port": 9000}]), None),
        service("metrics", json!({"tier": "monitoring"}), json!([{"address": "10.2.0.1", "port": 9090}]), None),
    ];
    Rules::compile(&doc(vec![seed()], services)).unwrap()
}

#[test]
fn the_seed_compiles_and_selects_its_process() {
    let rules = seed_rules();
    assert_eq!(rules.trust_domain().as_str(), "example.com");
    let w = rules
        .select_workload(&labels(&[("process:name", "frontend"), ("process:uid", "1000"), ("process:gid", "5")]))
        .unwrap();
    assert_eq!(w.spiffe_id, id("spiffe://example.com/frontend"));
    assert_eq!(w.default_mode, Some(TlsMode::Mutual));
    // AND within a map: both keys are needed.
    assert!(rules.select_workload(&labels(&[("process:name", "frontend"), ("process:uid", "0")])).is_none());
    assert!(rules.select_workload(&labels(&[("process:name", "frontend")])).is_none());
    assert!(rules.select_workload(&labels(&[])).is_none());
    assert!(rules.bundles().roots(rules.trust_domain()).is_some());
}

#[test]
fn egress_by_ip_cidr_and_port() {
    let rules = seed_rules();
    let w = rules.select_workload(&labels(&[("process:name", "frontend"), ("process:uid", "1000")])).unwrap();
    let allowed = vec![id("spiffe://example.com/orders-service"), id("spiffe://example.com/inventory-service")];
    match rules.egress_decision(w, addr("10.0.0.10:8080"), None) {
        EgressDecision::Mtls { mode, allowed: a, service, intercept } => {
            assert_eq!(mode, TlsMode::Mutual);
            assert_eq!(a, allowed);
            assert_eq!(service.name, "orders");
            assert!(!intercept);
        }
        other => panic!("expected mTLS, got {other:?}"),
    }
    // CIDR.
    assert!(matches!(
        rules.egress_decision(w, addr("10.1.200.3:9000"), None),
        EgressDecision::Mtls { ref service, .. } if service.name == "inventory"
    ));
    // Right address, wrong port; address outside the CIDR.
    assert_eq!(rules.egress_decision(w, addr("10.0.0.10:8081"), None), EgressDecision::Passthrough);
    assert_eq!(rules.egress_decision(w, addr("10.2.0.0:9000"), None), EgressDecision::Passthrough);
    // A Service exists but no egress rule selects its labels: the default is passthrough.
    assert_eq!(rules.egress_decision(w, addr("10.2.0.1:9090"), None), EgressDecision::Passthrough);
    // No Service at all.
    assert_eq!(rules.egress_decision(w, addr("192.0.2.1:443"), None), EgressDecision::Passthrough);
}

#[test]
fn ingress_per_port() {
    let rules = seed_rules();
    let d = rules.ingress_decision(8000).unwrap();
    assert_eq!(d.mode, TlsMode::Mutual);
    assert_eq!(d.allowed, vec![id("spiffe://example.com/frontend"), id("spiffe://example.com/monitoring")]);
    assert_eq!(d.workload.name, "frontend");
    assert!(rules.ingress_decision(8001).is_none());
    assert_eq!(rules.ingress_ports().collect::<Vec<_>>(), vec![8000]);
}

#[test]
fn selectors_or_across_maps_and_most_specific_wins() {
    let broad = workload("broad", "broad", json!([{"process:uid": "1000"}, {"k8s:app": "web"}]), json!([]), json!([]));
    let narrow =
        workload("narrow", "narrow", json!([{"process:uid": "1000", "process:name": "curl"}]), json!([]), json!([]));
    let none = workload("none", "none", json!([]), json!([]), json!([]));
    let empty_map = workload("empty", "empty", json!([{}]), json!([]), json!([]));
    let rules = Rules::compile(&doc(vec![narrow, broad, none, empty_map], vec![])).unwrap();
    let pick = |l: &[(&str, &str)]| rules.select_workload(&labels(l)).map(|w| w.name.clone());
    // OR: either map selects.
    assert_eq!(pick(&[("process:uid", "1000")]).as_deref(), Some("broad"));
    assert_eq!(pick(&[("k8s:app", "web")]).as_deref(), Some("broad"));
    // Both match: the map with more keys wins, regardless of item order.
    assert_eq!(pick(&[("process:uid", "1000"), ("process:name", "curl")]).as_deref(), Some("narrow"));
    // An identity with no selectors, or an empty map, selects nothing.
    assert_eq!(pick(&[("process:uid", "0")]), None);

    // Ties on specificity go to the first (namespace, name).
    let a = workload("a", "a", json!([{"process:uid": "7"}]), json!([]), json!([]));
    let b = workload("b", "b", json!([{"process:gid": "7"}]), json!([]), json!([]));
    let rules = Rules::compile(&doc(vec![b, a], vec![])).unwrap();
    let w = rules.select_workload(&labels(&[("process:uid", "7"), ("process:gid", "7")])).unwrap();
    assert_eq!(w.name, "a");
}

#[test]
fn rule_modes_dns_addresses_and_specific_services() {
    let wl = workload(
        "client",
        "client",
        json!([{"process:name": "client"}]),
        json!([
            {"selectors": [{"kind": "external"}]},
            {"selectors": [{"tier": "db"}], "connection": {"tls": {"mode": "PERMISSIVE"}}},
            {"selectors": [{"tier": "cache"}]},
        ]),
        json!([{"port": 5432, "connection": {"tls": {"mode": "PERMISSIVE"}}}]),
    );
    let services = vec![
        service(
            "api",
            json!({"kind": "external"}),
            json!([{"address": "api.example.net", "port": 443}]),
            Some(json!({"mode": "SIMPLE", "serverName": "api.example.net"})),
        ),
        service("db-net", json!({"tier": "db"}), json!([{"address": "10.9.0.0/16", "port": 5432}]), None),
        service("cache-host", json!({"tier": "cache"}), json!([{"address": "10.9.0.7", "port": 5432}]), None),
    ];
    let rules = Rules::compile(&doc(vec![wl], services)).unwrap();
    let w = rules.select_workload(&labels(&[("process:name", "client")])).unwrap();
    // DNS names match the application's SNI only.
    match rules.egress_decision(w, addr("203.0.113.5:443"), Some("API.example.net")) {
        EgressDecision::Mtls { mode, service, allowed, .. } => {
            assert_eq!(mode, TlsMode::Simple, "the Service's mode applies when the rule has none");
            assert_eq!(service.server_name.as_deref(), Some("api.example.net"));
            assert!(allowed.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rules.egress_decision(w, addr("203.0.113.5:443"), None), EgressDecision::Passthrough);
    // Rule mode wins.
    assert!(matches!(
        rules.egress_decision(w, addr("10.9.1.1:5432"), None),
        EgressDecision::Mtls { mode: TlsMode::Permissive, .. }
    ));
    // An exact IP beats a covering CIDR; no mode anywhere means MUTUAL.
    match rules.egress_decision(w, addr("10.9.0.7:5432"), None) {
        EgressDecision::Mtls { mode, service, .. } => {
            assert_eq!(service.name, "cache-host");
            assert_eq!(mode, TlsMode::Mutual);
        }
        other => panic!("{other:?}"),
    }
    let ing = rules.ingress_decision(5432).unwrap();
    assert_eq!(ing.mode, TlsMode::Permissive);
    assert!(ing.allowed.is_empty());
}

#[test]
fn conflicting_ingress_ports_are_deterministic() {
    let a = workload("a", "a", json!([{"x": "1"}]), json!([]), json!([{"port": 80}]));
    let b = workload("b", "b", json!([{"x": "2"}]), json!([]), json!([{"port": 80}]));
    let rules = Rules::compile(&doc(vec![b, a], vec![])).unwrap();
    assert_eq!(rules.ingress_decision(80).unwrap().workload.name, "a");
    assert_eq!(rules.warnings().len(), 1);
}

#[test]
fn bad_documents_are_refused_whole() {
    let mut d = doc(vec![seed()], vec![]);
    d.items.push(PolicyItem::Service("{not json".into()));
    assert!(matches!(Rules::compile(&d), Err(CompileError::BadItem { index: 1, kind: "Service", .. })));

    let bad_cidr = service("s", json!({}), json!([{"address": "10.0.0.0/40", "port": 1}]), None);
    assert!(matches!(Rules::compile(&doc(vec![], vec![bad_cidr])), Err(CompileError::Address { .. })));

    let bad_port = service("s", json!({}), json!([{"address": "10.0.0.1", "port": 70000}]), None);
    assert!(matches!(Rules::compile(&doc(vec![], vec![bad_port])), Err(CompileError::Port { .. })));

    let mut d = doc(vec![], vec![]);
    d.bundle.roots_der.clear();
    assert!(matches!(Rules::compile(&d), Err(CompileError::EmptyBundle(_))));

    let mut d = doc(vec![], vec![]);
    d.trust_domain = "Not A Domain".into();
    assert!(matches!(Rules::compile(&d), Err(CompileError::TrustDomain(_))));
}

#[test]
fn federated_bundles_are_kept_per_trust_domain() {
    let mut d = doc(vec![], vec![]);
    d.items.push(PolicyItem::TrustBundle(TrustBundleMsg {
        trust_domain: "partner.org".into(),
        sequence: 3,
        roots_der: vec![vec![0x30, 0x01]],
    }));
    let rules = Rules::compile(&d).unwrap();
    let tds: BTreeMap<String, usize> = rules
        .bundles()
        .trust_domains()
        .map(|td| (td.as_str().to_owned(), rules.bundles().roots(td).unwrap().len()))
        .collect();
    assert_eq!(tds.len(), 2);
    assert_eq!(tds["partner.org"], 1);
}
