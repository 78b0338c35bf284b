//! The kernel connector: the daemon's side of `riptides.ko` (KERNEL_PATH.md).
//!
//! A supervised task (like the userspace connector's listeners) keeps one [`Session`] with the
//! family: it registers the daemon (`SET_CONFIG`), feeds the trust bundle and the
//! interception table whenever policy changes, reads the module's health (`GET_STATS`), and
//! services `HANDSHAKE_REQUEST`s concurrently (bounded by a semaphore), each in a span with
//! the connection id, 4-tuple, pid and identity. When the family goes away (module unloaded)
//! or the socket fails, it reconnects with backoff and feeds everything again.
//!
//! Per request, the same [`Rules`] as the userspace path decide, with the workload taken from
//! the process context the module captured (pid → `/proc` labels; the kernel's comm/exe/uid
//! when the process is gone):
//! - passthrough decisions (no workload, no Service/egress rule, no ingress rule) →
//!   `SET_VERDICT ALLOW`; undecidable (no policy yet, no SVID) or unsupported → `DENY`;
//! - MUTUAL / PERMISSIVE → `HANDSHAKE_ACCEPT`, the shared rustls handshake over the fd
//!   ([`HandoverStream`], record-exact), secrets extracted, kTLS installed, then
//!   `HANDSHAKE_DONE(0, peer, ALLOW)`; any failure → `HANDSHAKE_DONE(errno, DENY)`.
//!   The fd is closed afterwards in every case.
//!
//! Differences from the userspace path, all failing closed:
//! - SIMPLE (TLS to external services) is refused: it needs TLS 1.2 kTLS and the
//!   application's own ClientHello, which the held socket has not sent yet.
//! - PERMISSIVE egress to a peer that turns out not to be a Riptides node: the ClientHello
//!   already went out on the application's socket, so this connection is refused; the
//!   destination is remembered and the next connections to it pass in plaintext.
//! - PERMISSIVE ingress with a plaintext first byte: the connection was already taken; the
//!   connector asks the module to release it (`SET_VERDICT ALLOW`), and refuses it if the
//!   module does not allow that after `HANDSHAKE_ACCEPT`.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use riptides_wire::proto::messages::PolicyDocument;
use riptides_wire::resource::core::TlsMode;
use riptides_wire::SpiffeId;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{field, Instrument};

use super::client::{Incoming, Session};
use super::fd::HandoverStream;
use super::msg::{ConnContext, ConnEvent, Event, KDirection, KernelSettings, PolicyEntry, Verdict};
use super::{ktls, policy};
use crate::backoff;
use crate::dataplane::handshake::{
    accept_mtls, connect_mtls, Alpn, HandshakeConfig, HandshakeError, HandshakeInfo, Svid,
};
use crate::dataplane::process::{self, BinaryHasher};
use crate::dataplane::rules::{EgressDecision, ProcessLabels, Rules};
use crate::dataplane::table::{ConnectionGuard, ConnectionTable, Direction, RefusedConnection};
use crate::policy_actor::Connector;
use crate::userspace::Credentials;

/// Settings of the kernel connector, defaults in one place.
#[derive(Debug, Clone)]
pub struct KernelConfig {
    /// The shared handshake's limits (secret extraction is always turned on here).
    pub handshake: HandshakeConfig,
    /// Handshakes run at once; more wait (held in the kernel) for a permit.
    pub max_concurrent_handshakes: usize,
    /// How long one netlink command may take to be answered.
    pub request_timeout: Duration,
    /// What the module does with protected sockets while no daemon is registered.
    pub fail_open: bool,
    /// The module's per-request timeout (it refuses a connection not DONE within it).
    pub kernel_handshake_timeout: Duration,
    /// Reconnect backoff (full jitter on `min(cap, base * 2^attempt)`).
    pub reconnect_base: Duration,
    pub reconnect_cap: Duration,
    /// How often `GET_STATS` is read (health; also notices a vanished family).
    pub stats_interval: Duration,
    /// How long a PERMISSIVE destination found not to be a Riptides node is passed in
    /// plaintext before mTLS is tried again.
    pub permissive_memory: Duration,
    /// Where process information is read.
    pub proc_root: PathBuf,
}

