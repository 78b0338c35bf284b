//! The dataplane benchmark in quick mode, so the benchmark code cannot rot. It checks that every
//! figure was produced and the table is complete; it asserts nothing about speed.
//!
//! Needs root (network namespaces), stunnel4, nft, curl and ss, and the workspace binaries
//! (`cargo build --bins`) next to this package's binary.

use std::time::{Duration, Instant};

const ROWS: &[&str] = &[
    "bulk throughput, 1 connection (Gbit/s)",
    "bulk throughput, 8 connections (Gbit/s)",
    "1 B request/response p50, added (µs)",
    "1 B request/response p99, added (µs)",
    "1 KiB request/response p50, added (µs)",
    "1 KiB request/response p99, added (µs)",
    "new connections/s, full mTLS handshake, X25519MLKEM768",
    "new connections/s, full mTLS handshake, X25519",
    "new connections/s with session resumption",
    "daemon memory per idle connection (KiB, both sides)",
    "idle connections held for the memory figure",
    "CPU seconds per GB moved (both sides, bulk tests)",
];

/// The median of a `median [min–max]` cell (a leading `+` allowed).
fn median(cell: &str) -> Option<f64> {
    cell.split_whitespace().next()?.trim_start_matches('+').parse().ok()
}

#[test]
fn quick_mode_produces_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dataplane.md");
    let start = Instant::now();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_riptides-bench-dataplane"))
        .arg("--quick")
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the benchmark");
    let pid = child.id();
    let run = child.wait_with_output().expect("benchmark output");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "benchmark failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    eprintln!("quick mode took {:?}\n{stdout}", start.elapsed());
    let md = std::fs::read_to_string(&out).expect("--out file");
    assert_eq!(md, stdout, "--out holds what was printed");

    let header = md.lines().find(|l| l.starts_with("| figure |")).expect("table header");
    assert_eq!(header.matches('|').count(), 8, "seven columns: {header}");
    for row in ROWS {
        let line = md
            .lines()
            .find(|l| l.starts_with(&format!("| {row} |")))
            .unwrap_or_else(|| panic!("row {row:?} missing from\n{md}"));
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 7, "{line}");
        let (rip, direct, stunnel, ratio) = (cells[1], cells[2], cells[3], cells[4]);
        let added = row.contains("added");
        // Latency rows hold values added to direct TCP: produced, finite, sign not asserted.
        let check = |what: &str, cell: &str| {
            let v = median(cell).unwrap_or_else(|| panic!("{what} of {row:?} is not a number: {cell:?}"));
            assert!(v.is_finite() && (added || v > 0.0), "{what} of {row:?}: {cell:?}");
        };
        if rip.starts_with("n/a") {
            assert!(
                row.contains("X25519") && !row.contains("MLKEM") || row.contains("resumption"),
                "riptides has no value for {row:?}"
            );
        } else {
            check("riptides", rip);
        }
        check("stunnel4", stunnel);
        if direct.starts_with("— (no daemon)") {
            assert!(row.contains("memory") || row.contains("CPU") || row.contains("idle"), "{row:?}");
        } else {
            let v = median(direct).unwrap_or_else(|| panic!("direct TCP of {row:?}: {direct:?}"));
            assert!(v > 0.0, "direct TCP of {row:?}: {direct:?}");
        }
        if !rip.starts_with("n/a") {
            assert!(ratio.ends_with('×'), "ratio of {row:?}: {ratio:?}");
        }
    }
    for needle in ["Command: `", "$ nproc", "model name", "stunnel 5", "OpenSSL"] {
        assert!(md.contains(needle), "{needle:?} missing from the report");
    }
    // The harness removed its namespaces.
    let left: Vec<String> = riptides_chaos_tests::harness_namespaces("dpb")
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.contains(&format!("-{pid}-")))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(start.elapsed() < Duration::from_secs(600));
}
