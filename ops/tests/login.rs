//! `riptides login` / `logout` end to end: the real CLI binary against an in-process control
//! plane whose OIDC provider federates to a loopback upstream issuer. The test plays the
//! browser on the verification page; the CLI polls, stores the session (0600) and `ctl` uses
//! it as the operator: a viewer reads and cannot apply (403), an expired access token is
//! refreshed, logout revokes, a refusal in the browser fails the login.

mod common;
#[path = "../../cp/tests/oidc_support/mod.rs"]
mod oidc_support;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{manifest, Run};
use oidc_support::{enc, start_idp, Http, Idp, UPSTREAM_CLIENT};
use riptides_cp::oidc::{cli::default_clients, OidcConfig, RoleRule, UpstreamConfig};
use riptides_cp::{Config, ControlPlane};
use serde_json::{json, Value};

struct Env {
    rt: tokio::runtime::Runtime,
    cp: Option<ControlPlane>,
    idp: Arc<Idp>,
    http: Http,
    base: String,
    ca_file: PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(cp) = self.cp.take() {
            self.rt.block_on(cp.shutdown());
        }
    }
}

impl Env {
    fn start() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let idp = rt.block_on(start_idp());
        let mut config = Config::for_tests(&dir.path().join("cp"));
        config.oidc = OidcConfig {
            upstream: Some(UpstreamConfig {
                kind: Default::default(),
                issuer: idp.issuer.clone(),
                client_id: UPSTREAM_CLIENT.into(),
                client_secret: None,
                scopes: vec!["email".into(), "groups".into()],
                ca_pem: None,
                role_rules: vec![
                    RoleRule::parse("email_domain=example.com:viewer").unwrap(),
                    RoleRule::parse("groups=platform:editor").unwrap(),
                ],
                default_role: None,
            }),
            clients: default_clients(),
            device_poll_interval: Duration::from_secs(1),
            ..OidcConfig::default()
        };
        let cp = rt.block_on(ControlPlane::start(config)).unwrap();
        let ca = cp.ca().bundle().to_pem();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ca).unwrap();
        let http = Http::trusting(&ca);
        let base = format!("https://{}", cp.api_addr());
        Env { rt, cp: Some(cp), idp, http, base, ca_file, dir }
    }

    fn admin(&self, args: &[&str]) -> Run {
        common::run(self.cp.as_ref().unwrap().kubeconfig_path(), args, None)
    }

    fn config_home(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    fn credentials(&self) -> PathBuf {
        self.config_home().join("riptides").join("credentials.json")
    }

    fn session(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.credentials()).unwrap()).unwrap()
    }

    /// The CLI as an operator: no --kubeconfig, the session under $XDG_CONFIG_HOME, run in a
    /// directory without `./riptides-data`.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_riptides"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("RIPTIDES_LOG")
            .env_remove("RIPTIDES_KUBECONFIG")
            .env("XDG_CONFIG_HOME", self.config_home())
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn riptides(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().unwrap();
        Run {
            args: args.iter().map(|s| s.to_string()).collect(),
            code: out.status.code(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    /// `riptides login`, with the test as the operator's browser: opens the printed URL,
    /// checks the code shown, and allows (through the upstream sign-in as `user`) or denies.
    fn login(&self, user: Value, allow: bool) -> Run {
        *self.idp.user.lock().unwrap() = user;
        let ca = self.ca_file.display().to_string();
        let args = ["login", "--server", &self.base, "--ca", &ca];
        let mut child = self.command(&args).spawn().unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut shown = String::new();
        while !shown.contains("Waiting") {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                panic!("riptides login ended early: {shown}");
            }
            shown.push_str(&line);
        }
        let url = shown
            .split_whitespace()
            .find(|w| w.starts_with(&format!("{}/oidc/device?user_code=", self.base)))
            .unwrap_or_else(|| panic!("no verification URL in {shown}"))
            .to_owned();
        let code = shown.split("shows the code ").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
        assert_eq!(code.len(), 9, "XXXX-XXXX: {shown}");
        self.rt.block_on(self.browser(&url, &code, allow));
        let mut rest = String::new();
        stderr.read_to_string(&mut rest).unwrap();
        let out = child.wait_with_output().unwrap();
        Run {
            args: args.iter().map(|s| s.to_string()).collect(),
            code: out.status.code(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: shown + &rest,
        }
    }

    async fn browser(&self, url: &str, code: &str, allow: bool) {
        let (c, _, page) = self.http.send_text("GET", url, None, None).await;
        assert_eq!(c, 200, "{page}");
        assert!(page.contains(&format!("value=\"{code}\"")), "the page shows the code: {page}");
        let form = format!("user_code={}&action={}", enc(code), if allow { "allow" } else { "deny" });
        let (c, to_upstream, page) =
            self.http.send_text("POST", &format!("{}/oidc/device", self.base), Some(form), None).await;
        if !allow {
            assert_eq!(c, 200, "{page}");
            return;
        }
        assert!((300..400).contains(&c), "{c} {page}");
        let to_upstream = to_upstream.unwrap();
        assert!(to_upstream.starts_with(&format!("{}/authorize?", self.idp.issuer)), "{to_upstream}");
        let (c, back, _) = self.http.send("GET", &to_upstream, None, None).await;
        assert!((300..400).contains(&c));
        let (c, _, page) = self.http.send_text("GET", &back.unwrap(), None, None).await;
        match c {
            200 => assert!(page.contains("signed in as"), "{page}"),
            403 => assert!(page.contains("Sign-in failed"), "{page}"),
            _ => panic!("{c} {page}"),
        }
    }
}

#[test]
fn operators_sign_the_cli_in_with_the_device_flow() {
    let env = Env::start();
    let app = env.dir.path().join("app.yaml");
    std::fs::write(&app, manifest()).unwrap();
    let app = app.display().to_string();
    env.admin(&["ctl", "apply", "-f", &app]).ok();

    // Nobody signed in, no kubeconfig: a clear error.
    let out = env.riptides(&["ctl", "get", "vf"]).fails();
    assert!(out.stderr.contains("not signed in"), "{}", out.stderr);

    // A viewer signs in; the session is private and no token is ever printed.
    let out = env.login(json!({"sub": "u-1", "email": "val@example.com"}), true).ok();
    assert!(out.stdout.contains("as val@example.com (role viewer)"), "{}", out.stdout);
    let mode = std::fs::metadata(env.credentials()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let session = env.session();
    let access = session["access_token"].as_str().unwrap().to_owned();
    let refresh = session["refresh_token"].as_str().unwrap().to_owned();
    for secret in [&access, &refresh] {
        assert!(!out.stdout.contains(secret.as_str()) && !out.stderr.contains(secret.as_str()));
    }

    // The viewer reads with the bearer token...
    let out = env.riptides(&["ctl", "get", "vf"]).ok();
    assert!(out.stdout.lines().nth(1).is_some_and(|l| l.starts_with("join ")), "{}", out.stdout);
    let out = env.riptides(&["ctl", "get", "wi", "frontend", "-o", "json"]).ok();
    assert!(out.stdout.contains("\"frontend\""), "{}", out.stdout);
    // ...and cannot apply.
    let changed = env.dir.path().join("changed.yaml");
    std::fs::write(&changed, manifest().replace("- port: 8000", "- port: 8443")).unwrap();
    let changed = changed.display().to_string();
    let out = env.riptides(&["ctl", "apply", "-f", &changed]).fails();
    assert!(out.stderr.contains("(Forbidden)") && out.stderr.contains("has role viewer"), "{}", out.stderr);

    // An expired access token is refreshed with the (rotating) refresh token.
    let mut session = env.session();
    session["expires_at"] = json!(0);
    std::fs::write(env.credentials(), session.to_string()).unwrap();
    env.riptides(&["ctl", "get", "svc"]).ok();
    let session = env.session();
    assert_ne!(session["access_token"].as_str().unwrap(), access);
    let refresh2 = session["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh2, refresh);
    assert!(session["expires_at"].as_u64().unwrap() > 60);
    assert_eq!(std::fs::metadata(env.credentials()).unwrap().permissions().mode() & 0o777, 0o600);

    // Logout revokes the session at the control plane and forgets it.
    let out = env.riptides(&["logout"]).ok();
    assert!(out.stdout.contains("Signed out"), "{}", out.stdout);
    assert!(!env.credentials().exists());
    let form = format!("grant_type=refresh_token&client_id=riptides-cli&refresh_token={}", enc(&refresh2));
    let (c, _, v) = env.rt.block_on(env.http.send("POST", &format!("{}/oidc/token", env.base), Some(form), None));
    assert_eq!((c, v["error"].as_str()), (400, Some("invalid_grant")), "{v}");
    env.riptides(&["ctl", "get", "vf"]).fails();

    // An editor may apply workload configuration (the Verifier is unchanged, so only read).
    let out = env.login(json!({"sub": "u-2", "email": "ed@example.com", "groups": ["platform"]}), true).ok();
    assert!(out.stdout.contains("(role editor)"), "{}", out.stdout);
    let out = env.riptides(&["ctl", "apply", "-f", &changed]).ok();
    assert!(out.stdout.contains("workloadidentity/frontend configured"), "{}", out.stdout);
    env.riptides(&["logout"]).ok();

    // Refused in the browser: the CLI stops with access_denied and stores nothing.
    let out = env.login(json!({"sub": "u-3", "email": "val@example.com"}), false).fails();
    assert!(out.stderr.contains("the sign-in was refused"), "{}", out.stderr);
    assert!(!env.credentials().exists());

    // Someone no rule grants a role is refused after the upstream sign-in.
    let out = env.login(json!({"sub": "u-4", "email": "m@elsewhere.org"}), true);
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("access_denied"), "{}", out.stderr);
}
