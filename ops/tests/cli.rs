//! The `riptides` binary against a control plane started in-process.

mod common;

use aws_lc_rs::digest;
use common::{manifest, Fixture};
use serde_json::Value;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn apply_get_delete_round_trip() {
    let f = Fixture::start();
    let app = f.file("app.yaml", &manifest());

    let out = f.riptides(&["ctl", "apply", "-f", &app]).ok();
    assert_eq!(
        out.stdout, "verifier/join created\nservice/orders created\nworkloadidentity/frontend created\n",
        "{}",
        out.stderr
    );

    let out = f.riptides(&["ctl", "apply", "-f", &app]).ok();
    assert_eq!(out.stdout, "verifier/join unchanged\nservice/orders unchanged\nworkloadidentity/frontend unchanged\n");

    let changed = f.file("app2.yaml", &manifest().replace("- port: 8000", "- port: 8443"));
    let out = f.riptides(&["ctl", "apply", "-f", &changed]).ok();
    assert_eq!(out.stdout, "verifier/join unchanged\nservice/orders unchanged\nworkloadidentity/frontend configured\n");
    let relabelled = f.file(
        "app3.yaml",
        &manifest().replace("- port: 8000", "- port: 8443").replace("app: orders", "app: orders-v2"),
    );
    let out = f.riptides(&["ctl", "apply", "-f", &relabelled]).ok();
    assert_eq!(out.stdout, "verifier/join unchanged\nservice/orders configured\nworkloadidentity/frontend unchanged\n");

    // Table output: NAME and AGE, NAMESPACE with -A, extra columns with -o wide.
    let out = f.riptides(&["ctl", "get", "wi"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(lines[0].starts_with("NAME ") && lines[0].ends_with("AGE"), "{}", lines[0]);
    assert!(lines[1].starts_with("frontend "), "{}", lines[1]);
    let out = f.riptides(&["ctl", "get", "workloadidentities", "-A"]).ok();
    assert!(out.stdout.starts_with("NAMESPACE "), "{}", out.stdout);
    assert!(out.stdout.lines().nth(1).unwrap().starts_with("riptides-system   frontend "), "{}", out.stdout);
    let out = f.riptides(&["ctl", "get", "wi", "-o", "wide"]).ok();
    assert!(out.stdout.contains("WORKLOAD-ID") && out.stdout.contains("group:web"), "{}", out.stdout);
    let out = f.riptides(&["ctl", "get", "svc", "orders", "-o", "wide"]).ok();
    assert!(out.stdout.contains("10.0.0.10:8000"), "{}", out.stdout);

    // YAML and JSON: one object, or the List.
    let out = f.riptides(&["ctl", "get", "wi", "frontend", "-o", "yaml"]).ok();
    let wi: Value = serde_yaml_ng::from_str(&out.stdout).expect("YAML");
    assert_eq!(wi["kind"], "WorkloadIdentity");
    assert_eq!(wi["metadata"]["namespace"], "riptides-system");
    assert!(wi["metadata"]["resourceVersion"].is_string());
    assert_eq!(wi["spec"]["egress"][0]["allowedSPIFFEIDs"][0], "spiffe://example.com/orders-service");
    assert_eq!(wi["spec"]["egress"][0]["connection"]["tls"]["mode"], "MUTUAL");
    assert_eq!(wi["spec"]["ingress"][0]["port"], 8443);
    let out = f.riptides(&["ctl", "get", "wi/frontend", "-o", "json"]).ok();
    assert_eq!(json(&out.stdout)["metadata"]["name"], "frontend");
    let out = f.riptides(&["ctl", "get", "verifiers", "-o", "json"]).ok();
    let list = json(&out.stdout);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list["items"][0]["spec"]["method"], "joinToken");
    let out = f.riptides(&["ctl", "get", "vf", "-A", "-o", "yaml"]).ok();
    let list: Value = serde_yaml_ng::from_str(&out.stdout).expect("YAML list");
    assert_eq!(list["items"][0]["metadata"]["name"], "join");
    let out = f.riptides(&["ctl", "get", "svc", "-o", "name"]).ok();
    assert_eq!(out.stdout, "service.core.riptides.io/orders\n");

    // JSON on stdin, into another namespace given with -n.
    let svc = r#"{"apiVersion":"core.riptides.io/v1alpha1","kind":"Service","metadata":{"name":"db"},
                  "spec":{"labels":{"tier":"db"},"addresses":[{"address":"db.internal","port":5432}]}}"#;
    let out = f.riptides_with_stdin(&["ctl", "apply", "-f", "-", "-n", "team-a"], Some(svc)).ok();
    assert_eq!(out.stdout, "service/db created\n");
    let out = f.riptides(&["ctl", "get", "svc", "-n", "team-a", "-o", "name"]).ok();
    assert_eq!(out.stdout, "service.core.riptides.io/db\n");
    let out = f.riptides(&["ctl", "get", "svc", "-A"]).ok();
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);

    // Delete, then it is gone with the server's NotFound.
    let out = f.riptides(&["ctl", "delete", "wi", "frontend"]).ok();
    assert_eq!(out.stdout, "workloadidentity \"frontend\" deleted\n");
    let out = f.riptides(&["ctl", "get", "wi", "frontend"]).fails();
    assert!(out.stderr.contains("NotFound") && out.stderr.contains("frontend"), "{}", out.stderr);
    let out = f.riptides(&["ctl", "get", "wi"]).ok();
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr, "No resources found in riptides-system namespace.\n");
    let out = f.riptides(&["ctl", "delete", "wi", "frontend"]).fails();
    assert!(out.stderr.contains("NotFound"), "{}", out.stderr);
}

