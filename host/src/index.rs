//! The in-memory hash index: `key -> (segment_id, offset, length, version)`.
//!
//! Sharded so readers on different keys rarely meet on a lock; each shard is
//! a SwissTable grown by us, so the configured maximum load factor holds.
//! The key is hashed once (a per-process random seed, so keys sent by
//! untrusted guests cannot force collisions): bits 32..38 pick the shard and
//! the table uses the rest.

use std::hash::BuildHasher;
use std::sync::RwLock;

use hashbrown::HashTable;

const SHARD_BITS: u32 = 5;
/// Number of shards; a power of two.
pub const SHARDS: usize = 1 << SHARD_BITS;
/// hashbrown keeps a table at most 7/8 full; a lower maximum is ours to enforce.
const TABLE_LOAD_FACTOR: f64 = 0.875;

/// Where the current value of a key lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub version: u64,
    pub segment_id: u32,
    /// Offset of the record in its segment.
    pub offset: u32,
    /// Length of the whole record, header included.
    pub len: u32,
}

struct Slot {
    key: Box<[u8]>,
    entry: IndexEntry,
}

#[derive(Default)]
struct Shard {
    table: HashTable<Slot>,
    /// Sum of `entry.len` over the shard: the log bytes still live.
    live_bytes: u64,
    /// Heap taken by the boxed keys (malloc chunk sizes, estimated).
    key_heap_bytes: u64,
}

pub struct Index {
    shards: Box<[RwLock<Shard>]>,
    hasher: foldhash::fast::RandomState,
    max_load_factor: f64,
}

/// Sizes reported by [`Index::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexStats {
    pub keys: u64,
    pub live_bytes: u64,
    /// Table allocations plus the heap chunks of the keys (estimated).
    pub memory_bytes: u64,
}

