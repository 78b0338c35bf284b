//! TLS policy shared by the control plane and the daemon.
//!
//! Everything here is built on one crypto provider, aws-lc-rs, passed explicitly to every
//! rustls builder: a process-wide default provider is global mutable state that another
//! library could install first, and the daemon<->CP link must never silently run on a
//! different provider than the one we audited.
//!
//! SPIFFE does not fit rustls' default server-name check: a workload's identity is the single
//! URI SAN of its X509-SVID, not a DNS name. So the verifiers in [`verify`] check the chain
//! with webpki (through rustls' own primitives) and then the SPIFFE ID, and ignore the DNS
//! server name the client happens to send.
//!
//! - [`pin`]: `sha256:<hex>` pins of a CA's SubjectPublicKeyInfo (the daemon's `--ca-pin`).
//! - [`verify`]: [`SpiffeServerVerifier`], [`SpiffeClientVerifier`], [`peer_spiffe_id`].
//! - [`config`]: builders for client and server configs, PEM loaders.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub mod config;
pub mod pin;
pub mod verify;

pub use config::{
    client_config, load_certs_file, load_certs_pem, load_private_key_file, load_private_key_pem, server_config,
};
pub use pin::{format_pin, parse_pin, spki_sha256, PinError};
pub use verify::{peer_spiffe_id, ExpectedId, PeerIdError, ServerTrust, SpiffeClientVerifier, SpiffeServerVerifier};

/// Re-exported so callers name certificate and key types without depending on
/// `rustls-pki-types` themselves.
pub use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The aws-lc-rs crypto provider, the only one this crate uses.
///
/// Returned fresh (it is a small table of function pointers) rather than read from the
/// process default, so nothing another crate installs can change what we negotiate.
///
/// The key-exchange groups are listed explicitly with the X25519MLKEM768 hybrid first:
/// rustls only prefers it when its `prefer-post-quantum` feature happens to be on somewhere in
/// the build, and which group we lead with should not depend on feature unification.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::aws_lc_rs::{default_provider, kx_group};
    let mut provider = default_provider();
    provider.kx_groups = vec![kx_group::X25519MLKEM768, kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    Arc::new(provider)
}

/// Why a TLS configuration could not be built or loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("PEM: {0}")]
    Pem(String),
    #[error("no certificate found in PEM input")]
    NoCertificates,
    #[error("no private key found in PEM input")]
    NoPrivateKey,
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    #[error("trust bundle is empty: a server cannot be verified against no roots")]
    EmptyBundle,
    #[error("trust bundle certificate {index} is not usable as a trust anchor: {reason}")]
    BadRoot { index: usize, reason: String },
}
