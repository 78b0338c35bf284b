//! `riptides demo` end to end: the real binary, twice in a row, must succeed, show both SPIFFE
//! IDs and the post-quantum key exchange, and leave no namespace, scratch directory or root
//! nftables table behind. Needs root (network namespaces); it does not skip without it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn cli() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_riptides"))
}

fn assert_binaries_present() {
    let dir = cli().parent().expect("target dir").to_path_buf();
    for name in ["riptides-controlplane", "riptides-daemon"] {
        let p = dir.join(name);
        assert!(
            p.is_file(),
            "{} is missing: `riptides demo` runs the binaries next to itself; build them first with \
             `cargo build --bins` (same profile and target dir as this test)",
            p.display()
        );
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2)).map(|u| u == "0")
        })
        .unwrap_or(false)
}

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn root_nft_tables() -> String {
    Command::new("nft")
        .args(["list", "tables"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Runs `riptides demo` with a deadline; returns (pid, exit code, stdout, stderr).
fn run_demo(cwd: &Path) -> (u32, Option<i32>, String, String) {
    let mut child = Command::new(cli())
        .arg("demo")
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn riptides demo");
    let pid = child.id();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            // SIGTERM lets the demo clean up; the test fails below either way.
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (pid, status.code(), out_t.join().unwrap(), err_t.join().unwrap())
}

#[test]
fn demo_runs_clean_twice_in_a_row() {
    assert!(is_root(), "riptides demo needs root (network namespaces); run this test as root");
    assert_binaries_present();
    let tables_before = root_nft_tables();
    // From a directory unrelated to the repository: the policy is embedded.
    let cwd = std::env::temp_dir();
    for run in 1..=2 {
        let started = Instant::now();
        let (pid, code, stdout, stderr) = run_demo(&cwd);
        let took = started.elapsed();
        let ctx = format!("run {run} (pid {pid}, {took:.1?}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
        assert_eq!(code, Some(0), "riptides demo failed, {ctx}");
        for needle in [
            "spiffe://example.com/frontend",
            "spiffe://example.com/orders-service",
            "X25519MLKEM768",
            "intruder refused",
            "plaintext refused",
        ] {
            assert!(stdout.contains(needle), "output lacks {needle:?}, {ctx}");
        }
        let left: Vec<String> = netns_list()
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with("rt-demo") && n.contains(&format!("-{pid}-")))
            .map(str::to_owned)
            .collect();
        assert!(left.is_empty(), "namespaces left behind by the demo: {left:?}, {ctx}");
        assert!(
            !std::env::temp_dir().join(format!("riptides-demo-{pid}")).exists(),
            "the demo's scratch directory was left behind, {ctx}"
        );
        assert_eq!(root_nft_tables(), tables_before, "the root namespace's nftables tables changed, {ctx}");
        assert!(took < Duration::from_secs(60), "the demo took {took:?}, {ctx}");
    }
}
