//! Applying policy deltas to a document.

use riptides_wire::proto::messages::*;

fn wi(ns: &str, name: &str, tag: &str) -> PolicyItem {
    PolicyItem::WorkloadIdentity(format!(
        r#"{{"apiVersion":"core.riptides.io/v1alpha1","kind":"WorkloadIdentity","metadata":{{"name":"{name}","namespace":"{ns}"}},"spec":{{"workloadID":"/{tag}"}}}}"#
    ))
}

fn svc(ns: &str, name: &str) -> PolicyItem {
    PolicyItem::Service(format!(r#"{{"kind":"Service","metadata":{{"name":"{name}","namespace":"{ns}"}}}}"#))
}

fn bundle(td: &str, seq: u64) -> TrustBundleMsg {
    TrustBundleMsg { trust_domain: td.into(), sequence: seq, roots_der: vec![vec![seq as u8]] }
}

fn doc() -> PolicyDocument {
    PolicyDocument {
        trust_domain: "example.org".into(),
        bundle: bundle("example.org", 1),
        items: vec![wi("default", "web", "v1"), svc("default", "db")],
    }
}

fn key(kind: PolicyKind, ns: &str, name: &str) -> PolicyKey {
    PolicyKey { kind, namespace: ns.into(), name: name.into() }
}

#[test]
fn keys_come_from_metadata() {
    assert_eq!(wi("default", "web", "x").key().unwrap(), key(PolicyKind::WorkloadIdentity, "default", "web"));
    assert_eq!(
        PolicyItem::TrustBundle(bundle("other.org", 1)).key().unwrap(),
        key(PolicyKind::TrustBundle, "", "other.org")
    );
    assert!(PolicyItem::Service("not json".into()).key().is_err());
    assert!(PolicyItem::Service(r#"{"metadata":{}}"#.into()).key().is_err());
}

#[test]
fn upserts_replace_or_add_and_removals_delete() {
    let mut d = doc();
    d.apply_delta(vec![wi("default", "web", "v2"), svc("prod", "api")], &[key(PolicyKind::Service, "default", "db")])
        .unwrap();
    assert_eq!(d.items, vec![wi("default", "web", "v2"), svc("prod", "api")]);
}

#[test]
fn own_bundle_upsert_replaces_the_document_bundle() {
    let mut d = doc();
    d.apply_delta(vec![PolicyItem::TrustBundle(bundle("example.org", 2))], &[]).unwrap();
    assert_eq!(d.bundle.sequence, 2);
    assert_eq!(d.items.len(), 2);
    d.apply_delta(vec![PolicyItem::TrustBundle(bundle("other.org", 1))], &[]).unwrap();
    assert_eq!(d.items.len(), 3);
    assert!(d.apply_delta(vec![], &[key(PolicyKind::TrustBundle, "", "example.org")]).is_err());
}

#[test]
fn a_bad_delta_leaves_the_document_unchanged() {
    let mut d = doc();
    let before = d.clone();
    assert!(d
        .apply_delta(vec![svc("x", "y"), PolicyItem::Service("{".into())], &[key(PolicyKind::Service, "default", "db")])
        .is_err());
    assert_eq!(d, before);
}

#[test]
fn update_revision() {
    let u = PolicyUpdate::Delta { revision: 9, upserts: vec![], removals: vec![] };
    assert_eq!(u.revision(), 9);
}
