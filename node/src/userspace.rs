//! The userspace dataplane: nftables capture into two local listeners, and for every captured
//! connection the same handshake and policy code the kernel path uses.
//!
//! Outbound (a local workload dials a remote address): the connection arrives at the outbound
//! listener; its original destination comes from `SO_ORIGINAL_DST`, its process from sock_diag
//! and `/proc`; the policy decides (mTLS to the destination in MUTUAL/PERMISSIVE/SIMPLE, or
//! passthrough for what no rule covers); the daemon dials the destination itself with a marked
//! socket (never captured again) and relays.
//!
//! Inbound (a remote node dials a port covered by an ingress rule): the connection arrives at
//! the inbound listener; a Riptides ClientHello is terminated with the SVID of the workload
//! owning the port, the client's identity checked against the rule in the handshake, and the
//! plaintext relayed to the application; a plaintext first byte is accepted only in PERMISSIVE.
//!
//! Fail closed: MUTUAL never falls back to plaintext; a connection that cannot be decided is
//! dropped, not passed.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use riptides_wire::proto::messages::PolicyDocument;
use riptides_wire::resource::core::TlsMode;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::dataplane::capture::{
    mark_socket, original_dst, Capture, CaptureConfig, CaptureRules, Destinations, IpNet, OutboundSelection,
};
use crate::dataplane::handshake::{
    accept_mtls, connect_mtls, sniff, Alpn, FirstBytes, HandshakeConfig, HandshakeError, Svid,
};
use crate::dataplane::process::{Identifier, IdentifyConfig};
use crate::dataplane::relay::{relay, RelayConfig};
use crate::dataplane::rules::{EgressDecision, Rules};
use crate::dataplane::table::{ConnectionRow, ConnectionTable, Direction, RefusedConnection};
use crate::policy_actor::Connector;

/// The workload SVIDs the certificate manager holds, by SPIFFE ID.
pub type Credentials = Arc<BTreeMap<String, Arc<Svid>>>;

/// Settings of the userspace dataplane, defaults in one place.
#[derive(Debug, Clone)]
pub struct UserspaceConfig {
    pub capture: CaptureConfig,
    pub handshake: HandshakeConfig,
    pub relay: RelayConfig,
    /// How long a destination found not to be a Riptides node is dialled in plaintext
    /// (PERMISSIVE egress) before mTLS is tried again.
    pub permissive_memory: Duration,
    /// Connections handled at once per listener; more wait in the accept queue.
    pub max_connections: usize,
    /// How long to wait for the application's first bytes to tell TLS (passthrough) from
    /// plaintext on outbound connections. Server-speaks-first protocols pay this once.
    pub first_bytes_wait: Duration,
    /// TLS intercept (egress `connection.tls.intercept`): CA directory, limits, token fetching.
    pub intercept: crate::dataplane::intercept::InterceptConfig,
}

impl Default for UserspaceConfig {
    fn default() -> Self {
        UserspaceConfig {
            capture: CaptureConfig::default(),
            handshake: HandshakeConfig::default(),
            relay: RelayConfig::default(),
            permissive_memory: Duration::from_secs(300),
            max_connections: 4096,
            first_bytes_wait: Duration::from_millis(200),
            intercept: Default::default(),
        }
    }
}

struct Inner {
    cfg: UserspaceConfig,
    rules: watch::Sender<Option<Arc<Rules>>>,
    creds: watch::Receiver<Credentials>,
    table: Arc<ConnectionTable>,
    identifier: Arc<Identifier>,
    capture: Capture,
    /// Destinations that answered a PERMISSIVE mTLS attempt like a non-Riptides peer.
    plaintext_peers: Mutex<HashMap<SocketAddr, Instant>>,
    cancel: CancellationToken,
    /// `None` when no intercept directory is configured or the CA could not be loaded:
    /// connections asking for intercept are then refused.
    intercept: Option<Arc<crate::dataplane::intercept::Intercept>>,
}

/// A running userspace dataplane. Dropping it stops the listeners; call [`Userspace::stop`]
/// to remove the nftables table as well.
#[derive(Clone)]
pub struct Userspace {
    inner: Arc<Inner>,
}

