//! Traces over OTLP/HTTP from the real binaries, and the stable metric names.
//!
//! The test runs its own OTLP receiver on loopback (axum, decoding the protobuf bodies with
//! opentelemetry-proto's types), starts `riptides-controlplane` and `riptides-daemon` with
//! `--otlp-endpoint` pointing at it, enrolls the daemon with a join token, stops both with
//! SIGTERM and then asserts that the spans arrived with their identities: the control plane's
//! `attest` (daemon id) and `session` (daemon, SPIFFE ID, remote address), the daemon's `link`
//! (daemon id, SPIFFE ID), each under its service name. While both run, their `/metrics` are
//! scraped and must export exactly the metric names the README documents.

use riptides_chaos_tests::product::strip_ansi;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;

/// One received span: service, name, string attributes.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    attrs: Vec<(String, String)>,
}

impl Span {
    fn attr(&self, k: &str) -> Option<&str> {
        self.attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
}

type Received = Arc<Mutex<(Vec<Span>, usize)>>;

fn decode(body: &[u8]) -> Vec<Span> {
    let req = ExportTraceServiceRequest::decode(body).expect("an OTLP ExportTraceServiceRequest");
    let text = |v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match v
        .as_ref()
        .and_then(|v| v.value.as_ref())
    {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    };
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(&kv.value))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                let attrs = s.attributes.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect();
                out.push(Span { service: service.clone(), name: s.name.clone(), attrs });
            }
        }
    }
    out
}

/// The receiver: POST /v1/traces with `application/x-protobuf`, answered with an empty
/// ExportTraceServiceResponse.
fn start_receiver(rt: &tokio::runtime::Runtime, received: Received) -> SocketAddr {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let received = received.clone();
            async move {
                assert_eq!(headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/x-protobuf"));
                let spans = decode(&body);
                let mut r = received.lock().unwrap();
                r.0.extend(spans);
                r.1 += 1;
                ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
            }
        }),
    );
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    })
}

fn bin(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_riptides")).parent().unwrap().join(name);
    assert!(p.is_file(), "{} missing: cargo build --workspace --bins first", p.display());
    p
}

