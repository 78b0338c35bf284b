//! The workloads: a sink/echo server (`__server`, run on node-b as `rtb-server`) and a load
//! generator (`__client`, run on node-a as `rtb-client`). Both are plain TCP programs; neither
//! knows whether a daemon, stunnel or nothing sits between them.
//!
//! Protocol: the client opens with a 5-byte header, a mode byte and a little-endian u32 size.
//! - `S` (sink): the server reads until end of stream, then answers the byte count (u64 LE).
//! - `E` (echo): the server reads `size` bytes and writes them back, until end of stream.
//!
//! The client always speaks first, so the userspace dataplane never waits for first bytes.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub const MODE_SINK: u8 = b'S';
pub const MODE_ECHO: u8 = b'E';

/// One measurement the load generator runs, passed as JSON on its command line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum Job {
    /// `conns` connections each writing as fast as they can for `secs`.
    Bulk { addr: SocketAddr, conns: usize, secs: f64 },
    /// One connection, `count` timed round trips of `size` bytes after `warmup` untimed ones.
    Latency { addr: SocketAddr, size: usize, count: usize, warmup: usize },
    /// `concurrency` workers opening connections (one 1-byte echo each) for `secs`.
    ConnRate { addr: SocketAddr, concurrency: usize, secs: f64 },
    /// Open `n` connections (one 1-byte echo each, so they are established end to end), print
    /// `READY <json>` and hold them until killed. Stops at the first failure.
    Idle { addr: SocketAddr, n: usize, parallel: usize },
}

/// What a job measured (fields unused by a job stay zero).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobResult {
    pub bytes: u64,
    pub secs: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub count: u64,
    pub failures: u64,
    pub first_error: Option<String>,
}

fn header(mode: u8, size: u32) -> [u8; 5] {
    let s = size.to_le_bytes();
    [mode, s[0], s[1], s[2], s[3]]
}

fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Runs a job in this process (the load generator) and prints its result as one JSON line.
pub fn client_main(job_json: &str) -> Result<()> {
    let job: Job = serde_json::from_str(job_json).context("job JSON")?;
    let r = match job {
        Job::Bulk { addr, conns, secs } => bulk(addr, conns, secs)?,
        Job::Latency { addr, size, count, warmup } => latency(addr, size, count, warmup)?,
        Job::ConnRate { addr, concurrency, secs } => conn_rate(addr, concurrency, secs)?,
        Job::Idle { addr, n, parallel } => {
            let (r, held) = idle(addr, n, parallel)?;
            println!("READY {}", serde_json::to_string(&r)?);
            std::io::stdout().flush()?;
            // Hold the connections until the orchestrator kills us.
            loop {
                std::thread::sleep(Duration::from_secs(3600));
                let _ = &held;
            }
        }
    };
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

fn bulk(addr: SocketAddr, conns: usize, secs: f64) -> Result<JobResult> {
    let barrier = Arc::new(Barrier::new(conns + 1));
    let dur = Duration::from_secs_f64(secs);
    let mut handles = Vec::new();
    for _ in 0..conns {
        let barrier = barrier.clone();
        handles.push(std::thread::spawn(move || -> Result<(u64, Instant)> {
            let s = connect(addr);
            barrier.wait();
            let mut s = s?;
            s.write_all(&header(MODE_SINK, 0))?;
            let start = Instant::now();
            let buf = vec![0x5au8; 128 * 1024];
            while start.elapsed() < dur {
                s.write_all(&buf).context("writing")?;
            }
            s.shutdown(Shutdown::Write)?;
            s.set_read_timeout(Some(Duration::from_secs(60)))?;
            let mut c = [0u8; 8];
            s.read_exact(&mut c).context("reading the sink's byte count")?;
            Ok((u64::from_le_bytes(c), Instant::now()))
        }));
    }
    barrier.wait();
    let start = Instant::now();
    let mut bytes = 0;
    let mut end = start;
    for h in handles {
        let (b, e) = h.join().map_err(|_| anyhow::anyhow!("bulk thread panicked"))??;
        bytes += b;
        end = end.max(e);
    }
    Ok(JobResult { bytes, secs: (end - start).as_secs_f64(), count: conns as u64, ..Default::default() })
}

fn latency(addr: SocketAddr, size: usize, count: usize, warmup: usize) -> Result<JobResult> {
    let mut s = connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(&header(MODE_ECHO, size as u32))?;
    let out = vec![0x42u8; size];
    let mut back = vec![0u8; size];
    let mut samples = Vec::with_capacity(count);
    let start = Instant::now();
    for i in 0..warmup + count {
        let t = Instant::now();
        s.write_all(&out)?;
        s.read_exact(&mut back).context("reading the echo")?;
        if i >= warmup {
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    Ok(JobResult {
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        count: count as u64,
        secs: start.elapsed().as_secs_f64(),
        ..Default::default()
    })
}

fn one_echo(addr: SocketAddr) -> Result<TcpStream> {
    let mut s = connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let h = header(MODE_ECHO, 1);
    s.write_all(&[h[0], h[1], h[2], h[3], h[4], 0x31])?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).context("reading the 1-byte echo")?;
    if b[0] != 0x31 {
        bail!("wrong echo byte {:#x}", b[0]);
    }
    Ok(s)
}

fn conn_rate(addr: SocketAddr, concurrency: usize, secs: f64) -> Result<JobResult> {
    let count = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..concurrency)
        .map(|_| {
            let (count, failures, first_error) = (count.clone(), failures.clone(), first_error.clone());
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    match one_echo(addr) {
                        Ok(s) => {
                            drop(s);
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            first_error.lock().unwrap().get_or_insert_with(|| format!("{e:#}"));
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let first_error = first_error.lock().unwrap().clone();
    Ok(JobResult {
        secs: start.elapsed().as_secs_f64(),
        count: count.load(Ordering::Relaxed),
        failures: failures.load(Ordering::Relaxed),
        first_error,
        ..Default::default()
    })
}

fn idle(addr: SocketAddr, n: usize, parallel: usize) -> Result<(JobResult, Vec<TcpStream>)> {
    let held = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let start = Instant::now();
    let handles: Vec<_> = (0..parallel.max(1))
        .map(|_| {
            let (held, next, stop, failures, first_error) =
                (held.clone(), next.clone(), stop.clone(), failures.clone(), first_error.clone());
            std::thread::spawn(move || loop {
                if stop.load(Ordering::Relaxed) || next.fetch_add(1, Ordering::Relaxed) >= n {
                    return;
                }
                match one_echo(addr) {
                    Ok(s) => held.lock().unwrap().push(s),
                    Err(e) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        first_error.lock().unwrap().get_or_insert_with(|| format!("{e:#}"));
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let held = std::mem::take(&mut *held.lock().unwrap());
    let r = JobResult {
        secs: start.elapsed().as_secs_f64(),
        count: held.len() as u64,
        failures: failures.load(Ordering::Relaxed),
        first_error: first_error.lock().unwrap().clone(),
        ..Default::default()
    };
    Ok((r, held))
}

/// The sink/echo server on `ports` (all addresses), until killed.
pub fn server_main(ports: &[u16]) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        for &port in ports {
            let l = tokio::net::TcpListener::bind(("0.0.0.0", port))
                .await
                .with_context(|| format!("binding port {port}"))?;
            tokio::spawn(async move {
                loop {
                    match l.accept().await {
                        Ok((s, _)) => {
                            tokio::spawn(async move {
                                let _ = serve(s).await;
                            });
                        }
                        Err(e) => {
                            eprintln!("accept on {port}: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            });
        }
        std::future::pending::<()>().await;
        Ok(())
    })
}

async fn serve(mut s: tokio::net::TcpStream) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.set_nodelay(true)?;
    let mut h = [0u8; 5];
    s.read_exact(&mut h).await?;
    let size = u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize;
    match h[0] {
        MODE_SINK => {
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            s.write_all(&total.to_le_bytes()).await?;
            s.shutdown().await
        }
        MODE_ECHO => {
            let mut buf = vec![0u8; size.clamp(1, 1 << 20)];
            loop {
                match s.read_exact(&mut buf).await {
                    Ok(_) => s.write_all(&buf).await?,
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        }
        _ => Ok(()),
    }
}
