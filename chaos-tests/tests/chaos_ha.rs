//! Chaos scenario of issue 10: control-plane replicas behind the NAT'd daemons.
//!
//! A "datacenter" LAN with three hosts, each running one member of a three-member etcd cluster
//! and one real `riptides-controlplane --store etcd` replica (all sharing the CA through the
//! seal key: the first replica publishes it, the others import it). Two daemons, each behind
//! its own NAT router, are given all three replica addresses. The replica each daemon is
//! connected to (read from the daemon's log, `connected to the control plane remote=...`) is
//! killed with SIGKILL; then a policy change is applied through a surviving replica.
//!
//! Checked: both daemons reconnect to a surviving replica and reach the revision of the change
//! (policy revisions are etcd revisions, the same on every replica); every Service acknowledged
//! before and after the kill is in the store with its acknowledged resourceVersion (no
//! acknowledged write lost); no process the test did not kill died or panicked. Waiting uses
//! generous deadlines; times are reported, not asserted.

mod chaos;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chaos::*;
use riptides_chaos_tests::{Host, OutputTo, Topology};
use serde_json::Value;

const SEAL_KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
// Generous: waiting ends as soon as the condition holds; failover after a SIGKILL takes the
// daemon's QUIC idle timeout (15 s, `riptides_wire::transport::DEFAULT_IDLE_TIMEOUT`), and CI
// runs this beside the whole suite on two cores.
const WAIT: Duration = Duration::from_secs(120);

struct Ha {
    dir: tempfile::TempDir,
    dc: Vec<Host>,
    etcd: Vec<Proc>,
    replicas: Vec<Proc>,
    daemons: Vec<(String, Host, Proc)>,
    pin: String,
    acked: Vec<(String, u64)>,
    // Last: the namespaces go after the processes in them.
    topo: Topology,
}

impl Ha {
    fn kubeconfig(&self, r: usize) -> PathBuf {
        self.dir.path().join(format!("cp{r}/admin.kubeconfig"))
    }

    /// The CLI run on replica `r`'s host (its kubeconfig points at that replica's loopback).
    fn ctl(&self, r: usize, args: &[&str], stdin: Option<String>) -> std::process::Output {
        let mut c = self.dc[r]
            .command(bin("riptides"))
            .arg("--kubeconfig")
            .arg(self.kubeconfig(r))
            .args(args)
            .timeout(Duration::from_secs(30));
        if let Some(s) = stdin {
            c = c.stdin(s.into_bytes());
        }
        c.output_unchecked().expect("riptides CLI")
    }

    fn apply(&self, r: usize, yaml: &str) {
        let out = self.ctl(r, &["ctl", "apply", "-f", "-"], Some(yaml.to_owned()));
        assert!(out.status.success(), "apply via replica {r} failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn list(&self, r: usize, what: &str) -> Option<Vec<Value>> {
        let out = self.ctl(r, &["ctl", "get", what, "-o", "json"], None);
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(match v {
            Value::Array(a) => a,
            Value::Object(ref o) if o.contains_key("items") => v["items"].as_array().cloned().unwrap_or_default(),
            other => vec![other],
        })
    }

    /// A new Service applied through replica `r`; returns its acknowledged resourceVersion.
    fn policy_change(&mut self, r: usize) -> u64 {
        let n = self.acked.len() + 1;
        let name = format!("ha-{n}");
        self.apply(
            r,
            &format!(
                "apiVersion: core.riptides.io/v1alpha1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  labels:\n    \
                 tier: chaos\n  addresses:\n    - address: 10.213.251.{n}\n      port: {}\n",
                9000 + n
            ),
        );
        let obj = self.list(r, &format!("services/{name}")).and_then(|v| v.into_iter().next()).expect("applied");
        let rv = rv_of(&obj);
        assert!(rv > 0, "resourceVersion of {name}: {obj}");
        self.acked.push((name, rv));
        rv
    }

    fn revision(&self, d: usize) -> Option<u64> {
        admin_json(&self.daemons[d].1, "/config_dump")?["policy"]["revision"].as_u64()
    }

    /// The replica (index into `dc`) daemon `d` last logged a connection to.
    fn connected_to(&self, d: usize) -> Option<usize> {
        let log = strip_ansi(&self.daemons[d].2.log());
        let line = log.lines().rev().find(|l| l.contains("connected to the control plane"))?;
        let remote = line.split_whitespace().find_map(|w| w.strip_prefix("remote="))?;
        let ip: Ipv4Addr = remote.rsplit_once(':')?.0.parse().ok()?;
        self.dc.iter().position(|h| h.addr() == ip)
    }

    fn dump_logs(&self) -> String {
        let mut s = String::new();
        for (i, p) in self.replicas.iter().enumerate() {
            s.push_str(&format!("--- replica {i} ---\n{}\n", tail(&p.log(), 30)));
        }
        for (i, p) in self.etcd.iter().enumerate() {
            s.push_str(&format!("--- etcd {i} ---\n{}\n", tail(&p.log(), 10)));
        }
        for (id, _, p) in &self.daemons {
            s.push_str(&format!("--- {id} ---\n{}\n", tail(&p.log(), 30)));
        }
        s
    }
}

impl Drop for Ha {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.dump_logs());
        }
    }
}

