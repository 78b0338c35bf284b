//! Capture with real nftables, in network namespaces these tests create (needs root).
//!
//! Every namespace is owned by a [`NetNs`] guard whose Drop deletes it, so nothing is left
//! behind even when an assertion panics. Traffic only goes to loopback or to addresses inside
//! those namespaces. Code that must run inside a namespace runs on a dedicated thread that
//! entered it with `setns` ([`in_netns`]); threads and processes spawned from there inherit it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use riptides_node::dataplane::capture::{
    self, Capture, CaptureConfig, CaptureError, CaptureRules, Destinations, OutboundSelection, Reconciled, Resynced,
};
use riptides_node::dataplane::process::{Identifier, IdentifyConfig};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A network namespace that is deleted when this is dropped (also while unwinding).
struct NetNs {
    name: String,
}

impl NetNs {
    fn new() -> NetNs {
        let name = format!("rt-cap-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        sh(&["ip", "netns", "add", &name]);
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }
    /// `ip -n NAME ARGS`.
    fn ip(&self, args: &[&str]) {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        sh(&v);
    }
    fn nft(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "netns", "exec", &self.name, "nft"];
        v.extend_from_slice(args);
        sh(&v)
    }
    /// A capture configuration for a table only this test uses, managed inside this namespace.
    fn cfg(&self) -> CaptureConfig {
        CaptureConfig {
            table: format!("rtcap{}x{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)),
            netns: Some(self.name.clone()),
            ..CaptureConfig::default()
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

extern "C" {
    // From the C library std already links; no libc crate needed for one call.
    fn setns(fd: i32, nstype: i32) -> i32;
}
const CLONE_NEWNET: i32 = 0x4000_0000;

/// Runs `f` on a fresh thread that entered `ns`'s network namespace.
fn in_netns<R: Send>(ns: &NetNs, f: impl FnOnce() -> R + Send) -> R {
    thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(format!("/run/netns/{}", ns.name)).expect("netns file");
            // SAFETY: plain syscall on a valid fd; affects only this thread.
            let rc = unsafe { setns(file.as_raw_fd(), CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// A TCP server answering every connection with one line from `reply(stream)`; stops on drop.
struct Server {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Server {
    fn start(addr: SocketAddr, reply: impl Fn(&TcpStream) -> String + Send + 'static) -> Server {
        let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let line = reply(&s);
                        let _ = s.write_all(format!("{line}\n").as_bytes());
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server { stop, handle: Some(handle) }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn read_line(mut s: TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.trim().to_owned()
}

/// Connects as `uid`/`gid` from a child process (inherits the calling thread's namespace).
fn connect_as(uid: u32, gid: u32, host: &str, port: u16) -> String {
    let script = "import socket,sys\ns=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)\nprint(s.recv(300).decode().strip())";
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script, host, &port.to_string()])
        .uid(uid)
        .gid(gid)
        .output()
        .expect("python3");
    assert!(out.status.success(), "client uid={uid} gid={gid}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn rules(uids: &[u32], gids: &[u32], services: &[&str], inbound: &[u16]) -> CaptureRules {
    CaptureRules {
        outbound: OutboundSelection {
            uids: uids.iter().copied().collect(),
            gids: gids.iter().copied().collect(),
            cgroups: Default::default(),
            all_processes: false,
            destinations: Destinations::services(services.iter().map(|s| s.parse().unwrap())),
        },
        inbound_ports: inbound.iter().copied().collect(),
    }
}

#[test]
fn install_update_remove_and_idempotent_install() {
    let ns = NetNs::new();
    let cfg = ns.cfg();
    let cap = Capture::install(cfg.clone()).unwrap();
    let st = cap.list().unwrap().expect("table exists");
    assert_eq!(st.chains["output"].hook.as_deref(), Some("output"));
    assert_eq!(st.chains["prerouting"].hook.as_deref(), Some("prerouting"));
    for set in ["out_uids", "out_gids", "out_svc4", "out_svc6", "out_net4", "out_net6", "in_ports"] {
        assert!(st.sets[set].is_empty(), "{set} starts empty");
    }
    assert!(st.matches(&cfg, &CaptureRules::default()));

    let mut r = rules(
        &[1000, 65534],
        &[4242],
        &["10.99.0.2:8080", "[fd00:99::2]:8080", "[::ffff:10.99.0.3]:80"],
        &[9090, 9443],
    );
    if let Destinations::Only { networks, .. } = &mut r.outbound.destinations {
        networks.insert("192.168.0.0/16".parse().unwrap());
        networks.insert("192.168.1.0/24".parse().unwrap()); // merged into the /16
    }
    cap.update(&r).unwrap();
    let st = cap.list().unwrap().unwrap();
    assert_eq!(st.uids(), [1000, 65534].into());
    assert_eq!(st.gids(), [4242].into());
    assert_eq!(st.inbound_ports(), [9090, 9443].into());
    assert_eq!(
        st.services(),
        ["10.99.0.2:8080", "[fd00:99::2]:8080", "10.99.0.3:80"].iter().map(|s| s.parse().unwrap()).collect()
    );
    assert_eq!(st.sets["out_net4"].len(), 1, "auto-merge: {:?}", st.sets["out_net4"]);
    assert!(st.matches(&cfg, &r));
    let text = ns.nft(&["list", "table", "inet", &cfg.table]);
    assert!(text.contains("redirect to :15001") && text.contains("redirect to :15006"), "{text}");
    assert!(text.contains(&format!("meta mark {:#010x} return", cfg.mark)), "{text}");

    // Updating to "all destinations" swaps the destination chain, still atomically.
    let all = CaptureRules {
        outbound: OutboundSelection { destinations: Destinations::All, ..r.outbound.clone() },
        ..r.clone()
    };
    cap.update(&all).unwrap();
    let st = cap.list().unwrap().unwrap();
    assert_eq!(st.chains["out_dest"].rules, 1);
    assert!(st.services().is_empty() && st.matches(&cfg, &all));

    // Drift (someone flushed a set) is found and repaired.
    assert_eq!(cap.resync().unwrap(), Resynced::Unchanged);
    ns.nft(&["flush", "set", "inet", &cfg.table, "out_uids"]);
    assert!(matches!(cap.resync().unwrap(), Resynced::Repaired(Some(_))));
    assert_eq!(cap.list().unwrap().unwrap().uids(), [1000, 65534].into());

    // A second install of the same table is harmless: one table, fresh and empty.
    let cap2 = Capture::install(cfg.clone()).unwrap();
    let tables = ns.nft(&["list", "tables"]);
    assert_eq!(tables.matches(&format!("table inet {}\n", cfg.table)).count(), 1, "{tables}");
    assert!(cap2.list().unwrap().unwrap().uids().is_empty());

    cap2.remove().unwrap();
    assert!(cap.list().unwrap().is_none(), "removed");
    cap2.remove().unwrap(); // idempotent
    assert!(matches!(cap2.update(&r), Err(CaptureError::Removed)));
    drop(cap); // the handle whose table was replaced; it only logs
}

#[test]
fn reconcile_replaces_a_stale_table_from_a_crash() {
    let ns = NetNs::new();
    let cfg = ns.cfg();
    // "Crash": a previous run left its table, with an object the current layout lacks.
    let old = Capture::install(cfg.clone()).unwrap();
    old.update(&rules(&[1], &[], &["10.0.0.1:1"], &[1])).unwrap();
    drop(old);
    ns.nft(&["add", "chain", "inet", &cfg.table, "leftover"]);

    let want = rules(&[2], &[3], &["10.0.0.2:2"], &[4]);
    let (cap, outcome) = Capture::reconcile(cfg.clone(), want.clone()).unwrap();
    match outcome {
        Reconciled::ReplacedStale(prev) => {
            assert!(prev.chains.contains_key("leftover"));
            assert_eq!(prev.uids(), [1].into());
        }
        other => panic!("expected a stale table, got {other:?}"),
    }
    let st = cap.list().unwrap().unwrap();
    assert!(!st.chains.contains_key("leftover"));
    assert!(st.matches(&cfg, &want), "{st:?}");
    cap.remove().unwrap();

    let (cap, outcome) = Capture::reconcile(cfg.clone(), want).unwrap();
    assert_eq!(outcome, Reconciled::Fresh);
    cap.remove().unwrap();
}

#[test]
fn async_variants_and_bad_config() {
    let ns = NetNs::new();
    let cfg = ns.cfg();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let cap = Capture::install_async(cfg.clone()).await.unwrap();
        cap.update_async(rules(&[7], &[], &[], &[])).await.unwrap();
        assert_eq!(cap.list().unwrap().unwrap().uids(), [7].into());
        cap.remove_async().await.unwrap();
        assert!(cap.list().unwrap().is_none());
    });
    let bad = CaptureConfig { table: "bad name".into(), ..cfg.clone() };
    assert!(matches!(Capture::install(bad), Err(CaptureError::Config(_))));
    let missing = CaptureConfig { nft: "/nonexistent/nft".into(), netns: None, ..cfg };
    assert!(Capture::install(missing).is_err());
}

#[test]
fn outbound_redirection_by_uid_gid_and_mark() {
    let ns = NetNs::new();
    // The "remote" service lives on a veth inside the namespace (no dummy module here).
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    ns.ip(&["addr", "add", "10.99.0.2/24", "dev", "d0"]);
    ns.ip(&["addr", "add", "fd00:99::2/64", "dev", "d0", "nodad"]);
    ns.ip(&["link", "set", "d1", "up"]);
    ns.ip(&["link", "set", "d0", "up"]);
    let cfg = ns.cfg();
    let cap = Capture::install(cfg.clone()).unwrap();
    cap.update(&rules(&[0, 65534], &[4242], &["10.99.0.2:8080", "[fd00:99::2]:8080"], &[])).unwrap();
    let port = cfg.outbound_port;
    let mark = cfg.mark;

    in_netns(&ns, || {
        let ident = Arc::new(Identifier::new(IdentifyConfig::default()));
        let captured = |ident: Arc<Identifier>| {
            move |s: &TcpStream| {
                let orig = capture::original_dst(s).map(|a| a.to_string()).unwrap_or_else(|e| format!("error {e}"));
                // Identify the client while it waits for this answer (same namespace).
                let who = ident
                    .identify(s.peer_addr().unwrap(), orig.parse().unwrap_or(s.local_addr().unwrap()))
                    .map(|w| w.labels.get("process:uid").cloned().unwrap_or_default())
                    .unwrap_or_else(|e| format!("unknown ({e})"));
                format!("captured {orig} uid={who}")
            }
        };
        let _c4 = Server::start(format!("127.0.0.1:{port}").parse().unwrap(), captured(ident.clone()));
        let _c6 = Server::start(format!("[::1]:{port}").parse().unwrap(), captured(ident.clone()));
        let _d4 = Server::start("10.99.0.2:8080".parse().unwrap(), |_| "direct".into());
        let _d6 = Server::start("[fd00:99::2]:8080".parse().unwrap(), |_| "direct".into());

        // Selected uid: redirected, the original destination is recovered, and the client
        // process is identified by sock_diag inside the namespace.
        assert_eq!(connect_as(65534, 65534, "10.99.0.2", 8080), "captured 10.99.0.2:8080 uid=65534");
        assert_eq!(connect_as(65534, 65534, "fd00:99::2", 8080), "captured [fd00:99::2]:8080 uid=65534");
        // Neither uid nor gid selected: untouched.
        assert_eq!(connect_as(65533, 65533, "10.99.0.2", 8080), "direct");
        // Selected by gid.
        assert_eq!(connect_as(65533, 4242, "10.99.0.2", 8080), "captured 10.99.0.2:8080 uid=65533");
        // Not a selected destination port: untouched.
        let _other = Server::start("10.99.0.2:8081".parse().unwrap(), |_| "direct 8081".into());
        assert_eq!(connect_as(65534, 65534, "10.99.0.2", 8081), "direct 8081");

        // This thread runs as uid 0 (selected): an unmarked socket is captured...
        let plain = TcpStream::connect_timeout(&"10.99.0.2:8080".parse().unwrap(), Duration::from_secs(5)).unwrap();
        assert!(read_line(plain).starts_with("captured 10.99.0.2:8080"));
        // ...and a socket carrying the daemon's mark is not.
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        capture::mark_socket(&sock, mark).unwrap();
        sock.connect_timeout(&"10.99.0.2:8080".parse::<SocketAddr>().unwrap().into(), Duration::from_secs(5)).unwrap();
        assert_eq!(read_line(sock.into()), "direct");

        // original_dst on a connection that was not redirected (but is tracked): the address
        // it was made to.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        assert_eq!(capture::original_dst(&s).unwrap(), l.local_addr().unwrap());
    });

    // Rules changed: nothing selected any more.
    cap.update(&CaptureRules::default()).unwrap();
    in_netns(&ns, || {
        let _d4 = Server::start("10.99.0.2:8080".parse().unwrap(), |_| "direct".into());
        assert_eq!(connect_as(65534, 65534, "10.99.0.2", 8080), "direct");
    });
    cap.remove().unwrap();
}

#[test]
fn inbound_redirection_for_covered_ports() {
    let client_ns = NetNs::new();
    let node_ns = NetNs::new();
    client_ns.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &node_ns.name]);
    client_ns.ip(&["addr", "add", "10.99.1.1/24", "dev", "va"]);
    client_ns.ip(&["link", "set", "va", "up"]);
    node_ns.ip(&["addr", "add", "10.99.1.2/24", "dev", "vb"]);
    node_ns.ip(&["link", "set", "vb", "up"]);
    let cfg = node_ns.cfg();
    let cap = Capture::install(cfg.clone()).unwrap();
    cap.update(&rules(&[], &[], &[], &[9090])).unwrap();
    let inbound = cfg.inbound_port;

    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    thread::scope(|s| {
        s.spawn(|| {
            in_netns(&node_ns, move || {
                let _i = Server::start(format!("0.0.0.0:{inbound}").parse().unwrap(), |s| {
                    let orig = capture::original_dst(s).map(|a| a.to_string()).unwrap_or_else(|e| format!("error {e}"));
                    format!("inbound {orig} from {}", s.peer_addr().unwrap().ip())
                });
                let _d = Server::start("10.99.1.2:9091".parse().unwrap(), |_| "direct".into());
                ready_tx.send(()).unwrap();
                let _ = done_rx.recv_timeout(Duration::from_secs(30));
            })
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            in_netns(&client_ns, || {
                let connect = |port: u16| {
                    let addr: SocketAddr = format!("10.99.1.2:{port}").parse().unwrap();
                    let deadline = Instant::now() + Duration::from_secs(5);
                    loop {
                        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                            Ok(s) => return read_line(s),
                            Err(e) if Instant::now() < deadline => {
                                eprintln!("retrying {addr}: {e}");
                                thread::sleep(Duration::from_millis(100));
                            }
                            Err(e) => panic!("{addr}: {e}"),
                        }
                    }
                };
                assert_eq!(connect(9090), "inbound 10.99.1.2:9090 from 10.99.1.1");
                assert_eq!(connect(9091), "direct");
            })
        }));
        done_tx.send(()).unwrap();
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
    });
    cap.remove().unwrap();
}

#[test]
fn namespaces_are_removed_by_the_guard_even_on_panic() {
    let name = std::panic::catch_unwind(|| {
        let ns = NetNs::new();
        let name = ns.name.clone();
        if !name.is_empty() {
            panic!("{name}");
        }
        name
    })
    .unwrap_err();
    let name = name.downcast_ref::<String>().unwrap().clone();
    let list = sh(&["ip", "netns", "list"]);
    assert!(!list.lines().any(|l| l.split_whitespace().next() == Some(name.as_str())), "{name} still in {list}");
}
