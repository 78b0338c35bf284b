//! Stock kubectl (Debian's `kubernetes-client`) against the control plane, with the kubeconfig
//! the control plane wrote. The README's test command installs kubectl; a missing kubectl is a
//! failure here, not a skip.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

struct Kubectl {
    kubeconfig: std::path::PathBuf,
    cache: tempfile::TempDir,
}

impl Kubectl {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).arg("--cache-dir").arg(self.cache.path()).args(args);
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl is installed (the README test command installs kubernetes-client)");
        if let Some(input) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(out.status.success(), "kubectl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_apply_delete_watch() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let k = Kubectl { kubeconfig: cp.kubeconfig_path().to_owned(), cache: tempfile::tempdir().unwrap() };
    let k = std::sync::Arc::new(k);

    let resources = tokio::task::spawn_blocking({
        let k = k.clone();
        move || k.ok(&["api-resources"], None)
    })
    .await
    .unwrap();
    for plural in [
        "workloadidentities",
        "services",
        "daemons",
        "credentialsources",
        "credentialbindings",
        "verifiers",
        "jointokens",
    ] {
        assert!(resources.contains(plural), "{plural} missing from:\n{resources}");
    }

    let k2 = k.clone();
    let (watch_out, ()) = tokio::join!(
        tokio::task::spawn_blocking(move || {
            // Ends by itself: the server closes the watch after --request-timeout.
            k2.run(&["get", "workloadidentities", "--watch", "--request-timeout=6s", "-o", "name"], None)
        }),
        async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let k = k.clone();
            tokio::task::spawn_blocking(move || {
                let out = k.ok(&["apply", "-f", "-"], Some(SEED_WORKLOAD));
                assert!(out.contains("workloadidentity.core.riptides.io/frontend created"), "{out}");
                let out = k.ok(&["apply", "-f", "-"], Some(SEED_WORKLOAD));
                assert!(out.contains("unchanged"), "{out}");
                let out = k.ok(&["apply", "-f", "-"], Some(&SEED_WORKLOAD.replace("port: 8000", "port: 8080")));
                assert!(out.contains("configured"), "{out}");

                let table = k.ok(&["get", "wi"], None);
                assert!(table.contains("NAME") && table.contains("frontend"), "{table}");
                let port = k.ok(&["get", "wi", "frontend", "-o", "jsonpath={.spec.ingress[0].port}"], None);
                assert_eq!(port, "8080");
                let yaml_out = k.ok(&["get", "workloadidentity", "frontend", "-o", "yaml"], None);
                assert!(yaml_out.contains("spiffe://example.com/orders-service"), "{yaml_out}");

                // The server's 422 reaches the operator with the field path.
                let bad = k.run(&["apply", "-f", "-"], Some(&SEED_WORKLOAD.replace("port: 8000", "port: 99999")));
                assert!(!bad.status.success());
                let err = String::from_utf8_lossy(&bad.stderr);
                assert!(err.contains("spec.ingress[0].port"), "{err}");

                let out = k.ok(&["delete", "wi", "frontend"], None);
                assert!(out.contains("deleted"), "{out}");
                let gone = k.run(&["get", "wi", "frontend"], None);
                assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));
            })
            .await
            .unwrap();
        }
    );
    let watch_out = watch_out.unwrap();
    let seen = String::from_utf8_lossy(&watch_out.stdout);
    // Added, modified and deleted all show up on the watch.
    assert!(
        seen.matches("workloadidentity.core.riptides.io/frontend").count() >= 3,
        "watch saw:\n{seen}\nstderr: {}",
        String::from_utf8_lossy(&watch_out.stderr)
    );
    cp.shutdown().await;
}
