//! Typed client ([`SupervisorRef`]) and the process-root handle ([`SupervisorHandle`]).

use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr, SupervisionEvent};
use tokio::sync::watch;
use tracing::{error, info};

use crate::messages::{ChildInfo, SupervisorConfig, SupervisorError, SupervisorExit, SupervisorMsg};
use crate::spec::ChildSpec;
use crate::supervisor::{Supervisor, SupervisorArgs};

/// A typed reference to a running [`Supervisor`].
#[derive(Debug, Clone)]
pub struct SupervisorRef(ActorRef<SupervisorMsg>);

impl From<ActorRef<SupervisorMsg>> for SupervisorRef {
    fn from(r: ActorRef<SupervisorMsg>) -> Self {
        Self(r)
    }
}

fn unavailable<T, E: std::fmt::Display>(r: Result<CallResult<T>, E>) -> Result<T, SupervisorError> {
    match r {
        Ok(CallResult::Success(v)) => Ok(v),
        Ok(CallResult::Timeout) => Err(SupervisorError::Unavailable("call timed out".into())),
        Ok(CallResult::SenderError) => Err(SupervisorError::Unavailable("supervisor dropped the request".into())),
        Err(e) => Err(SupervisorError::Unavailable(e.to_string())),
    }
}

impl SupervisorRef {
    /// Look up a supervisor by its registered name (e.g. `"cp/sessions"`).
    pub fn where_is(name: &str) -> Option<Self> {
        ActorRef::<SupervisorMsg>::where_is(name).map(Self)
    }

    /// The underlying actor reference.
    pub fn actor(&self) -> &ActorRef<SupervisorMsg> {
        &self.0
    }

    /// Add and start a child at runtime.
    pub async fn add_child(&self, spec: ChildSpec) -> Result<ActorCell, SupervisorError> {
        unavailable(self.0.call(|r| SupervisorMsg::AddChild(spec, r), None).await)?
    }

    /// Stop a child in order and forget it; returns once it has stopped.
    pub async fn remove_child(&self, name: &str) -> Result<(), SupervisorError> {
        let name = name.to_string();
        unavailable(self.0.call(|r| SupervisorMsg::RemoveChild(name, r), None).await)?
    }

    /// Snapshot of all children, in start order.
    pub async fn list_children(&self) -> Result<Vec<ChildInfo>, SupervisorError> {
        unavailable(self.0.call(SupervisorMsg::ListChildren, None).await)
    }

    /// Stop the supervisor (children are stopped in reverse start order) and wait for it.
    pub async fn shutdown(&self, reason: Option<String>) {
        let cell = self.0.get_cell();
        cell.stop(reason);
        let _ = cell.wait(None).await;
    }
}

/// Handle on a root supervisor, for the process root: wait for the tree to end and learn why.
#[derive(Debug, Clone)]
pub struct SupervisorHandle {
    sup: SupervisorRef,
    exit: watch::Receiver<Option<SupervisorExit>>,
}

impl SupervisorHandle {
    /// The supervisor.
    pub fn supervisor(&self) -> &SupervisorRef {
        &self.sup
    }

    /// Wait until the tree has ended and return how it ended.
    /// Exit the process non-zero unless [`SupervisorExit::is_success`].
    pub async fn wait(&self) -> SupervisorExit {
        let mut rx = self.exit.clone();
        let res = rx.wait_for(|e| e.is_some()).await.map(|e| e.clone());
        match res {
            Ok(Some(exit)) => exit,
            _ => SupervisorExit::Failed("supervisor watcher vanished".into()),
        }
    }

    /// How the tree ended, if it has.
    pub fn try_exit(&self) -> Option<SupervisorExit> {
        self.exit.borrow().clone()
    }

    /// Stop the tree in order and return how it ended.
    pub async fn shutdown(&self, reason: Option<String>) -> SupervisorExit {
        self.sup.0.get_cell().stop(reason);
        self.wait().await
    }
}

impl Supervisor {
    /// Start a root supervisor registered as `name` with `children` (started in order;
    /// if one fails to start, the others are stopped and the error returned).
    pub async fn start(
        name: impl Into<String>,
        config: SupervisorConfig,
        children: Vec<ChildSpec>,
    ) -> Result<SupervisorHandle, SpawnErr> {
        let name = name.into();
        let (tx, rx) = watch::channel(None);
        let (watcher, _) = RootWatcher::spawn(None, RootWatcher, tx).await?;
        let args = SupervisorArgs::new(name.clone(), config, children);
        match Supervisor::spawn_linked(Some(name), Supervisor, args, watcher.get_cell()).await {
            Ok((sup, _join)) => Ok(SupervisorHandle { sup: SupervisorRef(sup), exit: rx }),
            Err(e) => {
                watcher.stop(None);
                Err(e)
            }
        }
    }
}

/// Unnamed parent of a root supervisor that records how it ended.
struct RootWatcher;

impl Actor for RootWatcher {
    type Msg = ();
    type State = watch::Sender<Option<SupervisorExit>>;
    type Arguments = watch::Sender<Option<SupervisorExit>>;

    async fn pre_start(&self, _myself: ActorRef<()>, tx: Self::Arguments) -> Result<Self::State, ActorProcessingErr> {
        Ok(tx)
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        evt: SupervisionEvent,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let exit = match evt {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let exit = match reason.as_deref() {
                    Some(r @ ("killed" | "actor_task_cancelled")) => SupervisorExit::Failed(r.to_string()),
                    _ => SupervisorExit::Shutdown(reason),
                };
                info!(supervisor = ?cell.get_name(), exit = %exit, "supervision tree ended");
                exit
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let exit = match err.downcast_ref::<SupervisorError>() {
                    Some(e @ SupervisorError::RestartBudgetExceeded { .. }) => SupervisorExit::Escalated(e.to_string()),
                    _ => SupervisorExit::Failed(err.to_string()),
                };
                error!(supervisor = ?cell.get_name(), exit = %exit, "supervision tree ended");
                exit
            }
            _ => return Ok(()),
        };
        tx.send_replace(Some(exit));
        myself.stop(None);
        Ok(())
    }
}
