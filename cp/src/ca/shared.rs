//! CA key material shared between control-plane replicas through the resource store,
//! sealed with AES-256-GCM (aws-lc-rs) under a key that never enters the store.
//!
//! The whole CA directory that matters (manifest, every generation's certificate and key) is
//! one sealed object, [`CA_OBJECT`]. The first replica to start on an empty store publishes
//! its CA (created fresh, or the one already in its data dir: that is how a single replica
//! grows into several); every other replica imports the published one before opening its
//! CA. Afterwards only the leader rotates and publishes (compare-and-swap on the object's
//! revision), and every replica follows the object's watch, re-importing and reloading on
//! each change, so all replicas sign with the same root and publish the same bundle.
//!
//! The seal key is 32 bytes, given as a file (raw, hex or base64) or an environment variable
//! (hex or base64). The associated data binds a sealed blob to its trust domain.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::store::{Store as CaDir, MANIFEST_FILE};
use super::{lock, write, Ca, CaConfig, CaError};
use crate::store::{ObjectKey, Revision, Store, StoreError, WatchEvent};

/// Where the sealed CA lives in the resource store (not an API resource: no route reaches it).
pub fn ca_object_key() -> ObjectKey {
    ObjectKey::new(CA_OBJECT.0, CA_OBJECT.1, CA_OBJECT.2)
}

/// `(resource, namespace, name)` of the sealed CA object.
pub const CA_OBJECT: (&str, &str, &str) = ("internal.riptides.io/ca", "", "state");

const SEALED_FORMAT: &str = "riptides-ca-sealed/v1";

/// Why sealing or opening shared CA material failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("CA seal key: {0}")]
    Key(String),
    #[error("sealed CA material could not be opened (wrong key, other trust domain, or tampered)")]
    Open,
    #[error("sealed CA material is malformed: {0}")]
    Format(String),
}

/// The AES-256-GCM key sealing CA material at rest in the store.
pub struct SealKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        if bytes.len() != 32 {
            return Err(SealError::Key(format!("must be 32 bytes, got {}", bytes.len())));
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SealError::Key("rejected by AES-256-GCM".into()))?;
        Ok(SealKey { key: LessSafeKey::new(key) })
    }

    /// 64 hex digits or the base64 of 32 bytes (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, SealError> {
        let t = text.trim();
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            let bytes: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16).unwrap_or(0)).collect();
            return Self::from_bytes(&bytes);
        }
        let bytes = B64.decode(t).map_err(|_| SealError::Key("expected 64 hex digits or base64 of 32 bytes".into()))?;
        Self::from_bytes(&bytes)
    }

    /// A file holding the key raw (exactly 32 bytes) or as text ([`SealKey::parse`]).
    pub fn from_file(path: &Path) -> Result<Self, SealError> {
        use std::os::unix::fs::PermissionsExt;
        let bytes = std::fs::read(path).map_err(|e| SealError::Key(format!("reading {}: {e}", path.display())))?;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "CA seal key file is accessible to other users");
            }
        }
        if bytes.len() == 32 {
            return Self::from_bytes(&bytes);
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| SealError::Key(format!("{} is neither 32 raw bytes nor text", path.display())))?;
        Self::parse(text)
    }

    fn aad(trust_domain: &str) -> Vec<u8> {
        format!("{SEALED_FORMAT}/{trust_domain}").into_bytes()
    }

    /// Encrypts with a fresh random nonce.
    pub fn seal(&self, trust_domain: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SealError::Key("no randomness for a nonce".into()))?;
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(Self::aad(trust_domain)), &mut buf)
            .map_err(|_| SealError::Key("sealing failed".into()))?;
        let sealed = Sealed { format: SEALED_FORMAT.into(), nonce: B64.encode(nonce), ciphertext: B64.encode(buf) };
        serde_json::to_vec(&sealed).map_err(|e| SealError::Format(e.to_string()))
    }

    pub fn open(&self, trust_domain: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let sealed: Sealed = serde_json::from_slice(sealed).map_err(|e| SealError::Format(e.to_string()))?;
        if sealed.format != SEALED_FORMAT {
            return Err(SealError::Format(format!("unknown format {:?}", sealed.format)));
        }
        let nonce: [u8; NONCE_LEN] = B64
            .decode(&sealed.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| SealError::Format("bad nonce".into()))?;
        let mut buf = B64.decode(&sealed.ciphertext).map_err(|_| SealError::Format("bad ciphertext".into()))?;
        let plain = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(Self::aad(trust_domain)), &mut buf)
            .map_err(|_| SealError::Open)?;
        Ok(plain.to_vec())
    }
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    format: String,
    nonce: String,
    ciphertext: String,
}

