//! Every protocol message round-trips through the slice codec and through the async
//! reader/writer over a tokio duplex pipe.

#[path = "proto_strategies.rs"]
mod strategies;

use std::fmt::Debug;

use proptest::prelude::*;
use riptides_wire::proto::messages::*;
use riptides_wire::proto::{
    decode, encode, read_frame, write_frame, FrameConfig, FrameError, FrameReader, FrameWriter, PROTOCOL_VERSION,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use strategies::*;

fn roundtrip_slice<T>(msg: &T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let cfg = FrameConfig::default();
    let frame = encode(msg, &cfg).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    prop_assert_eq!(len, frame.len() - 4, "length prefix counts everything after it");
    prop_assert_eq!(u16::from_be_bytes([frame[4], frame[5]]), PROTOCOL_VERSION);
    let back: T = decode(&frame, &cfg).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, msg);
    Ok(())
}

/// Writes all messages on one end of a small duplex pipe (so writes block on the reader) and
/// reads them back in order on the other, then sees the clean end of the stream.
fn roundtrip_stream<T>(msgs: Vec<T>) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + Clone + Send + Sync + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let cfg = FrameConfig::default();
        let (a, b) = tokio::io::duplex(64);
        let sent = msgs.clone();
        let writer = tokio::spawn(async move {
            let mut w = FrameWriter::new(a, cfg);
            for m in &sent {
                w.write(m).await.unwrap();
            }
            w.shutdown().await.unwrap();
        });
        let mut r = FrameReader::new(b, cfg);
        for m in &msgs {
            let got: T = r.read().await.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&got, m);
        }
        prop_assert!(matches!(r.read::<T>().await, Err(FrameError::Closed)));
        writer.await.unwrap();
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn request_roundtrips(msg in request()) {
        roundtrip_slice(&msg)?;
    }

    #[test]
    fn response_roundtrips(msg in response()) {
        roundtrip_slice(&msg)?;
    }

    #[test]
    fn tunnel_request_roundtrips(msg in tunnel_request()) {
        roundtrip_slice(&msg)?;
    }

    #[test]
    fn tunnel_response_roundtrips(msg in tunnel_response()) {
        roundtrip_slice(&msg)?;
    }

    #[test]
    fn requests_roundtrip_over_a_stream(msgs in proptest::collection::vec(request(), 1..6)) {
        roundtrip_stream(msgs)?;
    }

    #[test]
    fn responses_roundtrip_over_a_stream(msgs in proptest::collection::vec(response(), 1..6)) {
        roundtrip_stream(msgs)?;
    }

    #[test]
    fn tunnel_messages_roundtrip_over_a_stream(
        reqs in proptest::collection::vec(tunnel_request(), 1..4),
        resps in proptest::collection::vec(tunnel_response(), 1..4),
    ) {
        roundtrip_stream(reqs)?;
        roundtrip_stream(resps)?;
    }
}

#[test]
fn every_hand_built_variant_roundtrips() {
    for m in sample_requests() {
        roundtrip_slice(&m).unwrap();
    }
    for m in sample_responses() {
        roundtrip_slice(&m).unwrap();
    }
    for m in sample_tunnel_responses() {
        roundtrip_slice(&m).unwrap();
    }
    for m in [TunnelRequest::ConnectionTable, TunnelRequest::Health, TunnelRequest::ConfigDump] {
        roundtrip_slice(&m).unwrap();
    }
}

/// One request, one response on a "bidirectional stream" (two duplex pipes), as the transport
/// will run it.
#[tokio::test]
async fn request_response_exchange_with_free_functions() {
    let cfg = FrameConfig::default();
    let (mut daemon_send, mut cp_recv) = tokio::io::duplex(1024);
    let (mut cp_send, mut daemon_recv) = tokio::io::duplex(1024);
    let cp = tokio::spawn(async move {
        let req: Request = read_frame(&mut cp_recv, &cfg).await.unwrap();
        assert_eq!(req, Request::Ping);
        write_frame(&mut cp_send, &Response::Pong, &cfg).await.unwrap();
    });
    write_frame(&mut daemon_send, &Request::Ping, &cfg).await.unwrap();
    let resp: Response = read_frame(&mut daemon_recv, &cfg).await.unwrap();
    resp.expect_pong().unwrap();
    cp.await.unwrap();
}

/// Large DER blobs (bytes fields) near the frame limit round-trip, and the budget check in
/// `encode` does not refuse them.
#[test]
fn large_blobs_near_the_limit_roundtrip() {
    let cfg = FrameConfig::default();
    let big = Response::Svid(SvidMsg {
        spiffe_id: "spiffe://example.org/x".into(),
        chain_der: vec![vec![0xAB; 2 * 1024 * 1024], vec![0xCD; 2 * 1024 * 1024 - 200]],
        not_after_unix: 1,
    });
    let frame = encode(&big, &cfg).unwrap();
    assert!(frame.len() > 4 * 1024 * 1024 - 300);
    let back: Response = decode(&frame, &cfg).unwrap();
    assert_eq!(back, big);
}

/// The DER helpers also work with a self-describing format (config dumps, debugging).
#[test]
fn messages_also_roundtrip_through_json() {
    for m in sample_responses() {
        let json = serde_json::to_string(&m).unwrap();
        let back: Response = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }
}

#[test]
fn attest_request_debug_hides_the_token_secret() {
    let req = match &sample_requests()[0] {
        Request::Attest(a) => a.clone(),
        _ => unreachable!(),
    };
    let dbg = format!("{req:?}");
    assert!(dbg.contains("abc123"), "{dbg}");
    assert!(!dbg.contains("s3cr3t"), "{dbg}");
    assert_eq!(req.token_id(), "abc123");
}
