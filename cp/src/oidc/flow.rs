//! The provider's HTTP endpoints (public: no client certificate needed):
//!
//! - `GET /.well-known/openid-configuration`, `GET /oidc/jwks.json`
//! - `GET /oidc/authorize`: authorization code flow with PKCE (S256 required); sends the
//!   browser on to the upstream issuer with our own state, nonce and PKCE
//! - `GET /oidc/callback`: back from upstream; verifies the upstream ID token, maps the role,
//!   and redirects to the client with a single-use code
//! - `POST /oidc/token`: `authorization_code` (checks the PKCE verifier) and `refresh_token`
//!   (rotating) grants
//! - `POST /oidc/revoke`: sign-out (revokes the refresh token's session)
//! - `POST /oidc/device_authorization`, `GET|POST /oidc/device`: the device authorization
//!   grant (RFC 8628) for the CLI: a device code and user code, and the verification page
//!   where the operator confirms the user code and is sent through the upstream sign-in; the
//!   token endpoint then answers the `urn:ietf:params:oauth:grant-type:device_code` grant
//! - `GET /oidc/userinfo`: the signed-in operator, from the access token

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::device::{self, Approval, ClaimError, Poll, StartError};
use super::tokens::{self, Grant, PendingLogin};
use super::upstream::{enc, form_urlencoded, Upstream, UpstreamIdentity};
use super::{Provider, Role};

/// RFC 8628's grant type.
pub const DEVICE_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";

pub struct FlowState {
    pub provider: Arc<Provider>,
    pub upstream: Option<Upstream>,
}

impl FlowState {
    pub fn new(provider: Arc<Provider>) -> anyhow::Result<Arc<FlowState>> {
        let upstream = provider.config.upstream.clone().map(Upstream::new).transpose()?;
        Ok(Arc::new(FlowState { provider, upstream }))
    }
}

pub fn router(state: Arc<FlowState>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/oidc/jwks.json", get(jwks))
        .route("/oidc/authorize", get(authorize))
        .route("/oidc/callback", get(callback))
        .route("/oidc/token", post(token))
        .route("/oidc/revoke", post(revoke))
        .route("/oidc/userinfo", get(userinfo))
        .route("/oidc/device_authorization", post(device_authorization))
        .route("/oidc/device", get(device_page).post(device_submit))
        .with_state(state)
}

fn oauth_error(code: StatusCode, error: &str, description: &str) -> Response {
    (code, [(header::CACHE_CONTROL, "no-store")], Json(json!({"error": error, "error_description": description})))
        .into_response()
}

async fn discovery(State(st): State<Arc<FlowState>>) -> Response {
    let iss = st.provider.issuer();
    Json(json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/oidc/authorize"),
        "token_endpoint": format!("{iss}/oidc/token"),
        "jwks_uri": format!("{iss}/oidc/jwks.json"),
        "userinfo_endpoint": format!("{iss}/oidc/userinfo"),
        "revocation_endpoint": format!("{iss}/oidc/revoke"),
        "device_authorization_endpoint": format!("{iss}/oidc/device_authorization"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token", DEVICE_GRANT_TYPE],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": ["openid", "email", "profile", "offline_access"],
        "claims_supported": ["sub", "email", "role"],
    }))
    .into_response()
}

async fn jwks(State(st): State<Arc<FlowState>>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], st.provider.jwks_json()).into_response()
}

/// Exact match, or a loopback `http` URI differing only in its port (RFC 8252 7.3).
fn redirect_allowed(registered: &[String], uri: &str) -> bool {
    fn strip_port(u: &str) -> Option<String> {
        let rest = u.strip_prefix("http://")?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let host = match authority.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
            _ => authority,
        };
        matches!(host, "127.0.0.1" | "[::1]" | "localhost").then(|| format!("http://{host}{path}"))
    }
    registered.iter().any(|r| r == uri || (strip_port(r).is_some() && strip_port(r) == strip_port(uri)))
}

fn with_params(uri: &str, params: &[(&str, &str)]) -> String {
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{}", form_urlencoded(params))
}

