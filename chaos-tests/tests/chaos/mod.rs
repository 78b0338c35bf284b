//! Shared fixture of the chaos scenarios (issue 6): a control plane on a core LAN, NAT sites
//! with daemons behind them, all real binaries (`riptides-controlplane`, `riptides`,
//! `riptides-daemon`) in namespaces the test makes, and the result table every scenario adds a
//! row to.
//!
//! Observations go through the same doors an operator uses: the daemons' admin listeners
//! (`/readyz`, `/config_dump`, `/metrics`, queried with `curl` inside the daemon's namespace),
//! the CLI (`riptides ctl get ... -o json`, run in the control plane's namespace) and the
//! processes' logs (kept in files that survive restarts).
#![allow(dead_code)]

pub use riptides_chaos_tests::product::strip_ansi;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use riptides_chaos_tests::{ChildGuard, Host, LanId, NatRouter, OutputTo, Signal, Topology};
use serde_json::Value;

pub const TD: &str = "example.com";
pub const DEMO_POLICY: &str = include_str!("../../../ops/examples/demo/policy.yaml");
pub const FRONTEND: &str = "spiffe://example.com/frontend";
pub const ORDERS: &str = "spiffe://example.com/orders-service";

// ---------------------------------------------------------------------------------------------
// Binaries, waiting, shell

/// A workspace binary next to this test binary (`target/<profile>/deps/..`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace binaries first (`cargo build --bins`), then run the chaos suite",
        p.display()
    );
    p
}

/// Polls `f` every 100 ms until it returns `Some`, or `None` after `timeout`.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn wait_until<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    match poll(timeout, f) {
        Some(v) => v,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

pub fn sh(host: &Host, cmd: &str) -> std::process::Output {
    host.command("sh").args(["-c", cmd]).timeout(Duration::from_secs(30)).output_unchecked().expect("sh in namespace")
}

