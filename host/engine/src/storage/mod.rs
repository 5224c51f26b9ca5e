//! The storage facade: segments on disk, the hot index in memory, the
//! per-segment metadata that finds what the hot index does not hold, and
//! the single writer that appends to the active segment.
//!
//! Reads take one index shard lock and the segment-table read lock, then copy
//! the record out of a memory map. A key missing from the hot index is looked
//! up in the sealed segments' metadata, newest rank first (Bloom filter,
//! sparse index, a few records of the segment), and copied into the hot index. Writes go
//! through [`WriterGuard`]: stage records, write them, sync as the caller
//! asks, then publish to the index — so a reader never sees a write before it
//! could have been acknowledged.

mod compaction;
mod inspect;
mod maintenance;
mod merge;
mod recovery;
mod segments;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use serde::Serialize;

use crate::config::Config;
use crate::data_dir::DataDir;
use crate::error::{Corruption, Error, Result};
use crate::fault::IoFaults;
use crate::index::{Index, IndexEntry, IndexStats};
use crate::log_segment::{SEGMENT_HEADER_LEN, segment_file_name};
use crate::metrics::{Metrics, MetricsHook};

pub use compaction::{CompactionPlan, CompactionReport, SegmentUsage, plan_compaction};
pub use inspect::{RecordInfo, SegmentInfo};
pub use recovery::{OpenReport, SegmentVerdict, SegmentVerification, verify_segments};
pub use segments::{Segment, SegmentTable};
use writer::Writer;
pub use writer::{Staged, WriterGuard};

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
    /// sees every one) without readers writing to a shared cache line. A
    /// cold lookup copies its result into the hot index only if no publish
    /// happened meanwhile.
    publish_seq: AtomicU64,
    writer: Mutex<Writer>,
    config: Config,
    metrics: Arc<Metrics>,
    /// Highest version published to the index.
    committed_version: AtomicU64,
    /// Every key's newest record is in the hot index, so a miss means
    /// absent. Only without a budget (nothing is evicted then): from the
    /// start on a new store, after the warm-up on a reopened one.
    hot_complete: AtomicBool,
    /// Keys with a live value, published.
    live_keys: AtomicU64,
    /// Bytes written to the active segment so far.
    active_bytes: AtomicU64,
    active_id: AtomicU32,
    /// The next segment id (ids are never reused; compaction outputs take
    /// fresh ones too).
    next_segment_id: AtomicU32,
    /// Metadata builds and compaction run on the engine's maintenance
    /// thread; without one, the writer builds metadata itself on a roll.
    background_maintenance: AtomicBool,
    /// One maintainer at a time (the worker, `compact`, or an inline build).
    maintenance: Mutex<()>,
    open_report: OpenReport,
}

/// Sizes of the store, for `stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StorageStats {
    /// Keys with a live value.
    pub keys: u64,
    pub segments: u64,
    /// Segment and metadata files.
    pub disk_bytes: u64,
    /// Segment bytes not known to be dead (superseded records, tombstones).
    pub live_bytes: u64,
    /// The hot index's tables plus the metadata kept hot (block pointers,
    /// first keys, Bloom filters).
    pub index_memory_bytes: u64,
    pub hot_entries: u64,
    pub hot_tombstones: u64,
    pub hot_evictions: u64,
    /// A miss in the hot index means absent (no budget, warm-up done).
    pub hot_index_complete: bool,
    pub committed_version: u64,
    pub last_log_index: u64,
    pub poisoned: Option<String>,
}

impl Storage {
    /// Opens the data directory, recovering the index from segment metadata
    /// and the active segment's records.
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

