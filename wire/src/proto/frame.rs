//! Pure (synchronous) framing: encode a message into a frame, decode a frame from a byte slice.
//!
//! The async reader/writer in `io.rs` share [`decode_body`] and [`encode`] with these, so the
//! fuzz target exercises exactly the code the transport runs.

use bincode::config::{Configuration, Limit};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{FrameError, PROTOCOL_VERSION};

/// Bytes of the length prefix.
pub const PREFIX_LEN: usize = 4;
/// Bytes of the protocol version that starts every frame body.
pub const VERSION_LEN: usize = 2;
/// Default maximum frame size (length prefix value): 4 MiB. Large enough for a policy snapshot of
/// a few thousand resources, small enough that a hostile peer cannot make us hold much memory.
pub const DEFAULT_MAX_FRAME: usize = 4 * MIB;
/// The largest `max_frame` honoured; larger configured values are clamped to it. It bounds the
/// decode budget (see [`FrameConfig::decode_budget`]) and keeps the u32 prefix meaningful.
pub const MAX_FRAME_CEILING: usize = 64 * MIB;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Limits applied to every frame read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameConfig {
    /// Maximum value of the length prefix (version + payload), checked before allocating.
    /// Values above [`MAX_FRAME_CEILING`] are treated as the ceiling.
    pub max_frame: usize,
}

impl Default for FrameConfig {
    fn default() -> Self {
        FrameConfig { max_frame: DEFAULT_MAX_FRAME }
    }
}

impl FrameConfig {
    /// A config with the given maximum frame size (clamped to [`MAX_FRAME_CEILING`]).
    pub fn with_max_frame(max_frame: usize) -> Self {
        FrameConfig { max_frame: max_frame.min(MAX_FRAME_CEILING) }
    }

    /// The maximum actually enforced.
    pub fn effective_max(&self) -> usize {
        self.max_frame.min(MAX_FRAME_CEILING)
    }

    /// The bincode byte budget used when decoding a frame's payload: the smallest of a few fixed
    /// tiers that is at least [`Self::effective_max`] (bincode's limit is a const generic, hence
    /// tiers). The budget caps what length fields inside a frame may claim, so the transient
    /// allocation for a hostile frame is bounded by it (4 MiB with the default config).
    pub fn decode_budget(&self) -> usize {
        let max = self.effective_max();
        BUDGET_TIERS.iter().copied().find(|tier| *tier >= max).unwrap_or(MAX_FRAME_CEILING)
    }
}

const BUDGET_TIERS: [usize; 6] = [64 * KIB, 256 * KIB, MIB, 4 * MIB, 16 * MIB, MAX_FRAME_CEILING];

/// The bincode configuration without limit (encoding needs none).
fn base() -> Configuration {
    bincode::config::standard()
}

/// Decodes `payload` under a byte budget of `N` bytes.
fn decode_limited<T: DeserializeOwned, const N: usize>(
    payload: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    let cfg: Configuration<_, _, Limit<N>> = base().with_limit::<N>();
    bincode::serde::decode_from_slice(payload, cfg)
}

/// Decodes `payload` with the budget tier `budget` (one of [`BUDGET_TIERS`]).
fn decode_payload<T: DeserializeOwned>(payload: &[u8], budget: usize) -> Result<(T, usize), FrameError> {
    let res = match budget {
        b if b <= 64 * KIB => decode_limited::<T, { 64 * KIB }>(payload),
        b if b <= 256 * KIB => decode_limited::<T, { 256 * KIB }>(payload),
        b if b <= MIB => decode_limited::<T, { MIB }>(payload),
        b if b <= 4 * MIB => decode_limited::<T, { 4 * MIB }>(payload),
        b if b <= 16 * MIB => decode_limited::<T, { 16 * MIB }>(payload),
        _ => decode_limited::<T, { MAX_FRAME_CEILING }>(payload),
    };
    res.map_err(|e| match e {
        bincode::error::DecodeError::LimitExceeded => {
            FrameError::Decode(format!("message exceeds the decode budget of {budget} bytes"))
        }
        other => FrameError::Decode(other.to_string()),
    })
}

