//! Concurrency tests: readers racing writers on one shared engine, conditional
//! batches racing for the same key, and group commit.
//!
//! The reader/writer test checks, for every read:
//! - the value is one that was written for that key (it encodes its writer,
//!   key and sequence number, and the rest of its bytes are checked);
//! - nothing goes backwards: a reader never sees an older value or version
//!   of a key than one it saw before (a deleted key stays deleted until a
//!   newer put);
//! - read-your-acknowledged-writes: once a writer's `put`/`delete` returned
//!   version v, a `read()` context created afterwards on any thread has
//!   `read_version() >= v` and sees that write or a newer one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hightower_engine::testing::{IoFaults, IoOp};
use hightower_engine::{
    Command, Condition, Config, EngineOptions, Error, KvEngine, Op, Outcome, ReadContext, SyncMode,
    Versioned,
};

const fn assert_send_sync<T: Send + Sync>() {}

// Compile-time: the engine is shared between threads with `Arc`.
const _: () = assert_send_sync::<KvEngine>();
const _: () = assert_send_sync::<Arc<KvEngine>>();
const _: () = assert_send_sync::<ReadContext<'static>>();
const _: () = assert_send_sync::<Error>();

#[test]
fn engine_is_send_and_sync() {
    assert_send_sync::<KvEngine>();
    assert_send_sync::<Arc<KvEngine>>();
    assert_send_sync::<ReadContext<'static>>();
    assert_send_sync::<Error>();
}

fn config(dir: &std::path::Path, sync: SyncMode) -> Config {
    Config {
        sync,
        sync_interval_ms: 2,
        // Small segments: rolls happen while readers read.
        segment_size_bytes: 16 << 10,
        ..Config::new(dir)
    }
}

/// xorshift64*: a deterministic per-thread generator.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Joins every handle, then re-raises the first panic (so a failing thread
/// never leaves the others running, and its message is the one reported).
fn join_all<T>(handles: Vec<JoinHandle<T>>) -> Vec<T> {
    let mut results = Vec::new();
    let mut first_panic = None;
    for handle in handles {
        match handle.join() {
            Ok(value) => results.push(value),
            Err(panic) => {
                first_panic.get_or_insert(panic);
            }
        }
    }
    if let Some(panic) = first_panic {
        std::panic::resume_unwind(panic);
    }
    results
}

// ---------------------------------------------------------------------------
// Readers against writers
// ---------------------------------------------------------------------------

const WRITERS: usize = 4;
/// Keys per writer that only ever get puts.
const STABLE_KEYS: usize = 3;
/// Plus one key per writer that alternates put (odd sequence numbers) and delete (even).
const KEYS_PER_WRITER: usize = STABLE_KEYS + 1;
const READERS: usize = 8;
/// Writers stop after this many operations or `WRITE_TIME`, whichever is
/// first, but not before `MIN_OPS_PER_WRITER` (so a loaded machine still
/// gets a meaningful run).
const MAX_OPS_PER_WRITER: u64 = 4_000;
const MIN_OPS_PER_WRITER: u64 = 100;
const WRITE_TIME: Duration = Duration::from_millis(1_200);

const VERSION_BITS: u32 = 40;

/// `(sequence number, version)` packed into one atomic word, so a reader
/// loads a consistent pair.
fn pack(seq: u64, version: u64) -> u64 {
    assert!(version < 1 << VERSION_BITS && seq < 1 << (64 - VERSION_BITS));
    seq << VERSION_BITS | version
}

fn unpack(word: u64) -> (u64, u64) {
    (word >> VERSION_BITS, word & ((1 << VERSION_BITS) - 1))
}

/// One key, written by exactly one writer.
struct Slot {
    key: Vec<u8>,
    writer: usize,
    index: usize,
    toggles: bool,
    /// Sequence number of the newest operation the writer started.
    started: AtomicU64,
    /// `pack(seq, version)` of the newest acknowledged operation.
    acked: AtomicU64,
}

