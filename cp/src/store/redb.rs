//! The embedded default backend: one redb file in the data dir.
//!
//! Layout (three tables):
//! - `objects`: encoded key -> (create_revision, mod_revision, value);
//! - `events`: revision -> the change made at that revision (the watch history), trimmed to the
//!   most recent [`RedbOptions::history_revisions`] on every write;
//! - `meta`: the current revision and the compaction point.
//!
//! Each write is one redb write transaction that updates all three tables and commits with
//! immediate durability, so an `Ok` survives `kill -9` and the revision never goes backwards
//! across restarts. redb is blocking, so all database work runs on tokio's blocking pool.
//! Writers additionally take a mutex around commit + publish, so live watchers receive events
//! in exactly revision order.

use std::fmt::Display;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use ::redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction,
};
use async_trait::async_trait;
use tokio::sync::broadcast;

use super::codec;
use super::watch::{replay_then_live, History, HistoryChunk, WatchFilter};
use super::{validate_part, ObjectKey, Revision, Store, StoreError, StoredObject, WatchEvent, WatchStream};

const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

/// How many history events one replay page reads; bounds a watcher's replay memory.
const HISTORY_PAGE: usize = 256;

/// Tuning for [`RedbStore`].
#[derive(Clone, Debug)]
pub struct RedbOptions {
    /// How many recent revisions of change history are kept for watch resumption. Older ones
    /// are dropped automatically on write; watching from before them yields `Gone`.
    pub history_revisions: u64,
    /// Capacity of the live event channel. A watcher more than this many events behind is
    /// ended with `WatchLagged`, which keeps memory bounded regardless of slow clients.
    pub watch_buffer: usize,
    /// Largest accepted value, in bytes (etcd's default request limit is 1.5 MiB).
    pub max_value_bytes: usize,
}

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions { history_revisions: 10_000, watch_buffer: 1024, max_value_bytes: 3 * 1024 * 1024 }
    }
}

/// [`Store`] on an embedded redb file. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    path: PathBuf,
    live: broadcast::Sender<Arc<WatchEvent>>,
    /// Serialises commit + publish so live events leave in revision order (redb's own writer
    /// lock is released at commit, before we publish).
    writer: Mutex<()>,
    opts: RedbOptions,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.inner.path)
            .field("opts", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

/// Maps a redb error to a backend error naming the operation.
fn ctx<E: Display>(what: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::backend(what, e)
}

enum WriteOp {
    Create(Vec<u8>),
    Update { value: Vec<u8>, expect: Option<Revision> },
    Delete { expect: Option<Revision> },
}

impl RedbStore {
    /// Opens (or creates) the database file with default options. Blocking: call it at startup
    /// or inside `spawn_blocking`. After an unclean shutdown redb repairs the file here.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, RedbOptions::default())
    }

    /// Opens (or creates) the database file with explicit options.
    pub fn open_with(path: impl AsRef<Path>, opts: RedbOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let db = Database::create(&path).map_err(|e| StoreError::Backend(format!("open {}: {e}", path.display())))?;

        // Create the tables up front so readers never see "table does not exist".
        let txn = db.begin_write().map_err(ctx("begin init transaction"))?;
        let (revision, compacted) = {
            let mut meta = txn.open_table(META).map_err(ctx("open meta table"))?;
            txn.open_table(OBJECTS).map_err(ctx("open objects table"))?;
            txn.open_table(EVENTS).map_err(ctx("open events table"))?;
            let revision = meta_get(&meta, META_REVISION)?;
            let compacted = meta_get(&meta, META_COMPACTED)?;
            meta.insert(META_REVISION, revision).map_err(ctx("init meta"))?;
            meta.insert(META_COMPACTED, compacted).map_err(ctx("init meta"))?;
            (revision, compacted)
        };
        txn.commit().map_err(ctx("commit init transaction"))?;

        tracing::info!(path = %path.display(), revision, compacted, "opened redb store");
        let (live, _) = broadcast::channel(opts.watch_buffer.max(1));
        Ok(RedbStore { inner: Arc::new(Inner { db, path, live, writer: Mutex::new(()), opts }) })
    }

    /// Runs blocking database work off the async executor.
    async fn blocking<T, F>(&self, what: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner)).await.map_err(ctx(what))?
    }

    async fn write(&self, key: &ObjectKey, op: WriteOp) -> Result<StoredObject, StoreError> {
        key.validate()?;
        if let WriteOp::Create(value) | WriteOp::Update { value, .. } = &op {
            let max = self.inner.opts.max_value_bytes;
            if value.len() > max {
                return Err(StoreError::ValueTooLarge { size: value.len(), max });
            }
        }
        let key = key.clone();
        self.blocking("write task", move |inner| inner.write(&key, op)).await
    }
}

