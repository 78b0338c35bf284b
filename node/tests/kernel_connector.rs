//! The kernel connector's host-side parts (no module can load here and the host has no kTLS;
//! the real handover runs in the qemu guest, `kmod/tests/guest/e2e.sh`):
//! - family resolution against the host's real generic netlink (`nlctrl` exists, `riptides`
//!   does not, so `--dataplane auto` picks userspace and `--dataplane kernel` fails clearly);
//! - the kTLS `crypto_info` byte layouts against the kernel's own `linux/tls.h`, compiled by
//!   `cc`;
//! - the record-exact handover stream: a full mTLS handshake over a socketpair, after which
//!   the peer's first application record is still on the socket, whole, and decrypts with
//!   the extracted secrets (what kTLS will do with it); file flags never change;
//! - the rules -> kernel interception table translation.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnix;
use std::process::Command;
use std::time::{Duration, SystemTime};

use riptides_cp::ca::{Ca, CaConfig};
use riptides_node::dataplane::handshake::{accept_mtls, connect_mtls, Alpn, HandshakeConfig, Svid, TrustBundles};
use riptides_node::dataplane::rules::Rules;
use riptides_node::kernel::fd::HandoverStream;
use riptides_node::kernel::genl;
use riptides_node::kernel::ktls::{self, CryptoInfo};
use riptides_node::kernel::msg::{ConnContext, KDirection, PolicyEntry};
use riptides_node::kernel::policy::{translate, translate_with_limit};
use riptides_node::DataplaneMode;
use riptides_wire::proto::messages::{PolicyDocument, PolicyItem, TrustBundleMsg};
use riptides_wire::{SpiffeId, TrustDomain};
use rustls::ConnectionTrafficSecrets;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------- family resolution

#[test]
fn nlctrl_resolves_on_the_host_and_riptides_is_absent() {
    let ctrl = genl::resolve_family("nlctrl", Duration::from_secs(2)).expect("generic netlink").expect("nlctrl");
    assert_eq!(ctrl.id, genl::GENL_ID_CTRL);
    assert_eq!(ctrl.name, "nlctrl");
    assert!(ctrl.group("notify").is_some(), "nlctrl has a notify group: {ctrl:?}");
    // The module cannot be loaded on this host.
    assert_eq!(genl::resolve_family("riptides", Duration::from_secs(2)).unwrap(), None);
    assert!(!riptides_node::kernel::family_present());
    // So auto picks the userspace path, and kernel says what to do.
    assert_eq!(DataplaneMode::Auto.resolve().unwrap(), DataplaneMode::Userspace);
    let e = DataplaneMode::Kernel.resolve().unwrap_err().to_string();
    assert!(e.contains("riptides.ko"), "{e}");
}

#[tokio::test]
async fn kernel_connector_refuses_to_start_without_the_module() {
    let (_tx, rx) = tokio::sync::watch::channel(Default::default());
    let table = riptides_node::dataplane::table::ConnectionTable::new(16);
    let shared = riptides_node::state::Shared::new("example.com".into(), "kernel".into());
    let r = riptides_node::kernel::Kernel::start(Default::default(), "example.com".into(), shared, rx, table).await;
    let e = format!("{:#}", r.err().expect("no module here"));
    assert!(e.contains("riptides") && e.contains("--dataplane userspace"), "{e}");
}

// ---------------------------------------------------------------- kTLS layouts

