//! The read path: the hot index, the segment table, and the sequence lock
//! that makes a published group visible all at once.
//!
//! Reads take one index shard lock and the segment-table read lock, then
//! copy the record out of a memory map. A key missing from the hot index is
//! looked up in the sealed segments' metadata, newest rank first (Bloom
//! filter, sparse index, a few records of the segment), and copied into the
//! hot index. The writer publishes through the same structure after its
//! records are written (and synced), so a reader never sees a write before
//! it could have been acknowledged.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::Versioned;
use super::merge;
use super::segments::SegmentTable;
use crate::error::{Corruption, Error, Result};
use crate::index::{Index, IndexEntry};
use crate::log_segment::segment_file_name;
use crate::metrics::{Counter, Metrics, MetricsHook};

pub(crate) struct ReadPath {
    pub index: Index,
    segments: RwLock<SegmentTable>,
    /// A sequence lock around publishing: odd while a group is being
    /// published. A lookup that overlapped a publish retries, so the records
    /// of a batch become visible all at once (a reader that sees one of them
    /// sees every one) without readers writing to a shared cache line. A
    /// cold lookup copies its result into the hot index only if no publish
    /// happened meanwhile.
    pub publish_seq: AtomicU64,
    /// Highest version published to the index.
    pub committed_version: AtomicU64,
    /// Every key's newest record is in the hot index, so a miss means
    /// absent. Only without a budget (nothing is evicted then): from the
    /// start on a new store, after the warm-up on a reopened one.
    pub hot_complete: AtomicBool,
    /// Keys with a live value, published.
    pub live_keys: AtomicU64,
    /// Bytes written to the active segment so far.
    pub active_bytes: AtomicU64,
    pub active_id: AtomicU32,
    metrics: Arc<Metrics>,
}

/// What a new read path starts from (see recovery).
pub(crate) struct Published {
    pub committed_version: u64,
    pub hot_complete: bool,
    pub active_id: u32,
    pub active_bytes: u64,
}

impl ReadPath {
    pub fn new(
        index: Index,
        table: SegmentTable,
        published: Published,
        metrics: Arc<Metrics>,
    ) -> Self {
        ReadPath {
            index,
            segments: RwLock::new(table),
            publish_seq: AtomicU64::new(0),
            committed_version: AtomicU64::new(published.committed_version),
            hot_complete: AtomicBool::new(published.hot_complete),
            live_keys: AtomicU64::new(0),
            active_bytes: AtomicU64::new(published.active_bytes),
            active_id: AtomicU32::new(published.active_id),
            metrics,
        }
    }

    /// Replaces everything readers see with another state at once: under
    /// the segment table's write lock (no lookup is in progress) and an odd
    /// publish sequence (a lookup that started before retries), the table,
    /// the hot index (emptied: lookups go to the new segments' metadata
    /// until it fills again) and the published counters change together.
    pub fn install(&self, table: SegmentTable, published: Published, live_keys: u64) {
        let mut segments = self.segments_mut();
        let seq = self.publish_seq.fetch_add(1, Ordering::SeqCst);
        assert!(seq.is_multiple_of(2), "one publisher at a time");
        *segments = table;
        self.index.clear();
        self.committed_version
            .store(published.committed_version, Ordering::Release);
        self.hot_complete
            .store(published.hot_complete, Ordering::Release);
        self.live_keys.store(live_keys, Ordering::Relaxed);
        self.active_bytes
            .store(published.active_bytes, Ordering::Relaxed);
        self.active_id.store(published.active_id, Ordering::SeqCst);
        self.publish_seq.fetch_add(1, Ordering::SeqCst);
    }

