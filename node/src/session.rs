//! The cp-session actor: connects (QUIC first, TCP+TLS fallback), attests when it has to,
//! reconnects with capped exponential backoff and full jitter, watches policy, reports status,
//! answers tunnel streams, and carries CSRs for the certificate manager.
//!
//! The actor's message loop stays responsive: the connection lifecycle runs in a task it owns
//! (aborted when the actor stops), which tells the actor about connections coming and going.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use riptides_wire::proto::messages::{
    AttestRequest, DaemonStatusReport, ErrorCode, HealthReport, ProofAttestRequest, ProtoError, Request, Response,
    SvidMsg, TrustBundleMsg, TunnelRequest, TunnelResponse, WorkloadCsr,
};
use riptides_wire::proto::{read_frame, read_frame_timeout, write_frame, FrameConfig, FrameError};
use riptides_wire::tls::{CertificateDer, ServerTrust};
use riptides_wire::transport::{Connection, QuicClient, TransportKind};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::backoff::FullJitter;
use crate::certs::CertMsg;
use crate::config::CaTrust;
use crate::datadir::PersistedIdentity;
use crate::identity::{self, Identity};
use crate::metadata::MetadataMsg;
use crate::policy_actor::PolicyMsg;
use crate::state::Problem;
use crate::{link, Ctx};

/// A certificate request the certificate manager sends through the session.
#[derive(Debug, Clone)]
pub enum SignRequest {
    /// Renew the daemon's own SVID.
    Daemon {
        csr_der: Vec<u8>,
    },
    Workload(WorkloadCsr),
}

/// Why a CSR did not produce a certificate.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SignError {
    #[error("not connected to the control plane")]
    NotConnected,
    #[error("refused by the control plane: {0}")]
    Refused(ProtoError),
    #[error("{0}")]
    Failed(String),
}

pub enum SessionMsg {
    Sign(SignRequest, RpcReplyPort<Result<SvidMsg, SignError>>),
    /// From the link task.
    LinkUp(Arc<dyn Connection>, u64),
    LinkDown(u64),
    /// A renewed daemon SVID (from the certificate manager): used for the next connection.
    DaemonIdentity(Identity),
    /// A new trust bundle (from the policy actor).
    Bundle(TrustBundleMsg),
    /// From the link task after an attestation (already persisted).
    Attested(Box<PersistedIdentity>),
    /// Something worth reporting changed (policy applied, identities changed).
    StatusChanged,
}

#[derive(Debug, Clone, Default)]
struct Inputs {
    identity: Option<PersistedIdentity>,
}

#[derive(Clone)]
pub struct SessionActor {
    pub ctx: Arc<Ctx>,
}

