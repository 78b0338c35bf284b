//! Simulated daemons: each speaks the real protocol the way `riptides-daemon` does
//! (`node/src/session.rs`): attest with its join token over a bootstrap QUIC connection that
//! trusts the CA pin, close it, dial again with mutual TLS using the daemon SVID, open one
//! policy watch (`resume_from` = the last revision it saw) and read updates until the link
//! drops; retry with full-jitter backoff (base 200 ms, cap 30 s, reset after a link that lived
//! 10 s). Only QUIC is used (no TCP fallback), and daemons neither report status nor answer
//! tunnel requests.
//!
//! The daemons of one fleet share a few QUIC client endpoints (one UDP socket each), every one
//! bound to its own loopback source address 127.0.0.x, so the control plane's per-source
//! attestation rate limit sees many sources, as it would in a real fleet.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use riptides_wire::proto::messages::{AttestRequest, HostInfo, PolicyUpdate, Request, Response};
use riptides_wire::proto::{read_frame, read_frame_timeout, write_frame, FrameConfig, FrameError, ALPN};
use riptides_wire::tls::{client_config, ExpectedId, ServerTrust};
use riptides_wire::transport::{Connection, QuicClient, TransportConfig, TransportError};
use riptides_wire::TrustDomain;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::mpsc;

/// The daemon's `request_timeout`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The daemon's `quic_connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum First {
    Snapshot,
    Delta,
}

#[derive(Debug)]
pub enum Event {
    /// A link is up and its policy watch delivered its first update. `link` counts from 1.
    Ready { idx: usize, link: u32, at: Instant, first: First, revision: u64 },
    /// A later policy update on a live watch.
    Update { idx: usize, at: Instant, revision: u64 },
    /// The daemon gave up (an attestation refusal that retrying cannot fix).
    Failed { kind: String },
}

/// Everything a daemon task needs, shared by the fleet.
pub struct FleetCtx {
    pub clients: Vec<QuicClient>,
    /// Every control-plane replica's QUIC address; daemon `idx` uses `servers[idx % len]`
    /// (one entry unless built with [`Fleet::with_servers`]).
    pub servers: Vec<SocketAddr>,
    pub pin_tls: Arc<rustls::ClientConfig>,
    pub cp_id: ExpectedId,
    pub events: mpsc::UnboundedSender<Event>,
    /// Transient errors (retried), by kind.
    pub retried: Mutex<BTreeMap<String, u64>>,
}

impl FleetCtx {
    fn count(&self, kind: String) {
        *self.retried.lock().expect("not poisoned").entry(kind).or_default() += 1;
    }

    /// The replica daemon `idx` talks to.
    pub fn server_for(&self, idx: usize) -> SocketAddr {
        self.servers[idx % self.servers.len()]
    }

    pub fn retried_snapshot(&self) -> BTreeMap<String, u64> {
        self.retried.lock().expect("not poisoned").clone()
    }
}

/// One simulated daemon's externally visible state.
#[derive(Default)]
pub struct DaemonSlot {
    /// The live mTLS connection, for CSR requests.
    pub conn: Mutex<Option<Arc<dyn Connection>>>,
}

pub struct Fleet {
    pub ctx: Arc<FleetCtx>,
    pub slots: Vec<Arc<DaemonSlot>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Client transport settings: the defaults, with the daemon's connect timeout.
pub fn transport_config() -> TransportConfig {
    TransportConfig { handshake_timeout: CONNECT_TIMEOUT, ..TransportConfig::default() }
}

/// Binds `n` client endpoints on 127.0.0.2, 127.0.0.3, ...
pub fn bind_clients(n: usize) -> anyhow::Result<Vec<QuicClient>> {
    anyhow::ensure!((1..=250).contains(&n), "--sources must be between 1 and 250");
    (0..n)
        .map(|i| {
            let addr: SocketAddr = format!("127.0.0.{}:0", i + 2).parse().expect("valid literal");
            QuicClient::bind(addr, &transport_config()).map_err(|e| anyhow::anyhow!("binding a client on {addr}: {e}"))
        })
        .collect()
}

pub fn cp_expected_id() -> ExpectedId {
    let td = TrustDomain::parse(super::TRUST_DOMAIN).expect("valid trust domain");
    ExpectedId::Exact(td.workload_id("riptides/controlplane").expect("valid path"))
}

impl Fleet {
    pub fn new(
        clients: Vec<QuicClient>,
        server: SocketAddr,
        pin: [u8; 32],
    ) -> anyhow::Result<(Self, mpsc::UnboundedReceiver<Event>)> {
        Self::with_servers(clients, vec![server], pin)
    }

