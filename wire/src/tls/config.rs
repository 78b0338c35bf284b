//! Builders for the rustls configs of the daemon<->CP link, and PEM loaders.
//!
//! The link is TLS 1.3 only: both ends are ours, QUIC requires 1.3 anyway, and keeping TCP on
//! the same version means one set of behaviours to reason about on both transports.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::verify::{ExpectedId, ServerTrust, SpiffeClientVerifier, SpiffeServerVerifier};
use super::{provider, TlsError};

/// A client config that verifies the server with [`SpiffeServerVerifier`] and presents
/// `client_identity` (the daemon SVID chain and key) when given.
///
/// Session resumption is off: a resumed session would skip the certificate checks after a
/// bundle change, and reconnects are rare enough that a full handshake costs nothing.
/// SNI is off as well: the server name carries no meaning for SPIFFE verification.
pub fn client_config(
    trust: ServerTrust,
    expected: ExpectedId,
    client_identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let verifier = Arc::new(SpiffeServerVerifier::new(trust, expected)?);
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client_identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.resumption = Resumption::disabled();
    config.enable_sni = false;
    Ok(Arc::new(config))
}

/// A server config presenting `chain`/`key`, with optional client authentication against
/// `client_roots` (empty = client certificates are not requested at all).
///
/// No session tickets and no resumption: see [`client_config`]. To rotate the server
/// certificate or the client roots, build a new config and hand it to the server's
/// `set_server_config`.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Vec<CertificateDer<'static>>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider()).with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = if client_roots.is_empty() {
        builder.with_no_client_auth()
    } else {
        builder.with_client_cert_verifier(Arc::new(SpiffeClientVerifier::new(client_roots)?))
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(config))
}

/// All certificates in PEM input, in order (leaf first for a chain). Other PEM sections are
/// skipped; input with no certificate at all is an error.
pub fn load_certs_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut BufReader::new(pem))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates);
    }
    Ok(certs)
}

/// The first private key (PKCS#8, SEC1 or PKCS#1) in PEM input.
pub fn load_private_key_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut BufReader::new(pem))
        .map_err(|e| TlsError::Pem(e.to_string()))?
        .ok_or(TlsError::NoPrivateKey)
}

/// [`load_certs_pem`] on a file.
pub fn load_certs_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    load_certs_pem(&read(path)?)
}

/// [`load_private_key_pem`] on a file.
pub fn load_private_key_file(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    load_private_key_pem(&read(path)?)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.display().to_string(), source })
}
