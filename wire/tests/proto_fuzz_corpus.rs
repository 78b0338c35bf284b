//! Runs the fuzz target's function (`proto::fuzzing::decode_frame_bytes`, the body of
//! `wire/fuzz/fuzz_targets/frame_decoder.rs`) over pseudo-random and mutated valid frames, so
//! the stable toolchain exercises what cargo-fuzz runs.

#[path = "proto_strategies.rs"]
mod strategies;

use riptides_wire::proto::fuzzing::decode_frame_bytes;
use riptides_wire::proto::messages::TunnelRequest;
use riptides_wire::proto::{encode, FrameConfig, PROTOCOL_VERSION};
use strategies::*;

/// xorshift64*: deterministic, dependency-free pseudo-random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn valid_frames() -> Vec<Vec<u8>> {
    let cfg = FrameConfig::default();
    let mut out = Vec::new();
    out.extend(sample_requests().iter().map(|m| encode(m, &cfg).unwrap()));
    out.extend(sample_responses().iter().map(|m| encode(m, &cfg).unwrap()));
    out.extend(sample_tunnel_responses().iter().map(|m| encode(m, &cfg).unwrap()));
    for m in [TunnelRequest::ConnectionTable, TunnelRequest::Health, TunnelRequest::ConfigDump] {
        out.push(encode(&m, &cfg).unwrap());
    }
    out
}

fn mutate(rng: &mut Rng, mut f: Vec<u8>) -> Vec<u8> {
    for _ in 0..=rng.below(4) {
        match rng.below(7) {
            // flip a bit
            0 if !f.is_empty() => {
                let i = rng.below(f.len());
                f[i] ^= 1 << rng.below(8);
            }
            // overwrite a byte with an interesting value
            1 if !f.is_empty() => {
                let i = rng.below(f.len());
                f[i] = [0, 1, 0x7F, 0x80, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF][rng.below(9)];
            }
            // truncate
            2 => {
                let n = rng.below(f.len() + 1);
                f.truncate(n);
            }
            // insert random bytes, keeping the prefix consistent half of the time
            3 => {
                let at = rng.below(f.len() + 1);
                let n = 1 + rng.below(8);
                let ins = rng.bytes(n);
                f.splice(at..at, ins);
                if rng.below(2) == 0 && f.len() >= 4 {
                    let len = (f.len() - 4) as u32;
                    f[..4].copy_from_slice(&len.to_be_bytes());
                }
            }
            // remove a range, fixing the prefix
            4 if f.len() > 6 => {
                let a = 6 + rng.below(f.len() - 6);
                let b = a + rng.below(f.len() - a + 1);
                f.drain(a..b);
                let len = (f.len() - 4) as u32;
                f[..4].copy_from_slice(&len.to_be_bytes());
            }
            // a varint inside the payload claims something huge
            5 if f.len() > 7 => {
                let at = 6 + rng.below(f.len() - 6);
                let mut huge = vec![0xFD];
                huge.extend_from_slice(&(rng.next() | 1 << 40).to_le_bytes());
                f.splice(at..at, huge);
                let len = (f.len() - 4) as u32;
                f[..4].copy_from_slice(&len.to_be_bytes());
            }
            // append another (or a partial) frame
            _ => {
                let extra = f.clone();
                let n = rng.below(extra.len() + 1);
                f.extend_from_slice(&extra[..n]);
            }
        }
    }
    f
}

#[test]
fn valid_frames_decode() {
    for f in valid_frames() {
        assert!(decode_frame_bytes(&f) >= 2, "a valid frame decodes with both configs");
    }
}

#[test]
fn random_inputs_do_not_panic() {
    let mut rng = Rng(0x5EED_0001);
    for i in 0..3000 {
        let len = rng.below(64);
        let mut data = rng.bytes(len);
        // Half of them get a plausible header so the payload decoder is reached.
        if i % 2 == 0 {
            let mut f = ((data.len() + 2) as u32).to_be_bytes().to_vec();
            f.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
            f.append(&mut data);
            data = f;
        }
        decode_frame_bytes(&data);
    }
}

#[test]
fn mutated_valid_frames_do_not_panic() {
    let mut rng = Rng(0x5EED_0002);
    let frames = valid_frames();
    let mut decoded = 0;
    for _ in 0..4000 {
        let base = frames[rng.below(frames.len())].clone();
        let m = mutate(&mut rng, base);
        decoded += decode_frame_bytes(&m);
    }
    // Sanity: the mutations are not all fatal, so the round-trip invariants got exercised too.
    assert!(decoded > 0);
}
