//! Bad peers must not stop a server from serving good ones.
#![cfg(feature = "transport")]

mod transport_support;

use std::time::{Duration, Instant};

use riptides_wire::tls::ServerTrust;
use riptides_wire::transport::TransportConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use transport_support::*;

fn garbage(len: usize, seed: u64) -> Vec<u8> {
    // xorshift: deterministic bytes without a rand dependency.
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn good_client_round_trip(kind: Kind, srv: &Server, ca: &Ca, cfg: &TransportConfig) {
    let tls = client_tls(ServerTrust::Pin(ca.pin()), exact(CP_ID), Some(ca.svid(DAEMON_ID)));
    let (client, accepted) =
        tokio::join!(connect(kind, srv.addr(), tls, cfg), srv.accept_within(Duration::from_secs(5)));
    let client = client.unwrap();
    let server = accepted.expect("server accepted the good client");
    let (s, reply) = tokio::join!(serve_one(&*server), request(&*client, b"after the noise"));
    s.unwrap();
    assert_eq!(reply.unwrap(), reversed(b"after the noise"), "{kind:?}");
}

#[tokio::test]
async fn garbage_bytes_on_the_tcp_port_do_not_stop_the_server() {
    let ca = Ca::new("ca");
    let cfg = test_cfg();
    let srv = Server::bind(Kind::Tcp, server_tls(ca.svid(CP_ID), vec![ca.cert.clone()]), &cfg).await;
    for seed in 0..20u64 {
        let mut s = TcpStream::connect(srv.addr()).await.unwrap();
        let mut junk = garbage(100 + (seed as usize) * 300, seed);
        if seed % 4 == 0 {
            // Something that looks like a TLS handshake record, then nonsense.
            junk[..5].copy_from_slice(&[0x16, 0x03, 0x01, 0x00, 0x40]);
        }
        let _ = s.write_all(&junk).await;
        // The server answers with an alert or just closes; either way the socket ends.
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    }
    // Connect-and-close without sending anything, too.
    for _ in 0..5 {
        drop(TcpStream::connect(srv.addr()).await.unwrap());
    }
    good_client_round_trip(Kind::Tcp, &srv, &ca, &cfg).await;
}

#[tokio::test]
async fn garbage_datagrams_on_the_quic_port_do_not_stop_the_server() {
    let ca = Ca::new("ca");
    let cfg = test_cfg();
    let srv = Server::bind(Kind::Quic, server_tls(ca.svid(CP_ID), vec![ca.cert.clone()]), &cfg).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for seed in 0..200u64 {
        let len = [1usize, 20, 1200, 1350, 65_000][seed as usize % 5];
        let mut d = garbage(len, seed + 1);
        if seed % 3 == 0 && len >= 8 {
            // A long-header packet claiming QUIC v1, with garbage after it.
            d[0] = 0xc0;
            d[1..5].copy_from_slice(&1u32.to_be_bytes());
        }
        let _ = sock.send_to(&d, srv.addr()).await;
    }
    good_client_round_trip(Kind::Quic, &srv, &ca, &cfg).await;
}

#[tokio::test]
async fn silent_tcp_client_is_dropped_after_the_handshake_timeout() {
    let ca = Ca::new("ca");
    let cfg = TransportConfig { handshake_timeout: Duration::from_millis(500), ..test_cfg() };
    let srv = Server::bind(Kind::Tcp, server_tls(ca.svid(CP_ID), vec![ca.cert.clone()]), &cfg).await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(srv.addr()).await.unwrap();
    // Others are served while the silent client holds its socket open.
    good_client_round_trip(Kind::Tcp, &srv, &ca, &cfg).await;
    good_client_round_trip(Kind::Tcp, &srv, &ca, &cfg).await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("silent client was never dropped");
    assert!(matches!(read, Ok(0) | Err(_)), "server sent bytes to a client that said nothing: {read:?}");
    assert!(started.elapsed() >= Duration::from_millis(400), "dropped before the timeout");
}

#[tokio::test]
async fn bootstrap_client_without_certificate_is_accepted_next_to_mtls_clients() {
    for kind in KINDS {
        let ca = Ca::new("ca");
        let cfg = test_cfg();
        let srv = Server::bind(kind, server_tls(ca.svid(CP_ID), vec![ca.cert.clone()]), &cfg).await;
        let anon = client_tls(ServerTrust::Pin(ca.pin()), exact(CP_ID), None);
        let (client, accepted) =
            tokio::join!(connect(kind, srv.addr(), anon, &cfg), srv.accept_within(Duration::from_secs(5)));
        client.unwrap();
        assert!(accepted.unwrap().peer_certificates().is_none());
        good_client_round_trip(kind, &srv, &ca, &cfg).await;
    }
}
