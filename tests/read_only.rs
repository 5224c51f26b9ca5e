//! Reads that never write: a read-only open creates nothing, changes no
//! byte (not even to cut a damaged tail, remove a leftover or rebuild
//! metadata), shares the directory with other readers, and refuses writes.

use std::collections::BTreeMap;
use std::path::Path;

use hightower_engine::testing::segment_file_name;
use hightower_engine::{Config, Error, KvEngine, SyncMode, verify_segments};

fn config(dir: &Path) -> Config {
    Config {
        sync: SyncMode::Always,
        segment_size_bytes: 4096,
        ..Config::new(dir)
    }
}

/// Every file of the directory with its bytes.
fn snapshot_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            (name, std::fs::read(entry.path()).unwrap())
        })
        .collect()
}

/// A store with sealed segments, one of them without its metadata, a
/// leftover of an interrupted operation, and a torn tail.
fn awkward_store(dir: &Path) {
    let engine = KvEngine::open(config(dir)).unwrap();
    for i in 0..60u32 {
        engine.put(format!("key-{i:02}"), [i as u8; 150]).unwrap();
    }
    engine.close().unwrap();
    std::fs::remove_file(dir.join("seg-0000000001.meta")).unwrap();
    std::fs::write(dir.join("seg-0000000002.meta.tmp"), b"half a metadata file").unwrap();
    let active = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_prefix("seg-")?
                .strip_suffix(".log")?
                .parse::<u32>()
                .ok()
        })
        .max()
        .unwrap();
    let path = dir.join(segment_file_name(active));
    let mut bytes = std::fs::read(&path).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    bytes[end..end + 13].fill(0x5a);
    std::fs::write(&path, &bytes).unwrap();
}

#[test]
fn a_read_only_open_reads_everything_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    awkward_store(tmp.path());
    let before = snapshot_of(tmp.path());

    let reader = KvEngine::open_read_only(config(tmp.path())).unwrap();
    for i in 0..60u32 {
        assert_eq!(
            reader.get(format!("key-{i:02}")).unwrap().unwrap(),
            [i as u8; 150]
        );
    }
    let stats = reader.stats();
    assert_eq!(stats.storage.keys, 60);
    assert_eq!(stats.recovery.metadata_rebuilt, 1);
    assert_eq!(stats.recovery.metadata_unsaved, 1);
    let tail = stats
        .recovery
        .tail_cut
        .expect("the damaged tail is reported");
    assert_eq!((tail.bytes, tail.kept_as), (13, None));
    let mut image = Vec::new();
    reader.write_snapshot(&mut image).unwrap();
    assert!(!reader.inspect_segments().unwrap().is_empty());
    assert!(!verify_segments(&config(tmp.path())).unwrap().is_empty());
    drop(reader);

    assert_eq!(snapshot_of(tmp.path()), before, "not a byte changed");
}

#[test]
fn writes_through_a_read_only_open_are_refused_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let engine = KvEngine::open(config(tmp.path())).unwrap();
    engine.put("k", "v").unwrap();
    engine.close().unwrap();
    let before = snapshot_of(tmp.path());

    let reader = KvEngine::open_read_only(config(tmp.path())).unwrap();
    for refused in [
        reader.put("k", "w").map(drop),
        reader.delete("k").map(drop),
        reader.compact().map(drop),
    ] {
        match refused {
            Err(Error::ReadOnly { path }) => assert_eq!(path, tmp.path()),
            other => panic!("expected a read-only refusal, got {other:?}"),
        }
    }
    reader.flush().unwrap();
    reader.close().unwrap();
    assert_eq!(snapshot_of(tmp.path()), before);
}

#[test]
fn readers_share_the_directory_and_keep_the_writer_out() {
    let tmp = tempfile::tempdir().unwrap();
    KvEngine::open(config(tmp.path()))
        .unwrap()
        .put("k", "v")
        .unwrap();
    let first = KvEngine::open_read_only(config(tmp.path())).unwrap();
    let second = KvEngine::open_read_only(config(tmp.path())).unwrap();
    assert_eq!(second.get("k").unwrap().unwrap(), b"v");
    match KvEngine::open(config(tmp.path())) {
        Err(Error::Locked { holder, .. }) => assert!(holder.contains("read"), "{holder}"),
        Err(other) => panic!("expected locked, got {other}"),
        Ok(_) => panic!("a writer opened beside readers"),
    }
    drop((first, second));
    let writer = KvEngine::open(config(tmp.path())).unwrap();
    assert!(matches!(
        KvEngine::open_read_only(config(tmp.path())),
        Err(Error::Locked { .. })
    ));
    drop(writer);
}

#[test]
fn a_missing_data_directory_is_an_error_naming_it_and_nothing_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("typo");
    let err = match KvEngine::open_read_only(config(&missing)) {
        Err(err) => err,
        Ok(_) => panic!("a missing store opened"),
    };
    assert!(err.to_string().contains("typo"), "{err}");
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(!missing.exists());
}

#[test]
fn salvage_cannot_run_read_only() {
    let tmp = tempfile::tempdir().unwrap();
    KvEngine::open(config(tmp.path())).unwrap();
    let err = KvEngine::open_read_only(Config {
        recovery: hightower_engine::RecoveryMode::Salvage,
        ..config(tmp.path())
    })
    .err()
    .unwrap();
    assert!(err.to_string().contains("salvage"), "{err}");
}

/// A full disk (every create and write fails, as with ENOSPC) does not stop
/// a writable open either: metadata that must be rebuilt serves from
/// memory, reads and stats work, and the metadata is written once there is
/// room again.
#[test]
fn a_writable_open_needs_no_room_to_rebuild_metadata() {
    use hightower_engine::EngineOptions;
    use hightower_engine::testing::{FailNth, IoOp};
    use std::sync::Arc;

    let tmp = tempfile::tempdir().unwrap();
    let engine = KvEngine::open(config(tmp.path())).unwrap();
    for i in 0..60u32 {
        engine.put(format!("key-{i:02}"), [i as u8; 150]).unwrap();
    }
    engine.close().unwrap();
    std::fs::remove_file(tmp.path().join("seg-0000000001.meta")).unwrap();

    let full_disk = EngineOptions {
        io_faults: Some(Arc::new(FailNth::new(IoOp::Create, 0, true))),
        background_threads: false,
        ..EngineOptions::default()
    };
    let engine = KvEngine::open_with(config(tmp.path()), full_disk).unwrap();
    assert_eq!(engine.get("key-00").unwrap().unwrap(), [0; 150]);
    let stats = engine.stats();
    assert_eq!(stats.storage.keys, 60);
    assert_eq!(
        (
            stats.recovery.metadata_rebuilt,
            stats.recovery.metadata_unsaved
        ),
        (1, 1)
    );
    drop(engine);
    assert!(!tmp.path().join("seg-0000000001.meta").exists());

    let engine = KvEngine::open(config(tmp.path())).unwrap();
    engine.close().unwrap();
    assert!(tmp.path().join("seg-0000000001.meta").exists());
    let engine = KvEngine::open(config(tmp.path())).unwrap();
    assert_eq!(engine.stats().recovery.metadata_rebuilt, 0);
}
