//! Looking at an application's or peer's first bytes without disturbing them.
//!
//! - [`sniff`]: PERMISSIVE ingress decides between mTLS and plaintext from the first byte,
//!   peeked (not consumed), so whichever path follows reads the stream from its start.
//! - [`parse_client_hello`] / [`read_client_hello`]: passthrough egress reads the
//!   application's ClientHello to learn SNI and ALPN for policy. The bytes are parsed by
//!   rustls' own `Acceptor` on a copy, so we do not maintain a second TLS parser, and the
//!   original bytes are forwarded unchanged inside the outer mTLS.

use std::io;
use std::time::Duration;

use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use super::{HandshakeConfig, HandshakeError};

/// TLS record content type of a handshake message: the first byte of every ClientHello.
const TLS_HANDSHAKE: u8 = 0x16;

/// What the first byte on a connection says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstBytes {
    /// A TLS handshake record: hand the stream to [`super::accept_mtls`].
    Tls,
    /// Anything else: a plaintext client (accepted only in PERMISSIVE mode).
    Plaintext,
}

/// Peeks at the first byte within `timeout`. Nothing is consumed.
///
/// A timeout is an error rather than "plaintext": a silent client may be a server-speaks-first
/// protocol or a stalled handshake, and which one is the caller's policy decision.
pub async fn sniff(stream: &TcpStream, timeout: Duration) -> Result<FirstBytes, HandshakeError> {
    let mut b = [0u8; 1];
    match tokio::time::timeout(timeout, stream.peek(&mut b)).await {
        Err(_) => Err(HandshakeError::Timeout(timeout)),
        Ok(Err(e)) => Err(HandshakeError::Io(e)),
        Ok(Ok(0)) => Err(HandshakeError::Closed),
        Ok(Ok(_)) if b[0] == TLS_HANDSHAKE => Ok(FirstBytes::Tls),
        Ok(Ok(_)) => Ok(FirstBytes::Plaintext),
    }
}

/// Policy-relevant fields of an application's ClientHello.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHelloInfo {
    /// The SNI host name, if sent.
    pub server_name: Option<String>,
    /// Offered ALPN protocols, in the client's order.
    pub alpn: Vec<Vec<u8>>,
}

impl ClientHelloInfo {
    /// ALPN protocols as text (lossy), for logs and the connection table.
    pub fn alpn_strings(&self) -> Vec<String> {
        super::alpn_strings(&self.alpn)
    }
}

/// Result of parsing bytes that may start with a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHelloParse {
    Complete(ClientHelloInfo),
    /// Looks like TLS so far; more bytes are needed.
    Incomplete,
    /// Not a TLS ClientHello (why, for logs).
    NotClientHello(String),
}

/// Parses a ClientHello from `bytes` (a copy; nothing is sent anywhere).
pub fn parse_client_hello(bytes: &[u8]) -> ClientHelloParse {
    match bytes.first() {
        None => return ClientHelloParse::Incomplete,
        Some(&b) if b != TLS_HANDSHAKE => {
            return ClientHelloParse::NotClientHello(format!("first byte 0x{b:02x} is not a TLS handshake record"))
        }
        Some(_) => {}
    }
    let mut acceptor = Acceptor::default();
    let mut rest = bytes;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return ClientHelloParse::NotClientHello(e.to_string()),
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let hello = accepted.client_hello();
                return ClientHelloParse::Complete(ClientHelloInfo {
                    server_name: hello.server_name().map(str::to_owned),
                    alpn: hello.alpn().map(|it| it.map(<[u8]>::to_vec).collect()).unwrap_or_default(),
                });
            }
            Ok(None) => {}
            Err((e, _alert)) => return ClientHelloParse::NotClientHello(e.to_string()),
        }
    }
    ClientHelloParse::Incomplete
}

/// What an application's first flight turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppHello {
    /// A complete TLS ClientHello: wrap with ALPN `riptides/passthrough/1`.
    ClientHello(ClientHelloInfo),
    /// Not TLS (or not a ClientHello): tunnel as plaintext with `riptides/1`.
    NotTls,
    /// Started like TLS but no complete ClientHello arrived within the time or size limit.
    Incomplete,
    /// No byte within the sniff timeout (a server-speaks-first protocol, or an idle client).
    Silent,
    /// The application closed before sending anything.
    Closed,
}

/// Reads (consuming) the application's first bytes until a ClientHello is complete, the bytes
/// are clearly not TLS, `cfg.client_hello_max_bytes` is reached or `cfg.sniff_timeout`
/// passes. The bytes read are always returned, whatever the outcome: the caller must forward
/// them first (e.g. with [`crate::dataplane::relay::Prefixed`]) so the application's stream
/// reaches the destination unchanged.
pub async fn read_client_hello<S>(stream: &mut S, cfg: &HandshakeConfig) -> io::Result<(Vec<u8>, AppHello)>
where
    S: AsyncRead + Unpin,
{
    let deadline = Instant::now() + cfg.sniff_timeout;
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    loop {
        let n = match timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) if buf.is_empty() => return Ok((buf, AppHello::Silent)),
            Err(_) => return Ok((buf, AppHello::Incomplete)),
            Ok(r) => r?,
        };
        if n == 0 {
            let outcome = if buf.is_empty() { AppHello::Closed } else { AppHello::Incomplete };
            return Ok((buf, outcome));
        }
        let room = cfg.client_hello_max_bytes.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..n]);
        match parse_client_hello(&buf) {
            ClientHelloParse::Complete(info) => return Ok((buf, AppHello::ClientHello(info))),
            ClientHelloParse::NotClientHello(_) => return Ok((buf, AppHello::NotTls)),
            ClientHelloParse::Incomplete if n >= room => return Ok((buf, AppHello::Incomplete)),
            ClientHelloParse::Incomplete => {}
        }
    }
}
