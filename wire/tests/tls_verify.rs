//! The SPIFFE verifiers and TLS helpers, called directly (no network).
#![cfg(feature = "transport")]

mod transport_support;

use rcgen::SanType;
use riptides_wire::tls::{
    self, format_pin, load_certs_pem, load_private_key_pem, parse_pin, peer_spiffe_id, CertificateDer, ExpectedId,
    PeerIdError, ServerTrust, SpiffeServerVerifier, TlsError,
};
use riptides_wire::{SpiffeId, TrustDomain};
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::{ServerName, UnixTime};
use time::OffsetDateTime;
use transport_support::*;

fn verify(trust: ServerTrust, expected: ExpectedId, chain: &[CertificateDer<'static>]) -> Result<(), String> {
    let v = SpiffeServerVerifier::new(trust, expected).map_err(|e| e.to_string())?;
    // Any DNS name: it must play no role.
    let name = ServerName::try_from("unrelated.invalid").unwrap();
    v.verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now()).map(|_| ()).map_err(|e| e.to_string())
}

fn year() -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (now - time::Duration::days(1), now + time::Duration::days(365))
}

#[test]
fn provider_is_aws_lc_rs_with_pqc_hybrid_first() {
    let p = tls::provider();
    assert!(!p.cipher_suites.is_empty());
    assert_eq!(format!("{:?}", p.kx_groups[0].name()), "X25519MLKEM768");
}

#[test]
fn bundle_and_pin_accept_a_good_chain_whatever_the_dns_name() {
    let ca = Ca::new("root");
    let (chain, _) = ca.svid(CP_ID);
    verify(ServerTrust::Bundle(vec![ca.cert.clone()]), exact(CP_ID), &chain).unwrap();
    verify(ServerTrust::Pin(ca.pin()), exact(CP_ID), &chain).unwrap();
}

#[test]
fn intermediate_chains_verify_with_either_ca_pinned() {
    let root = Ca::new("root");
    let inter = root.intermediate("intermediate");
    let (chain, _) = inter.svid(CP_ID); // leaf, intermediate, root
    assert_eq!(chain.len(), 3);
    verify(ServerTrust::Bundle(vec![root.cert.clone()]), exact(CP_ID), &chain).unwrap();
    verify(ServerTrust::Pin(root.pin()), exact(CP_ID), &chain).unwrap();
    verify(ServerTrust::Pin(inter.pin()), exact(CP_ID), &chain).unwrap();
}

#[test]
fn pinned_ca_presented_as_the_leaf_is_refused() {
    let ca = Ca::new("root");
    let err = verify(ServerTrust::Pin(ca.pin()), exact(CP_ID), std::slice::from_ref(&ca.cert)).unwrap_err();
    assert!(err.contains("pinned CA certificate itself"), "{err}");
}

#[test]
fn pinned_certificate_that_is_not_a_ca_is_refused() {
    let ca = Ca::new("root");
    let (server_chain, _) = ca.svid(CP_ID);
    let (other_leaf, _) = ca.svid("spiffe://example.com/other");
    let pin = tls::spki_sha256(&other_leaf[0]).unwrap();
    let chain = vec![server_chain[0].clone(), other_leaf[0].clone()];
    let err = verify(ServerTrust::Pin(pin), exact(CP_ID), &chain).unwrap_err();
    assert!(err.contains("not a CA"), "{err}");
}

#[test]
fn leaves_without_exactly_one_spiffe_uri_are_refused() {
    let ca = Ca::new("root");
    let (nb, na) = year();
    let dns = SanType::DnsName("cp.example.com".try_into().unwrap());
    let (chain, _) = ca.leaf_sans(vec![dns], nb, na);
    let err = verify(ServerTrust::Pin(ca.pin()), exact(CP_ID), &chain).unwrap_err();
    assert!(err.contains("no URI SAN"), "{err}");
    let (chain, _) = ca.leaf_uris(&["https://example.com/cp"]);
    let err = verify(ServerTrust::Pin(ca.pin()), exact(CP_ID), &chain).unwrap_err();
    assert!(err.contains("not a SPIFFE ID"), "{err}");
    let (chain, _) = ca.leaf_uris(&[CP_ID, CP_ID]);
    let err = verify(ServerTrust::Pin(ca.pin()), exact(CP_ID), &chain).unwrap_err();
    assert!(err.contains("2 URI SANs"), "{err}");
}

#[test]
fn not_yet_valid_leaf_is_refused() {
    let ca = Ca::new("root");
    let now = OffsetDateTime::now_utc();
    let (chain, _) = ca.leaf_full(&[CP_ID], now + time::Duration::days(1), now + time::Duration::days(2));
    let err = verify(ServerTrust::Bundle(vec![ca.cert.clone()]), exact(CP_ID), &chain).unwrap_err();
    assert!(err.contains("not valid"), "{err}");
}

