//! Hightower KV's WebAssembly host: runs untrusted components against the
//! store.
//!
//! Components use the store through the WIT interface `hightower:kv/store`
//! (`wit/store.wit`, the contract for guest authors) and the standard
//! `wasi:keyvalue` interfaces (both drafts guests use), over the namespaces
//! they are granted when loaded. Every call runs under the limits of
//! [`SandboxConfig`]: time (epoch interruption), memory and tables, key,
//! value and batch sizes, and data per host call. A guest that breaks a
//! limit or traps fails that call with a [`WasmError`]; its instance is
//! discarded and the host carries on.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use hightower_engine::{Config, KvEngine};
//! use hightower_wasm::{SandboxConfig, WasmRuntime};
//!
//! let kv = Arc::new(KvEngine::open(Config::new("/var/lib/hightower"))?);
//! let runtime = WasmRuntime::new(kv, SandboxConfig::default())?;
//! let wasm = std::fs::read("extension.wasm")?;
//! let extension = runtime.load("my-extension", &wasm, &["app/"])?;
//! let (reply,) = extension.call::<(&str,), (Result<String, String>,)>("greet", ("world",))?;
//! # Ok(()) }
//! ```
//!
//! The [`auth`] module is the client of the auth service, a component this
//! crate embeds.
//!
//! # Inside
//!
//! Arrows point down; no module imports one above it.
//!
//! - `runtime.rs`: [`WasmRuntime`], the public entry; `run.rs`: its
//!   `run_command`; `extension.rs`: [`Extension`] and its instance pool.
//! - `sandbox.rs`: what a runtime and its extensions share (wasmtime engine,
//!   linker, epoch ticker, cache, limits), making a store, and telling a
//!   failed call's cause.
//! - `ctx.rs`: what a `Store` holds, the WASI a guest gets, and the one
//!   `add_to_linker`, which gives each interface the view it borrows.
//! - `kv_store.rs` (`hightower:kv/store`) and `keyvalue/` (`wasi:keyvalue`,
//!   one module per draft): the host functions, each interface with its
//!   `bindgen!` in a private module, a view and an `add_to_linker`.
//! - `access.rs`: the store and the grants, which both hosts use;
//!   `namespace.rs`: namespaces, the guest's key mapping and limits.
//! - `cache.rs` (compiled components in `<data_dir>/wasm-cache/`),
//!   `guest_log.rs` (guest stdout/stderr to `tracing`), `limiter.rs`,
//!   `ticker.rs`, `config.rs`, `error.rs`.

#![deny(missing_docs)]

mod access;
// Owned and documented separately (the auth service client); it is exempt
// from `missing_docs` until its own docs are complete.
#[allow(missing_docs)]
pub mod auth;
mod cache;
mod config;
mod ctx;
mod error;
mod extension;
mod guest_log;
mod keyvalue;
mod kv_store;
mod limiter;
mod namespace;
mod run;
mod runtime;
mod sandbox;
mod ticker;

pub use cache::CompiledFrom;
pub use config::SandboxConfig;
pub use error::WasmError;
pub use extension::Extension;
pub use runtime::WasmRuntime;
