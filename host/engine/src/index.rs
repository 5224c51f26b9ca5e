//! The hot index: `key -> (segment_id, offset, length, version, tombstone)`
//! for the keys kept in memory.
//!
//! The index stores no keys: every entry points at its record in a segment,
//! and the key is read back from the memory-mapped log when two entries
//! must be told apart. A slot is 24 bytes (the entry plus 31 bits of the
//! key's hash, compared before the log is touched, so a lookup of an absent
//! key practically never reads the log).
//!
//! With a budget ([`Index::new`]'s `max_entries`), the index is a cache over
//! the sealed segments' metadata: when a shard is full, a CLOCK sweep evicts
//! entries whose reference bit is clear (a hit sets it; the sweep clears it,
//! so an entry survives one sweep per hit). An entry is evicted only if its
//! record can be found again through segment metadata ([`RecordKeys::is_evictable`]):
//! the keys of the active segment, and of a sealed segment whose metadata is
//! not yet written, always stay. Tombstones are entries too, so a delete in
//! the active segment shadows an older value in a sealed one.
//!
//! Sharded so readers on different keys rarely meet on a lock; each shard is
//! a SwissTable grown by us, so the configured maximum load factor holds.
//! Keys are hashed once with a per-process random seed (keys sent by
//! untrusted guests cannot force collisions): the top bits pick the shard,
//! the low 32 bits (bit 0 cleared: it is the reference bit) are stored.

use std::hash::BuildHasher;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use hashbrown::HashTable;

const SHARD_BITS: u32 = 5;
/// Number of shards; a power of two.
pub const SHARDS: usize = 1 << SHARD_BITS;
/// hashbrown keeps a table at most 7/8 full; a lower maximum is ours to enforce.
const TABLE_LOAD_FACTOR: f64 = 0.875;
/// Bytes a table spends per bucket: the slot and one control byte.
const BUCKET_BYTES: usize = std::mem::size_of::<Slot>() + 1;
const TOMBSTONE_BIT: u32 = 1 << 31;
const REFERENCED_BIT: u32 = 1;

/// Where the newest record of a key lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub version: u64,
    pub segment_id: u32,
    /// Offset of the record in its segment.
    pub offset: u32,
    /// Length of the whole record, header included (below 2^31).
    pub len: u32,
    /// The record deletes the key.
    pub tombstone: bool,
}

impl IndexEntry {
    /// The same record (a redirect or removal checks this).
    pub fn same_record(&self, other: &IndexEntry) -> bool {
        (self.segment_id, self.offset, self.version)
            == (other.segment_id, other.offset, other.version)
    }
}

/// Reads keys back from the log, and says which segments can be searched
/// without the index.
pub trait RecordKeys {
    /// `None` if the record cannot be reached (it then matches no key).
    fn key_of(&self, entry: &IndexEntry) -> Option<&[u8]>;
    /// Whether an entry of this segment may be evicted: its record can be
    /// found again through the segment's metadata.
    fn is_evictable(&self, segment_id: u32) -> bool;
}

/// An entry with 31 bits of its key's hash and the CLOCK reference bit,
/// laid out flat: 24 bytes.
struct Slot {
    version: u64,
    segment_id: u32,
    offset: u32,
    /// Record length; bit 31: tombstone.
    len_flags: u32,
    /// Hash bits 1..32; bit 0: referenced since the last sweep. Atomic so a
    /// reader holding the shard's read lock can set it.
    hash_ref: AtomicU32,
}

impl Slot {
    fn new(entry: IndexEntry, hash: u32) -> Self {
        assert!(entry.len < TOMBSTONE_BIT, "record length fits 31 bits");
        Slot {
            version: entry.version,
            segment_id: entry.segment_id,
            offset: entry.offset,
            len_flags: entry.len | if entry.tombstone { TOMBSTONE_BIT } else { 0 },
            hash_ref: AtomicU32::new(hash),
        }
    }

    fn entry(&self) -> IndexEntry {
        IndexEntry {
            version: self.version,
            segment_id: self.segment_id,
            offset: self.offset,
            len: self.len_flags & !TOMBSTONE_BIT,
            tombstone: self.len_flags & TOMBSTONE_BIT != 0,
        }
    }

    fn hash(&self) -> u32 {
        self.hash_ref.load(Ordering::Relaxed) & !REFERENCED_BIT
    }

