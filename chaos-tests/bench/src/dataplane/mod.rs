//! The dataplane benchmark (issue 11, "Dataplane"): the userspace dataplane between two
//! daemons in namespaces, against direct TCP and a stunnel4 pair measured in the same run.
//!
//! The orchestrator (`run`) builds the topology ([`fixture`]) and drives the load generator,
//! which is this same binary re-executed inside node-a's namespace under the name
//! `rtb-client` (the process name the benchmark policy selects); the sink/echo server is the
//! binary re-executed on node-b as `rtb-server` ([`load`]).

pub mod fixture;
pub mod load;
pub mod report;

use riptides_chaos_tests::product::strip_ansi;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use riptides_chaos_tests::OutputTo;

use fixture::*;
use load::{Job, JobResult};
use report::{Fig, Measurements, Target};

/// Dataplane benchmark: the userspace dataplane against direct TCP and stunnel4, in the same
/// run and topology. Needs root (network namespaces), stunnel4, nft, curl, ss.
#[derive(Debug, Parser)]
#[command(name = "riptides-bench-dataplane")]
pub struct Args {
    /// Short runs (one of each, N=200 idle connections); finishes in well under a minute.
    #[arg(long)]
    quick: bool,
    /// Runs of each figure [default: 5, or 1 with --quick].
    #[arg(long)]
    runs: Option<usize>,
    /// Also write the Markdown report to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Directory with riptides-controlplane, riptides-daemon and riptides [default: next to
    /// this executable].
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Idle connections for the memory figure [default: 10000, or 200 with --quick].
    #[arg(long)]
    idle_conns: Option<usize>,
    /// Idle connections for stunnel4, which runs a thread per connection on each side
    /// [default: the smaller of --idle-conns and 2500, to stay clear of pid_max/threads-max
    /// on a shared machine].
    #[arg(long)]
    stunnel_idle_conns: Option<usize>,
    /// Seconds per throughput and connection-rate measurement [default: 5, or 1 with --quick].
    #[arg(long)]
    secs: Option<f64>,
    /// Run only these groups of figures (comma-separated: idle, bulk, latency, connrate);
    /// for profiling one of them. The table then shows "—" for the others.
    #[arg(long, value_delimiter = ',', value_name = "GROUPS")]
    only: Vec<String>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// (internal) the load generator, run inside node-a's namespace.
    #[command(name = "__client", hide = true)]
    Client { job: String },
    /// (internal) the sink/echo server, run inside node-b's namespace.
    #[command(name = "__server", hide = true)]
    Server {
        #[arg(long, value_delimiter = ',')]
        ports: Vec<u16>,
    },
}

pub fn main() -> Result<()> {
    let args = Args::parse();
    match &args.cmd {
        Some(Cmd::Client { job }) => load::client_main(job),
        Some(Cmd::Server { ports }) => load::server_main(ports),
        None => run(&args),
    }
}

struct Plan {
    runs: usize,
    secs: f64,
    idle_conns: usize,
    stunnel_idle_conns: usize,
    lat_count: usize,
    lat_warmup: usize,
    concurrency: usize,
}

fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    let idle_conns = args.idle_conns.unwrap_or(if args.quick { 200 } else { 10_000 });
    let plan = Plan {
        runs: args.runs.unwrap_or(if args.quick { 1 } else { 5 }).max(1),
        secs: args.secs.unwrap_or(if args.quick { 1.0 } else { 5.0 }),
        idle_conns,
        stunnel_idle_conns: args.stunnel_idle_conns.unwrap_or(idle_conns.min(2500)),
        lat_count: if args.quick { 1000 } else { 20_000 },
        lat_warmup: if args.quick { 100 } else { 1000 },
        concurrency: 8,
    };
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?.parent().context("executable directory")?.to_path_buf(),
    };
    // Every process started from here inherits this (10,000 idle connections need 2-3 fds
    // each in the daemons and stunnel).
    let nofile = raise_nofile();

    eprintln!("setting up the control plane, two daemons, the workloads and stunnel4 ...");
    let mut f = Fixture::start(&bin_dir)?;
    f.start_server()?;
    f.start_stunnel()?;
    let client_exe = f.workload_exe(CLIENT_NAME)?;
    let bench = Bench { f: &f, client_exe, b: f.b.addr() };

    // The riptides path works (capture rules follow the identities by a moment) and really is
    // mutual TLS through both daemons.
    let inbound_before =
        metric(&f.daemon_metrics(&f.b), "riptides_daemon_dataplane_connections_total{direction=\"inbound\"}");
    wait_until("the riptides path to carry a round trip", Duration::from_secs(30), || {
        bench.job(&Job::Latency { addr: bench.addr(Target::Riptides), size: 1, count: 10, warmup: 0 }, 20).ok()
    })?;
    let inbound_after =
        metric(&f.daemon_metrics(&f.b), "riptides_daemon_dataplane_connections_total{direction=\"inbound\"}");
    if inbound_after <= inbound_before {
        bail!(
            "node-b's daemon counted no inbound connection: the benchmark traffic is not going through the dataplane"
        );
    }
    let kx = strip_ansi(&f.daemons[0].log())
        .lines()
        .rev()
        .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("kx=")).map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    for t in [Target::Direct, Target::Stunnel, Target::StunnelResume] {
        bench
            .job(&Job::Latency { addr: bench.addr(t), size: 1, count: 10, warmup: 0 }, 20)
            .with_context(|| format!("{t:?} path"))?;
    }
    eprintln!(
        "setup done in {:.1}s; riptides key exchange: {kx}; daemon pids {:?}, stunnel4 pids {:?}",
        started.elapsed().as_secs_f64(),
        f.daemon_pids(),
        f.stunnel_pids()
    );

    let mut m = Measurements::default();
    let mut notes = Vec::new();
    let want = |g: &str| args.only.is_empty() || args.only.iter().any(|o| o == g);
    for run in 1..=plan.runs {
        eprintln!("run {run}/{}", plan.runs);
        // Idle memory first, on processes that have not yet grown their heaps.
        for t in [Target::Riptides, Target::Stunnel].into_iter().filter(|_| want("idle")) {
            let n = if t == Target::Stunnel { plan.stunnel_idle_conns } else { plan.idle_conns };
            let (kib, established, r) = bench.idle(t, n)?;
            eprintln!("  idle {t:?}: {established}/{n} established, {kib:.1} KiB/conn");
            if established < n as u64 {
                notes.push(format!(
                    "run {run}: {t:?} held only {established} of {n} idle connections (first error: {})",
                    r.first_error.as_deref().unwrap_or("none")
                ));
            }
            m.push(Fig::IdleMem, t, kib);
            m.push(Fig::IdleHeld, t, established as f64);
        }
        // Bulk, with the CPU time of the two daemons (or the two stunnels) per GB moved.
        let mut cpu = BTreeMap::<Target, (f64, f64)>::new();
        for (fig, conns) in [(Fig::Bulk1, 1), (Fig::Bulk8, 8)].into_iter().filter(|_| want("bulk")) {
            for t in [Target::Riptides, Target::Direct, Target::Stunnel] {
                let pids = bench.pids(t);
                let c0 = cpu_secs(&pids);
                let r = bench.job(&Job::Bulk { addr: bench.addr(t), conns, secs: plan.secs }, plan.secs as u64 + 90)?;
                let c1 = cpu_secs(&pids);
                let gbit = r.bytes as f64 * 8.0 / r.secs / 1e9;
                eprintln!("  {fig:?} {t:?}: {gbit:.2} Gbit/s");
                m.push(fig, t, gbit);
                let e = cpu.entry(t).or_default();
                e.0 += c1 - c0;
                e.1 += r.bytes as f64 / 1e9;
            }
        }
        for (t, (secs, gb)) in cpu {
            if t != Target::Direct {
                m.push(Fig::CpuPerGb, t, secs / gb);
            }
        }
        // Request/response latency; riptides and stunnel are reported as added to direct.
        for (p50, p99, size) in [(Fig::Lat1P50, Fig::Lat1P99, 1), (Fig::Lat1kP50, Fig::Lat1kP99, 1024)]
            .into_iter()
            .filter(|_| want("latency"))
        {
            let mut by = BTreeMap::new();
            for t in [Target::Direct, Target::Riptides, Target::Stunnel] {
                let r = bench.job(
                    &Job::Latency { addr: bench.addr(t), size, count: plan.lat_count, warmup: plan.lat_warmup },
                    180,
                )?;
                eprintln!("  latency {size} B {t:?}: p50 {:.1} µs, p99 {:.1} µs", r.p50_us, r.p99_us);
                by.insert(t, r);
            }
            let d = by[&Target::Direct].clone();
            m.push(p50, Target::Direct, d.p50_us);
            m.push(p99, Target::Direct, d.p99_us);
            for t in [Target::Riptides, Target::Stunnel] {
                m.push(p50, t, by[&t].p50_us - d.p50_us);
                m.push(p99, t, by[&t].p99_us - d.p99_us);
            }
        }
        // New connections per second, each a full handshake (stunnel: also with resumption).
        for t in [Target::Riptides, Target::Direct, Target::Stunnel, Target::StunnelResume]
            .into_iter()
            .filter(|_| want("connrate"))
        {
            let r = bench.job(
                &Job::ConnRate { addr: bench.addr(t), concurrency: plan.concurrency, secs: plan.secs },
                plan.secs as u64 + 90,
            )?;
            let rate = r.count as f64 / r.secs;
            eprintln!("  connections/s {t:?}: {rate:.0} ({} failed)", r.failures);
            if r.failures > 0 {
                notes.push(format!(
                    "run {run}: {t:?} connection rate: {} of {} failed (first: {})",
                    r.failures,
                    r.count + r.failures,
                    r.first_error.as_deref().unwrap_or("?")
                ));
            }
            match t {
                Target::Riptides => m.push(Fig::ConnMlkem, t, rate),
                // stunnel4's OpenSSL 3.0 has no ML-KEM: its full handshake is X25519, the
                // baseline of both rows. Direct TCP has no handshake to choose a group for.
                Target::Direct => {
                    for fig in [Fig::ConnMlkem, Fig::ConnX25519, Fig::ConnResume] {
                        m.push(fig, t, rate);
                    }
                }
                Target::Stunnel => {
                    m.push(Fig::ConnMlkem, t, rate);
                    m.push(Fig::ConnX25519, t, rate);
                }
                Target::StunnelResume => m.push(Fig::ConnResume, Target::Stunnel, rate),
            }
        }
    }
    let elapsed = started.elapsed();
    let ctx = report::Context {
        quick: args.quick,
        runs: plan.runs,
        secs: plan.secs,
        idle_conns: plan.idle_conns,
        stunnel_idle_conns: plan.stunnel_idle_conns,
        nofile,
        lat_count: plan.lat_count,
        concurrency: plan.concurrency,
        kx,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        elapsed,
        notes,
    };
    let md = report::render(&m, &ctx);
    print!("{md}");
    if let Some(out) = &args.out {
        std::fs::write(out, &md).with_context(|| format!("writing {}", out.display()))?;
    }
    drop(f);
    Ok(())
}

