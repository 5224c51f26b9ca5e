//! The WebAssembly host: runs untrusted components against the store.
//!
//! Components use the store through the WIT interface `hightower:kv/store`
//! (`wit/store.wit`, the contract for guest authors). Each is loaded with
//! the namespaces it is granted ([`namespace`]), and every call runs under
//! the limits of [`SandboxConfig`]: time (epoch interruption, [`ticker`]),
//! memory ([`limiter`]), key, value and batch sizes, and data per host call.
//! A guest that breaks a limit or traps fails that call with a
//! [`WasmError`]; its instance is discarded and the host carries on.
//!
//! - [`WasmRuntime`] (`runtime.rs`): engine, linker, ticker, cache; loads components.
//! - [`Extension`] (`extension.rs`): a loaded component; `call` an export.
//! - `run.rs`: [`WasmRuntime::run_command`] for `hightower run`.
//! - `host.rs`: the store's host functions; `ctx.rs`: what a `Store` holds,
//!   the WASI it gets and the one `add_to_linker`; `bindings.rs`: `bindgen!`.
//! - [`keyvalue`]: the standard `wasi:keyvalue` interfaces, both drafts,
//!   over the same namespaces (buckets).
//! - `cache.rs`: compiled components in `<data_dir>/wasm-cache/`.
//! - `guest_log.rs`: guest stdout/stderr to `tracing`.

mod access;
pub mod auth;
pub mod cache;
pub mod config;
mod ctx;
pub mod error;
mod extension;
pub mod guest_log;
pub mod keyvalue;
mod kv_store;
pub mod limiter;
pub mod namespace;
mod run;
mod runtime;
mod sandbox;
mod ticker;

pub use cache::CompiledFrom;
pub use config::SandboxConfig;
pub use error::WasmError;
pub use extension::Extension;
pub use namespace::{GuestLimits, Namespace};
pub use runtime::WasmRuntime;
