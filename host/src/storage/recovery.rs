//! Opening a store: scan every segment, verify every checksum, rebuild the
//! index, and decide what damage means.
//!
//! - Damage at the end of the newest segment with nothing valid after it is a
//!   torn tail (a crash mid-append): it is cut off, with a warning giving the
//!   offset and the bytes dropped.
//! - Damage anywhere else is corruption: open fails naming the file and the
//!   offset, unless `recovery = "salvage"`. Salvage keeps every intact
//!   command, keeps the original file as `seg-N.log.corrupt`, and reports
//!   exactly which byte ranges it dropped.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;

use super::writer::{Writer, preallocate_bytes_for};
use super::{SegmentTable, Storage};
use crate::config::{Config, RecoveryMode};
use crate::data_dir::DataDir;
use crate::error::{ConfigError, Corruption, Error, IoContext, Result};
use crate::fault::IoOp;
use crate::index::{Index, IndexEntry, KeySource};
use crate::log_segment::{
    ActiveSegment, Located, MappedSegment, RecordKind, SEGMENT_HEADER_LEN, ScanReport,
    check_segment_header, encode_segment_header, scan_segment, segment_file_name,
};
use crate::metrics::Metrics;

/// What recovery did on open.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OpenReport {
    pub segments: u64,
    pub records: u64,
    pub commands: u64,
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

pub(super) fn recover(dir: DataDir, config: Config, metrics: Arc<Metrics>) -> Result<Storage> {
    remove_salvage_leftovers(&dir)?;
    let ids = dir.segment_ids()?;
    let index = Index::new(config.index_initial_capacity, config.index_max_load_factor);
    let mut replay = Replay::new(&index);
    let mut report = OpenReport::default();
    let mut segments = BTreeMap::new();
    let mut sealed_bytes = 0;
    let mut last: Option<(u32, File, u64)> = None;
    for (position, &id) in ids.iter().enumerate() {
        let is_last = position + 1 == ids.len();
        let name = segment_file_name(id);
        if config.recovery == RecoveryMode::Salvage {
            salvage_if_damaged(&dir, id, is_last, &mut report)?;
        }
        let file = dir.open_read_write(&name)?;
        let map = MappedSegment::map(&file, id, 0)?;
        if is_last && is_unfinished_creation(map.bytes()) {
            tracing::warn!(segment = %name, "removing a segment whose creation a crash interrupted");
            drop(map);
            dir.remove(&name)?;
            dir.sync()?;
            continue;
        }
        check_segment_header(map.bytes(), id, &name)?;
        // In the table before its scan: the index reads keys back from it.
        // The newest segment's exact map is replaced by a larger one below.
        let map = Arc::new(map);
        segments.insert(id, map.clone());
        replay.segment_id = id;
        let scan = scan_segment(map.bytes(), |command| replay.command(command, &segments));
        replay.check(&name)?;
        report.segments += 1;
        report.records += scan.records;
        report.commands += scan.commands;
        if !scan.damage.is_empty() {
            if !(is_last && scan.is_torn_tail_only()) {
                return Err(corruption_error(&name, &scan));
            }
            report.torn_tail_bytes_dropped +=
                cut_torn_tail(&dir, &file, &name, map.bytes(), scan.valid_end as u64)?;
        }
        if is_last {
            last = Some((id, file, scan.valid_end as u64));
        } else {
            sealed_bytes += map.bytes().len() as u64;
        }
    }
    let preallocate_bytes = preallocate_bytes_for(&config);
    let active = match last {
        Some((id, file, valid_end)) => {
            let file_len = file
                .metadata()
                .context(|| format!("stat {}", segment_file_name(id)))?
                .len();
            ActiveSegment::resume(id, file, valid_end, file_len, preallocate_bytes)
        }
        None => ActiveSegment::create(&dir, ids.last().map_or(1, |id| id + 1), preallocate_bytes)?,
    };
    let active_map = MappedSegment::map(active.file(), active.id(), config.active_map_bytes())?;
    segments.insert(active.id(), Arc::new(active_map));
    let active_bytes = active.write_pos();
    tracing::info!(
        segments = report.segments,
        records = report.records,
        keys = index.len(),
        torn_tail_bytes_dropped = report.torn_tail_bytes_dropped,
        "store opened"
    );
    let (last_version, last_log_index) = (replay.last_version, replay.last_log_index);
    let writer = Writer::new(active, last_version + 1, last_log_index, preallocate_bytes);
    Ok(Storage {
        dir,
        index,
        segments: RwLock::new(segments),
        publish_seq: AtomicU64::new(0),
        writer: Mutex::new(writer),
        config,
        metrics,
        committed_version: AtomicU64::new(last_version),
        sealed_bytes: AtomicU64::new(sealed_bytes),
        active_bytes: AtomicU64::new(active_bytes),
        open_report: report,
    })
}

