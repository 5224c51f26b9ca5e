//! [`AuthClient`]: the auth service component (`guest-auth/`, embedded in
//! this binary) loaded into a [`WasmRuntime`] with the namespace `auth/`,
//! behind typed calls. The engine knows nothing about auth: the service
//! reaches the store only through `hightower:kv/store`.
//!
//! Every call passes the service configuration (hashing parameters and the
//! key-encryption keys, see [`kek`]) to the component, because pooled
//! instances keep no state the host can count on (wit/auth.wit).

mod config;
pub mod kek;
mod scope;
mod types;

pub use config::AuthConfig;
pub use kek::{KEK_ENV, KEK_FILE, KekError, KekSource, KeyFile, KeyRing};
pub use scope::{AUTH_KEYS_PREFIX, Access, MAX_SCOPES, Scope, ScopeError};
pub use types::{
    ARGON2_FLOOR_M_KIB, ApiKey, Argon2Params, AuthError, Hasher, NewApiKey, Principal, ScopeChange,
    User, UserPage,
};
use types::{WitKek, WitServiceConfig};

use std::sync::Arc;

use wasmtime::component::{ComponentNamedList, Lift, Lower};

use crate::{Extension, WasmError, WasmRuntime};

/// The namespace the service is granted.
pub const NAMESPACE: &str = "auth/";

/// The auth component, built by host/build.rs from `guest-auth/`.
pub static COMPONENT: &[u8] = include_bytes!(env!("HIGHTOWER_GUEST_AUTH"));

