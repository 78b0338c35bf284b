//! Attestation beyond join tokens, end to end with the real `riptides-controlplane` and
//! `riptides-daemon` binaries in network namespaces the test makes: a control-plane host and a
//! node host. On the node, a fake instance metadata service listens on its own link-local
//! address 169.254.169.254 (inside that namespace only) and serves an AWS identity document
//! and a GCP identity token signed by keys of the test; the daemons use the default metadata
//! URL. Every method family attests: signed document (AWS IID, trust on first use), bearer
//! tokens (GCP IIT from the metadata server, Kubernetes SAT and GitHub-style JWT from files),
//! and challenge-response (X.509 and SSH certificate proof of possession).

mod e2e;
#[path = "../../cp/tests/attest_support/mod.rs"]
mod support;

use std::path::Path;
use std::time::Duration;

use e2e::*;
use riptides_chaos_tests::{ChildGuard, Host, OutputTo, Topology};
use serde_json::{json, Value};
use support::*;

const FAKE_METADATA: &str = r#"
import http.server, os, sys
d = sys.argv[1]
TOKEN = "imds-session-token"
class H(http.server.BaseHTTPRequestHandler):
    def send(self, code, body=b""):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_PUT(self):
        if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            return self.send(200, TOKEN.encode())
        self.send(404)
    def do_GET(self):
        name = None
        if self.path.startswith("/latest/"):
            if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                return self.send(401)
            name = {"/latest/dynamic/instance-identity/document": "document",
                    "/latest/dynamic/instance-identity/signature": "signature"}.get(self.path)
        elif self.path.startswith("/computeMetadata/v1/instance/service-accounts/default/identity?"):
            if self.headers.get("Metadata-Flavor") != "Google" or "format=full" not in self.path \
                    or "audience=riptides-cp" not in self.path:
                return self.send(403)
            name = "gcp-token"
        if name is None:
            return self.send(404)
        with open(os.path.join(d, name), "rb") as f:
            self.send(200, f.read())
    def log_message(self, *a):
        pass
http.server.HTTPServer(("169.254.169.254", 80), H).serve_forever()
"#;

struct Env {
    dir: tempfile::TempDir,
    cp: Host,
    node: Host,
    pin: String,
    procs: Vec<ChildGuard>,
    // Last: namespaces go after the processes in them.
    _topo: Topology,
}

