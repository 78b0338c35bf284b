//! Our side as the TLS client: egress to another node (mTLS) or to an external service
//! (SIMPLE).

use std::sync::{Arc, Mutex};

use riptides_wire::tls::{peer_spiffe_id, provider};
use riptides_wire::SpiffeId;
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::sign::SingleCertAndKey;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tracing::{field, Instrument};

use super::verify::{take_refusal, ServerIdVerifier, TrustBundles};
use super::{alpn_strings, Alpn, HandshakeConfig, HandshakeError, HandshakeInfo, Svid};

/// The name we pass to rustls for node-to-node handshakes. It is never sent (SNI is off: the
/// server is identified by its SPIFFE ID, and the outer SNI must not leak the application's
/// own server name in passthrough) and never checked (our verifier ignores it).
const INTERNAL_SERVER_NAME: &str = "riptides.invalid";

/// mTLS to another Riptides node: TLS 1.3 only, our SVID as client certificate, the server's
/// SVID verified against the bundle of its trust domain and its ID against `peer_allowed`
/// (empty = any ID of the own trust domain). Fails closed: any error means no connection.
///
/// In TLS 1.3 the server checks our certificate after we sent our last handshake message, so
/// when the server refuses *us*, this returns `Ok` and the refusal arrives as an alert on the
/// first read from the stream (which the relay reports).
pub async fn connect_mtls<S>(
    stream: S,
    own: &Svid,
    peer_allowed: &[SpiffeId],
    bundles: &TrustBundles,
    alpn: Alpn,
    cfg: &HandshakeConfig,
) -> Result<(TlsStream<S>, HandshakeInfo), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let span = tracing::info_span!("mtls_connect", own = %own.id, peer = field::Empty, alpn = ?String::from_utf8_lossy(alpn.as_bytes()));
    async {
        let slot = Arc::new(Mutex::new(None));
        let verifier = ServerIdVerifier::new(bundles, peer_allowed, slot.clone())?;
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| HandshakeError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(own.certified.clone())));
        config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
        config.resumption = Resumption::disabled();
        config.enable_sni = false;
        config.enable_secret_extraction = cfg.enable_secret_extraction;
        let name = ServerName::try_from(INTERNAL_SERVER_NAME).map_err(|e| HandshakeError::Config(e.to_string()))?;

        let connect = TlsConnector::from(Arc::new(config)).connect(name, stream);
        let tls = match tokio::time::timeout(cfg.handshake_timeout, connect).await {
            Err(_) => return Err(HandshakeError::Timeout(cfg.handshake_timeout)),
            Ok(Err(e)) => return Err(HandshakeError::from_io(e, take_refusal(&slot), false)),
            Ok(Ok(tls)) => tls,
        };
        let conn = tls.get_ref().1;
        if conn.alpn_protocol() != Some(alpn.as_bytes()) {
            return Err(HandshakeError::WrongAlpn { offered: alpn_strings(&[alpn.as_bytes().to_vec()]) });
        }
        let peer = peer_spiffe_id(conn.peer_certificates().unwrap_or_default())
            .map_err(|e| HandshakeError::UntrustedPeer { peer: None, reason: e.to_string() })?;
        tracing::Span::current().record("peer", field::display(&peer));
        let info = HandshakeInfo::from_state(conn, Some(peer));
        tracing::debug!(version = %info.tls_version_name(), group = %info.kx_group_name(), "mTLS established");
        Ok((tls, info))
    }
    .instrument(span)
    .await
}

/// SIMPLE mode to an external service: the server is verified with ordinary WebPKI rules
/// (chain to `roots`, `server_name` in its SANs), we present no certificate, and TLS 1.2 is
/// accepted when `tls12_allowed` (external services may not speak 1.3). `roots` is the
/// Service's configured CA list: there is no system trust store to fall back on.
/// `alpn` is what the application expects to negotiate with the service (may be empty).
pub async fn connect_simple<S>(
    stream: S,
    server_name: &str,
    roots: &[CertificateDer<'static>],
    tls12_allowed: bool,
    alpn: &[Vec<u8>],
    cfg: &HandshakeConfig,
) -> Result<(TlsStream<S>, HandshakeInfo), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let span = tracing::info_span!("simple_connect", server = %server_name);
    async {
        let mut store = RootCertStore::empty();
        for (i, r) in roots.iter().enumerate() {
            store.add(r.clone()).map_err(|e| HandshakeError::Config(format!("CA {i} for {server_name}: {e}")))?;
        }
        if store.is_empty() {
            return Err(HandshakeError::Config(format!("no CA configured to verify {server_name}")));
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
            .build()
            .map_err(|e| HandshakeError::Config(e.to_string()))?;
        let versions: &[&rustls::SupportedProtocolVersion] = if tls12_allowed {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(|e| HandshakeError::Config(e.to_string()))?
            .with_webpki_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = alpn.to_vec();
        config.resumption = Resumption::disabled();
        config.enable_secret_extraction = cfg.enable_secret_extraction;
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| HandshakeError::Config(format!("server name {server_name:?}: {e}")))?;

        let connect = TlsConnector::from(Arc::new(config)).connect(name, stream);
        let tls = match tokio::time::timeout(cfg.handshake_timeout, connect).await {
            Err(_) => return Err(HandshakeError::Timeout(cfg.handshake_timeout)),
            Ok(Err(e)) => return Err(HandshakeError::from_io(e, None, false)),
            Ok(Ok(tls)) => tls,
        };
        let info = HandshakeInfo::from_state(tls.get_ref().1, None);
        tracing::debug!(version = %info.tls_version_name(), group = %info.kx_group_name(), "SIMPLE TLS established");
        Ok((tls, info))
    }
    .instrument(span)
    .await
}
