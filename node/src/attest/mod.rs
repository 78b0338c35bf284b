//! Daemon-side attestation plugins: each collects the proof of one method
//! (`--attestation aws|gcp|k8s|jwt|x509pop|sshpop|token`) and, for the proof-of-possession
//! methods, answers the control plane's challenge with the local key.
//!
//! | method | what is read | default source |
//! | --- | --- | --- |
//! | `token` | `--join-token` | — |
//! | `aws` | identity document + base64 signature (IMDSv2, IMDSv1 fallback) | `http://169.254.169.254` |
//! | `gcp` | identity token, `format=full`, `--gcp-audience` | `http://169.254.169.254` |
//! | `k8s` | projected service-account token file | `/var/run/secrets/tokens/riptides` |
//! | `jwt` | token file (`--attestation-token-file`, required) | — |
//! | `x509pop` | certificate chain and key (PEM) | `--attestation-cert`, `--attestation-key` |
//! | `sshpop` | host certificate and OpenSSH Ed25519 host key | `/etc/ssh/ssh_host_ed25519_key{-cert.pub,}` |
//!
//! Proofs are read fresh for every attempt (tokens rotate) and never logged.

pub mod http;
pub mod keys;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use riptides_wire::proto::messages::{challenge_payload, ChallengeAnswerMsg, ProofMsg, Request, Response};
use riptides_wire::proto::{read_frame_timeout, write_frame, FrameConfig, FrameError};
use riptides_wire::transport::Connection;
use tokio::io::AsyncWriteExt as _;

pub use keys::Signer;

/// The real link-local metadata address (AWS IMDS and GCP's metadata server alike).
pub const DEFAULT_METADATA_URL: &str = "http://169.254.169.254";
pub const DEFAULT_K8S_TOKEN: &str = "/var/run/secrets/tokens/riptides";
pub const DEFAULT_SSH_CERT: &str = "/etc/ssh/ssh_host_ed25519_key-cert.pub";
pub const DEFAULT_SSH_KEY: &str = "/etc/ssh/ssh_host_ed25519_key";
/// Largest token or certificate file read.
const MAX_FILE: u64 = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    #[default]
    Token,
    Aws,
    Gcp,
    K8s,
    Jwt,
    X509Pop,
    SshPop,
}

impl Method {
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Token => "token",
            Method::Aws => "aws",
            Method::Gcp => "gcp",
            Method::K8s => "k8s",
            Method::Jwt => "jwt",
            Method::X509Pop => "x509pop",
            Method::SshPop => "sshpop",
        }
    }
}

impl FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "token" => Method::Token,
            "aws" => Method::Aws,
            "gcp" => Method::Gcp,
            "k8s" => Method::K8s,
            "jwt" => Method::Jwt,
            "x509pop" => Method::X509Pop,
            "sshpop" => Method::SshPop,
            other => {
                return Err(format!(
                    "unknown attestation method {other:?} (aws, gcp, k8s, jwt, x509pop, sshpop, token)"
                ))
            }
        })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the daemon attests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationConfig {
    pub method: Method,
    /// The Verifier to ask for (default: the only one of the method).
    pub verifier: Option<String>,
    /// Base URL of the instance metadata service (`aws`, `gcp`).
    pub metadata_url: String,
    /// Audience requested for a GCP identity token.
    pub gcp_audience: Option<String>,
    /// Token file (`k8s`, `jwt`).
    pub token_file: Option<PathBuf>,
    /// Certificate file (`x509pop`: PEM chain; `sshpop`: host certificate).
    pub cert_file: Option<PathBuf>,
    /// Key file (`x509pop`: PEM; `sshpop`: OpenSSH).
    pub key_file: Option<PathBuf>,
    /// Timeout of one metadata request.
    pub metadata_timeout: Duration,
}

impl Default for AttestationConfig {
    fn default() -> Self {
        AttestationConfig {
            method: Method::Token,
            verifier: None,
            metadata_url: DEFAULT_METADATA_URL.to_owned(),
            gcp_audience: None,
            token_file: None,
            cert_file: None,
            key_file: None,
            metadata_timeout: Duration::from_secs(5),
        }
    }
}

