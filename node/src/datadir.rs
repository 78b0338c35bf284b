//! What the daemon keeps on disk, written atomically (temp file, fsync, rename, fsync dir).
//!
//! ```text
//! <data-dir>/            0700
//!   daemon.key           PKCS#8 PEM, 0600 (created with that mode, never wider)
//!   daemon.pem           the daemon SVID chain (PEM, leaf first)
//!   bundle.pem           the trust bundle roots (PEM)
//!   daemon.json          daemon id, SPIFFE ID, trust domain, bundle sequence
//!   policy.json          last applied policy document and its revision
//!   workloads/<hex>.key  workload keys (0600) and .pem chains, one per SPIFFE ID
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _, Result};
use riptides_wire::proto::messages::{PolicyDocument, TrustBundleMsg};
use serde::{Deserialize, Serialize};

use crate::backoff::random_unit;
use crate::identity::{pem_decode_certs, pem_encode, Identity};

pub const KEY_MODE: u32 = 0o600;
const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o700;

/// The daemon's attested identity as persisted.
#[derive(Debug, Clone)]
pub struct PersistedIdentity {
    pub daemon_id: String,
    pub identity: Identity,
    pub bundle: TrustBundleMsg,
}

#[derive(Debug, Serialize, Deserialize)]
struct DaemonMeta {
    daemon_id: String,
    spiffe_id: String,
    trust_domain: String,
    bundle_sequence: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct PolicyFile {
    revision: u64,
    document: PolicyDocument,
}

/// The data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Opens (creating with 0700 if needed) the directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(root.join("workloads"))
            .with_context(|| format!("creating data dir {}", root.display()))?;
        Ok(DataDir { root })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn key_path(&self) -> PathBuf {
        self.root.join("daemon.key")
    }
    pub fn svid_path(&self) -> PathBuf {
        self.root.join("daemon.pem")
    }
    pub fn bundle_path(&self) -> PathBuf {
        self.root.join("bundle.pem")
    }
    pub fn meta_path(&self) -> PathBuf {
        self.root.join("daemon.json")
    }
    pub fn policy_path(&self) -> PathBuf {
        self.root.join("policy.json")
    }

    /// Persists the whole attested identity. The key goes first, the metadata (which makes the
    /// rest count as present) last.
    /// The key an attestation in progress uses. Kept until the attestation succeeded, so a
    /// retry after a lost answer (or a crash) presents the same key and the control plane
    /// recognises it as the same daemon rather than a replay of a used token.
    pub fn pending_attestation_key(&self) -> Result<rcgen::KeyPair> {
        let path = self.root.join("attest-pending.key");
        if let Ok(pem) = fs::read_to_string(&path) {
            if let Ok(k) = rcgen::KeyPair::from_pem(&pem) {
                return Ok(k);
            }
        }
        let key = crate::identity::new_key()?;
        write_atomic(&path, key.serialize_pem().as_bytes(), KEY_MODE)?;
        Ok(key)
    }

    /// Drops the pending attestation key once the identity it produced is saved.
    pub fn clear_pending_attestation_key(&self) {
        let _ = fs::remove_file(self.root.join("attest-pending.key"));
    }

    pub fn save_identity(&self, p: &PersistedIdentity) -> Result<()> {
        self.save_daemon_svid(&p.identity)?;
        self.save_bundle(&p.bundle)?;
        let meta = DaemonMeta {
            daemon_id: p.daemon_id.clone(),
            spiffe_id: p.identity.spiffe_id.clone(),
            trust_domain: p.bundle.trust_domain.clone(),
            bundle_sequence: p.bundle.sequence,
        };
        write_atomic(&self.meta_path(), &serde_json::to_vec_pretty(&meta)?, FILE_MODE)
    }

    /// Persists a renewed daemon SVID (key and chain).
    pub fn save_daemon_svid(&self, id: &Identity) -> Result<()> {
        write_atomic(&self.key_path(), id.key_pem().as_bytes(), KEY_MODE)?;
        write_atomic(&self.svid_path(), pem_encode("CERTIFICATE", &id.chain_der).as_bytes(), FILE_MODE)
    }

