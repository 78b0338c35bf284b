//! The policy document compiled into the lookups the dataplane makes per connection.
//!
//! A [`PolicyDocument`] carries resources as canonical JSON; decoding and indexing them on every
//! connection would put JSON parsing in the connect path, so [`Rules::compile`] does it once
//! per policy revision and the result is shared read-only (`Arc<Rules>`) by every connection.
//!
//! Documented defaults (the places where the policy says nothing):
//! - **Unknown process**: a process no WorkloadIdentity selects is not ours to protect;
//!   [`Rules::select_workload`] returns `None` and the caller leaves the connection untouched.
//! - **No matching Service or egress rule**: [`EgressDecision::Passthrough`], the connection
//!   is left exactly as the application made it (no TLS added, nothing refused). Riptides only
//!   secures what policy names; refusing unknown destinations would be a firewall, not this.
//! - **A rule without a TLS mode**: the rule's mode, else the Service's `tls.mode`, else the
//!   workload's `connection.tls.mode`, else MUTUAL (the strongest, fail closed).
//! - **Empty `allowedSPIFFEIDs`**: any ID of the own trust domain (checked by the handshake).
//! - **Selectors**: a list of label maps is OR'ed, keys inside one map are AND'ed, values are
//!   compared exactly. An empty list, or an empty map, selects nothing: a typo that removed
//!   every key must not turn into "select every process on the host".
//!
//! Compilation is strict: one malformed item fails the whole document, and the caller keeps
//! enforcing the previous [`Rules`]. Skipping the item instead would silently turn MUTUAL
//! connections into untouched plaintext (fail open). The control plane validates resources
//! before storing them, so this only happens on a version skew or a bug.

mod address;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use riptides_wire::proto::messages::{CredentialSet, PolicyDocument, PolicyItem, TrustBundleMsg};
use riptides_wire::resource::core::{ConnectionSettings, EgressRule, IngressRule, Selector, TlsMode};
use riptides_wire::resource::{CredentialBinding, CredentialSource, Service, WorkloadIdentity};
use riptides_wire::{SpiffeId, TrustDomain};
use rustls_pki_types::CertificateDer;

pub use address::AddressMatch;

use super::handshake::TrustBundles;

/// A process's labels: `process:name`, `process:binary:path`, `process:binary:hash`,
/// `process:uid`, `process:gid`, `process:cmdline`, `k8s:...`.
pub type ProcessLabels = BTreeMap<String, String>;

