//! `wasi:keyvalue`, both drafts, through the test guest `keyvalue-suite`
//! (test-guests/keyvalue-suite, a command): every function via `hightower
//! run`, the bucket mapping, the per-instance caps, and concurrent
//! increments and swaps in one process. The guest checks each result itself
//! (a failed check exits 6 with the check on stderr); these tests check its
//! report and what it left in the store.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Harness, guest, sandbox};
use hightower_wasm::SandboxConfig;

const HIGHTOWER: &str = env!("CARGO_BIN_EXE_hightower");
const SUITE: &str = hightower_test_guests::KEYVALUE_SUITE;
const KV_CLI: &str = hightower_test_guests::KV_CLI;

/// The limits the suite's `draft` and `draft2` commands are written for.
const CONFIG: &str = "[wasm]\nmax_page_keys = 4\nmax_batch_ops = 16\n";

fn hightower(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let config = dir.join("hightower.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let out = Command::new(HIGHTOWER)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--config")
        .arg(&config)
        .args(args)
        .env_remove("HIGHTOWER_LOG")
        .output()
        .expect("run hightower");
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `hightower run keyvalue-suite --namespace NS... ARGS...`; must exit 0.
fn suite(dir: &Path, namespaces: &[&str], args: &[&str]) -> String {
    let mut all = vec!["run", SUITE];
    for ns in namespaces {
        all.extend(["--namespace", ns]);
    }
    all.extend_from_slice(args);
    let (code, stdout, stderr) = hightower(dir, &all);
    assert_eq!(code, 0, "keyvalue-suite {args:?} failed:\n{stdout}{stderr}");
    assert_eq!(stderr, "", "keyvalue-suite {args:?}");
    stdout
}

fn get(dir: &Path, key: &str) -> Option<String> {
    let (code, stdout, _) = hightower(dir, &["get", key]);
    match code {
        0 => Some(stdout),
        1 => None,
        other => panic!("get {key}: exit {other}"),
    }
}

/// Keys outside `app/` that a guest in `app/` must not touch.
fn seed_neighbours(dir: &Path) {
    for (key, value) in [
        ("other/secret", "s"),
        ("app2/x", "x"),
        ("ap", "p"),
        ("app", "no slash"),
    ] {
        assert_eq!(hightower(dir, &["put", key, value]).0, 0);
    }
}

fn neighbours_intact(dir: &Path) {
    for (key, value) in [
        ("other/secret", "s"),
        ("app2/x", "x"),
        ("ap", "p"),
        ("app", "no slash"),
    ] {
        assert_eq!(get(dir, key).as_deref(), Some(value), "{key}");
    }
}

#[test]
fn every_function_of_the_first_draft() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    seed_neighbours(dir);
    let report = suite(dir, &["app/"], &["draft"]);
    assert_eq!(
        report,
        "draft store: ok\n\
         draft batch: ok\n\
         draft list-keys: 12 keys in 3 pages\n\
         draft atomics: ok\n"
    );
    neighbours_intact(dir);
    // Stored under the namespace; the counter in ASCII decimal.
    assert_eq!(
        get(dir, "app/kept/draft/value").as_deref(),
        Some("written by draft")
    );
    assert_eq!(get(dir, "app/kept/draft/counter").as_deref(), Some("42"));
    // The same keys through hightower:kv (kv-cli) in the same namespace.
    let (code, stdout, _) = hightower(
        dir,
        &["run", KV_CLI, "--namespace", "app/", "list", "kept/"],
    );
    assert_eq!(
        (code, stdout.as_str()),
        (0, "kept/draft/counter\nkept/draft/value\n")
    );
}

