//! Our side as the TLS server: ingress from another node.

use std::sync::{Arc, Mutex};

use riptides_wire::tls::{peer_spiffe_id, provider};
use riptides_wire::SpiffeId;
use rustls::server::{Acceptor, NoServerSessionStorage};
use rustls::sign::SingleCertAndKey;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{timeout_at, Instant};
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;
use tracing::{field, Instrument};

use super::verify::{take_refusal, ClientIdVerifier, TrustBundles};
use super::{alpn_strings, HandshakeConfig, HandshakeError, HandshakeInfo, Svid, ALPN_PASSTHROUGH, ALPN_RIPTIDES};

/// Terminates node-to-node mTLS on a protected port: TLS 1.3 only, our SVID as server
/// certificate, a client certificate required, verified against the bundle of the client's
/// trust domain and its ID checked against `allowed` (empty = any ID of the own trust domain).
/// A refused client gets an alert (`access_denied` for an unlisted identity, `unknown_ca` /
/// `certificate_expired` for a bad chain) and never an established session.
///
/// The ClientHello is read first so a client that offers no ALPN at all (anything that is not
/// a Riptides node) is dropped before we send a byte; a client offering other protocols gets
/// rustls' `no_application_protocol` alert. The whole exchange shares one deadline of
/// `cfg.handshake_timeout`, so a client that sends nothing, or trickles bytes, is dropped on
/// time. No session tickets are issued: internal connections never resume, and kTLS on older
/// kernels cannot take post-handshake messages.
pub async fn accept_mtls<S>(
    stream: S,
    own: &Svid,
    allowed: &[SpiffeId],
    bundles: &TrustBundles,
    cfg: &HandshakeConfig,
) -> Result<(TlsStream<S>, HandshakeInfo), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let span = tracing::info_span!("mtls_accept", own = %own.id, peer = field::Empty, alpn = field::Empty);
    async {
        let deadline = Instant::now() + cfg.handshake_timeout;
        let start = match timeout_at(deadline, LazyConfigAcceptor::new(Acceptor::default(), stream)).await {
            Err(_) => return Err(HandshakeError::Timeout(cfg.handshake_timeout)),
            Ok(Err(e)) => return Err(HandshakeError::from_io(e, None, true)),
            Ok(Ok(start)) => start,
        };
        let offered: Vec<Vec<u8>> =
            start.client_hello().alpn().map(|it| it.map(<[u8]>::to_vec).collect()).unwrap_or_default();
        if offered.is_empty() {
            return Err(HandshakeError::WrongAlpn { offered: Vec::new() });
        }

        let slot = Arc::new(Mutex::new(None));
        let verifier = ClientIdVerifier::new(bundles, allowed, slot.clone())?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| HandshakeError::Config(e.to_string()))?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(own.certified.clone())));
        config.alpn_protocols = vec![ALPN_RIPTIDES.to_vec(), ALPN_PASSTHROUGH.to_vec()];
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.enable_secret_extraction = cfg.enable_secret_extraction;

        let tls = match timeout_at(deadline, start.into_stream(Arc::new(config))).await {
            Err(_) => return Err(HandshakeError::Timeout(cfg.handshake_timeout)),
            Ok(Err(e)) => {
                return Err(match HandshakeError::from_io(e, take_refusal(&slot), false) {
                    HandshakeError::WrongAlpn { .. } => HandshakeError::WrongAlpn { offered: alpn_strings(&offered) },
                    other => other,
                })
            }
            Ok(Ok(tls)) => tls,
        };
        let conn = tls.get_ref().1;
        let peer = peer_spiffe_id(conn.peer_certificates().unwrap_or_default())
            .map_err(|e| HandshakeError::UntrustedPeer { peer: None, reason: e.to_string() })?;
        let info = HandshakeInfo::from_state(conn, Some(peer.clone()));
        let span = tracing::Span::current();
        span.record("peer", field::display(&peer));
        span.record("alpn", field::debug(info.tunnel()));
        tracing::debug!(version = %info.tls_version_name(), group = %info.kx_group_name(), "mTLS accepted");
        Ok((tls, info))
    }
    .instrument(span)
    .await
}
