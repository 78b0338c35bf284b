//! `riptides`: the operator CLI.
//!
//! ```text
//! riptides ctl apply -f manifests.yaml          # create or update (multi-document YAML or JSON, - for stdin)
//! riptides ctl get wi [NAME] [-A] [-o yaml|json|wide|name]
//! riptides ctl delete verifier join
//! riptides token create --ttl 10m --verifier join   # prints <id>.<secret> once
//! riptides token list | riptides token revoke ID
//! riptides deploy --env ops/config/production --dry-run   # helm upgrade --install per release
//! riptides login --server https://cp.example.com:8443 [--ca ca.pem]   # operator sign-in (device flow)
//! riptides logout
//! ```
//!
//! The control plane is found through a kubeconfig (`--kubeconfig`, `$RIPTIDES_KUBECONFIG`);
//! without one, through the session of `riptides login` (a bearer token, refreshed when it
//! expires), else `./riptides-data/admin.kubeconfig` (the file the control plane writes on
//! first start, with the admin client certificate).

mod ctl;
mod demo;
mod deploy;
mod login;
mod manifest;
mod output;
mod timefmt;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use riptides_wire::client::ApiClient;
use riptides_wire::resource::DEFAULT_NAMESPACE;

use output::OutputFormat;

#[derive(Debug, Parser)]
#[command(name = "riptides", version, about = "Operate a Riptides control plane: resources and join tokens.")]
struct Cli {
    /// Kubeconfig of the control plane's API (default: the session of `riptides login`, else
    /// ./riptides-data/admin.kubeconfig).
    #[arg(long, global = true, env = "RIPTIDES_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Namespace (default: the kubeconfig context's, else riptides-system).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage resources (kubectl-style).
    #[command(subcommand)]
    Ctl(CtlCommand),
    /// Manage join tokens for enrolling daemons.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run the whole product end to end in network namespaces and clean up (needs root).
    Demo(demo::DemoArgs),
    /// Deploy an environment directory (deploy.yaml + Helm values) with helm, or print the plan.
    Deploy(deploy::DeployArgs),
    /// Sign in as an operator through the control plane's identity provider (device flow:
    /// open the printed URL in a browser); later commands use the session.
    Login {
        /// The control plane's API URL (https://HOST:8443).
        #[arg(long)]
        server: String,
        /// PEM CA bundle the server is trusted with (default: the system bundle), e.g. the
        /// control plane's trust-bundle.pem.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// OAuth client id of the CLI at the control plane.
        #[arg(long, default_value = login::DEFAULT_CLIENT_ID)]
        client_id: String,
    },
    /// End the session of `riptides login` (revoked at the control plane) and forget it.
    Logout,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// Create or update the objects of manifests.
    Apply {
        /// Manifest file (multi-document YAML or JSON); `-` reads stdin. Repeatable.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
    },
    /// Show objects of a kind.
    Get {
        /// Kind: name, plural or short name (wi, svc, dmn, vf, jt, cs, cb), or KIND/NAME.
        kind: String,
        name: Option<String>,
        /// List across all namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short = 'o', long, value_enum)]
        output: Option<OutputFormat>,
    },
    /// Delete an object.
    Delete { kind: String, name: Option<String> },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a single-use join token and print it (only the hash is stored).
    Create {
        /// Lifetime, Go duration syntax (90s, 10m, 1h30m).
        #[arg(long, default_value = "10m")]
        ttl: String,
        /// The joinToken Verifier that admits the daemon.
        #[arg(long)]
        verifier: Option<String>,
        /// Daemon id to assign at enrollment.
        #[arg(long = "daemon-id")]
        daemon_id: Option<String>,
    },
    /// List join tokens (no secrets): verifier, expiry, used or not.
    List {
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short = 'o', long, value_enum)]
        output: Option<OutputFormat>,
    },
    /// Revoke (delete) a join token.
    Revoke { name: String },
}

