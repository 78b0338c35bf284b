//! `ops/install.sh` in throwaway roots, as root.
//!
//! - `--root` mode, userspace (no kernel headers in the root): files, modes, the unit's
//!   ExecStart, the `riptides` user, the enablement symlinks made by the real
//!   `systemctl --root`; a second run changes nothing; `--uninstall --purge` leaves the root as
//!   it was but for the system user (kept, as Debian packages keep theirs).
//! - `--root` mode with headers and a stand-in `dkms`: the DKMS source tree and the dkms calls,
//!   the kernel dataplane; a second run does not rebuild; uninstall removes the module.
//! - Live mode (`--root /`) inside a private mount namespace whose /etc, /usr and /var are
//!   overlays, so every write lands in a scratch upper directory and the host is untouched:
//!   the systemctl calls (daemon-reload, enable, restart/start) are recorded.
//!
//! Not exercised: a real systemd starting the daemon, and a real DKMS build (the kernel tier
//! builds the module; this machine's kernel has no headers and cannot load modules).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const PIN: &str = "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn bin_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_riptides")).parent().unwrap().to_path_buf();
    assert!(
        dir.join("riptides-daemon").is_file(),
        "{} missing: build the binaries first (cargo build --workspace --bins)",
        dir.join("riptides-daemon").display()
    );
    dir
}

fn daemon_version() -> String {
    let out = Command::new(bin_dir().join("riptides-daemon")).arg("--version").output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().nth(1).unwrap().to_owned()
}

/// A root that looks like a minimal Debian system: users, and the directories every
/// system has (so uninstall may leave them).
fn new_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in ["etc/systemd/system", "etc/sysusers.d", "usr/local/bin", "usr/src", "var/lib", "lib/modules"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    std::fs::write(r.join("etc/group"), "root:x:0:\n").unwrap();
    root
}

/// Every path under `root` with its type, mode and content digest (or link target).
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let v = if md.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if md.is_dir() {
                walk(base, &p, out);
                format!("dir {:o}", md.permissions().mode() & 0o7777)
            } else {
                format!("file {:o} {}", md.permissions().mode() & 0o7777, std::fs::read(&p).unwrap().len())
            };
            out.insert(rel, v);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A stand-in program that appends `NAME ARGS` to `$RECORD_LOG`, then optionally runs a body.
