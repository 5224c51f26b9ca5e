//! Opening a store: load each sealed segment's metadata (or rebuild it from
//! the segment), replay the active segment into the hot index, and decide
//! what damage means.
//!
//! - A sealed segment whose metadata loads and matches it (length and a CRC
//!   of its tail) is not read at open: its records are checked when read,
//!   and by `hightower verify`. Missing or damaged metadata is rebuilt by a
//!   full scan of the segment, with a log line.
//! - Damage at the end of the active segment (the newest one the writer
//!   filled) with nothing valid after it is a torn tail (a crash
//!   mid-append): it is cut off, with a warning giving the offset and the
//!   bytes dropped. Compaction outputs are written whole, so any damage in
//!   them is corruption.
//! - Damage anywhere else is corruption: open fails naming the file and the
//!   offset, unless `recovery = "salvage"`. Salvage keeps every intact
//!   command, keeps the original file as `seg-N.log.corrupt`, and reports
//!   exactly which byte ranges it dropped.

mod active;
mod cleanup;
mod headers;
mod order;
mod salvage;
mod sealed;
mod verify;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::files::Files;
use super::read::{Published, ReadPath};
use super::segments::{Segment, SegmentTable};
use super::writer::{Writer, preallocate_bytes_for};
use super::{Storage, merge};
use crate::config::{Config, RecoveryMode};
use crate::data_dir::{Access, DataDir};
use crate::error::{ConfigError, Corruption, Error, Result};
use crate::index::Index;
use crate::log_segment::{ActiveSegment, MappedSegment, SegmentHeader, segment_file_name};
use crate::manifest::{MANIFEST_FILE_NAME, Manifest};
use crate::metrics::Metrics;
use crate::segment_meta::UNKNOWN_LIVE_KEYS;
use crate::segment_meta::meta_file_name;
use active::{open_active, replay_active, skip_cut_versions};
use cleanup::{remove_leftovers, remove_unfinished_creations};
use headers::{active_segment_id, read_headers};
use sealed::open_sealed;

pub use active::{TailCut, TailKind};
pub use verify::{SegmentVerdict, SegmentVerification, verify_segments};

/// What recovery did on open.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OpenReport {
    /// Segments opened.
    pub segments: u64,
    /// Records replayed from the active segment, plus those scanned to
    /// rebuild metadata.
    pub records: u64,
    /// Commands replayed from the active segment.
    pub commands: u64,
    /// Sealed segments whose metadata was missing or unusable and was rebuilt.
    pub metadata_rebuilt: u64,
    /// Of those, rebuilt in memory but not written (a read-only open, or
    /// writing failed, e.g. on a full disk); written later when possible.
    pub metadata_unsaved: u64,
    /// Bytes cut from the end of the newest segment (a crash mid-append),
    /// up to its last non-zero byte: preallocated zeros are not counted.
    pub torn_tail_bytes_dropped: u64,
    /// Segments rewritten by salvage, with what was dropped.
    pub salvaged: Vec<SalvageNote>,
    /// Segment files the manifest lists but that were missing, dropped by
    /// salvage (every record they held is lost).
    pub missing_segments: Vec<String>,
    /// What was cut from the end of the active segment, if anything.
    pub tail_cut: Option<TailCut>,
}

/// One segment salvage rewrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SalvageNote {
    /// The segment's file.
    pub segment: String,
    /// The untouched original, kept for forensics.
    pub original_kept_as: String,
    /// Intact commands kept.
    pub commands_kept: u64,
    /// `(start, end, reason)` of every dropped byte range.
    pub dropped: Vec<(u64, u64, String)>,
}

