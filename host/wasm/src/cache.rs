//! The compiled-component cache: `<data_dir>/wasm-cache/<key>.cwasm`.
//!
//! Compiling a component takes ~150 ms in a release build (seconds in a
//! debug one); loading a serialized one takes well under a millisecond. But
//! loading runs the machine code inside, so a cache file is trusted only if
//! it is exactly what this process would have written:
//!
//! - the key is SHA-256 of the cache format, the engine's compilation
//!   settings (which include the wasmtime version, target and CPU features)
//!   and the wasm bytes;
//! - the file starts with our magic, the format version and that key, and
//!   carries the payload's length and SHA-256, all checked before the
//!   payload is handed to wasmtime (which checks its own header again).
//!
//! Anything else (stale, foreign, truncated or corrupt) is ignored, logged,
//! and replaced by a fresh compilation. Files are written to a temporary name
//! and renamed, so a reader never sees half a file. All access goes through a
//! `cap_std` directory handle, like every other store file.

use std::hash::Hasher;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

pub const CACHE_DIR_NAME: &str = "wasm-cache";
const MAGIC: &[u8; 8] = b"HTWASMC\0";
const FORMAT_VERSION: u32 = 1;
/// magic, format version, key, payload length, payload SHA-256.
const HEADER_LEN: usize = 8 + 4 + 32 + 8 + 32;

/// Where a loaded component came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompiledFrom {
    /// Compiled from the wasm now (and written to the cache, if enabled).
    Compiled,
    /// Loaded from a cache file.
    Cache,
    /// A cache file was present but not trusted (the reason); compiled anew
    /// and the file replaced.
    Rebuilt(String),
}

pub(crate) struct ArtifactCache {
    dir: Dir,
    /// Most `.cwasm` files kept; see [`ArtifactCache::prune`].
    max_files: usize,
}

/// Feeds `Hash` output into SHA-256.
struct ShaHasher<'a>(&'a mut Sha256);

impl Hasher for ShaHasher<'_> {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// The cache key of `wasm` compiled by `engine`.
pub(crate) fn cache_key(engine: &wasmtime::Engine, wasm: &[u8]) -> [u8; 32] {
    use std::hash::Hash;
    let mut sha = Sha256::new();
    sha.update(MAGIC);
    sha.update(FORMAT_VERSION.to_le_bytes());
    engine
        .precompile_compatibility_hash()
        .hash(&mut ShaHasher(&mut sha));
    sha.update((wasm.len() as u64).to_le_bytes());
    sha.update(wasm);
    sha.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ArtifactCache {
    /// Opens (creating) `<data_dir>/wasm-cache`.
    pub fn open(data_dir: &Path, max_files: usize) -> std::io::Result<Self> {
        assert!(max_files > 0, "the cache keeps at least the file it writes");
        let parent = Dir::open_ambient_dir(data_dir, ambient_authority())?;
        match parent.create_dir(CACHE_DIR_NAME) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
        Ok(ArtifactCache {
            dir: parent.open_dir(CACHE_DIR_NAME)?,
            max_files,
        })
    }

    pub fn file_name(key: &[u8; 32]) -> String {
        format!("{}.cwasm", hex(key))
    }

    /// The cached component for `key`: `Ok(None)` if there is no file,
    /// `Err(reason)` if there is one we do not trust.
    pub fn load(
        &self,
        engine: &wasmtime::Engine,
        key: &[u8; 32],
    ) -> Result<Option<Component>, String> {
        let name = Self::file_name(key);
        let mut file = match self.dir.open(&name) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(format!("cannot open {name}: {err}")),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|err| format!("cannot read {name}: {err}"))?;
        let payload = verify(&bytes, key)?;
        // SAFETY: `payload` is exactly what `store` wrote for this key: the
        // magic, format version and key match and its SHA-256 checks out,
        // so it is the output of `Component::serialize` from an engine with
        // these compilation settings. Wasmtime checks its own header and the
        // engine's settings again and refuses a mismatch.
        unsafe { Component::deserialize(engine, payload) }
            .map(Some)
            .map_err(|err| format!("wasmtime refused {name}: {err}"))
    }

    /// Writes `component` under `key`, atomically.
    pub fn store(&self, key: &[u8; 32], component: &Component) -> std::io::Result<()> {
        let payload = component.serialize().map_err(std::io::Error::other)?;
        let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&Sha256::digest(&payload));
        bytes.extend_from_slice(&payload);
        let name = Self::file_name(key);
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let temp = format!("{name}.tmp-{}-{unique}", std::process::id());
        let result = (|| {
            let mut file = self.dir.open_with(
                &temp,
                OpenOptions::new().write(true).create(true).truncate(true),
            )?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            self.dir.rename(&temp, &self.dir, &name)
        })();
        if result.is_err() {
            let _ = self.dir.remove_file(&temp);
            return result;
        }
        self.prune(&name);
        Ok(())
    }

    /// Removes the oldest cache files (by modification time) beyond
    /// `max_files`, never `keep`: components of old versions of an
    /// extension must not pile up forever. Failures are only logged: the
    /// cache is an optimisation.
    fn prune(&self, keep: &str) {
        let Ok(entries) = self.dir.entries() else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, String)> = entries
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let name = entry.file_name().into_string().ok()?;
                let modified = entry.metadata().ok()?.modified().ok()?.into_std();
                (name.ends_with(".cwasm") && name != keep).then_some((modified, name))
            })
            .collect();
        let excess = (files.len() + 1).saturating_sub(self.max_files);
        files.sort();
        for (_, name) in files.into_iter().take(excess) {
            match self.dir.remove_file(&name) {
                Ok(()) => {
                    tracing::debug!(file = %name, "pruned a compiled component from the cache")
                }
                Err(err) => tracing::warn!(file = %name, error = %err, "could not prune the cache"),
            }
        }
    }
}

