//! The GraphQL object types and their construction from stored objects. Secret-bearing
//! fields of the resources (a CredentialSource's `secretValue`, a JoinToken's `tokenHash`)
//! have no GraphQL field at all.

use std::collections::BTreeMap;

use async_graphql::{Json, SimpleObject};
use serde_json::Value;

#[derive(SimpleObject, Clone, Debug)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

pub fn pairs(map: &BTreeMap<String, String>) -> Vec<KeyValue> {
    map.iter().map(|(k, v)| KeyValue { key: k.clone(), value: v.clone() }).collect()
}

/// The metadata every object has.
#[derive(SimpleObject, Clone, Debug)]
pub struct Meta {
    pub name: String,
    pub namespace: String,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
    pub created_at: Option<String>,
    pub labels: Vec<KeyValue>,
}

impl Meta {
    pub fn of(v: &Value) -> Meta {
        let m = &v["metadata"];
        let s = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
        let labels = m
            .get("labels")
            .and_then(Value::as_object)
            .map(|l| {
                l.iter()
                    .map(|(k, v)| KeyValue { key: k.clone(), value: v.as_str().unwrap_or_default().to_owned() })
                    .collect()
            })
            .unwrap_or_default();
        Meta {
            name: s("name").unwrap_or_default(),
            namespace: s("namespace").unwrap_or_default(),
            uid: s("uid"),
            resource_version: s("resourceVersion"),
            generation: m.get("generation").and_then(Value::as_i64),
            created_at: s("creationTimestamp"),
            labels,
        }
    }
}

/// A registered daemon, from its `Daemon` record (status written by the control plane).
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct Daemon {
    pub meta: Meta,
    pub id: String,
    pub spiffe_id: Option<String>,
    pub group: Option<String>,
    pub verifier: Option<String>,
    /// Whether the daemon holds a session with this control plane now.
    pub connected: bool,
    pub last_seen: Option<String>,
    pub version: Option<String>,
    /// `kernel` or `userspace`.
    pub dataplane: Option<String>,
    pub daemon_healthy: Option<bool>,
    /// Health of the dataplane driver (kernel module or userspace capture).
    pub driver_healthy: Option<bool>,
    pub policy_revision: Option<String>,
    /// `quic` or `tcp`.
    pub transport: Option<String>,
    pub host: Vec<KeyValue>,
    pub attestation_method: Option<String>,
}

impl Daemon {
    pub fn from_value(v: &Value) -> Result<Daemon, String> {
        let d: riptides_wire::resource::Daemon =
            serde_json::from_value(v.clone()).map_err(|e| format!("stored Daemon is not readable: {e}"))?;
        let st = d.status.unwrap_or_default();
        Ok(Daemon {
            meta: Meta::of(v),
            id: d.spec.id,
            spiffe_id: d.spec.spiffe_id.map(|s| s.to_string()),
            group: d.spec.group,
            verifier: d.spec.verifier,
            connected: st.connected.unwrap_or(false),
            last_seen: st.last_seen,
            version: st.version,
            dataplane: st.dataplane,
            daemon_healthy: st.daemon_healthy,
            driver_healthy: st.driver_healthy,
            policy_revision: st.policy_revision.map(|r| r.to_string()),
            transport: st.transport,
            host: pairs(&st.host),
            attestation_method: st.attestation.map(|a| a.method),
        })
    }
}

/// A daemon's own health report, asked over the tunnel.
#[derive(SimpleObject, Clone, Debug)]
pub struct DaemonHealth {
    pub ready: bool,
    pub components: Vec<KeyValue>,
}

/// One connection in a daemon's live connection table.
#[derive(SimpleObject, Clone, Debug)]
pub struct Connection {
    /// Name of the daemon that reported it.
    pub daemon: String,
    pub local: String,
    pub remote: String,
    /// SPIFFE ID of the local workload, if identified.
    pub workload_id: Option<String>,
    /// SPIFFE ID the peer presented (mTLS only).
    pub peer_id: Option<String>,
    /// How the dataplane handles it, as the daemon names it (`MUTUAL`, `MUTUAL (kTLS)`, `PERMISSIVE`, `permissive-plaintext`, `SIMPLE`, `passthrough`...).
    pub mode: String,
    pub state: String,
    /// Whether both sides were authenticated with SVIDs (and the connection was not refused).
    pub mtls: bool,
    /// Whether the dataplane refused the connection.
    pub refused: bool,
    /// Negotiated TLS version (`TLSv1.3`), once the daemon's handshake completed; null for
    /// plaintext, passthrough, refused connections and daemons that do not report it.
    pub tls_version: Option<String>,
    /// Negotiated key-exchange group (`X25519MLKEM768` is the post-quantum hybrid).
    pub key_exchange: Option<String>,
    pub bytes_in: String,
    pub bytes_out: String,
}

