//! Compaction: put and get latency while it runs, and space after it.
//!
//! **Latency.** For each sync mode in `$HIGHTOWER_BENCH_SYNC_MODES` (default
//! `os,interval`) and each of `$HIGHTOWER_BENCH_ROUNDS` rounds (default 3):
//! a fresh store with background compaction off (`compaction_dead_ratio =
//! 1`, which no segment reaches) is filled with `n` keys
//! (`$HIGHTOWER_BENCH_KEYS`, default 2,000,000, so the compaction lasts a few seconds) and every key is then
//! overwritten 3 times (1,000-op batches), so 3/4 of the log is dead. The
//! store is flushed and its segment metadata written, then two client
//! threads run, one doing single puts of random present keys, one doing
//! gets of random present keys, each paced to a fixed rate
//! (`$HIGHTOWER_BENCH_PUT_RATE`, default 10,000/s; `$HIGHTOWER_BENCH_GET_RATE`,
//! default 20,000/s; a client that falls behind does not burst to catch up):
//!
//! - `idle`: `$HIGHTOWER_BENCH_IDLE_SECONDS` (default 5) with no compaction;
//! - `compacting`: while `KvEngine::compact()` runs on another thread.
//!
//! Each operation's latency (its own call, start to return) goes into a
//! histogram (log-linear buckets, 16 per power of two: quantiles are within
//! 6.25%; the maximum is exact). `p99_co` is the 99th percentile corrected
//! for coordinated omission: an operation that took longer than the pacing
//! interval also counts the operations the client would have issued
//! meanwhile (as HdrHistogram's `recordValueWithExpectedInterval`). Figures
//! are the median over the rounds (min, max, count). With
//! `$HIGHTOWER_BENCH_SLOW_US` set, every call slower than that, and each
//! phase's start, is logged to stderr with its wall-clock time.
//!
//! **Space.** A `sync = os` store with default settings (background
//! compaction on) gets `n` keys, then every key is overwritten 3 times,
//! then `compact()` runs and the store is closed. Reported: the bytes of
//! the data directory's segment and metadata files against the live data,
//! `n × (28-byte record header + 16-byte key + 100-byte value)`, with each
//! `seg-*.meta` file's size; then the store is reopened 3 times (open and
//! a first get, in this process) to time a restart after a compaction.
//!
//! Output: `compaction.<name> <value>` lines;
//! `cargo bench -p hightower-engine --bench compaction_bench | grep '^compaction\.'`.
//! Quick run: `HIGHTOWER_BENCH_KEYS=200000 HIGHTOWER_BENCH_ROUNDS=1`.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hightower_engine::{Config, KvEngine, SyncMode};
use support::{Histogram, RECORD_BYTES, Rng, env_u64, key, per_sec, secs, spread};

const PREFIX: &str = "compaction";
const DEFAULT_KEYS: u64 = 2_000_000;
const OVERWRITES: u64 = 3;
const DEFAULT_ROUNDS: u64 = 3;

fn main() {
    let n = env_u64("HIGHTOWER_BENCH_KEYS", DEFAULT_KEYS).max(1);
    let rounds = env_u64("HIGHTOWER_BENCH_ROUNDS", DEFAULT_ROUNDS).max(1);
    let modes = std::env::var("HIGHTOWER_BENCH_SYNC_MODES").unwrap_or("os,interval".into());
    let modes: Vec<SyncMode> = modes
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| match s.trim() {
            "os" => SyncMode::Os,
            "interval" => SyncMode::Interval,
            "always" => SyncMode::Always,
            other => panic!("unknown sync mode {other}"),
        })
        .collect();
    let clients = Clients {
        put_rate: env_u64("HIGHTOWER_BENCH_PUT_RATE", 10_000).max(1),
        get_rate: env_u64("HIGHTOWER_BENCH_GET_RATE", 20_000).max(1),
        idle: Duration::from_secs(env_u64("HIGHTOWER_BENCH_IDLE_SECONDS", 5).max(1)),
    };
    report("keys", n);
    report("overwrites", OVERWRITES);
    report("put_rate_target", clients.put_rate);
    report("get_rate_target", clients.get_rate);

    // figure name -> one value per round
    let mut figures: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 0..rounds {
        for &mode in &modes {
            let run = latency_round(n, mode, &clients, round);
            for (name, value) in run {
                figures
                    .entry(format!("latency.{mode}.{name}"))
                    .or_default()
                    .push(value);
            }
        }
    }
    for (name, values) in &figures {
        report(name, spread(values, 1));
    }

    space(n);
}

