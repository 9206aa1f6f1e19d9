//! The on-disk half of the module cache: shipped modules (by SHA-256) and
//! the compiled artifacts this worker wrote, each sealed with a MAC.
//!
//! Layout under the cache directory (created private, `0700`):
//!
//! ```text
//! key                         32 random bytes, this cache's MAC key (0600)
//! modules/<sha256>.wasm       a module as shipped; its name is its hash
//! compiled/<engine>/<sha256>  an artifact: magic, module hash, MAC, bytes
//! ```
//!
//! `<engine>` is a digest of wasmtime's compatibility hash (its version and
//! every setting that changes generated code), so a worker built or
//! configured differently never sees another's artifacts. Loading an
//! artifact is `unsafe` in wasmtime (it is machine code), so one is loaded
//! only if its MAC, keyed by a secret only this cache directory holds,
//! matches: a truncated, corrupted, swapped or foreign file is deleted and
//! the module recompiled.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use rpc_core::ContentHash;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The first bytes of every artifact file, with the format's version.
const ARTIFACT_MAGIC: &[u8; 8] = b"rpcwcm\x00\x01";
/// Magic, module hash, MAC.
const ARTIFACT_HEADER_LEN: usize = 8 + 32 + 32;

/// A cache directory, opened.
#[derive(Debug)]
pub(crate) struct DiskCache {
    modules: PathBuf,
    compiled: PathBuf,
    key: [u8; 32],
}

impl DiskCache {
    /// Opens (creating if needed) the cache at `root` for an engine whose
    /// compatibility hash is `engine`.
    pub(crate) fn open(root: &Path, engine: impl Hash) -> io::Result<DiskCache> {
        create_private_dir(root)?;
        let modules = root.join("modules");
        create_private_dir(&modules)?;
        let engine_dir = {
            let mut hasher = Sha256Hasher(Sha256::new());
            engine.hash(&mut hasher);
            let digest = hasher.0.finalize();
            ContentHash::from_bytes(digest.into()).to_string()
        };
        let compiled_root = root.join("compiled");
        create_private_dir(&compiled_root)?;
        let compiled = compiled_root.join(&engine_dir[..16]);
        create_private_dir(&compiled)?;
        let key = load_or_create_key(&root.join("key"))?;
        Ok(DiskCache {
            modules,
            compiled,
            key,
        })
    }

    fn module_path(&self, hash: &ContentHash) -> PathBuf {
        self.modules.join(format!("{hash}.wasm"))
    }

    fn artifact_path(&self, hash: &ContentHash) -> PathBuf {
        self.compiled.join(hash.to_string())
    }

    /// Whether the module is on disk.
    pub(crate) fn has_module(&self, hash: &ContentHash) -> bool {
        self.module_path(hash).is_file()
    }

    /// Writes a module whose bytes hash to `hash`.
    pub(crate) fn write_module(&self, hash: &ContentHash, bytes: &[u8]) -> io::Result<()> {
        write_atomically(&self.module_path(hash), &[bytes])
    }

    /// Reads a module; `None` if absent, or if its bytes no longer hash to
    /// its name (then it is deleted).
    pub(crate) fn read_module(&self, hash: &ContentHash) -> io::Result<Option<Bytes>> {
        let path = self.module_path(hash);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        if ContentHash::of(&bytes) != *hash {
            tracing::warn!(path = %path.display(), "a cached module does not match its hash; deleting it");
            let _ = fs::remove_file(&path);
            return Ok(None);
        }
        Ok(Some(Bytes::from(bytes)))
    }

    /// Writes the compiled artifact of module `hash`, sealed.
    pub(crate) fn write_artifact(&self, hash: &ContentHash, artifact: &[u8]) -> io::Result<()> {
        let mac = self.mac(hash, artifact);
        write_atomically(
            &self.artifact_path(hash),
            &[ARTIFACT_MAGIC, hash.as_bytes(), &mac, artifact],
        )
    }

    /// Reads the artifact of module `hash` if there is one this cache
    /// wrote, intact; a file that fails the check is deleted.
    pub(crate) fn read_artifact(&self, hash: &ContentHash) -> io::Result<Option<Vec<u8>>> {
        let path = self.artifact_path(hash);
        let mut file = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        let intact = file.len() >= ARTIFACT_HEADER_LEN && {
            let (header, artifact) = file.split_at(ARTIFACT_HEADER_LEN);
            let (magic, rest) = header.split_at(8);
            let (module, mac) = rest.split_at(32);
            magic == ARTIFACT_MAGIC && module == hash.as_bytes() && self.verify(hash, artifact, mac)
        };
        if !intact {
            tracing::warn!(
                path = %path.display(),
                "a compiled module failed its integrity check; deleting it and recompiling"
            );
            let _ = fs::remove_file(&path);
            return Ok(None);
        }
        file.drain(..ARTIFACT_HEADER_LEN);
        Ok(Some(file))
    }

    fn mac(&self, hash: &ContentHash, artifact: &[u8]) -> [u8; 32] {
        self.keyed(hash, artifact).finalize().into_bytes().into()
    }

