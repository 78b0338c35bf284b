//! Per-kind validation. Every error names the JSON path of the field it is about, so the API
//! can answer 422 with `details.causes[].field` as Kubernetes does.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::auth::{JoinTokenSpec, VerifierMethod, VerifierSpec};
use super::core::*;
use super::{ObjectMeta, Resource, ValidationContext};
use crate::spiffe::SpiffeId;

/// A problem with one field of an object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}

type Errors = Vec<FieldError>;

/// Decodes into the typed form (first decode error with its path), checks metadata and the
/// spec rules, and re-encodes: the stored form is always the normalised typed form.
pub(super) fn typed<S, St>(
    object: &Value,
    ctx: &ValidationContext,
    check: fn(&S, &ValidationContext, &mut Errors),
) -> Result<Value, Errors>
where
    S: DeserializeOwned + Serialize,
    St: DeserializeOwned + Serialize,
{
    let decoded: Resource<S, St> = serde_path_to_error::deserialize(object).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        vec![FieldError::new(field, e.into_inner().to_string())]
    })?;
    let mut errors = Vec::new();
    metadata(&decoded.metadata, &mut errors);
    check(&decoded.spec, ctx, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    serde_json::to_value(&decoded).map_err(|e| vec![FieldError::new("", format!("cannot encode object: {e}"))])
}

fn metadata(m: &ObjectMeta, errors: &mut Errors) {
    if m.name.is_empty() && m.generate_name.is_none() {
        errors.push(FieldError::new("metadata.name", "is required"));
    } else if !m.name.is_empty() {
        if let Err(e) = dns_subdomain(&m.name) {
            errors.push(FieldError::new("metadata.name", e));
        }
    }
    if let Some(ns) = &m.namespace {
        if let Err(e) = dns_label(ns) {
            errors.push(FieldError::new("metadata.namespace", e));
        }
    }
    for (k, v) in &m.labels {
        if let Err(e) = label_key(k) {
            errors.push(FieldError::new(format!("metadata.labels.{k}"), e));
        }
        if let Err(e) = label_value(v) {
            errors.push(FieldError::new(format!("metadata.labels.{k}"), e));
        }
    }
    let annotation_bytes: usize = m.annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if annotation_bytes > 256 * 1024 {
        errors.push(FieldError::new("metadata.annotations", "total size must be at most 256 KiB"));
    }
    for k in m.annotations.keys() {
        if let Err(e) = label_key(k) {
            errors.push(FieldError::new(format!("metadata.annotations.{k}"), e));
        }
    }
}

pub(super) fn workload_identity(s: &WorkloadIdentitySpec, ctx: &ValidationContext, errors: &mut Errors) {
    workload_path("spec.workloadID", &s.workload_id, ctx, errors);
    scope("spec.scope", &s.scope, errors);
    selectors("spec.selectors", &s.selectors, false, errors);
    if let Some(c) = &s.connection {
        connection("spec.connection", c, errors);
    }
    for (i, rule) in s.egress.iter().enumerate() {
        let at = format!("spec.egress[{i}]");
        selectors(&format!("{at}.selectors"), &rule.selectors, true, errors);
        if let Some(c) = &rule.connection {
            connection(&format!("{at}.connection"), c, errors);
        }
        spiffe_ids(&format!("{at}.allowedSPIFFEIDs"), &rule.allowed_spiffe_ids, ctx, errors);
    }
    let mut ports = BTreeSet::new();
    for (i, rule) in s.ingress.iter().enumerate() {
        let at = format!("spec.ingress[{i}]");
        port(&format!("{at}.port"), rule.port, errors);
        if !ports.insert(rule.port) {
            errors.push(FieldError::new(
                format!("{at}.port"),
                format!("port {} has more than one ingress rule", rule.port),
            ));
        }
        if let Some(c) = &rule.connection {
            connection(&format!("{at}.connection"), c, errors);
            if c.tls.as_ref().and_then(|t| t.intercept).unwrap_or(false) {
                errors.push(FieldError::new(
                    format!("{at}.connection.tls.intercept"),
                    "intercept applies to egress rules only",
                ));
            }
        }
        spiffe_ids(&format!("{at}.allowedSPIFFEIDs"), &rule.allowed_spiffe_ids, ctx, errors);
    }
    if let Some(x509) = s.svid.as_ref().and_then(|s| s.x509.as_ref()) {
        for (i, name) in x509.dns_names.iter().enumerate() {
            if let Err(e) = dns_name(name) {
                errors.push(FieldError::new(format!("spec.svid.x509.dnsNames[{i}]"), e));
            }
        }
        if let Some(ttl) = &x509.ttl {
            if ttl.0.as_secs() < 60 {
                errors.push(FieldError::new("spec.svid.x509.ttl", "must be at least 1m"));
            }
        }
    }
}