struct Clients {
    put_rate: u64,
    get_rate: u64,
    idle: Duration,
}

/// Fills a store with dead data, then measures both phases. Returns
/// `(figure, value)` pairs: latencies in µs, rates per second.
fn latency_round(n: u64, sync: SyncMode, clients: &Clients, round: u64) -> Vec<(String, f64)> {
    let dir = support::temp_store_dir("hightower-compaction-");
    let config = Config {
        sync,
        // No segment is ever entirely dead (its header is not), so the
        // maintenance thread never starts a compaction of its own.
        compaction_dead_ratio: 1.0,
        ..Config::new(dir.path())
    };
    let engine = KvEngine::open(config).expect("open the engine");
    let mut rng = Rng(0xC0C0 + round);
    let started = Instant::now();
    for _ in 0..=OVERWRITES {
        support::fill(&engine, n, &mut rng);
    }
    let fill_seconds = started.elapsed().as_secs_f64();
    engine.flush().expect("flush");
    engine
        .build_pending_metas()
        .expect("write segment metadata");
    let before = engine.stats().storage;
    assert_eq!(before.keys, n);

    let mut out = vec![
        ("fill_seconds".to_string(), fill_seconds),
        ("segments_before".to_string(), before.segments as f64),
        (
            "disk_mib_before".to_string(),
            before.disk_bytes as f64 / 1048576.0,
        ),
    ];
    let idle = run_clients(&engine, n, clients, round, |stop| {
        trace_phase(sync, "idle");
        std::thread::sleep(clients.idle);
        stop.store(true, Ordering::SeqCst);
    });
    let mut compaction_seconds = 0.0;
    let mut reclaimed = 0;
    let compacting = run_clients(&engine, n, clients, round, |stop| {
        trace_phase(sync, "compacting");
        let started = Instant::now();
        let report = engine.compact().expect("compact");
        trace_phase(sync, "compacted");
        compaction_seconds = started.elapsed().as_secs_f64();
        reclaimed = report.input_bytes - report.output_bytes;
        stop.store(true, Ordering::SeqCst);
    });
    out.push(("compaction_seconds".into(), compaction_seconds));
    out.push((
        "compaction_reclaimed_mib".into(),
        reclaimed as f64 / 1048576.0,
    ));
    for (phase, results) in [("idle", idle), ("compacting", compacting)] {
        for (op, result) in [("put", &results.0), ("get", &results.1)] {
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            let prefix = format!("{op}.{phase}");
            out.push((format!("{prefix}.p50_us"), us(result.raw.quantile(0.50))));
            out.push((format!("{prefix}.p99_us"), us(result.raw.quantile(0.99))));
            out.push((format!("{prefix}.p999_us"), us(result.raw.quantile(0.999))));
            out.push((format!("{prefix}.max_us"), us(result.raw.max())));
            out.push((
                format!("{prefix}.p99_co_us"),
                us(result.corrected.quantile(0.99)),
            ));
            out.push((
                format!("{prefix}.ops_per_sec"),
                per_sec(result.raw.count(), result.elapsed),
            ));
        }
    }
    assert_eq!(engine.stats().storage.keys, n);
    engine.close().expect("close the engine");
    out
}

struct ClientResult {
    raw: Histogram,
    corrected: Histogram,
    elapsed: Duration,
}

/// Runs the put and the get client until `driver` (on this thread) sets
/// the stop flag.
fn run_clients(
    engine: &KvEngine,
    n: u64,
    clients: &Clients,
    round: u64,
    driver: impl FnOnce(&AtomicBool),
) -> (ClientResult, ClientResult) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let stop = &stop;
        let putter = scope.spawn(move || {
            let mut rng = Rng(0x9070 + round);
            paced(clients.put_rate, stop, "put", || {
                let k = key(rng.below(n));
                engine.put(k, rng.value()).expect("put");
            })
        });
        let getter = scope.spawn(move || {
            let mut rng = Rng(0x6E70 + round);
            paced(clients.get_rate, stop, "get", || {
                let value = engine.get(key(rng.below(n))).expect("get");
                assert!(value.is_some(), "a present key");
            })
        });
        driver(stop);
        (putter.join().unwrap(), getter.join().unwrap())
    })
}