/// The payload of a cache file, if its header is ours, for `key`, and its
/// checksum matches.
fn verify<'b>(bytes: &'b [u8], key: &[u8; 32]) -> Result<&'b [u8], String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!("{} bytes, shorter than the header", bytes.len()));
    }
    let (header, payload) = bytes.split_at(HEADER_LEN);
    if &header[..8] != MAGIC {
        return Err("not a Hightower cache file (bad magic)".into());
    }
    let version = u32::from_le_bytes(header[8..12].try_into().unwrap());
    if version != FORMAT_VERSION {
        return Err(format!("cache format {version}, expected {FORMAT_VERSION}"));
    }
    if &header[12..44] != key {
        return Err("written for other wasm or engine settings".into());
    }
    let len = u64::from_le_bytes(header[44..52].try_into().unwrap());
    if len != payload.len() as u64 {
        return Err(format!(
            "payload is {} bytes, header says {len}",
            payload.len()
        ));
    }
    if Sha256::digest(payload).as_slice() != &header[52..84] {
        return Err("payload checksum mismatch".into());
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(key: &[u8; 32], payload: &[u8]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&Sha256::digest(payload));
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn only_our_own_files_are_trusted() {
        let key = [7; 32];
        let good = file(&key, b"payload");
        assert_eq!(verify(&good, &key).unwrap(), b"payload");
        assert!(verify(&good, &[8; 32]).unwrap_err().contains("other wasm"));
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(verify(&flipped, &key).unwrap_err().contains("checksum"));
        assert!(
            verify(&good[..good.len() - 1], &key)
                .unwrap_err()
                .contains("header says")
        );
        assert!(verify(&good[..10], &key).unwrap_err().contains("shorter"));
        let mut foreign = good.clone();
        foreign[0] = b'X';
        assert!(verify(&foreign, &key).unwrap_err().contains("magic"));
        let mut newer = good;
        newer[8] = 2;
        assert!(verify(&newer, &key).unwrap_err().contains("format 2"));
    }

    #[test]
    fn the_cache_keeps_at_most_max_files_and_drops_the_oldest() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(tmp.path(), 2).unwrap();
        let dir = tmp.path().join(CACHE_DIR_NAME);
        for (n, name) in ["a.cwasm", "b.cwasm", "c.cwasm"].iter().enumerate() {
            std::fs::write(dir.join(name), b"x").unwrap();
            let file = std::fs::File::options()
                .write(true)
                .open(dir.join(name))
                .unwrap();
            let at = std::time::SystemTime::UNIX_EPOCH
                + std::time::Duration::from_secs(1_000 + n as u64);
            file.set_modified(at).unwrap();
        }
        std::fs::write(dir.join("notes.txt"), b"not ours").unwrap();
        cache.prune("c.cwasm");
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        // Two .cwasm files are kept: the one just written and the newest other.
        assert_eq!(left, ["b.cwasm", "c.cwasm", "notes.txt"]);
    }

    #[test]
    fn the_key_depends_on_the_wasm_and_the_engine() {
        let engine = wasmtime::Engine::default();
        let a = cache_key(&engine, b"a");
        assert_eq!(a, cache_key(&engine, b"a"));
        assert_ne!(a, cache_key(&engine, b"b"));
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let other = wasmtime::Engine::new(&config).unwrap();
        assert_ne!(a, cache_key(&other, b"a"));
    }
}
