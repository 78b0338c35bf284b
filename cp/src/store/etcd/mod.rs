//! [`Store`] on etcd, for control planes with several replicas.
//!
//! The mapping is direct, because the [`Store`] contract was shaped after etcd's data model:
//!
//! - keys are `<prefix>` + `resource NUL namespace NUL name` (the embedded backend's key
//!   encoding), so a resource or a namespace is one key range and etcd's key order is the
//!   list order;
//! - `create_revision` / `mod_revision` are etcd's, so a `resourceVersion` is an etcd revision;
//! - `create` is a transaction on `create_revision == 0`; `update` and `delete` with an
//!   expected revision are transactions on `mod_revision == expected` (plus "exists"), whose
//!   failure branch reads the key to tell `NotFound` from `Conflict`: optimistic concurrency
//!   holds across every replica writing to the same cluster;
//! - `watch` is served from one etcd watch per replica on the whole prefix (`hub`), which
//!   keeps a bounded window of recent events; a watcher starting before that window gets its
//!   own etcd watch from `after + 1`. Either way the etcd watch has `prev_kv` (so deletions
//!   carry the last value); a watch refused because of compaction is [`StoreError::Gone`]; a
//!   watch whose member goes away resumes on another member from the next revision, so it
//!   stays gap-free;
//! - `compact(keep)` compacts etcd at `current - keep + 1`, so that exactly the watches
//!   starting at `after >= current - keep` remain possible, as with the embedded store.
//!
//! Values are stored as they are (etcd's default request limit is 1.5 MiB, hence the smaller
//! value limit).

mod client;
mod hub;
pub mod migrate;
mod proto;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::mpsc;

pub use self::client::{EtcdClient, EtcdConfig, EtcdError};
use self::proto::{b64, DeleteRangeResponse, KeyValue, RangeResponse, StreamMessage, TxnResponse, WatchResponse};
pub(crate) use self::proto::{LeaseGrantResponse, LeaseKeepAliveResponse, StreamMessage as StreamResult};
use super::codec;
use super::watch::WatchFilter;
use super::{validate_part, ObjectKey, Revision, Store, StoreError, StoredObject, WatchEvent, WatchStream};

/// The default key prefix of resource objects.
pub const DEFAULT_PREFIX: &str = "/riptides/registry/";

/// Tuning for [`EtcdStore`].
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// Every object key starts with this (several control planes may share one etcd cluster
    /// under different prefixes).
    pub prefix: String,
    /// Largest accepted value (etcd's default `--max-request-bytes` is 1.5 MiB, and the
    /// request also carries the key).
    pub max_value_bytes: usize,
    /// Events a watcher may fall behind: buffered per watcher before its own etcd watch
    /// applies backpressure, or behind the live edge of the replica's shared watch before
    /// its stream ends with [`StoreError::WatchLagged`].
    pub watch_buffer: usize,
    /// Recent events the replica's shared watch keeps, so that watchers starting a little
    /// behind (a daemon resuming, a policy snapshot taken a moment ago) need no etcd watch of
    /// their own.
    pub watch_window: usize,
    /// Bound on the value bytes of that window.
    pub watch_window_bytes: usize,
    /// Objects per range request when listing.
    pub list_page: usize,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            prefix: DEFAULT_PREFIX.to_owned(),
            max_value_bytes: 1024 * 1024 + 256 * 1024,
            watch_buffer: 1024,
            watch_window: 4096,
            watch_window_bytes: 64 * 1024 * 1024,
            list_page: 500,
        }
    }
}

/// [`Store`] on an etcd cluster. Cheap to clone; clones share one watch hub.
#[derive(Clone)]
pub struct EtcdStore {
    client: EtcdClient,
    opts: Arc<EtcdOptions>,
    /// The replica's shared watch, started by the first `watch` (see [`hub`]).
    hub: Arc<tokio::sync::Mutex<Option<Arc<hub::Hub>>>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("client", &self.client).field("opts", &self.opts).finish_non_exhaustive()
    }
}