fn meta_get<T: ReadableTable<&'static str, u64>>(meta: &T, name: &str) -> Result<u64, StoreError> {
    Ok(meta.get(name).map_err(ctx("read meta"))?.map(|v| v.value()).unwrap_or(0))
}

impl Inner {
    fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        self.db.begin_read().map_err(ctx("begin read transaction"))
    }

    /// One durable write: check preconditions, update the object, append the event, advance
    /// the revision, trim history; then commit and publish the event to live watchers.
    fn write(&self, key: &ObjectKey, op: WriteOp) -> Result<StoredObject, StoreError> {
        let _serial = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut txn = self.db.begin_write().map_err(ctx("begin write transaction"))?;
        txn.set_durability(Durability::Immediate).map_err(ctx("set durability"))?;
        let (event, result) = match self.apply(&txn, key, op) {
            Ok(done) => done,
            Err(e) => {
                if let Err(abort) = txn.abort() {
                    tracing::warn!(error = %abort, "aborting write transaction failed");
                }
                return Err(e);
            }
        };
        txn.commit().map_err(ctx("commit write"))?;
        tracing::debug!(%key, revision = event.revision(), "committed");
        // No receivers is fine: nobody is watching.
        let _ = self.live.send(Arc::new(event));
        Ok(result)
    }

    fn apply(
        &self,
        txn: &WriteTransaction,
        key: &ObjectKey,
        op: WriteOp,
    ) -> Result<(WatchEvent, StoredObject), StoreError> {
        let mut objects = txn.open_table(OBJECTS).map_err(ctx("open objects table"))?;
        let mut events = txn.open_table(EVENTS).map_err(ctx("open events table"))?;
        let mut meta = txn.open_table(META).map_err(ctx("open meta table"))?;

        let current = meta_get(&meta, META_REVISION)?;
        let revision =
            current.checked_add(1).ok_or_else(|| StoreError::Backend("revision counter exhausted".into()))?;
        let encoded_key = codec::encode_key(key);
        let existing = objects
            .get(encoded_key.as_slice())
            .map_err(ctx("read object"))?
            .map(|v| codec::decode_object(key.clone(), v.value()))
            .transpose()?;

        let check = |expect: Option<Revision>, obj: &StoredObject| match expect {
            Some(rev) if rev != obj.mod_revision => {
                Err(StoreError::Conflict { key: key.clone(), current: obj.mod_revision })
            }
            _ => Ok(()),
        };
        let not_found = || StoreError::NotFound { key: key.clone() };

        let (event, result) = match (op, existing) {
            (WriteOp::Create(_), Some(_)) => return Err(StoreError::AlreadyExists { key: key.clone() }),
            (WriteOp::Create(value), None) => {
                let obj = StoredObject { key: key.clone(), value, create_revision: revision, mod_revision: revision };
                (WatchEvent::Put { object: obj.clone(), created: true }, obj)
            }
            (WriteOp::Update { .. } | WriteOp::Delete { .. }, None) => return Err(not_found()),
            (WriteOp::Update { value, expect }, Some(old)) => {
                check(expect, &old)?;
                let obj = StoredObject {
                    key: key.clone(),
                    value,
                    create_revision: old.create_revision,
                    mod_revision: revision,
                };
                (WatchEvent::Put { object: obj.clone(), created: false }, obj)
            }
            (WriteOp::Delete { expect }, Some(old)) => {
                check(expect, &old)?;
                (WatchEvent::Deleted { object: old.clone(), revision }, old)
            }
        };

        match &event {
            WatchEvent::Put { object, .. } => {
                let record = codec::encode_object(object.create_revision, object.mod_revision, &object.value);
                objects.insert(encoded_key.as_slice(), record.as_slice()).map_err(ctx("write object"))?;
            }
            WatchEvent::Deleted { .. } => {
                objects.remove(encoded_key.as_slice()).map_err(ctx("delete object"))?;
            }
        }
        let record = codec::encode_event(&event);
        events.insert(revision, record.as_slice()).map_err(ctx("append event"))?;
        meta.insert(META_REVISION, revision).map_err(ctx("write revision"))?;

        let cutoff = revision.saturating_sub(self.opts.history_revisions);
        trim_history(&mut events, &mut meta, cutoff)?;
        Ok((event, result))
    }

    fn get(&self, key: &ObjectKey) -> Result<Option<StoredObject>, StoreError> {
        let txn = self.begin_read()?;
        let objects = txn.open_table(OBJECTS).map_err(ctx("open objects table"))?;
        let found = objects.get(codec::encode_key(key).as_slice()).map_err(ctx("read object"))?;
        found.map(|v| codec::decode_object(key.clone(), v.value())).transpose()
    }

    fn list(&self, resource: &str, namespace: Option<&str>) -> Result<(Vec<StoredObject>, Revision), StoreError> {
        let txn = self.begin_read()?;
        let meta = txn.open_table(META).map_err(ctx("open meta table"))?;
        let revision = meta_get(&meta, META_REVISION)?;
        let objects = txn.open_table(OBJECTS).map_err(ctx("open objects table"))?;
        let (start, end) = codec::prefix_range(resource, namespace);
        let mut out = Vec::new();
        for entry in objects.range(start.as_slice()..end.as_slice()).map_err(ctx("scan objects"))? {
            let (k, v) = entry.map_err(ctx("scan objects"))?;
            let key = codec::decode_key(k.value())?;
            out.push(codec::decode_object(key, v.value())?);
        }
        Ok((out, revision))
    }

    fn current_revision(&self) -> Result<Revision, StoreError> {
        let txn = self.begin_read()?;
        let meta = txn.open_table(META).map_err(ctx("open meta table"))?;
        meta_get(&meta, META_REVISION)
    }

    fn compact(&self, keep: u64) -> Result<Revision, StoreError> {
        let txn = self.db.begin_write().map_err(ctx("begin compaction"))?;
        let compacted = {
            let mut events = txn.open_table(EVENTS).map_err(ctx("open events table"))?;
            let mut meta = txn.open_table(META).map_err(ctx("open meta table"))?;
            let current = meta_get(&meta, META_REVISION)?;
            trim_history(&mut events, &mut meta, current.saturating_sub(keep))?
        };
        txn.commit().map_err(ctx("commit compaction"))?;
        Ok(compacted)
    }

    /// One page of history after `after`, from a single snapshot.
    fn read_history(&self, after: Revision, filter: &WatchFilter) -> Result<HistoryChunk, StoreError> {
        let txn = self.begin_read()?;
        let meta = txn.open_table(META).map_err(ctx("open meta table"))?;
        let compacted = meta_get(&meta, META_COMPACTED)?;
        if after < compacted {
            return Err(StoreError::Gone { requested: after, compacted });
        }
        let current = meta_get(&meta, META_REVISION)?;
        let events = txn.open_table(EVENTS).map_err(ctx("open events table"))?;
        let mut chunk = HistoryChunk { events: Vec::new(), scanned_to: after, complete: false };
        let range = events.range::<u64>((Bound::Excluded(after), Bound::Unbounded)).map_err(ctx("scan events"))?;
        for (scanned, entry) in range.enumerate() {
            if scanned == HISTORY_PAGE {
                return Ok(chunk);
            }
            let (rev, record) = entry.map_err(ctx("scan events"))?;
            let (rev, record) = (rev.value(), record.value());
            if filter.matches(&codec::decode_event_key(record)?) {
                chunk.events.push(codec::decode_event(rev, record)?);
            }
            chunk.scanned_to = rev;
        }
        // Everything up to the snapshot's revision has been seen.
        chunk.scanned_to = chunk.scanned_to.max(current);
        chunk.complete = true;
        Ok(chunk)
    }
}