pub(super) fn recover(dir: DataDir, config: Config, metrics: Arc<Metrics>) -> Result<Storage> {
    let started = std::time::Instant::now();
    let mut report = OpenReport::default();
    // A read-only open writes nothing: leftovers stay, a damaged tail is
    // not cut, rebuilt metadata stays in memory.
    let writable = dir.access() == Access::ReadWrite;
    let SegmentSet {
        ids,
        mut manifest,
        mut manifest_changed,
        highest_seen,
    } = segment_set(&dir, &config, &mut report, writable)?;
    if writable {
        remove_leftovers(&dir)?;
    }
    let headers = read_headers(&dir, &ids, &config, &mut report)?;
    let active_id = active_segment_id(&headers);
    let mut table = SegmentTable::default();
    let (mut last_version, mut last_log_index) = (0u64, 0u64);
    let mut newest_sealed: Option<(u32, u64)> = None;
    let mut previous_normal_max = 0;
    for header in headers.iter().filter(|h| Some(h.id) != active_id) {
        let segment = open_sealed(&dir, &config, *header, &mut report, writable)?;
        let meta = segment
            .meta()
            .expect("sealed segments are opened with metadata");
        let meta_header = *meta.header();
        if !header.compacted {
            // The writer's segments hold increasing versions, in id order.
            if meta_header.max_version != 0 && meta_header.max_version <= previous_normal_max {
                return Err(versions_backwards(header.id, previous_normal_max));
            }
            previous_normal_max = previous_normal_max.max(meta_header.max_version);
        }
        last_version = last_version.max(meta_header.max_version);
        last_log_index = last_log_index.max(meta_header.max_log_index);
        // Equal ranks describe the same point of the log: any known count will do.
        let newer = newest_sealed.is_none_or(|(rank, live)| {
            header.rank > rank || (header.rank == rank && live == UNKNOWN_LIVE_KEYS)
        });
        if newer {
            newest_sealed = Some((header.rank, meta_header.live_keys_after));
        }
        report.segments += 1;
        table.insert(segment);
    }
    let preallocate_bytes = preallocate_bytes_for(&config);
    let mut created_active = false;
    let (active, replay, replay_map) = match active_id {
        Some(id) => {
            let (active, replay, map) =
                open_active(&dir, id, preallocate_bytes, &mut report, writable)?;
            (Some(active), replay, Some(map))
        }
        None if writable => {
            let id = highest_seen + 1;
            let active = ActiveSegment::create(&dir, id, preallocate_bytes)?;
            manifest.segments.insert(id);
            created_active = true;
            (Some(active), Vec::new(), None)
        }
        // Read-only and nothing to resume: reads need no active segment.
        None => (None, Vec::new(), None),
    };
    manifest_changed |= created_active;
    if manifest_changed && writable {
        manifest = manifest.with_segments(manifest.segments.clone());
        if let Err(err) = manifest.store(&dir) {
            // A new segment must be listed before anything goes into it;
            // a store that only lacked a manifest works on without one.
            if created_active {
                return Err(err);
            }
            tracing::warn!(error = %err, "writing {MANIFEST_FILE_NAME} failed; the next change writes it");
        }
    }
    if let Some(active) = &active {
        let active_map = MappedSegment::map(active.file(), active.id(), config.active_map_bytes())?;
        let active_header = SegmentHeader {
            id: active.id(),
            rank: active.id(),
            compacted: false,
        };
        table.insert(Arc::new(Segment::new_active(active_map, active_header)));
    }
    let hot_complete = table.cold().is_empty() && config.hot_index_shard_max_entries().is_none();
    let index = Index::new(
        config.index_initial_capacity,
        config.index_max_load_factor,
        config.hot_index_shard_max_entries(),
    )
    .map_err(|err| {
        ConfigError::new(
            "index_initial_capacity",
            format!(
                "room for {} keys cannot be allocated ({err}); choose a smaller initial capacity",
                config.index_initial_capacity
            ),
        )
    })?;
    let active_id = active.as_ref().map_or(0, ActiveSegment::id);
    let active_bytes = active.as_ref().map_or(0, ActiveSegment::write_pos);
    let next_segment_id = highest_seen.max(active_id) + 1;
    let mut writer = Writer::new(active, last_version + 1, last_log_index, preallocate_bytes);
    if !writable {
        writer.read_only = Some(config.data_dir.clone());
    }
    let published = Published {
        committed_version: last_version,
        hot_complete,
        active_id,
        active_bytes,
    };
    let reads = ReadPath::new(index, table, published, metrics.clone());
    let files = Files::new(dir, config, metrics, next_segment_id, manifest);
    let storage = Storage::assemble(files, reads, writer, OpenReport::default());
    // The live key count recorded when the newest sealed segment was sealed
    // (rebuilt metadata knows none; salvage removes all metadata).
    let live_before_active = match newest_sealed {
        Some((_, live)) if live != UNKNOWN_LIVE_KEYS => live,
        Some(_) => count_live_cold(&storage)?,
        None => 0,
    };
    storage
        .reads
        .live_keys
        .store(live_before_active, Ordering::Relaxed);
    if let Some(map) = &replay_map {
        replay_active(&storage, map, &replay)?;
    }
    if let Some(cut) = report.tail_cut.as_mut().filter(|_| writable) {
        skip_cut_versions(&storage, cut)?;
    }
    let mut storage = storage;
    storage.open_report = report;
    tracing::info!(
        segments = storage.open_report.segments,
        metadata_rebuilt = storage.open_report.metadata_rebuilt,
        keys = storage.reads.live_keys.load(Ordering::Relaxed),
        torn_tail_bytes_dropped = storage.open_report.torn_tail_bytes_dropped,
        elapsed_us = started.elapsed().as_micros() as u64,
        "store opened"
    );
    Ok(storage)
}

