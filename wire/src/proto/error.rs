//! The one error type of the codec.

use std::time::Duration;

use super::messages::ProtoError;

/// Why a frame could not be read, written or used.
///
/// Any of these ends the stream: after a framing error the reader no longer knows where the next
/// frame starts, so the transport resets the stream (and may close the connection for a peer that
/// keeps sending garbage). [`FrameError::Remote`] is the exception: the frame was fine, the peer
/// answered with a typed error.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the configured maximum. Raised from the 4-byte prefix
    /// alone, before any allocation.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge { len: u64, max: usize },
    /// The input (or the stream) ended inside a frame, or the frame is too short to hold a version.
    #[error("truncated frame")]
    Truncated,
    /// The stream ended cleanly where a new frame would have started.
    #[error("stream closed before a frame started")]
    Closed,
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {got} (this build speaks {})", super::PROTOCOL_VERSION)]
    UnsupportedVersion { got: u16 },
    /// The payload is not a valid message of the expected type (or exceeds the decode budget).
    #[error("undecodable frame: {0}")]
    Decode(String),
    /// The message could not be encoded (or would not be decodable within the peer's budget).
    #[error("cannot encode frame: {0}")]
    Encode(String),
    /// The payload decoded, but bytes were left over inside the frame (or after it, for
    /// [`super::decode`]). Refused because it means the peers disagree on the layout.
    #[error("trailing bytes after the message")]
    TrailingBytes,
    /// A valid frame arrived that is not allowed at this point of the exchange.
    #[error("unexpected message: expected {expected}, got {got}")]
    UnexpectedMessage { expected: &'static str, got: &'static str },
    /// The peer answered with a typed protocol error instead of the expected message.
    #[error("peer refused: {0}")]
    Remote(ProtoError),
    /// No frame arrived within the deadline.
    #[error("timed out after {0:?} waiting for a frame")]
    Timeout(Duration),
    /// The transport failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// True for errors after which the stream is unusable because the frame boundary is lost or
    /// the peer is incompatible; false for errors about a well-framed message
    /// ([`FrameError::UnexpectedMessage`], [`FrameError::Remote`], [`FrameError::Closed`]).
    pub fn is_framing(&self) -> bool {
        !matches!(self, FrameError::UnexpectedMessage { .. } | FrameError::Remote(_) | FrameError::Closed)
    }
}