/// The CA directory's contents, as sealed.
#[derive(Serialize, Deserialize)]
struct CaFiles {
    manifest: String,
    files: Vec<CaFile>,
}

#[derive(Serialize, Deserialize)]
struct CaFile {
    name: String,
    secret: bool,
    data: String,
}

impl Ca {
    /// The manifest and every generation's files, read under the mutation lock so they agree.
    fn export_files(&self) -> Result<CaFiles, CaError> {
        let _g = lock(&self.mutate);
        let manifest = self.store.read(MANIFEST_FILE)?;
        let mut files = Vec::new();
        for rec in &super::read(&self.state).manifest.generations {
            files.push(CaFile {
                name: rec.cert_file.clone(),
                secret: false,
                data: B64.encode(self.store.read(&rec.cert_file)?),
            });
            files.push(CaFile {
                name: rec.key_file.clone(),
                secret: true,
                data: B64.encode(self.store.read(&rec.key_file)?),
            });
        }
        Ok(CaFiles { manifest: B64.encode(manifest), files })
    }

    /// Seals this CA's material for the store.
    pub fn export_sealed(&self, key: &SealKey) -> anyhow::Result<Vec<u8>> {
        let files = serde_json::to_vec(&self.export_files()?)?;
        Ok(key.seal(self.config.trust_domain.as_str(), &files)?)
    }

    /// Writes sealed material into a CA directory (keys 0600, the manifest last, so a reader
    /// never sees a manifest naming files not yet written).
    pub fn import_sealed(dir: &Path, trust_domain: &str, key: &SealKey, sealed: &[u8]) -> anyhow::Result<()> {
        let plain = key.open(trust_domain, sealed)?;
        let files: CaFiles = serde_json::from_slice(&plain)?;
        let store = CaDir::open(dir)?;
        for f in &files.files {
            if f.name.contains('/') || f.name.starts_with('.') || f.name == MANIFEST_FILE {
                anyhow::bail!("sealed CA names an unexpected file {:?}", f.name);
            }
            let data = B64.decode(&f.data)?;
            if f.secret {
                store.write_secret(&f.name, &data)?;
            } else {
                store.write_public(&f.name, &data)?;
            }
        }
        store.write_public(MANIFEST_FILE, &B64.decode(&files.manifest)?)?;
        Ok(())
    }

    /// Re-reads the CA directory (after an import) and swaps the signing state.
    pub fn reload(&self) -> Result<(), CaError> {
        let _g = lock(&self.mutate);
        let Some(manifest) = self.store.read_manifest()? else {
            return Ok(());
        };
        let state = Self::load(&self.store, &self.config, manifest)?;
        *write(&self.state) = state;
        Ok(())
    }
}

/// The CA shared through the store, with the revision of the sealed object it reflects.
pub struct SharedCa {
    pub ca: Arc<Ca>,
    key: Arc<SealKey>,
    store: Arc<dyn Store>,
    /// `mod_revision` of the sealed object last imported or published.
    revision: AtomicU64,
}

