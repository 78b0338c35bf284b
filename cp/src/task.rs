//! A supervised long-running task: the actor form of "serve this listener" or "run this
//! controller loop", so the supervisor restarts it with backoff when it fails.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use riptides_actors::ChildSpec;
use tokio_util::sync::CancellationToken;

type RunFn = Arc<dyn Fn(CancellationToken) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> + Send + Sync>;

/// Runs one incarnation of the task per actor start; the task gets a token that is cancelled
/// when the actor stops. A task that returns an error (or returns at all before being
/// cancelled) fails the actor, which is what makes its supervisor act.
#[derive(Clone)]
pub struct TaskActor;

pub enum TaskMsg {
    Exited(anyhow::Result<()>),
}

pub struct TaskState {
    cancel: CancellationToken,
}

#[derive(Clone)]
pub struct TaskArgs {
    run: RunFn,
}

impl Actor for TaskActor {
    type Msg = TaskMsg;
    type State = TaskState;
    type Arguments = TaskArgs;

    async fn pre_start(&self, myself: ActorRef<TaskMsg>, args: TaskArgs) -> Result<TaskState, ActorProcessingErr> {
        let cancel = CancellationToken::new();
        let fut = (args.run)(cancel.clone());
        let token = cancel.clone();
        tokio::spawn(async move {
            let result = tokio::select! {
                r = fut => r,
                _ = token.cancelled() => Ok(()),
            };
            if !token.is_cancelled() {
                let _ = myself.send_message(TaskMsg::Exited(result));
            }
        });
        Ok(TaskState { cancel })
    }

    async fn handle(
        &self,
        _myself: ActorRef<TaskMsg>,
        msg: TaskMsg,
        _state: &mut TaskState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TaskMsg::Exited(Ok(())) => Err("task ended unexpectedly".into()),
            TaskMsg::Exited(Err(e)) => Err(format!("{e:#}").into()),
        }
    }

    async fn post_stop(&self, _myself: ActorRef<TaskMsg>, state: &mut TaskState) -> Result<(), ActorProcessingErr> {
        state.cancel.cancel();
        Ok(())
    }
}

/// A permanent child that runs `run` under supervision.
pub fn task<F, Fut>(name: &str, run: F) -> ChildSpec
where
    F: Fn(CancellationToken) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let run: RunFn = Arc::new(move |c| Box::pin(run(c)));
    ChildSpec::actor(name, TaskActor, TaskArgs { run })
}
