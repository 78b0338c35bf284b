//! Who trusts whom, end to end over both transports: pins, bundles, expected IDs, expiry.
#![cfg(feature = "transport")]

mod transport_support;

use std::time::Duration;

use riptides_wire::tls::{ExpectedId, ServerTrust};
use riptides_wire::transport::TransportError;
use riptides_wire::TrustDomain;
use time::OffsetDateTime;
use transport_support::*;

/// Dials a server presenting `server_identity` with a client built from `trust`/`expected`.
async fn dial(
    kind: Kind,
    server_identity: Identity,
    trust: ServerTrust,
    expected: ExpectedId,
) -> Result<(), TransportError> {
    let cfg = test_cfg();
    let srv = Server::bind(kind, server_tls(server_identity, vec![]), &cfg).await;
    let client = connect(kind, srv.addr(), client_tls(trust, expected, None), &cfg).await?;
    // TLS 1.3 over TCP: the client may finish before the server has checked anything, so
    // prove the connection works end to end.
    let served = srv.accept_within(Duration::from_secs(5)).await.expect("server accepted");
    let (s, reply) = tokio::join!(serve_one(&*served), request(&*client, b"ping"));
    s?;
    assert_eq!(reply?, b"gnip");
    Ok(())
}

fn assert_refused(res: Result<(), TransportError>, kind: Kind, needle: &str) {
    match res {
        Ok(()) => panic!("{kind:?}: connection should have been refused ({needle})"),
        Err(e) => {
            let msg = e.to_string();
            assert!(matches!(e, TransportError::Handshake { .. }), "{kind:?}: expected a handshake error, got {msg}");
            assert!(msg.contains(needle), "{kind:?}: {msg:?} does not mention {needle:?}");
        }
    }
}

#[tokio::test]
async fn pin_of_the_right_ca_is_trusted() {
    for kind in KINDS {
        let ca = Ca::new("pinned ca");
        dial(kind, ca.svid(CP_ID), ServerTrust::Pin(ca.pin()), exact(CP_ID)).await.unwrap();
    }
}

#[tokio::test]
async fn wrong_pin_is_refused() {
    for kind in KINDS {
        let ca = Ca::new("real ca");
        let other = Ca::new("other ca");
        let res = dial(kind, ca.svid(CP_ID), ServerTrust::Pin(other.pin()), exact(CP_ID)).await;
        assert_refused(res, kind, "matches the CA pin");
    }
}

#[tokio::test]
async fn pinned_ca_not_in_chain_is_refused() {
    for kind in KINDS {
        let ca = Ca::new("real ca");
        let (mut chain, key) = ca.svid(CP_ID);
        chain.truncate(1); // leaf only: the client cannot find its anchor
        let res = dial(kind, (chain, key), ServerTrust::Pin(ca.pin()), exact(CP_ID)).await;
        assert_refused(res, kind, "matches the CA pin");
    }
}

#[tokio::test]
async fn bundle_trust_refuses_another_ca() {
    for kind in KINDS {
        let ca = Ca::new("server ca");
        let other = Ca::new("client's ca");
        let res = dial(kind, ca.svid(CP_ID), ServerTrust::Bundle(vec![other.cert.clone()]), exact(CP_ID)).await;
        assert_refused(res, kind, "UnknownIssuer");
    }
}

#[tokio::test]
async fn bundle_trust_accepts_its_ca() {
    for kind in KINDS {
        let ca = Ca::new("server ca");
        let other = Ca::new("unrelated ca");
        let bundle = vec![other.cert.clone(), ca.cert.clone()];
        dial(kind, ca.svid(CP_ID), ServerTrust::Bundle(bundle), exact(CP_ID)).await.unwrap();
    }
}

#[tokio::test]
async fn unexpected_spiffe_id_is_refused() {
    for kind in KINDS {
        let ca = Ca::new("ca");
        let impostor = "spiffe://example.com/riptides/daemon/evil";
        let res = dial(kind, ca.svid(impostor), ServerTrust::Bundle(vec![ca.cert.clone()]), exact(CP_ID)).await;
        assert_refused(res, kind, "is not the expected");
        // Another trust domain is refused by a trust-domain expectation too.
        let foreign = "spiffe://other.org/riptides/controlplane";
        let td = ExpectedId::TrustDomain(TrustDomain::parse("example.com").unwrap());
        let res = dial(kind, ca.svid(foreign), ServerTrust::Pin(ca.pin()), td).await;
        assert_refused(res, kind, "is not the expected");
    }
}

#[tokio::test]
async fn trust_domain_and_any_of_expectations_accept_members() {
    for kind in KINDS {
        let ca = Ca::new("ca");
        let td = ExpectedId::TrustDomain(TrustDomain::parse("example.com").unwrap());
        dial(kind, ca.svid(CP_ID), ServerTrust::Pin(ca.pin()), td).await.unwrap();
        let any = ExpectedId::AnyOf(vec![
            riptides_wire::SpiffeId::parse("spiffe://example.com/old-cp").unwrap(),
            riptides_wire::SpiffeId::parse(CP_ID).unwrap(),
        ]);
        dial(kind, ca.svid(CP_ID), ServerTrust::Pin(ca.pin()), any).await.unwrap();
    }
}

#[tokio::test]
async fn expired_leaf_is_refused() {
    for kind in KINDS {
        let ca = Ca::new("ca");
        let now = OffsetDateTime::now_utc();
        let expired = ca.leaf_full(&[CP_ID], now - time::Duration::days(2), now - time::Duration::days(1));
        let res = dial(
            kind,
            (expired.0.clone(), expired.1.clone_key()),
            ServerTrust::Bundle(vec![ca.cert.clone()]),
            exact(CP_ID),
        )
        .await;
        assert_refused(res, kind, "expired");
        let res = dial(kind, expired, ServerTrust::Pin(ca.pin()), exact(CP_ID)).await;
        assert_refused(res, kind, "expired");
    }
}

#[tokio::test]
async fn leaf_with_two_uri_sans_is_refused() {
    for kind in KINDS {
        let ca = Ca::new("ca");
        let two = ca.leaf_uris(&[CP_ID, "spiffe://example.com/also-me"]);
        let res = dial(kind, two, ServerTrust::Pin(ca.pin()), exact(CP_ID)).await;
        assert_refused(res, kind, "URI SANs");
    }
}

#[tokio::test]
async fn client_cert_from_another_ca_is_not_accepted() {
    for kind in KINDS {
        let ca = Ca::new("cp ca");
        let rogue = Ca::new("rogue ca");
        let cfg = test_cfg();
        let srv = Server::bind(kind, server_tls(ca.svid(CP_ID), vec![ca.cert.clone()]), &cfg).await;
        let bad = client_tls(ServerTrust::Pin(ca.pin()), exact(CP_ID), Some(rogue.svid(DAEMON_ID)));
        // The client may or may not notice (TLS 1.3 over TCP finishes on its side first); the
        // server must never hand the connection to the application.
        let _ = connect(kind, srv.addr(), bad, &cfg).await;
        assert!(srv.accept_within(Duration::from_millis(500)).await.is_none(), "{kind:?}");
        // A good client is still served afterwards.
        let good = client_tls(ServerTrust::Pin(ca.pin()), exact(CP_ID), Some(ca.svid(DAEMON_ID)));
        let (client, accepted) =
            tokio::join!(connect(kind, srv.addr(), good, &cfg), srv.accept_within(Duration::from_secs(5)));
        client.unwrap();
        assert!(accepted.unwrap().peer_certificates().is_some());
    }
}
