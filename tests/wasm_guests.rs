//! The sandbox against each test guest (test-guests/, built by host/build.rs):
//! every outcome is asserted exactly, and afterwards the host still works
//! (the next call succeeds) and the store holds exactly what it should.

mod common;

use std::time::{Duration, Instant};

use common::{Harness, call, call_ok, guest, sandbox};
use hightower_wasm::{SandboxConfig, WasmError};

const WELL_BEHAVED: &str = hightower_test_guests::WELL_BEHAVED;
const ESCAPE: &str = hightower_test_guests::ESCAPE;
const SPIN: &str = hightower_test_guests::SPIN;
const MEMORY_BOMB: &str = hightower_test_guests::MEMORY_BOMB;
const PANICKY: &str = hightower_test_guests::PANICKY;
const OVERSIZE: &str = hightower_test_guests::OVERSIZE;

/// Keys outside the guest's namespace `app/`, some of them prefix tricks.
fn seed_neighbours(h: &Harness) -> Vec<(Vec<u8>, Vec<u8>)> {
    for (key, value) in [
        (&b"other/secret"[..], &b"s"[..]),
        (b"app2/x", b"x"),
        (b"ap", b"p"),
        (b"app", b"no slash"),
        (b"app/", b"namespace root"),
        (b"secret", b"top"),
    ] {
        h.kv.put(key, value).unwrap();
    }
    h.dump()
}

/// The store's content outside `app/` (the root key `app/` counts as outside).
fn outside(h: &Harness) -> Vec<(Vec<u8>, Vec<u8>)> {
    h.dump()
        .into_iter()
        .filter(|(k, _)| !k.starts_with(b"app/") || k == b"app/")
        .collect()
}

#[test]
fn a_well_behaved_guest_can_use_every_function() {
    let h = Harness::new();
    let before = seed_neighbours(&h);
    let ext = h.load("well-behaved", WELL_BEHAVED, &["app/"]);
    assert_eq!(call_ok(&ext, "exercise", b""), "ok");
    assert_eq!(outside(&h), before, "nothing outside app/ changed");
    // What the guest wrote is there natively, under the prefix.
    assert_eq!(h.kv.get(b"app/a").unwrap().unwrap(), b"three");
    assert_eq!(h.kv.get(b"app/idx/alice").unwrap().unwrap(), b"1");
    assert_eq!(h.kv.get(b"app/user/2").unwrap(), None);
    assert_eq!(h.kv.get(b"app/\0\xff/\xfe").unwrap().unwrap(), [1, 2, 3]);
    // And what natives write, the guest reads.
    h.kv.put(b"app/native", b"hello").unwrap();
    assert_eq!(call_ok(&ext, "get", b"native"), "hello");
    assert_eq!(call(&ext, "get", b"missing").unwrap(), Err("absent".into()));
    let listed = call_ok(&ext, "list", b"list/1");
    assert_eq!(listed.lines().count(), 10, "{listed}");
    // An unknown export is an error for the caller, and the instance lives on.
    let err = ext.call::<(), ()>("no-such-export", ()).unwrap_err();
    assert!(matches!(err, WasmError::Export { .. }), "{err}");
    assert_eq!(call_ok(&ext, "ping", b""), "pong");
}

#[test]
fn a_guest_cannot_reach_outside_its_namespace() {
    let h = Harness::new();
    let before = seed_neighbours(&h);
    let ext = h.load("escape", ESCAPE, &["app/"]);
    let report = call_ok(&ext, "probe", b"");
    let expected = include_str!("wasm_escape_report.txt");
    assert_eq!(report, expected, "actual report:\n{report}");
    assert_eq!(outside(&h), before, "nothing outside app/ changed");
    // The "escapes" landed inside, as ordinary keys.
    let inside: Vec<Vec<u8>> = h
        .dump()
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with(b"app/") && k != b"app/")
        .collect();
    assert_eq!(
        inside,
        vec![
            b"app/\0other/secret".to_vec(),
            b"app/..".to_vec(),
            b"app/../other/secret".to_vec(),
            b"app/../other/secret2".to_vec(),
            b"app//../other/secret".to_vec(),
            b"app//other/secret".to_vec(),
            b"app/\xff\xfe".to_vec(),
        ]
    );
    assert_eq!(call_ok(&ext, "ping", b""), "pong");
}

#[test]
fn an_infinite_loop_is_stopped_and_the_host_carries_on() {
    let h = Harness::new();
    let before = seed_neighbours(&h);
    let ext = h.load("spin", SPIN, &["app/"]);
    assert_eq!(ext.idle_instances(), 1);
    let started = Instant::now();
    let err = call(&ext, "spin", b"").unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(&err, WasmError::Timeout { component, export, limit_ms: 300 }
            if component == "spin" && export == "call"),
        "{err}"
    );
    assert!(err.is_guest_fault());
    assert!(
        took >= Duration::from_millis(300),
        "stopped early: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "stopped late: {took:?}");
    assert_eq!(
        ext.idle_instances(),
        0,
        "the interrupted instance was discarded"
    );
    assert_eq!(call_ok(&ext, "ping", b""), "pong");
    assert_eq!(ext.idle_instances(), 1);
    assert_eq!(outside(&h), before);
    assert_eq!(h.kv.get(b"app/ping").unwrap().unwrap(), b"pong");
    h.kv.put(b"after", b"works").unwrap();
}

