//! The Markdown report: one row per figure, medians with min/max over the runs, the ratio to
//! stunnel4 measured in the same run, and the issue's target.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Riptides,
    Direct,
    Stunnel,
    /// stunnel4 with session resumption (connection rate only).
    StunnelResume,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fig {
    Bulk1,
    Bulk8,
    Lat1P50,
    Lat1P99,
    Lat1kP50,
    Lat1kP99,
    ConnMlkem,
    ConnX25519,
    ConnResume,
    IdleMem,
    IdleHeld,
    CpuPerGb,
}

/// How a figure compares with stunnel4, and the target from the issue.
enum Goal {
    /// riptides / stunnel4 at least this.
    AtLeast(f64),
    /// riptides / stunnel4 at most this.
    AtMost(f64),
    /// riptides below this absolute value.
    Below(f64),
    None,
}

struct Spec {
    fig: Fig,
    label: &'static str,
    goal: Goal,
    target: &'static str,
    /// Latency rows: the riptides and stunnel4 values are added to direct TCP.
    added: bool,
    /// Why riptides has no value, if it has none by design.
    riptides_na: Option<&'static str>,
}

const SPECS: &[Spec] = &[
    Spec {
        fig: Fig::Bulk1,
        label: "bulk throughput, 1 connection (Gbit/s)",
        goal: Goal::AtLeast(2.0),
        target: "≥ 2× stunnel4",
        added: false,
        riptides_na: None,
    },
    Spec {
        fig: Fig::Bulk8,
        label: "bulk throughput, 8 connections (Gbit/s)",
        goal: Goal::AtLeast(2.0),
        target: "≥ 2× stunnel4",
        added: false,
        riptides_na: None,
    },
    Spec {
        fig: Fig::Lat1P50,
        label: "1 B request/response p50, added (µs)",
        goal: Goal::AtMost(0.5),
        target: "≤ ½ of stunnel4's added",
        added: true,
        riptides_na: None,
    },
    Spec {
        fig: Fig::Lat1P99,
        label: "1 B request/response p99, added (µs)",
        goal: Goal::AtMost(0.5),
        target: "≤ ½ of stunnel4's added",
        added: true,
        riptides_na: None,
    },
    Spec {
        fig: Fig::Lat1kP50,
        label: "1 KiB request/response p50, added (µs)",
        goal: Goal::AtMost(0.5),
        target: "≤ ½ of stunnel4's added",
        added: true,
        riptides_na: None,
    },
    Spec {
        fig: Fig::Lat1kP99,
        label: "1 KiB request/response p99, added (µs)",
        goal: Goal::AtMost(0.5),
        target: "≤ ½ of stunnel4's added",
        added: true,
        riptides_na: None,
    },
    Spec {
        fig: Fig::ConnMlkem,
        label: "new connections/s, full mTLS handshake, X25519MLKEM768",
        goal: Goal::AtLeast(4.0),
        target: "≥ 4× stunnel4",
        added: false,
        riptides_na: None,
    },
    Spec {
        fig: Fig::ConnX25519,
        label: "new connections/s, full mTLS handshake, X25519",
        goal: Goal::AtLeast(4.0),
        target: "≥ 4× stunnel4",
        added: false,
        riptides_na: Some("n/a: the daemon has no switch to select the key-exchange group"),
    },
    Spec {
        fig: Fig::ConnResume,
        label: "new connections/s with session resumption",
        goal: Goal::None,
        target: "—",
        added: false,
        riptides_na: Some("n/a: resumption is disabled by design"),
    },
    Spec {
        fig: Fig::IdleMem,
        label: "daemon memory per idle connection (KiB, both sides)",
        goal: Goal::Below(8.0),
        target: "< 8 KiB",
        added: false,
        riptides_na: None,
    },
    Spec {
        fig: Fig::IdleHeld,
        label: "idle connections held for the memory figure",
        goal: Goal::None,
        target: "—",
        added: false,
        riptides_na: None,
    },
    Spec {
        fig: Fig::CpuPerGb,
        label: "CPU seconds per GB moved (both sides, bulk tests)",
        goal: Goal::AtMost(0.5),
        target: "≤ ½ × stunnel4",
        added: false,
        riptides_na: None,
    },
];

#[derive(Debug, Default)]
pub struct Measurements {
    values: BTreeMap<(Fig, Target), Vec<f64>>,
}

impl Measurements {
    pub fn push(&mut self, fig: Fig, t: Target, v: f64) {
        self.values.entry((fig, t)).or_default().push(v);
    }

