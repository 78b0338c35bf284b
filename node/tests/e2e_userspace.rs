//! End to end in network namespaces: a real control plane and two real daemons with the
//! userspace dataplane, unmodified `curl` and `python3 -m http.server` as the workloads.
//! The connection is upgraded to mutual TLS with both SPIFFE IDs, plaintext never appears on
//! the wire between the nodes, an identity the server does not allow is refused, and a
//! non-enrolled plaintext client is refused on the MUTUAL port.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use riptides_chaos_tests::{ChildGuard, Host, OutputTo, Signal, Topology};

fn bin(name: &str) -> PathBuf {
    // Workspace binaries sit next to this package's own binary.
    let daemon = PathBuf::from(env!("CARGO_BIN_EXE_riptides-daemon"));
    let p = daemon.parent().expect("target dir").join(name);
    assert!(p.exists(), "{} is missing: build the workspace binaries first (cargo build --bins)", p.display());
    p
}

fn spawn_logged(host: &Host, program: &Path, args: &[String]) -> ChildGuard {
    host.command(program).args(args).env("RUST_LOG", "info").output_to(OutputTo::TempLog).spawn().expect("spawn")
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<String>) -> String {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn sh(host: &Host, cmd: &str) -> std::process::Output {
    host.command("sh").args(["-c", cmd]).timeout(Duration::from_secs(30)).output_unchecked().expect("run")
}

fn admin_get(host: &Host, path: &str) -> Option<serde_json::Value> {
    let out = sh(host, &format!("curl -s --max-time 2 http://127.0.0.1:15000{path}"));
    serde_json::from_slice(&out.stdout).ok()
}

fn has_identity(host: &Host, id: &str) -> bool {
    admin_get(host, "/config_dump").is_some_and(|v| {
        v["identities"].as_array().is_some_and(|ids| ids.iter().any(|i| i["spiffeID"] == id))
    })
}

#[test]
fn mutual_tls_between_two_userspace_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut topo = Topology::new("e2e").expect("namespaces (needs root)");
    let lan = topo.lan("lan").unwrap();
    let cp = topo.host("cp", lan).unwrap();
    let a = topo.host("a", lan).unwrap();
    let b = topo.host("b", lan).unwrap();

    // Control plane.
    let cp_dir = d.join("cp");
    let mut cp_proc = spawn_logged(
        &cp,
        &bin("riptides-controlplane"),
        &[
            "--data-dir".into(),
            cp_dir.display().to_string(),
            "--trust-domain".into(),
            "example.com".into(),
            "--api-addr".into(),
            "0.0.0.0:8443".into(),
            "--quic-addr".into(),
            "0.0.0.0:9443".into(),
            "--tunnel-addr".into(),
            "0.0.0.0:8001".into(),
            "--health-addr".into(),
            "0.0.0.0:8080".into(),
            "--advertise-url".into(),
            "https://127.0.0.1:8443".into(),
        ],
    );
    let pin = wait_until("the control plane", Duration::from_secs(20), || {
        let log = cp_proc.log();
        log.split_whitespace().skip_while(|w| *w != "pin").nth(1).map(str::to_owned)
    });
    assert!(pin.starts_with("sha256:"), "{pin}");
    let kubeconfig = cp_dir.join("admin.kubeconfig");
    let riptides = bin("riptides");
    let ctl = |args: &[&str], stdin: Option<String>| {
        let mut c = cp.command(&riptides).arg("--kubeconfig").arg(&kubeconfig).args(args).timeout(Duration::from_secs(20));
        if let Some(s) = stdin {
            c = c.stdin(s.into_bytes());
        }
        c.output_unchecked().expect("riptides")
    };
    let policy = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../ops/examples/demo/policy.yaml"))
        .unwrap()
        .replace("NODE_B_ADDR", &b.addr().to_string());
    let out = ctl(&["ctl", "apply", "-f", "-"], Some(policy));
    assert!(out.status.success(), "apply: {}", String::from_utf8_lossy(&out.stderr));

    // Daemons.
    let mut daemons = Vec::new();
    for (host, id) in [(&a, "node-a"), (&b, "node-b")] {
        let out = ctl(&["token", "create", "--ttl", "10m", "--daemon-id", id], None);
        assert!(out.status.success(), "token: {}", String::from_utf8_lossy(&out.stderr));
        let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        daemons.push(spawn_logged(
            host,
            &bin("riptides-daemon"),
            &[
                "--controlplane".into(),
                format!("{}:9443", cp.addr()),
                "--controlplane-tunnel".into(),
                format!("{}:8001", cp.addr()),
                "--trust-domain".into(),
                "example.com".into(),
                "--ca-pin".into(),
                pin.clone(),
                "--join-token".into(),
                token,
                "--data-dir".into(),
                d.join(id).display().to_string(),
                "--admin-addr".into(),
                "127.0.0.1:15000".into(),
                "--dataplane".into(),
                "userspace".into(),
            ],
        ));
    }
    for (host, id) in [(&a, "spiffe://example.com/frontend"), (&a, "spiffe://example.com/intruder"), (&b, "spiffe://example.com/orders-service")] {
        wait_until(&format!("SVID {id} on {}", host.name), Duration::from_secs(30), || has_identity(host, id).then(String::new));
    }

    // The application: a plain HTTP server on node-b.
    let www = d.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let marker = format!("RIPTIDES-PLAINTEXT-MARKER-{}", std::process::id());
    std::fs::write(www.join("marker.txt"), &marker).unwrap();
    let _server = b
        .command("python3")
        .args(["-m", "http.server", "8000", "--bind", "0.0.0.0", "--directory"])
        .arg(&www)
        .output_to(OutputTo::TempLog)
        .spawn()
        .unwrap();
    riptides_chaos_tests::wait_for_port(&b, b.addr(), 8000, Duration::from_secs(10)).unwrap();

    // Capture what crosses node-b's interface while the frontend talks to it.
    // On node-b's LAN interface only: the daemon hands plaintext to the application over
    // loopback inside the node, which is not the wire.
    let addrs = String::from_utf8(sh(&b, "ip -o -4 addr show").stdout).unwrap();
    let iface = addrs
        .lines()
        .find(|l| l.contains(&format!("inet {}/", b.addr())))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("node-b's LAN interface")
        .to_owned();
    let pcap = d.join("wire.pcap");
    let mut capture = b
        .command("tcpdump")
        .args(["-i", &iface, "-U", "-w"])
        .arg(&pcap)
        .args(["tcp", "port", "8000"])
        .output_to(OutputTo::TempLog)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));

    let url = format!("http://{}:8000/marker.txt", b.addr());
    let out = sh(&a, &format!("curl -s --max-time 10 {url}"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), marker, "frontend -> orders over mTLS; curl stderr: {}", String::from_utf8_lossy(&out.stderr));

    std::thread::sleep(Duration::from_millis(500));
    capture.signal(Signal::Int).unwrap();
    let _ = capture.wait_timeout(Duration::from_secs(5));
    let wire = std::fs::read(&pcap).unwrap();
    assert!(wire.len() > 200, "the capture saw the connection ({} bytes)", wire.len());
    assert!(!wire.windows(marker.len()).any(|w| w == marker.as_bytes()), "plaintext marker seen on the wire between the nodes");

    // Both daemons show the connection with both identities. The rows may be gone once the
    // connection closed, so check the connection table with a long-lived one.
    // curl's telnet mode holds the connection open while its stdin stays open.
    let _held = a
        .command("sh")
        .args(["-c", &format!("sleep 15 | curl -s --max-time 15 telnet://{}:8000 >/dev/null", b.addr())])
        .spawn()
        .unwrap();
    let mut last = None;
    let rows = wait_until("an outbound row on node-a", Duration::from_secs(10), || {
        let v = admin_get(&a, "/connections");
        eprintln!("node-a /connections: {v:?}");
            last = v.clone();
        let v = v?;
        let rows = v.as_array()?.clone();
        rows.iter().any(|r| r["state"] == "established").then(|| serde_json::to_string(&rows).unwrap())
    });
    assert!(rows.contains("spiffe://example.com/frontend"), "{rows}");
    assert!(rows.contains("spiffe://example.com/orders-service"), "{rows}");
    assert!(rows.contains("X25519MLKEM768"), "post-quantum hybrid key exchange negotiated: {rows}");
    let rows_b = wait_until("an inbound row on node-b", Duration::from_secs(10), || {
        let v = admin_get(&b, "/connections")?;
        let s = serde_json::to_string(&v).ok()?;
        s.contains("spiffe://example.com/frontend").then_some(s)
    });
    assert!(rows_b.contains("MUTUAL"), "{rows_b}");

    // The intruder (curl as uid 65534) holds a valid SVID but is not allowed by the server.
    let out = sh(&a, &format!("setpriv --reuid 65534 --regid 65534 --clear-groups curl -s --max-time 10 {url}"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&marker), "the intruder must be refused");
    assert!(!out.status.success(), "curl as the intruder must fail");

    // A client that is not enrolled at all (no daemon on the control-plane host) sends
    // plaintext to the MUTUAL port: refused.
    let out = sh(&cp, &format!("curl -s --max-time 10 {url}"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&marker), "plaintext must be refused on a MUTUAL port");

    for mut dmn in daemons {
        let _ = dmn.signal(Signal::Term);
        let _ = dmn.wait_timeout(Duration::from_secs(10));
    }
    let _ = cp_proc.terminate(Duration::from_secs(5));
}