async fn authorize(State(st): State<Arc<FlowState>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let p = &st.provider;
    let client_id = q.get("client_id").map(String::as_str).unwrap_or_default();
    let Some(client) = p.config.clients.iter().find(|c| c.client_id == client_id) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_client", "unknown client_id");
    };
    let redirect_uri = q.get("redirect_uri").cloned().unwrap_or_default();
    if !redirect_allowed(&client.redirect_uris, &redirect_uri) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "redirect_uri is not registered for this client",
        );
    }
    let client_state = q.get("state").cloned();
    let back = |error: &str, desc: &str| {
        let mut params = vec![("error", error), ("error_description", desc)];
        if let Some(s) = &client_state {
            params.push(("state", s));
        }
        Redirect::to(&with_params(&redirect_uri, &params)).into_response()
    };
    if q.get("response_type").map(String::as_str) != Some("code") {
        return back("unsupported_response_type", "only response_type=code is supported");
    }
    let challenge = q.get("code_challenge").cloned().unwrap_or_default();
    if q.get("code_challenge_method").map(String::as_str) != Some("S256") || challenge.len() != 43 {
        return back("invalid_request", "PKCE is required: code_challenge with code_challenge_method=S256");
    }
    let pending = PendingLogin {
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.clone(),
        client_state: client_state.clone(),
        client_nonce: q.get("nonce").cloned(),
        code_challenge: challenge,
        upstream_verifier: String::new(),
        upstream_nonce: String::new(),
        device: None,
        created: SystemTime::now(),
    };
    match to_upstream(&st, pending).await {
        Ok(target) => Redirect::to(&target).into_response(),
        Err(why) => back("temporarily_unavailable", why),
    }
}

/// Records the sign-in and returns where to send the browser at the upstream issuer (with our
/// own state, nonce and PKCE), or why it cannot be done now.
async fn to_upstream(st: &FlowState, mut pending: PendingLogin) -> Result<String, &'static str> {
    let p = &st.provider;
    let Some(up) = &st.upstream else {
        return Err("no upstream identity provider is configured on the control plane");
    };
    let discovery = match up.discovery().await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "upstream OIDC discovery failed");
            return Err("the upstream identity provider cannot be reached");
        }
    };
    let state = tokens::random_token(24);
    let verifier = tokens::random_token(48);
    let nonce = tokens::random_token(24);
    let mut scopes = match up.cfg.kind {
        super::upstream::UpstreamKind::Oidc => vec!["openid".to_owned()],
        super::upstream::UpstreamKind::GitHub { .. } => Vec::new(),
    };
    scopes.extend(up.cfg.scopes.iter().cloned());
    let target = with_params(
        &discovery.authorization_endpoint,
        &[
            ("response_type", "code"),
            ("client_id", &up.cfg.client_id),
            ("redirect_uri", &format!("{}/oidc/callback", p.issuer())),
            ("scope", &scopes.join(" ")),
            ("state", &state),
            ("nonce", &nonce),
            ("code_challenge", &tokens::sha256_b64(&verifier)),
            ("code_challenge_method", "S256"),
        ],
    );
    pending.upstream_verifier = verifier;
    pending.upstream_nonce = nonce;
    p.tokens.add_pending(state, pending);
    Ok(target)
}

async fn callback(State(st): State<Arc<FlowState>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let p = &st.provider;
    let Some(pending) = q.get("state").and_then(|s| p.tokens.take_pending(s)) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "unknown or expired sign-in; start again");
    };
    let result = upstream_sign_in(&st, &q, &pending).await;
    if let Some(key) = &pending.device {
        return device_signed_in(p, key, result);
    }
    let back = |params: &[(&str, &str)]| {
        let mut params = params.to_vec();
        if let Some(s) = &pending.client_state {
            params.push(("state", s));
        }
        Redirect::to(&with_params(&pending.redirect_uri, &params)).into_response()
    };
    let (ident, role) = match result {
        Ok(r) => r,
        Err((error, desc)) => return back(&[("error", error), ("error_description", &desc)]),
    };
    let code = p.tokens.add_code(Grant {
        client_id: pending.client_id.clone(),
        redirect_uri: pending.redirect_uri.clone(),
        code_challenge: pending.code_challenge.clone(),
        nonce: pending.client_nonce.clone(),
        subject: ident.subject,
        email: ident.email,
        role,
        created: SystemTime::now(),
    });
    back(&[("code", &code)])
}