    fn get(&self, fig: Fig, t: Target) -> Option<&[f64]> {
        self.values.get(&(fig, t)).map(Vec::as_slice).filter(|v| !v.is_empty())
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn cell(v: Option<&[f64]>, plus: bool) -> String {
    match v {
        None => "—".into(),
        Some(v) => {
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for x in v {
                lo = lo.min(*x);
                hi = hi.max(*x);
            }
            let sign = |x: f64| if plus && x >= 0.0 { format!("+{}", num(x)) } else { num(x) };
            format!("{} [{}–{}]", sign(median(v)), sign(lo), sign(hi))
        }
    }
}

pub struct Context {
    pub quick: bool,
    pub runs: usize,
    pub secs: f64,
    pub idle_conns: usize,
    pub stunnel_idle_conns: usize,
    pub nofile: u64,
    pub lat_count: usize,
    pub concurrency: usize,
    pub kx: String,
    pub command: String,
    pub elapsed: Duration,
    pub notes: Vec<String>,
}

pub fn render(m: &Measurements, ctx: &Context) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## Dataplane benchmark ({} mode, {} run(s) per figure)\n",
        if ctx.quick { "quick" } else { "full" },
        ctx.runs
    );
    let _ = writeln!(
        s,
        "| figure | riptides (median [min–max]) | direct TCP | stunnel4 | riptides/stunnel4 | target | met? |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for spec in SPECS {
        let r = m.get(spec.fig, Target::Riptides);
        let d = m.get(spec.fig, Target::Direct);
        let st = m.get(spec.fig, Target::Stunnel);
        let rip = match (r, spec.riptides_na) {
            (None, Some(why)) => why.to_string(),
            (r, _) => cell(r, spec.added),
        };
        let ratio = match (r, st) {
            (Some(r), Some(st)) if median(st) != 0.0 => Some(median(r) / median(st)),
            _ => None,
        };
        let ratio_s = ratio.map(|x| format!("{x:.2}×")).unwrap_or_else(|| "—".into());
        let met = match (&spec.goal, ratio, r) {
            (Goal::AtLeast(k), Some(x), _) => yes_no(x >= *k),
            (Goal::AtMost(k), Some(x), _) => yes_no(x <= *k),
            (Goal::Below(k), _, Some(r)) => yes_no(median(r) < *k),
            (Goal::None, ..) => "—".into(),
            _ => "n/a".into(),
        };
        let direct = match spec.fig {
            Fig::IdleMem | Fig::IdleHeld | Fig::CpuPerGb => "— (no daemon)".into(),
            _ => cell(d, false),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            spec.label,
            rip,
            direct,
            cell(st, spec.added),
            ratio_s,
            spec.target,
            met
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "- Latency rows: riptides and stunnel4 show the p50/p99 *added* to direct TCP of the same run (negative = noise); the direct TCP column is the absolute round trip. {} timed round trips per measurement on one connection.", ctx.lat_count);
    let _ = writeln!(
        s,
        "- Throughput: {:.0} s per measurement, 128 KiB writes into a sink; connection rate: {} concurrent clients for {:.0} s, each connection a connect + 1-byte echo (so the mTLS handshake through both daemons completed) + close.",
        ctx.secs, ctx.concurrency, ctx.secs
    );
    let _ = writeln!(s, "- Riptides negotiated `{}` (from node-a's daemon log). stunnel4's OpenSSL 3.0 has no ML-KEM: its full handshake is X25519 in both connection-rate rows; stunnel4 runs with `sessionResume = no` except in the resumption row.", ctx.kx);
    let _ = writeln!(
        s,
        "- Idle memory: RSS growth of both daemons (or both stunnel4 processes) with {} connections attempted ({} for stunnel4, a thread per connection on each side) and held, divided by the number held (open-files limit {}); CPU: utime+stime of both daemons (or stunnels) over all bulk measurements of a run, divided by the GB moved.",
        ctx.idle_conns, ctx.stunnel_idle_conns, ctx.nofile
    );
    for n in &ctx.notes {
        let _ = writeln!(s, "- {n}");
    }
    let _ = writeln!(s, "\nCommand: `{}` (took {:.0} s)\n", ctx.command, ctx.elapsed.as_secs_f64());
    let _ = writeln!(s, "Machine:\n\n```\n{}```", machine());
    s
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "**no**" }.into()
}

fn sh_out(cmd: &str) -> String {
    std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
        .unwrap_or_default()
}

/// nproc, memory, CPU model, kernel, stunnel and OpenSSL versions.
pub fn machine() -> String {
    let mut s = String::new();
    let _ = writeln!(s, "$ nproc\n{}", sh_out("nproc").trim());
    let _ = writeln!(s, "$ free -g\n{}", sh_out("free -g").trim_end());
    let _ =
        writeln!(s, "$ grep -m1 'model name' /proc/cpuinfo\n{}", sh_out("grep -m1 'model name' /proc/cpuinfo").trim());
    let _ = writeln!(s, "$ uname -r\n{}", sh_out("uname -r").trim());
    let _ = writeln!(
        s,
        "$ stunnel4 -version (first lines)\n{}",
        sh_out("stunnel4 -version 2>&1 | grep -v inetd | head -3").trim_end()
    );
    let _ = writeln!(s, "$ openssl version\n{}", sh_out("openssl version").trim());
    s
}
