//! The in-memory hash index: `key -> (segment_id, offset, length, version)`.
//!
//! The index stores no keys: every entry points at its record in a segment,
//! and the key is read back from the memory-mapped log when two entries
//! must be told apart. A slot is 24 bytes (the entry plus 32 bits of the
//! key's hash, compared before the log is touched, so a lookup of an absent
//! key practically never reads the log). Compared with boxed keys this saves
//! the key allocation and halves the slot.
//!
//! Sharded so readers on different keys rarely meet on a lock; each shard is
//! a SwissTable grown by us, so the configured maximum load factor holds.
//! Keys are hashed once with a per-process random seed (keys sent by
//! untrusted guests cannot force collisions): the top bits pick the shard,
//! the low 32 bits are stored and drive the table.

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

/// Reads the key of the record an entry points at.
pub trait KeySource {
    /// `None` if the record cannot be reached (it then matches no key).
    fn key_of(&self, entry: &IndexEntry) -> Option<&[u8]>;
}

/// An entry with 32 bits of its key's hash, laid out flat so the hash
/// fills what would be the entry's padding: 24 bytes.
#[derive(Clone, Copy)]
struct Slot {
    version: u64,
    segment_id: u32,
    offset: u32,
    len: u32,
    hash32: u32,
}

impl Slot {
    fn new(entry: IndexEntry, hash32: u32) -> Self {
        let IndexEntry {
            version,
            segment_id,
            offset,
            len,
        } = entry;
        Slot {
            version,
            segment_id,
            offset,
            len,
            hash32,
        }
    }

    fn entry(&self) -> IndexEntry {
        IndexEntry {
            version: self.version,
            segment_id: self.segment_id,
            offset: self.offset,
            len: self.len,
        }
    }
}

#[derive(Default)]
struct Shard {
    table: HashTable<Slot>,
    /// Sum of `entry.len` over the shard: the log bytes still live.
    live_bytes: u64,
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
    /// Bytes allocated by the tables.
    pub memory_bytes: u64,
}

/// The table hash: both hashbrown's bucket bits (low) and tag bits (top)
/// come from the stored 32 bits, so a resize needs no key.
fn table_hash(hash32: u32) -> u64 {
    (u64::from(hash32) << 32) | u64::from(hash32)
}

impl Index {
    pub fn new(initial_capacity: usize, max_load_factor: f64) -> Self {
        assert!(max_load_factor > 0.0 && max_load_factor <= TABLE_LOAD_FACTOR);
        let per_shard = initial_capacity.div_ceil(SHARDS);
        let shards = (0..SHARDS)
            .map(|_| {
                let mut shard = Shard::default();
                if per_shard > 0 {
                    let buckets_needed = (per_shard as f64 / max_load_factor).ceil();
                    let capacity = (buckets_needed * TABLE_LOAD_FACTOR) as usize;
                    shard
                        .table
                        .reserve(capacity, |slot| table_hash(slot.hash32));
                }
                RwLock::new(shard)
            })
            .collect();
        Index {
            shards,
            hasher: foldhash::fast::RandomState::default(),
            max_load_factor,
        }
    }

    /// (shard, stored hash) of a key.
    fn locate(&self, key: &[u8]) -> (&RwLock<Shard>, u32) {
        let hash = self.hasher.hash_one(key);
        let shard = (hash >> (64 - SHARD_BITS)) as usize;
        (&self.shards[shard], hash as u32)
    }

    pub fn get(&self, key: &[u8], keys: &impl KeySource) -> Option<IndexEntry> {
        let (shard, hash32) = self.locate(key);
        let shard = shard.read().expect("index lock poisoned");
        let found = shard
            .table
            .find(table_hash(hash32), |slot| matches(slot, hash32, key, keys));
        found.map(Slot::entry)
    }

    /// Points `key` at `entry`; returns the entry it replaced. `keys` must
    /// reach the records of the current entries (the new record need not be).
    pub fn insert(
        &self,
        key: &[u8],
        entry: IndexEntry,
        keys: &impl KeySource,
    ) -> Option<IndexEntry> {
        let (shard, hash32) = self.locate(key);
        let mut shard = shard.write().expect("index lock poisoned");
        shard.live_bytes += u64::from(entry.len);
        if let Some(slot) = shard
            .table
            .find_mut(table_hash(hash32), |slot| matches(slot, hash32, key, keys))
        {
            let old = std::mem::replace(slot, Slot::new(entry, hash32)).entry();
            assert!(old.version < entry.version, "index versions must increase");
            shard.live_bytes -= u64::from(old.len);
            return Some(old);
        }
        self.grow_if_needed(&mut shard);
        shard
            .table
            .insert_unique(table_hash(hash32), Slot::new(entry, hash32), |slot| {
                table_hash(slot.hash32)
            });
        None
    }

    /// Forgets `key`; returns the entry it had.
    pub fn remove(&self, key: &[u8], keys: &impl KeySource) -> Option<IndexEntry> {
        let (shard, hash32) = self.locate(key);
        let mut shard = shard.write().expect("index lock poisoned");
        let found = shard
            .table
            .find_entry(table_hash(hash32), |slot| matches(slot, hash32, key, keys));
        let slot = found.ok()?.remove().0;
        shard.live_bytes -= u64::from(slot.len);
        Some(slot.entry())
    }

