//! Reading what `/proc/<pid>` says about a process. Every field is optional: a process can exit
//! between two reads, and some files are unreadable for some processes (kernel threads have no
//! `exe`); whatever could be read is still useful for selection.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::hash::BinaryHasher;
use super::k8s;

/// What was read about one process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProcessInfo {
    pub pid: u32,
    /// `comm` (the kernel's 15-character task name).
    pub name: Option<String>,
    /// Target of `/proc/<pid>/exe` (may end in ` (deleted)` when the file was replaced).
    pub exe: Option<PathBuf>,
    /// Arguments joined by spaces, truncated to the configured length.
    pub cmdline: Option<String>,
    /// Effective uid and gid (what the process acts as; also what `meta skuid` sees for sockets
    /// it creates, barring fsuid tricks).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Lowercase hex SHA-256 of the executable.
    pub binary_hash: Option<String>,
    /// Kubernetes pod UID from the cgroup path, if the process runs in a pod.
    pub pod_uid: Option<String>,
}

/// Reads everything about `pid`; blocking (file reads, and hashing on a cache miss).
pub fn read(proc_root: &Path, pid: u32, hasher: &BinaryHasher, max_cmdline: usize) -> ProcessInfo {
    let dir = proc_root.join(pid.to_string());
    let (uid, gid) = read_ids(&dir);
    let exe = std::fs::read_link(dir.join("exe")).ok();
    let binary_hash = match &exe {
        Some(_) => {
            hasher.hash(&dir.join("exe")).map_err(|e| tracing::debug!(pid, error = %e, "executable not hashed")).ok()
        }
        None => None,
    };
    ProcessInfo {
        pid,
        name: read_small(&dir.join("comm"), 256).map(|s| s.trim_end_matches('\n').to_owned()),
        exe,
        cmdline: read_small(&dir.join("cmdline"), max_cmdline).map(|s| join_cmdline(&s)),
        uid,
        gid,
        binary_hash,
        pod_uid: read_small(&dir.join("cgroup"), 64 * 1024).and_then(|c| k8s::pod_uid_from_cgroup(&c)),
    }
}

/// Effective ids from `status` (`Uid:\treal\teffective\tsaved\tfs`).
fn read_ids(dir: &Path) -> (Option<u32>, Option<u32>) {
    let Some(status) = read_small(&dir.join("status"), 64 * 1024) else { return (None, None) };
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    (field("Uid:"), field("Gid:"))
}

/// Reads at most `max` bytes (lossy UTF-8).
fn read_small(path: &Path, max: usize) -> Option<String> {
    let mut buf = Vec::new();
    std::fs::File::open(path).ok()?.take(max as u64).read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// `cmdline` is NUL-separated (and NUL-terminated); empty for zombies and kernel threads.
fn join_cmdline(raw: &str) -> String {
    raw.trim_end_matches('\0').split('\0').collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let h = BinaryHasher::new(4, 1 << 30);
        let me = std::process::id();
        let info = read(Path::new("/proc"), me, &h, 16);
        assert_eq!(info.pid, me);
        assert!(info.name.is_some() && info.exe.is_some() && info.uid.is_some() && info.gid.is_some());
        assert!(info.cmdline.as_ref().unwrap().len() <= 16);
        assert_eq!(info.binary_hash.as_ref().map(String::len), Some(64));
    }

    #[test]
    fn cmdline_join() {
        assert_eq!(join_cmdline("python3\0-c\0print(1)\0"), "python3 -c print(1)");
        assert_eq!(join_cmdline(""), "");
    }
}
