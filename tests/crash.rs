//! Process crashes: a real child process writes with several threads and is
//! killed with SIGKILL at a random moment; the store is then reopened and
//! checked against what the child reported as acknowledged.
//!
//! The test binary re-runs itself as the child: `child_writer` does nothing
//! unless `HIGHTOWER_CRASH_CHILD` names a data directory. The child prints
//! one line per acknowledged write (and one before each delete or batch, so
//! the parent knows which were in flight), flushed before the next write.
//!
//! After every kill the parent checks:
//! - every acknowledged put is there with its exact value, unless an
//!   acknowledged delete of it followed (then it is absent) or a delete of it
//!   was in flight (then either);
//! - every batch, acknowledged or not, is entirely present or entirely
//!   absent — including the delete of an earlier key some batches carry —
//!   and every acknowledged batch is present;
//! - batches whose condition failed left nothing behind;
//! - no other key exists, and everything earlier iterations left is
//!   unchanged: the same data directory is reused, so each iteration also
//!   recovers a store that earlier recoveries produced.
//!
//! Set `HIGHTOWER_CRASH_SEED` to replay a failure; the seed is printed.
//! Set `HIGHTOWER_CRASH_KEEP=DIR` to keep the stores (in `DIR/Always`,
//! `DIR/Os`) for a post-mortem.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hightower_engine::verify_segments;
use hightower_engine::{Command, Condition, Config, Error, KvEngine, Op, Outcome, SyncMode};

const CHILD_DIR_ENV: &str = "HIGHTOWER_CRASH_CHILD";
const CHILD_SYNC_ENV: &str = "HIGHTOWER_CRASH_SYNC";
const CHILD_ITERATION_ENV: &str = "HIGHTOWER_CRASH_ITERATION";
const CHILD_SEED_ENV: &str = "HIGHTOWER_CRASH_CHILD_SEED";
const SEED_ENV: &str = "HIGHTOWER_CRASH_SEED";

/// Marks the child's report lines among whatever else the harness prints.
const TAG: &str = "@hightower ";
const WRITERS: u64 = 4;
const BATCH_KEYS: usize = 5;
/// A child that is never killed stops by itself after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);

#[path = "support/rng.rs"]
mod rng;
use rng::Rng;

/// Small segments, a small hot index and eager background compaction, so
/// kills land in metadata writes and compactions as well as in appends.
fn config(dir: &Path, sync: SyncMode) -> Config {
    Config {
        sync,
        segment_size_bytes: 16 << 10,
        hot_index_max_entries: 256,
        compaction_dead_ratio: 0.1,
        maintenance_interval_ms: 2,
        ..Config::new(dir)
    }
}

/// Compaction outputs present in the directory (header flag bit 0).
fn compacted_segments(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    name.starts_with("seg-") && name.ends_with(".log")
                })
                .filter(|e| {
                    std::fs::read(e.path())
                        .is_ok_and(|bytes| bytes.len() >= 16 && bytes[12] & 1 == 1)
                })
                .count()
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Keys and values: the parent recomputes every value from its key.
// ---------------------------------------------------------------------------

fn put_key(iteration: u64, thread: u64, n: u64) -> String {
    format!("i{iteration}-t{thread}-p{n}")
}

fn batch_id(iteration: u64, thread: u64, n: u64) -> String {
    format!("i{iteration}-t{thread}-b{n}")
}

fn batch_key(id: &str, j: usize) -> String {
    format!("{id}-{j}")
}

