//! Persistence, trust bundle and rotation of `riptides_cp::ca`, driven by a test clock.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rcgen::{CertificateParams, KeyPair};
use riptides_cp::ca::{Ca, CaConfig, CaError, GenerationState, StoreError, TickOutcome, TrustBundle, KEY_FILE_MODE};
use riptides_wire::spiffe::{SpiffeId, TrustDomain};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use x509_parser::prelude::{FromDer, X509Certificate};

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

/// CA lifetime 60 s, SVID TTL 5 s, prepare at half life, publish 10 s before signing.
fn short_clock() -> CaConfig {
    let mut cfg = CaConfig::new(td());
    cfg.ca_lifetime = Duration::from_secs(60);
    cfg.default_svid_ttl = Duration::from_secs(5);
    cfg.max_svid_ttl = Duration::from_secs(5);
    cfg.backdate = Duration::from_secs(2);
    cfg.prepare_at = 0.5;
    cfg.publish_lead = Duration::from_secs(10);
    cfg.refresh_hint = Duration::from_secs(1);
    cfg
}

fn csr() -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    CertificateParams::default().serialize_request(&key).unwrap().der().to_vec()
}

fn verifies(leaf: &CertificateDer<'static>, roots: &[CertificateDer<'static>], at: SystemTime) -> bool {
    let mut store = rustls::RootCertStore::empty();
    store.add_parsable_certificates(roots.iter().cloned());
    if store.is_empty() {
        return false;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider).build().unwrap();
    let now = UnixTime::since_unix_epoch(at.duration_since(UNIX_EPOCH).unwrap());
    verifier.verify_client_cert(leaf, &[], now).is_ok()
}

fn states(ca: &Ca) -> Vec<(u64, GenerationState)> {
    ca.generations().iter().map(|g| (g.id, g.state)).collect()
}

