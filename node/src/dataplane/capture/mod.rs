//! Capture for the userspace dataplane: the daemon's own nftables table redirects the TCP
//! connections it must protect to its local listeners.
//!
//! - Outbound TCP from selected workloads (socket owner uid/gid, cgroup v2) to selected
//!   destinations is redirected to the outbound listener (`nat` chain on the `output` hook).
//! - Inbound TCP to ports covered by ingress rules is redirected to the inbound listener
//!   (`nat` chain on the `prerouting` hook).
//! - The listener recovers where the connection was going with [`original_dst`], and marks its
//!   own upstream sockets with [`mark_socket`] so they are never captured again.
//!
//! Lifecycle: [`Capture::reconcile`] (or [`Capture::install`]) on start, replacing whatever a
//! crashed run left; [`Capture::update`] on every policy change (atomic, set elements);
//! [`Capture::remove`] on stop. The table is managed with the `nft` binary ([`nft`]): scripts
//! are generated in [`ruleset`] and read back as JSON in [`listing`].
//!
//! Every socket the daemon itself opens towards a destination that could be selected (upstream
//! connections, connections to local applications, and the control-plane session when the
//! daemon's own uid or cgroup is selected) must carry [`CaptureConfig::mark`]; unmarked, it
//! would be redirected into the daemon's own listener.
//!
//! Only one table is touched, never the rest of the host's ruleset, so the daemon coexists
//! with firewalls, kube-proxy and container runtimes.

pub mod config;
pub mod listing;
pub mod nft;
pub mod ruleset;
pub mod socket;
pub mod table;

use std::io;
use std::time::Duration;

pub use config::{
    CaptureConfig, CaptureRules, Destinations, IpNet, OutboundSelection, DEFAULT_INBOUND_PORT, DEFAULT_MARK,
    DEFAULT_OUTBOUND_PORT, DEFAULT_TABLE,
};
pub use listing::{ChainState, TableState};
pub use socket::{mark_socket, original_dst};
pub use table::{Capture, Reconciled, Resynced};

/// Why a capture operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("invalid capture configuration: {0}")]
    Config(String),
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("`{command}` did not finish within {timeout:?} and was killed")]
    Timeout { command: String, timeout: Duration },
    #[error("`{command}` failed ({status}): {stderr}")]
    Nft { command: String, status: String, stderr: String },
    #[error("unexpected `nft -j` output: {0}")]
    Listing(String),
    #[error("the capture table was removed; install it again")]
    Removed,
    #[error("the blocking task running nft failed: {0}")]
    Join(String),
}