    fn mark_referenced(&self) {
        // Read first: a hot key's cache line is not written on every hit.
        if self.hash_ref.load(Ordering::Relaxed) & REFERENCED_BIT == 0 {
            self.hash_ref.fetch_or(REFERENCED_BIT, Ordering::Relaxed);
        }
    }

    /// Clears the reference bit; returns whether it was set.
    fn take_referenced(&self) -> bool {
        self.hash_ref.fetch_and(!REFERENCED_BIT, Ordering::Relaxed) & REFERENCED_BIT != 0
    }
}

#[derive(Default)]
struct Shard {
    table: HashTable<Slot>,
    tombstones: u64,
    /// Size at which the next insert sweeps. A sweep that leaves the shard
    /// at or over its budget (its entries pinned: the active segment's, or
    /// a sealed one's whose metadata is not written yet) puts the next one
    /// an eighth of the shard later, instead of sweeping (and rebuilding
    /// the table) on every insert, which made a fill quadratic.
    sweep_at: usize,
}

pub struct Index {
    shards: Box<[RwLock<Shard>]>,
    hasher: foldhash::fast::RandomState,
    max_load_factor: f64,
    /// Most entries a shard keeps before it evicts (`usize::MAX`: no budget).
    shard_max_entries: usize,
    evictions: AtomicU64,
}

/// Sizes reported by [`Index::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// Entries, tombstones included.
    pub entries: u64,
    pub tombstones: u64,
    /// Bytes allocated by the tables.
    pub memory_bytes: u64,
    pub evictions: u64,
}

/// The table hash: both hashbrown's bucket bits (low) and tag bits (top)
/// come from the stored bits, so a resize needs no key.
fn table_hash(hash: u32) -> u64 {
    (u64::from(hash) << 32) | u64::from(hash)
}

/// Most entries per shard within `budget_bytes` of tables: the largest
/// power-of-two bucket count whose table fits, filled to the load factor.
pub fn shard_entries_for_bytes(budget_bytes: u64, max_load_factor: f64) -> usize {
    let per_shard = budget_bytes as usize / SHARDS;
    let mut buckets = 4usize;
    while (buckets * 2) * BUCKET_BYTES + 16 <= per_shard {
        buckets *= 2;
    }
    ((buckets as f64) * max_load_factor.min(TABLE_LOAD_FACTOR)) as usize
}

impl Index {
    /// `shard_max_entries`: `None` for no budget; otherwise the most entries
    /// one shard keeps (the budget divided by [`SHARDS`]). Fails, instead of
    /// aborting the process, when the initial capacity cannot be allocated.
    pub fn new(
        initial_capacity: usize,
        max_load_factor: f64,
        shard_max_entries: Option<usize>,
    ) -> Result<Self, hashbrown::TryReserveError> {
        assert!(max_load_factor > 0.0 && max_load_factor <= TABLE_LOAD_FACTOR);
        let shard_max_entries = shard_max_entries.unwrap_or(usize::MAX).max(1);
        let per_shard = initial_capacity.div_ceil(SHARDS).min(shard_max_entries);
        let shards = (0..SHARDS)
            .map(|_| {
                let mut shard = Shard::default();
                if per_shard > 0 {
                    let buckets_needed = (per_shard as f64 / max_load_factor).ceil();
                    let capacity = (buckets_needed * TABLE_LOAD_FACTOR) as usize;
                    shard.table.try_reserve(capacity, Slot::rehash)?;
                }
                Ok(RwLock::new(shard))
            })
            .collect::<Result<_, _>>()?;
        Ok(Index {
            shards,
            hasher: foldhash::fast::RandomState::default(),
            max_load_factor,
            shard_max_entries,
            evictions: AtomicU64::new(0),
        })
    }

    pub fn has_budget(&self) -> bool {
        self.shard_max_entries != usize::MAX
    }

    /// (shard, stored hash) of a key.
    fn locate(&self, key: &[u8]) -> (&RwLock<Shard>, u32) {
        let hash = self.hasher.hash_one(key);
        let shard = (hash >> (64 - SHARD_BITS)) as usize;
        (&self.shards[shard], hash as u32 & !REFERENCED_BIT)
    }