pub(super) fn service(s: &ServiceSpec, _ctx: &ValidationContext, errors: &mut Errors) {
    for (k, v) in &s.labels {
        selector_entry(&format!("spec.labels.{k}"), k, v, errors);
    }
    if s.addresses.is_empty() {
        errors.push(FieldError::new("spec.addresses", "at least one address is required"));
    }
    for (i, a) in s.addresses.iter().enumerate() {
        let at = format!("spec.addresses[{i}]");
        if let Err(e) = address(&a.address) {
            errors.push(FieldError::new(format!("{at}.address"), e));
        }
        port(&format!("{at}.port"), a.port, errors);
    }
    if let Some(tls) = &s.tls {
        if let Some(name) = &tls.server_name {
            if let Err(e) = dns_name(name) {
                errors.push(FieldError::new("spec.tls.serverName", e));
            }
        }
        if let Some(pem) = &tls.ca_bundle {
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                errors.push(FieldError::new("spec.tls.caBundle", "must hold PEM certificates"));
            }
        }
    }
}

pub(super) fn daemon(s: &DaemonSpec, ctx: &ValidationContext, errors: &mut Errors) {
    if let Err(e) = id_segment(&s.id) {
        errors.push(FieldError::new("spec.id", e));
    }
    if let Some(id) = &s.spiffe_id {
        if !id.is_member_of(&ctx.trust_domain) {
            errors.push(FieldError::new("spec.spiffeID", format!("must be in trust domain {}", ctx.trust_domain)));
        }
    }
    if let Some(g) = &s.group {
        if let Err(e) = id_segment(g) {
            errors.push(FieldError::new("spec.group", e));
        }
    }
}

pub(super) fn credential_source(s: &CredentialSourceSpec, _ctx: &ValidationContext, errors: &mut Errors) {
    match (s.source_type, &s.token_endpoint) {
        (CredentialSourceType::Static, Some(_)) => {
            errors.push(FieldError::new("spec.tokenEndpoint", "is not used by a static source"));
        }
        (CredentialSourceType::OAuth2ClientCredentials | CredentialSourceType::TokenExchange, None) => {
            errors.push(FieldError::new("spec.tokenEndpoint", "is required for this type"));
        }
        (_, Some(ep)) => token_endpoint(s.source_type, ep, errors),
        _ => {}
    }
    match &s.secret_value {
        // Every type uses a secret (static: the credential; OAuth2: the client secret; token
        // exchange: the subject token), but it is write-only and may be set after the source
        // is created; until then daemons report the source as unavailable. Its value is never
        // echoed in errors.
        None => {}
        Some(v) if v.expose().is_empty() => errors.push(FieldError::new("spec.secretValue", "must not be empty")),
        Some(v) if v.expose().len() > MAX_SECRET_BYTES => {
            errors.push(FieldError::new("spec.secretValue", format!("must be at most {MAX_SECRET_BYTES} bytes")))
        }
        // It may end up in an HTTP header (static) or a form field: no control characters.
        Some(v) if v.expose().chars().any(char::is_control) => {
            errors.push(FieldError::new("spec.secretValue", "must not contain control characters"))
        }
        Some(_) => {}
    }
}

/// Largest accepted `spec.secretValue`.
pub const MAX_SECRET_BYTES: usize = 8192;

