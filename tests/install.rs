//! Installing a snapshot into a running engine (what a replica that fell
//! behind does): readers see the old state or the new one, never a mix;
//! afterwards the replica is byte-identical to the source; a damaged image
//! changes nothing; and a crash or an I/O failure at any step leaves the
//! old state or the new one on open.
//!
//! The crash test re-runs this binary as a child (`install_child`) that
//! installs with a fault hook exiting the process at one I/O step, for
//! every step in turn.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hightower_engine::testing::{FailNth, IoFaults, IoOp};
use hightower_engine::{
    Command, Config, EngineOptions, KvEngine, Op, SnapshotProvider, SyncMode, Versioned,
    verify_segments,
};

const CHILD_DIR_ENV: &str = "HIGHTOWER_INSTALL_CHILD";
const CHILD_IMAGE_ENV: &str = "HIGHTOWER_INSTALL_IMAGE";
const CHILD_CRASH_AT_ENV: &str = "HIGHTOWER_INSTALL_CRASH_AT";
/// The child's exit status at its crash point.
const CRASHED: i32 = 86;

type State = Vec<(Vec<u8>, Versioned)>;

fn config(dir: &Path) -> Config {
    Config {
        sync: SyncMode::Always,
        segment_size_bytes: 4096,
        ..Config::new(dir)
    }
}

fn quiet(faults: Option<Arc<dyn IoFaults>>) -> EngineOptions {
    EngineOptions {
        io_faults: faults,
        background_threads: false,
        ..EngineOptions::default()
    }
}

/// The source: several segments, overwrites, deletes and a batch, so the
/// image's counters run past its newest record.
fn source(dir: &Path) -> KvEngine {
    let engine = KvEngine::open(config(dir)).unwrap();
    for i in 0..120u32 {
        engine
            .put(format!("new/{i:03}"), vec![(i % 251) as u8; 90])
            .unwrap();
    }
    for i in (0..120u32).step_by(7) {
        engine.put(format!("new/{i:03}"), b"rewritten").unwrap();
    }
    engine
        .apply(Command::Batch {
            conditions: vec![],
            ops: vec![
                Op::Set {
                    key: b"new/batch-a".to_vec(),
                    value: b"a".to_vec(),
                },
                Op::Set {
                    key: b"new/batch-b".to_vec(),
                    value: b"b".to_vec(),
                },
            ],
        })
        .unwrap();
    for i in (0..120u32).step_by(11) {
        engine.delete(format!("new/{i:03}")).unwrap();
    }
    engine
}

/// The replica's own, different state: more segments than the image has.
fn replica_state(dir: &Path) {
    let engine = KvEngine::open(config(dir)).unwrap();
    for i in 0..200u32 {
        engine
            .put(format!("old/{i:03}"), vec![(i % 13) as u8; 70])
            .unwrap();
    }
    engine.close().unwrap();
}

fn image_of(engine: &KvEngine) -> Vec<u8> {
    let mut image = Vec::new();
    engine.serialize_snapshot(&mut image).unwrap();
    image
}

fn state(engine: &KvEngine) -> State {
    engine.dump().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("seg-"))
        .collect();
    names.sort();
    names
}