pub struct SessionState {
    conn: Option<(Arc<dyn Connection>, u64)>,
    inputs: watch::Sender<Inputs>,
    report: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<SessionMsg>, _: ()) -> Result<SessionState, ActorProcessingErr> {
        let identity = match self.ctx.data.load_identity() {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "the identity in the data dir is unreadable; attesting again if a join token was given");
                None
            }
        };
        let (tx, rx) = watch::channel(Inputs { identity });
        let report = Arc::new(Notify::new());
        let span = tracing::info_span!("cp_session", daemon = %self.ctx.root);
        let task = tokio::spawn(run_link(self.ctx.clone(), myself, rx, report.clone()).instrument(span));
        Ok(SessionState { conn: None, inputs: tx, report, task })
    }

    async fn handle(
        &self,
        _myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        st: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionMsg::Sign(req, reply) => {
                let Some((conn, _)) = st.conn.clone() else {
                    let _ = reply.send(Err(SignError::NotConnected));
                    return Ok(());
                };
                let timeout = self.ctx.config.request_timeout;
                tokio::spawn(async move {
                    let request = match req {
                        SignRequest::Daemon { csr_der } => Request::RenewDaemonSvid { csr_der },
                        SignRequest::Workload(w) => Request::SignWorkload(w),
                    };
                    let r = match link::exchange(conn.as_ref(), &request, &FrameConfig::default(), timeout).await {
                        Ok(resp) => match resp.expect_svid() {
                            Ok(svid) => Ok(svid),
                            Err(FrameError::Remote(e)) => Err(SignError::Refused(e)),
                            Err(e) => Err(SignError::Failed(e.to_string())),
                        },
                        Err(e) => Err(SignError::Failed(e.to_string())),
                    };
                    let _ = reply.send(r);
                });
            }
            SessionMsg::LinkUp(conn, epoch) => st.conn = Some((conn, epoch)),
            SessionMsg::LinkDown(epoch) => {
                if st.conn.as_ref().is_some_and(|(_, e)| *e == epoch) {
                    st.conn = None;
                }
            }
            SessionMsg::DaemonIdentity(id) => st.inputs.send_modify(|i| {
                if let Some(p) = i.identity.as_mut() {
                    p.identity = id;
                }
            }),
            SessionMsg::Bundle(b) => st.inputs.send_modify(|i| {
                if let Some(p) = i.identity.as_mut() {
                    if b.sequence >= p.bundle.sequence && !b.roots_der.is_empty() {
                        p.bundle = b;
                    }
                }
            }),
            SessionMsg::Attested(p) => st.inputs.send_modify(|i| i.identity = Some(*p)),
            SessionMsg::StatusChanged => st.report.notify_one(),
        }
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<SessionMsg>, st: &mut SessionState) -> Result<(), ActorProcessingErr> {
        st.task.abort();
        if let Some((conn, _)) = st.conn.take() {
            conn.close("daemon stopping");
        }
        self.ctx.shared.update(|s| {
            s.connected = false;
            s.transport = None;
        });
        Ok(())
    }
}

/// How a connection attempt or a session ended.
enum Ended {
    /// Closed or failed; reconnect after backoff.
    Lost(String),
    /// Switched to a better transport (QUIC came back); use this connection now.
    Upgraded(Arc<dyn Connection>),
}

struct Dialer {
    quic: Option<(QuicClient, bool)>,
    /// When QUIC last failed to connect: skip it for `quic_retry_interval`.
    quic_failed_at: Option<Instant>,
    /// Index of the control-plane endpoint to try first (several replicas): starts at a
    /// random one, so daemons spread, and moves on when a connection is lost.
    cursor: usize,
    /// The endpoint of the current connection (QUIC upgrades go back to it).
    current: Option<link::CpEndpoint>,
}