#[test]
fn every_function_of_the_second_draft() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    seed_neighbours(dir);
    let report = suite(dir, &["app/"], &["draft2"]);
    assert_eq!(
        report,
        "draft2 store: ok\n\
         draft2 batch: ok\n\
         draft2 list-keys: 12 keys in 3 pages\n\
         draft2 atomics: ok\n"
    );
    neighbours_intact(dir);
    assert_eq!(
        get(dir, "app/kept/draft2/value").as_deref(),
        Some("written by draft2")
    );
    assert_eq!(get(dir, "app/kept/draft2/counter").as_deref(), Some("-2"));
    // A counter written natively is one to increment too.
    assert_eq!(hightower(dir, &["put", "app/native", "9"]).0, 0);
    assert_eq!(
        suite(dir, &["app/"], &["count", "draft2", "native", "3"]),
        ""
    );
    assert_eq!(get(dir, "app/native").as_deref(), Some("12"));
}

#[test]
fn buckets_are_the_granted_namespaces_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for (key, value) in [
        ("app/whoami", "app"),
        ("shared/whoami", "shared"),
        ("tenant/cache/whoami", "tenant-cache"),
        ("tenant/whoami", "tenant"),
        ("other/whoami", "other"),
        ("default/whoami", "default-ns"),
    ] {
        assert_eq!(hightower(dir, &["put", key, value]).0, 0);
    }
    let ids = [
        "",
        "default",
        "app",
        "app/",
        "shared",
        "shared/",
        "tenant/cache",
        "tenant",
        "other",
        "app2",
        "app/x",
        "APP",
        "default/",
        "",
    ];
    let mut args = vec!["open"];
    args.extend(ids);
    let report = suite(dir, &["app/", "shared/", "tenant/cache/"], &args);
    assert_eq!(
        report,
        "\"\": app\n\
         \"default\": app\n\
         \"app\": app\n\
         \"app/\": app\n\
         \"shared\": shared\n\
         \"shared/\": shared\n\
         \"tenant/cache\": tenant-cache\n\
         \"tenant\": access-denied\n\
         \"other\": access-denied\n\
         \"app2\": access-denied\n\
         \"app/x\": access-denied\n\
         \"APP\": access-denied\n\
         \"default/\": access-denied\n\
         \"\": app\n"
    );
    // `default` is the first grant, whatever its name.
    let report = suite(dir, &["shared/", "app/"], &["open", "default", "default/"]);
    assert_eq!(report, "\"default\": shared\n\"default/\": access-denied\n");
}

#[test]
fn cas_handles_per_instance_are_capped() {
    let tmp = tempfile::tempdir().unwrap();
    let report = suite(tmp.path(), &["app/"], &["cas-hoard"]);
    assert_eq!(
        report,
        "1000 handles, then: Error::Other(\"cas: 1000 handles are open in this instance; \
         swap or drop some first\")\n"
    );
}

/// Increments through both drafts and compare-and-swap loops, from four
/// commands at once on one key: no update is lost.
#[test]
fn concurrent_increments_and_swaps_lose_no_update() {
    let h = Harness::with(
        |_| {},
        SandboxConfig {
            call_timeout_ms: 60_000,
            ..sandbox()
        },
    );
    let wasm = guest(SUITE);
    let commands: [&[&str]; 4] = [
        &["count", "draft", "n", "40"],
        &["count", "draft2", "n", "40"],
        &["cas-count", "n", "40"],
        &["cas-count", "n", "40"],
    ];
    std::thread::scope(|scope| {
        let runs: Vec<_> = commands
            .iter()
            .map(|command| {
                let (runtime, wasm) = (&h.runtime, &wasm);
                scope.spawn(move || {
                    let mut args = vec!["keyvalue-suite".to_string()];
                    args.extend(command.iter().map(|a| a.to_string()));
                    runtime.run_command("keyvalue-suite", wasm, &["app/"], &args)
                })
            })
            .collect();
        for (run, command) in runs.into_iter().zip(commands) {
            assert_eq!(run.join().unwrap().unwrap(), 0, "{command:?}");
        }
    });
    assert_eq!(h.kv.get(b"app/n").unwrap().unwrap(), b"160");
}
