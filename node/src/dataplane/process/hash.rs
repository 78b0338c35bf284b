//! `process:binary:hash`: SHA-256 of a process's executable, cached by file identity so a
//! binary is hashed once however many connections it opens.
//!
//! The file is read through `/proc/<pid>/exe`, which opens the very inode the process runs
//! (also when the path was replaced or deleted since), so the hash describes what is running,
//! not what is on disk now. The cache key (device, inode, size, mtime) changes whenever the
//! file's content can have changed in place.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use aws_lc_rs::digest;

/// Identity of an executable's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

/// Bounded SHA-256 cache.
#[derive(Debug)]
pub struct BinaryHasher {
    cache: Mutex<HashMap<FileKey, String>>,
    capacity: usize,
    max_bytes: u64,
}

impl BinaryHasher {
    /// `capacity` cached hashes at most; files over `max_bytes` are not hashed (their label
    /// is simply absent) so a giant binary cannot make identification slow.
    pub fn new(capacity: usize, max_bytes: u64) -> Self {
        BinaryHasher { cache: Mutex::new(HashMap::new()), capacity: capacity.max(1), max_bytes }
    }

    /// Lowercase hex SHA-256 of the file at `path` (typically `/proc/<pid>/exe`). Blocking:
    /// call it from a blocking thread.
    pub fn hash(&self, path: &Path) -> io::Result<String> {
        let mut file = File::open(path)?;
        let m = file.metadata()?;
        if !m.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
        }
        if m.len() > self.max_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("executable is larger than {} bytes", self.max_bytes),
            ));
        }
        let key = FileKey { dev: m.dev(), ino: m.ino(), size: m.len(), mtime: m.mtime(), mtime_nsec: m.mtime_nsec() };
        if let Some(h) = self.lock().get(&key) {
            return Ok(h.clone());
        }
        let mut ctx = digest::Context::new(&digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > self.max_bytes {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "executable grew while hashing"));
            }
            ctx.update(&buf[..n]);
        }
        let hex = crate::hex(ctx.finish().as_ref());
        let mut cache = self.lock();
        if cache.len() >= self.capacity {
            // Simple and bounded; the working set of binaries on a node is small.
            cache.clear();
        }
        cache.insert(key, hex.clone());
        Ok(hex)
    }

    pub fn cached(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileKey, String>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_caches_by_identity() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bin");
        std::fs::write(&p, b"abc").unwrap();
        let h = BinaryHasher::new(4, 1 << 20);
        let want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(h.hash(&p).unwrap(), want);
        assert_eq!(h.hash(&p).unwrap(), want);
        assert_eq!(h.cached(), 1);
        std::fs::write(&p, b"abcd").unwrap();
        assert_ne!(h.hash(&p).unwrap(), want, "content change (size/mtime) is a new key");
        let small = BinaryHasher::new(4, 2);
        assert!(small.hash(&p).is_err());
    }
}