fn backend(what: &str, e: EtcdError) -> StoreError {
    StoreError::backend(what, e)
}

fn rev(r: i64) -> Revision {
    r.max(0) as Revision
}

/// The exclusive end of the range of keys starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): to the end of the key space.
    vec![0]
}

impl EtcdStore {
    /// Connects to etcd and checks that it answers.
    pub async fn connect(config: &EtcdConfig, opts: EtcdOptions) -> Result<Self, StoreError> {
        let client = EtcdClient::new(config).map_err(|e| backend("etcd client", e))?;
        Self::with_client(client, opts).await
    }

    /// Uses an existing client (shared with the leader election).
    pub async fn with_client(client: EtcdClient, opts: EtcdOptions) -> Result<Self, StoreError> {
        if opts.prefix.is_empty() {
            return Err(StoreError::InvalidKey { reason: "etcd key prefix must not be empty".into() });
        }
        let store = EtcdStore { client, opts: Arc::new(opts), hub: Arc::default() };
        let revision = store.current_revision().await?;
        tracing::info!(endpoints = ?store.client.endpoints(), prefix = %store.opts.prefix, revision, "connected to etcd");
        Ok(store)
    }

    pub fn client(&self) -> &EtcdClient {
        &self.client
    }

    fn full_key(&self, key: &ObjectKey) -> Vec<u8> {
        let mut k = self.opts.prefix.as_bytes().to_vec();
        k.extend_from_slice(&codec::encode_key(key));
        k
    }

    fn range_of(&self, filter_resource: Option<&str>, namespace: Option<&str>) -> (Vec<u8>, Vec<u8>) {
        let prefix = self.opts.prefix.as_bytes();
        match filter_resource {
            None => (prefix.to_vec(), prefix_end(prefix)),
            Some(resource) => {
                let (start, end) = codec::prefix_range(resource, namespace);
                let mut s = prefix.to_vec();
                s.extend_from_slice(&start);
                let mut e = prefix.to_vec();
                e.extend_from_slice(&end);
                (s, e)
            }
        }
    }

    fn decode(&self, kv: &KeyValue) -> Result<StoredObject, StoreError> {
        decode(&self.opts.prefix, kv)
    }

    fn check_value(&self, value: &[u8]) -> Result<(), StoreError> {
        let max = self.opts.max_value_bytes;
        if value.len() > max {
            return Err(StoreError::ValueTooLarge { size: value.len(), max });
        }
        Ok(())
    }

    async fn txn(&self, what: &str, body: serde_json::Value) -> Result<TxnResponse, StoreError> {
        self.client.write("/v3/kv/txn", &body).await.map_err(|e| backend(what, e))
    }

    /// The failure branch of a guarded write read the key: say why the guard failed.
    fn guard_failed(&self, key: &ObjectKey, resp: &TxnResponse) -> StoreError {
        let current = resp.responses.first().and_then(|r| r.response_range.as_ref()).and_then(|r| r.kvs.first());
        match current {
            None => StoreError::NotFound { key: key.clone() },
            Some(kv) => StoreError::Conflict { key: key.clone(), current: rev(kv.mod_revision) },
        }
    }

    fn guards(k: &str, expect: Option<Revision>) -> Vec<serde_json::Value> {
        let mut compare = vec![json!({"key": k, "target": "CREATE", "result": "GREATER", "create_revision": "0"})];
        if let Some(expect) = expect {
            compare.push(json!({"key": k, "target": "MOD", "result": "EQUAL", "mod_revision": expect.to_string()}));
        }
        compare
    }

