//! `riptides-bench-controlplane`: the control-plane figures of issue 11.
//!
//! The control plane runs as the real `riptides-controlplane` binary in its own process (its
//! peak RSS is VmHWM of that process alone); simulated daemons ([`fleet`]) in this process
//! speak the real protocol to it over QUIC. One *session* per fleet size and run:
//!
//! 1. a fresh data dir with a `default` Verifier (daemon group `bench-fleet`) and N join tokens
//!    ([`prep`]), then the binary is started on fixed loopback ports;
//! 2. **attestation storm**: all N daemons start at once; time until every one holds an SVID
//!    and its policy snapshot; CP VmHWM; daemons that gave up, and retried errors by kind;
//! 3. **policy propagation**: one create of a WorkloadIdentity scoped to `bench-fleet` through
//!    the API client; per daemon, the time from the start of that call until its watch
//!    delivers a revision at least the one the API returned (p50/p99/max);
//! 4. **CSR signing**: workload CSRs for that identity from the attested daemons over their
//!    mTLS connections, 256 in flight; CSRs/s divided by `nproc`, and per CP CPU-second;
//! 5. **reconnect storm**: SIGTERM, start the binary again on the same dir and ports; time
//!    until every daemon has reconnected with mTLS and its resumed watch delivered its first
//!    update (snapshot or delta, counted); CP VmHWM of the new process.
//!
//! The load generator shares the machine's cores with the control plane, as issue 11 asks
//! (one machine); its own CPU use is part of every figure.

mod cpproc;
mod fleet;
mod ha;
mod prep;
mod report;
mod sys;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures_util::{stream, StreamExt};
use riptides_wire::client::ApiClient;
use riptides_wire::proto::messages::{Request, Response, WorkloadCsr};
use riptides_wire::proto::{read_frame_timeout, write_frame, FrameConfig};
use riptides_wire::resource;
use serde_json::json;

use fleet::{Event, First, Fleet};

pub const TRUST_DOMAIN: &str = "example.com";
pub const NS: &str = "riptides-system";
pub const GROUP: &str = "bench-fleet";

/// Control-plane benchmark: attestation storm, CSR signing, policy propagation and reconnect
/// storm against the real `riptides-controlplane` binary, with simulated daemons.
#[derive(Debug, Clone, Parser)]
#[command(name = "riptides-bench-controlplane")]
pub struct Args {
    /// CI mode: one session of 200 daemons (well under a minute).
    #[arg(long)]
    pub quick: bool,
    /// Fleet sizes (default: 1000,5000,10000; quick: 200).
    #[arg(long, value_delimiter = ',')]
    pub sizes: Vec<usize>,
    /// Runs for sizes up to 1,000 daemons (default 3; quick 1). Larger sizes run once.
    #[arg(long)]
    pub small_runs: Option<usize>,
    /// Loopback source addresses (127.0.0.2 ...) the daemons are spread over, one QUIC
    /// client endpoint (UDP socket) each.
    #[arg(long, default_value_t = 64)]
    pub sources: usize,
    /// Workload CSRs per session (default: 5,000; quick: 500).
    #[arg(long)]
    pub csrs: Option<usize>,
    /// CSR requests in flight at once.
    #[arg(long, default_value_t = 256)]
    pub csr_concurrency: usize,
    /// Give up on a storm (attestation or reconnect) after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub storm_timeout_secs: u64,
    /// The control-plane binary (default: riptides-controlplane next to this executable).
    #[arg(long)]
    pub cp_bin: Option<PathBuf>,
    /// RUST_LOG for the control plane (its log goes to a file in the work dir).
    #[arg(long, default_value = "info")]
    pub cp_log: String,
    /// Also write the Markdown table here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Keep the work dirs (data dirs and CP logs) and print where they are.
    #[arg(long)]
    pub keep: bool,
    /// Instead of the sessions above: policy propagation with one replica (redb) beside three
    /// `--store etcd` replicas on a three-member loopback etcd cluster (daemons spread over the
    /// replicas, writes through replica 0). Fleet size: the first of `--sizes` (default 300);
    /// runs: `--small-runs` (default 1).
    #[arg(long)]
    pub ha_propagation: bool,
    /// Sequential applies per setup and run in `--ha-propagation`.
    #[arg(long, default_value_t = 10)]
    pub ha_applies: usize,
    /// The etcd server binary for `--ha-propagation` (Debian: etcd-server).
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: String,
}

