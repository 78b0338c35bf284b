//! Reading manifests: multi-document YAML or JSON, resolved to kinds and checked locally.

use anyhow::{anyhow, bail, Context as _, Result};
use riptides_wire::resource::{by_kind, FieldError, ResourceType, ValidationContext};
use riptides_wire::{SpiffeId, TrustDomain};
use serde::Deserialize;
use serde_json::Value;

/// One object of a manifest, ready to send.
#[derive(Debug)]
pub struct Document {
    /// 1-based position in the input (after `List` expansion), for error messages.
    pub index: usize,
    pub rt: &'static ResourceType,
    /// The object with `metadata.namespace` filled in.
    pub object: Value,
    /// The object in the normalised form the server stores, when local validation could
    /// produce it (used to tell "unchanged" from "configured").
    pub normalised: Option<Value>,
}

impl Document {
    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }
    pub fn namespace(&self) -> &str {
        self.object["metadata"]["namespace"].as_str().unwrap_or_default()
    }
}

/// Splits `text` into objects. JSON (one value, or several concatenated) and YAML (with `---`
/// separators) are both accepted; empty documents are skipped and `kind: List` is expanded.
pub fn parse_documents(text: &str, source: &str) -> Result<Vec<Value>> {
    let mut raw = Vec::new();
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        for (i, v) in serde_json::Deserializer::from_str(text).into_iter::<Value>().enumerate() {
            let v = v.with_context(|| format!("{source}: document {} is not valid JSON", i + 1))?;
            match v {
                Value::Array(items) => raw.extend(items),
                v => raw.push(v),
            }
        }
    } else {
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let v =
                Value::deserialize(doc).map_err(|e| anyhow!("{source}: document {} is not valid YAML: {e}", i + 1))?;
            raw.push(v);
        }
    }
    let mut out = Vec::new();
    for v in raw {
        match v {
            Value::Null => {}
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => match m.get("items") {
                Some(Value::Array(items)) => out.extend(items.iter().filter(|i| !i.is_null()).cloned()),
                _ => bail!("{source}: a List without an items array"),
            },
            v => out.push(v),
        }
    }
    if out.is_empty() {
        bail!("{source}: no objects found");
    }
    Ok(out)
}

/// Resolves each object's kind, fills in the namespace and validates it locally.
///
/// `explicit_ns` is the `-n` the user typed: an object in another namespace is refused, as
/// kubectl does. `default_ns` fills objects without a namespace.
pub fn prepare(
    objects: Vec<Value>,
    explicit_ns: Option<&str>,
    default_ns: &str,
    source: &str,
) -> Result<Vec<Document>> {
    let mut docs = Vec::new();
    let mut problems = Vec::new();
    for (i, mut object) in objects.into_iter().enumerate() {
        let index = i + 1;
        match prepare_one(&mut object, explicit_ns, default_ns) {
            Ok((rt, normalised)) => docs.push(Document { index, rt, object, normalised }),
            Err(e) => problems.push(format!("{source}: document {index}{}: {e}", describe(&object))),
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\nerror: "));
    }
    Ok(docs)
}

fn describe(object: &Value) -> String {
    let kind = object.get("kind").and_then(Value::as_str);
    let name = object.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str);
    match (kind, name) {
        (Some(k), Some(n)) => format!(" ({k} {n:?})"),
        (Some(k), None) => format!(" ({k})"),
        _ => String::new(),
    }
}

