//! Harness self-tests in real network namespaces (root). Without root they
//! are skipped with a message, unless `RIPTIDES_NETNS_REQUIRED=1`, which
//! turns the skip into a failure (set it in CI).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use riptides_chaos_tests::{
    cleanup_stale, count_udp, harness_namespaces, list_namespaces, wait_for_port, ConntrackFlush, Error, Faults,
    Namespace, Topology,
};

fn available() -> bool {
    match riptides_chaos_tests::check_available() {
        Ok(()) => true,
        Err(e) if std::env::var_os("RIPTIDES_NETNS_REQUIRED").is_some() => panic!("{e}"),
        Err(e) => {
            eprintln!("skipping namespace test: {e}");
            false
        }
    }
}

const T: Duration = Duration::from_secs(2);

/// Ping until it answers (ARP, link coming up) or `within` passes.
fn ping_within(ns: &Namespace, to: Ipv4Addr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if ns.can_ping(to, Duration::from_millis(300)) {
            return true;
        }
    }
    false
}

#[test]
fn lan_hosts_ping_each_other() -> anyhow::Result<()> {
    if !available() {
        return Ok(());
    }
    let mut topo = Topology::new("tping")?;
    let lan = topo.lan("core")?;
    let a = topo.host("a", lan)?;
    let b = topo.host("b", lan)?;
    assert_eq!(a.addr(), Ipv4Addr::new(10, 213, 1, 10));
    assert_eq!(b.addr(), Ipv4Addr::new(10, 213, 1, 11));
    let rtt = a.ping(b.addr(), T)?;
    eprintln!("a -> b rtt {rtt:?}");
    b.ping(a.addr(), T)?;
    // Nobody at .99: a bounded timeout error, not a hang.
    let err = a.ping(Ipv4Addr::new(10, 213, 1, 99), Duration::from_millis(300)).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    // The host's interface is inside its own namespace, not in ours.
    let links = a.ip(["-o", "link"])?;
    assert!(links.contains("eth0@"), "{links}");
    Ok(())
}

#[test]
fn tcp_echo_python_server_rust_client() -> anyhow::Result<()> {
    if !available() {
        return Ok(());
    }
    let mut topo = Topology::new("techo")?;
    let lan = topo.lan("core")?;
    let client = topo.host("client", lan)?;
    let server = topo.host("server", lan)?;
    let script = "import socket\n\
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
s.bind(('0.0.0.0', 7007)); s.listen()\n\
while True:\n    c,_=s.accept(); d=c.recv(100); c.sendall(d); c.close()\n";
    let srv = server.spawn("python3", ["-c", script])?;
    wait_for_port(&client, server.addr(), 7007, Duration::from_secs(5))
        .map_err(|e| anyhow::anyhow!("{e}; server log: {}", srv.log()))?;
    let to = SocketAddr::from((server.addr(), 7007));
    let reply = client.run_in(move || -> std::io::Result<Vec<u8>> {
        let mut s = std::net::TcpStream::connect_timeout(&to, T)?;
        s.set_read_timeout(Some(T))?;
        s.write_all(b"riptides echo")?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        Ok(buf)
    })??;
    assert_eq!(reply, b"riptides echo");
    Ok(())
}

