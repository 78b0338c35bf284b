//! Child specifications: what to start, how to name it, and when to restart it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorName, SpawnErr};

use crate::backoff::Backoff;

/// A boxed, `Send` future (so this crate needs no `futures` dependency).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Spawns one incarnation of a child.
///
/// Called with the child's full registered name (e.g. `"cp/api"`) and the supervisor's
/// [`ActorCell`]; it must spawn the actor *linked* to that supervisor under that name
/// (e.g. with [`Actor::spawn_linked`]) and return its cell.
pub type ChildFactory =
    Arc<dyn Fn(ActorName, ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> + Send + Sync>;

/// When a child that stopped is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Restart {
    /// Always restarted, whatever the reason it stopped.
    Permanent,
    /// Restarted only when it failed (panic, error, or killed); a normal stop leaves it stopped.
    Transient,
    /// Never restarted; forgotten by the supervisor as soon as it exits.
    Temporary,
}

impl fmt::Display for Restart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Restart::Permanent => "permanent",
            Restart::Transient => "transient",
            Restart::Temporary => "temporary",
        })
    }
}

/// Describes one supervised child. Cheap to clone (the factory is shared).
#[derive(Clone)]
pub struct ChildSpec {
    /// Name local to the supervisor; registered as `"<supervisor name>/<name>"`.
    pub name: String,
    /// Restart policy.
    pub restart: Restart,
    /// Delay between restarts.
    pub backoff: Backoff,
    /// How long an orderly stop may take before the child is killed.
    pub shutdown_timeout: Duration,
    /// Spawns the child.
    pub factory: ChildFactory,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("restart", &self.restart)
            .field("backoff", &self.backoff)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish_non_exhaustive()
    }
}

/// Default time a worker gets to stop before it is killed.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time a nested supervisor gets to stop its whole subtree.
pub const DEFAULT_SUPERVISOR_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

impl ChildSpec {
    /// A `Permanent` child with default backoff, spawned by `factory`.
    pub fn new<F, Fut>(name: impl Into<String>, factory: F) -> Self
    where
        F: Fn(ActorName, ActorCell) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorCell, SpawnErr>> + Send + 'static,
    {
        let factory: ChildFactory = Arc::new(move |name, sup| Box::pin(factory(name, sup)));
        Self {
            name: name.into(),
            restart: Restart::Permanent,
            backoff: Backoff::default(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            factory,
        }
    }

    /// A `Permanent` child that spawns a clone of `actor` with a clone of `args`
    /// for every incarnation.
    pub fn actor<A>(name: impl Into<String>, actor: A, args: A::Arguments) -> Self
    where
        A: Actor + Clone,
        A::Arguments: Clone + Sync,
    {
        Self::new(name, move |name, sup| {
            let actor = actor.clone();
            let args = args.clone();
            async move {
                let (r, _join) = A::spawn_linked(Some(name), actor, args, sup).await?;
                Ok(r.get_cell())
            }
        })
    }

    /// Set the restart policy.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Set the backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Set the orderly-stop timeout (after which the child is killed).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }
}
