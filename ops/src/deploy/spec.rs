//! `deploy.yaml`: which charts go to which cluster, exactly in the shape of the deployment
//! guide ("Environment-Specific Configuration"):
//!
//! ```yaml
//! cpCluster:
//!   clusterName: riptides-prod-cp
//!   clusterRegion: us-east-1
//!   deployments:
//!     controlplane:
//!       chart: controlplane
//!       version: v0.1.10
//!       registry: ghcr.io/riptideslabs/helm
//!       namespace: riptides-cp
//!       valuesFile: cp-values.yaml
//! workloadCluster:
//!   clusterName: riptides-prod-apps
//!   ...
//! ```
//!
//! Unknown fields are refused: a misspelt `valuesFile` must not silently deploy chart
//! defaults. Deployments keep the order of the file, because that is the order an operator
//! reads and expects them to be installed in.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use thiserror::Error;

/// Why a `deploy.yaml` was refused.
#[derive(Debug, Error)]
pub enum SpecError {
    #[error("{file}: {source}")]
    Yaml { file: String, source: serde_yaml_ng::Error },
    #[error("{file}: {path}: {reason}")]
    Invalid { file: String, path: String, reason: String },
}

/// The whole file: one control-plane cluster and one workload cluster, either optional (an
/// environment may deploy only daemons into a workload cluster, or only a control plane).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploySpec {
    pub cp_cluster: Option<Cluster>,
    pub workload_cluster: Option<Cluster>,
}

/// A cluster: its kube context is its `clusterName`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cluster {
    pub cluster_name: String,
    #[serde(default)]
    pub cluster_region: Option<String>,
    pub deployments: Deployments,
}

/// Deployments in file order; the key is the Helm release name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Deployments(pub Vec<(String, Deployment)>);

/// One Helm release.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Deployment {
    pub chart: String,
    pub version: String,
    pub registry: String,
    pub namespace: String,
    pub values_file: String,
}

impl<'de> Deserialize<'de> for Deployments {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Ordered;
        impl<'de> Visitor<'de> for Ordered {
            type Value = Deployments;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map from release name to deployment")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Deployments, A::Error> {
                let mut out: Vec<(String, Deployment)> = Vec::new();
                while let Some((name, dep)) = map.next_entry::<String, Deployment>()? {
                    if out.iter().any(|(n, _)| *n == name) {
                        return Err(de::Error::custom(format!("deployment {name:?} appears twice")));
                    }
                    out.push((name, dep));
                }
                Ok(Deployments(out))
            }
        }
        d.deserialize_map(Ordered)
    }
}

impl DeploySpec {
    /// Parses and checks a `deploy.yaml`; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, SpecError> {
        let spec: DeploySpec =
            serde_yaml_ng::from_str(text).map_err(|source| SpecError::Yaml { file: file.to_owned(), source })?;
        spec.validate(file)?;
        Ok(spec)
    }

    /// The clusters in deployment order: the control plane first, since daemons attest to it.
    pub fn clusters(&self) -> Vec<(&'static str, &Cluster)> {
        let mut v = Vec::new();
        if let Some(c) = &self.cp_cluster {
            v.push(("cpCluster", c));
        }
        if let Some(c) = &self.workload_cluster {
            v.push(("workloadCluster", c));
        }
        v
    }

    fn validate(&self, file: &str) -> Result<(), SpecError> {
        let invalid =
            |path: String, reason: &str| SpecError::Invalid { file: file.to_owned(), path, reason: reason.to_owned() };
        if self.clusters().is_empty() {
            return Err(invalid("$".into(), "needs cpCluster, workloadCluster or both"));
        }
        for (key, cluster) in self.clusters() {
            if !is_context_name(&cluster.cluster_name) {
                return Err(invalid(
                    format!("{key}.clusterName"),
                    "must be a non-empty kube context name (letters, digits, . _ - @ : /)",
                ));
            }
            if cluster.deployments.0.is_empty() {
                return Err(invalid(format!("{key}.deployments"), "lists no deployment"));
            }
            for (name, d) in &cluster.deployments.0 {
                let at = |field: &str| format!("{key}.deployments.{name}.{field}");
                if !is_dns_label(name) {
                    return Err(invalid(format!("{key}.deployments.{name}"), "release name must be a DNS label"));
                }
                if !is_dns_label(&d.chart) {
                    return Err(invalid(at("chart"), "must be a chart name (a DNS label)"));
                }
                if !is_dns_label(&d.namespace) {
                    return Err(invalid(at("namespace"), "must be a Kubernetes namespace (a DNS label)"));
                }
                if !is_version(&d.version) {
                    return Err(invalid(at("version"), "must be a chart version such as v0.1.10 or 0.1.10"));
                }
                if d.registry.trim().is_empty() || d.registry.chars().any(char::is_whitespace) {
                    return Err(invalid(at("registry"), "must be a registry (ghcr.io/org/helm, https://repo, ./dir)"));
                }
                if !is_plain_file_name(&d.values_file) {
                    return Err(invalid(at("valuesFile"), "must be a file name inside the environment directory"));
                }
            }
        }
        Ok(())
    }
}