/// Calls `op` about `rate` times a second until `stop`, timing each call.
/// With `$HIGHTOWER_BENCH_SLOW_US` set, a call slower than that is logged
/// to stderr with its wall-clock time (to line up with `strace -tt`).
fn paced(rate: u64, stop: &AtomicBool, label: &str, mut op: impl FnMut()) -> ClientResult {
    let slow = std::env::var("HIGHTOWER_BENCH_SLOW_US")
        .ok()
        .map(|us| Duration::from_micros(us.parse().expect("a number of µs")));
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut result = ClientResult {
        raw: Histogram::default(),
        corrected: Histogram::default(),
        elapsed: Duration::ZERO,
    };
    let started = Instant::now();
    let mut next = started;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        let begun = Instant::now();
        op();
        let took = begun.elapsed();
        if slow.is_some_and(|slow| took > slow) {
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            eprintln!(
                "slow {label} at {:.6} took {} us",
                at.as_secs_f64(),
                took.as_micros()
            );
        }
        result.raw.record(took);
        result.corrected.record_corrected(took, interval);
        // No burst after a stall: the next call is one interval after this
        // one was due, or now if that has passed.
        next = (next + interval).max(Instant::now());
    }
    result.elapsed = started.elapsed();
    result
}

/// With `$HIGHTOWER_BENCH_SLOW_US` set, logs a phase's wall-clock start.
fn trace_phase(sync: SyncMode, phase: &str) {
    if std::env::var_os("HIGHTOWER_BENCH_SLOW_US").is_some() {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        eprintln!("phase {sync} {phase} at {:.6}", at.as_secs_f64());
    }
}

/// Space amplification after 3 overwrites of every key and a compaction.
fn space(n: u64) {
    let dir = support::temp_store_dir("hightower-space-");
    let config = Config {
        sync: SyncMode::Os,
        ..Config::new(dir.path())
    };
    let engine = KvEngine::open(config).expect("open the engine");
    let mut rng = Rng(0x5BACE);
    for _ in 0..=OVERWRITES {
        support::fill(&engine, n, &mut rng);
    }
    let before = engine.stats();
    let started = Instant::now();
    let compacted = engine.compact().expect("compact");
    report("space.compact_seconds", secs(started.elapsed()));
    let stats = engine.stats();
    assert_eq!(stats.storage.keys, n);
    let live = n * RECORD_BYTES;
    report("space.live_bytes", live);
    report("space.before.disk_bytes", before.storage.disk_bytes);
    report("space.compactions_with_compact", stats.metrics.compactions);
    report("space.compact.input_bytes", compacted.input_bytes);
    report("space.compact.output_bytes", compacted.output_bytes);
    report("space.stats.disk_bytes", stats.storage.disk_bytes);
    report("space.stats.live_bytes", stats.storage.live_bytes);
    let config = engine.config().clone();
    engine.close().expect("close the engine");
    let (segments, metas, meta_files) = support::file_bytes(dir.path());
    report("space.files.segment_bytes", segments);
    report("space.files.meta_bytes", metas);
    for (name, len) in &meta_files {
        report(&format!("space.files.{name}"), len);
    }
    let ratio = |bytes: u64| format!("{:.3}", bytes as f64 / live as f64);
    report("space.amplification.total", ratio(segments + metas));
    report("space.amplification.segments_only", ratio(segments));
    report("space.amplification.metadata_only", ratio(metas));

    // Restart after the compaction: open and the first get, 3 times.
    let mut restarts = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let engine = KvEngine::open(config.clone()).expect("reopen");
        assert!(engine.get(key(n / 2)).expect("get").is_some());
        restarts.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(engine.stats().storage.keys, n);
        engine.close().expect("close the engine");
    }
    report("space.reopen_first_get_ms", spread(&restarts, 1));
}

fn report(name: &str, value: impl std::fmt::Display) {
    println!("{PREFIX}.{name} {value}");
}
