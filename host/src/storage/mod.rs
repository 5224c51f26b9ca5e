//! The storage facade: segments on disk, the hash index in memory, and the
//! single writer that appends to the active segment.
//!
//! Reads take one index shard lock and the segment-table read lock, then copy
//! the record out of a memory map. Writes go through [`WriterGuard`]: stage
//! records, write them, sync as the caller asks, then publish to the index —
//! so a reader never sees a write before it could have been acknowledged.

mod recovery;
mod writer;

use std::collections::{BTreeMap, BinaryHeap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;

use crate::config::Config;
use crate::data_dir::DataDir;
use crate::error::{Corruption, Error, Result};
use crate::fault::IoFaults;
use crate::index::{Index, IndexEntry, IndexStats, KeySource};
use crate::log_segment::{MappedSegment, segment_file_name};
use crate::metrics::Metrics;

pub use recovery::{OpenReport, SegmentVerdict, SegmentVerification, verify_segments};
use writer::Writer;
pub use writer::{Staged, WriterGuard};

/// Open segments by id. Also what the index reads keys back from.
pub(crate) type SegmentTable = BTreeMap<u32, Arc<MappedSegment>>;

impl KeySource for SegmentTable {
    fn key_of(&self, entry: &IndexEntry) -> Option<&[u8]> {
        self.get(&entry.segment_id)?.key_at(entry.offset, entry.len)
    }
}

/// A value and the version that wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub version: u64,
}

pub struct Storage {
    dir: DataDir,
    index: Index,
    segments: RwLock<SegmentTable>,
    /// A sequence lock around publishing: odd while a group is being
    /// published. A lookup that overlapped a publish retries, so the records
    /// of a batch become visible all at once (a reader that sees one of them
    /// sees every one) without readers writing to a shared cache line.
    publish_seq: AtomicU64,
    writer: Mutex<Writer>,
    config: Config,
    metrics: Arc<Metrics>,
    /// Highest version published to the index.
    committed_version: AtomicU64,
    sealed_bytes: AtomicU64,
    active_bytes: AtomicU64,
    open_report: OpenReport,
}

/// Sizes of the store, for `stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StorageStats {
    pub keys: u64,
    pub segments: u64,
    pub disk_bytes: u64,
    pub live_bytes: u64,
    pub index_memory_bytes: u64,
    pub committed_version: u64,
    pub last_log_index: u64,
    pub poisoned: Option<String>,
}

impl Storage {
    /// Opens the data directory, recovering the index from the segments.
    pub fn open(config: Config, faults: Arc<dyn IoFaults>, metrics: Arc<Metrics>) -> Result<Self> {
        config.validate()?;
        let dir = DataDir::open(&config.data_dir, faults)?;
        recovery::recover(dir, config, metrics)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn open_report(&self) -> &OpenReport {
        &self.open_report
    }

    /// The current value of `key`, verified against its checksum.
    pub fn get(&self, key: &[u8]) -> Result<Option<Versioned>> {
        // One segment-table guard for lookup and read: the segment an entry
        // names cannot go away in between.
        let segments = self.segments.read().expect("segment table lock poisoned");
        let Some(entry) = self.lookup(key, &segments) else {
            return Ok(None);
        };
        let Some(segment) = segments.get(&entry.segment_id) else {
            return Err(Error::Corruption(Corruption {
                file: segment_file_name(entry.segment_id),
                offset: u64::from(entry.offset),
                reason: "the index points at a segment that is not open".into(),
            }));
        };
        let record = segment.read(entry.offset, entry.len, key, entry.version)?;
        Ok(Some(Versioned {
            value: record.value.to_vec(),
            version: entry.version,
        }))
    }

    /// The version of `key`'s current value, without reading it.
    pub fn version_of(&self, key: &[u8]) -> Option<u64> {
        let segments = self.segments.read().expect("segment table lock poisoned");
        self.lookup(key, &segments).map(|entry| entry.version)
    }

    fn lookup(&self, key: &[u8], segments: &SegmentTable) -> Option<IndexEntry> {
        // Bounded by the publisher: each retry waits for one publish to end,
        // and a publish holds no lock a reader needs to make progress.
        loop {
            let before = self.publish_seq.load(Ordering::SeqCst);
            if !before.is_multiple_of(2) {
                std::thread::yield_now();
                continue;
            }
            let entry = self.index.get(key, segments);
            // The shard lock taken by `get` orders this load after the
            // entry read: if we saw a value written by a publish, we see
            // its odd sequence number here.
            if self.publish_seq.load(Ordering::SeqCst) == before {
                return entry;
            }
        }
    }

    /// Exclusive access to the append path.
    pub fn lock_writer(&self) -> WriterGuard<'_> {
        WriterGuard::new(self, self.writer.lock().expect("writer lock poisoned"))
    }