/// RFC 1123 label: what Helm accepts as a release name and Kubernetes as a namespace.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_context_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@:/".contains(&b))
}

/// `v0.1.10`, `0.1.10`, `1.2.3-rc.1`: SemVer with an optional leading `v`, as Helm takes it.
fn is_version(s: &str) -> bool {
    let core = s.strip_prefix('v').unwrap_or(s);
    let core = core.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b".-+".contains(&b))
}

/// Values files live in the environment directory: no path separators, no `..`.
fn is_plain_file_name(s: &str) -> bool {
    !s.is_empty() && !s.contains('/') && s != "." && s != ".." && !s.starts_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The deployment guide's example, verbatim.
    pub const SEED: &str = include_str!("seed-deploy.yaml");

    #[test]
    fn seed_is_accepted_in_order() {
        let s = DeploySpec::parse("deploy.yaml", SEED).unwrap();
        let names: Vec<_> =
            s.clusters().iter().flat_map(|(_, c)| c.deployments.0.iter().map(|(n, _)| n.as_str())).collect();
        assert_eq!(names, ["controlplane", "frontend", "daemon", "node-gatekeeper"]);
        let cp = s.cp_cluster.as_ref().unwrap();
        assert_eq!(cp.cluster_name, "riptides-prod-cp");
        assert_eq!(cp.cluster_region.as_deref(), Some("us-east-1"));
        assert_eq!(cp.deployments.0[0].1.values_file, "cp-values.yaml");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let bad = SEED.replace("valuesFile: cp-values.yaml", "valueFile: cp-values.yaml");
        let e = DeploySpec::parse("deploy.yaml", &bad).unwrap_err().to_string();
        assert!(e.contains("unknown field `valueFile`"), "{e}");
    }

    #[test]
    fn bad_fields_name_their_path() {
        let cases = [
            ("version: v0.1.10", "version: latest", "cpCluster.deployments.controlplane.version"),
            ("namespace: riptides-cp\n      valuesFile: cp", "namespace: Riptides\n      valuesFile: cp", "namespace"),
            ("valuesFile: ngk-values.yaml", "valuesFile: ../x.yaml", "node-gatekeeper.valuesFile"),
            ("clusterName: riptides-prod-apps", "clusterName: \"\"", "workloadCluster.clusterName"),
        ];
        for (from, to, want) in cases {
            let e = DeploySpec::parse("deploy.yaml", &SEED.replace(from, to)).unwrap_err().to_string();
            assert!(e.contains(want), "{to}: {e}");
        }
        let e = DeploySpec::parse("d.yaml", "{}").unwrap_err().to_string();
        assert!(e.contains("needs cpCluster, workloadCluster"), "{e}");
    }

    #[test]
    fn duplicate_release_is_refused() {
        let dup = SEED.replace("node-gatekeeper:\n      chart", "daemon:\n      chart");
        let e = DeploySpec::parse("deploy.yaml", &dup).unwrap_err().to_string();
        assert!(e.contains("daemon") && (e.contains("twice") || e.contains("duplicate")), "{e}");
    }

    #[test]
    fn versions() {
        for ok in ["v0.1.10", "0.1.10", "1.2.3-rc.1", "1.0.0+build.5"] {
            assert!(is_version(ok), "{ok}");
        }
        for bad in ["latest", "v1.2", "1.2.x", "", "v", "1.2.3 "] {
            assert!(!is_version(bad), "{bad}");
        }
    }
}
