//! The command line's error: what a lower layer reported, mapped to the
//! documented exit codes (README "Exit codes").

use hightower_engine::Error;
use hightower_engine::{ConfigError, InputError};
use hightower_wasm::WasmError;
use hightower_wasm::auth::{AuthClientError, AuthError, KekError};

use crate::output::OutputError;

pub const EXIT_NOT_FOUND: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_LOCKED: u8 = 3;
pub const EXIT_CORRUPT: u8 = 4;
pub const EXIT_OTHER: u8 = 5;
pub const EXIT_GUEST_FAULT: u8 = 6;
pub const EXIT_DENIED: u8 = 7;
pub const EXIT_CONFLICT: u8 = 8;
pub const EXIT_OUTPUT: u8 = 9;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Engine(#[from] Error),
    #[error(transparent)]
    Wasm(#[from] WasmError),
    /// Bad input found by the CLI itself (a missing secret, a value over
    /// the limit on stdin): exit 2.
    #[error("{0}")]
    Usage(String),
    /// Another process holds what this command needs (a snapshot's
    /// partial file): exit 3, like a locked data directory.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("{}", auth_message(.0))]
    Auth(#[from] AuthClientError),
    /// `run`: the component ended, but the store could not be closed
    /// cleanly (its final fsync failed, e.g. on a full disk).
    #[error(
        "the component exited with status {status}, but closing the store failed \
         (writes it made may not be durable): {source}"
    )]
    AfterRun { status: i32, source: Error },
}

fn auth_message(err: &AuthClientError) -> String {
    match err {
        AuthClientError::Auth(e) => e.to_string(),
        AuthClientError::Wasm(e) => format!("auth component failed: {e}"),
        AuthClientError::Kek(e) => format!("auth key-encryption key: {e}"),
    }
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

impl From<AuthError> for CliError {
    fn from(err: AuthError) -> Self {
        CliError::Auth(err.into())
    }
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Engine(err) | CliError::AfterRun { source: err, .. } => engine_exit_code(err),
            CliError::Wasm(err) => wasm_exit_code(err),
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Output(_) => EXIT_OUTPUT,
            CliError::Busy(_) => EXIT_LOCKED,
            CliError::Auth(AuthClientError::Auth(e)) => auth_exit_code(e),
            CliError::Auth(AuthClientError::Wasm(_)) => EXIT_OTHER,
            CliError::Auth(AuthClientError::Kek(KekError::Io { .. })) => EXIT_OTHER,
            CliError::Auth(AuthClientError::Kek(_)) => EXIT_USAGE,
        }
    }

    /// Whether the message is better left out: the reader of stdout went
    /// away (`| head`), which Unix tools do not report.
    pub fn is_quiet(&self) -> bool {
        matches!(self, CliError::Output(err) if err.is_closed_pipe())
    }
}

fn engine_exit_code(err: &Error) -> u8 {
    match err {
        Error::Input(_) | Error::Config(_) | Error::NotADirectory { .. } => EXIT_USAGE,
        Error::Locked { .. } => EXIT_LOCKED,
        // A directory an interrupted restore left holds a partial store:
        // like corruption, it must not be used as it is.
        Error::Corruption(_)
        | Error::UnsupportedFormat { .. }
        | Error::RestoreIncomplete { .. } => EXIT_CORRUPT,
        _ => EXIT_OTHER,
    }
}

fn wasm_exit_code(err: &WasmError) -> u8 {
    match err {
        WasmError::Config(_) | WasmError::Compile { .. } | WasmError::Instantiate { .. } => {
            EXIT_USAGE
        }
        err if err.is_guest_fault() => EXIT_GUEST_FAULT,
        _ => EXIT_OTHER,
    }
}

fn auth_exit_code(e: &AuthError) -> u8 {
    match e {
        AuthError::UserNotFound | AuthError::KeyNotFound => EXIT_NOT_FOUND,
        AuthError::InvalidUsername(_)
        | AuthError::InvalidPassword(_)
        | AuthError::InvalidArgument(_)
        | AuthError::KekMissing(_)
        | AuthError::KekMismatch(_) => EXIT_USAGE,
        AuthError::InvalidCredentials | AuthError::InvalidToken => EXIT_DENIED,
        AuthError::UsernameTaken | AuthError::Conflict => EXIT_CONFLICT,
        AuthError::Crypto(_) | AuthError::Storage(_) => EXIT_OTHER,
    }
}
