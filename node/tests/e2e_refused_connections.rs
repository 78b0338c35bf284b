//! The connection table as an operator sees it, with real daemons (userspace dataplane) in
//! network namespaces the test makes: an mTLS connection reports the TLS version and key
//! exchange rustls negotiated, and refused connections stay listed in `/connections` with the
//! state `refused: <reason>` instead of vanishing with their socket.

mod e2e;

use std::time::Duration;

use e2e::*;
use serde_json::Value;

const FRONTEND: &str = "spiffe://example.com/frontend";
const ORDERS: &str = "spiffe://example.com/orders-service";
const INTRUDER: &str = "spiffe://example.com/intruder";

fn rows(host: &riptides_chaos_tests::Host) -> Option<Vec<Value>> {
    admin_get(host, "/connections")?.as_array().cloned()
}

fn is_refused(r: &Value) -> bool {
    r["state"].as_str().is_some_and(|s| s.starts_with("refused: "))
}

#[test]
fn mtls_rows_report_tls_version_and_key_exchange_and_refusals_are_listed() {
    // Unique prefix: the namespaces are rt-rfcn_*; dropping the fixture (also on panic) removes
    // the processes, then the namespaces.
    let f = Fixture::start("rfcn", POLICY, &[]);
    f.wait_identity(&f.a, FRONTEND);
    f.wait_identity(&f.a, INTRUDER);
    f.wait_identity(&f.b, ORDERS);
    let (_server, marker) = f.http_server(&f.b, 8000);
    let url = format!("http://{}:8000/marker.txt", f.b.addr());

    // An mTLS connection held open (curl's telnet mode while its stdin stays open): both ends
    // report what the handshake negotiated.
    let _held =
        f.a.command("sh")
            .args(["-c", &format!("sleep 20 | curl -s --max-time 20 telnet://{}:8000 >/dev/null", f.b.addr())])
            .spawn()
            .unwrap();
    let out_row = wait_until("an established outbound row on node-a", Duration::from_secs(15), || {
        rows(&f.a)?.into_iter().find(|r| r["state"] == "established" && r["peerSPIFFEID"] == ORDERS)
    });
    assert_eq!(out_row["direction"], "outbound", "{out_row}");
    assert_eq!(out_row["ownSPIFFEID"], FRONTEND, "{out_row}");
    assert_eq!(out_row["mode"], "MUTUAL", "{out_row}");
    assert_eq!(out_row["tlsVersion"], "TLSv1.3", "{out_row}");
    assert_eq!(out_row["kxGroup"], "X25519MLKEM768", "post-quantum hybrid key exchange: {out_row}");
    let in_row = wait_until("an established inbound row on node-b", Duration::from_secs(15), || {
        rows(&f.b)?.into_iter().find(|r| r["state"] == "established" && r["peerSPIFFEID"] == FRONTEND)
    });
    assert_eq!(in_row["direction"], "inbound", "{in_row}");
    assert_eq!(in_row["ownSPIFFEID"], ORDERS, "{in_row}");
    assert_eq!(in_row["tlsVersion"], "TLSv1.3", "{in_row}");
    assert_eq!(in_row["kxGroup"], "X25519MLKEM768", "{in_row}");

    // The intruder (curl as uid 65534, a valid SVID of its own) is not in the orders ingress
    // list: node-b refuses it in the handshake, and both nodes keep the refused connection.
    let out = sh(&f.a, &format!("setpriv --reuid 65534 --regid 65534 --clear-groups curl -s --max-time 10 {url}"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&marker), "the intruder must be refused");
    let refused_b = wait_until("the intruder's refused row on node-b", Duration::from_secs(10), || {
        rows(&f.b)?.into_iter().find(|r| is_refused(r) && r["peerSPIFFEID"] == INTRUDER)
    });
    assert_eq!(refused_b["direction"], "inbound", "{refused_b}");
    assert_eq!(refused_b["ownSPIFFEID"], ORDERS, "{refused_b}");
    assert_eq!(refused_b["mode"], "MUTUAL", "{refused_b}");
    assert_eq!(refused_b["port"], 8000, "{refused_b}");
    let state = refused_b["state"].as_str().unwrap();
    assert!(state.contains(INTRUDER) && state.contains("not allowed"), "the reason names the identity: {state}");
    assert_eq!(refused_b["tlsVersion"], "", "no handshake completed: {refused_b}");
    let refused_a = wait_until("the intruder's refused row on node-a", Duration::from_secs(10), || {
        rows(&f.a)?.into_iter().find(|r| is_refused(r) && r["ownSPIFFEID"] == INTRUDER)
    });
    assert_eq!(refused_a["direction"], "outbound", "{refused_a}");
    assert_eq!(refused_a["destination"], format!("{}:8000", f.b.addr()), "{refused_a}");
    assert_eq!(refused_a["mode"], "MUTUAL", "{refused_a}");
    // TLS 1.3: the client's handshake completes before the server checks the client
    // certificate, so node-a learns of the refusal from the server's alert.
    assert_eq!(
        refused_a["state"], "refused: refused by the peer after the handshake: TLS alert AccessDenied",
        "{refused_a}"
    );

    // A client that is not enrolled (the control-plane host runs no daemon) sends plaintext to
    // the MUTUAL port: refused, and listed with its source.
    let out = f.curl(&f.cp, &url);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&marker), "plaintext must be refused on a MUTUAL port");
    let cp_ip = f.cp.addr().to_string();
    let plain = wait_until("the plaintext client's refused row on node-b", Duration::from_secs(10), || {
        rows(&f.b)?
            .into_iter()
            .find(|r| is_refused(r) && r["source"].as_str().is_some_and(|s| s.starts_with(&format!("{cp_ip}:"))))
    });
    assert!(plain["state"].as_str().unwrap().contains("plaintext refused"), "{plain}");
    assert_eq!(plain["peerSPIFFEID"], Value::Null, "{plain}");

    // The held mTLS connection is still listed as established next to the refusals.
    let b_rows = rows(&f.b).unwrap();
    assert!(b_rows.iter().any(|r| r["state"] == "established" && r["peerSPIFFEID"] == FRONTEND), "{b_rows:?}");
}
