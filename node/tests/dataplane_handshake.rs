//! Node-to-node handshakes, SIMPLE TLS, sniffing and ClientHello parsing over loopback TCP,
//! with certificates from a real control-plane CA.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use riptides_cp::ca::{Ca, CaConfig};
use riptides_node::dataplane::handshake::{
    accept_mtls, connect_mtls, connect_simple, parse_client_hello, read_client_hello, sniff, Alpn, AppHello,
    ClientHelloParse, FirstBytes, HandshakeConfig, HandshakeError, Svid, TrustBundles,
};
use riptides_wire::tls::{client_config, provider, ExpectedId, ServerTrust};
use riptides_wire::{SpiffeId, TrustDomain};
use rustls::{NamedGroup, ProtocolVersion};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HOUR: Duration = Duration::from_secs(3600);

struct TestCa {
    _dir: tempfile::TempDir,
    ca: Ca,
    td: String,
}

impl TestCa {
    /// A CA created three hours ago, so it can also issue already-expired SVIDs.
    fn new(td: &str) -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let config = CaConfig::new(TrustDomain::parse(td).unwrap());
        let ca = Ca::open(dir.path(), config, SystemTime::now() - 3 * HOUR).unwrap();
        TestCa { _dir: dir, ca, td: td.into() }
    }

    fn id(&self, path: &str) -> SpiffeId {
        SpiffeId::parse(&format!("spiffe://{}/{path}", self.td)).unwrap()
    }

    fn issue_at(
        &self,
        path: &str,
        dns: &[&str],
        at: SystemTime,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let dns: Vec<String> = dns.iter().map(|s| s.to_string()).collect();
        let (svid, key) = self.ca.issue_with_new_key(&self.id(path), &dns, &[], Some(HOUR), at).unwrap();
        (svid.chain, key.to_rustls())
    }

    fn svid(&self, path: &str) -> Svid {
        let (chain, key) = self.issue_at(path, &[], SystemTime::now());
        Svid::new(chain, key).unwrap()
    }

    fn roots(&self) -> Vec<CertificateDer<'static>> {
        self.ca.bundle().roots()
    }

    fn bundles(&self) -> TrustBundles {
        TrustBundles::new(TrustDomain::parse(&self.td).unwrap(), self.roots())
    }
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn cfg() -> HandshakeConfig {
    HandshakeConfig { handshake_timeout: Duration::from_secs(5), ..HandshakeConfig::default() }
}

async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
    (c.unwrap(), s.unwrap().0)
}

struct Outcome {
    client: Result<
        (tokio_rustls::client::TlsStream<TcpStream>, riptides_node::dataplane::handshake::HandshakeInfo),
        HandshakeError,
    >,
    server: Result<
        (tokio_rustls::server::TlsStream<TcpStream>, riptides_node::dataplane::handshake::HandshakeInfo),
        HandshakeError,
    >,
}

/// Runs both sides of one handshake concurrently.
async fn handshake(
    client: &Svid,
    server_allowed_for_client: &[SpiffeId],
    client_bundles: &TrustBundles,
    server: &Svid,
    client_allowed: &[SpiffeId],
    server_bundles: &TrustBundles,
    alpn: Alpn,
) -> Outcome {
    let (c, s) = pair().await;
    let cfg = cfg();
    let (client, server) = tokio::join!(
        connect_mtls(c, client, server_allowed_for_client, client_bundles, alpn, &cfg),
        accept_mtls(s, server, client_allowed, server_bundles, &cfg),
    );
    Outcome { client, server }
}

