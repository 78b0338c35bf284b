//! Discovery documents (`/api`, `/apis`, `/apis/<group>[/<version>]`, `/version`), built from the
//! kind table so kubectl finds every kind without configuration.

use axum::extract::Path;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use riptides_wire::resource::{ResourceType, RESOURCE_TYPES, VERSION};
use serde_json::{json, Value};

use super::error::ApiError;

fn groups_in_order() -> Vec<&'static str> {
    let mut groups: Vec<&'static str> = Vec::new();
    for t in RESOURCE_TYPES {
        if !groups.contains(&t.group) {
            groups.push(t.group);
        }
    }
    groups
}

fn group_doc(group: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{VERSION}"), "version": VERSION});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// The legacy core group: we serve none of its resources.
pub async fn core_versions() -> Json<Value> {
    Json(json!({"kind": "APIVersions", "versions": [], "serverAddressByClientCIDRs": []}))
}

pub async fn groups() -> Json<Value> {
    let groups: Vec<Value> = groups_in_order().into_iter().map(group_doc).collect();
    Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
}

pub async fn group(Path(group): Path<String>) -> Result<Json<Value>, ApiError> {
    if !groups_in_order().contains(&group.as_str()) {
        return Err(ApiError::NotFound(format!("API group {group:?} not found")));
    }
    Ok(Json(group_doc(&group)))
}

fn resource_doc(t: &ResourceType) -> Vec<Value> {
    let mut docs = vec![json!({
        "name": t.plural,
        "singularName": t.singular,
        "namespaced": t.namespaced,
        "kind": t.kind,
        "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        "shortNames": t.short_names,
        "categories": ["riptides"],
    })];
    if t.has_status {
        docs.push(json!({"name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"]}));
    }
    docs
}

pub async fn resources(Path((group, version)): Path<(String, String)>) -> Result<Json<Value>, ApiError> {
    let resources: Vec<Value> =
        RESOURCE_TYPES.iter().filter(|t| t.group == group && t.version == version).flat_map(resource_doc).collect();
    if resources.is_empty() {
        return Err(ApiError::NotFound(format!("API group version {group}/{version} not found")));
    }
    Ok(Json(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{group}/{version}"), "resources": resources}),
    ))
}

pub async fn version() -> Json<Value> {
    Json(json!({
        "major": "1",
        "minor": "20",
        "gitVersion": concat!("v1.20.0-riptides-", env!("CARGO_PKG_VERSION")),
        "platform": "linux/amd64",
    }))
}

/// kubectl validates manifests against the server's OpenAPI document, fetched as protobuf. Our
/// kinds are not in it (the server validates them itself and answers 422), so we serve the
/// empty document: a protobuf message with no fields encodes to zero bytes.
pub async fn openapi_v2() -> Response {
    ([(CONTENT_TYPE, "application/octet-stream")], Vec::<u8>::new()).into_response()
}
