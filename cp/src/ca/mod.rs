//! The control plane's SPIFFE certificate authority.
//!
//! - ECDSA P-256 roots, generated on first start and persisted in a directory the caller
//!   chooses (manifest + one certificate and one 0600 key file per generation; see [`store`]).
//! - X509-SVIDs built from CA policy alone ([`svid`]): a CSR contributes only its public key
//!   and a SPIFFE ID that must match the one the caller authorized ([`csr`]).
//! - A trust bundle of every published root ([`TrustBundle`]), as PEM, SPIFFE bundle JSON and
//!   rustls roots.
//! - Rotation in generations, prepared -> active -> old ([`rotation`]): a new root is
//!   published well before it signs, and an old one is kept until nothing it signed can still
//!   be valid.
//!
//! Time is always passed in, so the whole schedule can be driven by a test clock.
//! [`Ca`] is `Send + Sync`; share it behind an `Arc`.

mod bundle;
mod config;
mod csr;
mod error;
mod issue;
mod root;
mod rotation;
mod shared;
mod store;
mod svid;
mod util;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use riptides_wire::spiffe::TrustDomain;
use rustls_pki_types::CertificateDer;

pub use bundle::{BundleError, TrustBundle};
pub use config::{CaConfig, DEFAULT_TRUST_DOMAIN};
pub use csr::CsrKeyType;
pub use error::{CaError, ConfigError, CsrError, IssueError, StoreError};
pub use rotation::TickOutcome;
pub use shared::{ca_object_key, SealError, SealKey, SharedCa, CA_OBJECT};
pub use store::{GenerationState, KEY_FILE_MODE, MANIFEST_FILE};
pub use svid::{PrivateKey, Svid};

use root::CaGeneration;
use store::{generation_file_names, GenerationRecord, Manifest, Store};

/// The certificate authority of one trust domain.
pub struct Ca {
    config: CaConfig,
    store: Store,
    state: RwLock<State>,
    /// Serializes changes to the manifest (rotation, long-lived issuance) so that each
    /// change reads, writes and publishes a consistent manifest; plain signing never takes it.
    mutate: Mutex<()>,
}

/// What signing and the bundle read. Replaced wholesale under a short write lock after the
/// new manifest is on disk, never while doing I/O.
struct State {
    manifest: Manifest,
    gens: BTreeMap<u64, Arc<CaGeneration>>,
}

impl State {
    fn active(&self) -> Option<Arc<CaGeneration>> {
        let rec = self.manifest.active()?;
        self.gens.get(&rec.id).cloned()
    }
}

/// Public view of one CA generation, for status pages and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationInfo {
    pub id: u64,
    pub state: GenerationState,
    pub certificate: CertificateDer<'static>,
    /// SHA-256 of the certificate DER, lowercase hex.
    pub fingerprint: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// When it was created and first published.
    pub published_at: SystemTime,
    pub activated_at: Option<SystemTime>,
    pub retired_at: Option<SystemTime>,
    /// For an old generation: when [`Ca::prune`] will drop it from the bundle.
    pub removable_after: Option<SystemTime>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No key material: generations print their ids and fingerprints only.
        let state = read(&self.state);
        f.debug_struct("Ca")
            .field("trust_domain", &self.config.trust_domain.as_str())
            .field("dir", &self.store.dir())
            .field("spiffe_sequence", &state.manifest.spiffe_sequence)
            .field("generations", &state.gens.values().collect::<Vec<_>>())
            .finish()
    }
}

impl Ca {
    /// Opens the CA stored in `dir`, creating the directory and a first (active) root if it
    /// holds none. Reopening the same directory yields the same CA, including its rotation
    /// state and bundle sequence.
    pub fn open(dir: impl AsRef<Path>, config: CaConfig, now: SystemTime) -> Result<Ca, CaError> {
        config.validate()?;
        let now_s = util::unix_secs(now).ok_or(CaError::BadTime(now))?;
        let store = Store::open(dir.as_ref())?;
        let state = match store.read_manifest()? {
            Some(manifest) => Self::load(&store, &config, manifest)?,
            None => Self::create(&store, &config, now_s)?,
        };
        Ok(Ca { config, store, state: RwLock::new(state), mutate: Mutex::new(()) })
    }

