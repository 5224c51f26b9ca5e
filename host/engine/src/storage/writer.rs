//! The append path: one writer at a time stages records into a buffer,
//! writes them with one positioned write, syncs when asked, and publishes.
//!
//! Any I/O failure poisons the writer: after a failed write or fsync the
//! kernel may have dropped the dirty pages, so retrying could report success
//! for data that is gone (PostgreSQL's "fsyncgate"). Reopening the store
//! recovers from what is really on disk.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::files::Files;
use super::read::ReadPath;
use super::segments::Segment;
use crate::config::SyncMode;
use crate::error::{Error, Result};
use crate::index::IndexEntry;
use crate::log_segment::{
    ActiveSegment, MAX_COUNTER, MappedSegment, RecordSpec, SEGMENT_HEADER_LEN, SegmentHeader,
    encode_record, sync_file_data,
};
use crate::metrics::{Counter, Latency, MetricsHook};

pub(super) struct Writer {
    /// `None` only in a read-only store that has no segment to resume:
    /// every write is refused before it would be needed.
    pub active: Option<ActiveSegment>,
    /// Opened read-only: every write is refused.
    pub read_only: Option<std::path::PathBuf>,
    pub next_version: u64,
    pub last_log_index: u64,
    pub poisoned: Option<String>,
    /// Encoded records not yet written; they go at `active.write_pos()`.
    buf: Vec<u8>,
    preallocate_bytes: u64,
    /// The newest entry of every key staged since the last publish, when
    /// more than one record is staged (a later record replaces it).
    group: HashMap<Vec<u8>, IndexEntry>,
    /// Change of the live key count by the records staged since the last publish.
    pending_live_delta: i64,
}

impl Writer {
    pub fn new(
        active: Option<ActiveSegment>,
        next_version: u64,
        last_log_index: u64,
        preallocate_bytes: u64,
    ) -> Self {
        Writer {
            active,
            read_only: None,
            next_version,
            last_log_index,
            poisoned: None,
            buf: Vec::new(),
            preallocate_bytes,
            group: HashMap::new(),
            pending_live_delta: 0,
        }
    }
}

/// Zeros ahead of the tail only pay off when something fsyncs.
pub(super) fn preallocate_bytes_for(config: &crate::config::Config) -> u64 {
    if config.sync == SyncMode::Os {
        0
    } else {
        config.preallocate_bytes.min(config.segment_size_bytes / 4)
    }
}

/// A record staged for the index: published only after it is written (and synced).
#[derive(Clone, Copy, Debug)]
pub struct Staged<'k> {
    pub key: &'k [u8],
    /// Its index entry (`entry.tombstone` for a delete).
    pub entry: IndexEntry,
    /// The newest record of the key before this one (for space accounting).
    pub replaces: Option<IndexEntry>,
}

/// Holds the writer lock. Records are staged, then written, then published.
pub struct WriterGuard<'s> {
    files: &'s Files,
    reads: &'s ReadPath,
    writer: MutexGuard<'s, Writer>,
}

impl<'s> WriterGuard<'s> {
    pub(super) fn new(
        files: &'s Files,
        reads: &'s ReadPath,
        writer: MutexGuard<'s, Writer>,
    ) -> Self {
        WriterGuard {
            files,
            reads,
            writer,
        }
    }

    /// After an installed snapshot: the writer continues in `active` (new
    /// and empty) with the image's counters. Called with nothing staged.
    pub(super) fn install(
        &mut self,
        active: ActiveSegment,
        last_version: u64,
        last_log_index: u64,
    ) {
        let writer = &mut *self.writer;
        assert!(
            writer.buf.is_empty() && writer.group.is_empty(),
            "a snapshot is installed with nothing staged"
        );
        writer.active = Some(active);
        writer.next_version = last_version + 1;
        writer.last_log_index = last_log_index;
        writer.pending_live_delta = 0;
    }

