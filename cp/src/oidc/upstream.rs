//! The upstream identity provider sign-in is federated to, and the mapping of what it says
//! about the operator to a [`Role`]:
//! - generic OIDC: discovery, the token request of the authorization code flow, ID token
//!   verification against its JWKS (issuer, audience, expiry, nonce);
//! - GitHub's OAuth flow (not OIDC: no ID token): the code is exchanged for an access token
//!   with which the operator's account, verified primary email and organizations are read from
//!   the API; they become the claims `login`, `email`, `org` (a list) for the role rules.
//!
//! The HTTP client is a plain hyper HTTP/1.1 client: `https` with rustls on aws-lc-rs,
//! trusting the configured CA bundle (or the system bundle file), and `http` only for
//! loopback issuers (tests, a local Dex).

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::Role;
use crate::attest::jose;

const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BODY: usize = 1 << 20;
/// Discovery and JWKS are re-fetched after this (and on an unknown `kid`).
const CACHE_TTL: Duration = Duration::from_secs(300);
const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// One claim condition that grants a role. The highest role of all matching rules wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRule {
    /// `email` (exact, verified emails only), `email_domain` (the part after `@`), `groups`
    /// (the claim is a list containing the value), or any other claim name (string equal, or a
    /// list containing it), e.g. `org`.
    pub claim: String,
    pub value: String,
    pub role: Role,
}

impl RoleRule {
    /// Parses `claim=value:role`, e.g. `groups=platform-admins:admin`.
    pub fn parse(s: &str) -> Result<RoleRule, String> {
        let (cond, role) = s.rsplit_once(':').ok_or_else(|| format!("{s:?}: expected CLAIM=VALUE:ROLE"))?;
        let (claim, value) = cond.split_once('=').ok_or_else(|| format!("{s:?}: expected CLAIM=VALUE:ROLE"))?;
        let role = Role::parse(role).ok_or_else(|| format!("{s:?}: role must be viewer, editor or admin"))?;
        if claim.is_empty() || value.is_empty() {
            return Err(format!("{s:?}: claim and value must not be empty"));
        }
        Ok(RoleRule { claim: claim.to_owned(), value: value.to_owned(), role })
    }
}

/// Which protocol the upstream speaks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum UpstreamKind {
    #[default]
    Oidc,
    /// GitHub OAuth: `issuer` is the web URL (`https://github.com`), `api_url` the REST API
    /// (`https://api.github.com`; GitHub Enterprise: `https://<host>/api/v3`).
    GitHub { api_url: String },
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub kind: UpstreamKind,
    /// The upstream issuer URL (its discovery document is `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// Scopes asked for besides `openid`.
    pub scopes: Vec<String>,
    /// PEM CA bundle for an `https` issuer (the system bundle when absent).
    pub ca_pem: Option<Vec<u8>>,
    pub role_rules: Vec<RoleRule>,
    /// The role of a signed-in operator no rule matches; `None` refuses them.
    pub default_role: Option<Role>,
}

/// Maps verified upstream claims to a role: the highest role among matching rules, else the
/// default, else none (refused).
pub fn map_role(cfg: &UpstreamConfig, claims: &serde_json::Map<String, Value>) -> Option<Role> {
    let email_verified = claims.get("email_verified").and_then(Value::as_bool) != Some(false);
    let email = claims.get("email").and_then(Value::as_str).filter(|_| email_verified);
    let mut best: Option<Role> = None;
    for r in &cfg.role_rules {
        let hit = match r.claim.as_str() {
            "email" => email.is_some_and(|e| e.eq_ignore_ascii_case(&r.value)),
            "email_domain" => email
                .and_then(|e| e.rsplit_once('@'))
                .is_some_and(|(_, d)| d.eq_ignore_ascii_case(r.value.trim_start_matches('@'))),
            other => match claims.get(other) {
                Some(Value::String(s)) => *s == r.value,
                Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(r.value.as_str())),
                Some(Value::Bool(b)) => b.to_string() == r.value,
                _ => false,
            },
        };
        if hit {
            best = best.max(Some(r.role));
        }
    }
    best.or(cfg.default_role)
}