    fn create(store: &Store, config: &CaConfig, now_s: u64) -> Result<State, CaError> {
        let mut manifest = Manifest::new(config.trust_domain.as_str());
        let id = manifest.next_generation;
        let (generation, key_pem) =
            CaGeneration::generate(id, &config.trust_domain, now_s, config.backdate.as_secs(), config.ca_lifetime)
                .map_err(|source| CaError::Generate { generation: id, source })?;
        let (cert_file, key_file) = generation_file_names(id);
        store.write_secret(&key_file, key_pem.as_bytes())?;
        store.write_public(&cert_file, generation.cert_pem().as_bytes())?;
        manifest.generations.push(GenerationRecord {
            id,
            state: GenerationState::Active,
            cert_file,
            key_file,
            created_unix: now_s,
            not_after_unix: generation.not_after_unix,
            activated_unix: Some(now_s),
            retired_unix: None,
            prune_after_unix: None,
            long_lived_until_unix: None,
        });
        manifest.next_generation = id + 1;
        manifest.spiffe_sequence = 1;
        store.write_manifest(&manifest)?;
        tracing::info!(
            trust_domain = %config.trust_domain,
            generation = id,
            fingerprint = %generation.fingerprint,
            not_after = generation.not_after_unix,
            dir = %store.dir().display(),
            "created a new root CA"
        );
        let gens = BTreeMap::from([(id, Arc::new(generation))]);
        Ok(State { manifest, gens })
    }

    fn load(store: &Store, config: &CaConfig, manifest: Manifest) -> Result<State, CaError> {
        if manifest.trust_domain != config.trust_domain.as_str() {
            return Err(CaError::TrustDomainMismatch {
                stored: manifest.trust_domain.clone(),
                configured: config.trust_domain.as_str().to_owned(),
            });
        }
        let mut gens = BTreeMap::new();
        for rec in &manifest.generations {
            let cert = store.read(&rec.cert_file)?;
            let key = store.read(&rec.key_file)?;
            let generation = CaGeneration::load(rec.id, &cert, &key).map_err(|problem| StoreError::Corrupt {
                path: store.path(&rec.cert_file),
                reason: format!("generation {}: {problem}", rec.id),
            })?;
            gens.insert(rec.id, Arc::new(generation));
        }
        let active = manifest.active().map(|r| r.id);
        tracing::info!(
            trust_domain = %config.trust_domain,
            generations = gens.len(),
            active = ?active,
            spiffe_sequence = manifest.spiffe_sequence,
            dir = %store.dir().display(),
            "loaded CA"
        );
        Ok(State { manifest, gens })
    }

    pub fn config(&self) -> &CaConfig {
        &self.config
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.config.trust_domain
    }

    pub fn dir(&self) -> &Path {
        self.store.dir()
    }

    /// Path of the manifest file, for operators and tests.
    pub fn manifest_path(&self) -> PathBuf {
        self.store.path(MANIFEST_FILE)
    }

    /// Every currently published root: prepared, active and old, in generation order.
    pub fn bundle(&self) -> TrustBundle {
        let state = read(&self.state);
        let roots = state
            .manifest
            .generations
            .iter()
            .filter_map(|rec| state.gens.get(&rec.id))
            .map(|g| (g.cert_der.clone(), g.jwk_x.clone(), g.jwk_y.clone()))
            .collect();
        TrustBundle::from_parts(
            self.config.trust_domain.clone(),
            roots,
            state.manifest.spiffe_sequence,
            self.config.refresh_hint,
        )
    }

    /// The root that signs right now.
    pub fn active_root(&self) -> Option<CertificateDer<'static>> {
        read(&self.state).active().map(|g| g.cert_der.clone())
    }

    /// All generations with their state and schedule.
    pub fn generations(&self) -> Vec<GenerationInfo> {
        let state = read(&self.state);
        state
            .manifest
            .generations
            .iter()
            .filter_map(|rec| {
                let g = state.gens.get(&rec.id)?;
                Some(GenerationInfo {
                    id: rec.id,
                    state: rec.state,
                    certificate: g.cert_der.clone(),
                    fingerprint: g.fingerprint.clone(),
                    not_before: util::from_unix(g.not_before_unix),
                    not_after: util::from_unix(g.not_after_unix),
                    published_at: util::from_unix(rec.created_unix),
                    activated_at: rec.activated_unix.map(util::from_unix),
                    retired_at: rec.retired_unix.map(util::from_unix),
                    removable_after: (rec.state == GenerationState::Old)
                        .then(|| util::from_unix(rotation::removable_after(rec))),
                })
            })
            .collect()
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // A panic while holding the lock cannot leave State half-updated (it is replaced in one
    // assignment), so a poisoned lock is still safe to use.
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Ca>();
    is::<Svid>();
    is::<PrivateKey>();
    is::<TrustBundle>();
}