    /// The entry of `key`, marking it referenced.
    pub fn get(&self, key: &[u8], keys: &impl RecordKeys) -> Option<IndexEntry> {
        let (shard, hash) = self.locate(key);
        let shard = shard.read().expect("index lock poisoned");
        let slot = shard
            .table
            .find(table_hash(hash), |slot| matches(slot, hash, key, keys))?;
        slot.mark_referenced();
        Some(slot.entry())
    }

    /// Points `key` at `entry` (a newer record); returns the entry it
    /// replaced. `keys` must reach the records of the current entries.
    pub fn upsert(
        &self,
        key: &[u8],
        entry: IndexEntry,
        keys: &impl RecordKeys,
    ) -> Option<IndexEntry> {
        let (shard, hash) = self.locate(key);
        let mut shard = shard.write().expect("index lock poisoned");
        shard.tombstones += u64::from(entry.tombstone);
        if let Some(slot) = shard
            .table
            .find_mut(table_hash(hash), |slot| matches(slot, hash, key, keys))
        {
            let old = std::mem::replace(slot, Slot::new(entry, hash)).entry();
            assert!(old.version < entry.version, "index versions must increase");
            shard.tombstones -= u64::from(old.tombstone);
            return Some(old);
        }
        self.insert_new(&mut shard, entry, hash, keys);
        None
    }

    /// Inserts `entry` for `key` if the key has no entry and `still_valid()`
    /// holds while the shard is locked (a cold lookup's result goes in only
    /// if no write could have made it stale). Returns whether it went in.
    pub fn insert_if_absent(
        &self,
        key: &[u8],
        entry: IndexEntry,
        keys: &impl RecordKeys,
        still_valid: impl FnOnce() -> bool,
    ) -> bool {
        let (shard, hash) = self.locate(key);
        let mut shard = shard.write().expect("index lock poisoned");
        if shard
            .table
            .find(table_hash(hash), |slot| matches(slot, hash, key, keys))
            .is_some()
            || !still_valid()
        {
            return false;
        }
        shard.tombstones += u64::from(entry.tombstone);
        self.insert_new(&mut shard, entry, hash, keys);
        true
    }

    /// Points `key` at `to` only if its entry is still the record `from`
    /// (compaction moved it; a write since then wins). Returns whether it did.
    pub fn redirect(
        &self,
        key: &[u8],
        from: &IndexEntry,
        to: IndexEntry,
        keys: &impl RecordKeys,
    ) -> bool {
        let (shard, hash) = self.locate(key);
        let mut shard = shard.write().expect("index lock poisoned");
        let Some(slot) = shard
            .table
            .find_mut(table_hash(hash), |slot| matches(slot, hash, key, keys))
        else {
            return false;
        };
        if !slot.entry().same_record(from) {
            return false;
        }
        assert_eq!(from.version, to.version, "a moved record keeps its version");
        let referenced = slot.hash_ref.load(Ordering::Relaxed) & REFERENCED_BIT;
        *slot = Slot::new(to, hash | referenced);
        true
    }

    /// Forgets `key` if its entry is the record `expected`. Returns whether it did.
    pub fn remove_if(&self, key: &[u8], expected: &IndexEntry, keys: &impl RecordKeys) -> bool {
        let (shard, hash) = self.locate(key);
        let mut shard = shard.write().expect("index lock poisoned");
        let Ok(found) = shard
            .table
            .find_entry(table_hash(hash), |slot| matches(slot, hash, key, keys))
        else {
            return false;
        };
        if !found.get().entry().same_record(expected) {
            return false;
        }
        let removed = found.remove().0.entry();
        shard.tombstones -= u64::from(removed.tombstone);
        true
    }

    fn insert_new(&self, shard: &mut Shard, entry: IndexEntry, hash: u32, keys: &impl RecordKeys) {
        if shard.table.len() >= self.shard_max_entries.max(shard.sweep_at) {
            self.evict(shard, keys);
            let len = shard.table.len();
            shard.sweep_at = len + (len / 8).max(1);
        }
        self.grow_if_needed(shard);
        shard
            .table
            .insert_unique(table_hash(hash), Slot::new(entry, hash), Slot::rehash);
    }

