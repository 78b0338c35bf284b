//! The control plane's OIDC flags (flattened into `riptides-controlplane`'s arguments).

use std::path::PathBuf;

use anyhow::Context;

use super::upstream::UpstreamKind;
use super::{ClientConfig, OidcConfig, Role, RoleRule, UpstreamConfig};

/// Client ids registered when no `--oidc-client` is given: the web UI served on loopback
/// (`riptides-frontend`'s default) and the CLI's browser callback, both on any loopback port.
pub const DEFAULT_UI_CLIENT: &str = "riptides-ui";
pub const DEFAULT_CLI_CLIENT: &str = "riptides-cli";

#[derive(Debug, Clone, clap::Args)]
pub struct OidcArgs {
    /// Issuer URL of the control plane's OIDC provider as browsers reach it (default: the API URL).
    #[arg(long, env = "RIPTIDES_OIDC_ISSUER", value_name = "URL")]
    pub oidc_issuer: Option<String>,
    /// Upstream identity provider operators sign in with: a generic OIDC issuer (Dex, Keycloak,
    /// Google, ...) or, with --oidc-upstream-kind github, GitHub's web URL (https://github.com).
    #[arg(long, env = "RIPTIDES_OIDC_UPSTREAM_ISSUER", value_name = "URL")]
    pub oidc_upstream_issuer: Option<String>,
    /// Protocol of the upstream: oidc or github (GitHub OAuth; roles from login, verified
    /// primary email and org membership, e.g. --oidc-role org=acme:editor).
    #[arg(long, default_value = "oidc", value_parser = ["oidc", "github"])]
    pub oidc_upstream_kind: String,
    /// GitHub's REST API URL (GitHub Enterprise: https://<host>/api/v3).
    #[arg(long, default_value = "https://api.github.com", value_name = "URL")]
    pub oidc_upstream_github_api_url: String,
    /// Our client id at the upstream issuer (its redirect URI is <issuer>/oidc/callback).
    #[arg(long, env = "RIPTIDES_OIDC_UPSTREAM_CLIENT_ID", default_value = "riptides")]
    pub oidc_upstream_client_id: String,
    /// File holding our client secret at the upstream issuer (none for a public client).
    #[arg(long, value_name = "FILE")]
    pub oidc_upstream_client_secret_file: Option<PathBuf>,
    /// PEM CA bundle for the upstream issuer (default: the system bundle).
    #[arg(long, value_name = "FILE")]
    pub oidc_upstream_ca: Option<PathBuf>,
    /// Extra scopes asked from the upstream issuer (besides openid); for GitHub the default is
    /// read:user,user:email,read:org.
    #[arg(long, value_delimiter = ',')]
    pub oidc_upstream_scopes: Vec<String>,
    /// Role mapping from upstream claims, CLAIM=VALUE:ROLE (repeatable; the highest match wins),
    /// e.g. groups=platform-admins:admin, email_domain=example.com:viewer, org=acme:editor.
    #[arg(long = "oidc-role", value_name = "CLAIM=VALUE:ROLE")]
    pub oidc_roles: Vec<String>,
    /// Role of a signed-in operator no rule matches (default: refused).
    #[arg(long, value_name = "ROLE")]
    pub oidc_default_role: Option<String>,
    /// OAuth client allowed to sign operators in, CLIENT_ID=REDIRECT_URI[,REDIRECT_URI...]
    /// (repeatable). Default: riptides-ui and riptides-cli on loopback redirect URIs.
    #[arg(long = "oidc-client", value_name = "ID=URI[,URI]")]
    pub oidc_clients: Vec<String>,
    /// Lifetime of access tokens, in seconds.
    #[arg(long, default_value_t = 900)]
    pub oidc_access_ttl_secs: u64,
    /// Lifetime of refresh tokens (sessions), in seconds.
    #[arg(long, default_value_t = 12 * 3600)]
    pub oidc_refresh_ttl_secs: u64,
}

impl OidcArgs {
    pub fn to_config(&self) -> anyhow::Result<OidcConfig> {
        let upstream = match &self.oidc_upstream_issuer {
            None => None,
            Some(issuer) => Some(UpstreamConfig {
                kind: if self.oidc_upstream_kind == "github" {
                    UpstreamKind::GitHub { api_url: self.oidc_upstream_github_api_url.trim_end_matches('/').to_owned() }
                } else {
                    UpstreamKind::Oidc
                },
                issuer: issuer.trim_end_matches('/').to_owned(),
                client_id: self.oidc_upstream_client_id.clone(),
                client_secret: self
                    .oidc_upstream_client_secret_file
                    .as_ref()
                    .map(|f| std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display())))
                    .transpose()?
                    .map(|s| s.trim().to_owned()),
                scopes: match (self.oidc_upstream_scopes.is_empty(), self.oidc_upstream_kind.as_str()) {
                    (true, "github") => vec!["read:user".into(), "user:email".into(), "read:org".into()],
                    (true, _) => vec!["email".into(), "profile".into(), "groups".into()],
                    (false, _) => {
                        self.oidc_upstream_scopes.iter().filter(|s| !s.is_empty() && *s != "openid").cloned().collect()
                    }
                },
                ca_pem: self
                    .oidc_upstream_ca
                    .as_ref()
                    .map(|f| std::fs::read(f).with_context(|| format!("reading {}", f.display())))
                    .transpose()?,
                role_rules: self
                    .oidc_roles
                    .iter()
                    .map(|r| RoleRule::parse(r).map_err(anyhow::Error::msg))
                    .collect::<anyhow::Result<_>>()?,
                default_role: self
                    .oidc_default_role
                    .as_deref()
                    .map(|r| {
                        Role::parse(r)
                            .ok_or_else(|| anyhow::anyhow!("--oidc-default-role {r:?}: viewer, editor or admin"))
                    })
                    .transpose()?,
            }),
        };
        let clients = if self.oidc_clients.is_empty() {
            default_clients()
        } else {
            self.oidc_clients
                .iter()
                .map(|c| {
                    let (id, uris) = c
                        .split_once('=')
                        .ok_or_else(|| anyhow::anyhow!("--oidc-client {c:?}: expected ID=URI[,URI]"))?;
                    Ok(ClientConfig {
                        client_id: id.to_owned(),
                        redirect_uris: uris.split(',').filter(|u| !u.is_empty()).map(str::to_owned).collect(),
                    })
                })
                .collect::<anyhow::Result<_>>()?
        };
        Ok(OidcConfig {
            issuer: self.oidc_issuer.clone(),
            upstream,
            clients,
            access_ttl: std::time::Duration::from_secs(self.oidc_access_ttl_secs.clamp(60, 3600)),
            refresh_ttl: std::time::Duration::from_secs(self.oidc_refresh_ttl_secs.max(60)),
            ..OidcConfig::default()
        })
    }
}

pub fn default_clients() -> Vec<ClientConfig> {
    vec![
        ClientConfig {
            client_id: DEFAULT_UI_CLIENT.into(),
            redirect_uris: vec!["http://127.0.0.1/auth/callback".into(), "http://localhost/auth/callback".into()],
        },
        ClientConfig { client_id: DEFAULT_CLI_CLIENT.into(), redirect_uris: vec!["http://127.0.0.1/callback".into()] },
    ]
}