impl Slot {
    /// Sequence number `seq` of this key is a put (else a delete).
    fn is_put(&self, seq: u64) -> bool {
        !self.toggles || seq % 2 == 1
    }

    /// The value written by operation `seq`: a parseable header and a
    /// length and fill that depend on it.
    fn value(&self, seq: u64) -> Vec<u8> {
        let mut value = format!("w{:02}k{:02}s{seq:010}|", self.writer, self.index).into_bytes();
        let pad = (seq as usize * 37 + self.index * 11) % 400;
        value.extend((0..pad).map(|i| (seq as u8).wrapping_add(i as u8) ^ self.index as u8));
        value
    }

    /// Checks that `value` is one written for this key; returns its sequence number.
    fn parse(&self, value: &[u8]) -> u64 {
        let text = std::str::from_utf8(&value[..value.len().min(18)]).unwrap_or("");
        let parsed = (|| {
            let writer: usize = text.get(1..3)?.parse().ok()?;
            let index: usize = text.get(4..6)?.parse().ok()?;
            let seq: u64 = text.get(7..17)?.parse().ok()?;
            (text.get(0..1)? == "w" && text.get(3..4)? == "k" && text.get(6..7)? == "s")
                .then_some((writer, index, seq))
        })();
        let Some((writer, index, seq)) = parsed else {
            panic!("key {:?}: unparseable value {text:?}", self.key);
        };
        assert_eq!(
            (writer, index),
            (self.writer, self.index),
            "key {:?} holds a value written for another key",
            self.key
        );
        assert!(
            value == self.value(seq),
            "key {:?}: value of seq {seq} is damaged",
            self.key
        );
        seq
    }
}

fn slots() -> Arc<Vec<Slot>> {
    Arc::new(
        (0..WRITERS)
            .flat_map(|writer| {
                (0..KEYS_PER_WRITER).map(move |index| Slot {
                    key: format!("writer-{writer}/key-{index}").into_bytes(),
                    writer,
                    index,
                    toggles: index == STABLE_KEYS,
                    started: AtomicU64::new(0),
                    acked: AtomicU64::new(0),
                })
            })
            .collect(),
    )
}

fn writer_thread(
    engine: Arc<KvEngine>,
    slots: Arc<Vec<Slot>>,
    writer: usize,
    deadline: Instant,
) -> u64 {
    let mine: Vec<&Slot> = slots.iter().filter(|s| s.writer == writer).collect();
    let mut rng = Rng::new(writer as u64 + 1);
    let mut last_version = 0;
    let mut ops = 0;
    while ops < MAX_OPS_PER_WRITER && (ops < MIN_OPS_PER_WRITER || Instant::now() < deadline) {
        let slot = mine[rng.below(mine.len())];
        let seq = slot.started.load(Ordering::Relaxed) + 1;
        slot.started.store(seq, Ordering::Release);
        let version = if slot.is_put(seq) {
            let value = slot.value(seq);
            let version = engine.put(&slot.key, &value).expect("put");
            // Only this thread writes the key: it must read back exactly its write.
            assert_eq!(
                engine.get_versioned(&slot.key).expect("get"),
                Some(Versioned { value, version }),
                "read-your-write of {:?}",
                slot.key
            );
            version
        } else {
            let version = engine.delete(&slot.key).expect("delete");
            let version = version
                .unwrap_or_else(|| panic!("{:?} was present, its delete must write", slot.key));
            assert_eq!(engine.get_versioned(&slot.key).expect("get"), None);
            version
        };
        assert!(
            version > last_version,
            "writer {writer}: versions of successive writes increase ({last_version} then {version})"
        );
        last_version = version;
        assert!(engine.committed_version() >= version);
        slot.acked.store(pack(seq, version), Ordering::Release);
        ops += 1;
    }
    ops
}

/// What one reader knows about a key: the newest operation it knows was
/// applied, and that operation's version (a lower bound if it was inferred).
#[derive(Clone, Copy, Default)]
struct Known {
    seq: u64,
    version: u64,
}

