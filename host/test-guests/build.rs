//! Builds the test components (`components/`, a cargo workspace of its own)
//! for `wasm32-wasip2` and hands their paths to `src/lib.rs` as
//! `HIGHTOWER_GUEST_<NAME>` (for example `HIGHTOWER_GUEST_WELL_BEHAVED`).
//! Only tests and benches depend on this crate, so a build of the library
//! or the binary never compiles them.

#[path = "../build_guests.rs"]
mod build_guests;

use std::path::PathBuf;

use build_guests::{build_release, repo_root, rerun_if_changed, rerun_if_sources_change};

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
    let repo = repo_root();
    let guests = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap()).join("components");
    rerun_if_changed(&repo.join("wit"));
    for file in ["wit", "Cargo.toml", "Cargo.lock", ".cargo/config.toml"] {
        let path = guests.join(file);
        if path.exists() {
            rerun_if_changed(&path);
        }
    }
    for guest in GUESTS {
        rerun_if_changed(&guests.join(guest).join("Cargo.toml"));
        rerun_if_changed(&guests.join(guest).join("src"));
    }
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let target_dir = out_dir.join("guests-target");
    let release = build_release(&guests, &target_dir);
    for guest in GUESTS {
        // A library's file name has `_` for `-`; a binary's keeps its name.
        let file_stem = [guest.replace('-', "_"), guest.to_string()]
            .into_iter()
            .find(|stem| release.join(format!("{stem}.wasm")).exists())
            .unwrap_or_else(|| panic!("{guest}.wasm was not built in {}", release.display()));
        rerun_if_sources_change(&release.join(format!("{file_stem}.d")), &repo, &target_dir);
        let var = format!(
            "HIGHTOWER_GUEST_{}",
            guest.to_ascii_uppercase().replace('-', "_")
        );
        println!(
            "cargo:rustc-env={var}={}",
            release.join(format!("{file_stem}.wasm")).display()
        );
    }
}
