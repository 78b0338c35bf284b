//! Everything that crosses a process boundary in Riptides.
//!
//! `wire` is a leaf: it knows neither the control plane nor the daemon. The control plane,
//! the daemon and the operator CLI agree on these types and nothing else.
//!
//! - [`spiffe`]: SPIFFE IDs and trust domains, strictly validated.
//! - [`resource`]: the Kubernetes-shaped resource types of the control plane's API.
//! - [`kubeconfig`]: the kubeconfig file the control plane writes and clients read.
//! - `client` (feature `client`): an HTTPS client for the resource API.
//! - `telemetry` (feature `telemetry`, on by default): OTLP/HTTP trace export for both binaries.

pub mod kubeconfig;
pub mod proto;
pub mod resource;
pub mod spiffe;

#[cfg(feature = "client")]
pub mod client;

#[cfg(feature = "transport")]
pub mod tls;
#[cfg(feature = "transport")]
pub mod transport;

#[cfg(feature = "telemetry")]
pub mod telemetry;

pub use spiffe::{SpiffeId, SpiffeIdError, TrustDomain};