impl Userspace {
    /// Installs the (empty) capture table — replacing one a crash left behind — and starts
    /// both listeners.
    pub async fn start(
        cfg: UserspaceConfig,
        creds: watch::Receiver<Credentials>,
        table: Arc<ConnectionTable>,
    ) -> anyhow::Result<Userspace> {
        use anyhow::Context;
        let out_l = TcpListener::bind(("0.0.0.0", cfg.capture.outbound_port))
            .await
            .with_context(|| format!("binding the outbound listener on port {}", cfg.capture.outbound_port))?;
        let in_l = TcpListener::bind(("0.0.0.0", cfg.capture.inbound_port))
            .await
            .with_context(|| format!("binding the inbound listener on port {}", cfg.capture.inbound_port))?;
        let (capture, reconciled) = Capture::reconcile_async(cfg.capture.clone(), CaptureRules::default())
            .await
            .context("installing the nftables table")?;
        tracing::info!(?reconciled, table = %cfg.capture.table, "userspace dataplane capture installed");
        let (rules, _) = watch::channel(None);
        let intercept = match cfg.intercept.dir {
            None => None,
            Some(_) => match crate::dataplane::intercept::Intercept::start(cfg.intercept.clone()) {
                Ok(i) => Some(Arc::new(i)),
                Err(e) => {
                    tracing::error!(error = %e, "TLS intercept unavailable; connections asking for it are refused");
                    None
                }
            },
        };
        let inner = Arc::new(Inner {
            intercept,
            identifier: Arc::new(Identifier::new(IdentifyConfig::default())),
            cfg,
            rules,
            creds,
            table,
            capture,
            plaintext_peers: Mutex::new(HashMap::new()),
            cancel: CancellationToken::new(),
        });
        tokio::spawn(accept_loop(out_l, inner.clone(), Direction::Outbound));
        tokio::spawn(accept_loop(in_l, inner.clone(), Direction::Inbound));
        Ok(Userspace { inner })
    }

    /// Stops the listeners and removes the nftables table.
    pub async fn stop(&self) {
        self.inner.cancel.cancel();
        if let Err(e) = self.inner.capture.remove_async().await {
            tracing::warn!(error = %e, "could not remove the capture table");
        }
    }

    pub fn table(&self) -> &Arc<ConnectionTable> {
        &self.inner.table
    }

    /// TLS intercept (CA, credentials), when available.
    pub fn intercept(&self) -> Option<&Arc<crate::dataplane::intercept::Intercept>> {
        self.inner.intercept.as_ref()
    }
}

impl Connector for Userspace {
    fn name(&self) -> &'static str {
        "userspace"
    }

    fn apply(&self, revision: u64, document: &PolicyDocument) {
        let rules = match Rules::compile(document) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                // Keep enforcing the previous rules: dropping them would pass MUTUAL traffic.
                tracing::error!(revision, error = %e, "policy does not compile; keeping the previous rules");
                return;
            }
        };
        for w in rules.warnings() {
            tracing::warn!(revision, warning = %w, "policy");
        }
        let capture_rules = capture_rules(&rules);
        if let Some(i) = &self.inner.intercept {
            i.credentials.apply(rules.credential_sources().to_vec());
        }
        self.inner.rules.send_replace(Some(rules));
        let capture = self.inner.capture.clone();
        tokio::spawn(async move {
            match capture.update_async(capture_rules).await {
                Ok(()) => tracing::info!(revision, "capture rules updated"),
                Err(e) => tracing::error!(revision, error = %e, "could not update the capture rules"),
            }
        });
    }
}