/// Keys of a batch whose condition fails: must never exist.
fn refused_key(iteration: u64, thread: u64, n: u64, j: usize) -> String {
    format!("i{iteration}-t{thread}-x{n}-{j}")
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// 8 to 400 bytes, a function of the key.
fn put_value(key: &str) -> Vec<u8> {
    let len = 8 + (fnv(key.as_bytes()) % 393) as usize;
    format!("[{key}]").bytes().cycle().take(len).collect()
}

fn batch_value(id: &str) -> Vec<u8> {
    format!("batch {id}").into_bytes()
}

enum KeyKind {
    Put,
    Batch(String),
}

fn classify(key: &str) -> Option<KeyKind> {
    let parts: Vec<&str> = key.split('-').collect();
    match parts.as_slice() {
        [i, t, p] if i.starts_with('i') && t.starts_with('t') && p.starts_with('p') => {
            Some(KeyKind::Put)
        }
        [i, t, b, j] if i.starts_with('i') && t.starts_with('t') && b.starts_with('b') => {
            j.parse::<usize>().ok().filter(|&j| j < BATCH_KEYS)?;
            Some(KeyKind::Batch(format!("{i}-{t}-{b}")))
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// The child.
// ---------------------------------------------------------------------------

/// One report line, written and flushed as a whole under the stdout lock.
fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    let written = writeln!(out, "{TAG}{line}").and_then(|()| out.flush());
    if written.is_err() {
        // The parent is gone; nothing left to report to.
        std::process::exit(0);
    }
}

/// Reports an unexpected error and exits: the parent fails the test.
fn die(message: String) -> ! {
    report(&format!("error {message}"));
    eprintln!("crash child: {message}");
    std::process::exit(86)
}

#[test]
fn child_writer() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return; // Not the child: nothing to do.
    };
    let env = |name: &str| std::env::var(name).unwrap_or_else(|_| die(format!("{name} unset")));
    let sync = match env(CHILD_SYNC_ENV).as_str() {
        "os" => SyncMode::Os,
        _ => SyncMode::Always,
    };
    let iteration: u64 = env(CHILD_ITERATION_ENV).parse().unwrap();
    let seed: u64 = env(CHILD_SEED_ENV).parse().unwrap();
    let engine = match KvEngine::open(config(Path::new(&dir), sync)) {
        Ok(engine) => Arc::new(engine),
        Err(err) => die(format!("open: {err}")),
    };
    report("ready");
    let writers: Vec<_> = (0..WRITERS)
        .map(|thread| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let seed = seed ^ (thread + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                write_until_killed(&engine, iteration, thread, seed);
            })
        })
        .collect();
    for writer in writers {
        let _ = writer.join();
    }
    report("done");
}

