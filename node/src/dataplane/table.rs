//! The connection table: every live protected (or observed) connection, for `/connections`,
//! `/metrics` and the control plane's tunnel.
//!
//! Bounded: a host under a connection flood must not grow the daemon's memory without limit,
//! so [`ConnectionTable::insert`] refuses a row beyond `capacity` and the caller refuses the
//! connection (fail closed; an unlisted connection would also be an unaccounted one).
//! Rows are removed by dropping their [`ConnectionGuard`], so no error path can leak a row.
//! Byte counters are atomics the relay updates without taking the table lock.
//!
//! Refused connections would vanish with their guard, yet a refusal is exactly what an
//! operator looks for ("why can't A reach B?"). So the table also remembers the most recent
//! refusals ([`ConnectionGuard::refuse`], [`ConnectionTable::record_refused`]) with the state
//! `refused: <reason>`, bounded in number and age by [`RefusedLimits`] so that a flood of
//! refused connections cannot grow the daemon's memory.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

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

    /// Whether no handshake or relay has started yet: a failure now is a refusal of the
    /// connection, while a failure after `established` is just its end.
    pub fn is_handshaking(&self) -> bool {
        self.progress().state == STATE_HANDSHAKING
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
            tls_version: Some(s.tls_version.clone()).filter(|v| !v.is_empty()),
            key_exchange: Some(s.kx_group.clone()).filter(|g| !g.is_empty()),
        }
    }
}

/// The table is full; refuse the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection table is full ({capacity} connections)")]
pub struct TableFull {
    pub capacity: usize,
}

/// The registry of live connections, and of the recently refused ones.
#[derive(Debug)]
pub struct ConnectionTable {
    capacity: usize,
    next_id: AtomicU64,
    rows: Mutex<HashMap<u64, Arc<ConnectionRow>>>,
    refused_limits: RefusedLimits,
    /// Oldest first; each with the time it was refused (monotonic, for expiry).
    refused: Mutex<VecDeque<(Instant, ConnectionSnapshot)>>,
    totals: Totals,
}

/// The state of a row before its handshake (or relay) started.
const STATE_HANDSHAKING: &str = "handshaking";

/// The state prefix of a refused connection. The control plane's GraphQL and the web UI flag
/// a connection whose state starts with `refused` (so `refused: <reason>` keeps the reason
/// readable while staying machine-recognisable).
pub const STATE_REFUSED_PREFIX: &str = "refused: ";

/// How many refused connections are remembered. A refusal is the event an operator looks for,
/// but a host under a flood of refusals (a scan, a client retrying in a loop) must not grow the
/// daemon: beyond this the oldest are forgotten. 256 rows of at most a few hundred bytes each
/// stay well under a MiB and fit one tunnel frame next to the live rows.
pub const REFUSED_CAPACITY: usize = 256;

/// How long a refused connection is remembered: long enough for an operator to open the UI
/// after a failure, short enough that the list shows the present and not last week.
pub const REFUSED_TTL: Duration = Duration::from_secs(10 * 60);

/// The longest reason kept (bytes). Reasons are error chains that may quote peer input (SNI,
/// identities, TLS alerts); cutting them keeps every remembered row small.
pub const REFUSED_REASON_MAX: usize = 300;

/// Bounds of the refused-connections list (defaults: the `REFUSED_*` constants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusedLimits {
    /// At most this many are kept, the most recent ones.
    pub capacity: usize,
    /// Each is forgotten after this long.
    pub ttl: Duration,
    /// Reasons are cut to this many bytes.
    pub max_reason_len: usize,
}

impl Default for RefusedLimits {
    fn default() -> RefusedLimits {
        RefusedLimits { capacity: REFUSED_CAPACITY, ttl: REFUSED_TTL, max_reason_len: REFUSED_REASON_MAX }
    }
}

/// A connection refused before it had a row (a policy verdict, a missing SVID, a full table),
/// for [`ConnectionTable::record_refused`].
#[derive(Debug, Clone)]
pub struct RefusedConnection<'a> {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub direction: Direction,
    /// How it would have been handled (`MUTUAL`...), empty if not decided yet.
    pub mode: &'a str,
    /// The local workload, if identified.
    pub own_id: Option<&'a SpiffeId>,
    /// The identity the peer presented, if the refusal came after its certificate.
    pub peer_id: Option<&'a SpiffeId>,
    pub reason: &'a str,
}