fn sha256_hex(s: &str) -> String {
    digest::digest(&digest::SHA256, s.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn join_tokens() {
    let f = Fixture::start();
    f.riptides(&["ctl", "apply", "-f", &f.file("app.yaml", &manifest())]).ok();

    let before = now_rfc3339(15 * 60 - 5);
    let out = f.riptides(&["token", "create", "--ttl", "15m", "--verifier", "join", "--daemon-id", "node-1"]).ok();
    let after = now_rfc3339(15 * 60 + 5);
    let token = out.stdout.trim_end_matches('\n');
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    let (id, secret) = token.split_once('.').expect("<id>.<secret>");
    assert!((6..=16).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{id}");
    assert!(secret.len() >= 43, "{secret}");
    assert!(!out.stderr.contains(secret), "the secret leaked to stderr: {}", out.stderr);

    let out = f.riptides(&["ctl", "get", "jointoken", id, "-o", "json"]).ok();
    assert!(!out.stdout.contains(secret), "the secret is stored: {}", out.stdout);
    let stored = json(&out.stdout);
    assert_eq!(stored["spec"]["tokenHash"], format!("sha256:{}", sha256_hex(secret)));
    assert_eq!(stored["spec"]["verifier"], "join");
    assert_eq!(stored["spec"]["daemonID"], "node-1");
    let expires = stored["spec"]["expiresAt"].as_str().expect("expiresAt");
    assert!(before.as_str() <= expires && expires <= after.as_str(), "{before} <= {expires} <= {after}");

    let out = f.riptides(&["token", "list"]).ok();
    assert!(out.stdout.starts_with("NAME "), "{}", out.stdout);
    let row = out.stdout.lines().find(|l| l.starts_with(id)).expect("token listed");
    assert!(row.contains("join") && row.contains("node-1") && row.contains("valid") && row.contains("in 1"), "{row}");
    assert!(!out.stdout.contains(secret));

    // A second token is different; default TTL is 10 minutes.
    let out = f.riptides(&["token", "create"]).ok();
    let (id2, secret2) = out.stdout.trim().split_once('.').unwrap();
    assert_ne!((id, secret), (id2, secret2));
    let out = f.riptides(&["ctl", "get", "jt", id2, "-o", "json"]).ok();
    let expires2 = json(&out.stdout)["spec"]["expiresAt"].as_str().unwrap().to_owned();
    assert!(now_rfc3339(600 - 5) <= expires2 && expires2 <= now_rfc3339(600 + 5), "{expires2}");

    // Early refusals.
    let out = f.riptides(&["token", "create", "--ttl", "2h", "--verifier", "join"]).fails();
    assert!(out.stderr.contains("longer than verifier \"join\" allows (1h)"), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    let out = f.riptides(&["token", "create", "--verifier", "nope"]).fails();
    assert!(out.stderr.contains("verifier \"nope\" not found"), "{}", out.stderr);
    let out = f.riptides(&["token", "create", "--ttl", "ten minutes"]).fails();
    assert!(out.stderr.contains("invalid --ttl"), "{}", out.stderr);

    let out = f.riptides(&["token", "revoke", id]).ok();
    assert_eq!(out.stdout, format!("jointoken \"{id}\" revoked\n"));
    let out = f.riptides(&["token", "list", "-o", "name"]).ok();
    assert_eq!(out.stdout, format!("jointoken.auth.riptides.io/{id2}\n"));
    f.riptides(&["token", "revoke", id2]).ok();
    let out = f.riptides(&["token", "list"]).ok();
    assert_eq!(out.stdout, "");
    f.riptides(&["token", "revoke", id2]).fails();
}

/// Now plus `secs` in RFC 3339 UTC, from the `date` the OS has (a second opinion on ours).
fn now_rfc3339(secs: i64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{}", unix_now() + secs), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn errors_are_clear() {
    let f = Fixture::start();

    let bad_yaml = f.file("bad.yaml", "apiVersion: v1\nkind: [unclosed\n");
    let out = f.riptides(&["ctl", "apply", "-f", &bad_yaml]).fails();
    assert!(out.stderr.contains("document 1 is not valid YAML"), "{}", out.stderr);

    // An unknown kind in document 2: nothing is applied at all.
    let unknown = f.file(
        "unknown.yaml",
        &format!("{}---\napiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n", manifest()),
    );
    let out = f.riptides(&["ctl", "apply", "-f", &unknown]).fails();
    assert!(
        out.stderr.contains("document 4 (Widget \"w\"): unknown kind \"Widget\" in apiVersion \"example.com/v1\""),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "");
    let out = f.riptides(&["ctl", "get", "verifiers"]).ok();
    assert_eq!(out.stdout, "", "nothing was applied");

    // Local validation names the field.
    let typo = f.file("typo.yaml", &manifest().replace("allowedSPIFFEIDs", "allowedSpiffeIds"));
    let out = f.riptides(&["ctl", "apply", "-f", &typo]).fails();
    assert!(
        out.stderr.contains(
            "document 3 (WorkloadIdentity \"frontend\"): invalid WorkloadIdentity: spec.egress[0].allowedSpiffeIds: unknown field"
        ),
        "{}",
        out.stderr
    );

    // The server is the authority on the trust domain: its Status message is shown.
    let foreign = f.file(
        "foreign.yaml",
        &manifest().replace("spiffe://example.com/orders-service", "spiffe://evil.org/orders-service"),
    );
    let out = f.riptides(&["ctl", "apply", "-f", &foreign]).fails();
    assert!(
        out.stdout.contains("verifier/join created") && out.stdout.contains("service/orders created"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("document 3 (WorkloadIdentity \"frontend\")")
            && out.stderr.contains("not in trust domain example.com"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("1 of 3 objects could not be applied"), "{}", out.stderr);

    // An object in another namespace than the -n given is refused, as kubectl does.
    let out = f.riptides(&["ctl", "apply", "-n", "team-a", "-f", &f.file("app.yaml", &manifest())]).fails();
    assert!(
        out.stderr
            .contains("document 3 (WorkloadIdentity \"frontend\"): the namespace from the object (\"riptides-system\") does not match"),
        "{}",
        out.stderr
    );

    let out = f.riptides(&["ctl", "get", "pods"]).fails();
    assert!(out.stderr.contains("doesn't have a resource type \"pods\""), "{}", out.stderr);
    let out = f.riptides(&["ctl", "get", "wi", "x", "-A"]).fails();
    assert!(out.stderr.contains("across all namespaces"), "{}", out.stderr);
    let out = f.riptides(&["ctl", "apply", "-f", "/nonexistent.yaml"]).fails();
    assert!(out.stderr.contains("cannot read /nonexistent.yaml"), "{}", out.stderr);
    let out = common::run(std::path::Path::new("/nonexistent/admin.kubeconfig"), &["ctl", "get", "wi"], None).fails();
    assert!(out.stderr.contains("cannot read kubeconfig /nonexistent/admin.kubeconfig"), "{}", out.stderr);
}
