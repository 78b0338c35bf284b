//! `riptides ctl apply|get|delete`.

use std::io::Read;

use anyhow::{anyhow, bail, Context as _, Result};
use riptides_wire::client::{ApiClient, ApiError};
use riptides_wire::resource::{by_name, ResourceType, RESOURCE_TYPES};
use serde_json::Value;

use crate::manifest::{self, Document};
use crate::output::{self, OutputFormat};
use crate::{timefmt, Target};

/// Resolves what a user typed (`wi`, `workloadidentities`, `Verifier`...).
pub fn resolve_kind(name: &str) -> Result<&'static ResourceType> {
    by_name(name).ok_or_else(|| {
        anyhow!(
            "the server doesn't have a resource type {name:?} (known: {})",
            RESOURCE_TYPES.iter().map(|t| t.plural).collect::<Vec<_>>().join(", ")
        )
    })
}

fn read_source(file: &str) -> Result<(String, String)> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read the manifest from stdin")?;
        Ok((text, "<stdin>".into()))
    } else {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?;
        Ok((text, file.to_owned()))
    }
}

/// What apply did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        }
    }
}

pub async fn apply(target: &Target, files: &[String]) -> Result<()> {
    // Read and check everything first: a typo in the last document applies nothing.
    let mut docs = Vec::new();
    for file in files {
        let (text, source) = read_source(file)?;
        let objects = manifest::parse_documents(&text, &source)?;
        docs.extend(manifest::prepare(objects, target.explicit_namespace.as_deref(), &target.namespace, &source)?);
    }
    let client = target.client()?;
    let mut failures = 0;
    for doc in &docs {
        match apply_one(&client, doc).await {
            Ok((outcome, name)) => println!("{}/{} {}", doc.rt.singular, name, outcome.as_str()),
            Err(e) => {
                failures += 1;
                eprintln!("error: document {} ({} {:?}): {e:#}", doc.index, doc.rt.kind, doc.name());
            }
        }
    }
    if failures > 0 {
        bail!("{failures} of {} objects could not be applied", docs.len());
    }
    Ok(())
}

/// Creates the object, or replaces it when it differs from what the server has. A 409 (someone
/// else changed it meanwhile, or it appeared between our read and our create) is retried once.
pub async fn apply_one(client: &ApiClient, doc: &Document) -> Result<(Outcome, String), ApiError> {
    let (rt, ns, name) = (doc.rt, doc.namespace(), doc.name());
    if name.is_empty() {
        // generateName: always a new object.
        let created = client.create(rt, ns, &doc.object).await?;
        let name = created["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        return Ok((Outcome::Created, name));
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = match client.get(rt, ns, name).await {
            Err(e) if e.is_not_found() => client.create(rt, ns, &doc.object).await.map(|_| Outcome::Created),
            Err(e) => return Err(e),
            Ok(existing) => {
                if unchanged(doc, &existing) {
                    return Ok((Outcome::Unchanged, name.to_owned()));
                }
                let mut object = doc.object.clone();
                if let Some(rv) = existing["metadata"].get("resourceVersion") {
                    object["metadata"]["resourceVersion"] = rv.clone();
                }
                client.replace(rt, ns, name, &object).await.map(|_| Outcome::Configured)
            }
        };
        match result {
            Err(e) if e.is_conflict() && attempt < 2 => continue,
            other => return other.map(|o| (o, name.to_owned())),
        }
    }
}

/// Whether the server's object already says what the manifest says: same spec (in the stored,
/// normalised form), labels and annotations.
fn unchanged(doc: &Document, existing: &Value) -> bool {
    let desired = doc.normalised.as_ref().unwrap_or(&doc.object);
    let map = |v: &Value, k: &str| -> Value {
        match v["metadata"].get(k) {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(m) => m.clone(),
        }
    };
    let spec = |v: &Value| v.get("spec").cloned().unwrap_or(Value::Null);
    spec(desired) == spec(existing)
        && map(desired, "labels") == map(existing, "labels")
        && map(desired, "annotations") == map(existing, "annotations")
}

pub struct GetArgs<'a> {
    pub kind: &'a str,
    pub name: Option<&'a str>,
    pub all_namespaces: bool,
    pub output: Option<OutputFormat>,
}

