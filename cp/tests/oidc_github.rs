//! Operator sign-in federated to GitHub's OAuth flow, against a fake GitHub the test runs on
//! loopback (web endpoints and REST API): the code is exchanged for a GitHub token, the
//! account, verified primary email and organizations are read, and the role comes from org
//! membership.

mod common;
mod oidc_support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use oidc_support::{enc, form, pkce, query_of, Http};
use riptides_cp::oidc::{ClientConfig, OidcConfig, RoleRule, UpstreamConfig, UpstreamKind};
use riptides_cp::Config;
use serde_json::{json, Value};

const UI_REDIRECT: &str = "http://127.0.0.1/signed-in";

/// Who the fake GitHub signs in: (user, emails, orgs).
struct FakeGitHub {
    account: Mutex<(Value, Value, Value)>,
    codes: Mutex<HashMap<String, String>>,
}

fn authed(gh: &FakeGitHub, h: &HeaderMap) -> bool {
    let t = h.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(h.get("user-agent").is_some(), "GitHub's API requires a User-Agent");
    gh.codes.lock().unwrap().values().any(|tok| t == format!("Bearer {tok}"))
}

async fn start_github() -> (String, Arc<FakeGitHub>) {
    let gh = Arc::new(FakeGitHub { account: Mutex::new((json!({}), json!([]), json!([]))), codes: Mutex::default() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .route(
            "/login/oauth/authorize",
            get(|State(gh): State<Arc<FakeGitHub>>, Query(q): Query<HashMap<String, String>>| async move {
                assert_eq!(q["client_id"], "gh-client");
                assert!(q["scope"].contains("read:org"), "{q:?}");
                gh.codes.lock().unwrap().insert("gh-code".into(), "gho_token".into());
                Redirect::to(&format!("{}?code=gh-code&state={}", q["redirect_uri"], q["state"]))
            }),
        )
        .route(
            "/login/oauth/access_token",
            post(|State(gh): State<Arc<FakeGitHub>>, body: Bytes| async move {
                let f = form(&body);
                assert_eq!(f["client_secret"], "gh-secret");
                match gh.codes.lock().unwrap().get(&f["code"]) {
                    Some(t) => Json(json!({"access_token": t, "token_type": "bearer", "scope": "read:org"})),
                    None => Json(json!({"error": "bad_verification_code"})),
                }
            }),
        )
        .route(
            "/api/user",
            get(|State(gh): State<Arc<FakeGitHub>>, h: HeaderMap| async move {
                if !authed(&gh, &h) {
                    return axum::http::StatusCode::UNAUTHORIZED.into_response();
                }
                Json(gh.account.lock().unwrap().0.clone()).into_response()
            }),
        )
        .route(
            "/api/user/emails",
            get(|State(gh): State<Arc<FakeGitHub>>, h: HeaderMap| async move {
                if !authed(&gh, &h) {
                    return axum::http::StatusCode::UNAUTHORIZED.into_response();
                }
                Json(gh.account.lock().unwrap().1.clone()).into_response()
            }),
        )
        .route(
            "/api/user/orgs",
            get(|State(gh): State<Arc<FakeGitHub>>, h: HeaderMap| async move {
                if !authed(&gh, &h) {
                    return axum::http::StatusCode::UNAUTHORIZED.into_response();
                }
                Json(gh.account.lock().unwrap().2.clone()).into_response()
            }),
        )
        .with_state(gh.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, gh)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_sign_in_with_github() {
    common::init_tracing();
    let (base, gh) = start_github().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path());
    config.oidc = OidcConfig {
        upstream: Some(UpstreamConfig {
            kind: UpstreamKind::GitHub { api_url: format!("{base}/api") },
            issuer: base.clone(),
            client_id: "gh-client".into(),
            client_secret: Some("gh-secret".into()),
            scopes: vec!["read:user".into(), "user:email".into(), "read:org".into()],
            ca_pem: None,
            role_rules: vec![
                RoleRule::parse("org=riptides-admins:admin").unwrap(),
                RoleRule::parse("email_domain=example.com:viewer").unwrap(),
            ],
            default_role: None,
        }),
        clients: vec![ClientConfig { client_id: "riptides-ui".into(), redirect_uris: vec![UI_REDIRECT.into()] }],
        ..OidcConfig::default()
    };
    let cp = riptides_cp::ControlPlane::start(config).await.unwrap();
    let http = Http::trusting(&cp.ca().bundle().to_pem());
    let cp_url = format!("https://{}", cp.api_addr());
    let (verifier, challenge) = pkce();

    let sign_in = |account: (Value, Value, Value)| {
        *gh.account.lock().unwrap() = account;
        let (http, cp_url, challenge, base) = (&http, cp_url.clone(), challenge.clone(), base.clone());
        async move {
            let url = format!(
                "{cp_url}/oidc/authorize?response_type=code&client_id=riptides-ui&redirect_uri={}&state=s1&code_challenge={challenge}&code_challenge_method=S256",
                enc(UI_REDIRECT)
            );
            let (_, to_github, _) = http.send("GET", &url, None, None).await;
            let to_github = to_github.unwrap();
            assert!(to_github.starts_with(&format!("{base}/login/oauth/authorize?")), "{to_github}");
            assert!(!query_of(&to_github)["scope"].contains("openid"), "GitHub is not asked for OIDC scopes");
            let (_, back, _) = http.send("GET", &to_github, None, None).await;
            let (_, to_client, _) = http.send("GET", &back.unwrap(), None, None).await;
            query_of(&to_client.unwrap())
        }
    };

    // An org member is an admin.
    let q = sign_in((
        json!({"id": 4242, "login": "octo"}),
        json!([{"email": "octo@users.noreply.example", "primary": false, "verified": true},
               {"email": "octo@elsewhere.org", "primary": true, "verified": true}]),
        json!([{"login": "riptides-admins"}]),
    ))
    .await;
    let code = q.get("code").unwrap_or_else(|| panic!("{q:?}"));
    let f = format!(
        "grant_type=authorization_code&code={}&redirect_uri={}&client_id=riptides-ui&code_verifier={}",
        enc(code),
        enc(UI_REDIRECT),
        enc(&verifier)
    );
    let (c, _, tokens) = http.send("POST", &format!("{cp_url}/oidc/token"), Some(f), None).await;
    assert_eq!(c, 200, "{tokens}");
    let body = json!({"query": "{ me { subject role } }"}).to_string();
    let (_, _, me) = http.send("POST", &format!("{cp_url}/graphql"), Some(body), tokens["access_token"].as_str()).await;
    assert_eq!(me["data"]["me"], json!({"subject": "github#4242", "role": "admin"}), "{me}");

    // An unverified primary email grants nothing; nor does a stranger.
    let q = sign_in((
        json!({"id": 7, "login": "mallory"}),
        json!([{"email": "mallory@example.com", "primary": true, "verified": false}]),
        json!([]),
    ))
    .await;
    assert_eq!(q.get("error").map(String::as_str), Some("access_denied"), "{q:?}");
    cp.shutdown().await;
}
