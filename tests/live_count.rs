//! The live key count across reopens.
//!
//! Open takes the store's key count from the newest sealed segment's
//! metadata (`live_keys_after`: the live keys just after its last record,
//! bytes 72..80 of the metadata header, `host/src/segment_meta/layout.rs`)
//! and adds what the replay of the active segment changes. When that count
//! is unknown (`u64::MAX`, as in rebuilt metadata), open counts the live keys
//! by merging every sealed segment's metadata instead: O(keys) rather than
//! O(active segment), 0.25 s instead of ~25 ms at 1M keys on the project VM
//! (`benches/footprint.rs`). No timing here: the tests check the counts.

use std::path::Path;

use hightower_engine::{Command, Config, EngineOptions, KvEngine, Op, SyncMode};

const UNKNOWN: u64 = u64::MAX;

fn config(dir: &Path) -> Config {
    Config {
        sync: SyncMode::Os,
        segment_size_bytes: 64 << 10,
        ..Config::new(dir)
    }
}

/// No background threads: metadata is written on a roll, compaction runs
/// when the test asks.
fn open(dir: &Path) -> KvEngine {
    let options = EngineOptions {
        background_threads: false,
        ..EngineOptions::default()
    };
    KvEngine::open_with(config(dir), options).unwrap()
}

fn set(engine: &KvEngine, key: String, value: &str) {
    engine
        .apply(Command::Batch {
            conditions: vec![],
            ops: vec![Op::Set {
                key: key.into_bytes(),
                value: value.as_bytes().to_vec(),
            }],
        })
        .unwrap();
}

/// `(segment rank, live_keys_after)` of every metadata file in `dir`.
fn meta_live_counts(dir: &Path) -> Vec<(u32, u64)> {
    let mut counts = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "meta") {
            let bytes = std::fs::read(&path).unwrap();
            let rank = u32::from_le_bytes(bytes[20..24].try_into().unwrap());
            let live = u64::from_le_bytes(bytes[72..80].try_into().unwrap());
            counts.push((rank, live));
        }
    }
    counts.sort();
    counts
}

/// The count open will use: a known one among the newest rank's files.
fn newest_count(dir: &Path) -> u64 {
    let counts = meta_live_counts(dir);
    let newest_rank = counts.iter().map(|c| c.0).max().expect("sealed segments");
    counts
        .iter()
        .filter(|c| c.0 == newest_rank)
        .map(|c| c.1)
        .find(|&live| live != UNKNOWN)
        .unwrap_or(UNKNOWN)
}

#[test]
fn segments_sealed_by_the_writer_record_the_live_key_count() {
    let tmp = tempfile::tempdir().unwrap();
    let engine = open(tmp.path());
    for i in 0..3_000 {
        set(&engine, format!("key-{i:06}"), &"x".repeat(60));
    }
    engine.close().unwrap();
    let counts = meta_live_counts(tmp.path());
    assert!(counts.len() > 2, "{counts:?}");
    assert!(counts.iter().all(|c| c.1 != UNKNOWN), "{counts:?}");
}

/// `compact()` replaces every sealed segment; its outputs must still tell
/// open how many keys there are, or every later open (until the next
/// segment is sealed) merges all metadata to count them.
#[test]
fn compacting_every_sealed_segment_keeps_the_live_key_count() {
    let tmp = tempfile::tempdir().unwrap();
    let engine = open(tmp.path());
    for round in 0..4 {
        for i in 0..3_000 {
            set(
                &engine,
                format!("key-{i:06}"),
                &format!("{round}{}", "x".repeat(60)),
            );
        }
    }
    // Some keys' newest records are in the active segment, some deleted.
    for i in 0..50 {
        set(&engine, format!("key-{i:06}"), "newest");
        engine
            .delete(format!("key-{:06}", 100 + i).as_bytes())
            .unwrap();
    }
    let report = engine.compact().unwrap();
    assert!(!report.outputs.is_empty());
    assert_eq!(engine.stats().storage.keys, 2_950);
    engine.close().unwrap();
    assert_ne!(
        newest_count(tmp.path()),
        UNKNOWN,
        "compaction outputs lost the live key count: {:?}",
        meta_live_counts(tmp.path())
    );
    let engine = open(tmp.path());
    assert_eq!(engine.stats().storage.keys, 2_950);
    assert_eq!(engine.dump().unwrap().len(), 2_950);
    // And once more after writes to the active segment and another reopen.
    set(&engine, "key-999999".into(), "new key");
    engine.delete(b"key-000001").unwrap();
    engine.close().unwrap();
    let engine = open(tmp.path());
    assert_eq!(engine.stats().storage.keys, 2_950);
}

/// A background compaction of an older run, while a newer sealed segment
/// exists, must keep the run's records that a write in the *active* segment
/// replaced: the newer sealed segment's recorded count includes those keys,
/// and replaying the active segment on open counts each against its
/// previous record. (Dropping them counted 300 keys twice here.)
#[test]
fn a_partial_compaction_then_a_reopen_counts_each_key_once() {
    let tmp = tempfile::tempdir().unwrap();
    let engine = open(tmp.path());
    // Records of 136 bytes, 481 to a 64 KiB segment: segment 1 holds the
    // 400 "a" keys, segments 2 and 3 "b" keys, the active one has room.
    let long = "x".repeat(100);
    for i in 0..400 {
        set(&engine, format!("a-{i:06}"), &long);
    }
    for i in 0..1_150 {
        set(&engine, format!("b-{i:06}"), &long);
    }
    let segments = engine.stats().storage.segments;
    // Overwrite 300 "a" keys with short values, in the active segment:
    // segment 1 is now 62% dead.
    for i in 0..300 {
        set(&engine, format!("a-{i:06}"), "short");
    }
    assert_eq!(engine.stats().storage.segments, segments, "no roll");
    // One round audits nothing (the writer's segments are audited) and
    // compacts the run the policy picks: segment 1 alone.
    engine.maintain_now();
    assert_eq!(engine.stats().metrics.compactions, 1);
    assert_eq!(engine.stats().storage.keys, 1_550);
    engine.close().unwrap();
    let engine = open(tmp.path());
    assert_eq!(engine.dump().unwrap().len(), 1_550);
    assert_eq!(engine.stats().storage.keys, 1_550, "each key counted once");
}
