//! LANs (a Linux bridge in its own "switch" namespace), hosts attached to
//! them by veth pairs, and NAT routers between a site LAN and an upstream LAN.
//!
//! Addressing: LAN number `k` (1, 2, ... in creation order) is
//! `10.213.k.0/24`; a LAN's gateway (its NAT router) is `.1`, hosts and
//! router WAN ends get `.10`, `.11`, ... Every address, route and interface
//! lives inside namespaces created here: veth pairs are created directly
//! inside the switch namespace with the peer placed straight into the host
//! namespace, so nothing is ever created in the root namespace. Interface
//! names are per namespace (`eth0`.. in hosts, `p0`.. on switches, `br0`).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::nat::NatRouter;
use crate::netns::{check_available, cleanup_stale, Namespace};

/// First two octets of every harness address.
pub const NET_BASE: [u8; 2] = [10, 213];
const FIRST_HOST: u8 = 10;

/// Identifies a LAN inside one [`Topology`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LanId(usize);

#[derive(Debug)]
struct Lan {
    name: String,
    switch: Arc<Namespace>,
    index: u8,
    next_port: u32,
    next_host: u8,
    gateway: Option<Ipv4Addr>,
}

/// One end of a cable: the host-side interface and the switch port it is
/// plugged into. Cutting takes the switch port down, so the host sees
/// NO-CARRIER but keeps its address and routes, like a pulled cable.
#[derive(Debug, Clone)]
pub struct Link {
    pub switch: Arc<Namespace>,
    pub port: String,
    pub ns: Arc<Namespace>,
    pub iface: String,
}

impl Link {
    /// Take the link down (traffic over it stops both ways).
    pub fn cut(&self) -> Result<()> {
        self.switch.ip(["link", "set", &self.port, "down"])?;
        Ok(())
    }
    /// Bring the link back up.
    pub fn heal(&self) -> Result<()> {
        self.switch.ip(["link", "set", &self.port, "up"])?;
        Ok(())
    }
}

/// A host: a namespace with one address on one LAN.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub ns: Arc<Namespace>,
    pub addr: Ipv4Addr,
    pub lan: LanId,
    pub link: Link,
}

impl Host {
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }
    pub fn ip_addr(&self) -> IpAddr {
        IpAddr::V4(self.addr)
    }
    pub fn ns(&self) -> &Namespace {
        &self.ns
    }
    /// Cut this host's cable.
    pub fn cut(&self) -> Result<()> {
        self.link.cut()
    }
    pub fn heal(&self) -> Result<()> {
        self.link.heal()
    }
}

impl std::ops::Deref for Host {
    type Target = Namespace;
    fn deref(&self) -> &Namespace {
        &self.ns
    }
}

/// Wait until a TCP connect from `from` to `addr:port` succeeds.
pub fn wait_for_port(from: &Host, addr: impl Into<IpAddr>, port: u16, timeout: Duration) -> Result<()> {
    from.ns.wait_for_port(addr.into(), port, timeout)
}

/// Builder and owner of a set of namespaces. Everything is created
/// immediately by each call; dropping the topology (and every [`Host`] /
/// [`NatRouter`] clone handed out) deletes all of it.
#[derive(Debug)]
pub struct Topology {
    prefix: String,
    lans: Vec<Lan>,
    hosts: Vec<Host>,
    routers: Vec<NatRouter>,
}

impl Topology {
    /// Start a topology whose namespaces are named `rt-<prefix>_<role>-<pid>-<n>`.
    /// Checks that namespaces are usable and removes stale namespaces left
    /// by a crashed earlier run with the same prefix.
    pub fn new(prefix: &str) -> Result<Topology> {
        check_available()?;
        cleanup_stale(prefix)?;
        Ok(Topology { prefix: prefix.to_string(), lans: Vec::new(), hosts: Vec::new(), routers: Vec::new() })
    }

    fn ns(&self, role: &str) -> Result<Arc<Namespace>> {
        let role: String = role.chars().filter(|c| c.is_ascii_alphanumeric()).take(12).collect();
        Ok(Arc::new(Namespace::create(&format!("{}_{}", self.prefix, role))?))
    }

    /// A new LAN `10.213.<k>.0/24` (a bridge in its own namespace).
    pub fn lan(&mut self, name: &str) -> Result<LanId> {
        let index = u8::try_from(self.lans.len() + 1)
            .ok()
            .filter(|i| *i < 255)
            .ok_or_else(|| Error::Invalid("too many LANs".into()))?;
        let switch = self.ns(&format!("sw{name}"))?;
        switch.ip(["link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"])?;
        switch.ip(["link", "set", "br0", "up"])?;
        self.lans.push(Lan {
            name: name.to_string(),
            switch,
            index,
            next_port: 0,
            next_host: FIRST_HOST,
            gateway: None,
        });
        Ok(LanId(self.lans.len() - 1))
    }

