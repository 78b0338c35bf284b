//! The kubeconfig file: how the control plane tells clients (our CLI and stock kubectl) where
//! its API is and which client certificate to present.
//!
//! Only the subset we write is modelled: one cluster, one user with a client certificate, one
//! context. Certificates and keys are inline (`*-data`, base64 PEM), so the file is the only
//! thing an operator needs to copy.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("cannot parse kubeconfig: {0}")]
    Parse(#[from] serde_yaml_ng::Error),
    #[error("kubeconfig has no context {0:?}")]
    NoContext(String),
    #[error("kubeconfig has no {what} named {name:?}")]
    Missing { what: &'static str, name: String },
    #[error("kubeconfig field {0} is not valid base64")]
    Base64(&'static str),
    #[error("kubeconfig field {0} is required")]
    Required(&'static str),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Kubeconfig {
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub clusters: Vec<NamedCluster>,
    #[serde(default)]
    pub users: Vec<NamedUser>,
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
    #[serde(default)]
    pub current_context: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamedCluster {
    pub name: String,
    pub cluster: Cluster,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamedUser {
    pub name: String,
    pub user: User,
}

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct User {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("client_certificate_data", &self.client_certificate_data.as_ref().map(|_| "..."))
            .field("client_key_data", &self.client_key_data.as_ref().map(|_| "<redacted>"))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamedContext {
    pub name: String,
    pub context: Context,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Context {
    pub cluster: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// What a client needs from the current context, decoded.
#[derive(Clone)]
pub struct ClientCredentials {
    pub server: String,
    pub ca_pem: Vec<u8>,
    pub tls_server_name: Option<String>,
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
    /// Bearer token (`users[].user.token`, or a service-account token in a cluster).
    pub bearer_token: Option<String>,
    pub namespace: Option<String>,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("server", &self.server)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Kubeconfig {
    /// A kubeconfig with a single cluster/user/context named `name`.
    pub fn single(name: &str, server: &str, ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8], namespace: &str) -> Self {
        Kubeconfig {
            api_version: "v1".into(),
            kind: "Config".into(),
            clusters: vec![NamedCluster {
                name: name.into(),
                cluster: Cluster {
                    server: server.into(),
                    certificate_authority_data: Some(STANDARD.encode(ca_pem)),
                    tls_server_name: None,
                },
            }],
            users: vec![NamedUser {
                name: format!("{name}-admin"),
                user: User {
                    client_certificate_data: Some(STANDARD.encode(cert_pem)),
                    client_key_data: Some(STANDARD.encode(key_pem)),
                    token: None,
                },
            }],
            contexts: vec![NamedContext {
                name: name.into(),
                context: Context {
                    cluster: name.into(),
                    user: format!("{name}-admin"),
                    namespace: Some(namespace.into()),
                },
            }],
            current_context: name.into(),
        }
    }

    pub fn parse(text: &str) -> Result<Self, KubeconfigError> {
        Ok(serde_yaml_ng::from_str(text)?)
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("kubeconfig always serialises")
    }

    /// Decodes the current context.
    pub fn credentials(&self) -> Result<ClientCredentials, KubeconfigError> {
        let ctx = self
            .contexts
            .iter()
            .find(|c| c.name == self.current_context)
            .ok_or_else(|| KubeconfigError::NoContext(self.current_context.clone()))?;
        let cluster = self
            .clusters
            .iter()
            .find(|c| c.name == ctx.context.cluster)
            .ok_or_else(|| KubeconfigError::Missing { what: "cluster", name: ctx.context.cluster.clone() })?;
        let user = self
            .users
            .iter()
            .find(|u| u.name == ctx.context.user)
            .ok_or_else(|| KubeconfigError::Missing { what: "user", name: ctx.context.user.clone() })?;
        let decode = |field: &'static str, v: &Option<String>| -> Result<Option<Vec<u8>>, KubeconfigError> {
            v.as_ref().map(|s| STANDARD.decode(s.trim()).map_err(|_| KubeconfigError::Base64(field))).transpose()
        };
        Ok(ClientCredentials {
            server: cluster.cluster.server.clone(),
            ca_pem: decode("certificate-authority-data", &cluster.cluster.certificate_authority_data)?
                .ok_or(KubeconfigError::Required("certificate-authority-data"))?,
            tls_server_name: cluster.cluster.tls_server_name.clone(),
            client_cert_pem: decode("client-certificate-data", &user.user.client_certificate_data)?,
            client_key_pem: decode("client-key-data", &user.user.client_key_data)?,
            bearer_token: user.user.token.clone().filter(|t| !t.trim().is_empty()),
            namespace: ctx.context.namespace.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_redacts() {
        let kc = Kubeconfig::single("riptides", "https://127.0.0.1:8443", b"CA", b"CERT", b"KEY", "riptides-system");
        let text = kc.to_yaml();
        assert!(text.contains("certificate-authority-data"));
        assert!(text.contains("current-context: riptides"));
        let creds = Kubeconfig::parse(&text).unwrap().credentials().unwrap();
        assert_eq!(creds.ca_pem, b"CA");
        assert_eq!(creds.client_key_pem.as_deref(), Some(&b"KEY"[..]));
        assert!(!format!("{:?}", kc.users[0].user).contains(&STANDARD.encode(b"KEY")));
    }
}
