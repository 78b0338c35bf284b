//! The decoder's allocations stay within the frame limit, measured with a counting global
//! allocator (this test binary only). Tracking is per thread, so parallel tests do not mix.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use riptides_wire::proto::messages::{Request, Response};
use riptides_wire::proto::{decode, read_frame, FrameConfig, FrameError, DEFAULT_MAX_FRAME, PROTOCOL_VERSION};

struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: the allocator may run during thread teardown.
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns the largest single allocation it made on this thread.
fn largest_alloc<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    let r = f();
    TRACKING.with(|t| t.set(false));
    (r, LARGEST.with(|l| l.get()))
}

fn raw_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = ((payload.len() + 2) as u32).to_be_bytes().to_vec();
    f.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn varint_u64(v: u64) -> Vec<u8> {
    let mut out = vec![0xFD];
    out.extend_from_slice(&v.to_le_bytes());
    out
}

#[test]
fn max_prefix_allocates_nothing_big() {
    let cfg = FrameConfig::default();
    let (res, largest) = largest_alloc(|| decode::<Request>(&[0xFF; 4], &cfg));
    assert!(matches!(res, Err(FrameError::TooLarge { .. })));
    assert!(largest < 1024, "largest allocation {largest}");
}

/// Small frames whose length fields claim far more than the frame holds: the decoder allocates
/// no more than the frame limit, whatever they claim.
#[test]
fn inner_length_claims_are_bounded_by_the_limit() {
    let cfg = FrameConfig::default();
    let claims = [u64::MAX, 1 << 40, (DEFAULT_MAX_FRAME as u64) * 2, DEFAULT_MAX_FRAME as u64 - 100];
    for claim in claims {
        // RenewDaemonSvid { csr_der } (variant 1) claiming `claim` bytes.
        let mut p = vec![1u8];
        p.extend(varint_u64(claim));
        let f = raw_frame(&p);
        let (res, largest) = largest_alloc(|| decode::<Request>(&f, &cfg));
        assert!(res.is_err());
        assert!(largest <= DEFAULT_MAX_FRAME, "claim {claim}: largest allocation {largest}");

        // Svid { spiffe_id: "", chain_der: [claim elements] } (variant 1).
        let mut p = vec![1u8, 0];
        p.extend(varint_u64(claim));
        let f = raw_frame(&p);
        let (res, largest) = largest_alloc(|| decode::<Response>(&f, &cfg));
        assert!(res.is_err());
        assert!(largest <= DEFAULT_MAX_FRAME, "claim {claim}: largest allocation {largest}");

        // Attest with a token string claiming `claim` bytes.
        let mut p = vec![0u8];
        p.extend(varint_u64(claim));
        let f = raw_frame(&p);
        let (res, largest) = largest_alloc(|| decode::<Request>(&f, &cfg));
        assert!(res.is_err());
        assert!(largest <= DEFAULT_MAX_FRAME, "claim {claim}: largest allocation {largest}");
    }
}

/// A peer that announces a maximal frame and then sends a few bytes costs the initial buffer,
/// not the announced size.
#[test]
fn stream_reader_allocates_as_bytes_arrive() {
    let cfg = FrameConfig::default();
    let mut data = (DEFAULT_MAX_FRAME as u32).to_be_bytes().to_vec();
    data.extend_from_slice(&[0; 10]);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let (res, largest) = largest_alloc(|| rt.block_on(read_frame::<Request, _>(&mut &data[..], &cfg)));
    assert!(matches!(res, Err(FrameError::Truncated)), "{res:?}");
    assert!(largest <= 64 * 1024, "largest allocation {largest}");
}