#[test]
fn an_image_installs_while_readers_run_and_the_replica_equals_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let source = source(&tmp.path().join("source"));
    let image = image_of(&source);
    let expected = state(&source);

    let replica_dir = tmp.path().join("replica");
    replica_state(&replica_dir);
    let replica = KvEngine::open(config(&replica_dir)).unwrap();
    let old = state(&replica);
    let old_files = segment_files(&replica_dir);
    let old_value = |key: &[u8]| old.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let new_value = |key: &[u8]| {
        expected
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };

    let done = Arc::new(AtomicBool::new(false));
    let passes = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (replica, done, passes) = (replica.clone(), done.clone(), passes.clone());
            let keys: Vec<Vec<u8>> = (0..200u32)
                .map(|i| format!("old/{i:03}").into_bytes())
                .chain((0..120u32).map(|i| format!("new/{i:03}").into_bytes()))
                .collect();
            let (old, expected) = (old.clone(), expected.clone());
            std::thread::spawn(move || {
                let lookup = |state: &State, key: &[u8]| {
                    state.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
                };
                let mut reads = 0u64;
                while !done.load(Ordering::Relaxed) {
                    for key in keys.iter().skip(r).step_by(2) {
                        let got = replica.get_versioned(key).unwrap();
                        assert!(
                            got == lookup(&old, key) || got == lookup(&expected, key),
                            "{key:?}: {got:?} is neither the old state's nor the image's"
                        );
                        reads += 1;
                    }
                    passes.fetch_add(1, Ordering::SeqCst);
                }
                reads
            })
        })
        .collect();
    // Both readers are reading before the install starts.
    while passes.load(Ordering::SeqCst) < 2 {
        std::thread::yield_now();
    }
    let info = replica.install_snapshot(&mut image.as_slice()).unwrap();
    done.store(true, Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().unwrap() > 0);
    }
    assert_eq!(info.keys, expected.len() as u64);
    assert_eq!(state(&replica), expected);
    for i in 0..200u32 {
        let key = format!("old/{i:03}").into_bytes();
        assert_eq!(replica.get_versioned(&key).unwrap(), None);
        assert!(old_value(&key).is_some());
    }
    assert_eq!(
        replica.get_versioned("new/001").unwrap(),
        new_value(b"new/001")
    );
    assert_eq!(
        replica.state().last_applied(),
        source.state().last_applied()
    );
    // Byte-identical images afterwards; the same next version.
    assert_eq!(image_of(&replica), image);
    assert_eq!(
        replica.put("next", "x").unwrap(),
        source.put("next", "x").unwrap()
    );
    // The old state's space is freed: none of its segment files is left.
    let files = segment_files(&replica_dir);
    assert!(
        old_files.iter().all(|old| !files.contains(old)),
        "{old_files:?} vs {files:?}"
    );
    // And it all survives a reopen.
    let expected_after = state(&replica);
    drop(replica);
    let replica = KvEngine::open(config(&replica_dir)).unwrap();
    assert_eq!(state(&replica), expected_after);
    drop(replica);
    assert!(
        verify_segments(&config(&replica_dir))
            .unwrap()
            .iter()
            .all(|v| !v.verdict.is_corrupt())
    );
}

#[test]
fn a_damaged_or_truncated_image_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let image = image_of(&source(&tmp.path().join("source")));
    let replica_dir = tmp.path().join("replica");
    replica_state(&replica_dir);
    let replica = KvEngine::open(config(&replica_dir)).unwrap();
    let old = state(&replica);
    let old_files = segment_files(&replica_dir);
    for at in [60, image.len() / 2, image.len() - 5] {
        let mut damaged = image.clone();
        damaged[at] ^= 0x20;
        assert!(replica.install_snapshot(&mut damaged.as_slice()).is_err());
        assert!(
            replica
                .install_snapshot(&mut &image[..image.len() - 1])
                .is_err()
        );
        assert_eq!(state(&replica), old);
        assert_eq!(
            segment_files(&replica_dir),
            old_files,
            "nothing left behind"
        );
    }
    // Still writable, and the good image installs.
    replica.put("after", "refusals").unwrap();
    replica.install_snapshot(&mut image.as_slice()).unwrap();
}

/// Counts every I/O step once armed; at step `crash_at` (if set) exits the
/// process at once, as a kill at that moment would.
struct StepFaults {
    armed: AtomicBool,
    steps: AtomicU64,
    crash_at: Option<u64>,
}

impl IoFaults for StepFaults {
    fn check(&self, _op: IoOp, _file: &str) -> io::Result<()> {
        if !self.armed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let step = self.steps.fetch_add(1, Ordering::SeqCst);
        if Some(step) == self.crash_at {
            std::process::exit(CRASHED);
        }
        Ok(())
    }
}

/// The child: opens the replica in `HIGHTOWER_INSTALL_CHILD`, installs the
/// image file, crashing at the given step.
#[test]
fn install_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return; // Not the child.
    };
    let image = std::fs::read(std::env::var_os(CHILD_IMAGE_ENV).unwrap()).unwrap();
    let crash_at = std::env::var(CHILD_CRASH_AT_ENV).unwrap().parse().unwrap();
    let faults = Arc::new(StepFaults {
        armed: AtomicBool::new(false),
        steps: AtomicU64::new(0),
        crash_at: Some(crash_at),
    });
    let replica =
        KvEngine::open_with(config(Path::new(&dir)), quiet(Some(faults.clone()))).unwrap();
    faults.armed.store(true, Ordering::SeqCst);
    replica.install_snapshot(&mut image.as_slice()).unwrap();
    std::process::exit(0);
}

