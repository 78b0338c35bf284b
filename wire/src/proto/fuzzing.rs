//! The entry point shared by the cargo-fuzz target (`wire/fuzz/fuzz_targets/frame_decoder.rs`)
//! and the corpus test (`wire/tests/proto_fuzz_corpus.rs`), so that a stable-toolchain `cargo
//! test` runs exactly what the fuzzer runs.
//!
//! It panics only when an invariant of the codec is broken (that is what a fuzzer detects); on
//! bad input it must return normally.

use std::fmt::Debug;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::messages::{Request, Response, TunnelRequest, TunnelResponse};
use super::{decode, decode_body, encode, read_frame, split_frame, FrameConfig, FrameError};

/// Feeds `data` to every decoder (slice and stream) for every top-level message type, with the
/// default limit and a small one. Returns how many of those decodes succeeded.
///
/// Invariants checked (panics if broken): a successful decode re-encodes to a frame that decodes
/// to the same message; the stream reader agrees with the slice decoder on the first frame;
/// an `Ok` never comes from a frame larger than the limit.
pub fn decode_frame_bytes(data: &[u8]) -> usize {
    let mut ok = 0;
    for cfg in [FrameConfig::default(), FrameConfig::with_max_frame(1024)] {
        ok += check::<Request>(data, &cfg);
        ok += check::<Response>(data, &cfg);
        ok += check::<TunnelRequest>(data, &cfg);
        ok += check::<TunnelResponse>(data, &cfg);
    }
    ok
}

fn check<T>(data: &[u8], cfg: &FrameConfig) -> usize
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let whole = decode::<T>(data, cfg);
    let first = split_frame(data, cfg);
    let streamed = poll_once(read_frame::<T, _>(&mut &data[..], cfg));

    // The stream reader sees the first frame only; it must agree with the slice decoder on it.
    match (&first, &streamed) {
        (Ok(Some((body, _))), Some(Ok(msg))) => {
            let sliced = decode_body::<T>(body, cfg).expect("stream decoded a frame the slice decoder refuses");
            assert_eq!(&sliced, msg, "stream and slice decoders disagree");
        }
        (Ok(Some((body, _))), Some(Err(_))) => {
            assert!(decode_body::<T>(body, cfg).is_err(), "stream refused a frame the slice decoder accepts");
        }
        (Ok(None), Some(res)) => {
            assert!(
                matches!(res, Err(FrameError::Truncated | FrameError::Closed)),
                "incomplete input accepted: {res:?}"
            );
        }
        (Err(_), Some(res)) => assert!(res.is_err(), "stream accepted a frame whose prefix is refused"),
        (_, None) => panic!("reading from a byte slice must not return Pending"),
    }

    match whole {
        Ok(msg) => {
            assert!(data.len() - super::PREFIX_LEN <= cfg.effective_max(), "accepted an oversized frame");
            let frame = encode(&msg, cfg).expect("a decoded message must re-encode within the limit");
            let again = decode::<T>(&frame, cfg).expect("a re-encoded message must decode");
            assert_eq!(again, msg, "round trip changed the message");
            1
        }
        Err(_) => 0,
    }
}

/// Polls a future once with a no-op waker. Reading from a `&[u8]` never waits, so the codec's
/// futures complete on the first poll; `None` would mean they wait where they must not.
fn poll_once<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}
