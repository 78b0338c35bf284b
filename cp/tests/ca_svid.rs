//! X509-SVID conformance (checked with x509-parser, rustls-webpki and openssl as an outside
//! reader) and every CSR refusal of `riptides_cp::ca`.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use riptides_cp::ca::{Ca, CaConfig, CsrError, IssueError, Svid};
use riptides_wire::spiffe::{SpiffeId, TrustDomain};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

const EPOCH: u64 = 1_750_000_000;

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(EPOCH + secs)
}

fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

fn id(path: &str) -> SpiffeId {
    td().workload_id(path).unwrap()
}

fn open_ca(dir: &std::path::Path, now: SystemTime) -> Ca {
    Ca::open(dir, CaConfig::new(td()), now).unwrap()
}

fn csr_params(uris: &[&str]) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.subject_alt_names = uris.iter().map(|u| SanType::URI((*u).try_into().unwrap())).collect();
    p
}

fn csr_der(params: &CertificateParams, key: &KeyPair) -> Vec<u8> {
    params.serialize_request(key).unwrap().der().to_vec()
}

/// Verifies `leaf` as a client certificate against `roots` with rustls-webpki.
fn verifies(leaf: &CertificateDer<'static>, roots: &[CertificateDer<'static>], at: SystemTime) -> bool {
    let mut store = rustls::RootCertStore::empty();
    store.add_parsable_certificates(roots.iter().cloned());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider).build().unwrap();
    let now = UnixTime::since_unix_epoch(at.duration_since(UNIX_EPOCH).unwrap());
    verifier.verify_client_cert(leaf, &[], now).is_ok()
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Every X509-SVID rule, checked on the parsed certificate.
fn assert_conformant(svid: &Svid, expect_id: &SpiffeId, extra_sans: usize) {
    let (rest, cert) = X509Certificate::from_der(&svid.leaf).unwrap();
    assert!(rest.is_empty());
    assert_eq!(cert.version().0, 2, "X.509 v3");

    // Subject is empty: nothing identity-bearing outside the URI SAN.
    assert_eq!(cert.subject().iter().count(), 0, "leaf subject must be empty");

    let san = cert.subject_alternative_name().unwrap().expect("SAN present");
    assert!(san.critical, "SAN must be critical when the subject is empty");
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| if let GeneralName::URI(u) = n { Some(*u) } else { None })
        .collect();
    assert_eq!(uris, vec![expect_id.as_str()], "exactly one URI SAN, the SPIFFE ID");
    assert_eq!(san.value.general_names.len(), 1 + extra_sans);

    let bc = cert.basic_constraints().unwrap().expect("basicConstraints present");
    assert!(bc.critical);
    assert!(!bc.value.ca, "leaf must have cA=false");

    let ku = cert.key_usage().unwrap().expect("keyUsage present");
    assert!(ku.critical, "keyUsage must be critical");
    assert!(ku.value.digital_signature());
    assert!(!ku.value.key_cert_sign() && !ku.value.crl_sign());
    assert!(!ku.value.key_encipherment() && !ku.value.key_agreement());
    assert!(!ku.value.non_repudiation() && !ku.value.data_encipherment());

    let eku = cert.extended_key_usage().unwrap().expect("EKU present");
    assert!(eku.value.server_auth && eku.value.client_auth);
    assert!(!eku.value.any && !eku.value.code_signing && eku.value.other.is_empty());

    let serial = cert.raw_serial();
    assert!(serial[0] & 0x80 == 0, "serial must be positive");
    assert!(serial.len() >= 9, "serial must carry at least 64 random bits");
    assert_eq!(serial, svid.serial.as_slice());

    assert_eq!(cert.validity().not_before.timestamp(), unix(svid.not_before));
    assert_eq!(cert.validity().not_after.timestamp(), unix(svid.not_after));
    assert_eq!(svid.chain, vec![svid.leaf.clone()]);
    assert_eq!(&svid.spiffe_id, expect_id);
}