/// Fills each kernel struct through its named fields with the same values and prints the
/// bytes; the Rust layout must be identical.
#[test]
fn crypto_info_layouts_match_linux_tls_h() {
    let dir = tempfile::tempdir().unwrap();
    let c = r#"
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/tcp.h>
#include <linux/tls.h>
static void dump(const char *n, const void *p, size_t len) {
    const unsigned char *b = p; printf("%s ", n);
    for (size_t i = 0; i < len; i++) printf("%02x", b[i]);
    printf("\n");
}
static void fill(unsigned char *p, size_t n, unsigned char start) { for (size_t i = 0; i < n; i++) p[i] = start + i; }
int main(void) {
    unsigned char iv12[12]; fill(iv12, 12, 1);
    unsigned char seq[8] = {1,2,3,4,5,6,7,8};
    struct tls12_crypto_info_aes_gcm_128 a; memset(&a, 0, sizeof a);
    a.info.version = TLS_1_3_VERSION; a.info.cipher_type = TLS_CIPHER_AES_GCM_128;
    memcpy(a.iv, iv12 + 4, TLS_CIPHER_AES_GCM_128_IV_SIZE); fill(a.key, TLS_CIPHER_AES_GCM_128_KEY_SIZE, 0xa0);
    memcpy(a.salt, iv12, TLS_CIPHER_AES_GCM_128_SALT_SIZE); memcpy(a.rec_seq, seq, TLS_CIPHER_AES_GCM_128_REC_SEQ_SIZE);
    dump("gcm128", &a, sizeof a);
    struct tls12_crypto_info_aes_gcm_256 b; memset(&b, 0, sizeof b);
    b.info.version = TLS_1_3_VERSION; b.info.cipher_type = TLS_CIPHER_AES_GCM_256;
    memcpy(b.iv, iv12 + 4, TLS_CIPHER_AES_GCM_256_IV_SIZE); fill(b.key, TLS_CIPHER_AES_GCM_256_KEY_SIZE, 0xa0);
    memcpy(b.salt, iv12, TLS_CIPHER_AES_GCM_256_SALT_SIZE); memcpy(b.rec_seq, seq, TLS_CIPHER_AES_GCM_256_REC_SEQ_SIZE);
    dump("gcm256", &b, sizeof b);
    struct tls12_crypto_info_chacha20_poly1305 c; memset(&c, 0, sizeof c);
    c.info.version = TLS_1_3_VERSION; c.info.cipher_type = TLS_CIPHER_CHACHA20_POLY1305;
    memcpy(c.iv, iv12, TLS_CIPHER_CHACHA20_POLY1305_IV_SIZE); fill(c.key, TLS_CIPHER_CHACHA20_POLY1305_KEY_SIZE, 0xa0);
    memcpy(c.rec_seq, seq, TLS_CIPHER_CHACHA20_POLY1305_REC_SEQ_SIZE);
    dump("chacha", &c, sizeof c);
    printf("consts %d %d %d %d %d %d %d %d\n", SOL_TLS, TCP_ULP, TLS_TX, TLS_RX, TLS_1_3_VERSION,
           TLS_CIPHER_AES_GCM_128, TLS_CIPHER_AES_GCM_256, TLS_CIPHER_CHACHA20_POLY1305);
    return 0;
}
"#;
    let src = dir.path().join("tls.c");
    let bin = dir.path().join("tls");
    std::fs::write(&src, c).unwrap();
    let out = Command::new("cc")
        .args(["-std=c99", "-Wall", "-Werror", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("cc (gcc and linux-libc-dev provide linux/tls.h)");
    assert!(out.status.success(), "cc failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let run = Command::new(&bin).output().unwrap();
    let text = String::from_utf8(run.stdout).unwrap();
    let line = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} in {text}"))
            .to_owned()
    };
    let iv: Vec<u8> = (1..=12).collect();
    let key = |n: usize| (0..n).map(|i| 0xa0u8.wrapping_add(i as u8)).collect::<Vec<u8>>();
    let seq = 0x0102_0304_0506_0708u64;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let ours = CryptoInfo::build(ktls::TLS_CIPHER_AES_GCM_128, seq, &key(16), &iv).unwrap();
    assert_eq!(hex(ours.as_bytes()), line("gcm128"));
    let ours = CryptoInfo::build(ktls::TLS_CIPHER_AES_GCM_256, seq, &key(32), &iv).unwrap();
    assert_eq!(hex(ours.as_bytes()), line("gcm256"));
    let ours = CryptoInfo::build(ktls::TLS_CIPHER_CHACHA20_POLY1305, seq, &key(32), &iv).unwrap();
    assert_eq!(hex(ours.as_bytes()), line("chacha"));
    assert_eq!(
        line("consts"),
        format!(
            "{} {} {} {} {} {} {} {}",
            ktls::SOL_TLS,
            ktls::TCP_ULP,
            ktls::TLS_TX,
            ktls::TLS_RX,
            ktls::TLS_1_3_VERSION,
            ktls::TLS_CIPHER_AES_GCM_128,
            ktls::TLS_CIPHER_AES_GCM_256,
            ktls::TLS_CIPHER_CHACHA20_POLY1305
        )
    );
}

// ---------------------------------------------------------------- handover stream

struct TestCa {
    _dir: tempfile::TempDir,
    ca: Ca,
}

impl TestCa {
    fn new() -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let ca =
            Ca::open(dir.path(), CaConfig::new(TrustDomain::parse("example.com").unwrap()), SystemTime::now()).unwrap();
        TestCa { _dir: dir, ca }
    }
    fn svid(&self, path: &str) -> Svid {
        let id = SpiffeId::parse(&format!("spiffe://example.com/{path}")).unwrap();
        let (svid, key) =
            self.ca.issue_with_new_key(&id, &[], &[], Some(Duration::from_secs(3600)), SystemTime::now()).unwrap();
        Svid::new(svid.chain, key.to_rustls()).unwrap()
    }
    fn bundles(&self) -> TrustBundles {
        TrustBundles::new(TrustDomain::parse("example.com").unwrap(), self.ca.bundle().roots())
    }
}