/// `kind/name` as one argument, like kubectl.
pub fn split_kind_name<'a>(kind: &'a str, name: Option<&'a str>) -> Result<(&'a str, Option<&'a str>)> {
    match kind.split_once('/') {
        Some((k, n)) if name.is_none() && !n.is_empty() => Ok((k, Some(n))),
        Some(_) => bail!("use either KIND/NAME or KIND NAME, not both"),
        None => Ok((kind, name)),
    }
}

pub async fn get(target: &Target, args: GetArgs<'_>) -> Result<()> {
    let (kind, name) = split_kind_name(args.kind, args.name)?;
    let rt = resolve_kind(kind)?;
    if name.is_some() && args.all_namespaces {
        bail!("a resource cannot be retrieved by name across all namespaces");
    }
    let client = target.client()?;
    let now = timefmt::now_unix();
    let wide = args.output == Some(OutputFormat::Wide);
    if let Some(name) = name {
        let object = client.get(rt, &target.namespace, name).await?;
        match args.output {
            Some(OutputFormat::Yaml) => output::print_yaml(&object)?,
            Some(OutputFormat::Json) => output::print_json(&object)?,
            Some(OutputFormat::Name) => println!("{}", output::object_name(rt, &object)),
            _ => print!("{}", output::object_table(rt, std::slice::from_ref(&object), false, wide, now)),
        }
        return Ok(());
    }
    let ns = (!args.all_namespaces).then_some(target.namespace.as_str());
    let list = client.list(rt, ns).await?;
    match args.output {
        Some(OutputFormat::Yaml) => output::print_yaml(&serde_json::to_value(&list)?)?,
        Some(OutputFormat::Json) => output::print_json(&serde_json::to_value(&list)?)?,
        Some(OutputFormat::Name) => {
            for o in &list.items {
                println!("{}", output::object_name(rt, o));
            }
        }
        _ if list.items.is_empty() => match ns {
            Some(ns) => eprintln!("No resources found in {ns} namespace."),
            None => eprintln!("No resources found"),
        },
        _ => print!("{}", output::object_table(rt, &list.items, args.all_namespaces, wide, now)),
    }
    Ok(())
}

pub async fn delete(target: &Target, kind: &str, name: Option<&str>) -> Result<()> {
    let (kind, name) = split_kind_name(kind, name)?;
    let name = name.ok_or_else(|| anyhow!("a NAME is required (riptides ctl delete KIND NAME)"))?;
    let rt = resolve_kind(kind)?;
    let client = target.client()?;
    client.delete(rt, &target.namespace, name).await?;
    println!("{} {name:?} deleted", rt.singular);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_names() {
        assert_eq!(resolve_kind("wi").unwrap().kind, "WorkloadIdentity");
        assert_eq!(resolve_kind("JoinTokens").unwrap().kind, "JoinToken");
        let e = resolve_kind("pods").unwrap_err().to_string();
        assert!(e.starts_with("the server doesn't have a resource type \"pods\""), "{e}");
        assert_eq!(split_kind_name("wi/frontend", None).unwrap(), ("wi", Some("frontend")));
        assert_eq!(split_kind_name("wi", Some("x")).unwrap(), ("wi", Some("x")));
        assert!(split_kind_name("wi/a", Some("b")).is_err());
    }

    #[test]
    fn unchanged_compares_normalised_spec_and_labels() {
        let objs = manifest::parse_documents(
            "apiVersion: auth.riptides.io/v1alpha1\nkind: Verifier\nmetadata: {name: a, labels: {x: y}}\nspec: {method: joinToken}\n",
            "t",
        )
        .unwrap();
        let doc = manifest::prepare(objs, None, "ns", "t").unwrap().remove(0);
        let mut existing = serde_json::json!({
            "apiVersion": "auth.riptides.io/v1alpha1", "kind": "Verifier",
            "metadata": {"name": "a", "namespace": "ns", "resourceVersion": "7", "uid": "u", "labels": {"x": "y"}},
            "spec": {"method": "joinToken"}
        });
        assert!(unchanged(&doc, &existing));
        existing["metadata"]["labels"]["x"] = "z".into();
        assert!(!unchanged(&doc, &existing));
        existing["metadata"]["labels"]["x"] = "y".into();
        existing["spec"]["daemonGroup"] = "g".into();
        assert!(!unchanged(&doc, &existing));
    }
}