/// What nftables must redirect for these rules: every process's connections to the
/// addresses of Services (the daemon decides per connection which workload it is and passes
/// the others through), and the ports covered by ingress rules.
fn capture_rules(rules: &Rules) -> CaptureRules {
    let mut services = std::collections::BTreeSet::new();
    let mut networks = std::collections::BTreeSet::new();
    for (addr, port) in rules.service_endpoints() {
        match addr {
            crate::dataplane::rules::Endpoint::Exact(ip) => {
                services.insert(SocketAddr::new(ip, port));
            }
            crate::dataplane::rules::Endpoint::Network(ip, prefix) => {
                if let Ok(n) = IpNet::new(ip, prefix) {
                    networks.insert(n);
                }
            }
        }
    }
    CaptureRules {
        outbound: OutboundSelection {
            all_processes: !rules.workloads().is_empty(),
            destinations: Destinations::Only { services, networks },
            ..OutboundSelection::default()
        },
        inbound_ports: rules.ingress_ports().collect(),
    }
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>, direction: Direction) {
    let permits = Arc::new(tokio::sync::Semaphore::new(inner.cfg.max_connections));
    loop {
        let permit = tokio::select! {
            _ = inner.cancel.cancelled() => return,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (stream, peer) = tokio::select! {
            _ = inner.cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let dst = match original_dst(&stream) {
                Ok(d) if Some(d) != stream.local_addr().ok() => d,
                // Not a redirected connection: someone dialled the listener directly.
                _ => return,
            };
            let span = tracing::info_span!("conn", ?direction, src = %peer, dst = %dst, workload = tracing::field::Empty, peer_id = tracing::field::Empty, binding = tracing::field::Empty);
            let guard = match inner.table.insert(peer, dst, direction) {
                Ok(g) => g,
                Err(e) => {
                    let reason = e.to_string();
                    inner.table.record_refused(RefusedConnection {
                        source: peer,
                        destination: dst,
                        direction,
                        mode: "",
                        own_id: None,
                        peer_id: None,
                        reason: &reason,
                    });
                    span.in_scope(|| tracing::warn!(error = %reason, "connection refused"));
                    return;
                }
            };
            let row = guard.row().clone();
            let r = match direction {
                Direction::Outbound => outbound(stream, peer, dst, &row, &inner).instrument(span.clone()).await,
                Direction::Inbound => inbound(stream, dst, &row, &inner).instrument(span.clone()).await,
            };
            if let Err(e) = r {
                let reason = format!("{e:#}");
                span.in_scope(|| tracing::info!(error = %reason, "connection refused or failed"));
                if row.is_handshaking() {
                    // Never established: a refusal, remembered for /connections and the UI.
                    let refused_peer = e
                        .chain()
                        .find_map(|c| c.downcast_ref::<HandshakeError>())
                        .and_then(HandshakeError::peer_id)
                        .cloned();
                    guard.refuse(&reason, refused_peer.as_ref());
                } else if let Some(alert) = refused_by_peer_after_handshake(&e, &row) {
                    // The relay's error only repeats the alert; the log above has it in full.
                    guard.refuse(&format!("refused by the peer after the handshake: TLS alert {alert}"), None);
                } else {
                    inner.table.record_failure(direction);
                }
            }
        });
    }
}

/// The alert, when the peer ended an mTLS connection with one before sending any byte.
///
/// In TLS 1.3 the client's handshake is complete once it sent its Finished, before the server
/// checked the client certificate; a server that refuses the client's identity answers with an
/// alert that reaches the client on its first read, in the relay. For the client's table that
/// is a refusal, not the end of an established connection.
fn refused_by_peer_after_handshake(e: &anyhow::Error, row: &ConnectionRow) -> Option<String> {
    if row.counters.get().0 != 0 {
        return None;
    }
    e.chain().find_map(|c| {
        let io = c.downcast_ref::<std::io::Error>()?;
        match io.get_ref()?.downcast_ref::<rustls::Error>()? {
            rustls::Error::AlertReceived(alert) => Some(format!("{alert:?}")),
            _ => None,
        }
    })
}

/// Dials `dst` with the daemon's mark, so the connection is not captured again.
async fn dial_marked(dst: SocketAddr, mark: u32) -> std::io::Result<TcpStream> {
    let sock = if dst.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    mark_socket(&sock, mark)?;
    let s = tokio::time::timeout(Duration::from_secs(10), sock.connect(dst))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("connecting to {dst} timed out")))??;
    let _ = s.set_nodelay(true);
    Ok(s)
}

fn current_rules(inner: &Inner) -> Option<Arc<Rules>> {
    inner.rules.borrow().clone()
}