impl Index {
    pub fn new(initial_capacity: usize, max_load_factor: f64) -> Self {
        assert!(max_load_factor > 0.0 && max_load_factor <= TABLE_LOAD_FACTOR);
        let hasher = foldhash::fast::RandomState::default();
        let per_shard = initial_capacity.div_ceil(SHARDS);
        let shards = (0..SHARDS)
            .map(|_| {
                let mut shard = Shard::default();
                if per_shard > 0 {
                    let buckets_needed = (per_shard as f64 / max_load_factor).ceil() as usize;
                    shard
                        .table
                        .reserve((buckets_needed as f64 * TABLE_LOAD_FACTOR) as usize, |_| 0);
                }
                RwLock::new(shard)
            })
            .collect();
        Index {
            shards,
            hasher,
            max_load_factor,
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        &self.shards[((hash >> 32) as usize) & (SHARDS - 1)]
    }

    pub fn get(&self, key: &[u8]) -> Option<IndexEntry> {
        let hash = self.hash(key);
        let shard = self.shard(hash).read().expect("index lock poisoned");
        shard
            .table
            .find(hash, |slot| &*slot.key == key)
            .map(|slot| slot.entry)
    }

    /// Points `key` at `entry`; returns the entry it replaced.
    pub fn insert(&self, key: &[u8], entry: IndexEntry) -> Option<IndexEntry> {
        let hash = self.hash(key);
        let mut shard = self.shard(hash).write().expect("index lock poisoned");
        shard.live_bytes += u64::from(entry.len);
        if let Some(slot) = shard.table.find_mut(hash, |slot| &*slot.key == key) {
            let old = std::mem::replace(&mut slot.entry, entry);
            assert!(old.version < entry.version, "index versions must increase");
            shard.live_bytes -= u64::from(old.len);
            return Some(old);
        }
        self.grow_if_needed(&mut shard);
        shard.key_heap_bytes += key_heap_size(key.len());
        let hasher = &self.hasher;
        shard.table.insert_unique(
            hash,
            Slot {
                key: key.into(),
                entry,
            },
            |slot| hasher.hash_one(&*slot.key),
        );
        None
    }

    /// Forgets `key`; returns the entry it had.
    pub fn remove(&self, key: &[u8]) -> Option<IndexEntry> {
        let hash = self.hash(key);
        let mut shard = self.shard(hash).write().expect("index lock poisoned");
        let slot = shard
            .table
            .find_entry(hash, |slot| &*slot.key == key)
            .ok()?
            .remove()
            .0;
        shard.live_bytes -= u64::from(slot.entry.len);
        shard.key_heap_bytes -= key_heap_size(slot.key.len());
        Some(slot.entry)
    }

    /// Doubles the table before it passes the configured load factor.
    fn grow_if_needed(&self, shard: &mut Shard) {
        let len = shard.table.len();
        let buckets = (shard.table.capacity() as f64 / TABLE_LOAD_FACTOR).round();
        if (len + 1) as f64 <= buckets * self.max_load_factor {
            return;
        }
        let hasher = &self.hasher;
        let wanted_capacity = ((buckets * 2.0).max(8.0) * TABLE_LOAD_FACTOR) as usize;
        shard
            .table
            .reserve(wanted_capacity.saturating_sub(len), |slot| {
                hasher.hash_one(&*slot.key)
            });
    }

    pub fn len(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.read().expect("index lock poisoned").table.len() as u64)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> IndexStats {
        let mut stats = IndexStats::default();
        for shard in self.shards.iter() {
            let shard = shard.read().expect("index lock poisoned");
            stats.keys += shard.table.len() as u64;
            stats.live_bytes += shard.live_bytes;
            stats.memory_bytes += shard.table.allocation_size() as u64 + shard.key_heap_bytes;
        }
        stats
    }

    /// Calls `visit` for every key, in no particular order. Holds one shard's
    /// read lock at a time.
    pub fn for_each(&self, mut visit: impl FnMut(&[u8], IndexEntry)) {
        for shard in self.shards.iter() {
            let shard = shard.read().expect("index lock poisoned");
            for slot in shard.table.iter() {
                visit(&slot.key, slot.entry);
            }
        }
    }
}

/// A malloc chunk holding `len` bytes: 8 bytes of header, 16-byte granules, 32 at least.
fn key_heap_size(len: usize) -> u64 {
    ((len as u64 + 8).div_ceil(16) * 16).max(32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn entry(version: u64) -> IndexEntry {
        IndexEntry {
            version,
            segment_id: 1,
            offset: 32,
            len: 40,
        }
    }

    #[test]
    fn insert_get_remove() {
        let index = Index::new(0, 0.875);
        assert_eq!(index.insert(b"a", entry(1)), None);
        assert_eq!(index.insert(b"a", entry(2)), Some(entry(1)));
        assert_eq!(index.get(b"a"), Some(entry(2)));
        assert_eq!(index.get(b"b"), None);
        assert_eq!(index.remove(b"a"), Some(entry(2)));
        assert_eq!(index.remove(b"a"), None);
        assert!(index.is_empty());
    }

    #[test]
    fn live_bytes_follow_the_current_entries() {
        let index = Index::new(0, 0.875);
        index.insert(b"a", entry(1));
        index.insert(
            b"a",
            IndexEntry {
                len: 100,
                ..entry(2)
            },
        );
        index.insert(b"b", entry(3));
        assert_eq!(index.stats().live_bytes, 140);
        index.remove(b"a");
        assert_eq!(index.stats().live_bytes, 40);
    }

    #[test]
    #[should_panic(expected = "index versions must increase")]
    fn an_older_version_never_replaces_a_newer_one() {
        let index = Index::new(0, 0.875);
        index.insert(b"a", entry(5));
        index.insert(b"a", entry(4));
    }

    #[test]
    fn the_load_factor_bounds_occupancy() {
        for load_factor in [0.25, 0.5, 0.875] {
            let index = Index::new(0, load_factor);
            for i in 0..20_000u32 {
                index.insert(&i.to_le_bytes(), entry(u64::from(i) + 1));
            }
            for shard in index.shards.iter() {
                let shard = shard.read().unwrap();
                let buckets = shard.table.capacity() as f64 / TABLE_LOAD_FACTOR;
                assert!(
                    shard.table.len() as f64 <= buckets * load_factor + 1.0,
                    "lf {load_factor}"
                );
            }
        }
    }

    #[test]
    fn initial_capacity_avoids_growth() {
        let index = Index::new(10_000, 0.5);
        let before = index.stats().memory_bytes;
        for i in 0..9_000u32 {
            index.insert(&i.to_le_bytes(), entry(1));
        }
        let tables_after: u64 = index
            .shards
            .iter()
            .map(|s| s.read().unwrap().table.allocation_size() as u64)
            .sum();
        assert!(
            tables_after <= before,
            "tables grew from {before} to {tables_after}"
        );
    }

    #[test]
    fn matches_a_hashmap_model() {
        let index = Index::new(0, 0.6);
        let mut model = HashMap::new();
        let mut version = 0;
        for i in 0..5_000u64 {
            let key = (i * 7919 % 1000).to_string().into_bytes();
            version += 1;
            if i % 3 == 0 {
                assert_eq!(index.remove(&key), model.remove(&key));
            } else {
                assert_eq!(
                    index.insert(&key, entry(version)),
                    model.insert(key, entry(version))
                );
            }
        }
        assert_eq!(index.len(), model.len() as u64);
        let mut seen = 0;
        index.for_each(|key, e| {
            assert_eq!(model.get(key), Some(&e));
            seen += 1;
        });
        assert_eq!(seen, model.len());
    }
}
