//! Which key-encryption keys (KEKs) the stored metadata needs, kept in the
//! record `kek_ids` ([`KekIds`]) with a check value of each key.
//!
//! A snapshot does not carry the key file. Restored without it, the host
//! would create a new key with id 1: old metadata would no longer decrypt,
//! and new metadata would be encrypted under a second, different key 1.
//! So every call first compares the configured keys with `kek_ids`: a key
//! the metadata needs that is missing ([`AuthError::KekMissing`]) or
//! different ([`AuthError::KekMismatch`]) fails the call before anything is
//! read or written. When the record is absent (a store written before it
//! existed) or disagrees with the configuration, it is rebuilt from the
//! user records themselves (a retired key that no record uses any more is
//! dropped), each id verified by decrypting one ciphertext.

use std::collections::BTreeMap;

use crate::auth_types::*;
use crate::crypto::{EnvelopeEncryptor, Kek, kek_check};
use crate::error::AuthError;
use crate::store::{Condition, KvStore, Op, StoreError};

/// Users read per page while scanning.
const SCAN_PAGE: u32 = 1000;

/// The check values of the configured keys, by id.
#[derive(Debug)]
pub struct KekChecks {
    by_id: BTreeMap<u32, String>,
    current: u32,
}

impl KekChecks {
    pub fn new(keks: &[Kek], current: u32) -> Self {
        KekChecks {
            by_id: keks.iter().map(|k| (k.id, kek_check(&k.key))).collect(),
            current,
        }
    }

    fn agree_with(&self, ids: &KekIds) -> bool {
        ids.keks
            .iter()
            .all(|k| self.by_id.get(&k.id) == Some(&k.check))
    }
}

/// The stored `kek_ids` and its version.
pub fn read(store: &impl KvStore) -> Result<Option<(KekIds, u64)>, AuthError> {
    match store.get(KEK_IDS_KEY.as_bytes())? {
        None => Ok(None),
        Some(e) => Ok(Some((
            from_bytes(&e.value).map_err(AuthError::Storage)?,
            e.version,
        ))),
    }
}

/// What a scan of the user records found: for each key id some metadata is
/// encrypted under, one such ciphertext and the id of its user; and
/// whether there was any user at all.
struct Scan {
    samples: BTreeMap<u32, (String, Vec<u8>)>,
    any_user: bool,
}

fn scan(store: &impl KvStore) -> Result<Scan, AuthError> {
    let mut found = BTreeMap::new();
    let mut any_user = false;
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        let (keys, next) = store.list_keys(USER_PREFIX.as_bytes(), cursor.as_deref(), SCAN_PAGE)?;
        for key in keys {
            let Some(entry) = store.get(&key)? else {
                continue;
            };
            any_user = true;
            let record: UserRecord = from_bytes(&entry.value).map_err(AuthError::Storage)?;
            if let Some(blob) = record.metadata
                && let Some(id) = EnvelopeEncryptor::key_id_of(&blob)
            {
                found.entry(id).or_insert((record.id, blob));
            }
        }
        // Each page starts after the last one: the scan ends.
        match next {
            Some(next) => cursor = Some(next),
            None => {
                return Ok(Scan {
                    samples: found,
                    any_user,
                });
            }
        }
    }
}

/// The key ids stored metadata is encrypted under (for a host about to
/// create a key: none may be in use).
pub fn ids_in_use(store: &impl KvStore) -> Result<Vec<u32>, AuthError> {
    Ok(scan(store)?.samples.into_keys().collect())
}

/// Fails unless every key the stored metadata needs is configured, the
/// same key under the same id. See the module docs.
pub fn verify(
    store: &impl KvStore,
    checks: &KekChecks,
    encryptor: &EnvelopeEncryptor,
) -> Result<(), AuthError> {
    let stored = read(store)?;
    if let Some((ids, _)) = &stored
        && checks.agree_with(ids)
    {
        return Ok(());
    }
    let Scan { samples, any_user } = scan(store)?;
    let mut rebuilt = KekIds::default();
    for (id, (user_id, blob)) in samples {
        let Some(check) = checks.by_id.get(&id) else {
            return Err(AuthError::KekMissing(id));
        };
        if encryptor.decrypt(&user_key(&user_id), &blob).is_err() {
            return Err(AuthError::KekMismatch(id));
        }
        rebuilt.keks.push(KekCheck {
            id,
            check: check.clone(),
        });
    }
    // Written so that the next call need not scan; not worth a write on a
    // store without users (the scan was one empty listing).
    if any_user || stored.is_some() {
        let condition = match &stored {
            Some((_, version)) => Condition::VersionIs(KEK_IDS_KEY.into(), *version),
            None => Condition::Absent(KEK_IDS_KEY.into()),
        };
        match store.batch(
            &[condition],
            &[Op::Set(KEK_IDS_KEY.into(), to_bytes(&rebuilt))],
        ) {
            // Someone else rebuilt or extended it meanwhile: theirs stands.
            Ok(()) | Err(StoreError::ConditionFailed(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The condition and write that add the current key to `kek_ids`, for a
/// batch that encrypts under it; `None` if it is recorded already. Call
/// [`verify`] first.
pub fn record_current(
    store: &impl KvStore,
    checks: &KekChecks,
) -> Result<Option<(Condition, Op)>, AuthError> {
    let (mut ids, condition) = match read(store)? {
        Some((ids, version)) => (ids, Condition::VersionIs(KEK_IDS_KEY.into(), version)),
        None => (KekIds::default(), Condition::Absent(KEK_IDS_KEY.into())),
    };
    if ids.keks.iter().any(|k| k.id == checks.current) {
        return Ok(None);
    }
    let check = checks
        .by_id
        .get(&checks.current)
        .cloned()
        .ok_or(AuthError::KekMissing(checks.current))?;
    ids.keks.push(KekCheck {
        id: checks.current,
        check,
    });
    ids.keks.sort_by_key(|k| k.id);
    Ok(Some((
        condition,
        Op::Set(KEK_IDS_KEY.into(), to_bytes(&ids)),
    )))
}
