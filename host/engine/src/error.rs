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
pub enum InputError {
    #[error("key is empty")]
    EmptyKey,
    #[error("key is {len} bytes, over the limit of {max} bytes (max_key_bytes)")]
    KeyTooLarge { len: usize, max: usize },
    #[error("value is {len} bytes, over the limit of {max} bytes (max_value_bytes)")]
    ValueTooLarge { len: usize, max: usize },
    #[error("batch has {ops} operations, over the limit of {max} (max_batch_ops)")]
    BatchTooManyOps { ops: usize, max: usize },
    #[error("batch encodes to {bytes} bytes, over the limit of {max} bytes (max_batch_bytes)")]
    BatchTooLarge { bytes: u64, max: u64 },
    #[error("batch has {conditions} conditions, over the limit of {max} (max_batch_ops)")]
    TooManyConditions { conditions: usize, max: usize },
    #[error("log index {given} is not after the last applied index {last_applied}")]
    StaleLogIndex { given: u64, last_applied: u64 },
}

/// Where and why a file failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corruption in {file} at offset {offset}: {reason}")]
pub struct Corruption {
    pub file: String,
    pub offset: u64,
    pub reason: String,
}

/// A configuration value out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid configuration: {field}: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

/// The umbrella error of the crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Corruption(#[from] Corruption),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("data directory {} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("data directory {} is locked by another process ({holder})", path.display())]
    Locked { path: PathBuf, holder: String },
    #[error(
        "data directory {} holds a snapshot restore that never completed (it was killed or failed); its store is partial: delete the directory's contents and run the restore again",
        path.display()
    )]
    RestoreIncomplete { path: PathBuf },
    #[error("{file} has format version {found}; this build reads versions up to {supported}")]
    UnsupportedFormat {
        file: String,
        found: u32,
        supported: u32,
    },
    #[error("writes are refused until the store is reopened: {reason}")]
    Poisoned { reason: String },
    #[error("condition {index} of the batch failed on key {key}")]
    ConditionFailed { index: usize, key: String },
    #[error("not supported yet: {0}")]
    Unsupported(&'static str),
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