/// `refused: <reason>`, the reason cut at `max` bytes (on a character boundary).
fn refused_state(reason: &str, max: usize) -> String {
    let reason = reason.trim();
    let mut state = String::with_capacity(STATE_REFUSED_PREFIX.len() + reason.len().min(max) + 3);
    state.push_str(STATE_REFUSED_PREFIX);
    if reason.len() <= max {
        state.push_str(reason);
    } else {
        let mut cut = max;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        state.push_str(&reason[..cut]);
        state.push('…');
    }
    state
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
    /// A table of at most `capacity` live rows, remembering refusals within the default
    /// [`RefusedLimits`].
    pub fn new(capacity: usize) -> Arc<ConnectionTable> {
        ConnectionTable::with_limits(capacity, RefusedLimits::default())
    }

    pub fn with_limits(capacity: usize, refused_limits: RefusedLimits) -> Arc<ConnectionTable> {
        Arc::new(ConnectionTable {
            capacity,
            next_id: AtomicU64::new(1),
            rows: Mutex::new(HashMap::new()),
            refused_limits,
            refused: Mutex::new(VecDeque::new()),
            totals: Totals::default(),
        })
    }

    fn rows(&self) -> MutexGuard<'_, HashMap<u64, Arc<ConnectionRow>>> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refused(&self) -> MutexGuard<'_, VecDeque<(Instant, ConnectionSnapshot)>> {
        self.refused.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets refusals older than the TTL. The list is in refusal order, so they are at the front.
    fn expire(list: &mut VecDeque<(Instant, ConnectionSnapshot)>, ttl: Duration, now: Instant) {
        while list.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) >= ttl) {
            list.pop_front();
        }
    }

    fn push_refused(&self, snapshot: ConnectionSnapshot, now: Instant) {
        let limits = self.refused_limits;
        if limits.capacity == 0 {
            return;
        }
        let mut list = self.refused();
        Self::expire(&mut list, limits.ttl, now);
        while list.len() >= limits.capacity {
            list.pop_front();
        }
        list.push_back((now, snapshot));
    }

    /// Remembers a connection that was refused before it had a row, and counts the failure.
    pub fn record_refused(&self, r: RefusedConnection<'_>) {
        self.record_refused_at(r, Instant::now());
    }

    fn record_refused_at(&self, r: RefusedConnection<'_>, now: Instant) {
        self.record_failure(r.direction);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let snapshot = ConnectionSnapshot {
            id,
            source: r.source.to_string(),
            destination: r.destination.to_string(),
            port: r.destination.port(),
            direction: r.direction,
            mode: r.mode.to_owned(),
            state: refused_state(r.reason, self.refused_limits.max_reason_len),
            tls_version: String::new(),
            kx_group: String::new(),
            own_spiffe_id: r.own_id.map(ToString::to_string),
            peer_spiffe_id: r.peer_id.map(ToString::to_string),
            binding: None,
            bytes_in: 0,
            bytes_out: 0,
            started: rfc3339(SystemTime::now()),
        };
        self.push_refused(snapshot, now);
    }

    /// How many refused connections are remembered now.
    pub fn refused_len(&self) -> usize {
        let mut list = self.refused();
        Self::expire(&mut list, self.refused_limits.ttl, Instant::now());
        list.len()
    }

    pub fn refused_limits(&self) -> RefusedLimits {
        self.refused_limits
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
            progress: Mutex::new(Progress { state: STATE_HANDSHAKING.into(), ..Progress::default() }),
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

    /// Live rows (refused ones are not counted).
    pub fn len(&self) -> usize {
        self.rows().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// All live rows and the remembered refusals, most recent first (by when they started).
    pub fn snapshot(&self) -> Vec<ConnectionSnapshot> {
        self.snapshot_at(Instant::now())
    }

    fn snapshot_at(&self, now: Instant) -> Vec<ConnectionSnapshot> {
        let rows: Vec<Arc<ConnectionRow>> = self.rows().values().cloned().collect();
        let mut out: Vec<ConnectionSnapshot> = rows.iter().map(|r| r.snapshot()).collect();
        {
            let mut list = self.refused();
            Self::expire(&mut list, self.refused_limits.ttl, now);
            out.extend(list.iter().map(|(_, s)| s.clone()));
        }
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

    /// Ends a connection that was refused (or failed before it was established): the row
    /// leaves the live table and is remembered with the state `refused: <reason>` (and the
    /// peer's identity, when the refusal named it); the failure is counted.
    pub fn refuse(self, reason: &str, peer_id: Option<&SpiffeId>) {
        self.refuse_at(reason, peer_id, Instant::now());
    }

    fn refuse_at(self, reason: &str, peer_id: Option<&SpiffeId>, now: Instant) {
        let Some(table) = self.table.upgrade() else { return };
        table.record_failure(self.row.direction);
        let mut snapshot = self.row.snapshot();
        snapshot.state = refused_state(reason, table.refused_limits.max_reason_len);
        if let Some(p) = peer_id {
            snapshot.peer_spiffe_id.get_or_insert_with(|| p.to_string());
        }
        // The live row goes first (with the guard), so the connection is never listed twice.
        drop(self);
        table.push_refused(snapshot, now);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn refused<'a>(port: u16, reason: &'a str) -> RefusedConnection<'a> {
        RefusedConnection {
            source: addr("10.0.0.1:40000"),
            destination: SocketAddr::new(addr("10.0.0.2:1").ip(), port),
            direction: Direction::Inbound,
            mode: "MUTUAL",
            own_id: None,
            peer_id: None,
            reason,
        }
    }

    fn limits(capacity: usize, ttl_secs: u64) -> RefusedLimits {
        RefusedLimits { capacity, ttl: Duration::from_secs(ttl_secs), max_reason_len: 40 }
    }

    #[test]
    fn a_refused_row_leaves_the_live_table_and_is_remembered_with_its_reason() {
        let table = ConnectionTable::new(4);
        let g = table.insert(addr("10.0.0.1:40000"), addr("10.0.0.2:8000"), Direction::Inbound).unwrap();
        g.set_mode("MUTUAL");
        g.set_own_id(&SpiffeId::parse("spiffe://example.com/orders").unwrap());
        assert!(g.is_handshaking());
        let intruder = SpiffeId::parse("spiffe://example.com/intruder").unwrap();
        g.refuse("peer identity spiffe://example.com/intruder is not allowed", Some(&intruder));
        assert_eq!(table.len(), 0, "no live row left");
        assert_eq!(table.refused_len(), 1);
        assert_eq!(table.totals().inbound_failed.load(Ordering::Relaxed), 1);
        let rows = table.snapshot();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].state, "refused: peer identity spiffe://example.com/intruder is not allowed");
        assert_eq!(rows[0].mode, "MUTUAL");
        assert_eq!(rows[0].own_spiffe_id.as_deref(), Some("spiffe://example.com/orders"));
        assert_eq!(rows[0].peer_spiffe_id.as_deref(), Some("spiffe://example.com/intruder"));
        let entry = ConnectionEntry::from(&rows[0]);
        assert_eq!((entry.local.as_str(), entry.remote.as_str()), ("10.0.0.2:8000", "10.0.0.1:40000"));
        assert_eq!(entry.workload_id.as_deref(), Some("spiffe://example.com/orders"));
        assert_eq!(entry.peer_id.as_deref(), Some("spiffe://example.com/intruder"));
        assert!(entry.state.starts_with("refused"));
        assert_eq!((entry.tls_version, entry.key_exchange), (None, None));
    }

    #[test]
    fn the_refused_list_is_bounded_under_a_flood() {
        let table = ConnectionTable::with_limits(8, limits(16, 600));
        let long = "x".repeat(10_000);
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            let now = t0 + Duration::from_micros(u64::from(i));
            if i % 2 == 0 {
                table.record_refused_at(refused(8000, &long), now);
            } else {
                let g = table.insert(addr("10.0.0.1:40000"), addr("10.0.0.2:8000"), Direction::Outbound).unwrap();
                g.refuse_at(&long, None, now);
            }
        }
        assert_eq!(table.refused().len(), 16, "at most the capacity is kept");
        assert_eq!(table.len(), 0);
        let rows = table.snapshot_at(t0 + Duration::from_millis(100));
        assert_eq!(rows.len(), 16);
        // Every reason is cut, so one row stays small whatever the error said.
        for r in &rows {
            assert!(r.state.len() <= STATE_REFUSED_PREFIX.len() + 40 + '…'.len_utf8(), "{}", r.state.len());
            assert!(r.state.starts_with("refused: xxx") && r.state.ends_with('…'));
        }
        // The ones kept are the most recent ones.
        assert_eq!(rows[0].id, 100_000);
        assert_eq!(rows[15].id, 100_000 - 15);
        let t = table.totals();
        assert_eq!(t.inbound_failed.load(Ordering::Relaxed) + t.outbound_failed.load(Ordering::Relaxed), 100_000);
    }

    #[test]
    fn refused_rows_expire() {
        let table = ConnectionTable::with_limits(8, limits(16, 600));
        let t0 = Instant::now();
        table.record_refused_at(refused(1, "old"), t0);
        table.record_refused_at(refused(2, "newer"), t0 + Duration::from_secs(300));
        assert_eq!(table.snapshot_at(t0 + Duration::from_secs(599)).len(), 2);
        let rows = table.snapshot_at(t0 + Duration::from_secs(600));
        assert_eq!(rows.iter().map(|r| r.state.as_str()).collect::<Vec<_>>(), ["refused: newer"]);
        assert!(table.snapshot_at(t0 + Duration::from_secs(900)).is_empty());
        assert_eq!(table.refused().len(), 0, "expired rows are dropped, not only hidden");
        // A push also expires what is due.
        table.record_refused_at(refused(3, "a"), t0 + Duration::from_secs(1000));
        table.record_refused_at(refused(4, "b"), t0 + Duration::from_secs(2000));
        assert_eq!(table.refused().len(), 1);
    }

    #[test]
    fn live_and_refused_rows_are_listed_most_recent_first() {
        let table = ConnectionTable::new(8);
        let live_old = table.insert(addr("10.0.0.1:40001"), addr("10.0.0.2:8001"), Direction::Outbound).unwrap();
        table.record_refused(refused(8002, "no policy yet"));
        let to_refuse = table.insert(addr("10.0.0.1:40003"), addr("10.0.0.2:8003"), Direction::Outbound).unwrap();
        let live_new = table.insert(addr("10.0.0.1:40004"), addr("10.0.0.2:8004"), Direction::Inbound).unwrap();
        live_new.set_state("established");
        to_refuse.refuse("mTLS failed", None);
        let ports: Vec<(u16, String)> = table.snapshot().into_iter().map(|r| (r.port, r.state)).collect();
        assert_eq!(
            ports,
            [
                (8004, "established".to_owned()),
                (8003, "refused: mTLS failed".to_owned()),
                (8002, "refused: no policy yet".to_owned()),
                (8001, "handshaking".to_owned()),
            ]
        );
        assert!(!live_new.is_handshaking() && live_old.is_handshaking());
        assert_eq!(table.len(), 2);
        assert_eq!(table.entries().len(), 4, "the tunnel lists refused rows too");
    }

    #[test]
    fn a_reason_is_cut_on_a_character_boundary() {
        let s = refused_state("ééééé", 3);
        assert_eq!(s, "refused: é…");
        assert_eq!(refused_state("  short  ", 3), "refused: short"[..12].to_owned() + "…");
        assert_eq!(refused_state("ok", 300), "refused: ok");
    }

    #[test]
    fn a_completed_handshake_is_in_the_tunnel_entry() {
        let table = ConnectionTable::new(2);
        let g = table.insert(addr("10.0.0.1:40000"), addr("10.0.0.2:8000"), Direction::Outbound).unwrap();
        g.set_handshake(&HandshakeInfo {
            peer_id: Some(SpiffeId::parse("spiffe://example.com/orders").unwrap()),
            tls_version: Some(rustls::ProtocolVersion::TLSv1_3),
            kx_group: Some(rustls::NamedGroup::X25519MLKEM768),
            alpn: None,
        });
        let e = table.entries().remove(0);
        assert_eq!(e.tls_version.as_deref(), Some("TLSv1.3"));
        assert_eq!(e.key_exchange.as_deref(), Some("X25519MLKEM768"));
        assert_eq!(e.state, "established");
        assert_eq!(e.peer_id.as_deref(), Some("spiffe://example.com/orders"));
    }
}
