//! Running a WASI command component (`hightower run`): a component that
//! exports `wasi:cli/run` and imports `hightower:kv/store`.

use std::sync::Arc;

use wasmtime_wasi::I32Exit;
use wasmtime_wasi::cli::{stderr, stdout};
use wasmtime_wasi::p2::bindings::sync::Command;

use super::ctx::sandbox_wasi;
use super::error::WasmError;
use super::guest_log::{GuestLog, Stream};
use super::sandbox::Sandbox;

/// See [`crate::WasmRuntime::run_command`].
pub(crate) fn run_command(
    sandbox: &Sandbox,
    name: &str,
    wasm: &[u8],
    namespaces: &[impl AsRef<str>],
    args: &[String],
) -> Result<i32, WasmError> {
    let grants = sandbox.grants(namespaces)?;
    let max_hostcall_bytes = grants.max_hostcall_bytes();
    let (component, _) = sandbox.compile(name, wasm)?;
    let wasi = sandbox_wasi(stdout(), stderr(), args);
    let mut store = sandbox.new_store(Arc::new(grants), wasi, max_hostcall_bytes);
    // The command's stderr is the terminal; nothing to quote on a trap.
    let no_log = GuestLog::new(name.into(), Stream::Stderr);
    let exit_status = |err: &wasmtime::Error| err.downcast_ref::<I32Exit>().map(|exit| exit.0);
    let command = match Command::instantiate(&mut store, &component, &sandbox.linker) {
        Ok(command) => command,
        Err(err) => {
            if let Some(status) = exit_status(&err) {
                return Ok(status);
            }
            return Err(sandbox.classify_instantiation(name, err, &no_log, max_hostcall_bytes));
        }
    };
    match command.wasi_cli_run().call_run(&mut store) {
        Ok(Ok(())) => Ok(0),
        Ok(Err(())) => Ok(1),
        Err(err) => match exit_status(&err) {
            Some(status) => Ok(status),
            None => Err(sandbox.classify(name, "wasi:cli/run", err, &no_log, max_hostcall_bytes)),
        },
    }
}
