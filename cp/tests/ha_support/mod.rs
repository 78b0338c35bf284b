//! Control-plane replicas as real `riptides-controlplane` processes on one etcd cluster, for
//! the HA tests: each has its own data dir and loopback ports, and is killed (SIGKILL) on drop.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use riptides_wire::client::ApiClient;

use crate::etcd_support::EtcdCluster;

/// The seal key every replica of a test shares (hex, 32 bytes).
pub const SEAL_KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
pub const LEASE_SECS: u64 = 2;
pub const LEADER_KEY: &str = "/riptides/registry.leader/controllers";

pub struct Replica {
    pub name: String,
    pub dir: PathBuf,
    child: Option<Child>,
    pub api: ApiClient,
    pub quic: String,
    pub tunnel: String,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Replica {
    pub fn spawn(root: &std::path::Path, name: &str, etcd: &EtcdCluster) -> Replica {
        let dir = root.join(name);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_riptides-controlplane"));
        cmd.arg("--data-dir")
            .arg(&dir)
            .args(["--trust-domain", "example.com", "--api-addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0"])
            .args(["--quic-addr", "127.0.0.1:0", "--tunnel-addr", "127.0.0.1:0"])
            .args(["--store", "etcd", "--etcd-endpoints"])
            .arg(etcd.endpoints().join(","))
            .args(["--leader-lease-secs", &LEASE_SECS.to_string(), "--replica-name", name])
            .env("RIPTIDES_CA_SEAL_KEY", SEAL_KEY_HEX)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(t) = etcd.tls() {
            cmd.arg("--etcd-ca").arg(&t.ca).arg("--etcd-cert").arg(&t.client_cert).arg("--etcd-key").arg(&t.client_key);
        }
        let mut child = cmd.spawn().expect("start riptides-controlplane");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let ready = loop {
            let Some(Ok(line)) = lines.next() else {
                panic!("replica {name} exited before it was ready:\n{}", log.lock().unwrap().join("\n"));
            };
            log.lock().unwrap().push(line.clone());
            if line.starts_with("riptides-controlplane: API") {
                break line;
            }
        };
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            });
        }
        let addr = |scheme: &str| {
            let start = ready.find(scheme).unwrap() + scheme.len();
            ready[start..].split(|c: char| c.is_whitespace() || c == ',').next().unwrap().to_owned()
        };
        let api = ApiClient::from_kubeconfig_file(dir.join("admin.kubeconfig")).unwrap();
        Replica {
            name: name.to_owned(),
            quic: addr("quic://"),
            tunnel: addr("tcp://"),
            dir,
            child: Some(child),
            api,
            log,
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn alive(&self) -> bool {
        self.child.is_some()
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        let text = std::fs::read_to_string(self.dir.join("admin.kubeconfig")).unwrap();
        riptides_wire::kubeconfig::Kubeconfig::parse(&text).unwrap().credentials().unwrap().ca_pem
    }

    pub fn logs(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Who holds the controller leader key, read from etcd directly.
pub async fn leader(etcd: &EtcdCluster) -> Option<String> {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    let client = riptides_cp::store::etcd::EtcdClient::new(&etcd.config()).unwrap();
    let resp: serde_json::Value =
        client.read("/v3/kv/range", &serde_json::json!({"key": STANDARD.encode(LEADER_KEY)})).await.ok()?;
    let v = resp.pointer("/kvs/0/value")?.as_str()?;
    String::from_utf8(STANDARD.decode(v).ok()?).ok()
}
