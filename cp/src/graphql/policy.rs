//! The effective policy of one workload identity, computed the way the daemons' rule compiler
//! decides (`node/src/dataplane/rules`): for each Service, the first egress rule whose selectors
//! match the Service's labels decides, with the mode taken from the rule, else the Service,
//! else the identity's default, else MUTUAL; a destination no rule selects is passed through
//! untouched. Ingress: per port, the first identity (by namespace/name) on a daemon claims it.

use async_graphql::{Json, SimpleObject};
use riptides_wire::resource::core::{ConnectionSettings, Selector, TlsMode};
use serde_json::Value;

use super::model::{tls_mode_name, Service, WorkloadIdentity};

#[derive(SimpleObject, Clone, Debug)]
pub struct EffectivePolicy {
    /// The identity's SPIFFE ID.
    pub spiffe_id: String,
    pub default_mode: String,
    /// Daemons (by name) allowed to carry this identity, from its scope.
    pub daemons: Vec<String>,
    pub egress: Vec<EgressRuleView>,
    /// Every Service and what this workload's connections to it get.
    pub destinations: Vec<Destination>,
    pub ingress: Vec<IngressRuleView>,
    /// Plain-language summary of what is not covered.
    pub notes: Vec<String>,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct EgressRuleView {
    pub index: i32,
    pub selectors: Json<Value>,
    /// The rule's own mode, if it sets one.
    pub mode: Option<String>,
    pub intercept: bool,
    /// Server identities accepted; empty means any identity of the trust domain.
    pub allowed_spiffe_ids: Vec<String>,
    /// Services this rule decides for (Services an earlier rule already matched are not listed).
    pub services: Vec<String>,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct Destination {
    /// `namespace/name` of the Service.
    pub service: String,
    pub addresses: Vec<String>,
    /// `SECURED` (an egress rule applies), `PASSTHROUGH` (no rule selects it: left untouched).
    pub decision: String,
    pub mode: Option<String>,
    pub rule_index: Option<i32>,
    pub allowed_spiffe_ids: Vec<String>,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct IngressRuleView {
    pub port: i32,
    pub mode: String,
    /// Client identities accepted; empty means any identity of the trust domain.
    pub allowed_spiffe_ids: Vec<String>,
    /// `PLAINTEXT_ALLOWED` for PERMISSIVE, `MTLS_REQUIRED` for MUTUAL, `TLS_REQUIRED` for SIMPLE.
    pub enforcement: String,
}

fn mode_of(c: &Option<ConnectionSettings>) -> Option<TlsMode> {
    c.as_ref().and_then(|c| c.tls.as_ref()).and_then(|t| t.mode)
}

fn matches(sel: &Selector, labels: &std::collections::BTreeMap<String, String>) -> bool {
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// `daemons`: (name, id, group) of every registered daemon.
pub fn effective(
    wi: &WorkloadIdentity,
    services: &[Service],
    daemons: &[(String, String, Option<String>)],
) -> EffectivePolicy {
    let spec = &wi.typed;
    let default = mode_of(&spec.connection);
    let scope_daemon = spec.scope.daemon.as_ref().map(|d| d.id.as_str());
    let scope_group = spec.scope.daemon_group.as_ref().map(|d| d.id.as_str());
    let in_scope: Vec<String> = daemons
        .iter()
        .filter(|(_, id, group)| {
            Some(id.as_str()) == scope_daemon || (group.is_some() && group.as_deref() == scope_group)
        })
        .map(|(name, _, _)| name.clone())
        .collect();
    let mut egress: Vec<EgressRuleView> = spec
        .egress
        .iter()
        .enumerate()
        .map(|(i, r)| EgressRuleView {
            index: i as i32,
            selectors: Json(serde_json::to_value(&r.selectors).unwrap_or(Value::Null)),
            mode: mode_of(&r.connection).map(tls_mode_name),
            intercept: r.connection.as_ref().and_then(|c| c.tls.as_ref()).and_then(|t| t.intercept).unwrap_or(false),
            allowed_spiffe_ids: r.allowed_spiffe_ids.iter().map(|s| s.to_string()).collect(),
            services: Vec::new(),
        })
        .collect();
    let mut destinations = Vec::new();
    for svc in services {
        let name = format!("{}/{}", svc.meta.namespace, svc.meta.name);
        let addresses = svc.addresses.iter().map(|a| format!("{}:{}", a.address, a.port)).collect();
        let labels = &svc.typed.labels;
        let rule = spec.egress.iter().position(|r| r.selectors.iter().any(|m| matches(m, labels)));
        match rule {
            Some(i) => {
                let r = &spec.egress[i];
                let mode = mode_of(&r.connection)
                    .or(svc.typed.tls.as_ref().and_then(|t| t.mode))
                    .or(default)
                    .unwrap_or(TlsMode::Mutual);
                egress[i].services.push(name.clone());
                destinations.push(Destination {
                    service: name,
                    addresses,
                    decision: "SECURED".into(),
                    mode: Some(tls_mode_name(mode)),
                    rule_index: Some(i as i32),
                    allowed_spiffe_ids: r.allowed_spiffe_ids.iter().map(|s| s.to_string()).collect(),
                });
            }
            None => destinations.push(Destination {
                service: name,
                addresses,
                decision: "PASSTHROUGH".into(),
                mode: None,
                rule_index: None,
                allowed_spiffe_ids: Vec::new(),
            }),
        }
    }
    let ingress = spec
        .ingress
        .iter()
        .map(|r| {
            let mode = mode_of(&r.connection).or(default).unwrap_or(TlsMode::Mutual);
            IngressRuleView {
                port: r.port as i32,
                mode: tls_mode_name(mode),
                allowed_spiffe_ids: r.allowed_spiffe_ids.iter().map(|s| s.to_string()).collect(),
                enforcement: match mode {
                    TlsMode::Mutual => "MTLS_REQUIRED",
                    TlsMode::Simple => "TLS_REQUIRED",
                    TlsMode::Permissive => "PLAINTEXT_ALLOWED",
                }
                .into(),
            }
        })
        .collect();
    let mut notes = vec!["connections to destinations no egress rule selects are passed through untouched".to_owned()];
    if in_scope.is_empty() {
        notes.push("no registered daemon is in this identity's scope: nothing enforces it yet".into());
    }
    for r in &egress {
        if r.services.is_empty() {
            notes.push(format!("egress rule {} selects no Service", r.index));
        }
    }
    EffectivePolicy {
        spiffe_id: wi.spiffe_id.clone(),
        default_mode: tls_mode_name(default.unwrap_or(TlsMode::Mutual)),
        daemons: in_scope,
        egress,
        destinations,
        ingress,
        notes,
    }
}