/// The segments a store consists of, and what open learned about them.
struct SegmentSet {
    /// Ids to open, ascending.
    ids: Vec<u32>,
    manifest: Manifest,
    /// The manifest must be rewritten (a store without one, or salvage
    /// dropped missing segments).
    manifest_changed: bool,
    /// The highest segment id seen in the directory (new ids go above it).
    highest_seen: u32,
}

/// Which segments make up the store: those the manifest lists. A listed
/// file that is missing is corruption (salvage drops it, reporting the
/// loss); a segment file it does not list is the leftover of an
/// interrupted operation (a compaction output not yet swapped in, a segment
/// created but not yet listed) and is removed. A store written before
/// manifests existed consists of the files present.
fn segment_set(
    dir: &DataDir,
    config: &Config,
    report: &mut OpenReport,
    writable: bool,
) -> Result<SegmentSet> {
    let present = dir.segment_ids()?;
    let highest_seen = present.last().copied().unwrap_or(0);
    let Some(manifest) = Manifest::load(dir)? else {
        let ids = remove_unfinished_creations(dir, present, writable)?;
        if !ids.is_empty() {
            tracing::warn!(
                segments = ids.len(),
                "no {MANIFEST_FILE_NAME}: a store written before manifests; listing the segments present"
            );
        }
        let manifest = Manifest {
            generation: 0,
            segments: ids.iter().copied().collect(),
        };
        return Ok(SegmentSet {
            ids,
            manifest,
            manifest_changed: true,
            highest_seen,
        });
    };
    let missing: Vec<u32> = manifest
        .segments
        .iter()
        .copied()
        .filter(|id| present.binary_search(id).is_err())
        .collect();
    if !missing.is_empty() {
        if config.recovery != RecoveryMode::Salvage {
            return Err(missing_segments_error(&missing, manifest.generation));
        }
        forget_missing_segments(dir, &missing, report)?;
    }
    let unlisted = present.iter().filter(|id| !manifest.segments.contains(id));
    for &id in unlisted.filter(|_| writable) {
        let name = segment_file_name(id);
        tracing::warn!(segment = %name, "removing a segment the manifest does not list (left by an interrupted operation)");
        dir.remove(&name)?;
        let meta = meta_file_name(id);
        if dir.exists(&meta) {
            dir.remove(&meta)?;
        }
        dir.sync()?;
    }
    let mut listed = manifest.segments.clone();
    listed.retain(|id| !missing.contains(id));
    Ok(SegmentSet {
        ids: listed.iter().copied().collect(),
        manifest_changed: listed != manifest.segments,
        manifest: Manifest {
            segments: listed,
            ..manifest
        },
        highest_seen,
    })
}