#[test]
fn full_rotation_on_a_short_clock() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::open(dir.path(), short_clock(), t(0)).unwrap();
    let der = csr();
    let web = id("web");
    let sign = |s: u64| ca.sign_csr(&der, &web, None, t(s)).unwrap();

    let root_a = ca.active_root().unwrap();
    let b0 = ca.bundle();
    assert_eq!(b0.roots(), vec![root_a.clone()]);
    assert_eq!(b0.sequence(), 1);
    assert_eq!(states(&ca), vec![(1, GenerationState::Active)]);

    // Before half life nothing happens.
    for s in [0, 10, 20, 29] {
        assert!(ca.tick(t(s)).unwrap().is_empty(), "tick at {s}");
        let svid = sign(s);
        assert_eq!(svid.issuer, root_a);
        assert!(verifies(&svid.leaf, &ca.bundle().roots(), t(s)));
    }

    // Half life: B is prepared and published, but A keeps signing.
    let out = ca.tick(t(30)).unwrap();
    assert_eq!(out, TickOutcome { prepared: Some(2), ..Default::default() });
    let gens = ca.generations();
    let root_b = gens.iter().find(|g| g.id == 2).unwrap().certificate.clone();
    let b1 = ca.bundle();
    assert_eq!(b1.roots(), vec![root_a.clone(), root_b.clone()], "B published before it signs");
    assert_eq!(b1.sequence(), 2, "sequence grows when a root is added");
    assert_eq!(states(&ca), vec![(1, GenerationState::Active), (2, GenerationState::Prepared)]);
    let by_a = sign(31);
    assert_eq!(by_a.issuer, root_a);
    assert!(verifies(&by_a.leaf, std::slice::from_ref(&root_a), t(32)));
    assert!(!verifies(&by_a.leaf, std::slice::from_ref(&root_b), t(32)));

    // Not yet published for publish_lead: tick waits and explicit activation is refused.
    assert!(ca.tick(t(35)).unwrap().is_empty());
    match ca.activate_prepared(t(35), false) {
        Err(CaError::NotPublishedLongEnough { generation: 2, published_for, required }) => {
            assert_eq!(published_for, Duration::from_secs(5));
            assert_eq!(required, Duration::from_secs(10));
        }
        other => panic!("expected NotPublishedLongEnough, got {other:?}"),
    }
    // The last SVID from A, issued just before the switch.
    let last_by_a = sign(39);
    assert_eq!(last_by_a.issuer, root_a);
    assert_eq!(last_by_a.not_after, t(44));

    // Lead reached: B signs, A becomes old but stays in the bundle.
    let out = ca.tick(t(40)).unwrap();
    assert_eq!(out, TickOutcome { activated: Some(2), ..Default::default() });
    assert_eq!(states(&ca), vec![(1, GenerationState::Old), (2, GenerationState::Active)]);
    assert_eq!(ca.active_root().unwrap(), root_b);
    let b2 = ca.bundle();
    assert_eq!(b2.roots(), vec![root_a.clone(), root_b.clone()]);
    assert_eq!(b2.sequence(), 2, "activation does not change the bundle's content");
    let by_b = sign(40);
    assert_eq!(by_b.issuer, root_b);
    assert!(verifies(&by_b.leaf, &b2.roots(), t(41)));
    assert!(!verifies(&by_b.leaf, std::slice::from_ref(&root_a), t(41)));
    // A's last SVID is still valid and still verifies with the published bundle.
    assert!(verifies(&last_by_a.leaf, &b2.roots(), t(43)));
    let old = ca.generations().into_iter().find(|g| g.id == 1).unwrap();
    assert_eq!(old.removable_after, Some(t(45)), "retired at 40 + max TTL 5");

    // A may not be dropped while its SVIDs can be valid.
    assert!(ca.tick(t(44)).unwrap().is_empty());
    assert!(ca.bundle().contains(&root_a));

    // Then it goes, and the sequence grows again.
    let out = ca.tick(t(45)).unwrap();
    assert_eq!(out, TickOutcome { pruned: vec![1], ..Default::default() });
    let b3 = ca.bundle();
    assert_eq!(b3.roots(), vec![root_b.clone()]);
    assert_eq!(b3.sequence(), 3);
    assert!(!verifies(&last_by_a.leaf, &b3.roots(), t(43)), "A no longer trusted");
    assert!(verifies(&by_b.leaf, &b3.roots(), t(41)));
    assert!(!dir.path().join("ca-1.key.pem").exists(), "pruned key removed");

    // Second rotation: B was created at 30, so C is prepared at 60, activated at 70.
    assert!(ca.tick(t(59)).unwrap().is_empty());
    assert_eq!(ca.tick(t(60)).unwrap().prepared, Some(3));
    assert_eq!(ca.bundle().sequence(), 4);
    assert_eq!(ca.tick(t(70)).unwrap().activated, Some(3));
    let root_c = ca.active_root().unwrap();
    let by_c = sign(71);
    assert_eq!(by_c.issuer, root_c);
    assert!(verifies(&by_c.leaf, &ca.bundle().roots(), t(72)));
    assert_eq!(ca.tick(t(75)).unwrap().pruned, vec![2]);
    assert_eq!(ca.bundle().roots(), vec![root_c]);
    assert_eq!(ca.bundle().sequence(), 5);

    // Every SVID along the way was capped by the TTL, so none outlived its CA's retirement.
    let (_, c) = X509Certificate::from_der(&by_c.leaf).unwrap();
    assert_eq!(c.validity().not_after.timestamp() as u64, EPOCH + 76);
}

#[test]
fn explicit_rotation_steps_and_forcing() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::open(dir.path(), short_clock(), t(0)).unwrap();
    assert!(matches!(ca.activate_prepared(t(1), true), Err(CaError::NothingPrepared)));
    assert_eq!(ca.prepare_next(t(1)).unwrap(), 2);
    assert!(matches!(ca.prepare_next(t(2)), Err(CaError::AlreadyPrepared { generation: 2 })));
    assert!(ca.activate_prepared(t(2), false).is_err());
    assert_eq!(ca.activate_prepared(t(2), true).unwrap(), 2, "forced activation");
    assert!(ca.prune(t(6)).unwrap().is_empty());
    assert_eq!(ca.prune(t(7)).unwrap(), vec![1]);
    assert_eq!(ca.bundle().len(), 1);
}