/// One captured outbound connection; `row` is its table row (the caller owns the guard and
/// turns an error before `established` into a remembered refusal).
async fn outbound(
    mut client: TcpStream,
    peer: SocketAddr,
    dst: SocketAddr,
    row: &Arc<ConnectionRow>,
    inner: &Inner,
) -> anyhow::Result<()> {
    use crate::dataplane::handshake::{connect_simple, read_client_hello, AppHello};
    use crate::dataplane::relay::Prefixed;
    use anyhow::Context;
    let _ = client.set_nodelay(true);
    let row = row.clone();
    let rules = current_rules(inner);
    // Only connections to Service endpoints are captured, so a process we fail to identify
    // (a scan deadline under load, a vanished socket) may well be a protected workload: refuse
    // rather than let its bytes out in plaintext. A process that is identified but selected by
    // no WorkloadIdentity is passed through untouched (the documented default).
    let labels = match inner.identifier.identify_async(peer, dst).await {
        Ok(w) => w.labels,
        Err(e) if rules.as_ref().is_some_and(|r| !r.workloads().is_empty()) => {
            anyhow::bail!("could not identify the process behind {peer}: {e}; refusing (fail closed)");
        }
        Err(e) => {
            tracing::debug!(error = %e, "process not identified; no local workloads, passing through");
            Default::default()
        }
    };
    let workload = rules.as_ref().and_then(|r| r.select_workload(&labels).cloned());
    // The application's first flight: a TLS ClientHello (its SNI and ALPN are available to
    // policy; the bytes are forwarded unchanged), or plaintext. Server-speaks-first protocols
    // send nothing; they wait `first_bytes_wait` once.
    let (prefix, hello) = if workload.is_some() {
        let cfg = HandshakeConfig { sniff_timeout: inner.cfg.first_bytes_wait, ..inner.cfg.handshake.clone() };
        read_client_hello(&mut client, &cfg).await.context("reading the application's first bytes")?
    } else {
        (Vec::new(), AppHello::Silent)
    };
    let sni = match &hello {
        AppHello::ClientHello(info) => info.server_name.clone(),
        _ => None,
    };
    let app_tls = matches!(hello, AppHello::ClientHello(_) | AppHello::Incomplete);
    let client = Prefixed::new(prefix, client);
    let decision = match (&rules, &workload) {
        (Some(r), Some(w)) => r.egress_decision(w, dst, sni.as_deref()),
        _ => EgressDecision::Passthrough,
    };
    let upstream = dial_marked(dst, inner.cfg.capture.mark).await.with_context(|| format!("dialing {dst}"))?;
    let (mode, allowed, service, intercept) = match decision {
        EgressDecision::Passthrough => {
            row.set_mode("passthrough");
            row.set_state("established");
            relay(client, upstream, &row.counters, &inner.cfg.relay).await?;
            return Ok(());
        }
        EgressDecision::Mtls { mode, allowed, service, intercept } => (mode, allowed, service, intercept),
    };
    // Named now so that a refusal shows the mode it was refused under.
    row.set_mode(format!("{mode:?}").to_uppercase());
    let (Some(rules), Some(w)) = (rules, workload) else { unreachable!("an mTLS decision needs rules and a workload") };
    tracing::Span::current().record("workload", tracing::field::display(&w.spiffe_id));
    row.set_own_id(&w.spiffe_id);
    if intercept && app_tls {
        // TLS intercept: terminate the application's TLS, inject the bound credential,
        // re-encrypt to the verified real server. Never passed on unintercepted.
        let icpt =
            inner.intercept.clone().context("the rule asks for TLS intercept but it is unavailable; refusing")?;
        let svid = inner.creds.borrow().get(w.spiffe_id.as_str()).cloned();
        let o = crate::dataplane::intercept::OutboundIntercept {
            dst,
            sni: sni.clone(),
            mode,
            allowed: &allowed,
            service: &service,
            workload: &w,
            rules: &rules,
            svid,
            handshake: &inner.cfg.handshake,
        };
        return icpt.outbound(client, upstream, o, row).await;
    }
    if mode == TlsMode::Simple {
        if app_tls {
            // The application does its own TLS to the external service; adding ours would
            // break it, and it is already encrypted.
            row.set_mode("SIMPLE (application TLS)");
            row.set_state("established");
            relay(client, upstream, &row.counters, &inner.cfg.relay).await?;
            return Ok(());
        }
        let roots = external_roots(&service).with_context(|| format!("no CA to verify {}", service.name))?;
        let server_name =
            service.server_name.clone().unwrap_or_else(|| sni.clone().unwrap_or_else(|| dst.ip().to_string()));
        let (tls, info) = connect_simple(upstream, &server_name, &roots, true, &[], &inner.cfg.handshake)
            .await
            .with_context(|| format!("TLS to external service {server_name} ({dst})"))?;
        row.set_mode("SIMPLE");
        row.set_handshake(&info);
        row.set_state("established");
        tracing::info!(server = %server_name, version = %info.tls_version_name(), "outbound TLS (SIMPLE) established");
        relay(client, tls, &row.counters, &inner.cfg.relay).await?;
        return Ok(());
    }
    if mode == TlsMode::Permissive && remembered_plaintext(inner, dst) {
        row.set_mode("permissive-plaintext");
        row.set_state("established");
        relay(client, upstream, &row.counters, &inner.cfg.relay).await?;
        return Ok(());
    }
    let svid = inner
        .creds
        .borrow()
        .get(w.spiffe_id.as_str())
        .cloned()
        .with_context(|| format!("no SVID for {} yet; refusing (fail closed)", w.spiffe_id))?;
    // An application that already speaks TLS is wrapped, not re-encrypted.
    let alpn = if app_tls { Alpn::Passthrough } else { Alpn::Riptides };
    match connect_mtls(upstream, &svid, &allowed, rules.bundles(), alpn, &inner.cfg.handshake).await {
        Ok((tls, info)) => {
            tracing::Span::current().record("peer_id", tracing::field::debug(&info.peer_id));
            row.set_mode(format!("{mode:?}").to_uppercase());
            row.set_handshake(&info);
            row.set_state("established");
            tracing::info!(peer = ?info.peer_id, kx = %info.kx_group_name(), alpn = ?alpn, "outbound mTLS established");
            relay(client, tls, &row.counters, &inner.cfg.relay).await?;
            Ok(())
        }
        Err(e) if mode == TlsMode::Permissive && e.peer_is_not_riptides() => {
            tracing::info!(error = %e, "destination is not a Riptides node; PERMISSIVE falls back to plaintext");
            inner.plaintext_peers.lock().unwrap_or_else(|p| p.into_inner()).insert(dst, Instant::now());
            let upstream = dial_marked(dst, inner.cfg.capture.mark).await?;
            row.set_mode("permissive-plaintext");
            row.set_state("established");
            relay(client, upstream, &row.counters, &inner.cfg.relay).await?;
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!(e).context(format!("mTLS to {dst} failed ({mode:?}: no plaintext fallback)"))),
    }
}

