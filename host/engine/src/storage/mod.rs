//! The storage layer: segments on disk, the hot index in memory, the
//! per-segment metadata that finds what the hot index does not hold, and
//! the single writer that appends to the active segment.
//!
//! [`Storage`] is assembled from narrower parts, each with its own file:
//!
//! - [`files::Files`]: the data directory, configuration, metrics, segment
//!   ids, and the writer's "segment sealed" notices;
//! - [`read::ReadPath`]: the hot index, the segment table and the publish
//!   sequence lock (every lookup goes through it);
//! - [`writer`]: the append path, one writer at a time ([`WriterGuard`]);
//! - [`maintenance`]: metadata builds, warm-up, audits and compaction
//!   ([`compaction`]), one maintainer at a time;
//! - [`recovery`]: opening (and verifying) a data directory.
//!
//! Arrows point down that list: maintenance uses the writer and the read
//! path, the writer uses the read path, nobody calls up.

mod compaction;
mod cut;
mod files;
mod inspect;
mod install;
mod maintenance;
mod merge;
mod output;
mod read;
mod recovery;
mod segments;
mod writer;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::config::{Config, RecoveryMode};
use crate::data_dir::{Access, DataDir};
use crate::error::{ConfigError, Result};
use crate::fault::IoFaults;
use crate::index::IndexStats;
use crate::log_segment::SEGMENT_HEADER_LEN;
use crate::metrics::Metrics;

pub use compaction::CompactionReport;
pub use cut::ConsistentCut;
pub use inspect::{RecordInfo, SegmentInfo};
pub(crate) use install::{InstallCounters, InstallRecord};
pub use recovery::{
    OpenReport, SalvageNote, SegmentVerdict, SegmentVerification, TailCut, TailKind,
    verify_segments,
};
pub use writer::{Staged, WriterGuard};

use files::Files;
use maintenance::Maintenance;
use read::ReadPath;
use writer::Writer;

/// A value and the version that wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Versioned {
    /// The bytes stored.
    pub value: Vec<u8>,
    /// The version of the write that stored them.
    pub version: u64,
}

pub(crate) struct Storage {
    files: Files,
    reads: ReadPath,
    writer: Mutex<Writer>,
    maintenance: Maintenance,
    open_report: OpenReport,
}

/// Sizes of the store, for `stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StorageStats {
    /// Keys with a live value.
    pub keys: u64,
    /// Segment files open (the active one included).
    pub segments: u64,
    /// Segment and metadata files.
    pub disk_bytes: u64,
    /// Segment bytes not known to be dead (superseded records, tombstones).
    pub live_bytes: u64,
    /// The hot index's tables plus the metadata kept hot (block pointers,
    /// first keys, Bloom filters).
    pub index_memory_bytes: u64,
    /// Entries in the hot index.
    pub hot_entries: u64,
    /// Of those, tombstones.
    pub hot_tombstones: u64,
    /// Entries evicted from the hot index since open.
    pub hot_evictions: u64,
    /// A miss in the hot index means absent (no budget, warm-up done).
    pub hot_index_complete: bool,
    /// Highest version published.
    pub committed_version: u64,
    /// Highest log index applied (persisted with the records it wrote).
    pub last_log_index: u64,
    /// Why writes are refused, if an I/O failure poisoned the writer.
    pub poisoned: Option<String>,
}

impl Storage {
    /// Opens the data directory, recovering the index from segment metadata
    /// and the active segment's records. Read-only: nothing is created or
    /// written (see `DataDir::open_read_only`), writes are refused.
    pub fn open(
        config: Config,
        access: Access,
        faults: Arc<dyn IoFaults>,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        config.validate()?;
        let dir = match access {
            Access::ReadWrite => DataDir::open(&config.data_dir, faults)?,
            Access::ReadOnly if config.recovery == RecoveryMode::Salvage => {
                return Err(ConfigError::new(
                    "recovery",
                    "salvage rewrites damaged segments; it cannot run read-only",
                )
                .into());
            }
            Access::ReadOnly => DataDir::open_read_only(&config.data_dir, faults)?,
        };
        recovery::recover(dir, config, metrics)
    }