fn token_endpoint(ty: CredentialSourceType, ep: &TokenEndpoint, errors: &mut Errors) {
    if !ep.token_url.starts_with("https://") && !ep.token_url.starts_with("http://") {
        errors.push(FieldError::new("spec.tokenEndpoint.tokenURL", "must be an http(s) URL"));
    } else if ep.token_url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        errors.push(FieldError::new("spec.tokenEndpoint.tokenURL", "must not contain spaces or control characters"));
    }
    if ty == CredentialSourceType::OAuth2ClientCredentials && ep.client_id.as_deref().is_none_or(str::is_empty) {
        errors.push(FieldError::new("spec.tokenEndpoint.clientId", "is required for oAuth2ClientCredentials"));
    }
    if let Some(pem) = &ep.ca_bundle {
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            errors.push(FieldError::new("spec.tokenEndpoint.caBundle", "must hold PEM certificates"));
        }
    }
}

pub(super) fn credential_binding(s: &CredentialBindingSpec, ctx: &ValidationContext, errors: &mut Errors) {
    workload_path("spec.workloadID", &s.workload_id, ctx, errors);
    selectors("spec.serviceSelectors", &s.service_selectors, true, errors);
    if let Err(e) = dns_subdomain(&s.credential_source) {
        errors.push(FieldError::new("spec.credentialSource", e));
    }
    let header = &s.injection.header;
    if header.is_empty() || !header.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) {
        errors.push(FieldError::new("spec.injection.header", "must be an HTTP header name"));
    }
    if let Some(f) = &s.injection.format {
        if !f.contains("{{credential}}") || f.chars().any(|c| c.is_control()) {
            errors.push(FieldError::new(
                "spec.injection.format",
                "must contain {{credential}} and no control characters",
            ));
        }
    }
}

