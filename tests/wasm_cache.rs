//! The compiled-component cache in `<data_dir>/wasm-cache/`: a second load
//! deserializes; a corrupt, truncated, foreign or stale file is ignored and
//! rebuilt, never trusted.

mod common;

use std::path::PathBuf;

use common::{Harness, call_ok, guest, key_value, sandbox};
use hightower_wasm::{CompiledFrom, SandboxConfig, WasmRuntime};

const WELL_BEHAVED: &str = hightower_test_guests::WELL_BEHAVED;
const SPIN: &str = hightower_test_guests::SPIN;

fn cache_files(h: &Harness) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(h.dir.path().join("wasm-cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn load(runtime: &WasmRuntime, wasm: &[u8]) -> CompiledFrom {
    let ext = runtime.load("well-behaved", wasm, &["app/"]).unwrap();
    // Whatever its origin, the component works.
    assert!(!call_ok(&ext, "set", &key_value(b"k", b"v")).is_empty());
    ext.compiled_from().clone()
}

#[test]
fn a_second_load_uses_the_cache_and_bad_files_are_rebuilt() {
    let h = Harness::new();
    let wasm = guest(WELL_BEHAVED);
    assert_eq!(load(&h.runtime, &wasm), CompiledFrom::Compiled);
    let files = cache_files(&h);
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    assert!(file.extension().unwrap() == "cwasm");
    assert_eq!(load(&h.runtime, &wasm), CompiledFrom::Cache);

    // A fresh runtime (as after a restart) finds it too.
    let restarted = WasmRuntime::new(h.kv.clone(), sandbox()).unwrap();
    assert_eq!(load(&restarted, &wasm), CompiledFrom::Cache);

    let good = std::fs::read(file).unwrap();
    let damaged: Vec<(&str, Vec<u8>)> = vec![
        ("checksum mismatch", {
            let mut bytes = good.clone();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x40;
            bytes
        }),
        ("header says", good[..good.len() - 100].to_vec()),
        ("shorter than the header", good[..20].to_vec()),
        ("bad magic", {
            let mut bytes = good.clone();
            bytes[..4].copy_from_slice(b"\x7fELF");
            bytes
        }),
        ("written for other wasm", {
            let mut bytes = good.clone();
            bytes[20] ^= 1; // inside the key
            bytes
        }),
    ];
    for (reason, bytes) in damaged {
        std::fs::write(file, &bytes).unwrap();
        match load(&h.runtime, &wasm) {
            CompiledFrom::Rebuilt(why) => assert!(why.contains(reason), "{reason}: {why}"),
            other => panic!("{reason}: a damaged cache file gave {other:?}"),
        }
        // Rebuilt and rewritten: the next load trusts the new file.
        assert_eq!(std::fs::read(file).unwrap(), good, "{reason}");
        assert_eq!(load(&h.runtime, &wasm), CompiledFrom::Cache, "{reason}");
    }
    assert_eq!(cache_files(&h).len(), 1, "no temporary files left behind");
}

#[test]
fn a_file_for_other_wasm_is_refused_and_settings_that_do_not_compile_share_files() {
    let h = Harness::new();
    let wasm = guest(WELL_BEHAVED);
    let spin = guest(SPIN);
    assert_eq!(load(&h.runtime, &wasm), CompiledFrom::Compiled);
    // Runtime limits are not compilation settings: the compiled code is
    // shared. (Settings that change compilation change the key; see the
    // unit tests of wasm::cache.)
    let other_limits = WasmRuntime::new(
        h.kv.clone(),
        SandboxConfig {
            max_memory_bytes: 32 << 20,
            max_wasm_stack_bytes: 256 << 10,
            call_timeout_ms: 1000,
            ..sandbox()
        },
    )
    .unwrap();
    assert_eq!(load(&other_limits, &wasm), CompiledFrom::Cache);
    // A valid cache file of other wasm, put under this wasm's name (a
    // stale or planted file), is refused by its key and rebuilt.
    let dir = h.dir.path().join("wasm-cache");
    let ours = dir.join(h.runtime.cache_file_name(&spin));
    std::fs::copy(dir.join(h.runtime.cache_file_name(&wasm)), &ours).unwrap();
    let ext = h.runtime.load("spin", &spin, &["app/"]).unwrap();
    assert!(
        matches!(ext.compiled_from(), CompiledFrom::Rebuilt(why) if why.contains("other wasm or engine")),
        "{:?}",
        ext.compiled_from()
    );
    assert_eq!(call_ok(&ext, "ping", b""), "pong");
    assert_eq!(cache_files(&h).len(), 2);
}

#[test]
fn the_cache_can_be_switched_off() {
    let h = Harness::with(
        |_| {},
        SandboxConfig {
            cache_compiled: false,
            ..sandbox()
        },
    );
    let wasm = guest(WELL_BEHAVED);
    assert_eq!(load(&h.runtime, &wasm), CompiledFrom::Compiled);
    assert_eq!(load(&h.runtime, &wasm), CompiledFrom::Compiled);
    assert!(!h.dir.path().join("wasm-cache").exists());
}