    /// A watch served by the replica's shared etcd watch (started here if it is not running),
    /// or `None` when `after` lies before its window.
    async fn hub_watch(&self, after: Revision, filter: &WatchFilter) -> Result<Option<WatchStream>, StoreError> {
        let mut slot = self.hub.lock().await;
        if let Some(hub) = slot.as_ref().filter(|h| !h.ended()) {
            return Ok(hub.subscribe(after, filter.clone()));
        }
        let base = self.current_revision().await?;
        let (start, end) = self.range_of(None, None);
        let (idx, lines) = Self::open_watch(&self.client, &start, &end, base + 1, self.client.preferred()).await?;
        let rx = self.spawn_watch_task(start, end, base, idx, WatchFilter::default(), lines);
        let limits = hub::HubLimits {
            events: self.opts.watch_window.max(1),
            bytes: self.opts.watch_window_bytes,
            lag: self.opts.watch_buffer.max(1),
        };
        let hub = hub::Hub::start(base, limits, rx);
        tracing::info!(after = base, "replica's shared etcd watch started");
        let stream = hub.subscribe(after, filter.clone());
        *slot = Some(hub);
        Ok(stream)
    }

    /// Runs an opened etcd watch (`lines`, on member `endpoint`) in its own task, which
    /// resumes it elsewhere when its member goes away; its events arrive on the receiver.
    fn spawn_watch_task(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        seen: Revision,
        endpoint: usize,
        filter: WatchFilter,
        lines: client::JsonLines,
    ) -> mpsc::Receiver<Result<WatchEvent, StoreError>> {
        let (tx, rx) = mpsc::channel(self.opts.watch_buffer.max(1));
        let task =
            WatchTask { client: self.client.clone(), opts: self.opts.clone(), start, end, seen, endpoint, filter, tx };
        tokio::spawn(task.run(lines));
        rx
    }

    /// Opens an etcd watch on `[start, end)` from `from` and waits for etcd to accept it.
    async fn open_watch(
        client: &EtcdClient,
        start: &[u8],
        end: &[u8],
        from: Revision,
        endpoint: usize,
    ) -> Result<(usize, client::JsonLines), StoreError> {
        let body = json!({"create_request": {
            "key": b64(start), "range_end": b64(end), "start_revision": from.to_string(),
            "prev_kv": true, "progress_notify": true,
        }});
        let (idx, mut lines) = client.stream("/v3/watch", &body, endpoint).await.map_err(|e| backend("watch", e))?;
        loop {
            let msg: Option<StreamMessage<WatchResponse>> = lines.next().await.map_err(|e| backend("watch", e))?;
            let Some(msg) = msg else {
                return Err(StoreError::Backend("watch: stream ended before it was created".into()));
            };
            if let Some(err) = msg.error {
                return Err(StoreError::Backend(format!("watch: {err}")));
            }
            let Some(resp) = msg.result else { continue };
            if resp.canceled {
                return Err(cancelled(from, &resp));
            }
            if resp.created {
                return Ok((idx, lines));
            }
        }
    }
}

fn decode(prefix: &str, kv: &KeyValue) -> Result<StoredObject, StoreError> {
    let key = kv
        .key
        .strip_prefix(prefix.as_bytes())
        .ok_or_else(|| StoreError::Backend("etcd key outside the store prefix".into()))?;
    Ok(StoredObject {
        key: codec::decode_key(key)?,
        value: kv.value.clone(),
        create_revision: rev(kv.create_revision),
        mod_revision: rev(kv.mod_revision),
    })
}

/// Maps a cancelled watch onto the store's errors.
fn cancelled(from: Revision, resp: &WatchResponse) -> StoreError {
    if resp.compact_revision > 0 {
        StoreError::Gone { requested: from.saturating_sub(1), compacted: rev(resp.compact_revision).saturating_sub(1) }
    } else {
        StoreError::Backend(format!("etcd cancelled the watch: {}", resp.cancel_reason))
    }
}

