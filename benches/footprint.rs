//! Memory footprint and restart cost at 1,000,000 keys (`$HIGHTOWER_BENCH_KEYS`).
//!
//! 1. Fills a `sync = os` store with 16-byte keys and 100-byte random values
//!    in 1,000-op batches, then does as many random gets of present keys, in
//!    this process (no hot-index budget), and closes it.
//! 2. Restart: times `KvEngine::open` plus the first successful get of a key
//!    in a sealed segment, each in a fresh child process, in five ways:
//!    with segment metadata, log in the page cache (`restart.meta_cached`)
//!    or evicted from it (`restart.meta_evicted`), and with the `seg-*.meta`
//!    files deleted first, so open rebuilds them by scanning every segment
//!    (the full replay: `restart.replay_cached` / `restart.replay_evicted`),
//!    and with the metadata such a replay rebuilt (`restart.meta_rebuilt_cached`:
//!    it lacks the live key count, which open then computes by merging all
//!    metadata). The metadata the writer wrote is restored before each
//!    `meta_*` way.
//!    `$HIGHTOWER_BENCH_ROUNDS` rounds (default 5), the five ways in turn in
//!    each round; the medians are reported, with min, max and count.
//! 3. Memory per key, each mode in a fresh child process (so its peak RSS is
//!    its own): `memory_unbounded` reopens without a budget, waits for the
//!    maintenance thread to fill the hot index from metadata, then does `n`
//!    random gets; `memory_bounded_<MiB>mib` does the gets (there is no
//!    warm-up with a budget) with `hot_index_max_bytes` set to each of
//!    `$HIGHTOWER_BENCH_HOT_BUDGETS_MIB`
//!    (default `64,8`; at 1M keys a 64 MiB budget holds every key, 8 MiB
//!    about a quarter of them).
//!
//! `HIGHTOWER_BENCH_KEEP=1` keeps the store (its path goes to stderr).
//!
//! Output: one `footprint.<name> <value>` line per figure, units in the name;
//! `cargo bench -p hightower-engine --bench footprint | grep '^footprint\.'`.
//! The peak RSS is the process's `VmHWM`, which counts the pages of memory-mapped
//! segments that reads touched as well as the heap (`rss_file` / `rss_anon`).
//! `index_memory_bytes` is the engine's own count: hot-index tables plus the
//! metadata it keeps hot (block pointers, first keys, Bloom filters), which
//! is file-backed (mapped `seg-*.meta`), not heap.

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use hightower_engine::{Config, KvEngine, SyncMode};
use support::{
    Rng, VALUE_BYTES, child_phase, env_u64, evict_from_page_cache, key, load_into_page_cache,
    median, memory_mib, per_sec, remove_metadata, run_child, secs, spread,
};

const PREFIX: &str = "footprint";
const DEFAULT_KEYS: u64 = 1_000_000;
const DEFAULT_ROUNDS: u64 = 5;
/// Child processes read their hot-index budget from here (bytes, 0: none).
const HOT_BYTES_VAR: &str = "HIGHTOWER_BENCH_HOT_BYTES";

