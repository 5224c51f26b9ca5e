//! Snapshots against a model: random puts, deletes and batches on a store
//! and on a `BTreeMap`; the snapshot restored into a fresh directory must
//! hold exactly the model's keys, values and versions, continue with the
//! same next version, and a damaged copy must be refused.
//!
//! Also: a restore killed with SIGKILL at a random moment (the test binary
//! re-runs itself as the child, as `tests/crash.rs` does) leaves a target
//! that is refused at open, empty, or complete — never part of the store;
//! and a crafted image that promises more bytes than it holds costs no
//! more memory than what it holds.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use hightower_engine::restore_snapshot;
use hightower_engine::{Command, Config, Error, KvEngine, Op, Outcome, SnapshotProvider, SyncMode};
use proptest::prelude::*;

#[path = "support/rng.rs"]
mod rng;
use rng::Rng;

#[path = "support/largest_alloc.rs"]
mod largest_alloc;
use largest_alloc::{LargestAllocation, take_largest_allocation};

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

#[derive(Clone, Debug)]
enum Step {
    Put(u8, Vec<u8>),
    Delete(u8),
    Batch(Vec<(u8, Option<Vec<u8>>)>),
}

fn key(n: u8) -> Vec<u8> {
    format!("key-{n}").into_bytes()
}

fn step() -> impl Strategy<Value = Step> {
    let value = proptest::collection::vec(any::<u8>(), 0..300);
    prop_oneof![
        3 => (0..24u8, value.clone()).prop_map(|(k, v)| Step::Put(k, v)),
        1 => (0..24u8).prop_map(Step::Delete),
        1 => proptest::collection::vec((0..24u8, proptest::option::of(value)), 1..6).prop_map(Step::Batch),
    ]
}

fn config(dir: &std::path::Path) -> Config {
    Config {
        sync: SyncMode::Os,
        segment_size_bytes: 8192,
        ..Config::new(dir)
    }
}

