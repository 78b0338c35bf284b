//! Build and test glue for `riptides.ko`, the kernel side of the Riptides dataplane.
//!
//! The module itself is C under `kmod/module/` (Kbuild); its userspace API is the C header
//! `kmod/include/uapi/linux/riptides.h`, mirrored here in [`uapi`]. `tests/uapi.rs` compiles
//! a C program against the header and checks every constant against this mirror;
//! `tests/qemu.rs` runs `ops/scripts/kmod-test.sh`, which builds the module against Debian
//! kernels and runs its scenarios in a qemu guest.

/// Constants of the `riptides` generic netlink family (mirror of
/// `kmod/include/uapi/linux/riptides.h`; keep both in step, `tests/uapi.rs` checks them).
pub mod uapi {
    macro_rules! consts {
        ($( $(#[$m:meta])* $name:ident : $ty:ty = $val:expr; )*) => {
            $( $(#[$m])* pub const $name: $ty = $val; )*
            /// Every integer constant of the header as `(C name, value)`.
            pub const INTEGER_CONSTANTS: &[(&str, i64)] = &[ $( (stringify!($name), $name as i64), )* ];
        };
    }

    /// Generic netlink family name.
    pub const RIPTIDES_GENL_NAME: &str = "riptides";
    /// Multicast group for kernel -> daemon events.
    pub const RIPTIDES_GENL_MCGRP_EVENTS: &str = "events";
    /// Every string constant of the header as `(C name, value)`.
    pub const STRING_CONSTANTS: &[(&str, &str)] =
        &[("RIPTIDES_GENL_NAME", RIPTIDES_GENL_NAME), ("RIPTIDES_GENL_MCGRP_EVENTS", RIPTIDES_GENL_MCGRP_EVENTS)];

    consts! {
        /// Family version.
        RIPTIDES_GENL_VERSION: u8 = 1;

        // Limits.
        RIPTIDES_TRUST_DOMAIN_MAX_LEN: usize = 255;
        RIPTIDES_DAEMON_ID_MAX_LEN: usize = 128;
        RIPTIDES_SPIFFE_ID_MAX_LEN: usize = 2048;
        RIPTIDES_CERT_MAX_LEN: usize = 8192;
        RIPTIDES_BUNDLE_MAX_CERTS: usize = 64;
        RIPTIDES_POLICY_MAX_ENTRIES: usize = 1024;
        RIPTIDES_COMM_MAX_LEN: usize = 15;
        RIPTIDES_EXE_MAX_LEN: usize = 1024;
        RIPTIDES_HANDSHAKE_TIMEOUT_MIN_MS: u32 = 100;
        RIPTIDES_HANDSHAKE_TIMEOUT_MAX_MS: u32 = 60000;
        RIPTIDES_MAX_PENDING: usize = 4096;

        // enum riptides_cmd
        RIPTIDES_CMD_UNSPEC: u8 = 0;
        RIPTIDES_CMD_SET_CONFIG: u8 = 1;
        RIPTIDES_CMD_LOAD_BUNDLE: u8 = 2;
        RIPTIDES_CMD_LOAD_POLICY: u8 = 3;
        RIPTIDES_CMD_SET_VERDICT: u8 = 4;
        RIPTIDES_CMD_HANDSHAKE_ACCEPT: u8 = 5;
        RIPTIDES_CMD_HANDSHAKE_DONE: u8 = 6;
        RIPTIDES_CMD_GET_CONNECTIONS: u8 = 7;
        RIPTIDES_CMD_GET_STATS: u8 = 8;
        RIPTIDES_CMD_HANDSHAKE_REQUEST: u8 = 9;
        RIPTIDES_CMD_CONN_EVENT: u8 = 10;
        __RIPTIDES_CMD_MAX: u8 = 11;
        RIPTIDES_CMD_MAX: u8 = 10;

        // enum riptides_attr
        RIPTIDES_ATTR_UNSPEC: u16 = 0;
        RIPTIDES_ATTR_TRUST_DOMAIN: u16 = 1;
        RIPTIDES_ATTR_DAEMON_ID: u16 = 2;
        RIPTIDES_ATTR_FAIL_MODE: u16 = 3;
        RIPTIDES_ATTR_HANDSHAKE_TIMEOUT_MS: u16 = 4;
        RIPTIDES_ATTR_GENERATION: u16 = 5;
        RIPTIDES_ATTR_BUNDLE_CERT: u16 = 6;
        RIPTIDES_ATTR_POLICY_ENTRY: u16 = 7;
        RIPTIDES_ATTR_CONN_ID: u16 = 8;
        RIPTIDES_ATTR_VERDICT: u16 = 9;
        RIPTIDES_ATTR_STATUS: u16 = 10;
        RIPTIDES_ATTR_PEER_ID: u16 = 11;
        RIPTIDES_ATTR_SOCKFD: u16 = 12;
        RIPTIDES_ATTR_STATS: u16 = 13;
        RIPTIDES_ATTR_PAD: u16 = 14;
        RIPTIDES_ATTR_DIRECTION: u16 = 15;
        RIPTIDES_ATTR_LOCAL_ADDR: u16 = 16;
        RIPTIDES_ATTR_LOCAL_PORT: u16 = 17;
        RIPTIDES_ATTR_PEER_ADDR: u16 = 18;
        RIPTIDES_ATTR_PEER_PORT: u16 = 19;
        RIPTIDES_ATTR_PID: u16 = 20;
        RIPTIDES_ATTR_UID: u16 = 21;
        RIPTIDES_ATTR_GID: u16 = 22;
        RIPTIDES_ATTR_COMM: u16 = 23;
        RIPTIDES_ATTR_EXE: u16 = 24;
        RIPTIDES_ATTR_CGROUP_ID: u16 = 25;
        RIPTIDES_ATTR_NETNS_COOKIE: u16 = 26;
        RIPTIDES_ATTR_RULE_ID: u16 = 27;
        RIPTIDES_ATTR_CONN_STATE: u16 = 28;
        RIPTIDES_ATTR_EVENT: u16 = 29;
        RIPTIDES_ATTR_KTLS: u16 = 30;
        __RIPTIDES_ATTR_MAX: u16 = 31;
        RIPTIDES_ATTR_MAX: u16 = 30;

        // enum riptides_pentry_attr
        RIPTIDES_PENTRY_ATTR_UNSPEC: u16 = 0;
        RIPTIDES_PENTRY_ATTR_RULE_ID: u16 = 1;
        RIPTIDES_PENTRY_ATTR_DIRECTION: u16 = 2;
        RIPTIDES_PENTRY_ATTR_ACTION: u16 = 3;
        RIPTIDES_PENTRY_ATTR_ADDR4: u16 = 4;
        RIPTIDES_PENTRY_ATTR_ADDR6: u16 = 5;
        RIPTIDES_PENTRY_ATTR_PREFIX_LEN: u16 = 6;
        RIPTIDES_PENTRY_ATTR_PORT_MIN: u16 = 7;
        RIPTIDES_PENTRY_ATTR_PORT_MAX: u16 = 8;
        RIPTIDES_PENTRY_ATTR_UID: u16 = 9;
        RIPTIDES_PENTRY_ATTR_GID: u16 = 10;
        RIPTIDES_PENTRY_ATTR_COMM: u16 = 11;
        RIPTIDES_PENTRY_ATTR_EXE: u16 = 12;
        __RIPTIDES_PENTRY_ATTR_MAX: u16 = 13;
        RIPTIDES_PENTRY_ATTR_MAX: u16 = 12;

        // enum riptides_stat_attr
        RIPTIDES_STAT_ATTR_UNSPEC: u16 = 0;
        RIPTIDES_STAT_ATTR_CONFIG_UPDATES: u16 = 1;
        RIPTIDES_STAT_ATTR_BUNDLE_LOADS: u16 = 2;
        RIPTIDES_STAT_ATTR_POLICY_LOADS: u16 = 3;
        RIPTIDES_STAT_ATTR_BUNDLE_CERTS: u16 = 4;
        RIPTIDES_STAT_ATTR_BUNDLE_BYTES: u16 = 5;
        RIPTIDES_STAT_ATTR_BUNDLE_GENERATION: u16 = 6;
        RIPTIDES_STAT_ATTR_POLICY_ENTRIES: u16 = 7;
        RIPTIDES_STAT_ATTR_POLICY_GENERATION: u16 = 8;
        RIPTIDES_STAT_ATTR_CMDS_REJECTED: u16 = 9;
        RIPTIDES_STAT_ATTR_CONNECTIONS: u16 = 10;
        RIPTIDES_STAT_ATTR_PAD: u16 = 11;
        RIPTIDES_STAT_ATTR_HANDSHAKES_REQUESTED: u16 = 12;
        RIPTIDES_STAT_ATTR_HANDSHAKES_OK: u16 = 13;
        RIPTIDES_STAT_ATTR_HANDSHAKES_FAILED: u16 = 14;
        RIPTIDES_STAT_ATTR_HANDSHAKES_TIMED_OUT: u16 = 15;
        RIPTIDES_STAT_ATTR_CONNS_NO_DAEMON: u16 = 16;
        RIPTIDES_STAT_ATTR_CONNS_PASSTHROUGH: u16 = 17;
        RIPTIDES_STAT_ATTR_DAEMON_CONNECTED: u16 = 18;
        __RIPTIDES_STAT_ATTR_MAX: u16 = 19;
        RIPTIDES_STAT_ATTR_MAX: u16 = 18;

        // enum riptides_fail_mode
        RIPTIDES_FAIL_CLOSED: u8 = 0;
        RIPTIDES_FAIL_OPEN: u8 = 1;
        __RIPTIDES_FAIL_MODE_MAX: u8 = 2;
        RIPTIDES_FAIL_MODE_MAX: u8 = 1;

        // enum riptides_direction
        RIPTIDES_DIR_EGRESS: u8 = 0;
        RIPTIDES_DIR_INGRESS: u8 = 1;
        __RIPTIDES_DIR_MAX: u8 = 2;
        RIPTIDES_DIR_MAX: u8 = 1;

        // enum riptides_action
        RIPTIDES_ACTION_PASS: u8 = 0;
        RIPTIDES_ACTION_PROTECT: u8 = 1;
        __RIPTIDES_ACTION_MAX: u8 = 2;
        RIPTIDES_ACTION_MAX: u8 = 1;

        // enum riptides_verdict
        RIPTIDES_VERDICT_ALLOW: u8 = 0;
        RIPTIDES_VERDICT_DENY: u8 = 1;
        __RIPTIDES_VERDICT_MAX: u8 = 2;
        RIPTIDES_VERDICT_MAX: u8 = 1;

        // enum riptides_conn_state
        RIPTIDES_CONN_PENDING: u8 = 0;
        RIPTIDES_CONN_HANDSHAKING: u8 = 1;
        RIPTIDES_CONN_ESTABLISHED: u8 = 2;
        RIPTIDES_CONN_PASSTHROUGH: u8 = 3;
        RIPTIDES_CONN_REFUSED: u8 = 4;
        __RIPTIDES_CONN_STATE_MAX: u8 = 5;
        RIPTIDES_CONN_STATE_MAX: u8 = 4;

        // enum riptides_event
        RIPTIDES_EVENT_ESTABLISHED: u8 = 0;
        RIPTIDES_EVENT_PASSTHROUGH: u8 = 1;
        RIPTIDES_EVENT_REFUSED: u8 = 2;
        RIPTIDES_EVENT_TIMED_OUT: u8 = 3;
        RIPTIDES_EVENT_CLOSED: u8 = 4;
        __RIPTIDES_EVENT_MAX: u8 = 5;
        RIPTIDES_EVENT_MAX: u8 = 4;
    }
}

/// Repository paths used by the tests and build glue.
pub mod paths {
    use std::path::PathBuf;

    /// The `kmod/` directory.
    pub fn kmod_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    /// The UAPI header.
    pub fn uapi_header() -> PathBuf {
        kmod_dir().join("include/uapi/linux/riptides.h")
    }

    /// `ops/scripts/kmod-test.sh`.
    pub fn kmod_test_script() -> PathBuf {
        kmod_dir().join("../ops/scripts/kmod-test.sh")
    }
}
