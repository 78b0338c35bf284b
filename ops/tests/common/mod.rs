//! A control plane running in-process on its own runtime, and the real `riptides` binary.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use riptides_cp::{Config, ControlPlane};

pub struct Fixture {
    pub rt: tokio::runtime::Runtime,
    cp: Option<ControlPlane>,
    pub kubeconfig: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let cp =
            rt.block_on(ControlPlane::start(Config::for_tests(&dir.path().join("cp")))).expect("control plane starts");
        let kubeconfig = cp.kubeconfig_path().to_path_buf();
        assert!(kubeconfig.exists(), "the control plane writes {}", kubeconfig.display());
        Fixture { rt, cp: Some(cp), kubeconfig, dir }
    }

    pub fn cp(&self) -> &ControlPlane {
        self.cp.as_ref().expect("running")
    }

    /// Writes a file into the test directory and returns its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write manifest");
        p.display().to_string()
    }

    pub fn riptides(&self, args: &[&str]) -> Run {
        self.riptides_with_stdin(args, None)
    }

    pub fn riptides_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        run(&self.kubeconfig, args, stdin)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(cp) = self.cp.take() {
            self.rt.block_on(cp.shutdown());
        }
    }
}

/// Output of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "`riptides {}` failed:\n{}\n{}", self.args.join(" "), self.stdout, self.stderr);
        self
    }

    #[track_caller]
    pub fn fails(self) -> Self {
        assert_ne!(
            self.code,
            Some(0),
            "`riptides {}` should fail:\n{}\n{}",
            self.args.join(" "),
            self.stdout,
            self.stderr
        );
        assert!(
            self.stderr.contains("error: "),
            "`riptides {}` failed without an error line: {}",
            self.args.join(" "),
            self.stderr
        );
        self
    }
}

pub fn run(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_riptides"));
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
    cmd.env_remove("RIPTIDES_LOG").env_remove("RIPTIDES_KUBECONFIG");
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn riptides");
    if let Some(text) = stdin {
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write stdin");
    }
    let Output { status, stdout, stderr } = child.wait_with_output().expect("riptides runs");
    Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: status.code(),
        stdout: String::from_utf8(stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(stderr).expect("utf-8 stderr"),
    }
}

/// A Verifier, a Service and the shared seed WorkloadIdentity (the seed's egress and ingress
/// examples verbatim: egress to `tier: backend` in MUTUAL mode allowing
/// `spiffe://example.com/orders-service`, ingress on port 8000).
pub fn manifest() -> String {
    format!("{VERIFIER_AND_SERVICE}---{}", riptides_wire::resource::examples::SEED_WORKLOAD_IDENTITY)
}

const VERIFIER_AND_SERVICE: &str = r#"
apiVersion: auth.riptides.io/v1alpha1
kind: Verifier
metadata:
  name: join
spec:
  method: joinToken
  workloadIDTemplate: "riptides/daemon/{{id}}"
  daemonGroup: web
  joinToken:
    maxTtl: 1h
---
apiVersion: core.riptides.io/v1alpha1
kind: Service
metadata:
  name: orders
  labels:
    app: orders
spec:
  labels:
    tier: backend
  addresses:
    - address: 10.0.0.10
      port: 8000
"#;