#[test]
fn csr_svid_is_conformant_and_chains_to_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let ca = open_ca(dir.path(), t(0));
    let key = KeyPair::generate().unwrap();
    let web = id("ns/prod/sa/web");
    let der = csr_der(&csr_params(&[web.as_str()]), &key);

    let svid = ca.sign_csr(&der, &web, None, t(100)).unwrap();
    assert_conformant(&svid, &web, 0);

    // Backdated by the configured 10 s, default TTL 1 h.
    assert_eq!(svid.not_before, t(90));
    assert_eq!(svid.not_after, t(100 + 3600));

    // The certified key is the CSR's key.
    let (_, cert) = X509Certificate::from_der(&svid.leaf).unwrap();
    assert_eq!(cert.public_key().subject_public_key.data.as_ref(), key.public_key_raw());

    // Chains to the active root, which is the only root in the bundle.
    let bundle = ca.bundle();
    assert_eq!(bundle.roots(), vec![ca.active_root().unwrap()]);
    assert_eq!(svid.issuer, ca.active_root().unwrap());
    assert!(verifies(&svid.leaf, &bundle.roots(), t(200)));
    assert!(!verifies(&svid.leaf, &bundle.roots(), t(100 + 3601)), "expired");

    // A different CA does not vouch for it.
    let other_dir = tempfile::tempdir().unwrap();
    let other = open_ca(other_dir.path(), t(0));
    assert!(!verifies(&svid.leaf, &other.bundle().roots(), t(200)));
}

#[test]
fn serials_are_random_and_positive() {
    let dir = tempfile::tempdir().unwrap();
    let ca = open_ca(dir.path(), t(0));
    let key = KeyPair::generate().unwrap();
    let web = id("web");
    let der = csr_der(&csr_params(&[]), &key);
    let mut seen = HashSet::new();
    let mut top_bytes = HashSet::new();
    for _ in 0..64 {
        let svid = ca.sign_csr(&der, &web, None, t(10)).unwrap();
        assert!(svid.serial[0] & 0x80 == 0);
        assert!(svid.serial.len() >= 9);
        top_bytes.insert(svid.serial[0]);
        assert!(seen.insert(svid.serial.clone()), "serial repeated");
    }
    // 64 draws of a random 7-bit top byte essentially never collapse to a few values.
    assert!(top_bytes.len() > 16, "serial top bytes look non-random: {top_bytes:?}");
}

#[test]
fn ttl_defaults_caps_and_never_outlives_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = CaConfig::new(td());
    cfg.ca_lifetime = Duration::from_secs(60);
    cfg.default_svid_ttl = Duration::from_secs(3);
    cfg.max_svid_ttl = Duration::from_secs(5);
    cfg.publish_lead = Duration::from_secs(10);
    let ca = Ca::open(dir.path(), cfg, t(0)).unwrap();
    let key = KeyPair::generate().unwrap();
    let der = csr_der(&csr_params(&[]), &key);
    let web = id("web");

    let s = ca.sign_csr(&der, &web, None, t(10)).unwrap();
    assert_eq!(s.not_after, t(13), "default TTL");
    let s = ca.sign_csr(&der, &web, Some(Duration::from_secs(2)), t(10)).unwrap();
    assert_eq!(s.not_after, t(12), "requested TTL");
    let s = ca.sign_csr(&der, &web, Some(Duration::from_secs(3600)), t(10)).unwrap();
    assert_eq!(s.not_after, t(15), "capped at max TTL");
    assert!(matches!(ca.sign_csr(&der, &web, Some(Duration::ZERO), t(10)), Err(CsrError::Issue(IssueError::ZeroTtl))));

    // The CA's NotAfter is t(60): an SVID issued at t(58) stops there.
    let s = ca.sign_csr(&der, &web, None, t(58)).unwrap();
    assert_eq!(s.not_after, t(60));
    let (_, root) = X509Certificate::from_der(&s.issuer).unwrap();
    assert_eq!(root.validity().not_after.timestamp(), unix(t(60)));
    // NotBefore is backdated but never before the CA's own NotBefore (t(-10)).
    let s = ca.sign_csr(&der, &web, None, t(0)).unwrap();
    assert_eq!(s.not_before, UNIX_EPOCH + Duration::from_secs(EPOCH - 10));

    // Nothing can be issued once the CA has expired (and tick was never called).
    assert!(matches!(ca.sign_csr(&der, &web, None, t(60)), Err(CsrError::Issue(IssueError::CaExpired { .. }))));
}

