//! Query and mutation roots.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::{ComplexObject, Context, ErrorExtensions, Json, Object, SimpleObject};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use riptides_wire::proto::messages::{TunnelRequest, TunnelResponse};
use riptides_wire::resource::{self, ResourceType, DEFAULT_NAMESPACE};
use serde_json::Value;

use super::model::{
    Connection, ConnectionReport, CredentialBinding, CredentialSource, Daemon, DaemonError, DaemonHealth, JoinToken,
    KeyValue, Service, Verifier, WorkloadIdentity,
};
use super::policy::{self, EffectivePolicy};
use super::{Principal, TUNNEL_COST};
use crate::api::{ApiError, ApiState};
use crate::oidc::Role;

/// How long a live query waits for one daemon's answer.
const TUNNEL_TIMEOUT: Duration = Duration::from_secs(5);

type Result<T> = async_graphql::Result<T>;

pub(super) fn state<'a>(ctx: &'a Context<'_>) -> &'a Arc<ApiState> {
    ctx.data_unchecked::<Arc<ApiState>>()
}

pub(super) fn principal<'a>(ctx: &'a Context<'_>) -> Result<&'a Principal> {
    ctx.data::<Principal>()
        .map_err(|_| async_graphql::Error::new("not signed in").extend_with(|_, e| e.set("code", "UNAUTHENTICATED")))
}

fn require(ctx: &Context<'_>, role: Role, what: &str) -> Result<()> {
    let p = principal(ctx)?;
    if p.role >= role {
        Ok(())
    } else {
        Err(async_graphql::Error::new(format!(
            "{} has role {} and may not {what}: that needs role {role}",
            p.subject, p.role
        ))
        .extend_with(|_, e| e.set("code", "FORBIDDEN")))
    }
}

fn internal(msg: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(msg.into()).extend_with(|_, e| e.set("code", "INTERNAL"))
}

/// An [`ApiError`] as a GraphQL error: the same message, the Kubernetes reason as `code`, and
/// the field causes of a validation failure.
fn api_error(e: ApiError) -> async_graphql::Error {
    let status = e.status();
    let causes: Vec<Value> = status
        .details
        .as_ref()
        .map(|d| d.causes.iter().map(|c| serde_json::json!({"field": c.field, "message": c.message})).collect())
        .unwrap_or_default();
    async_graphql::Error::new(e.to_string()).extend_with(|_, ext| {
        ext.set("code", status.reason.clone());
        ext.set("httpStatus", status.code);
        if !causes.is_empty() {
            ext.set("causes", async_graphql::Value::from_json(Value::Array(causes.clone())).unwrap_or_default());
        }
    })
}

fn rt(plural: &str) -> &'static ResourceType {
    resource::by_name(plural).expect("a kind of the kind table")
}

/// Stored objects of a kind as the API shows them (write-only fields removed).
async fn list(st: &ApiState, plural: &str, ns: Option<&str>) -> Result<Vec<(Value, Vec<u8>)>> {
    let kind = rt(plural);
    let (stored, _) =
        st.store.list(&kind.store_key(), ns).await.map_err(|e| api_error(ApiError::from_store(e, plural)))?;
    stored
        .into_iter()
        .map(|s| {
            let v = crate::api::object::from_stored(&s, s.mod_revision)
                .map_err(|e| internal(format!("stored object {} is corrupt: {e}", s.key)))?;
            Ok((v, s.value))
        })
        .collect()
}

fn convert<T>(items: Vec<(Value, Vec<u8>)>, f: impl Fn(&Value) -> std::result::Result<T, String>) -> Result<Vec<T>> {
    items.iter().map(|(v, _)| f(v).map_err(internal)).collect()
}

async fn tunnel(st: &ApiState, daemon: &str, req: TunnelRequest) -> std::result::Result<TunnelResponse, String> {
    match tokio::time::timeout(TUNNEL_TIMEOUT, crate::endpoint::tunnel_request(&st.sessions, daemon, req)).await {
        Ok(Ok(TunnelResponse::Error(e))) => Err(format!("daemon {daemon} answered: {e}")),
        Ok(r) => r,
        Err(_) => Err(format!("daemon {daemon} did not answer within {}s", TUNNEL_TIMEOUT.as_secs())),
    }
}