/// Drops events at or below `cutoff` and advances the compaction point; returns the
/// (possibly unchanged) compaction point. Never moves it backwards.
fn trim_history(
    events: &mut Table<'_, u64, &'static [u8]>,
    meta: &mut Table<'_, &'static str, u64>,
    cutoff: Revision,
) -> Result<Revision, StoreError> {
    let compacted = meta_get(meta, META_COMPACTED)?;
    if cutoff <= compacted {
        return Ok(compacted);
    }
    events.retain_in(..=cutoff, |_, _| false).map_err(ctx("trim history"))?;
    meta.insert(META_COMPACTED, cutoff).map_err(ctx("write compaction point"))?;
    tracing::trace!(compacted = cutoff, "trimmed watch history");
    Ok(cutoff)
}

/// The event log as seen by watch streams; holds the store only while a replay is running.
struct LogReader {
    inner: Arc<Inner>,
}

#[async_trait]
impl History for LogReader {
    async fn read_after(&self, after: Revision, filter: &WatchFilter) -> Result<HistoryChunk, StoreError> {
        let inner = self.inner.clone();
        let filter = filter.clone();
        tokio::task::spawn_blocking(move || inner.read_history(after, &filter)).await.map_err(ctx("history task"))?
    }
}

#[async_trait]
impl Store for RedbStore {
    async fn get(&self, key: &ObjectKey) -> Result<Option<StoredObject>, StoreError> {
        key.validate()?;
        let key = key.clone();
        self.blocking("get task", move |inner| inner.get(&key)).await
    }

