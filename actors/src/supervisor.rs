//! The one-for-one [`Supervisor`] actor.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::budget::RestartBudget;
use crate::messages::{
    ChildInfo, ChildStatus, Internal, InternalKind, SupervisorConfig, SupervisorError, SupervisorMsg,
};
use crate::spec::{ChildSpec, Restart, DEFAULT_SUPERVISOR_SHUTDOWN_TIMEOUT};

/// A one-for-one supervisor: each child is restarted on its own, per its [`ChildSpec`],
/// with backoff and a shared restart budget; exhausting the budget stops the supervisor
/// with a [`SupervisorError::RestartBudgetExceeded`] failure (escalation).
///
/// Start a tree with [`Supervisor::start`](crate::Supervisor::start); nest one with
/// [`ChildSpec::supervisor`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Supervisor;

/// Start-up arguments of a [`Supervisor`].
#[derive(Debug, Clone)]
pub struct SupervisorArgs {
    /// Registered name of the supervisor and prefix of its children's names.
    pub name: String,
    /// Budget settings.
    pub config: SupervisorConfig,
    /// Children started (in order) before the supervisor reports started.
    pub children: Vec<ChildSpec>,
}

impl SupervisorArgs {
    /// Bundle the arguments.
    pub fn new(name: impl Into<String>, config: SupervisorConfig, children: Vec<ChildSpec>) -> Self {
        Self { name: name.into(), config, children }
    }
}

/// Internal state of a [`Supervisor`] (opaque).
pub struct SupervisorState {
    name: String,
    config: SupervisorConfig,
    budget: RestartBudget,
    /// Children keyed by insertion sequence: iteration order is start order.
    children: BTreeMap<u64, ChildEntry>,
    by_name: HashMap<String, u64>,
    by_id: HashMap<ActorId, u64>,
    next_seq: u64,
}

struct ChildEntry {
    spec: ChildSpec,
    full_name: String,
    cell: Option<ActorCell>,
    status: ChildStatus,
    /// Incremented for every scheduled restart; stale timers carry an old epoch.
    epoch: u64,
    restarts: u64,
    consecutive_failures: u32,
    started_at: Instant,
    last_exit: Option<String>,
    removal_waiters: Vec<RpcReplyPort<Result<(), SupervisorError>>>,
}

/// How a child ended, as classified from its supervision event.
struct ChildExit {
    abnormal: bool,
    reason: String,
}

impl ChildSpec {
    /// A nested [`Supervisor`] as a child: restarting it restarts its whole subtree from
    /// `children`. Its registered name (`"<parent>/<name>"`) is the prefix of its children.
    /// Default shutdown timeout is [`DEFAULT_SUPERVISOR_SHUTDOWN_TIMEOUT`].
    pub fn supervisor(name: impl Into<String>, config: SupervisorConfig, children: Vec<ChildSpec>) -> Self {
        ChildSpec::new(name, move |full_name: String, parent: ActorCell| {
            let args = SupervisorArgs::new(full_name.clone(), config.clone(), children.clone());
            async move {
                let (r, _join) = Supervisor::spawn_linked(Some(full_name), Supervisor, args, parent).await?;
                Ok(r.get_cell())
            }
        })
        .shutdown_timeout(DEFAULT_SUPERVISOR_SHUTDOWN_TIMEOUT)
    }
}

impl SupervisorState {
    fn full_name(&self, child: &str) -> String {
        format!("{}/{}", self.name, child)
    }

    /// Runs the child's factory, links it, and records it as running.
    async fn start_entry(&mut self, myself: &ActorRef<SupervisorMsg>, seq: u64) -> Result<ActorCell, ractor::SpawnErr> {
        let entry = self.children.get_mut(&seq).expect("child entry exists");
        entry.started_at = Instant::now();
        let fut = (entry.spec.factory)(entry.full_name.clone(), myself.get_cell());
        let cell = fut.await?;
        if cell.try_get_supervisor().map(|s| s.get_id()) != Some(myself.get_id()) {
            warn!(supervisor = %self.name, child = %entry.full_name,
                "child factory did not link the child to its supervisor; linking now");
            cell.link(myself.get_cell());
        }
        entry.cell = Some(cell.clone());
        entry.status = ChildStatus::Running;
        self.by_id.insert(cell.get_id(), seq);
        Ok(cell)
    }

