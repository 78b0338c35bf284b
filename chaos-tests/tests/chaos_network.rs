//! Chaos scenarios on the network path between NAT'd daemons and the control plane (issue 6):
//! NAT rebinding (1), partition of one site while policy changes (3), random loss and a UDP
//! block (4). Topology: the control plane on a core LAN, two NAT sites (nftables masquerade)
//! with two daemons each (`--dataplane none`), every connection daemon-initiated.
//!
//! Each test adds rows to the result table (see `chaos/mod.rs`) and fails if a revision or an
//! acknowledged write was lost, a process crashed, or recovery exceeded the bound stated here.

mod chaos;

use std::time::{Duration, Instant};

use chaos::*;
use riptides_chaos_tests::Faults;

const IDS: [(&str, usize); 4] = [("s1-a", 0), ("s1-b", 0), ("s2-a", 1), ("s2-b", 1)];

/// Two sites, two daemons each, all ready with their daemon and workload SVIDs.
fn two_sites(prefix: &str) -> Cluster {
    let mut c = Cluster::new(prefix, 2, &[]);
    for (id, site) in IDS {
        c.workload_for(id);
        c.add_daemon(id, site, Dataplane::None);
    }
    let all: Vec<usize> = (0..c.daemons.len()).collect();
    c.wait_ready(&all, 2, Duration::from_secs(90));
    c
}

fn fmt_times(t: &[Option<Duration>]) -> String {
    let v: Vec<String> =
        t.iter().map(|t| t.map_or("none".to_owned(), |d| format!("{:.1}s", d.as_secs_f64()))).collect();
    format!("[{}]", v.join(", "))
}

fn items(c: &Cluster, i: usize) -> u64 {
    admin_json(&c.daemons[i].host, "/config_dump").and_then(|v| v["policy"]["items"].as_u64()).unwrap_or(0)
}

/// NAT rebinding: both routers move their masquerade port range and flush conntrack while the
/// daemons are connected, so the control plane sees every daemon's packets from a new source
/// port. The QUIC session must migrate (quinn: migration enabled on the server) or reconnect,
/// and a policy change applied right after the rebind must reach every daemon.
///
/// Bound: 45 s from the rebind to the change being visible in every daemon's `/config_dump`.
/// Until a daemon sends its next packet (keep-alive every 10 s) the control plane's packets
/// to the old mapping are dropped by the router, so up to ~10 s plus QUIC's probe backoff is
/// expected; 45 s leaves room for a full reconnect on a loaded machine.
#[test]
fn nat_rebinding_keeps_policy_flowing() {
    const BOUND: Duration = Duration::from_secs(45);
    let mut c = two_sites("chrb");
    let all: Vec<usize> = (0..c.daemons.len()).collect();
    let before = c.store_snapshot();
    let r0: Vec<u64> = all.iter().map(|&i| c.reconnects(i)).collect();
    let f0: Vec<usize> = all.iter().map(|&i| c.dial_failures(i)).collect();
    let items0: Vec<u64> = all.iter().map(|&i| items(&c, i)).collect();

    let t0 = Instant::now();
    let rb: Vec<_> = c.routers.iter().map(|r| r.rebind().expect("rebind")).collect();
    let rev = c.policy_change();
    let times = c.wait_revision(&all, rev, BOUND);
    let recovery = times.iter().flatten().max().copied();
    // Connected again (or still) afterwards.
    c.wait_ready(&all, 2, Duration::from_secs(30));
    let _ = t0;

    let reconnected: Vec<u64> = all.iter().map(|&i| c.reconnects(i).saturating_sub(r0[i])).collect();
    let failures: usize = all.iter().map(|&i| c.dial_failures(i) - f0[i]).sum();
    let lost_revs = times.iter().filter(|t| t.is_none()).count() as u64
        + all.iter().filter(|&&i| items(&c, i) != items0[i] + 1).count() as u64;
    let (writes_lost, lost) = c.writes_lost(&before);
    let crashed = c.crashed();
    let migrated = reconnected.iter().filter(|r| **r == 0).count();
    record(Row {
        scenario: "1 NAT rebinding (2 sites x 2 daemons)".into(),
        recovery: recovery.map_or("not recovered".into(), secs),
        bound: secs(BOUND),
        reconnect_attempts: format!("{} ({} failed dials)", reconnected.iter().sum::<u64>(), failures),
        revisions_lost: lost_revs,
        writes_lost,
        crashed: crashed.len() as u64,
        notes: format!(
            "{migrated}/4 sessions migrated, {}/4 reconnected; per daemon {}; conntrack flush {:?}",
            4 - migrated,
            fmt_times(&times),
            rb.iter().map(|r| r.conntrack_flushed).collect::<Vec<_>>()
        ),
    });
    print_table();
    assert!(rb.iter().all(|r| r.conntrack_flushed.is_some()), "conntrack was not flushed: {rb:?}");
    assert!(crashed.is_empty(), "crashed: {crashed:?}");
    assert_eq!(writes_lost, 0, "{lost:?}");
    assert_eq!(
        lost_revs, 0,
        "the policy change after the rebind did not reach every daemon within {BOUND:?}: {times:?}"
    );
}

