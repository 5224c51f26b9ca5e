//! The append path: one writer at a time stages records into a buffer,
//! writes them with one positioned write, syncs when asked, and publishes.
//!
//! Any I/O failure poisons the writer: after a failed write or fsync the
//! kernel may have dropped the dirty pages, so retrying could report success
//! for data that is gone (PostgreSQL's "fsyncgate"). Reopening the store
//! recovers from what is really on disk.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::Instant;

use super::Storage;
use crate::config::SyncMode;
use crate::error::{Error, Result};
use crate::index::IndexEntry;
use crate::log_segment::{
    ActiveSegment, MappedSegment, RecordSpec, SEGMENT_HEADER_LEN, encode_record, sync_file_data,
};
use crate::metrics::{Counter, Latency, MetricsHook};

pub(super) struct Writer {
    pub active: ActiveSegment,
    pub next_version: u64,
    pub last_log_index: u64,
    pub poisoned: Option<String>,
    /// Encoded records not yet written; they go at `active.write_pos()`.
    buf: Vec<u8>,
    preallocate_bytes: u64,
}

impl Writer {
    pub fn new(
        active: ActiveSegment,
        next_version: u64,
        last_log_index: u64,
        preallocate_bytes: u64,
    ) -> Self {
        Writer {
            active,
            next_version,
            last_log_index,
            poisoned: None,
            buf: Vec::new(),
            preallocate_bytes,
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
    pub entry: IndexEntry,
    pub tombstone: bool,
}

/// Holds the writer lock. Records are staged, then written, then published.
pub struct WriterGuard<'s> {
    storage: &'s Storage,
    writer: MutexGuard<'s, Writer>,
}

impl<'s> WriterGuard<'s> {
    pub(super) fn new(storage: &'s Storage, writer: MutexGuard<'s, Writer>) -> Self {
        WriterGuard { storage, writer }
    }

