//! The relay and the connection table over a real node-to-node mTLS tunnel on loopback.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use riptides_cp::ca::{Ca, CaConfig};
use riptides_node::dataplane::handshake::{accept_mtls, connect_mtls, Alpn, HandshakeConfig, Svid, TrustBundles};
use riptides_node::dataplane::relay::{relay, Prefixed, RelayConfig, RelayError, RelayStats};
use riptides_node::dataplane::table::{ConnectionTable, Direction};
use riptides_wire::{SpiffeId, TrustDomain};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn svid(ca: &Ca, path: &str) -> Svid {
    let id = SpiffeId::parse(&format!("spiffe://example.com/{path}")).unwrap();
    let (s, k) = ca.issue_with_new_key(&id, &[], &[], None, SystemTime::now()).unwrap();
    Svid::new(s.chain, k.to_rustls()).unwrap()
}

async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
    (c.unwrap(), s.unwrap().0)
}

/// A backend that reads the whole request (until the client half-closes), then answers with
/// its length and closes.
async fn backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut req = Vec::new();
        s.read_to_end(&mut req).await.unwrap();
        s.write_all(format!("got {} bytes", req.len()).as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
    });
    addr
}

#[tokio::test]
async fn relay_counts_bytes_both_ways_and_half_closes_through_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let ca =
        Ca::open(dir.path(), CaConfig::new(TrustDomain::parse("example.com").unwrap()), SystemTime::now()).unwrap();
    let bundles = TrustBundles::new(TrustDomain::parse("example.com").unwrap(), ca.bundle().roots());
    let (client_svid, server_svid) = (svid(&ca, "frontend"), svid(&ca, "orders"));
    let table = ConnectionTable::new(16);
    let hs = HandshakeConfig::default();
    let rc = RelayConfig::default();

    // Node B: the protected port, relaying to the backend.
    let backend_addr = backend().await;
    let node_b = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node_b_addr = node_b.local_addr().unwrap();
    let b_task = tokio::spawn({
        let (table, bundles, hs, rc, own) =
            (table.clone(), bundles.clone(), hs.clone(), rc.clone(), server_svid.clone());
        async move {
            let (s, peer) = node_b.accept().await.unwrap();
            let row = table.insert(peer, node_b_addr, Direction::Inbound).unwrap();
            row.set_mode("MUTUAL");
            row.set_own_id(&own.id);
            let (tls, info) = accept_mtls(s, &own, &[], &bundles, &hs).await.unwrap();
            row.set_handshake(&info);
            let up = TcpStream::connect(backend_addr).await.unwrap();
            let stats = relay(up, tls, &row.counters, &rc).await.unwrap();
            (stats, row.counters.get())
        }
    });

    // Node A: the application's captured connection, relayed into mTLS.
    let (mut app, captured) = pair().await;
    let a_task = tokio::spawn({
        let (table, bundles, hs, rc, own) =
            (table.clone(), bundles.clone(), hs.clone(), rc.clone(), client_svid.clone());
        async move {
            let src = captured.peer_addr().unwrap();
            let row = table.insert(src, node_b_addr, Direction::Outbound).unwrap();
            row.set_mode("MUTUAL");
            row.set_own_id(&own.id);
            let s = TcpStream::connect(node_b_addr).await.unwrap();
            let (tls, info) = connect_mtls(s, &own, &[], &bundles, Alpn::Riptides, &hs).await.unwrap();
            row.set_handshake(&info);
            let stats = relay(captured, tls, &row.counters, &rc).await.unwrap();
            let json = table.to_json();
            (stats, json)
        }
    });

    let request = vec![b'x'; 100_000];
    app.write_all(&request).await.unwrap();
    app.shutdown().await.unwrap(); // half-close: the answer must still arrive
    let mut reply = Vec::new();
    app.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, b"got 100000 bytes");

    let (a_stats, json) = a_task.await.unwrap();
    assert_eq!(a_stats, RelayStats { bytes_out: 100_000, bytes_in: reply.len() as u64 });
    let (b_stats, b_counters) = b_task.await.unwrap();
    assert_eq!(b_stats, RelayStats { bytes_out: reply.len() as u64, bytes_in: 100_000 });
    assert_eq!(b_counters, (100_000, reply.len() as u64));

    // While A's row was live, the table showed it with both identities and the PQC group.
    let rows = json.as_array().unwrap();
    let a_row = rows.iter().find(|r| r["direction"] == "outbound").unwrap();
    assert_eq!(a_row["ownSPIFFEID"], "spiffe://example.com/frontend");
    assert_eq!(a_row["peerSPIFFEID"], "spiffe://example.com/orders");
    assert_eq!(a_row["kxGroup"], "X25519MLKEM768");
    assert_eq!(a_row["tlsVersion"], "TLSv1.3");
    assert_eq!(a_row["bytesOut"], 100_000);
    assert_eq!(a_row["port"], node_b_addr.port());
    assert_eq!(a_row["state"], "established");
    // Rows leave the table with their guards.
    assert!(table.is_empty());
}

