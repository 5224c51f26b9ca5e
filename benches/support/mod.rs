//! What the engine's benchmarks (`engine`, `footprint`, `bounded`,
//! `compaction`) share: the workload's keys and values, settings from the
//! environment, `/proc/self/status` memory figures, medians, a latency
//! histogram, and running a phase in a child process (so its peak RSS is
//! its own).
//!
//! Keys are 8 scrambled bytes, then the key number big-endian (16 bytes);
//! values are 100 random bytes.

#![allow(dead_code)] // Each benchmark uses a different subset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::Duration;

use hightower_engine::{Command, KvEngine, Op, Outcome};

pub const KEY_BYTES: usize = 16;
pub const VALUE_BYTES: usize = 100;
/// Bytes of a record header in the log (`docs/format.md`).
pub const RECORD_HEADER_BYTES: u64 = 28;
/// One live record of this workload on disk: header, key, value.
pub const RECORD_BYTES: u64 = RECORD_HEADER_BYTES + KEY_BYTES as u64 + VALUE_BYTES as u64;
pub const BATCH_OPS: u64 = 1_000;

/// The environment variable that makes a benchmark binary run one phase
/// as a child of itself, and the one naming the child's data directory.
const CHILD_VAR: &str = "HIGHTOWER_BENCH_CHILD";
const CHILD_DIR_VAR: &str = "HIGHTOWER_BENCH_CHILD_DIR";

/// A count from the environment (`_` separators allowed), or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|s| {
            s.replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("{name} must be a number"))
        })
        .unwrap_or(default)
}

/// Parent of the benchmark data directories: `$HIGHTOWER_BENCH_DIR`, else
/// cargo's per-target scratch directory, else the system temp directory.
pub fn bench_root() -> PathBuf {
    let root = std::env::var_os("HIGHTOWER_BENCH_DIR")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_TARGET_TMPDIR").map(PathBuf::from))
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&root).expect("create the benchmark directory");
    root
}

pub fn temp_store_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(bench_root())
        .expect("create a temporary data directory")
}

/// The `i`th key: 8 scrambled bytes (so keys do not arrive in order) and
/// `i` itself (so keys are distinct). Keys `>= n` are absent from a store
/// filled with `0..n`.
pub fn key(i: u64) -> [u8; KEY_BYTES] {
    let mut k = [0; KEY_BYTES];
    k[..8].copy_from_slice(&mix(i).to_le_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

/// SplitMix64's finaliser: a bijection that scatters consecutive inputs.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// SplitMix64: deterministic, no dependency, a few ns a call.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is negligible here).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn value(&mut self) -> [u8; VALUE_BYTES] {
        let mut v = [0; VALUE_BYTES];
        for chunk in v.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes()[..chunk.len()]);
        }
        v
    }
}

/// Zipfian ranks in `0..n` with exponent `theta` (0 < theta < 1), by the
/// method of Gray et al., "Quickly generating billion-record synthetic
/// databases" (SIGMOD 1994), as YCSB's `ZipfianGenerator` does: O(n) once
/// to sum the zeta constant, O(1) a draw. Rank 0 is the most popular.
pub struct Zipf {
    n: f64,
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
    half_pow_theta: f64,
}

impl Zipf {
    pub fn new(n: u64, theta: f64) -> Self {
        assert!(n >= 2 && theta > 0.0 && theta < 1.0);
        let zeta = |count: u64| (1..=count).map(|i| (i as f64).powf(-theta)).sum::<f64>();
        let zeta_n = zeta(n);
        let zeta_2 = zeta(2);
        let nf = n as f64;
        Zipf {
            n: nf,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta_n,
            eta: (1.0 - (2.0 / nf).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n),
            half_pow_theta: 0.5f64.powf(theta),
        }
    }

    pub fn next(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + self.half_pow_theta {
            return 1;
        }
        let rank = self.n * (self.eta * u - self.eta + 1.0).powf(self.alpha);
        (rank as u64).min(self.n as u64 - 1)
    }

    /// Probability of the most popular rank.
    pub fn top_probability(&self) -> f64 {
        1.0 / self.zeta_n
    }

    pub fn theta(&self) -> f64 {
        self.theta
    }
}

