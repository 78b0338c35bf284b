//! Bad input to the frame decoder: every case ends in a typed error, never a panic, and
//! oversized frames are refused from the length prefix alone.

#[path = "proto_strategies.rs"]
mod strategies;

use std::time::Duration;

use proptest::prelude::*;
use riptides_wire::proto::messages::*;
use riptides_wire::proto::{
    decode, decode_body, encode, read_frame, read_frame_timeout, split_frame, FrameConfig, FrameError,
    DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};
use strategies::*;
use tokio::io::AsyncWriteExt;

fn cfg() -> FrameConfig {
    FrameConfig::default()
}

/// A frame with the given version and raw payload.
fn raw_frame(version: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = ((payload.len() + 2) as u32).to_be_bytes().to_vec();
    f.extend_from_slice(&version.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Arbitrary bytes: no panic, and anything that decodes is a well-formed single frame.
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        for res in [decode::<Request>(&data, &cfg()).map(|_| ()), decode::<Response>(&data, &cfg()).map(|_| ())] {
            if res.is_ok() {
                let len = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
                prop_assert_eq!(len + 4, data.len());
                prop_assert_eq!(u16::from_be_bytes([data[4], data[5]]), PROTOCOL_VERSION);
            }
        }
    }

    /// Arbitrary payloads behind a valid header: still no panic.
    #[test]
    fn arbitrary_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..300)) {
        let f = raw_frame(PROTOCOL_VERSION, &payload);
        let _ = decode::<Request>(&f, &cfg());
        let _ = decode::<Response>(&f, &cfg());
        let _ = decode::<TunnelRequest>(&f, &cfg());
        let _ = decode::<TunnelResponse>(&f, &cfg());
    }

    /// Every strict prefix of a valid frame is `Truncated`, for the slice and the stream decoder.
    #[test]
    fn truncated_frames_are_refused(msg in response(), cut in any::<prop::sample::Index>()) {
        let frame = encode(&msg, &cfg()).unwrap();
        let n = cut.index(frame.len()); // 0..len, never the whole frame
        let part = &frame[..n];
        prop_assert!(matches!(decode::<Response>(part, &cfg()), Err(FrameError::Truncated)));
        prop_assert!(matches!(split_frame(part, &cfg()), Ok(None)));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let streamed = rt.block_on(async { read_frame::<Response, _>(&mut &part[..], &cfg()).await });
        if n == 0 {
            prop_assert!(matches!(streamed, Err(FrameError::Closed)));
        } else {
            prop_assert!(matches!(streamed, Err(FrameError::Truncated)), "{:?}", streamed);
        }
    }

    /// Any version but ours is refused before the payload is looked at.
    #[test]
    fn wrong_versions_are_refused(msg in request(), version in any::<u16>()) {
        prop_assume!(version != PROTOCOL_VERSION);
        let mut frame = encode(&msg, &cfg()).unwrap();
        frame[4..6].copy_from_slice(&version.to_be_bytes());
        let res = decode::<Request>(&frame, &cfg());
        let ok = matches!(res, Err(FrameError::UnsupportedVersion { got }) if got == version);
        prop_assert!(ok, "{:?}", res);
    }

    /// Extra bytes inside the frame (prefix adjusted) and after it are refused.
    #[test]
    fn trailing_bytes_are_refused(msg in request(), extra in proptest::collection::vec(any::<u8>(), 1..8)) {
        let frame = encode(&msg, &cfg()).unwrap();
        let mut after = frame.clone();
        after.extend_from_slice(&extra);
        prop_assert!(matches!(decode::<Request>(&after, &cfg()), Err(FrameError::TrailingBytes)));

        let mut inside = frame.clone();
        inside.extend_from_slice(&extra);
        let len = (inside.len() - 4) as u32;
        inside[..4].copy_from_slice(&len.to_be_bytes());
        prop_assert!(matches!(decode::<Request>(&inside, &cfg()), Err(FrameError::TrailingBytes)));
    }

    /// Any prefix above the limit is `TooLarge` from the four prefix bytes alone.
    #[test]
    fn oversized_prefixes_are_refused(len in (DEFAULT_MAX_FRAME as u32 + 1)..=u32::MAX) {
        let res = decode::<Request>(&len.to_be_bytes(), &cfg());
        let ok = matches!(res, Err(FrameError::TooLarge { len: l, max }) if l == u64::from(len) && max == DEFAULT_MAX_FRAME);
        prop_assert!(ok, "{:?}", res);
    }
}

