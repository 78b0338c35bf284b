//! NAT routers (nftables masquerade), conntrack flushing / NAT rebinding,
//! and fault injection (random loss, UDP or port blocks) with nftables.
//!
//! # Conntrack flush without the `conntrack` tool
//! [`Namespace::flush_conntrack`] runs `conntrack -F` when the tool is on
//! `PATH`; otherwise it sends the same request itself: one
//! `IPCTNL_MSG_CT_DELETE` message without attributes on a
//! `NETLINK_NETFILTER` socket opened inside the namespace (needs
//! `CONFIG_NF_CT_NETLINK`, built in on the build machine's kernel). If
//! neither works, [`NatRouter::rebind`] still moves the masquerade source
//! port range, which re-maps every *new* flow; existing flows then keep
//! their old mapping until their conntrack entries expire (the
//! [`Rebind::conntrack_flushed`] flag tells the test which happened).

use std::io::Read;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{Error, IoContext, Result};
use crate::netns::Namespace;
use crate::topology::Link;

/// nftables table holding a router's masquerade rules.
pub const NAT_TABLE: &str = "riptides_nat";
/// nftables table holding injected faults.
pub const FAULT_TABLE: &str = "riptides_faults";

/// Masquerade source-port ranges [`NatRouter::rebind`] cycles through.
pub const REBIND_RANGES: [(u16, u16); 4] = [(20000, 29999), (30000, 39999), (40000, 49999), (50000, 59999)];

#[derive(Debug)]
struct RouterState {
    port_range: Option<(u16, u16)>,
    rebinds: usize,
}

/// A NAT router namespace made by [`Topology::nat_site`](crate::Topology::nat_site).
#[derive(Debug, Clone)]
pub struct NatRouter {
    name: String,
    ns: Arc<Namespace>,
    wan_addr: Ipv4Addr,
    lan_addr: Ipv4Addr,
    wan_link: Link,
    lan_link: Link,
    state: Arc<Mutex<RouterState>>,
}

/// What [`NatRouter::rebind`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebind {
    /// Masquerade source-port range now in force.
    pub port_range: (u16, u16),
    /// How conntrack was flushed, or `None` if it could not be (only new
    /// flows are re-mapped then).
    pub conntrack_flushed: Option<ConntrackFlush>,
}

/// How conntrack entries were flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConntrackFlush {
    /// `conntrack -F`.
    Tool,
    /// A ctnetlink delete-all request sent by the harness itself.
    Netlink,
}