/// A bijection of `0..n` (multiplication by a unit mod `n`), so that the
/// popular Zipfian ranks are keys spread over the whole log rather than
/// the first ones written.
pub struct Scatter {
    n: u64,
    multiplier: u64,
}

impl Scatter {
    pub fn new(n: u64) -> Self {
        let gcd = |mut a: u64, mut b: u64| {
            while b != 0 {
                (a, b) = (b, a % b);
            }
            a
        };
        let mut multiplier = (0x9E37_79B9 % n.max(2)) | 1;
        while gcd(multiplier, n) != 1 {
            multiplier += 2;
        }
        Scatter { n, multiplier }
    }

    pub fn apply(&self, rank: u64) -> u64 {
        ((u128::from(rank) * u128::from(self.multiplier)) % u128::from(self.n)) as u64
    }
}

/// A batch setting keys `first..first + ops` to random values.
pub fn set_batch(rng: &mut Rng, first: u64, ops: u64) -> Command {
    Command::Batch {
        conditions: Vec::new(),
        ops: (first..first + ops)
            .map(|i| Op::Set {
                key: key(i).to_vec(),
                value: rng.value().to_vec(),
            })
            .collect(),
    }
}

/// Writes keys `0..n` in 1,000-op batches; returns the time spent in
/// `KvEngine::apply` (building the commands is left out).
pub fn fill(engine: &KvEngine, n: u64, rng: &mut Rng) -> Duration {
    let mut applying = Duration::ZERO;
    let mut next = 0;
    while next < n {
        let ops = BATCH_OPS.min(n - next);
        let command = set_batch(rng, next, ops);
        let started = std::time::Instant::now();
        let applied = engine.apply(command).expect("apply a batch");
        applying += started.elapsed();
        assert!(
            matches!(applied.outcome, Outcome::Batch { applied_ops, .. } if u64::from(applied_ops) == ops)
        );
        next += ops;
    }
    applying
}

/// A `kB` field of `/proc/self/status`, or 0 where there is none.
pub fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().strip_suffix("kB")?.trim().parse().ok()
        })
        .unwrap_or(0)
}

/// `(name, MiB)` of the peak RSS, the RSS, and the RSS split into heap
/// (anonymous) and file-backed pages (mapped segments and metadata).
pub fn memory_mib() -> [(&'static str, f64); 4] {
    [
        ("VmHWM", "peak_rss"),
        ("VmRSS", "rss"),
        ("RssAnon", "rss_anon"),
        ("RssFile", "rss_file"),
    ]
    .map(|(field, name)| (name, status_kib(field) as f64 / 1024.0))
}

pub fn secs(d: Duration) -> String {
    format!("{:.4}", d.as_secs_f64())
}

pub fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// The median (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => f64::NAN,
        len if len % 2 == 1 => sorted[mid],
        _ => (sorted[mid - 1] + sorted[mid]) / 2.0,
    }
}

/// `median min max` of `values`, formatted with `decimals`.
pub fn spread(values: &[f64], decimals: usize) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{:.decimals$} (min {:.decimals$}, max {:.decimals$}, n={})",
        median(values),
        min,
        max,
        values.len()
    )
}

/// Is this process a child running phase `name`? Returns its data directory.
pub fn child_phase() -> Option<(String, PathBuf)> {
    let phase = std::env::var(CHILD_VAR).ok()?;
    let dir = std::env::var_os(CHILD_DIR_VAR).expect("a child is given its data directory");
    Some((phase, PathBuf::from(dir)))
}

/// Runs this benchmark binary again as phase `phase` on `dir` (with `env`
/// added), and returns the `prefix.name value` lines it printed, by name.
/// The child's stderr goes to ours.
pub fn run_child(
    prefix: &str,
    phase: &str,
    dir: &Path,
    env: &[(&str, String)],
) -> BTreeMap<String, String> {
    let exe = std::env::current_exe().expect("the benchmark's own path");
    let mut command = Process::new(exe);
    command.env(CHILD_VAR, phase).env(CHILD_DIR_VAR, dir);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run a child phase");
    assert!(
        output.status.success(),
        "child phase {phase} failed: {}",
        output.status
    );
    let stdout = String::from_utf8(output.stdout).expect("child output is UTF-8");
    stdout
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(prefix)?.strip_prefix('.')?;
            let (name, value) = rest.split_once(' ')?;
            Some((name.to_string(), value.to_string()))
        })
        .collect()
}

