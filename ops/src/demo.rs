//! `riptides demo`: the whole product end to end in throw-away network namespaces.
//!
//! Builds three namespaces on one LAN (`cp`, `node-a`, `node-b`), starts the real
//! `riptides-controlplane` and two `riptides-daemon`s (userspace dataplane) found next to this
//! executable, applies the shipped policy (`ops/examples/demo/policy.yaml`, embedded), and runs
//! unmodified plaintext workloads: `python3 -m http.server` on node-b, `curl` on node-a. It shows
//! the connection upgraded to mutual TLS (from both daemons' `/connections`), an enrolled but
//! unlisted identity (curl as uid 65534) refused, and a non-enrolled plaintext client refused.
//!
//! Everything is removed afterwards: on success, on failure, and on Ctrl-C / SIGTERM (the work
//! runs on a blocking thread that polls a stop flag between and inside steps; if it does not
//! finish promptly, or on a second signal, the namespaces are torn down with
//! [`riptides_chaos_tests::cleanup_owned`], which kills every process inside them, and the
//! process exits). The daemons' nftables tables live inside the node namespaces, so they go
//! with them. The exit status is 0 only if every expectation held.

use riptides_chaos_tests::product::strip_ansi;
use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use riptides_chaos_tests::{ChildGuard, Host, OutputTo, Signal, Topology};
use serde_json::Value;

/// The demo's policy; `NODE_B_ADDR` is replaced by node-b's address.
const POLICY: &str = include_str!("../examples/demo/policy.yaml");
const TRUST_DOMAIN: &str = "example.com";
const FRONTEND: &str = "spiffe://example.com/frontend";
const ORDERS: &str = "spiffe://example.com/orders-service";
const INTRUDER: &str = "spiffe://example.com/intruder";
/// Namespaces are `rt-demo_<role>-<pid>-<n>`.
const NS_PREFIX: &str = "demo";
use riptides_chaos_tests::product::DAEMON_ADMIN as ADMIN;
const HTTP_PORT: u16 = 8000;
const STEPS: usize = 11;
/// Tools the demo runs, with the Debian package that provides each.
const TOOLS: &[(&str, &str)] =
    &[("ip", "iproute2"), ("nft", "nftables"), ("curl", "curl"), ("python3", "python3"), ("setpriv", "util-linux")];

