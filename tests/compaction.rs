//! Bounded memory and compaction, checked against a `BTreeMap` model.
//!
//! - 200,000 keys with a hot index of 1,000 entries: random gets, puts,
//!   deletes and batches agree with the model, compactions run in between,
//!   a reopen keeps everything, and the hot index stays within its budget
//!   (plus the active segment's keys, which always stay).
//! - Compaction keeps every live key and version, drops overwritten records
//!   and tombstones, never resurrects a delete, and gives back the space.
//! - An injected failure at every I/O step of a compaction (once, and from
//!   then on) leaves a store that reopens with every acknowledged write and
//!   no resurrected delete.

#[path = "support/rng.rs"]
mod rng;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hightower_engine::testing::{FailNth, IoFaults, IoOp};
use hightower_engine::{Command, Config, EngineOptions, KvEngine, Op, SyncMode};
use rng::Rng;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:08}").into_bytes()
}

fn value(i: u64, round: u64) -> Vec<u8> {
    format!("value-{i}-{round}-{}", "x".repeat((i % 40) as usize)).into_bytes()
}

fn deterministic(config: Config) -> KvEngine {
    let options = EngineOptions {
        background_threads: false,
        ..EngineOptions::default()
    };
    KvEngine::open_with(config, options).unwrap()
}

/// Every key of the model reads back, and the merged listing is exactly the model.
fn assert_matches(engine: &KvEngine, model: &Model, context: &str) {
    for (k, v) in model {
        assert_eq!(engine.get(k).unwrap().as_ref(), Some(v), "{context}: {k:?}");
    }
    let listed = engine.dump().unwrap();
    assert_eq!(listed.len(), model.len(), "{context}: listing length");
    for ((k, found), (mk, mv)) in listed.iter().zip(model) {
        assert_eq!((k, &found.value), (mk, mv), "{context}: listing");
    }
    assert_eq!(
        engine.stats().storage.keys,
        model.len() as u64,
        "{context}: key count"
    );
}

#[test]
fn a_small_hot_index_over_200_000_keys_matches_a_model() {
    const KEYS: u64 = 200_000;
    const BUDGET: u64 = 1_000;
    let tmp = tempfile::tempdir().unwrap();
    let config = Config {
        sync: SyncMode::Os,
        segment_size_bytes: 256 << 10,
        hot_index_max_entries: BUDGET,
        ..Config::new(tmp.path())
    };
    let mut engine = deterministic(config.clone());
    let mut model = Model::new();
    let mut rng = Rng::new(7);
    for chunk in 0..KEYS / 500 {
        let ops = (chunk * 500..(chunk + 1) * 500)
            .map(|i| Op::Set {
                key: key(i),
                value: value(i, 0),
            })
            .collect();
        engine
            .apply(Command::Batch {
                conditions: vec![],
                ops,
            })
            .unwrap();
    }
    for i in 0..KEYS {
        model.insert(key(i), value(i, 0));
    }
    let budget_check = |engine: &KvEngine, context: &str| {
        let stats = engine.stats().storage;
        // The active segment's keys always stay hot: at most one entry per
        // record of a 256 KiB segment (records are at least 50 bytes).
        let pinned_at_most = (256 << 10) / 50;
        assert!(
            stats.hot_entries <= BUDGET + pinned_at_most,
            "{context}: {} hot entries",
            stats.hot_entries
        );
        assert!(
            stats.hot_evictions > 0,
            "{context}: the budget was never reached"
        );
    };
    budget_check(&engine, "after the load");
    for step in 0..30_000u64 {
        let i = rng.below(KEYS);
        match rng.below(10) {
            0..=4 => {
                let found = engine.get(key(i)).unwrap();
                assert_eq!(found.as_ref(), model.get(&key(i)), "step {step}: get {i}");
            }
            5 | 6 => {
                let v = value(i, step);
                engine.put(key(i), &v).unwrap();
                model.insert(key(i), v);
            }
            7 | 8 => {
                let deleted = engine.delete(key(i)).unwrap();
                assert_eq!(
                    deleted.is_some(),
                    model.remove(&key(i)).is_some(),
                    "step {step}: delete {i}"
                );
            }
            _ => {
                let j = rng.below(KEYS);
                let ops = vec![
                    Op::Set {
                        key: key(i),
                        value: value(i, step),
                    },
                    Op::Delete { key: key(j) },
                ];
                engine
                    .apply(Command::Batch {
                        conditions: vec![],
                        ops,
                    })
                    .unwrap();
                model.insert(key(i), value(i, step));
                if i != j {
                    model.remove(&key(j));
                }
            }
        }
        if step % 10_000 == 9_999 {
            engine.compact().unwrap();
            budget_check(&engine, &format!("step {step}"));
        }
    }
    assert_matches(&engine, &model, "before reopen");
    engine.close().unwrap();
    engine = deterministic(config);
    assert_matches(&engine, &model, "after reopen");
    budget_check(&engine, "after reopen");
}

