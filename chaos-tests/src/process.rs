//! Running commands with a deadline, and child processes that are always
//! killed and reaped.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};
use crate::sys;

/// Default deadline for one command (`ip`, `nft`, short probes).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Unix signals the harness sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Hup = 1,
    Int = 2,
    Kill = 9,
    Term = 15,
    Cont = 18,
    Stop = 19,
}

/// Render a command line for error messages (shell-like quoting).
pub fn cmdline<S: AsRef<OsStr>>(program: &OsStr, args: &[S]) -> String {
    let mut out = quote(program);
    for a in args {
        out.push(' ');
        out.push_str(&quote(a.as_ref()));
    }
    out
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c)) {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn describe(cmd: &Command) -> String {
    let args: Vec<&OsStr> = cmd.get_args().collect();
    cmdline(cmd.get_program(), &args)
}

/// Run `cmd` to completion within `timeout`, capturing stdout and stderr.
/// Returns the output whatever the exit status; spawn failures and timeouts
/// are errors (the child is killed on timeout).
pub fn run_unchecked(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<Output> {
    let line = describe(&cmd);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().ctx(|| format!("spawning `{line}`"))?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Scripts are small (nft rulesets); a broken pipe shows up as the
        // command's own failure.
        let _ = pipe.write_all(data);
    }
    let out_reader = reader(child.stdout.take());
    let err_reader = reader(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let mut nap = Duration::from_millis(1);
    let status = loop {
        match child.try_wait().ctx(|| format!("waiting for `{line}`"))? {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).trim().to_string();
                return Err(Error::Timeout { what: format!("`{line}` (stderr: {stderr:?})"), after: timeout });
            }
            None => {
                thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(20));
            }
        }
    };
    Ok(Output { status, stdout: out_reader.join().unwrap_or_default(), stderr: err_reader.join().unwrap_or_default() })
}

/// Like [`run_unchecked`], but a non-zero exit is an [`Error::Command`] with
/// the command line and stderr.
pub fn run(cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<Output> {
    let line = describe(&cmd);
    let out = run_unchecked(cmd, stdin, timeout)?;
    check(&line, out)
}

pub(crate) fn check(line: &str, out: Output) -> Result<Output> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(Error::Command {
            cmdline: line.to_string(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// Run a program in the root namespace (used for `ip netns ...`, `ip -n ...`).
pub fn run_host<I, S>(program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args);
    let out = run(cmd, None, DEFAULT_TIMEOUT)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Where a spawned child's stdout and stderr go.
#[derive(Debug, Clone)]
pub enum OutputTo {
    /// A temporary file owned by the [`ChildGuard`], readable with
    /// [`ChildGuard::log`] and removed with the guard (the default).
    TempLog,
    /// Append both streams to this file (kept after the guard is dropped).
    File(PathBuf),
    /// The parent's stdout/stderr (for `riptides demo`).
    Inherit,
    /// Discard.
    Null,
}

/// A command to run inside a namespace (through `ip netns exec`).
#[derive(Debug, Clone)]
pub struct NsCommand {
    ns: String,
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
    output: OutputTo,
}

impl NsCommand {
    pub(crate) fn new(ns: &str, program: impl AsRef<OsStr>) -> Self {
        NsCommand {
            ns: ns.to_string(),
            program: program.as_ref().to_os_string(),
            args: Vec::new(),
            envs: Vec::new(),
            cwd: None,
            stdin: None,
            timeout: DEFAULT_TIMEOUT,
            output: OutputTo::TempLog,
        }
    }
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_os_string());
        self
    }
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.envs.push((k.as_ref().to_os_string(), v.as_ref().to_os_string()));
        self
    }
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cwd = Some(dir.as_ref().to_path_buf());
        self
    }
    /// Bytes written to the command's stdin (for [`output`](Self::output) only).
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }
    /// Deadline for [`output`](Self::output) (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
    /// Where a [`spawn`](Self::spawn)ed child's output goes.
    pub fn output_to(mut self, o: OutputTo) -> Self {
        self.output = o;
        self
    }

    /// The full command line, `ip netns exec <ns> ...` included.
    pub fn cmdline(&self) -> String {
        describe(&self.command())
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("ip");
        cmd.arg("netns").arg("exec").arg(&self.ns).arg(&self.program).args(&self.args);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        if let Some(d) = &self.cwd {
            cmd.current_dir(d);
        }
        cmd
    }

    /// Run to completion; non-zero exit is an error with command line and stderr.
    pub fn output(self) -> Result<Output> {
        run(self.command(), self.stdin.as_deref(), self.timeout)
    }

    /// Run to completion and return the output whatever the exit status.
    pub fn output_unchecked(self) -> Result<Output> {
        run_unchecked(self.command(), self.stdin.as_deref(), self.timeout)
    }

    /// Run to completion and return stdout as a string (checked).
    pub fn stdout_string(self) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.output()?.stdout).into_owned())
    }

    /// Start the command in its own process group. The returned guard kills
    /// (the whole group) and reaps it when dropped.
    pub fn spawn(self) -> Result<ChildGuard> {
        self.spawn_with(false)
    }

    /// Like [`spawn`](Self::spawn), with the child's stdin and stdout as pipes
    /// (a line protocol with a driver script); stderr goes where
    /// [`output_to`](Self::output_to) says.
    pub fn spawn_piped(self) -> Result<(ChildGuard, ChildStdin, ChildStdout)> {
        let mut guard = self.spawn_with(true)?;
        let child = guard.child.as_mut().expect("just spawned");
        match (child.stdin.take(), child.stdout.take()) {
            (Some(i), Some(o)) => Ok((guard, i, o)),
            _ => Err(Error::Invalid(format!("`{}`: no stdin/stdout pipes", guard.cmdline))),
        }
    }

    fn spawn_with(self, piped: bool) -> Result<ChildGuard> {
        let line = self.cmdline();
        let mut cmd = self.command();
        cmd.stdin(if piped { Stdio::piped() } else { Stdio::null() }).process_group(0);
        let mut temp = None;
        match &self.output {
            OutputTo::TempLog => {
                let f = tempfile::Builder::new()
                    .prefix("riptides-netns-")
                    .suffix(".log")
                    .tempfile()
                    .ctx(|| "creating a temporary log file".to_string())?;
                let (a, b) = (f.reopen(), f.reopen());
                cmd.stdout(a.ctx(|| "reopening log".into())?).stderr(b.ctx(|| "reopening log".into())?);
                temp = Some(f);
            }
            OutputTo::File(p) => {
                let f = File::options()
                    .create(true)
                    .append(true)
                    .open(p)
                    .ctx(|| format!("opening log file {}", p.display()))?;
                let g = f.try_clone().ctx(|| "cloning log fd".into())?;
                cmd.stdout(f).stderr(g);
            }
            OutputTo::Inherit => {
                cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
            }
            OutputTo::Null => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        if piped {
            cmd.stdout(Stdio::piped());
        }
        let child = cmd.spawn().ctx(|| format!("spawning `{line}`"))?;
        let log_path = match (&self.output, &temp) {
            (_, Some(t)) => Some(t.path().to_path_buf()),
            (OutputTo::File(p), _) => Some(p.clone()),
            _ => None,
        };
        Ok(ChildGuard { child: Some(child), cmdline: line, log_path, _temp: temp })
    }
}