#[test]
fn expected_id_matching() {
    let id = SpiffeId::parse(CP_ID).unwrap();
    assert!(exact(CP_ID).matches(&id));
    assert!(!exact(DAEMON_ID).matches(&id));
    assert!(ExpectedId::TrustDomain(TrustDomain::parse("example.com").unwrap()).matches(&id));
    assert!(!ExpectedId::TrustDomain(TrustDomain::parse("example.org").unwrap()).matches(&id));
    assert!(ExpectedId::AnyOf(vec![SpiffeId::parse(DAEMON_ID).unwrap(), id.clone()]).matches(&id));
    assert!(!ExpectedId::AnyOf(vec![]).matches(&id));
}

#[test]
fn peer_spiffe_id_reports_each_problem() {
    let ca = Ca::new("root");
    assert_eq!(peer_spiffe_id(&[]), Err(PeerIdError::NoCertificate));
    assert!(matches!(peer_spiffe_id(&[CertificateDer::from(vec![1u8, 2, 3])]), Err(PeerIdError::BadCertificate(_))));
    assert_eq!(peer_spiffe_id(std::slice::from_ref(&ca.cert)), Err(PeerIdError::NoUriSan));
    let (chain, _) = ca.leaf_uris(&[DAEMON_ID, CP_ID]);
    assert_eq!(peer_spiffe_id(&chain), Err(PeerIdError::MultipleUriSans(2)));
    let (chain, _) = ca.leaf_uris(&["spiffe://Example.com/x"]);
    assert!(matches!(peer_spiffe_id(&chain), Err(PeerIdError::NotSpiffe(_))));
    let (chain, _) = ca.svid(DAEMON_ID);
    assert_eq!(peer_spiffe_id(&chain).unwrap().as_str(), DAEMON_ID);
}

#[test]
fn pins_format_and_parse() {
    let ca = Ca::new("root");
    let pin = ca.pin();
    let text = format_pin(&pin);
    assert!(text.starts_with("sha256:") && text.len() == 71);
    assert_eq!(parse_pin(&format!("  {text}\n")).unwrap(), pin);
    // The pin is of the key, so it survives re-issuing the CA certificate with the same key.
    assert_eq!(tls::spki_sha256(&ca.cert).unwrap(), pin);
    assert!(parse_pin("sha1:abcd").is_err());
}

#[test]
fn configs_refuse_an_empty_bundle_and_build_otherwise() {
    let ca = Ca::new("root");
    let err = tls::client_config(ServerTrust::Bundle(vec![]), exact(CP_ID), None, &[ALPN]).unwrap_err();
    assert!(matches!(err, TlsError::EmptyBundle));
    let err =
        tls::client_config(ServerTrust::Bundle(vec![CertificateDer::from(vec![0u8; 10])]), exact(CP_ID), None, &[ALPN])
            .unwrap_err();
    assert!(matches!(err, TlsError::BadRoot { index: 0, .. }), "{err}");
    let c = tls::client_config(ServerTrust::Pin(ca.pin()), exact(CP_ID), Some(ca.svid(DAEMON_ID)), &[ALPN]).unwrap();
    assert_eq!(c.alpn_protocols, vec![ALPN.to_vec()]);
    let (chain, key) = ca.svid(CP_ID);
    let s = tls::server_config(chain, key, vec![ca.cert.clone()], &[ALPN]).unwrap();
    assert_eq!(s.send_tls13_tickets, 0);
    // A key that does not match the certificate is refused up front.
    let (chain, _) = ca.svid(CP_ID);
    let (_, other_key) = ca.svid(CP_ID);
    assert!(tls::server_config(chain, other_key, vec![], &[ALPN]).is_err());
}

#[test]
fn pem_loaders() {
    let ca = Ca::new("root");
    let certs = load_certs_pem(ca.pem.as_bytes()).unwrap();
    assert_eq!(certs, vec![ca.cert.clone()]);
    assert!(matches!(load_certs_pem(b"not pem"), Err(TlsError::NoCertificates)));
    assert!(matches!(load_private_key_pem(ca.pem.as_bytes()), Err(TlsError::NoPrivateKey)));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    assert!(load_private_key_pem(key.serialize_pem().as_bytes()).is_ok());
    let missing = std::path::Path::new("/nonexistent/riptides/ca.pem");
    assert!(matches!(tls::load_certs_file(missing), Err(TlsError::Read { .. })));
}
