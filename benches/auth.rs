//! The auth component's throughput next to native Argon2 with the same
//! parameters (the ratio is the cost of the sandbox, mostly Argon2 in wasm):
//! `create-user` and `verify-password` (OWASP defaults m = 19456 KiB, t = 2,
//! p = 1), and `verify-api-key` (no slow hash; aim ≥ 50,000/s).
//! Run with `cargo bench -p hightower --bench auth`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hightower::auth::{AuthClient, Hasher, KeyRing};
use hightower::wasm::{SandboxConfig, WasmRuntime};
use hightower::{Config, KvEngine, SyncMode};

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let kv = Arc::new(
        KvEngine::open(Config {
            sync: SyncMode::Os,
            ..Config::new(dir.path())
        })
        .unwrap(),
    );
    let sandbox = SandboxConfig {
        call_timeout_ms: 60_000,
        ..SandboxConfig::default()
    };
    let runtime = WasmRuntime::new(kv.clone(), sandbox).unwrap();
    let client = AuthClient::load(&runtime, Hasher::default(), &KeyRing::single([3; 32])).unwrap();
    let user = client.create_user("bench", "bench-password", None).unwrap();
    let token = client
        .create_api_key(&user.id, "bench", &["kv:read".into()], None)
        .unwrap()
        .token;

    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default());
    let salt = SaltString::encode_b64(&[5; 16]).unwrap();
    let native_hash = argon2
        .hash_password(b"bench-password", &salt)
        .unwrap()
        .to_string();

    let mut group = c.benchmark_group("auth-argon2id-owasp");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(1));
    let n = AtomicU64::new(0);
    group.bench_function("create-user/component", |b| {
        b.iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed);
            client
                .create_user(&format!("u{i}"), "bench-password", None)
                .unwrap()
        })
    });
    group.bench_function("verify-password/component", |b| {
        b.iter(|| client.verify_password("bench", "bench-password").unwrap())
    });
    group.bench_function("hash/native", |b| {
        b.iter(|| argon2.hash_password(b"bench-password", &salt).unwrap())
    });
    group.bench_function("verify/native", |b| {
        let parsed = PasswordHash::new(&native_hash).unwrap();
        b.iter(|| argon2.verify_password(b"bench-password", &parsed).unwrap())
    });
    group.finish();

    let mut group = c.benchmark_group("auth-api-key");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify-api-key/component", |b| {
        b.iter(|| client.verify_api_key(&token).unwrap())
    });
    group.finish();
}

criterion_group!(auth, benches);
criterion_main!(auth);
