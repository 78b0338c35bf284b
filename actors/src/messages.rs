//! Supervisor configuration, messages, and the types they carry.

use std::fmt;
use std::time::Duration;

use ractor::{ActorCell, ActorId, RpcReplyPort, SpawnErr};

use crate::spec::{ChildSpec, Restart};

/// Per-supervisor settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SupervisorConfig {
    /// At most this many restarts (of all children together) ...
    pub max_restarts: u32,
    /// ... within this sliding window; one more escalates.
    pub max_window: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self { max_restarts: 10, max_window: Duration::from_secs(60) }
    }
}

impl SupervisorConfig {
    /// Budget of `max_restarts` restarts within `window`.
    pub fn with_budget(max_restarts: u32, window: Duration) -> Self {
        Self { max_restarts, max_window: window }
    }
}

/// Lifecycle state of a child as seen by its supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildStatus {
    /// Running (the actor is alive).
    Running,
    /// Failed or exited; a restart is scheduled after `delay`.
    Backoff {
        /// Delay that was scheduled.
        delay: Duration,
    },
    /// Being removed (orderly stop in progress).
    Stopping,
    /// Exited normally and (being `Transient`) will not be restarted.
    Stopped,
}

/// A snapshot of one child, for health endpoints.
#[derive(Debug, Clone)]
pub struct ChildInfo {
    /// Local name in the supervisor.
    pub name: String,
    /// Full registered name (`"<supervisor>/<name>"`).
    pub registered_name: String,
    /// Restart policy.
    pub restart: Restart,
    /// Current status.
    pub status: ChildStatus,
    /// Restart attempts made for this child since it was added (a failed attempt counts).
    pub restarts: u64,
    /// The last failure or exit reason observed, if any.
    pub last_exit: Option<String>,
    /// The running actor (when `Running`).
    pub actor: Option<ActorCell>,
}

/// Messages understood by [`crate::Supervisor`].
///
/// Prefer the typed helpers on [`crate::SupervisorRef`].
pub enum SupervisorMsg {
    /// Add and start a child; replies with the started actor.
    AddChild(ChildSpec, RpcReplyPort<Result<ActorCell, SupervisorError>>),
    /// Stop a child in order (stop, wait up to its shutdown timeout, then kill) and forget it.
    /// Replies once it has stopped.
    RemoveChild(String, RpcReplyPort<Result<(), SupervisorError>>),
    /// List children in start order.
    ListChildren(RpcReplyPort<Vec<ChildInfo>>),
    /// Timer events; not constructible outside this crate.
    #[doc(hidden)]
    Internal(Internal),
}

impl fmt::Debug for SupervisorMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AddChild(spec, _) => write!(f, "AddChild({})", spec.name),
            Self::RemoveChild(name, _) => write!(f, "RemoveChild({name})"),
            Self::ListChildren(_) => f.write_str("ListChildren"),
            Self::Internal(i) => write!(f, "Internal({:?})", i.0),
        }
    }
}

/// Opaque internal timer message.
#[doc(hidden)]
pub struct Internal(pub(crate) InternalKind);

#[derive(Debug)]
pub(crate) enum InternalKind {
    /// Backoff elapsed: start child `seq` if it is still waiting for incarnation `epoch`.
    Restart { seq: u64, epoch: u64 },
    /// Removal timeout: kill actor `id` of child `seq` if it is still stopping.
    StopTimeout { seq: u64, id: ActorId },
}

/// How a supervisor tree ended (see [`crate::SupervisorHandle::wait`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorExit {
    /// Stopped in order (someone stopped it); carries the stop reason.
    Shutdown(Option<String>),
    /// The restart budget was exceeded and the supervisor gave up.
    Escalated(String),
    /// The supervisor itself crashed or was killed.
    Failed(String),
}

impl SupervisorExit {
    /// `true` for an orderly shutdown; a process root should exit non-zero otherwise.
    pub fn is_success(&self) -> bool {
        matches!(self, SupervisorExit::Shutdown(_))
    }
}

impl fmt::Display for SupervisorExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shutdown(None) => f.write_str("shutdown"),
            Self::Shutdown(Some(r)) => write!(f, "shutdown: {r}"),
            Self::Escalated(r) => write!(f, "escalated: {r}"),
            Self::Failed(r) => write!(f, "failed: {r}"),
        }
    }
}

/// Errors returned by supervisor operations.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A child with this name already exists.
    #[error("child {0:?} already exists")]
    DuplicateChild(String),
    /// No child with this name.
    #[error("no child named {0:?}")]
    NoSuchChild(String),
    /// The child factory failed.
    #[error("child {child:?} failed to start: {source}")]
    SpawnFailed {
        /// Full child name.
        child: String,
        /// The spawn error.
        #[source]
        source: SpawnErr,
    },
    /// Too many restarts within the window: the supervisor stops and escalates.
    #[error(
        "supervisor {supervisor:?}: restart budget exceeded ({max_restarts} restarts within {window:?}); last failure of {child:?}: {reason}"
    )]
    RestartBudgetExceeded {
        /// Supervisor name.
        supervisor: String,
        /// Configured budget.
        max_restarts: u32,
        /// Configured window.
        window: Duration,
        /// Child whose failure exceeded the budget.
        child: String,
        /// That child's exit reason.
        reason: String,
    },
    /// The supervisor is not reachable (stopped, or the call timed out).
    #[error("supervisor unavailable: {0}")]
    Unavailable(String),
}
