//! One request per stream: read it, check the caller may make it, answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use riptides_wire::proto::messages::{AttestResponse, ErrorCode, ProtoError, Request, Response, SvidMsg};
use riptides_wire::proto::{read_frame_timeout, write_frame, FrameError};
use riptides_wire::transport::BiStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{status, EndpointContext, Peer, REQUEST_TIMEOUT};
use crate::attest::{AttestError, AttestationProof};
use crate::ca::Svid;
use crate::policy::{bundle_msg, DaemonScope};

fn error_code(e: &AttestError) -> ErrorCode {
    match e {
        AttestError::InvalidToken => ErrorCode::InvalidToken,
        AttestError::TokenExpired => ErrorCode::TokenExpired,
        AttestError::TokenUsed => ErrorCode::TokenUsed,
        AttestError::RateLimited { .. } => ErrorCode::RateLimited,
        AttestError::Unauthorized(_) => ErrorCode::Unauthorized,
        AttestError::InvalidCsr(_) => ErrorCode::InvalidCsr,
        AttestError::Misconfigured(_) | AttestError::Store(_) | AttestError::Internal(_) => ErrorCode::Internal,
    }
}

fn refuse(e: &AttestError) -> Response {
    let mut err = ProtoError::new(error_code(e), e.to_string());
    if let AttestError::RateLimited { retry_after } = e {
        err = err.with_retry_after(retry_after.as_secs().max(1) as u32);
    }
    // Internal details stay in the CP's log; the daemon gets the class of failure.
    if err.code == ErrorCode::Internal {
        err.message = "internal error; see the control plane's log".into();
    }
    Response::Error(err)
}

fn svid_msg(svid: &Svid) -> SvidMsg {
    SvidMsg {
        spiffe_id: svid.spiffe_id.to_string(),
        chain_der: svid.chain.iter().map(|c| c.as_ref().to_vec()).collect(),
        not_after_unix: svid.not_after.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    }
}

