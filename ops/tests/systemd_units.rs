//! The systemd units pass `systemd-analyze verify` with no warning, in a root holding the
//! host's systemd unit library and the programs the units start; a deliberately broken copy
//! does produce warnings (so a silent verifier cannot pass the test). The daemon keeps exactly
//! the capabilities the README states, and the exposure scores of `systemd-analyze security`
//! stay in the OK band.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const UNITS: [&str; 3] = ["riptides-daemon.service", "riptides-controlplane.service", "riptides-module.service"];

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd")
}

/// A root with the host's unit library (targets the units order against) and stand-ins for
/// the executables the units name, since verify checks that they exist.
fn verify_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in ["usr/bin", "usr/sbin", "usr/lib", "etc/systemd/system"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    for (link, to) in [("lib", "usr/lib"), ("bin", "usr/bin"), ("sbin", "usr/sbin")] {
        std::os::unix::fs::symlink(to, r.join(link)).unwrap();
    }
    let lib = Path::new("/usr/lib/systemd/system");
    assert!(lib.is_dir(), "{} missing: install the systemd package (ops/scripts/test-all.sh does)", lib.display());
    std::fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
    let st = Command::new("cp").arg("-a").arg(lib).arg(r.join("usr/lib/systemd/")).status().unwrap();
    assert!(st.success(), "copy {}", lib.display());
    for exe in ["usr/bin/riptides-daemon", "usr/bin/riptides-controlplane", "usr/sbin/modprobe", "usr/sbin/modinfo"] {
        std::fs::write(r.join(exe), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(r.join(exe), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for u in UNITS {
        std::fs::copy(units_dir().join(u), r.join("etc/systemd/system").join(u)).unwrap();
    }
    root
}

fn analyze(root: &Path, args: &[&str]) -> (bool, String, String) {
    let o = Command::new("systemd-analyze")
        .arg(format!("--root={}", root.display()))
        .args(args)
        .output()
        .expect("systemd-analyze (package systemd) must be installed");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn units_verify_clean() {
    let root = verify_root();
    let mut args = vec!["verify"];
    args.extend(UNITS);
    let (ok, out, err) = analyze(root.path(), &args);
    assert!(ok && err.trim().is_empty(), "systemd-analyze verify:\n{out}\n{err}");
}

#[test]
fn a_broken_unit_is_reported() {
    let root = verify_root();
    let unit = root.path().join("etc/systemd/system/broken.service");
    let text = std::fs::read_to_string(units_dir().join("riptides-daemon.service"))
        .unwrap()
        .replace("ProtectSystem=strict", "ProtectSystem=very")
        .replace("[Service]", "[Service]\nRestartSecs=2s");
    std::fs::write(&unit, text).unwrap();
    let (_, out, err) = analyze(root.path(), &["verify", "broken.service"]);
    let all = format!("{out}{err}");
    assert!(all.contains("protect system value") && all.contains("RestartSecs"), "verify missed the errors: {all}");
}

#[test]
fn daemon_capabilities_are_exactly_the_stated_three() {
    let unit = std::fs::read_to_string(units_dir().join("riptides-daemon.service")).unwrap();
    let line =
        |key: &str| unit.lines().find(|l| l.starts_with(&format!("{key}="))).map(|l| l[key.len() + 1..].to_owned());
    let caps = "CAP_NET_ADMIN CAP_SYS_PTRACE CAP_DAC_READ_SEARCH";
    assert_eq!(line("CapabilityBoundingSet").as_deref(), Some(caps));
    assert_eq!(line("AmbientCapabilities").as_deref(), Some(caps));
    assert_eq!(line("User").as_deref(), Some("riptides"));
    assert_eq!(line("NoNewPrivileges").as_deref(), Some("yes"));
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    for cap in caps.split(' ') {
        assert!(unit.contains(&format!("#   {cap}")), "the unit explains {cap}");
        assert!(readme.contains(cap), "the README explains {cap}");
    }
    let cp = std::fs::read_to_string(units_dir().join("riptides-controlplane.service")).unwrap();
    assert!(cp.contains("\nCapabilityBoundingSet=\n"), "the control plane keeps no capability");
}

#[test]
fn exposure_scores_stay_ok() {
    let root = verify_root();
    for u in UNITS {
        let (_, out, err) = analyze(root.path(), &["security", "--offline=true", u]);
        let last = format!("{out}{err}");
        let line = last.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| panic!("{u}: {last}"));
        let score: f64 = line.split(':').nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
        eprintln!("{u}: exposure {score}");
        assert!(score <= 3.0, "{u}: exposure {score} (was <= 2.5 when written): {line}");
    }
}
