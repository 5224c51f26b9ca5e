//! [`WasmRuntime`]: loads components into the [`Sandbox`] it shares with
//! them, and runs commands.

use std::sync::Arc;

use super::cache::CompiledFrom;
use super::config::SandboxConfig;
use super::error::WasmError;
use super::extension::Extension;
use super::run;
use super::sandbox::Sandbox;
use hightower_engine::KvEngine;

/// Runs untrusted WebAssembly components against one [`KvEngine`].
///
/// Cheap to clone (an `Arc`). The epoch ticker thread lives as long as the
/// runtime or any [`Extension`] loaded from it, and is stopped and joined
/// when the last of them is dropped.
#[derive(Clone)]
pub struct WasmRuntime {
    sandbox: Arc<Sandbox>,
}

impl std::fmt::Debug for WasmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmRuntime")
            .field("config", &self.sandbox.config)
            .finish_non_exhaustive()
    }
}

impl WasmRuntime {
    /// A runtime for `kv` with the given limits. With `cache_compiled`, the
    /// cache directory `wasm-cache/` is created in the store's data directory.
    /// Fails if a limit is invalid ([`WasmError::Config`], naming the field)
    /// or the cache directory or ticker thread cannot be created.
    pub fn new(kv: Arc<KvEngine>, config: SandboxConfig) -> Result<Self, WasmError> {
        Ok(WasmRuntime {
            sandbox: Arc::new(Sandbox::new(kv, config)?),
        })
    }

    /// The limits every component of this runtime runs under.
    pub fn config(&self) -> &SandboxConfig {
        &self.sandbox.config
    }

    /// Compiles `wasm` (a component) and writes it to the cache, or finds it
    /// there already, so that a later [`load`](Self::load) of the same bytes
    /// need not compile. Returns where the compiled code came from.
    pub fn compile(&self, name: &str, wasm: &[u8]) -> Result<CompiledFrom, WasmError> {
        Ok(self.sandbox.compile(name, wasm)?.1)
    }

    /// The name of `wasm`'s file in `<data_dir>/wasm-cache/` (whether or
    /// not it exists yet).
    pub fn cache_file_name(&self, wasm: &[u8]) -> String {
        self.sandbox.cache_file_name(wasm)
    }

    /// Loads a component and grants it `namespaces` (e.g. `["auth/"]`).
    /// `name` identifies it in logs and errors. Fails if a namespace is
    /// invalid or the component imports anything the host does not provide.
    pub fn load(
        &self,
        name: &str,
        wasm: &[u8],
        namespaces: &[impl AsRef<str>],
    ) -> Result<Extension, WasmError> {
        let grants = self.sandbox.grants(namespaces)?;
        let (component, from) = self.sandbox.compile(name, wasm)?;
        Extension::new(self.sandbox.clone(), name, &component, grants, from)
    }

    /// Runs `wasm` as a command with `args` (the first is its program name),
    /// the process's real stdout and stderr, and the sandbox's limits (the
    /// time limit covers the whole run). Returns its exit status: 0 when
    /// `run` returned ok, 1 when it returned an error, or the status it
    /// passed to `exit`.
    pub fn run_command(
        &self,
        name: &str,
        wasm: &[u8],
        namespaces: &[impl AsRef<str>],
        args: &[String],
    ) -> Result<i32, WasmError> {
        run::run_command(&self.sandbox, name, wasm, namespaces, args)
    }
}
