//! The compiled [`Rules`] translated into the module's interception table, the way
//! `capture/` translates them into nftables sets for the userspace path.
//!
//! The table only decides *which sockets the daemon is asked about*; the daemon still makes
//! the decision per connection with the same [`Rules`] as the userspace path (and answers
//! `SET_VERDICT ALLOW` for a socket that turns out not to need protection). So the table must
//! select a **superset** of the connections the rules protect, and should be as narrow as
//! that allows:
//!
//! - Egress: one `PROTECT` entry per Service address (exact IP = full prefix, or CIDR) and
//!   port, for each selector map of each WorkloadIdentity, carrying the selector's
//!   `process:name` (→ `comm`) and `process:binary:path` (→ `exe`). Other selector keys
//!   (hash, cmdline, uid/gid, `k8s:`) are not expressed — dropping a condition only widens the
//!   entry. (uid/gid are left out on purpose: the label is the *effective* id from `/proc`,
//!   the kernel's may be the real one, and a mismatch would narrow the entry below the rules.)
//!   A `process:name` longer than the kernel's 15-byte `comm` can match no process, so such a
//!   selector map produces no entry. DNS-name addresses are left out, as in nftables capture.
//!   No WorkloadIdentity: no egress entry (nothing can need mTLS).
//! - Ingress: one `PROTECT` entry per port an ingress rule covers, any process, any peer.
//!
//! Duplicates are removed; an endpoint with a selector-less entry needs no other. If the
//! result exceeds the module's limit, the process conditions are dropped (one entry per
//! endpoint); if even that is too large, translation fails and the previous table stays.

use std::collections::BTreeSet;

use riptides_kmod::uapi::{RIPTIDES_COMM_MAX_LEN, RIPTIDES_EXE_MAX_LEN, RIPTIDES_POLICY_MAX_ENTRIES};

use super::msg::{KDirection, PolicyEntry};
use crate::dataplane::process::{LABEL_BINARY_PATH, LABEL_NAME};
use crate::dataplane::rules::{Endpoint, Rules};

/// Translation failed: the policy needs more entries than the module accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the policy needs {needed} kernel policy entries, the module accepts {max}")]
pub struct TooManyEntries {
    pub needed: usize,
    pub max: usize,
}

/// The interception table for `rules` (limit: the module's).
pub fn translate(rules: &Rules) -> Result<Vec<PolicyEntry>, TooManyEntries> {
    translate_with_limit(rules, RIPTIDES_POLICY_MAX_ENTRIES)
}

pub fn translate_with_limit(rules: &Rules, max: usize) -> Result<Vec<PolicyEntry>, TooManyEntries> {
    let endpoints: BTreeSet<(Option<(std::net::IpAddr, u8)>, u16)> = rules
        .service_endpoints()
        .into_iter()
        .map(|(e, port)| match e {
            Endpoint::Exact(ip) => (Some((ip, if ip.is_ipv4() { 32 } else { 128 })), port),
            Endpoint::Network(ip, prefix) => (Some((ip, prefix)), port),
        })
        .collect();
    // The process conditions any workload can be selected by.
    let mut selectors: BTreeSet<(Option<String>, Option<String>)> = BTreeSet::new();
    for w in rules.workloads() {
        for map in &w.selectors {
            if map.is_empty() {
                continue; // selects nothing (rules semantics)
            }
            let comm = map.get(LABEL_NAME).cloned();
            if comm.as_ref().is_some_and(|c| c.len() > RIPTIDES_COMM_MAX_LEN || c.is_empty()) {
                continue; // no process's comm can equal it
            }
            let exe =
                map.get(LABEL_BINARY_PATH).cloned().filter(|e| e.len() <= RIPTIDES_EXE_MAX_LEN && e.starts_with('/'));
            selectors.insert((comm, exe));
        }
    }
    // One condition-less selector covers every other one.
    if selectors.contains(&(None, None)) {
        selectors = BTreeSet::from([(None, None)]);
    }
    let ingress: Vec<PolicyEntry> = rules
        .ingress_ports()
        .map(|p| PolicyEntry {
            direction: KDirection::Ingress,
            protect: true,
            addr: None,
            port_min: p,
            port_max: p,
            comm: None,
            exe: None,
        })
        .collect();
    let egress = |sels: &BTreeSet<(Option<String>, Option<String>)>| -> Vec<PolicyEntry> {
        let mut out = Vec::new();
        for (addr, port) in &endpoints {
            for (comm, exe) in sels {
                out.push(PolicyEntry {
                    direction: KDirection::Egress,
                    protect: true,
                    addr: *addr,
                    port_min: *port,
                    port_max: *port,
                    comm: comm.clone(),
                    exe: exe.clone(),
                });
            }
        }
        out
    };
    let mut entries = if selectors.is_empty() { Vec::new() } else { egress(&selectors) };
    if entries.len() + ingress.len() > max && !selectors.is_empty() {
        entries = egress(&BTreeSet::from([(None, None)]));
    }
    entries.extend(ingress);
    if entries.len() > max {
        return Err(TooManyEntries { needed: entries.len(), max });
    }
    Ok(entries)
}