/// A running child process. Dropping the guard sends SIGKILL to its process
/// group and reaps it, so nothing outlives a test (also on panic).
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    cmdline: String,
    log_path: Option<PathBuf>,
    _temp: Option<tempfile::NamedTempFile>,
}

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }
    /// Path of the stdout/stderr log, if output goes to a file.
    pub fn log_path(&self) -> Option<&Path> {
        self.log_path.as_deref()
    }
    /// The child's combined stdout/stderr so far (empty if not logged).
    pub fn log(&self) -> String {
        self.log_path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Send a signal to the process (not its group).
    pub fn signal(&self, sig: Signal) -> Result<()> {
        let pid = self.pid() as i32;
        sys::kill(pid, sig as i32).ctx(|| format!("kill -{} {} (`{}`)", sig as i32, pid, self.cmdline))
    }

    /// Exit status if it has exited (reaping it), `None` if still running.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        let line = self.cmdline.clone();
        match self.child.as_mut() {
            Some(c) => c.try_wait().ctx(|| format!("waiting for `{line}`")),
            None => Err(Error::Invalid(format!("`{line}` was already reaped"))),
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Wait for exit at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait()? {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout { what: format!("waiting for `{}` to exit", self.cmdline), after: timeout });
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status.
    pub fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(st) = self.try_wait()? {
            return Ok(st);
        }
        self.signal(Signal::Term)?;
        match self.wait_timeout(grace) {
            Ok(st) => Ok(st),
            Err(_) => self.kill(),
        }
    }

    /// SIGKILL (the process group) and reap.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(st) = self.try_wait()? {
            return Ok(st);
        }
        let pid = self.pid() as i32;
        let _ = sys::kill(-pid, Signal::Kill as i32);
        let _ = sys::kill(pid, Signal::Kill as i32);
        self.wait_timeout(Duration::from_secs(5))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id() as i32;
            if let Ok(None) = c.try_wait() {
                let _ = sys::kill(-pid, Signal::Kill as i32);
                let _ = c.kill();
            }
            // If the leader had already exited, its group is not signalled
            // (the id could be reused); the namespace's drop kills leftovers.
            let _ = c.wait();
        }
    }
}
