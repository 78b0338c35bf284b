//! From a socket inode to the process holding it: the kernel has no reverse index, so the
//! `/proc/<pid>/fd` links are scanned for `socket:[<inode>]`. The scan is bounded (process and
//! fd counts, a deadline) so a host with huge fd tables cannot stall a connection, and results
//! are cached briefly because one process usually opens several connections in a row.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Bounds for one scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanLimits {
    /// Processes looked at, at most.
    pub max_processes: usize,
    /// Fds looked at per process, at most.
    pub max_fds_per_process: usize,
    /// Wall-clock budget for the whole scan.
    pub deadline: Duration,
}

impl Default for ScanLimits {
    fn default() -> Self {
        ScanLimits { max_processes: 65_536, max_fds_per_process: 65_536, deadline: Duration::from_millis(500) }
    }
}

/// Outcome of a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    Found(u32),
    /// Every process was looked at: no process holds the socket (it belongs to another pid
    /// namespace we cannot see, or its holder just exited).
    NotFound,
    /// A limit was hit first.
    GaveUp,
}

/// Finds the pid holding socket `inode`. Processes owned by `owner_uid` (the socket's owner
/// from sock_diag) are scanned first: that is almost always where the socket is, and it skips
/// most of a busy host. Higher pids go first within each group, since captured connections
/// come mostly from recently started processes.
pub fn find_pid(proc_root: &Path, inode: u64, owner_uid: Option<u32>, limits: ScanLimits) -> Scan {
    let start = Instant::now();
    let target = format!("socket:[{inode}]");
    let Ok(dir) = std::fs::read_dir(proc_root) else { return Scan::NotFound };
    let mut pids: Vec<(bool, u32)> = dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok().map(|pid| (e, pid)))
        .take(limits.max_processes)
        .map(|(e, pid)| {
            let preferred = owner_uid.is_some_and(|u| e.metadata().is_ok_and(|m| m.uid() == u));
            (preferred, pid)
        })
        .collect();
    let truncated = pids.len() >= limits.max_processes;
    pids.sort_unstable_by(|a, b| b.cmp(a));

    for (_, pid) in pids {
        if start.elapsed() > limits.deadline {
            tracing::debug!(inode, elapsed = ?start.elapsed(), "socket owner scan hit its deadline");
            return Scan::GaveUp;
        }
        if holds(proc_root, pid, target.as_bytes(), limits.max_fds_per_process) {
            return Scan::Found(pid);
        }
    }
    if truncated {
        Scan::GaveUp
    } else {
        Scan::NotFound
    }
}

/// Whether `pid` has an fd linking to `target`.
fn holds(proc_root: &Path, pid: u32, target: &[u8], max_fds: usize) -> bool {
    let fd_dir = proc_root.join(pid.to_string()).join("fd");
    let Ok(fds) = std::fs::read_dir(&fd_dir) else { return false };
    fds.filter_map(Result::ok)
        .take(max_fds)
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| OsString::from(l).as_bytes() == target))
}

/// inode -> pid, for a short time. Bounded: when full, expired entries are dropped, and if that
/// is not enough the whole map is (a cache miss only costs a scan).
#[derive(Debug)]
pub struct PidCache {
    map: HashMap<u64, (u32, Instant)>,
    ttl: Duration,
    capacity: usize,
}

impl PidCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        PidCache { map: HashMap::new(), ttl, capacity: capacity.max(1) }
    }

    /// A cached pid, if fresh and the process still exists.
    pub fn get(&mut self, proc_root: &Path, inode: u64) -> Option<u32> {
        let &(pid, at) = self.map.get(&inode)?;
        if at.elapsed() <= self.ttl && proc_root.join(pid.to_string()).exists() {
            Some(pid)
        } else {
            self.map.remove(&inode);
            None
        }
    }

    pub fn insert(&mut self, inode: u64, pid: u32) {
        if self.map.len() >= self.capacity {
            let ttl = self.ttl;
            self.map.retain(|_, (_, at)| at.elapsed() <= ttl);
            if self.map.len() >= self.capacity {
                self.map.clear();
            }
        }
        self.map.insert(inode, (pid, Instant::now()));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_a_fake_proc_tree() {
        let root = tempfile::tempdir().unwrap();
        for (pid, links) in [(10u32, vec!["pipe:[1]", "socket:[77]"]), (20, vec!["socket:[5]"])] {
            let fd = root.path().join(pid.to_string()).join("fd");
            std::fs::create_dir_all(&fd).unwrap();
            for (i, l) in links.iter().enumerate() {
                std::os::unix::fs::symlink(l, fd.join(i.to_string())).unwrap();
            }
        }
        std::fs::create_dir_all(root.path().join("self")).unwrap();
        let lim = ScanLimits::default();
        assert_eq!(find_pid(root.path(), 77, None, lim), Scan::Found(10));
        assert_eq!(find_pid(root.path(), 5, Some(0), lim), Scan::Found(20));
        assert_eq!(find_pid(root.path(), 6, None, lim), Scan::NotFound);
        let tiny = ScanLimits { max_processes: 1, ..lim };
        assert_eq!(find_pid(root.path(), 6, None, tiny), Scan::GaveUp);
        let few_fds = ScanLimits { max_fds_per_process: 0, ..lim };
        assert_eq!(find_pid(root.path(), 77, None, few_fds), Scan::NotFound);
    }

    #[test]
    fn cache_is_bounded_and_expires() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("1")).unwrap();
        let mut c = PidCache::new(Duration::from_secs(60), 2);
        c.insert(1, 1);
        c.insert(2, 1);
        c.insert(3, 1);
        assert!(c.len() <= 2);
        assert_eq!(c.get(root.path(), 3), Some(1));
        c.insert(4, 999);
        assert_eq!(c.get(root.path(), 4), None, "process gone");
        let mut c = PidCache::new(Duration::ZERO, 8);
        c.insert(1, 1);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(c.get(root.path(), 1), None);
    }
}