impl Default for KernelConfig {
    fn default() -> Self {
        KernelConfig {
            handshake: HandshakeConfig { enable_secret_extraction: true, ..HandshakeConfig::default() },
            max_concurrent_handshakes: 256,
            request_timeout: Duration::from_secs(5),
            fail_open: false,
            kernel_handshake_timeout: Duration::from_secs(15),
            reconnect_base: Duration::from_millis(100),
            reconnect_cap: Duration::from_secs(5),
            stats_interval: Duration::from_secs(5),
            permissive_memory: Duration::from_secs(300),
            proc_root: PathBuf::from("/proc"),
        }
    }
}

/// What the policy actor handed over last, ready to feed.
#[derive(Clone)]
struct Fed {
    revision: u64,
    rules: Arc<Rules>,
    entries: Arc<Vec<PolicyEntry>>,
    bundle_sequence: u64,
    bundle: Arc<Vec<Vec<u8>>>,
}

struct Inner {
    cfg: KernelConfig,
    trust_domain: String,
    shared: crate::state::Shared,
    creds: watch::Receiver<Credentials>,
    table: Arc<ConnectionTable>,
    policy: watch::Sender<Option<Fed>>,
    hasher: BinaryHasher,
    plaintext_peers: Mutex<HashMap<SocketAddr, Instant>>,
    /// Connection rows by the module's connection id, removed on its CLOSED/REFUSED events.
    rows: Mutex<HashMap<u64, ConnectionGuard>>,
    permits: Arc<Semaphore>,
    cancel: CancellationToken,
}

/// A running kernel connector.
#[derive(Clone)]
pub struct Kernel {
    inner: Arc<Inner>,
}

impl Kernel {
    /// Connects to the family (failing clearly when it is absent) and starts the session task.
    pub async fn start(
        mut cfg: KernelConfig,
        trust_domain: String,
        shared: crate::state::Shared,
        creds: watch::Receiver<Credentials>,
        table: Arc<ConnectionTable>,
    ) -> anyhow::Result<Kernel> {
        cfg.handshake.enable_secret_extraction = true;
        let (events_tx, events_rx) = mpsc::channel(8192);
        let first = Session::connect(cfg.request_timeout, events_tx).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot use the riptides kernel module: {e} (load riptides.ko, or use --dataplane userspace)"
            )
        })?;
        tracing::info!(
            family_id = first.family.id,
            version = first.family.version,
            "kernel dataplane: riptides family found"
        );
        let inner = Arc::new(Inner {
            permits: Arc::new(Semaphore::new(cfg.max_concurrent_handshakes.max(1))),
            hasher: BinaryHasher::new(1024, 512 << 20),
            cfg,
            trust_domain,
            shared,
            creds,
            table,
            policy: watch::channel(None).0,
            plaintext_peers: Mutex::new(HashMap::new()),
            rows: Mutex::new(HashMap::new()),
            cancel: CancellationToken::new(),
        });
        tokio::spawn(run(inner.clone(), Some((first, events_rx))));
        Ok(Kernel { inner })
    }

    /// Stops the session; the module then treats protected sockets by its fail mode.
    /// Established kTLS connections are not affected.
    pub async fn stop(&self) {
        self.inner.cancel.cancel();
    }
}

impl Connector for Kernel {
    fn name(&self) -> &'static str {
        "kernel"
    }

    fn apply(&self, revision: u64, document: &PolicyDocument) {
        let rules = match Rules::compile(document) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                tracing::error!(revision, error = %e, "policy does not compile; keeping the previous rules");
                return;
            }
        };
        for w in rules.warnings() {
            tracing::warn!(revision, warning = %w, "policy");
        }
        let entries = match policy::translate(&rules) {
            Ok(e) => Arc::new(e),
            Err(e) => {
                tracing::error!(revision, error = %e, "policy cannot be expressed in the kernel table; keeping the previous one");
                return;
            }
        };
        let fed = Fed {
            revision,
            rules,
            entries,
            bundle_sequence: document.bundle.sequence,
            bundle: Arc::new(document.bundle.roots_der.clone()),
        };
        self.inner.policy.send_replace(Some(fed));
    }
}

