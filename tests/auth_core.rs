//! Runs the native unit tests of the auth service core (`guest-auth/`, a
//! workspace of its own because it also builds for wasm32-wasip2), so that
//! `cargo test --workspace` covers them. The nested cargo gets its own
//! target directory (sharing the outer one would wait on its lock), inside
//! `CARGO_TARGET_DIR` when that is set, else inside the repository's `target/`.

use std::path::Path;
use std::process::{Command, Stdio};

#[test]
fn guest_auth_unit_tests_pass_natively() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap();
    let crate_dir = repo.join("guest-auth");
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo.join("target"), |dir| repo.join(dir))
        .join("guest-auth-native");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(&crate_dir)
        .args(["test", "--release", "--locked", "--lib"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET")
        .stdin(Stdio::null())
        .output()
        .expect("run cargo test in guest-auth/");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "guest-auth unit tests failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("test result: ok"), "{stdout}");
    // Shown with --nocapture: how many ran.
    for line in stdout.lines().filter(|l| l.starts_with("test result")) {
        println!("guest-auth: {line}");
    }
}