/// Set by SIGINT/SIGTERM; polled by every wait of the demo.
static STOP: AtomicBool = AtomicBool::new(false);
/// The demo's temporary directory, for the hard-cleanup path.
static WORK_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Flags of `riptides demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Leave everything running after the showcase (until Ctrl-C) and print how to reach it.
    #[arg(long)]
    pub keep: bool,
    /// Print only the summary (and errors).
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// Runs the demo. Returns an error (exit 1) if any expectation failed or a step could not run;
/// exits the process with 130 after cleaning up when interrupted.
pub async fn run(args: DemoArgs) -> Result<()> {
    preflight()?;
    let bins = Binaries::locate()?;

    use tokio::signal::unix::{signal, SignalKind};
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let keep = args.keep;
    tokio::spawn(async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
        STOP.store(true, Ordering::SeqCst);
        eprintln!("\n{} stopping and cleaning up...", if keep { "Ctrl-C:" } else { "interrupted:" });
        // Orderly shutdown happens on the demo's thread; if it hangs, or on a second signal,
        // tear the namespaces down from here.
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        hard_cleanup();
        eprintln!("cleaned up (forced)");
        std::process::exit(130);
    });

    let result = tokio::task::spawn_blocking(move || Demo::new(args, bins).and_then(Demo::run))
        .await
        .unwrap_or_else(|e| Err(anyhow::anyhow!("the demo thread failed: {e}")));
    // Everything was dropped on the demo thread; this catches what a panic may have left.
    hard_cleanup();
    match result {
        // A Ctrl-C from the terminal also reaches the short commands the demo was running, so
        // their failure is part of the interruption, not an error of its own.
        Err(e) if e.is::<Interrupted>() || STOP.load(Ordering::SeqCst) => {
            eprintln!("interrupted; everything was cleaned up");
            std::process::exit(130)
        }
        other => other,
    }
}

/// Remove whatever this process still owns: namespaces (and every process inside) and the
/// temporary directory.
fn hard_cleanup() {
    let removed = riptides_chaos_tests::cleanup_owned();
    if !removed.is_empty() {
        tracing::debug!(?removed, "removed namespaces");
    }
    if let Some(dir) = WORK_DIR.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn check_stop() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        return Err(Interrupted.into());
    }
    Ok(())
}

/// Sleep, waking up for a stop request.
fn pause(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_stop()?;
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Poll `f` every 100 ms until it returns a value, a stop request, or `timeout`.
fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        check_stop()?;
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        pause(Duration::from_millis(100))?;
    }
}

// ---------------------------------------------------------------------------------------------
// Preflight

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(tool)).find(|p| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

fn preflight() -> Result<()> {
    if effective_uid() != Some(0) {
        bail!(
            "riptides demo needs root: it creates network namespaces and the daemons install nftables rules \
             inside them (try: sudo {} demo)",
            std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "riptides".into())
        );
    }
    let missing: Vec<String> = TOOLS
        .iter()
        .filter(|(tool, _)| find_in_path(tool).is_none())
        .map(|(tool, pkg)| format!("`{tool}` (Debian/Ubuntu package {pkg})"))
        .collect();
    if !missing.is_empty() {
        let pkgs: Vec<&str> = TOOLS.iter().filter(|(t, _)| find_in_path(t).is_none()).map(|(_, p)| *p).collect();
        bail!(
            "riptides demo needs {} on PATH; install with: apt-get install -y {}",
            missing.join(", "),
            pkgs.join(" ")
        );
    }
    Ok(())
}

/// The product's binaries, next to this executable.
#[derive(Debug, Clone)]
struct Binaries {
    cli: PathBuf,
    controlplane: PathBuf,
    daemon: PathBuf,
}

impl Binaries {
    fn locate() -> Result<Binaries> {
        let cli = std::env::current_exe().context("locating the riptides executable")?;
        let dir = cli.parent().context("the riptides executable has no parent directory")?.to_path_buf();
        let find = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                bail!(
                    "{name} not found next to {} (looked for {}); build all the binaries first: \
                     cargo build --release --bins (or cargo build --bins for a debug build), \
                     then run the riptides from the same target directory",
                    cli.display(),
                    p.display()
                )
            }
        };
        Ok(Binaries { controlplane: find("riptides-controlplane")?, daemon: find("riptides-daemon")?, cli })
    }
}

// ---------------------------------------------------------------------------------------------
// The demo

struct Expectation {
    what: String,
    held: bool,
    detail: String,
}

/// Everything the demo runs, in drop order: processes first, then namespaces.
struct Demo {
    args: DemoArgs,
    bins: Binaries,
    started: Instant,
    dir: PathBuf,
    step: usize,
    expectations: Vec<Expectation>,
    /// Workloads and probes (killed with their process group on drop).
    apps: Vec<ChildGuard>,
    /// node-a's and node-b's daemons.
    daemons: Vec<(String, ChildGuard)>,
    controlplane: Option<ChildGuard>,
    hosts: Vec<Host>,
    topo: Option<Topology>,
}

struct Nodes {
    cp: Host,
    a: Host,
    b: Host,
}

impl Demo {
    fn new(args: DemoArgs, bins: Binaries) -> Result<Demo> {
        remove_stale_dirs();
        let dir = std::env::temp_dir().join(format!("riptides-demo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join("logs"))
            .with_context(|| format!("creating {}", dir.display()))?;
        *WORK_DIR.lock().unwrap_or_else(|e| e.into_inner()) = Some(dir.clone());
        Ok(Demo {
            args,
            bins,
            started: Instant::now(),
            dir,
            step: 0,
            expectations: Vec::new(),
            apps: Vec::new(),
            daemons: Vec::new(),
            controlplane: None,
            hosts: Vec::new(),
            topo: None,
        })
    }

    fn say(&self, s: impl AsRef<str>) {
        if !self.args.quiet {
            println!("{}", s.as_ref());
        }
    }

    fn step(&mut self, s: impl AsRef<str>) {
        self.step += 1;
        self.say(format!("[{:>2}/{STEPS}] {}", self.step, s.as_ref()));
    }

    fn detail(&self, s: impl AsRef<str>) {
        for line in s.as_ref().lines() {
            self.say(format!("        {line}"));
        }
    }

    fn expect(&mut self, what: impl Into<String>, held: bool, detail: impl Into<String>) {
        let (what, detail) = (what.into(), detail.into());
        self.say(format!("        {} {what}", if held { "ok:" } else { "FAILED:" }));
        self.expectations.push(Expectation { what, held, detail });
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    fn spawn(&self, host: &Host, name: &str, program: &Path, args: &[String]) -> Result<ChildGuard> {
        host.command(program)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .output_to(OutputTo::File(self.log_path(name)))
            .spawn()
            .with_context(|| format!("starting {}", program.display()))
    }

    /// The whole showcase; cleanup happens when `self` drops (also on error).
    fn run(mut self) -> Result<()> {
        let result = self.showcase();
        let outcome = match result {
            Ok(()) => self.finish(),
            Err(e) => Err(e),
        };
        self.shutdown();
        outcome
    }

    fn showcase(&mut self) -> Result<()> {
        check_stop()?;
        self.say("riptides demo: workload identity and transparent mutual TLS, end to end");
        self.say(format!(
            "        binaries: {}",
            self.bins.cli.parent().map(|p| p.display().to_string()).unwrap_or_default()
        ));
        self.say(format!("        scratch:  {}", self.dir.display()));

        let nodes = self.build_network()?;
        let pin = self.start_controlplane(&nodes)?;
        self.apply_policy(&nodes)?;
        let tokens = self.create_tokens(&nodes)?;
        self.start_daemons(&nodes, &pin, tokens)?;
        self.wait_for_svids(&nodes)?;
        let content = self.start_server(&nodes)?;
        self.plaintext_client(&nodes, &content)?;
        self.connection_table(&nodes)?;
        self.intruder(&nodes, &content)?;
        self.not_enrolled(&nodes, &content)?;
        if self.args.keep {
            self.keep_running(&nodes)?;
        }
        Ok(())
    }

    fn build_network(&mut self) -> Result<Nodes> {
        self.step("Building 3 network namespaces (cp, node-a, node-b) on one LAN (a bridge in a 4th, the switch)");
        let mut topo = Topology::new(NS_PREFIX).context("creating network namespaces")?;
        let lan = topo.lan("lan").context("creating the LAN")?;
        let cp = topo.host("cp", lan).context("creating the cp namespace")?;
        let a = topo.host("nodea", lan).context("creating the node-a namespace")?;
        let b = topo.host("nodeb", lan).context("creating the node-b namespace")?;
        for (label, h) in [("cp    ", &cp), ("node-a", &a), ("node-b", &b)] {
            self.detail(format!("{label} {:<14} namespace {}", h.addr(), h.ns().name()));
        }
        self.hosts = vec![cp.clone(), a.clone(), b.clone()];
        self.topo = Some(topo);
        check_stop()?;
        Ok(Nodes { cp, a, b })
    }

    fn start_controlplane(&mut self, n: &Nodes) -> Result<String> {
        self.step(format!("Starting the control plane (riptides-controlplane, trust domain {TRUST_DOMAIN}) in cp"));
        let data = self.dir.join("cp");
        let args = riptides_chaos_tests::product::controlplane_args(&data, TRUST_DOMAIN);
        let bin = self.bins.controlplane.clone();
        let child = self.spawn(&n.cp, "controlplane", &bin, &args)?;
        self.controlplane = Some(child);
        let pin = wait_until("the control plane to start", Duration::from_secs(20), || {
            let cp = self.controlplane.as_mut()?;
            if !cp.is_running() {
                return Some(Err(()));
            }
            let log = cp.log();
            riptides_chaos_tests::product::ca_pin_in_log(&log).map(Ok)
        })
        .and_then(|r| r.map_err(|()| anyhow::anyhow!("the control plane exited")))
        .map_err(|e| self.with_log(e, "controlplane"))?;
        self.detail(format!("API https://{}:8443, daemons quic://{}:9443, CA pin {pin}", n.cp.addr(), n.cp.addr()));
        Ok(pin)
    }

    /// `e` with the tail of a process log, for errors.
    fn with_log(&self, e: anyhow::Error, name: &str) -> anyhow::Error {
        if e.is::<Interrupted>() {
            return e;
        }
        let log = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
        e.context(format!("{name} log ({}):\n{}", self.log_path(name).display(), strip_ansi(&tail.join("\n"))))
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("cp").join("admin.kubeconfig")
    }

    fn ctl(&self, n: &Nodes, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        let mut c =
            n.cp.command(&self.bins.cli)
                .arg("--kubeconfig")
                .arg(self.kubeconfig())
                .args(args)
                .timeout(Duration::from_secs(20));
        if let Some(s) = stdin {
            c = c.stdin(s.as_bytes().to_vec());
        }
        c.output_unchecked().with_context(|| format!("running riptides {}", args.join(" ")))
    }

    fn apply_policy(&mut self, n: &Nodes) -> Result<()> {
        self.step("Applying the policy with the CLI: riptides ctl apply -f ops/examples/demo/policy.yaml");
        let policy = POLICY.replace("NODE_B_ADDR", &n.b.addr().to_string());
        // The API may need a moment after the control plane printed its pin.
        let out = wait_until("the policy to be applied", Duration::from_secs(15), || {
            let out = self.ctl(n, &["ctl", "apply", "-f", "-"], Some(&policy)).ok()?;
            out.status.success().then_some(out)
        })
        .map_err(|e| {
            let last = self
                .ctl(n, &["ctl", "apply", "-f", "-"], Some(&policy))
                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .unwrap_or_default();
            e.context(format!("riptides ctl apply: {last}"))
        })?;
        self.detail(String::from_utf8_lossy(&out.stdout).trim());
        self.detail(format!("{FRONTEND:<38} curl (root) on node-a, MUTUAL egress to tier=backend"));
        self.detail(format!("{INTRUDER:<38} curl as uid 65534 on node-a, not allowed by orders"));
        self.detail(format!("{ORDERS:<38} python3 on node-b, ingress :{HTTP_PORT} allows only frontend"));
        Ok(())
    }

    fn create_tokens(&mut self, n: &Nodes) -> Result<Vec<String>> {
        self.step("Creating two single-use join tokens: riptides token create --ttl 10m --daemon-id node-a|node-b");
        let mut tokens = Vec::new();
        for id in ["node-a", "node-b"] {
            check_stop()?;
            let out = self.ctl(n, &["token", "create", "--ttl", "10m", "--daemon-id", id], None)?;
            if !out.status.success() {
                bail!("riptides token create for {id}: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
            let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let shown = token.split('.').next().unwrap_or_default();
            self.detail(format!("{id}: {shown}.<secret> (only its hash is stored)"));
            tokens.push(token);
        }
        Ok(tokens)
    }

    fn start_daemons(&mut self, n: &Nodes, pin: &str, tokens: Vec<String>) -> Result<()> {
        self.step("Starting two daemons (riptides-daemon --dataplane userspace) on node-a and node-b");
        for ((host, id), token) in [(&n.a, "node-a"), (&n.b, "node-b")].into_iter().zip(tokens) {
            let args = riptides_chaos_tests::product::daemon_args(
                n.cp.addr(),
                TRUST_DOMAIN,
                pin,
                &token,
                &self.dir.join(id),
                "userspace",
            );
            let bin = self.bins.daemon.clone();
            let child = self.spawn(host, id, &bin, &args)?;
            self.detail(format!("{id}: pid {}, admin http://{ADMIN} inside its namespace", child.pid()));
            self.daemons.push((id.to_owned(), child));
        }
        Ok(())
    }

    fn wait_for_svids(&mut self, n: &Nodes) -> Result<()> {
        self.step("Waiting for the daemons to enroll and receive the workloads' SVIDs");
        for (host, node, id) in [(&n.a, "node-a", FRONTEND), (&n.a, "node-a", INTRUDER), (&n.b, "node-b", ORDERS)] {
            let expiry = wait_until(&format!("the SVID of {id} on {node}"), Duration::from_secs(30), || {
                if let Some(dead) = self.daemon_alive() {
                    return Some(dead);
                }
                let dump = admin_get(host, "/config_dump")?;
                let ids = dump["identities"].as_array()?;
                let i = ids.iter().find(|i| i["spiffeID"] == id)?;
                Some(Ok(i
                    .get("expiresAt")
                    .or_else(|| i.get("notAfter"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()))
            })
            .and_then(|r| r)
            .map_err(|e| self.with_log(e, node))?;
            let exp = if expiry.is_empty() { String::new() } else { format!(" (expires {expiry})") };
            self.detail(format!("{node}: {id}{exp}"));
        }
        Ok(())
    }

    /// `Some(Err)` once a daemon has exited (so waits stop early), `None` while all run.
    fn daemon_alive(&mut self) -> Option<Result<String>> {
        for (id, d) in &mut self.daemons {
            if !d.is_running() {
                return Some(Err(anyhow::anyhow!("the daemon on {id} exited")));
            }
        }
        None
    }

    fn start_server(&mut self, n: &Nodes) -> Result<String> {
        self.step(format!(
            "Starting an unmodified plaintext HTTP server on node-b: python3 -m http.server {HTTP_PORT}"
        ));
        let www = self.dir.join("www");
        std::fs::create_dir_all(&www).context("creating the web root")?;
        let content =
            format!("hello from orders-service on node-b (plain python3 http.server, demo {})\n", std::process::id());
        std::fs::write(www.join("hello.txt"), &content).context("writing the page")?;
        let args: Vec<String> = vec![
            "-m".into(),
            "http.server".into(),
            HTTP_PORT.to_string(),
            "--bind".into(),
            "0.0.0.0".into(),
            "--directory".into(),
            www.display().to_string(),
        ];
        let server = self.spawn(&n.b, "http-server", Path::new("python3"), &args)?;
        self.apps.push(server);
        // Ask the kernel whether python listens: a test connection would be captured by the
        // daemon (which accepts it) and prove nothing.
        let listening = format!("sport = :{HTTP_PORT}");
        wait_until("the HTTP server to listen", Duration::from_secs(10), || {
            let out = n.b.command("ss").args(["-Hltn", &listening]).output_unchecked().ok()?;
            (!out.stdout.is_empty()).then_some(())
        })
        .map_err(|e| self.with_log(e, "http-server"))?;
        self.detail(format!("listening on {}:{HTTP_PORT}; it knows nothing about TLS", n.b.addr()));
        Ok(content)
    }

    fn url(n: &Nodes) -> String {
        format!("http://{}:{HTTP_PORT}/hello.txt", n.b.addr())
    }

    fn plaintext_client(&mut self, n: &Nodes, content: &str) -> Result<()> {
        let url = Self::url(n);
        self.step(format!("Plaintext client on node-a (the frontend): curl {url}"));
        let out = sh(&n.a, &format!("curl -sS --max-time 5 {url}"))?;
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            self.detail(format!("response: {}", body.trim()));
        } else {
            self.detail(String::from_utf8_lossy(&out.stderr).trim());
        }
        let held = out.status.success() && body == content;
        self.expect(
            "frontend -> orders-service: plain HTTP from curl answered through the upgraded connection",
            held,
            if held { "curl got the page".to_owned() } else { String::from_utf8_lossy(&out.stderr).trim().to_owned() },
        );
        Ok(())
    }

    fn connection_table(&mut self, n: &Nodes) -> Result<()> {
        self.step("The connection on the wire is mutual TLS: both daemons' /connections (a held-open curl)");
        // curl's telnet mode keeps the connection open while its stdin is open; half an HTTP
        // request makes the byte counters move.
        let hold = format!(
            "(printf 'GET /hello.txt HTTP/1.1\\r\\nHost: orders\\r\\n'; sleep 10) | curl -s --max-time 10 telnet://{}:{HTTP_PORT} >/dev/null",
            n.b.addr()
        );
        let held =
            n.a.command("sh")
                .args(["-c", &hold])
                .output_to(OutputTo::Null)
                .spawn()
                .context("holding a connection open")?;
        let rows = wait_until("the held connection in both connection tables", Duration::from_secs(8), || {
            let a = admin_get(&n.a, "/connections")?;
            let b = admin_get(&n.b, "/connections")?;
            let out: Vec<Value> = a
                .as_array()?
                .iter()
                .filter(|r| {
                    r["state"] == "established" && r["ownSPIFFEID"] == FRONTEND && r["bytesOut"].as_u64() > Some(0)
                })
                .take(1)
                .cloned()
                .collect();
            let inb: Vec<Value> = b
                .as_array()?
                .iter()
                .filter(|r| r["peerSPIFFEID"] == FRONTEND && r["bytesIn"].as_u64() > Some(0))
                .take(1)
                .cloned()
                .collect();
            (!out.is_empty() && !inb.is_empty()).then(|| {
                let mut v = Vec::new();
                v.extend(out.into_iter().map(|r| ("node-a", r)));
                v.extend(inb.into_iter().map(|r| ("node-b", r)));
                v
            })
        });
        drop(held);
        let rows = match rows {
            Ok(r) => r,
            Err(e) if e.is::<Interrupted>() => return Err(e),
            Err(e) => {
                self.expect("the connection shows up as mTLS in both daemons' tables", false, format!("{e:#}"));
                return Ok(());
            }
        };
        self.detail(render_table(&rows));
        let out = &rows[0].1;
        let inb = &rows[1].1;
        let ok = out["mode"] == "MUTUAL"
            && out["tlsVersion"] == "TLSv1.3"
            && out["peerSPIFFEID"] == ORDERS
            && inb["ownSPIFFEID"] == ORDERS
            && inb["mode"] == "MUTUAL";
        self.expect(
            format!("MUTUAL mTLS, TLS 1.3, both SPIFFE IDs ({FRONTEND} <-> {ORDERS})"),
            ok,
            format!("node-a row {out}, node-b row {inb}"),
        );
        let kx = out["kxGroup"].as_str().unwrap_or_default().to_owned();
        self.expect(
            format!("post-quantum hybrid key exchange: {}", if kx.is_empty() { "(none)" } else { &kx }),
            kx == "X25519MLKEM768",
            format!("negotiated group {kx:?}"),
        );
        Ok(())
    }

    fn intruder(&mut self, n: &Nodes, content: &str) -> Result<()> {
        let url = Self::url(n);
        self.step(format!(
            "An identity orders does not allow: curl as uid 65534 on node-a ({INTRUDER}): setpriv --reuid 65534 ... curl {url}"
        ));
        let log_b = self.log_path("node-b");
        let before = std::fs::metadata(&log_b).map(|m| m.len()).unwrap_or(0);
        let out = sh(&n.a, &format!("setpriv --reuid 65534 --regid 65534 --clear-groups curl -sS --max-time 5 {url}"))?;
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        self.detail(if out.status.success() { format!("curl succeeded: {}", body.trim()) } else { err.clone() });
        let refusal = wait_until("node-b's refusal line", Duration::from_secs(2), || {
            refusal_line(&read_from(&log_b, before), INTRUDER)
        })
        .ok();
        match &refusal {
            Some(l) => self.detail(format!("node-b daemon: {l}")),
            None => self.detail("(no refusal line in node-b's daemon log)"),
        }
        let held = !out.status.success() && !body.contains(content);
        self.expect("intruder refused in the handshake (it has an SVID, but orders allows only frontend)", held, err);
        Ok(())
    }

    fn not_enrolled(&mut self, n: &Nodes, content: &str) -> Result<()> {
        let url = Self::url(n);
        self.step(format!("A plaintext client with no identity (cp namespace, no daemon there): curl {url}"));
        let log_b = self.log_path("node-b");
        let before = std::fs::metadata(&log_b).map(|m| m.len()).unwrap_or(0);
        let out = sh(&n.cp, &format!("curl -sS --max-time 5 {url}"))?;
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        self.detail(if out.status.success() { format!("curl succeeded: {}", body.trim()) } else { err.clone() });
        if let Ok(l) = wait_until("node-b's refusal line", Duration::from_secs(2), || {
            refusal_line(&read_from(&log_b, before), "plaintext")
        }) {
            self.detail(format!("node-b daemon: {l}"));
        }
        let held = !out.status.success() && !body.contains(content);
        self.expect("plaintext refused on the MUTUAL port", held, err);
        Ok(())
    }

    fn keep_running(&mut self, n: &Nodes) -> Result<()> {
        let ns = |h: &Host| format!("ip netns exec {}", h.ns().name());
        let url = Self::url(n);
        println!();
        println!("Everything keeps running (--keep). From another shell, as root:");
        println!("  {} curl {url}                       # frontend: upgraded to mTLS", ns(&n.a));
        println!("  {} setpriv --reuid 65534 --regid 65534 --clear-groups curl {url}   # intruder: refused", ns(&n.a));
        println!("  {} curl -s http://{ADMIN}/connections   # node-a's connection table", ns(&n.a));
        println!("  {} curl -s http://{ADMIN}/config_dump   # node-b's identities and policy", ns(&n.b));
        println!(
            "  {} {} --kubeconfig {} ctl get daemons -o wide",
            ns(&n.cp),
            self.bins.cli.display(),
            self.kubeconfig().display()
        );
        println!("  {} nft list ruleset                     # node-b's capture table", ns(&n.b));
        println!("  logs: {}/", self.dir.join("logs").display());
        println!("Press Ctrl-C to stop and clean up.");
        while !STOP.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
            for (id, d) in &mut self.daemons {
                if !d.is_running() {
                    bail!("the daemon on {id} exited");
                }
            }
        }
        Ok(())
    }

    /// The summary; an error if an expectation failed.
    fn finish(&mut self) -> Result<()> {
        let failed = self.expectations.iter().filter(|e| !e.held).count();
        self.say("");
        println!("Summary ({:.1} s):", self.started.elapsed().as_secs_f64());
        for e in &self.expectations {
            println!("  [{}] {}", if e.held { "ok" } else { "FAILED" }, e.what);
            if !e.held && !e.detail.is_empty() {
                println!("         {}", e.detail);
            }
        }
        if failed == 0 {
            println!(
                "  curl and python3 never saw a certificate: the daemons identified the processes, \
                 gave them SPIFFE IDs, and upgraded their plain TCP to mutual TLS."
            );
            Ok(())
        } else {
            bail!(
                "{failed} of {} expectations failed{}",
                self.expectations.len(),
                if self.args.keep { "" } else { " (run with --keep to inspect the logs and namespaces)" }
            )
        }
    }

    /// Orderly stop: daemons (they remove their nftables tables), the control plane, then the
    /// namespaces (every leftover process inside is killed), then the temporary directory.
    fn shutdown(&mut self) {
        let namespaces = self.topo.as_ref().map(|t| t.namespace_names()).unwrap_or_default();
        self.apps.clear();
        for (_, d) in &self.daemons {
            let _ = d.signal(Signal::Term);
        }
        for (_, d) in &mut self.daemons {
            if d.wait_timeout(Duration::from_secs(3)).is_err() {
                let _ = d.kill();
            }
        }
        self.daemons.clear();
        if let Some(mut cp) = self.controlplane.take() {
            let _ = cp.terminate(Duration::from_secs(3));
        }
        self.hosts.clear();
        self.topo = None;
        let left: Vec<String> = riptides_chaos_tests::list_namespaces()
            .unwrap_or_default()
            .into_iter()
            .filter(|n| namespaces.contains(n))
            .collect();
        let _ = std::fs::remove_dir_all(&self.dir);
        if left.is_empty() {
            if !namespaces.is_empty() {
                self.say(format!(
                    "Cleaned up: {} namespaces (with the daemons' nftables tables), all processes, {}",
                    namespaces.len(),
                    self.dir.display()
                ));
            }
        } else {
            eprintln!("warning: namespaces still present after cleanup: {}", left.join(", "));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // `run` already shut down in order; this covers a panic on the demo thread.
        self.apps.clear();
        self.daemons.clear();
        self.controlplane = None;
        self.hosts.clear();
        self.topo = None;
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn sh(host: &Host, cmd: &str) -> Result<Output> {
    check_stop()?;
    let out = host
        .command("sh")
        .args(["-c", cmd])
        .timeout(Duration::from_secs(15))
        .output_unchecked()
        .with_context(|| format!("running `{cmd}` in {}", host.name))?;
    check_stop()?;
    Ok(out)
}

/// GET from a daemon's admin listener inside `host`, as JSON.
fn admin_get(host: &Host, path: &str) -> Option<Value> {
    let out = host
        .command("curl")
        .args(["-s", "--max-time", "2", &format!("http://{ADMIN}{path}")])
        .timeout(Duration::from_secs(5))
        .output_unchecked()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// A log file's content after byte `offset`.
fn read_from(path: &Path, offset: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// The log line about a refusal, preferring the dataplane's verdict that mentions `hint`;
/// reduced to level and message (the span fields repeat what the demo already printed).
fn refusal_line(log: &str, hint: &str) -> Option<String> {
    let log = strip_ansi(log);
    let is_refusal = |l: &&str| {
        let l = l.to_ascii_lowercase();
        l.contains("refus") || l.contains("denied") || l.contains("not allowed")
    };
    let line = log
        .lines()
        .filter(is_refusal)
        .find(|l| l.contains(hint) && l.contains("connection refused"))
        .or_else(|| log.lines().filter(is_refusal).find(|l| l.contains(hint)))
        .or_else(|| log.lines().find(is_refusal))?;
    let words: Vec<&str> = line.split(' ').filter(|w| !w.is_empty()).collect();
    let level = words.iter().find(|w| ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(w)).copied().unwrap_or("");
    // The message follows the event's target (`riptides_node::userspace:`).
    let is_target = |w: &&str| {
        w.ends_with(':')
            && w.contains("::")
            && w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':')
    };
    let msg = match words.iter().position(is_target) {
        Some(i) => words[i + 1..].join(" "),
        None => line.trim().to_owned(),
    };
    let line = format!("{level} {msg}").trim().to_owned();
    Some(if line.chars().count() > 240 { format!("{}...", line.chars().take(240).collect::<String>()) } else { line })
}

/// Scratch directories of earlier demo runs that were killed (their pid is gone).
fn remove_stale_dirs() {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("riptides-demo-").and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The connection table: one row per (node, connection).
fn render_table(rows: &[(&str, Value)]) -> String {
    let s = |v: &Value| match v {
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let header = [
        "NODE",
        "DIR",
        "SOURCE -> DESTINATION",
        "MODE",
        "TLS",
        "KEY EXCHANGE",
        "OWN SPIFFE ID",
        "PEER SPIFFE ID",
        "BYTES OUT/IN",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for (node, r) in rows {
        let dir = match r["direction"].as_str() {
            Some("outbound") => "out",
            Some("inbound") => "in",
            _ => "?",
        };
        table.push(vec![
            node.to_string(),
            dir.to_owned(),
            format!("{} -> {}", s(&r["source"]), s(&r["destination"])),
            s(&r["mode"]),
            s(&r["tlsVersion"]),
            s(&r["kxGroup"]),
            s(&r["ownSPIFFEID"]),
            s(&r["peerSPIFFEID"]),
            format!("{}/{}", s(&r["bytesOut"]), s(&r["bytesIn"])),
        ]);
    }
    let mut widths = BTreeMap::new();
    for row in &table {
        for (i, c) in row.iter().enumerate() {
            let w = widths.entry(i).or_insert(0usize);
            *w = (*w).max(c.chars().count());
        }
    }
    table
        .iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[&i]))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_is_embedded_with_its_placeholder() {
        assert!(POLICY.contains("NODE_B_ADDR"));
        for id in ["frontend", "orders-service", "intruder"] {
            assert!(POLICY.contains(&format!("workloadID: {id}")), "{id}");
        }
    }

    #[test]
    fn refusal_lines_are_found_and_trimmed() {
        let log = format!(
            "2025-01-01T00:00:00.000000Z  INFO \u{1b}[2mconn\u{1b}[0m: riptides_node::userspace: inbound mTLS accepted\n\
             2025-01-01T00:00:01.000000Z  WARN mtls_accept{{own=x}}: riptides_node::dataplane::handshake::verify: peer certificate refused refusal=NotAllowed {{ peer: {INTRUDER} }}\n\
             2025-01-01T00:00:01.000000Z  INFO \u{1b}[2mconn\u{1b}[0m{{direction=Inbound peer=Some(SpiffeId {{ uri: \"x\" }})}}: riptides_node::userspace: connection refused or failed error=peer identity {INTRUDER} is not allowed\n"
        );
        let l = refusal_line(&log, INTRUDER).unwrap();
        assert_eq!(l, format!("INFO connection refused or failed error=peer identity {INTRUDER} is not allowed"));
        let l = refusal_line(&log, "nobody").unwrap();
        assert!(l.starts_with("WARN peer certificate refused"), "{l}");
        assert!(refusal_line("nothing here\n", "x").is_none());
    }

    #[test]
    fn table_renders_aligned_columns() {
        let row = serde_json::json!({"direction": "outbound", "source": "10.0.0.1:1", "destination": "10.0.0.2:8000",
            "mode": "MUTUAL", "tlsVersion": "TLSv1.3", "kxGroup": "X25519MLKEM768", "ownSPIFFEID": FRONTEND,
            "peerSPIFFEID": ORDERS, "bytesOut": 10, "bytesIn": 0});
        let t = render_table(&[("node-a", row)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[1].contains("X25519MLKEM768") && lines[1].contains("10/0"), "{t}");
        assert_eq!(lines[0].find("MODE"), lines[1].find("MUTUAL"));
    }
}
