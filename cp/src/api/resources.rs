//! CRUD handlers for every kind: the REST semantics of the Kubernetes API server
//! (create/get/list/update/merge-patch/delete, optimistic concurrency, server-owned metadata).

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use riptides_wire::resource::{self, ResourceType};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::object::{self, from_stored, meta_mut, meta_str, to_stored};
use super::selector::{FieldSelector, LabelSelector};
use super::{watch, ApiState};
use crate::store::{ObjectKey, StoreError};

/// Query parameters the collection endpoints understand.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParams {
    pub watch: Option<String>,
    pub resource_version: Option<String>,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub allow_watch_bookmarks: Option<bool>,
}

impl ListParams {
    fn is_watch(&self) -> bool {
        matches!(self.watch.as_deref(), Some("1" | "true" | "True"))
    }
}

pub(super) fn resolve(group: &str, version: &str, plural: &str) -> Result<&'static ResourceType, ApiError> {
    resource::by_path(group, version, plural).ok_or_else(|| {
        ApiError::NotFound(format!("the server could not find the requested resource ({plural}.{group}/{version})"))
    })
}

fn what(rt: &ResourceType, name: &str) -> String {
    format!("{}.{} {name:?}", rt.plural, rt.group)
}

async fn read_json(st: &ApiState, headers: &HeaderMap, body: Body, accepted: &[&str]) -> Result<Value, ApiError> {
    let ctype = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let base = ctype.split(';').next().unwrap_or_default().trim();
    if !accepted.contains(&base) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unsupported content type {base:?}; use one of {accepted:?}"
        )));
    }
    let bytes: Bytes = axum::body::to_bytes(body, st.max_request_body)
        .await
        .map_err(|_| ApiError::TooLarge(format!("the request body is larger than {} bytes", st.max_request_body)))?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("the request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::BadRequest("the request body must be a JSON object".into()));
    }
    Ok(value)
}

fn render(headers: &HeaderMap, objects: Vec<Value>, code: StatusCode) -> Response {
    if object::wants_table(headers.get(ACCEPT).and_then(|v| v.to_str().ok())) {
        let rv = objects.first().and_then(|o| meta_str(o, "resourceVersion")).and_then(|r| r.parse().ok());
        return (code, Json(object::table(&objects, rv, false, SystemTime::now()))).into_response();
    }
    (code, Json(objects.into_iter().next().unwrap_or(Value::Null))).into_response()
}

fn invalid(rt: &ResourceType, name: &str, causes: Vec<resource::FieldError>) -> ApiError {
    ApiError::Invalid { kind: rt.kind.to_owned(), name: name.to_owned(), causes }
}

/// Checks and normalises a client-sent object for namespace `ns`.
fn validate(st: &ApiState, rt: &ResourceType, ns: &str, mut obj: Value) -> Result<Value, ApiError> {
    let name = meta_str(&obj, "name").unwrap_or_default().to_owned();
    if let Some(body_ns) = meta_str(&obj, "namespace") {
        if body_ns != ns {
            return Err(ApiError::BadRequest(format!(
                "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({ns})"
            )));
        }
    }
    meta_mut(&mut obj).insert("namespace".into(), json!(ns));
    rt.validate(&obj, &st.validation).map_err(|causes| invalid(rt, &name, causes))
}

