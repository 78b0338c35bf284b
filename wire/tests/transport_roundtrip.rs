//! Round trips over both transports: either side opens streams, many at once, peer identity,
//! and the end of a connection.
#![cfg(feature = "transport")]

mod transport_support;

use std::sync::Arc;
use std::time::Duration;

use riptides_wire::tls::peer_spiffe_id;
use riptides_wire::transport::{TransportConfig, TransportError, TransportKind};
use transport_support::*;

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn client_opens_stream() {
    for kind in KINDS {
        let (_srv, server, client) = pair(kind, true, &test_cfg()).await;
        let payload = b"hello from the daemon".repeat(1000);
        let (served, reply) = tokio::join!(serve_one(&*server), request(&*client, &payload));
        served.unwrap();
        assert_eq!(reply.unwrap(), reversed(&payload), "{kind:?}");
    }
}

#[tokio::test]
async fn server_opens_stream_to_client() {
    for kind in KINDS {
        let (_srv, server, client) = pair(kind, true, &test_cfg()).await;
        // The tunnel direction: the CP opens a stream on the connection the daemon dialed.
        let payload = b"connection table please".to_vec();
        let (served, reply) = tokio::join!(serve_one(&*client), request(&*server, &payload));
        served.unwrap();
        assert_eq!(reply.unwrap(), reversed(&payload), "{kind:?}");
        // And the other direction still works on the same connection.
        let (served, reply) = tokio::join!(serve_one(&*server), request(&*client, b"abc"));
        served.unwrap();
        assert_eq!(reply.unwrap(), b"cba", "{kind:?}");
    }
}

#[tokio::test]
async fn many_concurrent_streams_both_directions() {
    for kind in KINDS {
        // A small stream limit, so most openers have to wait for a slot.
        let cfg = TransportConfig { max_streams: 8, ..test_cfg() };
        let (_srv, server, client) = pair(kind, true, &cfg).await;
        let s_task = serve_forever(server.clone());
        let c_task = serve_forever(client.clone());
        let mut jobs = Vec::new();
        for i in 0..100usize {
            let (opener, name) = if i % 2 == 0 { (client.clone(), "client") } else { (server.clone(), "server") };
            jobs.push(tokio::spawn(async move {
                let payload: Vec<u8> = (0..(i * 97 % 20_000)).map(|b| (b % 251) as u8).collect();
                let reply = request(&*opener, &payload).await.unwrap();
                assert_eq!(reply, reversed(&payload), "{name} stream {i}");
            }));
        }
        for j in jobs {
            tokio::time::timeout(T, j).await.expect("stream timed out").unwrap();
        }
        s_task.abort();
        c_task.abort();
    }
}

#[tokio::test]
async fn peer_identity_visible_with_client_cert() {
    for kind in KINDS {
        let (_srv, server, client) = pair(kind, true, &test_cfg()).await;
        let certs = server.peer_certificates().expect("server sees the client chain");
        assert_eq!(peer_spiffe_id(&certs).unwrap().as_str(), DAEMON_ID, "{kind:?}");
        let certs = client.peer_certificates().expect("client sees the server chain");
        assert_eq!(peer_spiffe_id(&certs).unwrap().as_str(), CP_ID, "{kind:?}");
        let expected = match kind {
            Kind::Quic => TransportKind::Quic,
            Kind::Tcp => TransportKind::TcpTls,
        };
        assert_eq!(server.kind(), expected);
        assert_eq!(client.kind(), expected);
        assert!(server.remote_addr().ip().is_loopback());
        assert_eq!(client.remote_addr(), _srv.addr());
    }
}

#[tokio::test]
async fn peer_identity_absent_without_client_cert() {
    for kind in KINDS {
        let (_srv, server, client) = pair(kind, false, &test_cfg()).await;
        assert!(server.peer_certificates().is_none(), "{kind:?}");
        // Such a bootstrap connection still carries streams.
        let (served, reply) = tokio::join!(serve_one(&*server), request(&*client, b"join"));
        served.unwrap();
        assert_eq!(reply.unwrap(), b"nioj");
    }
}