/// Partition of one NAT site (its router's upstream cable cut) while the policy changes three
/// times. The other site must get every change while the partition lasts (the change flows),
/// the cut site must not (the partition is real), and on heal the cut site's daemons converge
/// to the latest revision with every change in their document.
///
/// Bound: 30 s from heal to the latest revision on both daemons of the healed site. The
/// partition lasts ~10 s, shorter than the QUIC idle timeout (30 s), so sessions normally
/// survive and QUIC retransmits; a reconnect (backoff capped at 30 s, first attempts well under
/// that) also fits.
#[test]
fn site_partition_converges_on_heal() {
    const BOUND: Duration = Duration::from_secs(30);
    let mut c = two_sites("chpt");
    let site1 = c.site_daemons(0);
    let site2 = c.site_daemons(1);
    let all: Vec<usize> = (0..c.daemons.len()).collect();
    let before = c.store_snapshot();
    let r0: Vec<u64> = all.iter().map(|&i| c.reconnects(i)).collect();
    let f0: Vec<usize> = all.iter().map(|&i| c.dial_failures(i)).collect();
    let items0: Vec<u64> = all.iter().map(|&i| items(&c, i)).collect();

    c.routers[0].cut().expect("cut");
    let cut_at = Instant::now();
    let mut revs = Vec::new();
    for _ in 0..3 {
        revs.push(c.policy_change());
        std::thread::sleep(Duration::from_millis(500));
    }
    let last = *revs.last().unwrap();
    let other = c.wait_revision(&site2, last, Duration::from_secs(20));
    assert!(other.iter().all(Option::is_some), "the uncut site did not get the changes: {other:?}\n{}", c.dump_logs());
    let leaked: Vec<Option<u64>> = site1.iter().map(|&i| c.revision(i)).collect();
    assert!(
        leaked.iter().all(|r| r.is_some_and(|r| r < last)),
        "the cut site got the change through the partition? {leaked:?}"
    );
    std::thread::sleep(Duration::from_secs(10).saturating_sub(cut_at.elapsed()));
    let partition = cut_at.elapsed();

    c.routers[0].heal().expect("heal");
    let times = c.wait_revision(&site1, last, BOUND);
    let recovery = times.iter().flatten().max().copied();
    c.wait_ready(&all, 2, Duration::from_secs(30));

    let reconnected: u64 = all.iter().map(|&i| c.reconnects(i).saturating_sub(r0[i])).sum();
    let failures: usize = all.iter().map(|&i| c.dial_failures(i) - f0[i]).sum();
    let lost_revs = times.iter().filter(|t| t.is_none()).count() as u64
        + all.iter().map(|&i| 3u64.saturating_sub(items(&c, i).saturating_sub(items0[i]))).sum::<u64>();
    let (writes_lost, lost) = c.writes_lost(&before);
    let crashed = c.crashed();
    record(Row {
        scenario: "3 partition of one NAT site, 3 policy changes".into(),
        recovery: recovery.map_or("not recovered".into(), secs),
        bound: secs(BOUND),
        reconnect_attempts: format!("{reconnected} ({failures} failed dials)"),
        revisions_lost: lost_revs,
        writes_lost,
        crashed: crashed.len() as u64,
        notes: format!(
            "partition {}; revisions {:?}; healed site per daemon {}",
            secs(partition),
            revs,
            fmt_times(&times)
        ),
    });
    print_table();
    assert!(crashed.is_empty(), "crashed: {crashed:?}");
    assert_eq!(writes_lost, 0, "{lost:?}");
    assert_eq!(
        lost_revs,
        0,
        "the healed site did not converge to revision {last} within {BOUND:?}: {times:?}\n{}",
        c.dump_logs()
    );
}

