//! Supervision building blocks on [ractor], shared by the control plane and the daemon.
//! This crate knows no domain.
//!
//! * [`Supervisor`]: a one-for-one supervisor actor. Each child is described by a
//!   [`ChildSpec`]: a name (registered as `"<supervisor>/<name>"`), a [`Restart`] policy
//!   (`Permanent`, `Transient`, `Temporary`), a [`Backoff`] (exponential with jitter, reset
//!   after a healthy run), a shutdown timeout and a factory that spawns the child linked to
//!   the supervisor. A failing child never affects its siblings.
//! * A restart budget per supervisor ([`SupervisorConfig`]: at most N restarts within a
//!   window). One restart too many stops the supervisor's children in order and fails the
//!   supervisor with [`SupervisorError::RestartBudgetExceeded`], so *its* supervisor sees a
//!   failure (escalation).
//! * Orderly shutdown: stopping a supervisor stops its children in reverse start order,
//!   waiting for each up to its shutdown timeout, then killing it.
//! * Runtime children: [`SupervisorRef::add_child`], [`SupervisorRef::remove_child`],
//!   [`SupervisorRef::list_children`] (status and restart counts for health endpoints).
//! * The process root starts the tree with [`Supervisor::start`] and waits with
//!   [`SupervisorHandle::wait`], which says whether it ended by shutdown, escalation, or crash.
//! * Restarts are scheduled with timers (the message loop never sleeps). Every start,
//!   failure (with its message), restart (attempt, delay), escalation and shutdown is logged
//!   via `tracing` with fields `supervisor` and `child`.
//!
//! Registered names are global to the process (ractor's registry), so root supervisor names
//! must be unique.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use ractor::{Actor, ActorProcessingErr, ActorRef};
//! use riptides_actors::{Backoff, ChildSpec, Restart, Supervisor, SupervisorConfig, SupervisorExit};
//!
//! #[derive(Clone)]
//! struct Echo;
//!
//! impl Actor for Echo {
//!     type Msg = ractor::RpcReplyPort<&'static str>;
//!     type State = ();
//!     type Arguments = ();
//!     async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<(), ActorProcessingErr> {
//!         Ok(())
//!     }
//!     async fn handle(&self, _: ActorRef<Self::Msg>, reply: Self::Msg, _: &mut ())
//!         -> Result<(), ActorProcessingErr> {
//!         let _ = reply.send("pong");
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let api = ChildSpec::actor("api", Echo, ())
//!     .restart(Restart::Permanent)
//!     .backoff(Backoff::fixed_growth(Duration::from_millis(10), Duration::from_secs(1), 2.0));
//! let sessions = ChildSpec::supervisor("sessions", SupervisorConfig::default(), vec![]);
//!
//! let root = Supervisor::start("doc-cp", SupervisorConfig::with_budget(5, Duration::from_secs(10)),
//!     vec![api, sessions]).await.expect("tree starts");
//!
//! // Children are registered under the supervisor's prefix.
//! let api = ActorRef::<ractor::RpcReplyPort<&'static str>>::where_is("doc-cp/api").unwrap();
//! assert_eq!(ractor::call!(api, |r| r).unwrap(), "pong");
//!
//! // Add a child at runtime to the nested supervisor.
//! let sessions = riptides_actors::SupervisorRef::where_is("doc-cp/sessions").unwrap();
//! sessions.add_child(ChildSpec::actor("node-1", Echo, ()).restart(Restart::Temporary))
//!     .await.unwrap();
//! assert_eq!(sessions.list_children().await.unwrap().len(), 1);
//!
//! // Orderly shutdown; a process would exit non-zero unless this is a success.
//! let exit = root.shutdown(None).await;
//! assert!(exit.is_success());
//! assert_eq!(exit, SupervisorExit::Shutdown(None));
//! # }
//! ```

mod backoff;
mod budget;
mod handle;
mod messages;
mod spec;
mod supervisor;

pub use backoff::Backoff;
pub use handle::{SupervisorHandle, SupervisorRef};
pub use messages::{
    ChildInfo, ChildStatus, Internal, SupervisorConfig, SupervisorError, SupervisorExit, SupervisorMsg,
};
pub use spec::{
    BoxFuture, ChildFactory, ChildSpec, Restart, DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_SUPERVISOR_SHUTDOWN_TIMEOUT,
};
pub use supervisor::{Supervisor, SupervisorArgs, SupervisorState};