#[tokio::test]
async fn close_ends_accept_and_closed() {
    for kind in KINDS {
        let (_srv, server, client) = pair(kind, true, &test_cfg()).await;
        let waiting = {
            let server = server.clone();
            tokio::spawn(async move { server.accept_bi().await })
        };
        client.close("daemon shutting down");
        let res = tokio::time::timeout(T, waiting).await.expect("accept_bi returned").unwrap();
        assert!(matches!(res, Err(TransportError::Closed)), "{kind:?}: {res:?}");
        tokio::time::timeout(T, server.closed()).await.expect("server saw the close");
        tokio::time::timeout(T, client.closed()).await.expect("client closed");
        assert!(matches!(client.open_bi().await, Err(TransportError::Closed)), "{kind:?}");
        assert!(matches!(client.accept_bi().await, Err(TransportError::Closed)), "{kind:?}");
        assert!(matches!(server.open_bi().await, Err(TransportError::Closed)), "{kind:?}");
    }
}

#[tokio::test]
async fn server_side_close_reaches_client() {
    for kind in KINDS {
        let (_srv, server, client) = pair(kind, true, &test_cfg()).await;
        server.close("policy says no");
        let res = tokio::time::timeout(T, client.accept_bi()).await.expect("accept_bi returned");
        assert!(matches!(res, Err(TransportError::Closed)), "{kind:?}");
        tokio::time::timeout(T, client.closed()).await.expect("client saw the close");
    }
}

#[tokio::test]
async fn dropping_every_handle_closes_the_connection() {
    for kind in KINDS {
        let (_srv, server, client) = pair(kind, true, &test_cfg()).await;
        drop(client);
        tokio::time::timeout(T, server.closed()).await.expect("server saw the drop");
    }
}

#[tokio::test]
async fn idle_connection_survives_on_keepalives() {
    for kind in KINDS {
        let cfg = TransportConfig {
            keep_alive: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(600),
            ..test_cfg()
        };
        let (_srv, server, client) = pair(kind, true, &cfg).await;
        // Idle for several idle timeouts: keep-alives hold the connection open.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (served, reply) = tokio::join!(serve_one(&*server), request(&*client, b"still here"));
        served.unwrap();
        assert_eq!(reply.unwrap(), reversed(b"still here"), "{kind:?}");
    }
}

#[tokio::test]
async fn silent_connection_ends_at_the_idle_timeout() {
    for kind in KINDS {
        // No keep-alives on either side: nothing is sent, so the idle timeout must end it.
        let cfg =
            TransportConfig { keep_alive: Duration::ZERO, idle_timeout: Duration::from_millis(500), ..test_cfg() };
        let (_srv, server, client) = pair(kind, true, &cfg).await;
        tokio::time::timeout(T, server.closed()).await.expect("server side timed out");
        tokio::time::timeout(T, client.closed()).await.expect("client side timed out");
        assert!(matches!(server.accept_bi().await, Err(TransportError::Closed)), "{kind:?}");
    }
}

#[tokio::test]
async fn server_close_stops_accepting() {
    for kind in KINDS {
        let (srv, server, _client) = pair(kind, true, &test_cfg()).await;
        srv.close();
        let res = tokio::time::timeout(T, srv.accept()).await.expect("accept returned");
        assert!(matches!(res, Err(TransportError::EndpointClosed)), "{kind:?}");
        tokio::time::timeout(T, server.closed()).await.expect("connections closed too");
    }
}

#[tokio::test]
async fn rotated_server_config_applies_to_new_connections() {
    for kind in KINDS {
        let ca = Ca::new("rotation ca");
        let cfg = test_cfg();
        let srv = Server::bind(kind, server_tls(ca.svid(CP_ID), vec![ca.cert.clone()]), &cfg).await;
        let new_id = "spiffe://example.com/riptides/controlplane-2";
        srv.set_server_config(server_tls(ca.svid(new_id), vec![ca.cert.clone()]));
        let tls = client_tls(riptides_wire::tls::ServerTrust::Bundle(vec![ca.cert.clone()]), exact(new_id), None);
        let (client, accepted) = tokio::join!(connect(kind, srv.addr(), tls, &cfg), srv.accept());
        let client = client.unwrap();
        accepted.unwrap();
        let certs = client.peer_certificates().unwrap();
        assert_eq!(peer_spiffe_id(&certs).unwrap().as_str(), new_id, "{kind:?}");
        let _: Arc<_> = client;
    }
}