/// The attestation flags of `riptides-daemon` (flattened into its arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct AttestArgs {
    /// How the daemon proves who it is: token|aws|gcp|k8s|jwt|x509pop|sshpop.
    #[arg(long, value_name = "METHOD", default_value = "token")]
    pub attestation: Method,
    /// Name of the Verifier resource to attest against (default: the only one of the method).
    #[arg(long, value_name = "NAME")]
    pub attestation_verifier: Option<String>,
    /// Instance metadata service base URL (aws, gcp).
    #[arg(long, value_name = "URL", default_value = DEFAULT_METADATA_URL)]
    pub metadata_url: String,
    /// Audience of the GCP identity token (the Verifier's gcpIIT.audience).
    #[arg(long, value_name = "AUD")]
    pub gcp_audience: Option<String>,
    /// Token file: k8s [default /var/run/secrets/tokens/riptides], jwt (required).
    #[arg(long, value_name = "FILE")]
    pub attestation_token_file: Option<PathBuf>,
    /// Certificate: x509pop PEM chain (required), sshpop host certificate
    /// [default /etc/ssh/ssh_host_ed25519_key-cert.pub].
    #[arg(long, value_name = "FILE")]
    pub attestation_cert: Option<PathBuf>,
    /// Private key: x509pop PEM (required), sshpop OpenSSH host key
    /// [default /etc/ssh/ssh_host_ed25519_key].
    #[arg(long, value_name = "FILE")]
    pub attestation_key: Option<PathBuf>,
}

impl AttestArgs {
    pub fn into_config(self) -> Result<AttestationConfig> {
        let c = AttestationConfig {
            method: self.attestation,
            verifier: self.attestation_verifier,
            metadata_url: self.metadata_url,
            gcp_audience: self.gcp_audience,
            token_file: self.attestation_token_file,
            cert_file: self.attestation_cert,
            key_file: self.attestation_key,
            ..AttestationConfig::default()
        };
        c.check()?;
        Ok(c)
    }
}

impl AttestationConfig {
    /// Refuses combinations that can never attest.
    pub fn check(&self) -> Result<()> {
        match self.method {
            Method::Gcp if self.gcp_audience.is_none() => bail!("--attestation gcp needs --gcp-audience"),
            Method::Jwt if self.token_file.is_none() => bail!("--attestation jwt needs --attestation-token-file"),
            Method::X509Pop if self.cert_file.is_none() || self.key_file.is_none() => {
                bail!("--attestation x509pop needs --attestation-cert and --attestation-key")
            }
            Method::Aws | Method::Gcp if !self.metadata_url.starts_with("http://") => {
                bail!("--metadata-url must be an http:// URL")
            }
            _ => Ok(()),
        }
    }
}

fn read_small(path: &std::path::Path) -> Result<String> {
    let len = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
    if len > MAX_FILE {
        bail!("{} is larger than {MAX_FILE} bytes", path.display());
    }
    let s = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(s.trim().to_owned())
}

async fn imds_aws(cfg: &AttestationConfig) -> Result<ProofMsg> {
    let base = &cfg.metadata_url;
    let t = cfg.metadata_timeout;
    // IMDSv2 first; an IMDS that does not know tokens (v1 only) answers 403/404/405.
    let (code, body) =
        http::request("PUT", base, "/latest/api/token", &[("X-aws-ec2-metadata-token-ttl-seconds", "60")], t).await?;
    let token = (code == 200).then(|| String::from_utf8_lossy(&body).trim().to_owned());
    let headers: Vec<(&str, &str)> =
        token.as_deref().map(|t| vec![("X-aws-ec2-metadata-token", t)]).unwrap_or_default();
    let get = |path: &'static str| {
        let headers = headers.clone();
        async move {
            let (code, body) = http::request("GET", base, path, &headers, t).await?;
            if code != 200 {
                bail!("GET {path}: HTTP {code}");
            }
            String::from_utf8(body).map_err(|_| anyhow!("GET {path}: not UTF-8"))
        }
    };
    let document = get("/latest/dynamic/instance-identity/document").await?;
    let signature = get("/latest/dynamic/instance-identity/signature").await?;
    Ok(ProofMsg::AwsIid { document, signature: signature.trim().to_owned() })
}

fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn gcp(cfg: &AttestationConfig) -> Result<ProofMsg> {
    let aud = cfg.gcp_audience.as_deref().ok_or_else(|| anyhow!("--gcp-audience is required"))?;
    let path = format!(
        "/computeMetadata/v1/instance/service-accounts/default/identity?audience={}&format=full",
        query_escape(aud)
    );
    let (code, body) =
        http::request("GET", &cfg.metadata_url, &path, &[("Metadata-Flavor", "Google")], cfg.metadata_timeout).await?;
    if code != 200 {
        bail!("GCP metadata identity: HTTP {code}");
    }
    Ok(ProofMsg::GcpIit(String::from_utf8(body).map_err(|_| anyhow!("identity token is not UTF-8"))?.trim().to_owned()))
}