/// CAs that verify an external (SIMPLE) service: its `tls.caBundle`, else the system's.
fn external_roots(
    service: &crate::dataplane::rules::ServiceInfo,
) -> Option<Vec<rustls_pki_types::CertificateDer<'static>>> {
    if let Some(pem) = &service.ca_bundle {
        return riptides_wire::tls::load_certs_pem(pem.as_bytes()).ok().filter(|c| !c.is_empty());
    }
    let system = std::fs::read("/etc/ssl/certs/ca-certificates.crt").ok()?;
    riptides_wire::tls::load_certs_pem(&system).ok().filter(|c| !c.is_empty())
}

fn remembered_plaintext(inner: &Inner, dst: SocketAddr) -> bool {
    let mut m = inner.plaintext_peers.lock().unwrap_or_else(|p| p.into_inner());
    m.retain(|_, t| t.elapsed() < inner.cfg.permissive_memory);
    m.contains_key(&dst)
}

/// One captured inbound connection; `row` as for [`outbound`].
async fn inbound(client: TcpStream, dst: SocketAddr, row: &Arc<ConnectionRow>, inner: &Inner) -> anyhow::Result<()> {
    use anyhow::Context;
    let _ = client.set_nodelay(true);
    let rules = current_rules(inner).context("no policy yet; refusing")?;
    let decision = rules
        .ingress_decision(dst.port())
        .cloned()
        .with_context(|| format!("port {} is no longer covered by an ingress rule", dst.port()))?;
    tracing::Span::current().record("workload", tracing::field::display(&decision.workload.spiffe_id));
    row.set_own_id(&decision.workload.spiffe_id);
    row.set_mode(format!("{:?}", decision.mode).to_uppercase());
    let first = sniff(&client, inner.cfg.handshake.sniff_timeout).await?;
    match first {
        FirstBytes::Plaintext if decision.mode == TlsMode::Permissive => {
            row.set_mode("permissive-plaintext");
            row.set_state("established");
            let app = dial_marked(dst, inner.cfg.capture.mark).await?;
            relay(app, client, &row.counters, &inner.cfg.relay).await?;
            Ok(())
        }
        FirstBytes::Plaintext => {
            anyhow::bail!("plaintext refused on a {} port", format!("{:?}", decision.mode).to_uppercase())
        }
        FirstBytes::Tls => {
            let svid = inner
                .creds
                .borrow()
                .get(decision.workload.spiffe_id.as_str())
                .cloned()
                .with_context(|| format!("no SVID for {} yet; refusing", decision.workload.spiffe_id))?;
            let (tls, info) =
                accept_mtls(client, &svid, &decision.allowed, rules.bundles(), &inner.cfg.handshake).await?;
            tracing::Span::current().record("peer_id", tracing::field::debug(&info.peer_id));
            row.set_mode(format!("{:?}", decision.mode).to_uppercase());
            row.set_handshake(&info);
            row.set_state("established");
            tracing::info!(peer = ?info.peer_id, "inbound mTLS accepted");
            let app = dial_marked(dst, inner.cfg.capture.mark).await?;
            relay(app, tls, &row.counters, &inner.cfg.relay).await?;
            Ok(())
        }
    }
}
