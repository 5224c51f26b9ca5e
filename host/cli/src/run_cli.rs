//! `hightower run`: a WASI command component in the sandbox, its stdout,
//! stderr and exit status passed through.
//!
//! A component may exit with any status 0..=255, so `run` cannot use the
//! CLI's exit codes as they are (a component exiting 6 would look stopped).
//! Its statuses are split in two, as POSIX shells reserve statuses above
//! 125 for themselves:
//!
//! - 0..=125: the component's own status (it ended by itself). A component
//!   status above 125 is reported as 125, its real status named on stderr.
//! - 128 + the CLI's code: hightower's own outcome, with a message on
//!   stderr: 130 bad usage, configuration or a component that cannot be
//!   compiled or linked, 131 the data directory is locked, 132 corruption,
//!   133 any other error (also: the component ended, but the store could
//!   not be closed cleanly; the message gives the component's status), 134
//!   the sandbox stopped the component (trap, panic, time or memory limit).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use hightower_engine::{Config, KvEngine};
use hightower_wasm::{SandboxConfig, WasmRuntime};

use crate::error::CliError;
use crate::input::read_file_at_most;
use crate::output::note;

/// The highest status of the component's own that `run` passes through.
pub const MAX_COMPONENT_STATUS: u8 = 125;
/// `run`'s own outcomes are this plus the CLI's exit code.
pub const OWN_STATUS_BASE: u8 = 128;
/// Largest component file read (componentize-py's are about 40 MB).
pub const MAX_COMPONENT_BYTES: u64 = 256 << 20;

/// What `run` asks for, from the command line.
pub struct RunArgs<'a> {
    pub component: &'a Path,
    pub namespaces: &'a [String],
    pub args: Vec<String>,
}

/// `run`'s exit status for one of the CLI's exit codes.
pub fn own_status(code: u8) -> ExitCode {
    ExitCode::from(OWN_STATUS_BASE.saturating_add(code))
}

/// Runs the component; every outcome is an exit status (module docs).
pub fn run(config: Config, sandbox: SandboxConfig, request: RunArgs<'_>) -> ExitCode {
    match run_component(config, sandbox, request) {
        Ok(status) => component_status(status),
        Err(err) => {
            if !err.is_quiet() {
                note!("hightower: {err}");
            }
            own_status(err.exit_code())
        }
    }
}

fn component_status(status: i32) -> ExitCode {
    match u8::try_from(status) {
        Ok(status) if status <= MAX_COMPONENT_STATUS => ExitCode::from(status),
        _ => {
            note!(
                "hightower: the component exited with status {status}, reported as \
                 {MAX_COMPONENT_STATUS} (statuses above it are hightower's)"
            );
            ExitCode::from(MAX_COMPONENT_STATUS)
        }
    }
}

fn run_component(
    config: Config,
    sandbox: SandboxConfig,
    request: RunArgs<'_>,
) -> Result<i32, CliError> {
    sandbox.validate()?;
    let path = request.component;
    let wasm = read_file_at_most(path, MAX_COMPONENT_BYTES, "component", "256 MiB")?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let engine = Arc::new(KvEngine::open(config)?);
    let mut argv = vec![name.clone()];
    argv.extend(request.args);
    let status = WasmRuntime::new(engine.clone(), sandbox)
        .and_then(|runtime| runtime.run_command(&name, &wasm, request.namespaces, &argv));
    // The runtime is gone; close the store cleanly (final fsync).
    let closed = match Arc::try_unwrap(engine) {
        Ok(engine) => engine.close(),
        Err(_) => Ok(()),
    };
    match (status, closed) {
        (Ok(status), Err(source)) => Err(CliError::AfterRun { status, source }),
        (Err(err), Err(close)) => {
            note!("hightower: closing the store failed too: {close}");
            Err(err.into())
        }
        (status, Ok(())) => Ok(status?),
    }
}