impl NatRouter {
    pub(crate) fn install(
        name: &str,
        ns: Arc<Namespace>,
        wan_addr: Ipv4Addr,
        lan_addr: Ipv4Addr,
        wan_link: Link,
        lan_link: Link,
    ) -> Result<NatRouter> {
        let r = NatRouter {
            name: name.to_string(),
            ns,
            wan_addr,
            lan_addr,
            wan_link,
            lan_link,
            state: Arc::new(Mutex::new(RouterState { port_range: None, rebinds: 0 })),
        };
        r.apply_nat(None)?;
        Ok(r)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn ns(&self) -> &Namespace {
        &self.ns
    }
    /// The router's address on the upstream LAN: what upstream hosts see
    /// as the source of the site's traffic.
    pub fn wan_addr(&self) -> Ipv4Addr {
        self.wan_addr
    }
    /// The site LAN's gateway address.
    pub fn lan_addr(&self) -> Ipv4Addr {
        self.lan_addr
    }
    /// Cable to the upstream LAN (cut it to partition the whole site).
    pub fn wan_link(&self) -> &Link {
        &self.wan_link
    }
    pub fn lan_link(&self) -> &Link {
        &self.lan_link
    }
    /// Partition the site from upstream.
    pub fn cut(&self) -> Result<()> {
        self.wan_link.cut()
    }
    pub fn heal(&self) -> Result<()> {
        self.wan_link.heal()
    }

    fn apply_nat(&self, range: Option<(u16, u16)>) -> Result<()> {
        let ported = match range {
            Some((a, b)) => format!("    oifname \"wan\" meta l4proto {{ tcp, udp }} masquerade to :{a}-{b}\n"),
            None => String::new(),
        };
        let script = format!(
            "table ip {NAT_TABLE}\n\
             delete table ip {NAT_TABLE}\n\
             table ip {NAT_TABLE} {{\n  chain postrouting {{\n    \
             type nat hook postrouting priority srcnat; policy accept;\n\
             {ported}    oifname \"wan\" masquerade\n  }}\n}}\n"
        );
        self.ns.nft(&script)?;
        self.lock().port_range = range;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RouterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Recreate the masquerade rule with a source-port range (`None`:
    /// plain masquerade, which keeps source ports when free). Affects new
    /// flows only; combine with [`Namespace::flush_conntrack`].
    pub fn set_port_range(&self, range: Option<(u16, u16)>) -> Result<()> {
        if let Some((a, b)) = range {
            if a == 0 || a > b {
                return Err(Error::Invalid(format!("bad port range {a}-{b}")));
            }
        }
        self.apply_nat(range)
    }

    pub fn port_range(&self) -> Option<(u16, u16)> {
        self.lock().port_range
    }

    /// NAT rebinding: move to the next [`REBIND_RANGES`] entry and flush
    /// conntrack, so every flow through the router — existing ones included
    /// — gets a new public source port on its next packet. (TCP flows are
    /// then usually broken by the peer: that is what a real rebinding does.)
    pub fn rebind(&self) -> Result<Rebind> {
        let range = {
            let mut st = self.lock();
            st.rebinds += 1;
            REBIND_RANGES[(st.rebinds - 1) % REBIND_RANGES.len()]
        };
        self.apply_nat(Some(range))?;
        let flushed = match self.ns.flush_conntrack() {
            Ok(how) => Some(how),
            Err(e) => {
                tracing::warn!(router = %self.name, error = %e, "conntrack flush failed; only new flows are re-mapped");
                None
            }
        };
        Ok(Rebind { port_range: range, conntrack_flushed: flushed })
    }

    /// Number of rebinds so far.
    pub fn rebinds(&self) -> usize {
        self.lock().rebinds
    }
}

/// A set of faults applied to one namespace's traffic (input, output and
/// forwarded; loopback is never affected). Each hook draws independently,
/// so on a host `loss_percent` applies to each direction separately; on a
/// router forwarded packets are dropped once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Drop this share (0-100) of packets at random (`numgen random mod 100 < N`).
    pub loss_percent: u8,
    /// Apply the random loss to UDP only.
    pub loss_udp_only: bool,
    /// Drop all UDP.
    pub block_udp: bool,
    /// Drop UDP to or from these ports.
    pub block_udp_ports: Vec<u16>,
    /// Drop TCP to or from these ports.
    pub block_tcp_ports: Vec<u16>,
}

impl Faults {
    pub fn loss(percent: u8) -> Self {
        Faults { loss_percent: percent, ..Faults::default() }
    }
    pub fn udp_loss(percent: u8) -> Self {
        Faults { loss_percent: percent, loss_udp_only: true, ..Faults::default() }
    }
    pub fn block_udp() -> Self {
        Faults { block_udp: true, ..Faults::default() }
    }

    fn rules(&self) -> Result<Vec<String>> {
        if self.loss_percent > 100 {
            return Err(Error::Invalid(format!("loss {}% > 100%", self.loss_percent)));
        }
        let mut r = Vec::new();
        if self.block_udp {
            r.push("meta l4proto udp drop".to_string());
        }
        for (proto, ports) in [("udp", &self.block_udp_ports), ("tcp", &self.block_tcp_ports)] {
            if !ports.is_empty() {
                let set = ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ");
                r.push(format!("{proto} dport {{ {set} }} drop"));
                r.push(format!("{proto} sport {{ {set} }} drop"));
            }
        }
        if self.loss_percent > 0 {
            let only = if self.loss_udp_only { "meta l4proto udp " } else { "" };
            r.push(format!("{only}numgen random mod 100 < {} drop", self.loss_percent));
        }
        Ok(r)
    }
}

impl Namespace {
    /// Replace this namespace's faults (atomically, one nft transaction).
    /// An empty [`Faults`] removes the fault table.
    pub fn set_faults(&self, faults: &Faults) -> Result<()> {
        let rules = faults.rules()?;
        let mut script = format!("table inet {FAULT_TABLE}\ndelete table inet {FAULT_TABLE}\n");
        if !rules.is_empty() {
            script.push_str(&format!("table inet {FAULT_TABLE} {{\n"));
            for (chain, lo) in
                [("input", "    iifname \"lo\" accept\n"), ("forward", ""), ("output", "    oifname \"lo\" accept\n")]
            {
                script.push_str(&format!(
                    "  chain {chain} {{\n    type filter hook {chain} priority -5; policy accept;\n{lo}"
                ));
                for rule in &rules {
                    script.push_str(&format!("    {rule}\n"));
                }
                script.push_str("  }\n");
            }
            script.push_str("}\n");
        }
        self.nft(&script)
    }

    /// Remove all injected faults.
    pub fn clear_faults(&self) -> Result<()> {
        self.set_faults(&Faults::default())
    }

    /// Flush this namespace's conntrack table (`conntrack -F` if installed,
    /// else a ctnetlink request from inside the namespace).
    pub fn flush_conntrack(&self) -> Result<ConntrackFlush> {
        if tool_on_path("conntrack") {
            self.exec("conntrack", ["-F"])?;
            return Ok(ConntrackFlush::Tool);
        }
        self.run_in(netlink_flush)?
            .ctx(|| format!("ctnetlink flush in {} (no `conntrack` tool either)", self.name()))?;
        Ok(ConntrackFlush::Netlink)
    }

    /// Current conntrack entries (lines of `/proc/net/nf_conntrack` as seen
    /// from inside the namespace).
    pub fn conntrack_entries(&self) -> Result<Vec<String>> {
        let text = self
            .run_in(|| std::fs::read_to_string("/proc/thread-self/net/nf_conntrack"))?
            .ctx(|| format!("reading nf_conntrack in {}", self.name()))?;
        Ok(text.lines().map(str::to_string).collect())
    }
}

fn tool_on_path(tool: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())).unwrap_or(false)
}

