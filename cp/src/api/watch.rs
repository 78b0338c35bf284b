//! `?watch=1`: a chunked stream of newline-delimited JSON events, resumable from any
//! `resourceVersion` the store still retains (410 Gone otherwise, as Kubernetes answers).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use riptides_wire::resource::ResourceType;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::object::{self, from_stored, meta_str};
use super::resources::{list_objects, ListParams};
use super::selector::{FieldSelector, LabelSelector};
use super::ApiState;
use crate::store::{StoreError, WatchEvent};

/// Events buffered per watcher between the store and the socket; a client slower than this
/// applies backpressure to its own stream only.
const WATCH_BUFFER: usize = 64;
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

pub(super) async fn serve(
    st: Arc<ApiState>,
    rt: &'static ResourceType,
    ns: Option<String>,
    params: ListParams,
    labels: LabelSelector,
    fields: FieldSelector,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let table = object::wants_table(headers.get(ACCEPT).and_then(|v| v.to_str().ok()));
    // "" and "0" mean "start with the current state": synthetic ADDED events, then changes.
    let (initial, after) = match params.resource_version.as_deref() {
        None | Some("") | Some("0") => {
            let (objects, revision) = list_objects(&st, rt, ns.as_deref(), &labels, &fields).await?;
            (objects, revision)
        }
        Some(rv) => {
            let rv: u64 = rv.parse().map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))?;
            (Vec::new(), rv)
        }
    };
    let mut stream = st
        .store
        .watch(Some(&rt.store_key()), ns.as_deref(), after)
        .await
        .map_err(|e| ApiError::from_store(e, rt.plural))?;
    let limit =
        params.timeout_seconds.map(Duration::from_secs).unwrap_or(st.max_watch_duration).min(st.max_watch_duration);
    let bookmarks = params.allow_watch_bookmarks.unwrap_or(false);
    let (tx, rx) = mpsc::channel::<Bytes>(WATCH_BUFFER);
    let kind = rt.kind;
    let api_version = rt.api_version();
    st.metrics.watchers.inc();
    let metrics = st.metrics.clone();

    tokio::spawn(async move {
        let _guard = scopeguard(move || {
            metrics.watchers.dec();
        });
        let mut first_table = true;
        let mut encode = |kind: &str, obj: Value| -> Bytes {
            let obj = if table && kind != "ERROR" && kind != "BOOKMARK" {
                let mut t = object::table(std::slice::from_ref(&obj), None, false, SystemTime::now());
                if !first_table {
                    t["columnDefinitions"] = json!([]);
                }
                first_table = false;
                t
            } else {
                obj
            };
            let mut line = serde_json::to_vec(&json!({"type": kind, "object": obj})).expect("JSON values serialise");
            line.push(b'\n');
            Bytes::from(line)
        };
        for obj in initial {
            if tx.send(encode("ADDED", obj)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(limit);
        tokio::pin!(deadline);
        let mut bookmark = tokio::time::interval(BOOKMARK_EVERY);
        bookmark.tick().await;
        let mut last_revision = after;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = bookmark.tick(), if bookmarks => {
                    let obj = json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": last_revision.to_string()}});
                    if tx.send(encode("BOOKMARK", obj)).await.is_err() { return; }
                }
                ev = stream.recv() => {
                    let line = match ev {
                        None => return,
                        Some(Err(e)) => {
                            let err = match e {
                                StoreError::WatchLagged { .. } | StoreError::Gone { .. } => ApiError::Gone(format!("watch expired: {e}; re-list and watch again")),
                                other => ApiError::from_store(other, kind),
                            };
                            let _ = tx.send(encode("ERROR", serde_json::to_value(err.status()).expect("status serialises"))).await;
                            return;
                        }
                        Some(Ok(ev)) => {
                            last_revision = ev.revision();
                            let (etype, obj) = match &ev {
                                WatchEvent::Put { object, created } => (if *created { "ADDED" } else { "MODIFIED" }, from_stored(object, object.mod_revision)),
                                WatchEvent::Deleted { object, revision } => ("DELETED", from_stored(object, *revision)),
                            };
                            let obj = match obj {
                                Ok(o) => o,
                                Err(e) => {
                                    tracing::error!(key = %ev.key(), error = %e, "corrupt stored object skipped in watch");
                                    continue;
                                }
                            };
                            if !(labels.matches(&obj) && fields.matches(&obj)) {
                                continue;
                            }
                            tracing::trace!(kind, name = meta_str(&obj, "name").unwrap_or_default(), etype, "watch event");
                            encode(etype, obj)
                        }
                    };
                    if tx.send(line).await.is_err() { return; }
                }
            }
        }
    });

    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    }));
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}

/// Runs `f` when dropped (whichever way the watch task ends).
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
