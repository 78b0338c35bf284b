//! Node-bound authorization of workload SVIDs.
//!
//! A daemon may obtain an SVID only for the `workloadID` of a WorkloadIdentity whose scope
//! names that daemon (`scope.daemon.id`) or its group (`scope.daemonGroup.id`, the group
//! recorded on its `Daemon` resource at attestation). The daemon is identified by the SPIFFE ID
//! of its mTLS client certificate, never by anything it claims in the request, so a
//! compromised node cannot mint another node's identities. Daemon IDs themselves
//! (`/riptides/daemon/...`) are never issued here: only attestation mints those.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use riptides_wire::resource::core::{DaemonSpec, Scope};
use riptides_wire::resource::{self, WorkloadIdentity, DEFAULT_NAMESPACE};
use riptides_wire::spiffe::{SpiffeId, TrustDomain};
use tracing::Instrument as _;

use super::daemon::{find_by_spiffe_id, DAEMON_PATH_PREFIX};
use super::{AttestError, SigningPool};
use crate::ca::Svid;
use crate::store::Store;

/// Where the authorizer looks things up.
#[derive(Debug, Clone)]
pub struct AuthorizerConfig {
    /// Namespace of `Daemon` resources (where attestation records them).
    pub daemon_namespace: String,
    /// Namespace of WorkloadIdentities that may grant IDs; `None` means every namespace
    /// (a `workloadID` is a trust-domain-wide path, not a namespaced name).
    pub workload_namespace: Option<String>,
}

impl Default for AuthorizerConfig {
    fn default() -> Self {
        AuthorizerConfig { daemon_namespace: DEFAULT_NAMESPACE.to_owned(), workload_namespace: None }
    }
}

/// What an authorized request may get.
#[derive(Debug)]
struct Grant {
    id: SpiffeId,
    /// `spec.svid.x509.ttl` of the granting WorkloadIdentity.
    ttl: Option<Duration>,
    /// `spec.svid.x509.dnsNames` of the granting WorkloadIdentity.
    dns_names: Vec<String>,
    /// `namespace/name` of the granting WorkloadIdentity, for logs.
    granted_by: String,
}

/// Decides and signs workload SVID requests from attested daemons.
pub struct Authorizer {
    store: Arc<dyn Store>,
    pool: Arc<SigningPool>,
    config: AuthorizerConfig,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").field("config", &self.config).field("pool", &self.pool).finish_non_exhaustive()
    }
}

impl Authorizer {
    pub fn new(store: Arc<dyn Store>, pool: Arc<SigningPool>, config: AuthorizerConfig) -> Self {
        Authorizer { store, pool, config }
    }

    pub fn pool(&self) -> &Arc<SigningPool> {
        &self.pool
    }

    /// The SPIFFE ID `daemon` may have issued for `workload_path` (a path under the trust
    /// domain, with or without its leading slash, or a full SPIFFE ID in the trust domain), or
    /// [`AttestError::Unauthorized`]. Refusals are logged at `warn`.
    pub async fn authorize_workload(&self, daemon: &SpiffeId, workload_path: &str) -> Result<SpiffeId, AttestError> {
        self.grant_logged(daemon, workload_path).await.map(|g| g.id)
    }

    /// Authorizes, then signs the CSR. Runs entirely under a [`SigningPool`] permit (including
    /// the store reads), so a burst queues instead of fanning out. The lifetime is `ttl`, capped
    /// by the WorkloadIdentity's `spec.svid.x509.ttl`, which is also the default; the CA caps
    /// it further.
    ///
    /// `spec.svid.x509.dnsNames` become DNS SANs of the SVID.
    pub async fn sign_workload(
        &self,
        daemon: &SpiffeId,
        workload_path: &str,
        csr_der: &[u8],
        ttl: Option<Duration>,
        now: SystemTime,
    ) -> Result<Svid, AttestError> {
        let permit = self.pool.acquire().await?;
        let grant = self.grant_logged(daemon, workload_path).await?;
        let ttl = match (ttl, grant.ttl) {
            (Some(asked), Some(policy)) => Some(asked.min(policy)),
            (asked, policy) => asked.or(policy),
        };
        let span = tracing::info_span!("sign_workload", %daemon, workload = %grant.id);
        let result = self
            .pool
            .sign_with_dns_names(permit, csr_der, grant.id.clone(), grant.dns_names.clone(), ttl, now)
            .instrument(span.clone())
            .await;
        let _enter = span.enter();
        match &result {
            Ok(svid) => tracing::info!(
                granted_by = %grant.granted_by,
                serial = %svid.serial_hex(),
                "issued workload SVID"
            ),
            Err(e) => tracing::warn!(code = e.code(), error = %e, "workload CSR refused"),
        }
        result
    }

    async fn grant_logged(&self, daemon: &SpiffeId, workload_path: &str) -> Result<Grant, AttestError> {
        let result = self.grant(daemon, workload_path).await;
        if let Err(e) = &result {
            tracing::warn!(
                %daemon,
                requested = workload_path,
                code = e.code(),
                error = %e,
                "workload ID refused"
            );
        }
        result
    }