#[tokio::test]
async fn mutual_allowed_both_sides_see_ids_pqc_tls13() {
    let ca = TestCa::new("example.com");
    let frontend = ca.svid("frontend");
    let orders = ca.svid("orders-service");
    let b = ca.bundles();
    let out = handshake(
        &frontend,
        &[ca.id("orders-service")],
        &b,
        &orders,
        &[ca.id("frontend"), ca.id("monitoring")],
        &b,
        Alpn::Riptides,
    )
    .await;
    let (mut ctls, cinfo) = out.client.unwrap();
    let (mut stls, sinfo) = out.server.unwrap();
    assert_eq!(cinfo.peer_id, Some(ca.id("orders-service")));
    assert_eq!(sinfo.peer_id, Some(ca.id("frontend")));
    for info in [&cinfo, &sinfo] {
        assert_eq!(info.kx_group, Some(NamedGroup::X25519MLKEM768));
        assert_eq!(info.kx_group_name(), "X25519MLKEM768");
        assert_eq!(info.tls_version, Some(ProtocolVersion::TLSv1_3));
        assert_eq!(info.tls_version_name(), "TLSv1.3");
        assert_eq!(info.tunnel(), Some(Alpn::Riptides));
    }
    // Bytes flow; nothing sent right after the handshake is lost.
    ctls.write_all(b"ping").await.unwrap();
    ctls.flush().await.unwrap();
    let mut buf = [0u8; 4];
    stls.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    stls.write_all(b"pong").await.unwrap();
    stls.flush().await.unwrap();
    ctls.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
}

#[tokio::test]
async fn empty_allowed_lists_mean_the_own_trust_domain_and_passthrough_alpn_is_accepted() {
    let ca = TestCa::new("example.com");
    let b = ca.bundles();
    let out = handshake(&ca.svid("a"), &[], &b, &ca.svid("b"), &[], &b, Alpn::Passthrough).await;
    let (_, cinfo) = out.client.unwrap();
    let (_, sinfo) = out.server.unwrap();
    assert_eq!(cinfo.tunnel(), Some(Alpn::Passthrough));
    assert_eq!(sinfo.tunnel(), Some(Alpn::Passthrough));
    assert_eq!(sinfo.peer_id, Some(ca.id("a")));
}

#[tokio::test]
async fn client_not_in_ingress_list_is_refused_in_the_handshake() {
    let ca = TestCa::new("example.com");
    let b = ca.bundles();
    let out = handshake(
        &ca.svid("frontend"),
        &[],
        &b,
        &ca.svid("orders-service"),
        &[ca.id("monitoring")],
        &b,
        Alpn::Riptides,
    )
    .await;
    match out.server {
        Err(e @ HandshakeError::PeerNotAllowed { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("spiffe://example.com/frontend"), "{msg}");
            assert!(msg.contains("spiffe://example.com/monitoring"), "{msg}");
        }
        Err(e) => panic!("server: wrong error {e:?}"),
        Ok(_) => panic!("server accepted an unlisted client"),
    }
    // TLS 1.3: the client finishes before the server verifies it, so the refusal arrives as an
    // access_denied alert on its first read (or already in the handshake).
    match out.client {
        Err(HandshakeError::PeerAlert(a)) => assert!(a.contains("AccessDenied"), "{a}"),
        Err(e) => panic!("client: wrong error {e:?}"),
        Ok((mut tls, _)) => {
            let mut buf = [0u8; 1];
            let err = tls.read(&mut buf).await.expect_err("refused client must not read data");
            assert!(format!("{err:?}").contains("AccessDenied"), "{err:?}");
        }
    }
}

#[tokio::test]
async fn server_not_in_allowed_spiffe_ids_is_refused_by_the_client() {
    let ca = TestCa::new("example.com");
    let b = ca.bundles();
    let out = handshake(
        &ca.svid("frontend"),
        &[ca.id("orders-service")],
        &b,
        &ca.svid("inventory-service"),
        &[],
        &b,
        Alpn::Riptides,
    )
    .await;
    match out.client {
        Err(HandshakeError::PeerNotAllowed { peer, allowed }) => {
            assert_eq!(peer, ca.id("inventory-service"));
            assert!(allowed.contains("orders-service"));
        }
        other => panic!("client: {:?}", other.map(|(_, i)| i)),
    }
    match out.server {
        Err(HandshakeError::PeerAlert(a)) => assert!(a.contains("AccessDenied"), "{a}"),
        other => panic!("server: {:?}", other.map(|(_, i)| i)),
    }
}