struct Bench<'a> {
    f: &'a Fixture,
    client_exe: PathBuf,
    b: Ipv4Addr,
}

impl Bench<'_> {
    fn addr(&self, t: Target) -> SocketAddr {
        match t {
            Target::Riptides => (self.b, PORT_RIPTIDES).into(),
            Target::Direct => (self.b, PORT_DIRECT).into(),
            Target::Stunnel => (Ipv4Addr::LOCALHOST, PORT_STUNNEL_LOCAL).into(),
            Target::StunnelResume => (Ipv4Addr::LOCALHOST, PORT_STUNNEL_RESUME_LOCAL).into(),
        }
    }

    /// The processes a target's cost is charged to.
    fn pids(&self, t: Target) -> Vec<u32> {
        match t {
            Target::Riptides => self.f.daemon_pids(),
            Target::Direct => Vec::new(),
            Target::Stunnel | Target::StunnelResume => self.f.stunnel_pids(),
        }
    }

    /// Runs a job in the load generator on node-a and returns its result.
    fn job(&self, job: &Job, timeout_secs: u64) -> Result<JobResult> {
        let out = self
            .f
            .a
            .command(&self.client_exe)
            .arg("__client")
            .arg(serde_json::to_string(job)?)
            .timeout(Duration::from_secs(timeout_secs))
            .output()
            .with_context(|| format!("load generator job {job:?}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line).with_context(|| format!("load generator output {stdout:?}"))
    }

    /// RSS growth of the target's processes per idle connection (KiB), with `n` connections
    /// opened (each carried one echo, so it is established end to end) and held.
    fn idle(&self, t: Target, n: usize) -> Result<(f64, u64, JobResult)> {
        let pids = self.pids(t);
        let fds0: usize = pids.iter().map(|p| fd_count(*p)).sum();
        let rss0 = rss_kib(&pids);
        let job = Job::Idle { addr: self.addr(t), n, parallel: 8 };
        let guard = self
            .f
            .a
            .command(&self.client_exe)
            .arg("__client")
            .arg(serde_json::to_string(&job)?)
            .output_to(OutputTo::TempLog)
            .spawn()?;
        let r: JobResult = wait_until("the idle connections", Duration::from_secs(120 + n as u64 / 20), || {
            guard.log().lines().find_map(|l| l.strip_prefix("READY ")).and_then(|j| serde_json::from_str(j).ok())
        })?;
        // Let anything deferred (allocations after the first echo) settle.
        std::thread::sleep(Duration::from_secs(1));
        let rss1 = rss_kib(&pids);
        drop(guard);
        // Wait until the connections are gone from the target's processes.
        let _ = wait_until("idle connections to close", Duration::from_secs(60), || {
            (pids.iter().map(|p| fd_count(*p)).sum::<usize>() <= fds0 + 16).then_some(())
        });
        if r.count == 0 {
            bail!("{t:?}: no idle connection could be established: {:?}", r.first_error);
        }
        Ok(((rss1 - rss0) / r.count as f64, r.count, r))
    }
}

/// Raises the soft open-files limit to the hard one (inherited by every process started from
/// here: idle connections need 1-2 fds each in the daemons and stunnel4). Returns the limit.
fn raise_nofile() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let (soft, hard) = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| {
            let v: Vec<&str> = l.split_whitespace().collect();
            Some((v.get(3)?.parse::<u64>().ok()?, v.get(4)?.parse::<u64>().ok()?))
        })
        .unwrap_or((1024, 1024));
    if soft < hard {
        let pid = std::process::id().to_string();
        let lim = format!("--nofile={hard}:{hard}");
        match std::process::Command::new("prlimit").args(["--pid", &pid, &lim]).status() {
            Ok(s) if s.success() => return hard,
            other => eprintln!("warning: could not raise the open-files limit with prlimit: {other:?}"),
        }
    }
    soft
}

fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of `pids`, in seconds.
pub fn cpu_secs(pids: &[u32]) -> f64 {
    let tck = clk_tck();
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .map(|s| {
            // Fields after the command name (which may contain spaces) start at field 3.
            let rest = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ut: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let st: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            (ut + st) / tck
        })
        .sum()
}

/// Sum of VmRSS of `pids`, KiB.
pub fn rss_kib(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .sum()
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}