    pub fn committed_version(&self) -> u64 {
        self.committed_version.load(Ordering::Acquire)
    }

    /// Fsyncs everything appended so far.
    pub fn flush(&self) -> Result<()> {
        self.lock_writer().sync()
    }

    /// Fsync for the interval flusher: does not hold the writer lock while
    /// the disk works, so appends continue meanwhile.
    pub fn sync_in_background(&self) -> Result<()> {
        writer::sync_without_blocking_appends(self)
    }

    pub fn stats(&self) -> StorageStats {
        let IndexStats {
            keys,
            live_bytes,
            memory_bytes,
        } = self.index.stats();
        let (last_log_index, poisoned) = {
            let writer = self.writer.lock().expect("writer lock poisoned");
            (writer.last_log_index, writer.poisoned.clone())
        };
        StorageStats {
            keys,
            segments: self
                .segments
                .read()
                .expect("segment table lock poisoned")
                .len() as u64,
            disk_bytes: self.sealed_bytes.load(Ordering::Relaxed)
                + self.active_bytes.load(Ordering::Relaxed),
            live_bytes,
            index_memory_bytes: memory_bytes,
            committed_version: self.committed_version(),
            last_log_index,
            poisoned,
        }
    }

    /// Up to `limit` live keys starting with `prefix` and sorted after
    /// `after` (exclusive), in byte order. Costs a pass over the whole index
    /// (O(keys), one shard lock at a time) plus a sort of the matches: the
    /// hash index keeps no order. Not a snapshot: a batch published during
    /// the pass may be seen in part.
    pub fn keys_with_prefix(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Vec<Vec<u8>> {
        // A max-heap of the `limit` smallest matches: memory O(limit), not
        // O(matches); a key is copied only if it beats the current largest.
        let mut smallest: BinaryHeap<Vec<u8>> = BinaryHeap::with_capacity(limit.min(1024) + 1);
        if limit == 0 {
            return Vec::new();
        }
        self.for_each_key(|key, _| {
            if !key.starts_with(prefix) || after.is_some_and(|after| key <= after) {
                return;
            }
            if smallest.len() < limit {
                smallest.push(key.to_vec());
            } else if smallest
                .peek()
                .is_some_and(|largest| key < largest.as_slice())
            {
                smallest.pop();
                smallest.push(key.to_vec());
            }
        });
        smallest.into_sorted_vec()
    }

    /// Every live key with its index entry, sorted by key. For tests and tooling.
    pub fn sorted_entries(&self) -> Vec<(Vec<u8>, IndexEntry)> {
        let mut entries = Vec::with_capacity(self.index.len() as usize);
        self.for_each_key(|key, entry| entries.push((key.to_vec(), entry)));
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        entries
    }

    /// Every live entry with the segments that hold them, taken under the
    /// writer lock: a consistent cut at `last_log_index`. The segments stay
    /// readable as long as the returned table is held.
    /// Also returns the last log index and the highest version assigned.
    pub fn consistent_cut(&self) -> (Vec<IndexEntry>, SegmentTable, u64, u64) {
        let writer = self.writer.lock().expect("writer lock poisoned");
        let mut entries = Vec::with_capacity(self.index.len() as usize);
        self.index.for_each(|entry| entries.push(entry));
        let segments = self
            .segments
            .read()
            .expect("segment table lock poisoned")
            .clone();
        (
            entries,
            segments,
            writer.last_log_index,
            writer.next_version - 1,
        )
    }

    /// Removes every file of this store (cleanup after a failed restore into
    /// a directory that was empty). The store must not be used afterwards.
    pub(crate) fn remove_all_files(&self) {
        for id in self.dir.segment_ids().unwrap_or_default() {
            let _ = self.dir.remove(&segment_file_name(id));
        }
        let _ = self.dir.remove(crate::data_dir::LOCK_FILE_NAME);
        let _ = self.dir.sync();
    }

    /// Every live key and its entry, in no order.
    fn for_each_key(&self, mut visit: impl FnMut(&[u8], IndexEntry)) {
        let segments = self.segments.read().expect("segment table lock poisoned");
        self.index.for_each(|entry| {
            // Published entries point at readable records; one that does not
            // (damaged memory) names no key, as in a lookup.
            if let Some(key) = segments.key_of(&entry) {
                visit(key, entry);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SyncMode;
    use crate::fault::NoFaults;

    pub(super) fn open(dir: &std::path::Path, segment_size_bytes: u64) -> Storage {
        let config = Config {
            sync: SyncMode::Os,
            segment_size_bytes,
            ..Config::new(dir)
        };
        Storage::open(config, Arc::new(NoFaults), Arc::new(Metrics::new(None))).unwrap()
    }

    /// Writes one single-op command through the writer, as `KvState` does.
    pub(super) fn write(
        storage: &Storage,
        log_index: u64,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> u64 {
        let mut writer = storage.lock_writer();
        let mut staged = Vec::new();
        writer.note_applied(log_index);
        writer
            .stage_command(log_index, &[(key, value)], &mut staged)
            .unwrap();
        writer.write_staged(false).unwrap();
        writer.publish(&staged);
        staged[0].entry.version
    }

    #[test]
    fn reads_see_published_records_with_their_versions() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = open(tmp.path(), 1 << 20);
        assert_eq!(storage.get(b"k").unwrap(), None);
        let version = write(&storage, 1, b"k", Some(b"v"));
        assert_eq!(
            storage.get(b"k").unwrap(),
            Some(Versioned {
                value: b"v".to_vec(),
                version
            })
        );
        assert_eq!(storage.version_of(b"k"), Some(version));
        assert_eq!(storage.committed_version(), version);
        write(&storage, 2, b"k", None);
        assert_eq!(storage.get(b"k").unwrap(), None);
        assert_eq!(storage.version_of(b"k"), None);
    }

    #[test]
    fn stats_count_keys_segments_and_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = open(tmp.path(), 4096);
        for i in 0..100u64 {
            write(
                &storage,
                i + 1,
                format!("key-{i}").as_bytes(),
                Some(&[7; 60]),
            );
        }
        let stats = storage.stats();
        assert_eq!(stats.keys, 100);
        assert!(stats.segments > 1, "rolled");
        // Records: 28-byte header, key ("key-0".."key-9": 5 bytes, then 6), value.
        assert_eq!(stats.live_bytes, 10 * (28 + 5 + 60) + 90 * (28 + 6 + 60));
        assert!(stats.disk_bytes >= stats.live_bytes);
        assert_eq!(stats.last_log_index, 100);
    }

    #[test]
    fn a_consistent_cut_holds_every_live_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = open(tmp.path(), 4096);
        for i in 0..50u64 {
            write(
                &storage,
                i + 1,
                format!("{}", i % 20).as_bytes(),
                Some(b"value"),
            );
        }
        let (entries, segments, last_log_index, last_version) = storage.consistent_cut();
        assert_eq!((entries.len(), last_log_index, last_version), (20, 50, 50));
        for entry in &entries {
            assert!(segments.key_of(entry).is_some());
        }
        let keys: Vec<Vec<u8>> = storage
            .sorted_entries()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys.len(), 20);
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn remove_all_files_leaves_an_empty_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = open(tmp.path(), 4096);
        write(&storage, 1, b"k", Some(b"v"));
        storage.remove_all_files();
        drop(storage);
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}
