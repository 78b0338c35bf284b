//! The benchmark topology, as in `node/tests/e2e/mod.rs`: a control plane and two daemons with
//! `--dataplane userspace` in namespaces on one LAN, plus the workloads (`rtb-server` on
//! node-b, `rtb-client` on node-a: this binary re-executed through symlinks so the process
//! name selects the workload) and a stunnel4 pair with SVIDs from the same CA.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use riptides_chaos_tests::{ChildGuard, Host, OutputTo, Signal, Topology};

/// Ports on node-b: the riptides-protected one (a Service and an ingress rule), the one no
/// policy covers (direct TCP and stunnel's backend), and stunnel's TLS ports.
pub const PORT_RIPTIDES: u16 = 5001;
pub const PORT_DIRECT: u16 = 5002;
pub const PORT_STUNNEL: u16 = 5003;
pub const PORT_STUNNEL_RESUME: u16 = 5004;
/// stunnel client's local accept ports on node-a.
pub const PORT_STUNNEL_LOCAL: u16 = 6003;
pub const PORT_STUNNEL_RESUME_LOCAL: u16 = 6004;

pub const CLIENT_NAME: &str = "rtb-client";
pub const SERVER_NAME: &str = "rtb-server";
pub const CLIENT_ID: &str = "spiffe://example.com/bench-client";
pub const SERVER_ID: &str = "spiffe://example.com/bench-server";

/// The benchmark's policy: `rtb-client` on node-a may reach `rtb-server` on node-b port 5001
/// over mutual TLS; nothing else is covered.
pub const POLICY: &str = r#"
apiVersion: core.riptides.io/v1alpha1
kind: Service
metadata: {name: bench}
spec:
  labels: {tier: bench}
  addresses: [{address: NODE_B_ADDR, port: 5001}]
---
apiVersion: core.riptides.io/v1alpha1
kind: WorkloadIdentity
metadata: {name: bench-server}
spec:
  workloadID: bench-server
  scope: {daemon: {id: node-b}}
  selectors: [{process:name: rtb-server}]
  ingress:
    - port: 5001
      allowedSPIFFEIDs: ["spiffe://example.com/bench-client"]
---
apiVersion: core.riptides.io/v1alpha1
kind: WorkloadIdentity
metadata: {name: bench-client}
spec:
  workloadID: bench-client
  scope: {daemon: {id: node-a}}
  selectors: [{process:name: rtb-client}]
  egress:
    - selectors: [{tier: bench}]
      connection: {tls: {mode: MUTUAL}}
      allowedSPIFFEIDs: ["spiffe://example.com/bench-server"]
"#;

pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn sh(host: &Host, cmd: &str) -> Result<std::process::Output> {
    Ok(host.command("sh").args(["-c", cmd]).timeout(Duration::from_secs(30)).output_unchecked()?)
}

