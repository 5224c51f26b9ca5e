//! Model-based tests: random operation sequences run against the engine and
//! against a `BTreeMap` model, compared after every step.
//!
//! The key space is small (so overwrites and deletes hit), values range from
//! empty to a few KiB, and segments are 4–16 KiB (so segment rolls, oversized
//! commands and reopens over many segments happen all the time). Every sync
//! mode is covered. What is checked:
//!
//! - every returned version is the one the model predicts: versions count up
//!   by one per written record, a delete of an absent key writes nothing and
//!   returns `None`, a batch writes its effective operations;
//! - a batch whose condition fails returns `ConditionFailed { index, key }`
//!   naming the first failing condition, and changes nothing;
//! - reads (`get`, `get_versioned`, `read()`, `contains`) agree with the model;
//! - `stats()`: key count, committed version and last log index;
//! - after a reopen the whole state (`dump`), the version counter, the log
//!   index and the segment/byte counts are what they were.
//!
//! One proptest per sync mode, one that also changes the sync mode and the
//! segment size on some reopens, and a longer fixed-seed run per sync mode
//! (5,000 actions, a reopen every 500). `PROPTEST_CASES=N` runs N cases per
//! proptest instead of 16.

use std::collections::BTreeMap;

use hightower_engine::{Command, Condition, Config, KvEngine, Op, Outcome, SyncMode, Versioned};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};
use tempfile::TempDir;

/// Number of distinct keys the operations draw from.
const KEYS: u8 = 8;

/// Key `i` of the key space: mostly short, one long, one binary.
fn key(i: u8) -> Vec<u8> {
    match i {
        6 => b"a-rather-long-key/".repeat(7),
        7 => vec![0x00, 0xff, b'k', 0x00, 0x7f],
        _ => format!("k{i}").into_bytes(),
    }
}

/// A value described by its length and a seed, so that a failing case prints
/// (and shrinks) compactly.
#[derive(Clone, Copy, Debug)]
struct ValueSpec {
    len: usize,
    seed: u8,
}

impl ValueSpec {
    fn bytes(self) -> Vec<u8> {
        (0..self.len)
            .map(|i| self.seed.wrapping_add((i as u8).wrapping_mul(31)) ^ (i >> 8) as u8)
            .collect()
    }
}

/// A batch condition, resolved against the model when the batch runs so
/// that `VersionIs` conditions sometimes hold and sometimes fail.
#[derive(Clone, Copy, Debug)]
enum CondSpec {
    Absent(u8),
    /// `VersionIs` the key's current version (fails if the key is absent).
    VersionCurrent(u8),
    /// `VersionIs` the current version plus a non-zero offset (always fails).
    VersionOff(u8, i8),
    /// `VersionIs` an arbitrary small version.
    VersionRaw(u8, u64),
}

#[derive(Clone, Copy, Debug)]
enum BatchOp {
    Set(u8, ValueSpec),
    Delete(u8),
}

#[derive(Clone, Debug)]
enum Action {
    Put(u8, ValueSpec),
    Delete(u8),
    Batch(Vec<CondSpec>, Vec<BatchOp>),
    Get(u8),
    Reopen,
    /// Reopen with another sync mode and segment size, as an operator might.
    ReopenWith(SyncMode, u64),
}

fn key_index() -> impl Strategy<Value = u8> {
    0..KEYS
}

fn value_spec() -> impl Strategy<Value = ValueSpec> {
    let len = prop_oneof![
        2 => Just(0usize),
        4 => 1usize..32,
        3 => 32usize..1024,
        1 => 1024usize..6144,
    ];
    (len, any::<u8>()).prop_map(|(len, seed)| ValueSpec { len, seed })
}

fn cond_spec() -> impl Strategy<Value = CondSpec> {
    prop_oneof![
        3 => key_index().prop_map(CondSpec::Absent),
        4 => key_index().prop_map(CondSpec::VersionCurrent),
        1 => (key_index(), prop_oneof![-2i8..0, 1i8..3])
            .prop_map(|(k, off)| CondSpec::VersionOff(k, off)),
        1 => (key_index(), 0u64..200).prop_map(|(k, v)| CondSpec::VersionRaw(k, v)),
    ]
}