    /// A CLOCK sweep over a full shard: referenced entries get a second
    /// chance (their bit is cleared), unreferenced evictable ones go until
    /// the shard is down to 7/8 of its budget. A second pass runs if the
    /// first found too few (every bit was set). Bounded: two passes over
    /// the shard. If every entry is pinned the shard grows past its budget.
    fn evict(&self, shard: &mut Shard, keys: &impl RecordKeys) {
        let target = self.shard_max_entries - self.shard_max_entries / 8;
        for _pass in 0..2 {
            let mut excess = shard
                .table
                .len()
                .saturating_sub(target.min(self.shard_max_entries - 1));
            if excess == 0 {
                break;
            }
            let mut evicted_tombstones = 0;
            let before = shard.table.len();
            shard.table.retain(|slot| {
                if excess == 0 || !keys.is_evictable(slot.segment_id) || slot.take_referenced() {
                    return true;
                }
                excess -= 1;
                evicted_tombstones += u64::from(slot.len_flags & TOMBSTONE_BIT != 0);
                false
            });
            shard.tombstones -= evicted_tombstones;
            self.evictions
                .fetch_add((before - shard.table.len()) as u64, Ordering::Relaxed);
        }
        // Removals leave "deleted" markers that count against the table's
        // room, so the next insert would double it past the budget. A fresh
        // table of the budgeted size holds the survivors without them.
        let survivors = std::mem::replace(
            &mut shard.table,
            HashTable::with_capacity(self.shard_max_entries),
        );
        for slot in survivors {
            shard
                .table
                .insert_unique(table_hash(slot.hash()), slot, Slot::rehash);
        }
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
            .reserve(wanted_capacity.saturating_sub(len), Slot::rehash);
    }