    /// A fleet spread over several replicas sharing one CA: daemon `idx` uses
    /// `servers[idx % servers.len()]`.
    pub fn with_servers(
        clients: Vec<QuicClient>,
        servers: Vec<SocketAddr>,
        pin: [u8; 32],
    ) -> anyhow::Result<(Self, mpsc::UnboundedReceiver<Event>)> {
        anyhow::ensure!(!servers.is_empty(), "no control-plane address");
        let (tx, rx) = mpsc::unbounded_channel();
        let cp_id = cp_expected_id();
        let pin_tls = client_config(ServerTrust::Pin(pin), cp_id.clone(), None, &[ALPN])?;
        let ctx =
            Arc::new(FleetCtx { clients, servers, pin_tls, cp_id, events: tx, retried: Mutex::new(BTreeMap::new()) });
        Ok((Fleet { ctx, slots: Vec::new(), tasks: Vec::new() }, rx))
    }

    /// Starts one task per token, all at once.
    pub fn launch(&mut self, tokens: &[String]) {
        for (idx, token) in tokens.iter().enumerate() {
            let slot = Arc::new(DaemonSlot::default());
            self.slots.push(slot.clone());
            let (ctx, token) = (self.ctx.clone(), token.clone());
            self.tasks.push(tokio::spawn(run_daemon(idx, token, slot, ctx)));
        }
    }

    /// Stops every daemon and closes its connection.
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        for s in &self.slots {
            if let Some(c) = s.conn.lock().expect("not poisoned").take() {
                c.close("benchmark done");
            }
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
    let ceiling = BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_CAP);
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).expect("system random generator");
    let r = (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64;
    ceiling.mul_f64(r)
}

/// Error text grouped into a kind: digits and addresses would make every error unique.
pub fn kind_of(stage: &str, err: &dyn std::fmt::Display) -> String {
    let mut s = String::new();
    let mut digits = false;
    for c in err.to_string().chars() {
        if c.is_ascii_digit() {
            if !digits {
                s.push('#');
            }
            digits = true;
        } else {
            digits = false;
            s.push(c);
        }
    }
    s = s.replace("#.#.#.#:#", "ADDR");
    s.truncate(120);
    format!("{stage}: {s}")
}

fn transport_kind(stage: &str, e: &TransportError) -> String {
    kind_of(stage, e)
}

struct Attested {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    bundle: Vec<CertificateDer<'static>>,
}

enum AttemptError {
    Retry(String),
    Fatal(String),
}

async fn attest_once(
    ctx: &FleetCtx,
    server: SocketAddr,
    client: &QuicClient,
    token: &str,
) -> Result<Attested, AttemptError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| AttemptError::Retry(kind_of("keygen", &e)))?;
    let csr_der = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .map_err(|e| AttemptError::Retry(kind_of("csr", &e)))?
        .der()
        .to_vec();
    let conn = client
        .connect(server, ctx.pin_tls.clone())
        .await
        .map_err(|e| AttemptError::Retry(transport_kind("bootstrap connect", &e)))?;
    let req = Request::Attest(AttestRequest {
        token: token.into(),
        csr_der,
        host: HostInfo { hostname: "sim".into(), ..Default::default() },
    });
    let cfg = FrameConfig::default();
    let resp = async {
        let mut s = conn.open_bi().await.map_err(|e| FrameError::Io(std::io::Error::other(e.to_string())))?;
        write_frame(&mut s.send, &req, &cfg).await?;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut s.send).await;
        read_frame_timeout::<Response, _>(&mut s.recv, &cfg, REQUEST_TIMEOUT).await
    }
    .await;
    conn.close("attested");
    match resp.and_then(|r| r.expect_attested()) {
        Ok(a) => Ok(Attested {
            chain: a.svid_chain_der.into_iter().map(CertificateDer::from).collect(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            bundle: a.bundle.roots_der.into_iter().map(CertificateDer::from).collect(),
        }),
        Err(FrameError::Remote(e)) if e.code.is_retryable() => {
            Err(AttemptError::Retry(format!("attest refused: {}", e.code)))
        }
        Err(FrameError::Remote(e)) => Err(AttemptError::Fatal(format!("attest refused: {}", e.code))),
        Err(e) => Err(AttemptError::Retry(kind_of("attest exchange", &e))),
    }
}