#[test]
fn nothing_but_the_key_and_id_is_copied_from_the_csr() {
    let dir = tempfile::tempdir().unwrap();
    let ca = open_ca(dir.path(), t(0));
    let web = id("web");
    let key = KeyPair::generate().unwrap();
    let mut p = csr_params(&[web.as_str()]);
    p.distinguished_name.push(DnType::CommonName, "evil.example.com");
    p.distinguished_name.push(DnType::OrganizationName, "Evil Corp");
    p.subject_alt_names.push(SanType::DnsName("evil.example.com".try_into().unwrap()));
    p.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
    p.is_ca = IsCa::ExplicitNoCa;
    p.custom_extensions = vec![CustomExtension::from_oid_content(&[1, 2, 3, 4, 5], vec![0x05, 0x00])];
    let svid = ca.sign_csr(&csr_der(&p, &key), &web, None, t(1)).unwrap();
    assert_conformant(&svid, &web, 0);
    let (_, cert) = X509Certificate::from_der(&svid.leaf).unwrap();
    let oids: Vec<String> = cert.iter_extensions().map(|e| e.oid.to_id_string()).collect();
    assert!(!oids.contains(&"1.2.3.4.5".to_string()), "custom extension copied: {oids:?}");
}

#[test]
fn p384_and_ed25519_keys_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let ca = open_ca(dir.path(), t(0));
    let web = id("web");
    for alg in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
        let key = KeyPair::generate_for(alg).unwrap();
        let svid = ca.sign_csr(&csr_der(&csr_params(&[]), &key), &web, None, t(1)).unwrap();
        assert_conformant(&svid, &web, 0);
        let (_, cert) = X509Certificate::from_der(&svid.leaf).unwrap();
        assert_eq!(cert.public_key().subject_public_key.data.as_ref(), key.public_key_raw());
        assert!(verifies(&svid.leaf, &ca.bundle().roots(), t(2)));
    }
}

#[test]
fn csr_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let ca = open_ca(dir.path(), t(0));
    let web = id("web");
    let key = KeyPair::generate().unwrap();
    let sign = |der: &[u8], requested: &SpiffeId| ca.sign_csr(der, requested, None, t(1));

    // Garbage and truncated DER.
    assert!(matches!(sign(b"not a csr at all", &web), Err(CsrError::Malformed(_))));
    assert!(matches!(sign(&[], &web), Err(CsrError::Malformed(_))));
    let good = csr_der(&csr_params(&[web.as_str()]), &key);
    assert!(matches!(sign(&good[..good.len() / 2], &web), Err(CsrError::Malformed(_))));
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(sign(&trailing, &web), Err(CsrError::Malformed(_))));

    // A byte flipped inside the signature BIT STRING.
    let sig = {
        let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(&good).unwrap();
        req.signature_value.data.to_vec()
    };
    let at = good.windows(sig.len()).position(|w| w == sig.as_slice()).unwrap();
    let mut bad_sig = good.clone();
    bad_sig[at + sig.len() / 2] ^= 0x01;
    assert!(matches!(sign(&bad_sig, &web), Err(CsrError::BadSignature)), "{:?}", sign(&bad_sig, &web));
    // A byte flipped in the signed content (the SPIFFE ID itself) breaks the signature too.
    let uri_at = good.windows(3).position(|w| w == b"web").unwrap();
    let mut bad_body = good.clone();
    bad_body[uri_at] = b'x';
    assert!(matches!(sign(&bad_body, &id("xeb")), Err(CsrError::BadSignature)));

    // cA=true requested.
    let mut p = csr_params(&[web.as_str()]);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    assert!(matches!(sign(&csr_der(&p, &key), &web), Err(CsrError::CaRequested)));
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    assert!(matches!(sign(&csr_der(&p, &key), &web), Err(CsrError::CaRequested)));

    // Requested ID in another trust domain.
    let foreign = SpiffeId::parse("spiffe://other.org/web").unwrap();
    let der = csr_der(&csr_params(&[foreign.as_str()]), &key);
    assert!(matches!(sign(&der, &foreign), Err(CsrError::Issue(IssueError::ForeignTrustDomain { .. }))));
    // The trust domain's own ID is not a workload ID.
    assert!(matches!(
        sign(&csr_der(&csr_params(&[]), &key), &td().id()),
        Err(CsrError::Issue(IssueError::TrustDomainId(_)))
    ));

    // Invalid SPIFFE IDs in the CSR's URI SAN.
    for bad in [
        "spiffe://Example.org/web",
        "https://example.org/web",
        "spiffe://example.org/web/",
        "spiffe://example.org/a/../b",
        "spiffe://example.org/web?x=1",
    ] {
        let der = csr_der(&csr_params(&[bad]), &key);
        match sign(&der, &web) {
            Err(CsrError::InvalidSpiffeId { uri, .. }) => assert_eq!(uri, bad),
            other => panic!("{bad}: expected InvalidSpiffeId, got {other:?}"),
        }
    }

    // Several URI SANs.
    let der = csr_der(&csr_params(&[web.as_str(), id("db").as_str()]), &key);
    assert!(matches!(sign(&der, &web), Err(CsrError::MultipleUriSans(2))));

    // CSR URI SAN differs from the requested (authorized) ID.
    let der = csr_der(&csr_params(&[id("db").as_str()]), &key);
    match sign(&der, &web) {
        Err(CsrError::IdMismatch { csr, requested }) => {
            assert_eq!(csr, id("db"));
            assert_eq!(requested, web);
        }
        other => panic!("expected IdMismatch, got {other:?}"),
    }

    // Unsupported key types.
    let p521 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).unwrap();
    assert!(matches!(sign(&csr_der(&csr_params(&[]), &p521), &web), Err(CsrError::UnsupportedKey(_))));
    let rsa = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
    assert!(matches!(sign(&csr_der(&csr_params(&[]), &rsa), &web), Err(CsrError::UnsupportedKey(_))));

    // The good CSR still works, and without a URI SAN the requested ID is used.
    assert!(sign(&good, &web).is_ok());
    let svid = sign(&csr_der(&csr_params(&[]), &key), &web).unwrap();
    assert_eq!(svid.spiffe_id, web);

    // Errors say what went wrong.
    let msg = sign(&bad_sig, &web).unwrap_err().to_string();
    assert!(msg.contains("signature"), "{msg}");
}