    fn verify(&self, hash: &ContentHash, artifact: &[u8], mac: &[u8]) -> bool {
        // Constant time, though timing would tell an attacker little here.
        self.keyed(hash, artifact).verify_slice(mac).is_ok()
    }

    fn keyed(&self, hash: &ContentHash, artifact: &[u8]) -> HmacSha256 {
        let mut mac = match HmacSha256::new_from_slice(&self.key) {
            Ok(mac) => mac,
            // HMAC takes keys of any length.
            Err(_) => unreachable!("HMAC accepts a 32-byte key"),
        };
        mac.update(ARTIFACT_MAGIC);
        mac.update(hash.as_bytes());
        mac.update(artifact);
        mac
    }
}

/// Feeds `Hash` output into SHA-256, for a digest that is the same in every
/// process (unlike `DefaultHasher`, whose algorithm may change).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        // Only `write` is used; the digest is read from the inner state.
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn load_or_create_key(path: &Path) -> io::Result<[u8; 32]> {
    match fs::read(path) {
        Ok(bytes) => {
            return bytes.try_into().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is not a 32-byte key; delete it to start a new cache",
                        path.display()
                    ),
                )
            });
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|error| io::Error::other(error.to_string()))?;
    write_atomically(path, &[&key])?;
    // Another process may have won the race: use whichever key is on disk.
    let on_disk = fs::read(path)?;
    on_disk
        .try_into()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "the cache key is corrupt"))
}

fn create_private_dir(path: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// Writes `parts` to a fresh private file beside `path`, then renames it
/// over `path`: readers see the whole file or none of it.
fn write_atomically(path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|error| io::Error::other(error.to_string()))?;
    let temp = dir.join(format!(".tmp-{}", u64::from_le_bytes(suffix)));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = (|| {
        let mut file = options.open(&temp)?;
        for part in parts {
            file.write_all(part)?;
        }
        file.sync_data()?;
        fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("worker-disk-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn artifacts_round_trip_and_any_change_is_detected() {
        let root = temp_dir("artifacts");
        let cache = DiskCache::open(&root, "engine-a").unwrap();
        let hash = ContentHash::of(b"module");
        cache.write_artifact(&hash, b"machine code").unwrap();
        assert_eq!(
            cache.read_artifact(&hash).unwrap().unwrap(),
            b"machine code"
        );

        // Flip one byte of the body: refused and deleted.
        let path = cache.artifact_path(&hash);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert_eq!(cache.read_artifact(&hash).unwrap(), None);
        assert!(!path.exists());

        // Truncated: refused.
        cache.write_artifact(&hash, b"machine code").unwrap();
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert_eq!(cache.read_artifact(&hash).unwrap(), None);

        // Another module's artifact copied over this one: refused.
        let other = ContentHash::of(b"other");
        cache.write_artifact(&other, b"other code").unwrap();
        fs::copy(cache.artifact_path(&other), &path).unwrap();
        assert_eq!(cache.read_artifact(&hash).unwrap(), None);

        // Written by a cache with another key: refused.
        let foreign_root = temp_dir("foreign");
        let foreign = DiskCache::open(&foreign_root, "engine-a").unwrap();
        foreign.write_artifact(&hash, b"evil code").unwrap();
        fs::copy(foreign.artifact_path(&hash), &path).unwrap();
        assert_eq!(cache.read_artifact(&hash).unwrap(), None);

        // A reopened cache keeps its key.
        cache.write_artifact(&hash, b"machine code").unwrap();
        let reopened = DiskCache::open(&root, "engine-a").unwrap();
        assert_eq!(
            reopened.read_artifact(&hash).unwrap().unwrap(),
            b"machine code"
        );
        // Another engine configuration sees nothing.
        let other_engine = DiskCache::open(&root, "engine-b").unwrap();
        assert_eq!(other_engine.read_artifact(&hash).unwrap(), None);
        let _ = fs::remove_dir_all(&root);
        let _ = fs::remove_dir_all(&foreign_root);
    }

    #[test]
    fn modules_are_checked_against_their_names() {
        let root = temp_dir("modules");
        let cache = DiskCache::open(&root, "engine").unwrap();
        let hash = ContentHash::of(b"\0asm");
        assert!(!cache.has_module(&hash));
        cache.write_module(&hash, b"\0asm").unwrap();
        assert!(cache.has_module(&hash));
        assert_eq!(cache.read_module(&hash).unwrap().unwrap(), &b"\0asm"[..]);
        fs::write(cache.module_path(&hash), b"\0asX").unwrap();
        assert_eq!(cache.read_module(&hash).unwrap(), None);
        assert!(!cache.has_module(&hash));
        let _ = fs::remove_dir_all(&root);
    }

    #[cfg(unix)]
    #[test]
    fn the_cache_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let root = temp_dir("private");
        let _cache = DiskCache::open(&root, "engine").unwrap();
        let mode = fs::metadata(&root).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the cache directory is readable by others");
        let key_mode = fs::metadata(root.join("key")).unwrap().permissions().mode();
        assert_eq!(key_mode & 0o077, 0, "the key is readable by others");
        let _ = fs::remove_dir_all(&root);
    }
}
