//! The certificate manager: the daemon's own SVID and one SVID per WorkloadIdentity in the
//! current policy. Keys are generated here and never leave the daemon. Rotation at half life
//! +-10%; per-identity backoff on failure; at most `max_inflight_csrs` CSRs at once; a
//! certificate whose renewal fails is kept until it expires.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use riptides_wire::proto::messages::WorkloadCsr;
use tokio::task::JoinHandle;

use crate::backoff::{csr_backoff, random_unit, rotation_time};
use crate::identity::{self, Identity};
use crate::policy::WantedIdentity;
use crate::policy_actor::PolicyMsg;
use crate::session::{SessionMsg, SignError, SignRequest};
use crate::state::IdentityInfo;
use crate::Ctx;

/// Which identity a slot holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Which {
    Daemon,
    Workload(String),
}

pub enum CertMsg {
    Tick,
    /// The workload identities of the current policy.
    Policy(Vec<WantedIdentity>),
    /// A daemon SVID from attestation (already persisted).
    DaemonIdentity(Identity),
    Done(Which, Result<Identity, SignError>),
}

struct Slot {
    wanted: Option<WantedIdentity>,
    current: Option<Identity>,
    rotate_at: SystemTime,
    next_attempt: Instant,
    failures: u32,
    inflight: bool,
    issued: u64,
}

impl Slot {
    fn new(wanted: Option<WantedIdentity>, current: Option<Identity>) -> Self {
        let mut s = Slot {
            wanted,
            current: None,
            rotate_at: SystemTime::now(),
            next_attempt: Instant::now(),
            failures: 0,
            inflight: false,
            issued: 0,
        };
        if let Some(c) = current {
            s.install(c, false);
            s.issued = 0;
        }
        s
    }

    /// Installs a certificate. For a fresh one the half life counts from now, not from its
    /// (backdated) NotBefore, so a short-lived SVID is not due again the moment it arrives.
    fn install(&mut self, id: Identity, fresh: bool) {
        let from = if fresh { id.not_before.max(SystemTime::now()) } else { id.not_before };
        self.rotate_at = rotation_time(from, id.not_after, random_unit());
        self.current = Some(id);
        self.failures = 0;
        self.issued += 1;
    }

    fn due(&self, now: SystemTime) -> bool {
        self.current.as_ref().is_none_or(|_| now >= self.rotate_at)
    }
}

#[derive(Clone)]
pub struct CertActor {
    pub ctx: Arc<Ctx>,
}

pub struct CertState {
    daemon: Option<Slot>,
    workloads: BTreeMap<String, Slot>,
    inflight: usize,
    ticker: JoinHandle<()>,
}

