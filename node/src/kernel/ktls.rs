//! Installing kernel TLS on a socket from the secrets rustls extracted after the handshake
//! (the way ktls-utils' tlshd does it): `setsockopt(SOL_TCP, TCP_ULP, "tls")`, then
//! `setsockopt(SOL_TLS, TLS_TX / TLS_RX, struct tls12_crypto_info_*)`.
//!
//! Only TLS 1.3 is used between nodes. The crypto_info layouts (`linux/tls.h`):
//!
//! | cipher              | version, cipher_type | iv | key | salt | rec_seq | size |
//! |---------------------|----------------------|----|-----|------|---------|------|
//! | AES-128-GCM (51)    | u16, u16             | 8  | 16  | 4    | 8       | 40   |
//! | AES-256-GCM (52)    | u16, u16             | 8  | 32  | 4    | 8       | 56   |
//! | CHACHA20-POLY1305 (54) | u16, u16          | 12 | 32  | 0    | 8       | 56   |
//!
//! For TLS 1.3 GCM the 12-byte per-connection IV is split: its first 4 bytes are the salt,
//! the last 8 the `iv` field. `rec_seq` is the next record sequence number, big-endian.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};
use zeroize_like::Wipe;

pub const TLS_1_3_VERSION: u16 = 0x0304;
pub const TLS_CIPHER_AES_GCM_128: u16 = 51;
pub const TLS_CIPHER_AES_GCM_256: u16 = 52;
pub const TLS_CIPHER_CHACHA20_POLY1305: u16 = 54;
pub const SOL_TLS: libc::c_int = 282;
pub const TLS_TX: libc::c_int = 1;
pub const TLS_RX: libc::c_int = 2;
pub const TCP_ULP: libc::c_int = 31;

/// One direction's `struct tls12_crypto_info_*`, as bytes (wiped on drop: it holds a key).
pub struct CryptoInfo {
    bytes: Vec<u8>,
    pub cipher: u16,
}

impl std::fmt::Debug for CryptoInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CryptoInfo").field("cipher", &self.cipher).field("len", &self.bytes.len()).finish()
    }
}

impl Drop for CryptoInfo {
    fn drop(&mut self) {
        self.bytes.wipe();
    }
}

impl CryptoInfo {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Builds the TLS 1.3 crypto_info for one direction.
    pub fn tls13(seq: u64, secrets: &ConnectionTrafficSecrets) -> io::Result<CryptoInfo> {
        let (cipher, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (TLS_CIPHER_AES_GCM_128, key.as_ref(), iv.as_ref()),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (TLS_CIPHER_AES_GCM_256, key.as_ref(), iv.as_ref()),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (TLS_CIPHER_CHACHA20_POLY1305, key.as_ref(), iv.as_ref())
            }
            _ => return Err(io::Error::new(io::ErrorKind::Unsupported, "cipher suite not supported by kTLS here")),
        };
        Self::build(cipher, seq, key, iv)
    }

    /// The layout, from raw parts (`iv` is the 12-byte TLS 1.3 IV).
    pub fn build(cipher: u16, seq: u64, key: &[u8], iv: &[u8]) -> io::Result<CryptoInfo> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("kTLS crypto_info: {what}"));
        if iv.len() != 12 {
            return Err(bad("the TLS 1.3 IV must be 12 bytes"));
        }
        let key_len = match cipher {
            TLS_CIPHER_AES_GCM_128 => 16,
            TLS_CIPHER_AES_GCM_256 | TLS_CIPHER_CHACHA20_POLY1305 => 32,
            _ => return Err(bad("unknown cipher")),
        };
        if key.len() != key_len {
            return Err(bad("key length does not match the cipher"));
        }
        let mut b = Vec::with_capacity(56);
        b.extend_from_slice(&TLS_1_3_VERSION.to_ne_bytes());
        b.extend_from_slice(&cipher.to_ne_bytes());
        match cipher {
            TLS_CIPHER_CHACHA20_POLY1305 => {
                b.extend_from_slice(iv); // iv[12]
                b.extend_from_slice(key); // key[32]
                                          // no salt
            }
            _ => {
                b.extend_from_slice(&iv[4..]); // iv[8]
                b.extend_from_slice(key); // key[16|32]
                b.extend_from_slice(&iv[..4]); // salt[4]
            }
        }
        b.extend_from_slice(&seq.to_be_bytes()); // rec_seq[8]
        Ok(CryptoInfo { bytes: b, cipher })
    }
}

