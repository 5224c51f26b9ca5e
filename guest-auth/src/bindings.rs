//! The thin WebAssembly layer: `hightower:kv/auth-service` exports over
//! [`AuthService`], with the store behind `hightower:kv/store`, randomness
//! from `wasi:random` (through `getrandom`) and time from `wasi:clocks`.

// Generated export glue takes one argument per flattened field.
#[allow(clippy::too_many_arguments)]
mod generated {
    wit_bindgen::generate!({
        path: "../wit",
        world: "hightower:kv/auth-service",
        generate_all,
        pub_export_macro: true,
    });
}
use generated::*;

use std::cell::RefCell;

use sha2::{Digest, Sha256};

use crate::auth_service as svc;
use crate::crypto::{HasherConfig, Kek as CryptoKek};
use crate::environment::{SystemClock, SystemRandom};
use hightower::kv::store::{self, Namespace};

const NAMESPACE: &str = "auth/";

struct WasmStore(Namespace);

fn store_err(e: store::Error) -> svc::StoreError {
    match e {
        store::Error::ConditionFailed(k) => svc::StoreError::ConditionFailed(k),
        other => svc::StoreError::Other(format!("{other:?}")),
    }
}

impl svc::KvStore for WasmStore {
    fn get(&self, key: &[u8]) -> Result<Option<svc::Entry>, svc::StoreError> {
        self.0
            .get(key)
            .map(|o| {
                o.map(|e| svc::Entry {
                    value: e.value,
                    version: e.version,
                })
            })
            .map_err(store_err)
    }

    fn list_keys(
        &self,
        prefix: &[u8],
        cursor: Option<&[u8]>,
        page: u32,
    ) -> Result<(Vec<Vec<u8>>, Option<Vec<u8>>), svc::StoreError> {
        self.0
            .list_keys(prefix, cursor, page)
            .map(|p| (p.keys, p.next_cursor))
            .map_err(store_err)
    }

    fn batch(&self, conditions: &[svc::Condition], ops: &[svc::Op]) -> Result<(), svc::StoreError> {
        let conditions: Vec<store::Condition> = conditions
            .iter()
            .map(|c| match c {
                svc::Condition::Absent(k) => store::Condition::Absent(k.clone()),
                svc::Condition::VersionIs(k, v) => store::Condition::VersionIs(store::KeyVersion {
                    key: k.clone(),
                    version: *v,
                }),
            })
            .collect();
        let ops: Vec<store::Op> = ops
            .iter()
            .map(|o| match o {
                svc::Op::Set(k, v) => store::Op::Set(store::KeyValue {
                    key: k.clone(),
                    value: v.clone(),
                }),
                svc::Op::Delete(k) => store::Op::Delete(k.clone()),
            })
            .collect();
        self.0
            .batch(&conditions, &ops)
            .map(|_| ())
            .map_err(store_err)
    }
}

type Service = svc::AuthService<WasmStore, SystemRandom, SystemClock>;

thread_local! {
    /// The service built from the last config seen by this instance, with
    /// the digest of that config.
    static SERVICE: RefCell<Option<([u8; 32], std::rc::Rc<Service>)>> = const { RefCell::new(None) };
}

fn digest(config: &ServiceConfig) -> [u8; 32] {
    let mut h = Sha256::new();
    match config.hasher {
        Hasher::Argon2id(p) => {
            h.update([0]);
            h.update(p.m_kib.to_le_bytes());
            h.update(p.t.to_le_bytes());
            h.update(p.p.to_le_bytes());
        }
        Hasher::Bcrypt(cost) => {
            h.update([1]);
            h.update(cost.to_le_bytes());
        }
    }
    h.update(config.current_kek.to_le_bytes());
    for k in &config.keks {
        h.update(k.id.to_le_bytes());
        h.update((k.key.len() as u64).to_le_bytes());
        h.update(&k.key);
    }
    h.finalize().into()
}

fn service(config: &ServiceConfig) -> Result<std::rc::Rc<Service>, AuthError> {
    let d = digest(config);
    if let Some(s) = SERVICE.with_borrow(|c| {
        c.as_ref()
            .filter(|(cd, _)| *cd == d)
            .map(|(_, s)| s.clone())
    }) {
        return Ok(s);
    }
    let hasher = match config.hasher {
        Hasher::Argon2id(p) => HasherConfig::Argon2id {
            m_kib: p.m_kib,
            t: p.t,
            p: p.p,
        },
        Hasher::Bcrypt(cost) => HasherConfig::Bcrypt { cost },
    };
    let mut keks = Vec::with_capacity(config.keks.len());
    for k in &config.keks {
        let key: [u8; 32] = k.key.as_slice().try_into().map_err(|_| {
            AuthError::Crypto(format!("key {} is {} bytes, not 32", k.id, k.key.len()))
        })?;
        keks.push(CryptoKek { id: k.id, key });
    }
    let ns = Namespace::open(NAMESPACE)
        .map_err(|e| AuthError::Storage(format!("open {NAMESPACE}: {e:?}")))?;
    let config = svc::ServiceConfig {
        hasher,
        keks,
        current_kek: config.current_kek,
    };
    let s = std::rc::Rc::new(
        Service::new(WasmStore(ns), SystemRandom, SystemClock, &config).map_err(err)?,
    );
    SERVICE.with_borrow_mut(|c| *c = Some((d, s.clone())));
    Ok(s)
}

/// The service of `config`, once the configured key-encryption keys are
/// known to be the ones the stored metadata needs (`kek_usage`): every
/// export starts here.
fn ready(config: &ServiceConfig) -> Result<std::rc::Rc<Service>, AuthError> {
    let service = service(config)?;
    service.check_keks().map_err(err)?;
    Ok(service)
}