impl SharedCa {
    /// Opens the CA of a replica on a shared store: imports the published CA, or publishes
    /// this replica's own if none is published yet.
    pub async fn open(
        store: Arc<dyn Store>,
        dir: PathBuf,
        config: CaConfig,
        key: Arc<SealKey>,
    ) -> anyhow::Result<Arc<SharedCa>> {
        let object = ca_object_key();
        let td = config.trust_domain.as_str().to_owned();
        for _ in 0..5 {
            if let Some(found) = store.get(&object).await? {
                let (dir2, key2, td2, sealed) = (dir.clone(), key.clone(), td.clone(), found.value.clone());
                let cfg = config.clone();
                let ca = tokio::task::spawn_blocking(move || -> anyhow::Result<Ca> {
                    Ca::import_sealed(&dir2, &td2, &key2, &sealed)?;
                    Ok(Ca::open(&dir2, cfg, SystemTime::now())?)
                })
                .await??;
                tracing::info!(revision = found.mod_revision, "imported the shared CA");
                return Ok(Arc::new(SharedCa {
                    ca: Arc::new(ca),
                    key,
                    store,
                    revision: AtomicU64::new(found.mod_revision),
                }));
            }
            let (dir2, cfg) = (dir.clone(), config.clone());
            let ca = tokio::task::spawn_blocking(move || Ca::open(&dir2, cfg, SystemTime::now())).await??;
            let sealed = ca.export_sealed(&key)?;
            match store.create(&object, sealed).await {
                Ok(created) => {
                    tracing::info!(revision = created.mod_revision, "published this replica's CA as the shared CA");
                    return Ok(Arc::new(SharedCa {
                        ca: Arc::new(ca),
                        key,
                        store,
                        revision: AtomicU64::new(created.mod_revision),
                    }));
                }
                // Another replica published first: import theirs.
                Err(StoreError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        anyhow::bail!("could not agree on a shared CA")
    }

    /// Publishes the local CA after a rotation step (only the leader does this). A conflict
    /// means the published CA moved on; the follower loop imports it.
    pub async fn publish(&self) -> anyhow::Result<()> {
        let sealed = self.ca.export_sealed(&self.key)?;
        let expect = self.revision.load(Ordering::SeqCst);
        match self.store.update(&ca_object_key(), sealed, Some(expect)).await {
            Ok(obj) => {
                self.revision.fetch_max(obj.mod_revision, Ordering::SeqCst);
                tracing::info!(revision = obj.mod_revision, "published the rotated CA");
                Ok(())
            }
            Err(StoreError::Conflict { current, .. }) => {
                tracing::info!(current, "shared CA changed elsewhere; following it");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn import(&self, sealed: Vec<u8>, revision: Revision) -> anyhow::Result<()> {
        if revision <= self.revision.load(Ordering::SeqCst) {
            return Ok(());
        }
        let ca = self.ca.clone();
        let key = self.key.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            Ca::import_sealed(ca.dir(), ca.trust_domain().as_str(), &key, &sealed)?;
            Ok(ca.reload()?)
        })
        .await??;
        self.revision.fetch_max(revision, Ordering::SeqCst);
        tracing::info!(revision, "reloaded the shared CA");
        Ok(())
    }

    /// Follows the sealed object until cancelled: every change is imported and loaded.
    pub async fn follow(&self, cancel: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
        let (resource, namespace, _) = CA_OBJECT;
        loop {
            let after = self.revision.load(Ordering::SeqCst);
            let mut watch = match self.store.watch(Some(resource), Some(namespace), after).await {
                Ok(w) => w,
                Err(StoreError::Gone { .. }) => {
                    // History is gone: take the current object as it is.
                    if let Some(obj) = self.store.get(&ca_object_key()).await? {
                        self.import(obj.value, obj.mod_revision).await?;
                    }
                    let now = self.store.current_revision().await?;
                    self.revision.fetch_max(now, Ordering::SeqCst);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            loop {
                let ev = tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    ev = watch.recv() => ev,
                };
                match ev {
                    Some(Ok(WatchEvent::Put { object, .. })) => self.import(object.value, object.mod_revision).await?,
                    Some(Ok(WatchEvent::Deleted { .. })) => tracing::warn!("the shared CA object was deleted"),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "shared CA watch ended; watching again");
                        break;
                    }
                    None => anyhow::bail!("shared CA watch ended"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_roundtrip_binds_key_and_trust_domain() {
        let key = SealKey::parse(&"ab".repeat(32)).unwrap();
        let sealed = key.seal("example.com", b"secret material").unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains("secret"), "sealed form holds no plaintext");
        assert_eq!(key.open("example.com", &sealed).unwrap(), b"secret material");
        assert!(matches!(key.open("other.org", &sealed), Err(SealError::Open)));
        let other = SealKey::from_bytes(&[7u8; 32]).unwrap();
        assert!(matches!(other.open("example.com", &sealed), Err(SealError::Open)));
        let b64 = B64.encode([7u8; 32]);
        assert!(SealKey::parse(&b64).unwrap().open("example.com", &other.seal("example.com", b"x").unwrap()).is_ok());
        assert!(SealKey::parse("short").is_err());
    }

    #[test]
    fn export_import_reload_reproduces_the_ca() {
        let td = riptides_wire::TrustDomain::parse("example.com").unwrap();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ca = Ca::open(a.path(), CaConfig::new(td.clone()), SystemTime::now()).unwrap();
        let key = SealKey::from_bytes(&[1u8; 32]).unwrap();
        let sealed = ca.export_sealed(&key).unwrap();
        Ca::import_sealed(b.path(), "example.com", &key, &sealed).unwrap();
        let copy = Ca::open(b.path(), CaConfig::new(td.clone()), SystemTime::now()).unwrap();
        assert_eq!(copy.bundle().roots(), ca.bundle().roots());

        // A CA that reloads after an import signs with the imported root.
        let c = tempfile::tempdir().unwrap();
        let other = Ca::open(c.path(), CaConfig::new(td), SystemTime::now()).unwrap();
        assert_ne!(other.bundle().roots(), ca.bundle().roots());
        Ca::import_sealed(c.path(), "example.com", &key, &sealed).unwrap();
        other.reload().unwrap();
        assert_eq!(other.bundle().roots(), ca.bundle().roots());
        assert_eq!(other.active_root(), ca.active_root());
    }
}