fn setsockopt(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int, val: &[u8]) -> io::Result<()> {
    // SAFETY: `val` is a valid buffer of the given length for the duration of the call; the
    // fd is borrowed and open.
    let rc =
        unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, val.as_ptr().cast(), val.len() as libc::socklen_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Installs kTLS in both directions. `ENOENT` from `TCP_ULP` means the `tls` module is not
/// available; any error leaves the socket unusable for the application (the caller reports
/// the handshake as failed, so the module refuses the connection).
pub fn install(fd: BorrowedFd<'_>, secrets: ExtractedSecrets) -> io::Result<&'static str> {
    let (tx_seq, tx) = secrets.tx;
    let (rx_seq, rx) = secrets.rx;
    let tx = CryptoInfo::tls13(tx_seq, &tx)?;
    let rx = CryptoInfo::tls13(rx_seq, &rx)?;
    setsockopt(fd, libc::SOL_TCP, TCP_ULP, b"tls")
        .map_err(|e| io::Error::new(e.kind(), format!("setsockopt(TCP_ULP, \"tls\"): {e}")))?;
    setsockopt(fd, SOL_TLS, TLS_TX, tx.as_bytes())
        .map_err(|e| io::Error::new(e.kind(), format!("setsockopt(SOL_TLS, TLS_TX): {e}")))?;
    setsockopt(fd, SOL_TLS, TLS_RX, rx.as_bytes())
        .map_err(|e| io::Error::new(e.kind(), format!("setsockopt(SOL_TLS, TLS_RX): {e}")))?;
    Ok(match tx.cipher {
        TLS_CIPHER_AES_GCM_128 => "TLS_AES_128_GCM_SHA256",
        TLS_CIPHER_AES_GCM_256 => "TLS_AES_256_GCM_SHA384",
        _ => "TLS_CHACHA20_POLY1305_SHA256",
    })
}

mod zeroize_like {
    /// Overwrites key material before the memory is freed (volatile, so it is not elided).
    pub trait Wipe {
        fn wipe(&mut self);
    }
    impl Wipe for Vec<u8> {
        fn wipe(&mut self) {
            for b in self.iter_mut() {
                // SAFETY: `b` is a valid, aligned, exclusive reference.
                unsafe { std::ptr::write_volatile(b, 0) };
            }
            std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        let iv: Vec<u8> = (1..=12).collect();
        let k16 = [0xaa; 16];
        let k32 = [0xbb; 32];
        let seq = 0x0102_0304_0506_0708u64;

        let g = CryptoInfo::build(TLS_CIPHER_AES_GCM_128, seq, &k16, &iv).unwrap();
        let b = g.as_bytes();
        assert_eq!(b.len(), 40);
        assert_eq!(&b[0..2], &TLS_1_3_VERSION.to_ne_bytes());
        assert_eq!(&b[2..4], &51u16.to_ne_bytes());
        assert_eq!(&b[4..12], &iv[4..]);
        assert_eq!(&b[12..28], &k16);
        assert_eq!(&b[28..32], &iv[..4]);
        assert_eq!(&b[32..40], &[1, 2, 3, 4, 5, 6, 7, 8]);

        let g = CryptoInfo::build(TLS_CIPHER_AES_GCM_256, seq, &k32, &iv).unwrap();
        let b = g.as_bytes();
        assert_eq!(b.len(), 56);
        assert_eq!(&b[4..12], &iv[4..]);
        assert_eq!(&b[12..44], &k32);
        assert_eq!(&b[44..48], &iv[..4]);
        assert_eq!(&b[48..56], &seq.to_be_bytes());

        let c = CryptoInfo::build(TLS_CIPHER_CHACHA20_POLY1305, 1, &k32, &iv).unwrap();
        let b = c.as_bytes();
        assert_eq!(b.len(), 56);
        assert_eq!(&b[4..16], &iv[..]);
        assert_eq!(&b[16..48], &k32);
        assert_eq!(&b[48..56], &[0, 0, 0, 0, 0, 0, 0, 1]);

        assert!(CryptoInfo::build(TLS_CIPHER_AES_GCM_128, 0, &k32, &iv).is_err());
        assert!(CryptoInfo::build(TLS_CIPHER_AES_GCM_128, 0, &k16, &iv[..8]).is_err());
        assert!(CryptoInfo::build(99, 0, &k16, &iv).is_err());
    }
}