fn reader_thread(
    engine: Arc<KvEngine>,
    slots: Arc<Vec<Slot>>,
    reader: usize,
    stop: Arc<AtomicBool>,
) -> u64 {
    let mut rng = Rng::new(1000 + reader as u64);
    let mut known = vec![Known::default(); slots.len()];
    let mut reads = 0;
    while !stop.load(Ordering::Relaxed) {
        let i = rng.below(slots.len());
        let slot = &slots[i];
        // Everything acknowledged before the context is created must be visible through it.
        let (acked_seq, acked_version) = unpack(slot.acked.load(Ordering::Acquire));
        let committed = engine.committed_version();
        let read = engine.read();
        assert!(
            committed >= acked_version,
            "the committed version {committed} is behind the acknowledged version {acked_version} of {:?}",
            slot.key
        );
        if acked_seq >= known[i].seq {
            known[i] = Known {
                seq: acked_seq,
                version: acked_version,
            };
        }
        let floor = known[i];
        let found = read.get(&slot.key).expect("read");
        let started = slot.started.load(Ordering::Acquire);
        match found {
            Some(Versioned { value, version }) => {
                let seq = slot.parse(&value);
                assert!(slot.is_put(seq), "{:?}: seq {seq} was a delete", slot.key);
                assert!(
                    seq <= started,
                    "{:?}: read seq {seq} before the writer started it ({started})",
                    slot.key
                );
                assert!(
                    seq >= floor.seq,
                    "{:?}: went backwards: read seq {seq} after seq {} was applied",
                    slot.key,
                    floor.seq
                );
                if seq == floor.seq {
                    assert_eq!(version, floor.version, "{:?}: seq {seq}", slot.key);
                } else {
                    assert!(
                        version > floor.version,
                        "{:?}: seq {seq} has version {version}, not above {} (seq {})",
                        slot.key,
                        floor.version,
                        floor.seq
                    );
                }
                if !slot.toggles {
                    assert!(
                        read.contains(&slot.key).unwrap(),
                        "{:?}: contains",
                        slot.key
                    );
                }
                known[i] = Known { seq, version };
            }
            None => {
                if floor.seq > 0 && slot.is_put(floor.seq) {
                    assert!(
                        slot.toggles,
                        "{:?}: a key that is never deleted vanished after seq {}",
                        slot.key, floor.seq
                    );
                    assert!(
                        started > floor.seq,
                        "{:?}: absent, but no delete after seq {} was started",
                        slot.key,
                        floor.seq
                    );
                    // The delete right after that put has been applied.
                    known[i].seq = floor.seq + 1;
                }
            }
        }
        reads += 1;
        if reads % 64 == 0 {
            // Two cores and a dozen busy threads: let the writers in now and then.
            thread::yield_now();
        }
    }
    reads
}

