//! The harness error type: every failure names what was attempted.

use std::time::Duration;

/// Result alias used throughout the harness.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A harness failure. Command failures always carry the full command line
/// (including the `ip netns exec <ns>` wrapper) and the captured stderr.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command ran and exited unsuccessfully.
    #[error("command `{cmdline}` failed ({status}): {stderr}")]
    Command { cmdline: String, status: String, stderr: String },
    /// A command, wait or probe did not finish in time.
    #[error("timed out after {after:?}: {what}")]
    Timeout { what: String, after: Duration },
    /// An OS-level operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The harness cannot run here (not root, `ip` missing, ...).
    #[error("network namespaces unavailable: {0}")]
    Unavailable(String),
    /// Invalid argument or unexpected state.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}

/// Attach a context string to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}
