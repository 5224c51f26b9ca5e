//! The deterministic state machine: [`Command`]s applied to [`KvState`].
//!
//! `apply(log_index, command)` depends only on the state and the command:
//! versions come from a counter stored in the log, conditions are evaluated
//! against the state as of the previous command, and no clock or randomness
//! is read. The same command sequence on the same starting state gives the
//! same results and byte-identical segment files — what a replicated log
//! needs from its state machine.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::command::{Command, Condition, Limits, Op};
use crate::config::{Config, SyncMode};
use crate::data_dir::Access;
use crate::error::{Error, InputError, Result};
use crate::fault::IoFaults;
use crate::metrics::{Counter, Metrics, MetricsHook};
use crate::storage::{Staged, Storage, Versioned, WriterGuard};

/// The result of applying one command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The value was stored.
    Set {
        /// The version of the new value.
        version: u64,
    },
    /// `version` is the tombstone's; `None` when the key was absent and nothing was written.
    Deleted {
        /// The tombstone's version, if one was written.
        version: Option<u64>,
    },
    /// `applied_ops` counts the records written (deletes of absent keys write none).
    Batch {
        /// Records written.
        applied_ops: u32,
        /// The version of the batch's last record, if any was written.
        last_version: Option<u64>,
    },
    /// Nothing was written: condition `index` did not hold for `key`.
    ConditionFailed {
        /// Which condition (its position in the batch).
        index: usize,
        /// Its key.
        key: Vec<u8>,
    },
}

/// The deterministic state machine: applies [`crate::Command`]s at log indexes. Owned by a [`crate::KvEngine`] (see [`crate::KvEngine::state`]).
pub struct KvState {
    storage: Storage,
    limits: Limits,
    sync_on_commit: bool,
}

/// Versions of keys written earlier in the same group (not yet published).
type Overlay<'c> = HashMap<&'c [u8], Option<u64>, foldhash::fast::RandomState>;

impl KvState {
    pub(crate) fn open(
        config: Config,
        access: Access,
        faults: Arc<dyn IoFaults>,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let limits = Limits::from_config(&config);
        let sync_on_commit = config.sync == SyncMode::Always;
        let storage = Storage::open(config, access, faults, metrics)?;
        Ok(KvState {
            storage,
            limits,
            sync_on_commit,
        })
    }

    pub(crate) fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The input limits of its configuration.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The highest log index applied (persisted with the records it wrote).
    pub fn last_applied(&self) -> u64 {
        self.storage.lock_writer().last_log_index()
    }

    /// The value of `key` and its version.
    pub fn get(&self, key: &[u8]) -> Result<Option<Versioned>> {
        self.storage.get(key)
    }

    /// Applies one command; with `sync = always` it is durable on return.
    pub fn apply(&self, log_index: u64, command: &Command) -> Result<Outcome> {
        self.apply_group(&[(log_index, command)])
            .pop()
            .expect("one result per command")
    }

    /// Applies commands in order with one write and at most one fsync, then
    /// publishes them together. One result per command, in order.
    pub(crate) fn apply_group(&self, commands: &[(u64, &Command)]) -> Vec<Result<Outcome>> {
        let results = self.apply_group_locked(commands);
        // The writer lock is released: metadata of segments the group sealed.
        self.storage.after_commit();
        results
    }

    fn apply_group_locked(&self, commands: &[(u64, &Command)]) -> Vec<Result<Outcome>> {
        let mut writer = self.storage.lock_writer();
        if let Err(err) = writer.check_writable() {
            if let Error::ReadOnly { path } = err {
                let refused = || Err(Error::ReadOnly { path: path.clone() });
                return commands.iter().map(|_| refused()).collect();
            }
            let reason = poison_reason(err);
            return commands
                .iter()
                .map(|_| {
                    Err(Error::Poisoned {
                        reason: reason.clone(),
                    })
                })
                .collect();
        }
        let mut overlay = Overlay::default();
        let mut staged = Vec::new();
        let mut results = Vec::with_capacity(commands.len());
        for &(log_index, command) in commands {
            let result = self.apply_one(&mut writer, log_index, command, &mut overlay, &mut staged);
            let io_failed = result.is_err() && writer.check_writable().is_err();
            results.push(result);
            if io_failed {
                break;
            }
        }
        // A failed write or fsync poisons the writer; nothing of the group is
        // published or acknowledged then.
        let _ = writer.write_staged(self.sync_on_commit);
        match writer.check_writable() {
            Ok(()) => writer.publish(&staged),
            Err(poisoned) => {
                let reason = poison_reason(poisoned);
                results.resize_with(commands.len(), || {
                    Err(Error::Poisoned {
                        reason: reason.clone(),
                    })
                });
                for result in results.iter_mut().filter(|r| r.is_ok()) {
                    *result = Err(Error::Poisoned {
                        reason: reason.clone(),
                    });
                }
            }
        }
        for outcome in results.iter().flatten() {
            self.count(outcome);
        }
        results
    }

