//! Leader election among control-plane replicas, so that exactly one replica runs the
//! controllers (join-token GC, CA rotation, store compaction) while every replica serves the
//! API and daemons.
//!
//! On etcd: each replica holds a lease (TTL [`ElectionConfig::ttl`]) kept alive at a third of
//! its TTL, and campaigns with a transaction that creates the election key bound to that lease
//! only if the key does not exist (`create_revision == 0`). The holder of the key is the
//! leader. When the leader dies its lease expires and the key goes with it; the next campaign
//! of another replica wins. A leader that cannot renew its lease within two thirds of the TTL
//! steps down by itself, before the lease can expire and another replica can take over, so two
//! replicas never act at once as long as clocks tick at the same rate. A clean shutdown
//! revokes the lease, handing over at once.
//!
//! With the embedded store there is a single replica, which is always the leader.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::etcd::{EtcdClient, EtcdError, LeaseGrantResponse, LeaseKeepAliveResponse};

/// A replica's view of whether it leads. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Leadership {
    rx: watch::Receiver<bool>,
    /// Keeps the sender of [`Leadership::always`] alive.
    _always: Option<Arc<watch::Sender<bool>>>,
}

impl Leadership {
    /// The single-replica case: always the leader.
    pub fn always() -> Self {
        let (tx, rx) = watch::channel(true);
        Leadership { rx, _always: Some(Arc::new(tx)) }
    }

    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    /// Waits until leadership changes to `leading` (returns at once if it already is);
    /// returns `false` if the election ended.
    pub async fn wait_for(&mut self, leading: bool) -> bool {
        self.rx.wait_for(|l| *l == leading).await.is_ok()
    }
}

/// Tuning of the etcd election.
#[derive(Clone, Debug)]
pub struct ElectionConfig {
    /// The election key (shared by every replica of one control plane).
    pub key: String,
    /// This replica's identity, written as the key's value (unique per process).
    pub identity: String,
    /// Lease TTL: the longest the controllers stay without a leader after the leader dies.
    pub ttl: Duration,
}

impl ElectionConfig {
    pub fn new(identity: impl Into<String>) -> Self {
        ElectionConfig {
            key: "/riptides/leader/controllers".into(),
            identity: identity.into(),
            ttl: Duration::from_secs(10),
        }
    }
}

/// Starts campaigning; the returned [`Leadership`] follows the outcome until `cancel`.
pub fn start_etcd_election(client: EtcdClient, config: ElectionConfig, cancel: CancellationToken) -> Leadership {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(campaign(client, config, tx, cancel));
    Leadership { rx, _always: None }
}

fn b64(s: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s)
}

async fn grant(client: &EtcdClient, ttl: Duration) -> Result<i64, EtcdError> {
    let resp: LeaseGrantResponse =
        client.write("/v3/lease/grant", &json!({"TTL": ttl.as_secs().max(1).to_string()})).await?;
    if resp.id == 0 || !resp.error.is_empty() {
        return Err(EtcdError::Status { path: "/v3/lease/grant".into(), code: -1, message: resp.error });
    }
    Ok(resp.id)
}

/// Renews the lease once; `Ok(false)` if etcd says it has expired.
async fn keep_alive(client: &EtcdClient, lease: i64) -> Result<bool, EtcdError> {
    let (_, mut lines) =
        client.stream("/v3/lease/keepalive", &json!({"ID": lease.to_string()}), client.preferred()).await?;
    let msg: Option<crate::store::etcd::StreamResult<LeaseKeepAliveResponse>> = lines.next().await?;
    match msg.and_then(|m| m.result) {
        Some(r) => Ok(r.ttl > 0),
        None => Ok(false),
    }
}

/// Tries to take the key; returns whether this lease holds it.
async fn try_acquire(client: &EtcdClient, config: &ElectionConfig, lease: i64) -> Result<bool, EtcdError> {
    let k = b64(config.key.as_bytes());
    let body = json!({
        "compare": [{"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
        "success": [{"request_put": {"key": k, "value": b64(config.identity.as_bytes()), "lease": lease.to_string()}}],
        "failure": [{"request_range": {"key": k}}],
    });
    let resp: serde_json::Value = client.write("/v3/kv/txn", &body).await?;
    if resp.get("succeeded").and_then(|s| s.as_bool()).unwrap_or(false) {
        return Ok(true);
    }
    // Someone holds it: is it us (a campaign whose answer was lost)?
    let holder_lease = resp
        .pointer("/responses/0/response_range/kvs/0/lease")
        .and_then(|l| l.as_str().map(str::to_owned).or_else(|| l.as_i64().map(|n| n.to_string())));
    Ok(holder_lease.as_deref() == Some(lease.to_string().as_str()))
}

async fn revoke(client: &EtcdClient, lease: i64) {
    if let Err(e) = client.write::<serde_json::Value>("/v3/lease/revoke", &json!({"ID": lease.to_string()})).await {
        tracing::debug!(error = %e, "revoking the election lease failed; it will expire");
    }
}

async fn campaign(client: EtcdClient, config: ElectionConfig, tx: watch::Sender<bool>, cancel: CancellationToken) {
    let period = config.ttl / 3;
    let mut lease: Option<i64> = None;
    let mut last_renewed = Instant::now();
    loop {
        let step = async {
            let id = match lease {
                Some(id) => id,
                None => {
                    let id = grant(&client, config.ttl).await?;
                    last_renewed = Instant::now();
                    lease = Some(id);
                    id
                }
            };
            if !keep_alive(&client, id).await? {
                return Err(EtcdError::Status { path: "keepalive".into(), code: 5, message: "lease expired".into() });
            }
            last_renewed = Instant::now();
            try_acquire(&client, &config, id).await
        };
        // A step never takes longer than a renewal period, so stepping down is never late.
        let outcome = tokio::select! {
            _ = cancel.cancelled() => break,
            r = tokio::time::timeout(period, step) => r.unwrap_or_else(|_| {
                Err(EtcdError::Unknown { endpoint: String::new(), path: "election".into(), reason: "timed out".into() })
            }),
        };
        match outcome {
            Ok(leading) => {
                if leading != *tx.borrow() {
                    if leading {
                        tracing::info!(identity = %config.identity, "became the controller leader");
                    } else {
                        tracing::warn!(identity = %config.identity, "lost controller leadership");
                    }
                }
                tx.send_replace(leading);
            }
            Err(e) => {
                tracing::warn!(identity = %config.identity, error = %e, "leader election step failed");
                if matches!(&e, EtcdError::Status { code: 5, .. }) {
                    lease = None;
                }
                // Step down before the lease can have expired anywhere.
                if *tx.borrow() && last_renewed.elapsed() >= config.ttl * 2 / 3 {
                    tracing::warn!(identity = %config.identity, "could not renew the leader lease in time; stepping down");
                    tx.send_replace(false);
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(period) => {}
        }
    }
    tx.send_replace(false);
    if let Some(id) = lease {
        revoke(&client, id).await;
    }
}
