//! Throughput of the engine's main paths, with criterion.
//!
//! Workload: 16-byte keys, 100-byte random values, data directories in a
//! temporary directory under `target/tmp` (or `$HIGHTOWER_BENCH_DIR`).
//!
//! | group          | what one element is                                          |
//! |----------------|--------------------------------------------------------------|
//! | `fill`         | one `Op::Set` of a 1,000-op `Command::Batch`, `sync = os`    |
//! | `put`          | one `KvEngine::put`, `sync = os`                             |
//! | `get/existing` | one `get` of a random key of a pre-filled store              |
//! | `get/absent`   | one `get` of a random key that is not in the same store      |
//! | `durable_put`  | one `put` with `sync = always`, by 1 or by 8 writer threads  |
//!
//! Criterion reports elements per second ("thrpt"); for `durable_put/writers/8`
//! that is the total over all writers. `fill` times `KvEngine::apply` only
//! (building the command is left out). After each `durable_put` run the
//! engine's own metrics (puts per commit group, fsync and commit latency
//! quantiles) are printed to stderr.
//!
//! `fill` and `put` start every sample on a fresh, empty store, so each sample
//! measures inserting new keys (index growth included) rather than an ever
//! larger store. The gets share one store of `$HIGHTOWER_BENCH_KEYS` keys
//! (default 1,000,000), filled once with 1,000-op batches outside the timing.
//!
//! Quick run: `HIGHTOWER_BENCH_KEYS=100000 cargo bench -p hightower-engine --bench engine`;
//! one group: `cargo bench -p hightower-engine --bench engine -- durable_put`.

#[path = "support/mod.rs"]
mod support;

use std::cell::OnceCell;
use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use hightower_engine::{Command, Config, KvEngine, Outcome, SyncMode};
use support::{BATCH_OPS, Rng, VALUE_BYTES, env_u64, key, set_batch, temp_store_dir};

const GETS_PER_ITER: u64 = 1_000;
const DEFAULT_KEYS: u64 = 1_000_000;
const CONCURRENT_WRITERS: u64 = 8;

/// Keys of the pre-filled store used by the get benchmarks.
fn store_keys() -> u64 {
    env_u64("HIGHTOWER_BENCH_KEYS", DEFAULT_KEYS).max(1)
}

/// An engine in its own temporary directory; the directory goes with it.
struct Store {
    engine: KvEngine,
    _dir: tempfile::TempDir,
}

impl Store {
    fn open(sync: SyncMode) -> Self {
        let dir = temp_store_dir("hightower-bench-");
        let config = Config {
            sync,
            ..Config::new(dir.path())
        };
        let engine = KvEngine::open(config).expect("open the engine");
        Store { engine, _dir: dir }
    }

    /// A `sync = os` store holding keys `0..n`, written in 1,000-op batches.
    fn filled(n: u64) -> Self {
        let store = Store::open(SyncMode::Os);
        let started = Instant::now();
        support::fill(&store.engine, n, &mut Rng(0xF111));
        let elapsed = started.elapsed();
        let stats = store.engine.stats().storage;
        assert_eq!(stats.keys, n);
        eprintln!(
            "prefilled {n} keys in {:.2} s ({:.0} ops/s); index {} bytes ({:.1} bytes/key), log {} bytes",
            elapsed.as_secs_f64(),
            n as f64 / elapsed.as_secs_f64(),
            stats.index_memory_bytes,
            stats.index_memory_bytes as f64 / n as f64,
            stats.disk_bytes,
        );
        store
    }

    fn apply_batch(&self, command: Command, ops: u64) {
        match self.engine.apply(command).expect("apply a batch").outcome {
            Outcome::Batch { applied_ops, .. } => assert_eq!(u64::from(applied_ops), ops),
            other => panic!("a batch of sets gave {other:?}"),
        }
    }
}

/// Random bytes that values are sliced from, so a put does not pay for generating them.
struct ValuePool(Vec<u8>);

impl ValuePool {
    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed);
        ValuePool((0..64 << 10).map(|_| rng.next_u64() as u8).collect())
    }

    fn pick(&self, rng: &mut Rng) -> &[u8] {
        let start = rng.below((self.0.len() - VALUE_BYTES) as u64) as usize;
        &self.0[start..start + VALUE_BYTES]
    }
}

/// Workload 1: `Command::Batch` of 1,000 sets, `sync = os`; a fresh store per sample.
fn fill(c: &mut Criterion) {
    let mut group = c.benchmark_group("fill");
    group
        .throughput(Throughput::Elements(BATCH_OPS))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    group.bench_function("batch_1000_sync_os", |b| {
        b.iter_custom(|iters| {
            let store = Store::open(SyncMode::Os);
            let mut rng = Rng(iters);
            let mut measured = Duration::ZERO;
            for n in 0..iters {
                // Building the command is the caller's cost, not the engine's.
                let command = set_batch(&mut rng, n * BATCH_OPS, BATCH_OPS);
                let started = Instant::now();
                store.apply_batch(command, BATCH_OPS);
                measured += started.elapsed();
            }
            measured
        })
    });
    group.finish();
}