#[test]
fn compaction_keeps_live_data_and_gives_back_the_space() {
    const KEYS: u64 = 3_000;
    let tmp = tempfile::tempdir().unwrap();
    let config = Config {
        sync: SyncMode::Os,
        segment_size_bytes: 64 << 10,
        ..Config::new(tmp.path())
    };
    let engine = deterministic(config.clone());
    let mut model = Model::new();
    for round in 0..3 {
        for i in 0..KEYS {
            engine.put(key(i), value(i, round)).unwrap();
            model.insert(key(i), value(i, round));
        }
    }
    for i in (0..KEYS).step_by(3) {
        engine.delete(key(i)).unwrap();
        model.remove(&key(i));
    }
    let before = engine.stats().storage;
    let version_before = before.committed_version;
    let report = engine.compact().unwrap();
    assert!(report.tombstones_dropped > 0, "{report:?}");
    let after = engine.stats().storage;
    assert_matches(&engine, &model, "after compaction");
    assert!(
        after.disk_bytes < before.disk_bytes / 2,
        "{before:?} -> {after:?}"
    );
    // Versions continue: the next write is newer than anything before.
    let next = engine.put(b"after", b"x").unwrap();
    assert!(next > version_before);
    engine.close().unwrap();
    // The outputs carry the live key count, so the next open need not count.
    assert!(
        newest_count_is_known(tmp.path()),
        "the newest metadata lost the key count"
    );
    let engine = deterministic(config);
    assert_matches(&engine, &model_with(&model, b"after", b"x"), "after reopen");
    assert_eq!(engine.stats().storage.committed_version, next);
    // Deleted keys stay deleted after their tombstones are gone.
    for i in (0..KEYS).step_by(3) {
        assert_eq!(engine.get(key(i)).unwrap(), None, "key {i} came back");
    }
}

/// Whether the metadata of the highest-rank sealed segment records the
/// store's live key count (bytes 20..24: rank; 72..80: count; see
/// docs/format.md).
fn newest_count_is_known(dir: &Path) -> bool {
    let mut newest: Option<(u32, u64)> = None;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "meta") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let rank = u32::from_le_bytes(bytes[20..24].try_into().unwrap());
        let count = u64::from_le_bytes(bytes[72..80].try_into().unwrap());
        if newest.is_none_or(|(r, c)| rank > r || (rank == r && c == u64::MAX)) {
            newest = Some((rank, count));
        }
    }
    newest.is_some_and(|(_, count)| count != u64::MAX)
}

fn model_with(model: &Model, k: &[u8], v: &[u8]) -> Model {
    let mut model = model.clone();
    model.insert(k.to_vec(), v.to_vec());
    model
}

#[test]
fn a_write_racing_with_compaction_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let config = Config {
        sync: SyncMode::Os,
        segment_size_bytes: 16 << 10,
        ..Config::new(tmp.path())
    };
    let engine = Arc::new(deterministic(config.clone()));
    for round in 0..4 {
        for i in 0..1_000 {
            engine.put(key(i), value(i, round)).unwrap();
        }
    }
    let writer = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            for round in 10..40 {
                for i in 0..1_000 {
                    engine.put(key(i), value(i, round)).unwrap();
                }
            }
        })
    };
    for _ in 0..5 {
        engine.compact().unwrap();
    }
    writer.join().unwrap();
    for i in 0..1_000 {
        assert_eq!(engine.get(key(i)).unwrap(), Some(value(i, 39)), "key {i}");
    }
}

/// Fails step `nth` of `op` only while armed (during a compaction).
struct Armed {
    armed: AtomicBool,
    inner: FailNth,
}

impl IoFaults for Armed {
    fn check(&self, op: IoOp, file: &str) -> std::io::Result<()> {
        if self.armed.load(Ordering::SeqCst) {
            self.inner.check(op, file)
        } else {
            Ok(())
        }
    }
}

/// A store with overwrites and deletes across many sealed segments.
/// Written in batches of 20 (one fsync each: the faults under test are the
/// compaction's, and the fill runs once per injected step).
fn fill_for_faults(engine: &KvEngine) -> Model {
    let mut model = Model::new();
    for round in 0..3 {
        for first in (0..400).step_by(20) {
            let ops = (first..first + 20)
                .map(|i| Op::Set {
                    key: key(i),
                    value: value(i, round),
                })
                .collect();
            engine
                .apply(Command::Batch {
                    conditions: vec![],
                    ops,
                })
                .unwrap();
            for i in first..first + 20 {
                model.insert(key(i), value(i, round));
            }
        }
    }
    for i in (0..400).step_by(4) {
        engine.delete(key(i)).unwrap();
        model.remove(&key(i));
    }
    model
}

fn fault_config(dir: &Path) -> Config {
    Config {
        sync: SyncMode::Always,
        segment_size_bytes: 8 << 10,
        ..Config::new(dir)
    }
}