fn publish(inner: &Inner, problem: Option<String>, detail: Option<serde_json::Value>) {
    inner.shared.update(|s| {
        s.dataplane_problem = problem;
        if let Some(d) = detail {
            s.dataplane_detail = d;
        }
    });
}

async fn run(inner: Arc<Inner>, mut first: Option<(Session, mpsc::Receiver<Incoming>)>) {
    let mut attempt = 0u32;
    loop {
        let (session, events) = match first.take() {
            Some(s) => s,
            None => {
                let (tx, rx) = mpsc::channel(8192);
                let r = tokio::select! {
                    _ = inner.cancel.cancelled() => return,
                    r = Session::connect(inner.cfg.request_timeout, tx) => r,
                };
                match r {
                    Ok(s) => {
                        tracing::info!(family_id = s.family.id, "kernel dataplane: reconnected to the riptides family");
                        (s, rx)
                    }
                    Err(e) => {
                        let delay =
                            backoff::FullJitter::new(inner.cfg.reconnect_base, inner.cfg.reconnect_cap).delay(attempt);
                        attempt = attempt.saturating_add(1);
                        publish(&inner, Some(format!("not connected to the riptides module: {e}")), None);
                        tracing::warn!(error = %e, retry_in = ?delay, "kernel dataplane: cannot connect to the riptides family");
                        tokio::select! {
                            _ = inner.cancel.cancelled() => return,
                            _ = tokio::time::sleep(delay) => continue,
                        }
                    }
                }
            }
        };
        let session = Arc::new(session);
        // Rows of connections released before a reconnect stay until their socket is gone.
        let reason = serve(&inner, session.clone(), events).await;
        match reason {
            None => return,
            Some(r) => {
                tracing::warn!(reason = %r, "kernel dataplane: session lost; reconnecting");
                publish(&inner, Some(format!("session with the riptides module lost: {r}")), None);
                attempt = 0; // the session served: start the backoff over
                tokio::select! {
                    _ = inner.cancel.cancelled() => return,
                    _ = tokio::time::sleep(inner.cfg.reconnect_base) => {}
                }
            }
        }
    }
}

fn settings(inner: &Inner) -> KernelSettings {
    KernelSettings {
        trust_domain: inner.trust_domain.clone(),
        // The module needs a non-empty id; before attestation the daemon has none yet.
        daemon_id: inner.shared.get().daemon_id.unwrap_or_else(|| "unattested".to_owned()),
        fail_open: inner.cfg.fail_open,
        handshake_timeout_ms: inner.cfg.kernel_handshake_timeout.as_millis().min(u32::MAX as u128) as u32,
    }
}