    pub fn len(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.read().expect("index lock poisoned").table.len() as u64)
            .sum()
    }

    /// Drops every entry (installing a snapshot replaces the whole state);
    /// the tables keep their allocations.
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.write().expect("index lock poisoned");
            shard.table.clear();
            shard.tombstones = 0;
            shard.sweep_at = Shard::default().sweep_at;
        }
    }

    pub fn stats(&self) -> IndexStats {
        let mut stats = IndexStats {
            evictions: self.evictions.load(Ordering::Relaxed),
            ..IndexStats::default()
        };
        for shard in self.shards.iter() {
            let shard = shard.read().expect("index lock poisoned");
            stats.entries += shard.table.len() as u64;
            stats.tombstones += shard.tombstones;
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

impl Slot {
    fn rehash(slot: &Slot) -> u64 {
        table_hash(slot.hash())
    }
}

fn matches(slot: &Slot, hash: u32, key: &[u8], keys: &impl RecordKeys) -> bool {
    slot.hash() == hash && keys.key_of(&slot.entry()) == Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Keys kept by (segment, offset), as the log would hold them. Segment 1
    /// is "active" (pinned); segment 2 is sealed with metadata (evictable).
    #[derive(Default)]
    struct Log(HashMap<(u32, u32), Vec<u8>>);

    impl RecordKeys for Log {
        fn key_of(&self, entry: &IndexEntry) -> Option<&[u8]> {
            self.0
                .get(&(entry.segment_id, entry.offset))
                .map(Vec::as_slice)
        }

        fn is_evictable(&self, segment_id: u32) -> bool {
            segment_id != 1
        }
    }

    impl Log {
        /// Appends `key` as record number `version` of segment `segment` and returns its entry.
        fn append_to(&mut self, segment: u32, key: &[u8], version: u64) -> IndexEntry {
            let entry = IndexEntry {
                version,
                segment_id: segment,
                offset: version as u32,
                len: 40,
                tombstone: false,
            };
            self.0.insert((segment, version as u32), key.to_vec());
            entry
        }

        fn append(&mut self, key: &[u8], version: u64) -> IndexEntry {
            self.append_to(1, key, version)
        }
    }

    #[test]
    fn an_initial_capacity_that_cannot_be_allocated_is_an_error_not_an_abort() {
        assert!(Index::new(usize::MAX / 2, 0.875, None).is_err());
    }

    #[test]
    fn upsert_get_and_conditional_removal() {
        let index = Index::new(0, 0.875, None).unwrap();
        let mut log = Log::default();
        let first = log.append(b"a", 1);
        assert_eq!(index.upsert(b"a", first, &log), None);
        let second = log.append(b"a", 2);
        assert_eq!(index.upsert(b"a", second, &log), Some(first));
        assert_eq!(index.get(b"a", &log), Some(second));
        assert_eq!(index.get(b"b", &log), None);
        assert!(
            !index.remove_if(b"a", &first, &log),
            "not the current record"
        );
        assert!(index.remove_if(b"a", &second, &log));
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn tombstones_are_entries_and_counted() {
        let index = Index::new(0, 0.875, None).unwrap();
        let mut log = Log::default();
        index.upsert(b"a", log.append(b"a", 1), &log);
        let tombstone = IndexEntry {
            tombstone: true,
            ..log.append(b"a", 2)
        };
        index.upsert(b"a", tombstone, &log);
        assert_eq!(index.get(b"a", &log), Some(tombstone));
        assert_eq!(index.stats().tombstones, 1);
        index.upsert(b"a", log.append(b"a", 3), &log);
        assert_eq!(index.stats().tombstones, 0);
    }

    #[test]
    #[should_panic(expected = "index versions must increase")]
    fn an_older_version_never_replaces_a_newer_one() {
        let index = Index::new(0, 0.875, None).unwrap();
        let mut log = Log::default();
        let newer = log.append(b"a", 5);
        index.upsert(b"a", newer, &log);
        let older = log.append(b"a", 4);
        index.upsert(b"a", older, &log);
    }

    #[test]
    fn insert_if_absent_respects_existing_entries_and_the_guard() {
        let index = Index::new(0, 0.875, None).unwrap();
        let mut log = Log::default();
        let cold = log.append_to(2, b"a", 1);
        assert!(!index.insert_if_absent(b"a", cold, &log, || false));
        assert!(index.insert_if_absent(b"a", cold, &log, || true));
        let newer = log.append(b"a", 2);
        index.upsert(b"a", newer, &log);
        assert!(!index.insert_if_absent(b"a", cold, &log, || true));
        assert_eq!(index.get(b"a", &log), Some(newer));
    }

    #[test]
    fn a_redirect_applies_only_to_the_record_it_moved() {
        let index = Index::new(0, 0.875, None).unwrap();
        let mut log = Log::default();
        let old = log.append_to(2, b"a", 7);
        index.upsert(b"a", old, &log);
        let moved = IndexEntry {
            segment_id: 3,
            offset: 100,
            ..old
        };
        log.0.insert((3, 100), b"a".to_vec());
        assert!(index.redirect(b"a", &old, moved, &log));
        assert_eq!(index.get(b"a", &log), Some(moved));
        assert!(!index.redirect(b"a", &old, moved, &log), "already moved");
        // A write that raced with compaction wins.
        let newer = log.append(b"a", 8);
        index.upsert(b"a", newer, &log);
        assert!(!index.redirect(b"a", &moved, moved, &log));
        assert_eq!(index.get(b"a", &log), Some(newer));
    }

    #[test]
    fn a_budget_evicts_unreferenced_sealed_entries_and_keeps_pinned_ones() {
        let index = Index::new(0, 0.875, Some(8)).unwrap();
        let mut log = Log::default();
        let mut version = 0;
        let mut pinned = Vec::new();
        for i in 0..2_000u32 {
            version += 1;
            let key = i.to_le_bytes();
            // One key in 50 is in the active segment.
            let segment = if i % 50 == 0 { 1 } else { 2 };
            let entry = log.append_to(segment, &key, version);
            index.upsert(&key, entry, &log);
            if segment == 1 {
                pinned.push((key, entry));
            }
        }
        for (key, entry) in &pinned {
            assert_eq!(index.get(key, &log), Some(*entry), "pinned entries stay");
        }
        let stats = index.stats();
        assert!(stats.evictions > 0);
        assert!(
            stats.entries <= (8 * SHARDS) as u64 + pinned.len() as u64,
            "{stats:?}"
        );
    }

    #[test]
    fn pinned_entries_over_the_budget_do_not_stop_later_evictions() {
        let index = Index::new(0, 0.875, Some(8)).unwrap();
        let mut log = Log::default();
        let mut version = 0;
        // Four times the budget in the active segment: nothing to evict.
        let pinned = 4 * 8 * SHARDS as u64;
        for i in 0..pinned {
            version += 1;
            let key = i.to_le_bytes();
            index.upsert(&key, log.append_to(1, &key, version), &log);
        }
        assert_eq!(index.len(), pinned);
        // Then many evictable entries: the shards stay near their budget
        // plus their pinned entries (a sweep at most an eighth later).
        for i in pinned..pinned + 20_000 {
            version += 1;
            let key = i.to_le_bytes();
            index.upsert(&key, log.append_to(2, &key, version), &log);
        }
        let stats = index.stats();
        assert!(stats.evictions >= 20_000 - 8 * SHARDS as u64, "{stats:?}");
        for shard in index.shards.iter() {
            let shard = shard.read().unwrap();
            let pinned_here = shard.table.iter().filter(|s| s.segment_id == 1).count();
            assert!(
                shard.table.len() <= (pinned_here + 8) * 9 / 8 + 1,
                "{} entries, {pinned_here} pinned",
                shard.table.len()
            );
        }
    }

    #[test]
    fn a_referenced_entry_survives_a_sweep() {
        let index = Index::new(0, 0.875, Some(16)).unwrap();
        let mut log = Log::default();
        let hot_key = b"hot".to_vec();
        let hot = log.append_to(2, &hot_key, 1);
        index.upsert(&hot_key, hot, &log);
        for i in 0..20_000u32 {
            assert_eq!(index.get(&hot_key, &log), Some(hot), "after {i} inserts");
            let key = i.to_le_bytes();
            index.upsert(&key, log.append_to(2, &key, u64::from(i) + 2), &log);
        }
    }

    #[test]
    fn a_byte_budget_bounds_the_tables() {
        let budget = 1 << 20;
        let per_shard = shard_entries_for_bytes(budget, 0.875);
        let index = Index::new(0, 0.875, Some(per_shard)).unwrap();
        let mut log = Log::default();
        for i in 0..200_000u32 {
            let key = i.to_le_bytes();
            index.upsert(&key, log.append_to(2, &key, u64::from(i) + 1), &log);
        }
        let stats = index.stats();
        assert!(stats.memory_bytes <= budget, "{stats:?}");
        assert!(stats.entries > (per_shard * SHARDS / 2) as u64, "{stats:?}");
    }

    #[test]
    fn the_load_factor_bounds_occupancy() {
        for load_factor in [0.25, 0.5, 0.875] {
            let index = Index::new(0, load_factor, None).unwrap();
            let mut log = Log::default();
            for i in 0..20_000u32 {
                let entry = log.append(&i.to_le_bytes(), u64::from(i) + 1);
                index.upsert(&i.to_le_bytes(), entry, &log);
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
        let index = Index::new(10_000, 0.5, None).unwrap();
        let before = index.stats().memory_bytes;
        let mut log = Log::default();
        for i in 0..9_000u32 {
            let entry = log.append(&i.to_le_bytes(), u64::from(i) + 1);
            index.upsert(&i.to_le_bytes(), entry, &log);
        }
        assert_eq!(index.stats().memory_bytes, before, "tables grew");
    }

    #[test]
    fn a_slot_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 24);
    }

    #[test]
    fn an_unreachable_record_matches_no_key() {
        let index = Index::new(0, 0.875, None).unwrap();
        let mut log = Log::default();
        let entry = log.append(b"a", 1);
        index.upsert(b"a", entry, &log);
        assert_eq!(index.get(b"a", &Log::default()), None);
    }

    #[test]
    fn matches_a_hashmap_model() {
        let index = Index::new(0, 0.6, None).unwrap();
        let mut log = Log::default();
        let mut model: HashMap<Vec<u8>, IndexEntry> = HashMap::new();
        for i in 0..5_000u64 {
            let key = (i * 7919 % 1000).to_string().into_bytes();
            let entry = IndexEntry {
                tombstone: i % 3 == 0,
                ..log.append(&key, i + 1)
            };
            assert_eq!(index.upsert(&key, entry, &log), model.insert(key, entry));
        }
        assert_eq!(index.len(), model.len() as u64);
        let mut seen = 0;
        index.for_each(|entry| {
            let key = log.key_of(&entry).unwrap();
            assert_eq!(model.get(key), Some(&entry));
            seen += 1;
        });
        assert_eq!(seen, model.len());
        let tombstones = model.values().filter(|e| e.tombstone).count() as u64;
        assert_eq!(index.stats().tombstones, tombstones);
    }
}