fn flags(fd: &OwnedFd) -> i32 {
    // SAFETY: F_GETFL on an open fd.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) }
}

/// Reads whatever is queued on `fd` without blocking.
fn drain(fd: &OwnedFd) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: valid buffer.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n <= 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
}

/// Decrypts one TLS 1.3 record with the given direction's secrets and sequence number, as
/// kTLS would; returns the plaintext without the inner content type.
fn open_record(record: &[u8], seq: u64, secrets: &ConnectionTrafficSecrets) -> Vec<u8> {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305};
    let (alg, key, iv) = match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&AES_128_GCM, key.as_ref(), iv.as_ref()),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&AES_256_GCM, key.as_ref(), iv.as_ref()),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&CHACHA20_POLY1305, key.as_ref(), iv.as_ref()),
        _ => panic!("unexpected cipher"),
    };
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(iv);
    for (i, b) in seq.to_be_bytes().iter().enumerate() {
        nonce[4 + i] ^= b;
    }
    let k = LessSafeKey::new(UnboundKey::new(alg, key).unwrap());
    let mut body = record[5..].to_vec();
    let plain = k.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&record[..5]), &mut body).unwrap();
    let (ty, data) = plain.split_last().unwrap();
    assert_eq!(*ty, 23, "inner content type application_data");
    data.to_vec()
}

fn cfg() -> HandshakeConfig {
    HandshakeConfig { handshake_timeout: Duration::from_secs(10), enable_secret_extraction: true, ..Default::default() }
}