/// Feeds the bundle and table if they differ from what this session has loaded.
async fn feed_policy(session: &Session, fed: &Fed, loaded: &mut (Option<u64>, Option<u64>)) -> Option<String> {
    let mut problem = None;
    if loaded.0 != Some(fed.bundle_sequence) {
        match session.load_bundle(fed.bundle_sequence, &fed.bundle).await {
            Ok(()) => {
                loaded.0 = Some(fed.bundle_sequence);
                tracing::info!(sequence = fed.bundle_sequence, roots = fed.bundle.len(), "kernel: trust bundle loaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "kernel: LOAD_BUNDLE refused");
                problem = Some(format!("the module refused the trust bundle: {e}"));
            }
        }
    }
    if loaded.1 != Some(fed.revision) {
        match session.load_policy(fed.revision, &fed.entries).await {
            Ok(()) => {
                loaded.1 = Some(fed.revision);
                tracing::info!(
                    revision = fed.revision,
                    entries = fed.entries.len(),
                    "kernel: interception table loaded"
                );
            }
            Err(e) => {
                tracing::error!(revision = fed.revision, error = %e, "kernel: LOAD_POLICY refused");
                problem = Some(format!("the module refused the interception table: {e}"));
            }
        }
    }
    problem
}

/// Serves one session until it is lost (`Some(reason)`) or the connector stops (`None`).
async fn serve(inner: &Arc<Inner>, session: Arc<Session>, mut events: mpsc::Receiver<Incoming>) -> Option<String> {
    let mut cfg = settings(inner);
    if let Err(e) = session.set_config(&cfg).await {
        return Some(format!("SET_CONFIG refused: {e}"));
    }
    tracing::info!(daemon_id = %cfg.daemon_id, fail_open = cfg.fail_open, "kernel: registered as the handshake agent");
    let mut loaded = (None, None);
    let mut policy_rx = inner.policy.subscribe();
    let initial = policy_rx.borrow_and_update().clone();
    let mut problem = match initial {
        Some(fed) => feed_policy(&session, &fed, &mut loaded).await,
        None => None,
    };
    publish(inner, problem.clone(), None);
    let mut state_rx = inner.shared.subscribe();
    let mut stats_tick = tokio::time::interval(inner.cfg.stats_interval);
    loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => return None,
            ev = events.recv() => match ev {
                None => return Some("event channel closed".to_owned()),
                Some(Incoming::Lost(reason)) => return Some(reason),
                Some(Incoming::Event(Event::HandshakeRequest(ctx))) => {
                    tokio::spawn(handle(inner.clone(), session.clone(), ctx));
                }
                Some(Incoming::Event(Event::ConnEvent(ev))) => conn_event(inner, &ev),
            },
            r = policy_rx.changed() => {
                if r.is_err() { return None; }
                let fed = policy_rx.borrow_and_update().clone();
                if let Some(fed) = fed {
                    problem = feed_policy(&session, &fed, &mut loaded).await;
                    publish(inner, problem.clone(), None);
                }
            }
            r = state_rx.changed() => {
                if r.is_err() { return None; }
                let now = settings(inner);
                if now != cfg {
                    if let Err(e) = session.set_config(&now).await {
                        return Some(format!("SET_CONFIG refused: {e}"));
                    }
                    tracing::info!(daemon_id = %now.daemon_id, "kernel: configuration updated");
                    cfg = now;
                }
            }
            _ = stats_tick.tick() => {
                sweep_rows(inner).await;
                match session.stats().await {
                    Ok(st) => {
                        let mut p = problem.clone();
                        if !st.daemon_connected && p.is_none() {
                            p = Some("the module does not see this daemon as its registered agent".to_owned());
                        }
                        let detail = serde_json::json!({
                            "familyID": session.family.id,
                            "stats": st,
                        });
                        publish(inner, p, Some(detail));
                    }
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => tracing::warn!(error = %e, "kernel: GET_STATS timed out"),
                    Err(e) => return Some(format!("GET_STATS failed: {e}")),
                }
            },
        }
    }
}

fn conn_event(inner: &Inner, ev: &ConnEvent) {
    use riptides_kmod::uapi::*;
    tracing::debug!(conn = ev.conn_id, event = ev.event_name(), status = ev.status, "kernel connection event");
    if matches!(ev.event, RIPTIDES_EVENT_CLOSED | RIPTIDES_EVENT_REFUSED | RIPTIDES_EVENT_TIMED_OUT) {
        let row = inner.rows.lock().unwrap_or_else(|p| p.into_inner()).remove(&ev.conn_id);
        if let Some(row) = row {
            if ev.event != RIPTIDES_EVENT_CLOSED {
                let reason = format!("the module reported {} (status {})", ev.event_name(), ev.status);
                row.refuse(&reason, None);
            }
        }
    }
}

