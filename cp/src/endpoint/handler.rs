//! One request per stream: read it, check the caller may make it, answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use riptides_wire::proto::messages::{
    AttestChallengeMsg, AttestResponse, ErrorCode, HostInfo, ProofAttestRequest, ProofMsg, ProtoError, Request,
    Response, SvidMsg,
};
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
        AttestError::InvalidProof { .. } => ErrorCode::InvalidProof,
        AttestError::AlreadyAttested(_) => ErrorCode::AlreadyAttested,
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

fn host_map(h: &HostInfo) -> BTreeMap<String, String> {
    let mut host: BTreeMap<String, String> = h.labels.iter().cloned().collect();
    for (k, v) in [
        ("hostname", &h.hostname),
        ("os", &h.os),
        ("kernel", &h.kernel),
        ("arch", &h.arch),
        ("version", &h.daemon_version),
    ] {
        host.insert(k.to_owned(), v.clone());
    }
    host
}

fn attested(r: Result<crate::attest::Attested, AttestError>) -> Response {
    match r {
        Ok(att) => Response::Attested(AttestResponse {
            daemon_id: att.daemon_id,
            spiffe_id: att.spiffe_id.to_string(),
            svid_chain_der: att.svid.chain.iter().map(|c| c.as_ref().to_vec()).collect(),
            bundle: bundle_msg(&att.bundle),
        }),
        Err(e) => refuse(&e),
    }
}

/// [`Request::AttestProof`]: for the proof-of-possession methods, a challenge round on this
/// stream first (the nonce lives only here, so it answers exactly this attempt), then the
/// attestor.
async fn attest_proof(stream: &mut BiStream, ctx: &EndpointContext, source: &str, a: ProofAttestRequest) -> Response {
    let host = host_map(&a.host);
    let verifier = a.verifier;
    let proof = match a.proof {
        ProofMsg::JoinToken(t) => AttestationProof::JoinToken(t),
        ProofMsg::AwsIid { document, signature } => AttestationProof::AwsIid { verifier, document, signature },
        ProofMsg::GcpIit(token) => AttestationProof::GcpIit { verifier, token },
        ProofMsg::K8sSat(token) => AttestationProof::K8sSat { verifier, token },
        ProofMsg::Jwt(token) => AttestationProof::Jwt { verifier, token },
        ProofMsg::X509Pop { chain_der } => match challenge_round(stream, ctx).await {
            Ok((nonce, signature)) => AttestationProof::X509Pop { verifier, chain_der, nonce, signature },
            Err(r) => return r,
        },
        ProofMsg::SshPop { certificate } => match challenge_round(stream, ctx).await {
            Ok((nonce, signature)) => AttestationProof::SshPop { verifier, certificate, nonce, signature },
            Err(r) => return r,
        },
    };
    attested(ctx.attestor.attest(source, &proof, &a.csr_der, host, SystemTime::now()).await)
}

/// Sends a fresh nonce and reads the daemon's signature over it: `(nonce, signature)`.
async fn challenge_round(stream: &mut BiStream, ctx: &EndpointContext) -> Result<(Vec<u8>, Vec<u8>), Response> {
    let mut nonce = vec![0u8; 32];
    if aws_lc_rs::rand::fill(&mut nonce).is_err() {
        return Err(refuse(&AttestError::Internal("the system random generator failed".into())));
    }
    let challenge = Response::Challenge(AttestChallengeMsg { nonce: nonce.clone() });
    if let Err(e) = write_frame(&mut stream.send, &challenge, &ctx.frames).await {
        return Err(Response::Error(ProtoError::new(ErrorCode::BadRequest, format!("sending the challenge: {e}"))));
    }
    match read_frame_timeout::<Request, _>(&mut stream.recv, &ctx.frames, REQUEST_TIMEOUT).await {
        Ok(Request::ChallengeAnswer(c)) => Ok((nonce, c.signature)),
        Ok(other) => Err(Response::Error(ProtoError::new(
            ErrorCode::BadRequest,
            format!("expected ChallengeAnswer after the challenge, got {}", other.kind()),
        ))),
        Err(e) => Err(Response::Error(ProtoError::new(ErrorCode::BadRequest, format!("challenge answer: {e}")))),
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
            let host = host_map(&a.host);
            let proof = AttestationProof::JoinToken(a.token.clone());
            attested(ctx.attestor.attest(&source, &proof, &a.csr_der, host, now).await)
        }
        (Peer::Bootstrap, Request::AttestProof(a)) => attest_proof(&mut stream, &ctx, &source, a).await,
        (_, Request::ChallengeAnswer(_)) => {
            Response::Error(ProtoError::new(ErrorCode::BadRequest, "a challenge answer without a challenge"))
        }
        (Peer::Bootstrap, _) => Response::Error(ProtoError::new(
            ErrorCode::Unauthorized,
            format!("{kind} needs a daemon identity: this connection has no client certificate (attest first)"),
        )),
        (Peer::Other(id), _) => {
            Response::Error(ProtoError::new(ErrorCode::Unauthorized, format!("{id} is not a daemon identity")))
        }
        (Peer::Daemon { .. }, Request::Attest(_) | Request::AttestProof(_)) => Response::Error(ProtoError::new(
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
