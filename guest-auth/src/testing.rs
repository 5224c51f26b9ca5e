//! In-memory fakes for the native unit tests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::crypto::{CryptoError, SecretHasher};
use crate::environment::{Clock, Random};
use crate::store::{Condition, Entry, KvStore, Op, StoreError};

/// A deterministic generator (splitmix64). Not secure: tests only.
pub struct FakeRandom(Mutex<u64>);

impl FakeRandom {
    pub fn new(seed: u64) -> Self {
        FakeRandom(Mutex::new(seed))
    }
}

impl Random for FakeRandom {
    fn fill(&self, buf: &mut [u8]) {
        let mut s = self.0.lock().unwrap();
        for chunk in buf.chunks_mut(8) {
            *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = *s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}

pub struct FakeClock(pub AtomicU64);

impl Clock for &FakeClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A store with the semantics of `hightower:kv/store` that matter here.
#[derive(Default)]
pub struct MemStore {
    pub map: Mutex<BTreeMap<Vec<u8>, Entry>>,
    version: AtomicU64,
    /// Batches that failed with `ConditionFailed`.
    pub conflicts: AtomicU64,
    /// Calls of `get` and `list_keys`.
    pub reads: AtomicU64,
}

impl KvStore for &MemStore {
    fn get(&self, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        Ok(self.map.lock().unwrap().get(key).cloned())
    }

    fn list_keys(
        &self,
        prefix: &[u8],
        cursor: Option<&[u8]>,
        page: u32,
    ) -> Result<(Vec<Vec<u8>>, Option<Vec<u8>>), StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let map = self.map.lock().unwrap();
        let mut keys: Vec<Vec<u8>> = map
            .keys()
            .filter(|k| k.starts_with(prefix) && cursor.is_none_or(|c| k.as_slice() > c))
            .take(page as usize + 1)
            .cloned()
            .collect();
        let next = if keys.len() > page as usize {
            keys.truncate(page as usize);
            keys.last().cloned()
        } else {
            None
        };
        Ok((keys, next))
    }

    fn batch(&self, conditions: &[Condition], ops: &[Op]) -> Result<(), StoreError> {
        let mut map = self.map.lock().unwrap();
        for c in conditions {
            let (key, ok) = match c {
                Condition::Absent(k) => (k, !map.contains_key(k)),
                Condition::VersionIs(k, v) => (k, map.get(k).is_some_and(|e| e.version == *v)),
            };
            if !ok {
                self.conflicts.fetch_add(1, Ordering::SeqCst);
                return Err(StoreError::ConditionFailed(key.clone()));
            }
        }
        for op in ops {
            let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
            match op {
                Op::Set(k, v) => {
                    map.insert(
                        k.clone(),
                        Entry {
                            value: v.clone(),
                            version,
                        },
                    );
                }
                Op::Delete(k) => {
                    map.remove(k);
                }
            }
        }
        Ok(())
    }
}

/// A [`SecretHasher`] that counts the hashes it computes and verifies
/// (each is one full Argon2 or bcrypt run), around a real one.
pub struct CountingHasher {
    pub inner: Box<dyn SecretHasher>,
    pub hashes: Arc<AtomicU64>,
}

impl SecretHasher for CountingHasher {
    fn hash(&self, password: &[u8], salt: &[u8; 16]) -> Result<String, CryptoError> {
        self.hashes.fetch_add(1, Ordering::SeqCst);
        self.inner.hash(password, salt)
    }

    fn verify(&self, password: &[u8], stored: &str) -> Result<bool, CryptoError> {
        self.hashes.fetch_add(1, Ordering::SeqCst);
        self.inner.verify(password, stored)
    }

    fn needs_rehash(&self, stored: &str) -> bool {
        self.inner.needs_rehash(stored)
    }

    fn max_password_bytes(&self) -> usize {
        self.inner.max_password_bytes()
    }
}