impl Connection {
    /// The daemons name modes after the TLS mode (`MUTUAL`, `MUTUAL (kTLS)`, `PERMISSIVE`,
    /// `permissive-plaintext`, `SIMPLE`, `passthrough`...): a connection is mTLS when the peer
    /// presented a SPIFFE ID and the mode is neither SIMPLE nor plaintext.
    pub fn from_entry(daemon: &str, c: riptides_wire::proto::messages::ConnectionEntry) -> Connection {
        let mode = c.mode.to_ascii_lowercase();
        let state = c.state.to_ascii_lowercase();
        let peer_is_spiffe = c.peer_id.as_deref().is_some_and(|p| p.starts_with("spiffe://"));
        let refused = ["refus", "denied", "reject", "fail"].iter().any(|w| mode.contains(w) || state.contains(w));
        Connection {
            daemon: daemon.to_owned(),
            mtls: peer_is_spiffe && !refused && !mode.contains("simple") && !mode.contains("plaintext"),
            refused,
            local: c.local,
            remote: c.remote,
            workload_id: c.workload_id,
            peer_id: c.peer_id,
            mode: c.mode,
            state: c.state,
            tls_version: c.tls_version,
            key_exchange: c.key_exchange,
            bytes_in: c.bytes_in.to_string(),
            bytes_out: c.bytes_out.to_string(),
        }
    }
}

