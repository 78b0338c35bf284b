//! Named network namespaces owned by this process.
//!
//! Names follow `rt-<prefix>-<pid>-<counter>` so that [`cleanup_stale`] can
//! recognise namespaces left behind by a crashed earlier run (the pid is no
//! longer alive) without touching anything else.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};
use crate::process::{run_host, ChildGuard, NsCommand, Signal};
use crate::sys;

/// Where iproute2 keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

static COUNTER: AtomicU64 = AtomicU64::new(0);
/// Namespaces created (and not yet deleted) by this process.
static LIVE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
/// `ip netns add/del` mount /run/netns on first use; serialise them so that
/// parallel tests in one process do not race on that.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Check that namespaces can be made here: running as root and `ip` present.
pub fn check_available() -> Result<()> {
    if sys::geteuid() != 0 {
        return Err(Error::Unavailable("not running as root".into()));
    }
    run_host("ip", ["-V"]).map_err(|e| Error::Unavailable(format!("`ip` not usable: {e}")))?;
    Ok(())
}

/// Names of all named network namespaces (`/run/netns`).
pub fn list_namespaces() -> Result<Vec<String>> {
    let mut out = Vec::new();
    match std::fs::read_dir(NETNS_DIR) {
        Ok(rd) => {
            for e in rd {
                let e = e.ctx(|| format!("reading {NETNS_DIR}"))?;
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("reading {NETNS_DIR}"), e)),
    }
    out.sort();
    Ok(out)
}

fn validate_prefix(prefix: &str) -> Result<()> {
    let ok = !prefix.is_empty() && prefix.len() <= 40 && prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("namespace prefix {prefix:?} must be 1-40 chars of [A-Za-z0-9_]")))
    }
}

/// Parse `rt-<prefix>-<pid>-<counter>`; returns (prefix, pid).
fn parse_name(name: &str) -> Option<(&str, i32)> {
    let rest = name.strip_prefix("rt-")?;
    let (rest, counter) = rest.rsplit_once('-')?;
    let (prefix, pid) = rest.rsplit_once('-')?;
    counter.parse::<u64>().ok()?;
    let pid = pid.parse::<i32>().ok()?;
    validate_prefix(prefix).ok()?;
    Some((prefix, pid))
}

/// Whether `name` was made by this harness for `prefix` (a topology prefix
/// `p` also owns the `p_<role>` names it makes).
fn matches_prefix(name_prefix: &str, prefix: &str) -> bool {
    name_prefix == prefix || name_prefix.strip_prefix(prefix).is_some_and(|r| r.starts_with('_'))
}

/// Names of this harness's namespaces for `prefix` (any pid).
pub fn harness_namespaces(prefix: &str) -> Result<Vec<String>> {
    Ok(list_namespaces()?
        .into_iter()
        .filter(|n| parse_name(n).is_some_and(|(p, _)| matches_prefix(p, prefix)))
        .collect())
}

/// Remove namespaces left by a crashed earlier run of this harness: only
/// names of the form `rt-<prefix>[_role]-<pid>-<n>` whose pid is no longer
/// alive. Processes still inside them are killed first. Returns the names
/// removed. (A reused pid makes a stale namespace look alive; it is then
/// left alone, which is the safe side.)
pub fn cleanup_stale(prefix: &str) -> Result<Vec<String>> {
    validate_prefix(prefix)?;
    let mut removed = Vec::new();
    for name in list_namespaces()? {
        let Some((p, pid)) = parse_name(&name) else {
            continue;
        };
        if !matches_prefix(p, prefix) || pid == std::process::id() as i32 || sys::pid_alive(pid) {
            continue;
        }
        kill_all_in(&name);
        let _g = lock(&NETNS_LOCK);
        run_host("ip", ["netns", "del", &name])?;
        removed.push(name);
    }
    if !removed.is_empty() {
        tracing::info!(?removed, "removed stale namespaces");
    }
    Ok(removed)
}

/// Kill and delete every namespace this process still owns. Meant for a
/// Ctrl-C / fatal-error path (`riptides demo`) where destructors will not
/// run; later drops of the [`Namespace`] values then find nothing to do.
pub fn cleanup_owned() -> Vec<String> {
    let names: Vec<String> = lock(&LIVE).iter().cloned().collect();
    for name in &names {
        delete_ns(name);
    }
    names
}

