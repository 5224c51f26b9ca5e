//! The auth operations, generic over the store, randomness and the clock so
//! they run natively in tests and inside the component alike.
//!
//! Every change that touches more than one key is one conditional batch:
//! creation is guarded by `absent` conditions, updates by `version-is` on
//! what was read (optimistic concurrency, retried a few times on conflict).

use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth_types::*;
use crate::crypto::{EnvelopeEncryptor, HasherConfig, Kek, SecretHasher, hasher_for};
use crate::environment::{Clock, Random};
pub use crate::error::AuthError;
use crate::id_generator;
use crate::kek_usage::{self, KekChecks};
use crate::scopes::scopes_error;
pub use crate::store::{Condition, Entry, KvStore, Op, StoreError};

/// What the host passes in: hashing parameters and the key-encryption keys.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub hasher: HasherConfig,
    /// Every KEK that may still decrypt; `Debug` hides the key bytes.
    pub keks: Vec<Kek>,
    /// The KEK new encryptions use.
    pub current_kek: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub id: String,
    pub username: String,
    pub created_at: u64,
    pub updated_at: u64,
    pub metadata: Option<Vec<u8>>,
    pub scopes: Vec<String>,
}

/// A change of a user's scopes, applied atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeChange {
    /// Exactly these (no duplicates).
    Set(Vec<String>),
    /// These too (those the user has already stay once).
    Add(Vec<String>),
    /// Not these (those the user does not have are ignored).
    Remove(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPage {
    pub users: Vec<UserInfo>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyInfo {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    pub revoked_at: Option<u64>,
    pub last_eight: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
    pub key_id: String,
    pub scopes: Vec<String>,
}

/// How often an optimistic update is retried after a version conflict.
const RETRIES: usize = 8;
const MAX_PAGE: u32 = 1000;

pub struct AuthService<S, R, C> {
    store: S,
    rng: R,
    clock: C,
    hasher: Box<dyn SecretHasher>,
    encryptor: EnvelopeEncryptor,
    kek_checks: KekChecks,
    /// A hash of a random password with the current parameters, verified
    /// when the user does not exist so that both failures cost the same.
    dummy_hash: OnceLock<String>,
}

impl<S: KvStore, R: Random, C: Clock> AuthService<S, R, C> {
    pub fn new(store: S, rng: R, clock: C, config: &ServiceConfig) -> Result<Self, AuthError> {
        // Bad parameters are the caller's: below the floor, for example.
        let hasher =
            hasher_for(config.hasher).map_err(|e| AuthError::InvalidArgument(e.to_string()))?;
        Self::with_hasher(store, rng, clock, hasher, config)
    }

    /// Like [`AuthService::new`] with another [`SecretHasher`] than the one
    /// `config.hasher` names (tests count hashing work with one).
    pub fn with_hasher(
        store: S,
        rng: R,
        clock: C,
        hasher: Box<dyn SecretHasher>,
        config: &ServiceConfig,
    ) -> Result<Self, AuthError> {
        Ok(AuthService {
            store,
            rng,
            clock,
            hasher,
            encryptor: EnvelopeEncryptor::new(&config.keks, config.current_kek)?,
            kek_checks: KekChecks::new(&config.keks, config.current_kek),
            dummy_hash: OnceLock::new(),
        })
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Fails unless every key-encryption key the stored metadata needs is
    /// configured (see `kek_usage`). The component calls it before every
    /// operation.
    pub fn check_keks(&self) -> Result<(), AuthError> {
        kek_usage::verify(&self.store, &self.kek_checks, &self.encryptor)
    }

    /// Builds the dummy hash now instead of on the first unknown user.
    pub fn warm_up(&self) -> Result<(), AuthError> {
        self.dummy_hash().map(|_| ())
    }

    fn dummy_hash(&self) -> Result<&str, AuthError> {
        if let Some(h) = self.dummy_hash.get() {
            return Ok(h);
        }
        let mut pw = [0u8; 24];
        self.rng.fill(&mut pw);
        let h = self.hash_password(&pw)?;
        Ok(self.dummy_hash.get_or_init(|| h))
    }

    fn check_password(&self, password: &str) -> Result<(), AuthError> {
        let max = self.hasher.max_password_bytes();
        if password.len() > max {
            return Err(AuthError::InvalidPassword(format!(
                "longer than {max} bytes"
            )));
        }
        if password.is_empty() {
            return Err(AuthError::InvalidPassword("empty".into()));
        }
        Ok(())
    }

    fn hash_password(&self, password: &[u8]) -> Result<String, AuthError> {
        let mut salt = [0u8; 16];
        self.rng.fill(&mut salt);
        Ok(self.hasher.hash(password, &salt)?)
    }

    fn normalize(username: &str) -> Result<String, AuthError> {
        normalize_username(username).map_err(|e| AuthError::InvalidUsername(e.to_string()))
    }

    /// The record stored under `key`, decoded, with its version.
    fn record<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<(T, u64)>, AuthError> {
        match self.store.get(key)? {
            None => Ok(None),
            Some(e) => Ok(Some((
                from_bytes(&e.value).map_err(AuthError::Storage)?,
                e.version,
            ))),
        }
    }

    fn get_user_record(&self, id: &str) -> Result<Option<(UserRecord, u64)>, AuthError> {
        self.record(&user_key(id))
    }

    /// An API key's record and version; `missing` if there is none.
    fn key_record(
        &self,
        key_id: &str,
        missing: AuthError,
    ) -> Result<(ApiKeyRecord, u64), AuthError> {
        self.record(&apikey_key(key_id))?.ok_or(missing)
    }

    fn user_by_name(&self, normalized: &str) -> Result<Option<(UserRecord, u64)>, AuthError> {
        let Some(entry) = self.store.get(&name_key(normalized))? else {
            return Ok(None);
        };
        let id = String::from_utf8(entry.value)
            .map_err(|_| AuthError::Storage("corrupt index".into()))?;
        self.get_user_record(&id)
    }

    fn info(&self, r: &UserRecord, with_metadata: bool) -> Result<UserInfo, AuthError> {
        let metadata = match (&r.metadata, with_metadata) {
            (Some(blob), true) => Some(self.encryptor.decrypt(&user_key(&r.id), blob)?),
            _ => None,
        };
        Ok(UserInfo {
            id: r.id.clone(),
            username: r.username.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            metadata,
            scopes: r.scopes.clone(),
        })
    }

    /// Creates a user. The user record, the name index and the key index are
    /// written by one batch guarded by `absent(user_by_name/<name>)`: of
    /// concurrent registrations of one name exactly one succeeds.
    pub fn create_user(
        &self,
        username: &str,
        password: &str,
        metadata: Option<&[u8]>,
        scopes: &[String],
    ) -> Result<UserInfo, AuthError> {
        let normalized = Self::normalize(username)?;
        self.check_password(password)?;
        check_scopes(scopes)?;
        if metadata.is_some_and(|m| m.len() > MAX_METADATA_BYTES) {
            return Err(AuthError::InvalidArgument(format!(
                "metadata longer than {MAX_METADATA_BYTES} bytes"
            )));
        }
        // Cheap early answer; the batch below is what guarantees uniqueness.
        if self.store.get(&name_key(&normalized))?.is_some() {
            return Err(AuthError::UsernameTaken);
        }
        // Encrypting: the key used must be the one `kek_ids` records.
        let record_kek = match metadata {
            Some(_) => {
                self.check_keks()?;
                kek_usage::record_current(&self.store, &self.kek_checks)?
            }
            None => None,
        };
        let password_hash = self.hash_password(password.as_bytes())?;
        let id = id_generator::user_id(&self.rng);
        let now = self.clock.now();
        let record = UserRecord {
            metadata: metadata.map(|m| self.encryptor.encrypt(&self.rng, &user_key(&id), m)),
            id: id.clone(),
            username: username.to_string(),
            normalized: normalized.clone(),
            password_hash,
            created_at: now,
            updated_at: now,
            scopes: scopes.to_vec(),
        };
        let mut conditions = vec![
            Condition::Absent(name_key(&normalized)),
            Condition::Absent(user_key(&id)),
            Condition::Absent(user_keys_key(&id)),
        ];
        let mut ops = vec![
            Op::Set(user_key(&id), to_bytes(&record)),
            Op::Set(name_key(&normalized), id.clone().into_bytes()),
            Op::Set(user_keys_key(&id), to_bytes(&UserKeys::default())),
        ];
        if let Some((condition, op)) = record_kek {
            conditions.push(condition);
            ops.push(op);
        }
        match self.store.batch(&conditions, &ops) {
            Ok(()) => self.info(&record, false),
            Err(StoreError::ConditionFailed(k)) if k == name_key(&normalized) => {
                Err(AuthError::UsernameTaken)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Checks a password. Unknown user and wrong password both give
    /// [`AuthError::InvalidCredentials`], after the same hashing work. A
    /// successful login with a hash made under other parameters rehashes.
    pub fn verify_password(&self, username: &str, password: &str) -> Result<UserInfo, AuthError> {
        self.check_password(password)
            .map_err(|_| AuthError::InvalidCredentials)?;
        // Made (once per service) before the lookup, whether or not the user
        // exists: otherwise the first unknown user of a fresh instance (every
        // `hightower auth user verify` process) would cost two hashes.
        let dummy = self.dummy_hash()?;
        let found = match Self::normalize(username) {
            Ok(n) => self.user_by_name(&n)?,
            Err(_) => None,
        };
        let Some((record, version)) = found else {
            let _ = self.hasher.verify(password.as_bytes(), dummy);
            return Err(AuthError::InvalidCredentials);
        };
        if !self
            .hasher
            .verify(password.as_bytes(), &record.password_hash)?
        {
            return Err(AuthError::InvalidCredentials);
        }
        if self.hasher.needs_rehash(&record.password_hash) {
            let mut updated = record.clone();
            updated.password_hash = self.hash_password(password.as_bytes())?;
            // Best effort: losing to a concurrent change is fine.
            let _ = self.store.batch(
                &[Condition::VersionIs(user_key(&record.id), version)],
                &[Op::Set(user_key(&record.id), to_bytes(&updated))],
            );
        }
        self.info(&record, false)
    }

    /// Sets a new password after checking the current one.
    pub fn change_password(
        &self,
        username: &str,
        current: &str,
        new_password: &str,
    ) -> Result<(), AuthError> {
        self.check_password(new_password)?;
        let user = self.verify_password(username, current)?;
        let new_hash = self.hash_password(new_password.as_bytes())?;
        for _ in 0..RETRIES {
            let (mut record, version) = self
                .get_user_record(&user.id)?
                .ok_or(AuthError::UserNotFound)?;
            record.password_hash = new_hash.clone();
            record.updated_at = self.clock.now();
            match self.store.batch(
                &[Condition::VersionIs(user_key(&user.id), version)],
                &[Op::Set(user_key(&user.id), to_bytes(&record))],
            ) {
                Err(StoreError::ConditionFailed(_)) => continue,
                other => return other.map_err(Into::into),
            }
        }
        Err(AuthError::Conflict)
    }

    /// The user with its metadata decrypted.
    pub fn get_user(&self, user_id: &str) -> Result<UserInfo, AuthError> {
        let (record, _) = self
            .get_user_record(user_id)?
            .ok_or(AuthError::UserNotFound)?;
        self.info(&record, true)
    }

    /// The id of a username (normalized like everywhere else).
    pub fn lookup_user(&self, username: &str) -> Result<String, AuthError> {
        let normalized = Self::normalize(username)?;
        let entry = self
            .store
            .get(&name_key(&normalized))?
            .ok_or(AuthError::UserNotFound)?;
        String::from_utf8(entry.value).map_err(|_| AuthError::Storage("corrupt index".into()))
    }

    /// Removes the user, its name index, its key index and all its API keys
    /// in one batch guarded by the versions read (a key created meanwhile
    /// changes `user_keys/<id>` and makes the batch retry).
    pub fn delete_user(&self, user_id: &str) -> Result<(), AuthError> {
        for _ in 0..RETRIES {
            let (record, uv) = self
                .get_user_record(user_id)?
                .ok_or(AuthError::UserNotFound)?;
            let keys_entry = self.store.get(&user_keys_key(user_id))?;
            let mut conditions = vec![Condition::VersionIs(user_key(user_id), uv)];
            let mut ops = vec![
                Op::Delete(user_key(user_id)),
                Op::Delete(name_key(&record.normalized)),
                Op::Delete(user_keys_key(user_id)),
            ];
            if let Some(e) = keys_entry {
                conditions.push(Condition::VersionIs(user_keys_key(user_id), e.version));
                let keys: UserKeys = from_bytes(&e.value).map_err(AuthError::Storage)?;
                ops.extend(keys.key_ids.iter().map(|k| Op::Delete(apikey_key(k))));
            }
            match self.store.batch(&conditions, &ops) {
                Err(StoreError::ConditionFailed(_)) => continue,
                other => return other.map_err(Into::into),
            }
        }
        Err(AuthError::Conflict)
    }

    /// Changes a user's scopes in one conditional write (retried on a
    /// concurrent change); returns the user as it is now.
    pub fn update_user_scopes(
        &self,
        user_id: &str,
        change: &ScopeChange,
    ) -> Result<UserInfo, AuthError> {
        let given = match change {
            ScopeChange::Set(s) | ScopeChange::Add(s) | ScopeChange::Remove(s) => s,
        };
        check_scopes(given)?;
        for _ in 0..RETRIES {
            let (mut record, version) = self
                .get_user_record(user_id)?
                .ok_or(AuthError::UserNotFound)?;
            let scopes = match change {
                ScopeChange::Set(set) => set.clone(),
                ScopeChange::Add(add) => {
                    let mut scopes = record.scopes.clone();
                    scopes.extend(add.iter().filter(|s| !record.scopes.contains(s)).cloned());
                    scopes
                }
                ScopeChange::Remove(remove) => {
                    let mut scopes = record.scopes.clone();
                    scopes.retain(|s| !remove.contains(s));
                    scopes
                }
            };
            check_scopes(&scopes)?;
            if scopes == record.scopes {
                return self.info(&record, false);
            }
            record.scopes = scopes;
            record.updated_at = self.clock.now();
            match self.store.batch(
                &[Condition::VersionIs(user_key(user_id), version)],
                &[Op::Set(user_key(user_id), to_bytes(&record))],
            ) {
                Ok(()) => return self.info(&record, false),
                Err(StoreError::ConditionFailed(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AuthError::Conflict)
    }

    /// Users in id order, `limit` (1..=1000) per page, after `cursor` (the
    /// `next_cursor` of the previous page).
    pub fn list_users(&self, cursor: Option<&str>, limit: u32) -> Result<UserPage, AuthError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let cursor = cursor.map(user_key);
        let (keys, next) =
            self.store
                .list_keys(USER_PREFIX.as_bytes(), cursor.as_deref(), limit)?;
        let mut users = Vec::with_capacity(keys.len());
        for key in keys {
            let id = String::from_utf8_lossy(&key[USER_PREFIX.len()..]).into_owned();
            // Deleted between the listing and the read: skip.
            if let Some((record, _)) = self.get_user_record(&id)? {
                users.push(self.info(&record, false)?);
            }
        }
        let next_cursor =
            next.map(|k| String::from_utf8_lossy(&k[USER_PREFIX.len()..]).into_owned());
        Ok(UserPage { users, next_cursor })
    }

    /// Creates an API key and returns the token: the only time it is shown.
    pub fn create_api_key(
        &self,
        user_id: &str,
        name: &str,
        scopes: &[String],
        expires_at: Option<u64>,
    ) -> Result<(ApiKeyInfo, String), AuthError> {
        if name.len() > MAX_KEY_NAME_BYTES || name.chars().any(char::is_control) {
            return Err(AuthError::InvalidArgument(format!(
                "key name longer than {MAX_KEY_NAME_BYTES} bytes or with control characters"
            )));
        }
        check_scopes(scopes)?;
        let now = self.clock.now();
        if expires_at.is_some_and(|t| t <= now) {
            return Err(AuthError::InvalidArgument("expiry is in the past".into()));
        }
        for _ in 0..RETRIES {
            let entry = self
                .store
                .get(&user_keys_key(user_id))?
                .ok_or(AuthError::UserNotFound)?;
            let mut keys: UserKeys = from_bytes(&entry.value).map_err(AuthError::Storage)?;
            self.check_room_for_a_key(&keys, now)?;
            let key_id = id_generator::key_id(&self.rng);
            let (secret, token) = id_generator::new_token(&self.rng, &key_id);
            let record = ApiKeyRecord {
                id: key_id.clone(),
                user_id: user_id.to_string(),
                name: name.to_string(),
                secret_sha256: Sha256::digest(secret.as_bytes()).to_vec(),
                scopes: scopes.to_vec(),
                created_at: now,
                expires_at,
                revoked_at: None,
                last_eight: token[token.len() - 8..].to_string(),
            };
            keys.key_ids.push(key_id.clone());
            match self.store.batch(
                &[
                    Condition::VersionIs(user_keys_key(user_id), entry.version),
                    Condition::Absent(apikey_key(&key_id)),
                ],
                &[
                    Op::Set(apikey_key(&key_id), to_bytes(&record)),
                    Op::Set(user_keys_key(user_id), to_bytes(&keys)),
                ],
            ) {
                Ok(()) => return Ok((key_info(&record), token)),
                Err(StoreError::ConditionFailed(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AuthError::Conflict)
    }

    /// Refuses a new key when the user has [`MAX_LIVE_KEYS_PER_USER`] live
    /// keys (revoked and expired ones do not count), or keeps
    /// [`MAX_STORED_KEYS_PER_USER`] in all. Reads every key record of the
    /// user: at most a thousand small reads, once per key created.
    fn check_room_for_a_key(&self, keys: &UserKeys, now: u64) -> Result<(), AuthError> {
        if keys.key_ids.len() >= MAX_STORED_KEYS_PER_USER {
            return Err(AuthError::InvalidArgument(format!(
                "a user keeps at most {MAX_STORED_KEYS_PER_USER} API keys, revoked and expired \
                 ones included; delete some (delete-api-key)"
            )));
        }
        let mut live = 0;
        for id in &keys.key_ids {
            if let Some((record, _)) = self.record::<ApiKeyRecord>(&apikey_key(id))? {
                live += usize::from(is_live(&record, now));
            }
        }
        if live >= MAX_LIVE_KEYS_PER_USER {
            return Err(AuthError::InvalidArgument(format!(
                "a user has at most {MAX_LIVE_KEYS_PER_USER} live API keys; revoke or delete one"
            )));
        }
        Ok(())
    }

    /// The principal of a valid token. The shape and checksum are checked
    /// before any store access; the secret's SHA-256 is compared in
    /// constant time. Every failure is [`AuthError::InvalidToken`].
    pub fn verify_api_key(&self, token: &str) -> Result<Principal, AuthError> {
        let parsed = id_generator::parse_token(token).ok_or(AuthError::InvalidToken)?;
        let (record, _) = self.key_record(parsed.key_id, AuthError::InvalidToken)?;
        let digest = Sha256::digest(parsed.secret.as_bytes());
        if !bool::from(digest.as_slice().ct_eq(&record.secret_sha256)) {
            return Err(AuthError::InvalidToken);
        }
        if !is_live(&record, self.clock.now()) {
            return Err(AuthError::InvalidToken);
        }
        Ok(Principal {
            user_id: record.user_id,
            key_id: record.id,
            scopes: record.scopes,
        })
    }

    /// Marks a key revoked (kept for listings until its user is deleted).
    pub fn revoke_api_key(&self, key_id: &str) -> Result<(), AuthError> {
        for _ in 0..RETRIES {
            let (mut record, version) = self.key_record(key_id, AuthError::KeyNotFound)?;
            if record.revoked_at.is_some() {
                return Ok(());
            }
            record.revoked_at = Some(self.clock.now());
            match self.store.batch(
                &[Condition::VersionIs(apikey_key(key_id), version)],
                &[Op::Set(apikey_key(key_id), to_bytes(&record))],
            ) {
                Err(StoreError::ConditionFailed(_)) => continue,
                other => return other.map_err(Into::into),
            }
        }
        Err(AuthError::Conflict)
    }

    /// Removes a key (revoked or not) and its id from its user's key index,
    /// in one batch guarded by the versions read.
    pub fn delete_api_key(&self, key_id: &str) -> Result<(), AuthError> {
        for _ in 0..RETRIES {
            let (record, version) = self.key_record(key_id, AuthError::KeyNotFound)?;
            let mut conditions = vec![Condition::VersionIs(apikey_key(key_id), version)];
            let mut ops = vec![Op::Delete(apikey_key(key_id))];
            let index = user_keys_key(&record.user_id);
            if let Some((mut keys, keys_version)) = self.record::<UserKeys>(&index)? {
                keys.key_ids.retain(|id| id != key_id);
                conditions.push(Condition::VersionIs(index.clone(), keys_version));
                ops.push(Op::Set(index, to_bytes(&keys)));
            }
            match self.store.batch(&conditions, &ops) {
                Err(StoreError::ConditionFailed(_)) => continue,
                other => return other.map_err(Into::into),
            }
        }
        Err(AuthError::Conflict)
    }

    pub fn list_api_keys(&self, user_id: &str) -> Result<Vec<ApiKeyInfo>, AuthError> {
        let (keys, _) = self
            .record::<UserKeys>(&user_keys_key(user_id))?
            .ok_or(AuthError::UserNotFound)?;
        let mut out = Vec::with_capacity(keys.key_ids.len());
        for id in &keys.key_ids {
            if let Some((record, _)) = self.record::<ApiKeyRecord>(&apikey_key(id))? {
                out.push(key_info(&record));
            }
        }
        Ok(out)
    }
}

/// Neither revoked nor expired at `now`.
fn is_live(record: &ApiKeyRecord, now: u64) -> bool {
    record.revoked_at.is_none() && record.expires_at.is_none_or(|t| now < t)
}

fn check_scopes(scopes: &[String]) -> Result<(), AuthError> {
    match scopes_error(scopes) {
        Some(error) => Err(AuthError::InvalidArgument(error)),
        None => Ok(()),
    }
}

fn key_info(r: &ApiKeyRecord) -> ApiKeyInfo {
    ApiKeyInfo {
        id: r.id.clone(),
        user_id: r.user_id.clone(),
        name: r.name.clone(),
        scopes: r.scopes.clone(),
        created_at: r.created_at,
        expires_at: r.expires_at,
        revoked_at: r.revoked_at,
        last_eight: r.last_eight.clone(),
    }
}