/// Writes back and drops the cached pages of every file in `dir`.
pub fn evict_from_page_cache(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("list the data directory") {
        let path = entry.expect("directory entry").path();
        let file = std::fs::File::open(&path).expect("open a data file");
        file.sync_all().expect("fsync a data file");
        // The pages are clean now, so the kernel drops them at once.
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed)
            .expect("posix_fadvise(DONTNEED)");
    }
}

/// Reads every file in `dir`, so that its pages are in the page cache.
pub fn load_into_page_cache(dir: &Path) {
    use std::io::Read;
    let mut buf = vec![0u8; 1 << 20];
    for entry in std::fs::read_dir(dir).expect("list the data directory") {
        let path = entry.expect("directory entry").path();
        let mut file = std::fs::File::open(&path).expect("open a data file");
        while file.read(&mut buf).expect("read a data file") > 0 {}
    }
}

/// Removes every `seg-*.meta` file: the next open rebuilds the metadata
/// from the segments (a full scan). Returns how many it removed.
pub fn remove_metadata(dir: &Path) -> usize {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).expect("list the data directory") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_some_and(|ext| ext == "meta") {
            std::fs::remove_file(&path).expect("remove a metadata file");
            removed += 1;
        }
    }
    removed
}

/// `(segment bytes, metadata bytes, metadata file sizes)` of the files in
/// `dir`, by their lengths.
pub fn file_bytes(dir: &Path) -> (u64, u64, Vec<(String, u64)>) {
    let (mut segments, mut metas, mut meta_files) = (0, 0, Vec::new());
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("list the data directory")
        .map(|e| e.expect("directory entry"))
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let len = entry.metadata().expect("stat a data file").len();
        if name.ends_with(".log") {
            segments += len;
        } else if name.ends_with(".meta") {
            metas += len;
            meta_files.push((name, len));
        }
    }
    (segments, metas, meta_files)
}

/// Latencies in log-linear buckets: 16 per power of two, so a reported
/// quantile is within 1/16 (6.25%) above the true value; the maximum is
/// exact. Nanoseconds.
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

const SUB_BUCKET_BITS: u32 = 4;
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; (64 * SUB_BUCKETS) as usize],
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    fn bucket(value: u64) -> usize {
        if value < SUB_BUCKETS {
            return value as usize;
        }
        let power = 63 - value.leading_zeros(); // >= SUB_BUCKET_BITS
        let sub = (value >> (power - SUB_BUCKET_BITS)) & (SUB_BUCKETS - 1);
        ((u64::from(power - SUB_BUCKET_BITS + 1) << SUB_BUCKET_BITS) + sub) as usize
    }

    /// The largest value that falls in `bucket`.
    fn upper(bucket: usize) -> u64 {
        let bucket = bucket as u64;
        if bucket < SUB_BUCKETS {
            return bucket;
        }
        let power = (bucket >> SUB_BUCKET_BITS) - 1 + u64::from(SUB_BUCKET_BITS);
        let sub = bucket & (SUB_BUCKETS - 1);
        let low = (SUB_BUCKETS + sub) << (power - u64::from(SUB_BUCKET_BITS));
        low + (1 << (power - u64::from(SUB_BUCKET_BITS))) - 1
    }

    pub fn record(&mut self, d: Duration) {
        let ns = d.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.counts[Self::bucket(ns)] += 1;
        self.total += 1;
        self.max = self.max.max(ns);
    }

    /// Records `d` and, as HdrHistogram's `recordValueWithExpectedInterval`
    /// does, the samples a client issuing one operation per `interval`
    /// would have seen while this one blocked (`d - interval`, `d - 2 *
    /// interval`, ...): corrects for coordinated omission.
    pub fn record_corrected(&mut self, d: Duration, interval: Duration) {
        self.record(d);
        if interval.is_zero() {
            return;
        }
        let mut missed = d.saturating_sub(interval);
        while missed >= interval {
            self.record(missed);
            missed -= interval;
        }
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max)
    }

    /// The `q` quantile (0..=1), as the upper edge of its bucket (capped at the max).
    pub fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Duration::from_nanos(Self::upper(bucket).min(self.max));
            }
        }
        self.max()
    }
}
