//! `riptides login` / `riptides logout`: an operator signs the CLI in through the control
//! plane's OIDC provider with the device authorization grant (RFC 8628), and the `ctl` and
//! `token` commands then use the stored bearer token when no kubeconfig is given.
//!
//! The session (server, its CA, access and refresh token) lives in
//! `$XDG_CONFIG_HOME/riptides/credentials.json` (else `~/.config/riptides/`), directory 0700,
//! file 0600, written atomically. Tokens are never printed or logged. An access token about to
//! expire is refreshed with the refresh token (which rotates) under a lock on
//! `credentials.lock`, so two commands started together do not both redeem the same refresh
//! token (the provider would take the second use for theft and end the session).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use riptides_wire::client::{ApiClient, Bytes, Method};
use riptides_wire::kubeconfig::ClientCredentials;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The CLI's client id at the provider (registered by default on the control plane).
pub const DEFAULT_CLIENT_ID: &str = "riptides-cli";
const DEVICE_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// Used as the server's CA when `--ca` is not given (a control plane behind a public CA).
const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Refresh an access token that expires within this.
const REFRESH_MARGIN_SECS: u64 = 30;
const FORM: &str = "application/x-www-form-urlencoded";

/// A signed-in CLI session. `Debug` never shows the tokens.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    pub server: String,
    pub ca_pem: String,
    pub client_id: String,
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Unix seconds.
    pub expires_at: u64,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("server", &self.server)
            .field("client_id", &self.client_id)
            .field("expires_at", &self.expires_at)
            .field("subject", &self.subject)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// `$XDG_CONFIG_HOME/riptides/credentials.json`, else `$HOME/.config/riptides/credentials.json`.
pub fn credentials_path() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from).filter(|p| p.is_absolute()) {
        Some(p) => p,
        None => {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .ok_or_else(|| anyhow!("neither $XDG_CONFIG_HOME nor $HOME is set: nowhere to keep the session"))?;
            home.join(".config")
        }
    };
    Ok(base.join("riptides").join("credentials.json"))
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn load(path: &Path) -> Result<Session> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "{} is accessible by other users; run `chmod 600 {}` or `riptides login` again",
            path.display(),
            path.display()
        );
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a riptides session; run `riptides login` again", path.display()))
}