#[test]
fn nat_source_is_router_and_rebind_changes_port() -> anyhow::Result<()> {
    if !available() {
        return Ok(());
    }
    let mut topo = Topology::new("tnat")?;
    let core = topo.lan("core")?;
    let cp = topo.host("cp", core)?;
    let (site, router) = topo.nat_site("s1", core)?;
    let node = topo.host("node", site)?;
    assert_eq!(router.lan_addr(), Ipv4Addr::new(10, 213, 2, 1));
    assert_eq!(node.addr(), Ipv4Addr::new(10, 213, 2, 10));

    // TCP: the core host sees the router's WAN address.
    let listener = cp.run_in(|| TcpListener::bind("0.0.0.0:7100"))??;
    let acceptor = std::thread::spawn(move || listener.accept().map(|(_, peer)| peer));
    let _conn = node.tcp_connect(SocketAddr::from((cp.addr(), 7100)), T)?;
    let peer = acceptor.join().unwrap()?;
    assert_eq!(peer.ip(), router.wan_addr(), "core host must see the NAT address");

    // The core cannot reach the private site address (no route, NAT only).
    assert!(!cp.can_ping(node.addr(), Duration::from_millis(300)));
    // The site reaches the core with ICMP too.
    node.ping(cp.addr(), T)?;

    // UDP flow, then NAT rebinding: same client socket, new public port.
    let rx = cp.udp_bind("0.0.0.0:7200".parse()?)?;
    rx.set_read_timeout(Some(T))?;
    let tx = node.udp_bind("0.0.0.0:0".parse()?)?;
    let dst = SocketAddr::from((cp.addr(), 7200));
    let mut buf = [0u8; 16];
    tx.send_to(b"one", dst)?;
    let (_, from1) = rx.recv_from(&mut buf)?;
    assert_eq!(from1.ip(), router.wan_addr());
    assert!(!router.ns().conntrack_entries()?.is_empty());

    let rebind = router.rebind()?;
    eprintln!("rebind: {rebind:?}");
    assert!(
        matches!(rebind.conntrack_flushed, Some(ConntrackFlush::Netlink | ConntrackFlush::Tool)),
        "conntrack flush must work here"
    );
    tx.send_to(b"two", dst)?;
    let (_, from2) = rx.recv_from(&mut buf)?;
    assert_eq!(from2.ip(), router.wan_addr());
    assert_ne!(from1.port(), from2.port(), "rebinding must change the public port");
    let (lo, hi) = rebind.port_range;
    assert!((lo..=hi).contains(&from2.port()), "{from2} not in {lo}-{hi}");
    Ok(())
}

#[test]
fn link_cut_and_heal() -> anyhow::Result<()> {
    if !available() {
        return Ok(());
    }
    let mut topo = Topology::new("tcut")?;
    let core = topo.lan("core")?;
    let cp = topo.host("cp", core)?;
    let peer = topo.host("peer", core)?;
    let (site, router) = topo.nat_site("s1", core)?;
    let node = topo.host("node", site)?;
    assert!(ping_within(&node, cp.addr(), T));

    // Partition the whole site.
    router.cut()?;
    assert!(!node.can_ping(cp.addr(), Duration::from_millis(300)));
    let listener = cp.run_in(|| TcpListener::bind("0.0.0.0:7300"))??;
    assert!(node.tcp_connect(SocketAddr::from((cp.addr(), 7300)), Duration::from_millis(300)).is_err());
    router.heal()?;
    assert!(ping_within(&node, cp.addr(), T), "heal must restore traffic");
    node.tcp_connect(SocketAddr::from((cp.addr(), 7300)), T)?;
    drop(listener);

    // A single host's cable.
    peer.cut()?;
    assert!(!cp.can_ping(peer.addr(), Duration::from_millis(300)));
    peer.heal()?;
    assert!(ping_within(&cp, peer.addr(), T));
    Ok(())
}

