//! Running a WASI command component (`hightower run`): a component that
//! exports `wasi:cli/run` and imports `hightower:kv/store`.

use std::sync::Arc;

use wasmtime_wasi::I32Exit;
use wasmtime_wasi::cli::{stderr, stdout};
use wasmtime_wasi::p2::bindings::sync::Command;

use super::ctx::{KvCtx, new_store, sandbox_wasi};
use super::error::WasmError;
use super::extension::classify;
use super::guest_log::{GuestLog, Stream};
use super::namespace::Grants;
use super::runtime::WasmRuntime;

impl WasmRuntime {
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
        let shared = &self.shared;
        let grants = Grants::new(namespaces, shared.kv.config(), &shared.config)?;
        let max_hostcall_bytes = grants.max_hostcall_bytes();
        let (component, _) = self.compile(name, wasm)?;
        let wasi = sandbox_wasi(stdout(), stderr(), args);
        let kv = KvCtx {
            engine: shared.kv.clone(),
            grants: Arc::new(grants),
        };
        let mut store = new_store(&shared.engine, &shared.config, kv, wasi, max_hostcall_bytes);
        // The command's stderr is the terminal; nothing to quote on a trap.
        let no_log = GuestLog::new(name.into(), Stream::Stderr);
        let fail = |export: &str, err: wasmtime::Error| {
            if let Some(exit) = err.downcast_ref::<I32Exit>() {
                return Ok(exit.0);
            }
            Err(classify(
                name,
                export,
                err,
                &no_log,
                &shared.config,
                max_hostcall_bytes,
            ))
        };
        let command = match Command::instantiate(&mut store, &component, &shared.linker) {
            Ok(command) => command,
            Err(err) => {
                return match fail("(instantiation)", err) {
                    Err(WasmError::Trap { trap, .. }) => Err(WasmError::Instantiate {
                        component: name.to_string(),
                        message: trap,
                    }),
                    other => other,
                };
            }
        };
        match command.wasi_cli_run().call_run(&mut store) {
            Ok(Ok(())) => Ok(0),
            Ok(Err(())) => Ok(1),
            Err(err) => fail("wasi:cli/run", err),
        }
    }
}