/// Back from upstream: the verified identity and its role, or an OAuth error for the client.
async fn upstream_sign_in(
    st: &FlowState,
    q: &HashMap<String, String>,
    pending: &PendingLogin,
) -> Result<(UpstreamIdentity, Role), (&'static str, String)> {
    let p = &st.provider;
    if let Some(e) = q.get("error") {
        return Err(("access_denied", format!("the upstream identity provider refused: {e}")));
    }
    let (Some(code), Some(up)) = (q.get("code"), &st.upstream) else {
        return Err(("invalid_request", "no code from the upstream identity provider".into()));
    };
    let ident = match up
        .redeem(code, &format!("{}/oidc/callback", p.issuer()), &pending.upstream_verifier, &pending.upstream_nonce)
        .await
    {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "upstream sign-in failed");
            return Err(("access_denied", "the upstream sign-in could not be verified".into()));
        }
    };
    let Some(role) = ident.role else {
        tracing::info!(subject = %ident.subject, "sign-in refused: no role mapping matches");
        return Err(("access_denied", "you are signed in upstream but no role is granted to you".into()));
    };
    tracing::info!(subject = %ident.subject, %role, cli = pending.device.is_some(), "operator signed in");
    Ok((ident, role))
}

fn parse_form(body: &[u8]) -> HashMap<String, String> {
    let dec = |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (dec(k), dec(v))
        })
        .collect()
}

fn token_response(
    p: &Provider,
    client_id: &str,
    subject: &str,
    email: Option<&str>,
    role: super::Role,
    refresh: String,
    nonce: Option<&str>,
) -> Response {
    let access = p.issue_access_token(subject, email, role);
    let id_token = tokens::issue_id_token(p, client_id, subject, email, role, nonce);
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "access_token": access, "token_type": "Bearer", "expires_in": p.config.access_ttl.as_secs(),
            "refresh_token": refresh, "id_token": id_token, "scope": "openid email",
        })),
    )
        .into_response()
}

async fn token(State(st): State<Arc<FlowState>>, body: Bytes) -> Response {
    let p = &st.provider;
    let f = parse_form(&body);
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or_default();
    let client_id = get("client_id");
    if !p.config.clients.iter().any(|c| c.client_id == client_id) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client_id");
    }
    match get("grant_type") {
        "authorization_code" => {
            let Some(g) = p.tokens.take_code(get("code")) else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown, used or expired code");
            };
            if g.client_id != client_id || g.redirect_uri != get("redirect_uri") {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "code was issued to another client or redirect_uri",
                );
            }
            let verifier = get("code_verifier");
            if !(43..=128).contains(&verifier.len()) || tokens::sha256_b64(verifier) != g.code_challenge {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "PKCE code_verifier does not match the challenge",
                );
            }
            let refresh = match p.tokens.add_refresh(client_id, &g.subject, g.email.as_deref(), g.role, None).await {
                Ok(r) => r,
                Err(e) => return refresh_error(e),
            };
            token_response(p, client_id, &g.subject, g.email.as_deref(), g.role, refresh, g.nonce.as_deref())
        }
        DEVICE_GRANT_TYPE => {
            let (code, error, desc) = match p.device.poll(get("device_code"), client_id, Instant::now()) {
                Poll::Approved(a) => {
                    let refresh =
                        match p.tokens.add_refresh(client_id, &a.subject, a.email.as_deref(), a.role, None).await {
                            Ok(r) => r,
                            Err(e) => return refresh_error(e),
                        };
                    return token_response(p, client_id, &a.subject, a.email.as_deref(), a.role, refresh, None);
                }
                Poll::Pending => (StatusCode::BAD_REQUEST, "authorization_pending", "the sign-in is not finished yet"),
                Poll::SlowDown => {
                    (StatusCode::BAD_REQUEST, "slow_down", "polling too fast: add 5 seconds to the interval")
                }
                Poll::Denied => (StatusCode::BAD_REQUEST, "access_denied", "the sign-in was refused"),
                Poll::Expired => (StatusCode::BAD_REQUEST, "expired_token", "the device code expired; start again"),
                Poll::Invalid(why) => (StatusCode::BAD_REQUEST, "invalid_grant", why),
            };
            oauth_error(code, error, desc)
        }
        "refresh_token" => match p.tokens.rotate_refresh(get("refresh_token"), client_id).await {
            Ok(s) => token_response(p, client_id, &s.subject, s.email.as_deref(), s.role, s.refresh, None),
            Err(e) => refresh_error(e),
        },
        other => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!("grant_type {:?} is not supported", enc(other)),
        ),
    }
}