impl Dialer {
    /// Dials the endpoints in order from the cursor, staggered: the next endpoint is dialled
    /// beside the earlier ones when they have not answered within `endpoint_stagger` (or at
    /// once when one fails), and the first connection wins. One endpoint is one dial as
    /// before; with a dead replica among several, a daemon is back within about a stagger
    /// instead of a QUIC connect timeout.
    async fn dial(
        &mut self,
        ctx: &Ctx,
        trust: ServerTrust,
        identity: Option<&Identity>,
    ) -> anyhow::Result<Arc<dyn Connection>> {
        use futures_util::stream::{FuturesUnordered, StreamExt as _};

        let tls = link::tls(&ctx.config, trust, identity)?;
        let endpoints = link::endpoints(&ctx.config).await?;
        let n = endpoints.len();
        let skip_quic = self.quic_failed_at.is_some_and(|t| t.elapsed() < ctx.config.quic_retry_interval);
        let mut attempts = FuturesUnordered::new();
        let mut launched = 0;
        let mut next_launch = tokio::time::Instant::now();
        let mut last_err = None;
        loop {
            if launched < n && tokio::time::Instant::now() >= next_launch {
                let i = (self.cursor + launched) % n;
                let ep = &endpoints[i];
                let quic = (!skip_quic).then(|| link::quic_client(&ctx.config, &mut self.quic, ep.quic));
                let tls = tls.clone();
                attempts.push(async move { (i, dial_endpoint(&ctx.config, quic, tls, ep).await) });
                launched += 1;
                next_launch = tokio::time::Instant::now() + ctx.config.endpoint_stagger;
            }
            if attempts.is_empty() {
                break;
            }
            tokio::select! {
                Some((i, (res, quic_failed))) = attempts.next() => match res {
                    Ok(c) => {
                        if n > 1 {
                            tracing::info!(controlplane = %endpoints[i].quic, of = n, "using control-plane endpoint");
                        }
                        if quic_failed {
                            // Only when TCP works and QUIC did not is UDP the problem (not a CP
                            // that is down): stay on TCP for a while instead of paying the QUIC
                            // timeout on every reconnect.
                            tracing::warn!("QUIC unreachable but TCP+TLS works (UDP blocked?): using the TCP+TLS fallback");
                            self.quic_failed_at = Some(Instant::now());
                        } else if !skip_quic {
                            self.quic_failed_at = None;
                        }
                        self.cursor = i;
                        self.current = Some(endpoints[i].clone());
                        return Ok(c);
                    }
                    Err(e) => {
                        if n > 1 {
                            tracing::warn!(controlplane = %endpoints[i].quic, error = %format!("{e:#}"), "control-plane endpoint unreachable; trying the next");
                        }
                        last_err = Some(e);
                        next_launch = tokio::time::Instant::now();
                    }
                },
                _ = tokio::time::sleep_until(next_launch), if launched < n => {}
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no control-plane endpoint")))
    }

    /// The next connection should go to another endpoint (the current one was lost).
    fn advance(&mut self) {
        self.cursor = self.cursor.wrapping_add(1);
    }
}

/// One endpoint: QUIC (unless skipped), then its TCP+TLS fallback. Also says whether QUIC
/// was tried and failed.
async fn dial_endpoint(
    cfg: &crate::config::DaemonConfig,
    quic: Option<anyhow::Result<QuicClient>>,
    tls: Arc<rustls::ClientConfig>,
    ep: &link::CpEndpoint,
) -> (anyhow::Result<Arc<dyn Connection>>, bool) {
    let mut quic_failed = false;
    if let Some(client) = quic {
        let dialed = match client {
            Ok(c) => c.connect(ep.quic, tls.clone()).await.map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        match dialed {
            Ok(c) => return (Ok(c), false),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), tunnel = %ep.tunnel, "QUIC connection failed; trying TCP+TLS");
                quic_failed = true;
            }
        }
    }
    (link::dial_tcp_at(cfg, tls, &ep.tunnel).await, quic_failed)
}

/// Where in the endpoint list a daemon starts: random per process, so a fleet spreads over
/// the control-plane replicas.
fn spread_seed() -> usize {
    let mut b = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        return std::process::id() as usize;
    }
    u64::from_le_bytes(b) as usize
}

fn bootstrap_trust(ctx: &Ctx, known: Option<&PersistedIdentity>) -> Result<ServerTrust, String> {
    if let Some(p) = known {
        if !p.bundle.roots_der.is_empty() {
            return Ok(ServerTrust::Bundle(
                p.bundle.roots_der.iter().map(|r| CertificateDer::from(r.clone())).collect(),
            ));
        }
    }
    match &ctx.config.ca {
        Some(CaTrust::Bundle(path)) => riptides_wire::tls::load_certs_file(path)
            .map(ServerTrust::Bundle)
            .map_err(|e| format!("cannot load --ca-bundle {}: {e}", path.display())),
        Some(CaTrust::Pin(pin)) => {
            riptides_wire::tls::parse_pin(pin).map(ServerTrust::Pin).map_err(|e| format!("invalid --ca-pin: {e}"))
        }
        None => {
            Err("no trust in the control plane yet: start the daemon with --ca-bundle FILE or --ca-pin sha256:<hex> \
                     (needed on first start, before it has a trust bundle)"
                .to_owned())
        }
    }
}

const TOKEN_TODO: &str =
    "create a new token with `riptides token create` and restart the daemon with --join-token <token>";

enum AttestFail {
    /// Do not retry without operator action.
    Fatal(Problem),
    Retry(String),
}