fn write_until_killed(engine: &KvEngine, iteration: u64, thread: u64, seed: u64) {
    let mut rng = Rng::new(seed);
    // Acknowledged puts of this thread not yet deleted (nor being deleted).
    let mut live: Vec<String> = Vec::new();
    let deadline = Instant::now() + CHILD_LIFETIME;
    let mut n = 0;
    while Instant::now() < deadline {
        n += 1;
        match rng.below(10) {
            0 | 1 if !live.is_empty() => {
                let key = live.swap_remove(rng.below(live.len() as u64) as usize);
                report(&format!("deleting {key}"));
                match engine.delete(key.as_bytes()) {
                    Ok(Some(_)) => report(&format!("del {key}")),
                    other => die(format!("delete {key}: {other:?}")),
                }
            }
            2 | 3 => {
                let id = batch_id(iteration, thread, n);
                let victim = (rng.below(2) == 0 && !live.is_empty())
                    .then(|| live.swap_remove(rng.below(live.len() as u64) as usize));
                let mut ops: Vec<Op> = (0..BATCH_KEYS)
                    .map(|j| Op::Set {
                        key: batch_key(&id, j).into_bytes(),
                        value: batch_value(&id),
                    })
                    .collect();
                if let Some(victim) = &victim {
                    ops.insert(
                        2,
                        Op::Delete {
                            key: victim.clone().into_bytes(),
                        },
                    );
                }
                let conditions = match rng.below(3) {
                    0 => vec![],
                    _ => vec![Condition::Absent {
                        key: batch_key(&id, 0).into_bytes(),
                    }],
                };
                let expected_ops = ops.len() as u32;
                report(&format!(
                    "batching {id} {}",
                    victim.as_deref().unwrap_or("-")
                ));
                match engine.apply(Command::Batch { conditions, ops }) {
                    Ok(applied)
                        if matches!(applied.outcome, Outcome::Batch { applied_ops, .. }
                            if applied_ops == expected_ops) =>
                    {
                        report(&format!("batch {id} {BATCH_KEYS}"))
                    }
                    other => die(format!("batch {id}: {other:?}")),
                }
            }
            4 if !live.is_empty() => {
                // A condition that fails: the batch must write nothing.
                let existing = live[rng.below(live.len() as u64) as usize].clone();
                let ops = (0..3)
                    .map(|j| Op::Set {
                        key: refused_key(iteration, thread, n, j).into_bytes(),
                        value: b"never".to_vec(),
                    })
                    .collect();
                let conditions = vec![Condition::Absent {
                    key: existing.into_bytes(),
                }];
                match engine.apply(Command::Batch { conditions, ops }) {
                    Ok(applied) if matches!(applied.outcome, Outcome::ConditionFailed { .. }) => {
                        report(&format!("refused {n}"))
                    }
                    other => die(format!("conditional batch {n}: {other:?}")),
                }
            }
            _ => {
                let key = put_key(iteration, thread, n);
                match engine.put(key.as_bytes(), put_value(&key)) {
                    Ok(_) => report(&format!("put {key}")),
                    Err(err) => die(format!("put {key}: {err}")),
                }
                live.push(key);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The parent.
// ---------------------------------------------------------------------------

/// Kills the child if the parent panics before it did.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// When to kill the child.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// This long after the child reported that the store is open.
    AfterReady(Duration),
    /// This long after spawning it: possibly while it opens (recovers) the store.
    AfterSpawn(Duration),
}

/// Runs one child and kills it; returns its complete report lines (a
/// trailing partial line is dropped).
fn run_child(dir: &Path, sync: SyncMode, iteration: u64, seed: u64, kill: Kill) -> Vec<String> {
    let started = Instant::now();
    let log = dir.with_extension(format!("child-{iteration}.stderr"));
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_writer",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(
            CHILD_SYNC_ENV,
            if sync == SyncMode::Os { "os" } else { "always" },
        )
        .env(CHILD_ITERATION_ENV, iteration.to_string())
        .env(CHILD_SEED_ENV, seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn the child");
    let mut child = ChildGuard(child);
    let stdout = child.0.stdout.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdout.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                // A line cut short by the kill was never fully reported.
                Ok(_) if line.last() != Some(&b'\n') => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    if let Some(at) = text.find(TAG) {
                        let report = text[at + TAG.len()..].trim_end().to_string();
                        if lines_tx.send(report).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });

    let mut lines = Vec::new();
    let kill_at = match kill {
        Kill::AfterSpawn(delay) => started + delay,
        Kill::AfterReady(delay) => {
            loop {
                let line = lines_rx
                    .recv_timeout(Duration::from_secs(60))
                    .unwrap_or_else(|_| {
                        panic!(
                            "iteration {iteration}: the child never opened the store: {}",
                            std::fs::read_to_string(&log).unwrap_or_default()
                        )
                    });
                let ready = line == "ready";
                lines.push(line);
                if ready {
                    break;
                }
            }
            if iteration == 0 {
                check_locked_by(dir, sync, child.0.id());
            }
            Instant::now() + delay
        }
    };
    std::thread::sleep(kill_at.saturating_duration_since(Instant::now()));
    child.0.kill().expect("SIGKILL the child");
    let status = child.0.wait().unwrap();
    reader.join().unwrap();
    lines.extend(lines_rx.try_iter());
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        status.signal(),
        Some(9),
        "iteration {iteration}: the child was not killed by SIGKILL ({status}); it said: {stderr}"
    );
    if let Some(error) = lines.iter().find(|line| line.starts_with("error")) {
        panic!("iteration {iteration}: the child failed: {error}\n{stderr}");
    }
    lines
}

/// While the child has the store open, opening it fails naming the child.
fn check_locked_by(dir: &Path, sync: SyncMode, pid: u32) {
    match KvEngine::open(config(dir, sync)) {
        Err(err @ Error::Locked { .. }) => {
            let message = err.to_string();
            assert!(message.contains(&format!("pid {pid}")), "{message}");
        }
        Err(other) => panic!("expected Locked while the child runs, got {other}"),
        Ok(_) => panic!("opened a store another process holds"),
    }
}

/// What the child's report lines say.
#[derive(Default)]
struct Reports {
    puts: BTreeSet<String>,
    deleting: BTreeSet<String>,
    deleted: BTreeSet<String>,
    /// Batch id → the earlier put it deletes, if any.
    batching: BTreeMap<String, Option<String>>,
    batches: BTreeSet<String>,
    refused: u64,
}

fn parse_reports(lines: &[String]) -> Reports {
    let mut reports = Reports::default();
    for line in lines {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["ready"] | ["done"] => {}
            ["put", key] => assert!(reports.puts.insert(key.to_string()), "{line}"),
            ["deleting", key] => assert!(reports.deleting.insert(key.to_string()), "{line}"),
            ["del", key] => assert!(reports.deleted.insert(key.to_string()), "{line}"),
            ["batching", id, victim] => {
                let victim = (*victim != "-").then(|| victim.to_string());
                reports.batching.insert(id.to_string(), victim);
            }
            ["batch", id, count] => {
                assert_eq!(count.parse::<usize>().ok(), Some(BATCH_KEYS), "{line}");
                assert!(reports.batching.contains_key(*id), "{line}");
                reports.batches.insert(id.to_string());
            }
            ["refused", _] => reports.refused += 1,
            _ => panic!("unexpected report line {line:?}"),
        }
    }
    for key in &reports.deleted {
        assert!(reports.deleting.contains(key) && reports.puts.contains(key));
    }
    reports
}

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Checks the recovered store against the previous state and the reports;
/// returns a description of the first violation.
fn check_recovered(
    previous: &Model,
    actual: &Model,
    reports: &Reports,
    iteration: u64,
) -> Result<(), String> {
    for (key, value) in previous {
        match actual.get(key) {
            Some(found) if found == value => {}
            Some(_) => return Err(format!("{} from an earlier run changed", show(key))),
            None => return Err(format!("{} from an earlier run vanished", show(key))),
        }
    }
    let victims: BTreeMap<&String, &String> = reports
        .batching
        .iter()
        .filter_map(|(id, victim)| victim.as_ref().map(|victim| (victim, id)))
        .collect();
    let mut batch_keys: BTreeMap<String, usize> = BTreeMap::new();
    let prefix = format!("i{iteration}-");
    for (key, value) in actual.iter().filter(|(k, _)| !previous.contains_key(*k)) {
        let key = show(key);
        if !key.starts_with(&prefix) {
            return Err(format!("{key} appeared, but this run did not write it"));
        }
        match classify(&key) {
            Some(KeyKind::Put) => {
                if *value != put_value(&key) {
                    return Err(format!("{key} has a wrong value"));
                }
            }
            Some(KeyKind::Batch(id)) => {
                if *value != batch_value(&id) {
                    return Err(format!("{key} has a wrong value"));
                }
                *batch_keys.entry(id).or_default() += 1;
            }
            None => return Err(format!("{key} should not exist")),
        }
    }
    // Batches: all or nothing, acknowledged or not.
    for (id, &count) in &batch_keys {
        if count != BATCH_KEYS {
            return Err(format!(
                "batch {id} is partial: {count} of {BATCH_KEYS} keys"
            ));
        }
        if !reports.batching.contains_key(id) {
            return Err(format!("batch {id} was never started"));
        }
    }
    for id in &reports.batches {
        if !batch_keys.contains_key(id) {
            return Err(format!("acknowledged batch {id} is missing"));
        }
    }
    // Puts and deletes.
    for key in &reports.puts {
        let present = actual.contains_key(key.as_bytes());
        if reports.deleted.contains(key) {
            if present {
                return Err(format!("{key} is back after an acknowledged delete"));
            }
        } else if let Some(id) = victims.get(key) {
            // Deleted by a batch: gone exactly when that batch is there.
            let batch_present = batch_keys.contains_key(*id);
            if present == batch_present {
                return Err(format!(
                    "{key} is {} but batch {id} deleting it is {}",
                    if present { "present" } else { "absent" },
                    if batch_present { "present" } else { "absent" },
                ));
            }
        } else if !present && !reports.deleting.contains(key) {
            return Err(format!("acknowledged put {key} is missing"));
        }
    }
    for key in &reports.deleted {
        if actual.contains_key(key.as_bytes()) {
            return Err(format!("deleted {key} is present"));
        }
    }
    Ok(())
}

