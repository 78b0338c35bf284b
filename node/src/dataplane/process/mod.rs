//! Who is behind a captured connection: the local process and its labels, which the policy's
//! WorkloadIdentity selectors match against.
//!
//! Steps (all bounded, all blocking; [`Identifier::identify_async`] runs them on the blocking
//! pool so the async runtime never waits on `/proc` or a hash):
//!
//! 1. The socket: `NETLINK_SOCK_DIAG` exact lookup of the 4-tuple ([`sockdiag`]) gives the
//!    socket's inode and owner uid; where sock_diag is unavailable, `/proc/net/tcp{,6}`
//!    ([`procnet`]).
//! 2. The process: scan `/proc/<pid>/fd` for `socket:[inode]` ([`pidscan`], cached briefly).
//! 3. The labels ([`info`], [`hash`], [`k8s`]): `process:name`, `process:binary:path`,
//!    `process:binary:hash`, `process:uid`, `process:gid`, `process:cmdline`, `process:pid`,
//!    and `k8s:<label>` for pods.
//!
//! For a captured *outbound* connection, the process's socket goes from the accepted socket's
//! peer address to the original destination: `identify(accepted.peer_addr(), original_dst)`.
//!
//! **Unknown processes.** If the socket is not found ([`IdentifyError::NotFound`]), or no
//! process holding it can be found (it exited, lives in another pid namespace, or the scan hit
//! its limits: [`Workload::process`] is `None`), the labels hold only what could be read
//! (at least `process:uid` from the socket owner). Selectors that need other labels do not
//! match, and the caller passes such a connection through untouched: it is neither upgraded
//! to mTLS nor refused, exactly as if it had not been captured.
//!
//! Lookups happen in the network namespace of the calling thread and read the `/proc` of the
//! configured root; processes in other pid namespaces are only visible if that `/proc` shows
//! them (the host's does).

pub mod hash;
pub mod info;
pub mod k8s;
pub mod pidscan;
pub mod procnet;
pub mod sockdiag;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

pub use hash::BinaryHasher;
pub use info::ProcessInfo;
pub use k8s::{pod_uid_from_cgroup, NoPodLabels, PodLabelsProvider, K8S_PREFIX};
pub use pidscan::{PidCache, Scan, ScanLimits};

/// Label keys.
pub const LABEL_NAME: &str = "process:name";
pub const LABEL_BINARY_PATH: &str = "process:binary:path";
pub const LABEL_BINARY_HASH: &str = "process:binary:hash";
pub const LABEL_UID: &str = "process:uid";
pub const LABEL_GID: &str = "process:gid";
pub const LABEL_CMDLINE: &str = "process:cmdline";
pub const LABEL_PID: &str = "process:pid";

/// Labels of a workload, sorted (stable output in logs and the connection table).
pub type Labels = BTreeMap<String, String>;

/// The kernel's view of a socket: its inode (what `/proc/<pid>/fd` links name) and owner uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SocketOwner {
    pub inode: u64,
    pub uid: u32,
}

/// How sockets are looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SocketSource {
    /// sock_diag, falling back to `/proc/net/tcp{,6}` when sock_diag fails (not when it says
    /// "no such socket": that answer is authoritative).
    #[default]
    Auto,
    SockDiag,
    ProcNet,
}

/// Limits and knobs; all defaults here.
#[derive(Debug, Clone)]
pub struct IdentifyConfig {
    pub proc_root: PathBuf,
    pub source: SocketSource,
    /// Deadline for the sock_diag answer.
    pub netlink_timeout: Duration,
    pub scan: ScanLimits,
    /// How long an inode -> pid result is reused.
    pub pid_cache_ttl: Duration,
    pub pid_cache_capacity: usize,
    pub hash_cache_capacity: usize,
    /// Executables larger than this get no hash label.
    pub max_hash_bytes: u64,
    /// `process:cmdline` is cut to this many bytes (read as such: a huge argv is never read).
    pub max_cmdline_bytes: usize,
}

impl Default for IdentifyConfig {
    fn default() -> Self {
        IdentifyConfig {
            proc_root: PathBuf::from("/proc"),
            source: SocketSource::Auto,
            netlink_timeout: Duration::from_secs(1),
            scan: ScanLimits::default(),
            pid_cache_ttl: Duration::from_secs(2),
            pid_cache_capacity: 4096,
            hash_cache_capacity: 1024,
            max_hash_bytes: 512 << 20,
            max_cmdline_bytes: 4096,
        }
    }
}