async fn attest(
    ctx: &Ctx,
    dialer: &mut Dialer,
    known: Option<&PersistedIdentity>,
) -> Result<PersistedIdentity, AttestFail> {
    let method = ctx.config.attestation.method;
    let token = match (&ctx.config.join_token, method) {
        (Some(t), crate::attest::Method::Token) => Some(t.clone()),
        (None, crate::attest::Method::Token) => {
            let msg = match known {
                Some(p) => format!(
                    "the daemon SVID {} expired at {} while the daemon could not renew it, and no join token was given: \
                     create a new token with `riptides token create` and restart the daemon with --join-token <token>",
                    p.identity.spiffe_id,
                    crate::rfc3339(identity::unix(p.identity.not_after))
                ),
                None => "the daemon has no identity yet and no join token was given: create a token with \
                         `riptides token create` and start the daemon with --join-token <token>"
                    .to_owned(),
            };
            return Err(AttestFail::Fatal(Problem::NeedsJoinToken(msg)));
        }
        _ => None,
    };
    let trust = bootstrap_trust(ctx, known).map_err(|m| AttestFail::Fatal(Problem::NoTrust(m)))?;
    // The same key across retries: a retry after a lost answer is then recognised as ours.
    let key = ctx.data.pending_attestation_key().map_err(|e| AttestFail::Retry(format!("{e:#}")))?;
    let csr_der = identity::csr_der(&key, None).map_err(|e| AttestFail::Retry(e.to_string()))?;
    let host = match ctx.metadata() {
        Some(m) => ractor::call!(m, MetadataMsg::Get).unwrap_or_default(),
        None => Default::default(),
    };
    // Collected before dialing (and fresh every attempt: tokens rotate); a metadata service or
    // a token file that is not there yet is retried with backoff.
    let collected = match token {
        Some(_) => None,
        None => Some(
            crate::attest::collect(&ctx.config.attestation)
                .await
                .map_err(|e| AttestFail::Retry(format!("collecting the {method} attestation proof: {e:#}")))?,
        ),
    };
    let conn = dialer.dial(ctx, trust, None).await.map_err(|e| AttestFail::Retry(format!("{e:#}")))?;
    let timeout = ctx.config.request_timeout;
    let resp = match (token, collected) {
        (Some(token), _) => {
            tracing::info!(token_id = token.id(), transport = %conn.kind(), "attesting with a join token");
            let req = Request::Attest(AttestRequest { token: token.secret_text().to_owned(), csr_der, host });
            link::exchange(conn.as_ref(), &req, &FrameConfig::default(), timeout).await
        }
        (None, Some(c)) => {
            tracing::info!(%method, verifier = ?ctx.config.attestation.verifier, transport = %conn.kind(), "attesting");
            let csr_key =
                riptides_wire::resource::auth::sha256_tagged(&rcgen::PublicKeyData::subject_public_key_info(&key));
            let req = Request::AttestProof(ProofAttestRequest {
                verifier: ctx.config.attestation.verifier.clone(),
                proof: c.proof,
                csr_der,
                host,
            });
            crate::attest::exchange(conn.as_ref(), &req, c.signer.as_ref(), &csr_key, timeout).await
        }
        (None, None) => Err(FrameError::Closed),
    };
    conn.close("attested");
    let att = match resp.map(|r| r.expect_attested()) {
        Ok(Ok(a)) => a,
        Ok(Err(FrameError::Remote(e))) | Err(FrameError::Remote(e)) => {
            if e.code.is_retryable() {
                return Err(AttestFail::Retry(format!("attestation: {e}")));
            }
            let (what, todo) = match e.code {
                ErrorCode::TokenUsed => ("the join token was already used (tokens are single use)", TOKEN_TODO),
                ErrorCode::TokenExpired => ("the join token has expired", TOKEN_TODO),
                ErrorCode::InvalidToken => ("the join token is unknown or malformed", TOKEN_TODO),
                ErrorCode::AlreadyAttested => (
                    "this instance already attested a daemon (trust on first use)",
                    "an operator must delete that Daemon resource (`riptides ctl delete daemon <id>`) before this \
                     instance can attest again",
                ),
                ErrorCode::InvalidProof => (
                    "the attestation proof was refused",
                    "check the Verifier resource and the daemon's --attestation settings, then restart the daemon",
                ),
                _ if method == crate::attest::Method::Token => ("attestation was refused", TOKEN_TODO),
                _ => ("attestation was refused", "check the Verifier resource, then restart the daemon"),
            };
            return Err(AttestFail::Fatal(Problem::AttestationRefused(format!(
                "{what} ({}: {}): {todo}",
                e.code, e.message
            ))));
        }
        Ok(Err(e)) | Err(e) => return Err(AttestFail::Retry(format!("attestation exchange: {e}"))),
    };
    let identity = Identity::new(att.spiffe_id.clone(), key.serialize_pem(), att.svid_chain_der)
        .map_err(|e| AttestFail::Retry(format!("the attestation answer carries an unusable SVID: {e:#}")))?;
    match riptides_wire::tls::peer_spiffe_id(&[CertificateDer::from(identity.chain_der[0].clone())]) {
        Ok(id) if id.as_str() == att.spiffe_id => {}
        other => {
            return Err(AttestFail::Retry(format!("the SVID's SPIFFE ID does not match {}: {other:?}", att.spiffe_id)))
        }
    }
    if att.bundle.roots_der.is_empty() {
        return Err(AttestFail::Retry("the attestation answer carries an empty trust bundle".into()));
    }
    let p = PersistedIdentity { daemon_id: att.daemon_id, identity, bundle: att.bundle };
    // Persist everything before using it.
    ctx.data.save_identity(&p).map_err(|e| AttestFail::Retry(format!("persisting the identity: {e:#}")))?;
    ctx.data.clear_pending_attestation_key();
    tracing::info!(daemon_id = %p.daemon_id, spiffe_id = %p.identity.spiffe_id, not_after = identity::unix(p.identity.not_after), "attested");
    Ok(p)
}