fn admin_get(host: &Host, path: &str) -> Option<String> {
    let out = sh(host, &format!("curl -s --max-time 2 http://127.0.0.1:15000{path}")).ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_listening(host: &Host, port: u16) -> Result<()> {
    wait_until(&format!("a listener on {}:{port}", host.name), Duration::from_secs(15), || {
        let out = sh(host, &format!("ss -Hltn 'sport = :{port}'")).ok()?;
        (!out.stdout.is_empty()).then_some(())
    })
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub bin_dir: PathBuf,
    pub cp: Host,
    pub a: Host,
    pub b: Host,
    pub server: Option<ChildGuard>,
    pub stunnel: Vec<ChildGuard>,
    pub daemons: Vec<ChildGuard>,
    pub cp_proc: ChildGuard,
    // Last: namespaces go after the processes in them.
    pub _topo: Topology,
}

impl Fixture {
    pub fn start(bin_dir: &Path) -> Result<Fixture> {
        for b in ["riptides-controlplane", "riptides-daemon", "riptides"] {
            if !bin_dir.join(b).exists() {
                bail!("{} is missing: build the workspace binaries first (cargo build --release --bins), or pass --bin-dir", bin_dir.join(b).display());
            }
        }
        let dir = tempfile::Builder::new().prefix("riptides-bench-dp-").tempdir()?;
        let mut topo = Topology::new("dpb").context("namespaces (needs root)")?;
        let lan = topo.lan("lan")?;
        let cp = topo.host("cp", lan)?;
        let a = topo.host("a", lan)?;
        let b = topo.host("b", lan)?;
        for h in [&a, &b] {
            // Many short connections per second: reuse TIME_WAIT ports, use the whole range.
            h.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
            h.sysctl("net.ipv4.ip_local_port_range", "1024 65000")?;
            h.sysctl("net.core.somaxconn", "8192")?;
        }
        let cp_dir = dir.path().join("cp");
        let cp_proc = cp
            .command(bin_dir.join("riptides-controlplane"))
            .args(["--data-dir", &cp_dir.display().to_string(), "--trust-domain", "example.com"])
            .args(["--api-addr", "0.0.0.0:8443", "--quic-addr", "0.0.0.0:9443", "--tunnel-addr", "0.0.0.0:8001"])
            .args(["--health-addr", "0.0.0.0:8080", "--advertise-url", "https://127.0.0.1:8443"])
            .env("RUST_LOG", "info")
            .output_to(OutputTo::TempLog)
            .spawn()?;
        let pin = wait_until("the control plane", Duration::from_secs(30), || {
            cp_proc.log().split_whitespace().skip_while(|w| *w != "pin").nth(1).map(str::to_owned)
        })?;
        let mut f = Fixture {
            dir,
            bin_dir: bin_dir.to_path_buf(),
            cp,
            a,
            b,
            server: None,
            stunnel: Vec::new(),
            daemons: Vec::new(),
            cp_proc,
            _topo: topo,
        };
        f.apply(POLICY)?;
        for id in ["node-a", "node-b"] {
            let out = f.ctl(&["token", "create", "--ttl", "10m", "--daemon-id", id], None)?;
            if !out.status.success() {
                bail!("token create: {}", String::from_utf8_lossy(&out.stderr));
            }
            let token = String::from_utf8(out.stdout)?.trim().to_owned();
            let host = if id == "node-a" { f.a.clone() } else { f.b.clone() };
            let daemon = host
                .command(bin_dir.join("riptides-daemon"))
                .args(["--controlplane", &format!("{}:9443", f.cp.addr())])
                .args(["--controlplane-tunnel", &format!("{}:8001", f.cp.addr())])
                .args(["--trust-domain", "example.com", "--ca-pin", &pin, "--join-token", &token])
                .args(["--data-dir", &f.dir.path().join(id).display().to_string()])
                .args(["--admin-addr", "127.0.0.1:15000", "--dataplane", "userspace"])
                .env("RUST_LOG", "info")
                .output_to(OutputTo::TempLog)
                .spawn()?;
            f.daemons.push(daemon);
        }
        f.wait_identity(&f.a.clone(), CLIENT_ID)?;
        f.wait_identity(&f.b.clone(), SERVER_ID)?;
        for d in &f.daemons {
            let comm = std::fs::read_to_string(format!("/proc/{}/comm", d.pid())).unwrap_or_default();
            if comm.trim() != "riptides-daemon" {
                bail!("pid {} is {comm:?}, not the daemon", d.pid());
            }
        }
        Ok(f)
    }

    fn ctl(&self, args: &[&str], stdin: Option<String>) -> Result<std::process::Output> {
        let mut c = self
            .cp
            .command(self.bin_dir.join("riptides"))
            .arg("--kubeconfig")
            .arg(self.dir.path().join("cp/admin.kubeconfig"))
            .args(args)
            .timeout(Duration::from_secs(20));
        if let Some(s) = stdin {
            c = c.stdin(s.into_bytes());
        }
        Ok(c.output_unchecked()?)
    }

    fn apply(&self, policy: &str) -> Result<()> {
        let rendered = policy.replace("NODE_B_ADDR", &self.b.addr().to_string());
        let out = self.ctl(&["ctl", "apply", "-f", "-"], Some(rendered))?;
        if !out.status.success() {
            bail!("apply: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    fn wait_identity(&self, host: &Host, id: &str) -> Result<()> {
        wait_until(&format!("SVID {id} on {}", host.name), Duration::from_secs(60), || {
            admin_get(host, "/config_dump").filter(|s| s.contains(id)).map(|_| ())
        })
    }

    pub fn daemon_pids(&self) -> Vec<u32> {
        self.daemons.iter().map(ChildGuard::pid).collect()
    }

    pub fn stunnel_pids(&self) -> Vec<u32> {
        self.stunnel.iter().map(ChildGuard::pid).collect()
    }

    pub fn daemon_metrics(&self, host: &Host) -> String {
        admin_get(host, "/metrics").unwrap_or_default()
    }

    /// Symlink to this executable named `name` (the process name the policy selects).
    pub fn workload_exe(&self, name: &str) -> Result<PathBuf> {
        let p = self.dir.path().join(name);
        if !p.exists() {
            std::os::unix::fs::symlink(std::env::current_exe()?, &p)?;
        }
        Ok(p)
    }

    /// The sink/echo server on node-b.
    pub fn start_server(&mut self) -> Result<()> {
        let exe = self.workload_exe(SERVER_NAME)?;
        let ports = format!("{PORT_RIPTIDES},{PORT_DIRECT}");
        let g = self.b.command(exe).args(["__server", "--ports", &ports]).output_to(OutputTo::TempLog).spawn()?;
        self.server = Some(g);
        wait_listening(&self.b, PORT_RIPTIDES)?;
        wait_listening(&self.b, PORT_DIRECT)?;
        Ok(())
    }

    /// SVIDs for stunnel from the control plane's CA (opened read-only: signing a CSR writes
    /// nothing), and the stunnel4 pair: client mode on node-a, server mode on node-b.
    pub fn start_stunnel(&mut self) -> Result<()> {
        use riptides_cp::ca::{Ca, CaConfig};
        use riptides_wire::spiffe::{SpiffeId, TrustDomain};
        let td = TrustDomain::parse("example.com")?;
        let ca =
            Ca::open(self.dir.path().join("cp/ca"), CaConfig::new(td), SystemTime::now()).context("opening the CA")?;
        let sdir = self.dir.path().join("stunnel");
        std::fs::create_dir_all(&sdir)?;
        std::fs::write(sdir.join("bundle.pem"), ca.bundle().to_pem())?;
        for (name, id) in [("client", CLIENT_ID), ("server", SERVER_ID)] {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let csr = rcgen::CertificateParams::new(Vec::<String>::new())?.serialize_request(&key)?;
            let svid = ca
                .sign_csr(
                    csr.der().as_ref(),
                    &SpiffeId::parse(id)?,
                    Some(Duration::from_secs(6 * 3600)),
                    SystemTime::now(),
                )
                .with_context(|| format!("signing the stunnel {name} SVID"))?;
            std::fs::write(sdir.join(format!("{name}.pem")), svid.chain_pem())?;
            std::fs::write(sdir.join(format!("{name}.key")), key.serialize_pem())?;
        }
        let common = |name: &str| {
            format!(
                "foreground = yes\nsyslog = no\npid =\noutput = {log}\nsocket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n",
                log = sdir.join(format!("{name}.log")).display()
            )
        };
        let tls = |name: &str| {
            format!(
                "cert = {d}/{name}.pem\nkey = {d}/{name}.key\nCAfile = {d}/bundle.pem\nverify = 2\nsslVersion = TLSv1.3\n",
                d = sdir.display()
            )
        };
        let b = self.b.addr();
        let server_conf = format!(
            "{}\n[full]\naccept = 0.0.0.0:{PORT_STUNNEL}\nconnect = 127.0.0.1:{PORT_DIRECT}\n{}sessionResume = no\n\n[resume]\naccept = 0.0.0.0:{PORT_STUNNEL_RESUME}\nconnect = 127.0.0.1:{PORT_DIRECT}\n{}",
            common("server"),
            tls("server"),
            tls("server")
        );
        let client_conf = format!(
            "{}client = yes\n\n[full]\naccept = 127.0.0.1:{PORT_STUNNEL_LOCAL}\nconnect = {b}:{PORT_STUNNEL}\n{}sessionResume = no\n\n[resume]\naccept = 127.0.0.1:{PORT_STUNNEL_RESUME_LOCAL}\nconnect = {b}:{PORT_STUNNEL_RESUME}\n{}",
            common("client"),
            tls("client"),
            tls("client")
        );
        std::fs::write(sdir.join("server.conf"), server_conf)?;
        std::fs::write(sdir.join("client.conf"), client_conf)?;
        let srv = self.b.command("stunnel4").arg(sdir.join("server.conf")).output_to(OutputTo::TempLog).spawn()?;
        self.stunnel.push(srv);
        wait_listening(&self.b, PORT_STUNNEL)?;
        let cli = self.a.command("stunnel4").arg(sdir.join("client.conf")).output_to(OutputTo::TempLog).spawn()?;
        self.stunnel.push(cli);
        wait_listening(&self.a, PORT_STUNNEL_LOCAL)?;
        Ok(())
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.server = None;
        self.stunnel.clear();
        // SIGTERM first so the daemons remove their nftables tables themselves.
        for d in &mut self.daemons {
            let _ = d.signal(Signal::Term);
            let _ = d.wait_timeout(Duration::from_secs(5));
        }
        let _ = self.cp_proc.terminate(Duration::from_secs(5));
    }
}