#[derive(Debug, Clone)]
pub struct Discovery {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
}

struct Cached {
    discovery: Discovery,
    jwks: jose::Jwks,
    at: Instant,
}

/// The upstream issuer's client.
pub struct Upstream {
    pub cfg: UpstreamConfig,
    tls: Option<tokio_rustls::TlsConnector>,
    cache: Mutex<Option<Cached>>,
}

/// What a verified upstream sign-in yields.
#[derive(Debug, Clone)]
pub struct UpstreamIdentity {
    pub subject: String,
    pub email: Option<String>,
    pub role: Option<Role>,
}

impl Upstream {
    pub fn new(cfg: UpstreamConfig) -> anyhow::Result<Upstream> {
        let tls = if cfg.issuer.starts_with("https://") {
            let pem = match &cfg.ca_pem {
                Some(p) => p.clone(),
                None => std::fs::read(SYSTEM_CA_FILE).with_context(|| {
                    format!("no CA bundle configured for the upstream issuer and {SYSTEM_CA_FILE} is unreadable")
                })?,
            };
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut pem.as_slice()) {
                let _ = roots.add(c?);
            }
            let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)))
        } else if cfg.issuer.starts_with("http://") {
            let host = split_url(&cfg.issuer)?.1;
            let loopback = host == "localhost"
                || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                bail!("upstream issuer {} must use https (plain http only on loopback)", cfg.issuer);
            }
            None
        } else {
            bail!("upstream issuer {} is not an http(s) URL", cfg.issuer);
        };
        Ok(Upstream { cfg, tls, cache: Mutex::new(None) })
    }

    pub async fn discovery(&self) -> anyhow::Result<Discovery> {
        if let UpstreamKind::GitHub { .. } = &self.cfg.kind {
            let web = self.cfg.issuer.trim_end_matches('/');
            return Ok(Discovery {
                authorization_endpoint: format!("{web}/login/oauth/authorize"),
                token_endpoint: format!("{web}/login/oauth/access_token"),
                jwks_uri: String::new(),
            });
        }
        Ok(self.cached(false).await?.0)
    }

    async fn cached(&self, force: bool) -> anyhow::Result<(Discovery, jose::Jwks)> {
        if !force {
            if let Some(c) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                if c.at.elapsed() < CACHE_TTL {
                    return Ok((c.discovery.clone(), c.jwks.clone()));
                }
            }
        }
        let url = format!("{}/.well-known/openid-configuration", self.cfg.issuer.trim_end_matches('/'));
        let doc: Value = serde_json::from_slice(&self.request("GET", &url, None, None).await?)
            .with_context(|| format!("{url} is not JSON"))?;
        if doc["issuer"].as_str().map(|s| s.trim_end_matches('/')) != Some(self.cfg.issuer.trim_end_matches('/')) {
            bail!("the discovery document at {url} names another issuer ({})", doc["issuer"]);
        }
        let field = |k: &str| doc[k].as_str().map(str::to_owned).ok_or_else(|| anyhow!("{url} has no {k}"));
        let discovery = Discovery {
            authorization_endpoint: field("authorization_endpoint")?,
            token_endpoint: field("token_endpoint")?,
            jwks_uri: field("jwks_uri")?,
        };
        let jwks_text = self.request("GET", &discovery.jwks_uri, None, None).await?;
        let jwks =
            jose::Jwks::parse(&String::from_utf8_lossy(&jwks_text)).map_err(|e| anyhow!("upstream JWKS: {e}"))?;
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Cached { discovery: discovery.clone(), jwks: jwks.clone(), at: Instant::now() });
        Ok((discovery, jwks))
    }

    /// Exchanges the upstream code and verifies the ID token (issuer, audience, expiry, nonce).
    pub async fn redeem(
        &self,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
        nonce: &str,
    ) -> anyhow::Result<UpstreamIdentity> {
        let d = self.discovery().await?;
        let mut form = form_urlencoded(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("client_id", &self.cfg.client_id),
            ("code_verifier", verifier),
        ]);
        if let Some(s) = &self.cfg.client_secret {
            form.push('&');
            form.push_str(&form_urlencoded(&[("client_secret", s)]));
        }
        let body = self.request("POST", &d.token_endpoint, Some(form), None).await?;
        let resp: Value = serde_json::from_slice(&body).context("the upstream token response is not JSON")?;
        if let Some(e) = resp["error"].as_str() {
            bail!(
                "the upstream issuer refused the code: {e} {}",
                resp["error_description"].as_str().unwrap_or_default()
            );
        }
        if let UpstreamKind::GitHub { api_url } = &self.cfg.kind {
            let token =
                resp["access_token"].as_str().ok_or_else(|| anyhow!("GitHub's token response has no access_token"))?;
            return self.github_identity(api_url.trim_end_matches('/'), token).await;
        }
        let id_token =
            resp["id_token"].as_str().ok_or_else(|| anyhow!("the upstream token response has no id_token"))?;
        let aud = [self.cfg.client_id.clone()];
        let verify = |jwks: &jose::Jwks| {
            jose::verify(
                id_token,
                jwks,
                &jose::Expectations { issuer: &self.cfg.issuer, audiences: &aud, now: SystemTime::now() },
            )
        };
        let (_, jwks) = self.cached(false).await?;
        let verified = match verify(&jwks) {
            Ok(v) => v,
            // The issuer may have rotated its keys: fetch them once more.
            Err(e) if e.to_string().contains("key") => verify(&self.cached(true).await?.1)?,
            Err(e) => return Err(e.into()),
        };
        if verified.str("nonce") != Some(nonce) {
            bail!("the upstream ID token does not carry the nonce of this sign-in");
        }
        let sub =
            verified.str("sub").filter(|s| !s.is_empty()).ok_or_else(|| anyhow!("the upstream ID token has no sub"))?;
        let email_verified = verified.claims.get("email_verified").and_then(Value::as_bool) != Some(false);
        Ok(UpstreamIdentity {
            subject: format!("{}#{sub}", self.cfg.issuer.trim_end_matches('/')),
            email: verified.str("email").filter(|_| email_verified).map(str::to_owned),
            role: map_role(&self.cfg, &verified.claims),
        })
    }

    /// The GitHub account behind `token`: id, login, verified primary email, organizations.
    async fn github_identity(&self, api: &str, token: &str) -> anyhow::Result<UpstreamIdentity> {
        let get = |path: &str| {
            let url = format!("{api}{path}");
            async move {
                let body = self.request("GET", &url, None, Some(token)).await?;
                serde_json::from_slice::<Value>(&body).with_context(|| format!("{url} is not JSON"))
            }
        };
        let user = get("/user").await?;
        let id = user["id"].as_u64().ok_or_else(|| anyhow!("GitHub's /user has no id"))?;
        let emails = get("/user/emails").await?;
        let email = emails.as_array().into_iter().flatten().find(|e| e["primary"] == true && e["verified"] == true);
        let orgs: Vec<Value> = get("/user/orgs")
            .await?
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["login"].as_str().map(|l| Value::String(l.to_owned())))
            .collect();
        let mut claims = serde_json::Map::new();
        claims.insert("login".into(), user["login"].clone());
        if let Some(e) = email.and_then(|e| e["email"].as_str()) {
            claims.insert("email".into(), Value::String(e.to_owned()));
        }
        claims.insert("org".into(), Value::Array(orgs));
        Ok(UpstreamIdentity {
            subject: format!("github#{id}"),
            email: claims.get("email").and_then(Value::as_str).map(str::to_owned),
            role: map_role(&self.cfg, &claims),
        })
    }

    async fn request(
        &self,
        method: &str,
        url: &str,
        form: Option<String>,
        bearer: Option<&str>,
    ) -> anyhow::Result<Bytes> {
        tokio::time::timeout(HTTP_TIMEOUT, self.request_inner(method, url, form, bearer))
            .await
            .map_err(|_| anyhow!("{method} {url} timed out"))?
    }

    async fn request_inner(
        &self,
        method: &str,
        url: &str,
        form: Option<String>,
        bearer: Option<&str>,
    ) -> anyhow::Result<Bytes> {
        let (https, host, port, path) = split_url(url).map(|(s, h, p, path)| (s == "https", h, p, path))?;
        if https != self.tls.is_some() {
            bail!("{url}: the upstream issuer's endpoints must use the issuer's scheme");
        }
        let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .with_context(|| format!("connecting to {host}:{port}"))?;
        let mut req = Request::builder().method(method).uri(path).header("host", format!("{host}:{port}"));
        req = req.header("accept", "application/json").header("user-agent", "riptides-controlplane");
        if let Some(t) = bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = match form {
            Some(f) => {
                req = req.header("content-type", "application/x-www-form-urlencoded");
                Full::new(Bytes::from(f))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body)?;
        let resp = match &self.tls {
            Some(tls) => {
                let name = rustls_pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())?;
                let stream = tls.connect(name, tcp).await.with_context(|| format!("TLS to {host}"))?;
                let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(conn);
                send.send_request(req).await?
            }
            None => {
                let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                send.send_request(req).await?
            }
        };
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| anyhow!("reading {url}: {e}"))?
            .to_bytes();
        // Token endpoints answer errors as JSON with 400: let the caller read them.
        if !status.is_success() && (status.as_u16() != 400 || method != "POST") {
            bail!("{method} {url} answered {status}");
        }
        Ok(bytes)
    }
}