/// Removes the rows of connections whose socket is gone. Once released (kTLS or plaintext)
/// a socket no longer points at the module, so the module cannot report its close: the
/// daemon looks each 4-tuple up with sock_diag (in its own network namespace, which is the
/// application's: the module works per namespace).
async fn sweep_rows(inner: &Arc<Inner>) {
    let live: Vec<(u64, SocketAddr, SocketAddr)> = inner
        .rows
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(id, g)| {
            let (local, remote) = match g.direction {
                Direction::Outbound => (g.source, g.destination),
                Direction::Inbound => (g.destination, g.source),
            };
            (*id, local, remote)
        })
        .collect();
    if live.is_empty() {
        return;
    }
    let gone = tokio::task::spawn_blocking(move || {
        live.into_iter()
            .filter(|(_, local, remote)| {
                matches!(process::sockdiag::lookup(*local, *remote, Duration::from_secs(1)), Ok(None))
            })
            .map(|(id, _, _)| id)
            .collect::<Vec<u64>>()
    })
    .await
    .unwrap_or_default();
    let mut rows = inner.rows.lock().unwrap_or_else(|p| p.into_inner());
    for id in gone {
        rows.remove(&id);
    }
}

/// What to do with one held connection.
#[derive(Debug)]
enum Plan {
    Verdict(Verdict, String),
    Mtls { mode: TlsMode, workload: SpiffeId, allowed: Vec<SpiffeId>, rules: Arc<Rules> },
}

/// The process labels for the request: `/proc` as the userspace path reads it, with the
/// kernel's own context for whatever `/proc` no longer has (the process exited).
pub fn process_labels(ctx: &ConnContext, proc_root: &std::path::Path, hasher: &BinaryHasher) -> ProcessLabels {
    let info = if ctx.pid != 0 {
        process::info::read(proc_root, ctx.pid, hasher, 4096)
    } else {
        process::ProcessInfo::default()
    };
    let mut l = ProcessLabels::new();
    l.insert(process::LABEL_UID.into(), info.uid.unwrap_or(ctx.uid).to_string());
    l.insert(process::LABEL_GID.into(), info.gid.unwrap_or(ctx.gid).to_string());
    if ctx.pid != 0 {
        l.insert(process::LABEL_PID.into(), ctx.pid.to_string());
    }
    let name = info.name.clone().or_else(|| (!ctx.comm.is_empty()).then(|| ctx.comm.clone()));
    if let Some(n) = name {
        l.insert(process::LABEL_NAME.into(), n);
    }
    let exe =
        info.exe.as_ref().map(|e| e.display().to_string()).or_else(|| (!ctx.exe.is_empty()).then(|| ctx.exe.clone()));
    if let Some(e) = exe {
        l.insert(process::LABEL_BINARY_PATH.into(), e);
    }
    if let Some(h) = info.binary_hash {
        l.insert(process::LABEL_BINARY_HASH.into(), h);
    }
    if let Some(c) = info.cmdline {
        l.insert(process::LABEL_CMDLINE.into(), c);
    }
    l
}

fn remembered_plaintext(inner: &Inner, dst: SocketAddr) -> bool {
    let mut m = inner.plaintext_peers.lock().unwrap_or_else(|p| p.into_inner());
    m.retain(|_, t| t.elapsed() < inner.cfg.permissive_memory);
    m.contains_key(&dst)
}

