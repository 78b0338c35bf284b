//! Feeds arbitrary bytes to the frame decoder (slice and stream paths) for every top-level
//! message type. The decoder must return an error on bad input, never panic, and never allocate
//! past the frame limit; `decode_frame_bytes` also asserts round-trip invariants on what decodes.
//! The same function runs under `cargo test` in `wire/tests/proto_fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = riptides_wire::proto::fuzzing::decode_frame_bytes(data);
});
