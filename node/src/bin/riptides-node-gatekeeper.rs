//! `riptides-node-gatekeeper`: the validating admission webhook and the node readiness taint
//! controller (see `riptides_node::gatekeeper`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use riptides_node::gatekeeper::{cert::RotatingCert, facts::ControlPlaneFacts, taint, webhook, WebhookConfig};
use riptides_wire::client::ApiClient;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(name = "riptides-node-gatekeeper", version, about)]
struct Args {
    /// Address of the webhook's HTTPS listener.
    #[arg(long, default_value = "0.0.0.0:9443")]
    listen: SocketAddr,
    /// Serving certificate: `tls.crt`/`tls.key` here are used and reloaded when they change;
    /// otherwise a CA is kept here (`ca.crt` is the webhook's caBundle) and leaves are minted
    /// and rotated.
    #[arg(long, default_value = "/var/lib/riptides-gatekeeper/tls")]
    tls_dir: PathBuf,
    /// DNS names of the self-managed certificate (the webhook Service's names).
    #[arg(long = "dns-name", default_value = "riptides-node-gatekeeper.riptides-system.svc")]
    dns_names: Vec<String>,
    /// Kubeconfig for the Riptides control plane's resource API (read access suffices).
    #[arg(long)]
    controlplane_kubeconfig: PathBuf,
    /// Kubeconfig for the cluster's API server; in a pod, the service account is used when
    /// this is absent. Without either, the taint controller and pod lookups are off.
    #[arg(long)]
    cluster_kubeconfig: Option<PathBuf>,
    /// Do not run the node readiness taint controller.
    #[arg(long)]
    no_taint_controller: bool,
    /// Seconds between taint passes.
    #[arg(long, default_value_t = riptides_node::gatekeeper::TAINT_INTERVAL.as_secs())]
    taint_interval_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let cp = ApiClient::from_kubeconfig_file(&args.controlplane_kubeconfig)
        .with_context(|| format!("control plane kubeconfig {}", args.controlplane_kubeconfig.display()))?;
    let facts: Arc<dyn riptides_node::gatekeeper::facts::FactSource> =
        Arc::new(ControlPlaneFacts::new(cp, riptides_node::gatekeeper::FACTS_TTL));
    let kube = match &args.cluster_kubeconfig {
        Some(p) => {
            Some(ApiClient::from_kubeconfig_file(p).with_context(|| format!("cluster kubeconfig {}", p.display()))?)
        }
        None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => Some(
            ApiClient::in_cluster("/var/run/secrets/kubernetes.io/serviceaccount").context("in-cluster API client")?,
        ),
        None => None,
    };
    let cert = Arc::new(
        RotatingCert::open(&args.tls_dir, &args.dns_names, riptides_node::gatekeeper::LEAF_TTL)
            .context("webhook certificate")?,
    );
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    if let (Some(kube), false) = (kube.clone(), args.no_taint_controller) {
        let interval = Duration::from_secs(args.taint_interval_secs.max(1));
        tokio::spawn(taint::run(kube, facts.clone(), interval, shutdown.clone()));
    } else {
        tracing::warn!("node readiness taint controller is off (no cluster API access or --no-taint-controller)");
    }
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        stop.cancel();
    });
    println!("riptides-node-gatekeeper: webhook listening on https://{addr}/validate");
    tracing::info!(%addr, "webhook listening");
    webhook::serve(listener, cert, facts, kube, WebhookConfig::default(), shutdown).await?;
    Ok(())
}
