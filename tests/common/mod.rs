//! Helpers shared by the WebAssembly host tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use hightower_engine::{Config, KvEngine, SyncMode};
use hightower_wasm::{Extension, SandboxConfig, WasmError, WasmRuntime};

/// A test guest's wasm bytes, built by host/build.rs.
pub fn guest(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|err| panic!("read {path}: {err}"))
}

pub fn store_config(dir: &Path) -> Config {
    Config {
        sync: SyncMode::Os,
        segment_size_bytes: 1 << 20,
        preallocate_bytes: 0,
        ..Config::new(dir)
    }
}

/// A sandbox config for tests: short time limit, small memory.
pub fn sandbox() -> SandboxConfig {
    SandboxConfig {
        call_timeout_ms: 300,
        max_memory_bytes: 16 << 20,
        ..SandboxConfig::default()
    }
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub kv: Arc<KvEngine>,
    pub runtime: WasmRuntime,
}

impl Harness {
    pub fn new() -> Self {
        Self::with(|_| {}, sandbox())
    }

    pub fn with(tweak: impl FnOnce(&mut Config), sandbox: SandboxConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = store_config(dir.path());
        tweak(&mut config);
        let kv = Arc::new(KvEngine::open(config).unwrap());
        let runtime = WasmRuntime::new(kv.clone(), sandbox).unwrap();
        Harness { dir, kv, runtime }
    }

    pub fn load(&self, name: &str, path: &str, namespaces: &[&str]) -> Extension {
        self.runtime.load(name, &guest(path), namespaces).unwrap()
    }

    /// Every key and value in the store, sorted.
    pub fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.kv
            .dump()
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.value))
            .collect()
    }
}

/// Calls a test guest's `call` export.
pub fn call(
    ext: &Extension,
    command: &str,
    arg: &[u8],
) -> Result<Result<Vec<u8>, String>, WasmError> {
    ext.call::<(&str, &[u8]), (Result<Vec<u8>, String>,)>("call", (command, arg))
        .map(|(r,)| r)
}

/// `call` that must succeed at both levels; returns the output as text.
pub fn call_ok(ext: &Extension, command: &str, arg: &[u8]) -> String {
    match call(ext, command, arg) {
        Ok(Ok(out)) => String::from_utf8_lossy(&out).into_owned(),
        Ok(Err(msg)) => panic!("{command}: the guest returned an error: {msg}"),
        Err(err) => panic!("{command}: the call failed: {err}"),
    }
}

/// `u32 LE key length, key, value`, the well-behaved guest's `set` argument.
pub fn key_value(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut arg = (key.len() as u32).to_le_bytes().to_vec();
    arg.extend_from_slice(key);
    arg.extend_from_slice(value);
    arg
}