async fn run_link(
    ctx: Arc<Ctx>,
    myself: ActorRef<SessionMsg>,
    mut inputs: watch::Receiver<Inputs>,
    report: Arc<Notify>,
) {
    let backoff = FullJitter::new(ctx.config.reconnect_base, ctx.config.reconnect_cap);
    let mut attempt: u32 = 0;
    let mut dialer = Dialer { quic: None, quic_failed_at: None, cursor: spread_seed(), current: None };
    let mut epoch = 0u64;
    let mut next: Option<Arc<dyn Connection>> = None;
    loop {
        let known = inputs.borrow_and_update().identity.clone();
        let now = SystemTime::now();
        let current = match known {
            Some(p) if p.identity.is_valid_at(now) => p,
            other => match attest(&ctx, &mut dialer, other.as_ref()).await {
                Ok(p) => {
                    ctx.shared.update(|s| s.problem = None);
                    if let Some(c) = ctx.certs() {
                        let _ = c.cast(CertMsg::DaemonIdentity(p.identity.clone()));
                    }
                    if let Some(pol) = ctx.policy() {
                        let _ = pol.cast(PolicyMsg::Attested(p.bundle.clone()));
                    }
                    let _ = myself.cast(SessionMsg::Attested(Box::new(p.clone())));
                    ctx.shared.update(|s| {
                        s.daemon_id = Some(p.daemon_id.clone());
                        s.spiffe_id = Some(p.identity.spiffe_id.clone());
                    });
                    p
                }
                Err(AttestFail::Fatal(problem)) => {
                    tracing::error!(problem = %problem.message(), "cannot obtain a daemon identity; serving cached state until the operator acts");
                    ctx.shared.update(|s| {
                        s.problem = Some(problem.clone());
                        s.last_error = Some(problem.message().to_owned());
                    });
                    // Nothing will change by retrying: wait for new inputs (or forever).
                    if inputs.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                Err(AttestFail::Retry(e)) => {
                    let d = backoff.delay(attempt);
                    attempt = attempt.saturating_add(1);
                    tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "attestation failed; retrying");
                    ctx.shared.update(|s| s.last_error = Some(e));
                    tokio::time::sleep(d).await;
                    continue;
                }
            },
        };
        let span = tracing::info_span!("link", daemon_id = %current.daemon_id, spiffe_id = %current.identity.spiffe_id);
        let conn = match next.take() {
            Some(c) => c,
            None => {
                let trust = ServerTrust::Bundle(
                    current.bundle.roots_der.iter().map(|r| CertificateDer::from(r.clone())).collect(),
                );
                match dialer.dial(&ctx, trust, Some(&current.identity)).instrument(span.clone()).await {
                    Ok(c) => c,
                    Err(e) => {
                        let d = backoff.delay(attempt);
                        attempt = attempt.saturating_add(1);
                        let msg = format!("{e:#}");
                        span.in_scope(|| tracing::warn!(error = %msg, attempt, retry_in_ms = d.as_millis() as u64, "cannot connect to the control plane"));
                        ctx.shared.update(|s| s.last_error = Some(msg));
                        tokio::time::sleep(d).await;
                        continue;
                    }
                }
            }
        };
        epoch += 1;
        let kind = conn.kind();
        span.in_scope(
            || tracing::info!(transport = %kind, remote = %conn.remote_addr(), "connected to the control plane"),
        );
        let _ = myself.cast(SessionMsg::LinkUp(conn.clone(), epoch));
        ctx.shared.update(|s| {
            s.connected = true;
            s.transport = Some(kind);
            s.connects += 1;
            s.reconnects = s.connects.saturating_sub(1);
            s.daemon_id = Some(current.daemon_id.clone());
            s.spiffe_id = Some(current.identity.spiffe_id.clone());
        });
        let started = Instant::now();
        let ended = serve(&ctx, conn.clone(), &mut dialer, &current, &report).instrument(span.clone()).await;
        let _ = myself.cast(SessionMsg::LinkDown(epoch));
        ctx.shared.update(|s| {
            s.connected = false;
            s.transport = None;
        });
        // A connection that lived a while resets the backoff; one that dies at once does not.
        if started.elapsed() > Duration::from_secs(10) {
            attempt = 0;
        }
        match ended {
            Ended::Upgraded(c) => {
                conn.close("switching to QUIC");
                span.in_scope(|| tracing::info!("QUIC is reachable again; switching from TCP+TLS"));
                next = Some(c);
            }
            Ended::Lost(reason) => {
                conn.close("reconnecting");
                dialer.advance();
                let d = backoff.delay(attempt);
                attempt = attempt.saturating_add(1);
                span.in_scope(|| tracing::warn!(%reason, retry_in_ms = d.as_millis() as u64, "lost the control plane; reconnecting"));
                ctx.shared.update(|s| s.last_error = Some(reason));
                tokio::time::sleep(d).await;
            }
        }
    }
}

