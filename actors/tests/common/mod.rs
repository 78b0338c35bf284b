//! Test actors and helpers shared by the integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use riptides_actors::{Backoff, ChildInfo, ChildSpec, SupervisorRef};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Lifecycle events reported by test actors.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Started(String, Instant),
    Stopped(String),
}

pub type Probe = mpsc::UnboundedSender<Event>;

pub fn probe() -> (Probe, mpsc::UnboundedReceiver<Event>) {
    mpsc::unbounded_channel()
}

/// How a [`Worker`] behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Serves messages normally.
    Normal,
    /// Fails right after starting (in `post_start`), every incarnation.
    CrashOnStart,
    /// Takes far too long in `post_stop` (to exercise kill-after-timeout).
    SlowStop,
}

#[derive(Clone)]
pub struct Worker;

#[derive(Clone)]
pub struct WorkerArgs {
    pub probe: Probe,
    pub mode: Mode,
}

pub enum WorkerMsg {
    /// Increments the counter and replies with it.
    Ping(RpcReplyPort<u64>),
    Panic,
    StopNormally,
}

pub struct WorkerState {
    name: String,
    count: u64,
    args: WorkerArgs,
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<WorkerMsg>,
        args: WorkerArgs,
    ) -> Result<WorkerState, ActorProcessingErr> {
        let name = myself.get_name().unwrap_or_default();
        let _ = args.probe.send(Event::Started(name.clone(), Instant::now()));
        Ok(WorkerState { name, count: 0, args })
    }

    async fn post_start(
        &self,
        _myself: ActorRef<WorkerMsg>,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        if state.args.mode == Mode::CrashOnStart {
            return Err("crash on start".into());
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<WorkerMsg>, state: &mut WorkerState) -> Result<(), ActorProcessingErr> {
        if state.args.mode == Mode::SlowStop {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        let _ = state.args.probe.send(Event::Stopped(state.name.clone()));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Ping(reply) => {
                state.count += 1;
                let _ = reply.send(state.count);
            }
            WorkerMsg::Panic => panic!("boom in {}", state.name),
            WorkerMsg::StopNormally => myself.stop(None),
        }
        Ok(())
    }
}

pub fn fast_backoff() -> Backoff {
    Backoff::fixed_growth(Duration::from_millis(5), Duration::from_millis(50), 2.0)
}

pub fn worker(name: &str, probe: &Probe, mode: Mode) -> ChildSpec {
    ChildSpec::actor(name, Worker, WorkerArgs { probe: probe.clone(), mode })
        .backoff(fast_backoff())
        .shutdown_timeout(Duration::from_secs(5))
}

pub fn worker_ref(name: &str) -> ActorRef<WorkerMsg> {
    ActorRef::<WorkerMsg>::where_is(name).unwrap_or_else(|| panic!("{name} not registered"))
}

pub async fn ping(name: &str) -> u64 {
    ractor::call!(worker_ref(name), WorkerMsg::Ping).expect("ping")
}

/// Generous bound for anything that should happen "soon".
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Next `Started` event for `name` (skipping other events).
pub async fn next_start(rx: &mut mpsc::UnboundedReceiver<Event>, name: &str) -> Instant {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match rx.recv().await.expect("probe open") {
                Event::Started(n, at) if n == name => return at,
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{name} did not start"))
}

/// Next event of any kind.
pub async fn next_event(rx: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(PATIENCE, rx.recv()).await.expect("event in time").expect("probe open")
}

/// Polls `sup`'s children until `cond` holds (the supervisor handles exits asynchronously).
pub async fn children_until(sup: &SupervisorRef, mut cond: impl FnMut(&[ChildInfo]) -> bool) -> Vec<ChildInfo> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let list = sup.list_children().await.expect("list");
        if cond(&list) {
            return list;
        }
        assert!(Instant::now() < deadline, "children never matched: {list:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn eventually<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn find<'a>(list: &'a [ChildInfo], name: &str) -> Option<&'a ChildInfo> {
    list.iter().find(|c| c.name == name)
}

pub fn registered(name: &str) -> bool {
    ractor::registry::where_is(name).is_some()
}
