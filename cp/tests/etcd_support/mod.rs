//! Real etcd clusters on loopback for tests: each cluster gets its own temporary directory and
//! free ports, and every member is killed when the cluster is dropped (also on panic).
//! Needs Debian's `etcd-server` package (`/usr/bin/etcd`).

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use riptides_cp::store::etcd::EtcdClient;
use riptides_cp::store::{EtcdConfig, EtcdOptions, EtcdStore};

/// Binary to run; `ETCD_BIN` overrides.
pub fn etcd_bin() -> String {
    std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Client TLS material written for a TLS cluster.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

pub struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    tls: Option<TlsFiles>,
    token: String,
}

impl EtcdCluster {
    /// A single plain-HTTP member.
    pub async fn single() -> Self {
        Self::start(1, false).await
    }

    pub async fn start(n: usize, tls: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tls = tls.then(|| write_tls(dir.path()));
        let members = (0..n)
            .map(|i| Member { name: format!("m{i}"), client_port: free_port(), peer_port: free_port(), child: None })
            .collect();
        let token = format!("t{}", dir.path().file_name().unwrap().to_string_lossy());
        let mut cluster = EtcdCluster { dir, members, tls, token };
        for i in 0..n {
            cluster.spawn(i, true);
        }
        for i in 0..n {
            cluster.wait_ready(i).await;
        }
        cluster
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.members[i].client_port)
    }

    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    pub fn config(&self) -> EtcdConfig {
        let mut c = EtcdConfig::new(self.endpoints());
        if let Some(t) = &self.tls {
            c.ca_file = Some(t.ca.clone());
            c.cert_file = Some(t.client_cert.clone());
            c.key_file = Some(t.client_key.clone());
        }
        c.request_timeout = Duration::from_secs(5);
        c
    }

    pub async fn store(&self) -> EtcdStore {
        EtcdStore::connect(&self.config(), EtcdOptions::default()).await.expect("connect to etcd")
    }

    fn spawn(&mut self, i: usize, new: bool) {
        let scheme = self.scheme();
        let initial: Vec<String> =
            self.members.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port)).collect();
        let m = &self.members[i];
        let data = self.dir.path().join(&m.name);
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", m.name))).unwrap();
        let client_url = format!("{scheme}://127.0.0.1:{}", m.client_port);
        let peer_url = format!("http://127.0.0.1:{}", m.peer_port);
        let mut cmd = Command::new(etcd_bin());
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(initial.join(","))
            .arg("--initial-cluster-state")
            .arg(if new { "new" } else { "existing" })
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .args(["--heartbeat-interval", "50", "--election-timeout", "500", "--log-level", "warn"])
            .args(["--logger", "zap"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&t.server_cert)
                .arg("--key-file")
                .arg(&t.server_key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        let child =
            cmd.spawn().unwrap_or_else(|e| panic!("starting {} (apt-get install etcd-server): {e}", etcd_bin()));
        self.members[i].child = Some(child);
    }

    async fn wait_ready(&self, i: usize) {
        let mut config = self.config();
        config.endpoints = vec![self.endpoint(i)];
        config.request_timeout = Duration::from_secs(2);
        let client = EtcdClient::new(&config).unwrap();
        for _ in 0..300 {
            let status: Result<serde_json::Value, _> =
                client.read("/v3/maintenance/status", &serde_json::json!({})).await;
            if let Ok(s) = status {
                if s.get("leader").and_then(|l| l.as_str()).is_some_and(|l| l != "0") {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("etcd member {i} not ready; log:\n{}", self.log(i));
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.members[i].name))).unwrap_or_default()
    }

    /// `kill -9` one member.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts a killed member on its data dir.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i, false);
        self.wait_ready(i).await;
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

fn write_tls(dir: &Path) -> TlsFiles {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "test etcd CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, &ca_key);

    let leaf = |name: &str, eku: Vec<ExtendedKeyUsagePurpose>| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        p.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.extended_key_usages = eku;
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key) =
        leaf("etcd", vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]);
    let (client_pem, client_key) = leaf("riptides", vec![ExtendedKeyUsagePurpose::ClientAuth]);
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client-key.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server-key.pem"),
    };
    std::fs::write(&files.ca, ca_cert.pem()).unwrap();
    std::fs::write(&files.client_cert, client_pem).unwrap();
    std::fs::write(&files.client_key, client_key).unwrap();
    std::fs::write(&files.server_cert, server_pem).unwrap();
    std::fs::write(&files.server_key, server_key).unwrap();
    files
}