    async fn grant(&self, daemon: &SpiffeId, workload_path: &str) -> Result<Grant, AttestError> {
        let td = self.pool.ca().trust_domain();
        if !daemon.is_member_of(td) {
            return Err(AttestError::Unauthorized(format!("{daemon} is not in trust domain {td}")));
        }
        let requested = requested_id(td, workload_path)?;
        if requested.path().starts_with(DAEMON_PATH_PREFIX) || &requested == daemon {
            return Err(AttestError::Unauthorized(format!(
                "{requested} is a daemon identity; only attestation issues those"
            )));
        }
        let node = find_by_spiffe_id(self.store.as_ref(), &self.config.daemon_namespace, daemon)
            .await?
            .ok_or_else(|| AttestError::Unauthorized(format!("{daemon} is not a registered daemon")))?;

        let rt = resource::by_name("workloadidentities")
            .ok_or_else(|| AttestError::Internal("WorkloadIdentity kind is not registered".into()))?;
        let (objects, _) = self.store.list(&rt.store_key(), self.config.workload_namespace.as_deref()).await?;
        for obj in &objects {
            let wi: WorkloadIdentity = match serde_json::from_slice(&obj.value) {
                Ok(wi) => wi,
                Err(e) => {
                    tracing::warn!(identity = %obj.key, error = %e, "skipping unreadable WorkloadIdentity");
                    continue;
                }
            };
            let Ok(id) = td.workload_id(&wi.spec.workload_id) else {
                continue;
            };
            if id == requested && in_scope(&wi.spec.scope, &node) {
                return Ok(Grant {
                    id,
                    ttl: wi
                        .spec
                        .svid
                        .as_ref()
                        .and_then(|s| s.x509.as_ref())
                        .and_then(|x| x.ttl.as_ref())
                        .map(|t| t.as_duration()),
                    dns_names: wi
                        .spec
                        .svid
                        .as_ref()
                        .and_then(|s| s.x509.as_ref())
                        .map(|x| x.dns_names.clone())
                        .unwrap_or_default(),
                    granted_by: format!("{}/{}", obj.key.namespace, obj.key.name),
                });
            }
        }
        Err(AttestError::Unauthorized(format!(
            "no WorkloadIdentity with workloadID {} is scoped to daemon {}{}",
            requested.path(),
            node.id,
            node.group.as_deref().map(|g| format!(" or its group {g}")).unwrap_or_default()
        )))
    }
}

/// Parses what the daemon asked for; a malformed ID is refused like an unauthorized one.
fn requested_id(td: &TrustDomain, workload_path: &str) -> Result<SpiffeId, AttestError> {
    let parsed = if workload_path.starts_with("spiffe://") {
        SpiffeId::parse(workload_path)
    } else {
        td.workload_id(workload_path)
    };
    let id =
        parsed.map_err(|e| AttestError::Unauthorized(format!("{workload_path:?} is not a valid workload ID: {e}")))?;
    if !id.is_member_of(td) || id.path().is_empty() {
        return Err(AttestError::Unauthorized(format!("{id} is not a workload ID in trust domain {td}")));
    }
    Ok(id)
}

fn in_scope(scope: &Scope, daemon: &DaemonSpec) -> bool {
    let by_id = scope.daemon.as_ref().is_some_and(|d| d.id == daemon.id);
    let by_group = match (&scope.daemon_group, &daemon.group) {
        (Some(want), Some(have)) => want.id == *have,
        _ => false,
    };
    by_id || by_group
}

#[cfg(test)]
mod tests {
    use super::*;
    use riptides_wire::resource::core::IdRef;

    fn daemon(id: &str, group: Option<&str>) -> DaemonSpec {
        DaemonSpec { id: id.into(), group: group.map(Into::into), ..Default::default() }
    }

    #[test]
    fn scope_rules() {
        let by_id = Scope { daemon: Some(IdRef { id: "a".into() }), daemon_group: None };
        let by_group = Scope { daemon: None, daemon_group: Some(IdRef { id: "g".into() }) };
        assert!(in_scope(&by_id, &daemon("a", None)));
        assert!(!in_scope(&by_id, &daemon("b", Some("a"))));
        assert!(in_scope(&by_group, &daemon("x", Some("g"))));
        assert!(!in_scope(&by_group, &daemon("g", None)));
        assert!(!in_scope(&Scope::default(), &daemon("a", Some("g"))));
    }

    #[test]
    fn requested_ids() {
        let td = TrustDomain::parse("example.org").unwrap();
        assert_eq!(requested_id(&td, "web").unwrap().as_str(), "spiffe://example.org/web");
        assert_eq!(requested_id(&td, "/ns/web").unwrap().as_str(), "spiffe://example.org/ns/web");
        assert!(requested_id(&td, "spiffe://example.org/web").is_ok());
        for bad in ["spiffe://other.org/web", "spiffe://example.org", "a//b", "", "../x"] {
            assert!(requested_id(&td, bad).is_err(), "{bad}");
        }
    }
}