/// Runs writers and readers on one engine, then checks the final state,
/// also after a reopen.
fn readers_and_writers(sync: SyncMode) {
    let tmp = tempfile::tempdir().unwrap();
    let engine = Arc::new(KvEngine::open(config(tmp.path(), sync)).unwrap());
    let slots = slots();
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + WRITE_TIME;
    let readers: Vec<_> = (0..READERS)
        .map(|reader| {
            let (engine, slots, stop) = (engine.clone(), slots.clone(), stop.clone());
            thread::spawn(move || reader_thread(engine, slots, reader, stop))
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (engine, slots) = (engine.clone(), slots.clone());
            thread::spawn(move || writer_thread(engine, slots, writer, deadline))
        })
        .collect();
    // Stop the readers whatever happened to the writers, then report the first panic.
    let writer_results: Vec<_> = writers.into_iter().map(JoinHandle::join).collect();
    stop.store(true, Ordering::Relaxed);
    let reads: u64 = join_all(readers).into_iter().sum();
    let writes: u64 = writer_results
        .into_iter()
        .map(|w| w.unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
        .sum();
    eprintln!("{sync:?}: {writes} writes, {reads} checked reads");
    assert!(reads > 1_000, "readers ran: {reads} reads");
    assert!(writes >= WRITERS as u64 * MIN_OPS_PER_WRITER);

    let check_final = |engine: &KvEngine, when: &str| {
        for slot in slots.iter() {
            let (seq, version) = unpack(slot.acked.load(Ordering::Acquire));
            let expected = (seq > 0 && slot.is_put(seq)).then(|| Versioned {
                value: slot.value(seq),
                version,
            });
            assert_eq!(
                engine.get_versioned(&slot.key).unwrap(),
                expected,
                "{when}: final state of {:?}",
                slot.key
            );
        }
    };
    check_final(&engine, "before reopen");
    let stats = engine.stats();
    assert!(stats.storage.segments > 1, "segments rolled during the run");
    assert_eq!(stats.metrics.puts + stats.metrics.deletes, writes);
    let engine = Arc::into_inner(engine).expect("every thread dropped its handle");
    engine.close().unwrap();
    let engine = KvEngine::open(config(tmp.path(), sync)).unwrap();
    check_final(&engine, "after reopen");
}

#[test]
fn readers_see_monotonic_acknowledged_writes_sync_os() {
    readers_and_writers(SyncMode::Os);
}

#[test]
fn readers_see_monotonic_acknowledged_writes_sync_always() {
    readers_and_writers(SyncMode::Always);
}

#[test]
fn readers_see_monotonic_acknowledged_writes_sync_interval() {
    readers_and_writers(SyncMode::Interval);
}

// ---------------------------------------------------------------------------
// Conditional batches racing for the same key
// ---------------------------------------------------------------------------

const CONTENDERS: usize = 8;

fn claim(key: &[u8], contender: usize) -> Command {
    Command::Batch {
        conditions: vec![Condition::Absent { key: key.to_vec() }],
        ops: vec![
            Op::Set {
                key: key.to_vec(),
                value: format!("owner-{contender}").into_bytes(),
            },
            Op::Set {
                key: [key, b"/claimed-by"].concat(),
                value: format!("owner-{contender}").into_bytes(),
            },
        ],
    }
}

/// Stalls the next fsync once armed, long enough for other writers to queue
/// up behind the commit in progress (they then commit as one group).
#[derive(Default)]
struct StallNextSync {
    armed: AtomicBool,
    stalling: AtomicBool,
}

impl IoFaults for StallNextSync {
    fn check(&self, op: IoOp, _file: &str) -> std::io::Result<()> {
        if op == IoOp::SyncFile && self.armed.swap(false, Ordering::SeqCst) {
            self.stalling.store(true, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// Every round, 8 threads race to claim a fresh key with `Condition::Absent`.
/// With `one_group`, the claims queue behind a stalled fsync of an unrelated
/// put, so they all land in one commit group: the conditions of later
/// claims must see the earlier claims of the same group.
fn exactly_one_claim_wins(sync: SyncMode, one_group: bool) {
    const ROUNDS: usize = 24;
    let tmp = tempfile::tempdir().unwrap();
    let stall = Arc::new(StallNextSync::default());
    let options = EngineOptions {
        io_faults: Some(stall.clone()),
        ..EngineOptions::default()
    };
    let engine = Arc::new(KvEngine::open_with(config(tmp.path(), sync), options).unwrap());
    let start = Arc::new(Barrier::new(CONTENDERS + 1));
    let done = Arc::new(Barrier::new(CONTENDERS + 1));
    let outcomes = Arc::new(Mutex::new(HashMap::<usize, Vec<(usize, Outcome)>>::new()));
    let threads: Vec<_> = (0..CONTENDERS)
        .map(|contender| {
            let (engine, start, done, stall, outcomes) = (
                engine.clone(),
                start.clone(),
                done.clone(),
                stall.clone(),
                outcomes.clone(),
            );
            thread::spawn(move || {
                for round in 0..ROUNDS {
                    let key = format!("lease/{round}").into_bytes();
                    start.wait();
                    if one_group {
                        let give_up = Instant::now() + Duration::from_secs(2);
                        while !stall.stalling.load(Ordering::SeqCst) && Instant::now() < give_up {
                            thread::yield_now();
                        }
                    }
                    let applied = engine.apply(claim(&key, contender));
                    let applied = applied.unwrap_or_else(|e| panic!("round {round}: {e}"));
                    outcomes
                        .lock()
                        .unwrap()
                        .entry(round)
                        .or_default()
                        .push((contender, applied.outcome));
                    done.wait();
                }
            })
        })
        .collect();
    for round in 0..ROUNDS {
        if one_group {
            stall.armed.store(true, Ordering::SeqCst);
        }
        start.wait();
        if one_group {
            engine
                .put(format!("blocker/{round}").as_bytes(), b"x")
                .unwrap();
        }
        done.wait();
        stall.stalling.store(false, Ordering::SeqCst);
    }
    join_all(threads);
    let blockers = if one_group { ROUNDS as u64 } else { 0 };

    let outcomes = outcomes.lock().unwrap();
    for round in 0..ROUNDS {
        let key = format!("lease/{round}").into_bytes();
        let results = &outcomes[&round];
        assert_eq!(results.len(), CONTENDERS);
        let winners: Vec<_> = results
            .iter()
            .filter(|(_, outcome)| !matches!(outcome, Outcome::ConditionFailed { .. }))
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let (winner, outcome) = winners[0];
        let Outcome::Batch {
            applied_ops: 2,
            last_version: Some(last_version),
        } = *outcome
        else {
            panic!("round {round}: unexpected winning outcome {outcome:?}");
        };
        for (_, outcome) in results.iter().filter(|(c, _)| c != winner) {
            assert_eq!(
                outcome,
                &Outcome::ConditionFailed {
                    index: 0,
                    key: key.clone()
                },
                "round {round}"
            );
        }
        let owner = format!("owner-{winner}").into_bytes();
        assert_eq!(
            engine.get_versioned(&key).unwrap(),
            Some(Versioned {
                value: owner.clone(),
                version: last_version - 1
            }),
            "round {round}: the key holds the winner's claim"
        );
        assert_eq!(
            engine
                .get_versioned([&key[..], b"/claimed-by"].concat())
                .unwrap(),
            Some(Versioned {
                value: owner,
                version: last_version
            }),
            "round {round}: the whole winning batch applied"
        );
    }
    let stats = engine.stats();
    assert_eq!(stats.storage.keys, 2 * ROUNDS as u64 + blockers);
    assert_eq!(
        stats.storage.committed_version,
        2 * ROUNDS as u64 + blockers
    );
    assert_eq!(stats.metrics.batches, ROUNDS as u64);
    assert_eq!(
        stats.metrics.condition_failures,
        ((CONTENDERS - 1) * ROUNDS) as u64
    );
    let commands = (CONTENDERS * ROUNDS) as u64 + blockers;
    eprintln!(
        "{sync:?}, one group {one_group}: {commands} commands in {} commit groups",
        stats.metrics.commit_groups
    );
    if one_group {
        // Typically two groups a round (the blocker, then all 8 claims); a
        // claim arriving late merely makes another group.
        assert!(
            stats.metrics.commit_groups <= commands / 2,
            "the claims were meant to share groups: {commands} commands in {} groups",
            stats.metrics.commit_groups
        );
    }
}

#[test]
fn concurrent_absent_claims_have_exactly_one_winner_sync_os() {
    exactly_one_claim_wins(SyncMode::Os, false);
}

#[test]
fn concurrent_absent_claims_have_exactly_one_winner_sync_always() {
    exactly_one_claim_wins(SyncMode::Always, false);
}

#[test]
fn absent_claims_in_one_commit_group_have_exactly_one_winner() {
    exactly_one_claim_wins(SyncMode::Always, true);
}

/// Compare-and-set increments (`VersionIs` batches) from 8 threads lose no update.
#[test]
fn concurrent_version_checked_increments_lose_no_update() {
    const INCREMENTS: u64 = 40;
    let tmp = tempfile::tempdir().unwrap();
    let engine = Arc::new(KvEngine::open(config(tmp.path(), SyncMode::Os)).unwrap());
    let key = b"counter".to_vec();
    engine.put(&key, b"0").unwrap();
    let barrier = Arc::new(Barrier::new(CONTENDERS));
    let threads: Vec<_> = (0..CONTENDERS)
        .map(|_| {
            let (engine, barrier, key) = (engine.clone(), barrier.clone(), key.clone());
            thread::spawn(move || {
                barrier.wait();
                let mut retries = 0u64;
                for _ in 0..INCREMENTS {
                    loop {
                        let current = engine.get_versioned(&key).unwrap().expect("counter");
                        let n: u64 = std::str::from_utf8(&current.value)
                            .unwrap()
                            .parse()
                            .unwrap();
                        let applied = engine
                            .apply(Command::Batch {
                                conditions: vec![Condition::VersionIs {
                                    key: key.clone(),
                                    version: current.version,
                                }],
                                ops: vec![Op::Set {
                                    key: key.clone(),
                                    value: (n + 1).to_string().into_bytes(),
                                }],
                            })
                            .unwrap();
                        match applied.outcome {
                            Outcome::Batch {
                                applied_ops: 1,
                                last_version: Some(v),
                            } => {
                                assert!(v > current.version);
                                break;
                            }
                            Outcome::ConditionFailed { index: 0, .. } => retries += 1,
                            other => panic!("unexpected outcome {other:?}"),
                        }
                    }
                }
                retries
            })
        })
        .collect();
    let retries: u64 = join_all(threads).into_iter().sum();
    let total = INCREMENTS * CONTENDERS as u64;
    let current = engine.get_versioned(&key).unwrap().unwrap();
    assert_eq!(current.value, total.to_string().into_bytes());
    // One version for the initial put, one per successful increment.
    assert_eq!(current.version, total + 1);
    let stats = engine.stats();
    assert_eq!(stats.metrics.batches, total);
    assert_eq!(stats.metrics.condition_failures, retries);
}

// ---------------------------------------------------------------------------
// Group commit
// ---------------------------------------------------------------------------

/// Makes every fsync take at least `delay`, like a slow disk.
struct SlowSync(Duration);

impl IoFaults for SlowSync {
    fn check(&self, op: IoOp, _file: &str) -> std::io::Result<()> {
        if op == IoOp::SyncFile {
            thread::sleep(self.0);
        }
        Ok(())
    }
}

/// 8 writers in `sync = always`; returns the versions they were given.
fn group_commit(options: EngineOptions) -> (Vec<u64>, hightower_engine::Stats) {
    const PUTS_PER_WRITER: usize = 100;
    let tmp = tempfile::tempdir().unwrap();
    let engine = Arc::new(
        KvEngine::open_with(
            Config {
                segment_size_bytes: 64 << 20,
                ..config(tmp.path(), SyncMode::Always)
            },
            options,
        )
        .unwrap(),
    );
    let barrier = Arc::new(Barrier::new(CONTENDERS));
    let threads: Vec<_> = (0..CONTENDERS)
        .map(|writer| {
            let (engine, barrier) = (engine.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                (0..PUTS_PER_WRITER)
                    .map(|i| {
                        let key = format!("w{writer}/{i}");
                        let version = engine.put(key.as_bytes(), [writer as u8; 64]).unwrap();
                        assert_eq!(
                            engine
                                .get_versioned(key.as_bytes())
                                .unwrap()
                                .unwrap()
                                .version,
                            version
                        );
                        version
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut versions: Vec<u64> = join_all(threads).into_iter().flatten().collect();
    versions.sort_unstable();
    let puts = (CONTENDERS * PUTS_PER_WRITER) as u64;
    // Every put got its own version, and together they are 1..=puts.
    assert_eq!(versions, (1..=puts).collect::<Vec<_>>());
    let stats = engine.stats();
    assert_eq!(stats.metrics.puts, puts);
    assert_eq!(stats.storage.keys, puts);
    (versions, stats)
}

#[test]
fn eight_writers_share_commit_groups_sync_always() {
    let (versions, stats) = group_commit(EngineOptions::default());
    let puts = versions.len() as u64;
    let m = &stats.metrics;
    eprintln!(
        "{puts} puts, {} commit groups, {} fsyncs",
        m.commit_groups, m.fsyncs
    );
    assert!(m.commit_groups >= 1);
    assert!(
        m.commit_groups < puts,
        "{puts} puts from 8 threads should share groups, took {} groups",
        m.commit_groups
    );
    // One fsync per group at most, plus the segment's creation.
    assert!(
        m.fsyncs <= m.commit_groups + 1,
        "{} fsyncs for {} groups",
        m.fsyncs,
        m.commit_groups
    );
}

#[test]
fn with_a_slow_disk_groups_are_large() {
    let options = EngineOptions {
        io_faults: Some(Arc::new(SlowSync(Duration::from_millis(1)))),
        ..EngineOptions::default()
    };
    let (versions, stats) = group_commit(options);
    let puts = versions.len() as u64;
    let m = &stats.metrics;
    eprintln!(
        "slow disk: {puts} puts, {} commit groups, {} fsyncs",
        m.commit_groups, m.fsyncs
    );
    assert!(
        m.commit_groups * 3 <= puts,
        "with 1 ms fsyncs 8 writers should average 3+ puts a group: {puts} puts, {} groups",
        m.commit_groups
    );
    assert!(m.fsyncs <= m.commit_groups + 1);
}

/// Writers, readers, a tiny hot index and a maintenance thread running
/// every millisecond (metadata, audits, compaction): a key a thread wrote
/// and did not delete always reads back, and a delete of it finds it.
/// Segment metadata must never be built for the active segment: that made
/// its keys evictable and then unfindable.
#[test]
fn live_keys_stay_readable_under_eviction_and_background_compaction() {
    let tmp = tempfile::tempdir().unwrap();
    let config = Config {
        sync: SyncMode::Os,
        segment_size_bytes: 16 << 10,
        hot_index_max_entries: 256,
        compaction_dead_ratio: 0.1,
        maintenance_interval_ms: 1,
        ..Config::new(tmp.path())
    };
    let engine = Arc::new(KvEngine::open(config).unwrap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let mut live: Vec<String> = Vec::new();
                let mut state = t + 1;
                let mut next = move || {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state
                };
                for n in 0..6_000u64 {
                    if next() % 10 < 2 && !live.is_empty() {
                        let at = (next() % live.len() as u64) as usize;
                        let key = live.swap_remove(at);
                        let deleted = engine.delete(key.as_bytes()).unwrap();
                        assert!(
                            deleted.is_some(),
                            "thread {t} op {n}: delete of live {key} found nothing"
                        );
                    } else {
                        let key = format!("t{t}-p{n}");
                        engine
                            .put(key.as_bytes(), vec![b'v'; 8 + (n % 300) as usize])
                            .unwrap();
                        live.push(key);
                    }
                    if !live.is_empty() {
                        let key = &live[(next() % live.len() as u64) as usize];
                        assert!(
                            engine.get(key.as_bytes()).unwrap().is_some(),
                            "thread {t} op {n}: get of live {key} found nothing"
                        );
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let stats = engine.stats();
    assert!(
        stats.metrics.compactions > 0,
        "compaction ran: {:?}",
        stats.metrics
    );
    assert!(
        stats.storage.hot_evictions > 0,
        "the budget evicted: {:?}",
        stats.storage
    );
}
