//! The daemon's attestation plugins against a fake instance metadata service on loopback:
//! IMDSv2 with its session token, the IMDSv1 fallback, the GCP metadata header and query,
//! files for tokens, certificates and keys, and clear errors when a source is missing.

#[path = "../../cp/tests/attest_support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use riptides_node::attest::{collect, AttestationConfig, Method};
use riptides_wire::proto::messages::ProofMsg;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A fake metadata server on 127.0.0.1: answers from `route(method, path, headers)`; records
/// the requests.
async fn fake_metadata(
    route: impl Fn(&str, &str, &str) -> (u16, String) + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (route, log) = (Arc::new(route), seen.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            let (route, log) = (route.clone(), log.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let mut first = head.lines().next().unwrap_or_default().split_whitespace();
                let (method, path) =
                    (first.next().unwrap_or_default().to_owned(), first.next().unwrap_or_default().to_owned());
                log.lock().unwrap().push(format!("{method} {path}"));
                let (code, body) = route(&method, &path, &head);
                let resp = format!("HTTP/1.0 {code} X\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

fn cfg(method: Method, url: &str) -> AttestationConfig {
    AttestationConfig {
        method,
        metadata_url: url.to_owned(),
        metadata_timeout: Duration::from_secs(5),
        ..AttestationConfig::default()
    }
}

#[tokio::test]
async fn aws_imdsv2_then_v1_fallback() {
    let (url, seen) = fake_metadata(|m, p, head| match (m, p) {
        ("PUT", "/latest/api/token") if head.contains("X-aws-ec2-metadata-token-ttl-seconds: 60") => {
            (200, "tok".into())
        }
        ("GET", _) if !head.contains("X-aws-ec2-metadata-token: tok") => (401, String::new()),
        ("GET", "/latest/dynamic/instance-identity/document") => (200, "{\"instanceId\": \"i-1\"}".into()),
        ("GET", "/latest/dynamic/instance-identity/signature") => (200, "c2ln\nbmF0dXJl\n".into()),
        _ => (404, String::new()),
    })
    .await;
    let c = collect(&cfg(Method::Aws, &url)).await.unwrap();
    match c.proof {
        ProofMsg::AwsIid { document, signature } => {
            assert_eq!(document, "{\"instanceId\": \"i-1\"}");
            assert_eq!(signature, "c2ln\nbmF0dXJl");
        }
        other => panic!("{other:?}"),
    }
    assert!(c.signer.is_none());
    assert_eq!(seen.lock().unwrap()[0], "PUT /latest/api/token");

    // An IMDS without session tokens (v1 only).
    let (v1, _) = fake_metadata(|m, p, _| match (m, p) {
        ("GET", "/latest/dynamic/instance-identity/document") => (200, "doc".into()),
        ("GET", "/latest/dynamic/instance-identity/signature") => (200, "sig".into()),
        _ => (405, String::new()),
    })
    .await;
    assert!(matches!(collect(&cfg(Method::Aws, &v1)).await.unwrap().proof, ProofMsg::AwsIid { .. }));

    // Nothing listening: a clear, retryable error naming the source.
    let e = collect(&cfg(Method::Aws, "http://127.0.0.1:1")).await.err().unwrap();
    assert!(format!("{e:#}").contains("AWS instance metadata"), "{e:#}");
}

#[tokio::test]
async fn gcp_identity_token_with_audience_and_header() {
    let (url, seen) = fake_metadata(|_, p, head| {
        if head.contains("Metadata-Flavor: Google")
            && p.contains("audience=https%3A%2F%2Fcp.example")
            && p.contains("format=full")
        {
            (200, "eyJ.token.sig\n".into())
        } else {
            (403, String::new())
        }
    })
    .await;
    let mut c = cfg(Method::Gcp, &url);
    c.gcp_audience = Some("https://cp.example".into());
    let got = collect(&c).await.unwrap();
    assert_eq!(got.proof, ProofMsg::GcpIit("eyJ.token.sig".into()));
    assert!(seen.lock().unwrap()[0].starts_with("GET /computeMetadata/v1/instance/service-accounts/default/identity?"));
    c.gcp_audience = Some("other".into());
    let e = collect(&c).await.err().unwrap();
    assert!(format!("{e:#}").contains("HTTP 403"), "{e:#}");
}

#[tokio::test]
async fn files_for_tokens_certificates_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "a.b.c\n").unwrap();
    let mut c = cfg(Method::K8s, "http://unused");
    c.token_file = Some(token.clone());
    assert_eq!(collect(&c).await.unwrap().proof, ProofMsg::K8sSat("a.b.c".into()));
    c.method = Method::Jwt;
    assert_eq!(collect(&c).await.unwrap().proof, ProofMsg::Jwt("a.b.c".into()));
    c.token_file = Some(dir.path().join("missing"));
    assert!(format!("{:#}", collect(&c).await.err().unwrap()).contains("missing"));
    std::fs::write(dir.path().join("huge"), vec![b'a'; 100_000]).unwrap();
    c.token_file = Some(dir.path().join("huge"));
    assert!(format!("{:#}", collect(&c).await.err().unwrap()).contains("larger than"));

    // X.509: the chain and a key that signs what the CA side verifies.
    let ca = support::X509Ca::new("ca");
    let leaf = ca.leaf("n1");
    std::fs::write(dir.path().join("c.pem"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.path().join("k.pem"), &leaf.key_pem).unwrap();
    let mut c = cfg(Method::X509Pop, "http://unused");
    c.cert_file = Some(dir.path().join("c.pem"));
    c.key_file = Some(dir.path().join("k.pem"));
    let got = collect(&c).await.unwrap();
    assert!(matches!(&got.proof, ProofMsg::X509Pop { chain_der } if chain_der.len() == 1));
    let sig = got.signer.unwrap().sign(b"payload").unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf.chain_der[0]).unwrap();
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
        &cert.public_key().subject_public_key.data,
    )
    .verify(b"payload", &sig)
    .unwrap();

    // SSH: the OpenSSH host key signs an SSH signature blob the CA side verifies.
    let ssh = support::SshCa::new();
    let now = support::now_unix();
    let host = ssh.host(&["h"], now - 10, now + 10, 2);
    std::fs::write(dir.path().join("cert.pub"), &host.cert_line).unwrap();
    std::fs::write(dir.path().join("key"), host.private_key_file()).unwrap();
    let mut c = cfg(Method::SshPop, "http://unused");
    c.cert_file = Some(dir.path().join("cert.pub"));
    c.key_file = Some(dir.path().join("key"));
    let got = collect(&c).await.unwrap();
    assert_eq!(got.proof, ProofMsg::SshPop { certificate: host.cert_line.clone() });
    let blob = got.signer.unwrap().sign(b"challenge").unwrap();
    assert_eq!(blob, host.sign(b"challenge"), "Ed25519 signatures are deterministic");
    std::fs::write(
        dir.path().join("key"),
        "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    )
    .unwrap();
    assert!(collect(&c).await.is_err());
}