    /// Whether writes are refused because the store was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.files.dir.access() == Access::ReadOnly
    }

    fn assemble(files: Files, reads: ReadPath, writer: Writer, open_report: OpenReport) -> Self {
        Storage {
            files,
            reads,
            writer: Mutex::new(writer),
            maintenance: Maintenance::default(),
            open_report,
        }
    }

    pub fn config(&self) -> &Config {
        &self.files.config
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.files.metrics
    }

    pub fn open_report(&self) -> &OpenReport {
        &self.open_report
    }

    /// The current value of `key`, verified against its checksum.
    pub fn get(&self, key: &[u8]) -> Result<Option<Versioned>> {
        self.reads.get(key)
    }

    /// The version of `key`'s current value, without reading it.
    pub fn version_of(&self, key: &[u8]) -> Result<Option<u64>> {
        self.reads.version_of(key)
    }

    /// Exclusive access to the append path.
    pub fn lock_writer(&self) -> WriterGuard<'_> {
        WriterGuard::new(
            &self.files,
            &self.reads,
            self.writer.lock().expect("writer lock poisoned"),
        )
    }

    pub fn committed_version(&self) -> u64 {
        self.reads.committed_version()
    }

    /// Fsyncs everything appended so far (nothing, read-only).
    pub fn flush(&self) -> Result<()> {
        if self.is_read_only() {
            return Ok(());
        }
        self.lock_writer().sync()
    }

    /// Fsync for the interval flusher: does not hold the writer lock while
    /// the disk works, so appends continue meanwhile.
    pub fn sync_in_background(&self) -> Result<()> {
        writer::sync_without_blocking_appends(&self.files, &self.writer)
    }

    /// The engine runs a maintenance thread: metadata is built there, not
    /// after commits.
    pub fn set_background_maintenance(&self, on: bool) {
        self.maintenance.set_background(on);
    }

    /// Called after a commit (the writer lock released). Without a
    /// maintenance thread, the segments the writer sealed get their
    /// metadata here, unless a maintainer is busy: it builds pending
    /// metadata itself. A failure is logged; the segment's keys stay in the
    /// hot index and the next commit (or close, or open) tries again.
    pub fn after_commit(&self) {
        if let Err(err) = self.maintenance.after_commit(self) {
            tracing::warn!(error = %err, "writing segment metadata after a commit failed; retrying later");
        }
    }

    /// One round of background maintenance. Errors are logged; the next
    /// round retries.
    pub fn maintain(&self) {
        self.maintenance.round(self);
    }

    /// Writes metadata for every sealed segment that has none (oldest
    /// first). Returns how many it wrote.
    pub fn build_pending_metas(&self) -> Result<usize> {
        self.maintenance.turn(self).build_pending_metas()
    }

    /// Audits every sealed segment now, so `stats().live_bytes` is exact
    /// (after a restart it counts only what metadata knows until the
    /// background audits are done). Costs a lookup per key.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn audit_all(&self) -> Result<()> {
        self.maintenance.turn(self).audit_all()
    }

    /// Installs another store's state (see `install.rs`); `next` yields its
    /// records in log order.
    pub(crate) fn install(
        &self,
        counters: InstallCounters,
        next: &mut dyn FnMut(&mut InstallRecord) -> Result<bool>,
    ) -> Result<()> {
        self.maintenance.turn(self).install(counters, next)
    }

    /// Compacts everything written so far (on demand: `hightower compact`).
    pub fn compact_all(&self) -> Result<CompactionReport> {
        self.maintenance.turn(self).compact_all()
    }

    pub fn stats(&self) -> StorageStats {
        let IndexStats {
            entries,
            tombstones,
            memory_bytes,
            evictions,
        } = self.reads.index.stats();
        let (last_log_index, poisoned, active_id) = {
            let writer = self.writer.lock().expect("writer lock poisoned");
            (
                writer.last_log_index,
                writer.poisoned.clone(),
                writer.active.as_ref().map_or(0, |active| active.id()),
            )
        };
        let segments = self.reads.segments();
        let (mut disk_bytes, mut dead_bytes, mut meta_bytes) = (0, 0, 0);
        for segment in segments.iter() {
            disk_bytes += if segment.id() == active_id {
                self.reads.active_bytes.load(Ordering::Relaxed)
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
            keys: self.reads.live_keys.load(Ordering::Relaxed),
            segments: segments.len() as u64,
            disk_bytes,
            live_bytes: segment_bytes
                .saturating_sub(segments.len() as u64 * SEGMENT_HEADER_LEN as u64)
                .saturating_sub(dead_bytes),
            index_memory_bytes: memory_bytes + meta_bytes,
            hot_entries: entries,
            hot_tombstones: tombstones,
            hot_evictions: evictions,
            hot_index_complete: self.reads.hot_complete.load(Ordering::Relaxed),
            committed_version: self.committed_version(),
            last_log_index,
            poisoned,
        }
    }

    /// Up to `limit` live keys starting with `prefix` and sorted after
    /// `after` (exclusive), in byte order. See [`ReadPath::live_entries`]
    /// for the cost.
    pub fn keys_with_prefix(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>> {
        let entries = self
            .reads
            .live_entries(merge::Range { prefix, after }, limit)?;
        Ok(entries.into_iter().map(|(key, _)| key).collect())
    }

    /// Every live key with its entry, sorted by key. For tests.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn sorted_entries(&self) -> Result<Vec<(Vec<u8>, crate::index::IndexEntry)>> {
        let everything = merge::Range {
            prefix: &[],
            after: None,
        };
        self.reads.live_entries(everything, usize::MAX)
    }

    /// A consistent cut at the last applied log index, taken under the
    /// writer lock: a copy of the hot index and the segments (kept readable
    /// while the cut is held).
    pub fn consistent_cut(&self) -> ConsistentCut {
        let writer = self.writer.lock().expect("writer lock poisoned");
        ConsistentCut::take(&self.reads, writer.last_log_index, writer.next_version - 1)
    }

    /// Every open segment with exact live and dead bytes. Costs a lookup
    /// per record: an operator's tool, not for hot paths.
    pub fn inspect_segments(&self) -> Result<Vec<SegmentInfo>> {
        inspect::segments(&self.reads)
    }

    /// The records of segment `id`, in log order.
    pub fn inspect_records(&self, id: u32) -> Result<Vec<RecordInfo>> {
        inspect::records(&self.reads, id)
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
        Storage::open(
            config,
            crate::data_dir::Access::ReadWrite,
            Arc::new(NoFaults),
            Arc::new(Metrics::new(None)),
        )
        .unwrap()
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
