//! The three libc calls the harness needs, declared directly against the C
//! library that `std` already links (the workspace has no `libc`/`nix` crate).

use std::io;
use std::os::raw::c_int;

extern "C" {
    #[link_name = "setns"]
    fn c_setns(fd: c_int, nstype: c_int) -> c_int;
    #[link_name = "kill"]
    fn c_kill(pid: i32, sig: c_int) -> c_int;
    #[link_name = "geteuid"]
    fn c_geteuid() -> u32;
}

/// `CLONE_NEWNET` from `<sched.h>`.
pub(crate) const CLONE_NEWNET: c_int = 0x4000_0000;

/// Move the calling thread into the namespace referred to by `fd`.
pub(crate) fn setns(fd: c_int, nstype: c_int) -> io::Result<()> {
    // SAFETY: plain syscall wrapper; `fd` is a valid open descriptor owned by the caller.
    let rc = unsafe { c_setns(fd, nstype) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Send `sig` to `pid` (negative `pid`: a process group).
pub(crate) fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall wrapper with integer arguments.
    let rc = unsafe { c_kill(pid, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail and has no arguments.
    unsafe { c_geteuid() }
}

/// Whether a process with this pid exists (EPERM counts as alive).
pub(crate) fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match kill(pid, 0) {
        Ok(()) => true,
        Err(e) => e.raw_os_error() == Some(1), // EPERM
    }
}