/// The fd side is the TLS client (egress): the server sends application data right after
/// its handshake, possibly in the same segment as its last handshake records.
#[tokio::test]
async fn handover_client_leaves_the_first_application_record_on_the_socket() {
    let ca = TestCa::new();
    let (client_svid, server_svid, bundles) = (ca.svid("frontend"), ca.svid("orders"), ca.bundles());
    let (a, b) = StdUnix::pair().unwrap();
    let fd: OwnedFd = a.into();
    let before = flags(&fd);
    assert_eq!(before & libc::O_NONBLOCK, 0, "a blocking socket, like the application's");
    b.set_nonblocking(true).unwrap();
    let peer = tokio::net::UnixStream::from_std(b).unwrap();
    let server = {
        let bundles = bundles.clone();
        tokio::spawn(async move {
            let (mut tls, info) = accept_mtls(peer, &server_svid, &[], &bundles, &cfg()).await.unwrap();
            tls.write_all(b"FIRST-APP-RECORD").await.unwrap();
            tls.flush().await.unwrap();
            (tls, info)
        })
    };
    let dup = fd.try_clone().unwrap();
    let stream = HandoverStream::new(dup).unwrap();
    let (tls, info) = connect_mtls(stream, &client_svid, &[], &bundles, Alpn::Riptides, &cfg()).await.unwrap();
    assert_eq!(info.peer_id.as_ref().map(|p| p.to_string()).as_deref(), Some("spiffe://example.com/orders"));
    let (stream, conn) = tls.into_inner();
    assert!(stream.at_record_boundary());
    assert!(!conn.wants_write());
    let secrets = conn.dangerous_extract_secrets().unwrap();
    assert_eq!(secrets.rx.0, 0, "no record after the handshake was consumed");
    drop(stream.into_fd());
    let (mut server_tls, _) = server.await.unwrap();
    // Everything the server sent after its handshake is still queued, as whole records.
    let mut left = Vec::new();
    for _ in 0..100 {
        left.extend(drain(&fd));
        if left.len() >= 5 && left.len() >= 5 + u16::from_be_bytes([left[3], left[4]]) as usize {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left[0], 23, "an application_data record");
    let len = u16::from_be_bytes([left[3], left[4]]) as usize;
    assert_eq!(left.len(), 5 + len, "exactly one whole record left");
    assert_eq!(open_record(&left, secrets.rx.0, &secrets.rx.1), b"FIRST-APP-RECORD");
    // Our direction continues at the extracted sequence number (what TLS_TX is given).
    let _ = &mut server_tls;
    assert_eq!(flags(&fd), before, "file flags unchanged");
}

/// The fd side is the TLS server (ingress): the client writes right after its Finished.
#[tokio::test]
async fn handover_server_leaves_the_first_application_record_on_the_socket() {
    let ca = TestCa::new();
    let (client_svid, server_svid, bundles) = (ca.svid("frontend"), ca.svid("orders"), ca.bundles());
    let (a, b) = StdUnix::pair().unwrap();
    let fd: OwnedFd = a.into();
    let before = flags(&fd);
    b.set_nonblocking(true).unwrap();
    let peer = tokio::net::UnixStream::from_std(b).unwrap();
    let client = {
        let bundles = bundles.clone();
        tokio::spawn(async move {
            let (mut tls, _) = connect_mtls(peer, &client_svid, &[], &bundles, Alpn::Riptides, &cfg()).await.unwrap();
            tls.write_all(b"CLIENT-FIRST").await.unwrap();
            tls.flush().await.unwrap();
            tls
        })
    };
    let stream = HandoverStream::new(fd.try_clone().unwrap()).unwrap();
    let (tls, info) = accept_mtls(stream, &server_svid, &[], &bundles, &cfg()).await.unwrap();
    assert_eq!(info.peer_id.as_ref().map(|p| p.to_string()).as_deref(), Some("spiffe://example.com/frontend"));
    let (stream, conn) = tls.into_inner();
    assert!(stream.at_record_boundary());
    let secrets = conn.dangerous_extract_secrets().unwrap();
    assert_eq!(secrets.rx.0, 0);
    drop(stream.into_fd());
    let _client = client.await.unwrap();
    let mut left = Vec::new();
    for _ in 0..100 {
        left.extend(drain(&fd));
        if left.len() >= 5 && left.len() >= 5 + u16::from_be_bytes([left[3], left[4]]) as usize {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let len = u16::from_be_bytes([left[3], left[4]]) as usize;
    assert_eq!((left[0], left.len()), (23, 5 + len));
    assert_eq!(open_record(&left, 0, &secrets.rx.1), b"CLIENT-FIRST");
    assert_eq!(flags(&fd), before);
}

/// Raw records: reads stop at every record boundary however large the caller's buffer.
#[tokio::test]
async fn reads_never_cross_a_record_boundary() {
    let (a, mut b) = StdUnix::pair().unwrap();
    let fd: OwnedFd = a.into();
    let mut wire = Vec::new();
    wire.extend_from_slice(&[22, 3, 3, 0, 3, b'a', b'b', b'c']);
    wire.extend_from_slice(&[23, 3, 3, 0, 2, b'x', b'y']);
    wire.extend_from_slice(&[23, 3, 3, 0, 4, b'1']); // a partial third record
    b.write_all(&wire).unwrap();
    let mut s = HandoverStream::new(fd.try_clone().unwrap()).unwrap();
    let mut buf = [0u8; 1024];
    let mut got = Vec::new();
    let mut sizes = Vec::new();
    while got.len() < 15 {
        let n = s.read(&mut buf).await.unwrap();
        sizes.push(n);
        got.extend_from_slice(&buf[..n]);
    }
    // header(5) body(3) header(5) body(2): never more than one part at a time.
    assert_eq!(sizes, vec![5, 3, 5, 2]);
    assert!(s.at_record_boundary());
    drop(s.into_fd());
    assert_eq!(drain(&fd), vec![23, 3, 3, 0, 4, b'1'], "the next record is untouched");
    // An oversized record header is an error, not an allocation.
    let (a, mut b) = StdUnix::pair().unwrap();
    b.write_all(&[23, 3, 3, 0xff, 0xff]).unwrap();
    let mut s = HandoverStream::new(a.into()).unwrap();
    let mut hdr = [0u8; 5];
    assert!(s.read_exact(&mut hdr).await.is_err());
    // Writes go through, never raise SIGPIPE on a closed peer.
    let (a, b) = StdUnix::pair().unwrap();
    let mut s = HandoverStream::new(a.into()).unwrap();
    s.write_all(b"hi").await.unwrap();
    let mut r = [0u8; 2];
    (&b).read_exact(&mut r).unwrap();
    assert_eq!(&r, b"hi");
    drop(b);
    let e = s.write_all(&[0u8; 1 << 16]).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
    let _ = s.fd().as_fd();
}

// ---------------------------------------------------------------- policy translation

fn doc(items: Vec<Value>) -> PolicyDocument {
    PolicyDocument {
        trust_domain: "example.com".into(),
        bundle: TrustBundleMsg { trust_domain: "example.com".into(), sequence: 1, roots_der: vec![vec![0x30, 0x00]] },
        items: items
            .into_iter()
            .map(|v| {
                if v["kind"] == "Service" {
                    PolicyItem::Service(v.to_string())
                } else {
                    PolicyItem::WorkloadIdentity(v.to_string())
                }
            })
            .collect(),
    }
}

fn wi(name: &str, selectors: Value, egress: Value, ingress: Value) -> Value {
    json!({"apiVersion": "core.riptides.io/v1alpha1", "kind": "WorkloadIdentity", "metadata": {"name": name},
           "spec": {"workloadID": name, "scope": {"daemon": {"id": "n"}}, "selectors": selectors,
                    "egress": egress, "ingress": ingress}})
}

fn svc(name: &str, addresses: Value) -> Value {
    json!({"apiVersion": "core.riptides.io/v1alpha1", "kind": "Service", "metadata": {"name": name},
           "spec": {"labels": {"app": name}, "addresses": addresses}})
}

fn entry(addr: Option<(&str, u8)>, port: u16, comm: Option<&str>, exe: Option<&str>) -> PolicyEntry {
    PolicyEntry {
        direction: KDirection::Egress,
        protect: true,
        addr: addr.map(|(a, p)| (a.parse().unwrap(), p)),
        port_min: port,
        port_max: port,
        comm: comm.map(str::to_owned),
        exe: exe.map(str::to_owned),
    }
}

#[test]
fn rules_translate_into_a_superset_interception_table() {
    let egress = json!([{"selectors": [{"app": "orders"}]}]);
    let rules = Rules::compile(&doc(vec![
        svc(
            "orders",
            json!([{"address": "10.0.0.2", "port": 8000}, {"address": "10.1.0.0/16", "port": 9000},
                             {"address": "orders.example", "port": 443}, {"address": "fd00::2", "port": 8000}]),
        ),
        wi(
            "frontend",
            json!([{"process:name": "curl"}, {"process:binary:path": "/usr/bin/wget", "process:uid": "0"}]),
            egress.clone(),
            json!([]),
        ),
        // A name longer than comm can ever be selects no process: no entry.
        wi("long", json!([{"process:name": "a-very-long-process-name"}]), egress, json!([])),
        wi("orders", json!([{"process:name": "python3"}]), json!([]), json!([{"port": 8000}, {"port": 8443}])),
    ]))
    .unwrap();
    let t = translate(&rules).unwrap();
    let mut expected = Vec::new();
    for (a, port) in [(("10.0.0.2", 32), 8000), (("10.1.0.0", 16), 9000), (("fd00::2", 128), 8000)] {
        // Every selector map of every workload (the daemon picks the workload per connection).
        expected.push(entry(Some(a), port, None, Some("/usr/bin/wget")));
        expected.push(entry(Some(a), port, Some("curl"), None));
        expected.push(entry(Some(a), port, Some("python3"), None));
    }
    expected.sort();
    let (mut egress_t, ingress_t): (Vec<_>, Vec<_>) = t.into_iter().partition(|e| e.direction == KDirection::Egress);
    egress_t.sort();
    assert_eq!(egress_t, expected);
    assert_eq!(
        ingress_t.iter().map(|e| (e.port_min, e.port_max, e.addr, e.comm.clone())).collect::<Vec<_>>(),
        vec![(8000, 8000, None, None), (8443, 8443, None, None)]
    );
    // Over the limit: process conditions are dropped (one entry per endpoint), still a superset.
    let t = translate_with_limit(&rules, 6).unwrap();
    assert_eq!(t.iter().filter(|e| e.direction == KDirection::Egress).count(), 3);
    assert!(t.iter().all(|e| e.comm.is_none() && e.exe.is_none()));
    assert!(translate_with_limit(&rules, 4).is_err());

    // A selector map without process:name or binary path: any process, one entry per endpoint.
    let rules = Rules::compile(&doc(vec![
        svc("orders", json!([{"address": "10.0.0.2", "port": 8000}])),
        wi(
            "any",
            json!([{"process:uid": "1000"}, {"process:name": "curl"}]),
            json!([{"selectors": [{"app": "orders"}]}]),
            json!([]),
        ),
    ]))
    .unwrap();
    assert_eq!(translate(&rules).unwrap(), vec![entry(Some(("10.0.0.2", 32)), 8000, None, None)]);

    // No workloads: nothing to intercept.
    let rules = Rules::compile(&doc(vec![svc("orders", json!([{"address": "10.0.0.2", "port": 8000}]))])).unwrap();
    assert!(translate(&rules).unwrap().is_empty());
}

#[test]
fn process_labels_come_from_proc_with_the_kernel_context_as_fallback() {
    let hasher = riptides_node::dataplane::process::BinaryHasher::new(4, 1 << 30);
    let me = std::process::id();
    let ctx = ConnContext {
        conn_id: 1,
        direction: KDirection::Egress,
        local: "10.0.0.1:1".parse().unwrap(),
        peer: "10.0.0.2:2".parse().unwrap(),
        pid: me,
        uid: 4242,
        gid: 4242,
        comm: "kernel-comm".into(),
        exe: "/kernel/exe".into(),
        cgroup_id: 0,
        netns_cookie: 0,
        rule_id: 1,
    };
    let l = riptides_node::kernel::connector::process_labels(&ctx, std::path::Path::new("/proc"), &hasher);
    assert_eq!(l["process:pid"], me.to_string());
    assert_ne!(l["process:binary:path"], "/kernel/exe", "/proc wins while the process lives");
    assert!(l.contains_key("process:binary:hash"));
    // A process that is gone: the kernel's context.
    let gone = ConnContext { pid: u32::MAX - 1, ..ctx };
    let l = riptides_node::kernel::connector::process_labels(&gone, std::path::Path::new("/proc"), &hasher);
    assert_eq!(l["process:name"], "kernel-comm");
    assert_eq!(l["process:binary:path"], "/kernel/exe");
    assert_eq!(l["process:uid"], "4242");
}