impl CertActor {
    fn publish(&self, st: &CertState) {
        let now = SystemTime::now();
        let info = |kind: &'static str, slot: &Slot| {
            slot.current.as_ref().filter(|c| c.not_after > now).map(|c| IdentityInfo {
                spiffe_id: c.spiffe_id.clone(),
                not_before: identity::unix(c.not_before),
                not_after: identity::unix(c.not_after),
                kind,
                issued: slot.issued,
            })
        };
        let mut list: Vec<IdentityInfo> = Vec::new();
        // The daemon SVID is shown even when expired (readiness says so).
        if let Some(c) = st.daemon.as_ref().and_then(|s| s.current.as_ref().map(|c| (s, c))) {
            list.push(IdentityInfo {
                spiffe_id: c.1.spiffe_id.clone(),
                not_before: identity::unix(c.1.not_before),
                not_after: identity::unix(c.1.not_after),
                kind: "daemon",
                issued: c.0.issued,
            });
        }
        list.extend(st.workloads.values().filter_map(|s| info("workload", s)));
        self.ctx.shared.update(|s| s.identities = list);
        // The dataplane's view: chain and key of every valid workload SVID.
        let mut creds = std::collections::BTreeMap::new();
        for c in st.workloads.values().filter_map(|s| s.current.as_ref()).filter(|c| c.is_valid_at(now)) {
            match c
                .rustls()
                .map_err(|e| format!("{e:#}"))
                .and_then(|(chain, key)| crate::dataplane::handshake::Svid::new(chain, key).map_err(|e| e.to_string()))
            {
                Ok(svid) => {
                    creds.insert(c.spiffe_id.clone(), Arc::new(svid));
                }
                Err(e) => tracing::error!(spiffe_id = %c.spiffe_id, error = %e, "SVID unusable for the dataplane"),
            }
        }
        let changed = {
            let cur = self.ctx.credentials.borrow();
            cur.len() != creds.len()
                || cur.iter().zip(creds.iter()).any(|((a, x), (b, y))| a != b || x.chain() != y.chain())
        };
        if changed {
            self.ctx.credentials.send_replace(Arc::new(creds));
        }
    }

    fn start(&self, myself: &ActorRef<CertMsg>, which: Which, slot: &mut Slot) {
        slot.inflight = true;
        let ctx = self.ctx.clone();
        let myself = myself.clone();
        let wanted = slot.wanted.clone();
        let ttl = wanted.as_ref().and_then(|w| w.ttl).or(ctx.config.workload_ttl);
        tokio::spawn(async move {
            let result = async {
                let key = identity::new_key().map_err(|e| SignError::Failed(format!("{e:#}")))?;
                let (req, expect) = match &wanted {
                    None => {
                        let csr_der = identity::csr_der(&key, None).map_err(|e| SignError::Failed(format!("{e:#}")))?;
                        (SignRequest::Daemon { csr_der }, None)
                    }
                    Some(w) => {
                        let csr_der = identity::csr_der(&key, Some(&w.spiffe_id))
                            .map_err(|e| SignError::Failed(format!("{e:#}")))?;
                        let ttl_secs = ttl.map(|t| t.as_secs().clamp(1, u32::MAX as u64) as u32);
                        (
                            SignRequest::Workload(WorkloadCsr {
                                workload_id: w.workload_id.clone(),
                                csr_der,
                                ttl_secs,
                            }),
                            Some(w.spiffe_id.clone()),
                        )
                    }
                };
                let session = ctx.session().ok_or(SignError::NotConnected)?;
                let timeout = ctx.config.request_timeout + Duration::from_secs(1);
                let svid = match session.call(|r| SessionMsg::Sign(req, r), Some(timeout)).await {
                    Ok(CallResult::Success(r)) => r?,
                    Ok(CallResult::Timeout) => return Err(SignError::Failed("the CSR timed out".into())),
                    Ok(CallResult::SenderError) | Err(_) => return Err(SignError::NotConnected),
                };
                if let Some(e) = expect {
                    if svid.spiffe_id != e {
                        return Err(SignError::Failed(format!("asked for {e}, got an SVID for {}", svid.spiffe_id)));
                    }
                }
                Identity::new(svid.spiffe_id, key.serialize_pem(), svid.chain_der)
                    .map_err(|e| SignError::Failed(format!("{e:#}")))
            }
            .await;
            let _ = myself.cast(CertMsg::Done(which, result));
        });
    }
}