impl Env {
    fn ctl_apply(&self, object: &Value) {
        let out = self
            .cp
            .command(bin("riptides"))
            .arg("--kubeconfig")
            .arg(self.dir.path().join("cp/admin.kubeconfig"))
            .args(["ctl", "apply", "-f", "-"])
            .stdin(object.to_string().into_bytes())
            .timeout(Duration::from_secs(20))
            .output_unchecked()
            .expect("riptides");
        assert!(out.status.success(), "apply: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Starts a daemon on the node with `args` (after the common ones); `n` picks its data dir
    /// and admin port.
    fn daemon(&mut self, n: u16, args: &[&str]) -> usize {
        let data = self.dir.path().join(format!("node-{n}"));
        let g = self
            .node
            .command(bin("riptides-daemon"))
            .args([
                "--controlplane",
                &format!("{}:9443", self.cp.addr()),
                "--controlplane-tunnel",
                &format!("{}:8001", self.cp.addr()),
                "--trust-domain",
                "example.com",
                "--ca-pin",
                &self.pin,
                "--data-dir",
                &data.display().to_string(),
                "--admin-addr",
                &format!("127.0.0.1:{}", 15000 + n),
                "--dataplane",
                "none",
            ])
            .args(args)
            .env("RUST_LOG", "info")
            .output_to(OutputTo::TempLog)
            .spawn()
            .unwrap();
        self.procs.push(g);
        self.procs.len() - 1
    }

    fn wait_log(&self, i: usize, what: &str, needles: &[&str]) -> String {
        wait_until(what, Duration::from_secs(40), || {
            let log = self.procs[i].log();
            needles.iter().all(|n| log.contains(n)).then_some(log)
        })
    }
}

fn verifier(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "auth.riptides.io/v1alpha1", "kind": "Verifier",
           "metadata": {"name": name, "namespace": "riptides-system"}, "spec": spec})
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn every_method_family_attests_with_the_real_binaries() {
    let dir = tempfile::tempdir().unwrap();
    let mut topo = Topology::new("att").expect("namespaces (needs root)");
    let lan = topo.lan("lan").unwrap();
    let cp = topo.host("cp", lan).unwrap();
    let node = topo.host("node", lan).unwrap();
    let cp_proc = cp
        .command(bin("riptides-controlplane"))
        .args(riptides_chaos_tests::product::controlplane_args(&dir.path().join("cp"), "example.com"))
        .env("RUST_LOG", "info")
        .output_to(OutputTo::TempLog)
        .spawn()
        .unwrap();
    let pin = wait_until("the control plane", Duration::from_secs(20), || {
        riptides_chaos_tests::product::ca_pin_in_log(&cp_proc.log())
    });
    let mut env = Env { dir, cp, node, pin, procs: vec![cp_proc], _topo: topo };
    let files = env.dir.path().join("proofs");
    std::fs::create_dir_all(&files).unwrap();

    // The fake metadata service, on the node's own link-local address.
    let aws = AwsSigner::new();
    let doc = AwsSigner::document("123456789012", "eu-west-1", "i-0e2e");
    write(&files.join("document"), &doc);
    write(&files.join("signature"), &aws.sign(&doc));
    let google = Issuer::rs256("https://accounts.google.com");
    let gcp_token = google.token(json!({"aud": "riptides-cp", "sub": "1",
        "google": {"compute_engine": {"project_id": "acme", "zone": "europe-west1-b", "instance_id": "4242", "instance_name": "vm-e2e"}}}));
    write(&files.join("gcp-token"), &gcp_token);
    write(&files.join("imds.py"), FAKE_METADATA);
    let out = sh(&env.node, "ip addr add 169.254.169.254/32 dev lo && ip link set lo up");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let imds = env
        .node
        .command("python3")
        .arg(files.join("imds.py"))
        .arg(&files)
        .output_to(OutputTo::TempLog)
        .spawn()
        .unwrap();
    env.procs.push(imds);
    wait_listening(&env.node, 80);

    // Verifiers for every method.
    let k8s = Issuer::es256("https://kubernetes.default.svc");
    let gh = Issuer::es256("https://token.actions.githubusercontent.com");
    let x509 = X509Ca::new("fleet");
    let ssh = SshCa::new();
    for v in [
        verifier(
            "aws",
            json!({"method": "AWSIID", "workloadIDTemplate": "riptides/daemon/aws/{{account}}/{{region}}/{{instance_id}}",
            "awsIID": {"certificates": aws.cert_pem, "accounts": ["123456789012"]}}),
        ),
        verifier(
            "gcp",
            json!({"method": "GCPIIT", "workloadIDTemplate": "riptides/daemon/gcp/{{project_id}}/{{instance_name}}",
            "gcpIIT": {"jwks": google.jwks(), "audience": "riptides-cp", "projects": ["acme"]}}),
        ),
        verifier(
            "k8s",
            json!({"method": "K8sSAT", "workloadIDTemplate": "riptides/daemon/k8s/{{cluster}}/{{node_name}}",
            "k8sSAT": {"cluster": "prod", "issuer": k8s.iss, "jwks": k8s.jwks(), "audiences": ["riptides-cp"]}}),
        ),
        verifier(
            "github",
            json!({"method": "GitHubActions", "workloadIDTemplate": "riptides/daemon/gha/{{repository}}/{{id}}",
            "requiredMetadata": {"repository": "acme/app"}, "jwt": {"jwks": gh.jwks(), "audiences": ["riptides"]}}),
        ),
        verifier(
            "x509",
            json!({"method": "X509CertPOP", "workloadIDTemplate": "riptides/daemon/x509/{{cn}}",
            "x509CertPOP": {"caBundle": x509.pem}}),
        ),
        verifier(
            "ssh",
            json!({"method": "SSHCertPOP", "workloadIDTemplate": "riptides/daemon/ssh/{{principal}}",
            "sshCertPOP": {"certAuthorities": [ssh.line()]}}),
        ),
    ] {
        env.ctl_apply(&v);
    }

    // Signed document from the metadata service at its default address.
    let a = env.daemon(1, &["--attestation", "aws"]);
    env.wait_log(
        a,
        "AWS attestation",
        &["attested", "spiffe://example.com/riptides/daemon/aws/123456789012/eu-west-1/i-0e2e"],
    );
    // Trust on first use: a second daemon on the same instance (new data dir, new key) is refused.
    let again = env.daemon(2, &["--attestation", "aws"]);
    let log = env.wait_log(again, "the replayed AWS document refused", &["AlreadyAttested"]);
    assert!(!log.contains(&aws.sign(&doc)[..40]), "the daemon logged the signature");

    // Bearer tokens: GCP from the metadata service, Kubernetes and GitHub Actions from files.
    let g = env.daemon(3, &["--attestation", "gcp", "--gcp-audience", "riptides-cp"]);
    env.wait_log(g, "GCP attestation", &["attested", "spiffe://example.com/riptides/daemon/gcp/acme/vm-e2e"]);
    let sat = k8s.token(json!({"aud": ["riptides-cp"], "sub": "system:serviceaccount:riptides:daemon",
        "kubernetes.io": {"namespace": "riptides", "serviceaccount": {"name": "daemon", "uid": "u1"},
                          "pod": {"name": "riptides-abc", "uid": "p1"}, "node": {"name": "worker-1", "uid": "n1"}}}));
    write(&files.join("k8s-token"), &sat);
    let k = env.daemon(
        4,
        &["--attestation", "k8s", "--attestation-token-file", &files.join("k8s-token").display().to_string()],
    );
    env.wait_log(k, "Kubernetes attestation", &["attested", "spiffe://example.com/riptides/daemon/k8s/prod/worker-1"]);
    write(
        &files.join("gh-token"),
        &gh.token(json!({"aud": "riptides", "repository": "acme/app", "run_id": "7", "run_attempt": "1"})),
    );
    let j = env.daemon(
        5,
        &["--attestation", "jwt", "--attestation-token-file", &files.join("gh-token").display().to_string()],
    );
    env.wait_log(
        j,
        "GitHub Actions attestation",
        &["attested", "spiffe://example.com/riptides/daemon/gha/acme/app/gha-"],
    );
    // A token of another repository is refused, naming the check and not echoing the token.
    let evil = gh.token(json!({"aud": "riptides", "repository": "evil/app", "run_id": "8", "run_attempt": "1"}));
    write(&files.join("evil-token"), &evil);
    let bad = env.daemon(
        6,
        &["--attestation", "jwt", "--attestation-token-file", &files.join("evil-token").display().to_string()],
    );
    let log = env.wait_log(bad, "the foreign repository refused", &["InvalidProof", "requiredMetadata"]);
    assert!(!log.contains(evil.rsplit('.').next().unwrap()), "the daemon logged the token");

    // Challenge-response: X.509 and SSH certificate proof of possession.
    let leaf = x509.leaf("host-e2e");
    write(&files.join("x509.pem"), &leaf.cert_pem);
    write(&files.join("x509.key"), &leaf.key_pem);
    let x = env.daemon(
        7,
        &[
            "--attestation",
            "x509pop",
            "--attestation-cert",
            &files.join("x509.pem").display().to_string(),
            "--attestation-key",
            &files.join("x509.key").display().to_string(),
        ],
    );
    env.wait_log(x, "X.509 attestation", &["attested", "spiffe://example.com/riptides/daemon/x509/host-e2e"]);
    let now = now_unix();
    let host = ssh.host(&["host-e2e.example.com"], now - 60, now + 3600, 2);
    write(&files.join("ssh-cert.pub"), &host.cert_line);
    write(&files.join("ssh-key"), &host.private_key_file());
    let s = env.daemon(
        8,
        &[
            "--attestation",
            "sshpop",
            "--attestation-cert",
            &files.join("ssh-cert.pub").display().to_string(),
            "--attestation-key",
            &files.join("ssh-key").display().to_string(),
        ],
    );
    env.wait_log(s, "SSH attestation", &["attested", "spiffe://example.com/riptides/daemon/ssh/host-e2e.example.com"]);
    // Every daemon holds its mTLS session with its templated identity (the control plane
    // resolves multi-segment daemon IDs through their Daemon resources).
    for (i, what) in [(a, "aws"), (g, "gcp"), (k, "k8s"), (j, "jwt"), (x, "x509pop"), (s, "sshpop")] {
        env.wait_log(i, &format!("{what}: connected with its daemon SVID"), &["policy applied"]);
        let log = env.procs[i].log();
        assert!(!log.contains("is not a daemon identity"), "{what}: {log}");
    }
}
