//! `riptides deploy` as an operator runs it: the real binary on environment directories.
//! The deployment guide's deploy.yaml (verbatim) is accepted and printed as exact helm
//! commands; a missing secret, an inconsistent trust domain and a missing helm are refused
//! with errors that say what to fix; run mode executes exactly the printed commands (against
//! a stand-in `helm` that records them) with rendered templates in a private directory that
//! is gone afterwards.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The deployment guide's example ("Environment-Specific Configuration"), verbatim.
const SEED_DEPLOY_YAML: &str = include_str!("../src/deploy/seed-deploy.yaml");

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn riptides(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_riptides"));
    cmd.current_dir(cwd).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("RIPTIDES_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("run riptides");
    Out {
        code: o.status.code(),
        stdout: String::from_utf8(o.stdout).unwrap(),
        stderr: String::from_utf8(o.stderr).unwrap(),
    }
}

/// An environment directory `prod` inside a fresh temp dir: the seed's deploy.yaml, plain
/// values for three releases and a template with a secret for the frontend.
fn seed_env() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("prod");
    std::fs::create_dir(&env).unwrap();
    let w = |name: &str, text: &str| std::fs::write(env.join(name), text).unwrap();
    w("deploy.yaml", SEED_DEPLOY_YAML);
    w("cp-values.yaml", "trustDomain: example.com\n");
    w("daemon-values.yaml", "trustDomain: example.com\ncontrolplane:\n  address: grpc.example.com:9443\n");
    w("frontend-values.yaml.tmpl", "oidc:\n  clientID: prod\n  clientSecret: \"${OIDC_CLIENT_SECRET}\"\n");
    w("ngk-values.yaml", "global:\n  trustDomain: example.com\n");
    dir
}

