//! SSH certificate proof of possession (method `SSHCertPOP`), like SPIRE's `sshpop`.
//!
//! The daemon presents its OpenSSH *host* certificate. It must be signed by one of the
//! configured CA keys, be valid now, carry no critical options (none are understood) and, when
//! `principals` is set, list one of them. The host key then signs the control plane's
//! challenge ([`challenge_payload`]: nonce + the key of the daemon's CSR); the answer is an SSH
//! signature blob. Every attempt has its own challenge, so daemons may re-attest at any time.

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use riptides_wire::proto::messages::challenge_payload;
use riptides_wire::resource::auth::{sha256_tagged, SshCertPopSettings, VerifierMethod};

use super::x509pop::NONCE_LEN;
use super::{invalid, make_id, Checked};
use crate::attest::sshcert::{Certificate, PublicKey, HOST_CERT};
use crate::attest::{AttestError, VerifyContext};

const M: VerifierMethod = VerifierMethod::SshCertPop;

pub(super) fn check(
    s: &SshCertPopSettings,
    certificate: &str,
    nonce: &[u8],
    sig: &[u8],
    ctx: &VerifyContext,
) -> Result<Checked, AttestError> {
    let cert = Certificate::parse(certificate).map_err(|e| invalid(M, "certificate", e))?;
    let cas: Vec<PublicKey> = s
        .cert_authorities
        .iter()
        .map(|l| PublicKey::from_line(l))
        .collect::<Result<_, _>>()
        .map_err(|e| AttestError::Misconfigured(format!("sshCertPOP.certAuthorities: {e}")))?;
    if !cas.contains(&cert.signature_key) {
        return Err(invalid(M, "authority", "the certificate is not signed by a configured CA key"));
    }
    cert.verify_signature().map_err(|e| invalid(M, "signature", format!("CA signature: {e}")))?;
    if cert.cert_type != HOST_CERT {
        return Err(invalid(M, "certificate type", "not a host certificate"));
    }
    let now = ctx.now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    if now < cert.valid_after {
        return Err(invalid(M, "validity", "the certificate is not valid yet"));
    }
    if now >= cert.valid_before {
        return Err(invalid(M, "validity", "the certificate has expired"));
    }
    if !cert.critical_options.is_empty() {
        return Err(invalid(M, "critical options", "the certificate has critical options, which are not supported"));
    }
    if !s.principals.is_empty() && !cert.principals.iter().any(|p| s.principals.contains(p)) {
        return Err(invalid(M, "principals", "the certificate lists none of the accepted principals"));
    }
    let csr_key = ctx.csr_key.as_deref().ok_or_else(|| AttestError::InvalidCsr("the CSR does not parse".into()))?;
    if nonce.len() != NONCE_LEN {
        return Err(invalid(M, "challenge", "no challenge was answered"));
    }
    cert.key
        .verify(&challenge_payload(M.as_str(), nonce, csr_key), sig)
        .map_err(|e| invalid(M, "challenge", format!("host key signature: {e}")))?;
    let fingerprint = sha256_tagged(&cert.key.blob())["sha256:".len()..].to_owned();
    let mut claims = BTreeMap::from([
        ("fingerprint".to_owned(), fingerprint.clone()),
        ("serial".to_owned(), cert.serial.to_string()),
        ("key_id".to_owned(), cert.key_id.clone()),
    ]);
    if let Some(p) = cert.principals.first() {
        claims.insert("principal".into(), p.clone());
    }
    Ok(Checked { id: make_id("ssh", &[&fingerprint[..40]]), claims })
}