fn batch_op() -> impl Strategy<Value = BatchOp> {
    prop_oneof![
        3 => (key_index(), value_spec()).prop_map(|(k, v)| BatchOp::Set(k, v)),
        2 => key_index().prop_map(BatchOp::Delete),
    ]
}

/// One random action; `reopen_weight` 0 leaves reopens to the caller.
fn action(reopen_weight: u32) -> impl Strategy<Value = Action> {
    prop_oneof![
        5 => (key_index(), value_spec()).prop_map(|(k, v)| Action::Put(k, v)),
        2 => key_index().prop_map(Action::Delete),
        3 => (
            prop::collection::vec(cond_spec(), 0..3),
            prop::collection::vec(batch_op(), 0..6),
        )
            .prop_map(|(c, o)| Action::Batch(c, o)),
        2 => key_index().prop_map(Action::Get),
        reopen_weight => Just(Action::Reopen),
    ]
}

/// Actions that also change the configuration on some reopens.
fn action_or_reconfigure() -> impl Strategy<Value = Action> {
    let sync = prop_oneof![
        Just(SyncMode::Always),
        Just(SyncMode::Interval),
        Just(SyncMode::Os)
    ];
    prop_oneof![
        14 => action(1),
        1 => (sync, 4096u64..=16384).prop_map(|(s, size)| Action::ReopenWith(s, size)),
    ]
}

/// The engine under test and the model it must agree with.
struct Harness {
    // Declared before `dir` so the engine is dropped before the directory is removed.
    engine: Option<KvEngine>,
    dir: TempDir,
    sync: SyncMode,
    segment_size_bytes: u64,
    model: BTreeMap<Vec<u8>, (Vec<u8>, u64)>,
    /// The version the next written record must get.
    next_version: u64,
    /// Log index of the last command applied in this session.
    last_applied: u64,
    /// Log index of the last command that wrote a record (what survives a reopen).
    last_written_index: u64,
    reopens: u64,
    condition_failures: u64,
}

impl Harness {
    fn new(sync: SyncMode, segment_size_bytes: u64) -> Self {
        let dir = tempfile::tempdir().expect("create temp dir");
        let mut harness = Harness {
            engine: None,
            dir,
            sync,
            segment_size_bytes,
            model: BTreeMap::new(),
            next_version: 1,
            last_applied: 0,
            last_written_index: 0,
            reopens: 0,
            condition_failures: 0,
        };
        harness.engine = Some(harness.open());
        harness
    }

    fn config(&self) -> Config {
        Config {
            sync: self.sync,
            sync_interval_ms: 2,
            segment_size_bytes: self.segment_size_bytes,
            ..Config::new(self.dir.path())
        }
    }

    /// Without background threads: segment metadata is written when a
    /// segment is sealed and no compaction starts by itself, so sizes
    /// compare exactly across a reopen.
    fn open(&self) -> KvEngine {
        let options = hightower_engine::EngineOptions {
            background_threads: false,
            ..hightower_engine::EngineOptions::default()
        };
        KvEngine::open_with(self.config(), options).expect("open the store")
    }

    fn engine(&self) -> &KvEngine {
        self.engine.as_ref().expect("engine is open")
    }

    fn expected(&self, key: &[u8]) -> Option<Versioned> {
        self.model.get(key).map(|(value, version)| Versioned {
            value: value.clone(),
            version: *version,
        })
    }

    fn model_version(&self, key: &[u8]) -> Option<u64> {
        self.model.get(key).map(|(_, version)| *version)
    }

