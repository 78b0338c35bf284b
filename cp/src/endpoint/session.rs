//! Connections and the per-daemon session actor.
//!
//! A bootstrap connection is served by a plain task (it can only attest). A daemon connection
//! gets a `SessionActor` named after the daemon under the `sessions` supervisor: it records the
//! daemon as connected, serves its streams, answers tunnel requests from the rest of the control
//! plane by opening streams on the daemon's connection, and marks it disconnected when the
//! connection ends. A new connection from the same daemon replaces the old session.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use riptides_actors::{ChildSpec, Restart, SupervisorRef};
use riptides_wire::proto::messages::{TunnelRequest, TunnelResponse};
use riptides_wire::proto::{read_frame_timeout, write_frame};
use riptides_wire::transport::{Connection, TransportKind};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::handler::handle_stream;
use super::{identify, status, EndpointContext, Peer, STREAMS_PER_CONNECTION};

const TUNNEL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection without a client certificate may stay open: long enough to attest
/// (with retries after a rate-limit answer), short enough that idle ones cannot pile up.
const BOOTSTRAP_LIFETIME: Duration = Duration::from_secs(120);

fn transport_name(conn: &dyn Connection) -> &'static str {
    match conn.kind() {
        TransportKind::Quic => "quic",
        TransportKind::TcpTls => "tcp",
    }
}

/// Accepts the peer's streams until the connection ends.
async fn serve_streams(conn: Arc<dyn Connection>, peer: Peer, ctx: Arc<EndpointContext>, cancel: CancellationToken) {
    let source = conn.remote_addr().ip().to_string();
    let permits = Arc::new(Semaphore::new(STREAMS_PER_CONNECTION));
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            s = conn.accept_bi() => match s {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "connection ended");
                    break;
                }
            },
        };
        let (peer, source, ctx, cancel) = (peer.clone(), source.clone(), ctx.clone(), cancel.clone());
        tokio::spawn(
            async move {
                let _permit = permit;
                handle_stream(stream, peer, source, ctx, cancel).await;
            }
            .in_current_span(),
        );
    }
}