pub async fn create(
    State(st): State<Arc<ApiState>>,
    Path((group, version, ns, plural)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let rt = resolve(&group, &version, &plural)?;
    let mut obj = read_json(&st, &headers, body, &["application/json"]).await?;
    {
        let meta = meta_mut(&mut obj);
        let name = meta.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        if name.is_empty() {
            if let Some(prefix) = meta.get("generateName").and_then(Value::as_str).map(str::to_owned) {
                meta.insert("name".into(), json!(format!("{prefix}{}", object::name_suffix())));
            }
        }
        meta.remove("resourceVersion");
        meta.insert("uid".into(), json!(object::new_uid()));
        meta.insert("creationTimestamp".into(), json!(object::rfc3339(SystemTime::now())));
        meta.insert("generation".into(), json!(1));
    }
    if rt.has_status {
        obj.as_object_mut().expect("checked object").remove("status");
    }
    let obj = validate(&st, rt, &ns, obj)?;
    let name = meta_str(&obj, "name").unwrap_or_default().to_owned();
    let key = ObjectKey::new(rt.store_key(), ns.as_str(), name.as_str());
    let stored = st.store.create(&key, to_stored(obj)).await.map_err(|e| ApiError::from_store(e, &what(rt, &name)))?;
    tracing::info!(kind = rt.kind, %ns, %name, revision = stored.mod_revision, "created");
    let out = from_stored(&stored, stored.mod_revision).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(render(&headers, vec![out], StatusCode::CREATED))
}

pub async fn get(
    State(st): State<Arc<ApiState>>,
    Path((group, version, ns, plural, name)): Path<(String, String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let rt = resolve(&group, &version, &plural)?;
    let key = ObjectKey::new(rt.store_key(), ns.as_str(), name.as_str());
    let stored = st
        .store
        .get(&key)
        .await
        .map_err(|e| ApiError::from_store(e, &what(rt, &name)))?
        .ok_or_else(|| ApiError::NotFound(format!("{} not found", what(rt, &name))))?;
    let out = from_stored(&stored, stored.mod_revision).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(render(&headers, vec![out], StatusCode::OK))
}

pub async fn list_namespaced(
    State(st): State<Arc<ApiState>>,
    Path((group, version, ns, plural)): Path<(String, String, String, String)>,
    Query(params): Query<ListParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let rt = resolve(&group, &version, &plural)?;
    list_or_watch(st, rt, Some(ns), params, headers).await
}

pub async fn list_all(
    State(st): State<Arc<ApiState>>,
    Path((group, version, plural)): Path<(String, String, String)>,
    Query(params): Query<ListParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let rt = resolve(&group, &version, &plural)?;
    list_or_watch(st, rt, None, params, headers).await
}

async fn list_or_watch(
    st: Arc<ApiState>,
    rt: &'static ResourceType,
    ns: Option<String>,
    params: ListParams,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let labels = LabelSelector::parse(params.label_selector.as_deref().unwrap_or_default())?;
    let fields = FieldSelector::parse(params.field_selector.as_deref().unwrap_or_default())?;
    if params.is_watch() {
        return watch::serve(st, rt, ns, params, labels, fields, headers).await;
    }
    let (objects, revision) = list_objects(&st, rt, ns.as_deref(), &labels, &fields).await?;
    if object::wants_table(headers.get(ACCEPT).and_then(|v| v.to_str().ok())) {
        return Ok(Json(object::table(&objects, Some(revision), ns.is_none(), SystemTime::now())).into_response());
    }
    Ok(Json(json!({
        "apiVersion": rt.api_version(),
        "kind": format!("{}List", rt.kind),
        "metadata": {"resourceVersion": revision.to_string()},
        "items": objects,
    }))
    .into_response())
}

pub(super) async fn list_objects(
    st: &ApiState,
    rt: &ResourceType,
    ns: Option<&str>,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> Result<(Vec<Value>, u64), ApiError> {
    let (stored, revision) =
        st.store.list(&rt.store_key(), ns).await.map_err(|e| ApiError::from_store(e, rt.plural))?;
    let mut objects = Vec::with_capacity(stored.len());
    for s in &stored {
        let v = from_stored(s, s.mod_revision)
            .map_err(|e| ApiError::Internal(format!("stored object {} is corrupt: {e}", s.key)))?;
        if labels.matches(&v) && fields.matches(&v) {
            objects.push(v);
        }
    }
    Ok((objects, revision))
}

/// Shared by PUT and PATCH: carries server-owned fields over from `current`, validates, and
/// writes with compare-and-swap on `expect`. An update that changes nothing writes nothing.
async fn write_update(
    st: &ApiState,
    rt: &ResourceType,
    key: &ObjectKey,
    current: &crate::store::StoredObject,
    mut obj: Value,
    expect: u64,
    status_only: bool,
) -> Result<Value, ApiError> {
    let cur: Value = serde_json::from_slice(&current.value)
        .map_err(|e| ApiError::Internal(format!("stored object {key} is corrupt: {e}")))?;
    let name = key.name.clone();
    if let Some(body_name) = meta_str(&obj, "name") {
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
    }
    if status_only {
        let status = obj.get("status").cloned();
        obj = cur.clone();
        match status {
            Some(s) => obj["status"] = s,
            None => {
                obj.as_object_mut().expect("stored objects are objects").remove("status");
            }
        }
    } else if rt.has_status {
        match cur.get("status") {
            Some(s) => obj["status"] = s.clone(),
            None => {
                obj.as_object_mut().expect("checked object").remove("status");
            }
        }
    }
    {
        let spec_changed = obj.get("spec") != cur.get("spec");
        let generation = cur.get("metadata").and_then(|m| m.get("generation")).and_then(Value::as_i64).unwrap_or(1);
        let meta = meta_mut(&mut obj);
        meta.insert("name".into(), json!(name));
        meta.remove("resourceVersion");
        for owned in ["uid", "creationTimestamp"] {
            match cur.get("metadata").and_then(|m| m.get(owned)) {
                Some(v) => meta.insert(owned.into(), v.clone()),
                None => meta.remove(owned),
            };
        }
        meta.insert("generation".into(), json!(if spec_changed { generation + 1 } else { generation }));
    }
    object::keep_write_only(&mut obj, &cur);
    let obj = validate(st, rt, &key.namespace, obj)?;
    if expect != current.mod_revision {
        return Err(ApiError::from_store(
            StoreError::Conflict { key: key.clone(), current: current.mod_revision },
            &what(rt, &name),
        ));
    }
    if obj == cur {
        return from_stored(current, current.mod_revision).map_err(|e| ApiError::Internal(e.to_string()));
    }
    let stored = st
        .store
        .update(key, to_stored(obj), Some(expect))
        .await
        .map_err(|e| ApiError::from_store(e, &what(rt, &name)))?;
    tracing::info!(kind = rt.kind, ns = %key.namespace, %name, revision = stored.mod_revision, "updated");
    from_stored(&stored, stored.mod_revision).map_err(|e| ApiError::Internal(e.to_string()))
}

fn parse_rv(v: &Value) -> Result<Option<u64>, ApiError> {
    match meta_str(v, "resourceVersion") {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {s:?}"))),
    }
}

async fn current(st: &ApiState, rt: &ResourceType, key: &ObjectKey) -> Result<crate::store::StoredObject, ApiError> {
    st.store
        .get(key)
        .await
        .map_err(|e| ApiError::from_store(e, &what(rt, &key.name)))?
        .ok_or_else(|| ApiError::NotFound(format!("{} not found", what(rt, &key.name))))
}

/// How often PATCH and unconditional PUT re-read after losing a race to another writer.
const WRITE_RETRIES: usize = 8;

async fn replace_inner(
    st: Arc<ApiState>,
    path: (String, String, String, String, String),
    headers: HeaderMap,
    body: Body,
    status_only: bool,
) -> Result<Response, ApiError> {
    let (group, version, ns, plural, name) = path;
    let rt = resolve(&group, &version, &plural)?;
    if status_only && !rt.has_status {
        return Err(ApiError::NotFound(format!("{} has no status subresource", rt.plural)));
    }
    let obj = read_json(&st, &headers, body, &["application/json"]).await?;
    let key = ObjectKey::new(rt.store_key(), ns.as_str(), name.as_str());
    let precondition = parse_rv(&obj)?;
    for _ in 0..WRITE_RETRIES {
        let cur = current(&st, rt, &key).await?;
        let expect = precondition.unwrap_or(cur.mod_revision);
        match write_update(&st, rt, &key, &cur, obj.clone(), expect, status_only).await {
            Err(ApiError::Conflict(_)) if precondition.is_none() => continue,
            Err(e) => return Err(e),
            Ok(out) => return Ok(render(&headers, vec![out], StatusCode::OK)),
        }
    }
    Err(ApiError::Conflict(format!("{} is being modified concurrently; try again", what(rt, &name))))
}

pub async fn replace(
    State(st): State<Arc<ApiState>>,
    Path(path): Path<(String, String, String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    replace_inner(st, path, headers, body, false).await
}

pub async fn replace_status(
    State(st): State<Arc<ApiState>>,
    Path(path): Path<(String, String, String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    replace_inner(st, path, headers, body, true).await
}

pub async fn get_status(
    state: State<Arc<ApiState>>,
    Path(path): Path<(String, String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    get(state, Path(path), headers).await
}

pub async fn patch(
    State(st): State<Arc<ApiState>>,
    Path((group, version, ns, plural, name)): Path<(String, String, String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let rt = resolve(&group, &version, &plural)?;
    let ctype = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if ctype.starts_with("application/strategic-merge-patch+json")
        || ctype.starts_with("application/json-patch+json")
        || ctype.starts_with("application/apply-patch")
    {
        return Err(ApiError::UnsupportedMediaType(format!(
            "{ctype} is not supported for {}; use a JSON merge patch (application/merge-patch+json)",
            rt.plural
        )));
    }
    let patch = read_json(&st, &headers, body, &["application/merge-patch+json"]).await?;
    let key = ObjectKey::new(rt.store_key(), ns.as_str(), name.as_str());
    let precondition = parse_rv(&patch)?;
    for _ in 0..WRITE_RETRIES {
        let cur = current(&st, rt, &key).await?;
        if let Some(rv) = precondition {
            if rv != cur.mod_revision {
                return Err(ApiError::from_store(
                    StoreError::Conflict { key: key.clone(), current: cur.mod_revision },
                    &what(rt, &name),
                ));
            }
        }
        let mut obj: Value = serde_json::from_slice(&cur.value)
            .map_err(|e| ApiError::Internal(format!("stored object {key} is corrupt: {e}")))?;
        object::merge_patch(&mut obj, &patch);
        match write_update(&st, rt, &key, &cur, obj, cur.mod_revision, false).await {
            Err(ApiError::Conflict(_)) if precondition.is_none() => continue,
            Err(e) => return Err(e),
            Ok(out) => return Ok(render(&headers, vec![out], StatusCode::OK)),
        }
    }
    Err(ApiError::Conflict(format!("{} is being modified concurrently; try again", what(rt, &name))))
}

pub async fn delete(
    State(st): State<Arc<ApiState>>,
    Path((group, version, ns, plural, name)): Path<(String, String, String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let rt = resolve(&group, &version, &plural)?;
    // DeleteOptions may carry a resourceVersion precondition.
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|_| ApiError::TooLarge("DeleteOptions too large".into()))?;
    let expect = if bytes.is_empty() {
        None
    } else {
        let opts: Value =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("invalid DeleteOptions: {e}")))?;
        match opts.get("preconditions").and_then(|p| p.get("resourceVersion")).and_then(Value::as_str) {
            Some(rv) => Some(rv.parse().map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))?),
            None => None,
        }
    };
    let key = ObjectKey::new(rt.store_key(), ns.as_str(), name.as_str());
    let deleted = st.store.delete(&key, expect).await.map_err(|e| ApiError::from_store(e, &what(rt, &name)))?;
    tracing::info!(kind = rt.kind, %ns, %name, "deleted");
    let out = from_stored(&deleted, deleted.mod_revision).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(render(&headers, vec![out], StatusCode::OK))
}