#[test]
fn pem_csr_is_accepted_and_bad_pem_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = open_ca(dir.path(), t(0));
    let web = id("web");
    let key = KeyPair::generate().unwrap();
    let pem = csr_params(&[web.as_str()]).serialize_request(&key).unwrap().pem().unwrap();
    let svid = ca.sign_csr_pem(&pem, &web, None, t(1)).unwrap();
    assert_conformant(&svid, &web, 0);
    assert!(matches!(ca.sign_csr_pem("hello", &web, None, t(1)), Err(CsrError::BadPem(_))));
    let cert_pem = svid.leaf_pem();
    assert!(matches!(ca.sign_csr_pem(&cert_pem, &web, None, t(1)), Err(CsrError::BadPem(_))));
}

#[test]
fn issue_with_new_key_for_the_api_server_and_admin() {
    let dir = tempfile::tempdir().unwrap();
    let ca = open_ca(dir.path(), t(0));
    let cp = id("riptides/controlplane");
    let ips = [IpAddr::V4(Ipv4Addr::LOCALHOST), "::1".parse().unwrap()];
    let dns = vec!["localhost".to_string(), "cp.example.org".to_string()];
    let (svid, key) = ca.issue_with_new_key(&cp, &dns, &ips, None, t(5)).unwrap();
    assert_conformant(&svid, &cp, 4);
    let (_, cert) = X509Certificate::from_der(&svid.leaf).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let names = &san.value.general_names;
    assert!(names.contains(&GeneralName::DNSName("localhost")), "{names:?}");
    assert!(names.contains(&GeneralName::DNSName("cp.example.org")), "{names:?}");
    assert!(names.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])), "{names:?}");
    let v6_loopback: [u8; 16] = Ipv6Addr::LOCALHOST.octets();
    assert!(names.contains(&GeneralName::IPAddress(&v6_loopback)), "{names:?}");

    // The key matches the certificate and is redacted in Debug.
    let kp = KeyPair::try_from(key.pkcs8_der()).unwrap();
    assert_eq!(cert.public_key().subject_public_key.data.as_ref(), kp.public_key_raw());
    assert!(key.to_pem().starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert_eq!(format!("{key:?}"), "PrivateKey([redacted])");

    // A rustls server config accepts the pair, and a stock server-name check for 127.0.0.1
    // succeeds against the bundle.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(svid.chain.clone(), key.to_rustls())
        .unwrap();
    let roots = Arc::new(ca.bundle().root_store());
    let server_verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider).build().unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let now = UnixTime::since_unix_epoch(t(10).duration_since(UNIX_EPOCH).unwrap());
    server_verifier.verify_server_cert(&svid.leaf, &[], &name, &[], now).unwrap();

    // Long-lived admin client certificate: beyond max TTL, still capped by the CA lifetime.
    let admin = id("riptides/admin");
    let year = Duration::from_secs(10 * 365 * 24 * 3600);
    let (svid, _k) = ca.issue_with_new_key(&admin, &[], &[], Some(year), t(5)).unwrap();
    assert_conformant(&svid, &admin, 0);
    let (_, root) = X509Certificate::from_der(&svid.issuer).unwrap();
    assert_eq!(unix(svid.not_after), root.validity().not_after.timestamp());

    // Bad inputs are errors, not panics.
    assert!(matches!(
        ca.issue_with_new_key(&cp, &["bad name!".into()], &[], None, t(5)),
        Err(IssueError::BadDnsName { .. })
    ));
    assert!(matches!(
        ca.issue_with_new_key(&SpiffeId::parse("spiffe://other.org/x").unwrap(), &[], &[], None, t(5)),
        Err(IssueError::ForeignTrustDomain { .. })
    ));
}