/// How many steps of each kind one compaction of the fixture takes.
fn compaction_steps(op: IoOp) -> u64 {
    let tmp = tempfile::tempdir().unwrap();
    let counter = Arc::new(Armed {
        armed: AtomicBool::new(false),
        inner: FailNth::new(op, u64::MAX, false),
    });
    let options = EngineOptions {
        background_threads: false,
        io_faults: Some(counter.clone()),
        ..EngineOptions::default()
    };
    let engine = KvEngine::open_with(fault_config(tmp.path()), options).unwrap();
    fill_for_faults(&engine);
    counter.armed.store(true, Ordering::SeqCst);
    engine.compact().unwrap();
    counter.inner.seen()
}

#[test]
fn a_failure_at_any_compaction_step_loses_nothing() {
    for op in [
        IoOp::Create,
        IoOp::Write,
        IoOp::SyncFile,
        IoOp::Rename,
        IoOp::SyncDir,
        IoOp::Remove,
    ] {
        let steps = compaction_steps(op);
        assert!(steps > 0, "{op:?}: a compaction performs this step");
        for nth in 0..steps {
            for sticky in [false, true] {
                let context = format!("{op:?} step {nth}{}", if sticky { " (sticky)" } else { "" });
                let tmp = tempfile::tempdir().unwrap();
                let faults = Arc::new(Armed {
                    armed: AtomicBool::new(false),
                    inner: FailNth::new(op, nth, sticky),
                });
                let options = EngineOptions {
                    background_threads: false,
                    io_faults: Some(faults.clone()),
                    ..EngineOptions::default()
                };
                let engine = KvEngine::open_with(fault_config(tmp.path()), options).unwrap();
                let model = fill_for_faults(&engine);
                faults.armed.store(true, Ordering::SeqCst);
                let result = engine.compact();
                faults.armed.store(false, Ordering::SeqCst);
                assert!(
                    result.is_err(),
                    "{context}: the injected failure was reported"
                );
                // Reads still see everything in this process...
                for (k, v) in &model {
                    assert_eq!(engine.get(k).unwrap().as_ref(), Some(v), "{context}: {k:?}");
                }
                drop(engine);
                // ...and so does a fresh open, with no delete undone.
                let config = Config {
                    compaction_dead_ratio: 0.01,
                    ..fault_config(tmp.path())
                };
                let engine = deterministic(config.clone());
                assert_matches(&engine, &model, &context);
                // Background rounds while the active segment replaces
                // records of whatever the failure left (twins of one record
                // included), then a full compaction.
                let mut model = model;
                for i in (0..400).step_by(7) {
                    engine.put(key(i), b"newer").unwrap();
                    model.insert(key(i), b"newer".to_vec());
                }
                for _ in 0..4 {
                    engine.maintain_now();
                }
                assert_matches(&engine, &model, &format!("{context}, background rounds"));
                engine.compact().unwrap();
                assert_matches(&engine, &model, &format!("{context}, compacted again"));
                drop(engine);
                for segment in hightower_engine::verify_segments(&config).unwrap() {
                    assert!(!segment.verdict.is_corrupt(), "{context}: {segment:?}");
                }
            }
        }
    }
}

/// Not a timing: the space a store takes after every key was written three
/// times and compacted, against its live records, printed for the README and
/// checked against a generous bound (the exact figures are in the bench).
#[test]
fn space_after_three_overwrites_and_compaction() {
    const KEYS: u64 = 20_000;
    let tmp = tempfile::tempdir().unwrap();
    let config = Config {
        sync: SyncMode::Os,
        segment_size_bytes: 1 << 20,
        ..Config::new(tmp.path())
    };
    let engine = deterministic(config);
    let value = [7u8; 100];
    for _round in 0..3 {
        for i in 0..KEYS {
            engine.put(format!("{i:016}").as_bytes(), value).unwrap();
        }
    }
    engine.compact().unwrap();
    let stats = engine.stats().storage;
    let live_records = KEYS * (28 + 16 + 100);
    let (mut segment_bytes, mut meta_bytes) = (0u64, 0u64);
    for entry in std::fs::read_dir(tmp.path()).unwrap() {
        let path = entry.unwrap().path();
        let len = std::fs::metadata(&path).unwrap().len();
        match path.extension().and_then(|e| e.to_str()) {
            Some("log") => segment_bytes += len,
            Some("meta") => meta_bytes += len,
            _ => {}
        }
    }
    eprintln!(
        "space: segments {:.3}x, with metadata {:.3}x of live records; disk_bytes {} live_bytes {}",
        segment_bytes as f64 / live_records as f64,
        (segment_bytes + meta_bytes) as f64 / live_records as f64,
        stats.disk_bytes,
        stats.live_bytes
    );
    assert!(
        segment_bytes < live_records * 11 / 10,
        "segments alone within 1.1x"
    );
    assert!(
        segment_bytes + meta_bytes < live_records * 11 / 10,
        "with metadata within 1.1x"
    );
    assert_eq!(
        stats.live_bytes, live_records,
        "every live record counted once"
    );
}
