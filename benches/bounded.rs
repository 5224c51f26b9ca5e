//! Reads with a bounded hot index: 10,000,000 keys (`$HIGHTOWER_BENCH_KEYS`)
//! and a 64 MiB hot-index budget (`$HIGHTOWER_BENCH_HOT_BUDGET_MIB`).
//!
//! 1. Fills a `sync = os` store with `hot_index_max_bytes` set, 16-byte keys
//!    and 100-byte random values in 1,000-op batches, and closes it.
//! 2. In a fresh child process (so its peak RSS is the read phase's own):
//!    reopens it (open + first get timed), then `$HIGHTOWER_BENCH_ROUNDS`
//!    rounds (default 5) of three workloads in turn, each
//!    `$HIGHTOWER_BENCH_GETS` timed gets (default 1,000,000) after a quarter
//!    as many untimed ones:
//!    - `uniform`: keys drawn uniformly from the `n` present keys;
//!    - `zipf`: Zipfian ranks with theta 0.99 (YCSB's default), ranks
//!      scattered over the keys by a bijection so the popular keys are
//!      spread over the whole log;
//!    - `absent`: keys never written (what the Bloom filters decide).
//!
//! Reported per workload: the median of the rounds' gets per second (with
//! min and max) and the hot-index hit rate, `1 - hot_promotions / gets` (a
//! present key missing from the hot index is found through segment
//! metadata and promoted). Then the index memory (hot tables plus the
//! metadata kept hot), the hot entries and evictions, and the child's
//! memory: peak RSS (`VmHWM`) and RSS split into heap (`rss_anon`) and
//! file-backed pages (`rss_file`: mapped segments and metadata; a read
//! copies its record out of the segment's memory map, so every page a read
//! touched counts until the kernel reclaims it).
//!
//! Output: `bounded.<name> <value>` lines;
//! `cargo bench -p hightower-engine --bench bounded | grep '^bounded\.'`.
//! Quick run: `HIGHTOWER_BENCH_KEYS=1000000 HIGHTOWER_BENCH_HOT_BUDGET_MIB=8`.
//! `HIGHTOWER_BENCH_KEEP=1` keeps the store (its path goes to stderr).

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use hightower_engine::{Config, KvEngine, SyncMode};
use support::{
    Rng, Scatter, VALUE_BYTES, Zipf, child_phase, env_u64, key, memory_mib, per_sec, run_child,
    secs, spread,
};

const PREFIX: &str = "bounded";
const DEFAULT_KEYS: u64 = 10_000_000;
const DEFAULT_BUDGET_MIB: u64 = 64;
const DEFAULT_ROUNDS: u64 = 5;
const DEFAULT_GETS: u64 = 1_000_000;
const ZIPF_THETA: f64 = 0.99;

fn main() {
    let n = env_u64("HIGHTOWER_BENCH_KEYS", DEFAULT_KEYS).max(2);
    let budget = env_u64("HIGHTOWER_BENCH_HOT_BUDGET_MIB", DEFAULT_BUDGET_MIB) << 20;
    if let Some((phase, dir)) = child_phase() {
        assert_eq!(phase, "read");
        read_phase(&dir, n, budget);
        return;
    }
    let dir = support::temp_store_dir("hightower-bounded-");
    report("keys", n);
    report("hot_index_max_bytes", budget);
    report("data_dir", dir.path().display());

    let engine = KvEngine::open(config(dir.path(), budget)).expect("open the engine");
    let wall = Instant::now();
    let applying = support::fill(&engine, n, &mut Rng(0xF111));
    let fill_wall = wall.elapsed();
    report("fill.seconds", secs(applying));
    report("fill.ops_per_sec", format!("{:.0}", per_sec(n, applying)));
    report("fill.wall_seconds", secs(fill_wall));
    let stats = engine.stats().storage;
    assert_eq!(stats.keys, n);
    report("fill.index_memory_bytes", stats.index_memory_bytes);
    report("fill.hot_entries", stats.hot_entries);
    report_memory("fill");
    let closing = Instant::now();
    engine.close().expect("close the engine");
    report("close_seconds", secs(closing.elapsed()));
    let (segment_bytes, meta_bytes, metas) = support::file_bytes(dir.path());
    report("disk.segment_bytes", segment_bytes);
    report("disk.meta_bytes", meta_bytes);
    report("disk.meta_files", metas.len());

    for (name, value) in run_child(PREFIX, "read", dir.path(), &[]) {
        report(&name, value);
    }
    if std::env::var_os("HIGHTOWER_BENCH_KEEP").is_some() {
        eprintln!("kept the store in {}", dir.keep().display());
    }
}