fn refresh_error(e: tokens::RefreshError) -> Response {
    match e {
        tokens::RefreshError::Invalid(why) => oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &why),
        tokens::RefreshError::Unavailable => oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the session store cannot be reached; try again",
        ),
    }
}

async fn revoke(State(st): State<Arc<FlowState>>, body: Bytes) -> Response {
    let f = parse_form(&body);
    if let Some(t) = f.get("token") {
        st.provider.tokens.revoke_refresh(t).await;
    }
    // RFC 7009: 200 whether or not the token was known.
    StatusCode::OK.into_response()
}

async fn userinfo(State(st): State<Arc<FlowState>>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    match st.provider.verify_access_token(token) {
        Ok(c) => Json(json!({"sub": c.subject, "email": c.email, "role": c.role.as_str()})).into_response(),
        Err(e) => oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", &e.to_string()),
    }
}

/// `POST /oidc/device_authorization` (RFC 8628 3.1): a device code for the CLI to poll with and
/// a user code for the operator to confirm on the verification page.
async fn device_authorization(State(st): State<Arc<FlowState>>, body: Bytes) -> Response {
    let p = &st.provider;
    let f = parse_form(&body);
    let client_id = f.get("client_id").map(String::as_str).unwrap_or_default();
    if !p.config.clients.iter().any(|c| c.client_id == client_id) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client_id");
    }
    if st.upstream.is_none() {
        return oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "no upstream identity provider is configured on the control plane",
        );
    }
    match p.device.start(client_id, Instant::now()) {
        Ok(n) => {
            let uri = format!("{}/oidc/device", p.issuer());
            // The user code is letters and a dash: no escaping, so the URL stays readable.
            let complete = format!("{uri}?user_code={}", n.user_code);
            (
                [(header::CACHE_CONTROL, "no-store")],
                Json(json!({
                    "device_code": n.device_code, "user_code": n.user_code,
                    "verification_uri": uri, "verification_uri_complete": complete,
                    "expires_in": n.expires_in.as_secs(), "interval": n.interval.as_secs(),
                })),
            )
                .into_response()
        }
        Err(e @ StartError::Full) => {
            tracing::warn!("device sign-in refused: the table of pending device grants is full");
            oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", &e.to_string())
        }
        Err(e @ StartError::RateLimited) => {
            oauth_error(StatusCode::TOO_MANY_REQUESTS, "temporarily_unavailable", &e.to_string())
        }
    }
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A small self-contained page: no scripts, not framable, not cached, no referrer (the URL
/// may carry the user code).
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width\"><title>{t} · Riptides</title><style>body{{font-family:system-ui,sans-serif;\
         max-width:34rem;margin:4rem auto;padding:0 1rem;line-height:1.5}}input{{font:1.4rem monospace;\
         letter-spacing:.2rem;padding:.3rem;width:12rem;text-transform:uppercase}}button{{font-size:1rem;\
         margin:1rem .5rem 0 0;padding:.4rem 1rem}}</style></head><body><h1>{t}</h1>{body}</body></html>",
        t = html_escape(title)
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
        ],
        html,
    )
        .into_response()
}

/// `GET /oidc/device[?user_code=...]`: the verification page (RFC 8628 3.3).
async fn device_page(Query(q): Query<HashMap<String, String>>) -> Response {
    let code = q
        .get("user_code")
        .and_then(|c| device::normalize_user_code(c))
        .map(|c| format!("{}-{}", &c[..4], &c[4..]))
        .unwrap_or_default();
    let body = format!(
        "<p>A command line (<code>riptides login</code>) asks to act as you on this control plane.\
         Continue only if you started it yourself and the code below is the one your terminal shows.</p>\
         <form method=\"post\" action=\"device\"><label>Code <input name=\"user_code\" value=\"{}\" \
         autocomplete=\"off\" autofocus required></label><br>\
         <button name=\"action\" value=\"allow\" type=\"submit\">Continue and sign in</button>\
         <button name=\"action\" value=\"deny\" type=\"submit\">Deny</button></form>",
        html_escape(&code)
    );
    page(StatusCode::OK, "Sign in the Riptides CLI", &body)
}