async fn serve(
    ctx: &Arc<Ctx>,
    conn: Arc<dyn Connection>,
    dialer: &mut Dialer,
    current: &PersistedIdentity,
    report: &Notify,
) -> Ended {
    let upgrade = async {
        if conn.kind() != TransportKind::TcpTls {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(ctx.config.quic_retry_interval).await;
            let trust =
                ServerTrust::Bundle(current.bundle.roots_der.iter().map(|r| CertificateDer::from(r.clone())).collect());
            let Ok(tls) = link::tls(&ctx.config, trust, Some(&current.identity)) else { continue };
            let quic = match &dialer.current {
                Some(ep) => link::dial_quic_at(&ctx.config, &mut dialer.quic, tls, ep.quic).await,
                None => link::dial_quic(&ctx.config, &mut dialer.quic, tls).await,
            };
            match quic {
                Ok(c) => {
                    dialer.quic_failed_at = None;
                    return c;
                }
                Err(e) => tracing::debug!(error = %format!("{e:#}"), "QUIC still unreachable; staying on TCP+TLS"),
            }
        }
    };
    tokio::select! {
        _ = conn.closed() => Ended::Lost("connection closed".into()),
        r = watch_policy(ctx, conn.as_ref()) => Ended::Lost(r),
        _ = serve_tunnel(ctx, conn.clone()) => Ended::Lost("connection closed".into()),
        r = report_status(ctx, conn.as_ref(), report) => Ended::Lost(r),
        c = upgrade => Ended::Upgraded(c),
    }
}

