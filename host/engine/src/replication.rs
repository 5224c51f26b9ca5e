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
use crate::error::Result;

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

/// Serializing streams a consistent image ([`KvEngine::write_snapshot`]);
/// restoring installs one into the running engine
/// ([`KvEngine::install_snapshot`]): checked completely first, switched to
/// at once, crash-safe at every step.
impl SnapshotProvider for KvEngine {
    fn serialize_snapshot(&self, out: &mut dyn Write) -> Result<u64> {
        Ok(self.write_snapshot(out)?.last_log_index)
    }

    fn restore_snapshot(&self, input: &mut dyn Read) -> Result<u64> {
        Ok(self.install_snapshot(input)?.last_log_index)
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
    fn snapshots_serialize_at_the_last_log_index_and_install_into_a_running_engine() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let source = KvEngine::open(Config::new(a.path())).unwrap();
        source.put(b"k", b"v").unwrap();
        let mut image = Vec::new();
        assert_eq!(source.serialize_snapshot(&mut image).unwrap(), 1);
        assert!(image.starts_with(b"HTKVSNAP"));
        let replica = KvEngine::open(Config::new(b.path())).unwrap();
        replica.put(b"old", b"state").unwrap();
        replica.put(b"more", b"state").unwrap();
        assert_eq!(replica.restore_snapshot(&mut image.as_slice()).unwrap(), 1);
        assert_eq!(replica.get(b"k").unwrap().unwrap(), b"v");
        assert_eq!(replica.get(b"old").unwrap(), None);
        assert_eq!(replica.state().last_applied(), 1);
        let mut damaged = image.clone();
        let at = damaged.len() - 20;
        damaged[at] ^= 1;
        assert!(replica.restore_snapshot(&mut damaged.as_slice()).is_err());
        assert_eq!(replica.get(b"k").unwrap().unwrap(), b"v");
    }
}
