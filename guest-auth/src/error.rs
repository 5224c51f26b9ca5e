//! The service's error: what a caller is told (wit/auth.wit `auth-error`).

use crate::crypto::CryptoError;
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    InvalidUsername(String),
    InvalidPassword(String),
    UsernameTaken,
    /// Unknown user or wrong password: deliberately the same error.
    InvalidCredentials,
    UserNotFound,
    KeyNotFound,
    /// Malformed, unknown, wrong, expired or revoked token: one error.
    InvalidToken,
    InvalidArgument(String),
    /// Concurrent changes kept conflicting; retry.
    Conflict,
    Crypto(String),
    Storage(String),
    /// Stored metadata is encrypted under this key id, which the
    /// configuration lacks (a store restored without its key file).
    KekMissing(u32),
    /// The configured key of this id is not the one stored metadata is
    /// encrypted under.
    KekMismatch(u32),
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::InvalidUsername(m) => write!(f, "invalid username: {m}"),
            AuthError::InvalidPassword(m) => write!(f, "invalid password: {m}"),
            AuthError::UsernameTaken => f.write_str("username taken"),
            AuthError::InvalidCredentials => f.write_str("invalid username or password"),
            AuthError::UserNotFound => f.write_str("user not found"),
            AuthError::KeyNotFound => f.write_str("API key not found"),
            AuthError::InvalidToken => f.write_str("invalid API key"),
            AuthError::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            AuthError::Conflict => f.write_str("too many concurrent changes; retry"),
            AuthError::Crypto(m) => write!(f, "crypto error: {m}"),
            AuthError::Storage(m) => write!(f, "storage error: {m}"),
            AuthError::KekMissing(id) => write!(
                f,
                "stored metadata is encrypted under key-encryption key id {id}, which is not configured"
            ),
            AuthError::KekMismatch(id) => write!(
                f,
                "the configured key-encryption key id {id} is not the key stored metadata is encrypted under"
            ),
        }
    }
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ConditionFailed(_) => AuthError::Conflict,
            StoreError::Other(m) => AuthError::Storage(m),
        }
    }
}

impl From<CryptoError> for AuthError {
    fn from(e: CryptoError) -> Self {
        AuthError::Crypto(e.to_string())
    }
}
