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

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;

use super::Storage;
use super::segments::{Segment, SegmentTable};
use super::writer::{Writer, preallocate_bytes_for};
use crate::config::{Config, RecoveryMode};
use crate::data_dir::DataDir;
use crate::error::{ConfigError, Corruption, Error, IoContext, Result};
use crate::fault::IoOp;
use crate::index::{Index, IndexEntry};
use crate::log_segment::{
    ActiveSegment, Located, MappedSegment, RecordKind, SEGMENT_HEADER_LEN, ScanReport,
    SegmentHeader, check_segment_header, encode_header, scan_segment, segment_file_name,
};
use crate::metrics::Metrics;
use crate::segment_meta::{SegmentMeta, UNKNOWN_LIVE_KEYS, meta_file_name};

/// What recovery did on open.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OpenReport {
    pub segments: u64,
    /// Records replayed from the active segment, plus those scanned to
    /// rebuild metadata.
    pub records: u64,
    pub commands: u64,
    /// Sealed segments whose metadata was missing or unusable and was rebuilt.
    pub metadata_rebuilt: u64,
    /// Bytes cut from the end of the newest segment (a crash mid-append),
    /// up to its last non-zero byte: preallocated zeros are not counted.
    pub torn_tail_bytes_dropped: u64,
    /// Segments rewritten by salvage, with what was dropped.
    pub salvaged: Vec<SalvageNote>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SalvageNote {
    pub segment: String,
    /// The untouched original, kept for forensics.
    pub original_kept_as: String,
    pub commands_kept: u64,
    /// `(start, end, reason)` of every dropped byte range.
    pub dropped: Vec<(u64, u64, String)>,
}

/// A record of the active segment, located for replay after the store exists.
struct ActiveRecord {
    offset: u32,
    len: u32,
    version: u64,
    log_index: u64,
    kind: RecordKind,
    key: (usize, usize),
}