#[tokio::test]
async fn certificates_from_another_ca_or_trust_domain_are_refused() {
    let ca = TestCa::new("example.com");
    let rogue = TestCa::new("example.com"); // same trust domain, different root
    let other = TestCa::new("other.org");
    let b = ca.bundles();

    // Client presents a certificate from another CA: the server refuses it.
    let out = handshake(&rogue.svid("frontend"), &[], &b, &ca.svid("orders"), &[], &b, Alpn::Riptides).await;
    match out.server {
        Err(HandshakeError::UntrustedPeer { peer, reason }) => {
            assert_eq!(peer, Some(ca.id("frontend")));
            assert!(reason.contains("UnknownIssuer"), "{reason}");
        }
        other => panic!("server: {:?}", other.map(|(_, i)| i)),
    }

    // Server presents one: the client refuses it.
    let out = handshake(&ca.svid("frontend"), &[], &b, &rogue.svid("orders"), &[], &b, Alpn::Riptides).await;
    assert!(matches!(out.client, Err(HandshakeError::UntrustedPeer { .. })), "{:?}", out.client.map(|(_, i)| i));
    assert!(matches!(out.server, Err(HandshakeError::PeerAlert(_))));

    // A trust domain we hold no bundle for.
    let out = handshake(&other.svid("frontend"), &[], &b, &ca.svid("orders"), &[], &b, Alpn::Riptides).await;
    match out.server {
        Err(HandshakeError::UntrustedPeer { reason, .. }) => assert!(reason.contains("other.org"), "{reason}"),
        other => panic!("server: {:?}", other.map(|(_, i)| i)),
    }

    // A federated domain's certificate must chain to *its* bundle, not to ours.
    let mut federated = ca.bundles();
    federated.insert(TrustDomain::parse("other.org").unwrap(), other.roots());
    let out = handshake(
        &other.svid("partner"),
        &[],
        &b,
        &ca.svid("orders"),
        &[id("spiffe://other.org/partner")],
        &federated,
        Alpn::Riptides,
    )
    .await;
    assert_eq!(out.server.map(|(_, i)| i.peer_id).unwrap(), Some(id("spiffe://other.org/partner")));
    let mut crossed = ca.bundles();
    crossed.insert(TrustDomain::parse("other.org").unwrap(), ca.roots());
    let out = handshake(
        &other.svid("partner"),
        &[],
        &b,
        &ca.svid("orders"),
        &[id("spiffe://other.org/partner")],
        &crossed,
        Alpn::Riptides,
    )
    .await;
    assert!(matches!(out.server, Err(HandshakeError::UntrustedPeer { .. })));
}

#[tokio::test]
async fn expired_certificates_are_refused() {
    let ca = TestCa::new("example.com");
    let b = ca.bundles();
    let (chain, key) = ca.issue_at("frontend", &[], SystemTime::now() - 2 * HOUR);
    let expired = Svid::new(chain, key).unwrap();
    let out = handshake(&expired, &[], &b, &ca.svid("orders"), &[], &b, Alpn::Riptides).await;
    match out.server {
        Err(HandshakeError::UntrustedPeer { reason, .. }) => {
            assert!(reason.to_lowercase().contains("expired"), "{reason}")
        }
        other => panic!("server: {:?}", other.map(|(_, i)| i)),
    }
    let out = handshake(&ca.svid("frontend"), &[], &b, &expired, &[], &b, Alpn::Riptides).await;
    match out.client {
        Err(HandshakeError::UntrustedPeer { reason, .. }) => {
            assert!(reason.to_lowercase().contains("expired"), "{reason}")
        }
        other => panic!("client: {:?}", other.map(|(_, i)| i)),
    }
}

