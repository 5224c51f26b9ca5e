//! Fault injection at the I/O boundary.
//!
//! Every write, sync, create, rename, truncate and remove the storage layer
//! performs first asks an [`IoFaults`] whether to fail. Production uses
//! [`NoFaults`]; tests inject errors at chosen steps to check that the engine
//! refuses further writes and that a reopen recovers every acknowledged write.

use std::io;

/// The kinds of I/O step the storage layer performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoOp {
    /// `pwrite` of log bytes (or of preallocated zeros).
    Write,
    /// `fdatasync`/`fsync` of a segment file.
    SyncFile,
    /// `fsync` of the data directory after a create, rename or remove.
    SyncDir,
    Create,
    Rename,
    Truncate,
    Remove,
}

/// Decides whether an I/O step fails. `file` is the name inside the data directory.
pub trait IoFaults: Send + Sync {
    fn check(&self, op: IoOp, file: &str) -> io::Result<()>;
}

/// Never fails.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoFaults;

impl IoFaults for NoFaults {
    fn check(&self, _op: IoOp, _file: &str) -> io::Result<()> {
        Ok(())
    }
}

/// Fails the `nth` (0-based) occurrence of `op` and, if `sticky`, every one
/// after it. Counting is shared by all files.
#[derive(Debug)]
#[cfg(any(test, feature = "test-hooks"))]
pub struct FailNth {
    op: IoOp,
    nth: u64,
    sticky: bool,
    seen: std::sync::atomic::AtomicU64,
}

#[cfg(any(test, feature = "test-hooks"))]
impl FailNth {
    pub fn new(op: IoOp, nth: u64, sticky: bool) -> Self {
        FailNth {
            op,
            nth,
            sticky,
            seen: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many times `op` was attempted so far.
    pub fn seen(&self) -> u64 {
        self.seen.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(any(test, feature = "test-hooks"))]
impl IoFaults for FailNth {
    fn check(&self, op: IoOp, file: &str) -> io::Result<()> {
        if op != self.op {
            return Ok(());
        }
        let count = self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if count == self.nth || (self.sticky && count > self.nth) {
            return Err(io::Error::other(format!(
                "injected {op:?} failure on {file}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_nth_fails_exactly_the_chosen_step() {
        let faults = FailNth::new(IoOp::SyncFile, 1, false);
        assert!(faults.check(IoOp::SyncFile, "a").is_ok());
        assert!(faults.check(IoOp::Write, "a").is_ok());
        let err = faults.check(IoOp::SyncFile, "a").unwrap_err();
        assert!(err.to_string().contains("injected SyncFile failure on a"));
        assert!(faults.check(IoOp::SyncFile, "a").is_ok());
        assert_eq!(faults.seen(), 3);
    }

    #[test]
    fn sticky_failures_keep_failing() {
        let faults = FailNth::new(IoOp::Write, 0, true);
        assert!(faults.check(IoOp::Write, "a").is_err());
        assert!(faults.check(IoOp::Write, "a").is_err());
        assert!(NoFaults.check(IoOp::Write, "a").is_ok());
    }
}