#[test]
fn a_memory_bomb_hits_the_limit_and_the_host_carries_on() {
    let h = Harness::new();
    let before = seed_neighbours(&h);
    let ext = h.load("memory-bomb", MEMORY_BOMB, &["app/"]);
    let err = call(&ext, "bomb", b"").unwrap_err();
    match &err {
        WasmError::MemoryLimit {
            limit_bytes,
            desired_bytes,
            export,
            ..
        } => {
            assert_eq!(*limit_bytes, 16 << 20);
            assert!(*desired_bytes > 16 << 20);
            assert_eq!(export, "call");
        }
        other => panic!("expected the memory limit, got {other}"),
    }
    assert_eq!(call_ok(&ext, "ping", b""), "pong");
    // Again: the fresh instance has its whole budget back.
    assert!(matches!(
        call(&ext, "bomb", b""),
        Err(WasmError::MemoryLimit { .. })
    ));
    assert_eq!(call_ok(&ext, "ping", b""), "pong");
    assert_eq!(outside(&h), before);
}

#[test]
fn a_panic_or_trap_is_an_error_for_the_caller_only() {
    let h = Harness::new();
    let before = seed_neighbours(&h);
    let ext = h.load("panicky", PANICKY, &["app/"]);
    let err = call(&ext, "panic", b"").unwrap_err();
    match &err {
        WasmError::Trap { trap, stderr, .. } => {
            assert_eq!(trap, "wasm trap: wasm `unreachable` instruction executed");
            let stderr = stderr.as_deref().unwrap_or_default();
            assert!(stderr.contains("guest panicked on purpose"), "{stderr}");
        }
        other => panic!("expected a trap, got {other}"),
    }
    assert_eq!(call_ok(&ext, "ping", b""), "pong");
    let err = call(&ext, "trap", b"").unwrap_err();
    assert!(
        matches!(&err, WasmError::Trap { trap, .. } if trap == "wasm trap: wasm `unreachable` instruction executed"),
        "{err}"
    );
    assert_eq!(call_ok(&ext, "ping", b""), "pong");
    assert_eq!(outside(&h), before);
}

#[test]
fn oversized_requests_get_typed_errors_and_huge_ones_are_cut_off() {
    let h = Harness::with(
        |c| {
            c.max_key_bytes = 64;
            c.max_value_bytes = 1024;
            c.max_batch_ops = 8;
            c.max_batch_bytes = 4096;
        },
        sandbox(),
    );
    let before = seed_neighbours(&h);
    let ext = h.load("oversize", OVERSIZE, &["app/"]);
    // Guest limits: key 64 - 4 ("app/"), batch bytes 4096 - 8 * (28 + 4).
    let cases = [
        ("value", "Err(Error::ValueTooLarge(1024))"),
        ("key", "Err(Error::KeyTooLarge(60))"),
        (
            "batch-ops",
            "Err(Error::BatchTooLarge(BatchLimits { max-ops: 8, max-bytes: 3840 }))",
        ),
        (
            "batch-conditions",
            "Err(Error::BatchTooLarge(BatchLimits { max-ops: 8, max-bytes: 3840 }))",
        ),
        (
            "batch-bytes",
            "Err(Error::BatchTooLarge(BatchLimits { max-ops: 8, max-bytes: 3840 }))",
        ),
    ];
    for (command, expected) in cases {
        assert_eq!(call_ok(&ext, command, b""), expected, "{command}");
    }
    let limit = ext.max_hostcall_bytes();
    let huge = (4u32 << 20).to_le_bytes();
    let err = call(&ext, "huge", &huge).unwrap_err();
    assert!(
        matches!(&err, WasmError::HostcallDataLimit { limit_bytes, .. } if *limit_bytes == limit),
        "{err}"
    );
    assert!(limit < 1 << 20, "{limit}");
    assert_eq!(call_ok(&ext, "ping", b""), "pong");
    assert_eq!(outside(&h), before);
    let inside: Vec<_> = h
        .dump()
        .into_iter()
        .filter(|(k, _)| k.starts_with(b"app/") && k != b"app/")
        .collect();
    assert_eq!(inside, vec![(b"app/ping".to_vec(), b"pong".to_vec())]);
}

#[test]
fn loading_checks_namespaces_and_the_component() {
    let h = Harness::new();
    let wasm = guest(WELL_BEHAVED);
    for bad in [
        &["app"][..],
        &["/app/"],
        &["a/../"],
        &[""],
        &["app/", "app/"],
    ] {
        let err = h.runtime.load("bad", &wasm, bad).unwrap_err();
        assert!(matches!(err, WasmError::Config(_)), "{bad:?}: {err}");
    }
    let err = h
        .runtime
        .load("junk", b"\0asm junk", &["app/"])
        .unwrap_err();
    assert!(matches!(err, WasmError::Compile { .. }), "{err}");
    // A component may be granted several namespaces; it opens each by name.
    let ext = h.load("two", WELL_BEHAVED, &["first/", "second/"]);
    assert_eq!(
        call_ok(&ext, "set", &common::key_value(b"k", b"v"))
            .parse::<u64>()
            .unwrap(),
        1
    );
    assert_eq!(h.kv.get(b"first/k").unwrap().unwrap(), b"v");
}

#[test]
fn the_runtime_can_be_dropped_while_extensions_live() {
    let h = Harness::with(
        |_| {},
        SandboxConfig {
            call_timeout_ms: 100,
            ..sandbox()
        },
    );
    let ext = h.load("spin", SPIN, &["app/"]);
    drop(h.runtime);
    // The ticker lives as long as an extension does: a loop is still stopped.
    assert!(matches!(
        call(&ext, "spin", b""),
        Err(WasmError::Timeout { .. })
    ));
    drop(ext);
}