/// `GET http://127.0.0.1:15000<path>` inside `host`: (status, body), `None` if nothing answered.
pub fn admin(host: &Host, path: &str) -> Option<(u16, String)> {
    let out = sh(host, &format!("curl -s --max-time 3 -w '\\n%{{http_code}}' http://127.0.0.1:15000{path}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    let code: u16 = code.trim().parse().ok()?;
    (code != 0).then(|| (code, body.to_owned()))
}

pub fn admin_json(host: &Host, path: &str) -> Option<Value> {
    admin(host, path).and_then(|(c, b)| if c == 200 { serde_json::from_str(&b).ok() } else { None })
}

/// A counter or gauge from `/metrics` (the line `name value`).
pub fn metric(host: &Host, name: &str) -> Option<f64> {
    let (_, body) = admin(host, "/metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}

// ---------------------------------------------------------------------------------------------
// Results table

#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    /// Time from the end of the fault to recovery (or `n/a`).
    pub recovery: String,
    pub bound: String,
    pub reconnect_attempts: String,
    pub revisions_lost: u64,
    pub writes_lost: u64,
    pub crashed: u64,
    pub notes: String,
}

static TABLE: Mutex<Vec<Row>> = Mutex::new(Vec::new());

pub const HEADER: &str = "| scenario | recovery | bound | reconnect attempts | revisions lost | acknowledged writes lost | crashed processes | notes |\n|---|---|---|---|---|---|---|---|\n";

impl Row {
    pub fn markdown(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            self.scenario,
            self.recovery,
            self.bound,
            self.reconnect_attempts,
            self.revisions_lost,
            self.writes_lost,
            self.crashed,
            self.notes.replace('|', "/")
        )
    }
}

pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Adds a row: printed at once, kept in this test binary's table, and appended to
/// `<target>/tmp/chaos-results.md` (the suite's combined table, across test binaries).
pub fn record(row: Row) {
    let line = row.markdown();
    eprintln!("\nCHAOS RESULT {line}");
    TABLE.lock().unwrap_or_else(|p| p.into_inner()).push(row);
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos-results.md");
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        let _ = f.write_all(line.as_bytes());
    }
}

/// The table of every row recorded in this test binary so far.
pub fn print_table() {
    let rows = TABLE.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut s = String::from("\nChaos results (this test binary so far):\n");
    s.push_str(HEADER);
    for r in rows {
        s.push_str(&r.markdown());
    }
    let _ = writeln!(s, "(combined table of the suite: {}/chaos-results.md)", env!("CARGO_TARGET_TMPDIR"));
    eprintln!("{s}");
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A real process with its log in a file that survives restarts.
pub struct Proc {
    pub guard: Option<ChildGuard>,
    pub log: PathBuf,
    /// Set when the test killed or stopped it on purpose.
    pub expected_down: bool,
}

impl Proc {
    pub fn log(&self) -> String {
        std::fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }
    pub fn kill9(&mut self) {
        if let Some(g) = self.guard.as_mut() {
            g.signal(Signal::Kill).expect("kill -9");
            let _ = g.wait_timeout(Duration::from_secs(10));
        }
        self.guard = None;
        self.expected_down = true;
    }
    /// SIGTERM and wait for exit: `Ok` if it exited by itself (with its status).
    pub fn sigterm(&mut self, grace: Duration) -> std::process::ExitStatus {
        let g = self.guard.as_mut().expect("running");
        g.signal(Signal::Term).expect("SIGTERM");
        let st = g.wait_timeout(grace).unwrap_or_else(|e| panic!("did not exit on SIGTERM within {grace:?}: {e}"));
        self.guard = None;
        self.expected_down = true;
        st
    }
    /// `Some(description)` if the process died without the test asking for it, or panicked.
    pub fn crashed(&mut self) -> Option<String> {
        let log = self.log();
        if log.contains("panicked at") {
            return Some(format!("panic in {}", self.log.display()));
        }
        match self.guard.as_mut() {
            Some(g) => match g.try_wait() {
                Ok(Some(st)) => Some(format!("`{}` exited: {st}; log tail: {}", g.cmdline(), tail(&log, 15))),
                _ => None,
            },
            None if self.expected_down => None,
            None => Some("not running".into()),
        }
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

// ---------------------------------------------------------------------------------------------
// The cluster

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dataplane {
    None,
    Userspace,
}

pub struct Daemon {
    pub id: String,
    pub host: Host,
    pub site: usize,
    pub proc: Proc,
    pub data_dir: PathBuf,
    pub token: String,
    pub dataplane: Dataplane,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub cp: Host,
    pub cp_proc: Proc,
    pub cp_args: Vec<String>,
    pub pin: String,
    pub routers: Vec<NatRouter>,
    pub site_lans: Vec<LanId>,
    pub daemons: Vec<Daemon>,
    /// Other processes (workloads) that must stay up.
    pub extra: Vec<Proc>,
    /// Services this test applied and the CP acknowledged: name -> resourceVersion.
    pub acked: BTreeMap<String, u64>,
    next_change: u32,
    // Last: namespaces go after the processes in them.
    pub topo: Topology,
}

impl Cluster {
    /// A core LAN with the control plane, `sites` NAT sites, no daemons yet.
    pub fn new(prefix: &str, sites: usize, cp_extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut topo = Topology::new(prefix).expect("network namespaces (the chaos suite needs root, ip and nft)");
        let core = topo.lan("core").unwrap();
        let cp = topo.host("cp", core).unwrap();
        let mut routers = Vec::new();
        let mut site_lans = Vec::new();
        for i in 0..sites {
            let (lan, r) = topo.nat_site(&format!("s{}", i + 1), core).unwrap();
            routers.push(r);
            site_lans.push(lan);
        }
        let cp_dir = dir.path().join("cp");
        let mut cp_args = riptides_chaos_tests::product::controlplane_args(&cp_dir, TD);
        cp_args.extend(cp_extra.iter().map(|s| s.to_string()));
        let cp_log = dir.path().join("cp.log");
        let mut c = Cluster {
            cp_proc: Proc { guard: None, log: cp_log, expected_down: true },
            dir,
            cp,
            cp_args,
            pin: String::new(),
            routers,
            site_lans,
            daemons: Vec::new(),
            extra: Vec::new(),
            acked: BTreeMap::new(),
            next_change: 0,
            topo,
        };
        c.start_cp();
        c
    }

    /// Starts (or restarts) the control plane on its data dir and waits for its API.
    pub fn start_cp(&mut self) {
        assert!(self.cp_proc.guard.is_none(), "the control plane is already running");
        let before = self.cp_proc.log().len();
        let g = self
            .cp
            .command(bin("riptides-controlplane"))
            .args(&self.cp_args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .output_to(OutputTo::File(self.cp_proc.log.clone()))
            .spawn()
            .expect("spawn riptides-controlplane");
        self.cp_proc.guard = Some(g);
        self.cp_proc.expected_down = false;
        let log_path = self.cp_proc.log.clone();
        let pin = wait_until("the control plane's CA pin line", Duration::from_secs(60), || {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            riptides_chaos_tests::product::ca_pin_in_log(log.get(before..)?)
        });
        if !self.pin.is_empty() {
            assert_eq!(self.pin, pin, "the CA survives a restart");
        }
        self.pin = pin;
        // The API answers.
        wait_until("the resource API", Duration::from_secs(30), || {
            self.ctl(&["ctl", "get", "daemons", "-o", "json"], None).status.success().then_some(())
        });
    }

    pub fn cp_down_kill9(&mut self) {
        self.cp_proc.kill9();
    }

    pub fn ctl(&self, args: &[&str], stdin: Option<String>) -> std::process::Output {
        let mut c = self
            .cp
            .command(bin("riptides"))
            .arg("--kubeconfig")
            .arg(self.dir.path().join("cp/admin.kubeconfig"))
            .args(args)
            .timeout(Duration::from_secs(30));
        if let Some(s) = stdin {
            c = c.stdin(s.into_bytes());
        }
        c.output_unchecked().expect("riptides CLI")
    }

    pub fn render(&self, policy: &str) -> String {
        let b = self.daemons.iter().find(|d| d.id == "node-b").map(|d| d.host.addr().to_string()).unwrap_or_default();
        policy.replace("NODE_B_ADDR", &b).replace("CP_ADDR", &self.cp.addr().to_string())
    }

    pub fn apply(&self, yaml: &str) {
        let out = self.ctl(&["ctl", "apply", "-f", "-"], Some(self.render(yaml)));
        assert!(out.status.success(), "apply failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// `ctl get <kind> -o json` as a list of objects (`None` if the CLI failed).
    pub fn list(&self, kind: &str) -> Option<Vec<Value>> {
        let out = self.ctl(&["ctl", "get", kind, "-o", "json"], None);
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(match v {
            Value::Array(a) => a,
            Value::Object(ref o) if o.contains_key("items") => v["items"].as_array().cloned().unwrap_or_default(),
            other => vec![other],
        })
    }

    /// `kind -> [(name, resourceVersion)]` for the kinds whose loss or duplication matters.
    pub fn store_snapshot(&self) -> BTreeMap<String, Vec<(String, u64)>> {
        let mut m = BTreeMap::new();
        for kind in ["daemons", "workloadidentities", "services", "jointokens"] {
            let items = self.list(kind).unwrap_or_else(|| panic!("ctl get {kind}"));
            let mut v: Vec<(String, u64)> = items.iter().map(|o| (name_of(o), rv_of(o))).collect();
            v.sort();
            m.insert(kind.to_owned(), v);
        }
        m
    }

    /// One policy change the CP acknowledges: a new Service (every daemon's document holds all
    /// Services). Returns its resourceVersion, the revision a daemon must reach.
    pub fn policy_change(&mut self) -> u64 {
        self.next_change += 1;
        let n = self.next_change;
        let name = format!("chaos-{n}");
        self.apply(&format!(
            "apiVersion: core.riptides.io/v1alpha1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  labels:\n    \
             tier: chaos\n  addresses:\n    - address: 10.213.250.{}\n      port: {}\n",
            n % 250 + 1,
            9000 + n
        ));
        let obj =
            self.list(&format!("services/{name}")).and_then(|v| v.into_iter().next()).expect("the applied Service");
        let rv = rv_of(&obj);
        assert!(rv > 0, "resourceVersion of {name}: {obj}");
        self.acked.insert(name, rv);
        rv
    }

    /// Acknowledged Services missing (or duplicated) in the store now.
    pub fn writes_lost(&self, before: &BTreeMap<String, Vec<(String, u64)>>) -> (u64, Vec<String>) {
        let now = self.store_snapshot();
        let mut lost = Vec::new();
        for (kind, items) in before {
            let after = &now[kind];
            let mut names: Vec<&String> = after.iter().map(|(n, _)| n).collect();
            let total = names.len();
            names.dedup();
            if names.len() != total {
                lost.push(format!("{kind}: duplicated names {after:?}"));
            }
            for (name, rv) in items {
                match after.iter().find(|(n, _)| n == name) {
                    None => lost.push(format!("{kind}/{name} lost")),
                    // Daemons and tokens get status writes; specs the test wrote must keep their revision.
                    Some((_, rv2)) if (kind == "services" || kind == "workloadidentities") && rv2 != rv => {
                        lost.push(format!("{kind}/{name} changed revision {rv} -> {rv2}"))
                    }
                    _ => {}
                }
            }
        }
        for name in self.acked.keys() {
            if !now["services"].iter().any(|(n, _)| n == name) {
                lost.push(format!("acknowledged services/{name} lost"));
            }
        }
        (lost.len() as u64, lost)
    }

    pub fn token(&self, daemon_id: &str) -> String {
        let out = self.ctl(&["token", "create", "--ttl", "10m", "--daemon-id", daemon_id], None);
        assert!(out.status.success(), "token create: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// A WorkloadIdentity scoped to one daemon, so every daemon holds a workload SVID too.
    pub fn workload_for(&self, daemon_id: &str) {
        self.apply(&format!(
            "apiVersion: core.riptides.io/v1alpha1\nkind: WorkloadIdentity\nmetadata:\n  name: wl-{daemon_id}\nspec:\n  \
             workloadID: wl/{daemon_id}\n  scope:\n    daemon:\n      id: {daemon_id}\n  selectors:\n    - process:name: \
             chaos-nothing\n"
        ));
    }

    /// Adds a host on `site` and starts a daemon there with a fresh token.
    pub fn add_daemon(&mut self, id: &str, site: usize, dataplane: Dataplane) -> usize {
        let i = self.prepare_daemon(id, site, dataplane);
        self.start_daemon(i);
        i
    }

    /// Adds a host on `site` and a token for a daemon there, without starting it.
    pub fn prepare_daemon(&mut self, id: &str, site: usize, dataplane: Dataplane) -> usize {
        let host = self.topo.host(id, self.site_lans[site]).unwrap();
        let token = self.token(id);
        let data_dir = self.dir.path().join(id);
        let log = self.dir.path().join(format!("{id}.log"));
        self.daemons.push(Daemon {
            id: id.to_owned(),
            host,
            site,
            proc: Proc { guard: None, log, expected_down: true },
            data_dir,
            token,
            dataplane,
        });
        self.daemons.len() - 1
    }

    /// (Re)starts daemon `i` with its data dir and its (original) token.
    pub fn start_daemon(&mut self, i: usize) {
        let cp = self.cp.addr();
        let pin = self.pin.clone();
        let d = &mut self.daemons[i];
        assert!(d.proc.guard.is_none());
        let dp = match d.dataplane {
            Dataplane::None => "none",
            Dataplane::Userspace => "userspace",
        };
        let g = d
            .host
            .command(bin("riptides-daemon"))
            .args(riptides_chaos_tests::product::daemon_args(cp, TD, &pin, &d.token, &d.data_dir, dp))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .output_to(OutputTo::File(d.proc.log.clone()))
            .spawn()
            .expect("spawn riptides-daemon");
        d.proc.guard = Some(g);
        d.proc.expected_down = false;
    }

    pub fn daemon(&self, id: &str) -> &Daemon {
        self.daemons.iter().find(|d| d.id == id).unwrap_or_else(|| panic!("no daemon {id}"))
    }

    pub fn site_daemons(&self, site: usize) -> Vec<usize> {
        (0..self.daemons.len()).filter(|i| self.daemons[*i].site == site).collect()
    }

    /// Waits until every daemon in `which` is ready (200), connected and holds `min_ids` identities.
    pub fn wait_ready(&self, which: &[usize], min_ids: usize, timeout: Duration) {
        for &i in which {
            let d = &self.daemons[i];
            let ok = poll(timeout, || {
                let (code, _) = admin(&d.host, "/readyz")?;
                let v = admin_json(&d.host, "/config_dump")?;
                (code == 200 && v["connected"] == true && v["identities"].as_array()?.len() >= min_ids).then_some(())
            });
            if ok.is_none() {
                panic!(
                    "{} not ready/connected with {min_ids} identities within {timeout:?}: readyz {:?}, config_dump {:?}\nlog tail:\n{}",
                    d.id,
                    admin(&d.host, "/readyz"),
                    admin_json(&d.host, "/config_dump"),
                    tail(&d.proc.log(), 30)
                );
            }
        }
    }

    pub fn revision(&self, i: usize) -> Option<u64> {
        admin_json(&self.daemons[i].host, "/config_dump")?["policy"]["revision"].as_u64()
    }

    /// Waits until each daemon in `which` applied revision >= `rev`; returns the time each took
    /// (`None` for those that did not within `timeout`).
    pub fn wait_revision(&self, which: &[usize], rev: u64, timeout: Duration) -> Vec<Option<Duration>> {
        let start = Instant::now();
        let mut done: Vec<Option<Duration>> = vec![None; which.len()];
        while start.elapsed() < timeout && done.iter().any(Option::is_none) {
            for (k, &i) in which.iter().enumerate() {
                if done[k].is_none() && self.revision(i).is_some_and(|r| r >= rev) {
                    done[k] = Some(start.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        done
    }

    pub fn reconnects(&self, i: usize) -> u64 {
        metric(&self.daemons[i].host, "riptides_daemon_reconnects_total").unwrap_or(-1.0) as i64 as u64
    }

    /// Failed dials and lost-session reconnects logged by daemon `i` so far.
    pub fn dial_failures(&self, i: usize) -> usize {
        let log = self.daemons[i].proc.log();
        count(&log, "cannot connect to the control plane") + count(&log, "attestation failed; retrying")
    }

    /// Every process that should be up and is not, or that panicked.
    pub fn crashed(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(c) = self.cp_proc.crashed() {
            out.push(format!("control plane: {c}"));
        }
        for d in &mut self.daemons {
            if let Some(c) = d.proc.crashed() {
                out.push(format!("{}: {c}", d.id));
            }
        }
        for p in &mut self.extra {
            if let Some(c) = p.crashed() {
                out.push(format!("workload: {c}"));
            }
        }
        out
    }

    /// A python3 http.server on `host:port` serving a marker file; returns the marker.
    pub fn http_server(&mut self, host: &Host, port: u16) -> String {
        let www = self.dir.path().join(format!("www-{}-{port}", host.name));
        std::fs::create_dir_all(&www).unwrap();
        let marker = format!("RIPTIDES-CHAOS-{}-{port}", host.name);
        std::fs::write(www.join("marker.txt"), &marker).unwrap();
        let log = self.dir.path().join(format!("http-{}-{port}.log", host.name));
        let g = host
            .command("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", "0.0.0.0", "--directory"])
            .arg(&www)
            .output_to(OutputTo::File(log.clone()))
            .spawn()
            .unwrap();
        self.extra.push(Proc { guard: Some(g), log, expected_down: false });
        wait_until(&format!("a listener on {}:{port}", host.name), Duration::from_secs(15), || {
            (!sh(host, &format!("ss -Hltn 'sport = :{port}'")).stdout.is_empty()).then_some(())
        });
        marker
    }

    pub fn curl(&self, from: &Host, url: &str) -> std::process::Output {
        sh(from, &format!("curl -s --max-time 8 {url}"))
    }

    pub fn dump_logs(&self) -> String {
        let mut s = format!("--- control plane ---\n{}\n", tail(&self.cp_proc.log(), 40));
        for d in &self.daemons {
            let _ = write!(s, "--- {} ---\n{}\n", d.id, tail(&d.proc.log(), 40));
        }
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Userspace daemons remove their nftables table on SIGTERM; the namespaces go anyway.
        for d in &mut self.daemons {
            if let Some(g) = d.proc.guard.as_mut() {
                let _ = g.signal(Signal::Term);
            }
        }
        for d in &mut self.daemons {
            if let Some(g) = d.proc.guard.as_mut() {
                let _ = g.wait_timeout(Duration::from_secs(3));
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.dump_logs());
        }
    }
}

pub fn name_of(o: &Value) -> String {
    o["metadata"]["name"].as_str().unwrap_or_default().to_owned()
}

pub fn rv_of(o: &Value) -> u64 {
    match &o["metadata"]["resourceVersion"] {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// Spread of a set of instants: (min, max, max - min).
pub fn spread(times: &[Duration]) -> (Duration, Duration, Duration) {
    let min = times.iter().min().copied().unwrap_or_default();
    let max = times.iter().max().copied().unwrap_or_default();
    (min, max, max - min)
}

// ---------------------------------------------------------------------------------------------
// Log timestamps (tracing's RFC 3339 UTC, e.g. `2025-01-02T03:04:05.123456Z`)

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds of a log line's leading timestamp.
pub fn line_time(line: &str) -> Option<f64> {
    let line = strip_ansi(line);
    let ts = line.split_whitespace().next()?;
    let ts = ts.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, mo, da) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, mi) = (t.next()?.parse::<i64>().ok()?, t.next()?.parse::<i64>().ok()?);
    let s: f64 = t.next()?.parse().ok()?;
    Some((days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60) as f64 + s)
}

/// Unix seconds of every line containing `needle` after byte `from` of `log`.
pub fn times_of(log: &str, from: usize, needle: &str) -> Vec<f64> {
    log.get(from..).unwrap_or_default().lines().filter(|l| l.contains(needle)).filter_map(line_time).collect()
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// What must not change while the control plane is away: identities and applied policy.
pub fn cached_state(v: &Value) -> Value {
    serde_json::json!({ "identities": v["identities"], "policy": v["policy"], "daemonID": v["daemonID"] })
}
