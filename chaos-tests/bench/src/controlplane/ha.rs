//! `--ha-propagation`: policy propagation with one replica (embedded redb store) beside three
//! `riptides-controlplane --store etcd` replicas on a three-member etcd cluster (issue 10), in
//! one process, one after the other, with the same fleet size and the same applies.
//!
//! In the three-replica setup the simulated daemons are spread over the replicas (daemon `i`
//! on replica `i % 3`) and every change is written through replica 0's API, so two thirds of
//! the daemons get it through another replica's store watch. Per apply, per daemon: the time
//! from the start of the API call until that daemon's watch delivers a revision at least the
//! one the API returned; the samples of all applies are pooled for p50/p99/max.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use riptides_wire::client::ApiClient;
use riptides_wire::resource;
use serde_json::json;

use super::fleet::{Event, Fleet};
use super::{cpproc, fleet, percentile, prep, Args, GROUP, NS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    Single,
    ThreeReplicas,
}

impl Setup {
    fn label(self) -> &'static str {
        match self {
            Setup::Single => "1 replica, redb",
            Setup::ThreeReplicas => "3 replicas, 3 etcd members, write on replica 0",
        }
    }
}

#[derive(Debug)]
pub struct HaRun {
    pub setup: Setup,
    pub n: usize,
    pub samples: Vec<Duration>,
    /// Samples of the daemons on the replica the writes went through (all, with one replica).
    pub on_written: Vec<Duration>,
    /// Samples of the daemons on the other replicas.
    pub on_others: Vec<Duration>,
    pub expected: usize,
    pub apply_calls: Vec<Duration>,
    /// Per apply: until the last daemon had it.
    pub per_apply_max: Vec<Duration>,
}