/// State of one running watch, owned by its task. It holds no [`EtcdStore`], so that the
/// hub's own watch task does not keep the store (and so the hub) alive.
struct WatchTask {
    client: EtcdClient,
    opts: Arc<EtcdOptions>,
    start: Vec<u8>,
    end: Vec<u8>,
    /// Highest revision delivered (or known to hold nothing for this watch).
    seen: Revision,
    endpoint: usize,
    /// Applied on top of the key range (a namespace without a resource is not one range).
    filter: WatchFilter,
    tx: mpsc::Sender<Result<WatchEvent, StoreError>>,
}

impl WatchTask {
    async fn run(mut self, mut lines: client::JsonLines) {
        loop {
            let msg = tokio::select! {
                _ = self.tx.closed() => return,
                m = lines.next::<StreamMessage<WatchResponse>>() => m,
            };
            let resp = match msg {
                Ok(Some(StreamMessage { result: Some(resp), .. })) => resp,
                Ok(Some(StreamMessage { error: Some(err), .. })) => {
                    tracing::debug!(%err, "etcd watch stream error; resuming elsewhere");
                    match self.resume().await {
                        Some(l) => {
                            lines = l;
                            continue;
                        }
                        None => return,
                    }
                }
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => {
                    tracing::debug!(endpoint = self.endpoint, after = self.seen, "etcd watch stream lost; resuming");
                    match self.resume().await {
                        Some(l) => {
                            lines = l;
                            continue;
                        }
                        None => return,
                    }
                }
            };
            if resp.canceled {
                let _ = self.tx.send(Err(cancelled(self.seen + 1, &resp))).await;
                return;
            }
            if resp.events.is_empty() {
                // A progress notification: nothing in range up to the header's revision.
                if !resp.created && resp.header.revision > 0 {
                    self.seen = self.seen.max(rev(resp.header.revision));
                }
                continue;
            }
            tracing::trace!(revision = resp.header.revision, events = resp.events.len(), "etcd watch message");
            for ev in resp.events {
                let event = match self.convert(ev) {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = self.tx.send(Err(e)).await;
                        return;
                    }
                };
                if event.revision() <= self.seen {
                    continue;
                }
                self.seen = event.revision();
                if !self.filter.matches(event.key()) {
                    continue;
                }
                if self.tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        }
    }

    fn convert(&self, ev: proto::Event) -> Result<WatchEvent, StoreError> {
        if ev.kind == "DELETE" {
            let prev = ev.prev_kv.ok_or_else(|| StoreError::Backend("etcd delete event without prev_kv".into()))?;
            let mut object = decode(&self.opts.prefix, &prev)?;
            object.key = decode(&self.opts.prefix, &KeyValue { key: ev.kv.key.clone(), ..KeyValue::default() })?.key;
            Ok(WatchEvent::Deleted { object, revision: rev(ev.kv.mod_revision) })
        } else {
            let object = decode(&self.opts.prefix, &ev.kv)?;
            let created = object.create_revision == object.mod_revision;
            Ok(WatchEvent::Put { object, created })
        }
    }

