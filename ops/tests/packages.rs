//! The Debian packages: built by `ops/packaging/build-debs.sh` from the debug binaries, then
//! installed, used and purged with the real `dpkg` of a Debian 12 chroot (debootstrap minbase
//! with systemd, nftables and kmod, cached by `ops/packaging/debian-chroot.sh` in
//! /var/cache/riptides-ops). DKMS itself does not run: a stand-in package `Provides: dkms` and
//! records the calls the maintainer scripts make. Needs root (chroot).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_riptides")).parent().unwrap().to_path_buf()
}

#[track_caller]
fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{cmd:?} failed:\n{out}");
    out
}

fn chroot(root: &Path, args: &[&str]) -> String {
    run(Command::new("chroot").arg(root).args(args).env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
}

/// A package named dkms-stub that provides `dkms` and logs every call to /var/log/dkms-calls.
fn dkms_stub(dir: &Path) -> PathBuf {
    let p = dir.join("stub");
    std::fs::create_dir_all(p.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(p.join("usr/sbin")).unwrap();
    std::fs::write(
        p.join("DEBIAN/control"),
        "Package: dkms-stub\nVersion: 1.0\nArchitecture: all\nMaintainer: tests <t@example.invalid>\n\
         Provides: dkms (= 3.0.10)\nDescription: records dkms calls\n",
    )
    .unwrap();
    std::fs::write(p.join("usr/sbin/dkms"), "#!/bin/sh\necho \"dkms $*\" >> /var/log/dkms-calls\n").unwrap();
    std::fs::set_permissions(p.join("usr/sbin/dkms"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let deb = dir.join("dkms-stub.deb");
    run(Command::new("dpkg-deb").args(["--root-owner-group", "-b"]).arg(&p).arg(&deb));
    deb
}

fn version() -> String {
    let out = run(Command::new(bin_dir().join("riptides-daemon")).arg("--version"));
    out.split_whitespace().nth(1).unwrap().to_owned()
}

#[test]
fn debs_build_install_and_purge_in_a_debian_chroot() {
    let scratch = tempfile::tempdir().unwrap();
    let out = scratch.path().join("debs");
    let built = run(Command::new(repo().join("ops/packaging/build-debs.sh"))
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--out")
        .arg(&out));
    let v = version();
    let arch = run(Command::new("dpkg").arg("--print-architecture")).trim().to_owned();
    let debs = [
        format!("riptides-daemon_{v}_{arch}.deb"),
        format!("riptides-controlplane_{v}_{arch}.deb"),
        format!("riptides-dkms_{v}_all.deb"),
    ];
    for d in &debs {
        assert!(out.join(d).is_file(), "{d} not built:\n{built}");
    }
    // What each package holds.
    let contents = |deb: &str| run(Command::new("dpkg-deb").arg("-c").arg(out.join(deb)));
    let daemon = contents(&debs[0]);
    for f in [
        "./usr/bin/riptides-daemon",
        "./lib/systemd/system/riptides-daemon.service",
        "./lib/systemd/system/riptides-module.service",
        "./usr/lib/sysusers.d/riptides-daemon.conf",
    ] {
        assert!(daemon.contains(f), "{f} missing from {}:\n{daemon}", debs[0]);
    }
    let dkms = contents(&debs[2]);
    for f in ["dkms.conf", "module/Kbuild", "module/main.c", "module/netlink.c", "include/uapi/linux/riptides.h"] {
        assert!(dkms.contains(&format!("./usr/src/riptides-{v}/{f}")), "{f} missing from {}:\n{dkms}", debs[2]);
    }
    let fields = run(Command::new("dpkg-deb").arg("-f").arg(out.join(&debs[2])).args(["Depends", "Architecture"]));
    assert!(fields.contains("Depends: dkms") && fields.contains("Architecture: all"), "{fields}");

    // A Debian 12 root, fresh from the cache.
    let root = scratch.path().join("root");
    run(Command::new(repo().join("ops/packaging/debian-chroot.sh")).arg(&root));
    let stub = dkms_stub(scratch.path());
    std::fs::copy(&stub, root.join("tmp/dkms-stub.deb")).unwrap();
    for d in &debs {
        std::fs::copy(out.join(d), root.join("tmp").join(d)).unwrap();
    }
    let mut install: Vec<String> = vec!["dpkg".into(), "-i".into(), "/tmp/dkms-stub.deb".into()];
    install.extend(debs.iter().map(|d| format!("/tmp/{d}")));
    let log = chroot(&root, &install.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(log.contains("Setting up riptides-daemon") && log.contains("Setting up riptides-dkms"), "{log}");

    // Files landed, the binaries run inside the chroot, users exist, units are enabled.
    assert!(chroot(&root, &["/usr/bin/riptides-daemon", "--version"]).contains(&v));
    assert!(chroot(&root, &["/usr/bin/riptides-controlplane", "--version"]).contains(&v));
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(passwd.contains("\nriptides:x:") && passwd.contains("\nriptides-cp:x:"), "{passwd}");
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    for u in ["riptides-daemon.service", "riptides-module.service", "riptides-controlplane.service"] {
        assert_eq!(std::fs::read_link(wants.join(u)).unwrap(), Path::new("/lib/systemd/system").join(u));
    }
    assert!(root.join("etc/riptides/controlplane.env").is_file());
    assert!(root.join(format!("usr/src/riptides-{v}/dkms.conf")).is_file());
    let calls = std::fs::read_to_string(root.join("var/log/dkms-calls")).unwrap();
    assert!(calls.contains(&format!("dkms add -m riptides -v {v}")), "{calls}");
    // The installed units verify against the chroot's own systemd.
    let verify = Command::new("systemd-analyze")
        .arg(format!("--root={}", root.display()))
        .args(["verify", "riptides-daemon.service", "riptides-module.service", "riptides-controlplane.service"])
        .output()
        .unwrap();
    let verr = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && verr.trim().is_empty(), "verify in the chroot: {verr}");

    // Configure as an operator would, then purge: nothing of ours is left.
    std::fs::write(root.join("etc/riptides/daemon.env"), "RIPTIDES_DAEMON_ARGS=--controlplane cp:9443\n").unwrap();
    std::fs::create_dir_all(root.join("var/lib/riptides")).unwrap();
    std::fs::write(root.join("var/lib/riptides/daemon.json"), "{}").unwrap();
    let log = chroot(&root, &["dpkg", "--purge", "riptides-daemon", "riptides-controlplane", "riptides-dkms"]);
    assert!(log.contains("Purging configuration files for riptides-daemon"), "{log}");
    let calls = std::fs::read_to_string(root.join("var/log/dkms-calls")).unwrap();
    assert!(calls.contains(&format!("dkms remove -m riptides -v {v} --all")), "{calls}");
    for gone in [
        "usr/bin/riptides-daemon",
        "usr/bin/riptides-controlplane",
        "lib/systemd/system/riptides-daemon.service",
        "etc/systemd/system/multi-user.target.wants/riptides-daemon.service",
        "etc/systemd/system/multi-user.target.wants/riptides-module.service",
        "etc/systemd/system/multi-user.target.wants/riptides-controlplane.service",
        "etc/riptides",
        "var/lib/riptides",
    ] {
        assert!(!root.join(gone).exists() && root.join(gone).symlink_metadata().is_err(), "{gone} left after purge");
    }
    assert!(!root.join(format!("usr/src/riptides-{v}")).exists());
    let status = Command::new("chroot").arg(&root).args(["dpkg", "-s", "riptides-daemon"]).output().unwrap();
    assert!(!status.status.success(), "riptides-daemon still known to dpkg");
}