    /// Runs one action and checks its result and the state it leaves.
    fn step(&mut self, ctx: &str, action: &Action) {
        match action {
            Action::Put(k, v) => {
                let (key, value) = (key(*k), v.bytes());
                let version = self
                    .engine()
                    .put(&key, &value)
                    .unwrap_or_else(|e| panic!("{ctx}: put failed: {e}"));
                assert_eq!(version, self.next_version, "{ctx}: version of a put");
                self.model.insert(key.clone(), (value, version));
                self.next_version += 1;
                self.last_applied += 1;
                self.last_written_index = self.last_applied;
                self.check_key(ctx, &key);
            }
            Action::Delete(k) => {
                let key = key(*k);
                let deleted = self
                    .engine()
                    .delete(&key)
                    .unwrap_or_else(|e| panic!("{ctx}: delete failed: {e}"));
                self.last_applied += 1;
                let expected = self.model.remove(&key).map(|_| {
                    self.next_version += 1;
                    self.last_written_index = self.last_applied;
                    self.next_version - 1
                });
                assert_eq!(deleted, expected, "{ctx}: version of a delete");
                self.check_key(ctx, &key);
            }
            Action::Batch(conds, ops) => self.batch(ctx, conds, ops),
            Action::Get(k) => self.check_key(ctx, &key(*k)),
            Action::Reopen => self.reopen(ctx),
            Action::ReopenWith(sync, segment_size_bytes) => {
                self.sync = *sync;
                self.segment_size_bytes = *segment_size_bytes;
                self.reopen(ctx);
            }
        }
        self.check_stats(ctx);
    }

    fn resolve(&self, cond: CondSpec) -> Condition {
        let current = |k: u8| self.model_version(&key(k));
        match cond {
            CondSpec::Absent(k) => Condition::Absent { key: key(k) },
            CondSpec::VersionCurrent(k) => Condition::VersionIs {
                key: key(k),
                // An absent key gets the version the batch itself would write first.
                version: current(k).unwrap_or(self.next_version),
            },
            CondSpec::VersionOff(k, off) => Condition::VersionIs {
                key: key(k),
                version: current(k)
                    .unwrap_or(self.next_version)
                    .saturating_add_signed(i64::from(off)),
            },
            CondSpec::VersionRaw(k, version) => Condition::VersionIs {
                key: key(k),
                version,
            },
        }
    }

    fn batch(&mut self, ctx: &str, conds: &[CondSpec], ops: &[BatchOp]) {
        let conditions: Vec<Condition> = conds.iter().map(|&c| self.resolve(c)).collect();
        let ops: Vec<Op> = ops
            .iter()
            .map(|op| match *op {
                BatchOp::Set(k, v) => Op::Set {
                    key: key(k),
                    value: v.bytes(),
                },
                BatchOp::Delete(k) => Op::Delete { key: key(k) },
            })
            .collect();
        let command = Command::Batch {
            conditions: conditions.clone(),
            ops: ops.clone(),
        };
        let applied = self
            .engine()
            .apply(command)
            .unwrap_or_else(|e| panic!("{ctx}: batch failed: {e}"));
        self.last_applied += 1;
        assert_eq!(applied.log_index, self.last_applied, "{ctx}: log index");

        // The model's own reading of the conditions, independent of `Condition::holds`.
        let failed = conditions.iter().enumerate().find(|(_, c)| {
            let now = self.model_version(c.key());
            match c {
                Condition::Absent { .. } => now.is_some(),
                Condition::VersionIs { version, .. } => now != Some(*version),
            }
        });
        let expected = match failed {
            Some((index, c)) => {
                self.condition_failures += 1;
                Outcome::ConditionFailed {
                    index,
                    key: c.key().to_vec(),
                }
            }
            None => {
                let mut applied_ops = 0u32;
                for op in &ops {
                    match op {
                        Op::Set { key, value } => {
                            self.model
                                .insert(key.clone(), (value.clone(), self.next_version));
                        }
                        Op::Delete { key } => {
                            if self.model.remove(key).is_none() {
                                continue;
                            }
                        }
                    }
                    applied_ops += 1;
                    self.next_version += 1;
                }
                if applied_ops > 0 {
                    self.last_written_index = self.last_applied;
                }
                Outcome::Batch {
                    applied_ops,
                    last_version: (applied_ops > 0).then(|| self.next_version - 1),
                }
            }
        };
        assert_eq!(applied.outcome, expected, "{ctx}: batch outcome");
        for key in conditions
            .iter()
            .map(Condition::key)
            .chain(ops.iter().map(Op::key))
        {
            self.check_key(ctx, key);
        }
    }