/// Send `n` datagrams from `tx` to `dst` while a thread counts arrivals.
fn udp_burst(tx: &UdpSocket, rx: UdpSocket, dst: SocketAddr, n: usize) -> anyhow::Result<usize> {
    let counter = std::thread::spawn(move || count_udp(&rx, Duration::from_millis(300), Duration::from_secs(5)));
    for i in 0..n {
        tx.send_to(&(i as u32).to_be_bytes(), dst)?;
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(counter.join().unwrap()?.0)
}

#[test]
fn loss_and_udp_block() -> anyhow::Result<()> {
    if !available() {
        return Ok(());
    }
    let mut topo = Topology::new("tloss")?;
    let core = topo.lan("core")?;
    let cp = topo.host("cp", core)?;
    let (site, router) = topo.nat_site("s1", core)?;
    let node = topo.host("node", site)?;
    let tx = node.udp_bind("0.0.0.0:0".parse()?)?;
    let dst = SocketAddr::from((cp.addr(), 7400));
    let rx = || cp.udp_bind("0.0.0.0:7400".parse().unwrap());

    // Baseline: nothing lost.
    assert_eq!(udp_burst(&tx, rx()?, dst, 200)?, 200);

    // 30% random loss on forwarded UDP at the router.
    router.ns().set_faults(&Faults::udp_loss(30))?;
    let got = udp_burst(&tx, rx()?, dst, 1000)?;
    let lost = 1000 - got;
    eprintln!("30% loss rule: {lost}/1000 lost");
    assert!((150..=450).contains(&lost), "lost {lost} of 1000 with a 30% rule");
    // TCP unaffected by a UDP-only rule.
    let l = cp.run_in(|| TcpListener::bind("0.0.0.0:7401"))??;
    node.tcp_connect(SocketAddr::from((cp.addr(), 7401)), T)?;

    // UDP blocked entirely; TCP still flows.
    router.ns().set_faults(&Faults::block_udp())?;
    assert_eq!(udp_burst(&tx, rx()?, dst, 50)?, 0);
    node.tcp_connect(SocketAddr::from((cp.addr(), 7401)), T)?;
    drop(l);

    router.ns().clear_faults()?;
    assert_eq!(udp_burst(&tx, rx()?, dst, 100)?, 100);
    let ruleset = router.ns().nft_cmd(["list", "ruleset"])?;
    assert!(!ruleset.contains("riptides_faults"), "{ruleset}");
    Ok(())
}

#[test]
fn errors_carry_command_line_and_stderr_and_are_bounded() -> anyhow::Result<()> {
    if !available() {
        return Ok(());
    }
    let ns = Namespace::create("terr")?;
    let err = ns.exec("sh", ["-c", "echo oops-marker >&2; exit 3"]).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&format!("ip netns exec {} sh -c", ns.name())), "{msg}");
    assert!(msg.contains("oops-marker"), "{msg}");
    let start = Instant::now();
    let err = ns.command("sleep").arg("5").timeout(Duration::from_millis(200)).output().unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(start.elapsed() < Duration::from_secs(2));
    let err = ns.nft("this is not nft").unwrap_err().to_string();
    assert!(err.contains("nft -f -") && err.contains("syntax error"), "{err}");
    Ok(())
}

#[test]
fn cleanup_on_drop_on_panic_and_of_stale_runs() -> anyhow::Result<()> {
    if !available() {
        return Ok(());
    }
    // Normal drop, with a process running inside.
    let pid;
    {
        let mut topo = Topology::new("tclean")?;
        let lan = topo.lan("l")?;
        let h = topo.host("h", lan)?;
        let child = h.spawn("sleep", ["30"])?;
        pid = child.pid();
        assert_eq!(harness_namespaces("tclean")?.len(), 2);
        std::mem::forget(child); // even a leaked guard's process dies with the namespace
    }
    assert!(harness_namespaces("tclean")?.is_empty());
    std::thread::sleep(Duration::from_millis(50));
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(state.is_empty() || state.contains(") Z"), "process left running: {state}");

    // Panic inside a test body.
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut topo = Topology::new("tpanic").unwrap();
        let core = topo.lan("core").unwrap();
        let h = topo.host("h", core).unwrap();
        let _nat = topo.nat_site("s", core).unwrap();
        let _p = h.spawn("sleep", ["30"]).unwrap();
        assert_eq!(harness_namespaces("tpanic").unwrap().len(), 5);
        panic!("deliberate");
    }));
    assert!(result.is_err());
    assert!(harness_namespaces("tpanic")?.is_empty(), "{:?}", list_namespaces()?);

    // A crashed earlier run: our pattern with a dead pid is removed; ours
    // (live pid) is not.
    let mut dead = std::process::Command::new("true").spawn()?;
    let dead_pid = dead.id();
    dead.wait()?;
    let stale = format!("rt-tstale-{dead_pid}-0");
    std::process::Command::new("ip").args(["netns", "add", &stale]).status()?;
    let live = Namespace::create("tstale")?;
    let removed = cleanup_stale("tstale")?;
    assert_eq!(removed, vec![stale.clone()]);
    let names = list_namespaces()?;
    assert!(!names.contains(&stale));
    assert!(names.contains(&live.name().to_string()));
    drop(live);
    assert!(harness_namespaces("tstale")?.is_empty());
    Ok(())
}
