//! The kernel dataplane's daemon side: the connector to `riptides.ko` (see
//! `kmod/KERNEL_PATH.md`, the contract between the module and the daemon).
//!
//! - [`genl`]: a minimal generic netlink codec (messages, attributes, bounds-checked) and
//!   family resolution through `nlctrl`.
//! - [`msg`]: the `riptides` family's commands, events and replies, typed.
//! - [`client`]: one netlink session (commands, replies by sequence number, the "events"
//!   multicast group).
//! - [`policy`]: compiled rules → the module's interception table.
//! - [`fd`]: the handshake's byte stream over the handed-over fd (no file flag changes,
//!   record-exact reads).
//! - [`ktls`]: installing kTLS from rustls' extracted secrets.
//! - [`connector`]: the supervised task servicing handshake requests ([`Kernel`]).

pub mod client;
pub mod connector;
pub mod fd;
pub mod genl;
pub mod ktls;
pub mod msg;
pub mod policy;

use std::time::Duration;

pub use connector::{Kernel, KernelConfig};

/// Whether the `riptides` generic netlink family is registered (the module is loaded) in
/// this network namespace. Errors (no generic netlink at all) count as absent.
pub fn family_present() -> bool {
    match genl::resolve_family(riptides_kmod::uapi::RIPTIDES_GENL_NAME, Duration::from_secs(2)) {
        Ok(f) => f.is_some(),
        Err(e) => {
            tracing::warn!(error = %e, "generic netlink lookup of the riptides family failed");
            false
        }
    }
}