fn pids_in(name: &str) -> Vec<i32> {
    run_host("ip", ["netns", "pids", name])
        .map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

fn kill_all_in(name: &str) {
    for pid in pids_in(name) {
        let _ = sys::kill(pid, Signal::Kill as i32);
    }
}

fn delete_ns(name: &str) {
    kill_all_in(name);
    let _g = lock(&NETNS_LOCK);
    let path = PathBuf::from(NETNS_DIR).join(name);
    if path.exists() {
        if let Err(e) = run_host("ip", ["netns", "del", name]) {
            tracing::warn!(%name, error = %e, "deleting namespace failed");
            eprintln!("riptides-chaos-tests: deleting namespace {name} failed: {e}");
        }
    }
    lock(&LIVE).remove(name);
}

/// A named network namespace with `lo` up. Dropping it kills every process
/// inside and deletes it (destructors also run while a panic unwinds).
#[derive(Debug)]
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Create `rt-<prefix>-<pid>-<counter>` and bring `lo` up.
    pub fn create(prefix: &str) -> Result<Namespace> {
        validate_prefix(prefix)?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("rt-{prefix}-{}-{n}", std::process::id());
        {
            let _g = lock(&NETNS_LOCK);
            run_host("ip", ["netns", "add", &name])?;
            lock(&LIVE).insert(name.clone());
        }
        let ns = Namespace { name };
        ns.ip(["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.name)
    }

    /// A command to run inside (`ip netns exec <name> program ...`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> NsCommand {
        NsCommand::new(&self.name, program)
    }

    /// Run `program args` inside and wait (default deadline); non-zero exit
    /// is an error with the command line and stderr.
    pub fn exec<I, S>(&self, program: &str, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command(program).args(args).output()
    }

    /// Start `program args` inside; the guard kills and reaps it on drop.
    pub fn spawn<I, S>(&self, program: &str, args: I) -> Result<ChildGuard>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command(program).args(args).spawn()
    }

    /// `ip -n <name> args...`, returning stdout.
    pub fn ip<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec!["-n".into(), self.name.clone().into()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        run_host("ip", all)
    }

    /// Apply an nftables script inside (`nft -f -`), atomically.
    pub fn nft(&self, script: &str) -> Result<()> {
        self.command("nft").args(["-f", "-"]).stdin(script).output()?;
        Ok(())
    }

    /// `nft args...` inside, returning stdout.
    pub fn nft_cmd<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command("nft").args(args).stdout_string()
    }

    /// Write a `/proc/sys/net/...` value for this namespace, e.g.
    /// `sysctl("net.ipv4.ip_forward", "1")`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let v = value.to_string();
        let p2 = path.clone();
        self.run_in(move || std::fs::write(&p2, v))?.ctx(|| format!("writing {path} in namespace {}", self.name))
    }

    /// Pids of all processes inside.
    pub fn pids(&self) -> Vec<i32> {
        pids_in(&self.name)
    }

    /// SIGKILL every process inside.
    pub fn kill_all(&self) {
        kill_all_in(&self.name)
    }

    /// Run `f` on a dedicated thread that has entered this namespace with
    /// `setns(2)`; sockets it creates belong to the namespace and stay there
    /// when returned to (and used from) other threads. A panic in `f` is
    /// re-raised here. `f` should bound its own blocking with timeouts.
    pub fn run_in<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let file = self.open()?;
        let name = self.name.clone();
        thread::scope(|s| {
            let h = thread::Builder::new()
                .name(format!("ns-{}", self.name))
                .spawn_scoped(s, move || -> Result<R> {
                    sys::setns(file.as_raw_fd(), sys::CLONE_NEWNET).ctx(|| format!("setns into {name}"))?;
                    drop(file);
                    Ok(f())
                })
                .ctx(|| "spawning a namespace thread".to_string())?;
            match h.join() {
                Ok(r) => r,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }

    /// Like [`run_in`](Self::run_in) but detached: for long-lived servers
    /// (a Rust echo server, a tokio runtime) living in the namespace.
    pub fn spawn_thread<F, R>(&self, f: F) -> Result<thread::JoinHandle<Result<R>>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let file = self.open()?;
        let name = self.name.clone();
        thread::Builder::new()
            .name(format!("ns-{}", self.name))
            .spawn(move || -> Result<R> {
                sys::setns(file.as_raw_fd(), sys::CLONE_NEWNET).ctx(|| format!("setns into {name}"))?;
                drop(file);
                Ok(f())
            })
            .ctx(|| "spawning a namespace thread".to_string())
    }

    fn open(&self) -> Result<File> {
        let p = self.path();
        File::open(&p).ctx(|| format!("opening {}", p.display()))
    }

    /// Connect over TCP from inside this namespace within `timeout`.
    pub fn tcp_connect(&self, addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
        self.run_in(move || TcpStream::connect_timeout(&addr, timeout))?
            .ctx(|| format!("connecting to {addr} from {}", self.name))
    }

    /// Poll until a TCP connect from this namespace to `addr:port` succeeds.
    pub fn wait_for_port(&self, addr: IpAddr, port: u16, timeout: Duration) -> Result<()> {
        let target = SocketAddr::new(addr, port);
        let deadline = Instant::now() + timeout;
        let last = self.run_in(move || loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = left.min(Duration::from_millis(500)).max(Duration::from_millis(1));
            match TcpStream::connect_timeout(&target, attempt) {
                Ok(_) => return None,
                Err(e) if Instant::now() >= deadline => return Some(e),
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        })?;
        match last {
            None => Ok(()),
            Some(e) => Err(Error::Timeout {
                what: format!("waiting for {target} from namespace {} (last error: {e})", self.name),
                after: timeout,
            }),
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        delete_ns(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!(parse_name("rt-e2e-123-4"), Some(("e2e", 123)));
        assert_eq!(parse_name("rt-chaos_cp-99-0"), Some(("chaos_cp", 99)));
        assert_eq!(parse_name("rt-e2e-x-4"), None);
        assert_eq!(parse_name("other-e2e-1-2"), None);
        assert_eq!(parse_name("rt-a-b-1-2"), None);
        assert!(matches_prefix("chaos_cp", "chaos"));
        assert!(matches_prefix("chaos", "chaos"));
        assert!(!matches_prefix("chaosx", "chaos"));
    }
}