/// (scheme, host, port, path-and-query).
fn split_url(url: &str) -> anyhow::Result<(String, String, u16, String)> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| anyhow!("{url} is not a URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default = if scheme == "https" { 443 } else { 80 };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.contains(']') => {
            (h.to_owned(), p.parse().map_err(|_| anyhow!("{url}: bad port"))?)
        }
        _ => (authority.to_owned(), default),
    };
    Ok((scheme.to_owned(), host, port, path.to_owned()))
}

pub fn form_urlencoded(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_mapping_takes_the_highest_match() {
        let cfg = UpstreamConfig {
            kind: UpstreamKind::Oidc,
            issuer: "http://127.0.0.1:1".into(),
            client_id: "c".into(),
            client_secret: None,
            scopes: vec![],
            ca_pem: None,
            role_rules: vec![
                RoleRule::parse("email_domain=example.com:viewer").unwrap(),
                RoleRule::parse("groups=ops:editor").unwrap(),
                RoleRule::parse("email=boss@example.com:admin").unwrap(),
            ],
            default_role: None,
        };
        let c = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(map_role(&cfg, &c(serde_json::json!({"email": "a@example.com"}))), Some(Role::Viewer));
        assert_eq!(
            map_role(&cfg, &c(serde_json::json!({"email": "a@example.com", "groups": ["ops"]}))),
            Some(Role::Editor)
        );
        assert_eq!(
            map_role(&cfg, &c(serde_json::json!({"email": "boss@example.com", "groups": ["ops"]}))),
            Some(Role::Admin)
        );
        // An unverified email counts for nothing.
        assert_eq!(map_role(&cfg, &c(serde_json::json!({"email": "boss@example.com", "email_verified": false}))), None);
        assert_eq!(map_role(&cfg, &c(serde_json::json!({"email": "x@other.org"}))), None);
        assert!(RoleRule::parse("groups=x:root").is_err());
    }
}