/// Where commands go: the kubeconfig and the namespace.
pub struct Target {
    /// The namespace to use.
    pub namespace: String,
    /// The namespace given with `-n`, if any.
    pub explicit_namespace: Option<String>,
    client: ApiClient,
}

/// Used when neither `--kubeconfig` nor a `riptides login` session is given.
const DEFAULT_KUBECONFIG: &str = "./riptides-data/admin.kubeconfig";

impl Target {
    async fn new(kubeconfig: Option<PathBuf>, explicit_namespace: Option<String>) -> Result<Self> {
        let client = match kubeconfig {
            Some(k) => ApiClient::from_kubeconfig_file(&k)?,
            None => match login::session_client().await? {
                Some(c) => c,
                None => ApiClient::from_kubeconfig_file(DEFAULT_KUBECONFIG)
                    .context("not signed in (`riptides login --server URL`) and no --kubeconfig given")?,
            },
        };
        let namespace = explicit_namespace
            .clone()
            .or_else(|| client.default_namespace().map(str::to_owned))
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        Ok(Target { namespace, explicit_namespace, client })
    }

    pub fn client(&self) -> Result<ApiClient> {
        Ok(self.client.clone())
    }
}

async fn run(cli: Cli) -> Result<()> {
    if let Command::Demo(args) = cli.command {
        return demo::run(args).await;
    }
    if let Command::Deploy(args) = cli.command {
        return deploy::run(args);
    }
    match cli.command {
        Command::Login { server, ca, client_id } => {
            return login::login(login::LoginArgs { server, ca, client_id }).await
        }
        Command::Logout => return login::logout().await,
        _ => {}
    }
    let target = Target::new(cli.kubeconfig, cli.namespace).await?;
    match cli.command {
        Command::Ctl(CtlCommand::Apply { files }) => ctl::apply(&target, &files).await,
        Command::Ctl(CtlCommand::Get { kind, name, all_namespaces, output }) => {
            ctl::get(&target, ctl::GetArgs { kind: &kind, name: name.as_deref(), all_namespaces, output }).await
        }
        Command::Ctl(CtlCommand::Delete { kind, name }) => ctl::delete(&target, &kind, name.as_deref()).await,
        Command::Token(TokenCommand::Create { ttl, verifier, daemon_id }) => {
            token::create(
                &target,
                token::CreateArgs { ttl: &ttl, verifier: verifier.as_deref(), daemon_id: daemon_id.as_deref() },
            )
            .await
        }
        Command::Token(TokenCommand::List { all_namespaces, output }) => {
            token::list(&target, all_namespaces, output).await
        }
        Command::Token(TokenCommand::Revoke { name }) => token::revoke(&target, &name).await,
        Command::Demo(_) | Command::Deploy(_) | Command::Login { .. } | Command::Logout => {
            unreachable!("handled above")
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RIPTIDES_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["riptides", "ctl", "get", "wi", "-A", "-o", "yaml", "-n", "x"]).unwrap();
        assert_eq!(cli.namespace.as_deref(), Some("x"));
        assert!(matches!(
            cli.command,
            Command::Ctl(CtlCommand::Get { all_namespaces: true, output: Some(OutputFormat::Yaml), .. })
        ));
        let cli = Cli::try_parse_from(["riptides", "token", "create"]).unwrap();
        assert!(matches!(cli.command, Command::Token(TokenCommand::Create { ref ttl, .. }) if ttl == "10m"));
        assert!(Cli::try_parse_from(["riptides", "ctl", "apply"]).is_err());
        let cli = Cli::try_parse_from(["riptides", "login", "--server", "https://cp:8443"]).unwrap();
        assert!(
            matches!(cli.command, Command::Login { ref client_id, ca: None, .. } if client_id == login::DEFAULT_CLIENT_ID)
        );
        assert!(cli.kubeconfig.is_none());
    }
}
