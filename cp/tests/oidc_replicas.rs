//! Operator sessions across control-plane replicas on one etcd: the OIDC signing key is shared
//! (sealed in the store with the CA seal key) and refresh tokens live (hashed) in the store, so
//! an access token issued by one replica is honoured by the other, either replica rotates the
//! refresh token, reuse and sign-out are seen by both, and a replica started later (fresh data
//! dir) takes the same key. Needs etcd (`/usr/bin/etcd`, Debian's etcd-server).

mod common;
mod etcd_support;
mod oidc_support;

use std::path::Path;
use std::sync::Arc;

use etcd_support::EtcdCluster;
use oidc_support::{enc, pkce, query_of, start_idp, Http, Idp, UPSTREAM_CLIENT};
use riptides_cp::ca::SealKey;
use riptides_cp::config::StoreBackend;
use riptides_cp::oidc::{ClientConfig, OidcConfig, RoleRule, UpstreamConfig};
use riptides_cp::store::{ObjectKey, Store};
use riptides_cp::{Config, ControlPlane};
use serde_json::{json, Value};

const SEAL_KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// The issuer operators reach the replicas at (a load balancer in front of both).
const ISSUER: &str = "https://riptides.test";
const UI: &str = "riptides-ui";
const REDIRECT: &str = "http://127.0.0.1/signed-in";

async fn replica(etcd: &EtcdCluster, root: &Path, name: &str, idp: &Idp) -> ControlPlane {
    let mut config = Config::for_tests(&root.join(name));
    config.store = StoreBackend::Etcd(etcd.config());
    config.ca_seal_key = Some(Arc::new(SealKey::parse(SEAL_KEY_HEX).unwrap()));
    config.replica_name = Some(name.into());
    config.oidc = OidcConfig {
        issuer: Some(ISSUER.into()),
        upstream: Some(UpstreamConfig {
            kind: Default::default(),
            issuer: idp.issuer.clone(),
            client_id: UPSTREAM_CLIENT.into(),
            client_secret: None,
            scopes: vec!["email".into()],
            ca_pem: None,
            role_rules: vec![RoleRule::parse("email_domain=example.com:editor").unwrap()],
            default_role: None,
        }),
        clients: vec![ClientConfig { client_id: UI.into(), redirect_uris: vec![REDIRECT.into()] }],
        ..OidcConfig::default()
    };
    ControlPlane::start(config).await.unwrap()
}

fn http_for(cp: &ControlPlane) -> Http {
    Http::trusting(&cp.ca().bundle().to_pem())
}

fn base(cp: &ControlPlane) -> String {
    format!("https://{}", cp.api_addr())
}

/// Signs in through replica `cp` (the load balancer sends the whole browser flow there) and
/// redeems the code there. Returns the token response.
async fn sign_in(http: &Http, cp: &ControlPlane, idp: &Idp) -> Value {
    *idp.user.lock().unwrap() = json!({"sub": "u-1", "email": "eve@example.com"});
    let (verifier, challenge) = pkce();
    let b = base(cp);
    let url = format!(
        "{b}/oidc/authorize?response_type=code&client_id={UI}&redirect_uri={}&state=s&scope=openid&code_challenge={challenge}&code_challenge_method=S256",
        enc(REDIRECT)
    );
    let (c, to_upstream, v) = http.send("GET", &url, None, None).await;
    assert!((300..400).contains(&c), "{c} {v}");
    let (c, back, _) = http.send("GET", &to_upstream.unwrap(), None, None).await;
    assert!((300..400).contains(&c));
    let back = back.unwrap();
    assert!(back.starts_with(&format!("{ISSUER}/oidc/callback?")), "{back}");
    let back = back.replacen(ISSUER, &b, 1);
    let (c, to_client, v) = http.send("GET", &back, None, None).await;
    assert!((300..400).contains(&c), "{c} {v}");
    let q = query_of(&to_client.unwrap());
    let form = format!(
        "grant_type=authorization_code&code={}&redirect_uri={}&client_id={UI}&code_verifier={}",
        enc(&q["code"]),
        enc(REDIRECT),
        enc(&verifier)
    );
    let (c, _, tokens) = http.send("POST", &format!("{b}/oidc/token"), Some(form), None).await;
    assert_eq!(c, 200, "{tokens}");
    tokens
}

