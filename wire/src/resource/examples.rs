//! Example resources, in the `example.com` trust domain: the connection-security seed's egress
//! and ingress rules exactly as written there, inside a complete WorkloadIdentity. Tests of
//! every crate and the README use these, so the seed's YAML is proven to be accepted.

/// A WorkloadIdentity carrying the seed's egress and ingress examples verbatim.
pub const SEED_WORKLOAD_IDENTITY: &str = r#"
apiVersion: core.riptides.io/v1alpha1
kind: WorkloadIdentity
metadata:
  name: frontend
  namespace: riptides-system
spec:
  workloadID: frontend
  scope:
    daemonGroup:
      id: web
  selectors:
    - process:name: frontend
      process:uid: "1000"
  connection:
    tls:
      mode: MUTUAL
  egress:
    - selectors:
        - tier: backend
      connection:
        tls:
          mode: MUTUAL
      allowedSPIFFEIDs:
        - "spiffe://example.com/orders-service"
        - "spiffe://example.com/inventory-service"
  ingress:
    - port: 8000
      allowedSPIFFEIDs:
        - "spiffe://example.com/frontend"
        - "spiffe://example.com/monitoring"
  svid:
    x509:
      dnsNames: [frontend.internal.example.com]
      ttl: 1h
"#;