async fn connections_of(st: &ApiState, names: Vec<String>) -> ConnectionReport {
    let answers = futures_util::future::join_all(
        names.iter().map(|n| async move { (n.clone(), tunnel(st, n, TunnelRequest::ConnectionTable).await) }),
    )
    .await;
    let mut report = ConnectionReport { connections: Vec::new(), errors: Vec::new() };
    for (name, answer) in answers {
        match answer {
            Ok(TunnelResponse::ConnectionTable(rows)) => {
                report.connections.extend(rows.into_iter().map(|c| Connection::from_entry(&name, c)))
            }
            Ok(other) => {
                report.errors.push(DaemonError { daemon: name, message: format!("unexpected answer {}", other.kind()) })
            }
            Err(message) => report.errors.push(DaemonError { daemon: name, message }),
        }
    }
    report
}

#[derive(SimpleObject, Clone, Debug)]
pub struct Me {
    pub subject: String,
    pub role: String,
    pub can_edit: bool,
    pub can_admin: bool,
}

/// A fleet overview in one round trip.
#[derive(SimpleObject, Clone, Debug)]
pub struct Overview {
    pub trust_domain: String,
    pub daemons: i32,
    pub daemons_connected: i32,
    pub daemons_unhealthy: i32,
    pub workload_identities: i32,
    pub services: i32,
    pub join_tokens_unused: i32,
}

pub struct QueryRoot;

#[Object]
impl QueryRoot {
    /// Who is asking, and what they may do.
    async fn me(&self, ctx: &Context<'_>) -> Result<Me> {
        let p = principal(ctx)?;
        Ok(Me {
            subject: p.subject.clone(),
            role: p.role.to_string(),
            can_edit: p.role >= Role::Editor,
            can_admin: p.role >= Role::Admin,
        })
    }

    /// The store's current revision: subscribe to `resourceChanges` from it after reading, and
    /// no change after the read is missed.
    async fn revision(&self, ctx: &Context<'_>) -> Result<String> {
        let rev = state(ctx).store.current_revision().await.map_err(|e| internal(e.to_string()))?;
        Ok(rev.to_string())
    }

    async fn overview(&self, ctx: &Context<'_>) -> Result<Overview> {
        let st = state(ctx);
        let daemons = convert(list(st, "daemons", None).await?, Daemon::from_value)?;
        let now = time::OffsetDateTime::now_utc();
        let tokens = convert(list(st, "jointokens", None).await?, |v| JoinToken::from_value(v, now))?;
        Ok(Overview {
            trust_domain: st.validation.trust_domain.to_string(),
            daemons: daemons.len() as i32,
            daemons_connected: daemons.iter().filter(|d| d.connected).count() as i32,
            daemons_unhealthy: daemons
                .iter()
                .filter(|d| d.daemon_healthy == Some(false) || d.driver_healthy == Some(false))
                .count() as i32,
            workload_identities: list(st, "workloadidentities", None).await?.len() as i32,
            services: list(st, "services", None).await?.len() as i32,
            join_tokens_unused: tokens.iter().filter(|t| !t.used && !t.expired).count() as i32,
        })
    }

    #[graphql(complexity = "5 * child_complexity")]
    async fn daemons(&self, ctx: &Context<'_>, namespace: Option<String>) -> Result<Vec<Daemon>> {
        convert(list(state(ctx), "daemons", namespace.as_deref()).await?, Daemon::from_value)
    }

    #[graphql(complexity = "5 * child_complexity")]
    async fn workload_identities(&self, ctx: &Context<'_>, namespace: Option<String>) -> Result<Vec<WorkloadIdentity>> {
        let td = state(ctx).validation.trust_domain.clone();
        convert(list(state(ctx), "workloadidentities", namespace.as_deref()).await?, |v| {
            WorkloadIdentity::from_value(v, &td)
        })
    }

    #[graphql(complexity = "5 * child_complexity")]
    async fn services(&self, ctx: &Context<'_>, namespace: Option<String>) -> Result<Vec<Service>> {
        convert(list(state(ctx), "services", namespace.as_deref()).await?, Service::from_value)
    }

    #[graphql(complexity = "5 * child_complexity")]
    async fn verifiers(&self, ctx: &Context<'_>, namespace: Option<String>) -> Result<Vec<Verifier>> {
        convert(list(state(ctx), "verifiers", namespace.as_deref()).await?, Verifier::from_value)
    }

    /// Join tokens: who may use them and whether they were used; never the secret or its hash.
    #[graphql(complexity = "5 * child_complexity")]
    async fn join_tokens(&self, ctx: &Context<'_>, namespace: Option<String>) -> Result<Vec<JoinToken>> {
        let now = time::OffsetDateTime::now_utc();
        convert(list(state(ctx), "jointokens", namespace.as_deref()).await?, |v| JoinToken::from_value(v, now))
    }

