//! Subscriptions over WebSocket (`GET /graphql`, protocols `graphql-transport-ws` and the older
//! `graphql-ws`): resource changes from the store's watch, and the live connection table
//! polled from the daemons. A browser cannot set headers on a WebSocket, so besides the
//! caller of the HTTP upgrade (client certificate or bearer token) the access token may come
//! in the `connection_init` payload as `{"Authorization": "Bearer ..."}`.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::http::{WebSocket as GqlWebSocket, WebSocketProtocols, WsMessage};
use async_graphql::{Context, Data, SimpleObject, Subscription};
use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, Stream, StreamExt};

use super::model::ConnectionReport;
use super::{GqlState, Principal};
use crate::api::Caller;

/// Shortest interval between two connection-table polls of one subscription.
const MIN_POLL: Duration = Duration::from_secs(2);

/// One change of a stored object. Only its coordinates: fetch the object with a query (the
/// query path is where secrets are kept out).
#[derive(SimpleObject, Clone, Debug)]
pub struct ResourceChange {
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub change: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub resource_version: String,
}

pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// Changes of stored objects after `resourceVersion` (a list's or object's; from now when
    /// absent), optionally only of some kinds (kind, plural or short names) and one namespace.
    /// A `resourceVersion` older than the kept history ends the subscription with an error.
    async fn resource_changes(
        &self,
        ctx: &Context<'_>,
        kinds: Option<Vec<String>>,
        namespace: Option<String>,
        resource_version: Option<String>,
    ) -> async_graphql::Result<impl Stream<Item = ResourceChange>> {
        super::schema::principal(ctx)?;
        let st = super::schema::state(ctx).clone();
        let wanted: Option<Vec<String>> = match kinds {
            None => None,
            Some(k) => Some(
                k.iter()
                    .map(|name| super::schema::kind_by_name(name).map(|rt| rt.store_key()))
                    .collect::<async_graphql::Result<_>>()?,
            ),
        };
        let from = match resource_version {
            Some(rv) => rv
                .parse::<u64>()
                .map_err(|_| async_graphql::Error::new(format!("resourceVersion {rv:?} is not a number")))?,
            None => st.store.current_revision().await.map_err(|e| async_graphql::Error::new(e.to_string()))?,
        };
        let watch = st
            .store
            .watch(None, namespace.as_deref(), from)
            .await
            .map_err(|e| async_graphql::Error::new(e.to_string()))?;
        Ok(watch.take_while(|r| futures_util::future::ready(r.is_ok())).filter_map(move |ev| {
            let wanted = wanted.clone();
            async move {
                use crate::store::WatchEvent;
                let (change, object, revision) = match ev.ok()? {
                    WatchEvent::Put { object, created } => {
                        let rev = object.mod_revision;
                        (if created { "ADDED" } else { "MODIFIED" }, object, rev)
                    }
                    WatchEvent::Deleted { object, revision } => ("DELETED", object, revision),
                };
                if wanted.as_ref().is_some_and(|w| !w.contains(&object.key.resource)) {
                    return None;
                }
                // Only API kinds: the store also holds the control plane's own objects (the
                // sealed CA, OIDC keys and refresh-session hashes), which no client may see.
                let kind = riptides_wire::resource::RESOURCE_TYPES
                    .iter()
                    .find(|rt| rt.store_key() == object.key.resource)
                    .map(|rt| rt.kind.to_owned())?;
                Some(ResourceChange {
                    change: change.into(),
                    kind,
                    namespace: object.key.namespace.clone(),
                    name: object.key.name.clone(),
                    resource_version: revision.to_string(),
                })
            }
        }))
    }

    /// The live connection table of the connected daemons (or one), every `everySeconds`
    /// (at least 2).
    #[graphql(complexity = "super::TUNNEL_COST + child_complexity")]
    async fn connections(
        &self,
        ctx: &Context<'_>,
        daemon: Option<String>,
        #[graphql(default = 5)] every_seconds: u32,
    ) -> async_graphql::Result<impl Stream<Item = ConnectionReport>> {
        super::schema::principal(ctx)?;
        let st = super::schema::state(ctx).clone();
        let every = Duration::from_secs(every_seconds.into()).max(MIN_POLL);
        Ok(futures_util::stream::unfold(true, move |first| {
            let (st, daemon) = (st.clone(), daemon.clone());
            async move {
                if !first {
                    tokio::time::sleep(every).await;
                }
                Some((super::schema::live_connections(&st, daemon).await, false))
            }
        }))
    }
}

/// `GET /graphql` with a WebSocket upgrade.
pub async fn upgrade(
    State(gs): State<Arc<GqlState>>,
    headers: HeaderMap,
    caller: Option<axum::Extension<Caller>>,
    ws: WebSocketUpgrade,
) -> Response {
    let protocol = headers
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|list| list.split(',').find_map(|p| p.trim().parse::<WebSocketProtocols>().ok()))
        .unwrap_or(WebSocketProtocols::GraphQLWS);
    // A browser sends Origin: any page could open this socket and the browser would present a
    // client certificate it holds, so from browsers only the token in connection_init counts.
    let from_browser = headers.contains_key(axum::http::header::ORIGIN);
    let known = caller
        .filter(|_| !from_browser)
        .and_then(|c| c.0.operator())
        .map(|(subject, role)| Principal { subject, role });
    let schema = gs.schema.clone();
    let oidc = gs.api.oidc.clone();
    ws.protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| async move {
            let (mut sink, stream) = socket.split();
            let input = stream.take_while(|m| futures_util::future::ready(m.is_ok())).filter_map(|m| async move {
                match m.ok()? {
                    Message::Text(t) => Some(t.as_str().as_bytes().to_vec()),
                    Message::Binary(b) => Some(b.to_vec()),
                    _ => None,
                }
            });
            let mut data = Data::default();
            let have_principal = known.is_some();
            if let Some(p) = known {
                data.insert(p);
            }
            let out = GqlWebSocket::new((*schema).clone(), input, protocol).connection_data(data).on_connection_init(
                move |payload| async move {
                    if have_principal {
                        return Ok(Data::default());
                    }
                    let token = ["Authorization", "authorization"]
                        .iter()
                        .find_map(|k| payload.get(*k).and_then(|v| v.as_str()))
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .ok_or_else(|| {
                            async_graphql::Error::new(
                                "sign in first: send {\"Authorization\": \"Bearer <access token>\"} in connection_init",
                            )
                        })?;
                    let claims = oidc
                        .provider
                        .verify_access_token(token.trim())
                        .map_err(|e| async_graphql::Error::new(e.to_string()))?;
                    let mut d = Data::default();
                    d.insert(Principal { subject: claims.subject, role: claims.role });
                    Ok(d)
                },
            );
            let mut out = std::pin::pin!(out);
            while let Some(msg) = out.next().await {
                let m = match msg {
                    WsMessage::Text(t) => Message::Text(t.into()),
                    WsMessage::Close(code, reason) => Message::Close(Some(CloseFrame { code, reason: reason.into() })),
                };
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        })
        .into_response()
}
