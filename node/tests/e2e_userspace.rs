//! End to end in network namespaces the test makes: a real control plane and two real daemons
//! with the userspace dataplane; unmodified `curl`, `python3 -m http.server` and
//! `openssl s_server` as the workloads.

mod e2e;

use std::time::{Duration, Instant};

use e2e::*;
use riptides_chaos_tests::{OutputTo, Signal};

const FRONTEND: &str = "spiffe://example.com/frontend";
const ORDERS: &str = "spiffe://example.com/orders-service";

#[test]
fn mutual_tls_no_plaintext_on_the_wire_and_refusals() {
    let f = Fixture::start("e2em", POLICY, &[]);
    f.wait_identity(&f.a, FRONTEND);
    f.wait_identity(&f.a, "spiffe://example.com/intruder");
    f.wait_identity(&f.b, ORDERS);
    let (_server, marker) = f.http_server(&f.b, 8000);

    // Capture on node-b's LAN interface only: the daemon hands plaintext to the application
    // over loopback inside the node, which is not the wire.
    let addrs = String::from_utf8(sh(&f.b, "ip -o -4 addr show").stdout).unwrap();
    let iface = addrs
        .lines()
        .find(|l| l.contains(&format!("inet {}/", f.b.addr())))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("node-b's LAN interface")
        .to_owned();
    let pcap = f.path().join("wire.pcap");
    let mut capture =
        f.b.command("tcpdump")
            .args(["-i", &iface, "-U", "-w"])
            .arg(&pcap)
            .args(["tcp", "port", "8000"])
            .output_to(OutputTo::TempLog)
            .spawn()
            .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let url = format!("http://{}:8000/marker.txt", f.b.addr());
    let out = f.curl(&f.a, &url);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        marker,
        "frontend -> orders over mTLS; {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(500));
    capture.signal(Signal::Int).unwrap();
    let _ = capture.wait_timeout(Duration::from_secs(5));
    let wire = std::fs::read(&pcap).unwrap();
    assert!(wire.len() > 200, "the capture saw the connection ({} bytes)", wire.len());
    assert!(
        !wire.windows(marker.len()).any(|w| w == marker.as_bytes()),
        "plaintext marker seen on the wire between the nodes"
    );

    // Both daemons show the connection with both identities (held open with curl's telnet
    // mode while its stdin stays open).
    let _held =
        f.a.command("sh")
            .args(["-c", &format!("sleep 15 | curl -s --max-time 15 telnet://{}:8000 >/dev/null", f.b.addr())])
            .spawn()
            .unwrap();
    let rows = wait_until("an outbound row on node-a", Duration::from_secs(10), || {
        let v = admin_get(&f.a, "/connections")?;
        v.as_array()?.iter().any(|r| r["state"] == "established").then(|| v.to_string())
    });
    assert!(rows.contains(FRONTEND) && rows.contains(ORDERS), "{rows}");
    assert!(rows.contains("X25519MLKEM768"), "post-quantum hybrid key exchange: {rows}");
    assert!(rows.contains("TLSv1_3") || rows.contains("TLS1.3") || rows.contains("1.3"), "{rows}");
    let rows_b = wait_until("an inbound row on node-b", Duration::from_secs(10), || {
        let s = admin_get(&f.b, "/connections")?.to_string();
        s.contains(FRONTEND).then_some(s)
    });
    assert!(rows_b.contains("MUTUAL"), "{rows_b}");

    // The intruder (curl as uid 65534) holds a valid SVID of its own but the server's ingress
    // rule does not list it: refused in the handshake.
    let out = sh(&f.a, &format!("setpriv --reuid 65534 --regid 65534 --clear-groups curl -s --max-time 10 {url}"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&marker), "the intruder must be refused");
    assert!(!out.status.success());
    assert!(f.daemon_log(1).contains("spiffe://example.com/intruder"), "node-b names the refused identity");

    // Counters in /metrics.
    let metrics = String::from_utf8(sh(&f.b, "curl -s http://127.0.0.1:15000/metrics").stdout).unwrap();
    assert!(metrics.contains("riptides_daemon_dataplane_connections_total{direction=\"inbound\"}"), "{metrics}");
    assert!(
        metrics.contains("riptides_daemon_dataplane_connection_failures_total{direction=\"inbound\"} 1"),
        "the intruder's refusal is counted: {metrics}"
    );

    // A client that is not enrolled (the control-plane host has no daemon) sends plaintext to
    // the MUTUAL port: refused.
    let out = f.curl(&f.cp, &url);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&marker), "plaintext must be refused on a MUTUAL port");

    // A policy change reaches new connections quickly: drop the frontend from the allowed list.
    let changed = POLICY.replace(
        "        - \"spiffe://example.com/frontend\"\n---",
        "        - \"spiffe://example.com/monitoring\"\n---",
    );
    assert_ne!(changed, POLICY);
    let applied = Instant::now();
    f.apply(&changed);
    let took = wait_until("the policy change to refuse the frontend", Duration::from_secs(10), || {
        let out = f.curl(&f.a, &url);
        (!String::from_utf8_lossy(&out.stdout).contains(&marker)).then(|| applied.elapsed())
    });
    eprintln!("policy change applied to new connections after {took:?}");
    f.apply(POLICY);
    wait_until("the policy to allow the frontend again", Duration::from_secs(10), || {
        String::from_utf8_lossy(&f.curl(&f.a, &url).stdout).contains(&marker).then_some(())
    });
}

