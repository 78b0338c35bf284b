//! The Riptides control plane.
//!
//! - [`config`]: every setting and its default.
//! - [`controlplane`]: assembles the pieces into one supervised actor tree ([`ControlPlane`]).
//! - [`ca`]: the SPIFFE certificate authority (X509-SVIDs, trust bundle, rotation).
//! - [`store`]: resource storage behind the [`store::Store`] trait (redb by default).
//! - [`api`]: the Kubernetes-compatible HTTPS resource API.
//! - [`health`], [`metrics`]: the plain-HTTP health listener and Prometheus metrics.

pub mod api;
pub mod attest;
pub mod ca;
pub mod config;
pub mod controlplane;
pub mod endpoint;
pub mod graphql;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod oidc;
pub mod policy;
pub mod store;
mod task;

pub use config::Config;
pub use controlplane::ControlPlane;