pub(super) fn verifier(s: &VerifierSpec, ctx: &ValidationContext, errors: &mut Errors) {
    if let Some(t) = &s.workload_id_template {
        match template_placeholders(t) {
            Ok((filled, names)) => {
                workload_path("spec.workloadIDTemplate", &filled, ctx, errors);
                if let Some(known) = s.method.claims() {
                    for n in names.iter().filter(|n| !known.contains(&n.as_str())) {
                        errors.push(FieldError::new(
                            "spec.workloadIDTemplate",
                            format!(
                                "method {} provides no claim {n:?} (it provides {})",
                                s.method.as_str(),
                                known.join(", ")
                            ),
                        ));
                    }
                }
            }
            Err(e) => errors.push(FieldError::new("spec.workloadIDTemplate", e)),
        }
    }
    if let Some(g) = &s.daemon_group {
        if let Err(e) = id_segment(g) {
            errors.push(FieldError::new("spec.daemonGroup", e));
        }
    }
    for (k, v) in &s.required_metadata {
        let at = format!("spec.requiredMetadata.{k}");
        if k.is_empty() || k.len() > 128 || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
            errors.push(FieldError::new(&at, "claim names are 1-128 letters, digits, '_', '.' or '-'"));
        } else if let Some(known) = s.method.claims() {
            if !known.contains(&k.as_str()) {
                errors.push(FieldError::new(&at, format!("method {} provides no claim {k:?}", s.method.as_str())));
            }
        }
        if v.is_empty() || v.len() > 1024 || v.chars().any(char::is_control) {
            errors.push(FieldError::new(&at, "must be 1-1024 characters without control characters"));
        }
    }
    let m = s.method;
    // Each method's settings block, required for it and refused for the others.
    let blocks: [(&str, bool, bool); 7] = [
        ("spec.joinToken", s.join_token.is_some(), m == VerifierMethod::JoinToken),
        ("spec.awsIID", s.aws_iid.is_some(), m == VerifierMethod::AwsIid),
        ("spec.gcpIIT", s.gcp_iit.is_some(), m == VerifierMethod::GcpIit),
        ("spec.k8sSAT", s.k8s_sat.is_some(), m == VerifierMethod::K8sSat),
        ("spec.jwt", s.jwt.is_some(), matches!(m, VerifierMethod::Jwt | VerifierMethod::GitHubActions)),
        ("spec.x509CertPOP", s.x509_cert_pop.is_some(), m == VerifierMethod::X509CertPop),
        ("spec.sshCertPOP", s.ssh_cert_pop.is_some(), m == VerifierMethod::SshCertPop),
    ];
    for (field, present, applies) in blocks {
        if present && !applies {
            errors.push(FieldError::new(field, format!("does not apply to method {}", m.as_str())));
        }
        if !present && applies && field != "spec.joinToken" {
            errors.push(FieldError::new(field, format!("is required for method {}", m.as_str())));
        }
    }
    if let Some(a) = &s.aws_iid {
        pem_certs("spec.awsIID.certificates", &a.certificates, errors);
        for (i, acct) in a.accounts.iter().enumerate() {
            if acct.len() != 12 || !acct.bytes().all(|b| b.is_ascii_digit()) {
                errors.push(FieldError::new(format!("spec.awsIID.accounts[{i}]"), "must be a 12-digit AWS account id"));
            }
        }
        for (i, r) in a.regions.iter().enumerate() {
            if let Err(e) = dns_label(r) {
                errors.push(FieldError::new(format!("spec.awsIID.regions[{i}]"), e));
            }
        }
    }
    if let Some(g) = &s.gcp_iit {
        jwks("spec.gcpIIT.jwks", &g.jwks, errors);
        non_empty("spec.gcpIIT.audience", &g.audience, errors);
        if let Some(iss) = &g.issuer {
            url("spec.gcpIIT.issuer", iss, errors);
        }
        for (i, p) in g.projects.iter().enumerate() {
            non_empty(&format!("spec.gcpIIT.projects[{i}]"), p, errors);
        }
    }
    if let Some(k) = &s.k8s_sat {
        if let Err(e) = dns_label(&k.cluster) {
            errors.push(FieldError::new("spec.k8sSAT.cluster", e));
        }
        url("spec.k8sSAT.issuer", &k.issuer, errors);
        jwks("spec.k8sSAT.jwks", &k.jwks, errors);
        audiences("spec.k8sSAT.audiences", &k.audiences, errors);
        for (i, sa) in k.service_accounts.iter().enumerate() {
            let ok = sa.split_once(':').is_some_and(|(ns, n)| dns_label(ns).is_ok() && dns_subdomain(n).is_ok());
            if !ok {
                errors.push(FieldError::new(format!("spec.k8sSAT.serviceAccounts[{i}]"), "must be namespace:name"));
            }
        }
    }
    if let Some(j) = &s.jwt {
        match (&j.issuer, m) {
            (Some(iss), _) => url("spec.jwt.issuer", iss, errors),
            (None, VerifierMethod::Jwt) => {
                errors.push(FieldError::new("spec.jwt.issuer", "is required for method JWT"))
            }
            _ => {}
        }
        jwks("spec.jwt.jwks", &j.jwks, errors);
        audiences("spec.jwt.audiences", &j.audiences, errors);
        for (i, c) in j.daemon_id_claims.iter().enumerate() {
            non_empty(&format!("spec.jwt.daemonIDClaims[{i}]"), c, errors);
        }
        if m == VerifierMethod::GitHubActions
            && !["repository", "repository_id", "repository_owner", "repository_owner_id"]
                .iter()
                .any(|k| s.required_metadata.contains_key(*k))
        {
            errors.push(FieldError::new(
                "spec.requiredMetadata",
                "GitHubActions needs repository, repository_id, repository_owner or repository_owner_id: \
                 otherwise any workflow on GitHub could attest",
            ));
        }
    }
    if let Some(x) = &s.x509_cert_pop {
        pem_certs("spec.x509CertPOP.caBundle", &x.ca_bundle, errors);
    }
    if let Some(x) = &s.ssh_cert_pop {
        if x.cert_authorities.is_empty() {
            errors.push(FieldError::new("spec.sshCertPOP.certAuthorities", "at least one CA key is required"));
        }
        for (i, k) in x.cert_authorities.iter().enumerate() {
            let mut parts = k.split_whitespace();
            let ok = matches!(
                (parts.next(), parts.next()),
                (Some("ssh-ed25519" | "ecdsa-sha2-nistp256" | "ssh-rsa"), Some(b)) if !b.is_empty()
            );
            if !ok {
                errors.push(FieldError::new(
                    format!("spec.sshCertPOP.certAuthorities[{i}]"),
                    "must be an ssh-ed25519, ecdsa-sha2-nistp256 or ssh-rsa public key line",
                ));
            }
        }
    }
}

fn non_empty(field: &str, v: &str, errors: &mut Errors) {
    if v.is_empty() || v.len() > 1024 || v.chars().any(char::is_control) {
        errors.push(FieldError::new(field, "must be 1-1024 characters without control characters"));
    }
}

