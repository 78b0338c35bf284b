//! kill -9 the real `riptides-controlplane` while a client writes, restart it on the same data
//! dir, and check that every write the API acknowledged is there.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use riptides_wire::client::ApiClient;
use serde_json::json;

/// Starts the binary on ephemeral loopback ports and returns it once its API is up.
fn spawn_cp(data_dir: &std::path::Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_riptides-controlplane"))
        .args(["--data-dir"])
        .arg(data_dir)
        .args(["--trust-domain", "example.com", "--api-addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0"])
        .args(["--quic-addr", "127.0.0.1:0", "--tunnel-addr", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start riptides-controlplane");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines.next().expect("controlplane exited before it was ready").unwrap();
        if line.starts_with("riptides-controlplane: API") {
            break;
        }
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let svc = rt("services");
    let mut acknowledged: Vec<String> = Vec::new();
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64;
    for round in 0..3 {
        let mut child = spawn_cp(dir.path());
        let api = ApiClient::from_kubeconfig_file(dir.path().join("admin.kubeconfig")).unwrap();
        // Everything acknowledged before (possibly across earlier kills) is still there.
        let list = api.list(svc, Some("riptides-system")).await.unwrap();
        let names: std::collections::BTreeSet<String> =
            list.items.iter().map(|o| o["metadata"]["name"].as_str().unwrap().to_owned()).collect();
        for name in &acknowledged {
            assert!(names.contains(name), "round {round}: acknowledged {name} lost after kill -9");
        }
        // Write concurrently, and kill -9 at a pseudo-random moment.
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let kill_after = Duration::from_millis(150 + (seed >> 33) % 400);
        let writer = {
            let api = api.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0.. {
                    let name = format!("r{round}-s{i}");
                    let obj = json!({"apiVersion": "core.riptides.io/v1alpha1", "kind": "Service",
                        "metadata": {"name": name}, "spec": {"addresses": [{"address": "10.1.0.1", "port": 80}]}});
                    match api.create(rt("services"), "riptides-system", &obj).await {
                        Ok(_) => acked.push(name),
                        Err(_) => break,
                    }
                }
                acked
            })
        };
        tokio::time::sleep(kill_after).await;
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        let acked = writer.await.unwrap();
        assert!(!acked.is_empty(), "round {round}: no write was acknowledged before the kill");
        acknowledged.extend(acked);
    }
    let mut child = spawn_cp(dir.path());
    let api = ApiClient::from_kubeconfig_file(dir.path().join("admin.kubeconfig")).unwrap();
    let list = api.list(svc, Some("riptides-system")).await.unwrap();
    let names: std::collections::BTreeSet<String> =
        list.items.iter().map(|o| o["metadata"]["name"].as_str().unwrap().to_owned()).collect();
    for name in &acknowledged {
        assert!(names.contains(name), "acknowledged {name} lost after kill -9");
    }
    eprintln!("{} acknowledged writes over 3 kills, all present", acknowledged.len());
    child.kill().unwrap();
    child.wait().unwrap();
}
