//! Neutral replication traits, so a consensus layer (Raft or similar) can
//! slide in without touching storage.
//!
//! A replicated engine would implement [`CommandSubmitter`] by proposing the
//! command to its log and returning once it is committed and applied; the
//! single-node [`KvEngine`] applies locally. [`SnapshotProvider`] transfers
//! state to a replica that fell behind.

use std::io::{Read, Write};

use crate::command::Command;
use crate::engine::{Applied, KvEngine};
use crate::error::{Error, Result};

/// Accepts commands for the replicated state machine.
pub trait CommandSubmitter: Send + Sync {
    /// Returns once `command` is applied (and, per the sync mode, durable).
    fn submit(&self, command: Command) -> Result<Applied>;
}

/// Produces and installs full-state images at a log index.
pub trait SnapshotProvider {
    /// Writes an image of the state to `out`; returns its log index.
    fn serialize_snapshot(&self, out: &mut dyn Write) -> Result<u64>;
    /// Replaces the state with the image read from `input`.
    fn restore_snapshot(&self, input: &mut dyn Read) -> Result<u64>;
}

impl CommandSubmitter for KvEngine {
    fn submit(&self, command: Command) -> Result<Applied> {
        self.apply(command)
    }
}

/// Serializing streams a consistent image (see [`crate::snapshot`]).
/// Restoring replaces nothing in a running engine: it returns
/// [`Error::Unsupported`]; restore into an empty data directory with
/// [`crate::snapshot::restore_snapshot`] and open the engine there. (A
/// replica installing state while running arrives with the consensus layer.)
impl SnapshotProvider for KvEngine {
    fn serialize_snapshot(&self, out: &mut dyn Write) -> Result<u64> {
        Ok(crate::snapshot::write_snapshot(self.state().storage(), out)?.last_log_index)
    }

    fn restore_snapshot(&self, _input: &mut dyn Read) -> Result<u64> {
        Err(Error::Unsupported(
            "restoring into a running engine; restore into an empty data directory with snapshot::restore_snapshot",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, SyncMode};
    use crate::state::Outcome;

    #[test]
    fn the_single_node_engine_applies_submitted_commands_locally() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = KvEngine::open(Config {
            sync: SyncMode::Os,
            ..Config::new(tmp.path())
        })
        .unwrap();
        let submitter: &dyn CommandSubmitter = &engine;
        let applied = submitter
            .submit(Command::Set {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            })
            .unwrap();
        assert_eq!(
            applied,
            Applied {
                log_index: 1,
                outcome: Outcome::Set { version: 1 }
            }
        );
        assert_eq!(engine.get(b"k").unwrap().unwrap(), b"v");
    }

    #[test]
    fn snapshots_serialize_at_the_last_log_index_and_refuse_live_restore() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = KvEngine::open(Config::new(tmp.path())).unwrap();
        engine.put(b"k", b"v").unwrap();
        let mut image = Vec::new();
        assert_eq!(engine.serialize_snapshot(&mut image).unwrap(), 1);
        assert!(image.starts_with(b"HTKVSNAP"));
        let err = engine.restore_snapshot(&mut image.as_slice()).unwrap_err();
        assert!(matches!(err, Error::Unsupported(_)));
        assert_eq!(engine.get(b"k").unwrap().unwrap(), b"v");
    }
}