/// Random loss on the path (10% on one site's router, 20% on the other's, every forwarded
/// packet both ways): three policy changes still reach every daemon. Then UDP blocked entirely
/// for a fresh daemon (its own host drops all UDP): it attests and connects over the TCP+TLS
/// tunnel, the control plane records `status.transport: tcp+tls` in its Daemon resource, and
/// policy reaches it there.
///
/// Bounds: 60 s for the changes under loss (QUIC recovers lost packets; a session that dies
/// reconnects); 60 s for the fresh daemon to be ready over TCP (the QUIC attempt times out after
/// 5 s first, then TCP+TLS) and 20 s for a change to reach it.
#[test]
fn loss_and_udp_block() {
    const LOSS_BOUND: Duration = Duration::from_secs(60);
    const TCP_BOUND: Duration = Duration::from_secs(60);
    let mut c = two_sites("chls");
    let all: Vec<usize> = (0..c.daemons.len()).collect();
    let before = c.store_snapshot();
    let r0: Vec<u64> = all.iter().map(|&i| c.reconnects(i)).collect();
    let f0: Vec<usize> = all.iter().map(|&i| c.dial_failures(i)).collect();
    let items0: Vec<u64> = all.iter().map(|&i| items(&c, i)).collect();

    c.routers[0].ns().set_faults(&Faults::loss(10)).unwrap();
    c.routers[1].ns().set_faults(&Faults::loss(20)).unwrap();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    // Three changes 4 s apart under loss; each must reach all four daemons.
    let mut per_change = Vec::new();
    let mut missing = 0u64;
    for _ in 0..3 {
        let applied = Instant::now();
        let rev = c.policy_change();
        let acked = applied.elapsed();
        let times = c.wait_revision(&all, rev, LOSS_BOUND);
        missing += times.iter().filter(|t| t.is_none()).count() as u64;
        // From the start of the apply command to visible on the slowest daemon.
        per_change.push(if times.iter().all(Option::is_some) {
            times.iter().flatten().max().map(|d| acked + *d)
        } else {
            None
        });
        std::thread::sleep(Duration::from_secs(4).saturating_sub(applied.elapsed()));
    }
    let recovery = per_change.iter().flatten().max().copied();
    let under_loss = t0.elapsed();
    c.routers[0].ns().clear_faults().unwrap();
    c.routers[1].ns().clear_faults().unwrap();
    c.wait_ready(&all, 2, Duration::from_secs(60));
    let reconnected: u64 = all.iter().map(|&i| c.reconnects(i).saturating_sub(r0[i])).sum();
    let failures: usize = all.iter().map(|&i| c.dial_failures(i) - f0[i]).sum();
    let lost_revs =
        missing + all.iter().map(|&i| 3u64.saturating_sub(items(&c, i).saturating_sub(items0[i]))).sum::<u64>();
    let crashed_loss = c.crashed();
    record(Row {
        scenario: "4a loss 10% / 20% on the site routers, 3 policy changes".into(),
        recovery: recovery.map_or("not recovered".into(), secs),
        bound: secs(LOSS_BOUND),
        reconnect_attempts: format!("{reconnected} ({failures} failed dials)"),
        revisions_lost: lost_revs,
        writes_lost: 0,
        crashed: crashed_loss.len() as u64,
        notes: format!(
            "recovery = slowest change from apply to visible on all 4; per change {}; loss held {}",
            fmt_times(&per_change),
            secs(under_loss)
        ),
    });

    // UDP blocked for a fresh daemon.
    c.workload_for("s1-tcp");
    let i = c.prepare_daemon("s1-tcp", 0, Dataplane::None);
    c.daemons[i].host.set_faults(&Faults::block_udp()).unwrap();
    let t1 = Instant::now();
    c.start_daemon(i);
    c.wait_ready(&[i], 2, TCP_BOUND);
    let ready_in = t1.elapsed();
    let dump = admin_json(&c.daemons[i].host, "/config_dump").unwrap();
    let status = wait_until("the Daemon resource's status.transport", Duration::from_secs(20), || {
        let d = c.list("daemons/s1-tcp")?.into_iter().next()?;
        d["status"]["transport"].as_str().map(|_| d["status"].clone())
    });
    let rev = c.policy_change();
    let tcp_change = c.wait_revision(&[i], rev, Duration::from_secs(20))[0];
    let (writes_lost, lost) = c.writes_lost(&before);
    let crashed = c.crashed();
    let log = c.daemons[i].proc.log();
    record(Row {
        scenario: "4b UDP blocked, fresh daemon".into(),
        recovery: secs(ready_in),
        bound: secs(TCP_BOUND),
        reconnect_attempts: format!("{} failed QUIC dials", count(&log, "QUIC connection failed")),
        revisions_lost: u64::from(tcp_change.is_none()),
        writes_lost,
        crashed: crashed.len() as u64,
        notes: format!(
            "recovery = start -> ready over TCP; status.transport={}; /config_dump transport={}; change over TCP in {}",
            status["transport"],
            dump["transport"],
            fmt_times(&[tcp_change])
        ),
    });
    print_table();
    assert!(crashed_loss.is_empty() && crashed.is_empty(), "crashed: {crashed_loss:?} {crashed:?}");
    assert_eq!(lost_revs, 0, "policy under loss did not reach every daemon within {LOSS_BOUND:?}: {per_change:?}");
    assert_eq!(writes_lost, 0, "{lost:?}");
    assert!(status["transport"].as_str().unwrap_or_default().starts_with("tcp"), "Daemon status: {status}");
    assert!(dump["transport"].as_str().unwrap_or_default().starts_with("tcp"), "{dump}");
    assert!(tcp_change.is_some(), "a policy change did not reach the TCP daemon");
}
