//! Writes go on while compaction waits for the disk.
//!
//! Before it deletes its inputs, compaction fsyncs the active segment (a
//! record it dropped was superseded by a newer one, which must be durable
//! first). That fsync must not hold the writer lock: with `sync = "os"` the
//! active segment may hold many megabytes of unsynced writes, and every
//! put would wait for them (13 ms at most in `benches/compaction.rs` on the
//! project VM, against 4 ms without a compaction running).
//!
//! Here an I/O hook holds compaction inside that fsync while a put runs.
//! The put must complete meanwhile; the 30-second limit only turns a
//! deadlock into a failure, it is not a performance bound.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use hightower_engine::testing::{IoFaults, IoOp};
use hightower_engine::{Command, Config, EngineOptions, KvEngine, Op, SyncMode};

const LIMIT: Duration = Duration::from_secs(30);

/// Holds a fsync of one file until released, once armed.
#[derive(Default)]
struct Gate {
    armed: AtomicBool,
    file: Mutex<String>,
    /// (entered, released)
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

impl IoFaults for Gate {
    fn check(&self, op: IoOp, file: &str) -> std::io::Result<()> {
        if op != IoOp::SyncFile
            || !self.armed.load(Ordering::SeqCst)
            || *self.file.lock().unwrap() != file
        {
            return Ok(());
        }
        let mut state = self.state.lock().unwrap();
        state.0 = true;
        self.changed.notify_all();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, 4 * LIMIT, |s| !s.1)
            .unwrap();
        assert!(state.1, "the test never released the fsync");
        Ok(())
    }
}

impl Gate {
    fn wait_entered(&self) -> bool {
        let state = self.state.lock().unwrap();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, LIMIT, |s| !s.0)
            .unwrap();
        state.0
    }

    fn release(&self) {
        self.armed.store(false, Ordering::SeqCst);
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}

fn newest_segment_file(dir: &std::path::Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("seg-") && n.ends_with(".log"))
        .collect();
    names.sort();
    names.pop().expect("a segment")
}

#[test]
fn a_put_completes_while_compaction_fsyncs_the_active_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let options = EngineOptions {
        background_threads: false,
        io_faults: Some(gate.clone()),
        ..EngineOptions::default()
    };
    let config = Config {
        sync: SyncMode::Os,
        segment_size_bytes: 64 << 10,
        compaction_dead_ratio: 0.3,
        ..Config::new(tmp.path())
    };
    let engine = Arc::new(KvEngine::open_with(config, options).unwrap());
    // Every key written twice: the sealed segments are half dead.
    for round in 0..2 {
        for first in (0..2_000).step_by(100) {
            let ops = (first..first + 100)
                .map(|i| Op::Set {
                    key: format!("key-{i:06}").into_bytes(),
                    value: format!("{round}-{}", "x".repeat(80)).into_bytes(),
                })
                .collect();
            engine
                .apply(Command::Batch {
                    conditions: vec![],
                    ops,
                })
                .unwrap();
        }
    }
    *gate.file.lock().unwrap() = newest_segment_file(tmp.path());
    gate.armed.store(true, Ordering::SeqCst);

    // A background round (compact() on demand seals the active segment
    // first, which a roll does under the writer lock like any roll).
    let compaction = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            engine.maintain_now();
            engine.stats().metrics.compactions
        })
    };
    assert!(
        gate.wait_entered(),
        "compaction never fsynced the active segment"
    );
    let (done, put_returned) = mpsc::channel();
    {
        let engine = engine.clone();
        std::thread::spawn(move || {
            let result = engine.put(b"written-during-the-fsync", b"v");
            let _ = done.send(result.is_ok());
        });
    }
    let put = put_returned.recv_timeout(LIMIT);
    gate.release();
    let compactions = compaction.join().unwrap();
    assert!(compactions > 0, "the round compacted");
    assert_eq!(
        put,
        Ok(true),
        "a put waited for compaction's fsync of the active segment"
    );
    assert_eq!(
        engine.get(b"written-during-the-fsync").unwrap().as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(engine.stats().storage.keys, 2_001);
}
