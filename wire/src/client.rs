//! API client (being written).