    /// Credential sources; never the secret value.
    #[graphql(complexity = "5 * child_complexity")]
    async fn credential_sources(&self, ctx: &Context<'_>, namespace: Option<String>) -> Result<Vec<CredentialSource>> {
        let items = list(state(ctx), "credentialsources", namespace.as_deref()).await?;
        items
            .iter()
            .map(|(v, raw)| {
                let has_secret = serde_json::from_slice::<Value>(raw)
                    .ok()
                    .and_then(|s| s.pointer(riptides_wire::resource::core::CREDENTIAL_SECRET_POINTER).map(|_| ()))
                    .is_some();
                CredentialSource::from_value(v, has_secret).map_err(internal)
            })
            .collect()
    }

    #[graphql(complexity = "5 * child_complexity")]
    async fn credential_bindings(
        &self,
        ctx: &Context<'_>,
        namespace: Option<String>,
    ) -> Result<Vec<CredentialBinding>> {
        convert(list(state(ctx), "credentialbindings", namespace.as_deref()).await?, CredentialBinding::from_value)
    }

    /// The effective policy of one workload identity.
    async fn effective_policy(
        &self,
        ctx: &Context<'_>,
        namespace: Option<String>,
        name: String,
    ) -> Result<EffectivePolicy> {
        let st = state(ctx);
        let ns = namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        let td = st.validation.trust_domain.clone();
        let wis = convert(list(st, "workloadidentities", Some(&ns)).await?, |v| WorkloadIdentity::from_value(v, &td))?;
        let wi = wis.into_iter().find(|w| w.meta.name == name).ok_or_else(|| {
            async_graphql::Error::new(format!("workloadidentities {name:?} not found in namespace {ns:?}"))
                .extend_with(|_, e| e.set("code", "NotFound"))
        })?;
        compute_policy(st, &wi).await
    }

    /// Live connections, asked from the connected daemons (or only `daemon`) over the tunnel.
    /// Daemons that do not answer are listed in `errors`.
    #[graphql(complexity = "TUNNEL_COST + child_complexity")]
    async fn connections(&self, ctx: &Context<'_>, daemon: Option<String>) -> Result<ConnectionReport> {
        Ok(live_connections(state(ctx), daemon).await)
    }
}

/// The connection tables of the connected daemons (or of `daemon`); a store failure is
/// reported like an unreachable daemon.
pub(super) async fn live_connections(st: &ApiState, daemon: Option<String>) -> ConnectionReport {
    let names: Vec<String> = match daemon {
        Some(d) => vec![d],
        None => match list(st, "daemons", None).await.and_then(|l| convert(l, Daemon::from_value)) {
            Ok(ds) => ds.into_iter().filter(|d| d.connected).map(|d| d.meta.name).collect(),
            Err(e) => {
                return ConnectionReport {
                    connections: Vec::new(),
                    errors: vec![DaemonError { daemon: "*".into(), message: e.message }],
                }
            }
        },
    };
    connections_of(st, names).await
}

async fn compute_policy(st: &ApiState, wi: &WorkloadIdentity) -> Result<EffectivePolicy> {
    let services = convert(list(st, "services", None).await?, Service::from_value)?;
    let daemons: Vec<(String, String, Option<String>)> = convert(list(st, "daemons", None).await?, Daemon::from_value)?
        .into_iter()
        .map(|d| (d.meta.name, d.id, d.group))
        .collect();
    Ok(policy::effective(wi, &services, &daemons))
}

#[ComplexObject]
impl WorkloadIdentity {
    async fn effective_policy(&self, ctx: &Context<'_>) -> Result<EffectivePolicy> {
        compute_policy(state(ctx), self).await
    }
}

#[ComplexObject]
impl Daemon {
    /// The daemon's own health report, asked over the tunnel (null with an error when it is
    /// not connected).
    #[graphql(complexity = "TUNNEL_COST + child_complexity")]
    async fn health(&self, ctx: &Context<'_>) -> Result<DaemonHealth> {
        match tunnel(state(ctx), &self.meta.name, TunnelRequest::Health).await {
            Ok(TunnelResponse::Health(h)) => Ok(DaemonHealth {
                ready: h.ready,
                components: h.details.into_iter().map(|(key, value)| KeyValue { key, value }).collect(),
            }),
            Ok(other) => Err(internal(format!("unexpected answer {}", other.kind()))),
            Err(e) => Err(async_graphql::Error::new(e).extend_with(|_, x| x.set("code", "UNAVAILABLE"))),
        }
    }

    /// This daemon's live connection table.
    #[graphql(complexity = "TUNNEL_COST + child_complexity")]
    async fn connections(&self, ctx: &Context<'_>) -> Result<ConnectionReport> {
        Ok(connections_of(state(ctx), vec![self.meta.name.clone()]).await)
    }
}