#[tokio::test]
async fn relay_idle_timeout_resets_on_traffic() {
    let (mut app, local) = pair().await;
    let (remote, mut peer) = pair().await;
    let counters = Default::default();
    let cfg = RelayConfig { idle_timeout: Duration::from_millis(300), ..RelayConfig::default() };
    let started = Instant::now();
    let talker = tokio::spawn(async move {
        for _ in 0..5 {
            app.write_all(b"k").await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        app // keep it open, silent
    });
    let res = relay(local, remote, &counters, &cfg).await;
    assert!(matches!(res, Err(RelayError::Idle(_))), "{res:?}");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(700) && took < Duration::from_secs(3), "{took:?}");
    assert_eq!(counters.get(), (0, 5));
    let mut buf = [0u8; 5];
    peer.read_exact(&mut buf).await.unwrap();
    let _app = talker.await.unwrap();
}

#[tokio::test]
async fn prefixed_bytes_are_forwarded_first() {
    let (mut app, local) = pair().await;
    let (remote, mut peer) = pair().await;
    app.write_all(b" world").await.unwrap();
    app.shutdown().await.unwrap();
    let counters = Default::default();
    let local = Prefixed::new(b"hello".to_vec(), local);
    let relay_task = tokio::spawn(async move {
        let r = relay(local, remote, &counters, &RelayConfig::default()).await;
        (r.map_err(|e| e.to_string()), counters.get())
    });
    let mut got = Vec::new();
    peer.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"hello world");
    drop(peer);
    drop(app);
    let (_, (_, out)) = relay_task.await.unwrap();
    assert_eq!(out, 11);
}

#[tokio::test]
async fn the_table_is_bounded_and_converts_for_the_tunnel() {
    let table = ConnectionTable::new(2);
    let src: SocketAddr = "10.0.0.1:40000".parse().unwrap();
    let dst: SocketAddr = "10.0.0.2:8000".parse().unwrap();
    let a = table.insert(src, dst, Direction::Inbound).unwrap();
    let b = table.insert(src, dst, Direction::Outbound).unwrap();
    let full = table.insert(src, dst, Direction::Outbound).unwrap_err();
    assert_eq!(full.capacity, 2);
    a.counters.add_in(7);
    a.set_mode("PERMISSIVE");
    let entries = table.entries();
    assert_eq!(entries.len(), 2);
    // Most recent first; for an inbound row the local end is the destination.
    let inbound = &entries[1];
    assert_eq!((inbound.local.as_str(), inbound.remote.as_str()), ("10.0.0.2:8000", "10.0.0.1:40000"));
    assert_eq!((inbound.bytes_in, inbound.mode.as_str(), inbound.state.as_str()), (7, "PERMISSIVE", "handshaking"));
    let outbound = &entries[0];
    assert_eq!((outbound.local.as_str(), outbound.remote.as_str()), ("10.0.0.1:40000", "10.0.0.2:8000"));
    drop(a);
    assert_eq!(table.len(), 1);
    let _c = table.insert(src, dst, Direction::Inbound).unwrap();
    drop(b);
    assert_eq!(table.len(), 1);
}