/// Why a policy document could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("policy trust domain {0:?} is not a valid trust domain")]
    TrustDomain(String),
    #[error("the trust bundle of {0} has no roots")]
    EmptyBundle(String),
    #[error("policy item {index} ({kind}) is not a valid resource: {reason}")]
    BadItem { index: usize, kind: &'static str, reason: String },
    #[error("WorkloadIdentity {name}: workloadID {workload_id:?} is not a valid SPIFFE path: {reason}")]
    WorkloadId { name: String, workload_id: String, reason: String },
    #[error("{kind} {name}: port {port} is not a TCP port")]
    Port { kind: &'static str, name: String, port: u32 },
    #[error("Service {name}: address {address:?} is neither an IP, a CIDR nor a DNS name")]
    Address { name: String, address: String },
    #[error("{kind} {name}: {reason}")]
    Credential { kind: &'static str, name: String, reason: String },
}

/// A CredentialBinding for one of this node's workloads: which destination Services' requests
/// get which source's credential, in which header.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub namespace: String,
    pub name: String,
    /// The workload whose requests carry the credential.
    pub workload: SpiffeId,
    /// Destination Services by label (OR of AND'ed maps).
    pub service_selectors: Vec<Selector>,
    pub source: crate::credentials::SourceKey,
    /// Header name, checked to be a valid HTTP header name.
    pub header: String,
    /// With `{{credential}}`; `{{credential}}` alone when the binding gives no format.
    pub format: String,
}

impl Binding {
    /// `namespace/name`, as `/connections` shows it.
    pub fn display_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A WorkloadIdentity this daemon may hand out, with its egress policy.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalWorkload {
    pub name: String,
    pub namespace: String,
    pub spiffe_id: SpiffeId,
    /// Which processes carry this identity (OR of AND'ed label maps).
    pub selectors: Vec<Selector>,
    /// `spec.connection.tls.mode`: the default for this workload's rules.
    pub default_mode: Option<TlsMode>,
    egress: Vec<EgressRule>,
    /// Ingress rules with their port already checked.
    ingress: Vec<(u16, IngressRule)>,
}

impl LocalWorkload {
    /// The number of keys of the most specific of this workload's selector maps that `labels`
    /// satisfies, or `None` if none does.
    fn match_specificity(&self, labels: &ProcessLabels) -> Option<usize> {
        self.selectors.iter().filter(|m| map_matches(m, labels)).map(|m| m.len()).max()
    }
}

/// What the daemon knows about a destination Service, for the handshake and the table.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceInfo {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub external: bool,
    /// `spec.tls.serverName`: the name to verify in SIMPLE mode (else the SNI or address).
    pub server_name: Option<String>,
    /// `spec.tls.caBundle` (PEM): the roots for SIMPLE mode.
    pub ca_bundle: Option<String>,
    pub mode: Option<TlsMode>,
}

#[derive(Debug, Clone)]
struct ServiceEntry {
    info: Arc<ServiceInfo>,
    addresses: Vec<(AddressMatch, u16)>,
}

/// What to do with an outbound connection of a selected workload.
#[derive(Debug, Clone, PartialEq)]
pub enum EgressDecision {
    /// Secure it: `mode` says how; `allowed` are the server IDs accepted (empty = any ID of
    /// the own trust domain); `intercept` asks for TLS intercept of the application's own TLS.
    Mtls { mode: TlsMode, allowed: Vec<SpiffeId>, service: Arc<ServiceInfo>, intercept: bool },
    /// No Service covers the destination, or none of the workload's egress rules selects it:
    /// leave the connection untouched (no TLS added, not refused). This is the default.
    Passthrough,
}

/// What to do with an inbound connection to a protected local port.
#[derive(Debug, Clone, PartialEq)]
pub struct IngressDecision {
    pub mode: TlsMode,
    /// Client IDs accepted (empty = any ID of the own trust domain).
    pub allowed: Vec<SpiffeId>,
    /// The workload whose rule covers the port (its SVID is presented).
    pub workload: Arc<LocalWorkload>,
}

/// The compiled policy. Cheap to query, immutable; rebuild on every policy revision.
/// An address a Service names, as the capture layer needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Exact(std::net::IpAddr),
    Network(std::net::IpAddr, u8),
}

#[derive(Debug, Clone)]
pub struct Rules {
    trust_domain: TrustDomain,
    bundles: TrustBundles,
    /// Sorted by (namespace, name), which is also the tie-break order.
    workloads: Vec<Arc<LocalWorkload>>,
    services: Vec<ServiceEntry>,
    ingress: BTreeMap<u16, IngressDecision>,
    warnings: Vec<String>,
    /// Sorted by (namespace, name), the tie-break order.
    bindings: Vec<Arc<Binding>>,
    credential_sources: Vec<crate::credentials::SourceConfig>,
}

fn map_matches(map: &Selector, labels: &BTreeMap<String, String>) -> bool {
    !map.is_empty() && map.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn mode_of(c: &Option<ConnectionSettings>) -> Option<TlsMode> {
    c.as_ref().and_then(|c| c.tls.as_ref()).and_then(|t| t.mode)
}

fn intercept_of(c: &Option<ConnectionSettings>) -> bool {
    c.as_ref().and_then(|c| c.tls.as_ref()).and_then(|t| t.intercept).unwrap_or(false)
}

fn port(kind: &'static str, name: &str, port: u32) -> Result<u16, CompileError> {
    u16::try_from(port).ok().filter(|p| *p != 0).ok_or_else(|| CompileError::Port { kind, name: name.to_owned(), port })
}

fn roots(msg: &TrustBundleMsg) -> Result<Vec<CertificateDer<'static>>, CompileError> {
    if msg.roots_der.is_empty() {
        return Err(CompileError::EmptyBundle(msg.trust_domain.clone()));
    }
    Ok(msg.roots_der.iter().map(|d| CertificateDer::from(d.clone())).collect())
}

