//! The Markdown table: figure | value | target | met?, with medians and min/max over runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::{Args, Session};

pub struct Machine {
    pub nproc: usize,
    pub mem_gib: f64,
    pub cpu: String,
    pub kernel: String,
}

impl Machine {
    pub fn probe() -> Self {
        let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let mem_kib: f64 = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines().find_map(|l| {
                    l.strip_prefix("MemTotal:").map(|r| r.trim().trim_end_matches("kB").trim().to_owned())
                })
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines().find_map(|l| {
                    l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned())
                })
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel =
            std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default();
        Machine { nproc, mem_gib: mem_kib / 1024.0 / 1024.0, cpu, kernel }
    }
}

/// "median (min–max, N runs)" or the single value with "1 run".
fn agg(values: &[f64], fmt: impl Fn(f64) -> String) -> String {
    if values.is_empty() {
        return "not measured".into();
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.len() == 1 {
        return format!("{} (1 run)", fmt(v[0]));
    }
    let med = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
    format!("{} (median of {}; min {}, max {})", fmt(med), v.len(), fmt(v[0]), fmt(v[v.len() - 1]))
}

fn secs(d: f64) -> String {
    format!("{d:.2} s")
}
fn ms(d: f64) -> String {
    format!("{:.0} ms", d * 1000.0)
}
fn mib(k: f64) -> String {
    format!("{:.0} MiB", k / 1024.0)
}

fn kinds<V: Copy + Into<u64>>(m: &BTreeMap<String, V>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    let mut v: Vec<(&String, u64)> = m.iter().map(|(k, c)| (k, (*c).into())).collect();
    v.sort_by_key(|x| std::cmp::Reverse(x.1));
    v.iter().map(|(k, c)| format!("{c} × {k}")).collect::<Vec<_>>().join("; ")
}

fn merge<V: Copy + Into<u64>>(maps: impl Iterator<Item = BTreeMap<String, V>>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for m in maps {
        for (k, v) in m {
            *out.entry(k).or_default() += v.into();
        }
    }
    out
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "**no**"
    }
}