/// The policy watch: returns (with the reason) only when it cannot go on on this connection.
async fn watch_policy(ctx: &Ctx, conn: &dyn Connection) -> String {
    let frames = FrameConfig::default();
    let mut force_snapshot = false;
    loop {
        let Some(policy) = ctx.policy() else { return "the policy actor is not running".into() };
        let resume_from = if force_snapshot { None } else { ractor::call!(policy, PolicyMsg::Revision).ok().flatten() };
        let mut s = match conn.open_bi().await {
            Ok(s) => s,
            Err(e) => return format!("cannot open the policy watch: {e}"),
        };
        if let Err(e) = write_frame(&mut s.send, &Request::WatchPolicy { resume_from }, &frames).await {
            return format!("cannot send the policy watch: {e}");
        }
        let _ = s.send.shutdown().await;
        tracing::debug!(?resume_from, "policy watch opened");
        force_snapshot = false;
        loop {
            let update = match read_frame::<Response, _>(&mut s.recv, &frames).await.and_then(|r| r.expect_policy()) {
                Ok(u) => u,
                Err(FrameError::Remote(e)) if e.code.is_retryable() => {
                    tracing::warn!(error = %e, "policy watch refused; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
                Err(e) => return format!("policy watch ended: {e}"),
            };
            let revision = update.revision();
            match ractor::call!(policy, PolicyMsg::Apply, update) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(revision, error = %e, "cannot apply a policy update; asking for a fresh snapshot");
                    force_snapshot = true;
                    break;
                }
                Err(e) => return format!("the policy actor did not answer: {e}"),
            }
        }
    }
}

/// Answers streams the control plane opens (the tunnel). Returns when the connection ends.
async fn serve_tunnel(ctx: &Arc<Ctx>, conn: Arc<dyn Connection>) {
    loop {
        let Ok(mut s) = conn.accept_bi().await else { return };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let frames = FrameConfig::default();
            let resp = match read_frame_timeout::<TunnelRequest, _>(&mut s.recv, &frames, Duration::from_secs(10)).await
            {
                Ok(req) => {
                    tracing::debug!(request = req.kind(), "tunnel request");
                    tunnel_answer(&ctx, req)
                }
                Err(e) => TunnelResponse::Error(ProtoError::new(ErrorCode::BadRequest, e.to_string())),
            };
            let _ = write_frame(&mut s.send, &resp, &frames).await;
            let _ = s.send.shutdown().await;
        });
    }
}

/// The answer to a tunnel request, from the published state.
pub fn tunnel_answer(ctx: &Ctx, req: TunnelRequest) -> TunnelResponse {
    let status = ctx.shared.get();
    match req {
        TunnelRequest::ConnectionTable => TunnelResponse::ConnectionTable(ctx.connections.entries()),
        TunnelRequest::Health => {
            let reasons = status.not_ready_reasons(SystemTime::now());
            let mut details = vec![
                ("dataplane".to_owned(), status.dataplane.clone()),
                ("connected".to_owned(), status.connected.to_string()),
                ("policy_revision".to_owned(), status.policy_revision.map_or("none".to_owned(), |r| r.to_string())),
                ("identities".to_owned(), status.identities.len().to_string()),
            ];
            for (i, r) in reasons.iter().enumerate() {
                details.push((format!("not_ready.{i}"), r.clone()));
            }
            TunnelResponse::Health(HealthReport { ready: reasons.is_empty(), details })
        }
        TunnelRequest::ConfigDump => TunnelResponse::ConfigDump(status.config_dump().to_string()),
    }
}

/// ReportStatus at start, every `status_interval`, and when notified.
async fn report_status(ctx: &Ctx, conn: &dyn Connection, notify: &Notify) -> String {
    let frames = FrameConfig::default();
    loop {
        let status = ctx.shared.get();
        let report = DaemonStatusReport {
            version: crate::VERSION.to_owned(),
            dataplane: status.dataplane.clone(),
            daemon_healthy: status.not_ready_reasons(SystemTime::now()).is_empty(),
            driver_healthy: None,
            policy_revision: status.policy_revision,
        };
        match link::exchange(conn, &Request::ReportStatus(report), &frames, ctx.config.request_timeout)
            .await
            .map(|r| r.expect_ack())
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => {
                if matches!(e, FrameError::Remote(_)) {
                    tracing::warn!(error = %e, "status report refused");
                } else {
                    return format!("status report failed: {e}");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(ctx.config.status_interval) => {}
            _ = notify.notified() => {
                // Coalesce bursts of changes.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
