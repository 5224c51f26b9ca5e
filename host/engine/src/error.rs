//! Errors, one enum per layer, all converting into the umbrella [`Error`].
//!
//! Messages name the problem (the file, the offset, the limit) so that an
//! operator can act on them. They never contain values, and keys are shown
//! escaped and truncated ([`display_key`]), so nothing secret reaches a log.

use std::io;
use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Bad input: rejected before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// Keys have at least one byte.
    #[error("key is empty")]
    EmptyKey,
    /// Over `max_key_bytes`.
    #[error("key is {len} bytes, over the limit of {max} bytes (max_key_bytes)")]
    KeyTooLarge {
        /// The key's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Over `max_value_bytes`.
    #[error("value is {len} bytes, over the limit of {max} bytes (max_value_bytes)")]
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More operations than `max_batch_ops`.
    #[error("batch has {ops} operations, over the limit of {max} (max_batch_ops)")]
    BatchTooManyOps {
        /// Operations in the batch.
        ops: usize,
        /// The limit.
        max: usize,
    },
    /// Encodes to more than `max_batch_bytes`.
    #[error("batch encodes to {bytes} bytes, over the limit of {max} bytes (max_batch_bytes)")]
    BatchTooLarge {
        /// Encoded size of the batch.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// More conditions than `max_batch_ops`.
    #[error("batch has {conditions} conditions, over the limit of {max} (max_batch_ops)")]
    TooManyConditions {
        /// Conditions in the batch.
        conditions: usize,
        /// The limit.
        max: usize,
    },
    /// A replicated log handed the state machine an index it already applied.
    #[error("log index {given} is not after the last applied index {last_applied}")]
    StaleLogIndex {
        /// The index given.
        given: u64,
        /// The highest index applied so far.
        last_applied: u64,
    },
}

/// Where and why a file failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corruption in {file} at offset {offset}: {reason}")]
pub struct Corruption {
    /// The file, by its name inside the data directory.
    pub file: String,
    /// Where in it.
    pub offset: u64,
    /// What failed (a checksum, a length, the order of versions).
    pub reason: String,
}

/// A configuration value out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid configuration: {field}: {reason}")]
pub struct ConfigError {
    /// The field (or the file, or the flag) at fault.
    pub field: &'static str,
    /// Why, with the allowed range.
    pub reason: String,
}

impl ConfigError {
    /// An error about `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            field,
            reason: reason.into(),
        }
    }
}

/// The umbrella error of the crate: every layer's error converts into it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad input, refused before anything was written.
    #[error(transparent)]
    Input(#[from] InputError),
    /// A configuration value out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Damage found in a file of the store.
    #[error(transparent)]
    Corruption(#[from] Corruption),
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the file.
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The data directory's path names something else.
    #[error("data directory {} is not a directory", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// Another process holds the data directory.
    #[error("data directory {} is locked by another process ({holder})", path.display())]
    Locked {
        /// The data directory.
        path: PathBuf,
        /// Who holds it (`pid N`), or that it is unknown.
        holder: String,
    },
    /// The directory holds a snapshot restore that never completed.
    #[error(
        "data directory {} holds a snapshot restore that never completed (it was killed or failed); its store is partial: delete the directory's contents and run the restore again",
        path.display()
    )]
    RestoreIncomplete {
        /// The data directory.
        path: PathBuf,
    },
    /// A file was written by a newer release.
    #[error("{file} has format version {found}; this build reads versions up to {supported}")]
    UnsupportedFormat {
        /// The file.
        file: String,
        /// Its format version.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// An earlier write or fsync failed; see the README on why nothing is
    /// retried.
    #[error("writes are refused until the store is reopened: {reason}")]
    Poisoned {
        /// The failure that poisoned the writer.
        reason: String,
    },
    /// The store was opened read-only (or lives on a read-only file system
    /// as far as this process is concerned): nothing can be written.
    #[error("the store at {} is open read-only: nothing can be written", path.display())]
    ReadOnly {
        /// The data directory.
        path: PathBuf,
    },
    /// An operation this build does not implement.
    #[error("not supported yet: {0}")]
    Unsupported(&'static str),
    /// [`crate::KvEngine::close`] was called while other handles of the
    /// engine were alive; the store stays open until the last is dropped.
    #[error("the store stays open: {handles} other handle(s) of the engine are still alive")]
    InUse {
        /// Handles still alive.
        handles: usize,
    },
    /// A limit of the format or of the process was reached (for example
    /// 2^32 - 1 segment ids): nothing more of that kind can be created.
    #[error("exhausted: {0}")]
    Exhausted(&'static str),
    /// Something the engine relies on did not hold: a bug, or a file
    /// changed behind the engine's back. The message says what.
    #[error("internal invariant broken: {0}")]
    Invariant(String),
}

impl Error {
    /// Wraps an I/O error with what we were doing, e.g. `"fsync seg-0000000003.log"`.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Adds context to I/O results: `file.sync_data().context(|| "fsync x")?`.
pub(crate) trait IoContext<T> {
    fn context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|source| Error::io(what(), source))
    }
}

/// Keys may hold anything; show them escaped and cut to 64 bytes.
pub fn display_key(key: &[u8]) -> String {
    const SHOWN_BYTES: usize = 64;
    let shown = &key[..key.len().min(SHOWN_BYTES)];
    let mut text: String = shown.escape_ascii().to_string();
    if key.len() > SHOWN_BYTES {
        text.push_str(&format!("… ({} bytes)", key.len()));
    }
    format!("\"{text}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_key_escapes_and_truncates() {
        assert_eq!(display_key(b"a\n\xff"), "\"a\\n\\xff\"");
        let long = vec![b'x'; 100];
        let shown = display_key(&long);
        assert!(shown.contains("(100 bytes)"), "{shown}");
        assert!(shown.len() < 90);
    }

    #[test]
    fn messages_name_the_problem() {
        let err: Error = InputError::KeyTooLarge {
            len: 5000,
            max: 4096,
        }
        .into();
        assert_eq!(
            err.to_string(),
            "key is 5000 bytes, over the limit of 4096 bytes (max_key_bytes)"
        );
        let err: Error = Corruption {
            file: "seg-0000000001.log".into(),
            offset: 96,
            reason: "checksum mismatch".into(),
        }
        .into();
        assert_eq!(
            err.to_string(),
            "corruption in seg-0000000001.log at offset 96: checksum mismatch"
        );
    }

    #[test]
    fn io_context_keeps_the_source() {
        let result: io::Result<()> = Err(io::Error::other("disk on fire"));
        let err = result.context(|| "fsync seg-1").unwrap_err();
        assert_eq!(err.to_string(), "fsync seg-1: disk on fire");
    }
}