/// A rustls client with our SVID but an arbitrary ALPN list.
async fn raw_client(
    ca: &TestCa,
    stream: TcpStream,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let (chain, key) = ca.issue_at("frontend", &[], SystemTime::now());
    let config = client_config(
        ServerTrust::Bundle(ca.roots()),
        ExpectedId::TrustDomain(TrustDomain::parse(&ca.td).unwrap()),
        Some((chain, key)),
        alpn,
    )
    .unwrap();
    tokio_rustls::TlsConnector::from(config).connect(ServerName::try_from("node").unwrap(), stream).await
}

#[tokio::test]
async fn wrong_or_missing_alpn_is_refused() {
    let ca = TestCa::new("example.com");
    let b = ca.bundles();
    let own = ca.svid("orders");
    let wrong: [&[u8]; 2] = [b"h2", b"http/1.1"];
    for alpn in [&wrong[..], &[][..]] {
        let (c, s) = pair().await;
        let cfg = cfg();
        let (client, server) = tokio::join!(raw_client(&ca, c, alpn), accept_mtls(s, &own, &[], &b, &cfg));
        match server {
            Err(HandshakeError::WrongAlpn { offered }) => {
                let want: Vec<String> = alpn.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
                assert_eq!(offered, want);
            }
            other => panic!("server with ALPN {alpn:?}: {:?}", other.map(|(_, i)| i)),
        }
        assert!(client.is_err(), "client with ALPN {alpn:?} must fail");
    }
}

#[tokio::test]
async fn non_tls_client_on_a_mutual_port_fails_fast() {
    let ca = TestCa::new("example.com");
    let (mut c, s) = pair().await;
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let started = Instant::now();
    let res = accept_mtls(s, &ca.svid("orders"), &[], &ca.bundles(), &cfg()).await;
    assert!(matches!(res, Err(HandshakeError::NotTls(_))), "{:?}", res.map(|(_, i)| i));
    assert!(started.elapsed() < cfg().handshake_timeout);
}

