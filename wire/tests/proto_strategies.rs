//! proptest strategies and hand-built samples for the protocol messages, shared by the
//! `proto_*` test binaries through `#[path]` (as its own test target it has no tests).
#![allow(dead_code)]

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use riptides_wire::proto::messages::*;

fn text() -> impl Strategy<Value = String> {
    // Mostly short ASCII, sometimes arbitrary Unicode (multi-byte UTF-8 must round-trip too).
    prop_oneof![4 => "[a-z0-9./:_-]{0,24}", 1 => any::<String>()]
}

fn blob() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..300)
}

fn blobs() -> impl Strategy<Value = Vec<Vec<u8>>> {
    vec(blob(), 0..4)
}

fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    vec((text(), text()), 0..4)
}

pub fn bundle() -> impl Strategy<Value = TrustBundleMsg> {
    (text(), any::<u64>(), blobs()).prop_map(|(trust_domain, sequence, roots_der)| TrustBundleMsg {
        trust_domain,
        sequence,
        roots_der,
    })
}

pub fn host() -> impl Strategy<Value = HostInfo> {
    (text(), text(), text(), text(), text(), pairs()).prop_map(
        |(hostname, os, kernel, arch, daemon_version, labels)| HostInfo {
            hostname,
            os,
            kernel,
            arch,
            daemon_version,
            labels,
        },
    )
}

pub fn proto_error() -> impl Strategy<Value = ProtoError> {
    let code = prop_oneof![
        Just(ErrorCode::InvalidToken),
        Just(ErrorCode::TokenExpired),
        Just(ErrorCode::TokenUsed),
        Just(ErrorCode::RateLimited),
        Just(ErrorCode::Unauthorized),
        Just(ErrorCode::InvalidCsr),
        Just(ErrorCode::BadRequest),
        Just(ErrorCode::Unavailable),
        Just(ErrorCode::Internal),
    ];
    (code, text(), option::of(any::<u32>())).prop_map(|(code, message, retry_after_secs)| ProtoError {
        code,
        message,
        retry_after_secs,
    })
}

pub fn policy_item() -> impl Strategy<Value = PolicyItem> {
    prop_oneof![
        text().prop_map(PolicyItem::WorkloadIdentity),
        text().prop_map(PolicyItem::Service),
        bundle().prop_map(PolicyItem::TrustBundle),
    ]
}

pub fn policy_key() -> impl Strategy<Value = PolicyKey> {
    let kind =
        prop_oneof![Just(PolicyKind::WorkloadIdentity), Just(PolicyKind::Service), Just(PolicyKind::TrustBundle)];
    (kind, text(), text()).prop_map(|(kind, namespace, name)| PolicyKey { kind, namespace, name })
}

pub fn policy_update() -> impl Strategy<Value = PolicyUpdate> {
    prop_oneof![
        (any::<u64>(), text(), bundle(), vec(policy_item(), 0..4)).prop_map(
            |(revision, trust_domain, bundle, items)| PolicyUpdate::Snapshot {
                revision,
                document: PolicyDocument { trust_domain, bundle, items },
            }
        ),
        (any::<u64>(), vec(policy_item(), 0..4), vec(policy_key(), 0..4))
            .prop_map(|(revision, upserts, removals)| PolicyUpdate::Delta { revision, upserts, removals }),
    ]
}

pub fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (text(), blob(), host()).prop_map(|(token, csr_der, host)| Request::Attest(AttestRequest {
            token,
            csr_der,
            host
        })),
        blob().prop_map(|csr_der| Request::RenewDaemonSvid { csr_der }),
        (text(), blob(), option::of(any::<u32>())).prop_map(|(workload_id, csr_der, ttl_secs)| {
            Request::SignWorkload(WorkloadCsr { workload_id, csr_der, ttl_secs })
        }),
        option::of(any::<u64>()).prop_map(|resume_from| Request::WatchPolicy { resume_from }),
        (text(), text(), any::<bool>(), option::of(any::<bool>()), option::of(any::<u64>())).prop_map(
            |(version, dataplane, daemon_healthy, driver_healthy, policy_revision)| {
                Request::ReportStatus(DaemonStatusReport {
                    version,
                    dataplane,
                    daemon_healthy,
                    driver_healthy,
                    policy_revision,
                })
            }
        ),
        Just(Request::Ping),
    ]
}

pub fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (text(), text(), blobs(), bundle()).prop_map(|(daemon_id, spiffe_id, svid_chain_der, bundle)| {
            Response::Attested(AttestResponse { daemon_id, spiffe_id, svid_chain_der, bundle })
        }),
        (text(), blobs(), any::<u64>()).prop_map(|(spiffe_id, chain_der, not_after_unix)| {
            Response::Svid(SvidMsg { spiffe_id, chain_der, not_after_unix })
        }),
        policy_update().prop_map(Response::Policy),
        Just(Response::Pong),
        Just(Response::Ack),
        proto_error().prop_map(Response::Error),
    ]
}

pub fn tunnel_request() -> impl Strategy<Value = TunnelRequest> {
    prop_oneof![Just(TunnelRequest::ConnectionTable), Just(TunnelRequest::Health), Just(TunnelRequest::ConfigDump)]
}