fn main() {
    // `cargo bench` passes `--bench` (and any filter); there is nothing to select here.
    let n = env_u64("HIGHTOWER_BENCH_KEYS", DEFAULT_KEYS).max(1);
    if let Some((phase, dir)) = child_phase() {
        match phase.as_str() {
            "restart" => restart_child(&dir, n),
            "memory" => memory_child(&dir, n),
            other => panic!("unknown phase {other}"),
        }
        return;
    }
    let rounds = env_u64("HIGHTOWER_BENCH_ROUNDS", DEFAULT_ROUNDS).max(1);
    let dir = support::temp_store_dir("hightower-footprint-");
    report("keys", n);
    report("data_dir", dir.path().display());
    report_memory("start");
    fill_and_get(&config(dir.path(), 0), n);

    // Restart, in fresh processes, the ways taking turns each round. The
    // metadata the writer wrote is put back before each "meta" way: a full
    // replay rewrites it without the live key count (see `meta_rebuilt`).
    let saved_metadata = MetadataCopy::save(dir.path());
    let ways = [
        ("meta_cached", Metadata::Written, false),
        ("meta_evicted", Metadata::Written, true),
        ("replay_cached", Metadata::Deleted, false),
        ("replay_evicted", Metadata::Deleted, true),
        ("meta_rebuilt_cached", Metadata::AsLeft, false),
    ];
    let mut figures: Vec<[Vec<f64>; 2]> = vec![Default::default(); ways.len()];
    let mut replayed = vec![String::new(); ways.len()];
    for _ in 0..rounds {
        for (way, &(_, metadata, evicted)) in ways.iter().enumerate() {
            match metadata {
                Metadata::Written => saved_metadata.restore(dir.path()),
                // None below one segment's worth of keys (nothing is sealed).
                Metadata::Deleted => drop(remove_metadata(dir.path())),
                Metadata::AsLeft => {}
            }
            if evicted {
                evict_from_page_cache(dir.path());
            } else {
                load_into_page_cache(dir.path());
            }
            let out = run_child(PREFIX, "restart", dir.path(), &[]);
            for (i, name) in ["open_seconds", "first_get_seconds"].iter().enumerate() {
                figures[way][i].push(out[*name].parse().expect("a number"));
            }
            replayed[way] = format!(
                "{} records, {} segment metadata files rebuilt",
                out["records_replayed"], out["metadata_rebuilt"]
            );
        }
    }
    for (way, &(name, _, _)) in ways.iter().enumerate() {
        report(
            &format!("restart.{name}.open_ms"),
            spread(&ms(&figures[way][0]), 1),
        );
        report(
            &format!("restart.{name}.first_get_ms"),
            spread(&ms(&figures[way][1]), 1),
        );
        report(&format!("restart.{name}.scanned"), &replayed[way]);
    }
    report(
        "restart.replay_over_meta_cached",
        format!(
            "{:.1}x",
            median(&figures[2][1]) / median(&figures[0][1]).max(1e-9)
        ),
    );
    report(
        "restart.replay_over_meta_evicted",
        format!(
            "{:.1}x",
            median(&figures[3][1]) / median(&figures[1][1]).max(1e-9)
        ),
    );
    saved_metadata.restore(dir.path());

    // Memory per key, each mode in a fresh process.
    load_into_page_cache(dir.path());
    let mut modes = vec![("memory_unbounded".to_string(), 0u64)];
    let budgets = std::env::var("HIGHTOWER_BENCH_HOT_BUDGETS_MIB").unwrap_or("64,8".into());
    for mib in budgets.split(',').filter(|s| !s.trim().is_empty()) {
        let mib: u64 = mib.trim().parse().expect("budgets are whole MiB");
        modes.push((format!("memory_bounded_{mib}mib"), mib << 20));
    }
    for (name, bytes) in modes {
        let out = run_child(
            PREFIX,
            "memory",
            dir.path(),
            &[(HOT_BYTES_VAR, bytes.to_string())],
        );
        for (figure, value) in out {
            report(&format!("{name}.{figure}"), value);
        }
    }
    if std::env::var_os("HIGHTOWER_BENCH_KEEP").is_some() {
        eprintln!("kept the store in {}", dir.keep().display());
    }
}

/// The state of the `seg-*.meta` files a restart finds.
#[derive(Clone, Copy)]
enum Metadata {
    /// As the engine wrote them when the segments were sealed.
    Written,
    /// None: open rebuilds them by scanning every sealed segment.
    Deleted,
    /// As the previous open (a full replay) rebuilt them: they do not
    /// know the store's live key count, so open counts the keys by merging
    /// every segment's metadata.
    AsLeft,
}

/// A copy of the metadata files, to put back after a full replay.
struct MetadataCopy {
    files: Vec<(std::ffi::OsString, Vec<u8>)>,
}

impl MetadataCopy {
    fn save(dir: &Path) -> Self {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).expect("list the data directory") {
            let path = entry.expect("directory entry").path();
            if path.extension().is_some_and(|ext| ext == "meta") {
                let bytes = std::fs::read(&path).expect("read a metadata file");
                files.push((path.file_name().unwrap().to_owned(), bytes));
            }
        }
        MetadataCopy { files }
    }

    fn restore(&self, dir: &Path) {
        remove_metadata(dir);
        for (name, bytes) in &self.files {
            std::fs::write(dir.join(name), bytes).expect("restore a metadata file");
        }
    }
}

fn config(dir: &Path, hot_index_max_bytes: u64) -> Config {
    Config {
        sync: SyncMode::Os,
        hot_index_max_bytes,
        ..Config::new(dir)
    }
}