fn prepare_one(
    object: &mut Value,
    explicit_ns: Option<&str>,
    default_ns: &str,
) -> Result<(&'static ResourceType, Option<Value>)> {
    let Value::Object(map) = object else {
        bail!("not an object (expected a mapping with apiVersion, kind, metadata and spec)");
    };
    let api_version = map.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_owned();
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
    if api_version.is_empty() || kind.is_empty() {
        bail!("apiVersion and kind are required");
    }
    let rt = by_kind(&api_version, &kind).ok_or_else(|| {
        anyhow!(
            "unknown kind {kind:?} in apiVersion {api_version:?} (known: {})",
            riptides_wire::resource::RESOURCE_TYPES
                .iter()
                .map(|t| format!("{}/{}", t.api_version(), t.kind))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let metadata = map.entry("metadata").or_insert_with(|| Value::Object(Default::default()));
    let Value::Object(meta) = metadata else { bail!("metadata must be a mapping") };
    if rt.namespaced {
        match (meta.get("namespace").and_then(Value::as_str), explicit_ns) {
            (Some(ns), Some(flag)) if ns != flag => {
                bail!("the namespace from the object ({ns:?}) does not match the namespace given with -n ({flag:?})")
            }
            (Some(_), _) => {}
            (None, _) => {
                meta.insert("namespace".into(), Value::String(explicit_ns.unwrap_or(default_ns).to_owned()));
            }
        }
    }
    if meta.get("name").and_then(Value::as_str).unwrap_or_default().is_empty() && !meta.contains_key("generateName") {
        bail!("metadata.name is required");
    }
    let normalised = validate_locally(rt, object)?;
    Ok((rt, normalised))
}

/// Validates with the kind's own rules. The client does not know the control plane's trust
/// domain, so membership of SPIFFE IDs is left to the server (which is the authority anyway).
fn validate_locally(rt: &ResourceType, object: &Value) -> Result<Option<Value>> {
    let ctx = ValidationContext { trust_domain: guess_trust_domain(object) };
    match rt.validate(object, &ctx) {
        Ok(v) => Ok(Some(v)),
        Err(errors) => {
            let relevant: Vec<&FieldError> = errors.iter().filter(|e| !e.message.contains("trust domain")).collect();
            if relevant.is_empty() {
                return Ok(None);
            }
            bail!("invalid {}: {}", rt.kind, relevant.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))
        }
    }
}

/// The trust domain of the first SPIFFE ID in the object, or a placeholder.
fn guess_trust_domain(object: &Value) -> TrustDomain {
    fn find(v: &Value) -> Option<TrustDomain> {
        match v {
            Value::String(s) if s.starts_with("spiffe://") => SpiffeId::parse(s).ok().map(|id| id.trust_domain()),
            Value::Array(a) => a.iter().find_map(find),
            Value::Object(m) => m.values().find_map(find),
            _ => None,
        }
    }
    find(object).unwrap_or_else(|| TrustDomain::parse("cluster.local").expect("valid placeholder"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MULTI: &str = r#"
# a comment-only preamble
---
apiVersion: auth.riptides.io/v1alpha1
kind: Verifier
metadata: {name: join}
spec: {method: joinToken}
---
---
apiVersion: core.riptides.io/v1alpha1
kind: WorkloadIdentity
metadata: {name: frontend, namespace: other}
spec:
  workloadID: frontend
  scope: {daemonGroup: {id: web}}
  egress:
    - selectors: [{tier: backend}]
      allowedSPIFFEIDs: ["spiffe://somewhere.example/orders-service"]
"#;

    #[test]
    fn multi_document_yaml() {
        let objs = parse_documents(MULTI, "f.yaml").unwrap();
        assert_eq!(objs.len(), 2);
        let docs = prepare(objs, None, "riptides-system", "f.yaml").unwrap();
        assert_eq!((docs[0].rt.kind, docs[0].name(), docs[0].namespace()), ("Verifier", "join", "riptides-system"));
        assert_eq!((docs[1].rt.kind, docs[1].namespace()), ("WorkloadIdentity", "other"));
        assert!(docs[1].normalised.is_some());
    }

    #[test]
    fn json_and_lists() {
        let text = r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"auth.riptides.io/v1alpha1","kind":"Verifier","metadata":{"name":"a"},"spec":{"method":"joinToken"}}]}
        {"apiVersion":"auth.riptides.io/v1alpha1","kind":"Verifier","metadata":{"name":"b"},"spec":{"method":"joinToken"}}"#;
        let objs = parse_documents(text, "-").unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(parse_documents("[]", "-").unwrap_err().to_string(), "-: no objects found");
    }

    #[test]
    fn errors_name_the_document() {
        let e = parse_documents("a: 1\n---\nb: [unclosed\n", "x.yaml").unwrap_err().to_string();
        assert!(e.starts_with("x.yaml: document 2 is not valid YAML"), "{e}");
        let objs = parse_documents("apiVersion: auth.riptides.io/v1alpha1\nkind: Verifier\nmetadata: {name: a}\nspec: {method: joinToken}\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n", "x.yaml").unwrap();
        let e = prepare(objs, None, "ns", "x.yaml").unwrap_err().to_string();
        assert!(
            e.starts_with(
                "x.yaml: document 2 (Widget \"w\"): unknown kind \"Widget\" in apiVersion \"example.com/v1\""
            ),
            "{e}"
        );
        let objs = parse_documents("apiVersion: auth.riptides.io/v1alpha1\nkind: Verifier\nmetadata: {name: a, namespace: x}\nspec: {method: joinToken, colour: red}\n", "x.yaml").unwrap();
        let e = prepare(objs, Some("y"), "ns", "x.yaml").unwrap_err().to_string();
        assert!(e.contains("does not match the namespace given with -n"), "{e}");
        let objs = parse_documents(
            "apiVersion: auth.riptides.io/v1alpha1\nkind: Verifier\nmetadata: {name: a}\nspec: {method: joinToken, colour: red}\n",
            "x.yaml",
        )
        .unwrap();
        let e = prepare(objs, None, "ns", "x.yaml").unwrap_err().to_string();
        assert!(
            e.contains("document 1 (Verifier \"a\"): invalid Verifier: spec.colour: unknown field `colour`"),
            "{e}"
        );
        let objs = parse_documents("- 1\n", "x.yaml").unwrap();
        assert!(prepare(objs, None, "ns", "x").unwrap_err().to_string().contains("not an object"));
    }
}
