//! Builds the test guests (`test-guests/`, a separate cargo workspace) for
//! `wasm32-wasip2` and tells the crate where they are, as
//! `HIGHTOWER_GUEST_<NAME>` environment variables at compile time (for
//! example `HIGHTOWER_GUEST_WELL_BEHAVED`).
//!
//! The nested cargo gets its own target directory under `OUT_DIR`: on the
//! outer target directory it would wait forever for the lock the outer cargo
//! holds. The host's `RUSTFLAGS` (coverage, linker flags) must not leak into a
//! wasm build, and `--locked` does not propagate, so both are handled here.
//!
//! It also builds the auth service (`guest-auth/`, a workspace of its own
//! with `+simd128` in its `.cargo/config.toml`, read because the nested
//! cargo runs in that directory): `HIGHTOWER_GUEST_AUTH`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TARGET: &str = "wasm32-wasip2";

/// Crates of the guest workspace; each builds one component.
const GUESTS: &[&str] = &[
    "well-behaved",
    "escape",
    "spin",
    "memory-bomb",
    "panicky",
    "oversize",
    "kv-cli",
    "keyvalue-suite",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let repo = manifest_dir.parent().unwrap();
    let guests = repo.join("test-guests");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let target_dir = out_dir.join("guests-target");

    rerun_if_changed(&repo.join("wit"));
    rerun_if_changed(&guests.join("wit"));
    rerun_if_changed(&guests.join("Cargo.toml"));
    rerun_if_changed(&guests.join("Cargo.lock"));
    let cargo_config = guests.join(".cargo/config.toml");
    if cargo_config.exists() {
        rerun_if_changed(&cargo_config);
    }
    for guest in GUESTS {
        rerun_if_changed(&guests.join(guest).join("Cargo.toml"));
        rerun_if_changed(&guests.join(guest).join("src"));
    }
    println!("cargo:rerun-if-env-changed=HIGHTOWER_SKIP_RUSTUP");

    ensure_target_installed();

    let mut build = nested_cargo(&guests, &target_dir);
    let status = build
        .status()
        .unwrap_or_else(|err| panic!("could not run cargo for the test guests: {err}"));
    assert!(
        status.success(),
        "building the test guests in {} failed ({status}); see the output above",
        guests.display()
    );

    build_auth_guest(repo, &out_dir.join("guest-auth-target"));

    let release = target_dir.join(TARGET).join("release");
    for guest in GUESTS {
        // A library's file name has `_` for `-`; a binary's keeps its name.
        let file_stem = [guest.replace('-', "_"), guest.to_string()]
            .into_iter()
            .find(|stem| release.join(format!("{stem}.wasm")).exists())
            .unwrap_or_else(|| panic!("{guest}.wasm was not built in {}", release.display()));
        let wasm = release.join(format!("{file_stem}.wasm"));
        // Everything the guest was compiled from, including the WIT read by
        // its bindings macro, is in its dep-info file.
        let dep_info = release.join(format!("{file_stem}.d"));
        if let Ok(text) = std::fs::read_to_string(&dep_info) {
            for path in dep_info_paths(&text) {
                if !path.starts_with(&target_dir) && path.starts_with(repo) {
                    rerun_if_changed(&path);
                }
            }
        }
        let var = format!(
            "HIGHTOWER_GUEST_{}",
            guest.to_ascii_uppercase().replace('-', "_")
        );
        println!("cargo:rustc-env={var}={}", wasm.display());
    }
}

/// Builds `guest-auth/` in its own directory (so its `.cargo/config.toml`
/// applies) and exports `HIGHTOWER_GUEST_AUTH`.
fn build_auth_guest(repo: &Path, target_dir: &Path) {
    let crate_dir = repo.join("guest-auth");
    for file in ["Cargo.toml", "Cargo.lock", ".cargo/config.toml", "src"] {
        rerun_if_changed(&crate_dir.join(file));
    }
    let status = nested_cargo(&crate_dir, target_dir)
        .status()
        .unwrap_or_else(|err| panic!("could not run cargo for guest-auth: {err}"));
    assert!(
        status.success(),
        "building {} failed ({status}); see the output above",
        crate_dir.display()
    );
    let release = target_dir.join(TARGET).join("release");
    println!(
        "cargo:rustc-env=HIGHTOWER_GUEST_AUTH={}",
        release.join("guest_auth.wasm").display()
    );
}

fn nested_cargo(dir: &Path, target_dir: &Path) -> Command {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
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
        .stderr(Stdio::inherit());
    build
}

fn rerun_if_changed(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}

/// Installs the wasm target with rustup if the active toolchain lacks it
/// (rustup does not auto-install targets on our machines). A toolchain not
/// managed by rustup must already have it; the build then fails with
/// cargo's own message.
fn ensure_target_installed() {
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
