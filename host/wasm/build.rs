//! Builds the auth service (`guest-auth/`, a workspace of its own with
//! `+simd128` in its `.cargo/config.toml`) for `wasm32-wasip2` and tells the
//! crate where it is (`HIGHTOWER_GUEST_AUTH`), so the library can embed it.
//! The test components are built elsewhere (`host/test-guests`), only for
//! tests.

#[path = "../build_guests.rs"]
mod build_guests;

use std::path::PathBuf;

use build_guests::{build_release, repo_root, rerun_if_changed, rerun_if_sources_change};

fn main() {
    let repo = repo_root();
    let crate_dir = repo.join("guest-auth");
    for file in ["Cargo.toml", "Cargo.lock", ".cargo/config.toml", "src"] {
        rerun_if_changed(&crate_dir.join(file));
    }
    rerun_if_changed(&repo.join("wit"));
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let target_dir = out_dir.join("guest-auth-target");
    let release = build_release(&crate_dir, &target_dir);
    rerun_if_sources_change(&release.join("guest_auth.d"), &repo, &target_dir);
    println!(
        "cargo:rustc-env=HIGHTOWER_GUEST_AUTH={}",
        release.join("guest_auth.wasm").display()
    );
}