#[derive(Debug, thiserror::Error)]
pub enum AuthClientError {
    /// The service refused the request.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The component could not be loaded or was stopped.
    #[error(transparent)]
    Wasm(#[from] WasmError),
    /// The key-encryption keys are missing or unusable.
    #[error(transparent)]
    Kek(#[from] KekError),
}

pub type Result<T> = std::result::Result<T, AuthClientError>;

/// Typed calls into the auth component. `Send + Sync`.
pub struct AuthClient {
    extension: Arc<Extension>,
    config: WitServiceConfig,
}

impl std::fmt::Debug for AuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl AuthClient {
    /// Loads the embedded component into `runtime`, granted `auth/`.
    pub fn load(runtime: &WasmRuntime, hasher: Hasher, keys: &KeyRing) -> Result<Self> {
        Self::load_component(runtime, COMPONENT, hasher, keys)
    }

    /// Loads the embedded component with the keys of `HIGHTOWER_AUTH_KEK`,
    /// else of the key file in `data_dir` (see [`kek`]). Creates that file
    /// if there is none, but only into a store whose metadata needs no key:
    /// a store restored from a snapshot without its key file is refused
    /// with [`KekError::MissingForStore`] naming the ids it needs. Returns
    /// where the keys came from.
    pub fn load_for_data_dir(
        runtime: &WasmRuntime,
        hasher: Hasher,
        data_dir: &std::path::Path,
    ) -> Result<(Self, KekSource)> {
        let extension = Arc::new(runtime.load("guest-auth", COMPONENT, &[NAMESPACE])?);
        if let Some(keys) = KeyRing::from_env()? {
            return Ok((Self::with(extension, hasher, &keys), KekSource::Env));
        }
        let file = KeyFile::in_data_dir(data_dir)?;
        let (keys, created) = match file.load()? {
            Some(keys) => (keys, false),
            None => {
                let (ids,) = extension.call::<(), (std::result::Result<Vec<u32>, AuthError>,)>(
                    "kek-ids-in-use",
                    (),
                )?;
                let ids = ids?;
                if !ids.is_empty() {
                    return Err(KekError::MissingForStore {
                        path: file.path().to_path_buf(),
                        ids,
                    }
                    .into());
                }
                file.create()?
            }
        };
        let source = KekSource::File {
            path: file.path().to_path_buf(),
            created,
        };
        Ok((Self::with(extension, hasher, &keys), source))
    }

    /// Loads another build of the service (benchmarks, tests).
    pub fn load_component(
        runtime: &WasmRuntime,
        wasm: &[u8],
        hasher: Hasher,
        keys: &KeyRing,
    ) -> Result<Self> {
        let extension = Arc::new(runtime.load("guest-auth", wasm, &[NAMESPACE])?);
        Ok(Self::with(extension, hasher, keys))
    }

    /// A client of the same loaded component with other settings (for
    /// example raised hashing parameters or a rotated key ring).
    pub fn with_settings(&self, hasher: Hasher, keys: &KeyRing) -> Self {
        Self::with(self.extension.clone(), hasher, keys)
    }

    fn with(extension: Arc<Extension>, hasher: Hasher, keys: &KeyRing) -> Self {
        let config = WitServiceConfig {
            hasher,
            keks: keys
                .keys()
                .iter()
                .map(|(id, key)| WitKek {
                    id: *id,
                    key: key.to_vec(),
                })
                .collect(),
            current_kek: keys.current(),
        };
        AuthClient { extension, config }
    }

    pub fn extension(&self) -> &Extension {
        &self.extension
    }

    fn call<P, T>(&self, export: &str, params: P) -> Result<T>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        T: Lift + Send + Sync + 'static,
        (std::result::Result<T, AuthError>,): ComponentNamedList + Lift + Send + Sync,
    {
        let (result,) = self
            .extension
            .call::<P, (std::result::Result<T, AuthError>,)>(export, params)?;
        Ok(result?)
    }

    /// Registers a user with its scopes (README "Scopes");
    /// [`AuthError::UsernameTaken`] if the name is in use.
    pub fn create_user(
        &self,
        username: &str,
        password: &str,
        metadata: Option<&[u8]>,
        scopes: &[String],
    ) -> Result<User> {
        self.call(
            "create-user",
            (&self.config, username, password, metadata, scopes),
        )
    }

    /// Checks a password ([`AuthError::InvalidCredentials`] for an unknown
    /// user or a wrong password alike).
    pub fn verify_password(&self, username: &str, password: &str) -> Result<User> {
        self.call("verify-password", (&self.config, username, password))
    }

    pub fn change_password(&self, username: &str, current: &str, new_password: &str) -> Result<()> {
        self.call(
            "change-password",
            (&self.config, username, current, new_password),
        )
    }

    /// The user with its metadata decrypted.
    pub fn get_user(&self, user_id: &str) -> Result<User> {
        self.call("get-user", (&self.config, user_id))
    }

    /// The id of a username.
    pub fn lookup_user(&self, username: &str) -> Result<String> {
        self.call("lookup-user", (&self.config, username))
    }

    /// Removes the user, its indexes and its API keys in one batch.
    pub fn delete_user(&self, user_id: &str) -> Result<()> {
        self.call("delete-user", (&self.config, user_id))
    }

    /// Changes a user's scopes atomically; returns the user as it is now.
    pub fn update_user_scopes(&self, user_id: &str, change: &ScopeChange) -> Result<User> {
        self.call("update-user-scopes", (&self.config, user_id, change))
    }

    pub fn list_users(&self, cursor: Option<&str>, limit: u32) -> Result<UserPage> {
        self.call("list-users", (&self.config, cursor, limit))
    }

    /// A new API key; the token is in the result only this once.
    pub fn create_api_key(
        &self,
        user_id: &str,
        name: &str,
        scopes: &[String],
        expires_at: Option<u64>,
    ) -> Result<NewApiKey> {
        self.call(
            "create-api-key",
            (&self.config, user_id, name, scopes, expires_at),
        )
    }

    pub fn verify_api_key(&self, token: &str) -> Result<Principal> {
        self.call("verify-api-key", (&self.config, token))
    }

    pub fn revoke_api_key(&self, key_id: &str) -> Result<()> {
        self.call("revoke-api-key", (&self.config, key_id))
    }

    /// Removes a key (revoked or not) and its entry in its user's key list.
    pub fn delete_api_key(&self, key_id: &str) -> Result<()> {
        self.call("delete-api-key", (&self.config, key_id))
    }

    pub fn list_api_keys(&self, user_id: &str) -> Result<Vec<ApiKey>> {
        self.call("list-api-keys", (&self.config, user_id))
    }
}