/// Encodes `msg` as one complete frame (prefix, version, payload).
///
/// Refuses a message whose frame would exceed `cfg.max_frame`, so a sender learns about an
/// oversized message locally instead of through a reset stream. bincode's budget counts decoded
/// in-memory sizes (a 1-byte varint claims 8 bytes), so a frame close to the maximum could in
/// theory exceed the receiver's budget; frames large enough for that to be possible are
/// decoded once more here to make sure the peer (with the same config) will accept them.
pub fn encode<T: Serialize + DeserializeOwned>(msg: &T, cfg: &FrameConfig) -> Result<Vec<u8>, FrameError> {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(&[0u8; PREFIX_LEN]);
    buf.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    bincode::serde::encode_into_std_write(msg, &mut buf, base()).map_err(|e| FrameError::Encode(e.to_string()))?;
    let body_len = buf.len() - PREFIX_LEN;
    let max = cfg.effective_max();
    if body_len > max {
        return Err(FrameError::TooLarge { len: body_len as u64, max });
    }
    // body_len <= MAX_FRAME_CEILING < u32::MAX, so this cannot truncate.
    let prefix = u32::try_from(body_len).map_err(|_| FrameError::TooLarge { len: body_len as u64, max })?;
    buf[..PREFIX_LEN].copy_from_slice(&prefix.to_be_bytes());
    let budget = cfg.decode_budget();
    if (buf.len() - PREFIX_LEN - VERSION_LEN).saturating_mul(8) > budget {
        decode_payload::<T>(&buf[PREFIX_LEN + VERSION_LEN..], budget)
            .map_err(|e| FrameError::Encode(format!("the receiver could not decode this frame: {e}")))?;
    }
    Ok(buf)
}

/// Checks a length prefix against the limit. Shared by the slice and stream decoders so that
/// both refuse an oversized frame from the four prefix bytes alone.
pub(crate) fn check_prefix(prefix: [u8; PREFIX_LEN], cfg: &FrameConfig) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix);
    let max = cfg.effective_max();
    // u32 always fits usize on the platforms we build for; the comparison is done in u64 anyway.
    if u64::from(len) > max as u64 {
        return Err(FrameError::TooLarge { len: u64::from(len), max });
    }
    let len = len as usize;
    if len < VERSION_LEN {
        return Err(FrameError::Truncated);
    }
    Ok(len)
}

/// Splits the first frame off `buf`: returns the frame body (version + payload) and the number of
/// bytes consumed, or `Ok(None)` if `buf` does not yet hold a whole frame. For callers that
/// buffer bytes themselves; oversized prefixes are refused as soon as four bytes are present.
pub fn split_frame<'a>(buf: &'a [u8], cfg: &FrameConfig) -> Result<Option<(&'a [u8], usize)>, FrameError> {
    let Some(prefix) = buf.get(..PREFIX_LEN) else { return Ok(None) };
    let mut p = [0u8; PREFIX_LEN];
    p.copy_from_slice(prefix);
    let len = check_prefix(p, cfg)?;
    let end = PREFIX_LEN + len;
    match buf.get(PREFIX_LEN..end) {
        Some(body) => Ok(Some((body, end))),
        None => Ok(None),
    }
}

/// Decodes a frame body (everything after the length prefix: version + payload) as a `T`.
/// The whole body must be consumed by the message.
pub fn decode_body<T: DeserializeOwned>(body: &[u8], cfg: &FrameConfig) -> Result<T, FrameError> {
    let max = cfg.effective_max();
    if body.len() > max {
        return Err(FrameError::TooLarge { len: body.len() as u64, max });
    }
    let (version, payload) = match (body.get(..VERSION_LEN), body.get(VERSION_LEN..)) {
        (Some(v), Some(p)) => (u16::from_be_bytes([v[0], v[1]]), p),
        _ => return Err(FrameError::Truncated),
    };
    if version != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion { got: version });
    }
    let (msg, used) = decode_payload::<T>(payload, cfg.decode_budget())?;
    if used != payload.len() {
        return Err(FrameError::TrailingBytes);
    }
    Ok(msg)
}

/// Decodes exactly one frame from `bytes`. Bytes after the frame are refused
/// ([`FrameError::TrailingBytes`]); a short input is [`FrameError::Truncated`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8], cfg: &FrameConfig) -> Result<T, FrameError> {
    match split_frame(bytes, cfg)? {
        None => Err(FrameError::Truncated),
        Some((body, used)) => {
            let msg = decode_body(body, cfg)?;
            if used != bytes.len() {
                return Err(FrameError::TrailingBytes);
            }
            Ok(msg)
        }
    }
}
