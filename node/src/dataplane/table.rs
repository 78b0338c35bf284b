//! The connection table: every live protected (or observed) connection, for `/connections`,
//! `/metrics` and the control plane's tunnel.
//!
//! Bounded: a host under a connection flood must not grow the daemon's memory without limit,
//! so [`ConnectionTable::insert`] refuses a row beyond `capacity` and the caller refuses the
//! connection (fail closed; an unlisted connection would also be an unaccounted one).
//! Rows are removed by dropping their [`ConnectionGuard`], so no error path can leak a row.
//! Byte counters are atomics the relay updates without taking the table lock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::SystemTime;

use riptides_wire::proto::messages::ConnectionEntry;
use riptides_wire::SpiffeId;
use serde::Serialize;

use super::handshake::HandshakeInfo;

/// Which way the connection goes, seen from the local workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// A local workload connects out (egress).
    Outbound,
    /// A remote peer connects to a local workload (ingress).
    Inbound,
}

/// Bytes each way, from the local workload's point of view: `bytes_out` is what it sent,
/// `bytes_in` what it received.
#[derive(Debug, Default)]
pub struct ByteCounters {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl ByteCounters {
    pub fn add_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> (u64, u64) {
        (self.bytes_in.load(Ordering::Relaxed), self.bytes_out.load(Ordering::Relaxed))
    }
}

/// The fields that change as the connection progresses.
#[derive(Debug, Clone, Default)]
struct Progress {
    mode: String,
    state: String,
    tls_version: String,
    kx_group: String,
    own_id: Option<String>,
    peer_id: Option<String>,
    binding: Option<String>,
}

/// One live connection.
#[derive(Debug)]
pub struct ConnectionRow {
    id: u64,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub direction: Direction,
    pub started: SystemTime,
    pub counters: Arc<ByteCounters>,
    progress: Mutex<Progress>,
}

impl ConnectionRow {
    fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// How the connection is handled: `MUTUAL`, `SIMPLE`, `PERMISSIVE`, `plaintext`,
    /// `passthrough`... (free text, as the dataplane names it).
    pub fn set_mode(&self, mode: impl Into<String>) {
        self.progress().mode = mode.into();
    }

    /// `handshaking`, `established`, `closing`...
    pub fn set_state(&self, state: impl Into<String>) {
        self.progress().state = state.into();
    }

    pub fn set_own_id(&self, id: &SpiffeId) {
        self.progress().own_id = Some(id.to_string());
    }

    /// The CredentialBinding whose credential this connection's requests carry (its
    /// `namespace/name`: never the credential).
    pub fn set_binding(&self, name: impl Into<String>) {
        self.progress().binding = Some(name.into());
    }

    /// Records a completed handshake: version, group, peer identity; state `established`.
    pub fn set_handshake(&self, info: &HandshakeInfo) {
        let mut p = self.progress();
        p.tls_version = info.tls_version_name();
        p.kx_group = info.kx_group_name();
        p.peer_id = info.peer_id.as_ref().map(ToString::to_string);
        p.state = "established".into();
    }