async fn plan(inner: &Arc<Inner>, ctx: &ConnContext) -> Plan {
    let fed = inner.policy.borrow().clone();
    let Some(fed) = fed else {
        return Plan::Verdict(Verdict::Deny, "no policy applied yet (fail closed)".into());
    };
    let rules = fed.rules;
    match ctx.direction {
        KDirection::Egress => {
            let (i, c) = (inner.clone(), ctx.clone());
            let labels =
                match tokio::task::spawn_blocking(move || process_labels(&c, &i.cfg.proc_root, &i.hasher)).await {
                    Ok(l) => l,
                    Err(e) => return Plan::Verdict(Verdict::Deny, format!("process identification failed: {e}")),
                };
            let Some(w) = rules.select_workload(&labels) else {
                return Plan::Verdict(Verdict::Allow, "no WorkloadIdentity selects the process: passthrough".into());
            };
            match rules.egress_decision(w, ctx.peer, None) {
                EgressDecision::Passthrough => Plan::Verdict(
                    Verdict::Allow,
                    format!("{}: no egress rule covers {}: passthrough", w.spiffe_id, ctx.peer),
                ),
                EgressDecision::Mtls { mode: TlsMode::Simple, .. } => Plan::Verdict(
                    Verdict::Deny,
                    "SIMPLE (TLS to an external service) is not supported on the kernel path; refused".into(),
                ),
                EgressDecision::Mtls { mode: TlsMode::Permissive, .. } if remembered_plaintext(inner, ctx.peer) => {
                    Plan::Verdict(Verdict::Allow, "PERMISSIVE: destination is not a Riptides node: plaintext".into())
                }
                EgressDecision::Mtls { mode, allowed, .. } => {
                    Plan::Mtls { mode, workload: w.spiffe_id.clone(), allowed, rules: rules.clone() }
                }
            }
        }
        KDirection::Ingress => match rules.ingress_decision(ctx.local.port()) {
            None => {
                Plan::Verdict(Verdict::Allow, format!("port {} has no ingress rule: passthrough", ctx.local.port()))
            }
            Some(d) if d.mode == TlsMode::Simple => {
                Plan::Verdict(Verdict::Deny, "SIMPLE ingress is not a node-to-node mode; refused".into())
            }
            Some(d) => Plan::Mtls {
                mode: d.mode,
                workload: d.workload.spiffe_id.clone(),
                allowed: d.allowed.clone(),
                rules: rules.clone(),
            },
        },
    }
}

fn errno_of(e: &HandshakeError) -> i32 {
    match e {
        HandshakeError::PeerNotAllowed { .. } | HandshakeError::UntrustedPeer { .. } => libc::EACCES,
        HandshakeError::Timeout(_) => libc::ETIMEDOUT,
        HandshakeError::NotTls(_) | HandshakeError::WrongAlpn { .. } | HandshakeError::Tls(_) => libc::EPROTO,
        HandshakeError::PeerAlert(_) => libc::ECONNREFUSED,
        HandshakeError::Closed => libc::ECONNRESET,
        HandshakeError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
        HandshakeError::Config(_) => libc::EINVAL,
    }
}

async fn handle(inner: Arc<Inner>, session: Arc<Session>, ctx: ConnContext) {
    let span = tracing::info_span!("kconn", conn = ctx.conn_id, dir = ?ctx.direction, local = %ctx.local,
        peer = %ctx.peer, pid = ctx.pid, comm = %ctx.comm, workload = field::Empty, peer_id = field::Empty);
    handle_inner(&inner, &session, &ctx).instrument(span).await;
}

