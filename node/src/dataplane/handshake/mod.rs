//! The handshake every protected connection starts with, shared by the userspace and the
//! kernel dataplane (design §5): TLS 1.3 between nodes, X25519MLKEM768 preferred, ALPN
//! [`ALPN_RIPTIDES`] or [`ALPN_PASSTHROUGH`], SPIFFE identities checked *during* the handshake
//! so a refused peer never gets an established session.
//!
//! - [`client`]: [`connect_mtls`] (egress MUTUAL/PERMISSIVE) and [`connect_simple`] (SIMPLE,
//!   server-only authentication to external services).
//! - [`server`]: [`accept_mtls`] (ingress).
//! - [`sniff`]: first-byte detection for PERMISSIVE, ClientHello parsing for passthrough.
//! - [`verify`]: the peer verifiers and [`TrustBundles`].
//!
//! All functions are generic over the byte stream, so the kernel path can run them on the
//! socket the module hands over, and they never read past the handshake: whatever arrives
//! after it stays inside the returned `TlsStream` for the relay (or for kTLS key extraction).
//! Callers wrap each connection in a span carrying its addresses; the handshake adds its own
//! span with the identities.

pub mod client;
pub mod server;
pub mod sniff;
pub mod verify;

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use riptides_wire::tls::provider;
use riptides_wire::SpiffeId;
use rustls::sign::CertifiedKey;
use rustls::{CommonState, NamedGroup, ProtocolVersion};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use client::{connect_mtls, connect_simple};
pub use server::accept_mtls;
pub use sniff::{
    parse_client_hello, read_client_hello, sniff, AppHello, ClientHelloInfo, ClientHelloParse, FirstBytes,
};
pub use verify::{Refusal, TrustBundles};

/// ALPN of the node-to-node tunnel carrying the application's plaintext.
pub const ALPN_RIPTIDES: &[u8] = b"riptides/1";
/// ALPN of the tunnel when the application's own bytes are TLS (wrapped, not re-encrypted).
pub const ALPN_PASSTHROUGH: &[u8] = b"riptides/passthrough/1";

/// Which tunnel protocol a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// [`ALPN_RIPTIDES`].
    Riptides,
    /// [`ALPN_PASSTHROUGH`].
    Passthrough,
}

impl Alpn {
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Alpn::Riptides => ALPN_RIPTIDES,
            Alpn::Passthrough => ALPN_PASSTHROUGH,
        }
    }

    /// The tunnel protocol a negotiated ALPN value names, if it is one of ours.
    pub fn from_bytes(b: &[u8]) -> Option<Alpn> {
        match b {
            ALPN_RIPTIDES => Some(Alpn::Riptides),
            ALPN_PASSTHROUGH => Some(Alpn::Passthrough),
            _ => None,
        }
    }
}

/// Handshake limits, all defaults in one place.
#[derive(Debug, Clone)]
pub struct HandshakeConfig {
    /// Bound on a whole handshake, from the first byte awaited to the last one sent. A peer
    /// that stalls is dropped after this, so half-open connections cannot pile up.
    pub handshake_timeout: Duration,
    /// How long [`sniff`] and [`read_client_hello`] wait for an application's first bytes.
    pub sniff_timeout: Duration,
    /// Largest ClientHello [`read_client_hello`] buffers (one TLS record plus header; real
    /// hellos with a post-quantum key share are about 1.5 KiB).
    pub client_hello_max_bytes: usize,
    /// Keep the traffic secrets extractable after the handshake, for kTLS (the kernel path
    /// calls `dangerous_extract_secrets`). Off for the userspace relay, which never needs them.
    pub enable_secret_extraction: bool,
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        HandshakeConfig {
            handshake_timeout: Duration::from_secs(10),
            sniff_timeout: Duration::from_secs(3),
            client_hello_max_bytes: 16 * 1024 + 5,
            enable_secret_extraction: false,
        }
    }
}

/// The node's own credentials for one workload: its X509-SVID chain and key, parsed once.
#[derive(Clone)]
pub struct Svid {
    /// The SPIFFE ID in the leaf's URI SAN.
    pub id: SpiffeId,
    pub(crate) certified: Arc<CertifiedKey>,
}

impl Svid {
    /// Checks that the key matches the leaf and reads the SPIFFE ID from it, so a bad SVID
    /// fails here once instead of in every handshake.
    pub fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Svid, HandshakeError> {
        let id = riptides_wire::tls::peer_spiffe_id(&chain)
            .map_err(|e| HandshakeError::Config(format!("own SVID has no usable SPIFFE ID: {e}")))?;
        let certified = CertifiedKey::from_der(chain, key, &provider())
            .map_err(|e| HandshakeError::Config(format!("own SVID for {id}: {e}")))?;
        Ok(Svid { id, certified: Arc::new(certified) })
    }

    /// The presented chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }
}

impl fmt::Debug for Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Svid").field("id", &self.id).field("chain_len", &self.certified.cert.len()).finish()
    }
}

/// What a completed handshake established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeInfo {
    /// The peer's SPIFFE ID (always set for mTLS; `None` for SIMPLE).
    pub peer_id: Option<SpiffeId>,
    pub tls_version: Option<ProtocolVersion>,
    pub kx_group: Option<NamedGroup>,
    /// The negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
}