fn missing_segments_error(missing: &[u32], generation: u64) -> Error {
    let names: Vec<String> = missing.iter().map(|&id| segment_file_name(id)).collect();
    Error::Corruption(Corruption {
        file: names[0].clone(),
        offset: 0,
        reason: format!(
            "missing: {} listed in {MANIFEST_FILE_NAME} (generation {generation}) but not in the data \
             directory; its records are lost unless the file is restored. `hightower salvage` \
             opens the store without it, keeping every other segment",
            names.join(", ")
        ),
    })
}

/// Salvage of a store that lost segment files: the loss is reported, and
/// every metadata file goes (their live key counts include keys that were
/// only in the lost segments), to be rebuilt without counts.
fn forget_missing_segments(dir: &DataDir, missing: &[u32], report: &mut OpenReport) -> Result<()> {
    for &id in missing {
        let name = segment_file_name(id);
        tracing::warn!(segment = %name, "salvage: a listed segment is missing; its records are lost");
        report.missing_segments.push(name);
    }
    for id in dir.segment_ids()? {
        let meta = meta_file_name(id);
        if dir.exists(&meta) {
            dir.remove(&meta)?;
        }
    }
    dir.sync()
}

/// Live keys of the sealed segments, by a merge of their metadata (when
/// the newest segment's metadata had to be rebuilt and lost the count).
fn count_live_cold(storage: &Storage) -> Result<u64> {
    let segments = storage.reads.segments();
    let mut live = 0u64;
    merge::live_entries(
        &[],
        &segments,
        false,
        merge::Range {
            prefix: &[],
            after: None,
        },
        usize::MAX,
        |_, _| live += 1,
    )?;
    Ok(live)
}

