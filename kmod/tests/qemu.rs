//! Kernel tier: runs `ops/scripts/kmod-test.sh`, which builds riptides.ko against the
//! Debian 6.1 and 6.12 kernels and runs the module's scenarios in a qemu microvm guest.
//! Needs root (apt, /var/cache/riptides-kmod) and takes a few minutes; it fails, never
//! skips, when something is missing. Kernels: RIPTIDES_KMOD_KERNELS (default "6.1 6.12").
use std::process::Command;

#[test]
fn kernel_module_scenarios_pass_in_qemu() {
    let script = riptides_kmod::paths::kmod_test_script();
    assert!(script.exists(), "{} missing", script.display());
    let out = Command::new("bash").arg(&script).output().expect("run kmod-test.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(out.status.success(), "kmod-test.sh failed (exit {:?}); see output above", out.status.code());
    assert!(stderr.contains("kmod-test: all kernels passed"));
    assert!(!stdout.contains(" FAIL "), "a scenario printed FAIL");
}
