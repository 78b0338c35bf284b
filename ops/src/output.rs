//! Printing objects: kubectl-like tables, YAML, JSON and `-o name`.

use std::io::Write;

use anyhow::Result;
use riptides_wire::resource::ResourceType;
use serde_json::Value;

use crate::timefmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Yaml,
    Json,
    Wide,
    Name,
}

/// Left-aligned columns separated by three spaces, like kubectl's tabwriter.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            out.push_str(c);
            if i + 1 < n {
                out.push_str(&" ".repeat(widths[i] - c.chars().count() + 3));
            }
        }
        out.push('\n');
    };
    line(headers.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| v.get(k).unwrap_or(&Value::Null))
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "<none>".into(),
        Value::String(s) if s.is_empty() => "<none>".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Extra columns of `-o wide`, per kind.
fn wide_columns(kind: &str) -> &'static [&'static str] {
    match kind {
        "WorkloadIdentity" => &["WORKLOAD-ID", "SCOPE", "EGRESS", "INGRESS"],
        "Service" => &["ADDRESSES", "EXTERNAL"],
        "Daemon" => &["ID", "GROUP", "CONNECTED", "VERSION"],
        "Verifier" => &["METHOD", "DAEMON-GROUP"],
        "JoinToken" => &["VERIFIER", "EXPIRES", "USED"],
        "CredentialSource" => &["TYPE"],
        _ => &[],
    }
}

fn wide_values(kind: &str, o: &Value) -> Vec<String> {
    let count = |v: &Value| v.as_array().map_or(0, Vec::len).to_string();
    match kind {
        "WorkloadIdentity" => {
            let scope = s(o, &["spec", "scope"]);
            let scope = match (s(scope, &["daemon", "id"]).as_str(), s(scope, &["daemonGroup", "id"]).as_str()) {
                (Some(d), _) => format!("daemon:{d}"),
                (None, Some(g)) => format!("group:{g}"),
                _ => "<none>".into(),
            };
            vec![
                text(s(o, &["spec", "workloadID"])),
                scope,
                count(s(o, &["spec", "egress"])),
                count(s(o, &["spec", "ingress"])),
            ]
        }
        "Service" => {
            let addrs = s(o, &["spec", "addresses"])
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| {
                            let (addr, port) = (text(s(x, &["address"])), text(s(x, &["port"])));
                            if addr.contains(':') && !addr.contains('/') {
                                format!("[{addr}]:{port}")
                            } else {
                                format!("{addr}:{port}")
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "<none>".into());
            let external = s(o, &["spec", "external"]).as_bool().unwrap_or(false).to_string();
            vec![addrs, external]
        }
        "Daemon" => vec![
            text(s(o, &["spec", "id"])),
            text(s(o, &["spec", "group"])),
            text(s(o, &["status", "connected"])),
            text(s(o, &["status", "version"])),
        ],
        "Verifier" => vec![text(s(o, &["spec", "method"])), text(s(o, &["spec", "daemonGroup"]))],
        "JoinToken" => vec![
            text(s(o, &["spec", "verifier"])),
            text(s(o, &["spec", "expiresAt"])),
            s(o, &["status", "used"]).as_bool().unwrap_or(false).to_string(),
        ],
        "CredentialSource" => vec![text(s(o, &["spec", "type"]))],
        _ => vec![],
    }
}

/// The `kubectl get` table of some objects of one kind.
pub fn object_table(rt: &ResourceType, items: &[Value], all_namespaces: bool, wide: bool, now: i64) -> String {
    let mut headers: Vec<&str> = Vec::new();
    if all_namespaces {
        headers.push("NAMESPACE");
    }
    headers.extend(["NAME", "AGE"]);
    if wide {
        headers.extend(wide_columns(rt.kind));
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|o| {
            let mut row = Vec::new();
            if all_namespaces {
                row.push(text(s(o, &["metadata", "namespace"])));
            }
            row.push(text(s(o, &["metadata", "name"])));
            row.push(timefmt::age(s(o, &["metadata", "creationTimestamp"]).as_str(), now));
            if wide {
                row.extend(wide_values(rt.kind, o));
            }
            row
        })
        .collect();
    table(&headers, &rows)
}

/// `kubectl get -o name`: `<singular>.<group>/<name>`.
pub fn object_name(rt: &ResourceType, o: &Value) -> String {
    format!("{}.{}/{}", rt.singular, rt.group, s(o, &["metadata", "name"]).as_str().unwrap_or_default())
}

pub fn print_yaml(v: &Value) -> Result<()> {
    let text = serde_yaml_ng::to_string(v)?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    Ok(())
}

pub fn print_json(v: &Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use riptides_wire::resource::by_name;
    use serde_json::json;

    #[test]
    fn tables_align() {
        let t = table(&["NAME", "AGE"], &[vec!["frontend".into(), "5m".into()], vec!["a".into(), "10s".into()]]);
        assert_eq!(t, "NAME       AGE\nfrontend   5m\na          10s\n");
    }

    #[test]
    fn wide_and_all_namespaces() {
        let svc = by_name("svc").unwrap();
        let o = json!({"metadata": {"name": "orders", "namespace": "ns", "creationTimestamp": "1970-01-01T00:00:00Z"},
            "spec": {"addresses": [{"address": "10.0.0.1", "port": 8000}, {"address": "fd00::1", "port": 443}]}});
        let t = object_table(svc, std::slice::from_ref(&o), true, true, 30);
        let want = [
            "NAMESPACE   NAME     AGE   ADDRESSES                     EXTERNAL",
            "ns          orders   30s   10.0.0.1:8000,[fd00::1]:443   false",
        ];
        assert_eq!(t, format!("{}\n{}\n", want[0], want[1]));
        assert_eq!(object_name(svc, &o), "service.core.riptides.io/orders");
    }
}
