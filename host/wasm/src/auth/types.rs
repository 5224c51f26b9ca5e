//! Host-side Rust types of the `hightower:kv/auth-service` world
//! (`wit/auth.wit`), lifted and lowered by wasmtime.

use wasmtime::component::{ComponentType, Lift, Lower};

#[derive(ComponentType, Lift, Lower, Clone)]
#[component(record)]
pub struct WitKek {
    #[component(name = "id")]
    pub id: u32,
    #[component(name = "key")]
    pub key: Vec<u8>,
}

#[derive(ComponentType, Lift, Lower, Clone, Copy, Debug, PartialEq, Eq)]
#[component(record)]
pub struct Argon2Params {
    #[component(name = "m-kib")]
    pub m_kib: u32,
    #[component(name = "t")]
    pub t: u32,
    #[component(name = "p")]
    pub p: u32,
}

/// The floor of Argon2id parameters, which the component enforces:
/// OWASP's equally strong minimum configurations (Password Storage Cheat
/// Sheet), as (passes `t`, least memory in KiB). `t = 5` and more need
/// 7168 KiB; lanes (`p`) split the memory and add no strength.
pub const ARGON2_FLOOR_M_KIB: [(u32, u32); 5] =
    [(1, 47104), (2, 19456), (3, 12288), (4, 9216), (5, 7168)];

impl Argon2Params {
    /// The least memory (KiB) allowed with `t` passes; `None` for `t = 0`.
    pub fn floor_m_kib(t: u32) -> Option<u32> {
        ARGON2_FLOOR_M_KIB
            .iter()
            .rev()
            .find(|(passes, _)| t >= *passes)
            .map(|(_, m_kib)| *m_kib)
    }

    /// Whether these parameters are below the floor (`t = 0` is).
    pub fn below_floor(&self) -> bool {
        Self::floor_m_kib(self.t).is_none_or(|floor| self.m_kib < floor)
    }
}

impl Default for Argon2Params {
    /// OWASP: m = 19 MiB, t = 2, p = 1.
    fn default() -> Self {
        Argon2Params {
            m_kib: 19456,
            t: 2,
            p: 1,
        }
    }
}

/// How new password hashes are made.
#[derive(ComponentType, Lift, Lower, Clone, Copy, Debug, PartialEq, Eq)]
#[component(variant)]
pub enum Hasher {
    #[component(name = "argon2id")]
    Argon2id(Argon2Params),
    /// Legacy: bcrypt with this cost.
    #[component(name = "bcrypt")]
    Bcrypt(u32),
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher::Argon2id(Argon2Params::default())
    }
}

/// Sent with every call; its `Debug` never shows key bytes.
#[derive(ComponentType, Lift, Lower, Clone)]
#[component(record)]
pub struct WitServiceConfig {
    #[component(name = "hasher")]
    pub hasher: Hasher,
    #[component(name = "keks")]
    pub keks: Vec<WitKek>,
    #[component(name = "current-kek")]
    pub current_kek: u32,
}

impl std::fmt::Debug for WitServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("hasher", &self.hasher)
            .field(
                "kek_ids",
                &self.keks.iter().map(|k| k.id).collect::<Vec<_>>(),
            )
            .field("current_kek", &self.current_kek)
            .finish()
    }
}

/// A failure reported by the service.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq, Eq)]
#[component(variant)]
pub enum AuthError {
    #[component(name = "invalid-username")]
    InvalidUsername(String),
    #[component(name = "invalid-password")]
    InvalidPassword(String),
    #[component(name = "username-taken")]
    UsernameTaken,
    /// Unknown user or wrong password (deliberately the same).
    #[component(name = "invalid-credentials")]
    InvalidCredentials,
    #[component(name = "user-not-found")]
    UserNotFound,
    #[component(name = "key-not-found")]
    KeyNotFound,
    /// Malformed, unknown, wrong, expired or revoked token.
    #[component(name = "invalid-token")]
    InvalidToken,
    #[component(name = "invalid-argument")]
    InvalidArgument(String),
    #[component(name = "conflict")]
    Conflict,
    #[component(name = "crypto")]
    Crypto(String),
    #[component(name = "storage")]
    Storage(String),
    /// Stored metadata is encrypted under this key id, which is not
    /// configured (a store restored without its key file).
    #[component(name = "kek-missing")]
    KekMissing(u32),
    /// The configured key of this id is not the one stored metadata is
    /// encrypted under.
    #[component(name = "kek-mismatch")]
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
                "stored metadata is encrypted under key-encryption key id {id}, which is not \
                 configured: restore the key file kept with the store's backup, or set \
                 HIGHTOWER_AUTH_KEK to keys including id {id}"
            ),
            AuthError::KekMismatch(id) => write!(
                f,
                "the configured key-encryption key id {id} is not the key stored metadata is \
                 encrypted under: restore the key file kept with the store's backup"
            ),
        }
    }
}

impl std::error::Error for AuthError {}

#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq, Eq)]
#[component(record)]
pub struct User {
    #[component(name = "id")]
    pub id: String,
    #[component(name = "username")]
    pub username: String,
    #[component(name = "created-at")]
    pub created_at: u64,
    #[component(name = "updated-at")]
    pub updated_at: u64,
    #[component(name = "metadata")]
    pub metadata: Option<Vec<u8>>,
    /// The permissions of a password login (README "Scopes").
    #[component(name = "scopes")]
    pub scopes: Vec<String>,
}

/// A change of a user's scopes, applied atomically.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq, Eq)]
#[component(variant)]
pub enum ScopeChange {
    /// Exactly these.
    #[component(name = "set")]
    Set(Vec<String>),
    /// These too.
    #[component(name = "add")]
    Add(Vec<String>),
    /// Not these.
    #[component(name = "remove")]
    Remove(Vec<String>),
}

#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq, Eq)]
#[component(record)]
pub struct UserPage {
    #[component(name = "users")]
    pub users: Vec<User>,
    #[component(name = "next-cursor")]
    pub next_cursor: Option<String>,
}

#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq, Eq)]
#[component(record)]
pub struct ApiKey {
    #[component(name = "id")]
    pub id: String,
    #[component(name = "user-id")]
    pub user_id: String,
    #[component(name = "name")]
    pub name: String,
    #[component(name = "scopes")]
    pub scopes: Vec<String>,
    #[component(name = "created-at")]
    pub created_at: u64,
    #[component(name = "expires-at")]
    pub expires_at: Option<u64>,
    #[component(name = "revoked-at")]
    pub revoked_at: Option<u64>,
    #[component(name = "last-eight")]
    pub last_eight: String,
}

/// A new key and its token (shown only once). `Debug` hides the token.
#[derive(ComponentType, Lift, Lower, Clone, PartialEq, Eq)]
#[component(record)]
pub struct NewApiKey {
    #[component(name = "key")]
    pub key: ApiKey,
    #[component(name = "token")]
    pub token: String,
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq, Eq)]
#[component(record)]
pub struct Principal {
    #[component(name = "user-id")]
    pub user_id: String,
    #[component(name = "key-id")]
    pub key_id: String,
    #[component(name = "scopes")]
    pub scopes: Vec<String>,
}