    /// Persists the trust bundle (roots as PEM, sequence in the metadata when present).
    pub fn save_bundle(&self, b: &TrustBundleMsg) -> Result<()> {
        if b.roots_der.is_empty() {
            return Err(anyhow!("refusing to persist an empty trust bundle"));
        }
        write_atomic(&self.bundle_path(), pem_encode("CERTIFICATE", &b.roots_der).as_bytes(), FILE_MODE)?;
        if let Ok(bytes) = fs::read(self.meta_path()) {
            if let Ok(mut meta) = serde_json::from_slice::<DaemonMeta>(&bytes) {
                meta.bundle_sequence = b.sequence;
                write_atomic(&self.meta_path(), &serde_json::to_vec_pretty(&meta)?, FILE_MODE)?;
            }
        }
        Ok(())
    }

    /// The persisted identity, `None` if the daemon never attested.
    pub fn load_identity(&self) -> Result<Option<PersistedIdentity>> {
        let meta = match fs::read(self.meta_path()) {
            Ok(b) => serde_json::from_slice::<DaemonMeta>(&b).context("daemon.json is unreadable")?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).context("reading daemon.json"),
        };
        let key_path = self.key_path();
        let mode =
            fs::metadata(&key_path).with_context(|| format!("stat {}", key_path.display()))?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %key_path.display(), mode = format!("{:o}", mode & 0o777), "daemon key is readable by others; fixing to 0600");
            fs::set_permissions(&key_path, fs::Permissions::from_mode(KEY_MODE))?;
        }
        let key_pem = fs::read_to_string(&key_path).context("reading daemon.key")?;
        let chain = pem_decode_certs(&fs::read_to_string(self.svid_path()).context("reading daemon.pem")?)?;
        let identity = Identity::new(meta.spiffe_id, key_pem, chain).context("daemon SVID on disk")?;
        let roots = pem_decode_certs(&fs::read_to_string(self.bundle_path()).context("reading bundle.pem")?)?;
        let bundle =
            TrustBundleMsg { trust_domain: meta.trust_domain, sequence: meta.bundle_sequence, roots_der: roots };
        Ok(Some(PersistedIdentity { daemon_id: meta.daemon_id, identity, bundle }))
    }

    pub fn save_policy(&self, revision: u64, document: &PolicyDocument) -> Result<()> {
        let file = PolicyFile { revision, document: document.clone() };
        // Private: the document may carry credential secrets (CredentialSources).
        write_atomic(&self.policy_path(), &serde_json::to_vec(&file)?, KEY_MODE)
    }

    pub fn load_policy(&self) -> Result<Option<(u64, PolicyDocument)>> {
        match fs::read(self.policy_path()) {
            Ok(b) => {
                let f: PolicyFile = serde_json::from_slice(&b).context("policy.json is unreadable")?;
                Ok(Some((f.revision, f.document)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).context("reading policy.json"),
        }
    }

    fn workload_stem(&self, spiffe_id: &str) -> PathBuf {
        self.root.join("workloads").join(crate::hex(spiffe_id.as_bytes()))
    }

    pub fn save_workload(&self, id: &Identity) -> Result<()> {
        let stem = self.workload_stem(&id.spiffe_id);
        write_atomic(&stem.with_extension("key"), id.key_pem().as_bytes(), KEY_MODE)?;
        write_atomic(&stem.with_extension("pem"), pem_encode("CERTIFICATE", &id.chain_der).as_bytes(), FILE_MODE)
    }

    pub fn remove_workload(&self, spiffe_id: &str) {
        let stem = self.workload_stem(spiffe_id);
        let _ = fs::remove_file(stem.with_extension("pem"));
        let _ = fs::remove_file(stem.with_extension("key"));
    }

    /// All persisted workload SVIDs that still load (unreadable ones are skipped with a warning).
    pub fn load_workloads(&self) -> Vec<Identity> {
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(self.root.join("workloads")) else { return out };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("pem") {
                continue;
            }
            let load = || -> Result<Identity> {
                let stem = path.file_stem().and_then(|s| s.to_str()).ok_or_else(|| anyhow!("bad name"))?;
                let id = String::from_utf8(crate::unhex(stem).ok_or_else(|| anyhow!("bad name"))?)?;
                let chain = pem_decode_certs(&fs::read_to_string(&path)?)?;
                let key = fs::read_to_string(path.with_extension("key"))?;
                Identity::new(id, key, chain)
            };
            match load() {
                Ok(id) => out.push(id),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "skipping unreadable workload SVID")
                }
            }
        }
        out
    }
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory created with `mode`
/// (so a key is never readable by others, not even briefly), fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().ok_or_else(|| anyhow!("{} has no parent", path.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", (random_unit() * 1e12) as u64));
    let res = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        // The umask may have narrowed the mode; never widen beyond `mode` but make it exact.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, SanType};
    use riptides_wire::proto::messages::PolicyItem;

    #[test]
    fn the_attestation_key_survives_retries_until_cleared() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::open(tmp.path().join("d")).unwrap();
        let first = dd.pending_attestation_key().unwrap();
        let path = dd.path().join("attest-pending.key");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        // A retry (or a restart after a crash) presents the same key.
        let again = DataDir::open(tmp.path().join("d")).unwrap().pending_attestation_key().unwrap();
        assert_eq!(first.public_key_raw(), again.public_key_raw());
        // Once the identity is saved, the next attestation uses a fresh key.
        dd.clear_pending_attestation_key();
        assert!(!path.exists());
        assert_ne!(dd.pending_attestation_key().unwrap().public_key_raw(), first.public_key_raw());
    }

    fn identity(uri: &str) -> Identity {
        let key = crate::identity::new_key().unwrap();
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        Identity::new(uri, key.serialize_pem(), vec![cert.der().to_vec()]).unwrap()
    }

    #[test]
    fn modes_and_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        let dd = DataDir::open(&root).unwrap();
        assert_eq!(fs::metadata(&root).unwrap().permissions().mode() & 0o777, 0o700);
        assert!(dd.load_identity().unwrap().is_none());
        let id = identity("spiffe://example.com/riptides/daemon/d-1");
        let bundle =
            TrustBundleMsg { trust_domain: "example.com".into(), sequence: 3, roots_der: id.chain_der.clone() };
        dd.save_identity(&PersistedIdentity { daemon_id: "d-1".into(), identity: id.clone(), bundle: bundle.clone() })
            .unwrap();
        assert_eq!(fs::metadata(dd.key_path()).unwrap().permissions().mode() & 0o777, 0o600);
        let back = dd.load_identity().unwrap().unwrap();
        assert_eq!(back.daemon_id, "d-1");
        assert_eq!(back.identity.spiffe_id, id.spiffe_id);
        assert_eq!(back.identity.chain_der, id.chain_der);
        assert_eq!(back.identity.key_pem(), id.key_pem());
        assert_eq!(back.bundle, bundle);
        // A new bundle updates the sequence.
        dd.save_bundle(&TrustBundleMsg { sequence: 4, ..bundle.clone() }).unwrap();
        assert_eq!(dd.load_identity().unwrap().unwrap().bundle.sequence, 4);
        // No temp files left behind.
        let leftovers: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
        // A widened key mode is repaired at load.
        fs::set_permissions(dd.key_path(), fs::Permissions::from_mode(0o644)).unwrap();
        dd.load_identity().unwrap().unwrap();
        assert_eq!(fs::metadata(dd.key_path()).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn policy_and_workloads() {
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::open(tmp.path()).unwrap();
        assert!(dd.load_policy().unwrap().is_none());
        let doc = PolicyDocument {
            trust_domain: "example.com".into(),
            bundle: TrustBundleMsg { trust_domain: "example.com".into(), sequence: 1, roots_der: vec![vec![1, 2, 3]] },
            items: vec![PolicyItem::Service(r#"{"metadata":{"name":"s"}}"#.into())],
        };
        dd.save_policy(42, &doc).unwrap();
        assert_eq!(dd.load_policy().unwrap(), Some((42, doc)));
        let w = identity("spiffe://example.com/web");
        dd.save_workload(&w).unwrap();
        let loaded = dd.load_workloads();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].spiffe_id, w.spiffe_id);
        let key = dd.workload_stem(&w.spiffe_id).with_extension("key");
        assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        dd.remove_workload(&w.spiffe_id);
        assert!(dd.load_workloads().is_empty());
    }
}