#[test]
fn an_expired_active_ca_is_replaced_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::open(dir.path(), short_clock(), t(0)).unwrap();
    // The control plane was down for the whole schedule.
    let out = ca.tick(t(100)).unwrap();
    assert_eq!(out.prepared, Some(2));
    assert_eq!(out.activated, Some(2));
    let svid = ca.sign_csr(&csr(), &id("web"), None, t(100)).unwrap();
    assert_eq!(svid.ca_generation, 2);
    // The expired generation is past its NotAfter, so the next tick drops it.
    assert_eq!(ca.tick(t(101)).unwrap().pruned, vec![1]);
}

#[test]
fn long_lived_certificates_keep_their_ca_published() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::open(dir.path(), short_clock(), t(0)).unwrap();
    let admin = id("riptides/admin");
    let (svid, _key) = ca.issue_with_new_key(&admin, &[], &[], Some(Duration::from_secs(40)), t(1)).unwrap();
    assert_eq!(svid.not_after, t(41));
    ca.prepare_next(t(2)).unwrap();
    ca.activate_prepared(t(12), false).unwrap();
    // The normal rule would drop generation 1 at 12 + 5; the admin cert keeps it until 41.
    assert!(ca.prune(t(17)).unwrap().is_empty());
    assert!(verifies(&svid.leaf, &ca.bundle().roots(), t(30)));
    // Survives a restart too.
    drop(ca);
    let ca = Ca::open(dir.path(), short_clock(), t(20)).unwrap();
    assert!(ca.prune(t(40)).unwrap().is_empty());
    assert_eq!(ca.prune(t(41)).unwrap(), vec![1]);
}

#[test]
fn the_ca_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("data/ca");
    let ca = Ca::open(&ca_dir, short_clock(), t(0)).unwrap();
    let root_a = ca.active_root().unwrap();
    let svid = ca.sign_csr(&csr(), &id("web"), None, t(1)).unwrap();
    drop(ca);

    let ca = Ca::open(&ca_dir, short_clock(), t(5)).unwrap();
    assert_eq!(ca.active_root().unwrap(), root_a, "same root after reload");
    assert_eq!(ca.bundle().sequence(), 1);
    assert!(verifies(&svid.leaf, &ca.bundle().roots(), t(2)));
    // The reloaded key still signs certificates that chain to the same root.
    let again = ca.sign_csr(&csr(), &id("web"), None, t(6)).unwrap();
    assert!(verifies(&again.leaf, std::slice::from_ref(&root_a), t(7)));

    // Rotation state survives too.
    ca.tick(t(30)).unwrap();
    let before = (states(&ca), ca.bundle());
    drop(ca);
    let ca = Ca::open(&ca_dir, short_clock(), t(31)).unwrap();
    assert_eq!(states(&ca), before.0);
    assert_eq!(ca.bundle(), before.1);
    assert_eq!(ca.bundle().sequence(), 2);
    assert_eq!(ca.tick(t(40)).unwrap().activated, Some(2));
    drop(ca);
    let ca = Ca::open(&ca_dir, short_clock(), t(41)).unwrap();
    assert_eq!(states(&ca), vec![(1, GenerationState::Old), (2, GenerationState::Active)]);
    assert_ne!(ca.active_root().unwrap(), root_a);

    // Another trust domain cannot reuse the directory.
    let mut other = short_clock();
    other.trust_domain = TrustDomain::parse("other.org").unwrap();
    assert!(matches!(Ca::open(&ca_dir, other, t(42)), Err(CaError::TrustDomainMismatch { .. })));
}

