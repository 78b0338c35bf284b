//! The rustls client configuration: aws-lc-rs, the kubeconfig's CA as the only root, the
//! kubeconfig's client certificate.

use std::sync::Arc;

use rustls::crypto::aws_lc_rs;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::ApiError;

fn err(msg: impl Into<String>) -> ApiError {
    ApiError::TlsConfig(msg.into())
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, ApiError> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("cannot parse {what} PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err(format!("{what} contains no PEM certificate")));
    }
    Ok(certs)
}

fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, ApiError> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| err(format!("cannot parse client key PEM: {e}")))?
        .ok_or_else(|| err("client key contains no PEM private key (PKCS#8, SEC1 or PKCS#1)"))
}

pub(crate) fn client_config(
    ca_pem: &[u8],
    client_cert_pem: Option<&[u8]>,
    client_key_pem: Option<&[u8]>,
) -> Result<Arc<ClientConfig>, ApiError> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca_pem, "certificate-authority-data")? {
        roots.add(c).map_err(|e| err(format!("bad CA certificate: {e}")))?;
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match (client_cert_pem, client_key_pem) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(certs(cert, "client-certificate-data")?, private_key(key)?)
            .map_err(|e| err(format!("client certificate and key do not fit together: {e}")))?,
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => return Err(err("client-certificate-data without client-key-data")),
        (None, Some(_)) => return Err(err("client-key-data without client-certificate-data")),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