impl Rules {
    /// Compiles a policy document. See the module docs for the defaults and why this is strict.
    pub fn compile(doc: &PolicyDocument) -> Result<Rules, CompileError> {
        let trust_domain =
            TrustDomain::parse(&doc.trust_domain).map_err(|_| CompileError::TrustDomain(doc.trust_domain.clone()))?;
        let mut bundles = TrustBundles::new(trust_domain.clone(), roots(&doc.bundle)?);
        let mut own_sequence = doc.bundle.sequence;
        let mut workloads = Vec::new();
        let mut services = Vec::new();
        let mut bindings = Vec::new();
        let mut credential_sources = Vec::new();
        for (index, item) in doc.items.iter().enumerate() {
            match item {
                PolicyItem::WorkloadIdentity(json) => {
                    let wi: WorkloadIdentity = serde_json::from_str(json).map_err(|e| CompileError::BadItem {
                        index,
                        kind: "WorkloadIdentity",
                        reason: e.to_string(),
                    })?;
                    workloads.push(compile_workload(&trust_domain, wi)?);
                }
                PolicyItem::Service(json) => {
                    let svc: Service = serde_json::from_str(json).map_err(|e| CompileError::BadItem {
                        index,
                        kind: "Service",
                        reason: e.to_string(),
                    })?;
                    services.push(compile_service(svc)?);
                }
                PolicyItem::TrustBundle(msg) => {
                    let td = TrustDomain::parse(&msg.trust_domain).map_err(|_| CompileError::BadItem {
                        index,
                        kind: "TrustBundle",
                        reason: format!("{:?} is not a valid trust domain", msg.trust_domain),
                    })?;
                    // The document's own bundle is authoritative unless an item is newer.
                    if td == trust_domain {
                        if msg.sequence <= own_sequence {
                            continue;
                        }
                        own_sequence = msg.sequence;
                    }
                    bundles.insert(td, roots(msg)?);
                }
                PolicyItem::Credentials(set) => {
                    let (b, s) = compile_credentials(&trust_domain, set)?;
                    bindings = b;
                    credential_sources = s;
                }
            }
        }
        workloads.sort_by(|a: &Arc<LocalWorkload>, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut warnings = Vec::new();
        let ingress = compile_ingress(&workloads, &mut warnings);
        bindings.sort_by(|a: &Arc<Binding>, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        for b in &bindings {
            if !credential_sources.iter().any(|s: &crate::credentials::SourceConfig| s.key() == b.source) {
                warnings.push(format!(
                    "CredentialBinding {}: source {} was not delivered; its requests are refused",
                    b.display_name(),
                    b.source
                ));
            }
        }
        Ok(Rules { trust_domain, bundles, workloads, services, ingress, warnings, bindings, credential_sources })
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The roots per trust domain (own and federated), for the handshake.
    pub fn bundles(&self) -> &TrustBundles {
        &self.bundles
    }

    /// Every workload of the document, sorted by namespace and name.
    pub fn workloads(&self) -> &[Arc<LocalWorkload>] {
        &self.workloads
    }

    /// Non-fatal oddities found while compiling (e.g. two workloads claiming one ingress port).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The workload a process with these labels carries, if any.
    ///
    /// When several identities match, the most specific wins: the one whose matching selector
    /// map has the most keys; remaining ties go to the first by (namespace, name). So adding a
    /// broad identity never steals processes from a narrower one, and the choice never depends
    /// on the order the control plane sent items in.
    pub fn select_workload(&self, labels: &ProcessLabels) -> Option<&LocalWorkload> {
        let mut best: Option<(usize, &Arc<LocalWorkload>)> = None;
        for w in &self.workloads {
            if let Some(n) = w.match_specificity(labels) {
                // Strictly greater: on a tie the earlier (namespace, name) stays.
                if best.is_none_or(|(b, _)| n > b) {
                    best = Some((n, w));
                }
            }
        }
        best.map(|(_, w)| w.as_ref())
    }

    /// The workload with this SPIFFE ID (its SVID is what the node presents for it).
    pub fn workload_by_id(&self, id: &SpiffeId) -> Option<&Arc<LocalWorkload>> {
        self.workloads.iter().find(|w| &w.spiffe_id == id)
    }

    /// What to do with `workload`'s connection to `dest`; `sni` is the server name of the
    /// application's own ClientHello when it speaks TLS (it is the only way DNS-name addresses
    /// can match).
    ///
    /// Services covering the destination are tried most specific address first (exact IP,
    /// then longest CIDR prefix, then DNS name; ties by namespace/name); for each, the
    /// workload's egress rules in their written order. The first rule selecting the Service's
    /// labels decides. Nothing matching is [`EgressDecision::Passthrough`].
    pub fn egress_decision(&self, workload: &LocalWorkload, dest: SocketAddr, sni: Option<&str>) -> EgressDecision {
        let mut candidates: Vec<(u32, &ServiceEntry)> = self
            .services
            .iter()
            .filter_map(|s| {
                s.addresses
                    .iter()
                    .filter(|(_, p)| *p == dest.port())
                    .filter_map(|(a, _)| a.matches(&dest, sni))
                    .max()
                    .map(|spec| (spec, s))
            })
            .collect();
        candidates.sort_by(|(sa, a), (sb, b)| {
            sb.cmp(sa).then_with(|| (&a.info.namespace, &a.info.name).cmp(&(&b.info.namespace, &b.info.name)))
        });
        for (_, svc) in candidates {
            for rule in &workload.egress {
                if rule.selectors.iter().any(|m| map_matches(m, &svc.info.labels)) {
                    let mode = mode_of(&rule.connection)
                        .or(svc.info.mode)
                        .or(workload.default_mode)
                        .unwrap_or(TlsMode::Mutual);
                    return EgressDecision::Mtls {
                        mode,
                        allowed: rule.allowed_spiffe_ids.clone(),
                        service: svc.info.clone(),
                        intercept: intercept_of(&rule.connection),
                    };
                }
            }
        }
        EgressDecision::Passthrough
    }

    /// The CredentialBinding that applies to `workload`'s requests to `service`: the first by
    /// (namespace, name) naming the workload and selecting the Service's labels.
    pub fn binding_for(&self, workload: &LocalWorkload, service: &ServiceInfo) -> Option<&Arc<Binding>> {
        self.bindings.iter().find(|b| {
            b.workload == workload.spiffe_id && b.service_selectors.iter().any(|m| map_matches(m, &service.labels))
        })
    }

    /// Every binding delivered, sorted by namespace and name.
    pub fn bindings(&self) -> &[Arc<Binding>] {
        &self.bindings
    }

    /// The CredentialSources delivered (secrets included): for the credential manager.
    pub fn credential_sources(&self) -> &[crate::credentials::SourceConfig] {
        &self.credential_sources
    }

    /// The ingress rule covering a local port, if any. Ports without a rule are not protected
    /// (their connections are not captured, or are left untouched if they are).
    pub fn ingress_decision(&self, port: u16) -> Option<&IngressDecision> {
        self.ingress.get(&port)
    }

    /// All protected local ports (what capture must redirect inbound).
    /// Every IP and network (with its port) a Service names, for the capture rules. DNS
    /// names are left out: nftables matches addresses, and SNI is only seen in userspace.
    pub fn service_endpoints(&self) -> Vec<(Endpoint, u16)> {
        let mut out = Vec::new();
        for svc in &self.services {
            for (a, port) in &svc.addresses {
                match a {
                    address::AddressMatch::Ip(ip) => out.push((Endpoint::Exact(*ip), *port)),
                    address::AddressMatch::Cidr { network, prefix } => {
                        out.push((Endpoint::Network(*network, *prefix), *port))
                    }
                    address::AddressMatch::Dns(_) => {}
                }
            }
        }
        out
    }

    pub fn ingress_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ingress.keys().copied()
    }
}

fn compile_workload(td: &TrustDomain, wi: WorkloadIdentity) -> Result<Arc<LocalWorkload>, CompileError> {
    let name = wi.metadata.name.clone();
    let spiffe_id = td.workload_id(&wi.spec.workload_id).map_err(|e| CompileError::WorkloadId {
        name: name.clone(),
        workload_id: wi.spec.workload_id.clone(),
        reason: e.to_string(),
    })?;
    let ingress = wi
        .spec
        .ingress
        .into_iter()
        .map(|rule| Ok((port("WorkloadIdentity", &name, rule.port)?, rule)))
        .collect::<Result<Vec<_>, CompileError>>()?;
    Ok(Arc::new(LocalWorkload {
        namespace: wi.metadata.namespace.clone().unwrap_or_default(),
        name,
        spiffe_id,
        selectors: wi.spec.selectors,
        default_mode: mode_of(&wi.spec.connection),
        egress: wi.spec.egress,
        ingress,
    }))
}

fn compile_service(svc: Service) -> Result<ServiceEntry, CompileError> {
    let name = svc.metadata.name.clone();
    let mut addresses = Vec::with_capacity(svc.spec.addresses.len());
    for a in &svc.spec.addresses {
        let m = AddressMatch::parse(&a.address)
            .ok_or_else(|| CompileError::Address { name: name.clone(), address: a.address.clone() })?;
        addresses.push((m, port("Service", &name, a.port)?));
    }
    let tls = svc.spec.tls.unwrap_or_default();
    let info = ServiceInfo {
        namespace: svc.metadata.namespace.clone().unwrap_or_default(),
        name,
        labels: svc.spec.labels,
        external: svc.spec.external,
        server_name: tls.server_name,
        ca_bundle: tls.ca_bundle,
        mode: tls.mode,
    };
    Ok(ServiceEntry { info: Arc::new(info), addresses })
}

/// Ingress rules indexed by port; workloads are already in (namespace, name) order, which is
/// the documented tie-break when two claim the same port.
fn compile_ingress(workloads: &[Arc<LocalWorkload>], warnings: &mut Vec<String>) -> BTreeMap<u16, IngressDecision> {
    let mut ingress: BTreeMap<u16, IngressDecision> = BTreeMap::new();
    for w in workloads {
        for (p, rule) in &w.ingress {
            if let Some(existing) = ingress.get(p) {
                warnings.push(format!(
                    "port {p}: ingress rule of {}/{} ignored, {}/{} already covers it",
                    w.namespace, w.name, existing.workload.namespace, existing.workload.name
                ));
                continue;
            }
            let mode = mode_of(&rule.connection).or(w.default_mode).unwrap_or(TlsMode::Mutual);
            ingress.insert(*p, IngressDecision { mode, allowed: rule.allowed_spiffe_ids.clone(), workload: w.clone() });
        }
    }
    ingress
}

type CompiledCredentials = (Vec<Arc<Binding>>, Vec<crate::credentials::SourceConfig>);

/// The credential item: bindings (strict, like every other item) and sources with their
/// secrets put back into the spec.
fn compile_credentials(td: &TrustDomain, set: &CredentialSet) -> Result<CompiledCredentials, CompileError> {
    let mut bindings = Vec::with_capacity(set.bindings.len());
    for json in &set.bindings {
        let b: CredentialBinding = serde_json::from_str(json).map_err(|e| CompileError::Credential {
            kind: "CredentialBinding",
            name: String::from("?"),
            reason: e.to_string(),
        })?;
        let name = b.metadata.name.clone();
        let err = |reason: String| CompileError::Credential { kind: "CredentialBinding", name: name.clone(), reason };
        let workload = td.workload_id(&b.spec.workload_id).map_err(|e| err(format!("workloadID: {e}")))?;
        hyper::header::HeaderName::from_bytes(b.spec.injection.header.as_bytes())
            .map_err(|_| err(format!("{:?} is not an HTTP header name", b.spec.injection.header)))?;
        let format = b.spec.injection.format.clone().unwrap_or_else(|| "{{credential}}".into());
        if !format.contains("{{credential}}") {
            return Err(err("injection.format has no {{credential}}".into()));
        }
        let namespace = b.metadata.namespace.clone().unwrap_or_default();
        bindings.push(Arc::new(Binding {
            source: crate::credentials::SourceKey {
                namespace: namespace.clone(),
                name: b.spec.credential_source.clone(),
            },
            namespace,
            name,
            workload,
            service_selectors: b.spec.service_selectors,
            header: b.spec.injection.header,
            format,
        }));
    }
    let mut sources = Vec::with_capacity(set.sources.len());
    for item in &set.sources {
        // The error of a source never quotes its JSON (it has no secret, but stay strict).
        let mut s: CredentialSource = serde_json::from_str(&item.resource).map_err(|e| CompileError::Credential {
            kind: "CredentialSource",
            name: String::from("?"),
            reason: format!("not a valid resource at line {} column {}", e.line(), e.column()),
        })?;
        s.spec.secret_value = item.secret.clone();
        sources.push(crate::credentials::SourceConfig {
            namespace: s.metadata.namespace.clone().unwrap_or_default(),
            name: s.metadata.name.clone(),
            spec: s.spec,
        });
    }
    Ok((bindings, sources))
}