    /// Fails if the store is read-only, or an earlier I/O error poisoned
    /// the writer.
    pub fn check_writable(&self) -> Result<()> {
        if let Some(path) = &self.writer.read_only {
            return Err(Error::ReadOnly { path: path.clone() });
        }
        match &self.writer.poisoned {
            Some(reason) => Err(Error::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    #[cfg(test)]
    pub fn next_version(&self) -> u64 {
        self.writer.next_version
    }

    pub fn last_log_index(&self) -> u64 {
        self.writer.last_log_index
    }

    /// Records that `log_index` was applied (also when it wrote nothing).
    pub fn note_applied(&mut self, log_index: u64) {
        assert!(
            log_index > self.writer.last_log_index,
            "log indexes must increase"
        );
        self.writer.last_log_index = log_index;
    }

    /// Stages one record with the version and log index it had in another
    /// store (snapshot restore). Both must not go backwards. The record is
    /// not published: restore reopens the store afterwards.
    pub fn stage_restored(
        &mut self,
        log_index: u64,
        version: u64,
        key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        assert!(
            version >= self.writer.next_version,
            "restored versions must increase"
        );
        assert!(
            log_index >= self.writer.last_log_index,
            "restored log indexes must not decrease"
        );
        let bytes = crate::log_segment::encoded_record_len(key.len(), value.len()) as u64;
        self.guarded(|this| this.roll_if_needed(bytes))?;
        let spec = RecordSpec {
            version,
            log_index,
            key,
            value: Some(value),
            start_of_command: true,
            end_of_command: true,
        };
        encode_record(&mut self.writer.buf, &spec);
        self.writer.next_version = version + 1;
        self.writer.last_log_index = log_index;
        // An image holds each key once, so every record adds a live key
        // (metadata written on a roll records the count).
        self.writer.pending_live_delta += 1;
        Ok(())
    }

    /// Stages a marker that moves the version and log index counters to
    /// `version` and `log_index` (snapshot restore: the versions of deleted
    /// and overwritten records are not in the image, but the counter must
    /// continue where the original's was).
    pub fn stage_marker(&mut self, log_index: u64, version: u64) -> Result<()> {
        assert!(
            version + 1 >= self.writer.next_version,
            "a marker must not move versions back"
        );
        assert!(
            log_index >= self.writer.last_log_index,
            "a marker must not move the log index back"
        );
        let bytes = crate::log_segment::encoded_record_len(1, 0) as u64;
        self.guarded(|this| this.roll_if_needed(bytes))?;
        crate::log_segment::encode_marker(&mut self.writer.buf, version, log_index);
        self.writer.next_version = version + 1;
        self.writer.last_log_index = log_index;
        Ok(())
    }

    /// Encodes one command's operations (`None` value: tombstone) with
    /// consecutive versions, rolling to a new segment first if they would
    /// not fit. A command never spans two segments.
    pub fn stage_command<'k>(
        &mut self,
        log_index: u64,
        ops: &[(&'k [u8], Option<&'k [u8]>)],
        staged: &mut Vec<Staged<'k>>,
    ) -> Result<()> {
        assert!(
            !ops.is_empty(),
            "a staged command writes at least one record"
        );
        // Versions run out only after 2^63 writes, or on a crafted store
        // that starts near the limit: refuse the write, never panic.
        let last_needed = self
            .writer
            .next_version
            .saturating_add(ops.len() as u64 - 1);
        if last_needed > MAX_COUNTER || log_index > MAX_COUNTER {
            return Err(Error::Exhausted(
                "versions or log indexes (the format's limit is 2^63 - 1)",
            ));
        }
        let bytes: u64 = ops
            .iter()
            .map(|(k, v)| {
                crate::log_segment::encoded_record_len(k.len(), v.map_or(0, <[u8]>::len)) as u64
            })
            .sum();
        self.guarded(|this| this.roll_if_needed(bytes))?;
        let replaced = self.previous_records(ops)?;
        let writer = &mut *self.writer;
        for (i, (&(key, value), published)) in ops.iter().zip(replaced).enumerate() {
            // A record staged earlier in this group (or command) is newer
            // than anything published.
            let replaces = writer.group.get(key).copied().or(published);
            let active = writer.active()?;
            let offset = active.write_pos() + writer.buf.len() as u64;
            let version = writer.next_version;
            let spec = RecordSpec {
                version,
                log_index,
                key,
                value,
                start_of_command: i == 0,
                end_of_command: i + 1 == ops.len(),
            };
            let len = encode_record(&mut writer.buf, &spec);
            let segment_id = writer.active()?.id();
            let entry = IndexEntry {
                version,
                segment_id,
                offset: to_u32(offset),
                len: to_u32(len as u64),
                tombstone: value.is_none(),
            };
            let was_live = replaces.is_some_and(|old| !old.tombstone);
            writer.pending_live_delta += i64::from(!entry.tombstone) - i64::from(was_live);
            writer.group.insert(key.to_vec(), entry);
            staged.push(Staged {
                key,
                entry,
                replaces,
            });
            writer.next_version += 1;
        }
        Ok(())
    }

    /// The newest published record of each key of `ops` (hot or cold),
    /// unless a record of the key is already staged in this group.
    fn previous_records(&self, ops: &[(&[u8], Option<&[u8]>)]) -> Result<Vec<Option<IndexEntry>>> {
        let segments = self.reads.segments();
        ops.iter()
            .map(|&(key, _)| match self.writer.group.contains_key(key) {
                true => Ok(None),
                // No promotion: the key is about to get a newer entry anyway.
                false => self.reads.newest_record(key, &segments),
            })
            .collect()
    }

    /// Bytes staged but not yet written.
    pub fn staged_bytes(&self) -> u64 {
        self.writer.buf.len() as u64
    }

    /// Writes staged bytes, then fsyncs if `sync`. On error the writer is poisoned.
    pub fn write_staged(&mut self, sync: bool) -> Result<()> {
        // After any I/O failure nothing more is written: the failed step may
        // have left staged bytes both on disk and in the buffer.
        self.check_writable()?;
        self.guarded(|this| {
            this.write_buf()?;
            if sync { this.sync_active() } else { Ok(()) }
        })
    }

    /// Makes staged records visible to readers. Call only after `write_staged`.
    pub fn publish(&mut self, staged: &[Staged<'_>]) {
        assert!(
            self.writer.buf.is_empty(),
            "publish before the records were written"
        );
        let index = &self.reads.index;
        let segments = self.reads.segments();
        let seq = &self.reads.publish_seq;
        assert!(
            seq.fetch_add(1, Ordering::SeqCst).is_multiple_of(2),
            "one publisher at a time"
        );
        let mut newest = self.reads.committed_version.load(Ordering::Relaxed);
        for item in staged {
            // Tombstones are entries too: a delete shadows older values in
            // sealed segments that lookups search when the key is not hot.
            index.upsert(item.key, item.entry, &*segments);
            newest = newest.max(item.entry.version);
        }
        self.reads
            .committed_version
            .store(newest, Ordering::Release);
        seq.fetch_add(1, Ordering::SeqCst);
        account_space(&segments, staged);
        let delta = std::mem::take(&mut self.writer.pending_live_delta);
        let live = &self.reads.live_keys;
        let now = live.load(Ordering::Relaxed).checked_add_signed(delta);
        live.store(
            now.expect("the live key count stays in range"),
            Ordering::Relaxed,
        );
        self.writer.group.clear();
    }

    /// Fsyncs the active segment if anything is unsynced.
    pub fn sync(&mut self) -> Result<()> {
        self.check_writable()?;
        self.guarded(|this| this.write_buf().and_then(|()| this.sync_active()))
    }

    /// Refuses every further write until the store is reopened: `err` left
    /// the files in a state only a reopen resolves.
    pub(super) fn poison(&mut self, err: &Error) {
        tracing::error!(error = %err, "refusing writes until the store is reopened");
        self.writer.poisoned.get_or_insert_with(|| err.to_string());
    }

    /// Runs `step`; an error poisons the writer.
    fn guarded(&mut self, step: impl FnOnce(&mut Self) -> Result<()>) -> Result<()> {
        let result = step(self);
        if let Err(err) = &result {
            tracing::error!(error = %err, "storage I/O failed; refusing writes until reopened");
            self.writer.poisoned.get_or_insert_with(|| err.to_string());
        }
        result
    }

    fn write_buf(&mut self) -> Result<()> {
        let writer = &mut *self.writer;
        if writer.buf.is_empty() {
            return Ok(());
        }
        let active = writer.active.as_mut().ok_or_else(no_active_segment)?;
        let expected = active.write_pos();
        let appended = active.append(&self.files.dir, &writer.buf)?;
        writer.buf.clear();
        assert_eq!(
            appended.offset, expected,
            "staged offsets must match where the bytes land"
        );
        if let Some(err) = appended.preallocation {
            // The write itself happened; only the zeros ahead are missing.
            self.files.metrics.add(Counter::NonFatalIoFailures, 1);
            tracing::warn!(error = %err, "writing zeros ahead of the log tail failed; the write is kept and the log grows without them");
        }
        // The buffer was cleared above: count what reached the file.
        let written_to = active.write_pos();
        let appended_bytes = written_to - expected;
        self.files
            .metrics
            .add(Counter::BytesAppended, appended_bytes);
        self.reads.active_bytes.store(written_to, Ordering::Relaxed);
        // Bound the retained buffer: one huge batch must not pin its memory forever.
        let keep = self.files.config.max_commit_group_bytes as usize * 2;
        if writer.buf.capacity() > keep {
            writer.buf.shrink_to(keep);
        }
        Ok(())
    }

    fn sync_active(&mut self) -> Result<()> {
        let active = self.writer.active.as_mut().ok_or_else(no_active_segment)?;
        if !active.is_dirty() {
            return Ok(());
        }
        let started = Instant::now();
        active.sync_data(&self.files.dir)?;
        self.files.metrics.add(Counter::Fsyncs, 1);
        self.files
            .metrics
            .observe(Latency::Fsync, started.elapsed());
        Ok(())
    }

    /// Seals the active segment and starts the next when `bytes` more would
    /// pass the segment size (unless the segment is empty: an oversized
    /// batch then gets a segment to itself).
    fn roll_if_needed(&mut self, bytes: u64) -> Result<()> {
        let tail = self.writer.active()?.write_pos() + self.writer.buf.len() as u64;
        let empty = tail == SEGMENT_HEADER_LEN as u64;
        if empty || tail + bytes <= self.files.config.segment_size_bytes {
            return Ok(());
        }
        self.roll()
    }

    /// Seals the active segment now (if it holds any record) and starts the
    /// next, so that everything written so far can be compacted.
    pub fn seal_active(&mut self) -> Result<()> {
        self.check_writable()?;
        let tail = self.writer.active()?.write_pos() + self.writer.buf.len() as u64;
        if tail == SEGMENT_HEADER_LEN as u64 {
            return Ok(());
        }
        self.guarded(|this| this.roll())
    }

    /// Seals the active segment, starts the next, and leaves a notice for
    /// maintenance (which writes the sealed segment's metadata).
    fn roll(&mut self) -> Result<()> {
        self.write_buf()?;
        let (files, reads) = (self.files, self.reads);
        let writer = &mut *self.writer;
        let sealing = writer.active.as_mut().ok_or_else(no_active_segment)?;
        sealing.seal(&files.dir)?;
        let sealed_id = sealing.id();
        let next_id = files.allocate_segment_id()?;
        let next = ActiveSegment::create(&files.dir, next_id, writer.preallocate_bytes)?;
        // Listed before any record goes into it: a crash before this leaves
        // an empty, unlisted file that open removes.
        files.change_segments(|set| {
            set.insert(next_id);
        })?;
        let map = MappedSegment::map(next.file(), next_id, files.config.active_map_bytes())?;
        let header = SegmentHeader {
            id: next_id,
            rank: next_id,
            compacted: false,
        };
        // The sealed segment's own map ends where the file ends now.
        let sealed_map = MappedSegment::map(sealing.file(), sealed_id, 0)?;
        let live_after = reads
            .live_keys
            .load(Ordering::Relaxed)
            .checked_add_signed(writer.pending_live_delta)
            .expect("the live key count stays in range");
        {
            let mut segments = reads.segments_mut();
            // The active id changes under the table's lock, with the table.
            reads.active_id.store(next_id, Ordering::SeqCst);
            segments.insert(Arc::new(Segment::new_active(map, header)));
            segments.replace_map(sealed_id, sealed_map, live_after);
        }
        reads
            .active_bytes
            .store(next.write_pos(), Ordering::Relaxed);
        tracing::debug!(
            sealed = sealing.name(),
            next = next.name(),
            "segment rolled"
        );
        writer.active = Some(next);
        files.note_sealed();
        Ok(())
    }
}

impl Writer {
    fn active(&self) -> Result<&ActiveSegment> {
        self.active.as_ref().ok_or_else(no_active_segment)
    }
}

/// Writes are refused before they need the active segment; reaching for a
/// missing one is a bug.
fn no_active_segment() -> Error {
    Error::Invariant("a write reached a store without an active segment".into())
}

/// Offsets and lengths fit u32: segments are capped below 4 GiB by config validation.
fn to_u32(value: u64) -> u32 {
    u32::try_from(value).expect("segment offsets fit in u32 (config caps segment size)")
}

fn account_space(segments: &super::segments::SegmentTable, staged: &[Staged<'_>]) {
    for item in staged {
        segments.account_replacement(&item.entry, item.replaces);
    }
}

/// See [`super::Storage::sync_in_background`].
pub(super) fn sync_without_blocking_appends(files: &Files, writer: &Mutex<Writer>) -> Result<()> {
    let (file, name, id, pos) = {
        let writer = writer.lock().expect("writer lock poisoned");
        if let Some(reason) = &writer.poisoned {
            return Err(Error::Poisoned {
                reason: reason.clone(),
            });
        }
        let Some(active) = writer.active.as_ref().filter(|a| a.is_dirty()) else {
            return Ok(());
        };
        (
            active.file().clone(),
            active.name().to_string(),
            active.id(),
            active.write_pos(),
        )
    };
    let started = Instant::now();
    let result = sync_file_data(&files.dir, &file, &name);
    let mut writer = writer.lock().expect("writer lock poisoned");
    match result {
        Ok(()) => {
            files.metrics.add(Counter::Fsyncs, 1);
            files.metrics.observe(Latency::Fsync, started.elapsed());
            // A roll in the meantime sealed (and fsynced) that segment itself.
            if let Some(active) = writer.active.as_mut().filter(|a| a.id() == id) {
                active.mark_synced(pos);
            }
            Ok(())
        }
        Err(err) => {
            tracing::error!(error = %err, "background fsync failed; refusing writes until reopened");
            writer.poisoned.get_or_insert_with(|| err.to_string());
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Storage;
    use super::super::tests::{open, write};
    use super::*;
    use crate::config::Config;
    use crate::fault::{FailNth, IoOp};
    use crate::metrics::Metrics;

    #[test]
    fn staged_records_stay_invisible_until_published() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = open(tmp.path(), 1 << 20);
        let mut writer = storage.lock_writer();
        let mut staged = Vec::new();
        writer.note_applied(1);
        writer
            .stage_command(1, &[(b"a", Some(b"1")), (b"b", None)], &mut staged)
            .unwrap();
        assert_eq!((staged[0].entry.version, staged[1].entry.version), (1, 2));
        assert!(staged[1].entry.tombstone);
        assert!(writer.staged_bytes() > 0);
        writer.write_staged(false).unwrap();
        assert_eq!(
            storage.version_of(b"a").unwrap(),
            None,
            "written but not yet published"
        );
        writer.publish(&staged);
        assert_eq!(storage.version_of(b"a").unwrap(), Some(1));
        assert_eq!(writer.next_version(), 3);
    }

    #[test]
    fn a_command_that_does_not_fit_rolls_to_a_new_segment() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = open(tmp.path(), 4096);
        write(&storage, 1, b"first", Some(&[1; 3000]));
        assert_eq!(storage.stats().segments, 1);
        write(&storage, 2, b"second", Some(&[2; 3000]));
        assert_eq!(storage.stats().segments, 2);
        // An oversized command gets an empty segment to itself.
        write(&storage, 3, b"big", Some(&[3; 9000]));
        assert_eq!(storage.stats().segments, 3);
        assert_eq!(storage.get(b"first").unwrap().unwrap().value, vec![1; 3000]);
        assert_eq!(storage.get(b"big").unwrap().unwrap().value, vec![3; 9000]);
    }

    #[test]
    fn an_io_failure_poisons_the_writer_and_nothing_more_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let config = Config {
            sync: crate::config::SyncMode::Always,
            ..Config::new(tmp.path())
        };
        // The segment's creation is sync 0, the manifest's sync 1; the first
        // write's sync is 2.
        let faults = Arc::new(FailNth::new(IoOp::SyncFile, 2, false));
        let storage = Storage::open(
            config,
            crate::data_dir::Access::ReadWrite,
            faults,
            Arc::new(Metrics::new(None)),
        )
        .unwrap();
        let mut writer = storage.lock_writer();
        let mut staged = Vec::new();
        writer.note_applied(1);
        writer
            .stage_command(1, &[(b"k", Some(b"v"))], &mut staged)
            .unwrap();
        let err = writer.write_staged(true).unwrap_err();
        assert!(
            err.to_string().contains("injected SyncFile failure"),
            "{err}"
        );
        let refused = writer.write_staged(true).unwrap_err();
        assert!(matches!(refused, Error::Poisoned { .. }), "{refused}");
        assert!(writer.sync().is_err());
        drop(writer);
        assert!(storage.stats().poisoned.is_some());
        assert!(storage.sync_in_background().is_err());
    }

    #[test]
    fn versions_past_the_format_limit_are_refused_not_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = open(tmp.path(), 1 << 20);
        let mut writer = storage.lock_writer();
        // What a store whose newest record carries the largest version
        // resumes with.
        writer.writer.next_version = MAX_COUNTER;
        let mut staged = Vec::new();
        writer.note_applied(1);
        writer
            .stage_command(1, &[(b"last", Some(b"fits"))], &mut staged)
            .unwrap();
        writer.note_applied(2);
        let err = writer
            .stage_command(2, &[(b"one", Some(b"too many"))], &mut staged)
            .unwrap_err();
        assert!(matches!(err, Error::Exhausted(_)), "{err}");
    }

    #[test]
    #[should_panic(expected = "restored versions must increase")]
    fn restored_versions_cannot_go_backwards() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = open(tmp.path(), 1 << 20);
        let mut writer = storage.lock_writer();
        writer.stage_restored(1, 5, b"a", b"1").unwrap();
        writer.stage_restored(1, 5, b"b", b"2").unwrap();
    }
}
