//! # riptides-chaos-tests: the network-namespace harness
//!
//! Shared by the end-to-end tests, the chaos scenarios and `riptides demo`
//! (design.md §6). It builds throw-away topologies out of Linux network
//! namespaces, veth pairs and bridges, runs real processes inside them and
//! injects faults with nftables. Needs root and iproute2 (`ip`); `nft` for
//! NAT and faults; `conntrack` is optional (see [`nat`]).
//!
//! Rules it keeps:
//! - Every namespace is named `rt-<prefix>-<pid>-<n>` and is deleted when
//!   its [`Namespace`] value is dropped (also while a panic unwinds), after
//!   killing every process inside. [`cleanup_stale`] removes namespaces of a
//!   crashed earlier run (dead pid, our pattern only); [`Topology::new`]
//!   calls it. [`cleanup_owned`] is for Ctrl-C paths where destructors do
//!   not run.
//! - Only addresses inside namespaces the harness made (`10.213.<lan>.<n>/24`);
//!   nothing is created in, or changed in, the root namespace.
//! - Everything is bounded in time; a failed command is an [`Error::Command`]
//!   carrying the full command line and stderr.
//!
//! Pieces:
//! - [`Namespace`]: `create`, `exec`, `command(..).spawn()` → [`ChildGuard`]
//!   (killed and reaped on drop), `run_in(|| ..)` (a closure on a thread that
//!   entered the namespace with `setns`, e.g. to bind sockets), `ping`,
//!   `wait_for_port`, `set_faults`, `flush_conntrack`.
//! - [`Topology`]: LANs (a bridge in its own namespace), [`Host`]s,
//!   NAT sites ([`NatRouter`]: nftables masquerade, `rebind`), link
//!   cut/heal ([`Link`]).
//! - [`Faults`]: random loss, UDP block, port blocks.
//!
//! ## Example
//!
//! ```no_run
//! use std::time::Duration;
//! use riptides_chaos_tests::{Faults, Topology};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut topo = Topology::new("example")?;
//! let core = topo.lan("core")?;                    // 10.213.1.0/24
//! let cp = topo.host("cp", core)?;                 // 10.213.1.10
//! let (site, router) = topo.nat_site("s1", core)?; // 10.213.2.0/24 behind NAT
//! let node = topo.host("node", site)?;             // 10.213.2.10, default via .1
//!
//! // A real process in the control-plane namespace; killed on drop.
//! let _server = cp.spawn("python3", ["-m", "http.server", "8080", "--bind", "0.0.0.0"])?;
//! riptides_chaos_tests::wait_for_port(&node, cp.addr(), 8080, Duration::from_secs(5))?;
//!
//! // Rust sockets inside a namespace.
//! let stream = node.run_in(|| std::net::TcpStream::connect((cp.addr(), 8080)))?;
//! assert_eq!(stream?.peer_addr().unwrap().port(), 8080);
//!
//! // Faults.
//! router.ns().set_faults(&Faults::udp_loss(10))?;
//! router.cut()?;                                   // partition the site
//! router.heal()?;
//! router.rebind()?;                                // NAT rebinding
//! router.ns().clear_faults()?;
//! # Ok(()) }
//! // Dropping `topo`, `cp`, `node`, `router` deletes every namespace.
//! ```

mod error;
pub mod nat;
pub mod netns;
pub mod probe;
pub mod process;
pub mod product;
mod sys;
pub mod topology;

pub use error::{Error, Result};
pub use nat::{ConntrackFlush, Faults, NatRouter, Rebind};
pub use netns::{check_available, cleanup_owned, cleanup_stale, harness_namespaces, list_namespaces, Namespace};
pub use probe::count_udp;
pub use process::{ChildGuard, NsCommand, OutputTo, Signal};
pub use topology::{wait_for_port, Host, LanId, Link, Topology};
