//! Converting between API objects and stored values, and the small JSON algebra the API needs
//! (merge patch, Kubernetes `Table` rendering).

use std::time::SystemTime;

use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::store::StoredObject;

/// Stored values never hold `resourceVersion`: it is the store's `mod_revision`, injected on
/// read, so the two can never disagree.
pub fn to_stored(mut object: Value) -> Vec<u8> {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&object).expect("JSON values always serialise")
}

/// Decodes a stored object as the API shows it: `metadata.resourceVersion` set to `revision`
/// and write-only fields (a CredentialSource's `spec.secretValue`) removed. Every API answer
/// (get, list, watch, create/update/delete echoes) goes through here.
pub fn from_stored(obj: &StoredObject, revision: u64) -> Result<Value, serde_json::Error> {
    let mut v = from_stored_with_secrets(obj, revision)?;
    remove_write_only(&mut v);
    Ok(v)
}

/// [`from_stored`] with write-only fields kept: only for the policy compiler, which delivers
/// them to the daemons that need them.
pub fn from_stored_with_secrets(obj: &StoredObject, revision: u64) -> Result<Value, serde_json::Error> {
    let mut v: Value = serde_json::from_slice(&obj.value)?;
    set_resource_version(&mut v, revision);
    Ok(v)
}

fn is_credential_source(v: &Value) -> bool {
    v.get("kind").and_then(Value::as_str) == Some("CredentialSource")
}

/// kubectl's copy of the last applied object, kept as a JSON string annotation.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Removes the fields the API never returns, also from kubectl's `last-applied-configuration`
/// annotation (which `kubectl apply` fills with the whole applied object, secret included).
/// An annotation that does not parse as an object is dropped rather than returned unscrubbed.
pub fn remove_write_only(v: &mut Value) {
    if !is_credential_source(v) {
        return;
    }
    if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("secretValue");
    }
    let Some(annotations) = v.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) else { return };
    let Some(text) = annotations.get(LAST_APPLIED).and_then(Value::as_str) else {
        annotations.remove(LAST_APPLIED);
        return;
    };
    match serde_json::from_str::<Value>(text) {
        Ok(mut applied) if applied.is_object() => {
            if let Some(spec) = applied.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("secretValue");
            }
            annotations.insert(LAST_APPLIED.into(), Value::String(applied.to_string()));
        }
        _ => {
            annotations.remove(LAST_APPLIED);
        }
    }
}

/// An update that omits a write-only field keeps the stored value (clients never see it, so
/// they cannot send it back).
pub fn keep_write_only(new: &mut Value, current: &Value) {
    if !is_credential_source(current) {
        return;
    }
    let Some(secret) = current.pointer("/spec/secretValue") else { return };
    if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry("secretValue").or_insert_with(|| secret.clone());
    }
}

pub fn set_resource_version(v: &mut Value, revision: u64) {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(revision.to_string()));
    }
}

pub fn meta_str<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get("metadata")?.get(field)?.as_str()
}

pub fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v.as_object_mut().expect("checked to be an object").insert("metadata".into(), json!({}));
    }
    v.get_mut("metadata").and_then(Value::as_object_mut).expect("just ensured")
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("just made an object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .replace_nanosecond(0)
        .expect("0 is a valid nanosecond")
        .format(&Rfc3339)
        .expect("RFC 3339 formatting of a valid time")
}

/// A random RFC 4122 version 4 UUID for `metadata.uid`.
pub fn new_uid() -> String {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).expect("system randomness");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Five random lowercase alphanumerics, for `metadata.generateName`.
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut b = [0u8; 5];
    aws_lc_rs::rand::fill(&mut b).expect("system randomness");
    b.iter().map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char).collect()
}

/// Whether the client asked for the server-side `Table` rendering kubectl uses for `get`.
pub fn wants_table(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.split(',').next().is_some_and(|first| first.contains("as=Table")))
}

