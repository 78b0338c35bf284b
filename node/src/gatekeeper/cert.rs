//! The webhook's serving certificate, rotated without a restart.
//!
//! Two sources, chosen by what is in the TLS directory:
//! - **Mounted** (`tls.crt` + `tls.key`, e.g. from cert-manager): re-read whenever either
//!   file's modification time changes, checked at most every [`RELOAD_CHECK`].
//! - **Self-managed** (neither file present): the gatekeeper keeps its own CA in the directory
//!   (`ca.crt`, `ca.key`, mode 0600) — `ca.crt` is the `caBundle` of the webhook
//!   configuration — and mints itself a leaf for the configured DNS names, valid for
//!   `leaf_ttl` and replaced after two thirds of it. The CA outlives leaves, so the
//!   `caBundle` never changes while the serving key does.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often a mounted certificate's files are checked for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CertError + '_ {
    move |source| CertError::Io { path: path.display().to_string(), source }
}

enum Source {
    Mounted {
        cert: PathBuf,
        key: PathBuf,
        stamp: Option<(SystemTime, SystemTime)>,
        checked: Instant,
    },
    SelfManaged {
        ca_cert: String,
        issuer: Box<Issuer<'static, KeyPair>>,
        dns_names: Vec<String>,
        ttl: Duration,
        minted: Instant,
    },
}

/// A [`ResolvesServerCert`] whose certificate can change under a running server.
pub struct RotatingCert {
    state: Mutex<(Source, Arc<CertifiedKey>)>,
}

impl std::fmt::Debug for RotatingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatingCert").finish_non_exhaustive()
    }
}

impl RotatingCert {
    /// Loads or creates the certificate in `dir` (see the module docs for the two modes).
    pub fn open(dir: &Path, dns_names: &[String], leaf_ttl: Duration) -> Result<RotatingCert, CertError> {
        let cert = dir.join("tls.crt");
        let key = dir.join("tls.key");
        if cert.exists() || key.exists() {
            let ck = load_pair(&cert, &key)?;
            let stamp = stamps(&cert, &key);
            let src = Source::Mounted { cert, key, stamp, checked: Instant::now() };
            return Ok(RotatingCert { state: Mutex::new((src, Arc::new(ck))) });
        }
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let (ca_cert, issuer) = load_or_create_ca(dir)?;
        let ck = mint(&ca_cert, &issuer, dns_names, leaf_ttl)?;
        let src = Source::SelfManaged {
            ca_cert,
            issuer: Box::new(issuer),
            dns_names: dns_names.to_vec(),
            ttl: leaf_ttl,
            minted: Instant::now(),
        };
        Ok(RotatingCert { state: Mutex::new((src, Arc::new(ck))) })
    }

    /// The certificate to serve now, rotating first if it is due.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (src, ck) = &mut *guard;
        match src {
            Source::Mounted { cert, key, stamp, checked } => {
                if checked.elapsed() >= RELOAD_CHECK {
                    *checked = Instant::now();
                    let now = stamps(cert, key);
                    if now != *stamp {
                        match load_pair(cert, key) {
                            Ok(new) => {
                                *stamp = now;
                                *ck = Arc::new(new);
                                tracing::info!(cert = %cert.display(), "reloaded the webhook certificate");
                            }
                            // A half-written pair keeps the old certificate until both parts agree.
                            Err(e) => tracing::warn!(error = %e, "keeping the current webhook certificate"),
                        }
                    }
                }
            }
            Source::SelfManaged { ca_cert, issuer, dns_names, ttl, minted } => {
                if minted.elapsed() >= *ttl * 2 / 3 {
                    match mint(ca_cert, issuer, dns_names, *ttl) {
                        Ok(new) => {
                            *ck = Arc::new(new);
                            *minted = Instant::now();
                            tracing::info!("rotated the webhook certificate");
                        }
                        Err(e) => tracing::warn!(error = %e, "could not rotate the webhook certificate"),
                    }
                }
            }
        }
        ck.clone()
    }

    /// Forces the next [`current`](Self::current) to rotate (self-managed) or re-check the
    /// files (mounted). For operators' SIGHUP and for tests.
    pub fn rotate_now(&self) {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match &mut guard.0 {
            Source::Mounted { checked, .. } => *checked = Instant::now() - RELOAD_CHECK,
            Source::SelfManaged { minted, ttl, .. } => *minted = Instant::now() - *ttl,
        }
    }
}

impl ResolvesServerCert for RotatingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn stamps(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, CertError> {
    let cert_pem = fs::read(cert).map_err(io_err(cert))?;
    let key_pem = fs::read(key).map_err(io_err(key))?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Invalid { path: cert.display().to_string(), reason: e.to_string() })?;
    if chain.is_empty() {
        return Err(CertError::Invalid { path: cert.display().to_string(), reason: "no PEM certificate".into() });
    }
    let key_der = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| CertError::Invalid { path: key.display().to_string(), reason: e.to_string() })?
        .ok_or_else(|| CertError::Invalid { path: key.display().to_string(), reason: "no PEM private key".into() })?;
    certified(chain, key_der).map_err(|reason| CertError::Invalid { path: key.display().to_string(), reason })
}

fn certified(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<CertifiedKey, String> {
    let provider = riptides_wire::tls::provider();
    let ck = CertifiedKey::from_der(chain, key, &provider).map_err(|e| e.to_string())?;
    Ok(ck)
}

fn load_or_create_ca(dir: &Path) -> Result<(String, Issuer<'static, KeyPair>), CertError> {
    let cert_path = dir.join("ca.crt");
    let key_path = dir.join("ca.key");
    if cert_path.exists() && key_path.exists() {
        let cert = fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
        let key = fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
        let key = KeyPair::from_pem(&key)
            .map_err(|e| CertError::Invalid { path: key_path.display().to_string(), reason: e.to_string() })?;
        let issuer = Issuer::from_ca_cert_pem(&cert, key)
            .map_err(|e| CertError::Invalid { path: cert_path.display().to_string(), reason: e.to_string() })?;
        return Ok((cert, issuer));
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "riptides-node-gatekeeper CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(3650);
    let cert = params.self_signed(&key)?.pem();
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    fs::write(&cert_path, cert.as_bytes()).map_err(io_err(&cert_path))?;
    let issuer = Issuer::new(params, key);
    Ok((cert, issuer))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f =
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))
}

fn mint(
    ca_cert: &str,
    issuer: &Issuer<'static, KeyPair>,
    dns_names: &[String],
    ttl: Duration,
) -> Result<CertifiedKey, CertError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    params.distinguished_name.push(DnType::CommonName, dns_names.first().map(String::as_str).unwrap_or("gatekeeper"));
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::try_from(ttl).unwrap_or(time::Duration::hours(24));
    let leaf = params.signed_by(&key, issuer)?;
    let ca_der = rustls_pemfile::certs(&mut ca_cert.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| CertError::Invalid { path: "ca.crt".into(), reason: "no PEM certificate".into() })?;
    let chain = vec![leaf.der().clone(), ca_der];
    let key_der = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| CertError::Invalid { path: "leaf key".into(), reason: e.to_string() })?;
    certified(chain, key_der).map_err(|reason| CertError::Invalid { path: "leaf".into(), reason })
}
