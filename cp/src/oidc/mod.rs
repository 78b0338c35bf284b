//! The control plane's OIDC provider for human operators (the web UI, scripts, the CLI).
//!
//! The control plane is the issuer its own APIs trust: it publishes a discovery document and
//! a JWKS, runs the authorization code flow with PKCE (S256 only) and hands out short-lived
//! ES256 access tokens (signed with aws-lc-rs) and rotating refresh tokens. It does not keep
//! passwords: sign-in is federated to an upstream OIDC issuer the operator configures (generic
//! OIDC: discovery, authorization code with PKCE, ID token verified against the upstream
//! JWKS), and the operator's role (viewer, editor, admin) is mapped from the upstream claims
//! (email, email domain, groups).
//!
//! The CLI signs in with the device authorization grant (RFC 8628, [`device`]): it shows a
//! user code and a verification URL on the provider, where the operator confirms the code and
//! goes through the same upstream sign-in.
//!
//! Replicas on one shared store (etcd) share the signing key, sealed in the store with the CA
//! seal key ([`shared`]), and the refresh-token sessions, hashed in the store ([`sessions`]).
//!
//! Layout: [`keys`] signing key and JWKS, [`tokens`] access/refresh tokens, [`flow`] the
//! HTTP endpoints, [`device`] device grants, [`upstream`] the upstream client, [`role`] roles.

pub mod cli;
pub mod device;
pub mod flow;
mod keys;
mod role;
pub mod sessions;
pub mod shared;
pub mod tokens;
pub mod upstream;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use flow::{router as flow_router, FlowState};
pub use keys::SigningKey;
pub use role::Role;
pub use tokens::{AccessClaims, TokenError};
pub use upstream::{RoleRule, UpstreamConfig, UpstreamKind};

/// Audience of the access tokens this provider issues.
pub const API_AUDIENCE: &str = "riptides-api";
/// Lifetime of access tokens (short: revocation is by expiry).
pub const DEFAULT_ACCESS_TTL: Duration = Duration::from_secs(15 * 60);
/// Lifetime of refresh tokens (each use rotates it).
pub const DEFAULT_REFRESH_TTL: Duration = Duration::from_secs(12 * 3600);

/// What the operator configures.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer URL the control plane is reached at by browsers (`https://cp.example.com:8443`);
    /// the API URL when absent.
    pub issuer: Option<String>,
    /// Where sign-in is federated to. Without one, the provider still verifies tokens but
    /// cannot sign anyone in.
    pub upstream: Option<UpstreamConfig>,
    /// OAuth clients (the web UI, the CLI) and the redirect URIs each may use.
    pub clients: Vec<ClientConfig>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// Lifetime of a device grant (CLI sign-in) and the polling interval it asks for.
    pub device_ttl: Duration,
    pub device_poll_interval: Duration,
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            issuer: None,
            upstream: None,
            clients: Vec::new(),
            access_ttl: DEFAULT_ACCESS_TTL,
            refresh_ttl: DEFAULT_REFRESH_TTL,
            device_ttl: device::DEFAULT_DEVICE_TTL,
            device_poll_interval: device::DEFAULT_POLL_INTERVAL,
        }
    }
}

/// A public OAuth client (no secret: PKCE protects the code).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub client_id: String,
    /// Exact redirect URIs; for loopback URIs (`http://127.0.0.1/...`) any port is accepted
    /// (RFC 8252 section 7.3), as the CLI's browser callback needs.
    pub redirect_uris: Vec<String>,
}

/// The provider: key, issuer, token verification. Cheap to share.
pub struct Provider {
    pub(crate) issuer: String,
    pub(crate) key: SigningKey,
    pub(crate) config: OidcConfig,
    pub(crate) tokens: tokens::TokenStore,
    pub(crate) device: device::DeviceGrants,
}

impl Provider {
    /// Opens (or creates) the signing key under `dir` (mode 0600); refresh tokens are kept in
    /// memory.
    pub fn open(dir: &Path, issuer: String, config: OidcConfig) -> anyhow::Result<Arc<Provider>> {
        let key = SigningKey::load_or_create(&dir.join("signing-key.p8"))?;
        Ok(Self::with(key, tokens::TokenStore::new(config.refresh_ttl), issuer, config))
    }

    /// For replicas sharing `store`: the signing key is the one sealed in the store under
    /// `seal` (published from `dir` by the first replica), and refresh tokens live (hashed) in
    /// the store, so every replica verifies and refreshes every operator's tokens.
    pub async fn open_shared(
        dir: &Path,
        issuer: String,
        config: OidcConfig,
        store: Arc<dyn crate::store::Store>,
        seal: &crate::ca::SealKey,
        trust_domain: &str,
    ) -> anyhow::Result<Arc<Provider>> {
        let key = shared::open_shared_key(&store, seal, trust_domain, &dir.join("signing-key.p8")).await?;
        Ok(Self::with(key, tokens::TokenStore::with_store(config.refresh_ttl, store), issuer, config))
    }

    fn with(key: SigningKey, tokens: tokens::TokenStore, issuer: String, config: OidcConfig) -> Arc<Provider> {
        let issuer = issuer.trim_end_matches('/').to_owned();
        Arc::new(Provider {
            issuer,
            key,
            tokens,
            device: device::DeviceGrants::new(config.device_ttl, config.device_poll_interval),
            config,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn jwks_json(&self) -> String {
        self.key.jwks_json()
    }

    /// Issues an access token for `subject` with `role`, valid for the configured TTL.
    pub fn issue_access_token(&self, subject: &str, email: Option<&str>, role: Role) -> String {
        tokens::issue_access(self, subject, email, role, self.config.access_ttl)
    }

    /// Verifies one of our access tokens: signature, issuer, audience, expiry, role.
    pub fn verify_access_token(&self, token: &str) -> Result<AccessClaims, TokenError> {
        tokens::verify_access(self, token)
    }
}
