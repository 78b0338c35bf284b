//! The token endpoint client: OAuth2 client credentials (RFC 6749 §4.4) and token exchange
//! (RFC 8693), one bounded POST per fetch.
//!
//! Bounds: one timeout over connect, TLS, request and the whole answer; the answer body is
//! read up to a size limit. Errors say what went wrong (status, an OAuth `error` code, which
//! JSON field was missing) and never carry a secret, a token or the answer body.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Uri;
use riptides_wire::resource::core::{CredentialSourceType, SecretValue};
use tokio::net::{TcpSocket, TcpStream};

use super::{CredentialConfig, SourceConfig};

/// RFC 8693 grant type.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The default `subject_token_type` (and the `requested_token_type`).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// What went wrong with a token request. The messages are safe to log and show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the source has no token endpoint")]
    NoEndpoint,
    #[error("the source has no secret value")]
    NoSecret,
    #[error("token URL is not usable: {0}")]
    Url(String),
    #[error("connecting to the token endpoint {0} failed: {1}")]
    Connect(String, String),
    #[error("TLS to the token endpoint {0} failed: {1}")]
    Tls(String, String),
    #[error("the token endpoint did not answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP to the token endpoint failed: {0}")]
    Http(String),
    #[error("the token endpoint answered HTTP {status}{}", .error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default())]
    Status { status: u16, error: Option<String> },
    #[error("the token endpoint's answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the token endpoint's answer is not a token response: {0}")]
    Garbage(String),
}

/// A successful token response (only what is used).
#[derive(Clone)]
pub struct TokenResponse {
    pub access_token: SecretValue,
    pub expires_in: Option<Duration>,
}

/// Parses a token endpoint answer body. Public for tests.
pub fn parse_token_response(body: &[u8]) -> Result<TokenResponse, TokenError> {
    // serde_json's messages can quote input ("invalid type: string \"...\""): report only the
    // category and position.
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        TokenError::Garbage(format!("{:?} error at line {} column {}", e.classify(), e.line(), e.column()))
    })?;
    let Some(obj) = v.as_object() else {
        return Err(TokenError::Garbage("not a JSON object".into()));
    };
    let token = match obj.get("access_token").cloned() {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s,
        Some(_) => return Err(TokenError::Garbage("access_token is not a non-empty string".into())),
        None => return Err(TokenError::Garbage("no access_token".into())),
    };
    if token.len() > 16 * 1024 || token.chars().any(|c| c.is_control()) {
        return Err(TokenError::Garbage("access_token is too long or has control characters".into()));
    }
    let expires_in = match obj.get("expires_in").cloned() {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => Some(Duration::from_secs(
            n.as_u64().ok_or_else(|| TokenError::Garbage("expires_in is not a whole number".into()))?,
        )),
        // Some servers send it as a string.
        Some(serde_json::Value::String(s)) => Some(Duration::from_secs(
            s.parse().map_err(|_| TokenError::Garbage("expires_in is not a whole number".into()))?,
        )),
        Some(_) => return Err(TokenError::Garbage("expires_in is not a number".into())),
    };
    Ok(TokenResponse { access_token: SecretValue::new(token), expires_in })
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const FORM: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", utf8_percent_encode(k, FORM), utf8_percent_encode(v, FORM)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The form body and the Authorization header of a token request for `source`.
/// Public for tests; the result holds the secret.
pub fn request_parts(source: &SourceConfig) -> Result<(String, Option<String>), TokenError> {
    use base64::Engine as _;
    let ep = source.spec.token_endpoint.as_ref().ok_or(TokenError::NoEndpoint)?;
    let secret = source.spec.secret_value.as_ref().ok_or(TokenError::NoSecret)?;
    let scope = ep.scopes.join(" ");
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    let mut auth = None;
    match source.spec.source_type {
        CredentialSourceType::OAuth2ClientCredentials => {
            pairs.push(("grant_type", "client_credentials"));
            // RFC 6749 §2.3.1: client id and secret form-encoded, then Basic.
            let id = form_encode(&[("", ep.client_id.as_deref().unwrap_or_default())]);
            let sec = form_encode(&[("", secret.expose())]);
            let raw = format!("{}:{}", &id[1..], &sec[1..]);
            auth = Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw)));
        }
        CredentialSourceType::TokenExchange => {
            pairs.push(("grant_type", TOKEN_EXCHANGE_GRANT));
            pairs.push(("subject_token", secret.expose()));
            pairs.push(("subject_token_type", ep.subject_token_type.as_deref().unwrap_or(ACCESS_TOKEN_TYPE)));
            pairs.push(("requested_token_type", ACCESS_TOKEN_TYPE));
            if let Some(id) = &ep.client_id {
                pairs.push(("client_id", id));
            }
        }
        CredentialSourceType::Static => return Err(TokenError::NoEndpoint),
    }
    if !scope.is_empty() {
        pairs.push(("scope", &scope));
    }
    if let Some(a) = &ep.audience {
        pairs.push(("audience", a));
    }
    Ok((form_encode(&pairs), auth))
}

