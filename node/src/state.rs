//! A small read-only snapshot of the daemon's state for accessors, the admin listener and the
//! tunnel. Actors own their state and publish what they want shown here; nothing reads it to
//! make decisions that another actor owns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use riptides_wire::proto::messages::PolicyDocument;
use serde::Serialize;
use tokio::sync::watch;

pub use riptides_wire::transport::TransportKind;

/// One SVID the daemon holds (never the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityInfo {
    pub spiffe_id: String,
    /// Unix seconds.
    pub not_before: u64,
    /// Unix seconds.
    pub not_after: u64,
    /// `daemon` or `workload`.
    pub kind: &'static str,
    /// How many certificates this identity has been issued by this process (1 = first).
    pub issued: u64,
}

impl IdentityInfo {
    pub fn not_after_time(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(self.not_after)
    }
}

/// What an operator must do, when the daemon cannot get an identity on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// No (valid) SVID and no join token: needs a token.
    NeedsJoinToken(String),
    /// The CP refused the token (used, expired, invalid).
    AttestationRefused(String),
    /// No way to trust the CP yet (no bundle on disk, no --ca-bundle / --ca-pin).
    NoTrust(String),
}

impl Problem {
    pub fn message(&self) -> &str {
        match self {
            Problem::NeedsJoinToken(m) | Problem::AttestationRefused(m) | Problem::NoTrust(m) => m,
        }
    }
}

/// The published state.
#[derive(Debug, Clone)]
pub struct Status {
    pub daemon_id: Option<String>,
    pub spiffe_id: Option<String>,
    pub trust_domain: String,
    pub dataplane: String,
    pub connected: bool,
    pub transport: Option<TransportKind>,
    /// Connections established after the first one.
    pub reconnects: u64,
    pub connects: u64,
    pub snapshots: u64,
    pub deltas: u64,
    pub policy_revision: Option<u64>,
    pub policy: Arc<PolicyDocument>,
    /// The daemon SVID first, then workload SVIDs by SPIFFE ID.
    pub identities: Vec<IdentityInfo>,
    pub csr_failures: u64,
    pub problem: Option<Problem>,
    pub last_error: Option<String>,
    pub admin_addr: Option<SocketAddr>,
    pub started_at: SystemTime,
    /// Why the dataplane cannot enforce policy right now (e.g. the kernel connector lost the
    /// module); makes `/readyz` fail.
    pub dataplane_problem: Option<String>,
    /// The dataplane's own health detail for `/config_dump` (kernel: the module's stats).
    pub dataplane_detail: serde_json::Value,
    /// TLS intercept for `/config_dump`: CA certificate path, credential sources' states
    /// (never a value).
    pub intercept: serde_json::Value,
    /// Credential sources without a usable credential; shown by `/readyz` as degraded
    /// (requests needing them are refused), without failing readiness: one unreachable token
    /// endpoint must not take a whole node out.
    pub credential_problems: Vec<String>,
}

impl Status {
    fn new(trust_domain: String, dataplane: String) -> Self {
        Status {
            daemon_id: None,
            spiffe_id: None,
            trust_domain,
            dataplane,
            connected: false,
            transport: None,
            reconnects: 0,
            connects: 0,
            snapshots: 0,
            deltas: 0,
            policy_revision: None,
            policy: Arc::new(PolicyDocument::default()),
            identities: Vec::new(),
            csr_failures: 0,
            problem: None,
            last_error: None,
            admin_addr: None,
            started_at: SystemTime::now(),
            dataplane_problem: None,
            dataplane_detail: serde_json::Value::Null,
            intercept: serde_json::Value::Null,
            credential_problems: Vec::new(),
        }
    }

    /// The daemon SVID, if held.
    pub fn daemon_identity(&self) -> Option<&IdentityInfo> {
        self.identities.iter().find(|i| i.kind == "daemon")
    }

