//! Small shared helpers: time conversion at X.509's one-second precision, random serials,
//! PEM encoding and fingerprints.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use time::OffsetDateTime;

/// Latest time we are willing to put into a certificate (end of year 9999, the last instant
/// GeneralizedTime can express).
const MAX_UNIX: u64 = 253_402_300_799;

/// Whole Unix seconds of `t`; `None` before the epoch or past year 9999.
pub fn unix_secs(t: SystemTime) -> Option<u64> {
    let s = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    (s <= MAX_UNIX).then_some(s)
}

pub fn from_unix(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// `secs` as the `OffsetDateTime` rcgen wants. Callers clamp to [`MAX_UNIX`] first.
pub fn offset_time(secs: u64) -> OffsetDateTime {
    let clamped = secs.min(MAX_UNIX) as i64;
    OffsetDateTime::from_unix_timestamp(clamped).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Adds seconds without overflowing past the last representable certificate time.
pub fn add_secs(base: u64, d: Duration) -> u64 {
    base.saturating_add(d.as_secs()).min(MAX_UNIX)
}

/// A positive serial number with about 127 random bits (RFC 5280 allows 20 octets; CA/B Forum
/// asks for at least 64 random bits). The top bit is cleared so the DER INTEGER is positive
/// without a padding byte, and the first byte is never zero, so the DER encoding keeps all
/// 16 bytes (and a zero serial, not allowed, cannot occur).
pub fn random_serial() -> Result<Vec<u8>, rcgen::Error> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| rcgen::Error::RingUnspecified)?;
    // Positive (high bit clear) and minimal in DER (first byte non-zero): a leading zero byte
    // would be dropped by the encoder, and the serial recorded for the SVID would then differ
    // from the one in the certificate.
    b[0] &= 0x7f;
    if b[0] == 0 {
        b[0] = 1;
    }
    Ok(b.to_vec())
}

/// PEM with 64-column lines, the layout every PEM reader accepts.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// SHA-256 of a DER blob as lowercase hex: what logs show to identify a CA certificate.
pub fn sha256_hex(der: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Lowercase hex of bytes (serial numbers).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