    pub fn segments(&self) -> RwLockReadGuard<'_, SegmentTable> {
        self.segments.read().expect("segment table lock poisoned")
    }

    pub fn segments_mut(&self) -> RwLockWriteGuard<'_, SegmentTable> {
        self.segments.write().expect("segment table lock poisoned")
    }

    pub fn active_segment_id(&self) -> u32 {
        self.active_id.load(Ordering::SeqCst)
    }

    pub fn committed_version(&self) -> u64 {
        self.committed_version.load(Ordering::Acquire)
    }

    /// The current value of `key`, verified against its checksum.
    pub fn get(&self, key: &[u8]) -> Result<Option<Versioned>> {
        // One segment-table guard for lookup and read: the segment an entry
        // names cannot go away in between.
        let segments = self.segments();
        let Some(entry) = self.find_newest(key, &segments, true)? else {
            return Ok(None);
        };
        if entry.tombstone {
            return Ok(None);
        }
        let record = read_value(&segments, &entry, key)?;
        Ok(Some(Versioned {
            value: record.to_vec(),
            version: entry.version,
        }))
    }

    /// The version of `key`'s current value, without reading it.
    pub fn version_of(&self, key: &[u8]) -> Result<Option<u64>> {
        let segments = self.segments();
        Ok(self
            .find_newest(key, &segments, true)?
            .filter(|entry| !entry.tombstone)
            .map(|entry| entry.version))
    }

    /// The newest record of `key`, a tombstone included, from the hot index
    /// or the sealed segments' metadata. Never copies a cold result into
    /// the hot index: maintenance and the writer must not flush the hot set.
    pub fn newest_record(&self, key: &[u8], segments: &SegmentTable) -> Result<Option<IndexEntry>> {
        self.find_newest(key, segments, false)
    }

    fn find_newest(
        &self,
        key: &[u8],
        segments: &SegmentTable,
        promote: bool,
    ) -> Result<Option<IndexEntry>> {
        // Bounded by the publisher: each retry waits for one publish to end,
        // and a publish holds no lock a reader needs to make progress.
        loop {
            let before = self.publish_seq.load(Ordering::SeqCst);
            if !before.is_multiple_of(2) {
                std::thread::yield_now();
                continue;
            }
            let found = match self.index.get(key, segments) {
                Some(entry) => Some(entry),
                None if self.hot_complete.load(Ordering::Acquire) => None,
                None => {
                    let cold = segments.find_cold(key)?;
                    if let Some(entry) = cold.filter(|entry| promote && !entry.tombstone) {
                        self.promote(key, entry, segments, before);
                    }
                    cold
                }
            };
            // The shard lock taken by `get` orders this load after the
            // entry read: if we saw a value written by a publish, we see
            // its odd sequence number here.
            if self.publish_seq.load(Ordering::SeqCst) == before {
                return Ok(found);
            }
        }
    }

    /// Copies a cold lookup's result into the hot index, unless a publish
    /// (which might have written a newer record) started since `seq_before`
    /// or compaction is retiring its segment. Checked under the shard lock,
    /// which the publisher and compaction's redirect also take.
    fn promote(&self, key: &[u8], entry: IndexEntry, segments: &SegmentTable, seq_before: u64) {
        let Some(segment) = segments.get(entry.segment_id) else {
            return;
        };
        let promoted = self.index.insert_if_absent(key, entry, segments, || {
            self.publish_seq.load(Ordering::SeqCst) == seq_before
                && !segment.retiring.load(Ordering::SeqCst)
        });
        if promoted {
            self.metrics.add(Counter::HotPromotions, 1);
        }
    }

    /// Live entries in `range`, sorted by key, at most `limit`. Costs a
    /// pass over the hot index (one shard lock at a time) plus, unless the
    /// hot index holds every key, a merge of the sealed segments' sorted
    /// metadata from the first possible key on. Not a snapshot: a batch
    /// published during the pass may be seen in part.
    pub fn live_entries(
        &self,
        range: merge::Range<'_>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, IndexEntry)>> {
        let segments = self.segments();
        let complete = self.hot_complete.load(Ordering::Acquire);
        let mut entries = Vec::new();
        merge::live_keys_page(
            &self.index,
            &segments,
            complete,
            range,
            limit,
            |key, entry| entries.push((key.to_vec(), entry)),
        )?;
        Ok(entries)
    }
}

/// Reads and verifies the value of the record `entry` names.
pub(crate) fn read_value<'s>(
    segments: &'s SegmentTable,
    entry: &IndexEntry,
    key: &[u8],
) -> Result<&'s [u8]> {
    let Some(segment) = segments.get(entry.segment_id) else {
        return Err(Error::Corruption(Corruption {
            file: segment_file_name(entry.segment_id),
            offset: u64::from(entry.offset),
            reason: "the index points at a segment that is not open".into(),
        }));
    };
    Ok(segment
        .map
        .read(entry.offset, entry.len, key, entry.version)?
        .value)
}
