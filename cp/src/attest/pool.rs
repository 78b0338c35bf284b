//! The bounded signing pool every daemon and workload certificate goes through.
//!
//! Parsing a CSR and signing are CPU work, so they run on the blocking thread pool (never on
//! an async worker), and at most `max_concurrent` of them at once: a burst of requests waits
//! for a permit instead of piling up parsed CSRs and blocking threads. The permit moves into
//! the blocking task, so a caller that gives up (dropped future, closed connection) still
//! counts until its signature has actually finished.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use riptides_wire::spiffe::SpiffeId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::AttestError;
use crate::ca::{Ca, CsrError, IssueError, Svid};

/// Largest CSR accepted; a P-256 CSR is a few hundred bytes, so this is generous.
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// A CA behind a semaphore. Share one pool (in an `Arc`) between the attestor and the
/// authorizer so the bound holds for all signing together.
pub struct SigningPool {
    ca: Arc<Ca>,
    semaphore: Arc<Semaphore>,
    max_concurrent: usize,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

impl std::fmt::Debug for SigningPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningPool")
            .field("max_concurrent", &self.max_concurrent)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// A reserved signing slot; see [`SigningPool::acquire`]. Released when dropped.
#[derive(Debug)]
pub struct SigningPermit {
    _permit: OwnedSemaphorePermit,
}

impl SigningPool {
    /// `max_concurrent` signatures at once (at least one).
    pub fn new(ca: Arc<Ca>, max_concurrent: usize) -> Self {
        let max_concurrent = max_concurrent.max(1);
        SigningPool {
            ca,
            semaphore: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            counters: Arc::default(),
        }
    }

    /// Twice the available CPUs: signing is short CPU work, and a little overlap hides the
    /// hand-off to the blocking pool.
    pub fn with_default_size(ca: Arc<Ca>) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(ca, cpus * 2)
    }

    pub fn ca(&self) -> &Arc<Ca> {
        &self.ca
    }

    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    /// Signatures running right now.
    pub fn in_flight(&self) -> usize {
        self.counters.in_flight.load(Ordering::Relaxed)
    }

    /// The most signatures that ever ran at once (for metrics and tests of the bound).
    pub fn peak_in_flight(&self) -> usize {
        self.counters.peak.load(Ordering::Relaxed)
    }

    /// Waits for a slot. Callers take it before any other per-request work they want bounded
    /// too (the authorizer takes it before its store reads).
    pub async fn acquire(&self) -> Result<SigningPermit, AttestError> {
        self.semaphore
            .clone()
            .acquire_owned()
            .await
            .map(|p| SigningPermit { _permit: p })
            .map_err(|_| AttestError::Internal("the signing pool is closed".into()))
    }

    /// Checks the CSR and signs it for `id` (already authorized), holding `permit` until done.
    pub async fn sign(
        &self,
        permit: SigningPermit,
        csr_der: &[u8],
        id: SpiffeId,
        ttl: Option<Duration>,
        now: SystemTime,
    ) -> Result<Svid, AttestError> {
        self.sign_with_dns_names(permit, csr_der, id, Vec::new(), ttl, now).await
    }

    /// [`Self::sign`] with DNS SANs granted by policy.
    pub async fn sign_with_dns_names(
        &self,
        permit: SigningPermit,
        csr_der: &[u8],
        id: SpiffeId,
        dns_names: Vec<String>,
        ttl: Option<Duration>,
        now: SystemTime,
    ) -> Result<Svid, AttestError> {
        if csr_der.len() > MAX_CSR_BYTES {
            return Err(AttestError::InvalidCsr(format!(
                "CSR is {} bytes, the limit is {MAX_CSR_BYTES}",
                csr_der.len()
            )));
        }
        let ca = self.ca.clone();
        let counters = self.counters.clone();
        let csr = csr_der.to_vec();
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let n = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            counters.peak.fetch_max(n, Ordering::SeqCst);
            let result = ca.sign_csr_with_dns_names(&csr, &id, &dns_names, ttl, now);
            counters.in_flight.fetch_sub(1, Ordering::SeqCst);
            result
        });
        match task.await {
            Ok(Ok(svid)) => Ok(svid),
            Ok(Err(e @ CsrError::Issue(IssueError::ZeroTtl))) => Err(AttestError::InvalidCsr(e.to_string())),
            Ok(Err(CsrError::Issue(e))) => Err(AttestError::Internal(format!("CA: {e}"))),
            Ok(Err(e)) => Err(AttestError::InvalidCsr(e.to_string())),
            Err(e) => Err(AttestError::Internal(format!("signing task failed: {e}"))),
        }
    }
}