    /// Why the daemon is not ready (empty = ready): a valid daemon identity and an applied policy.
    pub fn not_ready_reasons(&self, now: SystemTime) -> Vec<String> {
        let mut out = Vec::new();
        match self.daemon_identity() {
            Some(id) if id.not_after_time() > now => {}
            Some(id) if self.problem.is_none() => {
                out.push(format!("the daemon SVID {} expired at {}", id.spiffe_id, crate::rfc3339(id.not_after)))
            }
            Some(_) => {} // the problem below says what happened and what to do
            None => out.push("no daemon identity yet".to_owned()),
        }
        if self.policy_revision.is_none() {
            out.push("no policy applied yet".to_owned());
        }
        // Every workload identity the policy gives this node needs a valid SVID: without one,
        // its protected connections are refused (never sent in plaintext).
        for item in &self.policy.items {
            let riptides_wire::proto::messages::PolicyItem::WorkloadIdentity(json) = item else { continue };
            let Some(path) = serde_json::from_str::<serde_json::Value>(json)
                .ok()
                .and_then(|v| v.pointer("/spec/workloadID").and_then(|p| p.as_str()).map(str::to_owned))
            else {
                continue;
            };
            let id = format!("spiffe://{}/{}", self.trust_domain, path.trim_start_matches('/'));
            let valid =
                self.identities.iter().any(|i| i.kind == "workload" && i.spiffe_id == id && i.not_after_time() > now);
            if !valid {
                out.push(format!("no valid SVID for workload {id} (expired or not issued yet)"));
            }
        }
        if let Some(p) = &self.problem {
            out.push(p.message().to_owned());
        }
        if let Some(p) = &self.dataplane_problem {
            out.push(format!("{} dataplane: {p}", self.dataplane));
        }
        out
    }

    /// The `/readyz` body: `ready` or `not ready:` with one reason a line, then the dataplane
    /// in use (`dataplane: kernel|userspace|none`).
    pub fn readyz_body(&self, now: SystemTime) -> (bool, String) {
        let reasons = self.not_ready_reasons(now);
        let mut body = if reasons.is_empty() { String::from("ready\n") } else { String::from("not ready:\n") };
        for r in &reasons {
            body.push_str("- ");
            body.push_str(r);
            body.push('\n');
        }
        body.push_str("dataplane: ");
        body.push_str(&self.dataplane);
        body.push('\n');
        if !self.credential_problems.is_empty() {
            body.push_str("degraded:\n");
            for p in &self.credential_problems {
                body.push_str("- ");
                body.push_str(p);
                body.push('\n');
            }
        }
        (reasons.is_empty(), body)
    }

    /// The `/config_dump` document: policy revision, trust domain, identities (never keys).
    pub fn config_dump(&self) -> serde_json::Value {
        serde_json::json!({
            "daemonID": self.daemon_id,
            "spiffeID": self.spiffe_id,
            "trustDomain": self.trust_domain,
            "dataplane": self.dataplane,
            "dataplaneProblem": self.dataplane_problem,
            "dataplaneDetail": self.dataplane_detail,
            "connected": self.connected,
            "transport": self.transport.map(|t| t.to_string()),
            "policy": {
                "revision": self.policy_revision,
                "items": self.policy.items.len(),
                "bundleSequence": self.policy.bundle.sequence,
            },
            "intercept": self.intercept,
            "identities": self.identities.iter().map(|i| serde_json::json!({
                "spiffeID": i.spiffe_id,
                "kind": i.kind,
                "notBefore": crate::rfc3339(i.not_before),
                "notAfter": crate::rfc3339(i.not_after),
            })).collect::<Vec<_>>(),
        })
    }
}

/// The shared snapshot: one writer at a time through `send_modify`, any number of readers.
#[derive(Debug, Clone)]
pub struct Shared {
    tx: Arc<watch::Sender<Status>>,
}

impl Shared {
    pub fn new(trust_domain: String, dataplane: String) -> Self {
        Shared { tx: Arc::new(watch::Sender::new(Status::new(trust_domain, dataplane))) }
    }

    pub fn get(&self) -> Status {
        self.tx.borrow().clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut Status)) {
        self.tx.send_modify(f);
    }

    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.tx.subscribe()
    }
}
