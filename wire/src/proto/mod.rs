//! The daemon <-> control plane protocol: message types and their framing.
//!
//! The transport (QUIC via `quinn`, TLS over TCP where UDP is blocked) carries **one request per
//! bidirectional stream**. Every stream carries a sequence of frames produced by this module:
//!
//! ```text
//! +----------------+-----------------+-------------------------------------+
//! | len: u32 (BE)  | version: u16 BE | bincode-2 (serde, standard config)  |
//! |                | = PROTOCOL_VER. | message                             |
//! +----------------+-----------------+-------------------------------------+
//!                  \________________ len bytes ___________________________/
//! ```
//!
//! The length prefix is checked against [`FrameConfig::max_frame`] before anything is allocated,
//! and the decoder runs under a bincode byte budget so that a small frame cannot claim a huge
//! `Vec`. Every failure is a typed [`FrameError`]; nothing in here panics on peer input.
//!
//! Streams and who opens them (see [`messages`] for the per-message flows):
//! - daemon-opened streams start with a [`messages::Request`]; the control plane answers with one
//!   [`messages::Response`] (or, for [`messages::Request::WatchPolicy`], a stream of them);
//! - control-plane-opened streams (the *tunnel*, which works behind NAT because the daemon dialed
//!   the connection) start with a [`messages::TunnelRequest`]; the daemon answers with one
//!   [`messages::TunnelResponse`].
//!
//! The codec is transport-agnostic: [`encode`]/[`decode`] work on byte slices, and
//! [`read_frame`]/[`write_frame`] (or [`FrameReader`]/[`FrameWriter`]) on any tokio
//! `AsyncRead`/`AsyncWrite`, which quinn's `RecvStream`/`SendStream` and tokio-rustls streams are.

mod error;
mod frame;
pub mod fuzzing;
mod io;
pub mod messages;

pub use error::FrameError;
pub use frame::{
    decode, decode_body, encode, split_frame, FrameConfig, DEFAULT_MAX_FRAME, MAX_FRAME_CEILING, PREFIX_LEN,
    VERSION_LEN,
};
pub use io::{read_frame, read_frame_timeout, write_frame, FrameReader, FrameWriter};

/// ALPN protocol id of the daemon <-> control plane link (QUIC on 9443/udp and the TLS fallback on
/// 8001/tcp). Bumped together with [`PROTOCOL_VERSION`] only for incompatible changes, so that an
/// old daemon fails the handshake with a clear ALPN error instead of garbage frames.
pub const ALPN: &[u8] = b"riptides-cp/2";

/// Version carried in every frame. bincode is not self-describing: a peer with a different message
/// layout would decode garbage, so the version is checked before the payload is looked at.
///
/// History: 2 added `tls_version` and `key_exchange` to
/// [`messages::ConnectionEntry`] (a v1 peer would misread every tunnel connection table).
pub const PROTOCOL_VERSION: u16 = 2;