    /// Fails if an earlier I/O error poisoned the writer.
    pub fn check_writable(&self) -> Result<()> {
        match &self.writer.poisoned {
            Some(reason) => Err(Error::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

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
        let bytes: u64 = ops
            .iter()
            .map(|(k, v)| {
                crate::log_segment::encoded_record_len(k.len(), v.map_or(0, <[u8]>::len)) as u64
            })
            .sum();
        self.guarded(|this| this.roll_if_needed(bytes))?;
        let writer = &mut *self.writer;
        for (i, &(key, value)) in ops.iter().enumerate() {
            let offset = writer.active.write_pos() + writer.buf.len() as u64;
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
            let segment_id = writer.active.id();
            let entry = IndexEntry {
                version,
                segment_id,
                offset: to_u32(offset),
                len: to_u32(len as u64),
            };
            staged.push(Staged {
                key,
                entry,
                tombstone: value.is_none(),
            });
            writer.next_version += 1;
        }
        Ok(())
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
        let index = &self.storage.index;
        let segments = self
            .storage
            .segments
            .read()
            .expect("segment table lock poisoned");
        let seq = &self.storage.publish_seq;
        assert!(
            seq.fetch_add(1, Ordering::SeqCst).is_multiple_of(2),
            "one publisher at a time"
        );
        let mut newest = self.storage.committed_version.load(Ordering::Relaxed);
        for item in staged {
            if item.tombstone {
                if let Some(old) = index.remove(item.key, &*segments) {
                    assert!(
                        old.version < item.entry.version,
                        "a tombstone must be newer than what it deletes"
                    );
                }
            } else {
                index.insert(item.key, item.entry, &*segments);
            }
            newest = newest.max(item.entry.version);
        }
        self.storage
            .committed_version
            .store(newest, Ordering::Release);
        seq.fetch_add(1, Ordering::SeqCst);
    }

    /// Fsyncs the active segment if anything is unsynced.
    pub fn sync(&mut self) -> Result<()> {
        self.check_writable()?;
        self.guarded(|this| this.write_buf().and_then(|()| this.sync_active()))
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
        let expected = writer.active.write_pos();
        let appended = writer.active.append(&self.storage.dir, &writer.buf);
        if writer.active.write_pos() > expected {
            // The bytes are in the file even if a later step (preallocation) failed.
            writer.buf.clear();
        }
        let offset = appended?;
        assert_eq!(
            offset, expected,
            "staged offsets must match where the bytes land"
        );
        // The buffer was cleared above: count what reached the file.
        let appended_bytes = writer.active.write_pos() - expected;
        self.storage
            .metrics
            .add(Counter::BytesAppended, appended_bytes);
        self.storage
            .active_bytes
            .store(writer.active.write_pos(), Ordering::Relaxed);
        // Bound the retained buffer: one huge batch must not pin its memory forever.
        let keep = self.storage.config.max_commit_group_bytes as usize * 2;
        if writer.buf.capacity() > keep {
            writer.buf.shrink_to(keep);
        }
        Ok(())
    }

    fn sync_active(&mut self) -> Result<()> {
        if !self.writer.active.is_dirty() {
            return Ok(());
        }
        let started = Instant::now();
        self.writer.active.sync_data(&self.storage.dir)?;
        self.storage.metrics.add(Counter::Fsyncs, 1);
        self.storage
            .metrics
            .observe(Latency::Fsync, started.elapsed());
        Ok(())
    }

    /// Seals the active segment and starts the next when `bytes` more would
    /// pass the segment size (unless the segment is empty: an oversized
    /// batch then gets a segment to itself).
    fn roll_if_needed(&mut self, bytes: u64) -> Result<()> {
        let tail = self.writer.active.write_pos() + self.writer.buf.len() as u64;
        let empty = tail == SEGMENT_HEADER_LEN as u64;
        if empty || tail + bytes <= self.storage.config.segment_size_bytes {
            return Ok(());
        }
        self.write_buf()?;
        let storage = self.storage;
        let writer = &mut *self.writer;
        writer.active.seal(&storage.dir)?;
        let sealed_len = writer.active.write_pos();
        let next_id = writer
            .active
            .id()
            .checked_add(1)
            .ok_or(Error::Unsupported("segment ids exhausted"))?;
        let next = ActiveSegment::create(&storage.dir, next_id, writer.preallocate_bytes)?;
        let map = MappedSegment::map(next.file(), next_id, storage.config.active_map_bytes())?;
        storage
            .segments
            .write()
            .expect("segment table lock poisoned")
            .insert(next_id, Arc::new(map));
        storage
            .sealed_bytes
            .fetch_add(sealed_len, Ordering::Relaxed);
        storage
            .active_bytes
            .store(next.write_pos(), Ordering::Relaxed);
        tracing::debug!(
            sealed = writer.active.name(),
            next = next.name(),
            "segment rolled"
        );
        writer.active = next;
        Ok(())
    }
}

/// Offsets and lengths fit u32: segments are capped below 4 GiB by config validation.
fn to_u32(value: u64) -> u32 {
    u32::try_from(value).expect("segment offsets fit in u32 (config caps segment size)")
}

/// See [`Storage::sync_in_background`].
pub(super) fn sync_without_blocking_appends(storage: &Storage) -> Result<()> {
    let (file, name, id, pos) = {
        let writer = storage.writer.lock().expect("writer lock poisoned");
        if let Some(reason) = &writer.poisoned {
            return Err(Error::Poisoned {
                reason: reason.clone(),
            });
        }
        if !writer.active.is_dirty() {
            return Ok(());
        }
        let active = &writer.active;
        (
            active.file().clone(),
            active.name().to_string(),
            active.id(),
            active.write_pos(),
        )
    };
    let started = Instant::now();
    let result = sync_file_data(&storage.dir, &file, &name);
    let mut writer = storage.writer.lock().expect("writer lock poisoned");
    match result {
        Ok(()) => {
            storage.metrics.add(Counter::Fsyncs, 1);
            storage.metrics.observe(Latency::Fsync, started.elapsed());
            // A roll in the meantime sealed (and fsynced) that segment itself.
            if writer.active.id() == id {
                writer.active.mark_synced(pos);
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
        assert!(staged[1].tombstone);
        assert!(writer.staged_bytes() > 0);
        writer.write_staged(false).unwrap();
        assert_eq!(
            storage.version_of(b"a"),
            None,
            "written but not yet published"
        );
        writer.publish(&staged);
        assert_eq!(storage.version_of(b"a"), Some(1));
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
        // The segment's creation is sync 0; the first write's sync is 1.
        let faults = Arc::new(FailNth::new(IoOp::SyncFile, 1, false));
        let storage = Storage::open(config, faults, Arc::new(Metrics::new(None))).unwrap();
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
    #[should_panic(expected = "restored versions must increase")]
    fn restored_versions_cannot_go_backwards() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = open(tmp.path(), 1 << 20);
        let mut writer = storage.lock_writer();
        writer.stage_restored(1, 5, b"a", b"1").unwrap();
        writer.stage_restored(1, 5, b"b", b"2").unwrap();
    }
}