    /// Re-opens the watch after `seen` on the next endpoints, for a while; `None` when the
    /// stream has ended (the error, if any, has been sent).
    async fn resume(&mut self) -> Option<client::JsonLines> {
        let mut delay = std::time::Duration::from_millis(50);
        for _ in 0..20 {
            let next = (self.endpoint + 1) % self.client.endpoint_count();
            let from = self.seen + 1;
            let attempt = tokio::select! {
                _ = self.tx.closed() => return None,
                r = EtcdStore::open_watch(&self.client, &self.start, &self.end, from, next) => r,
            };
            match attempt {
                Ok((idx, lines)) => {
                    tracing::debug!(endpoint = idx, from, "etcd watch resumed");
                    self.endpoint = idx;
                    return Some(lines);
                }
                Err(e @ StoreError::Gone { .. }) => {
                    let _ = self.tx.send(Err(e)).await;
                    return None;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "resuming the etcd watch failed; retrying");
                    self.endpoint = next;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(1));
                }
            }
        }
        let _ = self.tx.send(Err(StoreError::Backend("etcd watch: no member answers".into()))).await;
        None
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &ObjectKey) -> Result<Option<StoredObject>, StoreError> {
        key.validate()?;
        let body = json!({"key": b64(&self.full_key(key))});
        let resp: RangeResponse = self.client.read("/v3/kv/range", &body).await.map_err(|e| backend("get", e))?;
        resp.kvs.first().map(|kv| self.decode(kv)).transpose()
    }

    async fn list(&self, resource: &str, namespace: Option<&str>) -> Result<(Vec<StoredObject>, Revision), StoreError> {
        validate_part("resource", resource, false)?;
        if let Some(ns) = namespace {
            validate_part("namespace", ns, true)?;
        }
        let (start, end) = self.range_of(Some(resource), namespace);
        'again: for _ in 0..5 {
            let mut out = Vec::new();
            let mut from = start.clone();
            let mut at: Option<i64> = None;
            loop {
                let mut body =
                    json!({"key": b64(&from), "range_end": b64(&end), "limit": self.opts.list_page.to_string()});
                if let Some(r) = at {
                    body["revision"] = json!(r.to_string());
                }
                let resp: RangeResponse = match self.client.read("/v3/kv/range", &body).await {
                    Ok(r) => r,
                    // The snapshot revision was compacted between pages: start over.
                    Err(e) if e.is_compacted() && at.is_some() => continue 'again,
                    Err(e) => return Err(backend("list", e)),
                };
                let snapshot = *at.get_or_insert(resp.header.revision);
                for kv in &resp.kvs {
                    out.push(self.decode(kv)?);
                }
                match resp.kvs.last() {
                    Some(last) if resp.more => {
                        from = last.key.clone();
                        from.push(0);
                    }
                    _ => return Ok((out, rev(snapshot))),
                }
            }
        }
        Err(StoreError::Backend("list: compaction kept overtaking the listing".into()))
    }

    async fn create(&self, key: &ObjectKey, value: Vec<u8>) -> Result<StoredObject, StoreError> {
        key.validate()?;
        self.check_value(&value)?;
        let k = b64(&self.full_key(key));
        let body = json!({
            "compare": [{"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": k, "value": b64(&value)}}],
        });
        let resp = self.txn("create", body).await?;
        if !resp.succeeded {
            return Err(StoreError::AlreadyExists { key: key.clone() });
        }
        let r = rev(resp.header.revision);
        tracing::trace!(revision = r, key = %key, "etcd create committed");
        Ok(StoredObject { key: key.clone(), value, create_revision: r, mod_revision: r })
    }

    async fn update(
        &self,
        key: &ObjectKey,
        value: Vec<u8>,
        expect: Option<Revision>,
    ) -> Result<StoredObject, StoreError> {
        key.validate()?;
        self.check_value(&value)?;
        let k = b64(&self.full_key(key));
        let body = json!({
            "compare": Self::guards(&k, expect),
            "success": [{"request_put": {"key": k, "value": b64(&value), "prev_kv": true}}],
            "failure": [{"request_range": {"key": k}}],
        });
        let resp = self.txn("update", body).await?;
        if !resp.succeeded {
            return Err(self.guard_failed(key, &resp));
        }
        let prev = resp
            .responses
            .first()
            .and_then(|r| r.response_put.as_ref())
            .and_then(|p| p.prev_kv.as_ref())
            .ok_or_else(|| StoreError::Backend("update: etcd returned no previous value".into()))?;
        Ok(StoredObject {
            key: key.clone(),
            value,
            create_revision: rev(prev.create_revision),
            mod_revision: rev(resp.header.revision),
        })
    }

    async fn delete(&self, key: &ObjectKey, expect: Option<Revision>) -> Result<StoredObject, StoreError> {
        key.validate()?;
        let k = b64(&self.full_key(key));
        let body = json!({
            "compare": Self::guards(&k, expect),
            "success": [{"request_delete_range": {"key": k, "prev_kv": true}}],
            "failure": [{"request_range": {"key": k}}],
        });
        let resp = self.txn("delete", body).await?;
        if !resp.succeeded {
            return Err(self.guard_failed(key, &resp));
        }
        let deleted: Option<&DeleteRangeResponse> =
            resp.responses.first().and_then(|r| r.response_delete_range.as_ref());
        match deleted.and_then(|d| d.prev_kvs.first()) {
            Some(prev) => self.decode(prev),
            None => Err(StoreError::NotFound { key: key.clone() }),
        }
    }

    async fn watch(
        &self,
        resource: Option<&str>,
        namespace: Option<&str>,
        after: Revision,
    ) -> Result<WatchStream, StoreError> {
        // Validates the filters exactly as the embedded store does.
        let filter = WatchFilter::new(resource, namespace)?;
        let (start, end) = self.range_of(resource, if resource.is_some() { namespace } else { None });
        let from = after + 1;
        // etcd accepts a watch from a compacted revision and cancels it a moment later, so
        // find out first whether `from` is still readable (a range at a future revision is
        // refused too, and is fine). Asked even when the replica's window still holds that
        // history: another replica may have compacted it, and then the watch is `Gone` on
        // every replica alike.
        let probe = json!({"key": b64(&start), "limit": "1", "keys_only": true, "revision": from.to_string()});
        let compacted = match self.client.read::<RangeResponse>("/v3/kv/range", &probe).await {
            Ok(_) => false,
            Err(e) if e.is_compacted() => true,
            Err(EtcdError::Status { code: 11, .. }) => false,
            Err(e) => return Err(backend("watch", e)),
        };
        if !compacted {
            if let Some(stream) = self.hub_watch(after, &filter).await? {
                return Ok(stream);
            }
        }
        let endpoint = self.client.preferred();
        let (idx, mut lines) = Self::open_watch(&self.client, &start, &end, from, endpoint).await?;
        if compacted {
            // Wait for etcd's cancellation, which names the compaction revision.
            let wait = async {
                loop {
                    match lines.next::<StreamMessage<WatchResponse>>().await {
                        Ok(Some(StreamMessage { result: Some(resp), .. })) if resp.canceled => {
                            return cancelled(from, &resp)
                        }
                        Ok(Some(_)) => continue,
                        Ok(None) | Err(_) => return StoreError::Backend("watch: stream ended".into()),
                    }
                }
            };
            return Err(tokio::time::timeout(std::time::Duration::from_secs(5), wait)
                .await
                .unwrap_or(StoreError::Gone { requested: after, compacted: after + 1 }));
        }
        let mut rx = self.spawn_watch_task(start, end, after, idx, filter, lines);
        tracing::debug!(after, ?resource, ?namespace, "etcd watch started");
        Ok(WatchStream::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))))
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let body = json!({"key": b64(self.opts.prefix.as_bytes()), "limit": "1", "keys_only": true});
        let resp: RangeResponse =
            self.client.read("/v3/kv/range", &body).await.map_err(|e| backend("current revision", e))?;
        Ok(rev(resp.header.revision))
    }

    async fn compact(&self, keep_revisions: u64) -> Result<Revision, StoreError> {
        let current = self.current_revision().await?;
        // etcd keeps revisions >= its compaction revision X; watches from `after >= X - 1`
        // stay possible, so X = current - keep + 1 matches the embedded store (X can be at
        // most `current`).
        let target = current.saturating_sub(keep_revisions).saturating_add(1).min(current);
        if target < 2 {
            return Ok(0);
        }
        let body = json!({"revision": target.to_string()});
        match self.client.write::<serde_json::Value>("/v3/kv/compaction", &body).await {
            Ok(_) => {
                tracing::info!(compacted = target - 1, "compacted etcd history");
                Ok(target - 1)
            }
            // Another replica (or an earlier round) already compacted at least this far.
            Err(e) if e.is_compacted() => Ok(target - 1),
            Err(e) => Err(backend("compact", e)),
        }
    }
}
