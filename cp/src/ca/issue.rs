//! Issuing X509-SVIDs: from a CSR (daemons, workloads) or with a key the CA generates itself
//! (the control plane's serving certificate, the admin client certificate).

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{KeyPair, PublicKeyData, PKCS_ECDSA_P256_SHA256};
use riptides_wire::spiffe::SpiffeId;

use super::csr::check_csr;
use super::error::{CsrError, IssueError};
use super::svid::{leaf_params, LeafSpec, PrivateKey, Svid};
use super::{lock, read, util, write, Ca};

impl Ca {
    /// Signs a DER CSR for `requested`, which the caller has already authorized.
    ///
    /// The certificate is rebuilt from CA policy: the CSR contributes only its public key,
    /// and its URI SAN (if any) must equal `requested`. The TTL defaults to
    /// `default_svid_ttl`, is capped at `max_svid_ttl` and never outlives the signing CA.
    pub fn sign_csr(
        &self,
        csr_der: &[u8],
        requested: &SpiffeId,
        ttl: Option<Duration>,
        now: SystemTime,
    ) -> Result<Svid, CsrError> {
        self.sign_csr_with_dns_names(csr_der, requested, &[], ttl, now)
    }

    /// [`Self::sign_csr`], adding DNS SANs that CA policy (a WorkloadIdentity's
    /// `spec.svid.x509.dnsNames`) grants — never names the CSR asks for.
    pub fn sign_csr_with_dns_names(
        &self,
        csr_der: &[u8],
        requested: &SpiffeId,
        dns_names: &[String],
        ttl: Option<Duration>,
        now: SystemTime,
    ) -> Result<Svid, CsrError> {
        self.check_id(requested)?;
        let checked = check_csr(csr_der)?;
        if let Some(csr_id) = &checked.uri_san {
            if csr_id != requested {
                return Err(CsrError::IdMismatch { csr: csr_id.clone(), requested: requested.clone() });
            }
        }
        let ttl = ttl.unwrap_or(self.config.default_svid_ttl).min(self.config.max_svid_ttl);
        Ok(self.issue(requested, &checked.public_key(), dns_names, &[], ttl, now)?)
    }

    /// [`Self::sign_csr`] for a PEM `CERTIFICATE REQUEST`.
    pub fn sign_csr_pem(
        &self,
        csr_pem: &str,
        requested: &SpiffeId,
        ttl: Option<Duration>,
        now: SystemTime,
    ) -> Result<Svid, CsrError> {
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .map_err(|e| CsrError::BadPem(e.to_string()))?;
        self.sign_csr(der.as_ref(), requested, ttl, now)
    }

    /// Generates a P-256 key and issues a certificate for it with extra DNS/IP SANs, so that
    /// stock clients (kubectl, Go) can also verify it by host name or address.
    ///
    /// The TTL may exceed `max_svid_ttl` (admin client certificates are long-lived); it is
    /// still capped by the signing CA's lifetime. Such certificates are recorded in the
    /// manifest so that the CA which signed them stays in the bundle until they expire.
    pub fn issue_with_new_key(
        &self,
        id: &SpiffeId,
        dns_names: &[String],
        ips: &[IpAddr],
        ttl: Option<Duration>,
        now: SystemTime,
    ) -> Result<(Svid, PrivateKey), IssueError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(IssueError::KeyGen)?;
        let ttl = ttl.unwrap_or(self.config.default_svid_ttl);
        let svid = self.issue(id, &key, dns_names, ips, ttl, now)?;
        Ok((svid, PrivateKey::from_pkcs8(key.serialize_der())))
    }

    fn check_id(&self, id: &SpiffeId) -> Result<(), IssueError> {
        if !id.is_member_of(&self.config.trust_domain) {
            return Err(IssueError::ForeignTrustDomain {
                id: id.clone(),
                trust_domain: self.config.trust_domain.as_str().to_owned(),
            });
        }
        if id.path().is_empty() {
            return Err(IssueError::TrustDomainId(id.clone()));
        }
        Ok(())
    }

    fn issue(
        &self,
        id: &SpiffeId,
        public_key: &impl PublicKeyData,
        dns_names: &[String],
        ips: &[IpAddr],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Svid, IssueError> {
        self.check_id(id)?;
        if ttl.as_secs() == 0 {
            return Err(IssueError::ZeroTtl);
        }
        let now_s = util::unix_secs(now).ok_or(IssueError::BadTime(now))?;
        let serial = util::random_serial()?;
        let max_end = util::add_secs(now_s, self.config.max_svid_ttl);
        // Certificates beyond the normal cap must be recorded before they exist, and the
        // signing generation must not change meanwhile: take the mutation lock for them.
        let long_lived = ttl > self.config.max_svid_ttl;
        let _mutating = long_lived.then(|| lock(&self.mutate));

        // Normal issuance holds the read lock while signing (CPU only, no I/O), so a rotation
        // cannot retire this generation between choosing it and signing with it.
        let state = read(&self.state);
        let generation = state.active().ok_or(IssueError::NoActiveCa)?;
        if now_s < generation.not_before_unix {
            return Err(IssueError::CaNotYetValid { generation: generation.id });
        }
        let not_before = now_s.saturating_sub(self.config.backdate.as_secs()).max(generation.not_before_unix);
        let not_after = util::add_secs(now_s, ttl).min(generation.not_after_unix);
        if not_after <= now_s {
            return Err(IssueError::CaExpired { generation: generation.id });
        }
        let params = leaf_params(&LeafSpec {
            id,
            dns_names,
            ips,
            serial: &serial,
            not_before_unix: not_before,
            not_after_unix: not_after,
        })?;

        let cert = if not_after > max_end {
            let mut manifest = state.manifest.clone();
            drop(state);
            if let Some(rec) = manifest.get_mut(generation.id) {
                let until = rec.long_lived_until_unix.unwrap_or(0).max(not_after);
                rec.long_lived_until_unix = Some(until);
            }
            self.store.write_manifest(&manifest)?;
            write(&self.state).manifest = manifest;
            params.signed_by(public_key, generation.issuer())?
        } else {
            let cert = params.signed_by(public_key, generation.issuer())?;
            drop(state);
            cert
        };

        let leaf = cert.der().clone();
        tracing::debug!(
            spiffe_id = %id,
            serial = %util::hex(&serial),
            ca_generation = generation.id,
            not_after,
            "issued X509-SVID"
        );
        Ok(Svid {
            spiffe_id: id.clone(),
            chain: vec![leaf.clone()],
            leaf,
            issuer: generation.cert_der.clone(),
            ca_generation: generation.id,
            serial,
            not_before: util::from_unix(not_before),
            not_after: util::from_unix(not_after),
        })
    }
}
