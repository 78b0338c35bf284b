//! An upstream OIDC issuer for tests, on loopback: signs in whoever `user` names without
//! asking (authorization code with PKCE checked, ES256 ID tokens, nonce echoed).
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};

/// Our client id at the test issuer.
pub const UPSTREAM_CLIENT: &str = "riptides-cp";

/// A test identity provider: signs in whoever `user` names, without asking.
pub struct Idp {
    pub issuer: String,
    key: EcdsaKeyPair,
    pub user: Mutex<Value>,
    codes: Mutex<HashMap<String, (String, String)>>,
}

pub fn b64(b: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

pub fn form(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| {
            let d =
                |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
            (d(k), d(v))
        })
        .collect()
}

pub async fn start_idp() -> Arc<Idp> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let idp = Arc::new(Idp {
        issuer,
        key: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        user: Mutex::new(json!({})),
        codes: Mutex::new(HashMap::new()),
    });
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(|State(i): State<Arc<Idp>>| async move {
                Json(json!({"issuer": i.issuer, "authorization_endpoint": format!("{}/authorize", i.issuer),
                    "token_endpoint": format!("{}/token", i.issuer), "jwks_uri": format!("{}/jwks", i.issuer)}))
            }),
        )
        .route(
            "/jwks",
            get(|State(i): State<Arc<Idp>>| async move {
                let p = i.key.public_key().as_ref().to_vec();
                Json(json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "idp-1", "x": b64(&p[1..33]), "y": b64(&p[33..])}]}))
            }),
        )
        .route(
            "/authorize",
            get(|State(i): State<Arc<Idp>>, Query(q): Query<HashMap<String, String>>| async move {
                assert_eq!(q["client_id"], UPSTREAM_CLIENT);
                assert_eq!(q["code_challenge_method"], "S256");
                assert!(q["scope"].split(' ').any(|s| s == "openid"));
                let code = format!("up-{}", i.codes.lock().unwrap().len());
                i.codes.lock().unwrap().insert(code.clone(), (q["nonce"].clone(), q["code_challenge"].clone()));
                Redirect::to(&format!("{}?code={code}&state={}", q["redirect_uri"], q["state"]))
            }),
        )
        .route(
            "/token",
            post(|State(i): State<Arc<Idp>>, body: Bytes| async move {
                let f = form(&body);
                let Some((nonce, challenge)) = i.codes.lock().unwrap().remove(&f["code"]) else {
                    return (axum::http::StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_grant"}))).into_response();
                };
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, f["code_verifier"].as_bytes());
                assert_eq!(b64(digest.as_ref()), challenge, "the CP's PKCE verifier matches its challenge");
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
                let mut claims = i.user.lock().unwrap().clone();
                claims["iss"] = json!(i.issuer);
                claims["aud"] = json!(UPSTREAM_CLIENT);
                claims["iat"] = json!(now);
                claims["exp"] = json!(now + 300);
                claims["nonce"] = json!(nonce);
                let input = format!("{}.{}", b64(json!({"alg": "ES256", "kid": "idp-1"}).to_string()), b64(claims.to_string()));
                let sig = i.key.sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes()).unwrap();
                Json(json!({"id_token": format!("{input}.{}", b64(sig.as_ref())), "access_token": "x", "token_type": "Bearer"}))
                    .into_response()
            }),
        )
        .with_state(idp.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    idp
}