/// A daemon that could not answer a live query: shown, not swallowed.
#[derive(SimpleObject, Clone, Debug)]
pub struct DaemonError {
    pub daemon: String,
    pub message: String,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct ConnectionReport {
    pub connections: Vec<Connection>,
    pub errors: Vec<DaemonError>,
}

#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct WorkloadIdentity {
    pub meta: Meta,
    /// The SPIFFE path under the trust domain.
    pub workload_id: String,
    /// The full SPIFFE ID.
    pub spiffe_id: String,
    pub scope_daemon: Option<String>,
    pub scope_daemon_group: Option<String>,
    /// The identity's default TLS mode (`MUTUAL` when not set).
    pub tls_mode: String,
    /// The whole spec as stored (selectors, egress, ingress, svid).
    pub spec: Json<Value>,
    #[graphql(skip)]
    pub typed: riptides_wire::resource::core::WorkloadIdentitySpec,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct ServiceAddress {
    pub address: String,
    pub port: i32,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct Service {
    pub meta: Meta,
    pub labels: Vec<KeyValue>,
    pub addresses: Vec<ServiceAddress>,
    pub external: bool,
    pub tls_mode: Option<String>,
    pub server_name: Option<String>,
    #[graphql(skip)]
    pub typed: riptides_wire::resource::core::ServiceSpec,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct Verifier {
    pub meta: Meta,
    pub method: String,
    pub workload_id_template: Option<String>,
    pub daemon_group: Option<String>,
}

/// A join token: who may use it and whether it was used. Never its secret or hash.
#[derive(SimpleObject, Clone, Debug)]
pub struct JoinToken {
    pub meta: Meta,
    pub verifier: Option<String>,
    pub expires_at: String,
    pub expired: bool,
    pub daemon_id: Option<String>,
    pub used: bool,
    pub used_at: Option<String>,
    pub used_by: Option<String>,
}

/// A credential source. Never its secret: `hasSecret` says whether one is stored.
#[derive(SimpleObject, Clone, Debug)]
pub struct CredentialSource {
    pub meta: Meta,
    pub source_type: String,
    pub token_url: Option<String>,
    pub has_secret: bool,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct CredentialBinding {
    pub meta: Meta,
    pub workload_id: String,
    pub credential_source: String,
    pub header: String,
    pub format: Option<String>,
    pub service_selectors: Json<Value>,
}

pub fn tls_mode_name(m: riptides_wire::resource::core::TlsMode) -> String {
    use riptides_wire::resource::core::TlsMode;
    match m {
        TlsMode::Mutual => "MUTUAL",
        TlsMode::Simple => "SIMPLE",
        TlsMode::Permissive => "PERMISSIVE",
    }
    .to_owned()
}

fn enum_name<T: serde::Serialize>(t: &T) -> String {
    match serde_json::to_value(t) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn typed<T: serde::de::DeserializeOwned>(v: &Value, kind: &str) -> Result<T, String> {
    serde_json::from_value(v.clone()).map_err(|e| {
        format!("stored {kind} {:?} is not readable: {e}", v.pointer("/metadata/name").and_then(Value::as_str))
    })
}

impl WorkloadIdentity {
    pub fn from_value(v: &Value, td: &riptides_wire::TrustDomain) -> Result<Self, String> {
        let wi: riptides_wire::resource::WorkloadIdentity = typed(v, "WorkloadIdentity")?;
        let s = wi.spec;
        let mode = s.connection.as_ref().and_then(|c| c.tls.as_ref()).and_then(|t| t.mode);
        Ok(WorkloadIdentity {
            meta: Meta::of(v),
            spiffe_id: td.workload_id(&s.workload_id).map(|i| i.to_string()).unwrap_or_default(),
            workload_id: s.workload_id.clone(),
            scope_daemon: s.scope.daemon.as_ref().map(|d| d.id.clone()),
            scope_daemon_group: s.scope.daemon_group.as_ref().map(|d| d.id.clone()),
            tls_mode: tls_mode_name(mode.unwrap_or(riptides_wire::resource::core::TlsMode::Mutual)),
            spec: Json(v.get("spec").cloned().unwrap_or(Value::Null)),
            typed: s,
        })
    }
}

impl Service {
    pub fn from_value(v: &Value) -> Result<Self, String> {
        let svc: riptides_wire::resource::Service = typed(v, "Service")?;
        let s = svc.spec;
        Ok(Service {
            meta: Meta::of(v),
            labels: pairs(&s.labels),
            addresses: s
                .addresses
                .iter()
                .map(|a| ServiceAddress { address: a.address.clone(), port: a.port as i32 })
                .collect(),
            external: s.external,
            tls_mode: s.tls.as_ref().and_then(|t| t.mode).map(tls_mode_name),
            server_name: s.tls.as_ref().and_then(|t| t.server_name.clone()),
            typed: s,
        })
    }
}

impl Verifier {
    pub fn from_value(v: &Value) -> Result<Self, String> {
        let vf: riptides_wire::resource::Verifier = typed(v, "Verifier")?;
        Ok(Verifier {
            meta: Meta::of(v),
            method: enum_name(&vf.spec.method),
            workload_id_template: vf.spec.workload_id_template,
            daemon_group: vf.spec.daemon_group,
        })
    }
}

impl JoinToken {
    pub fn from_value(v: &Value, now: time::OffsetDateTime) -> Result<Self, String> {
        let t: riptides_wire::resource::JoinToken = typed(v, "JoinToken")?;
        let st = t.status.unwrap_or_default();
        let expired = time::OffsetDateTime::parse(&t.spec.expires_at, &time::format_description::well_known::Rfc3339)
            .map(|e| e <= now)
            .unwrap_or(false);
        Ok(JoinToken {
            meta: Meta::of(v),
            verifier: t.spec.verifier,
            expires_at: t.spec.expires_at,
            expired,
            daemon_id: t.spec.daemon_id,
            used: st.used,
            used_at: st.used_at,
            used_by: st.used_by,
        })
    }
}

impl CredentialSource {
    /// `v` is the stored object with the secret already removed; `has_secret` is read from the
    /// stored bytes by the caller.
    pub fn from_value(v: &Value, has_secret: bool) -> Result<Self, String> {
        let spec = v.get("spec").cloned().unwrap_or(Value::Null);
        Ok(CredentialSource {
            meta: Meta::of(v),
            source_type: spec.get("type").and_then(Value::as_str).unwrap_or_default().to_owned(),
            token_url: spec.pointer("/tokenEndpoint/tokenURL").and_then(Value::as_str).map(str::to_owned),
            has_secret,
        })
    }
}

impl CredentialBinding {
    pub fn from_value(v: &Value) -> Result<Self, String> {
        let b: riptides_wire::resource::CredentialBinding = typed(v, "CredentialBinding")?;
        Ok(CredentialBinding {
            meta: Meta::of(v),
            workload_id: b.spec.workload_id,
            credential_source: b.spec.credential_source,
            header: b.spec.injection.header,
            format: b.spec.injection.format,
            service_selectors: Json(serde_json::to_value(&b.spec.service_selectors).unwrap_or(Value::Null)),
        })
    }
}