/// Entry point for every accepted connection.
pub(super) async fn serve_connection(conn: Arc<dyn Connection>, ctx: Arc<EndpointContext>) {
    let mut peer = identify(conn.as_ref(), &ctx.ca);
    // A daemon SPIFFE ID rendered by a multi-segment workloadIDTemplate
    // (`riptides/daemon/aws/<account>/<region>/<instance>`): its Daemon resource says which
    // daemon it is.
    if let Peer::Other(id) = &peer {
        if id.path().starts_with(super::DAEMON_PATH_PREFIX) {
            match crate::attest::daemon_id_of(ctx.store.as_ref(), &ctx.namespace, id).await {
                Ok(Some(daemon)) => {
                    let not_after = conn
                        .peer_certificates()
                        .and_then(|c| c.first().map(|l| super::leaf_not_after(l)))
                        .unwrap_or(std::time::UNIX_EPOCH);
                    peer = Peer::Daemon { id: daemon, spiffe_id: id.clone(), not_after };
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(spiffe_id = %id, error = %e, "cannot look up the daemon of a connection"),
            }
        }
    }
    let remote = conn.remote_addr();
    match peer {
        Peer::Daemon { ref id, .. } => {
            let Some(sup) = SupervisorRef::where_is(&ctx.sessions) else {
                conn.close("control plane is shutting down");
                return;
            };
            // One session per daemon: a reconnect replaces the old one.
            let _ = sup.remove_child(id).await;
            let args = SessionArgs { conn: conn.clone(), ctx: ctx.clone(), peer: peer.clone() };
            let spec = ChildSpec::actor(id.clone(), SessionActor, args).restart(Restart::Temporary);
            if let Err(e) = sup.add_child(spec).await {
                tracing::warn!(daemon = %id, error = %e, "could not start a session");
                conn.close("session could not start");
            }
        }
        Peer::Bootstrap | Peer::Other(_) => {
            let span = tracing::info_span!("bootstrap", %remote);
            let cancel = CancellationToken::new();
            let served = serve_streams(conn.clone(), peer, ctx, cancel.clone());
            // A bootstrap connection exists to attest once; it does not get to linger.
            tokio::select! {
                _ = served.instrument(span) => {}
                _ = conn.closed() => {}
                _ = tokio::time::sleep(BOOTSTRAP_LIFETIME) => {
                    tracing::debug!(%remote, "bootstrap connection closed after its lifetime");
                }
            }
            cancel.cancel();
            conn.close("bootstrap connection lifetime over");
        }
    }
}

/// One per connected daemon.
#[derive(Clone)]
pub struct SessionActor;

#[derive(Clone)]
pub struct SessionArgs {
    conn: Arc<dyn Connection>,
    ctx: Arc<EndpointContext>,
    peer: Peer,
}

pub enum SessionMsg {
    /// Ask the daemon something over a stream the control plane opens (the tunnel).
    Tunnel(TunnelRequest, RpcReplyPort<Result<TunnelResponse, String>>),
}

pub struct SessionState {
    conn: Arc<dyn Connection>,
    ctx: Arc<EndpointContext>,
    id: String,
    cancel: CancellationToken,
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        let Peer::Daemon { id, spiffe_id, .. } = &args.peer else {
            return Err("a session needs a daemon peer".into());
        };
        let cancel = CancellationToken::new();
        let span =
            tracing::info_span!("session", daemon = %id, spiffe_id = %spiffe_id, remote = %args.conn.remote_addr());
        let transport = transport_name(args.conn.as_ref());
        span.in_scope(|| tracing::info!(transport, "daemon connected"));
        status::connected(&args.ctx, id, transport, true).await;
        {
            let (conn, peer, ctx, cancel) = (args.conn.clone(), args.peer.clone(), args.ctx.clone(), cancel.clone());
            tokio::spawn(
                async move {
                    tokio::select! {
                        _ = serve_streams(conn.clone(), peer, ctx, cancel.clone()) => {}
                        _ = conn.closed() => {}
                    }
                    // The connection is gone: end the session (a Temporary child is forgotten).
                    myself.stop(Some("connection closed".into()));
                }
                .instrument(span),
            );
        }
        Ok(SessionState { conn: args.conn, ctx: args.ctx, id: id.clone(), cancel })
    }

    async fn handle(
        &self,
        _myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionMsg::Tunnel(req, reply) => {
                // Run the exchange off the actor's loop: a slow daemon must not block others.
                let (conn, frames) = (state.conn.clone(), state.ctx.frames);
                tokio::spawn(async move {
                    let r = async {
                        let mut s = conn.open_bi().await.map_err(|e| format!("cannot open a tunnel stream: {e}"))?;
                        write_frame(&mut s.send, &req, &frames).await.map_err(|e| e.to_string())?;
                        let _ = tokio::io::AsyncWriteExt::shutdown(&mut s.send).await;
                        read_frame_timeout::<TunnelResponse, _>(&mut s.recv, &frames, TUNNEL_TIMEOUT)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    .await;
                    let _ = reply.send(r);
                });
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        state.cancel.cancel();
        state.conn.close("session ended");
        status::connected(&state.ctx, &state.id, "", false).await;
        tracing::info!(daemon = %state.id, "daemon disconnected");
        Ok(())
    }
}

/// Sends a tunnel request to the session of daemon `id`, if it is connected.
pub async fn tunnel_request(sessions: &str, id: &str, req: TunnelRequest) -> Result<TunnelResponse, String> {
    let name = format!("{sessions}/{id}");
    let actor: ActorRef<SessionMsg> =
        ractor::registry::where_is(name).map(ActorRef::from).ok_or_else(|| format!("daemon {id} is not connected"))?;
    match ractor::call!(actor, |reply| SessionMsg::Tunnel(req, reply)) {
        Ok(r) => r,
        Err(e) => Err(format!("session of daemon {id} did not answer: {e}")),
    }
}
