//! Shared helpers for the transport and TLS tests: an rcgen CA issuing X509-SVIDs, config
//! builders, and a tiny abstraction over the two server types.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use riptides_wire::tls::{self, CertificateDer, ExpectedId, PrivateKeyDer, ServerTrust};
use riptides_wire::transport::{
    connect_quic, connect_tcp_tls, BiStream, Connection, QuicServer, TcpTlsServer, TransportConfig, TransportError,
};
use riptides_wire::SpiffeId;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const ALPN: &[u8] = b"riptides-cp/1";
pub const CP_ID: &str = "spiffe://example.com/riptides/controlplane";
pub const DAEMON_ID: &str = "spiffe://example.com/riptides/daemon/d1";

pub type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// A test CA (ECDSA P-256, cA=true) issuing SVID-shaped leaves.
pub struct Ca {
    pub cert: CertificateDer<'static>,
    pub pem: String,
    /// Certificates above `cert` (empty for a root), sent after it in leaf chains.
    pub parents: Vec<CertificateDer<'static>>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).unwrap();
        Ca { cert: cert.der().clone(), pem: cert.pem(), parents: vec![], issuer: Issuer::new(params, key) }
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, name: &str) -> Ca {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let mut parents = vec![self.cert.clone()];
        parents.extend(self.parents.iter().cloned());
        Ca { cert: cert.der().clone(), pem: cert.pem(), parents, issuer: Issuer::new(params, key) }
    }

    /// A leaf with the given URI SANs, valid from yesterday for a year.
    pub fn leaf_uris(&self, uris: &[&str]) -> Identity {
        let now = OffsetDateTime::now_utc();
        self.leaf_full(uris, now - time::Duration::days(1), now + time::Duration::days(365))
    }

    pub fn leaf_full(&self, uris: &[&str], not_before: OffsetDateTime, not_after: OffsetDateTime) -> Identity {
        let sans = uris.iter().map(|u| SanType::URI(rcgen::string::Ia5String::try_from(*u).unwrap())).collect();
        self.leaf_sans(sans, not_before, not_after)
    }

    pub fn leaf_sans(&self, sans: Vec<SanType>, not_before: OffsetDateTime, not_after: OffsetDateTime) -> Identity {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "svid");
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        // The chain includes the CA so pin-based clients can find their anchor in it.
        let mut chain = vec![cert.der().clone(), self.cert.clone()];
        chain.extend(self.parents.iter().cloned());
        (chain, PrivateKeyDer::Pkcs8(key.serialize_der().into()))
    }

    /// An SVID for `id`, chain = [leaf, ca].
    pub fn svid(&self, id: &str) -> Identity {
        self.leaf_uris(&[id])
    }

    pub fn pin(&self) -> [u8; 32] {
        tls::spki_sha256(&self.cert).unwrap()
    }
}

pub fn exact(id: &str) -> ExpectedId {
    ExpectedId::Exact(SpiffeId::parse(id).unwrap())
}

pub fn server_tls(identity: Identity, client_roots: Vec<CertificateDer<'static>>) -> Arc<rustls::ServerConfig> {
    tls::server_config(identity.0, identity.1, client_roots, &[ALPN]).unwrap()
}

pub fn client_tls(trust: ServerTrust, expected: ExpectedId, identity: Option<Identity>) -> Arc<rustls::ClientConfig> {
    tls::client_config(trust, expected, identity, &[ALPN]).unwrap()
}

pub fn test_cfg() -> TransportConfig {
    TransportConfig { handshake_timeout: Duration::from_secs(5), ..TransportConfig::default() }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Quic,
    Tcp,
}

pub const KINDS: [Kind; 2] = [Kind::Quic, Kind::Tcp];

pub enum Server {
    Quic(QuicServer),
    Tcp(TcpTlsServer),
}