    async fn add_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        spec: ChildSpec,
    ) -> Result<ActorCell, SupervisorError> {
        if self.by_name.contains_key(&spec.name) {
            return Err(SupervisorError::DuplicateChild(spec.name));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let full_name = self.full_name(&spec.name);
        self.by_name.insert(spec.name.clone(), seq);
        self.children.insert(
            seq,
            ChildEntry {
                spec,
                full_name: full_name.clone(),
                cell: None,
                status: ChildStatus::Stopped,
                epoch: 0,
                restarts: 0,
                consecutive_failures: 0,
                started_at: Instant::now(),
                last_exit: None,
                removal_waiters: Vec::new(),
            },
        );
        match self.start_entry(myself, seq).await {
            Ok(cell) => {
                info!(supervisor = %self.name, child = %full_name, actor = %cell.get_id(),
                    "child started");
                Ok(cell)
            }
            Err(source) => {
                error!(supervisor = %self.name, child = %full_name, error = %source,
                    "child failed to start");
                self.forget(seq);
                Err(SupervisorError::SpawnFailed { child: full_name, source })
            }
        }
    }

    fn forget(&mut self, seq: u64) -> Option<ChildEntry> {
        let entry = self.children.remove(&seq)?;
        self.by_name.remove(&entry.spec.name);
        if let Some(cell) = &entry.cell {
            self.by_id.remove(&cell.get_id());
        }
        Some(entry)
    }

    /// Handles the exit of child `seq` (its actor already gone): removal, restart, or
    /// escalation.
    fn on_child_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        seq: u64,
        exit: ChildExit,
    ) -> Result<(), SupervisorError> {
        let Some(entry) = self.children.get_mut(&seq) else {
            return Ok(());
        };
        if let Some(cell) = entry.cell.take() {
            self.by_id.remove(&cell.get_id());
        }
        entry.last_exit = Some(exit.reason.clone());
        let child = entry.full_name.clone();

        if entry.status == ChildStatus::Stopping {
            info!(supervisor = %self.name, child = %child, reason = %exit.reason,
                "child stopped; removed");
            if let Some(entry) = self.forget(seq) {
                for w in entry.removal_waiters {
                    let _ = w.send(Ok(()));
                }
            }
            return Ok(());
        }

        if exit.abnormal {
            error!(supervisor = %self.name, child = %child, reason = %exit.reason,
                "child failed");
        } else {
            info!(supervisor = %self.name, child = %child, reason = %exit.reason,
                "child exited normally");
        }

        let restart = match entry.spec.restart {
            Restart::Permanent => true,
            Restart::Transient => exit.abnormal,
            Restart::Temporary => false,
        };
        if !restart {
            if entry.spec.restart == Restart::Temporary {
                info!(supervisor = %self.name, child = %child,
                    "temporary child exited; forgotten");
                self.forget(seq);
            } else {
                info!(supervisor = %self.name, child = %child,
                    "transient child exited normally; not restarted");
                entry.status = ChildStatus::Stopped;
            }
            return Ok(());
        }

        let now = Instant::now();
        if !self.budget.try_consume(now) {
            let err = SupervisorError::RestartBudgetExceeded {
                supervisor: self.name.clone(),
                max_restarts: self.config.max_restarts,
                window: self.config.max_window,
                child,
                reason: exit.reason,
            };
            error!(supervisor = %self.name, error = %err, "restart budget exceeded; escalating");
            return Err(err);
        }

        let entry = self.children.get_mut(&seq).expect("entry still present");
        if now.saturating_duration_since(entry.started_at) >= entry.spec.backoff.reset_after {
            entry.consecutive_failures = 0;
        }
        let delay = entry.spec.backoff.delay(entry.consecutive_failures);
        entry.consecutive_failures = entry.consecutive_failures.saturating_add(1);
        entry.epoch += 1;
        entry.status = ChildStatus::Backoff { delay };
        let epoch = entry.epoch;
        warn!(supervisor = %self.name, child = %child, attempt = entry.restarts + 1,
            delay_ms = delay.as_millis() as u64, "scheduling child restart");
        schedule(myself, delay, InternalKind::Restart { seq, epoch });
        Ok(())
    }

    async fn on_restart_timer(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        seq: u64,
        epoch: u64,
    ) -> Result<(), SupervisorError> {
        let Some(entry) = self.children.get_mut(&seq) else {
            return Ok(());
        };
        if entry.epoch != epoch || !matches!(entry.status, ChildStatus::Backoff { .. }) {
            return Ok(());
        }
        entry.restarts += 1;
        let attempt = entry.restarts;
        let child = entry.full_name.clone();
        match self.start_entry(myself, seq).await {
            Ok(cell) => {
                info!(supervisor = %self.name, child = %child, attempt, actor = %cell.get_id(),
                    "child restarted");
                Ok(())
            }
            Err(e) => {
                let reason = format!("restart failed: {e}");
                self.on_child_exit(myself, seq, ChildExit { abnormal: true, reason })
            }
        }
    }

    fn remove_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        name: String,
        reply: RpcReplyPort<Result<(), SupervisorError>>,
    ) {
        let Some(&seq) = self.by_name.get(&name) else {
            let _ = reply.send(Err(SupervisorError::NoSuchChild(name)));
            return;
        };
        let entry = self.children.get_mut(&seq).expect("indexed child exists");
        match (&entry.cell, &entry.status) {
            (_, ChildStatus::Stopping) => entry.removal_waiters.push(reply),
            (Some(cell), _) => {
                info!(supervisor = %self.name, child = %entry.full_name, "removing child");
                entry.status = ChildStatus::Stopping;
                entry.removal_waiters.push(reply);
                cell.stop(Some("removed by supervisor".into()));
                let id = cell.get_id();
                schedule(myself, entry.spec.shutdown_timeout, InternalKind::StopTimeout { seq, id });
            }
            (None, _) => {
                info!(supervisor = %self.name, child = %entry.full_name,
                    "removing child (not running)");
                self.forget(seq);
                let _ = reply.send(Ok(()));
            }
        }
    }

    fn on_stop_timeout(&mut self, seq: u64, id: ActorId) {
        if let Some(entry) = self.children.get(&seq) {
            if entry.status == ChildStatus::Stopping {
                if let Some(cell) = entry.cell.as_ref().filter(|c| c.get_id() == id) {
                    warn!(supervisor = %self.name, child = %entry.full_name,
                        timeout_ms = entry.spec.shutdown_timeout.as_millis() as u64,
                        "child did not stop in time; killing");
                    cell.kill();
                }
            }
        }
    }

    fn list(&self) -> Vec<ChildInfo> {
        self.children
            .values()
            .map(|e| ChildInfo {
                name: e.spec.name.clone(),
                registered_name: e.full_name.clone(),
                restart: e.spec.restart,
                status: e.status.clone(),
                restarts: e.restarts,
                last_exit: e.last_exit.clone(),
                actor: e.cell.clone(),
            })
            .collect()
    }

    /// Stops every child in reverse start order, waiting for each (then killing it after
    /// its shutdown timeout), and forgets them all.
    async fn shutdown_children(&mut self, reason: &str) {
        let entries = std::mem::take(&mut self.children);
        self.by_name.clear();
        self.by_id.clear();
        for (_, entry) in entries.into_iter().rev() {
            if let Some(cell) = &entry.cell {
                info!(supervisor = %self.name, child = %entry.full_name, reason, "stopping child");
                stop_and_wait(cell, reason, entry.spec.shutdown_timeout, &self.name, &entry.full_name).await;
                info!(supervisor = %self.name, child = %entry.full_name, "child stopped");
            }
            for w in entry.removal_waiters {
                let _ = w.send(Ok(()));
            }
        }
    }
}