fn err(e: svc::AuthError) -> AuthError {
    use svc::AuthError as E;
    match e {
        E::InvalidUsername(m) => AuthError::InvalidUsername(m),
        E::InvalidPassword(m) => AuthError::InvalidPassword(m),
        E::UsernameTaken => AuthError::UsernameTaken,
        E::InvalidCredentials => AuthError::InvalidCredentials,
        E::UserNotFound => AuthError::UserNotFound,
        E::KeyNotFound => AuthError::KeyNotFound,
        E::InvalidToken => AuthError::InvalidToken,
        E::InvalidArgument(m) => AuthError::InvalidArgument(m),
        E::Conflict => AuthError::Conflict,
        E::Crypto(m) => AuthError::Crypto(m),
        E::Storage(m) => AuthError::Storage(m),
        E::KekMissing(id) => AuthError::KekMissing(id),
        E::KekMismatch(id) => AuthError::KekMismatch(id),
    }
}

fn user(u: svc::UserInfo) -> User {
    User {
        id: u.id,
        username: u.username,
        created_at: u.created_at,
        updated_at: u.updated_at,
        metadata: u.metadata,
        scopes: u.scopes,
    }
}

fn api_key(k: svc::ApiKeyInfo) -> ApiKey {
    ApiKey {
        id: k.id,
        user_id: k.user_id,
        name: k.name,
        scopes: k.scopes,
        created_at: k.created_at,
        expires_at: k.expires_at,
        revoked_at: k.revoked_at,
        last_eight: k.last_eight,
    }
}

struct Component;

impl Guest for Component {
    fn create_user(
        config: ServiceConfig,
        username: String,
        password: String,
        metadata: Option<Vec<u8>>,
        scopes: Vec<String>,
    ) -> Result<User, AuthError> {
        ready(&config)?
            .create_user(&username, &password, metadata.as_deref(), &scopes)
            .map(user)
            .map_err(err)
    }

    fn verify_password(
        config: ServiceConfig,
        username: String,
        password: String,
    ) -> Result<User, AuthError> {
        ready(&config)?
            .verify_password(&username, &password)
            .map(user)
            .map_err(err)
    }

    fn change_password(
        config: ServiceConfig,
        username: String,
        current: String,
        new_password: String,
    ) -> Result<(), AuthError> {
        ready(&config)?
            .change_password(&username, &current, &new_password)
            .map_err(err)
    }

    fn get_user(config: ServiceConfig, user_id: String) -> Result<User, AuthError> {
        ready(&config)?.get_user(&user_id).map(user).map_err(err)
    }

    fn lookup_user(config: ServiceConfig, username: String) -> Result<String, AuthError> {
        ready(&config)?.lookup_user(&username).map_err(err)
    }

    fn delete_user(config: ServiceConfig, user_id: String) -> Result<(), AuthError> {
        ready(&config)?.delete_user(&user_id).map_err(err)
    }

    fn update_user_scopes(
        config: ServiceConfig,
        user_id: String,
        change: ScopeChange,
    ) -> Result<User, AuthError> {
        let change = match change {
            ScopeChange::Set(s) => svc::ScopeChange::Set(s),
            ScopeChange::Add(s) => svc::ScopeChange::Add(s),
            ScopeChange::Remove(s) => svc::ScopeChange::Remove(s),
        };
        ready(&config)?
            .update_user_scopes(&user_id, &change)
            .map(user)
            .map_err(err)
    }

    fn list_users(
        config: ServiceConfig,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<UserPage, AuthError> {
        let page = ready(&config)?
            .list_users(cursor.as_deref(), limit)
            .map_err(err)?;
        Ok(UserPage {
            users: page.users.into_iter().map(user).collect(),
            next_cursor: page.next_cursor,
        })
    }

    fn create_api_key(
        config: ServiceConfig,
        user_id: String,
        name: String,
        scopes: Vec<String>,
        expires_at: Option<u64>,
    ) -> Result<NewApiKey, AuthError> {
        let (key, token) = ready(&config)?
            .create_api_key(&user_id, &name, &scopes, expires_at)
            .map_err(err)?;
        Ok(NewApiKey {
            key: api_key(key),
            token,
        })
    }

    fn verify_api_key(config: ServiceConfig, token: String) -> Result<Principal, AuthError> {
        let p = ready(&config)?.verify_api_key(&token).map_err(err)?;
        Ok(Principal {
            user_id: p.user_id,
            key_id: p.key_id,
            scopes: p.scopes,
        })
    }

    fn revoke_api_key(config: ServiceConfig, key_id: String) -> Result<(), AuthError> {
        ready(&config)?.revoke_api_key(&key_id).map_err(err)
    }

    fn delete_api_key(config: ServiceConfig, key_id: String) -> Result<(), AuthError> {
        ready(&config)?.delete_api_key(&key_id).map_err(err)
    }

    fn kek_ids_in_use() -> Result<Vec<u32>, AuthError> {
        let ns = Namespace::open(NAMESPACE)
            .map_err(|e| AuthError::Storage(format!("open {NAMESPACE}: {e:?}")))?;
        crate::kek_usage::ids_in_use(&WasmStore(ns)).map_err(err)
    }

    fn list_api_keys(config: ServiceConfig, user_id: String) -> Result<Vec<ApiKey>, AuthError> {
        Ok(ready(&config)?
            .list_api_keys(&user_id)
            .map_err(err)?
            .into_iter()
            .map(api_key)
            .collect())
    }
}

generated::export!(Component with_types_in generated);