    fn apply_one<'c>(
        &self,
        writer: &mut WriterGuard<'_>,
        log_index: u64,
        command: &'c Command,
        overlay: &mut Overlay<'c>,
        staged: &mut Vec<Staged<'c>>,
    ) -> Result<Outcome> {
        let last_applied = writer.last_log_index();
        if log_index <= last_applied {
            return Err(InputError::StaleLogIndex {
                given: log_index,
                last_applied,
            }
            .into());
        }
        command.validate(&self.limits)?;
        writer.note_applied(log_index);
        // Lookups may reach segment metadata (and fail on damage there), so
        // the versions a command depends on are resolved before it is decided.
        let version_now = |overlay: &Overlay<'c>, key: &[u8]| -> Result<Option<u64>> {
            match overlay.get(key) {
                Some(version) => Ok(*version),
                None => self.storage.version_of(key),
            }
        };
        let ops: Vec<(&'c [u8], Option<&'c [u8]>)> = match command {
            Command::Set { key, value } => vec![(key, Some(value))],
            Command::Delete { key } if version_now(overlay, key)?.is_none() => {
                return Ok(Outcome::Deleted { version: None });
            }
            Command::Delete { key } => vec![(key, None)],
            Command::Batch { conditions, ops } => {
                let mut known: HashMap<&[u8], Option<u64>> = HashMap::new();
                let keys = conditions.iter().map(Condition::key);
                let deleted = ops.iter().filter(|op| op.value().is_none()).map(Op::key);
                for key in keys.chain(deleted) {
                    if !known.contains_key(key) {
                        known.insert(key, version_now(overlay, key)?);
                    }
                }
                let version = |key: &[u8]| known.get(key).copied().flatten();
                if let Some((index, condition)) = first_failed(conditions, version) {
                    return Ok(Outcome::ConditionFailed {
                        index,
                        key: condition.key().to_vec(),
                    });
                }
                effective_ops(ops, |key| version(key).is_some())
            }
        };
        if ops.is_empty() {
            return Ok(Outcome::Batch {
                applied_ops: 0,
                last_version: None,
            });
        }
        let first = staged.len();
        writer.stage_command(log_index, &ops, staged)?;
        for item in &staged[first..] {
            overlay.insert(
                item.key,
                (!item.entry.tombstone).then_some(item.entry.version),
            );
        }
        let last_version = staged
            .last()
            .map(|s| s.entry.version)
            .expect("staged at least one record");
        Ok(match command {
            Command::Set { .. } => Outcome::Set {
                version: last_version,
            },
            Command::Delete { .. } => Outcome::Deleted {
                version: Some(last_version),
            },
            Command::Batch { .. } => Outcome::Batch {
                applied_ops: ops.len() as u32,
                last_version: Some(last_version),
            },
        })
    }

    fn count(&self, outcome: &Outcome) {
        let counter = match outcome {
            Outcome::Set { .. } => Counter::Puts,
            Outcome::Deleted { .. } => Counter::Deletes,
            Outcome::Batch { .. } => Counter::Batches,
            Outcome::ConditionFailed { .. } => Counter::ConditionFailures,
        };
        self.storage.metrics().add(counter, 1);
    }

    /// Every live key with its value and version, sorted by key.
    #[cfg(any(test, feature = "test-hooks"))]
    pub(crate) fn dump(&self) -> Result<Vec<(Vec<u8>, Versioned)>> {
        let mut out = Vec::new();
        for (key, _) in self.storage.sorted_entries()? {
            if let Some(value) = self.storage.get(&key)? {
                out.push((key, value));
            }
        }
        Ok(out)
    }
}

/// The reason inside a poisoned-writer error, so it is not wrapped twice.
fn poison_reason(err: Error) -> String {
    match err {
        Error::Poisoned { reason } => reason,
        other => other.to_string(),
    }
}