fn url(field: &str, v: &str, errors: &mut Errors) {
    if !v.starts_with("https://") && !v.starts_with("http://") || v.len() > 1024 {
        errors.push(FieldError::new(field, "must be an http(s) URL"));
    }
}

fn audiences(field: &str, auds: &[String], errors: &mut Errors) {
    if auds.is_empty() {
        errors.push(FieldError::new(field, "at least one audience is required"));
    }
    for (i, a) in auds.iter().enumerate() {
        non_empty(&format!("{field}[{i}]"), a, errors);
    }
}

fn pem_certs(field: &str, pem: &str, errors: &mut Errors) {
    if !pem.contains("-----BEGIN CERTIFICATE-----") || pem.len() > 256 * 1024 {
        errors.push(FieldError::new(field, "must hold PEM certificates (at most 256 KiB)"));
    }
}

/// A JWKS document: a JSON object with a non-empty `keys` array of objects with `kty`.
fn jwks(field: &str, text: &str, errors: &mut Errors) {
    if text.len() > 256 * 1024 {
        errors.push(FieldError::new(field, "must be at most 256 KiB"));
        return;
    }
    let ok = serde_json::from_str::<Value>(text).ok().is_some_and(|v| {
        v["keys"].as_array().is_some_and(|ks| !ks.is_empty() && ks.iter().all(|k| k["kty"].is_string()))
    });
    if !ok {
        errors.push(FieldError::new(field, "must be a JWKS: a JSON object with a non-empty \"keys\" array"));
    }
}

pub(super) fn join_token(s: &JoinTokenSpec, _ctx: &ValidationContext, errors: &mut Errors) {
    let ok = s
        .token_hash
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    if !ok {
        errors.push(FieldError::new("spec.tokenHash", "must be \"sha256:\" followed by 64 lowercase hex digits"));
    }
    if time::OffsetDateTime::parse(&s.expires_at, &time::format_description::well_known::Rfc3339).is_err() {
        errors.push(FieldError::new("spec.expiresAt", "must be an RFC 3339 time"));
    }
    if let Some(v) = &s.verifier {
        if let Err(e) = dns_subdomain(v) {
            errors.push(FieldError::new("spec.verifier", e));
        }
    }
    if let Some(id) = &s.daemon_id {
        if let Err(e) = id_segment(id) {
            errors.push(FieldError::new("spec.daemonID", e));
        }
    }
}

// ---- field rules ----

fn workload_path(field: &str, path: &str, ctx: &ValidationContext, errors: &mut Errors) {
    if path.starts_with("spiffe://") {
        errors.push(FieldError::new(field, "must be a path under the trust domain, not a full SPIFFE ID"));
        return;
    }
    if let Err(e) = ctx.trust_domain.workload_id(path) {
        errors.push(FieldError::new(field, format!("not a valid SPIFFE path: {e}")));
    }
}

fn spiffe_ids(field: &str, ids: &[SpiffeId], ctx: &ValidationContext, errors: &mut Errors) {
    for (i, id) in ids.iter().enumerate() {
        if !id.is_member_of(&ctx.trust_domain) {
            errors.push(FieldError::new(
                format!("{field}[{i}]"),
                format!("{id} is not in trust domain {} (federation is not supported)", ctx.trust_domain),
            ));
        }
    }
}

fn scope(field: &str, s: &Scope, errors: &mut Errors) {
    match (&s.daemon, &s.daemon_group) {
        (Some(d), None) => {
            if let Err(e) = id_segment(&d.id) {
                errors.push(FieldError::new(format!("{field}.daemon.id"), e));
            }
        }
        (None, Some(g)) => {
            if let Err(e) = id_segment(&g.id) {
                errors.push(FieldError::new(format!("{field}.daemonGroup.id"), e));
            }
        }
        _ => errors.push(FieldError::new(field, "exactly one of daemon or daemonGroup is required")),
    }
}

fn connection(field: &str, c: &ConnectionSettings, errors: &mut Errors) {
    if let Some(tls) = &c.tls {
        if tls.intercept == Some(true) && tls.mode == Some(TlsMode::Permissive) {
            errors.push(FieldError::new(format!("{field}.tls.intercept"), "cannot be combined with PERMISSIVE"));
        }
    }
}