/// Kills the child on drop unless it was stopped.
struct Proc(Option<Child>);
impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
impl Proc {
    /// SIGTERM, then wait for a clean exit.
    fn stop(&mut self) {
        let mut c = self.0.take().expect("running");
        Command::new("kill").args(["-TERM", &c.id().to_string()]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                eprintln!("exited: {st}");
                return;
            }
            assert!(Instant::now() < deadline, "no exit 20 s after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Reads `reader` line by line on a thread until `want` returns Some for a line.
fn wait_line<R: std::io::Read + Send + 'static>(r: R, want: fn(&str) -> Option<String>) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            let line = strip_ansi(&line);
            if !sent {
                if let Some(v) = want(&line) {
                    let _ = tx.send(v);
                    sent = true;
                }
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("the expected log line")
}

fn http_get(addr: &str, path: &str) -> String {
    let out = Command::new("curl").args(["-sf", "--max-time", "5", &format!("http://{addr}{path}")]).output().unwrap();
    assert!(out.status.success(), "GET {addr}{path}");
    String::from_utf8(out.stdout).unwrap()
}

fn metric_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

fn documented_metrics() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `riptides_"))
        .map(|l| format!("riptides_{}", l.split('`').next().unwrap()))
        .collect()
}

#[test]
fn spans_reach_an_otlp_receiver_with_identities_and_metrics_match_the_readme() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let received: Received = Arc::default();
    let otlp = format!("http://{}", start_receiver(&rt, received.clone()));
    let dir = tempfile::tempdir().unwrap();

    // The control plane, every listener on an ephemeral loopback port.
    let mut cp = Command::new(bin("riptides-controlplane"));
    cp.arg("--data-dir").arg(dir.path().join("cp")).args([
        "--api-addr=127.0.0.1:0",
        "--quic-addr=127.0.0.1:0",
        "--tunnel-addr=127.0.0.1:0",
        "--health-addr=127.0.0.1:0",
        "--otlp-endpoint",
        &otlp,
    ]);
    cp.env("RUST_LOG", "info").stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cp.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    // Owned (killed on drop) before anything can fail.
    let mut cp = Proc(Some(child));
    let first = wait_line(stderr, |l| l.starts_with("riptides-controlplane: API").then(|| l.to_owned()));
    let field = |after: &str| first.split(after).nth(1).unwrap().split([',', ' ']).next().unwrap().to_owned();
    let (quic, tcp, health, pin) = (field("quic://"), field("tcp://"), field("health http://"), field("CA pin "));

    let kubeconfig = dir.path().join("cp/admin.kubeconfig");
    let token = Command::new(bin("riptides"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["token", "create", "--ttl", "10m", "--daemon-id", "node-1"])
        .output()
        .unwrap();
    assert!(token.status.success(), "{}", String::from_utf8_lossy(&token.stderr));
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();

    let mut d = Command::new(bin("riptides-daemon"));
    d.args(["--controlplane", &quic, "--controlplane-tunnel", &tcp, "--ca-pin", &pin, "--join-token", &token])
        .arg("--data-dir")
        .arg(dir.path().join("node"))
        .args(["--admin-addr=127.0.0.1:0", "--dataplane=none", "--log=info", "--otlp-endpoint", &otlp])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = d.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut daemon = Proc(Some(child));
    let admin = wait_line(stdout, |l| {
        l.contains("riptides-daemon started").then(|| {
            let v = l.split("admin=").nth(1).unwrap().split_whitespace().next().unwrap();
            v.trim_start_matches("Some(").trim_end_matches(')').to_owned()
        })
    });

    // Connected: /readyz, then both scrapes.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !Command::new("curl").args(["-sf", &format!("http://{admin}/readyz")]).output().unwrap().status.success() {
        assert!(Instant::now() < deadline, "the daemon did not become ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut exported = metric_names(&http_get(&health, "/metrics"));
    exported.extend(metric_names(&http_get(&admin, "/metrics")));
    assert_eq!(exported, documented_metrics(), "exported metric names differ from the README's table");

    daemon.stop();
    cp.stop();

    let deadline = Instant::now() + Duration::from_secs(10);
    let find = |service: &str, name: &str| -> Option<Span> {
        received.lock().unwrap().0.iter().find(|s| s.service == service && s.name == name).cloned()
    };
    while find("riptides-daemon", "link").is_none() || find("riptides-controlplane", "session").is_none() {
        assert!(Instant::now() < deadline, "spans missing; got {:#?}", received.lock().unwrap().0);
        std::thread::sleep(Duration::from_millis(100));
    }
    let spiffe = "spiffe://riptides.local/riptides/daemon/node-1";
    let attest = find("riptides-controlplane", "attest").expect("attest span");
    assert_eq!(attest.attr("daemon_id"), Some("node-1"), "{attest:?}");
    let session = find("riptides-controlplane", "session").unwrap();
    assert_eq!(session.attr("daemon"), Some("node-1"), "{session:?}");
    assert_eq!(session.attr("spiffe_id"), Some(spiffe), "{session:?}");
    assert!(session.attr("remote").is_some_and(|r| r.starts_with("127.0.0.1:")), "{session:?}");
    let link = find("riptides-daemon", "link").unwrap();
    assert_eq!(link.attr("daemon_id"), Some("node-1"), "{link:?}");
    assert_eq!(link.attr("spiffe_id"), Some(spiffe), "{link:?}");
    let (spans, requests) = {
        let r = received.lock().unwrap();
        (r.0.len(), r.1)
    };
    eprintln!("received {spans} spans in {requests} OTLP requests");
}

#[test]
fn a_bad_endpoint_is_refused_at_start() {
    let out = Command::new(bin("riptides-controlplane"))
        .args(["--otlp-endpoint", "https://collector:4318"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--otlp-endpoint") && err.contains("http://"), "{err}");
    let out = Command::new(bin("riptides-daemon"))
        .args(["--controlplane", "127.0.0.1:1", "--otlp-endpoint", "collector:4318"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--otlp-endpoint"));
}
