//! CA pins: `sha256:<64 lowercase hex>` of a certificate's DER SubjectPublicKeyInfo.
//!
//! A daemon installed with `--ca-pin` has no trust bundle yet; it trusts the CA whose public
//! key hashes to the pin. Hashing the SPKI rather than the whole certificate keeps the pin
//! valid when the CA certificate is re-issued with the same key (new validity, new serial).

use std::fmt::Write as _;

use x509_parser::prelude::{FromDer, X509Certificate};

const PREFIX: &str = "sha256:";

/// Why a pin string or certificate could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error("pin must start with \"sha256:\"")]
    MissingPrefix,
    #[error("pin must have exactly 64 hex digits after \"sha256:\", found {0} characters")]
    BadLength(usize),
    #[error("pin has a non-hex character {0:?}")]
    BadHex(char),
    #[error("certificate is not valid DER X.509: {0}")]
    BadCertificate(String),
}

/// SHA-256 of the DER SubjectPublicKeyInfo of `cert_der`.
pub fn spki_sha256(cert_der: &[u8]) -> Result<[u8; 32], PinError> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|e| PinError::BadCertificate(e.to_string()))?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.public_key().raw);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    Ok(out)
}

/// Parses `sha256:<64 hex>`. Hex digits may be upper or lower case; surrounding whitespace is
/// ignored (pins are pasted from terminals and files).
pub fn parse_pin(s: &str) -> Result<[u8; 32], PinError> {
    let s = s.trim();
    let hex = s.strip_prefix(PREFIX).ok_or(PinError::MissingPrefix)?;
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(PinError::BadLength(hex.chars().count()));
    }
    let mut out = [0u8; 32];
    let bytes = hex.as_bytes();
    for (i, byte) in out.iter_mut().enumerate() {
        let hi = hex_val(bytes[2 * i])?;
        let lo = hex_val(bytes[2 * i + 1])?;
        *byte = (hi << 4) | lo;
    }
    Ok(out)
}

/// Formats a pin as `sha256:<64 lowercase hex>`, the form [`parse_pin`] reads.
pub fn format_pin(pin: &[u8; 32]) -> String {
    let mut s = String::with_capacity(PREFIX.len() + 64);
    s.push_str(PREFIX);
    for b in pin {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn hex_val(c: u8) -> Result<u8, PinError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(PinError::BadHex(c as char)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let pin: [u8; 32] = core::array::from_fn(|i| (i * 7) as u8);
        let s = format_pin(&pin);
        assert_eq!(s.len(), 71);
        assert_eq!(parse_pin(&s), Ok(pin));
        assert_eq!(parse_pin(&s.to_uppercase().replace("SHA256:", "sha256:")), Ok(pin));
    }

    #[test]
    fn bad_pins() {
        assert_eq!(parse_pin("abcd"), Err(PinError::MissingPrefix));
        assert_eq!(parse_pin("sha256:00"), Err(PinError::BadLength(2)));
        let bad = format!("sha256:{}g", "0".repeat(63));
        assert_eq!(parse_pin(&bad), Err(PinError::BadHex('g')));
        let multibyte = format!("sha256:{}é", "0".repeat(62));
        assert!(parse_pin(&multibyte).is_err());
        assert!(matches!(spki_sha256(b"garbage"), Err(PinError::BadCertificate(_))));
    }
}