/// Workload 2: single puts of new keys, `sync = os`; a fresh store per sample.
fn put(c: &mut Criterion) {
    let pool = ValuePool::new(2);
    let mut group = c.benchmark_group("put");
    group
        .throughput(Throughput::Elements(1))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("single_sync_os", |b| {
        b.iter_custom(|iters| {
            let store = Store::open(SyncMode::Os);
            let mut rng = Rng(iters);
            let started = Instant::now();
            for i in 0..iters {
                black_box(store.engine.put(key(i), pool.pick(&mut rng)).unwrap());
            }
            started.elapsed()
        })
    });
    group.finish();
}

/// Workloads 3 and 4: random gets of present and of absent keys, 1,000 per iteration,
/// over one store filled once (lazily, so a filtered run does not build it).
fn get(c: &mut Criterion) {
    let n = store_keys();
    let store = OnceCell::new();
    let store = || store.get_or_init(|| Store::filled(n));
    let mut group = c.benchmark_group("get");
    group
        .throughput(Throughput::Elements(GETS_PER_ITER))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6));
    group.bench_function(BenchmarkId::new("existing", n), |b| {
        let engine = &store().engine;
        let mut rng = Rng(3);
        b.iter(|| {
            let mut bytes = 0;
            for _ in 0..GETS_PER_ITER {
                let value = engine.get(key(rng.below(n))).unwrap();
                bytes += value.expect("a filled key is present").len();
            }
            assert_eq!(bytes, GETS_PER_ITER as usize * VALUE_BYTES);
            bytes
        })
    });
    group.bench_function(BenchmarkId::new("absent", n), |b| {
        let engine = &store().engine;
        let mut rng = Rng(4);
        b.iter(|| {
            let mut found = 0;
            for _ in 0..GETS_PER_ITER {
                // Keys n.. were never written.
                let absent = key(n + rng.below(u64::MAX / 2));
                found += usize::from(engine.get(absent).unwrap().is_some());
            }
            assert_eq!(found, 0);
            found
        })
    });
    group.finish();
}

/// Workload 5: durable puts (`sync = always`) of new keys by 1 and by 8 threads;
/// throughput is total acknowledged puts per second.
fn durable_put(c: &mut Criterion) {
    let pool = ValuePool::new(5);
    // Key numbers handed out to writers, so every put writes a new key.
    let next_key = AtomicU64::new(0);
    let mut group = c.benchmark_group("durable_put");
    group
        .throughput(Throughput::Elements(1))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    for writers in [1, CONCURRENT_WRITERS] {
        // One store per writer count, so its metrics describe that run.
        let store = OnceCell::new();
        group.bench_function(BenchmarkId::new("writers", writers), |b| {
            let engine = &store.get_or_init(|| Store::open(SyncMode::Always)).engine;
            b.iter_custom(|iters| {
                let per_writer = |w: u64| iters / writers + u64::from(w < iters % writers);
                let first_keys: Vec<u64> = (0..writers)
                    .map(|w| next_key.fetch_add(per_writer(w), Ordering::Relaxed))
                    .collect();
                let write = |w: u64| {
                    let mut rng = Rng(first_keys[w as usize]);
                    for i in 0..per_writer(w) {
                        let k = key(first_keys[w as usize] + i);
                        black_box(engine.put(k, pool.pick(&mut rng)).unwrap());
                    }
                };
                if writers == 1 {
                    let started = Instant::now();
                    write(0);
                    return started.elapsed();
                }
                // Every thread waits at the barrier, so spawning is not timed.
                let ready = Barrier::new(writers as usize + 1);
                std::thread::scope(|scope| {
                    for w in 0..writers {
                        let (ready, write) = (&ready, &write);
                        scope.spawn(move || {
                            ready.wait();
                            write(w);
                        });
                    }
                    ready.wait();
                    let started = Instant::now();
                    // Leaving the scope joins every writer.
                    started
                })
                .elapsed()
            })
        });
        if let Some(store) = store.get() {
            let metrics = store.engine.stats().metrics;
            eprintln!(
                "durable_put/writers/{writers}: {} puts in {} commit groups ({:.1} puts/group), \
                 {} fsyncs (p50 {} us, p99 {} us), commit latency p50 {} us, p99 {} us",
                metrics.puts,
                metrics.commit_groups,
                metrics.puts as f64 / metrics.commit_groups.max(1) as f64,
                metrics.fsyncs,
                metrics.fsync_latency.p50_us,
                metrics.fsync_latency.p99_us,
                metrics.commit_latency.p50_us,
                metrics.commit_latency.p99_us,
            );
        }
    }
    group.finish();
}

criterion_group!(benches, fill, put, get, durable_put);
criterion_main!(benches);