async fn stop_and_wait(cell: &ActorCell, reason: &str, timeout: Duration, sup: &str, child: &str) {
    cell.stop(Some(reason.to_string()));
    if cell.wait(Some(timeout)).await.is_err() {
        warn!(supervisor = %sup, child = %child, timeout_ms = timeout.as_millis() as u64,
            "child did not stop in time; killing");
        cell.kill();
        if cell.wait(Some(timeout)).await.is_err() {
            error!(supervisor = %sup, child = %child, "child still running after kill");
        }
    }
}

fn schedule(myself: &ActorRef<SupervisorMsg>, delay: Duration, kind: InternalKind) {
    // A timer task, so the message loop never sleeps; a send to a dead supervisor is ignored.
    drop(myself.send_after(delay, move || SupervisorMsg::Internal(Internal(kind))));
}

fn classify(evt: &SupervisionEvent) -> Option<(ActorId, ChildExit)> {
    match evt {
        SupervisionEvent::ActorFailed(cell, err) => {
            Some((cell.get_id(), ChildExit { abnormal: true, reason: err.to_string() }))
        }
        SupervisionEvent::ActorTerminated(cell, _state, reason) => {
            // ractor reports a killed or cancelled actor as "terminated" with these reasons.
            let abnormal = matches!(reason.as_deref(), Some("killed" | "actor_task_cancelled"));
            Some((
                cell.get_id(),
                ChildExit { abnormal, reason: reason.clone().unwrap_or_else(|| "normal".to_string()) },
            ))
        }
        _ => None,
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = SupervisorState {
            name: args.name,
            budget: RestartBudget::new(args.config.max_restarts, args.config.max_window),
            config: args.config,
            children: BTreeMap::new(),
            by_name: HashMap::new(),
            by_id: HashMap::new(),
            next_seq: 0,
        };
        info!(supervisor = %state.name, children = args.children.len(), "supervisor starting");
        for spec in args.children {
            if let Err(e) = state.add_child(&myself, spec).await {
                error!(supervisor = %state.name, error = %e,
                    "supervisor failed to start its children; stopping the ones started");
                state.shutdown_children("supervisor start failed").await;
                return Err(Box::new(e));
            }
        }
        Ok(state)
    }

    async fn post_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        info!(supervisor = %state.name, "supervisor started");
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        info!(supervisor = %state.name, "supervisor shutting down");
        state.shutdown_children("supervisor shutdown").await;
        info!(supervisor = %state.name, "supervisor stopped");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::AddChild(spec, reply) => {
                let res = state.add_child(&myself, spec).await;
                let _ = reply.send(res);
            }
            SupervisorMsg::RemoveChild(name, reply) => state.remove_child(&myself, name, reply),
            SupervisorMsg::ListChildren(reply) => {
                let _ = reply.send(state.list());
            }
            SupervisorMsg::Internal(Internal(kind)) => match kind {
                InternalKind::Restart { seq, epoch } => {
                    if let Err(e) = state.on_restart_timer(&myself, seq, epoch).await {
                        return escalate(state, e).await;
                    }
                }
                InternalKind::StopTimeout { seq, id } => state.on_stop_timeout(seq, id),
            },
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some((id, exit)) = classify(&evt) else {
            return Ok(());
        };
        let Some(&seq) = state.by_id.get(&id) else {
            debug!(supervisor = %state.name, actor = %id, "exit of an unknown actor ignored");
            return Ok(());
        };
        if let Err(e) = state.on_child_exit(&myself, seq, exit) {
            return escalate(state, e).await;
        }
        Ok(())
    }
}

/// Stops all children in order, then fails the supervisor with `err` so that its own
/// supervisor (or the root watcher) sees an `ActorFailed` event.
async fn escalate(state: &mut SupervisorState, err: SupervisorError) -> Result<(), ActorProcessingErr> {
    state.shutdown_children("supervisor escalating").await;
    error!(supervisor = %state.name, error = %err, "supervisor escalated");
    Err(Box::new(err))
}