async fn me(http: &Http, cp: &ControlPlane, token: &str) -> (u16, Value) {
    let body = json!({"query": "{ me { subject role } }"}).to_string();
    let (c, _, v) = http.send("POST", &format!("{}/graphql", base(cp)), Some(body), Some(token)).await;
    (c, v)
}

async fn refresh(http: &Http, cp: &ControlPlane, token: &str) -> (u16, Value) {
    let form = format!("grant_type=refresh_token&client_id={UI}&refresh_token={}", enc(token));
    let (c, _, v) = http.send("POST", &format!("{}/oidc/token", base(cp)), Some(form), None).await;
    (c, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_and_signing_key_are_shared_by_replicas() {
    common::init_tracing();
    let etcd = EtcdCluster::single().await;
    let idp = start_idp().await;
    let root = tempfile::tempdir().unwrap();
    let a = replica(&etcd, root.path(), "a", &idp).await;
    let b = replica(&etcd, root.path(), "b", &idp).await;
    let http = http_for(&a);

    // One key: the same JWKS on both.
    let (_, _, ja) = http.send("GET", &format!("{}/oidc/jwks.json", base(&a)), None, None).await;
    let (_, _, jb) = http.send("GET", &format!("{}/oidc/jwks.json", base(&b)), None, None).await;
    assert_eq!(ja["keys"][0]["kid"], jb["keys"][0]["kid"]);
    assert!(ja["keys"][0]["kid"].is_string(), "{ja}");

    // Sealed in the store: the PKCS#8 key is not there in the clear.
    let store = etcd.store().await;
    let (resource, ns, name) = riptides_cp::oidc::shared::SIGNING_KEY_OBJECT;
    let sealed = store.get(&ObjectKey::new(resource, ns, name)).await.unwrap().expect("the sealed key is published");
    let pkcs8 = std::fs::read(root.path().join("a/oidc/signing-key.p8"))
        .or_else(|_| std::fs::read(root.path().join("b/oidc/signing-key.p8")))
        .expect("the publishing replica's own key file");
    assert!(!sealed.value.windows(pkcs8.len()).any(|w| w == pkcs8.as_slice()));
    let text = String::from_utf8_lossy(&sealed.value);
    assert!(text.contains("ciphertext") && !text.contains("PRIVATE KEY"), "{text}");

    // Issued by a, honoured by b.
    let tokens = sign_in(&http, &a, &idp).await;
    let access = tokens["access_token"].as_str().unwrap();
    let (c, v) = me(&http, &b, access).await;
    assert_eq!((c, v["data"]["me"]["role"].as_str()), (200, Some("editor")), "{v}");

    // Refreshed at b; the refresh tokens are stored hashed, never as themselves.
    let r1 = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (objs, _) = store.list(riptides_cp::oidc::sessions::REFRESH_RESOURCE, None).await.unwrap();
    assert_eq!(objs.len(), 1);
    assert!(objs.iter().all(|o| !o.key.name.contains(&r1) && !String::from_utf8_lossy(&o.value).contains(&r1)));
    let (c, t2) = refresh(&http, &b, &r1).await;
    assert_eq!(c, 200, "{t2}");
    let r2 = t2["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(me(&http, &a, t2["access_token"].as_str().unwrap()).await.0, 200);
    // The rotated r1 used again at a: reuse, the whole session is revoked everywhere.
    let (c, v) = refresh(&http, &a, &r1).await;
    assert_eq!((c, v["error"].as_str()), (400, Some("invalid_grant")), "{v}");
    let (c, v) = refresh(&http, &b, &r2).await;
    assert_eq!((c, v["error"].as_str()), (400, Some("invalid_grant")), "the family is revoked: {v}");

    // Sign-out at a ends the session at b.
    let tokens = sign_in(&http, &b, &idp).await;
    let rt = tokens["refresh_token"].as_str().unwrap();
    let (c, _, _) =
        http.send("POST", &format!("{}/oidc/revoke", base(&a)), Some(format!("token={}", enc(rt))), None).await;
    assert_eq!(c, 200);
    assert_eq!(refresh(&http, &b, rt).await.0, 400);

    // A replica started later, with a fresh data dir, takes the shared key and the sessions;
    // restarting a replica signs nobody out.
    let tokens = sign_in(&http, &a, &idp).await;
    a.shutdown().await;
    let c3 = replica(&etcd, root.path(), "c", &idp).await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(me(&http, &c3, access).await.0, 200);
    let (c, v) = refresh(&http, &c3, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(c, 200, "{v}");
    c3.shutdown().await;
    b.shutdown().await;
}