pub(super) fn recover(dir: DataDir, config: Config, metrics: Arc<Metrics>) -> Result<Storage> {
    let started = std::time::Instant::now();
    remove_leftovers(&dir)?;
    let mut report = OpenReport::default();
    let ids = remove_unfinished_creations(&dir, dir.segment_ids()?)?;
    let headers = read_headers(&dir, &ids, &config, &mut report)?;
    let active_id = headers.iter().filter(|h| !h.compacted).map(|h| h.id).max();
    let mut table = SegmentTable::default();
    let (mut last_version, mut last_log_index) = (0u64, 0u64);
    let mut newest_sealed: Option<(u32, u64)> = None;
    let mut previous_normal_max = 0;
    for header in headers.iter().filter(|h| Some(h.id) != active_id) {
        let segment = open_sealed(&dir, &config, *header, &mut report)?;
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
    let (active, replay, replay_map) = match active_id {
        Some(id) => {
            let (active, replay, map) = open_active(&dir, id, preallocate_bytes, &mut report)?;
            (active, replay, Some(map))
        }
        None => {
            let id = ids.last().map_or(1, |id| id + 1);
            (
                ActiveSegment::create(&dir, id, preallocate_bytes)?,
                Vec::new(),
                None,
            )
        }
    };
    let active_map = MappedSegment::map(active.file(), active.id(), config.active_map_bytes())?;
    let active_header = SegmentHeader {
        id: active.id(),
        rank: active.id(),
        compacted: false,
    };
    table.insert(Arc::new(Segment::new_active(active_map, active_header)));
    let hot_complete = table.cold().is_empty() && config.hot_index_shard_max_entries().is_none();
    let index = Index::new(
        config.index_initial_capacity,
        config.index_max_load_factor,
        config.hot_index_shard_max_entries(),
    );
    let next_segment_id = ids.last().copied().unwrap_or(0).max(active.id()) + 1;
    let active_bytes = active.write_pos();
    let active_id = active.id();
    let writer = Writer::new(active, last_version + 1, last_log_index, preallocate_bytes);
    let storage = Storage {
        dir,
        index,
        segments: RwLock::new(table),
        publish_seq: AtomicU64::new(0),
        writer: Mutex::new(writer),
        config,
        metrics,
        committed_version: AtomicU64::new(last_version),
        hot_complete: AtomicBool::new(hot_complete),
        live_keys: AtomicU64::new(0),
        active_bytes: AtomicU64::new(active_bytes),
        active_id: AtomicU32::new(active_id),
        next_segment_id: AtomicU32::new(next_segment_id),
        background_maintenance: AtomicBool::new(false),
        maintenance: Mutex::new(()),
        open_report: OpenReport::default(),
    };
    // The live key count recorded when the newest sealed segment was sealed
    // (rebuilt metadata knows none; salvage removes all metadata).
    let live_before_active = match newest_sealed {
        Some((_, live)) if live != UNKNOWN_LIVE_KEYS => live,
        Some(_) => count_live_cold(&storage)?,
        None => 0,
    };
    storage
        .live_keys
        .store(live_before_active, Ordering::Relaxed);
    if let Some(map) = &replay_map {
        replay_active(&storage, map, &replay)?;
    }
    let mut storage = storage;
    storage.open_report = report;
    tracing::info!(
        segments = storage.open_report.segments,
        metadata_rebuilt = storage.open_report.metadata_rebuilt,
        keys = storage.live_keys.load(Ordering::Relaxed),
        torn_tail_bytes_dropped = storage.open_report.torn_tail_bytes_dropped,
        elapsed_us = started.elapsed().as_micros() as u64,
        "store opened"
    );
    Ok(storage)
}

/// Removes unfinished work of an earlier process: salvage rewrites,
/// temporary metadata and compaction outputs, and metadata whose segment
/// is gone (compaction deletes a segment before its metadata).
fn remove_leftovers(dir: &DataDir) -> Result<()> {
    let segment_ids = dir.segment_ids()?;
    let mut removed = false;
    for name in dir.file_names()? {
        let orphan_meta = name
            .strip_prefix("seg-")
            .and_then(|rest| rest.strip_suffix(".meta"))
            .and_then(|digits| digits.parse::<u32>().ok())
            .is_some_and(|id| name == meta_file_name(id) && !segment_ids.contains(&id));
        if name.ends_with(".salvage") || name.ends_with(".tmp") || orphan_meta {
            tracing::warn!(file = %name, "removing a file left by an interrupted operation");
            dir.remove(&name)?;
            removed = true;
        }
    }
    if removed {
        dir.sync()?;
    }
    Ok(())
}

/// A crash between creating a segment and syncing its header leaves an
/// empty or all-zero file that never held a record. Such a file is removed
/// when it is newer than every segment the writer filled (compaction
/// outputs, written whole, may have higher ids).
fn remove_unfinished_creations(dir: &DataDir, mut ids: Vec<u32>) -> Result<Vec<u32>> {
    let mut kept = Vec::with_capacity(ids.len());
    while let Some(id) = ids.pop() {
        let name = segment_file_name(id);
        let file = dir.open_read(&name)?;
        let mut head = [0u8; SEGMENT_HEADER_LEN];
        let len = file
            .read_at(&mut head, 0)
            .context(|| format!("read {name}"))?;
        let unfinished = len < SEGMENT_HEADER_LEN || head.iter().all(|&b| b == 0);
        let newer_all_compacted = kept.iter().all(|&newer: &u32| {
            let newer_name = segment_file_name(newer);
            let mut head = [0u8; SEGMENT_HEADER_LEN];
            dir.open_read(&newer_name)
                .ok()
                .and_then(|f| f.read_at(&mut head, 0).ok())
                .and_then(|_| check_segment_header(&head, newer, &newer_name).ok())
                .is_some_and(|h| h.compacted)
        });
        if unfinished && newer_all_compacted {
            tracing::warn!(segment = %name, "removing a segment whose creation a crash interrupted");
            dir.remove(&name)?;
            dir.sync()?;
            continue;
        }
        kept.push(id);
    }
    kept.reverse();
    Ok(kept)
}

/// Checks every segment header (salvaging damaged segments first in
/// salvage mode).
fn read_headers(
    dir: &DataDir,
    ids: &[u32],
    config: &Config,
    report: &mut OpenReport,
) -> Result<Vec<SegmentHeader>> {
    let mut headers = Vec::with_capacity(ids.len());
    let newest_normal = ids.last().copied();
    for &id in ids {
        let name = segment_file_name(id);
        if config.recovery == RecoveryMode::Salvage {
            // Only the newest id can be the active segment; a compaction
            // output never has a torn tail, but salvage treats both alike.
            salvage_if_damaged(dir, id, Some(id) == newest_normal, report)?;
        }
        let file = dir.open_read(&name)?;
        let mut head = [0u8; SEGMENT_HEADER_LEN];
        let len = file
            .read_at(&mut head, 0)
            .context(|| format!("read {name}"))?;
        headers.push(check_segment_header(&head[..len], id, &name)?);
    }
    Ok(headers)
}

/// Opens a sealed segment with its metadata, rebuilding the metadata from
/// the segment (a full, checking scan) if it is missing or unusable.
fn open_sealed(
    dir: &DataDir,
    config: &Config,
    header: SegmentHeader,
    report: &mut OpenReport,
) -> Result<Arc<Segment>> {
    let name = segment_file_name(header.id);
    let file = dir.open_read(&name)?;
    let map = MappedSegment::map(&file, header.id, 0)?;
    let loaded = match SegmentMeta::load(dir, map.bytes(), header) {
        Ok(Some(meta)) => Some(meta),
        Ok(None) => {
            tracing::warn!(segment = %name, "segment metadata missing; rebuilding it from the segment");
            None
        }
        Err(err) => {
            tracing::warn!(segment = %name, error = %err, "segment metadata unusable; rebuilding it from the segment");
            None
        }
    };
    let segment = Segment::new(map, header);
    let meta = match loaded {
        Some(meta) => meta,
        None => {
            report.metadata_rebuilt += 1;
            let bytes = crate::segment_meta::build(&crate::segment_meta::BuildSpec {
                segment: segment.map.bytes(),
                header,
                bloom_bits_per_key: config.bloom_bits_per_key,
                live_keys_after: UNKNOWN_LIVE_KEYS,
            })?;
            crate::segment_meta::write(dir, header.id, &bytes)?;
            report.records += SegmentMeta::from_built(bytes.clone(), segment.map.bytes(), header)?
                .header()
                .records;
            SegmentMeta::load(dir, segment.map.bytes(), header)?
                .ok_or(Error::Unsupported("rebuilt metadata vanished"))?
        }
    };
    // Within the segment: everything but the newest put of each key is dead.
    // Records superseded by later segments are found by the audit.
    let dead = segment.len() - SEGMENT_HEADER_LEN as u64 - meta.header().put_bytes;
    segment.dead_bytes.store(dead, Ordering::Relaxed);
    let segment = Arc::new(segment);
    let mut scratch = SegmentTable::default();
    scratch.insert(segment.clone());
    scratch.attach_meta(header.id, Arc::new(meta));
    Ok(segment)
}

/// Scans the active segment, cuts a torn tail, and returns the segment to
/// resume with, its records to replay, and the map they are read from.
fn open_active(
    dir: &DataDir,
    id: u32,
    preallocate_bytes: u64,
    report: &mut OpenReport,
) -> Result<(ActiveSegment, Vec<ActiveRecord>, MappedSegment)> {
    let name = segment_file_name(id);
    let file = dir.open_read_write(&name)?;
    let map = MappedSegment::map(&file, id, 0)?;
    let mut records = Vec::new();
    let mut replay = Replay::without_index();
    let scan = scan_segment(map.bytes(), |command| {
        replay.command(command);
        for &(offset, record) in command {
            records.push(ActiveRecord {
                offset: offset as u32,
                len: record.len as u32,
                version: record.version,
                log_index: record.log_index,
                kind: record.kind,
                key: (
                    offset + crate::log_segment::RECORD_HEADER_LEN,
                    offset + crate::log_segment::RECORD_HEADER_LEN + record.key.len(),
                ),
            });
        }
    });
    replay.check(&name)?;
    report.segments += 1;
    report.records += scan.records;
    report.commands += scan.commands;
    if !scan.damage.is_empty() {
        if !scan.is_torn_tail_only() {
            return Err(corruption_error(&name, &scan));
        }
        report.torn_tail_bytes_dropped +=
            cut_torn_tail(dir, &file, &name, map.bytes(), scan.valid_end as u64)?;
    }
    let file_len = file.metadata().context(|| format!("stat {name}"))?.len();
    let active =
        ActiveSegment::resume(id, file, scan.valid_end as u64, file_len, preallocate_bytes);
    Ok((active, records, map))
}

/// Puts the active segment's records into the hot index (they stay there:
/// the active segment has no metadata) and counts live keys and dead bytes.
fn replay_active(storage: &Storage, map: &MappedSegment, records: &[ActiveRecord]) -> Result<()> {
    let segments = storage.segments();
    let active_id = storage.active_segment_id();
    let mut newest = storage.committed_version.load(Ordering::Relaxed);
    let mut live = storage.live_keys.load(Ordering::Relaxed) as i64;
    let mut last_log_index = 0;
    for record in records {
        last_log_index = last_log_index.max(record.log_index);
        if record.kind == RecordKind::Marker {
            newest = newest.max(record.version);
            continue;
        }
        let key = &map.bytes()[record.key.0..record.key.1];
        let entry = IndexEntry {
            version: record.version,
            segment_id: active_id,
            offset: record.offset,
            len: record.len,
            tombstone: record.kind == RecordKind::Tombstone,
        };
        let old = storage.newest_record(key, &segments)?;
        if old.is_some_and(|old| old.version >= entry.version) {
            return Err(versions_backwards(active_id, old.map_or(0, |o| o.version)));
        }
        storage.index.upsert(key, entry, &*segments);
        let was_live = old.is_some_and(|old| !old.tombstone);
        live += i64::from(!entry.tombstone) - i64::from(was_live);
        segments.account_replacement(&entry, old);
        newest = newest.max(entry.version);
    }
    storage
        .live_keys
        .store(live.max(0) as u64, Ordering::Relaxed);
    storage.committed_version.store(newest, Ordering::Release);
    let mut writer = storage.writer.lock().expect("writer lock poisoned");
    writer.next_version = writer.next_version.max(newest + 1);
    writer.last_log_index = writer.last_log_index.max(last_log_index);
    Ok(())
}

/// Live keys of the sealed segments, by a merge of their metadata (when
/// the newest segment's metadata had to be rebuilt and lost the count).
fn count_live_cold(storage: &Storage) -> Result<u64> {
    let segments = storage.segments();
    let mut live = 0u64;
    super::merge::live_entries(
        &[],
        &segments,
        false,
        super::merge::Range {
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

/// Checks that versions only grow within a run of records.
struct Replay {
    last_version: u64,
    last_log_index: u64,
    backwards_at: Option<(u64, u64)>,
}

impl Replay {
    fn without_index() -> Self {
        Replay {
            last_version: 0,
            last_log_index: 0,
            backwards_at: None,
        }
    }

    fn command(&mut self, records: &[Located<'_>]) {
        for &(offset, record) in records {
            // A marker may repeat the last version (it only moves the log index on).
            let backwards = match record.kind {
                RecordKind::Marker => record.version < self.last_version,
                _ => record.version <= self.last_version,
            };
            if backwards || record.log_index < self.last_log_index {
                self.backwards_at
                    .get_or_insert((offset as u64, record.version));
                return;
            }
            self.last_version = record.version;
            self.last_log_index = record.log_index;
        }
    }

    /// Versions must increase; anything else is corruption.
    fn check(&mut self, file: &str) -> Result<()> {
        match self.backwards_at.take() {
            None => Ok(()),
            Some((offset, version)) => Err(Error::Corruption(Corruption {
                file: file.to_string(),
                offset,
                reason: format!(
                    "version {version} does not follow version {}",
                    self.last_version
                ),
            })),
        }
    }
}

fn corruption_error(name: &str, scan: &ScanReport) -> Error {
    let first = &scan.damage[0];
    Error::Corruption(Corruption {
        file: name.to_string(),
        offset: first.offset as u64,
        reason: format!(
            "{} ({} damaged range(s); valid data follows, so this is not a torn tail; \
             `hightower salvage` keeps every intact command)",
            first.reason,
            scan.damage.len()
        ),
    })
}

/// Truncates the torn tail at `valid_end`; returns the non-zero bytes dropped.
fn cut_torn_tail(
    dir: &DataDir,
    file: &File,
    name: &str,
    bytes: &[u8],
    valid_end: u64,
) -> Result<u64> {
    let data_end = bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |p| p as u64 + 1)
        .max(valid_end);
    let dropped = data_end - valid_end;
    tracing::warn!(
        segment = name,
        offset = valid_end,
        bytes_dropped = dropped,
        "cutting torn tail left by a crash"
    );
    dir.faults()
        .check(IoOp::Truncate, name)
        .context(|| format!("truncate {name}"))?;
    file.set_len(valid_end)
        .context(|| format!("truncate {name}"))?;
    file.sync_all().context(|| format!("fsync {name}"))?;
    Ok(dropped)
}

/// Rewrites segment `id` with only its intact commands if it has damage
/// other than a torn tail of the newest segment.
fn salvage_if_damaged(
    dir: &DataDir,
    id: u32,
    is_last: bool,
    report: &mut OpenReport,
) -> Result<()> {
    let name = segment_file_name(id);
    let file = dir.open_read(&name)?;
    let map = MappedSegment::map(&file, id, 0)?;
    let bytes = map.bytes();
    if bytes.len() < SEGMENT_HEADER_LEN || bytes[..SEGMENT_HEADER_LEN].iter().all(|&b| b == 0) {
        // An interrupted creation, removed before this runs; a damaged
        // header of a segment with records is rewritten below.
        if is_last {
            return Ok(());
        }
    }
    let header = check_segment_header(bytes, id, &name);
    if let Err(err @ Error::UnsupportedFormat { .. }) = header {
        return Err(err);
    }
    let mut kept = Vec::new();
    let scan = scan_segment(bytes, |command| {
        let (first, (last_offset, last)) = (command[0].0, command[command.len() - 1]);
        kept.push((first, last_offset + last.len));
    });
    let torn_tail_only = scan.damage.is_empty() || (is_last && scan.is_torn_tail_only());
    if header.is_ok() && torn_tail_only {
        return Ok(());
    }
    let temp = format!("{name}.salvage");
    let out = dir.create_new(&temp)?;
    let mut offset = 0u64;
    let mut write = |chunk: &[u8]| -> Result<()> {
        dir.faults()
            .check(IoOp::Write, &temp)
            .context(|| format!("write {temp}"))?;
        out.write_all_at(chunk, offset)
            .context(|| format!("write {temp}"))?;
        offset += chunk.len() as u64;
        Ok(())
    };
    // A header that cannot be read is rewritten as the writer's own kind.
    let rewritten = header.as_ref().copied().unwrap_or(SegmentHeader {
        id,
        rank: id,
        compacted: false,
    });
    write(&encode_header(rewritten))?;
    for &(start, end) in &kept {
        write(&bytes[start..end])?;
    }
    dir.faults()
        .check(IoOp::SyncFile, &temp)
        .context(|| format!("fsync {temp}"))?;
    out.sync_all().context(|| format!("fsync {temp}"))?;
    // Every metadata file records live key counts that may include what
    // salvage drops: all are rebuilt (without counts) on this open.
    for id in dir.segment_ids()? {
        if dir.exists(&meta_file_name(id)) {
            dir.remove(&meta_file_name(id))?;
        }
    }
    let kept_as = unused_name(dir, &format!("{name}.corrupt"));
    dir.hard_link(&name, &kept_as)?;
    dir.rename(&temp, &name)?;
    dir.sync()?;
    let mut dropped: Vec<(u64, u64, String)> = scan
        .damage
        .iter()
        .map(|d| (d.start as u64, d.end as u64, d.reason.to_string()))
        .collect();
    if let Err(err) = header {
        dropped.insert(
            0,
            (
                0,
                SEGMENT_HEADER_LEN as u64,
                format!("segment header rewritten: {err}"),
            ),
        );
    }
    for (start, end, reason) in &dropped {
        tracing::warn!(segment = %name, start, end, reason = %reason, "salvage dropped a damaged range");
    }
    report.salvaged.push(SalvageNote {
        segment: name,
        original_kept_as: kept_as,
        commands_kept: kept.len() as u64,
        dropped,
    });
    Ok(())
}

fn unused_name(dir: &DataDir, base: &str) -> String {
    (0..)
        .map(|n| {
            if n == 0 {
                base.to_string()
            } else {
                format!("{base}.{n}")
            }
        })
        .find(|name| !dir.exists(name))
        .expect("some name is free")
}

/// The health of one segment file, as `hightower verify` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SegmentVerification {
    pub file: String,
    pub bytes: u64,
    pub records: u64,
    pub commands: u64,
    pub verdict: SegmentVerdict,
    /// The state of the segment's metadata file.
    pub metadata: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SegmentVerdict {
    Ok,
    /// The newest segment ends in a torn append; open cuts it.
    TornTail {
        offset: u64,
        bytes: u64,
    },
    /// Damage open refuses (salvage drops the listed ranges).
    Corrupt {
        offset: u64,
        reason: String,
        damaged_ranges: u64,
    },
}

impl SegmentVerdict {
    pub fn is_corrupt(&self) -> bool {
        matches!(self, SegmentVerdict::Corrupt { .. })
    }
}

/// Checks every record of every segment without changing anything.
pub fn verify_segments(config: &Config) -> Result<Vec<SegmentVerification>> {
    config.validate()?;
    // Verifying must not create a store: a mistyped path is not a healthy one.
    if !config.data_dir.exists() {
        return Err(ConfigError {
            field: "data_dir",
            reason: format!("{} does not exist", config.data_dir.display()),
        }
        .into());
    }
    let dir = DataDir::open(&config.data_dir, Arc::new(crate::fault::NoFaults))?;
    let ids = dir.segment_ids()?;
    let headers: Vec<Option<SegmentHeader>> = ids
        .iter()
        .map(|&id| {
            let name = segment_file_name(id);
            let mut head = [0u8; SEGMENT_HEADER_LEN];
            let file = dir.open_read(&name).ok()?;
            let len = file.read_at(&mut head, 0).ok()?;
            check_segment_header(&head[..len], id, &name).ok()
        })
        .collect();
    let active_id = headers
        .iter()
        .flatten()
        .filter(|h| !h.compacted)
        .map(|h| h.id)
        .max();
    // Versions grow through the writer's segments in id order, and within
    // each compaction output.
    let mut replay = Replay::without_index();
    let mut results = Vec::with_capacity(ids.len());
    for &id in &ids {
        let name = segment_file_name(id);
        let file = dir.open_read(&name)?;
        let map = MappedSegment::map(&file, id, 0)?;
        let bytes = map.bytes();
        let mut result = SegmentVerification {
            file: name.clone(),
            bytes: bytes.len() as u64,
            records: 0,
            commands: 0,
            verdict: SegmentVerdict::Ok,
            metadata: String::new(),
        };
        let header = match check_segment_header(bytes, id, &name) {
            Ok(header) => header,
            Err(err) => {
                result.verdict = SegmentVerdict::Corrupt {
                    offset: 0,
                    reason: err.to_string(),
                    damaged_ranges: 1,
                };
                results.push(result);
                continue;
            }
        };
        let mut own_replay = Replay::without_index();
        let replay = if header.compacted {
            &mut own_replay
        } else {
            &mut replay
        };
        let scan = scan_segment(bytes, |command| replay.command(command));
        (result.records, result.commands) = (scan.records, scan.commands);
        let is_last = Some(id) == active_id;
        result.metadata = if is_last {
            "none (active segment)".into()
        } else {
            match SegmentMeta::load(&dir, bytes, header) {
                Ok(Some(meta)) => match meta.verify_entries(bytes) {
                    Ok(()) => "ok".into(),
                    Err(err) => format!("damaged: {err}"),
                },
                Ok(None) => "missing, rebuilt on open".into(),
                Err(err) => format!("unusable, rebuilt on open: {err}"),
            }
        };
        if let Err(Error::Corruption(c)) = replay.check(&name) {
            result.verdict = SegmentVerdict::Corrupt {
                offset: c.offset,
                reason: c.reason,
                damaged_ranges: 1,
            };
        } else if let Some(first) = scan.damage.first() {
            result.verdict = if is_last && scan.is_torn_tail_only() {
                let data_end = bytes
                    .iter()
                    .rposition(|&b| b != 0)
                    .map_or(0, |p| p + 1)
                    .max(scan.valid_end);
                SegmentVerdict::TornTail {
                    offset: scan.valid_end as u64,
                    bytes: (data_end - scan.valid_end) as u64,
                }
            } else {
                SegmentVerdict::Corrupt {
                    offset: first.offset as u64,
                    reason: first.reason.to_string(),
                    damaged_ranges: scan.damage.len() as u64,
                }
            };
        }
        results.push(result);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{open, write};
    use super::*;
    use crate::config::SyncMode;
    use crate::fault::NoFaults;

    fn reopen(dir: &std::path::Path, recovery: RecoveryMode) -> Result<Storage> {
        let config = Config {
            sync: SyncMode::Os,
            segment_size_bytes: 4096,
            recovery,
            ..Config::new(dir)
        };
        Storage::open(config, Arc::new(NoFaults), Arc::new(Metrics::new(None)))
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
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len - 33);
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