impl HandshakeInfo {
    fn from_state(state: &CommonState, peer_id: Option<SpiffeId>) -> HandshakeInfo {
        HandshakeInfo {
            peer_id,
            tls_version: state.protocol_version(),
            kx_group: state.negotiated_key_exchange_group().map(|g| g.name()),
            alpn: state.alpn_protocol().map(<[u8]>::to_vec),
        }
    }

    /// `TLSv1.3`, `TLSv1.2`, as the connection table shows it.
    pub fn tls_version_name(&self) -> String {
        match self.tls_version {
            Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
            Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        }
    }

    /// `X25519MLKEM768`, `X25519`..., as the connection table shows it.
    pub fn kx_group_name(&self) -> String {
        self.kx_group.map(|g| format!("{g:?}")).unwrap_or_default()
    }

    /// The tunnel protocol, when the ALPN is one of ours.
    pub fn tunnel(&self) -> Option<Alpn> {
        self.alpn.as_deref().and_then(Alpn::from_bytes)
    }
}

/// Why a handshake failed, naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer's certificate is valid but its identity is not in the allowed list.
    #[error("peer identity {peer} is not allowed (allowed: {allowed})")]
    PeerNotAllowed { peer: SpiffeId, allowed: String },
    /// The peer's certificate does not chain to the bundle of its trust domain, is expired,
    /// names an unknown trust domain, or carries no SPIFFE ID.
    #[error("untrusted peer certificate{}: {reason}", peer.as_ref().map(|p| format!(" ({p})")).unwrap_or_default())]
    UntrustedPeer { peer: Option<SpiffeId>, reason: String },
    /// No common ALPN protocol (`offered` is what the client offered, or what we offered when
    /// we are the client and the server chose none of it).
    #[error("wrong ALPN: offered {offered:?}, expected riptides/1 or riptides/passthrough/1")]
    WrongAlpn { offered: Vec<String> },
    #[error("handshake timed out after {0:?}")]
    Timeout(Duration),
    /// The peer's bytes are not TLS (a plaintext client on a protected port, or a server that
    /// answers in plaintext).
    #[error("peer is not speaking TLS: {0}")]
    NotTls(String),
    /// The peer aborted the handshake with an alert (e.g. it refused our identity).
    #[error("peer aborted the handshake with alert {0}")]
    PeerAlert(String),
    #[error("peer closed the connection during the handshake")]
    Closed,
    #[error("TLS: {0}")]
    Tls(rustls::Error),
    #[error("I/O during the handshake: {0}")]
    Io(io::Error),
    /// Our own side is misconfigured (bad SVID, empty bundle, bad server name).
    #[error("handshake configuration: {0}")]
    Config(String),
}

impl HandshakeError {
    /// The identity the peer presented, when the failure names it (an unlisted or untrusted
    /// peer), for the connection table's refused rows.
    pub fn peer_id(&self) -> Option<&SpiffeId> {
        match self {
            HandshakeError::PeerNotAllowed { peer, .. } => Some(peer),
            HandshakeError::UntrustedPeer { peer, .. } => peer.as_ref(),
            _ => None,
        }
    }

    /// Whether the failure says the peer is not a Riptides node at all (it does not speak TLS,
    /// does not know our ALPN, or hung up on the ClientHello), as opposed to a Riptides node
    /// refusing us. PERMISSIVE egress falls back to plaintext only in the first case; MUTUAL
    /// never does.
    pub fn peer_is_not_riptides(&self) -> bool {
        match self {
            HandshakeError::NotTls(_) | HandshakeError::Closed | HandshakeError::WrongAlpn { .. } => true,
            HandshakeError::Io(e) => matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe),
            _ => false,
        }
    }

    /// Classifies an I/O error out of tokio-rustls. `refusal` is what our own verifier recorded
    /// (it knows *which* identity it refused, rustls only carries an alert code);
    /// `first_flight` is true while we are still waiting for the peer's first TLS message, when
    /// garbage means "not TLS" rather than a protocol error.
    pub(crate) fn from_io(err: io::Error, refusal: Option<Refusal>, first_flight: bool) -> HandshakeError {
        if let Some(r) = refusal {
            return r.into();
        }
        if err.kind() == io::ErrorKind::UnexpectedEof {
            return HandshakeError::Closed;
        }
        let Some(tls) = err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
            return HandshakeError::Io(err);
        };
        HandshakeError::from_rustls(tls.clone(), first_flight)
    }

    pub(crate) fn from_rustls(err: rustls::Error, first_flight: bool) -> HandshakeError {
        use rustls::{Error, InvalidMessage};
        match err {
            Error::AlertReceived(alert) => HandshakeError::PeerAlert(format!("{alert:?}")),
            Error::NoApplicationProtocol => HandshakeError::WrongAlpn { offered: Vec::new() },
            Error::InvalidCertificate(e) => HandshakeError::UntrustedPeer { peer: None, reason: e.to_string() },
            Error::InvalidMessage(m) if first_flight => HandshakeError::NotTls(format!("{m:?}")),
            Error::InvalidMessage(
                m @ (InvalidMessage::InvalidContentType | InvalidMessage::UnknownProtocolVersion),
            ) => HandshakeError::NotTls(format!("{m:?}")),
            Error::InappropriateMessage { .. } | Error::InappropriateHandshakeMessage { .. } if first_flight => {
                HandshakeError::NotTls(err.to_string())
            }
            other => HandshakeError::Tls(other),
        }
    }
}

pub(crate) fn alpn_strings(list: &[Vec<u8>]) -> Vec<String> {
    list.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect()
}