impl Actor for CertActor {
    type Msg = CertMsg;
    type State = CertState;
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<CertMsg>, _: ()) -> Result<CertState, ActorProcessingErr> {
        let daemon = match self.ctx.data.load_identity() {
            Ok(Some(p)) => Some(Slot::new(None, Some(p.identity))),
            _ => None,
        };
        let now = SystemTime::now();
        let wanted: Vec<WantedIdentity> = match self.ctx.policy() {
            Some(p) => ractor::call!(p, PolicyMsg::Wanted).unwrap_or_default(),
            None => Vec::new(),
        };
        let mut cached: BTreeMap<String, Identity> = self
            .ctx
            .data
            .load_workloads()
            .into_iter()
            .filter(|i| i.not_after > now)
            .map(|i| (i.spiffe_id.clone(), i))
            .collect();
        let mut workloads = BTreeMap::new();
        for w in wanted {
            let cur = cached.remove(&w.spiffe_id);
            workloads.insert(w.spiffe_id.clone(), Slot::new(Some(w), cur));
        }
        for stale in cached.keys() {
            self.ctx.data.remove_workload(stale);
        }
        let tick = self.ctx.config.cert_tick;
        let me = myself.clone();
        let ticker = tokio::spawn(async move {
            let mut iv = tokio::time::interval(tick);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                iv.tick().await;
                if me.cast(CertMsg::Tick).is_err() {
                    return;
                }
            }
        });
        let st = CertState { daemon, workloads, inflight: 0, ticker };
        self.publish(&st);
        Ok(st)
    }

    async fn post_stop(&self, _: ActorRef<CertMsg>, st: &mut CertState) -> Result<(), ActorProcessingErr> {
        st.ticker.abort();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<CertMsg>,
        msg: CertMsg,
        st: &mut CertState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CertMsg::Tick => {
                let now = SystemTime::now();
                let inst = Instant::now();
                let max = self.ctx.config.max_inflight_csrs.max(1);
                let mut expired = false;
                if let Some(slot) = st.daemon.as_mut() {
                    // Renewal needs a live daemon SVID (mTLS); an expired one is re-attested by the session.
                    let renewable = slot.current.as_ref().is_some_and(|c| c.is_valid_at(now));
                    if renewable && !slot.inflight && inst >= slot.next_attempt && slot.due(now) && st.inflight < max {
                        st.inflight += 1;
                        self.start(&myself, Which::Daemon, slot);
                    }
                }
                for (id, slot) in st.workloads.iter_mut() {
                    if slot.current.as_ref().is_some_and(|c| c.not_after <= now) {
                        tracing::warn!(spiffe_id = %id, "workload SVID expired before it could be renewed");
                        slot.current = None;
                        expired = true;
                    }
                    if st.inflight >= max {
                        continue;
                    }
                    if !slot.inflight && inst >= slot.next_attempt && slot.due(now) {
                        st.inflight += 1;
                        self.start(&myself, Which::Workload(id.clone()), slot);
                    }
                }
                if expired {
                    self.publish(st);
                }
            }
            CertMsg::Policy(wanted) => {
                let mut keep = BTreeMap::new();
                for w in wanted {
                    match st.workloads.remove(&w.spiffe_id) {
                        Some(mut slot) => {
                            slot.wanted = Some(w.clone());
                            keep.insert(w.spiffe_id, slot);
                        }
                        None => {
                            tracing::info!(spiffe_id = %w.spiffe_id, "new workload identity in policy");
                            keep.insert(w.spiffe_id.clone(), Slot::new(Some(w), None));
                        }
                    }
                }
                for (id, _) in std::mem::replace(&mut st.workloads, keep) {
                    tracing::info!(spiffe_id = %id, "workload identity removed from policy; dropping its SVID");
                    self.ctx.data.remove_workload(&id);
                }
                self.publish(st);
                // New identities get their CSR now rather than at the next tick.
                let _ = myself.cast(CertMsg::Tick);
            }
            CertMsg::DaemonIdentity(id) => {
                tracing::info!(spiffe_id = %id.spiffe_id, "daemon SVID installed");
                match st.daemon.as_mut() {
                    Some(slot) => slot.install(id, true),
                    None => {
                        let mut slot = Slot::new(None, None);
                        slot.install(id, true);
                        st.daemon = Some(slot);
                    }
                }
                self.publish(st);
            }
            CertMsg::Done(which, result) => {
                st.inflight = st.inflight.saturating_sub(1);
                let slot = match &which {
                    Which::Daemon => st.daemon.as_mut(),
                    Which::Workload(id) => st.workloads.get_mut(id),
                };
                let Some(slot) = slot else { return Ok(()) }; // removed from policy meanwhile
                slot.inflight = false;
                match result {
                    Ok(id) => {
                        let spiffe_id = id.spiffe_id.clone();
                        let persisted = match which {
                            Which::Daemon => self.ctx.data.save_daemon_svid(&id),
                            Which::Workload(_) => self.ctx.data.save_workload(&id),
                        };
                        if let Err(e) = persisted {
                            tracing::error!(%spiffe_id, error = %format!("{e:#}"), "cannot persist the new SVID");
                        }
                        if which == Which::Daemon {
                            if let Some(s) = self.ctx.session() {
                                let _ = s.cast(SessionMsg::DaemonIdentity(id.clone()));
                            }
                        }
                        tracing::info!(%spiffe_id, not_after = identity::unix(id.not_after), "SVID issued");
                        slot.install(id, true);
                        self.publish(st);
                        if let Some(s) = self.ctx.session() {
                            let _ = s.cast(SessionMsg::StatusChanged);
                        }
                    }
                    Err(SignError::NotConnected) => {
                        slot.next_attempt = Instant::now() + Duration::from_millis(500).mul_f64(0.5 + random_unit());
                    }
                    Err(e) => {
                        slot.failures = slot.failures.saturating_add(1);
                        let d = csr_backoff(
                            self.ctx.config.csr_backoff_min,
                            self.ctx.config.csr_backoff_max,
                            slot.failures,
                            random_unit(),
                        );
                        slot.next_attempt = Instant::now() + d;
                        let name = match &which {
                            Which::Daemon => "daemon".to_owned(),
                            Which::Workload(id) => id.clone(),
                        };
                        tracing::warn!(spiffe_id = %name, error = %e, failures = slot.failures, retry_in_ms = d.as_millis() as u64,
                            keeping_current = slot.current.is_some(), "CSR failed");
                        self.ctx.shared.update(|s| s.csr_failures += 1);
                    }
                }
            }
        }
        Ok(())
    }
}