/// `POST /oidc/device`: claims the user code (single use) and sends the browser through the
/// upstream sign-in, or refuses the grant.
/// Whether a form post comes from another site, as far as the browser says (`Sec-Fetch-Site`,
/// else `Origin`): such a post could otherwise make a signed-in operator's browser approve an
/// attacker's device code without the operator seeing the page.
fn cross_site(issuer: &str, headers: &HeaderMap) -> bool {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        return !matches!(site, "same-origin" | "none");
    }
    let Some(origin) = get(header::ORIGIN.as_str()) else { return false };
    let issuer_origin = issuer.split_once("://").map(|(scheme, rest)| {
        let authority = rest.split('/').next().unwrap_or_default();
        format!("{scheme}://{authority}")
    });
    issuer_origin.as_deref() != Some(origin)
}

async fn device_submit(State(st): State<Arc<FlowState>>, headers: HeaderMap, body: Bytes) -> Response {
    let p = &st.provider;
    if cross_site(p.issuer(), &headers) {
        tracing::warn!("device sign-in: refused a form post from another site");
        return page(
            StatusCode::FORBIDDEN,
            "Refused",
            "<p>This form was sent from another site. Open the address your terminal shows yourself.</p>",
        );
    }
    let f = parse_form(&body);
    let code = f.get("user_code").map(String::as_str).unwrap_or_default();
    let key = match p.device.claim(code, Instant::now()) {
        Ok(k) => k,
        Err(e @ ClaimError::Unknown) => {
            return page(StatusCode::BAD_REQUEST, "Unknown code", &html_escape(&e.to_string()));
        }
        Err(e @ ClaimError::RateLimited) => {
            tracing::warn!("device sign-in: too many wrong user codes; refusing codes for a while");
            return page(StatusCode::TOO_MANY_REQUESTS, "Too many attempts", &html_escape(&e.to_string()));
        }
    };
    if f.get("action").map(String::as_str) == Some("deny") {
        p.device.deny(&key);
        return page(
            StatusCode::OK,
            "Sign-in refused",
            "<p>The command line that asked is refused. You can close this window.</p>",
        );
    }
    let pending = PendingLogin {
        client_id: p.device.client_of(&key).unwrap_or_default(),
        redirect_uri: String::new(),
        client_state: None,
        client_nonce: None,
        code_challenge: String::new(),
        upstream_verifier: String::new(),
        upstream_nonce: String::new(),
        device: Some(key.clone()),
        created: SystemTime::now(),
    };
    match to_upstream(&st, pending).await {
        Ok(target) => Redirect::to(&target).into_response(),
        Err(why) => {
            p.device.deny(&key);
            page(StatusCode::SERVICE_UNAVAILABLE, "Sign-in unavailable", &html_escape(why))
        }
    }
}

/// The end of a CLI sign-in in the browser: approve (or deny) the device grant.
fn device_signed_in(
    p: &Provider,
    key: &str,
    result: Result<(UpstreamIdentity, Role), (&'static str, String)>,
) -> Response {
    match result {
        Err((_, desc)) => {
            p.device.deny(key);
            page(StatusCode::FORBIDDEN, "Sign-in failed", &format!("<p>{}</p>", html_escape(&desc)))
        }
        Ok((ident, role)) => {
            let approval = Approval { subject: ident.subject, email: ident.email, role };
            let who = format!("{} ({role})", approval.email.as_deref().unwrap_or(&approval.subject));
            if p.device.approve(key, approval, Instant::now()) {
                page(
                    StatusCode::OK,
                    "Signed in",
                    &format!(
                        "<p>The command line is signed in as {}. You can close this window and return to your terminal.</p>",
                        html_escape(&who)
                    ),
                )
            } else {
                page(
                    StatusCode::GONE,
                    "Sign-in expired",
                    "<p>This sign-in took too long; run <code>riptides login</code> again.</p>",
                )
            }
        }
    }
}
