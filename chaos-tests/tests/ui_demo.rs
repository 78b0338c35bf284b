//! The web UI against the real product in the demo topology (issue 9): the namespaces of
//! `riptides demo` (`cp`, `node-a`, `node-b` on one LAN), the real `riptides-controlplane` with
//! operator sign-in federated to a test identity provider, two real `riptides-daemon`s with the
//! userspace dataplane, the demo policy (`ops/examples/demo/policy.yaml`), `python3 -m
//! http.server` on node-b and `curl` workloads on node-a; `riptides-frontend` and Debian's
//! headless Chromium (playwright-core, `frontend/tests/demo.mjs`) run inside the cp namespace,
//! next to the control plane and the issuer (which demo.mjs serves on the namespace's loopback).
//!
//! The browser signs in through the issuer, sees both daemons connected, a live mTLS connection
//! (a curl held open from node-a as the frontend identity) and the refused connection of the
//! unlisted intruder identity flagged; it then changes the orders identity on the policies page
//! to admit the intruder. This test then retries the intruder's curl on the real dataplane until
//! the new verdict holds, and the browser sees the intruder's new connection as mTLS.
//! Screenshots (and the processes' logs) in `target/ui-artifacts/demo/`.
//!
//! Needs root (namespaces; skipped without, unless `RIPTIDES_NETNS_REQUIRED=1`), the workspace
//! binaries (`cargo build --bins`), node with `frontend/node_modules` (`npm ci`), /usr/bin/chromium,
//! curl, python3 and setpriv; `ops/scripts/test-all.sh` provides all of them.

mod chaos;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chaos::*;
use riptides_chaos_tests::{ChildGuard, Host, OutputTo};

const INTRUDER: &str = "spiffe://example.com/intruder";
/// Fixed ports are fine: every listener is inside a namespace this test made.
const IDP_PORT: u16 = 5556;
const UI_PORT: u16 = 8444;
const HTTP_PORT: u16 = 8000;
/// The whole browser run (each of its waits has its own, shorter, deadline).
const BROWSER_DEADLINE: Duration = Duration::from_secs(600);

fn available() -> bool {
    match riptides_chaos_tests::check_available() {
        Ok(()) => true,
        Err(e) if std::env::var_os("RIPTIDES_NETNS_REQUIRED").is_some() => panic!("{e}"),
        Err(e) => {
            eprintln!("skipping the UI demo test: {e}");
            false
        }
    }
}

fn frontend_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../frontend")
}

/// `target/`, from this test binary's place (`target/<profile>/deps/`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors().nth(3).expect("target/<profile>/deps/<exe>").to_path_buf()
}

/// Builds the UI into a private copy of `frontend/` (sources copied, `node_modules` linked):
/// `build.mjs` empties `dist/` first, and another test may be building the shared one while this
/// test's frontend serves it.
fn build_ui(into: &Path) -> PathBuf {
    let fe = frontend_dir();
    assert!(
        fe.join("node_modules/playwright-core").is_dir(),
        "{}: run `npm ci` there first (ops/scripts/test-all.sh does)",
        fe.display()
    );
    std::fs::create_dir_all(into).unwrap();
    for item in ["src", "static", "build.mjs", "package.json"] {
        let out = std::process::Command::new("cp").arg("-r").arg(fe.join(item)).arg(into).output().expect("cp runs");
        assert!(out.status.success(), "copying {item}: {}", String::from_utf8_lossy(&out.stderr));
    }
    std::os::unix::fs::symlink(fe.join("node_modules"), into.join("node_modules")).unwrap();
    let out = std::process::Command::new("node").arg("build.mjs").current_dir(into).output().expect("node runs");
    assert!(out.status.success(), "building the UI: {}", String::from_utf8_lossy(&out.stderr));
    into.join("dist")
}

fn url(b: &Host) -> String {
    format!("http://{}:{HTTP_PORT}/marker.txt", b.addr())
}

/// curl as the intruder identity (uid 65534 on node-a).
fn intruder_curl(a: &Host, url: &str) -> std::process::Output {
    sh(a, &format!("setpriv --reuid 65534 --regid 65534 --clear-groups curl -sS --max-time 8 {url}"))
}

