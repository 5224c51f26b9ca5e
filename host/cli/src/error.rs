//! The command line's error: what a lower layer reported, mapped to the
//! documented exit codes.

use hightower_engine::Error;
use hightower_engine::{ConfigError, InputError};
use hightower_wasm::WasmError;

pub const EXIT_NOT_FOUND: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_LOCKED: u8 = 3;
pub const EXIT_CORRUPT: u8 = 4;
pub const EXIT_OTHER: u8 = 5;
pub const EXIT_GUEST_FAULT: u8 = 6;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Engine(#[from] Error),
    #[error(transparent)]
    Wasm(#[from] WasmError),
}

impl From<ConfigError> for CliError {
    fn from(err: ConfigError) -> Self {
        CliError::Engine(err.into())
    }
}

impl From<InputError> for CliError {
    fn from(err: InputError) -> Self {
        CliError::Engine(err.into())
    }
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Engine(err) => engine_exit_code(err),
            CliError::Wasm(WasmError::Config(_)) => EXIT_USAGE,
            CliError::Wasm(_) => EXIT_OTHER,
        }
    }
}

fn engine_exit_code(err: &Error) -> u8 {
    match err {
        Error::Input(_) | Error::Config(_) | Error::NotADirectory { .. } => EXIT_USAGE,
        Error::Locked { .. } => EXIT_LOCKED,
        Error::Corruption(_) | Error::UnsupportedFormat { .. } => EXIT_CORRUPT,
        _ => EXIT_OTHER,
    }
}