/// Fetches tokens for sources; holds no state between fetches.
#[derive(Debug, Clone)]
pub struct TokenClient {
    cfg: CredentialConfig,
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

impl TokenClient {
    pub fn new(cfg: CredentialConfig) -> TokenClient {
        TokenClient { cfg }
    }

    /// One token request for `source`, bounded by `fetch_timeout`.
    pub async fn fetch(&self, source: &SourceConfig) -> Result<TokenResponse, TokenError> {
        match tokio::time::timeout(self.cfg.fetch_timeout, self.fetch_inner(source)).await {
            Ok(r) => r,
            Err(_) => Err(TokenError::Timeout(self.cfg.fetch_timeout)),
        }
    }

    async fn fetch_inner(&self, source: &SourceConfig) -> Result<TokenResponse, TokenError> {
        let ep = source.spec.token_endpoint.as_ref().ok_or(TokenError::NoEndpoint)?;
        let uri: Uri =
            ep.token_url.parse().map_err(|e: hyper::http::uri::InvalidUri| TokenError::Url(e.to_string()))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(TokenError::Url("the scheme must be http or https".into())),
        };
        let host = uri.host().ok_or_else(|| TokenError::Url("no host".into()))?.to_owned();
        let host_bare = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri.authority().map(|a| a.to_string()).unwrap_or_else(|| host.clone());
        let path = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into());
        let (body, auth) = request_parts(source)?;

        let tcp = self.dial(&host_bare, port).await?;
        let io: Box<dyn Io> = if https {
            let roots = match &ep.ca_bundle {
                Some(pem) => riptides_wire::tls::load_certs_pem(pem.as_bytes())
                    .map_err(|e| TokenError::Tls(authority.clone(), e.to_string()))?,
                None => {
                    crate::dataplane::intercept::system_roots().map_err(|e| TokenError::Tls(authority.clone(), e))?
                }
            };
            let (tls, _) = crate::dataplane::handshake::connect_simple(
                tcp,
                &host_bare,
                &roots,
                true,
                &[],
                &crate::dataplane::handshake::HandshakeConfig::default(),
            )
            .await
            .map_err(|e| TokenError::Tls(authority.clone(), e.to_string()))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| TokenError::Http(e.to_string()))?;
        let conn = tokio::spawn(conn);
        let mut req = hyper::Request::post(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(hyper::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| TokenError::Http(e.to_string()))?;
        if let Some(a) = auth {
            let mut v = hyper::header::HeaderValue::from_str(&a)
                .map_err(|_| TokenError::Http("bad client credentials".into()))?;
            v.set_sensitive(true);
            req.headers_mut().insert(hyper::header::AUTHORIZATION, v);
        }
        let resp = sender.send_request(req).await.map_err(|e| TokenError::Http(e.to_string()))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), self.cfg.max_response_bytes).collect().await.map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                TokenError::TooLarge(self.cfg.max_response_bytes)
            } else {
                TokenError::Http(e.to_string())
            }
        })?;
        conn.abort();
        let body = body.to_bytes();
        if !status.is_success() {
            return Err(TokenError::Status { status: status.as_u16(), error: oauth_error_code(&body) });
        }
        parse_token_response(&body)
    }

    async fn dial(&self, host: &str, port: u16) -> Result<TcpStream, TokenError> {
        let target = format!("{host}:{port}");
        let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| TokenError::Connect(target.clone(), e.to_string()))?
            .collect();
        let mut last = String::from("no address");
        for a in addrs {
            let sock = if a.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
                .map_err(|e| TokenError::Connect(target.clone(), e.to_string()))?;
            // The daemon's own connection: never captured by its own nftables rules.
            if let Err(e) = crate::dataplane::capture::mark_socket(&sock, self.cfg.mark) {
                tracing::debug!(error = %e, "could not mark the token endpoint socket");
            }
            match sock.connect(a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e.to_string(),
            }
        }
        Err(TokenError::Connect(target, last))
    }
}

