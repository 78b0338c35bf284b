//! The tunnel: requests the control plane sends to a daemon on streams it opens on the daemon's
//! connection. The daemon dialed that connection, so this works behind NAT without the CP ever
//! dialing a daemon.

use serde::{Deserialize, Serialize};

use super::ProtoError;

/// The first frame on a CP-opened stream. The daemon answers with exactly one
/// [`TunnelResponse`] and finishes the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TunnelRequest {
    /// The daemon's live connection table and its recently refused connections (for the UI).
    /// Answered with [`TunnelResponse::ConnectionTable`].
    ConnectionTable,
    /// Readiness and component health. Answered with [`TunnelResponse::Health`].
    Health,
    /// The daemon's `/config_dump` (JSON). Answered with [`TunnelResponse::ConfigDump`].
    ConfigDump,
}

impl TunnelRequest {
    /// A stable name for logs, metrics and [`crate::proto::FrameError::UnexpectedMessage`].
    pub fn kind(&self) -> &'static str {
        match self {
            TunnelRequest::ConnectionTable => "ConnectionTable",
            TunnelRequest::Health => "Health",
            TunnelRequest::ConfigDump => "ConfigDump",
        }
    }
}

/// The daemon's answer on a tunnel stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TunnelResponse {
    /// Answer to [`TunnelRequest::ConnectionTable`]. A daemon with more connections than fit in
    /// one frame sends the ones that fit (most recent first).
    ConnectionTable(Vec<ConnectionEntry>),
    /// Answer to [`TunnelRequest::Health`].
    Health(HealthReport),
    /// Answer to [`TunnelRequest::ConfigDump`]: the JSON the admin listener serves.
    ConfigDump(String),
    /// The daemon could not answer.
    Error(ProtoError),
}

impl TunnelResponse {
    /// A stable name for logs, metrics and [`crate::proto::FrameError::UnexpectedMessage`].
    pub fn kind(&self) -> &'static str {
        match self {
            TunnelResponse::ConnectionTable(_) => "ConnectionTable",
            TunnelResponse::Health(_) => "Health",
            TunnelResponse::ConfigDump(_) => "ConfigDump",
            TunnelResponse::Error(_) => "Error",
        }
    }
}

/// One proxied or observed connection on the daemon's host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionEntry {
    /// Local socket address (`ip:port`).
    pub local: String,
    /// Remote socket address (`ip:port`).
    pub remote: String,
    /// SPIFFE ID of the local workload, if identified.
    pub workload_id: Option<String>,
    /// SPIFFE ID the peer presented, if the connection is mTLS.
    pub peer_id: Option<String>,
    /// How the connection is handled (`mtls`, `tls`, `passthrough`...), as the dataplane names it.
    pub mode: String,
    /// Connection state (`established`, `closing`...), as the dataplane names it. A refused
    /// connection the daemon still remembers has the state `refused: <reason>`.
    pub state: String,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Negotiated TLS version (`TLSv1.3`), once a handshake completed; `None` for plaintext,
    /// passthrough and refused connections.
    pub tls_version: Option<String>,
    /// Negotiated key-exchange group (`X25519MLKEM768` for the post-quantum hybrid, `X25519`...),
    /// once a handshake completed.
    pub key_exchange: Option<String>,
}

/// The daemon's readiness and the health of its components.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    pub ready: bool,
    /// Component -> state, in a stable order (e.g. `("driver", "ok")`).
    pub details: Vec<(String, String)>,
}
