//! `riptides deploy --env DIR [--dry-run]`: deploys one environment from its directory
//! (`deploy.yaml` + Helm values files, some of them `.tmpl` templates holding secrets).
//!
//! Everything is checked before anything runs: `deploy.yaml` parses in the guide's shape
//! ([`spec`]), every values file exists and renders with the variables it needs
//! ([`template`]), every rendered file is YAML, and all of them agree on the trust domain
//! ([`trust`]). Only then are the `helm upgrade --install` commands printed (`--dry-run`) or
//! run ([`helm`]), control-plane cluster first, in file order. Rendered templates are written
//! only in run mode, to a private temporary directory (0700, files 0600) removed afterwards,
//! and their contents are never printed.

pub mod helm;
pub mod spec;
pub mod template;
pub mod trust;

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use helm::{ChartRef, Release, RENDERED_PLACEHOLDER};
use spec::DeploySpec;

/// Flags of `riptides deploy`.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// Environment directory: deploy.yaml, the values files and their .tmpl templates.
    #[arg(long = "env", value_name = "DIR")]
    pub env: PathBuf,
    /// Print the helm commands instead of running them (everything is still checked; nothing
    /// is written).
    #[arg(long)]
    pub dry_run: bool,
    /// The helm executable (Helm 3.8 or later, for OCI registries).
    #[arg(long, env = "RIPTIDES_HELM", default_value = "helm", value_name = "PATH")]
    pub helm: String,
}

/// Where a release's values come from.
#[derive(Debug, Clone)]
pub enum Values {
    /// A plain file in the environment directory, passed to helm as is.
    File(PathBuf),
    /// `<valuesFile>.tmpl` (or a `valuesFile` ending in `.tmpl`), rendered from the
    /// environment; `name` is the file name given to helm.
    Rendered { template: PathBuf, name: String, text: String, variables: Vec<String> },
}

/// One release of the plan, with the cluster it belongs to.
#[derive(Debug, Clone)]
pub struct Step {
    /// `cpCluster` or `workloadCluster`.
    pub cluster_key: &'static str,
    pub region: Option<String>,
    pub release: Release,
    pub values: Values,
}

/// A checked environment, ready to print or run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub env_dir: PathBuf,
    pub trust_domain: Option<String>,
    /// Files that stated (or defaulted) the trust domain, in order.
    pub trust_sources: Vec<String>,
    pub steps: Vec<Step>,
}