fn show(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

#[derive(Default, Debug)]
struct Totals {
    puts: usize,
    deletes: usize,
    batches: usize,
    refused: u64,
    unacknowledged_batches: usize,
    torn_tail_bytes: u64,
    killed_while_opening: usize,
    /// Iterations after which compaction outputs were on disk.
    with_compacted_segments: usize,
}

fn crash_iterations(sync: SyncMode, iterations: u64) {
    let seed = rng::seed_from_env(SEED_ENV);
    eprintln!("crash test ({sync:?}): seed {seed}; replay with {SEED_ENV}={seed}");
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    // HIGHTOWER_CRASH_KEEP=DIR keeps the store in DIR for a post-mortem.
    let dir: PathBuf = match std::env::var_os("HIGHTOWER_CRASH_KEEP") {
        Some(keep) => PathBuf::from(keep).join(format!("{sync:?}")),
        None => tmp.path().join("store"),
    };
    let mut rng = Rng::new(seed);
    let mut model = Model::new();
    let mut totals = Totals::default();
    for iteration in 0..iterations {
        let kill = if iteration % 6 == 5 {
            Kill::AfterSpawn(Duration::from_millis(rng.below(60)))
        } else {
            Kill::AfterReady(Duration::from_millis(20 + rng.below(231)))
        };
        let child_seed = rng.next();
        let lines = run_child(&dir, sync, iteration, child_seed, kill);
        let context = format!("seed {seed}, iteration {iteration}, {sync:?}, {kill:?}");
        let reports = parse_reports(&lines);
        totals.with_compacted_segments += usize::from(compacted_segments(&dir) > 0);
        if !lines.iter().any(|line| line == "ready") {
            totals.killed_while_opening += 1;
        }

        let engine = KvEngine::open(config(&dir, sync))
            .unwrap_or_else(|err| panic!("{context}: reopen after SIGKILL failed: {err}"));
        let actual: Model = engine
            .dump()
            .unwrap()
            .into_iter()
            .map(|(key, versioned)| (key, versioned.value))
            .collect();
        if let Err(violation) = check_recovered(&model, &actual, &reports, iteration) {
            panic!("{context}: {violation}");
        }
        totals.puts += reports.puts.len();
        totals.deletes += reports.deleted.len();
        totals.batches += reports.batches.len();
        totals.refused += reports.refused;
        totals.unacknowledged_batches += reports.batching.len() - reports.batches.len();
        totals.torn_tail_bytes += engine.stats().recovery.torn_tail_bytes_dropped;
        engine.close().unwrap();
        model = actual;
        if iteration % 8 == 7 || iteration + 1 == iterations {
            for segment in verify_segments(&config(&dir, sync)).unwrap() {
                assert!(
                    !segment.verdict.is_corrupt(),
                    "{context}: {} after a clean close: {:?}",
                    segment.file,
                    segment.verdict
                );
            }
        }
    }
    eprintln!(
        "crash test ({sync:?}): {iterations} kills in {:.1?}, {} keys at the end; {totals:?}",
        started.elapsed(),
        model.len()
    );
    assert!(
        totals.puts >= iterations as usize && totals.batches > 0 && totals.deletes > 0,
        "seed {seed}: the children wrote too little to test anything: {totals:?}"
    );
    assert!(
        totals.with_compacted_segments > 0,
        "seed {seed}: no compaction ever ran: {totals:?}"
    );
}

#[test]
fn sigkill_loses_no_acknowledged_write_with_sync_always() {
    crash_iterations(SyncMode::Always, 40);
}

#[test]
fn sigkill_loses_no_acknowledged_write_with_sync_os() {
    crash_iterations(SyncMode::Os, 15);
}