    /// Every way of reading `key` agrees with the model.
    fn check_key(&self, ctx: &str, key: &[u8]) {
        let engine = self.engine();
        let expected = self.expected(key);
        let found = engine
            .get_versioned(key)
            .unwrap_or_else(|e| panic!("{ctx}: get_versioned({key:?}) failed: {e}"));
        assert_eq!(found, expected, "{ctx}: get_versioned({key:?})");
        let value = engine
            .get(key)
            .unwrap_or_else(|e| panic!("{ctx}: get({key:?}) failed: {e}"));
        assert_eq!(
            value,
            expected.as_ref().map(|v| v.value.clone()),
            "{ctx}: get({key:?})"
        );
        assert_eq!(
            engine.committed_version(),
            self.next_version - 1,
            "{ctx}: committed version"
        );
        let read = engine.read();
        assert_eq!(
            read.get(key).unwrap_or_else(|e| panic!("{ctx}: read: {e}")),
            expected,
            "{ctx}: read().get({key:?})"
        );
        assert_eq!(
            read.contains(key).unwrap(),
            expected.is_some(),
            "{ctx}: read().contains({key:?})"
        );
    }

    fn check_stats(&self, ctx: &str) {
        let stats = self.engine().stats();
        assert_eq!(
            stats.storage.keys,
            self.model.len() as u64,
            "{ctx}: stats.storage.keys"
        );
        assert_eq!(
            stats.storage.committed_version,
            self.next_version - 1,
            "{ctx}: stats.storage.committed_version"
        );
        assert_eq!(
            stats.storage.last_log_index, self.last_applied,
            "{ctx}: stats.storage.last_log_index"
        );
        assert_eq!(stats.sync, self.sync, "{ctx}: stats.sync");
        assert_eq!(stats.storage.poisoned, None, "{ctx}: poisoned");
    }

    /// The whole store, key by key and via `dump`, equals the model.
    fn check_everything(&self, ctx: &str) {
        let dumped = self
            .engine()
            .dump()
            .unwrap_or_else(|e| panic!("{ctx}: dump failed: {e}"));
        let expected: Vec<(Vec<u8>, Versioned)> = self
            .model
            .keys()
            .map(|k| (k.clone(), self.expected(k).expect("model key")))
            .collect();
        assert_eq!(dumped, expected, "{ctx}: dump after reopen");
        for k in 0..KEYS {
            self.check_key(ctx, &key(k));
        }
        self.check_stats(ctx);
    }

    fn reopen(&mut self, ctx: &str) {
        let before = self.engine().stats().storage;
        drop(self.engine.take());
        let engine = self.open();
        // After a restart, dead bytes are known exactly once each sealed
        // segment is audited; the audit must agree with the accounting the
        // writes did before the restart.
        engine.audit_all().unwrap();
        let after = engine.stats().storage;
        assert_eq!(
            (after.segments, after.disk_bytes, after.live_bytes),
            (before.segments, before.disk_bytes, before.live_bytes),
            "{ctx}: (segments, disk_bytes, live_bytes) survive a reopen"
        );
        let report = engine.stats().recovery;
        assert_eq!(report.segments, after.segments, "{ctx}: segments scanned");
        assert_eq!(
            report.torn_tail_bytes_dropped, 0,
            "{ctx}: a clean shutdown leaves no torn tail"
        );
        assert!(report.salvaged.is_empty(), "{ctx}: nothing salvaged");
        self.engine = Some(engine);
        self.reopens += 1;
        // Only commands that wrote records leave their log index on disk.
        self.last_applied = self.last_written_index;
        self.check_everything(ctx);
    }

    /// Reopens a last time, checks everything and closes cleanly.
    fn finish(mut self, ctx: &str) {
        self.reopen(ctx);
        self.engine
            .take()
            .expect("engine is open")
            .close()
            .unwrap_or_else(|e| panic!("{ctx}: close failed: {e}"));
    }
}