/// Applies recovered commands to the index, checking that versions only grow.
struct Replay<'i> {
    index: Option<&'i Index>,
    /// The segment being scanned.
    segment_id: u32,
    last_version: u64,
    last_log_index: u64,
    backwards_at: Option<(u64, u64)>,
}

impl<'i> Replay<'i> {
    fn new(index: &'i Index) -> Self {
        Replay {
            index: Some(index),
            segment_id: 0,
            last_version: 0,
            last_log_index: 0,
            backwards_at: None,
        }
    }

    fn without_index() -> Self {
        Replay {
            index: None,
            segment_id: 0,
            last_version: 0,
            last_log_index: 0,
            backwards_at: None,
        }
    }

    fn command(&mut self, records: &[Located<'_>], keys: &impl KeySource) {
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
            let Some(index) = self.index else { continue };
            match record.kind {
                RecordKind::Put => {
                    let entry = IndexEntry {
                        version: record.version,
                        segment_id: self.segment_id,
                        offset: offset as u32,
                        len: record.len as u32,
                    };
                    index.insert(record.key, entry, keys);
                }
                RecordKind::Tombstone => {
                    index.remove(record.key, keys);
                }
                RecordKind::Marker => {}
            }
        }
    }

    /// Versions must increase through the whole log; anything else is corruption.
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

/// A crash between creating a segment and syncing its header leaves an
/// empty or all-zero file: it never held a record.
fn is_unfinished_creation(bytes: &[u8]) -> bool {
    bytes.len() < SEGMENT_HEADER_LEN || bytes[..SEGMENT_HEADER_LEN].iter().all(|&b| b == 0)
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

fn remove_salvage_leftovers(dir: &DataDir) -> Result<()> {
    for name in dir.file_names()? {
        if name.ends_with(".salvage") {
            tracing::warn!(file = %name, "removing an unfinished salvage file");
            dir.remove(&name)?;
        }
    }
    Ok(())
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
    if is_last && is_unfinished_creation(bytes) {
        return Ok(());
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
    write(&encode_segment_header(id))?;
    for &(start, end) in &kept {
        write(&bytes[start..end])?;
    }
    dir.faults()
        .check(IoOp::SyncFile, &temp)
        .context(|| format!("fsync {temp}"))?;
    out.sync_all().context(|| format!("fsync {temp}"))?;
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
    let mut replay = Replay::without_index();
    let mut results = Vec::with_capacity(ids.len());
    for (position, &id) in ids.iter().enumerate() {
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
        };
        if let Err(err) = check_segment_header(bytes, id, &name) {
            result.verdict = SegmentVerdict::Corrupt {
                offset: 0,
                reason: err.to_string(),
                damaged_ranges: 1,
            };
            results.push(result);
            continue;
        }
        let scan = scan_segment(bytes, |command| {
            replay.command(command, &SegmentTable::new())
        });
        (result.records, result.commands) = (scan.records, scan.commands);
        let is_last = position + 1 == ids.len();
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