fn run_child(dir: &Path, image: &Path, crash_at: u64) -> i32 {
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "install_child",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_IMAGE_ENV, image)
        .env(CHILD_CRASH_AT_ENV, crash_at.to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    status
        .code()
        .expect("the child exits, it is not killed by a signal")
}

/// The old state or the new one, nothing else, and a store that verifies.
fn outcome(dir: &Path, old: &State, new: &State, context: &str) -> &'static str {
    let engine = KvEngine::open(config(dir))
        .unwrap_or_else(|err| panic!("{context}: open after the crash failed: {err}"));
    let got = state(&engine);
    drop(engine);
    for verdict in verify_segments(&config(dir)).unwrap() {
        assert!(!verdict.verdict.is_corrupt(), "{context}: {verdict:?}");
    }
    if got == *old {
        "old"
    } else if got == *new {
        "new"
    } else {
        panic!(
            "{context}: a mixed state opened ({} keys, old {}, new {})",
            got.len(),
            old.len(),
            new.len()
        )
    }
}

#[test]
fn a_crash_at_any_step_of_an_install_leaves_the_old_state_or_the_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let source = source(&tmp.path().join("source"));
    let image = image_of(&source);
    let new = state(&source);
    let image_file = tmp.path().join("image");
    std::fs::write(&image_file, &image).unwrap();
    let pristine = tmp.path().join("pristine");
    replica_state(&pristine);
    let old = state(&KvEngine::open(config(&pristine)).unwrap());

    // How many I/O steps an install takes.
    let counting = tmp.path().join("counting");
    copy_dir(&pristine, &counting);
    let faults = Arc::new(StepFaults {
        armed: AtomicBool::new(false),
        steps: AtomicU64::new(0),
        crash_at: None,
    });
    let replica = KvEngine::open_with(config(&counting), quiet(Some(faults.clone()))).unwrap();
    faults.armed.store(true, Ordering::SeqCst);
    replica.install_snapshot(&mut image.as_slice()).unwrap();
    drop(replica);
    let steps = faults.steps.load(Ordering::SeqCst);
    assert!(steps > 20, "{steps} steps");

    let (mut olds, mut news) = (0, 0);
    for crash_at in 0..steps {
        let dir: PathBuf = tmp.path().join(format!("crash-{crash_at}"));
        copy_dir(&pristine, &dir);
        let code = run_child(&dir, &image_file, crash_at);
        assert_eq!(
            code, CRASHED,
            "step {crash_at}: the child did not crash there"
        );
        match outcome(
            &dir,
            &old,
            &new,
            &format!("crash at step {crash_at} of {steps}"),
        ) {
            "old" => olds += 1,
            _ => news += 1,
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    assert!(olds > 0 && news > 0, "{olds} old, {news} new");
}

#[test]
fn an_io_failure_at_any_step_of_an_install_leaves_the_old_state_or_the_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let image = image_of(&source(&tmp.path().join("source")));
    let new = state(&source(&tmp.path().join("source-again")));
    let pristine = tmp.path().join("pristine");
    replica_state(&pristine);
    let old = state(&KvEngine::open(config(&pristine)).unwrap());
    for op in [
        IoOp::Write,
        IoOp::SyncFile,
        IoOp::SyncDir,
        IoOp::Create,
        IoOp::Rename,
        IoOp::Remove,
    ] {
        for nth in 0..64 {
            let dir = tmp.path().join(format!("{op:?}-{nth}"));
            copy_dir(&pristine, &dir);
            let faults = Arc::new(FailNth::new(op, nth, false));
            let replica = KvEngine::open_with(config(&dir), quiet(Some(faults.clone()))).unwrap();
            let before = faults.seen();
            let result = replica.install_snapshot(&mut image.as_slice());
            let reached = faults.seen() > nth && before <= nth;
            let context = format!("{op:?} step {nth} fails: {result:?}");
            match &result {
                Ok(_) => assert_eq!(state(&replica), new, "{context}"),
                Err(_) if replica.stats().storage.poisoned.is_none() => {
                    assert_eq!(state(&replica), old, "{context}: an error changes nothing");
                }
                Err(_) => {} // The commit point's outcome is settled by the reopen.
            }
            drop(replica);
            outcome(&dir, &old, &new, &context);
            std::fs::remove_dir_all(&dir).unwrap();
            if !reached {
                break; // No more steps of this kind.
            }
        }
    }
}