/// Send `IPCTNL_MSG_CT_DELETE` (no attributes = delete all) over
/// `NETLINK_NETFILTER` and wait for the ack.
fn netlink_flush() -> std::io::Result<()> {
    const AF_NETLINK: i32 = 16;
    const NETLINK_NETFILTER: i32 = 12;
    const NFNL_SUBSYS_CTNETLINK: u16 = 1;
    const IPCTNL_MSG_CT_DELETE: u16 = 2;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_ACK: u16 = 4;
    const NLMSG_ERROR: u16 = 2;

    let sock = Socket::new(Domain::from(AF_NETLINK), Type::RAW, Some(Protocol::from(NETLINK_NETFILTER)))?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    let seq: u32 = 1;
    let mut msg = Vec::with_capacity(20);
    msg.extend_from_slice(&20u32.to_ne_bytes()); // nlmsg_len
    msg.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE).to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid
    msg.extend_from_slice(&[0u8, 0, 0, 0]); // nfgenmsg: AF_UNSPEC (all families), version 0, res_id 0
    sock.send(&msg)?;
    let mut buf = [0u8; 4096];
    loop {
        let n = (&sock).read(&mut buf)?;
        if n < 16 {
            return Err(std::io::Error::other("short netlink reply"));
        }
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        let rseq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        if ty != NLMSG_ERROR || rseq != seq || n < 20 {
            continue;
        }
        let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        return if err == 0 { Ok(()) } else { Err(std::io::Error::from_raw_os_error(-err)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_rules() {
        assert!(Faults::default().rules().unwrap().is_empty());
        let f = Faults { loss_percent: 10, loss_udp_only: true, block_tcp_ports: vec![443, 8443], ..Faults::default() };
        let r = f.rules().unwrap();
        assert!(r.contains(&"tcp dport { 443, 8443 } drop".to_string()));
        assert!(r.contains(&"meta l4proto udp numgen random mod 100 < 10 drop".to_string()));
        assert!(Faults::loss(101).rules().is_err());
    }
}