async fn run_daemon(idx: usize, token: String, slot: Arc<DaemonSlot>, ctx: Arc<FleetCtx>) {
    let client = ctx.clients[idx % ctx.clients.len()].clone();
    let mut attempt = 0u32;
    let att = loop {
        match attest_once(&ctx, ctx.server_for(idx), &client, &token).await {
            Ok(a) => break a,
            Err(AttemptError::Fatal(kind)) => {
                let _ = ctx.events.send(Event::Failed { kind });
                return;
            }
            Err(AttemptError::Retry(kind)) => {
                ctx.count(kind);
                tokio::time::sleep(backoff(attempt)).await;
                attempt = attempt.saturating_add(1);
            }
        }
    };
    let tls = match client_config(
        ServerTrust::Bundle(att.bundle.clone()),
        ctx.cp_id.clone(),
        Some((att.chain.clone(), att.key.clone_key())),
        &[ALPN],
    ) {
        Ok(t) => t,
        Err(e) => {
            let _ = ctx.events.send(Event::Failed { kind: kind_of("client TLS config", &e) });
            return;
        }
    };
    let cfg = FrameConfig::default();
    let mut attempt = 0u32;
    let mut link = 0u32;
    let mut last_rev: Option<u64> = None;
    loop {
        let conn = match client.connect(ctx.server_for(idx), tls.clone()).await {
            Ok(c) => c,
            Err(e) => {
                ctx.count(transport_kind("mTLS connect", &e));
                tokio::time::sleep(backoff(attempt)).await;
                attempt = attempt.saturating_add(1);
                continue;
            }
        };
        *slot.conn.lock().expect("not poisoned") = Some(conn.clone());
        let started = Instant::now();
        let ended: String = async {
            let mut s = match conn.open_bi().await {
                Ok(s) => s,
                Err(e) => return kind_of("open policy watch", &e),
            };
            if let Err(e) = write_frame(&mut s.send, &Request::WatchPolicy { resume_from: last_rev }, &cfg).await {
                return kind_of("send policy watch", &e);
            }
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut s.send).await;
            let mut first = true;
            loop {
                match read_frame::<Response, _>(&mut s.recv, &cfg).await.and_then(|r| r.expect_policy()) {
                    Ok(u) => {
                        let at = Instant::now();
                        let revision = u.revision();
                        last_rev = Some(revision);
                        if first {
                            first = false;
                            link += 1;
                            let kind =
                                if matches!(u, PolicyUpdate::Snapshot { .. }) { First::Snapshot } else { First::Delta };
                            let _ = ctx.events.send(Event::Ready { idx, link, at, first: kind, revision });
                        } else {
                            let _ = ctx.events.send(Event::Update { idx, at, revision });
                        }
                    }
                    Err(FrameError::Remote(e)) => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        return format!("policy watch refused: {}", e.code);
                    }
                    Err(e) => {
                        return kind_of(
                            if first { "policy watch (before first update)" } else { "policy watch ended" },
                            &e,
                        )
                    }
                }
            }
        }
        .await;
        slot.conn.lock().expect("not poisoned").take();
        conn.close("reconnecting");
        // The end of a link that delivered policy is the expected outcome of a CP restart,
        // not an error; anything else is counted.
        if !ended.starts_with("policy watch ended") {
            ctx.count(ended);
        }
        if started.elapsed() > Duration::from_secs(10) {
            attempt = 0;
        }
        tokio::time::sleep(backoff(attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}