impl Args {
    fn plan(&self) -> Vec<(usize, usize)> {
        let sizes = if !self.sizes.is_empty() {
            self.sizes.clone()
        } else if self.quick {
            vec![200]
        } else {
            vec![1000, 5000, 10_000]
        };
        let small = self.small_runs.unwrap_or(if self.quick { 1 } else { 3 });
        sizes.into_iter().map(|n| (n, if n <= 1000 { small.max(1) } else { 1 })).collect()
    }

    fn csr_count(&self) -> usize {
        self.csrs.unwrap_or(if self.quick { 500 } else { 5000 })
    }
}

pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match sys::raise_nofile() {
        Ok((before, after)) => eprintln!("RLIMIT_NOFILE soft limit: {before} -> {after}"),
        Err(e) => eprintln!("warning: could not raise RLIMIT_NOFILE: {e}"),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let bin = cpproc::locate(args.cp_bin.as_deref())?;
    eprintln!("control plane binary: {}", bin.display());
    if args.ha_propagation {
        let table = ha::run(&args, &bin).await?;
        println!("{table}");
        if let Some(out) = &args.out {
            std::fs::write(out, &table).with_context(|| format!("writing {}", out.display()))?;
        }
        return Ok(());
    }
    let started = Instant::now();
    let mut sessions = Vec::new();
    for (n, runs) in args.plan() {
        for run in 1..=runs {
            eprintln!("== {n} daemons, run {run}/{runs}");
            let s = session(&args, &bin, n).await;
            eprintln!("{}", s.summary());
            sessions.push(s);
        }
    }
    let machine = report::Machine::probe();
    let table = report::render(&args, &sessions, &machine, started.elapsed(), sys::self_hwm_kib());
    println!("{table}");
    if let Some(out) = &args.out {
        std::fs::write(out, &table).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

#[derive(Debug, Default)]
pub struct Storm {
    /// Until the last daemon was ready (None: not all were, within the timeout).
    pub all: Option<Duration>,
    /// Until every daemon was either ready or had given up.
    pub settled: Option<Duration>,
    /// Until half of them were.
    pub half: Option<Duration>,
    pub ready: usize,
    pub gave_up: BTreeMap<String, usize>,
    pub retried: BTreeMap<String, u64>,
    pub cp_hwm_kib: u64,
}

#[derive(Debug, Default)]
pub struct Propagation {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub received: usize,
    pub expected: usize,
    pub apply_rtt: Duration,
}

#[derive(Debug, Default)]
pub struct Csr {
    pub ok: usize,
    pub errors: BTreeMap<String, usize>,
    pub elapsed: Duration,
    pub cp_cpu_secs: f64,
}

#[derive(Debug, Default)]
pub struct Reconnect {
    pub shutdown: Duration,
    pub startup: Duration,
    /// From the new process's listening line to the last daemon resumed.
    pub from_listen: Option<Duration>,
    /// From SIGTERM to the last daemon resumed.
    pub from_term: Option<Duration>,
    pub expected: usize,
    pub resumed: usize,
    pub snapshots: usize,
    pub deltas: usize,
    pub retried: BTreeMap<String, u64>,
    pub cp_hwm_kib: u64,
}

#[derive(Debug, Default)]
pub struct Session {
    pub n: usize,
    pub prep: Duration,
    pub storm: Option<Storm>,
    pub propagation: Option<Propagation>,
    pub csr: Option<Csr>,
    pub reconnect: Option<Reconnect>,
    /// CP VmHWM over storm, propagation and CSR signing (before the restart).
    pub cp_hwm_kib_before_restart: u64,
    pub errors: Vec<String>,
    pub workdir: Option<PathBuf>,
}

impl Session {
    fn summary(&self) -> String {
        let mut s = format!("   setup {:.1} s", self.prep.as_secs_f64());
        if let Some(st) = &self.storm {
            s += &format!(
                "; storm: {}/{} ready, all in {}, CP HWM {} MiB, gave up {:?}, retried {:?}",
                st.ready,
                self.n,
                st.all.map(|d| format!("{:.2} s", d.as_secs_f64())).unwrap_or("-".into()),
                st.cp_hwm_kib / 1024,
                st.gave_up,
                st.retried
            );
        }
        if let Some(p) = &self.propagation {
            s += &format!(
                "; propagation p50 {:?} p99 {:?} max {:?} ({}/{})",
                p.p50, p.p99, p.max, p.received, p.expected
            );
        }
        if let Some(c) = &self.csr {
            s += &format!(
                "; CSRs {} in {:.2} s, CP CPU {:.2} s, errors {:?}",
                c.ok,
                c.elapsed.as_secs_f64(),
                c.cp_cpu_secs,
                c.errors
            );
        }
        if let Some(r) = &self.reconnect {
            s +=
                &format!(
                "; reconnect {}/{} (snap {}, delta {}) from listen {:?} from SIGTERM {:?}, CP HWM {} MiB, retried {:?}",
                r.resumed, r.expected, r.snapshots, r.deltas, r.from_listen, r.from_term, r.cp_hwm_kib / 1024, r.retried
            );
        }
        for e in &self.errors {
            s += &format!("\n   ERROR: {e}");
        }
        if let Some(w) = &self.workdir {
            s += &format!("\n   work dir kept: {}", w.display());
        }
        s
    }
}

fn diff(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn session(args: &Args, bin: &std::path::Path, n: usize) -> Session {
    let mut s = Session { n, ..Default::default() };
    let work = match tempfile::Builder::new().prefix("riptides-bench-cp-").tempdir() {
        Ok(w) => w,
        Err(e) => {
            s.errors.push(format!("work dir: {e}"));
            return s;
        }
    };
    if let Err(e) = session_inner(args, bin, n, work.path(), &mut s).await {
        s.errors.push(format!("{e:#}"));
    }
    if args.keep || !s.errors.is_empty() {
        s.workdir = Some(work.keep());
    }
    s
}

async fn session_inner(
    args: &Args,
    bin: &std::path::Path,
    n: usize,
    work: &std::path::Path,
    s: &mut Session,
) -> anyhow::Result<()> {
    let data = work.join("data");
    let prepared = prep::prepare(&data, n).await?;
    s.prep = prepared.took;
    let ports = cpproc::Ports::pick()?;
    let spawn = |log: PathBuf| {
        let (bin, data, rust_log) = (bin.to_owned(), data.clone(), args.cp_log.clone());
        async move {
            tokio::task::spawn_blocking(move || cpproc::CpProcess::spawn(&bin, &data, &ports, &log, &rust_log))
                .await
                .context("spawn task")?
        }
    };
    let mut cp = spawn(work.join("cp-1.log")).await?;
    let api = ApiClient::from_kubeconfig_file(data.join("admin.kubeconfig"))
        .map_err(|e| anyhow::anyhow!("admin kubeconfig: {e}"))?;
    let clients = fleet::bind_clients(args.sources)?;
    let (mut fleet, mut rx) = Fleet::new(clients, ports.quic, cp.pin)?;
    let timeout = Duration::from_secs(args.storm_timeout_secs);

    // 1. Attestation storm.
    let t0 = Instant::now();
    fleet.launch(&prepared.tokens);
    let mut storm = Storm::default();
    let mut ready_at = Vec::with_capacity(n);
    let mut ready_flags = vec![false; n];
    let mut gave_up = 0usize;
    let mut last_event = t0;
    let deadline = tokio::time::Instant::now() + timeout;
    while storm.ready + gave_up < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Event::Ready { idx, at, first, .. })) => {
                if !ready_flags[idx] {
                    ready_flags[idx] = true;
                    storm.ready += 1;
                    ready_at.push(at.duration_since(t0));
                    last_event = last_event.max(at);
                    if first != First::Snapshot {
                        s.errors.push(format!("daemon {idx}: first policy update was not a snapshot"));
                    }
                }
            }
            Ok(Some(Event::Failed { kind })) => {
                gave_up += 1;
                last_event = last_event.max(Instant::now());
                *storm.gave_up.entry(kind).or_default() += 1;
            }
            Ok(Some(Event::Update { .. })) => {}
            Ok(None) => break,
            Err(_) => break,
        }
        if cp.exited() {
            anyhow::bail!("the control plane exited during the attestation storm; see {}", cp.log.display());
        }
    }
    ready_at.sort();
    storm.all = (storm.ready == n).then(|| *ready_at.last().expect("n > 0"));
    storm.settled = (storm.ready + gave_up == n).then(|| last_event.duration_since(t0));
    storm.half = ready_at.get(n.div_ceil(2).saturating_sub(1)).copied();
    storm.retried = fleet.ctx.retried_snapshot();
    storm.cp_hwm_kib = cp.stats().hwm_kib;
    let ready_count = storm.ready;
    if storm.ready < n {
        if storm.settled.is_none() || storm.ready == 0 {
            let st = format!(
                "storm incomplete: {}/{n} daemons ready, {gave_up} gave up, the rest still retrying after {timeout:?}",
                storm.ready
            );
            s.storm = Some(storm);
            anyhow::bail!(st);
        }
        // Every daemon is either ready or has given up for good: measure the rest on the
        // ready ones.
        s.errors.push(format!(
            "storm: {gave_up}/{n} daemons gave up ({:?}); the later figures are over the {} that are ready",
            storm.gave_up, storm.ready
        ));
    }
    s.storm = Some(storm);

    // 2. Policy propagation: one apply scoped to the group every daemon is in.
    let wi = json!({
        "apiVersion": "core.riptides.io/v1alpha1", "kind": "WorkloadIdentity",
        "metadata": {"name": "bench-frontend", "namespace": NS},
        "spec": {
            "workloadID": "frontend",
            "scope": {"daemonGroup": {"id": GROUP}},
            "selectors": [{"process:name": "frontend"}],
            "connection": {"tls": {"mode": "MUTUAL"}},
        },
    });
    while rx.try_recv().is_ok() {}
    let t_apply = Instant::now();
    let created = api
        .create(resource::by_name("workloadidentities").expect("known kind"), NS, &wi)
        .await
        .map_err(|e| anyhow::anyhow!("applying the WorkloadIdentity: {e}"))?;
    let apply_rtt = t_apply.elapsed();
    let revision: u64 = created["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .context("the created WorkloadIdentity has no numeric resourceVersion")?;
    let mut got = vec![false; n];
    let mut lat = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while lat.len() < ready_count {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Event::Update { idx, at, revision: r } | Event::Ready { idx, at, revision: r, .. }))
                if r >= revision =>
            {
                if !got[idx] {
                    got[idx] = true;
                    lat.push(at.saturating_duration_since(t_apply));
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    lat.sort();
    let prop = Propagation {
        p50: percentile(&lat, 50.0),
        p99: percentile(&lat, 99.0),
        max: lat.last().copied().unwrap_or_default(),
        received: lat.len(),
        expected: ready_count,
        apply_rtt,
    };
    let prop_complete = prop.received == prop.expected;
    s.propagation = Some(prop);
    if !prop_complete {
        s.errors.push(format!(
            "propagation: only {}/{ready_count} daemons received revision {revision} within 120 s",
            lat.len()
        ));
    }

    // 3. CSR signing from attested daemons.
    let conns: Vec<_> = fleet.slots.iter().filter_map(|sl| sl.conn.lock().expect("not poisoned").clone()).collect();
    anyhow::ensure!(!conns.is_empty(), "no daemon connection left for CSR signing");
    let workload = format!("spiffe://{TRUST_DOMAIN}/frontend");
    let csrs: Vec<Vec<u8>> = (0..64)
        .map(|_| -> anyhow::Result<Vec<u8>> {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let mut params = rcgen::CertificateParams::default();
            params.subject_alt_names = vec![rcgen::SanType::URI(workload.as_str().try_into()?)];
            Ok(params.serialize_request(&key)?.der().to_vec())
        })
        .collect::<anyhow::Result<_>>()?;
    let count = args.csr_count();
    let before = cp.stats();
    let t_csr = Instant::now();
    let outcomes: Vec<Result<(), String>> = stream::iter(0..count)
        .map(|i| {
            let conn = conns[i % conns.len()].clone();
            let csr_der = csrs[i % csrs.len()].clone();
            async move {
                let cfg = FrameConfig::default();
                let req = Request::SignWorkload(WorkloadCsr {
                    workload_id: "frontend".into(),
                    csr_der,
                    ttl_secs: Some(3600),
                });
                let mut st = conn.open_bi().await.map_err(|e| fleet::kind_of("open", &e))?;
                write_frame(&mut st.send, &req, &cfg).await.map_err(|e| fleet::kind_of("send", &e))?;
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut st.send).await;
                match read_frame_timeout::<Response, _>(&mut st.recv, &cfg, Duration::from_secs(30)).await {
                    Ok(Response::Svid(_)) => Ok(()),
                    Ok(Response::Error(e)) => Err(format!("refused: {}", e.code)),
                    Ok(other) => Err(format!("unexpected {}", other.kind())),
                    Err(e) => Err(fleet::kind_of("read", &e)),
                }
            }
        })
        .buffer_unordered(args.csr_concurrency.max(1))
        .collect()
        .await;
    let elapsed = t_csr.elapsed();
    let after = cp.stats();
    let mut csr = Csr { elapsed, cp_cpu_secs: after.cpu_secs - before.cpu_secs, ..Default::default() };
    for o in outcomes {
        match o {
            Ok(()) => csr.ok += 1,
            Err(k) => *csr.errors.entry(k).or_default() += 1,
        }
    }
    s.csr = Some(csr);
    s.cp_hwm_kib_before_restart = cp.stats().hwm_kib;

    // 4. Reconnect storm after a restart.
    let connected: HashSet<usize> = fleet
        .slots
        .iter()
        .enumerate()
        .filter(|(_, sl)| sl.conn.lock().expect("not poisoned").is_some())
        .map(|(i, _)| i)
        .collect();
    let retried_before = fleet.ctx.retried_snapshot();
    while rx.try_recv().is_ok() {}
    let t_term = Instant::now();
    let shutdown = cp.terminate(Duration::from_secs(60)).await?;
    let old_pin = cp.pin;
    drop(cp);
    let mut cp = spawn(work.join("cp-2.log")).await?;
    anyhow::ensure!(cp.pin == old_pin, "the restarted control plane has a different CA pin");
    let mut rc = Reconnect { shutdown, startup: cp.startup, expected: connected.len(), ..Default::default() };
    let mut done = vec![false; n];
    let mut last = None;
    let deadline = tokio::time::Instant::now() + timeout;
    while rc.resumed < rc.expected {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Event::Ready { idx, at, first, link, .. })) if link >= 2 && at >= t_term && !done[idx] => {
                done[idx] = true;
                if connected.contains(&idx) {
                    rc.resumed += 1;
                }
                match first {
                    First::Snapshot => rc.snapshots += 1,
                    First::Delta => rc.deltas += 1,
                }
                last = Some(at);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
        if cp.exited() {
            anyhow::bail!("the restarted control plane exited during the reconnect storm; see {}", cp.log.display());
        }
    }
    if rc.resumed == rc.expected {
        if let Some(l) = last {
            rc.from_listen = Some(l.saturating_duration_since(cp.ready_at));
            rc.from_term = Some(l.duration_since(t_term));
        }
    } else {
        s.errors.push(format!(
            "reconnect storm incomplete: {}/{} daemons resumed within {timeout:?}",
            rc.resumed, rc.expected
        ));
    }
    rc.retried = diff(&fleet.ctx.retried_snapshot(), &retried_before);
    rc.cp_hwm_kib = cp.stats().hwm_kib;
    s.reconnect = Some(rc);

    fleet.stop().await;
    drop(api);
    if let Err(e) = cp.terminate(Duration::from_secs(60)).await {
        s.errors.push(format!("final shutdown: {e:#}"));
    }
    Ok(())
}
