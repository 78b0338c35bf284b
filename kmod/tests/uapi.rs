//! The Rust mirror (`riptides_kmod::uapi`) must match `kmod/include/uapi/linux/riptides.h`:
//! every constant the header defines (macros and enum members) is printed by a C program
//! compiled against the header with `cc`, and compared with the Rust value; names present
//! on only one side fail the test.
use std::collections::BTreeMap;
use std::process::Command;

use riptides_kmod::paths;
use riptides_kmod::uapi::{INTEGER_CONSTANTS, STRING_CONSTANTS};

/// Names of the macros and enum members the header defines (simple line-oriented scan;
/// the header keeps one definition per line).
fn header_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect() };
        if let Some(rest) = t.strip_prefix("#define ") {
            let n = ident(rest.trim_start());
            if n.starts_with("RIPTIDES_") {
                names.push(n);
            }
        } else if t.starts_with("RIPTIDES_") || t.starts_with("__RIPTIDES_") {
            let n = ident(t);
            let after = t[n.len()..].trim_start();
            if after.starts_with(',') || after.starts_with('=') {
                names.push(n);
            }
        }
    }
    names
}

#[test]
fn header_and_rust_mirror_agree() {
    let header = paths::uapi_header();
    let text = std::fs::read_to_string(&header).expect("read UAPI header");
    let names = header_names(&text);
    assert!(names.len() > 50, "header scan found too few names: {names:?}");

    let ints: BTreeMap<&str, i64> = INTEGER_CONSTANTS.iter().copied().collect();
    let strs: BTreeMap<&str, &str> = STRING_CONSTANTS.iter().copied().collect();
    let mut problems = Vec::new();
    for n in &names {
        if !ints.contains_key(n.as_str()) && !strs.contains_key(n.as_str()) {
            problems.push(format!("{n}: in the header, missing in riptides_kmod::uapi"));
        }
    }
    for n in ints.keys().chain(strs.keys()) {
        if !names.iter().any(|h| h == n) {
            problems.push(format!("{n}: in riptides_kmod::uapi, missing in the header"));
        }
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = String::from("#include <stdio.h>\n#include <linux/riptides.h>\nint main(void) {\n");
    for n in &names {
        if strs.contains_key(n.as_str()) {
            c.push_str(&format!("  printf(\"{n}=s:%s\\n\", {n});\n"));
        } else {
            c.push_str(&format!("  printf(\"{n}=%lld\\n\", (long long)({n}));\n"));
        }
    }
    c.push_str("  return 0;\n}\n");
    let src = dir.path().join("uapi_dump.c");
    let bin = dir.path().join("uapi_dump");
    std::fs::write(&src, c).unwrap();
    let include = paths::kmod_dir().join("include/uapi");
    let out = Command::new("cc")
        .args(["-std=c99", "-Wall", "-Werror", "-pedantic", "-I"])
        .arg(&include)
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("run cc (install gcc/build-essential)");
    assert!(out.status.success(), "cc failed on the UAPI header:\n{}", String::from_utf8_lossy(&out.stderr));
    let run = Command::new(&bin).output().expect("run uapi_dump");
    assert!(run.status.success());
    let stdout = String::from_utf8(run.stdout).unwrap();
    let mut seen = 0;
    for line in stdout.lines() {
        let (n, v) = line.split_once('=').unwrap();
        seen += 1;
        if let Some(s) = v.strip_prefix("s:") {
            match strs.get(n) {
                Some(r) if *r == s => {}
                Some(r) => problems.push(format!("{n}: C \"{s}\" != Rust \"{r}\"")),
                None => {}
            }
        } else {
            let cv: i64 = v.parse().unwrap();
            match ints.get(n) {
                Some(r) if *r == cv => {}
                Some(r) => problems.push(format!("{n}: C {cv} != Rust {r}")),
                None => {}
            }
        }
    }
    assert_eq!(seen, names.len());
    assert!(problems.is_empty(), "UAPI mismatch:\n{}", problems.join("\n"));
}
