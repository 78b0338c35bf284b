//! Operator sign-in end to end: the control plane's OIDC provider federating to an upstream
//! OIDC issuer the test starts on loopback. Discovery, JWKS, authorization code with PKCE
//! through the upstream issuer, role mapping from upstream claims, the access token on the
//! GraphQL API, refresh rotation with reuse detection, sign-out.

mod common;
mod oidc_support;

use std::collections::HashMap;
use std::sync::Arc;

use oidc_support::{b64, enc, pkce, query_of, start_idp, Http, Idp, UPSTREAM_CLIENT};
use riptides_cp::oidc::{ClientConfig, OidcConfig, RoleRule, UpstreamConfig};
use riptides_cp::{Config, ControlPlane};
use serde_json::{json, Value};

const UI_CLIENT: &str = "riptides-ui";
const UI_REDIRECT: &str = "http://127.0.0.1/signed-in";

struct Setup {
    _dir: tempfile::TempDir,
    cp: ControlPlane,
    idp: Arc<Idp>,
    http: Http,
    base: String,
}

async fn setup() -> Setup {
    common::init_tracing();
    let idp = start_idp().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path());
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
                RoleRule::parse("email=boss@example.com:admin").unwrap(),
            ],
            default_role: None,
        }),
        clients: vec![ClientConfig { client_id: UI_CLIENT.into(), redirect_uris: vec![UI_REDIRECT.into()] }],
        ..OidcConfig::default()
    };
    let cp = ControlPlane::start(config).await.unwrap();
    let http = Http::trusting(&cp.ca().bundle().to_pem());
    let base = format!("https://{}", cp.api_addr());
    Setup { _dir: dir, cp, idp, http, base }
}

/// The browser's part: authorize at the CP, through the upstream issuer, back to the CP,
/// and to the client's redirect URI. Returns the final redirect's query.
async fn sign_in(s: &Setup, user: Value, redirect: &str, challenge: &str) -> HashMap<String, String> {
    *s.idp.user.lock().unwrap() = user;
    let url = format!(
        "{}/oidc/authorize?response_type=code&client_id={UI_CLIENT}&redirect_uri={}&state=ui-state&nonce=ui-nonce&scope=openid&code_challenge={challenge}&code_challenge_method=S256",
        s.base,
        enc(redirect)
    );
    let (code, to_upstream, body) = s.http.send("GET", &url, None, None).await;
    assert!((300..400).contains(&code), "{code} {body}");
    let to_upstream = to_upstream.unwrap();
    assert!(to_upstream.starts_with(&format!("{}/authorize?", s.idp.issuer)), "{to_upstream}");
    let (code, back_to_cp, _) = s.http.send("GET", &to_upstream, None, None).await;
    assert!((300..400).contains(&code));
    let back_to_cp = back_to_cp.unwrap();
    assert!(back_to_cp.starts_with(&format!("{}/oidc/callback?", s.base)), "{back_to_cp}");
    let (code, to_client, body) = s.http.send("GET", &back_to_cp, None, None).await;
    assert!((300..400).contains(&code), "{code} {body}");
    let to_client = to_client.unwrap();
    assert!(to_client.starts_with(redirect), "{to_client}");
    let q = query_of(&to_client);
    assert_eq!(q.get("state").map(String::as_str), Some("ui-state"), "{to_client}");
    q
}

async fn redeem(s: &Setup, code: &str, redirect: &str, verifier: &str) -> (u16, Value) {
    let f = format!(
        "grant_type=authorization_code&code={}&redirect_uri={}&client_id={UI_CLIENT}&code_verifier={}",
        enc(code),
        enc(redirect),
        enc(verifier)
    );
    let (c, _, v) = s.http.send("POST", &format!("{}/oidc/token", s.base), Some(f), None).await;
    (c, v)
}