    fn lan_ref(&self, id: LanId) -> Result<&Lan> {
        self.lans.get(id.0).ok_or_else(|| Error::Invalid(format!("unknown LAN {id:?}")))
    }

    /// `(network address, prefix length)` of a LAN.
    pub fn subnet(&self, id: LanId) -> Result<(Ipv4Addr, u8)> {
        let l = self.lan_ref(id)?;
        Ok((Ipv4Addr::new(NET_BASE[0], NET_BASE[1], l.index, 0), 24))
    }

    /// The LAN's gateway (its NAT router's inside address), if any.
    pub fn gateway(&self, id: LanId) -> Result<Option<Ipv4Addr>> {
        Ok(self.lan_ref(id)?.gateway)
    }

    pub fn lan_name(&self, id: LanId) -> Result<&str> {
        Ok(&self.lan_ref(id)?.name)
    }

    /// Plug `ns` into `lan` with a new veth pair; `addr` or the next free
    /// host address. Returns the link and the address.
    fn plug(
        &mut self,
        ns: &Arc<Namespace>,
        lan: LanId,
        addr: Option<u8>,
        iface: Option<&str>,
    ) -> Result<(Link, Ipv4Addr)> {
        let l = self.lans.get_mut(lan.0).ok_or_else(|| Error::Invalid(format!("unknown LAN {lan:?}")))?;
        let last = match addr {
            Some(a) => a,
            None => {
                let a = l.next_host;
                if a == 255 {
                    return Err(Error::Invalid(format!("LAN {} is full", l.name)));
                }
                l.next_host += 1;
                a
            }
        };
        let port = format!("p{}", l.next_port);
        l.next_port += 1;
        let switch = l.switch.clone();
        let ip = Ipv4Addr::new(NET_BASE[0], NET_BASE[1], l.index, last);
        let iface = match iface {
            Some(i) => i.to_string(),
            None => next_iface(ns)?,
        };
        switch.ip(["link", "add", &port, "type", "veth", "peer", "name", &iface, "netns", ns.name()])?;
        switch.ip(["link", "set", &port, "master", "br0"])?;
        switch.ip(["link", "set", &port, "up"])?;
        ns.ip(["addr", "add", &format!("{ip}/24"), "dev", &iface])?;
        ns.ip(["link", "set", &iface, "up"])?;
        Ok((Link { switch, port, ns: ns.clone(), iface }, ip))
    }

    /// A new host on `lan`, with a default route via the LAN's gateway if
    /// it has one (hosts on a LAN without a gateway reach only their LAN).
    pub fn host(&mut self, name: &str, lan: LanId) -> Result<Host> {
        let ns = self.ns(name)?;
        let (link, addr) = self.plug(&ns, lan, None, None)?;
        if let Some(gw) = self.lan_ref(lan)?.gateway {
            ns.ip(["route", "add", "default", "via", &gw.to_string()])?;
        }
        let h = Host { name: name.to_string(), ns, addr, lan, link };
        self.hosts.push(h.clone());
        Ok(h)
    }

    /// A NAT'd site: a router namespace with `wan` on `upstream` and a new
    /// LAN behind it (`lan` interface, gateway `.1`), IPv4 forwarding on,
    /// and nftables masquerade of everything leaving `wan`. Returns the new
    /// LAN and the router. Sites may be nested (double NAT).
    pub fn nat_site(&mut self, name: &str, upstream: LanId) -> Result<(LanId, NatRouter)> {
        let ns = self.ns(&format!("nat{name}"))?;
        let (wan_link, wan_addr) = self.plug(&ns, upstream, None, Some("wan"))?;
        if let Some(gw) = self.lan_ref(upstream)?.gateway {
            ns.ip(["route", "add", "default", "via", &gw.to_string()])?;
        }
        let site = self.lan(name)?;
        let (lan_link, lan_addr) = self.plug(&ns, site, Some(1), Some("lan"))?;
        self.lans[site.0].gateway = Some(lan_addr);
        ns.sysctl("net.ipv4.ip_forward", "1")?;
        let router = NatRouter::install(name, ns, wan_addr, lan_addr, wan_link, lan_link)?;
        self.routers.push(router.clone());
        Ok((site, router))
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }
    pub fn routers(&self) -> &[NatRouter] {
        &self.routers
    }
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Names of every namespace in this topology (switches, hosts, routers).
    pub fn namespace_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lans.iter().map(|l| l.switch.name().to_string()).collect();
        v.extend(self.hosts.iter().map(|h| h.ns.name().to_string()));
        v.extend(self.routers.iter().map(|r| r.ns().name().to_string()));
        v
    }
}

fn next_iface(ns: &Namespace) -> Result<String> {
    let out = ns.ip(["-o", "link", "show"])?;
    for i in 0.. {
        let name = format!("eth{i}");
        if !out.contains(&format!(": {name}@")) && !out.contains(&format!(": {name}:")) {
            return Ok(name);
        }
    }
    unreachable!()
}