/// Applies `step` to the engine and the model (key -> (value, version)).
fn apply(engine: &KvEngine, model: &mut BTreeMap<Vec<u8>, (Vec<u8>, u64)>, step: &Step) {
    match step {
        Step::Put(k, v) => {
            let version = engine.put(key(*k), v).unwrap();
            model.insert(key(*k), (v.clone(), version));
        }
        Step::Delete(k) => {
            let deleted = engine.delete(key(*k)).unwrap();
            assert_eq!(deleted.is_some(), model.remove(&key(*k)).is_some());
        }
        Step::Batch(ops) => {
            let ops: Vec<Op> = ops
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => Op::Set {
                        key: key(*k),
                        value: v.clone(),
                    },
                    None => Op::Delete { key: key(*k) },
                })
                .collect();
            let outcome = engine
                .apply(Command::Batch {
                    conditions: vec![],
                    ops: ops.clone(),
                })
                .unwrap()
                .outcome;
            let Outcome::Batch {
                applied_ops,
                last_version,
            } = outcome
            else {
                panic!("{outcome:?}")
            };
            // Versions are consecutive over the records the batch wrote.
            let mut version = last_version.map_or(0, |last| last + 1 - u64::from(applied_ops));
            for op in ops {
                match op {
                    Op::Set { key, value } => {
                        model.insert(key, (value, version));
                        version += 1;
                    }
                    Op::Delete { key } => {
                        if model.remove(&key).is_some() {
                            version += 1;
                        }
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn a_restored_snapshot_equals_the_model(steps in proptest::collection::vec(step(), 1..120)) {
        // On tmpfs where there is one: this checks contents, not durability.
        let tmp = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap();
        let engine = KvEngine::open(config(&tmp.path().join("source"))).unwrap();
        let mut model = BTreeMap::new();
        for step in &steps {
            apply(&engine, &mut model, step);
        }
        let mut image = Vec::new();
        let log_index = engine.serialize_snapshot(&mut image).unwrap();

        let target = tmp.path().join("restored");
        let info = restore_snapshot(config(&target), &mut image.as_slice()).unwrap();
        prop_assert_eq!(info.keys, model.len() as u64);
        prop_assert_eq!(info.last_log_index, log_index);
        let restored = KvEngine::open(config(&target)).unwrap();
        let state: BTreeMap<Vec<u8>, (Vec<u8>, u64)> = restored
            .dump()
            .unwrap()
            .into_iter()
            .map(|(key, versioned)| (key, (versioned.value, versioned.version)))
            .collect();
        prop_assert_eq!(&state, &model);
        prop_assert_eq!(restored.state().last_applied(), log_index);
        prop_assert_eq!(restored.put(b"next", b"x").unwrap(), engine.put(b"next", b"x").unwrap());

        let mut damaged = image.clone();
        let at = image.len() / 2;
        damaged[at] ^= 0x40;
        let elsewhere = tmp.path().join("damaged");
        prop_assert!(restore_snapshot(config(&elsewhere), &mut damaged.as_slice()).is_err());
        prop_assert!(!elsewhere.exists());
    }
}

/// The 75-byte image of the bug report: a header, an entry header claiming
/// a value of about 1 GiB, one byte. The restore fails as truncated, and
/// never asks for more than a small chunk of memory at once.
#[test]
fn a_length_promising_more_than_the_image_holds_costs_no_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let engine = KvEngine::open(config(&tmp.path().join("source"))).unwrap();
    engine.put(b"k", b"").unwrap();
    let mut image = Vec::new();
    engine.serialize_snapshot(&mut image).unwrap();
    // Header (48 bytes), then the entry: crc, version, log index, key
    // length, value length (at 48 + 22), key; drop the trailer.
    let claimed: u32 = (1 << 30) - (8 << 10);
    image[48 + 22..48 + 26].copy_from_slice(&claimed.to_le_bytes());
    image.truncate(48 + 26 + 1);
    assert_eq!(image.len(), 75);
    // A target whose limits admit such a value, so only the missing bytes
    // can stop it.
    let target = tmp.path().join("target");
    let roomy = Config {
        max_value_bytes: claimed,
        max_batch_bytes: 1 << 30,
        ..config(&target)
    };
    take_largest_allocation();
    let err = restore_snapshot(roomy, &mut image.as_slice()).unwrap_err();
    let largest = take_largest_allocation();
    assert!(err.to_string().contains("truncated"), "{err}");
    assert!(
        largest < 16 << 20,
        "restoring 75 bytes asked for {largest} bytes at once"
    );
    assert!(!target.exists());
}

// ---------------------------------------------------------------------------
// A restore killed at a random moment.
// ---------------------------------------------------------------------------

const CHILD_TARGET_ENV: &str = "HIGHTOWER_RESTORE_CHILD_TARGET";
const CHILD_IMAGE_ENV: &str = "HIGHTOWER_RESTORE_CHILD_IMAGE";
const SEED_ENV: &str = "HIGHTOWER_RESTORE_KILL_SEED";

/// Small segments, so a restore writes many files (and fsyncs each).
fn kill_config(dir: &Path) -> Config {
    Config {
        segment_size_bytes: 64 << 10,
        ..Config::new(dir)
    }
}

/// The child: restores the image named by the environment, then says so.
#[test]
fn restore_child() {
    let (Some(target), Some(image)) = (
        std::env::var_os(CHILD_TARGET_ENV),
        std::env::var_os(CHILD_IMAGE_ENV),
    ) else {
        return; // Not the child: nothing to do.
    };
    let mut input = std::io::BufReader::new(std::fs::File::open(image).unwrap());
    match restore_snapshot(kill_config(Path::new(&target)), &mut input) {
        Ok(info) => println!("restored {}", info.keys),
        Err(err) => {
            eprintln!("restore child: {err}");
            std::process::exit(86);
        }
    }
}

fn spawn_restore(target: &Path, image: &Path) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "restore_child",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(CHILD_TARGET_ENV, target)
        .env(CHILD_IMAGE_ENV, image)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn the restore child")
}

/// Every key and value of `engine`.
fn contents(engine: &KvEngine) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let dump = engine.dump().unwrap().into_iter();
    dump.map(|(key, versioned)| (key, versioned.value))
        .collect()
}

