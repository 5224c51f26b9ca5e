//! `hightower run`: a WASI command component with the store, its stdout,
//! stderr and exit status passed through. The component's own statuses are
//! 0..=125 (higher ones are reported as 125), hightower's own outcomes 128 +
//! the CLI's code (host/cli/src/run_cli.rs), so the two never meet.

use std::path::Path;
use std::process::{Command, Output};

const HIGHTOWER: &str = env!("CARGO_BIN_EXE_hightower");
const KV_CLI: &str = hightower_test_guests::KV_CLI;
const PANICKY: &str = hightower_test_guests::PANICKY;

fn hightower(dir: &Path, args: &[&str]) -> Output {
    Command::new(HIGHTOWER)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("HIGHTOWER_LOG")
        .output()
        .expect("run hightower")
}

fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["run", KV_CLI, "--namespace", "app/"];
    all.extend_from_slice(args);
    let out = hightower(dir, &all);
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn run_passes_arguments_output_and_exit_status_through() {
    let tmp = tempfile::tempdir().unwrap();
    // Created by the store (0700): a data directory others can read (as
    // the temporary directory itself is) logs a warning on stderr.
    let data = tmp.path().join("data");
    let dir = data.as_path();
    assert_eq!(
        hightower(dir, &["put", "outside", "native"]).status.code(),
        Some(0)
    );

    let (code, stdout, stderr) = run(dir, &["set", "greeting", "hello"]);
    assert_eq!((code, stdout.as_str(), stderr.as_str()), (0, "2\n", ""));
    let (code, stdout, _) = run(dir, &["get", "greeting"]);
    assert_eq!((code, stdout.as_str()), (0, "hello\n"));
    // Stored under the namespace, visible natively.
    let out = hightower(dir, &["get", "app/greeting"]);
    assert_eq!(out.stdout, b"hello");

    // Arguments that look like options reach the component.
    let (code, _, _) = run(dir, &["set", "--dash", "-v"]);
    assert_eq!(code, 0);
    let (code, stdout, _) = run(dir, &["list"]);
    assert_eq!((code, stdout.as_str()), (0, "--dash\ngreeting\n"));

    let (code, stdout, stderr) = run(dir, &["get", "missing"]);
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (1, "", "kv-cli: missing: not found\n")
    );
    let (code, _, _) = run(dir, &["exit", "42"]);
    assert_eq!(code, 42);
    // A component's 6 is its own, not a sandbox stop (issue 17); statuses
    // above 125 are hightower's, so a component's are reported as 125.
    let (code, _, stderr) = run(dir, &["exit", "6"]);
    assert_eq!((code, stderr.as_str()), (6, ""));
    for status in ["126", "134", "255"] {
        let (code, _, stderr) = run(dir, &["exit", status]);
        assert_eq!(code, 125);
        assert_eq!(
            stderr,
            format!(
                "hightower: the component exited with status {status}, reported as 125 \
                 (statuses above it are hightower's)\n"
            )
        );
    }
    let (code, _, stderr) = run(dir, &["bogus"]);
    assert_eq!(code, 2);
    assert!(stderr.starts_with("usage: kv-cli"), "{stderr}");

    // The guest saw only its namespace.
    let out = hightower(dir, &["get", "outside"]);
    assert_eq!(out.stdout, b"native");

    // The compiled component was cached in the data directory, once.
    let cached: Vec<_> = std::fs::read_dir(dir.join("wasm-cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(cached[0].ends_with(".cwasm"), "{cached:?}");
}

#[test]
fn a_command_that_runs_too_long_is_stopped_with_status_134() {
    let tmp = tempfile::tempdir().unwrap();
    let out = hightower(
        tmp.path(),
        &[
            "run",
            KV_CLI,
            "--namespace",
            "app/",
            "--timeout-ms",
            "200",
            "spin",
        ],
    );
    assert_eq!(out.status.code(), Some(134));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stopped after its time limit of 200 ms"),
        "{stderr}"
    );
}

#[test]
fn run_refuses_bad_namespaces_and_non_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = hightower(dir, &["run", KV_CLI, "--namespace", "app", "list"]);
    assert_eq!(out.status.code(), Some(130));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("must end with '/'"), "{stderr}");

    let out = hightower(dir, &["run", KV_CLI, "list"]);
    assert_eq!(out.status.code(), Some(130), "--namespace is required");
    let out = hightower(
        dir,
        &["run", KV_CLI, "--namespace", "app/", "--timeout-ms", "x"],
    );
    assert_eq!(out.status.code(), Some(130), "a bad flag of run");
    let out = hightower(dir, &["run", "/nonexistent.wasm", "--namespace", "app/"]);
    assert_eq!(out.status.code(), Some(133));
    let out = hightower(dir, &["run", "/dev/zero", "--namespace", "app/"]);
    assert_eq!(out.status.code(), Some(130));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("component /dev/zero is longer than the limit of 268435456 bytes"),
        "{stderr}"
    );
    // Other commands keep their codes.
    assert_eq!(hightower(dir, &["get"]).status.code(), Some(2));

    // A library component exports no wasi:cli/run.
    let out = hightower(dir, &["run", PANICKY, "--namespace", "app/"]);
    assert_eq!(out.status.code(), Some(130));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot be linked or instantiated"),
        "{stderr}"
    );
}