#[test]
fn max_prefix_is_too_large_immediately() {
    let res = decode::<Request>(&[0xFF, 0xFF, 0xFF, 0xFF], &cfg());
    assert!(matches!(res, Err(FrameError::TooLarge { len: 0xFFFF_FFFF, max: DEFAULT_MAX_FRAME })), "{res:?}");
    assert!(matches!(split_frame(&[0xFF, 0xFF, 0xFF, 0xFF], &cfg()), Err(FrameError::TooLarge { .. })));
}

/// The stream reader refuses an oversized prefix without waiting for (or reading) the body: the
/// writer stays open and sends nothing more, yet the read returns at once.
#[tokio::test]
async fn stream_reader_refuses_oversized_prefix_without_reading_on() {
    let (mut w, mut r) = tokio::io::duplex(64);
    w.write_all(&[0xFF, 0xFF, 0xFF, 0xFF]).await.unwrap();
    let res = tokio::time::timeout(Duration::from_secs(5), read_frame::<Request, _>(&mut r, &cfg()))
        .await
        .expect("must not wait for the body");
    assert!(matches!(res, Err(FrameError::TooLarge { len: 0xFFFF_FFFF, max: DEFAULT_MAX_FRAME })), "{res:?}");
    drop(w);
}

#[test]
fn configurable_limit_applies_to_both_directions() {
    let small = FrameConfig::with_max_frame(100);
    let big = Request::RenewDaemonSvid { csr_der: vec![7; 200] };
    assert!(matches!(encode(&big, &small), Err(FrameError::TooLarge { max: 100, .. })));
    let frame = encode(&big, &cfg()).unwrap();
    assert!(matches!(decode::<Request>(&frame, &small), Err(FrameError::TooLarge { max: 100, .. })));
    // Exactly at the limit is fine.
    let exact = FrameConfig::with_max_frame(frame.len() - 4);
    assert_eq!(decode::<Request>(&frame, &exact).unwrap(), big);
}

#[test]
fn frames_too_short_for_a_version_are_truncated() {
    for f in [&[0u8, 0, 0, 0][..], &[0, 0, 0, 1, 0x00][..]] {
        assert!(matches!(decode::<Request>(f, &cfg()), Err(FrameError::Truncated)), "{f:?}");
    }
    assert!(matches!(decode::<Request>(&[], &cfg()), Err(FrameError::Truncated)));
    assert!(matches!(decode_body::<Request>(&[0], &cfg()), Err(FrameError::Truncated)));
}

#[test]
fn undecodable_payloads_are_decode_errors() {
    // Variant index far past the last Request variant.
    let f = raw_frame(PROTOCOL_VERSION, &[200]);
    assert!(matches!(decode::<Request>(&f, &cfg()), Err(FrameError::Decode(_))));
    // Empty payload.
    let f = raw_frame(PROTOCOL_VERSION, &[]);
    assert!(matches!(decode::<Response>(&f, &cfg()), Err(FrameError::Decode(_))));
    // Invalid UTF-8 in a string (Request::SignWorkload: variant 2, workload_id len 2).
    let f = raw_frame(PROTOCOL_VERSION, &[2, 2, 0xFF, 0xFE, 0, 0]);
    assert!(matches!(decode::<Request>(&f, &cfg()), Err(FrameError::Decode(_))));
}