    pub fn snapshot(&self) -> ConnectionSnapshot {
        let p = self.progress().clone();
        let (bytes_in, bytes_out) = self.counters.get();
        ConnectionSnapshot {
            id: self.id,
            source: self.source.to_string(),
            destination: self.destination.to_string(),
            port: self.destination.port(),
            direction: self.direction,
            mode: p.mode,
            state: p.state,
            tls_version: p.tls_version,
            kx_group: p.kx_group,
            own_spiffe_id: p.own_id,
            peer_spiffe_id: p.peer_id,
            binding: p.binding,
            bytes_in,
            bytes_out,
            started: rfc3339(self.started),
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// A row as `/connections` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSnapshot {
    pub id: u64,
    pub source: String,
    pub destination: String,
    pub port: u16,
    pub direction: Direction,
    pub mode: String,
    pub state: String,
    pub tls_version: String,
    pub kx_group: String,
    #[serde(rename = "ownSPIFFEID")]
    pub own_spiffe_id: Option<String>,
    #[serde(rename = "peerSPIFFEID")]
    pub peer_spiffe_id: Option<String>,
    /// The CredentialBinding applied (TLS intercept), by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binding: Option<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// RFC 3339.
    pub started: String,
}

impl From<&ConnectionSnapshot> for ConnectionEntry {
    /// `local` is the local workload's end: the source of an outbound connection, the
    /// destination of an inbound one.
    fn from(s: &ConnectionSnapshot) -> ConnectionEntry {
        let (local, remote) = match s.direction {
            Direction::Outbound => (s.source.clone(), s.destination.clone()),
            Direction::Inbound => (s.destination.clone(), s.source.clone()),
        };
        ConnectionEntry {
            local,
            remote,
            workload_id: s.own_spiffe_id.clone(),
            peer_id: s.peer_spiffe_id.clone(),
            mode: s.mode.clone(),
            state: s.state.clone(),
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
        }
    }
}

/// The table is full; refuse the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection table is full ({capacity} connections)")]
pub struct TableFull {
    pub capacity: usize,
}

/// The registry of live connections.
#[derive(Debug)]
pub struct ConnectionTable {
    capacity: usize,
    next_id: AtomicU64,
    rows: Mutex<HashMap<u64, Arc<ConnectionRow>>>,
    totals: Totals,
}

/// Cumulative counters for `/metrics` (live rows come and go; these only grow).
#[derive(Debug, Default)]
pub struct Totals {
    pub outbound: AtomicU64,
    pub inbound: AtomicU64,
    pub outbound_failed: AtomicU64,
    pub inbound_failed: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// Default capacity: generous for a host, small enough that the table stays a few MiB.
pub const DEFAULT_CAPACITY: usize = 16_384;

impl ConnectionTable {
    pub fn new(capacity: usize) -> Arc<ConnectionTable> {
        Arc::new(ConnectionTable {
            capacity,
            next_id: AtomicU64::new(1),
            rows: Mutex::new(HashMap::new()),
            totals: Totals::default(),
        })
    }

    fn rows(&self) -> MutexGuard<'_, HashMap<u64, Arc<ConnectionRow>>> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection (state `handshaking`). The row lives as long as the guard.
    pub fn insert(
        self: &Arc<Self>,
        source: SocketAddr,
        destination: SocketAddr,
        direction: Direction,
    ) -> Result<ConnectionGuard, TableFull> {
        let mut rows = self.rows();
        if rows.len() >= self.capacity {
            return Err(TableFull { capacity: self.capacity });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let row = Arc::new(ConnectionRow {
            id,
            source,
            destination,
            direction,
            started: SystemTime::now(),
            counters: Arc::new(ByteCounters::default()),
            progress: Mutex::new(Progress { state: "handshaking".into(), ..Progress::default() }),
        });
        rows.insert(id, row.clone());
        match direction {
            Direction::Outbound => &self.totals.outbound,
            Direction::Inbound => &self.totals.inbound,
        }
        .fetch_add(1, Ordering::Relaxed);
        Ok(ConnectionGuard { table: Arc::downgrade(self), row })
    }

    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// Counts a connection that was refused or failed (handshake, policy, dial).
    pub fn record_failure(&self, direction: Direction) {
        let c = match direction {
            Direction::Outbound => &self.totals.outbound_failed,
            Direction::Inbound => &self.totals.inbound_failed,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn len(&self) -> usize {
        self.rows().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// All rows, most recent first.
    pub fn snapshot(&self) -> Vec<ConnectionSnapshot> {
        let rows: Vec<Arc<ConnectionRow>> = self.rows().values().cloned().collect();
        let mut out: Vec<ConnectionSnapshot> = rows.iter().map(|r| r.snapshot()).collect();
        out.sort_by_key(|s| std::cmp::Reverse(s.id));
        out
    }

    /// The `/connections` body.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.snapshot()).unwrap_or(serde_json::Value::Array(Vec::new()))
    }

    /// Rows for the CP tunnel, most recent first.
    pub fn entries(&self) -> Vec<ConnectionEntry> {
        self.snapshot().iter().map(ConnectionEntry::from).collect()
    }
}

/// Keeps a row in the table; dropping it removes the row.
#[derive(Debug)]
pub struct ConnectionGuard {
    table: Weak<ConnectionTable>,
    row: Arc<ConnectionRow>,
}

impl ConnectionGuard {
    pub fn row(&self) -> &Arc<ConnectionRow> {
        &self.row
    }
}

impl std::ops::Deref for ConnectionGuard {
    type Target = ConnectionRow;
    fn deref(&self) -> &ConnectionRow {
        &self.row
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if let Some(table) = self.table.upgrade() {
            table.rows().remove(&self.row.id);
            let (bytes_in, bytes_out) = self.row.counters.get();
            table.totals.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
            table.totals.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        }
    }
}