    fn segments(&self) -> RwLockReadGuard<'_, SegmentTable> {
        self.segments.read().expect("segment table lock poisoned")
    }

    /// The current value of `key`, verified against its checksum.
    pub fn get(&self, key: &[u8]) -> Result<Option<Versioned>> {
        // One segment-table guard for lookup and read: the segment an entry
        // names cannot go away in between.
        let segments = self.segments();
        let Some(entry) = self.lookup(key, &segments)? else {
            return Ok(None);
        };
        if entry.tombstone {
            return Ok(None);
        }
        let record = read_record(&segments, &entry, key)?;
        Ok(Some(Versioned {
            value: record.to_vec(),
            version: entry.version,
        }))
    }

    /// The version of `key`'s current value, without reading it.
    pub fn version_of(&self, key: &[u8]) -> Result<Option<u64>> {
        let segments = self.segments();
        Ok(self
            .lookup(key, &segments)?
            .filter(|entry| !entry.tombstone)
            .map(|entry| entry.version))
    }

    /// The newest record of `key`, a tombstone included: from the hot index,
    /// or from the sealed segments' metadata (then copied into the hot index).
    fn lookup(&self, key: &[u8], segments: &SegmentTable) -> Result<Option<IndexEntry>> {
        self.find_newest(key, segments, true)
    }

    /// Like [`Self::lookup`], but never copies a cold result into the hot
    /// index (maintenance must not flush the hot set).
    pub(super) fn newest_record(
        &self,
        key: &[u8],
        segments: &SegmentTable,
    ) -> Result<Option<IndexEntry>> {
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
            self.metrics.add(crate::metrics::Counter::HotPromotions, 1);
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

    /// The engine runs a maintenance thread: metadata is built there, not by
    /// the writer on a roll.
    pub fn set_background_maintenance(&self, on: bool) {
        self.background_maintenance.store(on, Ordering::SeqCst);
    }

    pub fn stats(&self) -> StorageStats {
        let IndexStats {
            entries,
            tombstones,
            memory_bytes,
            evictions,
        } = self.index.stats();
        let (last_log_index, poisoned, active_id) = {
            let writer = self.writer.lock().expect("writer lock poisoned");
            (
                writer.last_log_index,
                writer.poisoned.clone(),
                writer.active.id(),
            )
        };
        let segments = self.segments();
        let (mut disk_bytes, mut dead_bytes, mut meta_bytes) = (0, 0, 0);
        for segment in segments.iter() {
            disk_bytes += if segment.id() == active_id {
                self.active_bytes.load(Ordering::Relaxed)
            } else {
                segment.len()
            };
            dead_bytes += segment.dead_bytes.load(Ordering::Relaxed);
            if let Some(meta) = segment.meta() {
                disk_bytes += meta.file_len();
                meta_bytes += meta.index_bytes();
            }
        }
        let segment_bytes = disk_bytes
            - segments
                .iter()
                .filter_map(|s| s.meta().map(|m| m.file_len()))
                .sum::<u64>();
        StorageStats {
            keys: self.live_keys.load(Ordering::Relaxed),
            segments: segments.len() as u64,
            disk_bytes,
            live_bytes: segment_bytes
                .saturating_sub(segments.len() as u64 * SEGMENT_HEADER_LEN as u64)
                .saturating_sub(dead_bytes),
            index_memory_bytes: memory_bytes + meta_bytes,
            hot_entries: entries,
            hot_tombstones: tombstones,
            hot_evictions: evictions,
            hot_index_complete: self.hot_complete.load(Ordering::Relaxed),
            committed_version: self.committed_version(),
            last_log_index,
            poisoned,
        }
    }

    /// Up to `limit` live keys starting with `prefix` and sorted after
    /// `after` (exclusive), in byte order. Costs a pass over the hot index
    /// (one shard lock at a time) plus, unless the hot index holds every
    /// key, a merge of the sealed segments' sorted metadata from the first
    /// possible key on. Not a snapshot: a batch published during the pass
    /// may be seen in part.
    pub fn keys_with_prefix(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>> {
        let entries = self.live_entries(merge::Range { prefix, after }, limit)?;
        Ok(entries.into_iter().map(|(key, _)| key).collect())
    }

    /// Every live key with its entry, sorted by key. For tests and tooling.
    pub fn sorted_entries(&self) -> Result<Vec<(Vec<u8>, IndexEntry)>> {
        let everything = merge::Range {
            prefix: &[],
            after: None,
        };
        self.live_entries(everything, usize::MAX)
    }

    fn live_entries(
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

    /// A consistent cut at `last_log_index`, taken under the writer lock:
    /// a copy of the hot index and the segments (kept readable while the
    /// cut is held). Walk it with [`Cut::for_each_live`].
    pub fn consistent_cut(&self) -> Cut {
        let writer = self.writer.lock().expect("writer lock poisoned");
        let mut hot = Vec::with_capacity(self.index.len() as usize);
        self.index.for_each(|entry| hot.push(entry));
        Cut {
            hot,
            segments: self.segments().clone(),
            hot_complete: self.hot_complete.load(Ordering::Acquire),
            last_log_index: writer.last_log_index,
            last_version: writer.next_version - 1,
            live_keys: self.live_keys.load(Ordering::Relaxed),
        }
    }
}

/// A frozen view of the store; see [`Storage::consistent_cut`].
pub struct Cut {
    hot: Vec<IndexEntry>,
    segments: SegmentTable,
    hot_complete: bool,
    pub last_log_index: u64,
    /// Highest version assigned.
    pub last_version: u64,
    pub live_keys: u64,
}

impl Cut {
    /// The whole record an entry of this cut names, verified.
    pub fn read(&self, entry: &IndexEntry) -> Result<crate::log_segment::Record<'_>> {
        let segment = self.segments.get(entry.segment_id).ok_or_else(|| {
            Error::Corruption(Corruption {
                file: segment_file_name(entry.segment_id),
                offset: u64::from(entry.offset),
                reason: "an entry names a segment missing from the cut".into(),
            })
        })?;
        let key = crate::index::KeySource::key_of(&self.segments, entry).ok_or_else(|| {
            Error::Corruption(Corruption {
                file: segment_file_name(entry.segment_id),
                offset: u64::from(entry.offset),
                reason: "unreadable key".into(),
            })
        })?;
        segment
            .map
            .read(entry.offset, entry.len, key, entry.version)
    }

    /// Calls `visit` with every live key, its entry and its value, in key
    /// order.
    pub fn for_each_live(
        &self,
        mut visit: impl FnMut(&[u8], IndexEntry, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut failure = None;
        merge::live_entries(
            &self.hot,
            &self.segments,
            self.hot_complete,
            merge::Range {
                prefix: &[],
                after: None,
            },
            usize::MAX,
            |key, entry| {
                if failure.is_some() {
                    return;
                }
                let result = read_record(&self.segments, &entry, key)
                    .and_then(|value| visit(key, entry, value));
                if let Err(err) = result {
                    failure = Some(err);
                }
            },
        )?;
        failure.map_or(Ok(()), Err)
    }
}

/// Reads and verifies the value of the record `entry` names.
fn read_record<'s>(segments: &'s SegmentTable, entry: &IndexEntry, key: &[u8]) -> Result<&'s [u8]> {
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
        assert_eq!(storage.version_of(b"k").unwrap(), Some(version));
        assert_eq!(storage.committed_version(), version);
        write(&storage, 2, b"k", None);
        assert_eq!(storage.get(b"k").unwrap(), None);
        assert_eq!(storage.version_of(b"k").unwrap(), None);
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
        let cut = storage.consistent_cut();
        assert_eq!((cut.last_log_index, cut.last_version), (50, 50));
        let mut live = Vec::new();
        cut.for_each_live(|key, entry, value| {
            assert_eq!(value, b"value");
            live.push((key.to_vec(), entry.version));
            Ok(())
        })
        .unwrap();
        assert_eq!(live.len(), 20);
        // Writes after the cut are not in it.
        write(&storage, 51, b"new", Some(b"value"));
        let mut after = 0;
        cut.for_each_live(|_, _, _| {
            after += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(after, 20);
        let keys: Vec<Vec<u8>> = storage
            .sorted_entries()
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys.len(), 21);
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }
}