#[tokio::test]
async fn silent_and_slow_clients_are_dropped_after_the_handshake_timeout() {
    let ca = TestCa::new("example.com");
    let cfg = HandshakeConfig { handshake_timeout: Duration::from_millis(300), ..HandshakeConfig::default() };
    let own = ca.svid("orders");
    let b = ca.bundles();

    let (_c, s) = pair().await;
    let started = Instant::now();
    let res = accept_mtls(s, &own, &[], &b, &cfg).await;
    assert!(matches!(res, Err(HandshakeError::Timeout(_))), "{:?}", res.map(|(_, i)| i));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(2), "{took:?}");

    // A client that trickles a partial record stays bounded by the same deadline.
    let (mut c, s) = pair().await;
    let trickle = tokio::spawn(async move {
        for b in [0x16u8, 0x03, 0x01] {
            let _ = c.write_all(&[b]).await;
            tokio::time::sleep(Duration::from_millis(120)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(c);
    });
    let started = Instant::now();
    let res = accept_mtls(s, &own, &[], &b, &cfg).await;
    assert!(matches!(res, Err(HandshakeError::Timeout(_))));
    assert!(started.elapsed() < Duration::from_secs(1));
    trickle.abort();

    // Many half-open connections at once all end on time.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let mut clients = Vec::new();
    let mut servers = tokio::task::JoinSet::new();
    for _ in 0..200 {
        clients.push(TcpStream::connect(addr).await.unwrap());
        let (s, _) = l.accept().await.unwrap();
        let (own, b, cfg) = (own.clone(), b.clone(), cfg.clone());
        servers.spawn(async move { accept_mtls(s, &own, &[], &b, &cfg).await.map(|_| ()) });
    }
    let started = Instant::now();
    while let Some(r) = servers.join_next().await {
        assert!(matches!(r.unwrap(), Err(HandshakeError::Timeout(_))));
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn sniff_tells_tls_from_plaintext_without_consuming() {
    let ca = TestCa::new("example.com");
    let b = ca.bundles();
    let client_svid = ca.svid("frontend");
    let server_svid = ca.svid("orders");

    // TLS: after sniffing, the full handshake still works on the same socket.
    let (c, s) = pair().await;
    let client = tokio::spawn({
        let (b, svid) = (b.clone(), client_svid.clone());
        async move { connect_mtls(c, &svid, &[], &b, Alpn::Riptides, &cfg()).await.map(|(_, i)| i) }
    });
    assert_eq!(sniff(&s, Duration::from_secs(2)).await.unwrap(), FirstBytes::Tls);
    let (_, info) = accept_mtls(s, &server_svid, &[], &b, &cfg()).await.unwrap();
    assert_eq!(info.peer_id, Some(ca.id("frontend")));
    client.await.unwrap().unwrap();

    // Plaintext: every byte is still there to read.
    let (mut c, mut s) = pair().await;
    c.write_all(b"hello plaintext").await.unwrap();
    assert_eq!(sniff(&s, Duration::from_secs(2)).await.unwrap(), FirstBytes::Plaintext);
    let mut buf = [0u8; 15];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello plaintext");

    // Nothing sent: a timeout; closed: Closed.
    let (_c, s) = pair().await;
    assert!(matches!(sniff(&s, Duration::from_millis(100)).await, Err(HandshakeError::Timeout(_))));
    let (c, s) = pair().await;
    drop(c);
    assert!(matches!(sniff(&s, Duration::from_secs(2)).await, Err(HandshakeError::Closed)));
}

/// Starts a real rustls client (SNI + ALPN) against a socket that only records its bytes.
async fn capture_client_hello(sni: &str, alpn: &[&[u8]]) -> (Vec<u8>, TcpStream) {
    let (c, s) = pair().await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(TestCa::new("example.com").roots().remove(0)).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let client = tokio::spawn(async move {
        let _ = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, c).await;
    });
    // Give the client time to send its whole first flight, then read what arrived.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut bytes = vec![0u8; 64 * 1024];
    let n = s.try_read(&mut bytes).unwrap();
    bytes.truncate(n);
    client.abort();
    (bytes, s)
}

#[tokio::test]
async fn client_hello_sni_and_alpn_are_extracted_from_real_rustls_bytes() {
    let (bytes, _s) = capture_client_hello("api.example.net", &[b"h2", b"http/1.1"]).await;
    match parse_client_hello(&bytes) {
        ClientHelloParse::Complete(info) => {
            assert_eq!(info.server_name.as_deref(), Some("api.example.net"));
            assert_eq!(info.alpn_strings(), vec!["h2", "http/1.1"]);
        }
        other => panic!("{other:?}"),
    }
    // A prefix is incomplete, not an error; plaintext is recognised as such.
    assert_eq!(parse_client_hello(&bytes[..bytes.len() / 2]), ClientHelloParse::Incomplete);
    assert_eq!(parse_client_hello(&bytes[..3]), ClientHelloParse::Incomplete);
    assert!(matches!(parse_client_hello(b"GET / HTTP/1.1\r\n"), ClientHelloParse::NotClientHello(_)));
    // A complete handshake record holding a ServerHello, not a ClientHello.
    assert!(matches!(
        parse_client_hello(&[0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00]),
        ClientHelloParse::NotClientHello(_)
    ));
}

#[tokio::test]
async fn read_client_hello_returns_the_bytes_unchanged() {
    let (expected, _s) = capture_client_hello("db.internal", &[b"postgresql"]).await;
    // Replay the captured bytes in small pieces to a socket and read them back as an app would.
    let (mut c, mut s) = pair().await;
    let replay = expected.clone();
    let writer = tokio::spawn(async move {
        for chunk in replay.chunks(100) {
            c.write_all(chunk).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        c
    });
    let (bytes, hello) = read_client_hello(&mut s, &cfg()).await.unwrap();
    let _c = writer.await.unwrap();
    assert_eq!(bytes, expected);
    match hello {
        AppHello::ClientHello(info) => {
            assert_eq!(info.server_name.as_deref(), Some("db.internal"));
            assert_eq!(info.alpn, vec![b"postgresql".to_vec()]);
        }
        other => panic!("{other:?}"),
    }

    let (mut c, mut s) = pair().await;
    c.write_all(b"PING\r\n").await.unwrap();
    let (bytes, hello) = read_client_hello(&mut s, &cfg()).await.unwrap();
    assert_eq!((bytes.as_slice(), hello), (b"PING\r\n".as_slice(), AppHello::NotTls));

    let short = HandshakeConfig { sniff_timeout: Duration::from_millis(100), ..cfg() };
    let (_c, mut s) = pair().await;
    assert_eq!(read_client_hello(&mut s, &short).await.unwrap(), (Vec::new(), AppHello::Silent));
}

/// A TLS server with a certificate for `svc.example.net`, restricted to one TLS version.
async fn simple_server(
    ca: &TestCa,
    version: &'static rustls::SupportedProtocolVersion,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<Option<ProtocolVersion>>) {
    let (chain, key) = ca.issue_at("svc", &["svc.example.net"], SystemTime::now());
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (s, _) = l.accept().await.ok()?;
        let mut tls = tokio_rustls::TlsAcceptor::from(Arc::new(config)).accept(s).await.ok()?;
        let v = tls.get_ref().1.protocol_version();
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.ok()?;
        tls.write_all(&buf).await.ok()?;
        tls.shutdown().await.ok()?;
        v
    });
    (addr, task)
}

#[tokio::test]
async fn simple_mode_with_tls12_and_tls13_servers() {
    let ca = TestCa::new("example.com");
    for (version, want) in
        [(&rustls::version::TLS12, ProtocolVersion::TLSv1_2), (&rustls::version::TLS13, ProtocolVersion::TLSv1_3)]
    {
        let (addr, server) = simple_server(&ca, version).await;
        let s = TcpStream::connect(addr).await.unwrap();
        let (mut tls, info) = connect_simple(s, "svc.example.net", &ca.roots(), true, &[], &cfg()).await.unwrap();
        assert_eq!(info.tls_version, Some(want));
        assert_eq!(info.peer_id, None);
        tls.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        assert_eq!(server.await.unwrap(), Some(want));
    }

    // TLS 1.2 not allowed: refused.
    let (addr, _server) = simple_server(&ca, &rustls::version::TLS12).await;
    let s = TcpStream::connect(addr).await.unwrap();
    assert!(connect_simple(s, "svc.example.net", &ca.roots(), false, &[], &cfg()).await.is_err());

    // Wrong host name: refused by WebPKI name rules.
    let (addr, _server) = simple_server(&ca, &rustls::version::TLS13).await;
    let s = TcpStream::connect(addr).await.unwrap();
    let err = connect_simple(s, "other.example.net", &ca.roots(), true, &[], &cfg()).await.unwrap_err();
    assert!(matches!(err, HandshakeError::UntrustedPeer { .. }), "{err:?}");

    // Server from a CA we were not given: refused.
    let other = TestCa::new("example.com");
    let (addr, _server) = simple_server(&ca, &rustls::version::TLS13).await;
    let s = TcpStream::connect(addr).await.unwrap();
    let err = connect_simple(s, "svc.example.net", &other.roots(), true, &[], &cfg()).await.unwrap_err();
    assert!(matches!(err, HandshakeError::UntrustedPeer { .. }), "{err:?}");
}

#[tokio::test]
async fn an_svid_whose_key_does_not_match_is_refused_up_front() {
    let ca = TestCa::new("example.com");
    let (chain, _) = ca.issue_at("a", &[], SystemTime::now());
    let (_, other_key) = ca.issue_at("b", &[], SystemTime::now());
    assert!(matches!(Svid::new(chain, other_key), Err(HandshakeError::Config(_))));
}