fn selectors(field: &str, sels: &[Selector], required: bool, errors: &mut Errors) {
    if required && sels.is_empty() {
        errors.push(FieldError::new(field, "at least one selector is required"));
    }
    for (i, sel) in sels.iter().enumerate() {
        if sel.is_empty() {
            errors.push(FieldError::new(format!("{field}[{i}]"), "a selector must have at least one label"));
        }
        for (k, v) in sel {
            selector_entry(&format!("{field}[{i}].{k}"), k, v, errors);
        }
    }
}

fn selector_entry(field: &str, k: &str, v: &str, errors: &mut Errors) {
    if k.is_empty() || k.len() > 316 || k.chars().any(|c| c.is_whitespace() || c.is_control()) {
        errors.push(FieldError::new(field, "label key must be 1-316 characters without whitespace"));
    }
    if v.len() > 4096 || v.chars().any(|c| c.is_control()) {
        errors.push(FieldError::new(field, "label value must be at most 4096 characters without control characters"));
    }
}

fn port(field: &str, p: u32, errors: &mut Errors) {
    if !(1..=65535).contains(&p) {
        errors.push(FieldError::new(field, format!("{p} is not a port (1-65535)")));
    }
}

fn address(a: &str) -> Result<(), String> {
    if a.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if let Some((ip, len)) = a.split_once('/') {
        let ip: IpAddr = ip.parse().map_err(|_| format!("{a:?} is not a CIDR"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        return match len.parse::<u8>() {
            Ok(l) if l <= max => Ok(()),
            _ => Err(format!("{a:?} has an invalid prefix length")),
        };
    }
    dns_name(a)
}

/// Replaces `{{claim}}` placeholders with a sample value so the template can be checked as a
/// SPIFFE path; also returns the claim names used.
fn template_placeholders(t: &str) -> Result<(String, Vec<String>), String> {
    let mut out = String::new();
    let mut names = Vec::new();
    let mut rest = t;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").ok_or("unclosed {{ placeholder")? + start;
        let name = rest[start + 2..end].trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') {
            return Err(format!("invalid placeholder {{{{{name}}}}}"));
        }
        names.push(name.to_owned());
        out.push('x');
        rest = &rest[end + 2..];
    }
    if rest.contains("}}") {
        return Err("unmatched }}".into());
    }
    out.push_str(rest);
    Ok((out, names))
}

/// A daemon id, group id or similar: one SPIFFE path segment.
fn id_segment(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 128 {
        return Err("must be 1-128 characters".into());
    }
    if s == "." || s == ".." || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
        return Err("may contain only letters, digits, '-', '.' and '_'".into());
    }
    Ok(())
}

pub(crate) fn dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err(format!("{s:?} must be 1-63 characters"));
    }
    let b = s.as_bytes();
    if !b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        || b[0] == b'-'
        || b[b.len() - 1] == b'-'
    {
        return Err(format!(
            "{s:?} must consist of lowercase letters, digits and '-', and start and end with a letter or digit"
        ));
    }
    Ok(())
}

pub(crate) fn dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err(format!("{s:?} must be 1-253 characters"));
    }
    for part in s.split('.') {
        dns_label(part).map_err(|_| {
            format!("{s:?} must consist of lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit")
        })?;
    }
    Ok(())
}

fn dns_name(s: &str) -> Result<(), String> {
    let lower = s.to_ascii_lowercase();
    let name = lower.strip_prefix("*.").unwrap_or(&lower);
    dns_subdomain(name).map_err(|_| format!("{s:?} is not a DNS name"))
}

fn label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        dns_subdomain(p).map_err(|e| format!("key prefix {e}"))?;
    }
    label_value(name)?;
    if name.is_empty() {
        return Err("key name must not be empty".into());
    }
    Ok(())
}

fn label_value(v: &str) -> Result<(), String> {
    if v.len() > 63 {
        return Err(format!("{v:?} must be at most 63 characters"));
    }
    if v.is_empty() {
        return Ok(());
    }
    let b = v.as_bytes();
    let ok_char = |c: &u8| c.is_ascii_alphanumeric() || b"-_.".contains(c);
    if !b.iter().all(ok_char) || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return Err(format!("{v:?} must be alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"));
    }
    Ok(())
}