fn config(dir: &Path, hot_index_max_bytes: u64) -> Config {
    Config {
        sync: SyncMode::Os,
        hot_index_max_bytes,
        ..Config::new(dir)
    }
}

#[derive(Clone, Copy)]
enum Workload {
    Uniform,
    Zipf,
    Absent,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Uniform => "uniform",
            Workload::Zipf => "zipf",
            Workload::Absent => "absent",
        }
    }
}

/// Child: reopen, then rounds of the three workloads; report.
fn read_phase(dir: &Path, n: u64, budget: u64) {
    let started = Instant::now();
    let engine = KvEngine::open(config(dir, budget)).expect("reopen the engine");
    let opened = started.elapsed();
    assert!(engine.get(key(n / 2)).expect("get").is_some());
    report("reopen.open_seconds", secs(opened));
    report("reopen.first_get_seconds", secs(started.elapsed()));
    report_memory("after_open");

    let rounds = env_u64("HIGHTOWER_BENCH_ROUNDS", DEFAULT_ROUNDS).max(1);
    let gets = env_u64("HIGHTOWER_BENCH_GETS", DEFAULT_GETS).max(1);
    let zipf = Zipf::new(n, ZIPF_THETA);
    let scatter = Scatter::new(n);
    report("zipf.theta", zipf.theta());
    report(
        "zipf.top_key_share",
        format!("{:.4}", zipf.top_probability()),
    );
    let workloads = [Workload::Uniform, Workload::Zipf, Workload::Absent];
    let mut rates = vec![Vec::new(); workloads.len()];
    let mut hit_rates = vec![Vec::new(); workloads.len()];
    let mut rngs: Vec<Rng> = (0..workloads.len() as u64)
        .map(|i| Rng(0xBEEF + i))
        .collect();
    for _ in 0..rounds {
        for (w, &workload) in workloads.iter().enumerate() {
            let rng = &mut rngs[w];
            let mut next_key = || match workload {
                Workload::Uniform => key(rng.below(n)),
                Workload::Zipf => key(scatter.apply(zipf.next(rng))),
                Workload::Absent => key(n + rng.below(u64::MAX / 2)),
            };
            // Untimed: let the hot index adapt to this workload.
            run_gets(&engine, gets / 4, &mut next_key, workload);
            let before = engine.stats().metrics;
            let elapsed = run_gets(&engine, gets, &mut next_key, workload);
            let after = engine.stats().metrics;
            assert_eq!(after.gets - before.gets, gets);
            rates[w].push(per_sec(gets, elapsed));
            let promoted = after.hot_promotions - before.hot_promotions;
            hit_rates[w].push(1.0 - promoted as f64 / gets as f64);
        }
    }
    for (w, workload) in workloads.iter().enumerate() {
        let name = workload.name();
        report(&format!("{name}.gets_per_sec"), spread(&rates[w], 0));
        if !matches!(workload, Workload::Absent) {
            report(&format!("{name}.hot_hit_rate"), spread(&hit_rates[w], 3));
        }
    }
    let stats = engine.stats();
    let storage = &stats.storage;
    assert_eq!(storage.keys, n);
    report("index_memory_bytes", storage.index_memory_bytes);
    report(
        "index_bytes_per_key",
        format!("{:.1}", storage.index_memory_bytes as f64 / n as f64),
    );
    report("hot_entries", storage.hot_entries);
    report("hot_evictions", storage.hot_evictions);
    report("segments", storage.segments);
    report("disk_bytes", storage.disk_bytes);
    report_memory("end");
    engine.close().expect("close the engine");
}

/// `count` gets of the keys `next_key` yields; checks what they return.
fn run_gets(
    engine: &KvEngine,
    count: u64,
    next_key: &mut impl FnMut() -> [u8; support::KEY_BYTES],
    workload: Workload,
) -> Duration {
    let present = !matches!(workload, Workload::Absent);
    let started = Instant::now();
    let mut bytes = 0;
    for _ in 0..count {
        let value = engine.get(next_key()).expect("get");
        assert_eq!(value.is_some(), present);
        bytes += value.map_or(0, |v| v.len());
    }
    let elapsed = started.elapsed();
    assert_eq!(
        black_box(bytes),
        if present {
            count as usize * VALUE_BYTES
        } else {
            0
        }
    );
    elapsed
}

fn report(name: &str, value: impl std::fmt::Display) {
    println!("{PREFIX}.{name} {value}");
}

fn report_memory(phase: &str) {
    for (name, mib) in memory_mib() {
        report(&format!("memory.{phase}.{name}_mib"), format!("{mib:.1}"));
    }
}