fn recorder(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\necho \"{name} $*\" >> \"$RECORD_LOG\"\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn install(args: &[&str], env: &[(&str, &Path)]) -> Run {
    let mut cmd = Command::new(repo().join("ops/install.sh"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    Run {
        code: o.status.code(),
        stdout: String::from_utf8(o.stdout).unwrap(),
        stderr: String::from_utf8(o.stderr).unwrap(),
    }
}

fn install_args<'a>(root: &'a str, bin: &'a str) -> Vec<&'a str> {
    vec![
        "--root",
        root,
        "--bin-dir",
        bin,
        "--controlplane-url",
        "https://cp.example.com:8443",
        "--join-token",
        "abc123.secretsecret",
        "--ca-pin",
        PIN,
        "--trust-domain",
        "example.com",
    ]
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn calls(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log).unwrap_or_default().lines().map(str::to_owned).collect()
}

#[test]
fn root_mode_userspace_is_idempotent_and_uninstalls_cleanly() {
    let root = new_root();
    let r = root.path();
    let before = snapshot(r);
    let tools = tempfile::tempdir().unwrap();
    let log = tools.path().join("calls.log");
    // Record, then let the real systemctl make the enablement symlinks inside the root.
    let systemctl = recorder(tools.path(), "systemctl", "exec systemctl \"$@\" 2>/dev/null");
    let (rs, bs) = (r.display().to_string(), bin_dir().display().to_string());
    let env = [("SYSTEMCTL", systemctl.as_path()), ("RECORD_LOG", log.as_path())];

    let first = install(&install_args(&rs, &bs), &env);
    assert_eq!(first.code, Some(0), "{}\n{}", first.stdout, first.stderr);
    assert!(
        first.stdout.contains("no kernel headers") && first.stdout.contains("userspace dataplane"),
        "{}",
        first.stdout
    );

    let envf = r.join("etc/riptides/daemon.env");
    assert_eq!(mode(&envf), 0o600, "the env file holds the join token");
    let text = std::fs::read_to_string(&envf).unwrap();
    assert!(
        text.contains(&format!(
            "RIPTIDES_DAEMON_ARGS=--controlplane cp.example.com:9443 --controlplane-tunnel cp.example.com:8001 \
             --trust-domain example.com --ca-pin {PIN} --dataplane userspace\n"
        )),
        "{text}"
    );
    assert!(text.contains("RIPTIDES_JOIN_TOKEN=abc123.secretsecret\n"), "{text}");
    let bin = r.join("usr/local/bin/riptides-daemon");
    assert_eq!(mode(&bin), 0o755);
    assert_eq!(std::fs::read(&bin).unwrap(), std::fs::read(bin_dir().join("riptides-daemon")).unwrap());
    let unit = std::fs::read_to_string(r.join("etc/systemd/system/riptides-daemon.service")).unwrap();
    assert!(unit
        .contains("\nExecStart=/usr/local/bin/riptides-daemon --data-dir /var/lib/riptides $RIPTIDES_DAEMON_ARGS\n"));
    assert!(r.join("etc/systemd/system/riptides-module.service").is_file());
    let passwd = std::fs::read_to_string(r.join("etc/passwd")).unwrap();
    assert!(passwd.contains("\nriptides:x:") && passwd.contains(":/var/lib/riptides:/usr/sbin/nologin"), "{passwd}");
    for u in ["riptides-daemon.service", "riptides-module.service"] {
        let link = r.join("etc/systemd/system/multi-user.target.wants").join(u);
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("/etc/systemd/system").join(u));
    }
    assert_eq!(
        calls(&log),
        [format!("systemctl --root={rs} enable riptides-module.service riptides-daemon.service")],
        "--root mode enables offline and starts nothing"
    );

    // Second run: nothing changes.
    let after_first = snapshot(r);
    let second = install(&install_args(&rs, &bs), &env);
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    assert!(!second.stdout.contains("wrote "), "second run rewrote files:\n{}", second.stdout);
    assert_eq!(second.stdout.matches("unchanged ").count(), 5, "{}", second.stdout);
    let after_second = snapshot(r);
    let differing: Vec<_> = after_second
        .iter()
        .filter(|(k, v)| {
            after_first.get(*k) != Some(v) && !k.contains("passwd") && !k.contains("group") && !k.contains("shadow")
        })
        .collect();
    assert!(differing.is_empty(), "second run changed {differing:?}");

    // Uninstall with --purge: back to the original tree, except the kept system user.
    std::fs::create_dir_all(r.join("var/lib/riptides")).unwrap();
    std::fs::write(r.join("var/lib/riptides/daemon.json"), "{}").unwrap();
    let un = install(&["--root", &rs, "--uninstall", "--purge"], &env);
    assert_eq!(un.code, Some(0), "{}", un.stderr);
    let after = snapshot(r);
    let user_files = |k: &str| {
        ["etc/passwd", "etc/group", "etc/shadow", "etc/gshadow", "etc/.pwd.lock"].iter().any(|f| k.starts_with(f))
    };
    let left: Vec<_> = after.iter().filter(|(k, v)| before.get(*k) != Some(v) && !user_files(k)).collect();
    let gone: Vec<_> = before.keys().filter(|k| !after.contains_key(*k)).collect();
    assert!(left.is_empty() && gone.is_empty(), "uninstall left {left:?}, removed {gone:?}");
    assert!(calls(&log).last().unwrap().contains("disable riptides-module.service riptides-daemon.service"));
}

#[test]
fn root_mode_with_headers_installs_the_dkms_source_and_uses_the_kernel_dataplane() {
    let root = new_root();
    let r = root.path();
    let kver = "6.1.0-99-amd64";
    std::fs::create_dir_all(r.join(format!("lib/modules/{kver}/build"))).unwrap();
    std::fs::write(r.join(format!("lib/modules/{kver}/build/Makefile")), "# headers\n").unwrap();
    let tools = tempfile::tempdir().unwrap();
    let log = tools.path().join("calls.log");
    let systemctl = recorder(tools.path(), "systemctl", "exit 0");
    // `dkms status` reports installed once `dkms install` ran.
    let marker = tools.path().join("installed");
    let dkms = recorder(
        tools.path(),
        "dkms",
        &format!(
            "case \"$1\" in install) touch {m};; status) [ -e {m} ] && echo \"riptides/x, {kver}, x86_64: installed\";; \
             remove) rm -f {m};; esac; exit 0",
            m = marker.display()
        ),
    );
    let (rs, bs) = (r.display().to_string(), bin_dir().display().to_string());
    let env = [("SYSTEMCTL", systemctl.as_path()), ("DKMS", dkms.as_path()), ("RECORD_LOG", log.as_path())];
    let mut args = install_args(&rs, &bs);
    args.extend(["--kernel-release", kver]);

    let first = install(&args, &env);
    assert_eq!(first.code, Some(0), "{}\n{}", first.stdout, first.stderr);
    let v = daemon_version();
    let src = r.join(format!("usr/src/riptides-{v}"));
    let dkms_conf = std::fs::read_to_string(src.join("dkms.conf")).unwrap();
    assert!(
        dkms_conf.contains(&format!("PACKAGE_VERSION=\"{v}\""))
            && dkms_conf.contains("BUILT_MODULE_NAME[0]=\"riptides\"")
    );
    // Every object the Kbuild names has its source, and the UAPI header is where the Kbuild looks.
    let kbuild = std::fs::read_to_string(src.join("module/Kbuild")).unwrap();
    for obj in kbuild.lines().filter(|l| l.starts_with("riptides-y")).flat_map(|l| l.split_whitespace().skip(2)) {
        let c = obj.replace(".o", ".c");
        assert!(src.join("module").join(&c).is_file(), "{c} missing from the DKMS tree");
    }
    assert!(src.join("include/uapi/linux/riptides.h").is_file());
    let text = std::fs::read_to_string(r.join("etc/riptides/daemon.env")).unwrap();
    assert!(text.contains("--dataplane kernel\n"), "{text}");
    let c = calls(&log);
    let tree = format!("--sourcetree {rs}/usr/src --dkmstree {rs}/var/lib/dkms --installtree {rs}/lib/modules");
    for want in [
        format!("dkms add riptides/{v} {tree}"),
        format!("dkms build riptides/{v} -k {kver} {tree}"),
        format!("dkms install riptides/{v} -k {kver} {tree}"),
    ] {
        assert!(c.contains(&want), "missing `{want}` in {c:#?}");
    }

    // Second run: already installed, nothing rebuilt.
    std::fs::remove_file(&log).unwrap();
    let second = install(&args, &env);
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    assert!(second.stdout.contains("already installed by DKMS"), "{}", second.stdout);
    assert!(!calls(&log).iter().any(|l| l.starts_with("dkms build")), "{:?}", calls(&log));

    let un = install(&["--root", &rs, "--uninstall"], &env);
    assert_eq!(un.code, Some(0), "{}", un.stderr);
    assert!(calls(&log).contains(&format!("dkms remove riptides/{v} --all")), "{:?}", calls(&log));
    assert!(!src.exists() && !r.join("etc/riptides").exists());
}

#[test]
fn refuses_bad_arguments_clearly() {
    let root = new_root();
    let (rs, bs) = (root.path().display().to_string(), bin_dir().display().to_string());
    let cases: [(&[&str], &str); 5] = [
        (&["--root", &rs, "--bin-dir", &bs, "--ca-pin", PIN, "--join-token", "a.b"], "--controlplane-url is required"),
        (&["--root", &rs, "--bin-dir", &bs, "--controlplane-url", "cp", "--join-token", "a.b"], "--ca-pin is required"),
        (
            &[
                "--root",
                &rs,
                "--bin-dir",
                &bs,
                "--controlplane-url",
                "cp",
                "--ca-pin",
                "sha256:zz",
                "--join-token",
                "a",
            ],
            "64 lowercase hex",
        ),
        (&["--root", &rs, "--bin-dir", &bs, "--controlplane-url", "cp", "--ca-pin", PIN], "--join-token is required"),
        (
            &[
                "--root",
                &rs,
                "--bin-dir",
                &bs,
                "--controlplane-url",
                "ftp://cp",
                "--ca-pin",
                PIN,
                "--join-token",
                "a.b",
            ],
            "scheme ftp",
        ),
    ];
    for (args, want) in cases {
        let o = install(args, &[]);
        assert_eq!(o.code, Some(1), "{args:?}");
        assert!(o.stderr.contains(want), "{args:?}: {}", o.stderr);
    }
    assert!(!root.path().join("etc/riptides").exists(), "a refused install wrote files");
}

#[test]
fn live_mode_in_an_overlay_namespace_enables_and_starts_the_daemon() {
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let tools = s.join("tools");
    std::fs::create_dir(&tools).unwrap();
    let log = s.join("calls.log");
    let systemctl = recorder(&tools, "systemctl", "exit 0");
    // Every write to /etc, /usr and /var goes to an upper directory under `s`.
    let mut script = String::from("set -e\n");
    for d in ["etc", "usr", "var"] {
        std::fs::create_dir_all(s.join(format!("upper/{d}"))).unwrap();
        std::fs::create_dir_all(s.join(format!("work/{d}"))).unwrap();
        script.push_str(&format!(
            "mount -t overlay overlay -o lowerdir=/{d},upperdir={s}/upper/{d},workdir={s}/work/{d} /{d}\n",
            s = s.display()
        ));
    }
    script.push_str(&format!(
        "exec {} --bin-dir {} --controlplane-url quic://cp.example.com:7443 --join-token id1.secret --ca-pin {PIN}\n",
        repo().join("ops/install.sh").display(),
        bin_dir().display()
    ));
    let run = |script: &str| {
        let o = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "bash", "-c", script])
            .env("SYSTEMCTL", &systemctl)
            .env("RECORD_LOG", &log)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let out = run(&script);
    assert!(out.contains("riptides-daemon") && out.contains("installed (userspace dataplane)"), "{out}");
    let upper = s.join("upper");
    let envf = upper.join("etc/riptides/daemon.env");
    let text = std::fs::read_to_string(&envf).unwrap();
    assert!(text.contains("--controlplane cp.example.com:7443 --controlplane-tunnel cp.example.com:8001 --trust-domain riptides.local"), "{text}");
    assert!(upper.join("usr/local/bin/riptides-daemon").is_file());
    assert!(std::fs::read_to_string(upper.join("etc/passwd")).unwrap().contains("\nriptides:x:"));
    assert_eq!(
        calls(&log),
        [
            "systemctl daemon-reload",
            "systemctl enable riptides-module.service riptides-daemon.service",
            "systemctl restart riptides-daemon.service",
        ]
    );
    // Unchanged configuration: the daemon is only started (a no-op when it runs), not restarted.
    std::fs::remove_file(&log).unwrap();
    run(&script);
    assert_eq!(calls(&log).last().unwrap(), "systemctl start riptides-daemon.service");
    // The host itself was not touched.
    assert!(
        !Path::new("/etc/riptides/daemon.env").exists()
            || std::fs::read_to_string("/etc/riptides/daemon.env").unwrap() != text
    );
}
