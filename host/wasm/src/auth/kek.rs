//! The key-encryption keys (KEKs) of the auth service's metadata.
//!
//! Taken from the environment variable `HIGHTOWER_AUTH_KEK` if it is set,
//! else from the key file `<data dir>/auth.kek` ([`KeyFile`]). Both hold
//! entries `<id>:<64 hex digits>` separated by newlines or commas (`#`
//! starts a comment line); the highest id encrypts new metadata, all of
//! them decrypt. To rotate, add an entry with a higher id.
//!
//! The key file is created (mode 0600, 32 random bytes, key id 1) only by
//! [`super::AuthClient::load_for_data_dir`], and only into a store that holds
//! no metadata encrypted under any key: a store restored from a snapshot
//! needs the key file that was backed up beside the snapshot.
//!
//! Nothing here puts key bytes in an error message or `Debug` output.

use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, MetadataExt, OpenOptions, OpenOptionsExt, PermissionsExt};

pub const KEK_ENV: &str = "HIGHTOWER_AUTH_KEK";
pub const KEK_FILE: &str = "auth.kek";
/// Largest key file read (a few hundred keys); a bigger one is refused
/// rather than read into memory.
pub const MAX_KEK_FILE_BYTES: u64 = 64 << 10;

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
#[non_exhaustive]
pub enum KekError {
    #[error("{source_name}: entry {entry} is not <id>:<64 hex digits>")]
    Malformed { source_name: String, entry: usize },
    #[error("{source_name}: key id {id} appears twice")]
    Duplicate { source_name: String, id: u32 },
    #[error("{source_name}: no key")]
    Empty { source_name: String },
    #[error("key file {path} is readable by group or others (mode {mode:o}); chmod 600 it")]
    TooOpen { path: PathBuf, mode: u32 },
    #[error(
        "key file {path} is {what}, not a regular file; Hightower follows no links in the data directory"
    )]
    NotAFile { path: PathBuf, what: &'static str },
    #[error("key file {path} is larger than {MAX_KEK_FILE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error(
        "the store holds auth metadata encrypted under key id{} {}, but there is no key file {path} \
         and {KEK_ENV} is not set: restore the key file kept with the store's backup \
         (a snapshot does not carry it); no new key was created",
        if ids.len() == 1 { "" } else { "s" },
        join_ids(ids)
    )]
    MissingForStore { path: PathBuf, ids: Vec<u32> },
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn join_ids(ids: &[u32]) -> String {
    ids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where the keys came from (for messages; never the keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KekSource {
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

    /// The keys of `HIGHTOWER_AUTH_KEK`, if it is set.
    pub fn from_env() -> Result<Option<Self>, KekError> {
        std::env::var_os(KEK_ENV)
            .map(|value| Self::parse(&value.to_string_lossy(), KEK_ENV))
            .transpose()
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

/// The key file `auth.kek` in a data directory, reached like every other
/// file of the store through a `cap_std` directory handle: a symbolic link,
/// a directory or anything but a regular file under that name is refused.
pub struct KeyFile {
    dir: Dir,
    path: PathBuf,
}

impl KeyFile {
    /// The key file of `data_dir`, which must exist.
    pub fn in_data_dir(data_dir: &Path) -> Result<Self, KekError> {
        let path = data_dir.join(KEK_FILE);
        let dir = Dir::open_ambient_dir(data_dir, ambient_authority()).map_err(|source| {
            KekError::Io {
                path: path.clone(),
                source,
            }
        })?;
        Ok(KeyFile { dir, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> KekError {
        KekError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// The keys, or `None` if there is no key file. Refuses a file readable
    /// by others, a link, a directory and a file over [`MAX_KEK_FILE_BYTES`].
    pub fn load(&self) -> Result<Option<KeyRing>, KekError> {
        // Checked before opening (opening a FIFO could block) and again on
        // the open file, which must be the same one (no swap in between).
        let named = match self.dir.symlink_metadata(KEK_FILE) {
            Ok(meta) => meta,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(self.io(err)),
        };
        self.check_regular(&named.file_type())?;
        let mut options = OpenOptions::new();
        options
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
        let file = self
            .dir
            .open_with(KEK_FILE, &options)
            .map_err(|e| self.io(e))?;
        let meta = file.metadata().map_err(|e| self.io(e))?;
        self.check_regular(&meta.file_type())?;
        if (meta.dev(), meta.ino()) != (named.dev(), named.ino()) {
            return Err(self.io(std::io::Error::other(
                "the file was replaced while it was opened",
            )));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KekError::TooOpen {
                path: self.path.clone(),
                mode,
            });
        }
        let mut text = String::new();
        file.into_std()
            .take(MAX_KEK_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| self.io(e))?;
        if text.len() as u64 > MAX_KEK_FILE_BYTES {
            return Err(KekError::TooLarge {
                path: self.path.clone(),
            });
        }
        KeyRing::parse(&text, &self.path.display().to_string()).map(Some)
    }

    fn check_regular(&self, file_type: &cap_std::fs::FileType) -> Result<(), KekError> {
        let what = if file_type.is_file() {
            return Ok(());
        } else if file_type.is_symlink() {
            "a symbolic link"
        } else if file_type.is_dir() {
            "a directory"
        } else {
            "a special file"
        };
        Err(KekError::NotAFile {
            path: self.path.clone(),
            what,
        })
    }

    /// Creates the key file (mode 0600, one fresh key with id 1); if it
    /// appeared meanwhile, loads that one instead. Returns the keys and
    /// whether this call created them.
    ///
    /// The file is written and fsynced under a temporary name, then
    /// hard-linked into place: the key file appears complete or not at all
    /// (a crash cannot leave an empty one, which would lock the metadata
    /// out), and of two processes creating it at once one wins and the
    /// other reads the winner's key.
    pub fn create(&self) -> Result<(KeyRing, bool), KekError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let tmp = format!(
            ".{KEK_FILE}.{}.{}.tmp",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut r| r.read_exact(&mut key))
            .map_err(|e| self.io(e))?;
        let text = format!(
            "# Hightower auth key-encryption keys: <id>:<hex>. Keep secret; back it up with the store.\n1:{}\n",
            encode_hex(&key)
        );
        let mut options = OpenOptions::new();
        options.write(true).create_new(true).mode(0o600);
        let written = self
            .dir
            .open_with(&tmp, &options)
            .and_then(|file| {
                let mut file = file.into_std();
                file.write_all(text.as_bytes())?;
                file.sync_all()
            })
            .and_then(|()| self.dir.hard_link(&tmp, &self.dir, KEK_FILE));
        let _ = self.dir.remove_file(&tmp);
        match written {
            Ok(()) => {
                // Make the new name durable too.
                let _ = self.dir.open(".").and_then(|dir| dir.into_std().sync_all());
                Ok((KeyRing::single(key), true))
            }
            Err(err) if err.kind() == ErrorKind::AlreadyExists => match self.load()? {
                Some(ring) => Ok((ring, false)),
                None => Err(self.io(err)),
            },
            Err(err) => Err(self.io(err)),
        }
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
    use std::os::unix::fs::PermissionsExt;

    fn key_file() -> (tempfile::TempDir, KeyFile) {
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::in_data_dir(dir.path()).unwrap();
        (dir, file)
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn key_file_is_created_0600_and_reloaded() {
        let (_dir, file) = key_file();
        assert!(file.load().unwrap().is_none());
        let (ring, created) = file.create().unwrap();
        assert!(created);
        assert_eq!(mode_of(file.path()), 0o600);
        let again = file.load().unwrap().unwrap();
        assert_eq!(again.keys(), ring.keys());
        assert_eq!(ring.current(), 1);
        // Debug shows ids only.
        let hex = encode_hex(&ring.keys()[0].1);
        assert!(!format!("{ring:?}").contains(&hex[..16]));
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(file.load(), Err(KekError::TooOpen { .. })));
    }

    #[test]
    fn concurrent_creators_agree_on_one_complete_key_file() {
        let (dir, file) = key_file();
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| file.create().unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
        for (ring, _) in &results {
            assert_eq!(ring.keys(), results[0].0.keys());
        }
        assert_eq!(mode_of(file.path()), 0o600);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [KEK_FILE]);
        // An empty key file (never written by us) is refused, not replaced.
        std::fs::write(file.path(), "").unwrap();
        assert!(matches!(file.load(), Err(KekError::Empty { .. })));
    }

    /// Like every other file of the store: a link is not followed (not even
    /// to a private file elsewhere), a directory is named as one, and a
    /// huge file is not read.
    #[test]
    fn links_directories_and_huge_files_are_refused_by_name() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("elsewhere.kek");
        std::fs::write(&target, format!("1:{}\n", "11".repeat(32))).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (_dir, file) = key_file();
        std::os::unix::fs::symlink(&target, file.path()).unwrap();
        let err = file.load().unwrap_err();
        assert!(
            matches!(
                err,
                KekError::NotAFile {
                    what: "a symbolic link",
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("auth.kek is a symbolic link"),
            "{err}"
        );
        // Creating does not write through the link either.
        assert!(file.create().is_err());
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            format!("1:{}\n", "11".repeat(32))
        );

        let (_dir, file) = key_file();
        std::fs::create_dir(file.path()).unwrap();
        let err = file.load().unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");

        let (_dir, file) = key_file();
        let mut big = format!("1:{}\n", "22".repeat(32));
        big.push_str(&"#".repeat(MAX_KEK_FILE_BYTES as usize));
        std::fs::write(file.path(), big).unwrap();
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(file.load(), Err(KekError::TooLarge { .. })));
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
