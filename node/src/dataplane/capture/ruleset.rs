//! Generation of the nft scripts that manage the capture table.
//!
//! Every change is one script fed to `nft -f -`, which the kernel applies as a single
//! transaction: there is never a moment with a half-written table (for instance the output
//! chain present but its sets empty), and a failed script changes nothing.
//!
//! Layout of the table (family `inet`, so one ruleset covers IPv4 and IPv6):
//!
//! ```text
//! set out_uids  { type uid }                               selected workloads (socket owner)
//! set out_gids  { type gid }
//! set out_svc4  { type ipv4_addr . inet_service }          egress-managed service endpoints
//! set out_svc6  { type ipv6_addr . inet_service }
//! set out_net4  { type ipv4_addr; flags interval; auto-merge }   whole networks, any port
//! set out_net6  { type ipv6_addr; flags interval; auto-merge }
//! set in_ports  { type inet_service }                      ports covered by ingress rules
//! chain output      nat hook output:     non-TCP, daemon mark, loopback -> return;
//!                                        selected workload -> jump out_dest
//! chain out_dest                         selected destination -> redirect to :outbound_port
//! chain prerouting  nat hook prerouting: tcp dport @in_ports -> redirect to :inbound_port
//! ```
//!
//! Policy changes only touch set elements, plus the two small regular chains whose shape
//! depends on the rules (cgroup matches, "all destinations").

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use super::config::{CaptureConfig, CaptureRules, Destinations};

/// Names of the sets, in the order they are declared.
pub const SETS: [(&str, &str); 7] = [
    ("out_uids", "type uid;"),
    ("out_gids", "type gid;"),
    ("out_svc4", "type ipv4_addr . inet_service;"),
    ("out_svc6", "type ipv6_addr . inet_service;"),
    ("out_net4", "type ipv4_addr; flags interval; auto-merge;"),
    ("out_net6", "type ipv6_addr; flags interval; auto-merge;"),
    ("in_ports", "type inet_service;"),
];

/// Base chains (name, hook).
pub const BASE_CHAINS: [(&str, &str); 2] = [("output", "output"), ("prerouting", "prerouting")];
/// The regular chain the output chain jumps to for selected workloads.
pub const DEST_CHAIN: &str = "out_dest";

/// Where nftables resolves `socket cgroupv2` paths.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A script that deletes the table if it exists and creates it afresh, populated with `rules`.
/// `table X` followed by `delete table X` makes the delete succeed whether or not a stale
/// table was there (nft 1.0.6 has no `destroy`), all in the same transaction.
pub fn replace_table(cfg: &CaptureConfig, rules: &CaptureRules) -> String {
    let t = &cfg.table;
    let mut s = format!("table inet {t}\ndelete table inet {t}\n");
    s.push_str(&declare(cfg));
    s.push_str(&populate(cfg, rules));
    s
}

/// A script that (re)declares the table's objects (a no-op for objects that already exist with
/// the same definition) and replaces their contents with `rules`.
pub fn update(cfg: &CaptureConfig, rules: &CaptureRules) -> String {
    let mut s = declare(cfg);
    s.push_str(&populate(cfg, rules));
    s
}

/// A script that deletes the table, succeeding also when it does not exist.
pub fn delete(cfg: &CaptureConfig) -> String {
    format!("table inet {t}\ndelete table inet {t}\n", t = cfg.table)
}

fn declare(cfg: &CaptureConfig) -> String {
    let mut s = format!("table inet {} {{\n", cfg.table);
    for (name, spec) in SETS {
        let _ = writeln!(s, "  set {name} {{ {spec} }}");
    }
    for (name, hook) in BASE_CHAINS {
        let _ = writeln!(s, "  chain {name} {{ type nat hook {hook} priority {}; policy accept; }}", cfg.priority);
    }
    let _ = writeln!(s, "  chain {DEST_CHAIN} {{ }}");
    s.push_str("}\n");
    s
}