/// A small frame whose byte string claims (varint u64) 2^40 bytes is refused by the decode
/// budget instead of attempting the allocation.
#[test]
fn huge_inner_length_claims_are_refused() {
    // Request::RenewDaemonSvid = variant 1; csr_der length as bincode varint: 0xFD + u64 LE.
    let mut payload = vec![1u8, 0xFD];
    payload.extend_from_slice(&(1u64 << 40).to_le_bytes());
    payload.extend_from_slice(&[0; 16]);
    let f = raw_frame(PROTOCOL_VERSION, &payload);
    let res = decode::<Request>(&f, &cfg());
    assert!(matches!(&res, Err(FrameError::Decode(m)) if m.contains("budget")), "{res:?}");
    // The same for a Vec<Vec<u8>> (certificate chain) claiming u64::MAX elements.
    let mut payload = vec![1u8, 0, 0xFD];
    payload.extend_from_slice(&u64::MAX.to_le_bytes());
    let f = raw_frame(PROTOCOL_VERSION, &payload);
    assert!(decode::<Response>(&f, &cfg()).is_err());
}

/// `encode` never produces a frame the receiver (same config) would refuse: a message that fits
/// the frame limit but whose decoded size exceeds the decode budget is refused at the sender.
#[test]
fn encode_refuses_what_the_receiver_could_not_decode() {
    let small = FrameConfig::with_max_frame(64 * 1024);
    // 20k empty label pairs: ~40 KB on the wire, but each empty string claims its 8-byte length.
    let host = HostInfo { labels: vec![(String::new(), String::new()); 20_000], ..HostInfo::default() };
    let msg = Request::Attest(AttestRequest { token: "a.b".into(), csr_der: vec![], host });
    let plain = bincode::serde::encode_to_vec(&msg, bincode::config::standard()).unwrap();
    assert!(plain.len() + 2 <= small.max_frame, "fits the frame limit: {}", plain.len());
    let res = encode(&msg, &small);
    assert!(matches!(&res, Err(FrameError::Encode(m)) if m.contains("budget")), "{res:?}");
    // Fewer labels fit both the frame and the budget.
    let host = HostInfo { labels: vec![(String::new(), String::new()); 1_000], ..HostInfo::default() };
    let msg = Request::Attest(AttestRequest { token: "a.b".into(), csr_der: vec![], host });
    let frame = encode(&msg, &small).unwrap();
    assert_eq!(decode::<Request>(&frame, &small).unwrap(), msg);
}

#[test]
fn wrong_message_type_is_unexpected() {
    let frame = encode(&Response::Pong, &cfg()).unwrap();
    let resp: Response = decode(&frame, &cfg()).unwrap();
    match resp.expect_svid() {
        Err(FrameError::UnexpectedMessage { expected: "Svid", got: "Pong" }) => {}
        other => panic!("{other:?}"),
    }
    let err = Response::Error(ProtoError::new(ErrorCode::Unauthorized, "not scoped to this daemon"));
    match err.expect_svid() {
        Err(FrameError::Remote(e)) => assert_eq!(e.code, ErrorCode::Unauthorized),
        other => panic!("{other:?}"),
    }
    match Response::Ack.expect_policy() {
        Err(e @ FrameError::UnexpectedMessage { .. }) => assert!(!e.is_framing()),
        other => panic!("{other:?}"),
    }
    match TunnelResponse::ConfigDump("{}".into()).expect_health() {
        Err(FrameError::UnexpectedMessage { expected: "Health", got: "ConfigDump" }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(TunnelResponse::ConfigDump("{}".into()).expect_config_dump().unwrap(), "{}");
}

#[tokio::test]
async fn read_timeout_fires_when_nothing_arrives() {
    let (_w, mut r) = tokio::io::duplex(64);
    let res = read_frame_timeout::<Request, _>(&mut r, &cfg(), Duration::from_millis(50)).await;
    assert!(matches!(res, Err(FrameError::Timeout(_))), "{res:?}");
}

/// A peer that announces a frame and stops sending mid-way and closes: `Truncated`.
#[tokio::test]
async fn stream_closed_mid_frame_is_truncated() {
    let frame = encode(&sample_requests()[0], &cfg()).unwrap();
    let (mut w, mut r) = tokio::io::duplex(1 << 16);
    w.write_all(&frame[..frame.len() / 2]).await.unwrap();
    drop(w);
    let res = read_frame::<Request, _>(&mut r, &cfg()).await;
    assert!(matches!(res, Err(FrameError::Truncated)), "{res:?}");
}