    async fn list(&self, resource: &str, namespace: Option<&str>) -> Result<(Vec<StoredObject>, Revision), StoreError> {
        validate_part("resource", resource, false)?;
        if let Some(ns) = namespace {
            validate_part("namespace", ns, true)?;
        }
        let resource = resource.to_owned();
        let namespace = namespace.map(str::to_owned);
        self.blocking("list task", move |inner| inner.list(&resource, namespace.as_deref())).await
    }

    async fn create(&self, key: &ObjectKey, value: Vec<u8>) -> Result<StoredObject, StoreError> {
        self.write(key, WriteOp::Create(value)).await
    }

    async fn update(
        &self,
        key: &ObjectKey,
        value: Vec<u8>,
        expect: Option<Revision>,
    ) -> Result<StoredObject, StoreError> {
        self.write(key, WriteOp::Update { value, expect }).await
    }

    async fn delete(&self, key: &ObjectKey, expect: Option<Revision>) -> Result<StoredObject, StoreError> {
        self.write(key, WriteOp::Delete { expect }).await
    }

    async fn watch(
        &self,
        resource: Option<&str>,
        namespace: Option<&str>,
        after: Revision,
    ) -> Result<WatchStream, StoreError> {
        let filter = WatchFilter::new(resource, namespace)?;
        // Subscribe before reading history: see the watch module for why this is gap-free.
        let live = self.inner.live.subscribe();
        let reader = Arc::new(LogReader { inner: self.inner.clone() });
        let first = reader.read_after(after, &filter).await?;
        tracing::debug!(after, ?filter, "watch started");
        Ok(replay_then_live(reader, first, live, filter))
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.blocking("revision task", |inner| inner.current_revision()).await
    }

    async fn compact(&self, keep_revisions: u64) -> Result<Revision, StoreError> {
        let compacted = self.blocking("compaction task", move |inner| inner.compact(keep_revisions)).await?;
        tracing::info!(compacted, "compacted watch history");
        Ok(compacted)
    }
}
