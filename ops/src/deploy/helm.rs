//! The `helm upgrade --install` command of one release, shown or run.
//!
//! Helm is the interface operators already audit and re-run by hand, so the deploy tool adds
//! nothing Helm would not do: it only composes the command line (chart reference, version,
//! namespace, kube context, values file) and runs it, one release at a time, stopping at the
//! first failure.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use thiserror::Error;

/// Placeholder shown by `--dry-run` for the private directory rendered templates go to.
pub const RENDERED_PLACEHOLDER: &str = "<rendered>";

#[derive(Debug, Error)]
pub enum HelmError {
    #[error(
        "helm not found (looked for {0:?} on PATH): install Helm 3.8 or later (OCI charts) or pass --helm PATH; \
         `riptides deploy --dry-run` prints the commands without running them"
    )]
    NotFound(String),
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("release {release} on context {context}: helm failed ({status}); releases after it were not deployed")]
    Failed { release: String, context: String, status: std::process::ExitStatus },
}

/// Where a chart comes from, derived from `registry` + `chart`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChartRef {
    /// `oci://<registry>/<chart>`: a plain `host/path` registry or an explicit `oci://`.
    Oci(String),
    /// A classic chart repository (`https://...`): `--repo URL CHART`.
    Repo { url: String, chart: String },
    /// A chart directory on disk (`registry` starting with `/`, `./` or `../`, relative to the
    /// environment directory): for trying charts out of this repository.
    Local(PathBuf),
}

impl ChartRef {
    pub fn new(registry: &str, chart: &str, env_dir: &Path) -> ChartRef {
        let registry = registry.trim_end_matches('/');
        if let Some(rest) = registry.strip_prefix("oci://") {
            ChartRef::Oci(format!("oci://{rest}/{chart}"))
        } else if registry.starts_with("https://") || registry.starts_with("http://") {
            ChartRef::Repo { url: registry.to_owned(), chart: chart.to_owned() }
        } else if registry.starts_with('/') || registry.starts_with("./") || registry.starts_with("../") {
            ChartRef::Local(env_dir.join(registry).join(chart))
        } else {
            ChartRef::Oci(format!("oci://{registry}/{chart}"))
        }
    }
}

/// One release to install or upgrade.
#[derive(Debug, Clone)]
pub struct Release {
    pub name: String,
    pub chart: ChartRef,
    pub version: String,
    pub namespace: String,
    pub context: String,
}

impl Release {
    /// Arguments after `helm`, with `values` as the values file.
    pub fn args(&self, values: &str) -> Vec<String> {
        let mut a: Vec<String> = vec!["upgrade".into(), "--install".into(), self.name.clone()];
        match &self.chart {
            ChartRef::Oci(r) => a.push(r.clone()),
            ChartRef::Repo { url, chart } => a.extend([chart.clone(), "--repo".into(), url.clone()]),
            ChartRef::Local(p) => a.push(p.display().to_string()),
        }
        a.extend(["--version".into(), self.version.clone()]);
        a.extend(["--namespace".into(), self.namespace.clone(), "--create-namespace".into()]);
        a.extend(["--kube-context".into(), self.context.clone()]);
        a.extend(["--values".into(), values.to_owned(), "--wait".into()]);
        a
    }
}

/// A command line as a shell would take it back: words quoted only when they need it, the
/// dry-run placeholder left bare so it reads as one.
pub fn display(program: &str, args: &[String]) -> String {
    std::iter::once(program).chain(args.iter().map(String::as_str)).map(quote).collect::<Vec<_>>().join(" ")
}

fn quote(w: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./:@=,+-%".contains(c);
    if !w.is_empty() && (w.chars().all(plain) || w.starts_with(RENDERED_PLACEHOLDER)) {
        w.to_owned()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

/// Finds `program` the way `execvp` would, so a missing helm is reported before the first
/// release rather than after half the environment was deployed.
pub fn locate(program: &str) -> Result<PathBuf, HelmError> {
    let found = if program.contains('/') {
        Some(PathBuf::from(program)).filter(|p| is_executable(p))
    } else {
        std::env::var_os("PATH")
            .as_deref()
            .map(std::env::split_paths)
            .into_iter()
            .flatten()
            .map(|d| d.join(program))
            .find(|p| is_executable(p))
    };
    found.ok_or_else(|| HelmError::NotFound(program.to_owned()))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Runs helm with `args`, output going straight to the operator's terminal.
pub fn run(helm: &Path, release: &Release, args: &[String]) -> Result<(), HelmError> {
    let status = Command::new(helm)
        .args(args.iter().map(OsStr::new))
        .status()
        .map_err(|source| HelmError::Spawn { program: helm.display().to_string(), source })?;
    if status.success() {
        Ok(())
    } else {
        Err(HelmError::Failed { release: release.name.clone(), context: release.context.clone(), status })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_references() {
        let env = Path::new("env");
        assert_eq!(ChartRef::new("ghcr.io/o/helm", "cp", env), ChartRef::Oci("oci://ghcr.io/o/helm/cp".into()));
        assert_eq!(ChartRef::new("oci://r.io/x/", "cp", env), ChartRef::Oci("oci://r.io/x/cp".into()));
        assert_eq!(
            ChartRef::new("https://charts.example.com", "cp", env),
            ChartRef::Repo { url: "https://charts.example.com".into(), chart: "cp".into() }
        );
        assert_eq!(ChartRef::new("../../helm", "daemon", env), ChartRef::Local("env/../../helm/daemon".into()));
    }

    #[test]
    fn args_and_display() {
        let r = Release {
            name: "daemon".into(),
            chart: ChartRef::Repo { url: "https://c.example".into(), chart: "daemon".into() },
            version: "0.1.0".into(),
            namespace: "riptides-system".into(),
            context: "apps".into(),
        };
        let a = r.args("<rendered>/d.yaml");
        assert_eq!(
            display("helm", &a),
            "helm upgrade --install daemon daemon --repo https://c.example --version 0.1.0 --namespace riptides-system \
             --create-namespace --kube-context apps --values <rendered>/d.yaml --wait"
        );
        assert_eq!(quote("it's here"), r"'it'\''s here'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn missing_program_is_reported() {
        let e = locate("/nonexistent/helm").unwrap_err().to_string();
        assert!(e.contains("helm not found") && e.contains("--dry-run"), "{e}");
        assert!(locate("sh").is_ok());
    }
}
