//! `riptides-controlplane`: the control plane binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use riptides_cp::ca::SealKey;
use riptides_cp::config::{Config, StoreBackend, DEFAULT_TRUST_DOMAIN};
use riptides_cp::store::{EtcdConfig, EtcdOptions, EtcdStore, RedbStore, Store};
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
    /// Resource store: the embedded redb file in the data dir (one replica), or etcd (several
    /// replicas sharing one cluster).
    #[arg(long, value_enum, default_value_t = StoreKind::Redb)]
    store: StoreKind,
    /// etcd client URLs (http:// or https://), comma-separated or repeated.
    #[arg(long, env = "RIPTIDES_ETCD_ENDPOINTS", value_delimiter = ',', global = true, value_name = "URL")]
    etcd_endpoints: Vec<String>,
    /// CA certificate (PEM) of etcd's serving certificates, for https endpoints.
    #[arg(long, global = true, value_name = "FILE")]
    etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's --client-cert-auth.
    #[arg(long, global = true, value_name = "FILE")]
    etcd_cert: Option<PathBuf>,
    /// Client key (PEM) for --etcd-cert.
    #[arg(long, global = true, value_name = "FILE")]
    etcd_key: Option<PathBuf>,
    /// Key prefix of this control plane's objects in etcd.
    #[arg(long, global = true, default_value = riptides_cp::store::etcd::DEFAULT_PREFIX)]
    etcd_prefix: String,
    /// File with the 32-byte AES-256-GCM key (raw, hex or base64) that seals the CA material
    /// the replicas share through etcd. RIPTIDES_CA_SEAL_KEY may hold the key itself instead.
    #[arg(long, value_name = "FILE")]
    ca_seal_key_file: Option<PathBuf>,
    /// Leader lease TTL in seconds (etcd): the longest the controllers go without a leader
    /// after the leader replica dies.
    #[arg(long, default_value_t = 10)]
    leader_lease_secs: u64,
    /// This replica's name in the leader election (default: host name, API address, pid).
    #[arg(long)]
    replica_name: Option<String>,
    #[command(flatten)]
    oidc: riptides_cp::oidc::cli::OidcArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    Redb,
    Etcd,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Copies every object from one store to another and verifies the copy object by object,
    /// e.g. `migrate --from redb:/var/lib/riptides --to etcd:https://10.0.0.1:2379,https://10.0.0.2:2379`
    /// (the --etcd-* TLS flags apply to the etcd side).
    Migrate {
        /// `redb:DATA_DIR` (or a path to the .redb file) or `etcd:URL[,URL...]`.
        #[arg(long)]
        from: String,
        /// Same forms as --from.
        #[arg(long)]
        to: String,
    },
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
    let result = match args.command {
        Some(Command::Migrate { ref from, ref to }) => migrate(&args, from, to),
        None => run(args),
    };
    match result {
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
    let etcd = match args.store {
        StoreKind::Etcd => Some((etcd_config(&args, args.etcd_endpoints.clone())?, seal_key(&args)?)),
        StoreKind::Redb => None,
    };
    let mut config = Config::new(args.data_dir, trust_domain);
    config.api_addr = args.api_addr;
    config.quic_addr = args.quic_addr;
    config.tunnel_addr = args.tunnel_addr;
    config.health_addr = args.health_addr;
    config.advertise_url = args.advertise_url.clone();
    config.api_server_names = args.api_server_names.clone();
    config.default_svid_ttl = Duration::from_secs(args.svid_ttl_secs);
    config.daemon_svid_ttl = Duration::from_secs(args.daemon_svid_ttl_secs);
    config.etcd_prefix = args.etcd_prefix.clone();
    config.leader_lease_ttl = Duration::from_secs(args.leader_lease_secs.max(2));
    config.replica_name = args.replica_name.clone();
    config.oidc = args.oidc.to_config()?;
    if let Some((etcd, key)) = etcd {
        config.store = StoreBackend::Etcd(etcd);
        config.ca_seal_key = Some(std::sync::Arc::new(key));
    }
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

fn etcd_config(args: &Args, endpoints: Vec<String>) -> anyhow::Result<EtcdConfig> {
    let endpoints: Vec<String> = endpoints.into_iter().map(|e| e.trim().to_owned()).filter(|e| !e.is_empty()).collect();
    if endpoints.is_empty() {
        anyhow::bail!("--store etcd needs --etcd-endpoints URL[,URL...]");
    }
    let mut c = EtcdConfig::new(endpoints);
    c.ca_file = args.etcd_ca.clone();
    c.cert_file = args.etcd_cert.clone();
    c.key_file = args.etcd_key.clone();
    Ok(c)
}

/// The CA seal key from --ca-seal-key-file or RIPTIDES_CA_SEAL_KEY.
fn seal_key(args: &Args) -> anyhow::Result<SealKey> {
    if let Some(path) = &args.ca_seal_key_file {
        return Ok(SealKey::from_file(path)?);
    }
    match std::env::var("RIPTIDES_CA_SEAL_KEY") {
        Ok(v) => Ok(SealKey::parse(&v)?),
        Err(_) => anyhow::bail!(
            "--store etcd shares the CA between replicas sealed with a key: give --ca-seal-key-file FILE or RIPTIDES_CA_SEAL_KEY (32 bytes, hex or base64)"
        ),
    }
}

async fn open_store(args: &Args, spec: &str) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    if let Some(dir) = spec.strip_prefix("redb:") {
        let path = PathBuf::from(dir);
        let file = if path.extension().is_some_and(|e| e == "redb") { path } else { path.join("store.redb") };
        if !file.exists() {
            anyhow::bail!("{} does not exist", file.display());
        }
        let store = tokio::task::spawn_blocking(move || RedbStore::open(&file)).await??;
        return Ok(std::sync::Arc::new(store));
    }
    if let Some(urls) = spec.strip_prefix("etcd:") {
        let config = etcd_config(args, urls.split(',').map(str::to_owned).collect())?;
        let opts = EtcdOptions { prefix: args.etcd_prefix.clone(), ..EtcdOptions::default() };
        return Ok(std::sync::Arc::new(EtcdStore::connect(&config, opts).await?));
    }
    anyhow::bail!("store {spec:?}: expected redb:DIR or etcd:URL[,URL...]")
}

fn migrate(args: &Args, from: &str, to: &str) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let source = open_store(args, from).await.with_context(|| format!("opening {from}"))?;
        let target = open_store(args, to).await.with_context(|| format!("opening {to}"))?;
        let resources = riptides_cp::store::etcd::migrate::all_resources();
        let report = riptides_cp::store::etcd::migrate::migrate(source.as_ref(), target.as_ref(), &resources).await?;
        println!(
            "migrated {from} -> {to}: {} copied, {} already present, {} verified equal",
            report.copied, report.unchanged, report.verified
        );
        Ok(ExitCode::SUCCESS)
    })
}
