//! The few OS calls the benchmark needs, without a libc dependency: the open-files limit,
//! signals, and `/proc` readings of the control-plane process.

use std::os::raw::c_int;

#[repr(C)]
struct RLimit {
    cur: u64,
    max: u64,
}

extern "C" {
    fn getrlimit(resource: c_int, rlim: *mut RLimit) -> c_int;
    fn setrlimit(resource: c_int, rlim: *const RLimit) -> c_int;
    fn kill(pid: c_int, sig: c_int) -> c_int;
    fn sysconf(name: c_int) -> std::os::raw::c_long;
}

/// `RLIMIT_NOFILE` on Linux (all architectures Rust supports there except mips/sparc).
const RLIMIT_NOFILE: c_int = 7;
pub const SIGTERM: c_int = 15;
pub const SIGKILL: c_int = 9;
const SC_CLK_TCK: c_int = 2;

/// Raises the soft open-files limit to the hard limit (inherited by the control-plane child).
/// Returns (before, after). The load generator itself needs few descriptors (QUIC multiplexes
/// every simulated daemon of a source address over one UDP socket); the raise is for the CP
/// child and for runs with many sources.
pub fn raise_nofile() -> std::io::Result<(u64, u64)> {
    let mut r = RLimit { cur: 0, max: 0 };
    // SAFETY: plain POSIX calls on a properly sized, initialised struct.
    unsafe {
        if getrlimit(RLIMIT_NOFILE, &mut r) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let before = r.cur;
        if r.cur < r.max {
            let want = RLimit { cur: r.max, max: r.max };
            if setrlimit(RLIMIT_NOFILE, &want) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            r.cur = r.max;
        }
        Ok((before, r.cur))
    }
}

pub fn signal(pid: u32, sig: c_int) -> std::io::Result<()> {
    // SAFETY: kill(2) on a pid we spawned.
    if unsafe { kill(pid as c_int, sig) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Memory and CPU of a live process, from `/proc/<pid>/status` and `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    /// Peak resident set size (VmHWM), KiB.
    pub hwm_kib: u64,
    /// User + system CPU time, seconds.
    pub cpu_secs: f64,
}

pub fn proc_stats(pid: u32) -> std::io::Result<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // `after` starts at field 3 (state), so field n is at index n - 3.
    let hz = clock_ticks() as f64;
    Ok(ProcStats { hwm_kib: field("VmHWM:"), cpu_secs: (ticks(11) + ticks(12)) as f64 / hz })
}

fn clock_ticks() -> i64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { sysconf(SC_CLK_TCK) };
    if v > 0 {
        v as i64
    } else {
        100
    }
}

/// Resident memory of this process (the load generator), KiB.
pub fn self_hwm_kib() -> u64 {
    proc_stats(std::process::id()).map(|s| s.hwm_kib).unwrap_or(0)
}