async fn me(s: &Setup, token: &str) -> (u16, Value) {
    let body = json!({"query": "{ me { subject role } }"}).to_string();
    let (c, _, v) = s.http.send("POST", &format!("{}/graphql", s.base), Some(body), Some(token)).await;
    (c, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_sign_in_through_the_upstream_issuer() {
    let s = setup().await;
    // Discovery and JWKS are public.
    let (c, _, d) = s.http.send("GET", &format!("{}/.well-known/openid-configuration", s.base), None, None).await;
    assert_eq!(c, 200);
    assert_eq!(d["issuer"], s.base);
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    let (c, _, jwks) = s.http.send("GET", d["jwks_uri"].as_str().unwrap(), None, None).await;
    assert_eq!(c, 200);
    assert_eq!(jwks["keys"][0]["alg"], "ES256");

    // An editor by group membership; a loopback redirect URI on another port is accepted.
    let redirect = "http://127.0.0.1:47123/signed-in";
    let (verifier, challenge) = pkce();
    let q =
        sign_in(&s, json!({"sub": "u-1", "email": "eve@example.com", "groups": ["platform"]}), redirect, &challenge)
            .await;
    let code = q.get("code").expect("a code").clone();
    // A wrong verifier burns the code.
    let (c, v) = redeem(&s, &code, redirect, &b64(b"another verifier that is long enough to be valid here")).await;
    assert_eq!((c, v["error"].as_str()), (400, Some("invalid_grant")), "{v}");
    let (c, v) = redeem(&s, &code, redirect, &verifier).await;
    assert_eq!((c, v["error"].as_str()), (400, Some("invalid_grant")), "single use: {v}");

    let q =
        sign_in(&s, json!({"sub": "u-1", "email": "eve@example.com", "groups": ["platform"]}), redirect, &challenge)
            .await;
    let (c, tokens) = redeem(&s, &q["code"], redirect, &verifier).await;
    assert_eq!(c, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    let access = tokens["access_token"].as_str().unwrap();
    let (c, v) = me(&s, access).await;
    assert_eq!(c, 200, "{v}");
    assert_eq!(v["data"]["me"]["role"], "editor", "{v}");
    assert_eq!(v["data"]["me"]["subject"], format!("{}#u-1", s.idp.issuer));
    let (c, _, info) = s.http.send("GET", &format!("{}/oidc/userinfo", s.base), None, Some(access)).await;
    assert_eq!((c, info["email"].as_str()), (200, Some("eve@example.com")));

    // Refresh rotates; a rotated refresh token used again revokes the session.
    let r1 = tokens["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |t: &str| format!("grant_type=refresh_token&client_id={UI_CLIENT}&refresh_token={}", enc(t));
    let (c, _, t2) = s.http.send("POST", &format!("{}/oidc/token", s.base), Some(refresh(&r1)), None).await;
    assert_eq!(c, 200, "{t2}");
    let r2 = t2["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    assert_eq!(me(&s, t2["access_token"].as_str().unwrap()).await.1["data"]["me"]["role"], "editor");
    let (c, _, v) = s.http.send("POST", &format!("{}/oidc/token", s.base), Some(refresh(&r1)), None).await;
    assert_eq!((c, v["error"].as_str()), (400, Some("invalid_grant")), "{v}");
    let (c, _, v) = s.http.send("POST", &format!("{}/oidc/token", s.base), Some(refresh(&r2)), None).await;
    assert_eq!((c, v["error"].as_str()), (400, Some("invalid_grant")), "the family is revoked: {v}");

    // The highest matching rule wins; sign-out revokes the refresh token.
    let q = sign_in(
        &s,
        json!({"sub": "u-2", "email": "boss@example.com", "groups": ["platform"]}),
        UI_REDIRECT,
        &challenge,
    )
    .await;
    let (_, tokens) = redeem(&s, &q["code"], UI_REDIRECT, &verifier).await;
    assert_eq!(me(&s, tokens["access_token"].as_str().unwrap()).await.1["data"]["me"]["role"], "admin");
    let rt = tokens["refresh_token"].as_str().unwrap();
    let (c, _, _) =
        s.http.send("POST", &format!("{}/oidc/revoke", s.base), Some(format!("token={}", enc(rt))), None).await;
    assert_eq!(c, 200);
    let (c, _, _) = s.http.send("POST", &format!("{}/oidc/token", s.base), Some(refresh(rt)), None).await;
    assert_eq!(c, 400);

    // Someone no rule grants a role is turned away with an error for the client to show.
    let q = sign_in(&s, json!({"sub": "u-3", "email": "mallory@elsewhere.org"}), UI_REDIRECT, &challenge).await;
    assert_eq!(q.get("error").map(String::as_str), Some("access_denied"), "{q:?}");
    assert!(!q.contains_key("code"));
    // An unverified email counts for nothing.
    let q = sign_in(
        &s,
        json!({"sub": "u-4", "email": "boss@example.com", "email_verified": false}),
        UI_REDIRECT,
        &challenge,
    )
    .await;
    assert_eq!(q.get("error").map(String::as_str), Some("access_denied"), "{q:?}");

    // A viewer (by email domain) reads but cannot write.
    let q = sign_in(&s, json!({"sub": "u-5", "email": "val@example.com"}), UI_REDIRECT, &challenge).await;
    let (_, tokens) = redeem(&s, &q["code"], UI_REDIRECT, &verifier).await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(me(&s, access).await.1["data"]["me"]["role"], "viewer");
    let m = json!({"query": "mutation { revokeJoinToken(name: \"x\") { name } }"}).to_string();
    let (_, _, v) = s.http.send("POST", &format!("{}/graphql", s.base), Some(m), Some(access)).await;
    assert_eq!(v["errors"][0]["extensions"]["code"], "FORBIDDEN", "{v}");
    s.cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_without_redirecting_to_strangers() {
    let s = setup().await;
    let (_, challenge) = pkce();
    // An unregistered redirect URI gets an error page, never a redirect.
    let url = format!(
        "{}/oidc/authorize?response_type=code&client_id={UI_CLIENT}&redirect_uri={}&code_challenge={challenge}&code_challenge_method=S256",
        s.base,
        enc("https://evil.example/cb")
    );
    let (c, loc, v) = s.http.send("GET", &url, None, None).await;
    assert_eq!((c, loc), (400, None), "{v}");
    // No PKCE: the client is told so.
    let url = format!(
        "{}/oidc/authorize?response_type=code&client_id={UI_CLIENT}&redirect_uri={}&state=s",
        s.base,
        enc(UI_REDIRECT)
    );
    let (c, loc, _) = s.http.send("GET", &url, None, None).await;
    assert!((300..400).contains(&c));
    let q = query_of(&loc.unwrap());
    assert_eq!(q["error"], "invalid_request");
    assert!(q["error_description"].contains("PKCE"));
    // Unknown client, unknown grant type, forged callback state.
    let (c, _, v) = s
        .http
        .send(
            "POST",
            &format!("{}/oidc/token", s.base),
            Some("grant_type=authorization_code&client_id=nope".into()),
            None,
        )
        .await;
    assert_eq!((c, v["error"].as_str()), (401, Some("invalid_client")));
    let (c, _, v) = s
        .http
        .send(
            "POST",
            &format!("{}/oidc/token", s.base),
            Some(format!("grant_type=password&client_id={UI_CLIENT}")),
            None,
        )
        .await;
    assert_eq!((c, v["error"].as_str()), (400, Some("unsupported_grant_type")));
    let (c, _, _) = s.http.send("GET", &format!("{}/oidc/callback?code=x&state=forged", s.base), None, None).await;
    assert_eq!(c, 400);
    // A token signed by someone else is refused by the API.
    let forged = format!("{}.{}.{}", b64(r#"{"alg":"ES256"}"#), b64(r#"{"sub":"x","role":"admin"}"#), b64("sig"));
    let (c, _) = me(&s, &forged).await;
    assert_eq!(c, 401);
    s.cp.shutdown().await;
}

/// The device authorization grant (RFC 8628) over HTTP; the whole sign-in through the
/// verification page with the real CLI is ops/tests/login.rs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_flow_answers_as_rfc_8628_says() {
    let s = setup().await;
    let url = |path: &str| format!("{}{path}", s.base);
    let (_, _, d) = s.http.send("GET", &url("/.well-known/openid-configuration"), None, None).await;
    assert_eq!(d["device_authorization_endpoint"], url("/oidc/device_authorization"));
    assert!(d["grant_types_supported"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g == "urn:ietf:params:oauth:grant-type:device_code"));

    let (c, _, v) = s.http.send("POST", &url("/oidc/device_authorization"), Some("client_id=nope".into()), None).await;
    assert_eq!((c, v["error"].as_str()), (401, Some("invalid_client")));
    let start = || async {
        let f = format!("client_id={UI_CLIENT}&scope=openid");
        let (c, _, g) = s.http.send("POST", &url("/oidc/device_authorization"), Some(f), None).await;
        assert_eq!(c, 200, "{g}");
        g
    };
    let g = start().await;
    let user_code = g["user_code"].as_str().unwrap().to_owned();
    assert_eq!(user_code.len(), 9);
    assert!(user_code.chars().all(|c| c == '-' || "BCDFGHJKLMNPQRSTVWXZ".contains(c)), "{user_code}");
    assert_eq!(g["verification_uri"], url("/oidc/device"));
    assert_eq!(g["verification_uri_complete"], format!("{}?user_code={user_code}", url("/oidc/device")));
    assert_eq!((g["expires_in"].as_u64(), g["interval"].as_u64()), (Some(600), Some(5)));

    let poll = |device_code: &str| {
        let f = format!(
            "grant_type={}&device_code={}&client_id={UI_CLIENT}",
            enc("urn:ietf:params:oauth:grant-type:device_code"),
            enc(device_code)
        );
        let http = &s.http;
        let u = url("/oidc/token");
        async move {
            let (c, _, v) = http.send("POST", &u, Some(f), None).await;
            (c, v["error"].as_str().map(str::to_owned))
        }
    };
    let device_code = g["device_code"].as_str().unwrap();
    assert_eq!(poll(device_code).await, (400, Some("authorization_pending".into())));
    assert_eq!(poll(device_code).await, (400, Some("slow_down".into())), "polled before the interval");
    assert_eq!(poll("not-a-device-code").await, (400, Some("invalid_grant".into())));

    // The verification page: a code that is not one is refused; nothing the URL says is
    // reflected unescaped.
    let (c, _, page) = s.http.send_text("GET", &url("/oidc/device?user_code=%3Cscript%3E"), None, None).await;
    assert_eq!(c, 200);
    assert!(!page.contains("<script>"), "{page}");
    let (c, _, _) =
        s.http.send("POST", &url("/oidc/device"), Some("user_code=BBBB-BBBB&action=allow".into()), None).await;
    assert_eq!(c, 400);

    // Denied on the page: access_denied once, then the device code is gone; the user code
    // cannot be entered again.
    let g = start().await;
    let (code, dc) = (g["user_code"].as_str().unwrap(), g["device_code"].as_str().unwrap());
    // A post from another site (a page making the operator's browser approve the attacker's
    // code) is refused and does not use up the code.
    let f = format!("user_code={}&action=allow", enc(code));
    for h in [[("origin", "https://evil.example")], [("sec-fetch-site", "cross-site")]] {
        let (c, loc, _) = s.http.send_headers("POST", &url("/oidc/device"), Some(f.clone()), None, &h).await;
        assert_eq!((c, loc), (403, None));
    }
    let (c, _, page) = s
        .http
        .send_headers("POST", &url("/oidc/device"), Some(f.replace("allow", "deny")), None, &[("origin", &s.base)])
        .await;
    assert_eq!(c, 200, "same origin is fine: {page}");
    assert_eq!(poll(dc).await, (400, Some("access_denied".into())));
    let g = start().await;
    let (code, dc) = (g["user_code"].as_str().unwrap(), g["device_code"].as_str().unwrap());
    let f = format!("user_code={}&action=deny", enc(&code.to_lowercase()));
    let (c, _, _) = s.http.send("POST", &url("/oidc/device"), Some(f), None).await;
    assert_eq!(c, 200);
    assert_eq!(poll(dc).await, (400, Some("access_denied".into())));
    assert_eq!(poll(dc).await, (400, Some("invalid_grant".into())));
    let f = format!("user_code={}&action=allow", enc(code));
    let (c, loc, _) = s.http.send("POST", &url("/oidc/device"), Some(f), None).await;
    assert_eq!((c, loc), (400, None), "single use");

    // Allowed, but the upstream grants no role: access_denied for the CLI too.
    let g = start().await;
    *s.idp.user.lock().unwrap() = json!({"sub": "u-9", "email": "x@elsewhere.org"});
    let f = format!("user_code={}&action=allow", enc(g["user_code"].as_str().unwrap()));
    let (c, to_upstream, _) = s.http.send("POST", &url("/oidc/device"), Some(f), None).await;
    assert!((300..400).contains(&c));
    let (_, back, _) = s.http.send("GET", &to_upstream.unwrap(), None, None).await;
    let (c, _, page) = s.http.send_text("GET", &back.unwrap(), None, None).await;
    assert_eq!(c, 403, "{page}");
    assert_eq!(poll(g["device_code"].as_str().unwrap()).await, (400, Some("access_denied".into())));
    s.cp.shutdown().await;
}
