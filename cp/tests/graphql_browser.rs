//! The web UI in Debian's headless Chromium (driven by playwright-core from
//! `frontend/tests/browser.mjs`) against an in-process control plane, the real
//! `riptides-frontend` binary, an upstream OIDC issuer on loopback and a connected daemon
//! whose connection table holds an mTLS and a refused connection: sign in, the daemon shown
//! connected, the live mTLS connection and the refused one flagged in the table and the graph,
//! a policy change applied in the UI and stored. Screenshots in
//! `target/ui-artifacts/`.
//!
//! Needs node with `frontend/node_modules` (`npm ci` in frontend/) and /usr/bin/chromium;
//! `ops/scripts/test-all.sh` installs both.

mod common;
mod graphql_support;
mod oidc_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use riptides_cp::oidc::{cli::default_clients, OidcConfig, RoleRule, UpstreamConfig};
use riptides_cp::Config;
use serde_json::json;

fn frontend_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../frontend")
}

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_shows_daemons_live_connections_and_applies_policy() {
    let fe = frontend_dir();
    assert!(
        fe.join("node_modules/playwright-core").is_dir(),
        "{}: run `npm ci` there first (ops/scripts/test-all.sh does)",
        fe.display()
    );
    let built = Command::new("npm").args(["run", "build"]).current_dir(&fe).output().expect("npm runs");
    assert!(built.status.success(), "npm run build: {}", String::from_utf8_lossy(&built.stderr));

    common::init_tracing();
    let idp = oidc_support::start_idp().await;
    // The UI's port is the provider's issuer, so it is chosen before the control plane starts.
    let ui_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ui = format!("http://127.0.0.1:{ui_port}");
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path());
    config.oidc = OidcConfig {
        issuer: Some(ui.clone()),
        upstream: Some(UpstreamConfig {
            kind: Default::default(),
            issuer: idp.issuer.clone(),
            client_id: oidc_support::UPSTREAM_CLIENT.into(),
            client_secret: None,
            scopes: vec!["email".into()],
            ca_pem: None,
            role_rules: vec![RoleRule::parse("email_domain=example.com:editor").unwrap()],
            default_role: None,
        }),
        clients: default_clients(),
        ..OidcConfig::default()
    };
    *idp.user.lock().unwrap() = json!({"sub": "ed", "email": "ed@example.com"});
    let cp = riptides_cp::ControlPlane::start(config).await.unwrap();
    let token = common::create_token(&cp, "tok", 600, Some("node-a")).await;
    let daemon = graphql_support::fake_daemon(&cp, token, graphql_support::sample_table()).await;

    let ca = dir.path().join("cp-ca.pem");
    std::fs::write(&ca, cp.ca().bundle().to_pem()).unwrap();
    let mut frontend = Command::new(env!("CARGO_BIN_EXE_riptides-frontend"))
        .args(["--listen", &format!("127.0.0.1:{ui_port}"), "--cp-url", &format!("https://{}", cp.api_addr())])
        .arg("--cp-ca")
        .arg(&ca)
        .arg("--assets")
        .arg(fe.join("dist"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Ready once it prints its address.
    let mut stderr = std::io::BufReader::new(frontend.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    assert!(line.contains("riptides-frontend: http"), "{line}");
    let _frontend = Kill(frontend);

    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui-artifacts");
    let kubeconfig = cp.kubeconfig_path().to_owned();
    let daemon_id = daemon.id.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("tests/browser.mjs")
            .current_dir(frontend_dir())
            .env("RIPTIDES_UI_URL", &ui)
            .env("RIPTIDES_KUBECONFIG", &kubeconfig)
            .env("RIPTIDES_EXPECT_DAEMON", &daemon_id)
            .env("RIPTIDES_ARTIFACTS", &artifacts)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "browser test failed:\n{text}");
    assert!(text.contains(" passed, 0 failed"), "{text}");
    cp.shutdown().await;
}
