//! The dataplane: what happens to an application's TCP connection once it has been captured.
//!
//! The modules here are deliberately independent of *how* bytes are captured, so the userspace
//! dataplane (nftables redirect + relay) and the kernel-module path (handshake on a socket the
//! module hands over, then kTLS) share them:
//!
//! - [`rules`]: the policy document compiled into lookups (which workload a process is, what
//!   to do with an outbound or inbound connection).
//! - [`handshake`]: the one wire format between nodes (TLS 1.3, X25519MLKEM768 preferred, ALPN
//!   `riptides/1`), SIMPLE TLS to external services, first-byte sniffing and ClientHello
//!   parsing for PERMISSIVE and passthrough.
//! - [`table`]: the bounded registry of live connections (`/connections`, the CP tunnel).
//! - [`relay`]: the byte pump between the application side and the protected side.
//! - [`intercept`]: TLS intercept with credential injection (node CA, HTTP proxying).
//!
//! [`capture`] and [`process`] (nftables capture, process identification) are owned separately.

pub mod capture;
pub mod handshake;
pub mod intercept;
pub mod process;
pub mod relay;
pub mod rules;
pub mod table;