/// Three etcd members on loopback, killed on drop.
struct Etcd {
    children: Vec<Child>,
    endpoints: Vec<String>,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn start_etcd(bin: &str, dir: &Path) -> anyhow::Result<Etcd> {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| Ok((free_port()?, free_port()?))).collect::<anyhow::Result<_>>()?;
    let cluster: Vec<String> =
        ports.iter().enumerate().map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}")).collect();
    let mut etcd = Etcd { children: Vec::new(), endpoints: Vec::new() };
    for (i, (c, p)) in ports.iter().enumerate() {
        let log = std::fs::File::create(dir.join(format!("etcd{i}.log")))?;
        let client = format!("http://127.0.0.1:{c}");
        let peer = format!("http://127.0.0.1:{p}");
        let child = Command::new(bin)
            .arg("--name")
            .arg(format!("m{i}"))
            .arg("--data-dir")
            .arg(dir.join(format!("etcd{i}")))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &cluster.join(","), "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "riptides-bench", "--log-level", "warn", "--logger", "zap"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {bin} (Debian: apt-get install etcd-server)"))?;
        etcd.children.push(child);
        etcd.endpoints.push(client);
    }
    for ep in &etcd.endpoints {
        let mut config = riptides_cp::store::EtcdConfig::new(vec![ep.clone()]);
        config.request_timeout = Duration::from_secs(2);
        let client = riptides_cp::store::etcd::EtcdClient::new(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut ok = false;
        for _ in 0..600 {
            let status: Result<serde_json::Value, _> = client.read("/v3/maintenance/status", &json!({})).await;
            if status.is_ok_and(|s| s.get("leader").and_then(|l| l.as_str()).is_some_and(|l| l != "0")) {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::ensure!(ok, "etcd member {ep} has no leader after 30 s; logs in {}", dir.display());
    }
    Ok(etcd)
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut b).expect("system random generator");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub async fn measure(
    args: &Args,
    bin: &Path,
    setup: Setup,
    n: usize,
    applies: usize,
    work: &Path,
) -> anyhow::Result<HaRun> {
    let mut cps = Vec::new();
    let mut servers = Vec::new();
    let etcd;
    let data0 = work.join("data0");
    let prepared;
    let spawn = |i: usize, data: PathBuf, extra: Vec<String>, env: Vec<(String, String)>| {
        let (bin, rust_log, log) = (bin.to_owned(), args.cp_log.clone(), work.join(format!("cp{i}.log")));
        async move {
            let ports = cpproc::Ports::pick()?;
            tokio::task::spawn_blocking(move || {
                let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                cpproc::CpProcess::spawn_with(&bin, &data, &ports, &log, &rust_log, &extra, &env).map(|cp| (cp, ports))
            })
            .await
            .context("spawn task")?
        }
    };
    match setup {
        Setup::Single => {
            etcd = None;
            prepared = prep::prepare(&data0, n).await?;
            let (cp, ports) = spawn(0, data0.clone(), Vec::new(), Vec::new()).await?;
            servers.push(ports.quic);
            cps.push(cp);
        }
        Setup::ThreeReplicas => {
            let e = start_etcd(&args.etcd_bin, work).await?;
            let seal = random_hex(32);
            let endpoints = e.endpoints.clone();
            let key = std::sync::Arc::new(riptides_cp::ca::SealKey::parse(&seal).map_err(|e| anyhow::anyhow!("{e}"))?);
            // The setup control plane writes the Verifier and tokens into etcd and publishes
            // its CA sealed; replica 0 starts on its data dir, the others import the CA.
            prepared = prep::prepare_with(&data0, n, |c| {
                c.store = riptides_cp::config::StoreBackend::Etcd(riptides_cp::store::EtcdConfig::new(endpoints));
                c.ca_seal_key = Some(key);
            })
            .await?;
            for i in 0..3 {
                let data = if i == 0 { data0.clone() } else { work.join(format!("data{i}")) };
                let extra: Vec<String> = [
                    "--store",
                    "etcd",
                    "--etcd-endpoints",
                    &e.endpoints.join(","),
                    "--replica-name",
                    &format!("cp{i}"),
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                let env = vec![("RIPTIDES_CA_SEAL_KEY".to_owned(), seal.clone())];
                let (cp, ports) = spawn(i, data, extra, env).await?;
                anyhow::ensure!(i == 0 || cp.pin == cps[0].pin, "replica {i} has another CA pin");
                servers.push(ports.quic);
                cps.push(cp);
            }
            etcd = Some(e);
        }
    }
    let api = ApiClient::from_kubeconfig_file(data0.join("admin.kubeconfig"))
        .map_err(|e| anyhow::anyhow!("admin kubeconfig: {e}"))?;
    let clients = fleet::bind_clients(args.sources)?;
    let replicas = servers.len();
    let (mut fleet, mut rx) = Fleet::with_servers(clients, servers, cps[0].pin)?;
    fleet.launch(&prepared.tokens);
    let mut ready = vec![false; n];
    let mut ready_count = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.storm_timeout_secs);
    while ready_count < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Event::Ready { idx, .. })) if !ready[idx] => {
                ready[idx] = true;
                ready_count += 1;
            }
            Ok(Some(Event::Failed { kind })) => anyhow::bail!("a daemon gave up: {kind}"),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    anyhow::ensure!(ready_count == n, "only {ready_count}/{n} daemons ready");
    // Let the attestation storm's tail (status writes, retries) settle.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut run = HaRun {
        setup,
        n,
        samples: Vec::new(),
        on_written: Vec::new(),
        on_others: Vec::new(),
        expected: 0,
        apply_calls: Vec::new(),
        per_apply_max: Vec::new(),
    };
    for k in 0..applies {
        let wi = json!({
            "apiVersion": "core.riptides.io/v1alpha1", "kind": "WorkloadIdentity",
            "metadata": {"name": format!("bench-prop-{k}"), "namespace": NS},
            "spec": {
                "workloadID": format!("prop-{k}"),
                "scope": {"daemonGroup": {"id": GROUP}},
                "selectors": [{"process:name": format!("prop-{k}")}],
            },
        });
        while rx.try_recv().is_ok() {}
        let t = Instant::now();
        let created = api
            .create(resource::by_name("workloadidentities").expect("known kind"), NS, &wi)
            .await
            .map_err(|e| anyhow::anyhow!("applying WorkloadIdentity {k}: {e}"))?;
        run.apply_calls.push(t.elapsed());
        let revision: u64 = created["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .context("no numeric resourceVersion")?;
        let mut got = vec![false; n];
        let mut count = 0;
        let mut last = Duration::ZERO;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while count < n {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Event::Update { idx, at, revision: r } | Event::Ready { idx, at, revision: r, .. }))
                    if r >= revision && !got[idx] =>
                {
                    got[idx] = true;
                    count += 1;
                    let d = at.saturating_duration_since(t);
                    last = last.max(d);
                    run.samples.push(d);
                    if idx % replicas == 0 {
                        run.on_written.push(d);
                    } else {
                        run.on_others.push(d);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        run.expected += n;
        run.per_apply_max.push(last);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    fleet.stop().await;
    drop(api);
    for cp in &mut cps {
        let _ = cp.terminate(Duration::from_secs(30)).await;
    }
    drop(etcd);
    Ok(run)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// `--ha-propagation`: both setups, `runs` times each (alternating), one table.
pub async fn run(args: &Args, bin: &Path) -> anyhow::Result<String> {
    let n = args.sizes.first().copied().unwrap_or(300);
    let runs = args.small_runs.unwrap_or(1).max(1);
    let applies = args.ha_applies.max(1);
    let started = Instant::now();
    let mut results: Vec<HaRun> = Vec::new();
    for r in 1..=runs {
        for setup in [Setup::Single, Setup::ThreeReplicas] {
            eprintln!("== {} daemons, {}, run {r}/{runs}", n, setup.label());
            let work = tempfile::Builder::new().prefix("riptides-bench-ha-").tempdir()?;
            let res = measure(args, bin, setup, n, applies, work.path()).await;
            // Kept (data dirs, etcd and control-plane logs) with `--keep` or on failure.
            let kept = (args.keep || res.is_err()).then(|| work.keep());
            if let (Some(dir), Ok(_)) = (&kept, &res) {
                eprintln!("   work dir kept: {}", dir.display());
            }
            match res {
                Ok(run) => {
                    let mut s = run.samples.clone();
                    s.sort();
                    eprintln!(
                        "   {}/{} samples, p50 {} p99 {} max {}",
                        s.len(),
                        run.expected,
                        ms(percentile(&s, 50.0)),
                        ms(percentile(&s, 99.0)),
                        ms(s.last().copied().unwrap_or_default())
                    );
                    results.push(run);
                }
                Err(e) => {
                    let kept = kept.unwrap_or_default();
                    anyhow::bail!("{}: {e:#} (work dir kept: {})", setup.label(), kept.display());
                }
            }
        }
    }
    let mut t = String::new();
    t += &format!(
        "Policy propagation, 1 vs 3 control-plane replicas: {n} simulated daemons, {applies} sequential applies \
         (a WorkloadIdentity scoped to the daemons' group, through replica 0's API) per setup and run, {runs} run(s), \
         samples = daemons x applies pooled; total {:.0} s.\n\n",
        started.elapsed().as_secs_f64()
    );
    t += "| setup | run | daemons | samples received/expected | p50 | p99 | max | slowest daemon per apply (median) | API apply call (median) | p50 / p99 on the written replica | p50 / p99 on the other replicas |\n";
    t += "|---|---|---|---|---|---|---|---|---|---|---|\n";
    let stats = |setup: Setup| {
        let mut all: Vec<Duration> =
            results.iter().filter(|r| r.setup == setup).flat_map(|r| r.samples.iter().copied()).collect();
        all.sort();
        (percentile(&all, 50.0), percentile(&all, 99.0), all.last().copied().unwrap_or_default())
    };
    for (i, r) in results.iter().enumerate() {
        let mut s = r.samples.clone();
        s.sort();
        let mut m = r.per_apply_max.clone();
        m.sort();
        let mut a = r.apply_calls.clone();
        a.sort();
        let mut w = r.on_written.clone();
        w.sort();
        let mut o = r.on_others.clone();
        o.sort();
        let pair = |v: &[Duration]| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                format!("{} / {}", ms(percentile(v, 50.0)), ms(percentile(v, 99.0)))
            }
        };
        t += &format!(
            "| {} | {} | {} | {}/{} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.setup.label(),
            i / 2 + 1,
            r.n,
            s.len(),
            r.expected,
            ms(percentile(&s, 50.0)),
            ms(percentile(&s, 99.0)),
            ms(s.last().copied().unwrap_or_default()),
            ms(percentile(&m, 50.0)),
            ms(percentile(&a, 50.0)),
            pair(&w),
            pair(&o),
        );
    }
    let (s50, s99, smax) = stats(Setup::Single);
    let (h50, h99, hmax) = stats(Setup::ThreeReplicas);
    let ratio = |h: Duration, s: Duration| {
        if s.is_zero() {
            "n/a".to_owned()
        } else {
            format!("{:.2}x", h.as_secs_f64() / s.as_secs_f64())
        }
    };
    t += &format!(
        "\nAll runs pooled: 1 replica p50 {} / p99 {} / max {}; 3 replicas p50 {} / p99 {} / max {}; \
         ratio 3 replicas / 1 replica: p50 {}, p99 {}, max {}.\n",
        ms(s50),
        ms(s99),
        ms(smax),
        ms(h50),
        ms(h99),
        ms(hmax),
        ratio(h50, s50),
        ratio(h99, s99),
        ratio(hmax, smax)
    );
    Ok(t)
}