pub fn render(args: &Args, sessions: &[Session], m: &Machine, total: Duration, loadgen_hwm_kib: u64) -> String {
    let mut sizes: Vec<usize> = sessions.iter().map(|s| s.n).collect();
    sizes.dedup();
    let mut rows: Vec<[String; 4]> = Vec::new();
    let mut row = |f: String, v: String, t: &str, met: &str| rows.push([f, v, t.to_owned(), met.to_owned()]);
    for &n in &sizes {
        let ss: Vec<&Session> = sessions.iter().filter(|s| s.n == n).collect();
        let runs = ss.len();
        let big = n >= 10_000;
        let nf = n.to_string();

        // Storm.
        let all: Vec<f64> = ss.iter().filter_map(|s| s.storm.as_ref()?.all).map(|d| d.as_secs_f64()).collect();
        let complete = all.len() == runs;
        let mut v = agg(&all, secs);
        if !complete {
            let worst = ss.iter().map(|s| s.storm.as_ref().map_or(0, |st| st.ready)).min().unwrap_or(0);
            let settled: Vec<f64> =
                ss.iter().filter_map(|s| s.storm.as_ref()?.settled).map(|d| d.as_secs_f64()).collect();
            v = format!(
                "INCOMPLETE: {} of {runs} runs did not get every daemon ready (fewest ready: {worst}/{n}; the rest gave up, see failures); \
                 every daemon ready or given up after {}; runs where all were ready: {v}",
                runs - all.len(),
                agg(&settled, secs)
            );
        }
        let half: Vec<f64> = ss.iter().filter_map(|s| s.storm.as_ref()?.half).map(|d| d.as_secs_f64()).collect();
        v += &format!("; half of them by {}", agg(&half, secs));
        row(
            format!("attestation storm, {nf} daemons: time until all hold an SVID and a policy snapshot"),
            v,
            if big { "all 10,000 attested and synced" } else { "— (target is at 10,000)" },
            if big { yes_no(complete) } else { "n/a" },
        );
        let hwm: Vec<f64> = ss.iter().filter_map(|s| s.storm.as_ref()).map(|st| st.cp_hwm_kib as f64).collect();
        let hwm_ok = hwm.iter().all(|k| *k < 1024.0 * 1024.0);
        row(
            format!("attestation storm, {nf} daemons: CP peak RSS (VmHWM)"),
            agg(&hwm, mib),
            if big { "< 1 GiB" } else { "— (target is at 10,000)" },
            // The target is RSS *with 10,000 synced*: an incomplete storm cannot meet it.
            if big { yes_no(hwm_ok && !hwm.is_empty() && complete) } else { "n/a" },
        );
        let gave_up = merge(
            ss.iter()
                .filter_map(|s| s.storm.as_ref())
                .map(|st| st.gave_up.iter().map(|(k, v)| (k.clone(), *v as u64)).collect::<BTreeMap<_, _>>()),
        );
        let failed: u64 = gave_up.values().sum();
        let not_ready: usize = ss.iter().filter_map(|s| s.storm.as_ref()).map(|st| n - st.ready).sum();
        let retried = merge(ss.iter().filter_map(|s| s.storm.as_ref()).map(|st| st.retried.clone()));
        let over = if runs > 1 { format!(" (total over {runs} runs)") } else { String::new() };
        row(
            format!("attestation storm, {nf} daemons: failures"),
            format!(
                "{failed} daemons gave up ({}), {not_ready} not ready at the end{over}; retried errors: {}",
                kinds(&gave_up),
                kinds(&retried)
            ),
            "0 failed attestations",
            yes_no(failed == 0 && not_ready == 0 && !ss.iter().any(|s| s.storm.is_none())),
        );

        // CSR signing.
        let per_core: Vec<f64> = ss
            .iter()
            .filter_map(|s| s.csr.as_ref())
            .filter(|c| c.ok > 0)
            .map(|c| c.ok as f64 / c.elapsed.as_secs_f64() / m.nproc as f64)
            .collect();
        let per_cpu: Vec<f64> = ss
            .iter()
            .filter_map(|s| s.csr.as_ref())
            .filter(|c| c.cp_cpu_secs > 0.0)
            .map(|c| c.ok as f64 / c.cp_cpu_secs)
            .collect();
        let csr_err = merge(
            ss.iter()
                .filter_map(|s| s.csr.as_ref())
                .map(|c| c.errors.iter().map(|(k, v)| (k.clone(), *v as u64)).collect::<BTreeMap<_, _>>()),
        );
        row(
            format!("CSR signing, {nf} attested daemons: workload CSRs/s per core"),
            format!(
                "{} (wall-clock rate ÷ {} cores, {} CSRs, {} in flight); per CP CPU-second: {}; errors: {}",
                agg(&per_core, |x| format!("{x:.0}/s")),
                m.nproc,
                args.csr_count(),
                args.csr_concurrency,
                agg(&per_cpu, |x| format!("{x:.0}")),
                kinds(&csr_err)
            ),
            "— (no target)",
            "n/a",
        );

        // Propagation.
        let props: Vec<_> = ss.iter().filter_map(|s| s.propagation.as_ref()).collect();
        let p50: Vec<f64> = props.iter().map(|p| p.p50.as_secs_f64()).collect();
        let p99: Vec<f64> = props.iter().map(|p| p.p99.as_secs_f64()).collect();
        let pmax: Vec<f64> = props.iter().map(|p| p.max.as_secs_f64()).collect();
        let rtt: Vec<f64> = props.iter().map(|p| p.apply_rtt.as_secs_f64()).collect();
        let prop_complete = !props.is_empty() && props.iter().all(|p| p.received == p.expected);
        let mut v = format!(
            "p50 {}; p99 {}; max {}; API apply call {}",
            agg(&p50, ms),
            agg(&p99, ms),
            agg(&pmax, ms),
            agg(&rtt, ms)
        );
        if !props.is_empty() && !prop_complete {
            let r: Vec<String> = props.iter().map(|p| format!("{}/{}", p.received, p.expected)).collect();
            v = format!("INCOMPLETE: received by {} daemons; {v}", r.join(", "));
        }
        let p99_ok = prop_complete && p99.iter().all(|x| *x < 2.0);
        row(
            format!("policy propagation, {nf} daemons: one apply until every daemon has the revision"),
            v,
            if big { "p99 < 2 s" } else { "— (target is at 10,000)" },
            if big { yes_no(p99_ok) } else { "n/a" },
        );

        // Reconnect.
        let rcs: Vec<_> = ss.iter().filter_map(|s| s.reconnect.as_ref()).collect();
        let from_listen: Vec<f64> = rcs.iter().filter_map(|r| r.from_listen).map(|d| d.as_secs_f64()).collect();
        let from_term: Vec<f64> = rcs.iter().filter_map(|r| r.from_term).map(|d| d.as_secs_f64()).collect();
        let shutdown: Vec<f64> = rcs.iter().map(|r| r.shutdown.as_secs_f64()).collect();
        let startup: Vec<f64> = rcs.iter().map(|r| r.startup.as_secs_f64()).collect();
        let rc_complete = !rcs.is_empty() && rcs.iter().all(|r| r.resumed == r.expected);
        let mut v = format!(
            "{} after the new CP listened; {} after SIGTERM (CP shutdown {}, startup {})",
            agg(&from_listen, secs),
            agg(&from_term, secs),
            agg(&shutdown, secs),
            agg(&startup, secs)
        );
        if !rcs.is_empty() && !rc_complete {
            let r: Vec<String> = rcs.iter().map(|r| format!("{}/{}", r.resumed, r.expected)).collect();
            v = format!("INCOMPLETE: resumed {}; {v}", r.join(", "));
        }
        row(
            format!("reconnect storm, {nf} daemons: time until all reconnected (mTLS) and resumed policy"),
            v,
            "— (no target)",
            "n/a",
        );
        let snaps: usize = rcs.iter().map(|r| r.snapshots).sum();
        let deltas: usize = rcs.iter().map(|r| r.deltas).sum();
        let rretried = merge(rcs.iter().map(|r| r.retried.clone()));
        row(
            format!("reconnect storm, {nf} daemons: resumed with snapshot / delta; failures"),
            if rcs.is_empty() {
                "not measured".into()
            } else {
                format!("{snaps} snapshots / {deltas} deltas{over}; retried errors: {}", kinds(&rretried))
            },
            "— (no target)",
            "n/a",
        );
        let rhwm: Vec<f64> = rcs.iter().map(|r| r.cp_hwm_kib as f64).collect();
        row(
            format!("reconnect storm, {nf} daemons: CP peak RSS of the restarted process"),
            agg(&rhwm, mib),
            if big { "< 1 GiB" } else { "— (target is at 10,000)" },
            if big { yes_no(!rhwm.is_empty() && rhwm.iter().all(|k| *k < 1024.0 * 1024.0)) } else { "n/a" },
        );
    }

    let mut out = String::new();
    let _ = writeln!(out, "| figure | value | target | met? |");
    let _ = writeln!(out, "|---|---|---|---|");
    for r in &rows {
        let cells: Vec<String> = r.iter().map(|c| c.replace('|', "\\|")).collect();
        let _ = writeln!(out, "| {} | {} | {} | {} |", cells[0], cells[1], cells[2], cells[3]);
    }
    let _ = writeln!(out);
    let plan: Vec<String> =
        sizes.iter().map(|n| format!("{n} × {}", sessions.iter().filter(|s| s.n == *n).count())).collect();
    let _ = writeln!(
        out,
        "Runs (daemons × runs): {}. Machine: {} cores ({}), {:.1} GiB RAM, Linux {}. Total {:.0} s; load-generator peak RSS {} MiB.",
        plan.join(", "),
        m.nproc,
        m.cpu,
        m.mem_gib,
        m.kernel,
        total.as_secs_f64(),
        loadgen_hwm_kib / 1024
    );
    let _ = writeln!(
        out,
        "Control plane: the real `riptides-controlplane` binary with its default configuration (attestation rate limit: \
         10 per source address + 2/s, 200 globally + 100/s). Simulated daemons share {} QUIC client endpoints on \
         127.0.0.2–127.0.0.{} and the same {} cores as the control plane.",
        args.sources,
        args.sources + 1,
        m.nproc
    );
    let errs: Vec<String> =
        sessions.iter().flat_map(|s| s.errors.iter().map(move |e| format!("{} daemons: {e}", s.n))).collect();
    if !errs.is_empty() {
        let _ = writeln!(out, "\nErrors:");
        for e in errs {
            let _ = writeln!(out, "- {e}");
        }
    }
    out
}