/// What opening a target finds after a killed restore; panics on a
/// partial store or any other error.
fn outcome_after_kill(
    target: &Path,
    expected: &BTreeMap<Vec<u8>, Vec<u8>>,
    context: &str,
) -> &'static str {
    if !target.exists() {
        return "missing";
    }
    let has_segments = std::fs::read_dir(target)
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().starts_with("seg-"));
    // A reader is refused as a writer is.
    if let Err(err) = KvEngine::open_read_only(kill_config(target)) {
        assert!(
            matches!(err, Error::RestoreIncomplete { .. } | Error::Config(_)),
            "{context}: read-only open: {err}"
        );
    }
    match KvEngine::open(kill_config(target)) {
        Err(Error::RestoreIncomplete { .. }) => "refused",
        Err(err) => panic!("{context}: open failed otherwise: {err}"),
        Ok(engine) => {
            let got = contents(&engine);
            if got.is_empty() {
                assert!(!has_segments, "{context}: segments but an empty store");
                "empty"
            } else {
                assert!(
                    got == *expected,
                    "{context}: a partial store opened ({} of {} keys)",
                    got.len(),
                    expected.len()
                );
                "complete"
            }
        }
    }
}

#[test]
fn a_killed_restore_is_refused_until_deleted_and_never_opens_partial() {
    let seed = rng::seed_from_env(SEED_ENV);
    eprintln!("restore kill test: seed {seed}; replay with {SEED_ENV}={seed}");
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let source = KvEngine::open(Config {
        sync: SyncMode::Os,
        ..kill_config(&tmp.path().join("source"))
    })
    .unwrap();
    for i in 0..1500u32 {
        source
            .put(format!("key-{i:05}").as_bytes(), [(i % 251) as u8; 300])
            .unwrap();
    }
    let expected = contents(&source);
    let image = tmp.path().join("image.snap");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&image).unwrap());
    source.serialize_snapshot(&mut file).unwrap();
    drop(file);

    // How long one whole restore takes here, child start included.
    let started = Instant::now();
    let status = spawn_restore(&tmp.path().join("timing"), &image)
        .wait()
        .unwrap();
    assert!(status.success(), "an unkilled restore failed: {status}");
    let whole = started.elapsed();

    let mut outcomes = BTreeMap::new();
    for iteration in 0..40u32 {
        let target = tmp.path().join(format!("target-{iteration}"));
        let delay = Duration::from_micros(rng.below(whole.as_micros() as u64 + 1));
        let context =
            format!("seed {seed}, iteration {iteration}, kill after {delay:?} of {whole:?}");
        let mut child = spawn_restore(&target, &image);
        std::thread::sleep(delay);
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let outcome = match status.signal() {
            Some(9) => outcome_after_kill(&target, &expected, &context),
            _ => {
                assert!(status.success(), "{context}: the child failed: {status}");
                assert_eq!(
                    outcome_after_kill(&target, &expected, &context),
                    "complete",
                    "{context}"
                );
                "finished before the kill"
            }
        };
        if outcome == "refused" && !outcomes.contains_key("refused") {
            // What the error says to do works.
            std::fs::remove_dir_all(&target).unwrap();
            let status = spawn_restore(&target, &image).wait().unwrap();
            assert!(status.success(), "{context}: the retry failed");
            assert_eq!(outcome_after_kill(&target, &expected, &context), "complete");
        }
        *outcomes.entry(outcome).or_insert(0u32) += 1;
        if outcomes.get("refused").copied().unwrap_or(0) >= 4 && iteration >= 7 {
            break;
        }
    }
    eprintln!("restore kill test: a whole restore took {whole:?}; outcomes {outcomes:?}");
    assert!(
        outcomes.get("refused").copied().unwrap_or(0) > 0,
        "seed {seed}: no kill landed inside a restore: {outcomes:?}"
    );
}
