//! `riptides-daemon`: the node agent. See `riptides-daemon --help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Parser;
use riptides_node::config::{DEFAULT_ADMIN_ADDR, DEFAULT_DATA_DIR, DEFAULT_TRUST_DOMAIN};
use riptides_node::{CaTrust, Daemon, DaemonConfig, DataplaneMode, JoinToken};
use riptides_wire::TrustDomain;

/// The Riptides daemon: attests to the control plane, keeps workload certificates current and
/// holds the policy pushed to it.
#[derive(Debug, Parser)]
#[command(name = "riptides-daemon", version)]
struct Args {
    /// Control plane QUIC endpoint, HOST:PORT (UDP, normally port 9443). Repeat it (or give a
    /// comma-separated list, or a host name with several addresses) for several replicas: the
    /// daemon spreads over them and fails over.
    #[arg(long, value_name = "HOST:PORT", required = true, value_delimiter = ',')]
    controlplane: Vec<String>,
    /// TCP+TLS fallback endpoint for networks that block UDP [default: the --controlplane host, port 8001].
    #[arg(long, value_name = "HOST:PORT")]
    controlplane_tunnel: Option<String>,
    /// Trust domain; the control plane's identity is spiffe://<td>/riptides/controlplane.
    #[arg(long, value_name = "TD", default_value = DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// PEM file with the control plane's CA root(s). This or --ca-pin is needed on first start;
    /// afterwards the daemon uses the bundle it received and keeps it current.
    #[arg(long, value_name = "FILE", conflicts_with = "ca_pin")]
    ca_bundle: Option<PathBuf>,
    /// sha256:<hex> of the SPKI of a CA certificate in the control plane's chain.
    #[arg(long, value_name = "sha256:HEX")]
    ca_pin: Option<String>,
    /// Join token (`riptides token create`), needed to attest; never logged.
    #[arg(long, value_name = "TOKEN", env = "RIPTIDES_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// Where the identity, trust bundle and last policy are kept.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Admin listener: /healthz, /readyz, /metrics, /config_dump.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_ADMIN_ADDR)]
    admin_addr: SocketAddr,
    /// Dataplane: auto|kernel|userspace|none. `auto` uses the kernel module (riptides.ko) when it is
    /// loaded, else the userspace dataplane (nftables capture); /readyz says which.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    dataplane: DataplaneMode,
    #[command(flatten)]
    attestation: riptides_node::attest::AttestArgs,
    /// Opt-in: also write the node's TLS intercept CA certificate to this file (e.g.
    /// /usr/local/share/ca-certificates/riptides-intercept.crt, then run update-ca-certificates).
    /// The certificate is always published as <data-dir>/intercept/ca.crt.
    #[arg(long, value_name = "FILE")]
    intercept_trust_store: Option<PathBuf>,
    /// Log filter (RUST_LOG syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
    /// Export traces over OTLP/HTTP to this collector, e.g. http://127.0.0.1:4318
    /// (/v1/traces is appended when the URL has no path).
    #[arg(long, env = "RIPTIDES_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
}

impl Args {
    fn into_config(self) -> Result<DaemonConfig> {
        let mut c = DaemonConfig::new(self.controlplane.join(","), self.data_dir);
        c.controlplane_tunnel = self.controlplane_tunnel;
        c.trust_domain = TrustDomain::parse(&self.trust_domain).context("invalid --trust-domain")?;
        c.ca = match (self.ca_bundle, self.ca_pin) {
            (Some(f), _) => Some(CaTrust::Bundle(f)),
            (None, Some(p)) => {
                riptides_wire::tls::parse_pin(&p).context("invalid --ca-pin")?;
                Some(CaTrust::Pin(p))
            }
            (None, None) => None,
        };
        c.join_token = self.join_token.filter(|t| !t.trim().is_empty()).map(JoinToken::new);
        c.attestation = self.attestation.into_config()?;
        c.admin_addr = self.admin_addr;
        c.dataplane = self.dataplane;
        c.userspace.intercept.trust_store_path = self.intercept_trust_store;
        Ok(c)
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let otlp = init_tracing(&args.log, args.otlp_endpoint.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(run(args));
    // Ending the runtime drops the tasks still running, which closes their spans (the control
    // plane session, say); only then is the exporter flushed, so those spans are sent too.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    drop(otlp);
    result
}

async fn run(args: Args) -> Result<()> {
    let config = args.into_config()?;
    let daemon = Daemon::start(config).await?;
    tracing::info!(name = daemon.name(), admin = ?daemon.admin_addr(), "riptides-daemon started");
    tokio::select! {
        exit = daemon.wait() => {
            anyhow::bail!("the daemon's actor tree ended: {exit}");
        }
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            let exit = daemon.shutdown().await;
            if !exit.is_success() {
                anyhow::bail!("shutdown: {exit}");
            }
        }
    }
    Ok(())
}

/// Logs to stdout with `--log` as the filter and, with `--otlp-endpoint`, the same spans to an
/// OTLP collector.
fn init_tracing(log: &str, otlp_endpoint: Option<&str>) -> Result<Option<riptides_wire::telemetry::OtlpGuard>> {
    use tracing_subscriber::prelude::*;
    let (otlp, guard) = match otlp_endpoint {
        Some(endpoint) => {
            let (layer, guard) = riptides_wire::telemetry::otlp_layer("riptides-daemon", endpoint)?;
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new(log))
        .with(tracing_subscriber::fmt::layer())
        .with(otlp)
        .init();
    Ok(guard)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