fn populate(cfg: &CaptureConfig, rules: &CaptureRules) -> String {
    let t = format!("inet {}", cfg.table);
    let sel = &rules.outbound;
    let mut s = String::new();
    for (name, _) in SETS {
        let _ = writeln!(s, "flush set {t} {name}");
    }
    let (svc4, svc6, net4, net6) = split_destinations(&sel.destinations);
    add_elements(&mut s, &t, "out_uids", sel.uids.iter().map(u32::to_string));
    add_elements(&mut s, &t, "out_gids", sel.gids.iter().map(u32::to_string));
    add_elements(&mut s, &t, "out_svc4", svc4);
    add_elements(&mut s, &t, "out_svc6", svc6);
    add_elements(&mut s, &t, "out_net4", net4);
    add_elements(&mut s, &t, "out_net6", net6);
    add_elements(&mut s, &t, "in_ports", rules.inbound_ports.iter().map(u16::to_string));

    let _ = writeln!(s, "flush chain {t} output");
    for r in output_rules(cfg, sel) {
        let _ = writeln!(s, "add rule {t} output {r}");
    }
    let _ = writeln!(s, "flush chain {t} {DEST_CHAIN}");
    for r in dest_rules(cfg, &sel.destinations) {
        let _ = writeln!(s, "add rule {t} {DEST_CHAIN} {r}");
    }
    let _ = writeln!(s, "flush chain {t} prerouting");
    for r in prerouting_rules(cfg) {
        let _ = writeln!(s, "add rule {t} prerouting {r}");
    }
    s
}

/// Rules of the output chain, in order (also used to check a listed table for drift).
pub fn output_rules(cfg: &CaptureConfig, sel: &super::OutboundSelection) -> Vec<String> {
    let cgroups = &sel.cgroups;
    let mut r = vec![
        // UDP and friends are never captured.
        "meta l4proto != tcp return".to_owned(),
        // The daemon's own sockets (upstream connections, connections to local applications).
        format!("meta mark {:#x} return", cfg.mark),
        // Loopback traffic stays local; also keeps the redirected flow from being matched again.
        "ip daddr 127.0.0.0/8 return".to_owned(),
        "ip6 daddr ::1 return".to_owned(),
        format!("meta skuid @out_uids jump {DEST_CHAIN}"),
        format!("meta skgid @out_gids jump {DEST_CHAIN}"),
    ];
    for path in usable_cgroups(cgroups, Path::new(CGROUP_ROOT)) {
        let level = path.split('/').filter(|c| !c.is_empty()).count();
        r.push(format!("socket cgroupv2 level {level} \"{path}\" jump {DEST_CHAIN}"));
    }
    if sel.all_processes {
        // Selectors that nftables cannot express (process name, binary hash...): capture every
        // process and let the daemon decide per connection, passing unselected ones through.
        r.push(format!("jump {DEST_CHAIN}"));
    }
    r
}

/// Rules of the destination chain.
pub fn dest_rules(cfg: &CaptureConfig, dest: &Destinations) -> Vec<String> {
    let to = format!("redirect to :{}", cfg.outbound_port);
    match dest {
        // `redirect to :port` needs a transport match in the same rule.
        Destinations::All => vec![format!("meta l4proto tcp {to}")],
        Destinations::Only { .. } => vec![
            format!("ip daddr . tcp dport @out_svc4 {to}"),
            format!("ip6 daddr . tcp dport @out_svc6 {to}"),
            format!("ip daddr @out_net4 meta l4proto tcp {to}"),
            format!("ip6 daddr @out_net6 meta l4proto tcp {to}"),
        ],
    }
}

/// Rules of the prerouting chain.
pub fn prerouting_rules(cfg: &CaptureConfig) -> Vec<String> {
    vec![format!("tcp dport @in_ports redirect to :{}", cfg.inbound_port)]
}

/// nftables resolves a cgroup path to its id when the rule is loaded and rejects the whole
/// transaction if the path is missing; a workload whose cgroup is gone has nothing to capture,
/// so such paths (and unquotable ones) are dropped here instead.
fn usable_cgroups<'a>(cgroups: &'a BTreeSet<String>, root: &Path) -> Vec<&'a str> {
    cgroups
        .iter()
        .map(|p| p.trim_matches('/'))
        .filter(|p| {
            let ok = !p.is_empty()
                && !p.split('/').any(|c| c == ".." || c == ".")
                && p.chars().all(|c| !c.is_control() && c != '"' && c != '\\')
                && root.join(p).is_dir();
            if !ok {
                tracing::warn!(cgroup = %p, "cgroup path not usable for capture (missing or unquotable): skipped");
            }
            ok
        })
        .collect()
}

type Elements = Vec<String>;