impl Server {
    pub async fn bind(kind: Kind, tls: Arc<rustls::ServerConfig>, cfg: &TransportConfig) -> Server {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        match kind {
            Kind::Quic => Server::Quic(QuicServer::bind(addr, tls, cfg).await.unwrap()),
            Kind::Tcp => Server::Tcp(TcpTlsServer::bind(addr, tls, cfg).await.unwrap()),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        match self {
            Server::Quic(s) => s.local_addr().unwrap(),
            Server::Tcp(s) => s.local_addr(),
        }
    }

    pub async fn accept(&self) -> Result<Arc<dyn Connection>, TransportError> {
        match self {
            Server::Quic(s) => s.accept().await,
            Server::Tcp(s) => s.accept().await,
        }
    }

    /// `accept` with a deadline so a broken test fails instead of hanging.
    pub async fn accept_within(&self, d: Duration) -> Option<Arc<dyn Connection>> {
        tokio::time::timeout(d, self.accept()).await.ok().map(|r| r.unwrap())
    }

    pub fn set_server_config(&self, tls: Arc<rustls::ServerConfig>) {
        match self {
            Server::Quic(s) => s.set_server_config(tls).unwrap(),
            Server::Tcp(s) => s.set_server_config(tls),
        }
    }

    pub fn close(&self) {
        match self {
            Server::Quic(s) => s.close("test over"),
            Server::Tcp(s) => s.close("test over"),
        }
    }
}

pub async fn connect(
    kind: Kind,
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    cfg: &TransportConfig,
) -> Result<Arc<dyn Connection>, TransportError> {
    match kind {
        Kind::Quic => connect_quic("127.0.0.1:0".parse().unwrap(), addr, tls, cfg).await,
        Kind::Tcp => connect_tcp_tls(addr, tls, "controlplane.example.com", cfg).await,
    }
}

/// A connected pair: (server side, client side). The client has a daemon SVID when
/// `client_cert` is set.
pub async fn pair(
    kind: Kind,
    client_cert: bool,
    cfg: &TransportConfig,
) -> (Server, Arc<dyn Connection>, Arc<dyn Connection>) {
    let ca = Ca::new("test ca");
    let server = Server::bind(kind, server_tls(ca.svid(CP_ID), vec![ca.cert.clone()]), cfg).await;
    let identity = client_cert.then(|| ca.svid(DAEMON_ID));
    let client_cfg = client_tls(ServerTrust::Bundle(vec![ca.cert.clone()]), exact(CP_ID), identity);
    let (client, accepted) = tokio::join!(connect(kind, server.addr(), client_cfg, cfg), server.accept());
    (server, accepted.unwrap(), client.unwrap())
}

/// Serves one stream on `conn`: reads the request to EOF and answers with it reversed.
pub async fn serve_one(conn: &dyn Connection) -> Result<(), TransportError> {
    let BiStream { mut send, mut recv } = conn.accept_bi().await?;
    let mut req = Vec::new();
    recv.read_to_end(&mut req).await?;
    req.reverse();
    send.write_all(&req).await?;
    send.shutdown().await?;
    Ok(())
}

/// Serves streams until the connection ends, each in its own task.
pub fn serve_forever(conn: Arc<dyn Connection>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(BiStream { mut send, mut recv }) = conn.accept_bi().await {
            tokio::spawn(async move {
                let mut req = Vec::new();
                if recv.read_to_end(&mut req).await.is_ok() {
                    req.reverse();
                    let _ = send.write_all(&req).await;
                    let _ = send.shutdown().await;
                }
            });
        }
    })
}

/// Opens a stream, sends `payload`, finishes, and returns the reply.
pub async fn request(conn: &dyn Connection, payload: &[u8]) -> Result<Vec<u8>, TransportError> {
    let BiStream { mut send, mut recv } = conn.open_bi().await?;
    send.write_all(payload).await?;
    send.shutdown().await?;
    let mut reply = Vec::new();
    recv.read_to_end(&mut reply).await?;
    Ok(reply)
}

pub fn reversed(p: &[u8]) -> Vec<u8> {
    let mut v = p.to_vec();
    v.reverse();
    v
}