fn versions_backwards(segment_id: u32, previous: u64) -> Error {
    Error::Corruption(Corruption {
        file: segment_file_name(segment_id),
        offset: 0,
        reason: format!("versions do not follow version {previous} of an older segment"),
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{open, write};
    use super::*;
    use crate::config::RecoveryMode;
    use crate::config::SyncMode;
    use crate::fault::NoFaults;
    use crate::log_segment::SEGMENT_HEADER_LEN;

    fn reopen(dir: &std::path::Path, recovery: RecoveryMode) -> Result<Storage> {
        let config = Config {
            sync: SyncMode::Os,
            segment_size_bytes: 4096,
            recovery,
            ..Config::new(dir)
        };
        Storage::open(
            config,
            crate::data_dir::Access::ReadWrite,
            Arc::new(NoFaults),
            Arc::new(Metrics::new(None)),
        )
    }

    fn segment_path(dir: &std::path::Path, id: u32) -> std::path::PathBuf {
        dir.join(segment_file_name(id))
    }

    #[test]
    fn a_torn_tail_is_cut_and_counted() {
        let tmp = tempfile::tempdir().unwrap();
        drop({
            let storage = open(tmp.path(), 4096);
            write(&storage, 1, b"kept", Some(b"1"));
            write(&storage, 2, b"torn", Some(b"2"));
            storage
        });
        let path = segment_path(tmp.path(), 1);
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let storage = reopen(tmp.path(), RecoveryMode::Strict).unwrap();
        assert_eq!(storage.open_report().torn_tail_bytes_dropped, 33 - 3);
        assert!(storage.get(b"kept").unwrap().is_some());
        assert_eq!(storage.get(b"torn").unwrap(), None);
        // Cut back to "kept", followed by the marker that skips the
        // version "torn" had (sync = os: no preallocated zeros after it).
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len - 33 + 29);
        let cut = storage.open_report().tail_cut.clone().unwrap();
        assert_eq!((cut.bytes, cut.versions_skipped_to), (30, 3));
        let kept = std::fs::read(tmp.path().join(cut.kept_as.unwrap())).unwrap();
        assert_eq!(kept.len(), 30);
    }

    #[test]
    fn an_interrupted_segment_creation_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        drop({
            let storage = open(tmp.path(), 4096);
            write(&storage, 1, b"k", Some(b"v"));
            storage
        });
        std::fs::write(segment_path(tmp.path(), 2), [0u8; 10]).unwrap();
        let storage = reopen(tmp.path(), RecoveryMode::Strict).unwrap();
        assert_eq!(storage.get(b"k").unwrap().unwrap().value, b"v");
        assert_eq!(storage.open_report().segments, 1);
        assert!(!segment_path(tmp.path(), 2).exists());
    }

    /// Six 1.5 KB puts in 4 KiB segments: at least two sealed segments.
    fn three_segments(dir: &std::path::Path) {
        let storage = open(dir, 4096);
        for i in 0..6u64 {
            write(
                &storage,
                i + 1,
                format!("key-{i}").as_bytes(),
                Some(&[i as u8 + 1; 1500]),
            );
        }
        assert!(storage.stats().segments >= 3);
    }

    #[test]
    fn damage_in_a_sealed_segment_names_file_and_offset_and_salvage_keeps_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        three_segments(tmp.path());
        let path = segment_path(tmp.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        let record = SEGMENT_HEADER_LEN;
        bytes[record + 40] ^= 0xFF;
        std::fs::write(&path, &bytes).unwrap();
        match reopen(tmp.path(), RecoveryMode::Strict) {
            Err(Error::Corruption(c)) => {
                assert_eq!(
                    (c.file.as_str(), c.offset),
                    ("seg-0000000001.log", record as u64)
                );
                assert!(c.reason.starts_with("checksum mismatch"), "{}", c.reason);
            }
            other => panic!("expected corruption, got {:?}", other.err()),
        }
        let storage = reopen(tmp.path(), RecoveryMode::Salvage).unwrap();
        assert_eq!(
            storage.get(b"key-0").unwrap(),
            None,
            "the damaged command is dropped"
        );
        for i in 1..6 {
            assert!(
                storage
                    .get(format!("key-{i}").as_bytes())
                    .unwrap()
                    .is_some(),
                "key-{i}"
            );
        }
        let note = &storage.open_report().salvaged[0];
        assert_eq!(note.segment, "seg-0000000001.log");
        assert_eq!(note.dropped[0].0, record as u64);
        assert_eq!(
            std::fs::read(tmp.path().join(&note.original_kept_as)).unwrap(),
            bytes
        );
        drop(storage);
        reopen(tmp.path(), RecoveryMode::Strict).unwrap();
    }

    #[test]
    fn leftover_salvage_files_are_removed_on_open() {
        let tmp = tempfile::tempdir().unwrap();
        three_segments(tmp.path());
        let leftover = tmp.path().join("seg-0000000001.log.salvage");
        std::fs::write(&leftover, b"partial").unwrap();
        reopen(tmp.path(), RecoveryMode::Strict).unwrap();
        assert!(!leftover.exists());
    }

    #[test]
    fn verify_reports_each_segment_without_changing_anything() {
        let tmp = tempfile::tempdir().unwrap();
        three_segments(tmp.path());
        let config = Config {
            sync: SyncMode::Os,
            ..Config::new(tmp.path())
        };
        let before: Vec<_> = (1..=3)
            .map(|id| std::fs::read(segment_path(tmp.path(), id)).unwrap())
            .collect();
        let results = verify_segments(&config).unwrap();
        assert!(results.len() >= 3);
        assert!(
            results.iter().all(|r| r.verdict == SegmentVerdict::Ok),
            "{results:?}"
        );
        assert_eq!(results.iter().map(|r| r.commands).sum::<u64>(), 6);
        let after: Vec<_> = (1..=3)
            .map(|id| std::fs::read(segment_path(tmp.path(), id)).unwrap())
            .collect();
        assert_eq!(before, after);
        let missing = Config::new(tmp.path().join("nope"));
        assert!(matches!(verify_segments(&missing), Err(Error::Config(_))));
        assert!(!tmp.path().join("nope").exists());
    }
}