fn split_destinations(dest: &Destinations) -> (Elements, Elements, Elements, Elements) {
    let (mut s4, mut s6, mut n4, mut n6) = (vec![], vec![], vec![], vec![]);
    if let Destinations::Only { services, networks } = dest {
        for sa in services {
            match unmap(sa.ip()) {
                IpAddr::V4(a) => s4.push(format!("{a} . {}", sa.port())),
                IpAddr::V6(a) => s6.push(format!("{a} . {}", sa.port())),
            }
        }
        for n in networks {
            match n.addr() {
                IpAddr::V4(_) => n4.push(n.to_string()),
                IpAddr::V6(_) => n6.push(n.to_string()),
            }
        }
    }
    // A SocketAddr set can hold `[::ffff:a]:p` and `a:p` both: the same element to nftables.
    for v in [&mut s4, &mut s6] {
        let set: BTreeSet<String> = v.drain(..).collect();
        v.extend(set);
    }
    (s4, s6, n4, n6)
}

/// IPv4-mapped IPv6 addresses are IPv4 to netfilter.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        a => a,
    }
}

/// Unmapped form of a socket address.
pub fn unmap_sa(sa: SocketAddr) -> SocketAddr {
    SocketAddr::new(unmap(sa.ip()), sa.port())
}

fn add_elements(s: &mut String, table: &str, set: &str, elems: impl IntoIterator<Item = String>) {
    // nft rejects an empty element list, and very long lines are hard to read in errors:
    // chunks of 256 elements.
    let elems: Vec<String> = elems.into_iter().collect();
    for chunk in elems.chunks(256) {
        let _ = writeln!(s, "add element {table} {set} {{ {} }}", chunk.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::{IpNet, OutboundSelection};
    use super::*;

    fn cfg() -> CaptureConfig {
        CaptureConfig { table: "t1".into(), ..Default::default() }
    }

    #[test]
    fn replace_script_has_everything_in_order() {
        let rules = CaptureRules {
            outbound: OutboundSelection {
                uids: [1000, 65534].into(),
                gids: [4242].into(),
                cgroups: ["definitely/not/there".to_owned()].into(),
                all_processes: false,
                destinations: Destinations::Only {
                    services: [
                        "10.0.0.1:80".parse().unwrap(),
                        "[::ffff:10.0.0.1]:80".parse().unwrap(),
                        "[fd00::1]:443".parse().unwrap(),
                    ]
                    .into(),
                    networks: ["192.168.0.0/16".parse::<IpNet>().unwrap()].into(),
                },
            },
            inbound_ports: [8080, 9090].into(),
        };
        let s = replace_table(&cfg(), &rules);
        assert!(s.starts_with("table inet t1\ndelete table inet t1\ntable inet t1 {\n"), "{s}");
        assert!(s.contains("add element inet t1 out_uids { 1000, 65534 }"), "{s}");
        assert!(s.contains("add element inet t1 out_svc4 { 10.0.0.1 . 80 }"), "{s}");
        assert!(s.contains("add element inet t1 out_svc6 { fd00::1 . 443 }"), "{s}");
        assert!(s.contains("add element inet t1 out_net4 { 192.168.0.0/16 }"), "{s}");
        assert!(!s.contains("out_net6 {  }") && !s.contains("add element inet t1 out_net6"), "{s}");
        assert!(s.contains("add element inet t1 in_ports { 8080, 9090 }"), "{s}");
        assert!(s.contains("meta mark 0x524950 return"), "{s}");
        assert!(s.contains("redirect to :15001") && s.contains("redirect to :15006"), "{s}");
        assert!(!s.contains("cgroupv2"), "a missing cgroup is skipped: {s}");
        let flush_out = s.find("flush chain inet t1 output").unwrap();
        let first_rule = s.find("add rule").unwrap();
        assert!(flush_out < first_rule);
    }

    #[test]
    fn all_destinations_redirect_unconditionally() {
        let r = dest_rules(&cfg(), &Destinations::All);
        assert_eq!(r, vec!["meta l4proto tcp redirect to :15001".to_owned()]);
    }

    #[test]
    fn cgroup_rules_carry_their_level() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        let set: BTreeSet<String> = ["/a/b/".to_owned(), "a/../x".to_owned(), "a/\"q".to_owned()].into();
        assert_eq!(usable_cgroups(&set, dir.path()), vec!["a/b"]);
    }
}
