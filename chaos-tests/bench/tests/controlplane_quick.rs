//! The control-plane benchmark's quick mode (200 simulated daemons against the real
//! `riptides-controlplane` binary) runs to the end and prints a complete table. It asserts
//! nothing about speed: benchmarks measure, tests check that the measuring code works.

use std::process::Command;

/// The benchmark runs the control plane as its own process, found next to the benchmark
/// binary; cargo does not build another package's binaries for this test, so build it here
/// (a no-op when it is up to date).
fn build_control_plane() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "riptides-cp", "--bin", "riptides-controlplane"]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build for riptides-controlplane");
    assert!(status.success(), "building riptides-controlplane failed");
}

#[test]
fn quick_mode_prints_a_complete_table() {
    build_control_plane();
    let out_file = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_riptides-bench-controlplane"))
        .args(["--quick", "--out"])
        .arg(out_file.path())
        .output()
        .expect("run riptides-bench-controlplane");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "benchmark failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let written = std::fs::read_to_string(out_file.path()).unwrap();
    assert!(stdout.contains(written.trim()), "--out must hold the printed table");

    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| figure"))
        .map(|l| l.trim_matches('|').split(" | ").map(str::trim).collect())
        .collect();
    for figure in [
        "attestation storm, 200 daemons: time until all hold an SVID and a policy snapshot",
        "attestation storm, 200 daemons: CP peak RSS",
        "attestation storm, 200 daemons: failures",
        "CSR signing, 200 attested daemons: workload CSRs/s per core",
        "policy propagation, 200 daemons: one apply until every daemon has the revision",
        "reconnect storm, 200 daemons: time until all reconnected",
        "reconnect storm, 200 daemons: resumed with snapshot / delta",
        "reconnect storm, 200 daemons: CP peak RSS",
    ] {
        let row =
            rows.iter().find(|r| r[0].starts_with(figure)).unwrap_or_else(|| panic!("no row {figure:?} in\n{stdout}"));
        assert_eq!(row.len(), 4, "row {row:?} must have four cells");
        assert!(row.iter().all(|c| !c.is_empty()), "empty cell in {row:?}");
        assert!(
            !row[1].contains("not measured") && !row[1].contains("INCOMPLETE"),
            "figure not measured: {row:?}\nstderr:\n{stderr}"
        );
    }
    assert!(!stdout.contains("Errors:"), "the run reported errors:\n{stdout}\nstderr:\n{stderr}");
}
