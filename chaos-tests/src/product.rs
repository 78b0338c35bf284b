//! How the real binaries are run on hosts of a [`crate::Topology`]: the command lines of
//! `riptides-controlplane` and `riptides-daemon` on the ports the product uses by default, and
//! reading the CA pin the control plane prints at start. The end-to-end tests, the chaos tests
//! and `riptides demo` all start the product this way.

use std::net::Ipv4Addr;
use std::path::Path;

/// The daemon's admin listener inside each node namespace.
pub const DAEMON_ADMIN: &str = "127.0.0.1:15000";

/// `riptides-controlplane` flags for a control-plane host: every listener on the host's
/// addresses at its default port, and a kubeconfig that points at loopback (the CLI runs on
/// that host too).
pub fn controlplane_args(data_dir: &Path, trust_domain: &str) -> Vec<String> {
    [
        "--data-dir",
        &data_dir.display().to_string(),
        "--trust-domain",
        trust_domain,
        "--api-addr",
        "0.0.0.0:8443",
        "--quic-addr",
        "0.0.0.0:9443",
        "--tunnel-addr",
        "0.0.0.0:8001",
        "--health-addr",
        "0.0.0.0:8080",
        "--advertise-url",
        "https://127.0.0.1:8443",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `riptides-daemon` flags for a node that reaches the control plane at `cp`.
pub fn daemon_args(
    cp: Ipv4Addr,
    trust_domain: &str,
    pin: &str,
    token: &str,
    data_dir: &Path,
    dataplane: &str,
) -> Vec<String> {
    [
        "--controlplane",
        &format!("{cp}:9443"),
        "--controlplane-tunnel",
        &format!("{cp}:8001"),
        "--trust-domain",
        trust_domain,
        "--ca-pin",
        pin,
        "--join-token",
        token,
        "--data-dir",
        &data_dir.display().to_string(),
        "--admin-addr",
        DAEMON_ADMIN,
        "--dataplane",
        dataplane,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The `sha256:<hex>` pin from the control plane's start line (`... CA pin sha256:...`).
pub fn ca_pin_in_log(log: &str) -> Option<String> {
    let words: Vec<&str> = log.split_whitespace().collect();
    words.windows(2).find(|w| w[0] == "pin" && w[1].starts_with("sha256:")).map(|w| w[1].to_owned())
}

/// Removes terminal colour sequences (`ESC [ ... letter`): the binaries' tracing output is
/// coloured even into a pipe, and log scrapers look for plain `field=value` text.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_sequences_are_removed() {
        assert_eq!(strip_ansi("\u{1b}[2m2025\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m peer=a"), "2025  INFO peer=a");
        assert_eq!(strip_ansi("plain \u{1b}x"), "plain \u{1b}x");
    }

    #[test]
    fn pin_is_read_from_the_start_line() {
        let log = "noise\nriptides-controlplane: API https://x, health http://y, CA pin sha256:abcd\nmore";
        assert_eq!(ca_pin_in_log(log).as_deref(), Some("sha256:abcd"));
        assert_eq!(ca_pin_in_log("no pin yet"), None);
    }

    #[test]
    fn daemon_flags_point_at_the_control_plane() {
        let a = daemon_args(Ipv4Addr::new(10, 0, 0, 1), "td", "sha256:1", "t.s", Path::new("/d"), "none");
        assert!(a.windows(2).any(|w| w[0] == "--controlplane" && w[1] == "10.0.0.1:9443"));
        assert!(a.windows(2).any(|w| w[0] == "--controlplane-tunnel" && w[1] == "10.0.0.1:8001"));
    }
}