/// What the daemon presents, and the key that answers a challenge (proof of possession).
pub struct Collected {
    pub proof: ProofMsg,
    pub signer: Option<Signer>,
}

/// Collects the proof of `cfg.method` (not `token`: join tokens keep their own request).
pub async fn collect(cfg: &AttestationConfig) -> Result<Collected> {
    let path_or = |p: &Option<PathBuf>, d: &str| p.clone().unwrap_or_else(|| PathBuf::from(d));
    let (proof, signer) = match cfg.method {
        Method::Token => bail!("join tokens are sent with Request::Attest"),
        Method::Aws => (imds_aws(cfg).await.context("AWS instance metadata")?, None),
        Method::Gcp => (gcp(cfg).await.context("GCP metadata server")?, None),
        Method::K8s => (ProofMsg::K8sSat(read_small(&path_or(&cfg.token_file, DEFAULT_K8S_TOKEN))?), None),
        Method::Jwt => (ProofMsg::Jwt(read_small(&path_or(&cfg.token_file, ""))?), None),
        Method::X509Pop => {
            let cert = path_or(&cfg.cert_file, "");
            let chain = riptides_wire::tls::load_certs_file(&cert)
                .map_err(|e| anyhow!("reading {}: {e}", cert.display()))?
                .into_iter()
                .map(|c| c.as_ref().to_vec())
                .collect::<Vec<_>>();
            if chain.is_empty() {
                bail!("{} holds no certificate", cert.display());
            }
            (ProofMsg::X509Pop { chain_der: chain }, Some(Signer::from_pem_file(&path_or(&cfg.key_file, ""))?))
        }
        Method::SshPop => {
            let certificate = read_small(&path_or(&cfg.cert_file, DEFAULT_SSH_CERT))?;
            let signer = Signer::from_openssh_file(&path_or(&cfg.key_file, DEFAULT_SSH_KEY))?;
            (ProofMsg::SshPop { certificate }, Some(signer))
        }
    };
    Ok(Collected { proof, signer })
}

/// The Verifier method name the control plane signs challenges for.
fn challenge_method(proof: &ProofMsg) -> &'static str {
    proof.kind()
}

/// One attestation exchange on a new stream: the request, then (for proof of possession) the
/// challenge and its answer, then the control plane's verdict.
pub async fn exchange(
    conn: &dyn Connection,
    req: &Request,
    signer: Option<&Signer>,
    csr_key: &str,
    timeout: Duration,
) -> Result<Response, FrameError> {
    let frames = FrameConfig::default();
    let io = |e: String| FrameError::Io(std::io::Error::other(e));
    let mut s = conn.open_bi().await.map_err(|e| io(e.to_string()))?;
    write_frame(&mut s.send, req, &frames).await?;
    let first: Response = read_frame_timeout(&mut s.recv, &frames, timeout).await?;
    let Response::Challenge(c) = first else {
        let _ = s.send.shutdown().await;
        return Ok(first);
    };
    let (Request::AttestProof(a), Some(signer)) = (req, signer) else {
        return Err(io("the control plane sent a challenge for a proof without a key".into()));
    };
    let payload = challenge_payload(challenge_method(&a.proof), &c.nonce, csr_key);
    let signature = signer.sign(&payload).map_err(|e| io(format!("{e:#}")))?;
    write_frame(&mut s.send, &Request::ChallengeAnswer(ChallengeAnswerMsg { signature }), &frames).await?;
    let _ = s.send.shutdown().await;
    read_frame_timeout(&mut s.recv, &frames, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_checks() {
        for m in ["token", "aws", "gcp", "k8s", "jwt", "x509pop", "sshpop"] {
            assert_eq!(m.parse::<Method>().unwrap().as_str(), m);
        }
        assert!("tpm".parse::<Method>().is_err());
        let c = AttestationConfig { method: Method::Gcp, ..Default::default() };
        assert!(c.check().unwrap_err().to_string().contains("--gcp-audience"));
        let c = AttestationConfig { method: Method::Jwt, ..Default::default() };
        assert!(c.check().is_err());
        let c = AttestationConfig { method: Method::Aws, ..Default::default() };
        c.check().unwrap();
        assert_eq!(query_escape("https://cp.example/x y"), "https%3A%2F%2Fcp.example%2Fx%20y");
    }
}
