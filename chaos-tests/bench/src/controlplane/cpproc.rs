//! The control plane under test, run as the real `riptides-controlplane` binary in its own
//! process, so its peak RSS (VmHWM) is the control plane's alone.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::sys;

/// Fixed loopback ports, chosen once per session so a restart comes back on the same ones.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub api: SocketAddr,
    pub quic: SocketAddr,
    pub tunnel: SocketAddr,
    pub health: SocketAddr,
}

impl Ports {
    pub fn pick() -> anyhow::Result<Self> {
        let tcp = || -> anyhow::Result<SocketAddr> { Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?) };
        let udp = UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
        Ok(Ports { api: tcp()?, quic: udp, tunnel: tcp()?, health: tcp()? })
    }
}

/// Finds `riptides-controlplane` next to this executable (`target/<profile>/`), or where
/// `--cp-bin` says.
pub fn locate(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_owned());
        }
        bail!("--cp-bin {} does not exist", p.display());
    }
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut dirs = Vec::new();
    if let Some(d) = exe.parent() {
        dirs.push(d.to_owned());
        // Test binaries live in target/<profile>/deps.
        if let Some(up) = d.parent() {
            dirs.push(up.to_owned());
        }
    }
    for d in &dirs {
        let c = d.join("riptides-controlplane");
        if c.is_file() {
            return Ok(c);
        }
    }
    let profile = if cfg!(debug_assertions) { "" } else { " --release" };
    bail!(
        "the control-plane binary riptides-controlplane was not found next to {} (looked in {}); build it with \
         `cargo build{profile} -p riptides-cp --bin riptides-controlplane` or pass --cp-bin PATH",
        exe.display(),
        dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
    )
}

pub struct CpProcess {
    child: Child,
    pub pin: [u8; 32],
    pub log: PathBuf,
    /// When the binary printed its listening line (listeners bound, actor tree started).
    pub ready_at: Instant,
    /// From spawn to that line.
    pub startup: Duration,
}

impl CpProcess {
    /// Starts the binary and waits (up to 120 s) for its `CA pin sha256:...` line. Its stderr
    /// goes on to `log` (a thread drains it, so the child never blocks on a full pipe).
    pub fn spawn(bin: &Path, data_dir: &Path, ports: &Ports, log: &Path, rust_log: &str) -> anyhow::Result<Self> {
        Self::spawn_with(bin, data_dir, ports, log, rust_log, &[], &[])
    }

    /// [`CpProcess::spawn`] with extra flags and environment (the etcd-backed replicas).
    pub fn spawn_with(
        bin: &Path,
        data_dir: &Path,
        ports: &Ports,
        log: &Path,
        rust_log: &str,
        extra_args: &[String],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let spawned = Instant::now();
        let mut child = Command::new(bin)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--trust-domain", super::TRUST_DOMAIN])
            .arg("--api-addr")
            .arg(ports.api.to_string())
            .arg("--quic-addr")
            .arg(ports.quic.to_string())
            .arg("--tunnel-addr")
            .arg(ports.tunnel.to_string())
            .arg("--health-addr")
            .arg(ports.health.to_string())
            .args(extra_args)
            .envs(env.iter().copied())
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stderr = child.stderr.take().expect("piped");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(file, "{line}");
                if line.contains("CA pin ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line);
                    }
                }
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                bail!(
                    "riptides-controlplane did not print its CA pin within 120 s (exit status {status:?}); see {}",
                    log.display()
                );
            }
        };
        let pin_text =
            line.split("CA pin ").nth(1).and_then(|r| r.split_whitespace().next()).context("no pin after `CA pin `")?;
        let pin = riptides_wire::tls::parse_pin(pin_text).map_err(|e| anyhow::anyhow!("bad pin {pin_text:?}: {e}"))?;
        Ok(CpProcess { child, pin, log: log.to_owned(), ready_at: Instant::now(), startup: spawned.elapsed() })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stats(&self) -> sys::ProcStats {
        sys::proc_stats(self.pid()).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit (SIGKILL after `grace`). Returns how long the orderly
    /// shutdown took, or an error if it had to be killed.
    pub async fn terminate(&mut self, grace: Duration) -> anyhow::Result<Duration> {
        let t = Instant::now();
        if self.child.try_wait()?.is_some() {
            bail!("the control plane had already exited; see {}", self.log.display());
        }
        sys::signal(self.pid(), sys::SIGTERM)?;
        while t.elapsed() < grace {
            if let Some(st) = self.child.try_wait()? {
                if !st.success() {
                    tracing::warn!(status = %st, "control plane exited with a failure status after SIGTERM");
                }
                return Ok(t.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = sys::signal(self.pid(), sys::SIGKILL);
        let _ = self.child.wait();
        bail!("the control plane did not exit within {grace:?} of SIGTERM and was killed; see {}", self.log.display())
    }

    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for CpProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = sys::signal(self.pid(), sys::SIGKILL);
            let _ = self.child.wait();
        }
    }
}