/// A connection held open from node-a (`as_intruder`: as uid 65534) to node-b's server: curl's
/// telnet mode keeps it while its stdin is open; half an HTTP request moves the byte counters.
fn hold_connection(a: &Host, b: &Host, as_intruder: bool) -> ChildGuard {
    let setpriv = if as_intruder { "setpriv --reuid 65534 --regid 65534 --clear-groups " } else { "" };
    let cmd = format!(
        "(printf 'GET /marker.txt HTTP/1.1\\r\\nHost: orders\\r\\n'; sleep 900) | {setpriv}curl -s --max-time 900 telnet://{}:{HTTP_PORT} >/dev/null",
        b.addr()
    );
    a.command("sh").args(["-c", &cmd]).output_to(OutputTo::Null).spawn().expect("holding a connection open")
}

/// Waits until node-a's table holds an established connection of `own` with bytes sent.
fn wait_held(a: &Host, own: &str) {
    wait_until(&format!("a held connection of {own} in node-a's /connections"), Duration::from_secs(60), || {
        let rows = admin_json(a, "/connections")?;
        rows.as_array()?
            .iter()
            .any(|r| r["state"] == "established" && r["ownSPIFFEID"] == own && r["bytesOut"].as_u64() > Some(0))
            .then_some(())
    });
}

