//! Persistence of the CA directory: a JSON manifest naming each generation's state, plus one
//! certificate file and one private-key file per generation.
//!
//! Every file is written atomically (temporary file in the same directory, fsync, rename,
//! fsync of the directory), so a crash leaves either the old or the new content, never a torn
//! file. Key files are created with mode 0600 from the first byte, so they are never readable
//! by others, not even for an instant. The manifest is written last: generation files that no
//! manifest names (left by a crash mid-rotation) are ignored.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::StoreError;

/// Name of the manifest file inside the CA directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Mode of private key files.
pub const KEY_FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;
const MANIFEST_VERSION: u32 = 1;

/// Where a CA generation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GenerationState {
    /// Published in the bundle, not signing yet.
    Prepared,
    /// Signing (exactly one generation is active).
    Active,
    /// Retired: no longer signs, stays published until its SVIDs can have expired.
    Old,
}

/// One CA generation as recorded in the manifest. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationRecord {
    pub id: u64,
    pub state: GenerationState,
    pub cert_file: String,
    pub key_file: String,
    /// When the generation was created (and published).
    pub created_unix: u64,
    pub not_after_unix: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_unix: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_unix: Option<u64>,
    /// For an old generation: the time after which no certificate it signed under the normal
    /// TTL cap can still be valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune_after_unix: Option<u64>,
    /// Latest NotAfter of a certificate this generation issued beyond the normal TTL cap
    /// (admin client certificates); pruning waits for it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_lived_until_unix: Option<u64>,
}

/// The manifest file: the whole persistent state of the CA apart from key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub trust_domain: String,
    /// `spiffe_sequence` of the published bundle; bumped whenever the set of roots changes.
    pub spiffe_sequence: u64,
    pub next_generation: u64,
    pub generations: Vec<GenerationRecord>,
}

impl Manifest {
    pub fn new(trust_domain: &str) -> Self {
        Manifest {
            version: MANIFEST_VERSION,
            trust_domain: trust_domain.to_owned(),
            spiffe_sequence: 0,
            next_generation: 1,
            generations: Vec::new(),
        }
    }

    pub fn active(&self) -> Option<&GenerationRecord> {
        self.generations.iter().find(|g| g.state == GenerationState::Active)
    }

    pub fn prepared(&self) -> Option<&GenerationRecord> {
        self.generations.iter().find(|g| g.state == GenerationState::Prepared)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut GenerationRecord> {
        self.generations.iter_mut().find(|g| g.id == id)
    }

    /// Structural checks: exactly one active generation, at most one prepared, unique ids
    /// and file names that stay inside the directory.
    pub fn check(&self, path: &Path) -> Result<(), StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt { path: path.to_owned(), reason };
        if self.version != MANIFEST_VERSION {
            return Err(corrupt(format!("unsupported manifest version {}", self.version)));
        }
        let count = |s| self.generations.iter().filter(|g| g.state == s).count();
        if count(GenerationState::Active) != 1 {
            return Err(corrupt(format!(
                "expected exactly one active generation, found {}",
                count(GenerationState::Active)
            )));
        }
        if count(GenerationState::Prepared) > 1 {
            return Err(corrupt("more than one prepared generation".into()));
        }
        let mut ids: Vec<u64> = self.generations.iter().map(|g| g.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.generations.len() {
            return Err(corrupt("duplicate generation ids".into()));
        }
        if ids.last().is_some_and(|&max| max >= self.next_generation) {
            return Err(corrupt("next_generation is not above every generation id".into()));
        }
        for g in &self.generations {
            for f in [&g.cert_file, &g.key_file] {
                if !is_plain_file_name(f) {
                    return Err(corrupt(format!("file name {f:?} is not a plain file name")));
                }
            }
        }
        Ok(())
    }
}

/// A file name with no directory part, so a tampered manifest cannot point outside the dir.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// File names for a generation's certificate and key.
pub fn generation_file_names(id: u64) -> (String, String) {
    (format!("ca-{id}.crt.pem"), format!("ca-{id}.key.pem"))
}

/// Handle on the CA directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating with mode 0700 if needed) the CA directory.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        if !dir.exists() {
            fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir).map_err(|e| StoreError::io(dir, e))?;
        }
        Ok(Store { dir: dir.to_owned() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Reads the manifest, or `None` if this is a fresh directory.
    pub fn read_manifest(&self) -> Result<Option<Manifest>, StoreError> {
        let path = self.path(MANIFEST_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(path, e)),
        };
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Manifest { path: path.clone(), source })?;
        manifest.check(&path)?;
        Ok(Some(manifest))
    }

    pub fn write_manifest(&self, manifest: &Manifest) -> Result<(), StoreError> {
        let path = self.path(MANIFEST_FILE);
        let mut json = serde_json::to_vec_pretty(manifest)
            .map_err(|source| StoreError::Manifest { path: path.clone(), source })?;
        json.push(b'\n');
        self.write_atomic(MANIFEST_FILE, &json, 0o644)
    }

    pub fn read(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.path(name);
        fs::read(&path).map_err(|e| StoreError::io(path, e))
    }

    /// Writes a private key file (mode 0600).
    pub fn write_secret(&self, name: &str, contents: &[u8]) -> Result<(), StoreError> {
        self.write_atomic(name, contents, KEY_FILE_MODE)
    }

    /// Writes a public file such as a certificate (mode 0644).
    pub fn write_public(&self, name: &str, contents: &[u8]) -> Result<(), StoreError> {
        self.write_atomic(name, contents, 0o644)
    }

    /// Removes a file; a file that is already gone is fine (pruning is idempotent).
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        let path = self.path(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }

    /// Temp file (created with `mode`, exclusive) + write + fsync + rename + fsync(dir).
    fn write_atomic(&self, name: &str, contents: &[u8], mode: u32) -> Result<(), StoreError> {
        let target = self.path(name);
        let tmp = self.path(&format!(".{name}.tmp-{}", random_suffix()));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)
                .map_err(|e| StoreError::io(&tmp, e))?;
            f.write_all(contents).map_err(|e| StoreError::io(&tmp, e))?;
            f.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
            drop(f);
            fs::rename(&tmp, &target).map_err(|e| StoreError::io(&target, e))?;
            File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| StoreError::io(&self.dir, e))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

fn random_suffix() -> String {
    let mut b = [0u8; 8];
    // A failure of the system RNG only costs uniqueness of a temp name, and create_new then
    // reports the clash instead of overwriting anything.
    let _ = aws_lc_rs::rand::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}