/// Extra policy: TLS passthrough to an `openssl s_server` and a PERMISSIVE port on node-b, an
/// external SIMPLE service and a plaintext legacy service on the control-plane host (no daemon).
const MORE_POLICY: &str = r#"
apiVersion: core.riptides.io/v1alpha1
kind: Service
metadata: {name: orders-tls}
spec:
  labels: {tier: backend}
  addresses: [{address: NODE_B_ADDR, port: 8443}, {address: NODE_B_ADDR, port: 8002}]
---
apiVersion: core.riptides.io/v1alpha1
kind: WorkloadIdentity
metadata: {name: orders}
spec:
  workloadID: orders-service
  scope: {daemon: {id: node-b}}
  selectors: [{process:name: python3}]
  ingress:
    - port: 8000
      allowedSPIFFEIDs: ["spiffe://example.com/frontend"]
    - port: 8443
      allowedSPIFFEIDs: ["spiffe://example.com/frontend"]
    - port: 8002
      connection: {tls: {mode: PERMISSIVE}}
---
apiVersion: core.riptides.io/v1alpha1
kind: Service
metadata: {name: external}
spec:
  labels: {tier: external}
  external: true
  addresses: [{address: CP_ADDR, port: 4433}, {address: CP_ADDR, port: 4434}]
  tls:
    serverName: ext.example.net
    caBundle: |
CA_PEM
---
apiVersion: core.riptides.io/v1alpha1
kind: Service
metadata: {name: legacy}
spec:
  labels: {tier: legacy}
  addresses: [{address: CP_ADDR, port: 9000}]
---
apiVersion: core.riptides.io/v1alpha1
kind: WorkloadIdentity
metadata: {name: frontend}
spec:
  workloadID: frontend
  scope: {daemon: {id: node-a}}
  selectors: [{process:name: curl}]
  egress:
    - selectors: [{tier: backend}]
      connection: {tls: {mode: MUTUAL}}
      allowedSPIFFEIDs: ["spiffe://example.com/orders-service"]
    - selectors: [{tier: external}]
      connection: {tls: {mode: SIMPLE}}
    - selectors: [{tier: legacy}]
      connection: {tls: {mode: PERMISSIVE}}
"#;

