//! Running the `nft` binary with a deadline.
//!
//! The binary (rather than a netlink library) keeps the ruleset in the same language operators
//! read with `nft list table inet riptides`, and `nft -f -` gives atomic transactions for free.
//! `std::process` has no timeout, so the child is polled and killed when the deadline passes:
//! a wedged `nft` must not wedge the daemon's start or stop.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{CaptureConfig, CaptureError};

/// Cap on what is kept of `nft`'s stdout/stderr (a listing of our table is a few KiB).
const MAX_OUTPUT: u64 = 8 << 20;

/// Runs `nft ARGS` (inside `cfg.netns` if set), feeding `stdin`; returns stdout.
pub fn run(cfg: &CaptureConfig, args: &[&str], stdin: Option<&str>) -> Result<String, CaptureError> {
    let mut cmd = match &cfg.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(&cfg.nft);
            c
        }
        None => Command::new(&cfg.nft),
    };
    cmd.args(args).stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let what = format!("nft {}", args.join(" "));
    tracing::debug!(command = %what, netns = ?cfg.netns, "running nft");
    let mut child =
        cmd.spawn().map_err(|source| CaptureError::Spawn { program: cfg.nft.display().to_string(), source })?;

    // Feed and drain on helper threads so a full pipe cannot deadlock the deadline loop.
    let writer = match (stdin, child.stdin.take()) {
        (Some(text), Some(mut pipe)) => {
            let text = text.to_owned();
            Some(thread::spawn(move || {
                let _ = pipe.write_all(text.as_bytes());
            }))
        }
        _ => None,
    };
    let drain = |r: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(r) = r {
                let _ = r.take(MAX_OUTPUT).read_to_end(&mut out);
            }
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));

    let timeout = cfg.command_timeout();
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CaptureError::Timeout { command: what, timeout });
            }
            Ok(None) => thread::sleep(Duration::from_millis(2)),
            Err(source) => return Err(CaptureError::Spawn { program: cfg.nft.display().to_string(), source }),
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if status.success() {
        Ok(stdout)
    } else {
        Err(CaptureError::Nft { command: what, status: status.to_string(), stderr: stderr.trim().to_owned() })
    }
}

/// Applies a script atomically (`nft -f -`).
pub fn apply(cfg: &CaptureConfig, script: &str) -> Result<(), CaptureError> {
    tracing::trace!(table = %cfg.table, script, "applying nft script");
    run(cfg, &["-f", "-"], Some(script)).map(drop)
}