    /// Doubles the table before it passes the configured load factor.
    fn grow_if_needed(&self, shard: &mut Shard) {
        let len = shard.table.len();
        let buckets = (shard.table.capacity() as f64 / TABLE_LOAD_FACTOR).round();
        if (len + 1) as f64 <= buckets * self.max_load_factor {
            return;
        }
        let wanted_capacity = ((buckets * 2.0).max(8.0) * TABLE_LOAD_FACTOR) as usize;
        shard
            .table
            .reserve(wanted_capacity.saturating_sub(len), |slot| {
                table_hash(slot.hash32)
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
            stats.memory_bytes += shard.table.allocation_size() as u64;
        }
        stats
    }

    /// Calls `visit` for every entry, in no particular order. Holds one
    /// shard's read lock at a time.
    pub fn for_each(&self, mut visit: impl FnMut(IndexEntry)) {
        for shard in self.shards.iter() {
            let shard = shard.read().expect("index lock poisoned");
            for slot in shard.table.iter() {
                visit(slot.entry());
            }
        }
    }
}

fn matches(slot: &Slot, hash32: u32, key: &[u8], keys: &impl KeySource) -> bool {
    slot.hash32 == hash32 && keys.key_of(&slot.entry()) == Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Keys kept by (segment, offset), as the log would hold them.
    #[derive(Default)]
    struct Log(HashMap<(u32, u32), Vec<u8>>);

    impl KeySource for Log {
        fn key_of(&self, entry: &IndexEntry) -> Option<&[u8]> {
            self.0
                .get(&(entry.segment_id, entry.offset))
                .map(Vec::as_slice)
        }
    }

    impl Log {
        /// Appends `key` as record number `version` and returns its entry.
        fn append(&mut self, key: &[u8], version: u64) -> IndexEntry {
            let entry = IndexEntry {
                version,
                segment_id: 1,
                offset: version as u32,
                len: 40,
            };
            self.0.insert((1, version as u32), key.to_vec());
            entry
        }
    }

    #[test]
    fn insert_get_remove() {
        let index = Index::new(0, 0.875);
        let mut log = Log::default();
        let first = log.append(b"a", 1);
        assert_eq!(index.insert(b"a", first, &log), None);
        let second = log.append(b"a", 2);
        assert_eq!(index.insert(b"a", second, &log), Some(first));
        assert_eq!(index.get(b"a", &log), Some(second));
        assert_eq!(index.get(b"b", &log), None);
        assert_eq!(index.remove(b"a", &log), Some(second));
        assert_eq!(index.remove(b"a", &log), None);
        assert!(index.is_empty());
    }

    #[test]
    fn live_bytes_follow_the_current_entries() {
        let index = Index::new(0, 0.875);
        let mut log = Log::default();
        let a1 = log.append(b"a", 1);
        index.insert(b"a", a1, &log);
        let a2 = IndexEntry {
            len: 100,
            ..log.append(b"a", 2)
        };
        index.insert(b"a", a2, &log);
        let b = log.append(b"b", 3);
        index.insert(b"b", b, &log);
        assert_eq!(index.stats().live_bytes, 140);
        index.remove(b"a", &log);
        assert_eq!(index.stats().live_bytes, 40);
    }

    #[test]
    #[should_panic(expected = "index versions must increase")]
    fn an_older_version_never_replaces_a_newer_one() {
        let index = Index::new(0, 0.875);
        let mut log = Log::default();
        let newer = log.append(b"a", 5);
        index.insert(b"a", newer, &log);
        let older = log.append(b"a", 4);
        index.insert(b"a", older, &log);
    }

    #[test]
    fn the_load_factor_bounds_occupancy() {
        for load_factor in [0.25, 0.5, 0.875] {
            let index = Index::new(0, load_factor);
            let mut log = Log::default();
            for i in 0..20_000u32 {
                let entry = log.append(&i.to_le_bytes(), u64::from(i) + 1);
                index.insert(&i.to_le_bytes(), entry, &log);
            }
            for shard in index.shards.iter() {
                let shard = shard.read().unwrap();
                let buckets = shard.table.capacity() as f64 / TABLE_LOAD_FACTOR;
                assert!(
                    shard.table.len() as f64 <= buckets * load_factor + 1.0,
                    "lf {load_factor}"
                );
            }
            assert_eq!(index.len(), 20_000);
        }
    }

    #[test]
    fn initial_capacity_avoids_growth() {
        let index = Index::new(10_000, 0.5);
        let before = index.stats().memory_bytes;
        let mut log = Log::default();
        for i in 0..9_000u32 {
            let entry = log.append(&i.to_le_bytes(), u64::from(i) + 1);
            index.insert(&i.to_le_bytes(), entry, &log);
        }
        assert_eq!(index.stats().memory_bytes, before, "tables grew");
    }

    #[test]
    fn a_slot_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 24);
    }

    #[test]
    fn an_unreachable_record_matches_no_key() {
        let index = Index::new(0, 0.875);
        let mut log = Log::default();
        let entry = log.append(b"a", 1);
        index.insert(b"a", entry, &log);
        assert_eq!(index.get(b"a", &Log::default()), None);
    }

    #[test]
    fn matches_a_hashmap_model() {
        let index = Index::new(0, 0.6);
        let mut log = Log::default();
        let mut model = HashMap::new();
        for i in 0..5_000u64 {
            let key = (i * 7919 % 1000).to_string().into_bytes();
            if i % 3 == 0 {
                assert_eq!(index.remove(&key, &log), model.remove(&key));
            } else {
                let entry = log.append(&key, i + 1);
                assert_eq!(index.insert(&key, entry, &log), model.insert(key, entry));
            }
        }
        assert_eq!(index.len(), model.len() as u64);
        let mut seen = 0;
        index.for_each(|entry| {
            let key = log.key_of(&entry).unwrap();
            assert_eq!(model.get(key), Some(&entry));
            seen += 1;
        });
        assert_eq!(seen, model.len());
    }
}