/// Reads and checks `env_dir`, resolving template variables with `lookup`.
pub fn plan(env_dir: &Path, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Plan> {
    let deploy_path = env_dir.join("deploy.yaml");
    let text = std::fs::read_to_string(&deploy_path)
        .with_context(|| format!("cannot read {} (is --env an environment directory?)", deploy_path.display()))?;
    let spec = DeploySpec::parse(&deploy_path.display().to_string(), &text)?;

    let mut steps = Vec::new();
    let mut statements = Vec::new();
    for (key, cluster) in spec.clusters() {
        for (name, d) in &cluster.deployments.0 {
            let where_ = format!("{key}.deployments.{name}.valuesFile");
            let values = resolve_values(env_dir, &d.values_file, &where_, lookup)?;
            let (shown, text) = match &values {
                Values::File(p) => (
                    d.values_file.clone(),
                    std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
                ),
                Values::Rendered { template, text, .. } => (file_name(template), text.clone()),
            };
            let parsed: serde_yaml_ng::Value = if text.trim().is_empty() {
                serde_yaml_ng::Value::Null
            } else {
                serde_yaml_ng::from_str(&text)
                    .with_context(|| format!("{}: not valid YAML after rendering", env_dir.join(&shown).display()))?
            };
            if !matches!(parsed, serde_yaml_ng::Value::Mapping(_) | serde_yaml_ng::Value::Null) {
                bail!("{}: Helm values must be a YAML mapping", env_dir.join(&shown).display());
            }
            statements.extend(trust::statements(&d.values_file, &d.chart, &parsed)?);
            steps.push(Step {
                cluster_key: key,
                region: cluster.cluster_region.clone(),
                release: Release {
                    name: name.clone(),
                    chart: ChartRef::new(&d.registry, &d.chart, env_dir),
                    version: d.version.clone(),
                    namespace: d.namespace.clone(),
                    context: cluster.cluster_name.clone(),
                },
                values,
            });
        }
    }
    let trust_domain = trust::consistent(&statements)?;
    let mut trust_sources: Vec<String> = Vec::new();
    for s in &statements {
        if !trust_sources.contains(&s.file) {
            trust_sources.push(s.file.clone());
        }
    }
    Ok(Plan { env_dir: env_dir.to_path_buf(), trust_domain, trust_sources, steps })
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// `valuesFile` as a plain file, or its `.tmpl`; both existing is ambiguous and refused.
/// A `valuesFile` that itself ends in `.tmpl` names the template directly.
fn resolve_values(
    env_dir: &Path,
    values_file: &str,
    where_: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Values> {
    let name = values_file.strip_suffix(".tmpl").unwrap_or(values_file).to_owned();
    let plain = env_dir.join(&name);
    let tmpl = env_dir.join(format!("{name}.tmpl"));
    let plain_exists = values_file == name && plain.exists();
    match (plain_exists, tmpl.exists()) {
        (true, true) => bail!(
            "{where_}: both {} and {} exist; keep one (the .tmpl if it holds secrets)",
            plain.display(),
            tmpl.display()
        ),
        (true, false) => Ok(Values::File(plain)),
        (false, true) => {
            let text = std::fs::read_to_string(&tmpl).with_context(|| format!("cannot read {}", tmpl.display()))?;
            let r = template::render(&tmpl.display().to_string(), &text, lookup)?;
            Ok(Values::Rendered { template: tmpl, name, text: r.text, variables: r.variables })
        }
        (false, false) => bail!("{where_}: {name} not found in {} (nor {name}.tmpl)", env_dir.display()),
    }
}

impl Plan {
    /// The `--dry-run` output: comments saying what was checked, then one helm command per
    /// release, with rendered files under [`RENDERED_PLACEHOLDER`].
    pub fn render_dry_run(&self, helm_program: &str) -> String {
        let mut out = String::new();
        let _ =
            writeln!(out, "# riptides deploy --env {} (dry run: nothing was run or written)", self.env_dir.display());
        match &self.trust_domain {
            Some(td) => {
                let _ = writeln!(out, "# trust domain {td}: consistent across {}", self.trust_sources.join(", "));
            }
            None => {
                let _ = writeln!(out, "# trust domain: stated by no values file");
            }
        }
        if self.steps.iter().any(|s| matches!(s.values, Values::Rendered { .. })) {
            let _ = writeln!(
                out,
                "# {RENDERED_PLACEHOLDER}: a private temporary directory (0700) holding the rendered templates while \
                 helm runs"
            );
        }
        let mut last_context: Option<&str> = None;
        for step in &self.steps {
            if last_context != Some(step.release.context.as_str()) {
                let region = step.region.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
                let _ = writeln!(out, "\n# {} {}{region}", step.cluster_key, step.release.context);
                last_context = Some(&step.release.context);
            }
            if let Values::Rendered { template, variables, name, .. } = &step.values {
                let _ = writeln!(
                    out,
                    "# {name} rendered from {} (variables: {})",
                    file_name(template),
                    variables.join(", ")
                );
            }
            let _ = writeln!(out, "{}", helm::display(helm_program, &step.release.args(&self.values_arg(step, None))));
        }
        out
    }

    fn values_arg(&self, step: &Step, rendered_dir: Option<&Path>) -> String {
        match (&step.values, rendered_dir) {
            (Values::File(p), _) => p.display().to_string(),
            (Values::Rendered { name, .. }, Some(dir)) => dir.join(name).display().to_string(),
            (Values::Rendered { name, .. }, None) => format!("{RENDERED_PLACEHOLDER}/{name}"),
        }
    }

    /// Runs every release in order; stops at the first failure.
    pub fn execute(&self, helm_program: &str) -> Result<()> {
        let helm_path = helm::locate(helm_program)?;
        let dir = tempfile::Builder::new()
            .prefix("riptides-deploy-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .context("cannot create a private directory for rendered templates")?;
        for step in &self.steps {
            if let Values::Rendered { name, text, .. } = &step.values {
                let path = dir.path().join(name);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                f.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
        for step in &self.steps {
            let args = step.release.args(&self.values_arg(step, Some(dir.path())));
            eprintln!("+ {}", helm::display(&helm_path.display().to_string(), &args));
            helm::run(&helm_path, &step.release, &args)?;
        }
        eprintln!("deployed {} release(s) from {}", self.steps.len(), self.env_dir.display());
        Ok(())
    }
}

/// The subcommand.
pub fn run(args: DeployArgs) -> Result<()> {
    let plan = plan(&args.env, &|name| std::env::var(name).ok())?;
    if args.dry_run {
        print!("{}", plan.render_dry_run(&args.helm));
        Ok(())
    } else {
        plan.execute(&args.helm)
    }
}