/// The OAuth `error` code of an error answer, when it is a plain code (RFC 6749 §5.2 limits
/// it to printable ASCII; only `[a-z_]`, at most 64 characters, is kept, so nothing else of
/// the body can reach a log).
fn oauth_error_code(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?.as_str()?;
    (e.len() <= 64 && !e.is_empty() && e.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')).then(|| e.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use riptides_wire::resource::core::{CredentialSourceSpec, TokenEndpoint};

    fn source(ty: CredentialSourceType) -> SourceConfig {
        SourceConfig {
            namespace: "default".into(),
            name: "tok".into(),
            spec: CredentialSourceSpec {
                source_type: ty,
                token_endpoint: Some(TokenEndpoint {
                    token_url: "http://127.0.0.1:1/token".into(),
                    client_id: Some("client one".into()),
                    scopes: vec!["read".into(), "write".into()],
                    audience: Some("api".into()),
                    ..Default::default()
                }),
                secret_value: Some(SecretValue::new("p&ss=w:rd")),
            },
        }
    }

    #[test]
    fn client_credentials_request() {
        let (body, auth) = request_parts(&source(CredentialSourceType::OAuth2ClientCredentials)).unwrap();
        assert_eq!(body, "grant_type=client_credentials&scope=read%20write&audience=api");
        use base64::Engine as _;
        let raw =
            base64::engine::general_purpose::STANDARD.decode(auth.unwrap().strip_prefix("Basic ").unwrap()).unwrap();
        assert_eq!(String::from_utf8(raw).unwrap(), "client%20one:p%26ss%3Dw%3Ard");
    }

    #[test]
    fn token_exchange_request() {
        let (body, auth) = request_parts(&source(CredentialSourceType::TokenExchange)).unwrap();
        assert!(auth.is_none());
        assert!(body.starts_with("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=p%26ss%3Dw%3Ard&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token"), "{body}");
        assert!(body.contains("&client_id=client%20one&scope=read%20write&audience=api"), "{body}");
    }

    #[test]
    fn responses() {
        let t = parse_token_response(br#"{"access_token":"abc","expires_in":30,"token_type":"Bearer"}"#).unwrap();
        assert_eq!(t.access_token.expose(), "abc");
        assert_eq!(t.expires_in, Some(Duration::from_secs(30)));
        assert_eq!(
            parse_token_response(br#"{"access_token":"abc","expires_in":"7"}"#).unwrap().expires_in,
            Some(Duration::from_secs(7))
        );
        for bad in [
            &b"<html>"[..],
            b"{}",
            br#"{"access_token":5}"#,
            br#"{"access_token":""}"#,
            br#"{"access_token":"a","expires_in":-1}"#,
        ] {
            let e = parse_token_response(bad).err().expect("garbage refused");
            assert!(matches!(e, TokenError::Garbage(_)), "{e}");
        }
        // The body is never quoted back.
        let e = parse_token_response(br#"{"access_token":"a","expires_in":"SECRET-LOOKING"}"#).err().unwrap();
        assert!(!e.to_string().contains("SECRET"), "{e}");
        let e = parse_token_response(br#"["SECRET-LOOKING"]"#).err().unwrap();
        assert!(!e.to_string().contains("SECRET"), "{e}");
        assert_eq!(
            oauth_error_code(br#"{"error":"invalid_client","error_description":"x"}"#).as_deref(),
            Some("invalid_client")
        );
        assert_eq!(oauth_error_code(br#"{"error":"Leak Me"}"#), None);
    }
}
