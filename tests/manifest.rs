//! The manifest: a store knows which segment files it consists of, so a
//! lost segment is loud (open fails naming it; salvage opens without it when
//! asked) and a leftover of an interrupted operation is told apart and
//! removed.

use std::path::Path;

use hightower_engine::testing::segment_file_name;
use hightower_engine::{
    Config, EngineOptions, Error, KvEngine, RecoveryMode, SegmentVerdict, SyncMode, verify_segments,
};

fn config(dir: &Path) -> Config {
    Config {
        sync: SyncMode::Os,
        segment_size_bytes: 4096,
        ..Config::new(dir)
    }
}

fn open(config: Config) -> Result<KvEngine, Error> {
    let options = EngineOptions {
        background_threads: false,
        ..EngineOptions::default()
    };
    KvEngine::open_with(config, options)
}

/// 100 keys of 200 bytes in 4 KiB segments: at least five segments.
fn five_segments(dir: &Path) {
    let engine = open(config(dir)).unwrap();
    for i in 0..100u32 {
        engine.put(format!("key-{i:03}"), [i as u8; 200]).unwrap();
    }
    assert!(engine.stats().storage.segments >= 5);
    engine.close().unwrap();
}

#[test]
fn a_missing_sealed_segment_is_corruption_naming_it_and_nothing_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    five_segments(tmp.path());
    let lost = tmp.path().join(segment_file_name(2));
    std::fs::remove_file(&lost).unwrap();
    let before: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();

    match open(config(tmp.path())) {
        Err(Error::Corruption(c)) => {
            assert_eq!(c.file, "seg-0000000002.log");
            assert!(c.reason.starts_with("missing"), "{}", c.reason);
            assert!(c.reason.contains("salvage"), "{}", c.reason);
        }
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("a store missing a segment opened"),
    }
    let after: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before.len(), after.len(), "a refused open changes nothing");
    assert!(tmp.path().join("seg-0000000002.meta").exists());

    let verdicts = verify_segments(&config(tmp.path())).unwrap();
    let missing = verdicts
        .iter()
        .find(|v| v.file == "seg-0000000002.log")
        .expect("verify names the missing segment");
    assert!(missing.verdict.is_corrupt(), "{missing:?}");
}

#[test]
fn salvage_opens_without_a_missing_segment_and_counts_only_what_is_left() {
    let tmp = tempfile::tempdir().unwrap();
    five_segments(tmp.path());
    std::fs::remove_file(tmp.path().join(segment_file_name(2))).unwrap();

    let engine = open(Config {
        recovery: RecoveryMode::Salvage,
        ..config(tmp.path())
    })
    .unwrap();
    assert_eq!(
        engine.stats().recovery.missing_segments,
        vec!["seg-0000000002.log".to_string()]
    );
    let readable = engine.dump().unwrap().len() as u64;
    assert!(readable < 100 && readable > 50, "{readable} keys left");
    assert_eq!(engine.stats().storage.keys, readable);
    engine.compact().unwrap();
    assert_eq!(engine.stats().storage.keys, readable);
    assert_eq!(engine.dump().unwrap().len() as u64, readable);
    engine.close().unwrap();

    // The loss was recorded: a strict open now succeeds and agrees.
    let engine = open(config(tmp.path())).unwrap();
    assert_eq!(engine.stats().storage.keys, readable);
    assert!(engine.stats().recovery.missing_segments.is_empty());
}

#[test]
fn an_unlisted_segment_is_a_leftover_and_removed_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    five_segments(tmp.path());
    let engine = open(config(tmp.path())).unwrap();
    let expected = engine.dump().unwrap();
    let next = engine.stats().storage.segments as u32 + 10;
    engine.close().unwrap();
    // What a compaction killed before its swap leaves: a whole segment
    // (here a copy of segment 1) that the manifest does not list.
    let leftover = tmp.path().join(segment_file_name(next));
    std::fs::copy(tmp.path().join(segment_file_name(1)), &leftover).unwrap();

    let verdicts = verify_segments(&config(tmp.path())).unwrap();
    let unlisted = verdicts
        .iter()
        .find(|v| v.file == segment_file_name(next))
        .unwrap();
    assert_eq!(unlisted.verdict, SegmentVerdict::Unlisted);
    assert!(!verdicts.iter().any(|v| v.verdict.is_corrupt()));

    let engine = open(config(tmp.path())).unwrap();
    assert!(!leftover.exists(), "the leftover was removed");
    assert_eq!(engine.dump().unwrap(), expected);
}

#[test]
fn a_store_written_before_manifests_gets_one_and_is_then_guarded() {
    let tmp = tempfile::tempdir().unwrap();
    five_segments(tmp.path());
    std::fs::remove_file(tmp.path().join("MANIFEST")).unwrap();
    let engine = open(config(tmp.path())).unwrap();
    assert_eq!(engine.dump().unwrap().len(), 100);
    engine.close().unwrap();
    assert!(tmp.path().join("MANIFEST").exists());

    std::fs::remove_file(tmp.path().join(segment_file_name(3))).unwrap();
    assert!(matches!(
        open(config(tmp.path())),
        Err(Error::Corruption(c)) if c.file == "seg-0000000003.log"
    ));
}
