//! The daemon (filled by the daemon-link issue).
