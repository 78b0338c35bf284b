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
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
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

/// A minimal HTTP(S) client that shows redirects instead of following them.
pub struct Http {
    pub tls: tokio_rustls::TlsConnector,
}

impl Http {
    /// A client that trusts only `ca_pem` (the control plane's trust bundle).
    pub fn trusting(ca_pem: &str) -> Http {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c.expect("a PEM certificate")).unwrap();
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Http { tls: tokio_rustls::TlsConnector::from(Arc::new(tls)) }
    }

    pub async fn send(
        &self,
        method: &str,
        url: &str,
        form: Option<String>,
        bearer: Option<&str>,
    ) -> (u16, Option<String>, Value) {
        let (code, location, text) = self.send_text(method, url, form, bearer).await;
        (code, location, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Like [`Http::send`], with the body as text (HTML pages).
    pub async fn send_text(
        &self,
        method: &str,
        url: &str,
        form: Option<String>,
        bearer: Option<&str>,
    ) -> (u16, Option<String>, String) {
        self.send_headers(method, url, form, bearer, &[]).await
    }

    /// Like [`Http::send_text`], with extra request headers (what a browser adds).
    pub async fn send_headers(
        &self,
        method: &str,
        url: &str,
        form: Option<String>,
        bearer: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, Option<String>, String) {
        let https = url.starts_with("https://");
        let rest = url.split_once("://").unwrap().1;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let tcp = tokio::net::TcpStream::connect(authority).await.unwrap();
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(if path.is_empty() { "/" } else { path })
            .header("host", authority);
        if let Some(b) = bearer {
            req = req.header("authorization", format!("Bearer {b}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match form {
            Some(f) if f.starts_with('{') => {
                req = req.header("content-type", "application/json");
                Full::new(Bytes::from(f))
            }
            Some(f) => {
                req = req.header("content-type", "application/x-www-form-urlencoded");
                Full::new(Bytes::from(f))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body).unwrap();
        let resp = if https {
            let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let s = self.tls.connect(name, tcp).await.unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        };
        let code = resp.status().as_u16();
        let location = resp.headers().get("location").map(|l| l.to_str().unwrap().to_owned());
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (code, location, String::from_utf8_lossy(&bytes).into_owned())
    }
}

pub fn query_of(url: &str) -> HashMap<String, String> {
    form(url.split_once('?').map(|(_, q)| q).unwrap_or_default().as_bytes())
}

pub fn pkce() -> (String, String) {
    let verifier = b64(b"a fixed but long enough pkce verifier for the test, 32+ bytes");
    let challenge = b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref());
    (verifier, challenge)
}

pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
