//! The auth component's throughput next to native Argon2 with the same
//! parameters (the ratio is the cost of the sandbox, mostly Argon2 in wasm):
//! `create-user` and `verify-password` (OWASP defaults m = 19456 KiB, t = 2,
//! p = 1), a wrong password next to an unknown user (they should cost the
//! same), and `verify-api-key` (no slow hash; aim ≥ 50,000/s).
//!
//! Run with `cargo bench -p hightower-wasm --bench auth`; criterion's medians are
//! in `target/criterion/auth-*/*/new/estimates.json`. On a shared machine the
//! load drifts between criterion's benchmarks, which run one after the
//! other, so the three comparisons are also measured interleaved (the two
//! sides alternate, so both see the same load) and printed as
//! `interleaved: ...` lines with their medians and ratio.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use criterion::{Criterion, Throughput};
use hightower_engine::{Config, KvEngine, SyncMode};
use hightower_wasm::auth::{AuthClient, Hasher, KeyRing};
use hightower_wasm::{SandboxConfig, WasmRuntime};

/// Rounds of each interleaved comparison.
const ROUNDS: usize = 31;

struct Fixture {
    _dir: tempfile::TempDir,
    _runtime: WasmRuntime,
    client: AuthClient,
    token: String,
    argon2: Argon2<'static>,
    salt: SaltString,
    native_hash: String,
    /// Numbers fresh usernames.
    next_user: AtomicU64,
}

impl Fixture {
    fn new() -> Self {
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
        let runtime = WasmRuntime::new(kv, sandbox).unwrap();
        let client =
            AuthClient::load(&runtime, Hasher::default(), &KeyRing::single([3; 32])).unwrap();
        let user = client
            .create_user("bench", "bench-password", None, &[])
            .unwrap();
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
        Fixture {
            _dir: dir,
            _runtime: runtime,
            client,
            token,
            argon2,
            salt,
            native_hash,
            next_user: AtomicU64::new(0),
        }
    }

    fn create_user(&self) {
        let i = self.next_user.fetch_add(1, Ordering::Relaxed);
        self.client
            .create_user(&format!("u{i}"), "bench-password", None, &[])
            .unwrap();
    }

    fn verify(&self) {
        self.client
            .verify_password("bench", "bench-password")
            .unwrap();
    }

    fn wrong_password(&self) {
        self.client
            .verify_password("bench", "wrong-password")
            .unwrap_err();
    }

    fn unknown_user(&self) {
        self.client
            .verify_password("nobody", "wrong-password")
            .unwrap_err();
    }

    fn native_hash(&self) {
        self.argon2
            .hash_password(b"bench-password", &self.salt)
            .unwrap();
    }

    fn native_verify(&self) {
        let parsed = PasswordHash::new(&self.native_hash).unwrap();
        self.argon2
            .verify_password(b"bench-password", &parsed)
            .unwrap();
    }
}

fn criterion_benches(c: &mut Criterion, fx: &Fixture) {
    let mut group = c.benchmark_group("auth-argon2id-owasp");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(1));
    group.bench_function("create-user/component", |b| b.iter(|| fx.create_user()));
    group.bench_function("verify-password/component", |b| b.iter(|| fx.verify()));
    // No user enumeration: both failures should cost one verification.
    group.bench_function("verify-password-wrong-password/component", |b| {
        b.iter(|| fx.wrong_password())
    });
    group.bench_function("verify-password-unknown-user/component", |b| {
        b.iter(|| fx.unknown_user())
    });
    group.bench_function("hash/native", |b| b.iter(|| fx.native_hash()));
    group.bench_function("verify/native", |b| b.iter(|| fx.native_verify()));
    group.finish();

    let mut group = c.benchmark_group("auth-api-key");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify-api-key/component", |b| {
        b.iter(|| fx.client.verify_api_key(&fx.token).unwrap())
    });
    group.finish();
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Alternates `a` and `b` (`a` first on even rounds, `b` on odd ones) and
/// prints both medians and the ratio b / a.
fn interleaved(label: &str, (a_name, a): (&str, &dyn Fn()), (b_name, b): (&str, &dyn Fn())) {
    let time = |f: &dyn Fn()| {
        let started = Instant::now();
        f();
        started.elapsed()
    };
    a();
    b();
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            ta.push(time(a));
            tb.push(time(b));
        } else {
            tb.push(time(b));
            ta.push(time(a));
        }
    }
    let (ma, mb) = (median(ta), median(tb));
    println!(
        "interleaved: {label}: {a_name} {:.2} ms, {b_name} {:.2} ms, ratio {:.2} (medians of {ROUNDS})",
        ma.as_secs_f64() * 1e3,
        mb.as_secs_f64() * 1e3,
        mb.as_secs_f64() / ma.as_secs_f64()
    );
}

fn main() {
    let fx = Fixture::new();
    let mut c = Criterion::default().configure_from_args();
    criterion_benches(&mut c, &fx);
    c.final_summary();
    interleaved(
        "create-user",
        ("native hash", &|| fx.native_hash()),
        ("component", &|| fx.create_user()),
    );
    interleaved(
        "verify-password",
        ("native verify", &|| fx.native_verify()),
        ("component", &|| fx.verify()),
    );
    interleaved(
        "no enumeration (component)",
        ("wrong password", &|| fx.wrong_password()),
        ("unknown user", &|| fx.unknown_user()),
    );
}