#[test]
fn seed_deploy_yaml_dry_run_prints_exact_helm_commands() {
    let dir = seed_env();
    let o = riptides(dir.path(), &["deploy", "--env", "prod", "--dry-run"], &[("OIDC_CLIENT_SECRET", "s3cr3t-value")]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let expected = "\
# riptides deploy --env prod (dry run: nothing was run or written)
# trust domain example.com: consistent across cp-values.yaml, daemon-values.yaml, ngk-values.yaml
# <rendered>: a private temporary directory (0700) holding the rendered templates while helm runs

# cpCluster riptides-prod-cp (us-east-1)
helm upgrade --install controlplane oci://ghcr.io/riptideslabs/helm/controlplane --version v0.1.10 --namespace riptides-cp --create-namespace --kube-context riptides-prod-cp --values prod/cp-values.yaml --wait
# frontend-values.yaml rendered from frontend-values.yaml.tmpl (variables: OIDC_CLIENT_SECRET)
helm upgrade --install frontend oci://ghcr.io/riptideslabs/helm/frontend --version v0.1.4 --namespace riptides-cp --create-namespace --kube-context riptides-prod-cp --values <rendered>/frontend-values.yaml --wait

# workloadCluster riptides-prod-apps (us-east-1)
helm upgrade --install daemon oci://ghcr.io/riptideslabs/helm/daemon --version v0.1.17 --namespace riptides-system --create-namespace --kube-context riptides-prod-apps --values prod/daemon-values.yaml --wait
helm upgrade --install node-gatekeeper oci://ghcr.io/riptideslabs/helm/node-gatekeeper --version v0.1.4 --namespace riptides-system --create-namespace --kube-context riptides-prod-apps --values prod/ngk-values.yaml --wait
";
    assert_eq!(o.stdout, expected);
    assert!(!o.stdout.contains("s3cr3t") && !o.stderr.contains("s3cr3t"), "a secret was printed");
    // Dry run writes nothing.
    let names: Vec<_> = std::fs::read_dir(dir.path().join("prod")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 5, "{names:?}");
}

#[test]
fn missing_secret_is_refused_naming_variable_and_file() {
    let dir = seed_env();
    for env in [&[][..], &[("OIDC_CLIENT_SECRET", "")][..]] {
        let o = riptides(dir.path(), &["deploy", "--env", "prod", "--dry-run"], env);
        assert_eq!(o.code, Some(1), "{}", o.stdout);
        assert!(o.stdout.is_empty(), "no command is printed when a secret is missing: {}", o.stdout);
        assert!(
            o.stderr.contains("prod/frontend-values.yaml.tmpl:3")
                && o.stderr.contains("environment variable OIDC_CLIENT_SECRET is not set"),
            "{}",
            o.stderr
        );
    }
    // Run mode refuses before looking for helm.
    let o = riptides(dir.path(), &["deploy", "--env", "prod", "--helm", "/bin/false"], &[]);
    assert_eq!(o.code, Some(1));
    assert!(o.stderr.contains("OIDC_CLIENT_SECRET"), "{}", o.stderr);
}

#[test]
fn inconsistent_trust_domain_is_refused() {
    let dir = seed_env();
    let env = dir.path().join("prod");
    std::fs::write(env.join("daemon-values.yaml"), "trustDomain: other.example.com\n").unwrap();
    let o = riptides(dir.path(), &["deploy", "--env", "prod", "--dry-run"], &[("OIDC_CLIENT_SECRET", "x")]);
    assert_eq!(o.code, Some(1));
    assert!(
        o.stderr.contains("inconsistent trust domain")
            && o.stderr.contains("cp-values.yaml trustDomain = example.com")
            && o.stderr.contains("daemon-values.yaml trustDomain = other.example.com")
            && o.stderr.contains("ngk-values.yaml global.trustDomain = example.com"),
        "{}",
        o.stderr
    );
    // A daemon left on the chart default disagrees with a control plane on example.com.
    std::fs::write(env.join("daemon-values.yaml"), "controlplane:\n  address: cp:9443\n").unwrap();
    let o = riptides(dir.path(), &["deploy", "--env", "prod", "--dry-run"], &[("OIDC_CLIENT_SECRET", "x")]);
    assert_eq!(o.code, Some(1));
    assert!(o.stderr.contains("daemon-values.yaml (chart default) = riptides.local"), "{}", o.stderr);
    // A rendered template takes part too.
    std::fs::write(env.join("daemon-values.yaml"), "trustDomain: example.com\n").unwrap();
    std::fs::write(env.join("frontend-values.yaml.tmpl"), "trustDomain: \"${TD}\"\n").unwrap();
    let o = riptides(dir.path(), &["deploy", "--env", "prod", "--dry-run"], &[("TD", "example.org")]);
    assert_eq!(o.code, Some(1));
    assert!(o.stderr.contains("frontend-values.yaml trustDomain = example.org"), "{}", o.stderr);
}

#[test]
fn bad_environment_directories_are_refused_clearly() {
    let dir = seed_env();
    let env = dir.path().join("prod");
    let o = riptides(dir.path(), &["deploy", "--env", "nowhere", "--dry-run"], &[]);
    assert!(o.code == Some(1) && o.stderr.contains("nowhere/deploy.yaml"), "{}", o.stderr);

    std::fs::remove_file(env.join("ngk-values.yaml")).unwrap();
    let o = riptides(dir.path(), &["deploy", "--env", "prod", "--dry-run"], &[("OIDC_CLIENT_SECRET", "x")]);
    assert!(
        o.code == Some(1)
            && o.stderr.contains("workloadCluster.deployments.node-gatekeeper.valuesFile: ngk-values.yaml not found"),
        "{}",
        o.stderr
    );
    std::fs::write(env.join("ngk-values.yaml"), "{}\n").unwrap();
    std::fs::write(env.join("frontend-values.yaml"), "{}\n").unwrap();
    let o = riptides(dir.path(), &["deploy", "--env", "prod", "--dry-run"], &[("OIDC_CLIENT_SECRET", "x")]);
    assert!(o.code == Some(1) && o.stderr.contains("both"), "{}", o.stderr);
    std::fs::remove_file(env.join("frontend-values.yaml")).unwrap();

    std::fs::write(env.join("deploy.yaml"), SEED_DEPLOY_YAML.replace("valuesFile: cp-values", "values: cp-values"))
        .unwrap();
    let o = riptides(dir.path(), &["deploy", "--env", "prod", "--dry-run"], &[("OIDC_CLIENT_SECRET", "x")]);
    assert!(o.code == Some(1) && o.stderr.contains("unknown field `values`"), "{}", o.stderr);
}

#[test]
fn run_mode_without_helm_fails_clearly() {
    let dir = seed_env();
    let empty = tempfile::tempdir().unwrap();
    let path = empty.path().display().to_string();
    let o = riptides(dir.path(), &["deploy", "--env", "prod"], &[("OIDC_CLIENT_SECRET", "x"), ("PATH", &path)]);
    assert_eq!(o.code, Some(1));
    assert!(
        o.stderr.contains("helm not found (looked for \"helm\" on PATH)") && o.stderr.contains("--dry-run"),
        "{}",
        o.stderr
    );
    assert!(o.stdout.is_empty());
}

/// A stand-in `helm`: records its arguments and the values file's contents and mode, and
/// fails for the release named in $FAIL_RELEASE.
fn fake_helm(dir: &Path) -> PathBuf {
    let p = dir.join("helm");
    std::fs::write(
        &p,
        r#"#!/bin/sh
log="$HELM_LOG"
echo "ARGS $*" >> "$log"
prev=""
for a in "$@"; do
  if [ "$prev" = "--values" ]; then
    echo "MODE $(stat -c %a "$a") DIR $(stat -c %a "$(dirname "$a")")" >> "$log"
    sed 's/^/VALUES /' "$a" >> "$log"
    echo "$a" >> "$HELM_LOG.files"
  fi
  prev="$a"
done
[ "$3" = "$FAIL_RELEASE" ] && exit 3
exit 0
"#,
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn run_mode_runs_the_printed_commands_with_private_rendered_files() {
    let dir = seed_env();
    let helm = fake_helm(dir.path());
    let log = dir.path().join("helm.log");
    let helm_s = helm.display().to_string();
    let log_s = log.display().to_string();
    let env = [("OIDC_CLIENT_SECRET", "s3cr3t-value"), ("HELM_LOG", log_s.as_str())];

    let dry = riptides(dir.path(), &["deploy", "--env", "prod", "--dry-run", "--helm", &helm_s], &env);
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    let o = riptides(dir.path(), &["deploy", "--env", "prod", "--helm", &helm_s], &env);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stderr.contains("deployed 4 release(s)"), "{}", o.stderr);
    assert!(!o.stderr.contains("s3cr3t") && !o.stdout.contains("s3cr3t"));

    let text = std::fs::read_to_string(&log).unwrap();
    let ran: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("ARGS ")).collect();
    let printed: Vec<String> =
        dry.stdout.lines().filter_map(|l| l.strip_prefix(&format!("{helm_s} "))).map(|l| l.to_owned()).collect();
    assert_eq!(ran.len(), 4, "{text}");
    let rendered_dir = {
        let files = std::fs::read_to_string(format!("{log_s}.files")).unwrap();
        let f = files.lines().find(|l| l.ends_with("/frontend-values.yaml")).unwrap().to_owned();
        Path::new(&f).parent().unwrap().to_path_buf()
    };
    for (ran, printed) in ran.iter().zip(&printed) {
        assert_eq!(*ran, printed.replace("<rendered>", &rendered_dir.display().to_string()));
    }
    // The template was rendered with the secret, into a 0600 file in a 0700 directory...
    assert!(text.contains("VALUES   clientSecret: \"s3cr3t-value\""), "{text}");
    assert!(text.contains("MODE 600 DIR 700"), "{text}");
    // ... that is gone once helm has run.
    assert!(!rendered_dir.exists(), "{} left behind", rendered_dir.display());

    // A failing release stops the deploy and names it; later releases are not run.
    std::fs::remove_file(&log).unwrap();
    let mut env2 = env.to_vec();
    env2.push(("FAIL_RELEASE", "frontend"));
    let o = riptides(dir.path(), &["deploy", "--env", "prod", "--helm", &helm_s], &env2);
    assert_eq!(o.code, Some(1));
    assert!(o.stderr.contains("release frontend on context riptides-prod-cp: helm failed"), "{}", o.stderr);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().filter(|l| l.starts_with("ARGS ")).count(), 2, "{text}");
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[test]
fn shipped_environments_deploy_in_dry_run() {
    let root = repo_root();
    let o = riptides(
        &root,
        &["deploy", "--env", "ops/config/production", "--dry-run"],
        &[("RIPTIDES_PROD_CA_PIN", "sha256:00ff"), ("RIPTIDES_PROD_OIDC_CLIENT_SECRET", "x")],
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stdout.contains("# trust domain example.com: consistent across cp-values.yaml, frontend-values.yaml, daemon-values.yaml, ngk-values.yaml"), "{}", o.stdout);
    assert_eq!(o.stdout.lines().filter(|l| l.starts_with("helm upgrade --install ")).count(), 4, "{}", o.stdout);

    let o = riptides(
        &root,
        &["deploy", "--env", "ops/config/production", "--dry-run"],
        &[("RIPTIDES_PROD_OIDC_CLIENT_SECRET", "x")],
    );
    assert_eq!(o.code, Some(1));
    assert!(o.stderr.contains("RIPTIDES_PROD_CA_PIN") && o.stderr.contains("daemon-values.yaml.tmpl"), "{}", o.stderr);

    let o = riptides(
        &root,
        &["deploy", "--env", "ops/config/staging", "--dry-run"],
        &[("RIPTIDES_STAGING_CA_PIN", "sha256:00ff")],
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stdout.contains("# trust domain staging.example.com"), "{}", o.stdout);
    // One cluster for both: both releases use the same kube context.
    assert_eq!(o.stdout.matches("--kube-context riptides-staging ").count(), 2, "{}", o.stdout);
}