fn run_case(sync: SyncMode, segment_size_bytes: u64, actions: &[Action]) {
    let mut harness = Harness::new(sync, segment_size_bytes);
    for (i, action) in actions.iter().enumerate() {
        let ctx = format!(
            "{:?}/segment {}: action #{i} {action:?}",
            harness.sync, harness.segment_size_bytes
        );
        harness.step(&ctx, action);
    }
    let ctx = format!(
        "{:?}/segment {}: final reopen",
        harness.sync, harness.segment_size_bytes
    );
    harness.finish(&ctx);
}

/// Cases per sync mode; `PROPTEST_CASES` overrides it for a deeper run.
fn proptest_config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(16);
    ProptestConfig {
        cases,
        // The failing case is printed (shrunk); this file owns no regression directory.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn model_sync_always(
        segment_size_bytes in 4096u64..=16384,
        actions in prop::collection::vec(action(1), 1..150),
    ) {
        run_case(SyncMode::Always, segment_size_bytes, &actions);
    }

    #[test]
    fn model_sync_interval(
        segment_size_bytes in 4096u64..=16384,
        actions in prop::collection::vec(action(1), 1..150),
    ) {
        run_case(SyncMode::Interval, segment_size_bytes, &actions);
    }

    #[test]
    fn model_sync_os(
        segment_size_bytes in 4096u64..=16384,
        actions in prop::collection::vec(action(1), 1..150),
    ) {
        run_case(SyncMode::Os, segment_size_bytes, &actions);
    }

    #[test]
    fn model_config_changes_across_reopens(
        segment_size_bytes in 4096u64..=16384,
        actions in prop::collection::vec(action_or_reconfigure(), 1..150),
    ) {
        run_case(SyncMode::Always, segment_size_bytes, &actions);
    }
}

/// A longer, fixed-seed sequence: 5,000 actions with a reopen every 500.
fn long_sequence(sync: SyncMode, seed: u8) {
    const ACTIONS: usize = 5_000;
    const REOPEN_EVERY: usize = 500;
    let segment_size_bytes = 8192;
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
    );
    let strategy = action(0);
    let mut harness = Harness::new(sync, segment_size_bytes);
    let mut seen_condition_failures = 0;
    for i in 0..ACTIONS {
        let action = strategy
            .new_tree(&mut runner)
            .expect("generate an action")
            .current();
        let ctx = format!("{sync:?} seed {seed}: action #{i} {action:?}");
        harness.step(&ctx, &action);
        if (i + 1) % REOPEN_EVERY == 0 {
            harness.step(
                &format!("{sync:?} seed {seed}: reopen after #{i}"),
                &Action::Reopen,
            );
            seen_condition_failures = harness.condition_failures;
        }
    }
    let stats = harness.engine().stats();
    assert!(
        stats.storage.segments > 20,
        "segments rolled: {}",
        stats.storage.segments
    );
    assert!(harness.reopens >= 10);
    assert!(
        seen_condition_failures > 50 && harness.next_version > 2_000,
        "the sequence exercised failing conditions ({seen_condition_failures}) and many writes ({})",
        harness.next_version
    );
    harness.finish(&format!("{sync:?} seed {seed}: final reopen"));
}

#[test]
fn long_fixed_seed_sequence_sync_os() {
    long_sequence(SyncMode::Os, 0x5e);
}

#[test]
fn long_fixed_seed_sequence_sync_interval() {
    long_sequence(SyncMode::Interval, 0x1f);
}

#[test]
fn long_fixed_seed_sequence_sync_always() {
    long_sequence(SyncMode::Always, 0xa7);
}

/// Bug: `Counter::GetHits` is never incremented anywhere, so
/// `stats().metrics.get_hits` (shown by `hightower stats`) is always 0.
#[test]
fn stats_count_get_hits() {
    let dir = tempfile::tempdir().unwrap();
    let engine = KvEngine::open(Config {
        sync: SyncMode::Os,
        ..Config::new(dir.path())
    })
    .unwrap();
    engine.put(b"present", b"v").unwrap();
    assert!(engine.get(b"present").unwrap().is_some());
    assert!(engine.get(b"absent").unwrap().is_none());
    assert!(engine.read().get(b"present").unwrap().is_some());
    let metrics = engine.stats().metrics;
    assert_eq!(metrics.gets, 3);
    assert_eq!(metrics.get_hits, 2, "two of the three gets found a value");
}