fn openssl_text(der: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.der");
    std::fs::write(&path, der).unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-inform", "DER", "-in"])
        .arg(&path)
        .args(["-text", "-noout"])
        .output()
        .expect("openssl is installed");
    assert!(out.status.success(), "openssl failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The line after `header` in openssl's text output, trimmed.
fn line_after(text: &str, header: &str) -> String {
    let mut lines = text.lines();
    lines.by_ref().find(|l| l.trim() == header).unwrap_or_else(|| panic!("no {header:?} in:\n{text}"));
    lines.next().unwrap().trim().to_string()
}

#[test]
fn openssl_reads_the_svid_and_root_as_the_spec_says() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca = open_ca(dir.path(), now);
    let web = id("ns/prod/sa/web");
    let key = KeyPair::generate().unwrap();
    let svid = ca.sign_csr(&csr_der(&csr_params(&[web.as_str()]), &key), &web, None, now).unwrap();

    let text = openssl_text(&svid.leaf);
    assert_eq!(line_after(&text, "X509v3 Basic Constraints: critical"), "CA:FALSE");
    assert_eq!(line_after(&text, "X509v3 Key Usage: critical"), "Digital Signature");
    assert_eq!(
        line_after(&text, "X509v3 Extended Key Usage:"),
        "TLS Web Server Authentication, TLS Web Client Authentication"
    );
    assert_eq!(line_after(&text, "X509v3 Subject Alternative Name: critical"), format!("URI:{web}"));
    assert_eq!(text.matches("URI:").count(), 1);
    assert!(!text.contains("Certificate Sign"), "{text}");
    assert!(text.contains("Signature Algorithm: ecdsa-with-SHA256"), "{text}");

    let root = openssl_text(&ca.active_root().unwrap());
    assert_eq!(line_after(&root, "X509v3 Basic Constraints: critical"), "CA:TRUE");
    assert_eq!(line_after(&root, "X509v3 Key Usage: critical"), "Certificate Sign, CRL Sign");
    assert_eq!(line_after(&root, "X509v3 Subject Alternative Name:"), "URI:spiffe://example.org");
    assert!(root.contains("ASN1 OID: prime256v1"), "{root}");

    // openssl verifies the chain for both TLS purposes.
    let files = tempfile::tempdir().unwrap();
    let ca_file = files.path().join("bundle.pem");
    let leaf_file = files.path().join("leaf.pem");
    std::fs::write(&ca_file, ca.bundle().to_pem()).unwrap();
    std::fs::write(&leaf_file, svid.leaf_pem()).unwrap();
    for purpose in ["sslclient", "sslserver"] {
        let out = Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(&ca_file)
            .args(["-purpose", purpose])
            .arg(&leaf_file)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.trim_end().ends_with(": OK"),
            "openssl verify -purpose {purpose}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn ca_is_shared_across_threads() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = CaConfig::new(td());
    cfg.ca_lifetime = Duration::from_secs(60);
    cfg.default_svid_ttl = Duration::from_secs(5);
    cfg.max_svid_ttl = Duration::from_secs(5);
    cfg.publish_lead = Duration::from_secs(10);
    let ca = Arc::new(Ca::open(dir.path(), cfg, t(0)).unwrap());
    let key = KeyPair::generate().unwrap();
    let der = Arc::new(csr_der(&csr_params(&[]), &key));
    // One clock for everybody, only moving forward, as in production.
    let clock = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker = {
        let (ca, clock) = (ca.clone(), clock.clone());
        std::thread::spawn(move || {
            for s in 0..150 {
                clock.store(s, std::sync::atomic::Ordering::SeqCst);
                ca.tick(t(s)).unwrap();
            }
        })
    };
    let signers: Vec<_> = (0..2)
        .map(|_| {
            let (ca, der, clock) = (ca.clone(), der.clone(), clock.clone());
            std::thread::spawn(move || {
                for _ in 0..60 {
                    let now = t(clock.load(std::sync::atomic::Ordering::SeqCst));
                    match ca.sign_csr(&der, &id("web"), None, now) {
                        Ok(svid) => {
                            assert!(svid.not_before < svid.not_after);
                            let at = svid.not_before + Duration::from_secs(1);
                            assert!(verifies(&svid.leaf, std::slice::from_ref(&svid.issuer), at));
                        }
                        // A signer whose clock reading went stale across a rotation.
                        Err(CsrError::Issue(IssueError::CaNotYetValid { .. })) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    ticker.join().unwrap();
    for s in signers {
        s.join().unwrap();
    }
}

/// Stock kubectl (Go's TLS stack) verifies the serving certificate for `https://127.0.0.1`
/// against the PEM bundle, and presents the admin client certificate, which openssl
/// s_server verifies against the same bundle.
#[test]
fn kubectl_verifies_the_serving_certificate() {
    // The README's test command installs kubectl; its absence is a failure, not a skip.
    Command::new("kubectl").arg("version").arg("--client").output().expect("kubectl is installed (kubernetes-client)");
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca = open_ca(&dir.path().join("ca"), now);
    let (server, server_key) = ca
        .issue_with_new_key(
            &id("riptides/controlplane"),
            &["localhost".into()],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            None,
            now,
        )
        .unwrap();
    let (admin, admin_key) = ca
        .issue_with_new_key(&id("riptides/admin"), &[], &[], Some(Duration::from_secs(365 * 24 * 3600)), now)
        .unwrap();
    let p = |name: &str| dir.path().join(name);
    std::fs::write(p("bundle.pem"), ca.bundle().to_pem()).unwrap();
    std::fs::write(p("server.pem"), server.chain_pem()).unwrap();
    std::fs::write(p("server.key"), server_key.to_pem()).unwrap();
    std::fs::write(p("admin.pem"), admin.chain_pem()).unwrap();
    std::fs::write(p("admin.key"), admin_key.to_pem()).unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut s_server = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(port.to_string())
        .arg("-cert")
        .arg(p("server.pem"))
        .arg("-key")
        .arg(p("server.key"))
        .arg("-CAfile")
        .arg(p("bundle.pem"))
        .args(["-Verify", "1", "-verify_return_error"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut result = None;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            continue;
        }
        let out = Command::new("kubectl")
            .arg(format!("--server=https://127.0.0.1:{port}"))
            .arg(format!("--certificate-authority={}", p("bundle.pem").display()))
            .arg(format!("--client-certificate={}", p("admin.pem").display()))
            .arg(format!("--client-key={}", p("admin.key").display()))
            .args(["--kubeconfig=/dev/null", "--request-timeout=5s", "get", "--raw", "/"])
            .output()
            .unwrap();
        result = Some(out);
        break;
    }
    let _ = s_server.kill();
    let _ = s_server.wait();
    let out = result.expect("openssl s_server did not start");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("x509") && !stderr.contains("certificate"), "{stderr}");
    // s_server -www answers with its status page once the mutual TLS handshake succeeded.
    assert!(stdout.contains("s_server") || stdout.contains("Ciphers"), "stdout: {stdout}\nstderr: {stderr}");
}
