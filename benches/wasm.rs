//! The WebAssembly host's per-call costs, each next to the same operation
//! called natively: a guest `get` (hit and miss, 100-byte value), a guest
//! conditional batch (compare-and-set), an empty host-to-guest call,
//! instantiation, loading from the compiled cache, and compiling. Run with `cargo bench -p hightower-wasm --bench wasm`.
//!
//! A guest operation is timed inside the guest: one call into the guest
//! runs it N times in a loop (`get-loop`, `batch-loop`), so the figure is
//! the guest-to-host call plus the store operation, without the
//! host-to-guest call (measured on its own as `call/ping`). The store runs
//! with `sync = "os"` so that batches measure the call path, not fsync.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hightower_engine::{Command, Condition, Config, KvEngine, Op, Outcome, SyncMode};
use hightower_wasm::{Extension, SandboxConfig, WasmRuntime};

const WELL_BEHAVED: &str = hightower_test_guests::WELL_BEHAVED;

fn call(ext: &Extension, command: &str, arg: &[u8]) -> Vec<u8> {
    let (result,) = ext
        .call::<(&str, &[u8]), (Result<Vec<u8>, String>,)>("call", (command, arg))
        .expect("call");
    result.expect("guest result")
}

/// The `get-loop` / `batch-loop` argument: iterations, then the key.
fn looped(key: &[u8], iterations: u64) -> Vec<u8> {
    let mut arg = u32::try_from(iterations).unwrap().to_le_bytes().to_vec();
    arg.extend_from_slice(key);
    arg
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let kv = Arc::new(
        KvEngine::open(Config {
            sync: SyncMode::Os,
            ..Config::new(dir.path())
        })
        .unwrap(),
    );
    // One timed call runs a whole criterion batch of iterations.
    let sandbox = SandboxConfig {
        call_timeout_ms: 600_000,
        ..SandboxConfig::default()
    };
    let runtime = WasmRuntime::new(kv.clone(), sandbox.clone()).unwrap();
    let wasm = std::fs::read(WELL_BEHAVED).unwrap();
    let ext = runtime.load("well-behaved", &wasm, &["bench/"]).unwrap();
    kv.put(b"bench/hit", [7; 100]).unwrap();

    let mut group = c.benchmark_group("get");
    for (name, key) in [("hit-100B", &b"hit"[..]), ("miss", b"miss")] {
        group.bench_function(BenchmarkId::new("guest", name), |b| {
            b.iter_custom(|iters| {
                let arg = looped(key, iters);
                let started = Instant::now();
                call(&ext, "get-loop", &arg);
                started.elapsed()
            })
        });
        let native_key = [&b"bench/"[..], key].concat();
        group.bench_function(BenchmarkId::new("native", name), |b| {
            b.iter(|| kv.read().get(&native_key).unwrap())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("cas-batch");
    group.bench_function("guest", |b| {
        b.iter_custom(|iters| {
            let arg = looped(b"cas", iters);
            let started = Instant::now();
            call(&ext, "batch-loop", &arg);
            started.elapsed()
        })
    });
    let mut version = kv.put(b"bench/native-cas", b"0").unwrap();
    group.bench_function("native", |b| {
        b.iter(|| {
            let applied = kv
                .apply(Command::Batch {
                    conditions: vec![Condition::VersionIs {
                        key: b"bench/native-cas".to_vec(),
                        version,
                    }],
                    ops: vec![Op::Set {
                        key: b"bench/native-cas".to_vec(),
                        value: vec![7; 100],
                    }],
                })
                .unwrap();
            match applied.outcome {
                Outcome::Batch {
                    last_version: Some(v),
                    ..
                } => version = v,
                other => panic!("{other:?}"),
            }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("call");
    group.bench_function("ping", |b| b.iter(|| call(&ext, "ping", b"")));
    group.finish();

    let mut group = c.benchmark_group("instantiate");
    group.measurement_time(Duration::from_secs(5));
    let unpooled = WasmRuntime::new(
        kv.clone(),
        SandboxConfig {
            max_idle_instances: 0,
            ..sandbox.clone()
        },
    )
    .unwrap();
    let fresh = unpooled.load("well-behaved", &wasm, &["bench/"]).unwrap();
    group.bench_function("store+instance", |b| b.iter(|| fresh.warm(1).unwrap()));
    group.bench_function("load-from-cache", |b| {
        b.iter(|| unpooled.load("well-behaved", &wasm, &["bench/"]).unwrap())
    });
    group.finish();

    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    let uncached = WasmRuntime::new(
        kv.clone(),
        SandboxConfig {
            cache_compiled: false,
            ..sandbox
        },
    )
    .unwrap();
    group.bench_function("component-new", |b| {
        b.iter(|| uncached.compile("well-behaved", &wasm).unwrap())
    });
    group.finish();
}

criterion_group!(wasm, benches);
criterion_main!(wasm);
