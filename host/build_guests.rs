//! Shared by the build scripts that compile WebAssembly guests (included
//! with `#[path]`): `host/wasm/build.rs` builds the auth service
//! (`guest-auth/`, embedded in the library) and `host/test-guests/build.rs`
//! the test components (only when tests or benches need them).
//!
//! A nested cargo gets its own target directory under `OUT_DIR`: on the
//! outer target directory it would wait forever for the lock the outer cargo
//! holds. The host's `RUSTFLAGS` (coverage, linker flags) must not leak into
//! a wasm build, and `--locked` does not propagate, so both are handled here.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const TARGET: &str = "wasm32-wasip2";

/// The repository root: two levels above the crate being built (`host/X`).
pub fn repo_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    manifest_dir
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs `cargo build --release --locked --target wasm32-wasip2` in `dir`
/// (so its `.cargo/config.toml` applies) into `target_dir`, and returns the
/// directory the `.wasm` files end up in.
pub fn build_release(dir: &Path, target_dir: &Path) -> PathBuf {
    ensure_target_installed();
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(dir)
        .args(["build", "--release", "--locked", "--target", TARGET])
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET")
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .unwrap_or_else(|err| panic!("could not run cargo in {}: {err}", dir.display()));
    assert!(
        status.success(),
        "building {} for {TARGET} failed ({status}); see the output above",
        dir.display()
    );
    target_dir.join(TARGET).join("release")
}

pub fn rerun_if_changed(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}

/// Re-runs the build script when any source a guest was compiled from
/// changes: its dep-info file lists them, including the WIT files read by
/// its bindings macro.
pub fn rerun_if_sources_change(dep_info: &Path, repo: &Path, target_dir: &Path) {
    let Ok(text) = std::fs::read_to_string(dep_info) else {
        return;
    };
    for path in dep_info_paths(&text) {
        if !path.starts_with(target_dir) && path.starts_with(repo) {
            rerun_if_changed(&path);
        }
    }
}

/// Installs the wasm target with rustup if the active toolchain lacks it
/// (rustup does not auto-install targets on our machines). A toolchain not
/// managed by rustup must already have it; the build then fails with
/// cargo's own message.
fn ensure_target_installed() {
    println!("cargo:rerun-if-env-changed=HIGHTOWER_SKIP_RUSTUP");
    if env::var_os("HIGHTOWER_SKIP_RUSTUP").is_some() {
        return;
    }
    let Ok(output) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .stdin(Stdio::null())
        .output()
    else {
        return;
    };
    let installed = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || installed.lines().any(|line| line.trim() == TARGET) {
        return;
    }
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .expect("run rustup target add");
    assert!(status.success(), "rustup target add {TARGET} failed");
}

/// Paths in a makefile-style dep-info file (`out: in1 in2 ...`, spaces in
/// paths escaped with a backslash).
fn dep_info_paths(text: &str) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for line in text.lines() {
        let Some((_, inputs)) = line.split_once(": ") else {
            continue;
        };
        let mut current = String::new();
        let mut chars = inputs.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&' ') => {
                    current.push(' ');
                    chars.next();
                }
                ' ' => {
                    if !current.is_empty() {
                        paths.push(PathBuf::from(std::mem::take(&mut current)));
                    }
                }
                _ => current.push(c),
            }
        }
        if !current.is_empty() {
            paths.push(PathBuf::from(current));
        }
    }
    paths
}