pub fn connection() -> impl Strategy<Value = ConnectionEntry> {
    (
        text(),
        text(),
        option::of(text()),
        option::of(text()),
        text(),
        text(),
        any::<u64>(),
        any::<u64>(),
        option::of(text()),
        option::of(text()),
    )
        .prop_map(
            |(local, remote, workload_id, peer_id, mode, state, bytes_in, bytes_out, tls_version, key_exchange)| {
                ConnectionEntry {
                    local,
                    remote,
                    workload_id,
                    peer_id,
                    mode,
                    state,
                    bytes_in,
                    bytes_out,
                    tls_version,
                    key_exchange,
                }
            },
        )
}

pub fn tunnel_response() -> impl Strategy<Value = TunnelResponse> {
    prop_oneof![
        vec(connection(), 0..5).prop_map(TunnelResponse::ConnectionTable),
        (any::<bool>(), pairs()).prop_map(|(ready, details)| TunnelResponse::Health(HealthReport { ready, details })),
        text().prop_map(TunnelResponse::ConfigDump),
        proto_error().prop_map(TunnelResponse::Error),
    ]
}

/// A fixed trust bundle for hand-built samples.
pub fn sample_bundle() -> TrustBundleMsg {
    TrustBundleMsg { trust_domain: "example.org".into(), sequence: 3, roots_der: vec![vec![0x30, 0x82, 1, 2, 3]] }
}

/// One hand-built instance of every request variant.
pub fn sample_requests() -> Vec<Request> {
    vec![
        Request::Attest(AttestRequest {
            token: "abc123.s3cr3t".into(),
            csr_der: vec![0x30; 40],
            host: HostInfo {
                hostname: "node-1".into(),
                os: "linux".into(),
                kernel: "6.8.0".into(),
                arch: "x86_64".into(),
                daemon_version: "0.1.0".into(),
                labels: vec![("zone".into(), "eu-1a".into())],
            },
        }),
        Request::RenewDaemonSvid { csr_der: vec![1, 2, 3] },
        Request::SignWorkload(WorkloadCsr {
            workload_id: "/ns/default/sa/web".into(),
            csr_der: vec![9; 64],
            ttl_secs: Some(3600),
        }),
        Request::WatchPolicy { resume_from: Some(42) },
        Request::WatchPolicy { resume_from: None },
        Request::ReportStatus(DaemonStatusReport {
            version: "0.1.0".into(),
            dataplane: "none".into(),
            daemon_healthy: true,
            driver_healthy: None,
            policy_revision: Some(7),
        }),
        Request::Ping,
    ]
}

/// One hand-built instance of every response variant.
pub fn sample_responses() -> Vec<Response> {
    let wi = r#"{"apiVersion":"core.riptides.io/v1alpha1","kind":"WorkloadIdentity","metadata":{"name":"web","namespace":"default"},"spec":{"workloadID":"/web"}}"#;
    vec![
        Response::Attested(AttestResponse {
            daemon_id: "d-1".into(),
            spiffe_id: "spiffe://example.org/riptides/daemon/d-1".into(),
            svid_chain_der: vec![vec![0x30; 100], vec![0x31; 80]],
            bundle: sample_bundle(),
        }),
        Response::Svid(SvidMsg {
            spiffe_id: "spiffe://example.org/web".into(),
            chain_der: vec![vec![0x30; 120]],
            not_after_unix: 1_900_000_000,
        }),
        Response::Policy(PolicyUpdate::Snapshot {
            revision: 10,
            document: PolicyDocument {
                trust_domain: "example.org".into(),
                bundle: sample_bundle(),
                items: vec![PolicyItem::WorkloadIdentity(wi.into())],
            },
        }),
        Response::Policy(PolicyUpdate::Delta {
            revision: 11,
            upserts: vec![PolicyItem::Service("{}".into())],
            removals: vec![PolicyKey { kind: PolicyKind::Service, namespace: "default".into(), name: "db".into() }],
        }),
        Response::Pong,
        Response::Ack,
        Response::Error(ProtoError::new(ErrorCode::RateLimited, "slow down").with_retry_after(5)),
    ]
}

/// One hand-built instance of every tunnel response variant.
pub fn sample_tunnel_responses() -> Vec<TunnelResponse> {
    vec![
        TunnelResponse::ConnectionTable(vec![ConnectionEntry {
            local: "10.0.0.1:443".into(),
            remote: "10.0.0.2:51000".into(),
            workload_id: Some("spiffe://example.org/web".into()),
            peer_id: None,
            mode: "mtls".into(),
            state: "established".into(),
            bytes_in: 1234,
            bytes_out: 99,
            tls_version: Some("TLSv1.3".into()),
            key_exchange: Some("X25519MLKEM768".into()),
        }]),
        TunnelResponse::Health(HealthReport { ready: true, details: vec![("driver".into(), "ok".into())] }),
        TunnelResponse::ConfigDump("{}".into()),
        TunnelResponse::Error(ProtoError::new(ErrorCode::Internal, "boom")),
    ]
}