#[test]
fn passthrough_simple_and_permissive() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    // An external CA and a server certificate for ext.example.net, and a self-signed one for
    // the application's own TLS on node-b.
    let host_tools = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {d} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=ext-ca 2>/dev/null \
             && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ext.key -out ext.csr -subj /CN=ext.example.net 2>/dev/null \
             && printf 'subjectAltName=DNS:ext.example.net\\n' > ext.ext \
             && openssl x509 -req -in ext.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out ext.pem -days 1 -extfile ext.ext 2>/dev/null \
             && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout app.key -out app.pem -days 1 -subj /CN=orders.internal 2>/dev/null"
        ))
        .status()
        .unwrap();
    assert!(host_tools.success(), "making test certificates with openssl");
    let ca_pem: String =
        std::fs::read_to_string(dir.path().join("ca.pem")).unwrap().lines().map(|l| format!("      {l}\n")).collect();
    let more = MORE_POLICY.replace("CA_PEM\n", &ca_pem);
    let f = Fixture::start("e2ep", &format!("{POLICY}\n---\n{more}"), &[]);
    f.wait_identity(&f.a, FRONTEND);
    f.wait_identity(&f.b, ORDERS);

    // TLS passthrough: curl speaks TLS itself to openssl s_server on node-b; the daemons wrap
    // it in the outer mTLS (ALPN riptides/passthrough/1) without re-encrypting it.
    let _app_tls =
        f.b.command("openssl")
            .args(["s_server", "-quiet", "-accept", "8443", "-www", "-cert"])
            .arg(dir.path().join("app.pem"))
            .arg("-key")
            .arg(dir.path().join("app.key"))
            .output_to(OutputTo::TempLog)
            .spawn()
            .unwrap();
    wait_listening(&f.b, 8443);
    let out = f.curl(&f.a, &format!("https://{}:8443/", f.b.addr()));
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains("s_server"),
        "curl -> s_server through the passthrough tunnel: {body} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(f.daemon_log(0).contains("Passthrough"), "node-a used ALPN riptides/passthrough/1");

    // PERMISSIVE ingress: a non-enrolled plaintext client and the enrolled frontend (mTLS).
    let (_p, marker) = f.http_server(&f.b, 8002);
    let url = format!("http://{}:8002/marker.txt", f.b.addr());
    assert_eq!(
        String::from_utf8_lossy(&f.curl(&f.cp, &url).stdout),
        marker,
        "non-enrolled plaintext accepted on PERMISSIVE"
    );
    assert_eq!(String::from_utf8_lossy(&f.curl(&f.a, &url).stdout), marker, "enrolled client on PERMISSIVE");
    // The rows are gone once these short connections closed; the log tells the modes.
    assert!(f.daemon_log(1).contains("inbound mTLS accepted"), "the enrolled client used mTLS");

    // SIMPLE to an external service (no daemon there): TLS 1.2 and TLS 1.3 servers; the
    // application sends plaintext, the daemon originates TLS and verifies ext.example.net
    // against the Service's caBundle.
    for (port, flag, want) in [(4433, "-tls1_2", "TLSv1.2"), (4434, "-tls1_3", "TLSv1.3")] {
        let _ext =
            f.cp.command("openssl")
                .args(["s_server", "-quiet", flag, "-accept", &port.to_string(), "-www", "-cert"])
                .arg(dir.path().join("ext.pem"))
                .arg("-key")
                .arg(dir.path().join("ext.key"))
                .output_to(OutputTo::TempLog)
                .spawn()
                .unwrap();
        wait_listening(&f.cp, port);
        let out = f.curl(&f.a, &format!("http://{}:{port}/", f.cp.addr()));
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(body.contains(want), "SIMPLE over {want}: {body} {}", String::from_utf8_lossy(&out.stderr));
    }

    // PERMISSIVE egress to a destination with no daemon: mTLS is tried, the peer is not a
    // Riptides node, the connection falls back to plaintext (and is remembered).
    let (_legacy, marker) = f.http_server(&f.cp, 9000);
    let url = format!("http://{}:9000/marker.txt", f.cp.addr());
    assert_eq!(
        String::from_utf8_lossy(&f.curl(&f.a, &url).stdout),
        marker,
        "PERMISSIVE egress falls back to plaintext"
    );
    assert!(f.daemon_log(0).contains("not a Riptides node"), "the fallback is logged");
    assert_eq!(String::from_utf8_lossy(&f.curl(&f.a, &url).stdout), marker, "and is remembered");
}