/// Part 1: fill, get every key once on average, report, close.
fn fill_and_get(config: &Config, n: u64) {
    let engine = KvEngine::open(config.clone()).expect("open the engine");
    let wall = Instant::now();
    let applying = support::fill(&engine, n, &mut Rng(0xF00D));
    let fill_wall = wall.elapsed();
    report("fill.seconds", secs(applying));
    report("fill.ops_per_sec", format!("{:.0}", per_sec(n, applying)));
    report("fill.wall_seconds", secs(fill_wall));
    report(
        "fill.wall_ops_per_sec",
        format!("{:.0}", per_sec(n, fill_wall)),
    );
    let stats = engine.stats().storage;
    assert_eq!(stats.keys, n);
    report("index.memory_bytes", stats.index_memory_bytes);
    report(
        "index.bytes_per_key",
        format!("{:.1}", stats.index_memory_bytes as f64 / n as f64),
    );
    report("log.disk_bytes", stats.disk_bytes);
    report("log.segments", stats.segments);
    report_memory("after_fill");

    let getting = random_gets(&engine, n);
    report("get.seconds", secs(getting));
    report("get.ops_per_sec", format!("{:.0}", per_sec(n, getting)));
    report_memory("after_get");
    report("peak_rss_bytes", support::status_kib("VmHWM") * 1024);
    report(
        "peak_rss_mib",
        format!("{:.1}", support::status_kib("VmHWM") as f64 / 1024.0),
    );
    engine.close().expect("close the engine");
}

/// `n` gets of random present keys; returns how long they took.
fn random_gets(engine: &KvEngine, n: u64) -> Duration {
    let mut rng = Rng(0x6E75);
    let started = Instant::now();
    let mut bytes = 0;
    for _ in 0..n {
        let value = engine.get(key(rng.below(n))).expect("get");
        bytes += value.expect("a filled key is present").len();
    }
    let getting = started.elapsed();
    assert_eq!(black_box(bytes), n as usize * VALUE_BYTES);
    getting
}

/// Child: open the store and get a key of a sealed segment; report how long.
fn restart_child(dir: &Path, n: u64) {
    let config = config(dir, env_u64(HOT_BYTES_VAR, 0));
    let probe = key(n / 2);
    let started = Instant::now();
    let engine = KvEngine::open(config).expect("reopen the engine");
    let opened = started.elapsed();
    let value = engine.get(probe).expect("get after reopen");
    let first_get = started.elapsed();
    assert_eq!(value.map(|v| v.len()), Some(VALUE_BYTES));
    let stats = engine.stats();
    assert_eq!(stats.storage.keys, n);
    report("open_seconds", secs(opened));
    report("first_get_seconds", secs(first_get));
    report("records_replayed", stats.recovery.records);
    report("metadata_rebuilt", stats.recovery.metadata_rebuilt);
    engine.close().expect("close the engine");
}

/// Child: open with the budget in `$HIGHTOWER_BENCH_HOT_BYTES`, let the hot
/// index fill (no budget) or get `n` random keys, and report memory per key.
fn memory_child(dir: &Path, n: u64) {
    let budget = env_u64(HOT_BYTES_VAR, 0);
    let engine = KvEngine::open(config(dir, budget)).expect("reopen the engine");
    report_memory("after_open");
    if budget == 0 {
        let started = Instant::now();
        while !engine.stats().storage.hot_index_complete {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "the hot index never filled"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        report("warm_up_seconds", secs(started.elapsed()));
        report_memory("after_warm_up");
    }
    let getting = random_gets(&engine, n);
    report("get_ops_per_sec", format!("{:.0}", per_sec(n, getting)));
    let stats = engine.stats();
    let storage = &stats.storage;
    assert_eq!(storage.keys, n);
    report("hot_index_max_bytes", budget);
    report("hot_entries", storage.hot_entries);
    report("hot_evictions", storage.hot_evictions);
    report("hot_promotions", stats.metrics.hot_promotions);
    report("index_memory_bytes", storage.index_memory_bytes);
    report(
        "index_bytes_per_key",
        format!("{:.1}", storage.index_memory_bytes as f64 / n as f64),
    );
    let memory = memory_mib();
    report_memory("after_get");
    let anon = memory
        .iter()
        .find(|(name, _)| *name == "rss_anon")
        .unwrap()
        .1;
    report(
        "rss_anon_bytes_per_key",
        format!("{:.1}", anon * 1024.0 * 1024.0 / n as f64),
    );
    engine.close().expect("close the engine");
}

fn ms(seconds: &[f64]) -> Vec<f64> {
    seconds.iter().map(|s| s * 1e3).collect()
}

fn report(name: &str, value: impl std::fmt::Display) {
    println!("{PREFIX}.{name} {value}");
}

fn report_memory(phase: &str) {
    for (name, mib) in memory_mib() {
        report(&format!("memory.{phase}.{name}_mib"), format!("{mib:.1}"));
    }
}