async fn handle_inner(inner: &Arc<Inner>, session: &Session, ctx: &ConnContext) {
    let direction = match ctx.direction {
        KDirection::Egress => Direction::Outbound,
        KDirection::Ingress => Direction::Inbound,
    };
    let plan = plan(inner, ctx).await;
    let (mode, workload, allowed, rules) = match plan {
        Plan::Verdict(v, why) => {
            match v {
                Verdict::Allow => tracing::debug!(reason = %why, "kernel: released in plaintext"),
                Verdict::Deny => tracing::info!(reason = %why, "kernel: connection refused"),
            }
            if v == Verdict::Allow {
                record_row(inner, ctx, direction, |row| {
                    row.set_mode("passthrough (kernel)");
                    row.set_state("established");
                });
            } else {
                record_refused(inner, ctx, direction, "", None, None, &why);
            }
            if let Err(e) = session.set_verdict(ctx.conn_id, v).await {
                tracing::warn!(error = %e, "kernel: SET_VERDICT failed (the module times the connection out)");
            }
            return;
        }
        Plan::Mtls { mode, workload, allowed, rules } => (mode, workload, allowed, rules),
    };
    tracing::Span::current().record("workload", field::display(&workload));
    let mode_name = format!("{} (kTLS)", format!("{mode:?}").to_uppercase());
    let svid: Option<Arc<Svid>> = inner.creds.borrow().get(workload.as_str()).cloned();
    let Some(svid) = svid else {
        tracing::info!("kernel: no SVID for {workload} yet; refusing (fail closed)");
        let why = format!("no SVID for {workload} yet (fail closed)");
        record_refused(inner, ctx, direction, &mode_name, Some(&workload), None, &why);
        let _ = session.set_verdict(ctx.conn_id, Verdict::Deny).await;
        return;
    };
    let Ok(_permit) = inner.permits.clone().acquire_owned().await else { return };
    let fd = match session.handshake_accept(ctx.conn_id).await {
        Ok(fd) => fd,
        Err(e) => {
            // Closed by the application meanwhile (ENOENT), timed out, or the module went away.
            tracing::info!(error = %e, "kernel: HANDSHAKE_ACCEPT failed");
            let why = format!("HANDSHAKE_ACCEPT failed: {e}");
            record_refused(inner, ctx, direction, &mode_name, Some(&workload), None, &why);
            return;
        }
    };
    let started = Instant::now();
    let result = run_handshake(inner, session, ctx, fd, mode, &svid, &allowed, &rules).await;
    match result {
        Ok(Some((info, suite, fd))) => {
            let peer = info.peer_id.as_ref().map(|p| p.to_string());
            tracing::Span::current().record("peer_id", field::debug(&peer));
            match session.handshake_done(ctx.conn_id, 0, peer.as_deref(), Verdict::Allow).await {
                Ok(()) => {
                    tracing::info!(mode = ?mode, suite, kx = %info.kx_group_name(), took = ?started.elapsed(),
                        "kernel: mTLS established, kTLS installed");
                    record_row(inner, ctx, direction, |row| {
                        row.set_own_id(&workload);
                        row.set_mode(mode_name.clone());
                        row.set_handshake(&info);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "kernel: HANDSHAKE_DONE refused");
                    let why = format!("the module refused HANDSHAKE_DONE: {e}");
                    record_refused(inner, ctx, direction, &mode_name, Some(&workload), info.peer_id.as_ref(), &why);
                }
            }
            // Closed only now (KERNEL_PATH.md step 6): the application's own fd keeps the socket.
            drop(fd);
        }
        Ok(None) => {} // released in plaintext (PERMISSIVE ingress)
        Err(HsFailure { errno, why, peer }) => {
            tracing::info!(errno, error = %why, "kernel: handshake failed; connection refused");
            record_refused(inner, ctx, direction, &mode_name, Some(&workload), peer.as_ref(), &why);
            if let Err(e) = session.handshake_done(ctx.conn_id, errno as u32, None, Verdict::Deny).await {
                tracing::debug!(error = %e, "kernel: HANDSHAKE_DONE (refusal) not accepted");
            }
        }
    }
}

/// Remembers a refused connection (no row was recorded for it) in the table.
#[allow(clippy::too_many_arguments)]
fn record_refused(
    inner: &Inner,
    ctx: &ConnContext,
    direction: Direction,
    mode: &str,
    own_id: Option<&SpiffeId>,
    peer_id: Option<&SpiffeId>,
    reason: &str,
) {
    let (source, destination) = match direction {
        Direction::Outbound => (ctx.local, ctx.peer),
        Direction::Inbound => (ctx.peer, ctx.local),
    };
    inner.table.record_refused(RefusedConnection { source, destination, direction, mode, own_id, peer_id, reason });
}

fn record_row(
    inner: &Inner,
    ctx: &ConnContext,
    direction: Direction,
    f: impl FnOnce(&crate::dataplane::table::ConnectionRow),
) {
    let (src, dst) = match direction {
        Direction::Outbound => (ctx.local, ctx.peer),
        Direction::Inbound => (ctx.peer, ctx.local),
    };
    match inner.table.insert(src, dst, direction) {
        Ok(g) => {
            f(g.row());
            inner.rows.lock().unwrap_or_else(|p| p.into_inner()).insert(ctx.conn_id, g);
        }
        Err(e) => tracing::warn!(error = %e, "kernel: connection not recorded"),
    }
}

type HsResult = Result<Option<(HandshakeInfo, &'static str, std::os::fd::OwnedFd)>, HsFailure>;

/// Why the daemon-side handshake failed: the errno the module passes to the application, the
/// reason for logs and the connection table, and the peer's identity when the refusal named it.
#[derive(Debug)]
struct HsFailure {
    errno: i32,
    why: String,
    peer: Option<SpiffeId>,
}

impl From<(i32, String)> for HsFailure {
    fn from((errno, why): (i32, String)) -> HsFailure {
        HsFailure { errno, why, peer: None }
    }
}

impl From<HandshakeError> for HsFailure {
    fn from(e: HandshakeError) -> HsFailure {
        HsFailure { errno: errno_of(&e), why: e.to_string(), peer: e.peer_id().cloned() }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_handshake(
    inner: &Inner,
    session: &Session,
    ctx: &ConnContext,
    fd: std::os::fd::OwnedFd,
    mode: TlsMode,
    svid: &Svid,
    allowed: &[SpiffeId],
    rules: &Rules,
) -> HsResult {
    let io_err = |what: &str, e: io::Error| (e.raw_os_error().unwrap_or(libc::EIO), format!("{what}: {e}"));
    let stream = HandoverStream::new(fd).map_err(|e| io_err("registering the fd", e))?;
    let hs = &inner.cfg.handshake;
    let (stream, secrets, info) = match ctx.direction {
        KDirection::Egress => match connect_mtls(stream, svid, allowed, rules.bundles(), Alpn::Riptides, hs).await {
            Ok((tls, info)) => {
                let (stream, conn) = tls.into_inner();
                if conn.wants_write() || !stream.at_record_boundary() {
                    return Err((libc::EPROTO, "handshake left unsent or partial records".to_owned()).into());
                }
                let s =
                    conn.dangerous_extract_secrets().map_err(|e| (libc::EPROTO, format!("extracting secrets: {e}")))?;
                (stream, s, info)
            }
            Err(e) if mode == TlsMode::Permissive && e.peer_is_not_riptides() => {
                inner.plaintext_peers.lock().unwrap_or_else(|p| p.into_inner()).insert(ctx.peer, Instant::now());
                return Err((libc::ECONNREFUSED, format!("PERMISSIVE: {} is not a Riptides node ({e}); this connection is refused, the next ones pass in plaintext", ctx.peer)).into());
            }
            Err(e) => return Err(e.into()),
        },
        KDirection::Ingress => {
            if mode == TlsMode::Permissive {
                let mut first = [0u8; 1];
                let peeked = tokio::time::timeout(hs.sniff_timeout, stream.peek(&mut first)).await;
                if matches!(peeked, Ok(Ok(1))) && first[0] != 0x16 {
                    drop(stream);
                    return match session.set_verdict(ctx.conn_id, Verdict::Allow).await {
                        Ok(()) => {
                            tracing::info!("kernel: PERMISSIVE port, plaintext client: released in plaintext");
                            Ok(None)
                        }
                        Err(e) => Err((libc::EPROTO, format!("PERMISSIVE plaintext client, but the module cannot release a taken socket in plaintext: {e}")).into()),
                    };
                }
            }
            match accept_mtls(stream, svid, allowed, rules.bundles(), hs).await {
                Ok((tls, info)) => {
                    let (stream, conn) = tls.into_inner();
                    if conn.wants_write() || !stream.at_record_boundary() {
                        return Err((libc::EPROTO, "handshake left unsent or partial records".to_owned()).into());
                    }
                    let s = conn
                        .dangerous_extract_secrets()
                        .map_err(|e| (libc::EPROTO, format!("extracting secrets: {e}")))?;
                    (stream, s, info)
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let fd = stream.into_fd();
    let suite = ktls::install(std::os::fd::AsFd::as_fd(&fd), secrets).map_err(|e| io_err("installing kTLS", e))?;
    Ok(Some((info, suite, fd)))
}
