//! `riptides-controlplane`: the control plane binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use riptides_cp::config::{Config, DEFAULT_TRUST_DOMAIN};
use riptides_cp::ControlPlane;
use riptides_wire::TrustDomain;

/// The Riptides control plane: resource API, SPIFFE CA, daemon endpoint.
///
/// On first start it creates DATA_DIR with an embedded store, a CA and
/// DATA_DIR/admin.kubeconfig, which both `riptides ctl` and stock kubectl accept.
#[derive(Debug, Parser)]
#[command(name = "riptides-controlplane", version)]
struct Args {
    /// Directory for the store, the CA and admin.kubeconfig.
    #[arg(long, env = "RIPTIDES_DATA_DIR", default_value = "./riptides-data")]
    data_dir: PathBuf,
    /// SPIFFE trust domain of every identity this control plane issues.
    #[arg(long, env = "RIPTIDES_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// HTTPS resource API (Kubernetes-compatible).
    #[arg(long, default_value = "0.0.0.0:8443")]
    api_addr: SocketAddr,
    /// QUIC endpoint for daemons (UDP): attestation, CSR signing, policy push, tunnel.
    #[arg(long, default_value = "0.0.0.0:9443")]
    quic_addr: SocketAddr,
    /// TCP+TLS tunnel carrying the daemon protocol where UDP is blocked.
    #[arg(long, default_value = "0.0.0.0:8001")]
    tunnel_addr: SocketAddr,
    /// Plain HTTP /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    health_addr: SocketAddr,
    /// API URL written into admin.kubeconfig (default: https://<api-addr>).
    #[arg(long)]
    advertise_url: Option<String>,
    /// Extra DNS name or IP for the API serving certificate (repeatable).
    #[arg(long = "api-server-name")]
    api_server_names: Vec<String>,
    /// Default X509-SVID lifetime of workloads, in seconds.
    #[arg(long, default_value_t = 3600)]
    svid_ttl_secs: u64,
    /// Lifetime of daemon SVIDs, in seconds (renewed at half life; long enough to ride out
    /// partitions).
    #[arg(long, default_value_t = 24 * 3600)]
    daemon_svid_ttl_secs: u64,
    /// Export traces over OTLP/HTTP to this collector, e.g. http://127.0.0.1:4318
    /// (/v1/traces is appended when the URL has no path).
    #[arg(long, env = "RIPTIDES_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Held to the end of main: dropping it flushes the spans still buffered.
    let _otlp = match init_tracing(args.otlp_endpoint.as_deref()) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr (filter: RUST_LOG, default info) and, with `--otlp-endpoint`, the same spans
/// to an OTLP collector.
fn init_tracing(otlp_endpoint: Option<&str>) -> anyhow::Result<Option<riptides_wire::telemetry::OtlpGuard>> {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let (otlp, guard) = match otlp_endpoint {
        Some(endpoint) => {
            let (layer, guard) = riptides_wire::telemetry::otlp_layer("riptides-controlplane", endpoint)?;
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(otlp)
        .init();
    Ok(guard)
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let trust_domain = TrustDomain::parse(&args.trust_domain)
        .with_context(|| format!("invalid --trust-domain {:?}", args.trust_domain))?;
    let mut config = Config::new(args.data_dir, trust_domain);
    config.api_addr = args.api_addr;
    config.quic_addr = args.quic_addr;
    config.tunnel_addr = args.tunnel_addr;
    config.health_addr = args.health_addr;
    config.advertise_url = args.advertise_url;
    config.api_server_names = args.api_server_names;
    config.default_svid_ttl = Duration::from_secs(args.svid_ttl_secs);
    config.daemon_svid_ttl = Duration::from_secs(args.daemon_svid_ttl_secs);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let cp = ControlPlane::start(config).await?;
        let pin = riptides_wire::tls::format_pin(&riptides_wire::tls::spki_sha256(cp.ca().bundle().roots()[0].as_ref())?);
        eprintln!(
            "riptides-controlplane: API https://{} (kubeconfig {}), daemons quic://{} tcp://{}, health http://{}, CA pin {pin}",
            cp.api_addr(),
            cp.kubeconfig_path().display(),
            cp.quic_addr(),
            cp.tunnel_addr(),
            cp.health_addr()
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            exit = cp.wait() => {
                tracing::error!(%exit, "actor tree ended");
                return Ok(ExitCode::FAILURE);
            }
        }
        tracing::info!("shutting down");
        let exit = cp.shutdown().await;
        Ok(if exit.is_success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    })
}