/// Result of identifying one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workload {
    pub socket: SocketOwner,
    /// `None` when no process holding the socket was found (see the module docs).
    pub process: Option<ProcessInfo>,
    pub labels: Labels,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentifyError {
    /// No TCP socket with this 4-tuple exists (in the caller's network namespace).
    #[error("no TCP socket {local} -> {remote} found")]
    NotFound { local: SocketAddr, remote: SocketAddr },
    #[error("socket lookup failed: {0}")]
    Lookup(#[source] io::Error),
    #[error("the blocking identification task failed: {0}")]
    Join(String),
}

/// Identifies the processes behind connections. Share one per daemon (`Arc`): it holds the
/// pid and hash caches.
pub struct Identifier {
    cfg: IdentifyConfig,
    pids: Mutex<PidCache>,
    hasher: BinaryHasher,
    pods: Arc<dyn PodLabelsProvider>,
    /// Logged once: sock_diag failed and the /proc/net fallback is in use.
    warned_fallback: AtomicBool,
}

impl Identifier {
    pub fn new(cfg: IdentifyConfig) -> Identifier {
        Identifier::with_pod_labels(cfg, Arc::new(NoPodLabels))
    }

    pub fn with_pod_labels(cfg: IdentifyConfig, pods: Arc<dyn PodLabelsProvider>) -> Identifier {
        Identifier {
            pids: Mutex::new(PidCache::new(cfg.pid_cache_ttl, cfg.pid_cache_capacity)),
            hasher: BinaryHasher::new(cfg.hash_cache_capacity, cfg.max_hash_bytes),
            pods,
            warned_fallback: AtomicBool::new(false),
            cfg,
        }
    }

    /// The socket `local` -> `remote`, as seen by its owner.
    pub fn find_socket(&self, local: SocketAddr, remote: SocketAddr) -> Result<SocketOwner, IdentifyError> {
        let procnet = || procnet::lookup(&self.cfg.proc_root, local, remote);
        let found = match self.cfg.source {
            SocketSource::SockDiag => sockdiag::lookup(local, remote, self.cfg.netlink_timeout),
            SocketSource::ProcNet => procnet(),
            SocketSource::Auto => match sockdiag::lookup(local, remote, self.cfg.netlink_timeout) {
                Err(e) if e.kind() != io::ErrorKind::InvalidInput => {
                    if !self.warned_fallback.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "sock_diag unavailable: falling back to /proc/net/tcp");
                    }
                    procnet()
                }
                other => other,
            },
        };
        found.map_err(IdentifyError::Lookup)?.ok_or(IdentifyError::NotFound { local, remote })
    }

    /// Identifies the process owning the TCP socket `local` -> `remote` and its labels.
    /// Blocking; see [`Identifier::identify_async`].
    pub fn identify(&self, local: SocketAddr, remote: SocketAddr) -> Result<Workload, IdentifyError> {
        let socket = self.find_socket(local, remote)?;
        let cached = self.pids.lock().unwrap_or_else(|p| p.into_inner()).get(&self.cfg.proc_root, socket.inode);
        let pid = match cached {
            Some(pid) => Some(pid),
            None => match pidscan::find_pid(&self.cfg.proc_root, socket.inode, Some(socket.uid), self.cfg.scan) {
                pidscan::Scan::Found(pid) => {
                    self.pids.lock().unwrap_or_else(|p| p.into_inner()).insert(socket.inode, pid);
                    Some(pid)
                }
                outcome => {
                    tracing::debug!(%local, %remote, inode = socket.inode, ?outcome, "no process found for socket");
                    None
                }
            },
        };
        let process = pid.map(|pid| info::read(&self.cfg.proc_root, pid, &self.hasher, self.cfg.max_cmdline_bytes));
        let labels = self.labels(&socket, process.as_ref());
        Ok(Workload { socket, process, labels })
    }

    /// [`Identifier::identify`] on the blocking pool.
    pub async fn identify_async(
        self: &Arc<Self>,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<Workload, IdentifyError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.identify(local, remote))
            .await
            .map_err(|e| IdentifyError::Join(e.to_string()))?
    }

    fn labels(&self, socket: &SocketOwner, p: Option<&ProcessInfo>) -> Labels {
        let mut l = Labels::new();
        l.insert(LABEL_UID.into(), p.and_then(|p| p.uid).unwrap_or(socket.uid).to_string());
        let Some(p) = p else { return l };
        l.insert(LABEL_PID.into(), p.pid.to_string());
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                l.insert(k.into(), v);
            }
        };
        put(LABEL_NAME, p.name.clone());
        put(LABEL_BINARY_PATH, p.exe.as_ref().map(|e| e.display().to_string()));
        put(LABEL_BINARY_HASH, p.binary_hash.clone());
        put(LABEL_GID, p.gid.map(|g| g.to_string()));
        put(LABEL_CMDLINE, p.cmdline.clone());
        if let Some(pod) = &p.pod_uid {
            for (k, v) in self.pods.labels(pod).unwrap_or_default() {
                l.insert(format!("{K8S_PREFIX}{k}"), v);
            }
        }
        l
    }
}

impl std::fmt::Debug for Identifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identifier").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}
