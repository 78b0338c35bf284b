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
//! - `GET /oidc/userinfo`: the signed-in operator, from the access token

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::tokens::{self, Grant, PendingLogin};
use super::upstream::{enc, form_urlencoded, Upstream};
use super::Provider;

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
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
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
    let Some(up) = &st.upstream else {
        return back("temporarily_unavailable", "no upstream identity provider is configured on the control plane");
    };
    let discovery = match up.discovery().await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "upstream OIDC discovery failed");
            return back("temporarily_unavailable", "the upstream identity provider cannot be reached");
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
    p.tokens.add_pending(
        state,
        PendingLogin {
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.clone(),
            client_state: client_state.clone(),
            client_nonce: q.get("nonce").cloned(),
            code_challenge: challenge,
            upstream_verifier: verifier,
            upstream_nonce: nonce,
            created: SystemTime::now(),
        },
    );
    Redirect::to(&target).into_response()
}

async fn callback(State(st): State<Arc<FlowState>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let p = &st.provider;
    let Some(pending) = q.get("state").and_then(|s| p.tokens.take_pending(s)) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "unknown or expired sign-in; start again");
    };
    let back = |params: &[(&str, &str)]| {
        let mut params = params.to_vec();
        if let Some(s) = &pending.client_state {
            params.push(("state", s));
        }
        Redirect::to(&with_params(&pending.redirect_uri, &params)).into_response()
    };
    if let Some(e) = q.get("error") {
        let desc = format!("the upstream identity provider refused: {e}");
        return back(&[("error", "access_denied"), ("error_description", &desc)]);
    }
    let (Some(code), Some(up)) = (q.get("code"), &st.upstream) else {
        return back(&[
            ("error", "invalid_request"),
            ("error_description", "no code from the upstream identity provider"),
        ]);
    };
    let ident = match up
        .redeem(code, &format!("{}/oidc/callback", p.issuer()), &pending.upstream_verifier, &pending.upstream_nonce)
        .await
    {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "upstream sign-in failed");
            return back(&[
                ("error", "access_denied"),
                ("error_description", "the upstream sign-in could not be verified"),
            ]);
        }
    };
    let Some(role) = ident.role else {
        tracing::info!(subject = %ident.subject, "sign-in refused: no role mapping matches");
        return back(&[
            ("error", "access_denied"),
            ("error_description", "you are signed in upstream but no role is granted to you"),
        ]);
    };
    tracing::info!(subject = %ident.subject, %role, "operator signed in");
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
            let refresh = p.tokens.add_refresh(client_id, &g.subject, g.email.as_deref(), g.role, None);
            token_response(p, client_id, &g.subject, g.email.as_deref(), g.role, refresh, g.nonce.as_deref())
        }
        "refresh_token" => match p.tokens.rotate_refresh(get("refresh_token"), client_id) {
            Ok((subject, email, role, refresh)) => {
                token_response(p, client_id, &subject, email.as_deref(), role, refresh, None)
            }
            Err(e) => oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &e),
        },
        other => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!("grant_type {:?} is not supported", enc(other)),
        ),
    }
}

async fn revoke(State(st): State<Arc<FlowState>>, body: Bytes) -> Response {
    let f = parse_form(&body);
    if let Some(t) = f.get("token") {
        st.provider.tokens.revoke_refresh(t);
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