fn spawn(host: &Host, program: PathBuf, args: &[String], log: PathBuf, seal: bool) -> Proc {
    let mut c = host.command(program).args(args).env("RUST_LOG", "info").env("NO_COLOR", "1");
    if seal {
        c = c.env("RIPTIDES_CA_SEAL_KEY", SEAL_KEY_HEX);
    }
    let g = c.output_to(OutputTo::File(log.clone())).spawn().expect("spawn");
    Proc { guard: Some(g), log, expected_down: false }
}

fn start_replica(ha: &Ha, r: usize, endpoints: &str) -> Proc {
    let mut args = riptides_chaos_tests::product::controlplane_args(&ha.dir.path().join(format!("cp{r}")), TD);
    for a in ["--store", "etcd", "--etcd-endpoints", endpoints, "--leader-lease-secs", "4", "--replica-name"] {
        args.push(a.to_owned());
    }
    args.push(format!("cp{r}"));
    spawn(&ha.dc[r], bin("riptides-controlplane"), &args, ha.dir.path().join(format!("cp{r}.log")), true)
}

fn wait_pin(p: &Proc) -> String {
    wait_until("a replica's CA pin line", WAIT, || riptides_chaos_tests::product::ca_pin_in_log(&p.log()))
}

fn setup() -> Ha {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut topo = Topology::new("chha").expect("network namespaces (the chaos suite needs root, ip and nft)");
    let lan = topo.lan("dc").unwrap();
    let dc: Vec<Host> = (0..3).map(|i| topo.host(&format!("dc{i}"), lan).unwrap()).collect();
    let mut ha = Ha {
        dir,
        dc,
        etcd: Vec::new(),
        replicas: Vec::new(),
        daemons: Vec::new(),
        pin: String::new(),
        acked: Vec::new(),
        topo,
    };

    // etcd: one member per datacenter host.
    let cluster: Vec<String> =
        ha.dc.iter().enumerate().map(|(i, h)| format!("m{i}=http://{}:2380", h.addr())).collect();
    for i in 0..3 {
        let a = ha.dc[i].addr();
        let args: Vec<String> = [
            "--name",
            &format!("m{i}"),
            "--data-dir",
            &ha.dir.path().join(format!("etcd{i}")).display().to_string(),
            "--listen-client-urls",
            &format!("http://{a}:2379"),
            "--advertise-client-urls",
            &format!("http://{a}:2379"),
            "--listen-peer-urls",
            &format!("http://{a}:2380"),
            "--initial-advertise-peer-urls",
            &format!("http://{a}:2380"),
            "--initial-cluster",
            &cluster.join(","),
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            "chaos-ha",
            "--heartbeat-interval",
            "100",
            "--election-timeout",
            "1000",
            "--log-level",
            "warn",
            "--logger",
            "zap",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = spawn(&ha.dc[i], PathBuf::from("etcd"), &args, ha.dir.path().join(format!("etcd{i}.log")), false);
        ha.etcd.push(p);
    }
    for i in 0..3 {
        let h = &ha.dc[i];
        wait_until(&format!("etcd member {i} healthy"), WAIT, || {
            let out = sh(h, &format!("curl -s --max-time 2 http://{}:2379/health", h.addr()));
            String::from_utf8_lossy(&out.stdout).contains("\"true\"").then_some(())
        });
    }
    let endpoints: Vec<String> = ha.dc.iter().map(|h| format!("http://{}:2379", h.addr())).collect();
    let endpoints = endpoints.join(",");

    // The first replica publishes the CA; the others import it (same pin).
    let p = start_replica(&ha, 0, &endpoints);
    ha.pin = wait_pin(&p);
    ha.replicas.push(p);
    for r in 1..3 {
        let p = start_replica(&ha, r, &endpoints);
        ha.replicas.push(p);
    }
    for r in 1..3 {
        assert_eq!(wait_pin(&ha.replicas[r]), ha.pin, "replica {r} shares the CA");
    }
    for r in 0..3 {
        wait_until(&format!("replica {r}'s API"), WAIT, || {
            ha.ctl(r, &["ctl", "get", "daemons", "-o", "json"], None).status.success().then_some(())
        });
    }

    // Two daemons, each behind its own NAT router, given all three replicas.
    for (k, id) in ["node-a", "node-b"].into_iter().enumerate() {
        let (site, _router) = ha.topo.nat_site(&format!("s{}", k + 1), lan).unwrap();
        let host = ha.topo.host(id, site).unwrap();
        ha.apply(
            k % 3,
            &format!(
                "apiVersion: core.riptides.io/v1alpha1\nkind: WorkloadIdentity\nmetadata:\n  name: wl-{id}\nspec:\n  \
                 workloadID: wl/{id}\n  scope:\n    daemon:\n      id: {id}\n  selectors:\n    - process:name: \
                 chaos-nothing\n"
            ),
        );
        let out = ha.ctl(k % 3, &["token", "create", "--ttl", "10m", "--daemon-id", id], None);
        assert!(out.status.success(), "token create: {}", String::from_utf8_lossy(&out.stderr));
        let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let base = riptides_chaos_tests::product::daemon_args(
            ha.dc[0].addr(),
            TD,
            &ha.pin,
            &token,
            &ha.dir.path().join(id),
            "none",
        );
        // Drop the single tunnel address (each endpoint's own host:8001 is the default) and
        // add the other two replicas.
        let mut args = Vec::new();
        let mut it = base.into_iter();
        while let Some(a) = it.next() {
            if a == "--controlplane-tunnel" {
                it.next();
            } else {
                args.push(a);
            }
        }
        for h in &ha.dc[1..] {
            args.push("--controlplane".into());
            args.push(format!("{}:9443", h.addr()));
        }
        let p = spawn(&host, bin("riptides-daemon"), &args, ha.dir.path().join(format!("{id}.log")), false);
        ha.daemons.push((id.to_owned(), host, p));
    }
    ha
}

fn wait_ready(ha: &Ha, d: usize) {
    let h = &ha.daemons[d].1;
    let ok = poll(WAIT, || {
        let (code, _) = admin(h, "/readyz")?;
        let v = admin_json(h, "/config_dump")?;
        (code == 200 && v["connected"] == true && v["identities"].as_array()?.len() >= 2).then_some(())
    });
    assert!(ok.is_some(), "{} not ready within {WAIT:?}: {:?}", ha.daemons[d].0, admin_json(h, "/config_dump"));
}

#[test]
fn replica_kill9_daemons_fail_over_behind_nat() {
    let start = Instant::now();
    let mut ha = setup();
    for d in 0..2 {
        wait_ready(&ha, d);
    }
    // Acknowledged writes through every replica before the fault.
    for r in 0..3 {
        ha.policy_change(r);
    }
    let rev = ha.acked.last().unwrap().1;
    for d in 0..2 {
        wait_until("the pre-fault revision on a daemon", WAIT, || ha.revision(d).filter(|r| *r >= rev));
    }
    let metric_of = |ha: &Ha, d: usize, name: &str| metric(&ha.daemons[d].1, name).unwrap_or(-1.0);
    let before: Vec<(f64, f64, f64)> = (0..2)
        .map(|d| {
            (
                metric_of(&ha, d, "riptides_daemon_reconnects_total"),
                metric_of(&ha, d, "riptides_daemon_policy_snapshots_total"),
                metric_of(&ha, d, "riptides_daemon_policy_deltas_total"),
            )
        })
        .collect();
    let victims: Vec<usize> =
        (0..2).map(|d| wait_until("the replica a daemon is connected to", WAIT, || ha.connected_to(d))).collect();
    let mut killed = victims.clone();
    killed.sort();
    killed.dedup();
    let survivor = (0..3).find(|r| !killed.contains(r)).unwrap();
    eprintln!("daemons connected to replicas {victims:?}; killing {killed:?}; writing through {survivor}");

    let t_kill = Instant::now();
    for &r in &killed {
        ha.replicas[r].kill9();
    }
    // A change applied through a surviving replica while the daemons are failing over.
    let rev = ha.policy_change(survivor);
    let mut took = Vec::new();
    for d in 0..2 {
        let h = &ha.daemons[d].1;
        let ok = poll(WAIT, || {
            let v = admin_json(h, "/config_dump")?;
            (v["connected"] == true && v["policy"]["revision"].as_u64()? >= rev).then_some(())
        });
        assert!(ok.is_some(), "{} did not reach revision {rev} after the failover", ha.daemons[d].0);
        took.push(t_kill.elapsed());
    }
    let now_on: Vec<Option<usize>> = (0..2).map(|d| ha.connected_to(d)).collect();
    for (d, on) in now_on.iter().enumerate() {
        let r = on.expect("connected");
        assert!(!killed.contains(&r), "{} is connected to a killed replica {r}", ha.daemons[d].0);
    }
    // One more change through the survivor, after the failover.
    let rev2 = ha.policy_change(survivor);
    for d in 0..2 {
        wait_until("the post-failover change", WAIT, || ha.revision(d).filter(|r| *r >= rev2));
    }

    // No acknowledged write lost: every Service with the resourceVersion it was acknowledged at.
    let services = ha.list(survivor, "services").expect("list services on a survivor");
    let mut lost = Vec::new();
    for (name, rv) in &ha.acked {
        match services.iter().find(|o| &name_of(o) == name) {
            None => lost.push(format!("{name} lost")),
            Some(o) if rv_of(o) != *rv => lost.push(format!("{name}: revision {rv} -> {}", rv_of(o))),
            _ => {}
        }
    }
    let mut crashed = Vec::new();
    for (i, p) in ha.replicas.iter_mut().enumerate() {
        if let Some(c) = p.crashed() {
            crashed.push(format!("replica {i}: {c}"));
        }
    }
    for (i, p) in ha.etcd.iter_mut().enumerate() {
        if let Some(c) = p.crashed() {
            crashed.push(format!("etcd {i}: {c}"));
        }
    }
    for (id, _, p) in ha.daemons.iter_mut() {
        if let Some(c) = p.crashed() {
            crashed.push(format!("{id}: {c}"));
        }
    }
    let after: Vec<(f64, f64, f64)> = (0..2)
        .map(|d| {
            (
                metric_of(&ha, d, "riptides_daemon_reconnects_total"),
                metric_of(&ha, d, "riptides_daemon_policy_snapshots_total"),
                metric_of(&ha, d, "riptides_daemon_policy_deltas_total"),
            )
        })
        .collect();
    let reconnects: Vec<String> = (0..2).map(|d| format!("{}", after[d].0 - before[d].0)).collect();
    let snapshots: Vec<String> = (0..2).map(|d| format!("{}", after[d].1 - before[d].1)).collect();
    let recovery = took.iter().max().copied().unwrap_or_default();
    record(Row {
        scenario: "HA: kill -9 the replica each NAT'd daemon is connected to (3 etcd members, 3 replicas)".into(),
        recovery: secs(recovery),
        bound: format!("{} s (wait deadline, not asserted)", WAIT.as_secs()),
        reconnect_attempts: reconnects.join(", "),
        revisions_lost: 0,
        writes_lost: lost.len() as u64,
        crashed: crashed.len() as u64,
        notes: format!(
            "daemons were on replicas {victims:?}, killed {killed:?}, change written through replica {survivor}; \
             afterwards on {now_on:?}; snapshots during failover per daemon: {}; {} acknowledged Services checked; \
             whole test {}",
            snapshots.join(", "),
            ha.acked.len(),
            secs(start.elapsed())
        ),
    });
    print_table();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(crashed.is_empty(), "crashed: {crashed:?}");
}