#[derive(SimpleObject, Clone, Debug)]
pub struct AppliedResource {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub resource_version: Option<String>,
    /// True when the object was created, false when an existing one was replaced.
    pub created: bool,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct DeletedResource {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

pub(super) fn kind_by_name(kind: &str) -> Result<&'static ResourceType> {
    resource::by_name(kind).ok_or_else(|| {
        async_graphql::Error::new(format!(
            "unknown kind {kind:?}; use one of {}",
            resource::RESOURCE_TYPES.iter().map(|r| r.kind).collect::<Vec<_>>().join(", ")
        ))
        .extend_with(|_, e| e.set("code", "BadRequest"))
    })
}

fn json_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h
}

async fn body_json(resp: axum::response::Response) -> Result<Value> {
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20).await.map_err(|e| internal(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| internal(e.to_string()))
}

pub struct MutationRoot;

#[Object]
impl MutationRoot {
    /// Creates the object, or replaces it when it exists (like `kubectl apply` without
    /// three-way merge), through the REST API's own validation and write path. A
    /// `metadata.resourceVersion` in the object makes the replace conditional.
    async fn apply(&self, ctx: &Context<'_>, object: Json<Value>) -> Result<AppliedResource> {
        let obj = object.0;
        if !obj.is_object() {
            return Err(api_error(ApiError::BadRequest("the object must be a JSON object".into())));
        }
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        let rt =
            resource::RESOURCE_TYPES.iter().find(|r| r.kind == kind && r.api_version() == api_version).ok_or_else(
                || api_error(ApiError::BadRequest(format!("unknown apiVersion/kind {api_version:?}/{kind:?}"))),
            )?;
        require(ctx, Role::needed_to_write(rt.group, rt.kind), &format!("write {}", rt.plural))?;
        let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_owned();
        if name.is_empty() {
            return Err(api_error(ApiError::BadRequest("metadata.name is required".into())));
        }
        let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or(DEFAULT_NAMESPACE).to_owned();
        let st = state(ctx).clone();
        let key = crate::store::ObjectKey::new(rt.store_key(), ns.as_str(), name.as_str());
        let exists = st.store.get(&key).await.map_err(|e| api_error(ApiError::from_store(e, rt.plural)))?.is_some();
        let body = Body::from(serde_json::to_vec(&obj).expect("JSON values serialise"));
        let resp = if exists {
            crate::api::resources::replace(
                State(st),
                Path((rt.group.to_owned(), rt.version.to_owned(), ns.clone(), rt.plural.to_owned(), name.clone())),
                json_headers(),
                body,
            )
            .await
        } else {
            crate::api::resources::create(
                State(st),
                Path((rt.group.to_owned(), rt.version.to_owned(), ns.clone(), rt.plural.to_owned())),
                json_headers(),
                body,
            )
            .await
        }
        .map_err(api_error)?;
        let out = body_json(resp).await?;
        Ok(AppliedResource {
            kind: rt.kind.to_owned(),
            namespace: ns,
            name,
            resource_version: out.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_owned),
            created: !exists,
        })
    }

    /// Deletes an object of `kind` (kind, plural or short name).
    async fn delete(
        &self,
        ctx: &Context<'_>,
        kind: String,
        namespace: Option<String>,
        name: String,
    ) -> Result<DeletedResource> {
        let rt = kind_by_name(&kind)?;
        require(ctx, Role::needed_to_write(rt.group, rt.kind), &format!("delete {}", rt.plural))?;
        delete(ctx, rt, namespace, name).await
    }

    /// Revokes (deletes) a join token so it can no longer enroll a daemon.
    async fn revoke_join_token(
        &self,
        ctx: &Context<'_>,
        namespace: Option<String>,
        name: String,
    ) -> Result<DeletedResource> {
        let rt = rt("jointokens");
        require(ctx, Role::needed_to_write(rt.group, rt.kind), "revoke join tokens")?;
        delete(ctx, rt, namespace, name).await
    }
}

async fn delete(
    ctx: &Context<'_>,
    rt: &'static ResourceType,
    namespace: Option<String>,
    name: String,
) -> Result<DeletedResource> {
    let ns = namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    crate::api::resources::delete(
        State(state(ctx).clone()),
        Path((rt.group.to_owned(), rt.version.to_owned(), ns.clone(), rt.plural.to_owned(), name.clone())),
        HeaderMap::new(),
        Body::empty(),
    )
    .await
    .map_err(api_error)?;
    Ok(DeletedResource { kind: rt.kind.to_owned(), namespace: ns, name })
}
