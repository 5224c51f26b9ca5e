//! Segment metadata is never built for the active segment.
//!
//! The maintenance thread writes metadata for sealed segments; once a
//! segment has metadata its keys may be evicted from a bounded hot index
//! and are found through it. A roll adds the new active segment to the
//! segment table and then marks it active: a metadata build that read the
//! active id before a roll and the table after it took the new active
//! segment for a sealed one and described its empty start. Its keys then
//! became unreadable once evicted (acknowledged puts read as absent, a
//! delete found nothing, an `Absent` condition held), and its next roll
//! panicked ("only a segment without metadata is remapped"). Seen as exit
//! 86 of the child in tests/crash.rs (about one run in three on the loaded
//! project VM). Here a thread builds pending metadata in a loop while
//! small segments roll; no timing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hightower_engine::{Config, EngineOptions, KvEngine, SyncMode};

#[test]
fn metadata_is_never_built_for_the_active_segment() {
    let tmp = tempfile::tempdir().unwrap();
    // No maintenance thread: this test's thread plays it, without pause.
    let options = EngineOptions {
        background_threads: false,
        ..EngineOptions::default()
    };
    let config = Config {
        sync: SyncMode::Os,
        segment_size_bytes: 4 << 10,
        hot_index_max_entries: 64,
        ..Config::new(tmp.path())
    };
    let engine = Arc::new(KvEngine::open_with(config, options).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let builder = {
        let (engine, stop) = (engine.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                engine.build_pending_metas().unwrap();
            }
        })
    };
    let mut missing = None;
    for i in 0..20_000u64 {
        engine
            .put(format!("key-{i:08}").as_bytes(), [b'v'; 100])
            .unwrap();
        // An earlier key, most likely evicted from the hot index by now.
        let earlier = format!("key-{:08}", i / 2);
        if engine.get(earlier.as_bytes()).unwrap().is_none() {
            missing = Some(format!("{earlier} read as absent after {i} puts"));
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    builder.join().unwrap();
    assert_eq!(missing, None);
    assert_eq!(engine.stats().storage.keys, 20_000);
}