/// Serves one stream opened by the peer.
pub(super) async fn handle_stream(
    mut stream: BiStream,
    peer: Peer,
    source: String,
    ctx: Arc<EndpointContext>,
    cancel: CancellationToken,
) {
    let req: Request = match read_frame_timeout(&mut stream.recv, &ctx.frames, REQUEST_TIMEOUT).await {
        Ok(r) => r,
        Err(FrameError::Io(_)) | Err(FrameError::Closed) => return,
        Err(e) => {
            tracing::debug!(%source, error = %e, "bad request frame");
            let _ = write_frame(
                &mut stream.send,
                &Response::Error(ProtoError::new(ErrorCode::BadRequest, e.to_string())),
                &ctx.frames,
            )
            .await;
            return;
        }
    };
    let kind = req.kind();
    let now = SystemTime::now();
    // The handshake checked the client certificate once; a connection may outlive it.
    if let Peer::Daemon { id, not_after, .. } = &peer {
        if now >= *not_after && !matches!(req, Request::Ping) {
            let r = Response::Error(ProtoError::new(
                ErrorCode::Unauthorized,
                format!("the SVID of daemon {id} expired during this connection; reconnect with a valid one"),
            ));
            let _ = write_frame(&mut stream.send, &r, &ctx.frames).await;
            return;
        }
    }
    let response = match (&peer, req) {
        (_, Request::Ping) => Response::Pong,
        (Peer::Bootstrap, Request::Attest(a)) => {
            let mut host: BTreeMap<String, String> = a.host.labels.iter().cloned().collect();
            for (k, v) in [
                ("hostname", &a.host.hostname),
                ("os", &a.host.os),
                ("kernel", &a.host.kernel),
                ("arch", &a.host.arch),
                ("version", &a.host.daemon_version),
            ] {
                host.insert(k.to_owned(), v.clone());
            }
            match ctx
                .attestor
                .attest(&source, &AttestationProof::JoinToken(a.token.clone()), &a.csr_der, host, now)
                .await
            {
                Ok(att) => Response::Attested(AttestResponse {
                    daemon_id: att.daemon_id,
                    spiffe_id: att.spiffe_id.to_string(),
                    svid_chain_der: att.svid.chain.iter().map(|c| c.as_ref().to_vec()).collect(),
                    bundle: bundle_msg(&att.bundle),
                }),
                Err(e) => refuse(&e),
            }
        }
        (Peer::Bootstrap, _) => Response::Error(ProtoError::new(
            ErrorCode::Unauthorized,
            format!("{kind} needs a daemon identity: this connection has no client certificate (attest first)"),
        )),
        (Peer::Other(id), _) => {
            Response::Error(ProtoError::new(ErrorCode::Unauthorized, format!("{id} is not a daemon identity")))
        }
        (Peer::Daemon { .. }, Request::Attest(_)) => Response::Error(ProtoError::new(
            ErrorCode::BadRequest,
            "this daemon is already attested; renew its SVID instead",
        )),
        (Peer::Daemon { id, spiffe_id, .. }, Request::RenewDaemonSvid { csr_der }) => {
            match status::daemon_record(&ctx, id).await {
                Ok(Some(_)) => match ctx.attestor_pool_sign(&csr_der, spiffe_id.clone(), now).await {
                    Ok(svid) => {
                        tracing::info!(daemon = %id, serial = %svid.serial_hex(), "renewed daemon SVID");
                        Response::Svid(svid_msg(&svid))
                    }
                    Err(e) => refuse(&e),
                },
                Ok(None) => refuse(&AttestError::Unauthorized(format!("daemon {id} is no longer registered"))),
                Err(e) => refuse(&e),
            }
        }
        (Peer::Daemon { spiffe_id, .. }, Request::SignWorkload(w)) => {
            let ttl = w.ttl_secs.map(|s| Duration::from_secs(s.into()));
            match ctx.authorizer.sign_workload(spiffe_id, &w.workload_id, &w.csr_der, ttl, now).await {
                Ok(svid) => Response::Svid(svid_msg(&svid)),
                Err(e) => refuse(&e),
            }
        }
        (Peer::Daemon { id, .. }, Request::ReportStatus(report)) => match status::report(&ctx, id, &report).await {
            Ok(()) => Response::Ack,
            Err(e) => refuse(&e),
        },
        (Peer::Daemon { id, .. }, Request::WatchPolicy { resume_from }) => {
            let group = match status::daemon_record(&ctx, id).await {
                Ok(Some(d)) => d.spec.group,
                Ok(None) => {
                    let r = refuse(&AttestError::Unauthorized(format!("daemon {id} is no longer registered")));
                    let _ = write_frame(&mut stream.send, &r, &ctx.frames).await;
                    return;
                }
                Err(e) => {
                    let _ = write_frame(&mut stream.send, &refuse(&e), &ctx.frames).await;
                    return;
                }
            };
            stream_policy(stream, DaemonScope { id: id.clone(), group }, resume_from, ctx, cancel).await;
            return;
        }
    };
    if let Response::Error(e) = &response {
        tracing::info!(%source, request = kind, code = e.code.as_str(), message = %e.message, "request refused");
    }
    if let Err(e) = write_frame(&mut stream.send, &response, &ctx.frames).await {
        tracing::debug!(%source, error = %e, "could not answer");
    }
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream.send).await;
}

async fn stream_policy(
    mut stream: BiStream,
    scope: DaemonScope,
    resume_from: Option<u64>,
    ctx: Arc<EndpointContext>,
    cancel: CancellationToken,
) {
    let (tx, mut rx) = mpsc::channel(8);
    let stop = cancel.child_token();
    let producer = {
        let (compiler, scope, stop) = (ctx.policy.clone(), scope.clone(), stop.clone());
        tokio::spawn(async move {
            let r = compiler
                .stream(
                    &scope,
                    resume_from,
                    |u| {
                        let tx = tx.clone();
                        async move { tx.send(u).await.is_ok() }
                    },
                    stop,
                )
                .await;
            if let Err(e) = r {
                tracing::debug!(daemon = %scope.id, error = %e, "policy stream ended");
            }
        })
    };
    while let Some(update) = rx.recv().await {
        if let Err(e) = write_frame(&mut stream.send, &Response::Policy(update), &ctx.frames).await {
            tracing::debug!(daemon = %scope.id, error = %e, "policy stream closed by the daemon");
            break;
        }
    }
    stop.cancel();
    let _ = producer.await;
}