/// Writes the session atomically with mode 0600 (directory 0700).
fn save(path: &Path, s: &Session) -> Result<()> {
    let dir = path.parent().ok_or_else(|| anyhow!("{} has no directory", path.display()))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(serde_json::to_string_pretty(s).map_err(std::io::Error::other)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

fn client(server: &str, ca_pem: &[u8], bearer: Option<&str>) -> Result<ApiClient> {
    Ok(ApiClient::new(ClientCredentials {
        server: server.to_owned(),
        ca_pem: ca_pem.to_vec(),
        tls_server_name: None,
        client_cert_pem: None,
        client_key_pem: None,
        bearer_token: bearer.map(str::to_owned),
        namespace: None,
    })?)
}

fn form(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

/// POSTs a form to the provider; the status and the JSON answer (`Null` if not JSON).
async fn post_form(c: &ApiClient, path: &str, pairs: &[(&str, &str)]) -> Result<(u16, Value)> {
    let (code, body) = c.raw_request(Method::POST, path, Some((FORM, Bytes::from(form(pairs))))).await?;
    Ok((code, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

fn oauth_error(v: &Value) -> String {
    match (v["error"].as_str(), v["error_description"].as_str()) {
        (Some(e), Some(d)) => format!("{e}: {d}"),
        (Some(e), None) => e.to_owned(),
        _ => "no OAuth error in the answer".to_owned(),
    }
}

/// A session from a token endpoint answer.
fn session_from(server: &str, ca_pem: &str, client_id: &str, v: &Value) -> Result<Session> {
    let access = v["access_token"].as_str().filter(|t| !t.is_empty()).ok_or_else(|| anyhow!("no access_token"))?;
    Ok(Session {
        server: server.to_owned(),
        ca_pem: ca_pem.to_owned(),
        client_id: client_id.to_owned(),
        access_token: access.to_owned(),
        refresh_token: v["refresh_token"].as_str().map(str::to_owned),
        expires_at: now_unix() + v["expires_in"].as_u64().unwrap_or(60),
        subject: None,
        role: None,
    })
}

pub struct LoginArgs {
    pub server: String,
    pub ca: Option<PathBuf>,
    pub client_id: String,
}

pub async fn login(args: LoginArgs) -> Result<()> {
    let server = args.server.trim_end_matches('/').to_owned();
    let ca_pem = match &args.ca {
        Some(f) => std::fs::read(f).with_context(|| format!("cannot read the CA file {}", f.display()))?,
        None => std::fs::read(SYSTEM_CA_FILE)
            .with_context(|| format!("no --ca given and the system CA bundle {SYSTEM_CA_FILE} cannot be read"))?,
    };
    let ca_text = String::from_utf8(ca_pem).context("the CA file is not PEM text")?;
    let path = credentials_path()?;
    let anon = client(&server, ca_text.as_bytes(), None)?;

    let (code, body) = anon.raw_get("/.well-known/openid-configuration").await?;
    let discovery: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if code != 200 || discovery["device_authorization_endpoint"].as_str().is_none() {
        bail!(
            "{server} does not offer CLI sign-in (no device_authorization_endpoint in its OIDC discovery; HTTP {code})"
        );
    }
    let (code, d) = post_form(&anon, "/oidc/device_authorization", &[("client_id", &args.client_id)]).await?;
    if code != 200 {
        bail!("{server} refused to start a sign-in (HTTP {code}): {}", oauth_error(&d));
    }
    let field = |k: &str| d[k].as_str().map(str::to_owned).ok_or_else(|| anyhow!("the answer has no {k}"));
    let device_code = field("device_code")?;
    let user_code = field("user_code")?;
    let uri = field("verification_uri")?;
    let complete = d["verification_uri_complete"].as_str().unwrap_or(&uri).to_owned();
    let mut interval = Duration::from_secs(d["interval"].as_u64().unwrap_or(5).clamp(1, 60));
    let deadline = Instant::now() + Duration::from_secs(d["expires_in"].as_u64().unwrap_or(600).min(3600));
    eprintln!(
        "To sign in, open this page in a browser:\n\n    {complete}\n\nand check that it shows the code {user_code}\n\
         (or open {uri} and enter the code).\nWaiting for the sign-in to finish..."
    );

    let tokens = loop {
        tokio::time::sleep(interval).await;
        if Instant::now() > deadline {
            bail!("the code expired before the sign-in finished; run `riptides login` again");
        }
        let (code, v) = post_form(
            &anon,
            "/oidc/token",
            &[("grant_type", DEVICE_GRANT_TYPE), ("device_code", &device_code), ("client_id", &args.client_id)],
        )
        .await?;
        if code == 200 {
            break v;
        }
        match v["error"].as_str() {
            Some("authorization_pending") => {}
            Some("slow_down") => interval += Duration::from_secs(5),
            Some("access_denied") => bail!("the sign-in was refused ({})", oauth_error(&v)),
            Some("expired_token") => bail!("the code expired before the sign-in finished; run `riptides login` again"),
            _ => bail!("{server} refused the sign-in (HTTP {code}): {}", oauth_error(&v)),
        }
    };
    let mut session =
        session_from(&server, &ca_text, &args.client_id, &tokens).context("the token endpoint's answer")?;
    let (code, body) =
        client(&server, ca_text.as_bytes(), Some(&session.access_token))?.raw_get("/oidc/userinfo").await?;
    let info: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if code != 200 {
        bail!("{server} does not accept the token it just issued (HTTP {code}): {}", oauth_error(&info));
    }
    session.subject = info["email"].as_str().or(info["sub"].as_str()).map(str::to_owned);
    session.role = info["role"].as_str().map(str::to_owned);
    save(&path, &session)?;
    println!(
        "Signed in to {server} as {} (role {}).",
        session.subject.as_deref().unwrap_or("?"),
        session.role.as_deref().unwrap_or("?")
    );
    eprintln!("The session is kept in {}; `riptides logout` ends it.", path.display());
    Ok(())
}

pub async fn logout() -> Result<()> {
    let path = credentials_path()?;
    if !path.exists() {
        println!("Not signed in.");
        return Ok(());
    }
    match load(&path) {
        Ok(s) => {
            if let Some(rt) = &s.refresh_token {
                let revoked = async {
                    let c = client(&s.server, s.ca_pem.as_bytes(), None)?;
                    let (code, v) =
                        post_form(&c, "/oidc/revoke", &[("token", rt), ("client_id", &s.client_id)]).await?;
                    if code != 200 {
                        bail!("HTTP {code}: {}", oauth_error(&v));
                    }
                    Ok(())
                };
                if let Err(e) = revoked.await {
                    eprintln!(
                        "warning: {} did not revoke the session ({e:#}); it ends by itself when it expires",
                        s.server
                    );
                }
            }
            std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
            println!("Signed out of {}.", s.server);
        }
        Err(e) => {
            std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
            eprintln!("warning: {e:#}");
            println!("Removed {}.", path.display());
        }
    }
    let _ = std::fs::remove_file(path.with_extension("lock"));
    Ok(())
}

/// The API client of the stored session, refreshing its access token first when it expires
/// within [`REFRESH_MARGIN_SECS`]; `None` when nobody is signed in.
pub async fn session_client() -> Result<Option<ApiClient>> {
    let path = credentials_path()?;
    if !path.exists() {
        return Ok(None);
    }
    let mut s = load(&path)?;
    if s.expires_at <= now_unix() + REFRESH_MARGIN_SECS {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path.with_extension("lock"))
            .context("cannot open the session lock")?;
        File::lock(&lock).context("cannot lock the session")?;
        // Another command may have refreshed it while we waited.
        s = load(&path)?;
        if s.expires_at <= now_unix() + REFRESH_MARGIN_SECS {
            s = refresh(&path, s).await?;
        }
        drop(lock);
    }
    Ok(Some(client(&s.server, s.ca_pem.as_bytes(), Some(&s.access_token))?))
}

async fn refresh(path: &Path, s: Session) -> Result<Session> {
    let again = format!("run `riptides login --server {}` again", s.server);
    let Some(rt) = &s.refresh_token else { bail!("the session has expired; {again}") };
    let c = client(&s.server, s.ca_pem.as_bytes(), None)?;
    let (code, v) = post_form(
        &c,
        "/oidc/token",
        &[("grant_type", "refresh_token"), ("refresh_token", rt), ("client_id", &s.client_id)],
    )
    .await
    .context("refreshing the session")?;
    if code != 200 {
        bail!("the session has ended ({}); {again}", oauth_error(&v));
    }
    let mut new = session_from(&s.server, &s.ca_pem, &s.client_id, &v)?;
    new.subject = s.subject;
    new.role = s.role;
    if new.refresh_token.is_none() {
        new.refresh_token = s.refresh_token;
    }
    save(path, &new)?;
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_encoded_and_sessions_never_show_tokens() {
        assert_eq!(form(&[("a b", "x=y&z"), ("k", "urn:x")]), "a%20b=x%3Dy%26z&k=urn%3Ax");
        let s = Session {
            server: "https://cp".into(),
            ca_pem: String::new(),
            client_id: DEFAULT_CLIENT_ID.into(),
            access_token: "SECRET-ACCESS".into(),
            refresh_token: Some("SECRET-REFRESH".into()),
            expires_at: 1,
            subject: None,
            role: None,
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
    }

    #[test]
    fn saved_sessions_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("riptides").join("credentials.json");
        let s = Session {
            server: "https://cp".into(),
            ca_pem: "pem".into(),
            client_id: DEFAULT_CLIENT_ID.into(),
            access_token: "a".into(),
            refresh_token: None,
            expires_at: 1,
            subject: Some("me".into()),
            role: Some("viewer".into()),
        };
        save(&path, &s).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(load(&path).unwrap().subject.as_deref(), Some("me"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("accessible by other users"));
    }
}
