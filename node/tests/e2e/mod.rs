//! A control plane and two userspace-dataplane daemons in namespaces the test makes, driven
//! through the real binaries. Everything is removed when the fixture drops.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use riptides_chaos_tests::{ChildGuard, Host, OutputTo, Signal, Topology};

pub const POLICY: &str = include_str!("../../../ops/examples/demo/policy.yaml");

pub fn bin(name: &str) -> PathBuf {
    // Workspace binaries sit next to this package's own binary.
    let daemon = PathBuf::from(env!("CARGO_BIN_EXE_riptides-daemon"));
    let p = daemon.parent().expect("target dir").join(name);
    assert!(p.exists(), "{} is missing: build the workspace binaries first (cargo build --bins)", p.display());
    p
}

pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn sh(host: &Host, cmd: &str) -> std::process::Output {
    host.command("sh").args(["-c", cmd]).timeout(Duration::from_secs(30)).output_unchecked().expect("run")
}

pub fn admin_get(host: &Host, path: &str) -> Option<serde_json::Value> {
    let out = sh(host, &format!("curl -s --max-time 2 http://127.0.0.1:15000{path}"));
    serde_json::from_slice(&out.stdout).ok()
}

pub fn has_identity(host: &Host, id: &str) -> bool {
    admin_get(host, "/config_dump")
        .is_some_and(|v| v["identities"].as_array().is_some_and(|ids| ids.iter().any(|i| i["spiffeID"] == id)))
}

/// Waits until something listens on `port` in `host`. Connecting to it would not tell: on a
/// node whose capture covers the port, the daemon's listener answers first.
pub fn wait_listening(host: &Host, port: u16) {
    wait_until(&format!("a listener on {}:{port}", host.name), Duration::from_secs(10), || {
        let out = sh(host, &format!("ss -Hltn 'sport = :{port}'"));
        (!out.stdout.is_empty()).then_some(())
    });
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub cp: Host,
    pub a: Host,
    pub b: Host,
    pub cp_proc: ChildGuard,
    pub daemons: Vec<ChildGuard>,
    pub pin: String,
    // Last: namespaces go after the processes in them.
    pub topo: Topology,
}

impl Fixture {
    /// `policy` is applied before the daemons start (NODE_B_ADDR / CP_ADDR replaced);
    /// `cp_args` are extra control-plane flags.
    pub fn start(prefix: &str, policy: &str, cp_args: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut topo = Topology::new(prefix).expect("namespaces (needs root)");
        let lan = topo.lan("lan").unwrap();
        let cp = topo.host("cp", lan).unwrap();
        let a = topo.host("a", lan).unwrap();
        let b = topo.host("b", lan).unwrap();
        let cp_dir = dir.path().join("cp");
        let mut args = riptides_chaos_tests::product::controlplane_args(&cp_dir, "example.com");
        args.extend(cp_args.iter().map(|s| s.to_string()));
        let cp_proc = cp
            .command(bin("riptides-controlplane"))
            .args(&args)
            .env("RUST_LOG", "info")
            .output_to(OutputTo::TempLog)
            .spawn()
            .unwrap();
        let pin = wait_until("the control plane", Duration::from_secs(20), || {
            riptides_chaos_tests::product::ca_pin_in_log(&cp_proc.log())
        });
        let mut f = Fixture { dir, cp, a, b, cp_proc, daemons: Vec::new(), pin, topo };
        f.apply(policy);
        for id in ["node-a", "node-b"] {
            let out = f.ctl(&["token", "create", "--ttl", "10m", "--daemon-id", id], None);
            assert!(out.status.success(), "token: {}", String::from_utf8_lossy(&out.stderr));
            let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
            let host = if id == "node-a" { f.a.clone() } else { f.b.clone() };
            let daemon = host
                .command(bin("riptides-daemon"))
                .args(riptides_chaos_tests::product::daemon_args(
                    f.cp.addr(),
                    "example.com",
                    &f.pin,
                    &token,
                    &f.dir.path().join(id),
                    "userspace",
                ))
                .env("RUST_LOG", "info")
                .output_to(OutputTo::TempLog)
                .spawn()
                .unwrap();
            f.daemons.push(daemon);
        }
        f
    }

    pub fn render(&self, policy: &str) -> String {
        policy.replace("NODE_B_ADDR", &self.b.addr().to_string()).replace("CP_ADDR", &self.cp.addr().to_string())
    }

    pub fn ctl(&self, args: &[&str], stdin: Option<String>) -> std::process::Output {
        let mut c = self
            .cp
            .command(bin("riptides"))
            .arg("--kubeconfig")
            .arg(self.dir.path().join("cp/admin.kubeconfig"))
            .args(args)
            .timeout(Duration::from_secs(20));
        if let Some(s) = stdin {
            c = c.stdin(s.into_bytes());
        }
        c.output_unchecked().expect("riptides")
    }

    pub fn apply(&self, policy: &str) {
        let out = self.ctl(&["ctl", "apply", "-f", "-"], Some(self.render(policy)));
        assert!(out.status.success(), "apply: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn wait_identity(&self, host: &Host, id: &str) {
        wait_until(&format!("SVID {id} on {}", host.name), Duration::from_secs(30), || {
            has_identity(host, id).then_some(())
        });
    }

    /// An HTTP server on `host:port` serving a file with a unique marker; returns the marker.
    pub fn http_server(&self, host: &Host, port: u16) -> (ChildGuard, String) {
        let www = self.dir.path().join(format!("www-{}-{port}", host.name));
        std::fs::create_dir_all(&www).unwrap();
        let marker = format!("RIPTIDES-MARKER-{}-{port}", host.name);
        std::fs::write(www.join("marker.txt"), &marker).unwrap();
        let g = host
            .command("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", "0.0.0.0", "--directory"])
            .arg(&www)
            .output_to(OutputTo::TempLog)
            .spawn()
            .unwrap();
        wait_listening(host, port);
        (g, marker)
    }

    pub fn curl(&self, from: &Host, url: &str) -> std::process::Output {
        sh(from, &format!("curl -s -k --max-time 10 {url}"))
    }

    pub fn daemon_log(&self, i: usize) -> String {
        self.daemons[i].log()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // SIGTERM first so the daemons remove their nftables tables themselves.
        for d in &mut self.daemons {
            let _ = d.signal(Signal::Term);
            let _ = d.wait_timeout(Duration::from_secs(5));
        }
        let _ = self.cp_proc.terminate(Duration::from_secs(5));
    }
}
