//! Memory footprint and restart cost at 1,000,000 keys (`$HIGHTOWER_BENCH_KEYS`).
//!
//! Fills a `sync = os` store with 16-byte keys and 100-byte random values in
//! 1,000-op batches, does as many random gets of present keys, then reopens
//! the store twice (log in the page cache, then evicted from it) and times
//! `KvEngine::open` plus the first successful get, which is a full log replay.
//!
//! Output: one `footprint.<name> <value>` line per figure, units in the name;
//! `cargo bench -p hightower --bench footprint | grep '^footprint\.'`.
//! The peak RSS is the process's `VmHWM`, which counts the pages of memory-mapped
//! segments that reads touched as well as the heap (`rss_file` / `rss_anon`).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hightower::{Command, Config, KvEngine, Op, Outcome, SyncMode};

const KEY_BYTES: usize = 16;
const VALUE_BYTES: usize = 100;
const BATCH_OPS: u64 = 1_000;
const DEFAULT_KEYS: u64 = 1_000_000;

fn main() {
    // `cargo bench` passes `--bench` (and any filter); there is nothing to select here.
    let n = std::env::var("HIGHTOWER_BENCH_KEYS")
        .ok()
        .map(|s| {
            s.replace('_', "")
                .parse()
                .expect("HIGHTOWER_BENCH_KEYS must be a number")
        })
        .unwrap_or(DEFAULT_KEYS)
        .max(1);
    let root = std::env::var_os("HIGHTOWER_BENCH_DIR")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_TARGET_TMPDIR").map(PathBuf::from))
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&root).expect("create the benchmark directory");
    let dir = tempfile::Builder::new()
        .prefix("hightower-footprint-")
        .tempdir_in(&root)
        .expect("create a temporary data directory");
    let config = Config {
        sync: SyncMode::Os,
        ..Config::new(dir.path())
    };
    report("keys", n);
    report("data_dir", dir.path().display());
    report_memory("start");

    let engine = KvEngine::open(config.clone()).expect("open the engine");
    let mut rng = Rng(0xF00D);
    let mut applying = Duration::ZERO;
    let wall = Instant::now();
    let mut next = 0;
    while next < n {
        let ops = BATCH_OPS.min(n - next);
        let command = Command::Batch {
            conditions: Vec::new(),
            ops: (next..next + ops)
                .map(|i| Op::Set {
                    key: key(i).to_vec(),
                    value: rng.value().to_vec(),
                })
                .collect(),
        };
        let started = Instant::now();
        let applied = engine.apply(command).expect("apply a batch");
        applying += started.elapsed();
        assert!(
            matches!(applied.outcome, Outcome::Batch { applied_ops, .. } if u64::from(applied_ops) == ops)
        );
        next += ops;
    }
    let fill_wall = wall.elapsed();
    report("fill.seconds", secs(applying));
    report("fill.ops_per_sec", per_sec(n, applying));
    report("fill.wall_seconds", secs(fill_wall));
    report("fill.wall_ops_per_sec", per_sec(n, fill_wall));
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

    let mut rng = Rng(0x6E75);
    let started = Instant::now();
    let mut bytes = 0;
    for _ in 0..n {
        let value = engine.get(&key(rng.below(n))).expect("get");
        bytes += value.expect("a filled key is present").len();
    }
    let getting = started.elapsed();
    assert_eq!(black_box(bytes), n as usize * VALUE_BYTES);
    report("get.seconds", secs(getting));
    report("get.ops_per_sec", per_sec(n, getting));
    report_memory("after_get");
    report("peak_rss_bytes", status_kib("VmHWM") * 1024);
    report(
        "peak_rss_mib",
        format!("{:.1}", status_kib("VmHWM") as f64 / 1024.0),
    );

    engine.close().expect("close the engine");
    let probe = key(n / 2);
    // Warm: the log is still in the page cache, so this is the CPU cost of replay.
    reopen("reopen_warm", &config, &probe, n);
    // Cold: the segments are evicted from the page cache first (only these files).
    evict_from_page_cache(dir.path());
    reopen("reopen_cold", &config, &probe, n);
    report_memory("end");
}

/// Opens the store, gets `probe`, and reports how long that took.
fn reopen(name: &str, config: &Config, probe: &[u8], n: u64) {
    let started = Instant::now();
    let engine = KvEngine::open(config.clone()).expect("reopen the engine");
    let opened = started.elapsed();
    let value = engine.get(probe).expect("get after reopen");
    let first_get = started.elapsed();
    assert_eq!(value.map(|v| v.len()), Some(VALUE_BYTES));
    let recovery = engine.stats().recovery;
    assert_eq!(engine.stats().storage.keys, n);
    report(&format!("{name}.open_seconds"), secs(opened));
    report(&format!("{name}.first_get_seconds"), secs(first_get));
    report(&format!("{name}.records_replayed"), recovery.records);
    engine.close().expect("close the engine");
}

/// Writes back and drops the cached pages of every file in `dir`.
fn evict_from_page_cache(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("list the data directory") {
        let path = entry.expect("directory entry").path();
        let file = std::fs::File::open(&path).expect("open a data file");
        file.sync_all().expect("fsync a data file");
        // The pages are clean now, so the kernel drops them at once.
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed)
            .expect("posix_fadvise(DONTNEED)");
    }
}

fn report(name: &str, value: impl std::fmt::Display) {
    println!("footprint.{name} {value}");
}

fn report_memory(phase: &str) {
    for (field, name) in [
        ("VmHWM", "peak_rss"),
        ("VmRSS", "rss"),
        ("RssAnon", "rss_anon"),
        ("RssFile", "rss_file"),
    ] {
        report(
            &format!("memory.{phase}.{name}_mib"),
            format!("{:.1}", status_kib(field) as f64 / 1024.0),
        );
    }
}

/// A `kB` field of `/proc/self/status`, or 0 where there is none.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().strip_suffix("kB")?.trim().parse().ok()
        })
        .unwrap_or(0)
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

fn per_sec(n: u64, d: Duration) -> String {
    format!("{:.0}", n as f64 / d.as_secs_f64())
}

/// Same keys as `benches/engine.rs`: 8 scrambled bytes, then `i` big-endian.
fn key(i: u64) -> [u8; KEY_BYTES] {
    let mut k = [0; KEY_BYTES];
    k[..8].copy_from_slice(&mix(i).to_le_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn value(&mut self) -> [u8; VALUE_BYTES] {
        let mut v = [0; VALUE_BYTES];
        for chunk in v.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes()[..chunk.len()]);
        }
        v
    }
}