#[test]
fn key_files_are_private_and_keys_stay_out_of_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let ca = Ca::open(&ca_dir, short_clock(), t(0)).unwrap();
    ca.prepare_next(t(1)).unwrap();

    let dir_mode = std::fs::metadata(&ca_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&ca_dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        if name.ends_with(".key.pem") {
            assert_eq!(mode, KEY_FILE_MODE, "{name} has mode {mode:o}");
        }
        assert_eq!(mode & 0o022, 0, "{name} is writable by others");
        names.push(name);
    }
    names.sort();
    assert_eq!(
        names,
        ["ca-1.crt.pem", "ca-1.key.pem", "ca-2.crt.pem", "ca-2.key.pem", "manifest.json"],
        "no temp files left behind"
    );

    // Neither the CA's Debug nor the manifest shows key material.
    let key_pem = std::fs::read_to_string(ca_dir.join("ca-1.key.pem")).unwrap();
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let body: Vec<&str> = key_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let debug = format!("{ca:?} {:?}", ca.generations());
    let manifest = std::fs::read_to_string(ca.manifest_path()).unwrap();
    for line in &body {
        assert!(!debug.contains(line), "key material in Debug output");
        assert!(!manifest.contains(line), "key material in the manifest");
    }
    assert!(!debug.contains("PRIVATE KEY"));
}

#[test]
fn a_damaged_store_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::open(dir.path(), short_clock(), t(0)).unwrap();
    let manifest = ca.manifest_path();
    drop(ca);

    let good = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, "{ not json").unwrap();
    assert!(matches!(Ca::open(dir.path(), short_clock(), t(1)), Err(CaError::Store(StoreError::Manifest { .. }))));

    let escaped = good.replace("\"ca-1.key.pem\"", "\"../../etc/shadow\"");
    std::fs::write(&manifest, escaped).unwrap();
    assert!(matches!(Ca::open(dir.path(), short_clock(), t(1)), Err(CaError::Store(StoreError::Corrupt { .. }))));

    std::fs::write(&manifest, &good).unwrap();
    let other = tempfile::tempdir().unwrap();
    let other_ca = Ca::open(other.path(), short_clock(), t(0)).unwrap();
    drop(other_ca);
    // A key that does not belong to the certificate.
    std::fs::copy(other.path().join("ca-1.key.pem"), dir.path().join("ca-1.key.pem")).unwrap();
    let err = Ca::open(dir.path(), short_clock(), t(1)).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn spiffe_bundle_json_shape() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::open(dir.path(), short_clock(), t(0)).unwrap();
    ca.prepare_next(t(30)).unwrap();
    let bundle = ca.bundle();
    let json: serde_json::Value = serde_json::from_str(&bundle.to_spiffe_bundle_json()).unwrap();

    assert_eq!(json["spiffe_sequence"], 2);
    assert_eq!(json["spiffe_refresh_hint"], 1);
    let keys = json["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for (key, root) in keys.iter().zip(bundle.roots()) {
        assert_eq!(key["use"], "x509-svid");
        assert_eq!(key["kty"], "EC");
        assert_eq!(key["crv"], "P-256");
        let x = URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap();
        let y = URL_SAFE_NO_PAD.decode(key["y"].as_str().unwrap()).unwrap();
        assert_eq!((x.len(), y.len()), (32, 32));
        let x5c = key["x5c"].as_array().unwrap();
        assert_eq!(x5c.len(), 1);
        let der = STANDARD.decode(x5c[0].as_str().unwrap()).unwrap();
        assert_eq!(der, root.as_ref());
        // x and y are the root's public key.
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let point = cert.public_key().subject_public_key.data.to_vec();
        assert_eq!(point, [&[4u8][..], &x, &y].concat());
        assert!(key.get("d").is_none(), "no private part");
    }

    // Round trip, as a daemon would read it.
    let back = TrustBundle::from_spiffe_bundle_json(td(), &bundle.to_spiffe_bundle_json()).unwrap();
    assert_eq!(back, bundle);

    // PEM form: one certificate per root.
    let pem = bundle.to_pem();
    assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----").count(), 2);
    let parsed: Vec<CertificateDer<'static>> = {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<_, _>>().unwrap()
    };
    assert_eq!(parsed, bundle.roots());
    assert_eq!(bundle.root_store().len(), 2);

    // A document whose JWK does not match its certificate is refused.
    let mut tampered = json.clone();
    tampered["keys"][0]["x"] = serde_json::Value::String(URL_SAFE_NO_PAD.encode([0u8; 32]));
    assert!(TrustBundle::from_spiffe_bundle_json(td(), &tampered.to_string()).is_err());
}