fn first_failed(
    conditions: &[Condition],
    version_of: impl Fn(&[u8]) -> Option<u64>,
) -> Option<(usize, &Condition)> {
    conditions
        .iter()
        .enumerate()
        .find(|(_, condition)| !condition.holds(version_of(condition.key())))
}

/// The records a batch writes: deletes of keys absent at that point of the
/// batch write nothing.
fn effective_ops(ops: &[Op], exists_before: impl Fn(&[u8]) -> bool) -> Vec<(&[u8], Option<&[u8]>)> {
    let every_op = ops.iter().map(|op| (op.key(), op.value()));
    if ops.iter().all(|op| op.value().is_some()) {
        // Only deletes depend on what exists: a batch of sets needs no lookup.
        return every_op.collect();
    }
    // Whether a key exists after the ops so far of this batch.
    let mut present: HashMap<&[u8], bool, foldhash::fast::RandomState> = HashMap::default();
    let mut out = Vec::with_capacity(ops.len());
    for (key, value) in every_op {
        if value.is_none() {
            let exists = present
                .get(key)
                .copied()
                .unwrap_or_else(|| exists_before(key));
            if !exists {
                continue;
            }
        }
        present.insert(key, value.is_some());
        out.push((key, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::NoFaults;

    fn open(dir: &std::path::Path) -> KvState {
        let config = Config {
            segment_size_bytes: 4096,
            sync: SyncMode::Os,
            ..Config::new(dir)
        };
        KvState::open(
            config,
            crate::data_dir::Access::ReadWrite,
            Arc::new(NoFaults),
            Arc::new(Metrics::new(None)),
        )
        .unwrap()
    }

    fn set(key: &str, value: &str) -> Command {
        Command::Set {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn versions_count_up_and_deletes_of_absent_keys_write_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let state = open(tmp.path());
        assert_eq!(
            state.apply(1, &set("a", "1")).unwrap(),
            Outcome::Set { version: 1 }
        );
        assert_eq!(
            state.apply(2, &set("a", "2")).unwrap(),
            Outcome::Set { version: 2 }
        );
        assert_eq!(
            state
                .apply(3, &Command::Delete { key: "b".into() })
                .unwrap(),
            Outcome::Deleted { version: None }
        );
        assert_eq!(
            state
                .apply(4, &Command::Delete { key: "a".into() })
                .unwrap(),
            Outcome::Deleted { version: Some(3) }
        );
        assert_eq!(state.get(b"a").unwrap(), None);
        assert_eq!(state.last_applied(), 4);
    }

    #[test]
    fn stale_log_indexes_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let state = open(tmp.path());
        state.apply(5, &set("a", "1")).unwrap();
        let err = state.apply(5, &set("a", "2")).unwrap_err();
        assert!(matches!(
            err,
            Error::Input(InputError::StaleLogIndex {
                given: 5,
                last_applied: 5
            })
        ));
        assert_eq!(state.get(b"a").unwrap().unwrap().value, b"1");
    }

    #[test]
    fn a_failed_condition_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let state = open(tmp.path());
        state.apply(1, &set("taken", "x")).unwrap();
        let batch = Command::Batch {
            conditions: vec![
                Condition::Absent { key: "free".into() },
                Condition::Absent {
                    key: "taken".into(),
                },
            ],
            ops: vec![Op::Set {
                key: "free".into(),
                value: "y".into(),
            }],
        };
        assert_eq!(
            state.apply(2, &batch).unwrap(),
            Outcome::ConditionFailed {
                index: 1,
                key: b"taken".to_vec()
            }
        );
        assert_eq!(state.get(b"free").unwrap(), None);
        let guarded = Command::Batch {
            conditions: vec![Condition::VersionIs {
                key: "taken".into(),
                version: 1,
            }],
            ops: vec![
                Op::Delete {
                    key: "taken".into(),
                },
                Op::Set {
                    key: "free".into(),
                    value: "y".into(),
                },
            ],
        };
        assert_eq!(
            state.apply(3, &guarded).unwrap(),
            Outcome::Batch {
                applied_ops: 2,
                last_version: Some(3)
            }
        );
    }

    #[test]
    fn conditions_see_earlier_commands_of_the_same_group() {
        let tmp = tempfile::tempdir().unwrap();
        let state = open(tmp.path());
        let claim = Command::Batch {
            conditions: vec![Condition::Absent { key: "name".into() }],
            ops: vec![Op::Set {
                key: "name".into(),
                value: "me".into(),
            }],
        };
        let results = state.apply_group(&[(1, &claim), (2, &claim)]);
        assert_eq!(
            results[0].as_ref().unwrap(),
            &Outcome::Batch {
                applied_ops: 1,
                last_version: Some(1)
            }
        );
        assert_eq!(
            results[1].as_ref().unwrap(),
            &Outcome::ConditionFailed {
                index: 0,
                key: b"name".to_vec()
            }
        );
    }

    #[test]
    fn within_a_batch_later_ops_win_and_deletes_see_earlier_sets() {
        let tmp = tempfile::tempdir().unwrap();
        let state = open(tmp.path());
        let batch = Command::Batch {
            conditions: vec![],
            ops: vec![
                Op::Set {
                    key: "k".into(),
                    value: "1".into(),
                },
                Op::Delete { key: "k".into() },
                Op::Delete {
                    key: "never".into(),
                },
                Op::Set {
                    key: "j".into(),
                    value: "2".into(),
                },
                Op::Set {
                    key: "j".into(),
                    value: "3".into(),
                },
            ],
        };
        assert_eq!(
            state.apply(1, &batch).unwrap(),
            Outcome::Batch {
                applied_ops: 4,
                last_version: Some(4)
            }
        );
        assert_eq!(state.get(b"k").unwrap(), None);
        assert_eq!(
            state.get(b"j").unwrap().unwrap(),
            Versioned {
                value: b"3".to_vec(),
                version: 4
            }
        );
    }

    #[test]
    fn invalid_commands_change_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let state = open(tmp.path());
        let err = state.apply(1, &set("", "x")).unwrap_err();
        assert!(matches!(err, Error::Input(InputError::EmptyKey)));
        assert_eq!(state.storage().stats().keys, 0);
        assert_eq!(state.last_applied(), 0);
    }

    /// A deterministic pseudo-random command stream (no dependence on the host).
    fn command_stream(seed: u64, count: usize) -> Vec<Command> {
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        (0..count)
            .map(|_| {
                let key = format!("k{}", next() % 50).into_bytes();
                match next() % 4 {
                    0 => Command::Delete { key },
                    1 => Command::Batch {
                        conditions: vec![Condition::VersionIs {
                            key: key.clone(),
                            version: next() % 40,
                        }],
                        ops: vec![Op::Set {
                            key,
                            value: vec![1; (next() % 300) as usize],
                        }],
                    },
                    _ => Command::Set {
                        key,
                        value: vec![(next() % 256) as u8; (next() % 500) as usize],
                    },
                }
            })
            .collect()
    }

    #[test]
    fn the_same_commands_give_identical_results_state_and_bytes() {
        let commands = command_stream(0x9E37_79B9_7F4A_7C15, 600);
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (left, right) = (open(a.path()), open(b.path()));
        for (i, command) in commands.iter().enumerate() {
            let log_index = i as u64 + 1;
            assert_eq!(
                left.apply(log_index, command).unwrap(),
                right.apply(log_index, command).unwrap()
            );
        }
        assert_eq!(left.dump().unwrap(), right.dump().unwrap());
        drop((left, right));
        let files = |dir: &std::path::Path| {
            let mut names: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            names
                .into_iter()
                .filter(|n| n != "LOCK")
                .map(|n| (n.clone(), std::fs::read(dir.join(n)).unwrap()))
                .collect::<Vec<_>>()
        };
        let (left_files, right_files) = (files(a.path()), files(b.path()));
        assert!(left_files.len() > 3, "segments rolled");
        assert_eq!(left_files, right_files);
    }

    #[test]
    fn state_survives_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let commands = command_stream(7, 300);
        let mut last_writing_index = 0;
        let before = {
            let state = open(tmp.path());
            for (i, command) in commands.iter().enumerate() {
                let outcome = state.apply(i as u64 + 1, command).unwrap();
                let wrote = !matches!(
                    outcome,
                    Outcome::Deleted { version: None }
                        | Outcome::ConditionFailed { .. }
                        | Outcome::Batch { applied_ops: 0, .. }
                );
                if wrote {
                    last_writing_index = i as u64 + 1;
                }
            }
            assert_eq!(state.last_applied(), 300);
            state.dump().unwrap()
        };
        let state = open(tmp.path());
        assert_eq!(state.dump().unwrap(), before);
        // The log index persists with the records a command wrote.
        assert_eq!(state.last_applied(), last_writing_index);
    }
}
