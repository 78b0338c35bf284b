//! TLS intercept with credential injection, end to end in namespaces the test makes: the real
//! control plane and daemons (userspace dataplane), Debian's `curl` as the unmodified client
//! (trusting the node's intercept CA with `--cacert`), Python HTTPS servers started by the test
//! on the control-plane host (no daemon there: an external service) that echo the header they
//! received, and a Python token endpoint issuing short-lived tokens.

mod e2e;

use std::path::Path;
use std::time::Duration;

use e2e::*;
use riptides_chaos_tests::{ChildGuard, Host, OutputTo};

/// Echoes what arrived: the Authorization header, body length (Content-Length or chunked) and
/// path. HTTP/1.1 with keep-alive.
const ECHO_SERVER: &str = r#"
import ssl, sys
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def serve(self):
        n = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                n += len(self.rfile.read(size))
                self.rfile.readline()
        else:
            n = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(n)
        auth = self.headers.get("Authorization", "<none>")
        print("REQ", self.path, flush=True)
        body = ("AUTH=%s\nBODY=%d\nPATH=%s\nXTOK=%s\n" % (auth, n, self.path, self.headers.get("X-Api-Token", "<none>"))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = serve
    do_POST = serve
    def log_message(self, *a):
        pass
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv = ThreadingHTTPServer(("0.0.0.0", port), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("listening", port, flush=True)
srv.serve_forever()
"#;

/// Token endpoint: `/token` (client credentials, Basic cid:CLIENT_SECRET), `/exchange`
/// (RFC 8693, subject_token SUBJECT), `/hang` (never answers), `/garbage` (200, not JSON).
const TOKEN_SERVER: &str = r#"
import base64, json, sys, time, urllib.parse, threading
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
port, client_secret, subject = int(sys.argv[1]), sys.argv[2], sys.argv[3]
counts = {"/token": 0, "/exchange": 0}
lock = threading.Lock()
class T(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def reply(self, code, body, ctype="application/json"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(n).decode())
        if self.path == "/hang":
            time.sleep(600)
            return
        if self.path == "/garbage":
            return self.reply(200, b"<html>GARBAGE-BODY-MARKER</html>", "text/html")
        if self.path == "/token":
            want = "Basic " + base64.b64encode(("cid:" + client_secret).encode()).decode()
            ok = self.headers.get("Authorization") == want and form.get("grant_type") == ["client_credentials"]
            prefix = "tok"
        elif self.path == "/exchange":
            ok = form.get("subject_token") == [subject] and form.get("grant_type") == ["urn:ietf:params:oauth:grant-type:token-exchange"]
            prefix = "xch"
        else:
            return self.reply(404, b"{}")
        if not ok:
            return self.reply(401, b'{"error":"invalid_client"}')
        with lock:
            counts[self.path] += 1
            c = counts[self.path]
        print("ISSUED", prefix, c, flush=True)
        self.reply(200, json.dumps({"access_token": "%s-%d" % (prefix, c), "token_type": "Bearer", "expires_in": 2}).encode())
    def log_message(self, *a):
        pass
ThreadingHTTPServer(("0.0.0.0", port), T).serve_forever()
"#;

/// Raw HTTP over TLS from python3 (selected as the frontend too): pipelining, malformed
/// requests, oversized headers, a handshake that never finishes. Prints what it saw.
const RAW_CLIENT: &str = r#"
import socket, ssl, sys, time
addr, cafile, mode = sys.argv[1], sys.argv[2], sys.argv[3]
host, port = addr.rsplit(":", 1)
def tls():
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(["http/1.1"])
    s = socket.create_connection((host, int(port)), timeout=20)
    return ctx.wrap_socket(s, server_hostname="api.example.net")
def read_all(s):
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except (socket.timeout, ssl.SSLError, ConnectionResetError) as e:
        out += ("\n[%s]" % type(e).__name__).encode()
    return out.decode(errors="replace")
if mode == "pipeline":
    s = tls()
    reqs = (b"GET /one HTTP/1.1\r\nHost: api.example.net\r\nAuthorization: Bearer app-sent\r\n\r\n"
            b"POST /two HTTP/1.1\r\nHost: api.example.net\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            b"GET /three HTTP/1.1\r\nHost: api.example.net\r\n\r\n")
    s.sendall(reqs)
    s.settimeout(3)
    got = b""
    while got.count(b"\nXTOK=") < 3:
        b = s.recv(65536)
        if not b:
            break
        got += b
    print(got.decode(errors="replace"), flush=True)
    print("HOLDING", flush=True)
    time.sleep(float(sys.argv[4]))
    s.sendall(b"GET /four HTTP/1.1\r\nHost: api.example.net\r\nConnection: close\r\n\r\n")
    print(read_all(s), flush=True)
elif mode == "malformed":
    s = tls()
    s.sendall(b"THIS IS NOT HTTP\r\n\r\n")
    print(read_all(s), flush=True)
elif mode == "oversized":
    s = tls()
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: api.example.net\r\nX-Big: " + b"a" * 200000 + b"\r\n\r\n")
    except Exception as e:
        print("[send failed: %s]" % type(e).__name__)
    print(read_all(s), flush=True)
elif mode == "stall":
    s = socket.create_connection((host, int(port)), timeout=60)
    # The first bytes of a ClientHello, then nothing.
    s.sendall(bytes.fromhex("160301020001"))
    t = time.time()
    print(read_all(s), flush=True)
    print("CLOSED_AFTER", int(time.time() - t), flush=True)
"#;

const POLICY: &str = r#"
apiVersion: core.riptides.io/v1alpha1
kind: Service
metadata: {name: api}
spec:
  labels: {tier: api}
  external: true
  addresses: [{address: CP_ADDR, port: 4443}, {address: CP_ADDR, port: 4444}]
  tls:
    mode: SIMPLE
    serverName: api.example.net
    caBundle: |
CA_PEM
---
apiVersion: core.riptides.io/v1alpha1
kind: Service
metadata: {name: api-hang}
spec:
  labels: {tier: hang}
  external: true
  addresses: [{address: CP_ADDR, port: 4445}]
  tls:
    mode: SIMPLE
    serverName: api.example.net
    caBundle: |
CA_PEM
---
apiVersion: core.riptides.io/v1alpha1
kind: WorkloadIdentity
metadata: {name: frontend}
spec:
  workloadID: frontend
  scope: {daemon: {id: node-a}}
  selectors: [{process:name: curl}, {process:name: python3}]
  egress:
    - selectors: [{tier: api}, {tier: hang}]
      connection: {tls: {mode: SIMPLE, intercept: true}}
---
apiVersion: core.riptides.io/v1alpha1
kind: WorkloadIdentity
metadata: {name: intruder}
spec:
  workloadID: intruder
  scope: {daemon: {id: node-a}}
  selectors: [{process:name: curl, process:uid: "65534"}]
  egress:
    - selectors: [{tier: api}]
      connection: {tls: {mode: SIMPLE, intercept: true}}
"#;

const STATIC_CREDS: &str = r#"
apiVersion: core.riptides.io/v1alpha1
kind: CredentialSource
metadata: {name: api-key}
spec:
  type: static
  secretValue: STATIC-SECRET-7f3a9c
---
apiVersion: core.riptides.io/v1alpha1
kind: CredentialBinding
metadata: {name: frontend-api}
spec:
  workloadID: frontend
  serviceSelectors: [{tier: api}]
  credentialSource: api-key
  injection: {header: Authorization, format: "Bearer {{credential}}"}
"#;

const TOKEN_CREDS: &str = r#"
apiVersion: core.riptides.io/v1alpha1
kind: CredentialSource
metadata: {name: oauth}
spec:
  type: oAuth2ClientCredentials
  tokenEndpoint: {tokenURL: "http://CP_ADDR:9100/token", clientId: cid, scopes: [api.read]}
  secretValue: CLIENT-SECRET-51d0e2
---
apiVersion: core.riptides.io/v1alpha1
kind: CredentialSource
metadata: {name: exchange}
spec:
  type: tokenExchange
  tokenEndpoint: {tokenURL: "http://CP_ADDR:9100/exchange", audience: api}
  secretValue: SUBJECT-TOKEN-88b4c1
---
apiVersion: core.riptides.io/v1alpha1
kind: CredentialSource
metadata: {name: hang}
spec:
  type: oAuth2ClientCredentials
  tokenEndpoint: {tokenURL: "http://CP_ADDR:9100/hang", clientId: cid}
  secretValue: CLIENT-SECRET-51d0e2
---
apiVersion: core.riptides.io/v1alpha1
kind: CredentialSource
metadata: {name: garbage}
spec:
  type: oAuth2ClientCredentials
  tokenEndpoint: {tokenURL: "http://CP_ADDR:9100/garbage", clientId: cid}
  secretValue: CLIENT-SECRET-51d0e2
---
apiVersion: core.riptides.io/v1alpha1
kind: CredentialBinding
metadata: {name: frontend-oauth}
spec:
  workloadID: frontend
  serviceSelectors: [{tier: api}]
  credentialSource: oauth
  injection: {header: Authorization, format: "Bearer {{credential}}"}
---
apiVersion: core.riptides.io/v1alpha1
kind: CredentialBinding
metadata: {name: intruder-exchange}
spec:
  workloadID: intruder
  serviceSelectors: [{tier: api}]
  credentialSource: exchange
  injection: {header: X-Api-Token}
---
apiVersion: core.riptides.io/v1alpha1
kind: CredentialBinding
metadata: {name: frontend-hang}
spec:
  workloadID: frontend
  serviceSelectors: [{tier: hang}]
  credentialSource: hang
  injection: {header: Authorization, format: "Bearer {{credential}}"}
---
apiVersion: core.riptides.io/v1alpha1
kind: CredentialBinding
metadata: {name: frontend-garbage}
spec:
  workloadID: frontend
  serviceSelectors: [{tier: none}]
  credentialSource: garbage
  injection: {header: Authorization}
"#;

/// Test certificates: a CA for the real server, `api.example.net` signed by it, and a
/// self-signed `api.example.net` (the bad upstream).
fn make_certs(dir: &Path) -> String {
    let d = dir.display();
    let ok = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {d} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=api-ca 2>/dev/null \
             && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout api.key -out api.csr -subj /CN=api.example.net 2>/dev/null \
             && printf 'subjectAltName=DNS:api.example.net\\n' > api.ext \
             && openssl x509 -req -in api.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out api.pem -days 1 -extfile api.ext 2>/dev/null \
             && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout bad.key -out bad.pem -days 1 -subj /CN=api.example.net -addext subjectAltName=DNS:api.example.net 2>/dev/null"
        ))
        .status()
        .unwrap();
    assert!(ok.success(), "making test certificates with openssl");
    std::fs::read_to_string(dir.join("ca.pem")).unwrap().lines().map(|l| format!("      {l}\n")).collect()
}

fn script(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

fn echo_server(f: &Fixture, port: u16, cert: &str) -> ChildGuard {
    let s = script(f.path(), "echo.py", ECHO_SERVER);
    let dir = f.path().join("certs");
    let g =
        f.cp.command("python3")
            .arg(&s)
            .arg(port.to_string())
            .arg(dir.join(format!("{cert}.pem")))
            .arg(dir.join(format!("{cert}.key")))
            .output_to(OutputTo::TempLog)
            .spawn()
            .unwrap();
    wait_listening(&f.cp, port);
    g
}

fn start(prefix: &str, creds: &str) -> Fixture {
    let certs = tempfile::tempdir().unwrap();
    let ca = make_certs(certs.path());
    let policy = format!("{}\n---\n{creds}", POLICY.replace("CA_PEM\n", &ca));
    let f = Fixture::start(prefix, &policy, &[]);
    // Keep the certificates with the fixture's directory.
    let dst = f.path().join("certs");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(certs.path()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    f.wait_identity(&f.a, "spiffe://example.com/frontend");
    f.wait_identity(&f.a, "spiffe://example.com/intruder");
    f
}

fn intercept_ca(f: &Fixture) -> String {
    let p = f.path().join("node-a/intercept/ca.crt");
    wait_until("the intercept CA certificate", Duration::from_secs(10), || p.exists().then_some(()));
    p.display().to_string()
}

/// `curl` through the intercept: returns (status line code, body).
fn curl_https(f: &Fixture, from: &Host, port: u16, path: &str, extra: &str) -> (String, String) {
    let ca = intercept_ca(f);
    let out = sh(
        from,
        &format!(
            "curl -s --max-time 15 --cacert {ca} --resolve api.example.net:{port}:{cp} -w '\\nCODE=%{{http_code}} VERSION=%{{http_version}}' {extra} https://api.example.net:{port}{path}",
            cp = f.cp.addr()
        ),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = text.rsplit("CODE=").next().unwrap_or_default().split_whitespace().next().unwrap_or_default().to_owned();
    (code, format!("{text}\n{}", String::from_utf8_lossy(&out.stderr)))
}

/// A copy of the intercept CA certificate an unprivileged user can read (the data dir is
/// root's, 0700), as a workload would get it from the operator.
fn world_readable_ca(ca: &str) -> tempfile::NamedTempFile {
    use std::os::unix::fs::PermissionsExt;
    let f = tempfile::Builder::new().prefix("riptides-intercept-ca-").suffix(".crt").tempfile_in("/tmp").unwrap();
    std::fs::copy(ca, f.path()).unwrap();
    std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    f
}

fn assert_no_secret(f: &Fixture, secrets: &[&str]) {
    let mut places = vec![("node-a log", f.daemon_log(0)), ("cp log", f.cp_proc.log())];
    for path in ["/config_dump", "/connections", "/metrics"] {
        let out = sh(&f.a, &format!("curl -s --max-time 2 http://127.0.0.1:15000{path}"));
        places.push((path, String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    for (what, text) in &places {
        for s in secrets {
            assert!(!text.contains(s), "{s} leaked into {what}");
        }
    }
}

#[test]
fn intercept_static_credential_bad_upstream_and_bad_input() {
    let f = start("e2ei", STATIC_CREDS);
    let _good = echo_server(&f, 4443, "api");
    let bad = echo_server(&f, 4444, "bad");

    // curl (frontend) over HTTP/1.1: the header it sent is replaced by the bound credential.
    let (code, body) = curl_https(&f, &f.a, 4443, "/hello", "--http1.1 -H 'Authorization: Bearer app-sent'");
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("AUTH=Bearer STATIC-SECRET-7f3a9c"), "credential injected: {body}");
    assert!(!body.contains("app-sent"), "the application's own header is replaced: {body}");
    assert!(body.contains("VERSION=1.1"), "{body}");

    // HTTP/2 between curl and the node (upstream speaks HTTP/1.1), with a body.
    let (code, body) = curl_https(&f, &f.a, 4443, "/h2", "--http2 --data-binary hello-h2-body");
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("VERSION=2"), "curl negotiated h2 with the node: {body}");
    assert!(body.contains("AUTH=Bearer STATIC-SECRET-7f3a9c") && body.contains("BODY=13"), "{body}");

    // Keep-alive: two URLs on one connection.
    let (_, body) = curl_https(&f, &f.a, 4443, "/k1", "https://api.example.net:4443/k2");
    assert_eq!(body.matches("AUTH=Bearer STATIC-SECRET-7f3a9c").count(), 2, "{body}");
    assert!(body.contains("PATH=/k1") && body.contains("PATH=/k2"), "{body}");

    // A workload without a binding (curl as uid 65534: the intruder identity) reaches the
    // server with no credential.
    let ca = intercept_ca(&f);
    let public_ca = world_readable_ca(&ca);
    let out = sh(
        &f.a,
        &format!(
            "setpriv --reuid 65534 --regid 65534 --clear-groups curl -s --max-time 15 --cacert {} --resolve api.example.net:4443:{} https://api.example.net:4443/nobind",
            public_ca.path().display(),
            f.cp.addr(),
        ),
    );
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("AUTH=<none>"), "no credential without a binding: {body}");

    // An upstream with a certificate the Service's CA did not sign: the request fails (502),
    // nothing reaches that server.
    let (code, body) = curl_https(&f, &f.a, 4444, "/must-not-arrive", "");
    assert_eq!(code, "502", "bad upstream certificate fails closed: {body}");
    assert!(body.contains("riptides intercept") && body.contains("api.example.net"), "{body}");
    assert!(!bad.log().contains("must-not-arrive"), "nothing reached the bad upstream");

    // Raw HTTP/1.1: pipelined requests (one chunked), held open to see the binding in
    // /connections, then one more request on the same connection.
    let raw = script(f.path(), "raw.py", RAW_CLIENT);
    let target = format!("{}:4443", f.cp.addr());
    let pipeline =
        f.a.command("python3")
            .args([&raw, &target, &ca, "pipeline", "4"])
            .output_to(OutputTo::TempLog)
            .spawn()
            .unwrap();
    let log = wait_until("the pipelined responses", Duration::from_secs(20), || {
        let l = pipeline.log();
        l.contains("HOLDING").then_some(l)
    });
    assert_eq!(log.matches("HTTP/1.1 200").count(), 3, "three pipelined responses: {log}");
    for p in ["PATH=/one", "PATH=/two", "PATH=/three", "BODY=11"] {
        assert!(log.contains(p), "{p} in {log}");
    }
    assert!(!log.contains("app-sent"), "{log}");
    let last = std::cell::RefCell::new(String::new());
    let rows = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until("the intercepted connection in /connections", Duration::from_secs(10), || {
            let v = admin_get(&f.a, "/connections")?;
            let s = v.to_string();
            *last.borrow_mut() = s.clone();
            s.contains("riptides-system/frontend-api").then_some(s)
        })
    }))
    .unwrap_or_else(|_| {
        panic!("no row with the binding; last /connections: {}\n{}\n{}", last.borrow(), f.daemon_log(0), pipeline.log())
    });
    assert!(rows.contains("intercept (SIMPLE)"), "{rows}");
    let log = wait_until("the fourth request", Duration::from_secs(20), || {
        let l = pipeline.log();
        l.contains("PATH=/four").then_some(l)
    });
    assert!(log.contains("AUTH=Bearer STATIC-SECRET-7f3a9c\nBODY=0\nPATH=/four\n"), "{log}");

    // Malformed HTTP: 400, connection closed.
    let out = sh(&f.a, &format!("python3 {raw} {target} {ca} malformed"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("HTTP/1.1 400"), "malformed request answered 400: {text}");
    // Oversized request head: refused (431) without buffering it all.
    let out = sh(&f.a, &format!("python3 {raw} {target} {ca} oversized"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("HTTP/1.1 431") || text.contains("[ConnectionResetError]") || text.contains("send failed"),
        "oversized head refused: {text}"
    );
    // A client that never finishes its TLS handshake is dropped after the handshake bound.
    let out =
        f.a.command("python3")
            .args([&raw, &target, &ca, "stall"])
            .timeout(Duration::from_secs(60))
            .output_unchecked()
            .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CLOSED_AFTER"), "the stalled handshake was closed: {text}");
    wait_until("the stalled handshake logged", Duration::from_secs(10), || {
        f.daemon_log(0).contains("did not finish its TLS handshake").then_some(())
    });
    // Nothing of this reached the real server.
    assert!(!_good.log().contains("NOT HTTP"));

    // The API never returns the secret; the daemon never shows or logs it.
    let out = f.ctl(&["ctl", "get", "credentialsources", "api-key", "-o", "json"], None);
    let got = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && got.contains("api-key"), "{got} {}", String::from_utf8_lossy(&out.stderr));
    assert!(!got.contains("STATIC-SECRET"), "the API returned the secret: {got}");
    let policy_file = f.path().join("node-a/policy.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&policy_file).unwrap().permissions().mode() & 0o777, 0o600);
    let key = f.path().join("node-a/intercept/ca.key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    // node-b has no workload with a binding: no secret delivered there.
    let b_policy = std::fs::read_to_string(f.path().join("node-b/policy.json")).unwrap_or_default();
    assert!(!b_policy.contains("STATIC-SECRET"), "secret delivered to a node without a binding");
    assert_no_secret(&f, &["STATIC-SECRET-7f3a9c"]);
}

#[test]
fn intercept_token_sources_refresh_and_bad_token_endpoints() {
    let f = start("e2et", TOKEN_CREDS);
    let _good = echo_server(&f, 4443, "api");
    let _hang_api = echo_server(&f, 4445, "api");
    let tok = script(f.path(), "token.py", TOKEN_SERVER);
    let tokens =
        f.cp.command("python3")
            .args([&tok, "9100", "CLIENT-SECRET-51d0e2", "SUBJECT-TOKEN-88b4c1"])
            .output_to(OutputTo::TempLog)
            .spawn()
            .unwrap();
    wait_listening(&f.cp, 9100);

    // OAuth2 client credentials: short-lived tokens (2 s), refreshed in the background; a
    // request made later carries a newer token.
    let token_of = |body: &str| -> Option<u64> {
        body.split("AUTH=Bearer tok-").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    let first = wait_until("a request with an OAuth2 token", Duration::from_secs(30), || {
        let (code, body) = curl_https(&f, &f.a, 4443, "/t1", "");
        if code == "200" {
            token_of(&body)
        } else {
            None
        }
    });
    let later = wait_until("a refreshed token", Duration::from_secs(30), || {
        let (_, body) = curl_https(&f, &f.a, 4443, "/t2", "");
        token_of(&body).filter(|n| *n > first)
    });
    assert!(later > first);
    assert!(tokens.log().matches("ISSUED tok").count() >= 2, "the token endpoint saw refreshes");

    // RFC 8693 token exchange for the intruder's binding, in its own header.
    let public_ca = world_readable_ca(&intercept_ca(&f));
    let ca = public_ca.path().display().to_string();
    let body = wait_until("a request with an exchanged token", Duration::from_secs(30), || {
        let out = sh(
            &f.a,
            &format!(
                "setpriv --reuid 65534 --regid 65534 --clear-groups curl -s -D - --max-time 15 --cacert {ca} --resolve api.example.net:4443:{} https://api.example.net:4443/x -H 'X-Api-Token: mine'",
                f.cp.addr()
            ),
        );
        let b = String::from_utf8_lossy(&out.stdout).into_owned();
        b.contains("PATH=/x").then_some(b)
    });
    assert!(body.contains("AUTH=<none>") && body.contains("XTOK=xch-"), "exchanged token in X-Api-Token: {body}");
    assert!(!body.contains("XTOK=mine"), "{body}");

    // A token endpoint that hangs and one that answers garbage: bounded, visible in the
    // status, and requests needing the hung source are refused with a clear error.
    let dump = wait_until("both bad sources reported", Duration::from_secs(60), || {
        let v = admin_get(&f.a, "/config_dump")?;
        let s = v["intercept"]["credentialSources"].to_string();
        (s.contains("did not answer within") && s.contains("not a token response")).then_some(s)
    });
    assert!(dump.contains("riptides-system/hang") && dump.contains("riptides-system/garbage"), "{dump}");
    let readyz =
        String::from_utf8_lossy(&sh(&f.a, "curl -s --max-time 2 http://127.0.0.1:15000/readyz").stdout).into_owned();
    assert!(readyz.contains("degraded:") && readyz.contains("credential source riptides-system/hang"), "{readyz}");
    let (code, body) = curl_https(&f, &f.a, 4445, "/needs-hang", "");
    assert_eq!(code, "503", "no credential, no request: {body}");
    assert!(body.contains("frontend-hang"), "{body}");
    assert!(!_hang_api.log().contains("needs-hang"), "nothing forwarded without the credential");

    let log = f.daemon_log(0);
    assert!(!log.contains("GARBAGE-BODY-MARKER"), "the garbage body is not logged");
    assert_no_secret(&f, &["CLIENT-SECRET-51d0e2", "SUBJECT-TOKEN-88b4c1", "tok-1\"", "Bearer tok-"]);
    // Issued tokens never appear in the daemon's log or dumps.
    for n in 1..=later {
        let t = format!("tok-{n}");
        assert!(!log.contains(&format!("{t}\n")) && !log.contains(&format!("{t} ")), "{t} in the log");
    }
}
