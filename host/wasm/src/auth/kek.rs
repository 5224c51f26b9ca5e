//! The key-encryption keys (KEKs) of the auth service's metadata.
//!
//! Taken from the environment variable `HIGHTOWER_AUTH_KEK` if it is set,
//! else from the key file `<data dir>/auth.kek`, which is created with mode
//! 0600 (32 random bytes, key id 1) the first time it is needed. Both hold
//! entries `<id>:<64 hex digits>` separated by newlines or commas (`#`
//! starts a comment line); the highest id encrypts new metadata, all of
//! them decrypt. To rotate, add an entry with a higher id.
//!
//! Nothing here puts key bytes in an error message or `Debug` output.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub const KEK_ENV: &str = "HIGHTOWER_AUTH_KEK";
pub const KEK_FILE: &str = "auth.kek";

/// The KEKs, by id.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<(u32, [u8; 32])>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("ids", &self.ids())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KekError {
    #[error("{source_name}: entry {entry} is not <id>:<64 hex digits>")]
    Malformed { source_name: String, entry: usize },
    #[error("{source_name}: key id {id} appears twice")]
    Duplicate { source_name: String, id: u32 },
    #[error("{source_name}: no key")]
    Empty { source_name: String },
    #[error("key file {path} is readable by group or others (mode {mode:o}); chmod 600 it")]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the keys came from (for messages; never the keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env,
    File { path: PathBuf, created: bool },
}

impl KeyRing {
    /// One key with id 1 (tests and embedding).
    pub fn single(key: [u8; 32]) -> Self {
        KeyRing {
            keys: vec![(1, key)],
        }
    }

    /// Parses `<id>:<hex>` entries; `source_name` is used in errors only.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, KekError> {
        let mut keys: Vec<(u32, [u8; 32])> = Vec::new();
        let entries = text
            .split(['\n', ','])
            .map(str::trim)
            .filter(|e| !e.is_empty() && !e.starts_with('#'));
        for (n, entry) in entries.enumerate() {
            let malformed = || KekError::Malformed {
                source_name: source_name.to_string(),
                entry: n + 1,
            };
            let (id, hex) = entry.split_once(':').ok_or_else(malformed)?;
            let id: u32 = id.trim().parse().map_err(|_| malformed())?;
            let key = decode_hex(hex.trim()).ok_or_else(malformed)?;
            if keys.iter().any(|(k, _)| *k == id) {
                return Err(KekError::Duplicate {
                    source_name: source_name.to_string(),
                    id,
                });
            }
            keys.push((id, key));
        }
        if keys.is_empty() {
            return Err(KekError::Empty {
                source_name: source_name.to_string(),
            });
        }
        keys.sort_by_key(|(id, _)| *id);
        Ok(KeyRing { keys })
    }

    /// From `HIGHTOWER_AUTH_KEK`, else from (or into) `<data_dir>/auth.kek`.
    pub fn from_env_or_data_dir(data_dir: &Path) -> Result<(Self, KeySource), KekError> {
        if let Some(value) = std::env::var_os(KEK_ENV) {
            let text = value.to_string_lossy();
            return Ok((Self::parse(&text, KEK_ENV)?, KeySource::Env));
        }
        let path = data_dir.join(KEK_FILE);
        let (ring, created) = Self::load_or_create(&path)?;
        Ok((ring, KeySource::File { path, created }))
    }

    /// Reads the key file, or creates it (mode 0600, one fresh key with id
    /// 1) if it does not exist. Refuses a file readable by others.
    ///
    /// A new file is written and fsynced under a temporary name, then
    /// hard-linked into place: the key file appears complete or not at all
    /// (a crash cannot leave an empty one, which would lock the metadata
    /// out), and of two processes creating it at once one wins and the
    /// other reads the winner's key.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), KekError> {
        let io = |source| KekError::Io {
            path: path.to_path_buf(),
            source,
        };
        match Self::load(path) {
            Err(KekError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {}
            other => return other.map(|ring| (ring, false)),
        }
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = path
            .file_name()
            .map_or("key".into(), |n| n.to_string_lossy());
        let tmp = path.with_file_name(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut r| r.read_exact(&mut key))
            .map_err(io)?;
        let text = format!(
            "# Hightower auth key-encryption keys: <id>:<hex>. Keep secret.\n1:{}\n",
            encode_hex(&key)
        );
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut file| {
                file.write_all(text.as_bytes())?;
                file.sync_all()
            })
            .and_then(|()| std::fs::hard_link(&tmp, path));
        let _ = std::fs::remove_file(&tmp);
        match written {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    // Make the new name durable too.
                    let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
                }
                Ok((KeyRing::single(key), true))
            }
            Err(err) if err.kind() == ErrorKind::AlreadyExists => Ok((Self::load(path)?, false)),
            Err(err) => Err(io(err)),
        }
    }

    /// Reads an existing key file; refuses one readable by others.
    fn load(path: &Path) -> Result<Self, KekError> {
        let io = |source| KekError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KekError::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn ids(&self) -> Vec<u32> {
        self.keys.iter().map(|(id, _)| *id).collect()
    }

    /// The id new encryptions use: the highest.
    pub fn current(&self) -> u32 {
        self.keys.last().map(|(id, _)| *id).expect("never empty")
    }

    pub(crate) fn keys(&self) -> &[(u32, [u8; 32])] {
        &self.keys
    }
}

fn decode_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_created_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEK_FILE);
        let (ring, created) = KeyRing::load_or_create(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, created) = KeyRing::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(again.keys(), ring.keys());
        assert_eq!(ring.current(), 1);
        // Debug shows ids only.
        let hex = encode_hex(&ring.keys()[0].1);
        assert!(!format!("{ring:?}").contains(&hex[..16]));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            KeyRing::load_or_create(&path),
            Err(KekError::TooOpen { .. })
        ));
    }

    #[test]
    fn concurrent_creators_agree_on_one_complete_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEK_FILE);
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| KeyRing::load_or_create(&path).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
        for (ring, _) in &results {
            assert_eq!(ring.keys(), results[0].0.keys());
        }
        assert_eq!(mode_of(&path), 0o600);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [KEK_FILE]);
        // An empty key file (never written by us) is refused, not replaced.
        std::fs::write(&path, "").unwrap();
        assert!(matches!(
            KeyRing::load_or_create(&path),
            Err(KekError::Empty { .. })
        ));
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn parse_rotation_and_errors_without_key_bytes() {
        let a = "11".repeat(32);
        let b = "22".repeat(32);
        let ring = KeyRing::parse(&format!("# c\n2:{b}, 1:{a}"), "test").unwrap();
        assert_eq!(ring.ids(), vec![1, 2]);
        assert_eq!(ring.current(), 2);
        let bad = format!("1:{}", &a[..63]);
        let err = KeyRing::parse(&bad, "test").unwrap_err().to_string();
        assert!(!err.contains(&a[..20]), "{err}");
        assert!(matches!(
            KeyRing::parse(&format!("1:{a},1:{b}"), "t"),
            Err(KekError::Duplicate { .. })
        ));
        assert!(matches!(
            KeyRing::parse("", "t"),
            Err(KekError::Empty { .. })
        ));
    }
}