#[test]
fn the_ui_shows_the_demo_topology_live_and_a_policy_change_takes_effect() {
    if !available() {
        return;
    }
    let started = Instant::now();
    let oidc = [
        "--oidc-issuer".to_owned(),
        format!("http://127.0.0.1:{UI_PORT}"),
        "--oidc-upstream-issuer".to_owned(),
        format!("http://127.0.0.1:{IDP_PORT}"),
        "--oidc-upstream-client-id".to_owned(),
        "riptides-cp".to_owned(),
        "--oidc-role".to_owned(),
        "email_domain=example.com:editor".to_owned(),
    ];
    let oidc: Vec<&str> = oidc.iter().map(String::as_str).collect();
    // The demo's one LAN: the control plane's, with both nodes on it (no NAT site).
    let mut c = Cluster::new("uidemo", 0, &oidc);
    let lan = c.cp.lan;
    c.site_lans.push(lan);
    let ia = c.prepare_daemon("node-a", 0, Dataplane::Userspace);
    let ib = c.prepare_daemon("node-b", 0, Dataplane::Userspace);
    c.apply(DEMO_POLICY);
    c.start_daemon(ia);
    c.start_daemon(ib);
    let (a, b) = (c.daemons[ia].host.clone(), c.daemons[ib].host.clone());
    for (host, node, id) in [(&a, "node-a", FRONTEND), (&a, "node-a", INTRUDER), (&b, "node-b", ORDERS)] {
        wait_until(&format!("the SVID of {id} on {node}"), Duration::from_secs(90), || {
            let dump = admin_json(host, "/config_dump")?;
            dump["identities"].as_array()?.iter().any(|i| i["spiffeID"] == id).then_some(())
        });
    }
    let marker = c.http_server(&b, HTTP_PORT);
    let url = url(&b);

    // The product works before the browser looks: frontend -> orders over mTLS, intruder refused.
    wait_until("curl as the frontend identity to get the page", Duration::from_secs(60), || {
        (String::from_utf8_lossy(&c.curl(&a, &url).stdout) == marker).then_some(())
    });
    let refused = intruder_curl(&a, &url);
    assert!(
        !refused.status.success() && !String::from_utf8_lossy(&refused.stdout).contains(&marker),
        "the intruder is refused by the demo policy: {refused:?}"
    );
    let _held_frontend = hold_connection(&a, &b, false);
    wait_held(&a, FRONTEND);

    // riptides-frontend in the cp namespace, in front of the control plane.
    let ui_dir = build_ui(&c.dir.path().join("ui"));
    let bundle = sh(&c.cp, "curl -sSf https://127.0.0.1:8443/trust-bundle.pem --insecure");
    assert!(bundle.status.success(), "the CP's trust bundle: {}", String::from_utf8_lossy(&bundle.stderr));
    let ca = c.dir.path().join("cp-ca.pem");
    std::fs::write(&ca, &bundle.stdout).unwrap();
    let fe_log = c.dir.path().join("frontend.log");
    let fe =
        c.cp.command(bin("riptides-frontend"))
            .args(["--listen", &format!("127.0.0.1:{UI_PORT}"), "--cp-url", "https://127.0.0.1:8443", "--cp-ca"])
            .arg(&ca)
            .arg("--assets")
            .arg(&ui_dir)
            .env("NO_COLOR", "1")
            .output_to(OutputTo::File(fe_log.clone()))
            .spawn()
            .expect("spawn riptides-frontend");
    c.extra.push(Proc { guard: Some(fe), log: fe_log.clone(), expected_down: false });
    wait_until("riptides-frontend to listen", Duration::from_secs(30), || {
        std::fs::read_to_string(&fe_log).unwrap_or_default().contains("riptides-frontend: http").then_some(())
    });

    // The browser, in the cp namespace too; it asks for dataplane actions over its stdin/stdout.
    let artifacts = target_dir().join("ui-artifacts/demo");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).unwrap();
    let browser_log = c.dir.path().join("browser-stderr.log");
    let (mut node, mut to_node, from_node) =
        c.cp.command("node")
            .arg("tests/demo.mjs")
            .current_dir(frontend_dir())
            .env("RIPTIDES_UI_URL", format!("http://127.0.0.1:{UI_PORT}"))
            .env("RIPTIDES_IDP_PORT", IDP_PORT.to_string())
            .env("RIPTIDES_ARTIFACTS", &artifacts)
            .output_to(OutputTo::File(browser_log.clone()))
            .spawn_piped()
            .expect("spawn node tests/demo.mjs");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(from_node).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + BROWSER_DEADLINE;
    let mut transcript = String::new();
    let mut dataplane_failures = Vec::new();
    let mut held_intruder = None;
    loop {
        let line = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => l,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = node.kill();
                panic!("the browser run took longer than {BROWSER_DEADLINE:?}:\n{transcript}");
            }
        };
        eprintln!("browser: {line}");
        transcript.push_str(&line);
        transcript.push('\n');
        let Some(what) = line.strip_prefix("riptides-demo: wait ") else { continue };
        let answer = match what {
            // A refused connection for the table: the intruder, as the demo policy has it.
            "traffic" => {
                let out = intruder_curl(&a, &url);
                if out.status.success() {
                    Err(format!("the intruder was not refused: {}", String::from_utf8_lossy(&out.stdout)))
                } else {
                    Ok(())
                }
            }
            // The browser applied the change: the real dataplane must now let the intruder in.
            "policy-applied" => {
                let t0 = Instant::now();
                let ok = poll(Duration::from_secs(90), || {
                    (String::from_utf8_lossy(&intruder_curl(&a, &url).stdout) == marker).then_some(())
                });
                match ok {
                    Some(()) => {
                        eprintln!(
                            "the intruder got the page {:.1} s after the UI applied the change",
                            t0.elapsed().as_secs_f64()
                        );
                        held_intruder = Some(hold_connection(&a, &b, true));
                        wait_held(&a, INTRUDER);
                        Ok(())
                    }
                    None => Err("the intruder still refused 90 s after the UI applied the change".to_owned()),
                }
            }
            other => Err(format!("unknown request {other:?}")),
        };
        let reply = match answer {
            Ok(()) => format!("go {what}\n"),
            Err(e) => {
                dataplane_failures.push(format!("{what}: {e}"));
                format!("fail {what} {e}\n")
            }
        };
        let _ = to_node.write_all(reply.as_bytes());
    }
    let status = node.wait_timeout(Duration::from_secs(30)).expect("the browser script exits");
    drop(held_intruder);

    // Logs next to the screenshots.
    let mut logs = vec![("controlplane", c.cp_proc.log.clone()), ("frontend", fe_log), ("browser-stderr", browser_log)];
    logs.extend(c.daemons.iter().map(|d| (d.id.as_str(), d.proc.log.clone())));
    for (name, path) in logs {
        let _ = std::fs::copy(&path, artifacts.join(format!("{name}.log")));
    }
    let crashed = c.crashed();
    eprintln!(
        "UI demo test: {:.1} s, screenshots and logs in {}",
        started.elapsed().as_secs_f64(),
        artifacts.display()
    );
    assert!(dataplane_failures.is_empty(), "on the dataplane: {dataplane_failures:?}\n{transcript}");
    assert!(
        status.success() && transcript.contains(" passed, 0 failed"),
        "browser test failed ({status}):\n{transcript}"
    );
    assert!(crashed.is_empty(), "crashed: {crashed:?}");
}