/// Renders objects as a `meta.k8s.io/v1` Table with NAME and AGE columns (and NAMESPACE when
/// listing across namespaces), as `kubectl get` expects.
pub fn table(objects: &[Value], resource_version: Option<u64>, with_namespace: bool, now: SystemTime) -> Value {
    let mut columns = Vec::new();
    if with_namespace {
        columns.push(json!({"name": "Namespace", "type": "string", "format": "", "description": "", "priority": 0}));
    }
    columns.push(
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0}),
    );
    columns.push(
        json!({"name": "Age", "type": "string", "format": "", "description": "Time since creation", "priority": 0}),
    );
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = Vec::new();
            if with_namespace {
                cells.push(json!(meta_str(o, "namespace").unwrap_or_default()));
            }
            cells.push(json!(meta_str(o, "name").unwrap_or_default()));
            cells.push(json!(age(meta_str(o, "creationTimestamp"), now)));
            json!({
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
                }
            })
        })
        .collect();
    let mut metadata = json!({});
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv.to_string());
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": columns, "rows": rows})
}

/// kubectl's short age format (`45s`, `12m`, `5h`, `3d`).
pub fn age(created: Option<&str>, now: SystemTime) -> String {
    let Some(created) = created.and_then(|c| OffsetDateTime::parse(c, &Rfc3339).ok()) else {
        return "<unknown>".into();
    };
    let secs = (OffsetDateTime::from(now) - created).whole_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_secrets_are_write_only() {
        let stored = json!({"kind": "CredentialSource", "metadata": {"name": "k"},
            "spec": {"type": "static", "secretValue": "s3cret"}});
        let obj = StoredObject {
            key: crate::store::ObjectKey::new("core.riptides.io/credentialsources", "ns", "k"),
            value: serde_json::to_vec(&stored).unwrap(),
            create_revision: 1,
            mod_revision: 2,
        };
        let shown = from_stored(&obj, 2).unwrap();
        assert!(shown.pointer("/spec/secretValue").is_none() && shown.pointer("/spec/type").is_some());
        assert_eq!(from_stored_with_secrets(&obj, 2).unwrap()["spec"]["secretValue"], "s3cret");
        // An update without the secret keeps it; one with a new secret replaces it.
        let mut update = json!({"kind": "CredentialSource", "spec": {"type": "static"}});
        keep_write_only(&mut update, &stored);
        assert_eq!(update["spec"]["secretValue"], "s3cret");
        let mut update = json!({"kind": "CredentialSource", "spec": {"type": "static", "secretValue": "new"}});
        keep_write_only(&mut update, &stored);
        assert_eq!(update["spec"]["secretValue"], "new");
        // kubectl apply's copy of the object is scrubbed too.
        let applied =
            json!({"kind": "CredentialSource", "spec": {"type": "static", "secretValue": "s3cret"}}).to_string();
        let mut with_annotation = stored.clone();
        with_annotation["metadata"]["annotations"] = json!({ LAST_APPLIED: applied, "keep": "me" });
        remove_write_only(&mut with_annotation);
        assert!(!with_annotation.to_string().contains("s3cret"), "{with_annotation}");
        let scrubbed: Value =
            serde_json::from_str(with_annotation["metadata"]["annotations"][LAST_APPLIED].as_str().unwrap()).unwrap();
        assert_eq!(scrubbed["spec"]["type"], "static");
        assert_eq!(with_annotation["metadata"]["annotations"]["keep"], "me");
        let mut garbled = stored.clone();
        garbled["metadata"]["annotations"] = json!({ LAST_APPLIED: "{\"spec\": {\"secretValue\": \"s3cret\"" });
        remove_write_only(&mut garbled);
        assert!(!garbled.to_string().contains("s3cret"), "{garbled}");
        // Other kinds are untouched.
        let mut other = json!({"kind": "Service", "spec": {"secretValue": "x"}});
        remove_write_only(&mut other);
        assert_eq!(other["spec"]["secretValue"], "x");
    }

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}, "list": [3], "new": {"x": 1}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}, "list": [3], "new": {"x": 1}}));
    }

    #[test]
    fn uid_and_names() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(new_uid(), u);
        assert_eq!(name_suffix().len(), 5);
    }

    #[test]
    fn table_detection() {
        assert!(wants_table(Some("application/json;as=Table;v=v1;g=meta.k8s.io,application/json")));
        assert!(!wants_table(Some("application/json")));
        assert!(!wants_table(None));
    }
}