#[test]
fn rotation_during_a_long_lived_connection_and_half_open_flood() {
    // Workload SVIDs live 20 s, so they rotate at about 10 s.
    let f = Fixture::start("e2er", POLICY, &["--svid-ttl-secs", "20"]);
    f.wait_identity(&f.a, FRONTEND);
    f.wait_identity(&f.b, ORDERS);
    let (_server, marker) = f.http_server(&f.b, 8000);
    let url = format!("http://{}:8000/marker.txt", f.b.addr());
    assert_eq!(String::from_utf8_lossy(&f.curl(&f.a, &url).stdout), marker);
    let not_after = |host| -> Option<u64> {
        let v = admin_get(host, "/config_dump")?;
        v["identities"].as_array()?.iter().find(|i| i["spiffeID"] == FRONTEND)?["notAfter"]
            .as_str()
            .map(|s| s.len() as u64 + s.bytes().map(u64::from).sum::<u64>())
    };
    let before = not_after(&f.a).expect("frontend SVID");
    let _held =
        f.a.command("sh")
            .args(["-c", &format!("sleep 40 | curl -s --max-time 40 telnet://{}:8000 >/dev/null", f.b.addr())])
            .spawn()
            .unwrap();
    let established = || {
        admin_get(&f.a, "/connections")
            .is_some_and(|v| v.as_array().is_some_and(|r| r.iter().any(|r| r["state"] == "established")))
    };
    wait_until("the long-lived connection", Duration::from_secs(10), || established().then_some(()));
    wait_until("the frontend SVID to rotate", Duration::from_secs(30), || {
        (not_after(&f.a) != Some(before)).then_some(())
    });
    assert!(established(), "the long-lived connection survives the rotation");
    assert_eq!(String::from_utf8_lossy(&f.curl(&f.a, &url).stdout), marker, "new connections use the new SVID");

    // 1,000 half-open connections from a non-enrolled host to the MUTUAL port: each is dropped
    // after the sniff timeout, memory stays bounded, and real traffic still flows meanwhile.
    let pid = f.daemons[1].pid();
    let rss = |pid: u32| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let before_kib = rss(pid);
    let mut flood = f
        .cp
        .command("python3")
        .args([
            "-c",
            &format!(
                "import socket,time\nss=[]\nfor _ in range(1000):\n  s=socket.socket(); s.settimeout(5); s.connect(('{}',8000)); ss.append(s)\nprint('open',len(ss),flush=True)\ntime.sleep(8)",
                f.b.addr()
            ),
        ])
        .output_to(OutputTo::TempLog)
        .spawn()
        .unwrap();
    wait_until("1000 half-open connections", Duration::from_secs(20), || {
        flood.log().contains("open 1000").then_some(())
    });
    let during_kib = rss(pid);
    assert_eq!(String::from_utf8_lossy(&f.curl(&f.a, &url).stdout), marker, "real traffic flows during the flood");
    let _ = flood.wait_timeout(Duration::from_secs(20));
    eprintln!("node-b daemon RSS: {before_kib} KiB before, {during_kib} KiB with 1000 half-open connections");
    assert!(during_kib < before_kib + 64 * 1024, "memory stays bounded: {before_kib} -> {during_kib} KiB");
    // Dropped, they leave the live table; the table remembers them as refused, bounded.
    let refused = wait_until("the half-open connections to be dropped", Duration::from_secs(15), || {
        let v = admin_get(&f.b, "/connections")?;
        let rows = v.as_array()?;
        let is_refused = |r: &&serde_json::Value| r["state"].as_str().is_some_and(|s| s.starts_with("refused: "));
        let live = rows.len() - rows.iter().filter(is_refused).count();
        (live < 5).then(|| rows.iter().filter(is_refused).count())
    });
    assert!(
        refused <= riptides_node::dataplane::table::REFUSED_CAPACITY,
        "at most {} refused rows are remembered, got {refused}",
        riptides_node::dataplane::table::REFUSED_CAPACITY
    );
}
