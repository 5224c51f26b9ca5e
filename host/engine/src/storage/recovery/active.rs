//! The active segment at open: scanned record by record (it has no
//! metadata), its torn tail cut, and its records replayed into the hot
//! index.

use std::fs::File;
use std::sync::atomic::Ordering;

use super::OpenReport;
use super::order::VersionOrder;
use super::versions_backwards;
use crate::data_dir::DataDir;
use crate::error::{Corruption, Error, IoContext, Result};
use crate::fault::IoOp;
use crate::index::IndexEntry;
use crate::log_segment::{
    ActiveSegment, MappedSegment, RECORD_HEADER_LEN, RecordKind, ScanReport, scan_segment,
    segment_file_name,
};
use crate::storage::Storage;

use serde::Serialize;

/// Bytes of a torn tail that held data: from where the valid records end to
/// the last non-zero byte (preallocated zeros were never written to).
pub(super) fn torn_tail_bytes(bytes: &[u8], valid_end: usize) -> u64 {
    let data_end = bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |p| p + 1)
        .max(valid_end);
    (data_end - valid_end) as u64
}

/// Smallest record: a header and a one-byte key. A cut region of `n` bytes
/// held at most `n / MIN_RECORD_BYTES` records, so at most as many versions.
const MIN_RECORD_BYTES: u64 = RECORD_HEADER_LEN as u64 + 1;

/// What was cut from the end of the active segment at open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TailCut {
    /// The segment's file.
    pub segment: String,
    /// Where the intact records end (the file was cut there).
    pub offset: u64,
    /// Bytes cut that held data (preallocated zeros are not counted).
    pub bytes: u64,
    /// The file beside the segment that keeps those bytes (`None` when the
    /// store was opened read-only and nothing was cut on disk).
    pub kept_as: Option<String>,
    /// What the cut bytes look like.
    pub kind: TailKind,
    /// The version the store continues after: every version the cut bytes
    /// could have held is skipped, so none is given to another write.
    pub versions_skipped_to: u64,
}

/// What the damage at the end of the log looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TailKind {
    /// The last record never got all its bytes (its header is cut short,
    /// its length runs past the end of the file, or a batch lacks its final
    /// record): a write interrupted by a crash. In `sync = always` such a
    /// write was never acknowledged.
    IncompleteWrite,
    /// The last record has all its bytes but they do not check (its
    /// checksum, kind or lengths are wrong): either a write interrupted by
    /// a crash (the part not written reads back as zeros or stale bytes)
    /// or damage to the last acknowledged write. The store cannot tell
    /// which; the bytes are kept.
    Unverifiable,
}

impl TailKind {
    /// How the scanner's reason for the damage reads.
    pub(super) fn of(reason: &str) -> Self {
        match reason {
            "truncated record header"
            | "record extends past the end of the file"
            | "batch without its final record" => TailKind::IncompleteWrite,
            _ => TailKind::Unverifiable,
        }
    }

    /// The explanation `verify` and `stats` print.
    pub fn explain(self) -> &'static str {
        match self {
            TailKind::IncompleteWrite => {
                "an incomplete write (a crash mid-append; never acknowledged with sync = always)"
            }
            TailKind::Unverifiable => {
                "a record with all its bytes that fails its checksum: a write interrupted by a crash, \
                 or damage to the last acknowledged write (the store cannot tell which)"
            }
        }
    }
}

/// Moves the version counter past every version the cut bytes could have
/// held, durably (a marker record, fsynced), so no later write is given a
/// version a client may have seen on a write that was cut.
pub(super) fn skip_cut_versions(storage: &Storage, cut: &mut TailCut) -> Result<()> {
    let last_version = storage.reads.committed_version();
    let floor = last_version + cut.bytes.div_ceil(MIN_RECORD_BYTES);
    cut.versions_skipped_to = floor;
    if floor == last_version {
        return Ok(());
    }
    let mut writer = storage.lock_writer();
    let log_index = writer.last_log_index();
    writer.stage_marker(log_index, floor)?;
    writer.write_staged(true)?;
    drop(writer);
    storage
        .reads
        .committed_version
        .store(floor, Ordering::Release);
    tracing::warn!(
        segment = %cut.segment,
        versions_skipped_to = floor,
        "versions the cut bytes may have held are skipped"
    );
    Ok(())
}

/// A record of the active segment, located for replay after the store exists.
pub(super) struct ActiveRecord {
    offset: u32,
    len: u32,
    version: u64,
    log_index: u64,
    kind: RecordKind,
    key: (usize, usize),
}

/// Scans the active segment, cuts a torn tail, and returns the segment to
/// resume with, its records to replay, and the map they are read from.
pub(super) fn open_active(
    dir: &DataDir,
    id: u32,
    preallocate_bytes: u64,
    report: &mut OpenReport,
    writable: bool,
) -> Result<(ActiveSegment, Vec<ActiveRecord>, MappedSegment)> {
    let name = segment_file_name(id);
    let file = if writable {
        dir.open_read_write(&name)?
    } else {
        dir.open_read(&name)?
    };
    let map = MappedSegment::map(&file, id, 0)?;
    let mut records = Vec::new();
    let mut order = VersionOrder::new();
    let scan = scan_segment(map.bytes(), |command| {
        order.command(command);
        for &(offset, record) in command {
            records.push(ActiveRecord {
                offset: offset as u32,
                len: record.len as u32,
                version: record.version,
                log_index: record.log_index,
                kind: record.kind,
                key: (
                    offset + RECORD_HEADER_LEN,
                    offset + RECORD_HEADER_LEN + record.key.len(),
                ),
            });
        }
    });
    order.check(&name)?;
    report.segments += 1;
    report.records += scan.records;
    report.commands += scan.commands;
    if !scan.damage.is_empty() {
        if !scan.is_torn_tail_only() {
            return Err(corruption_error(&name, &scan));
        }
        let cut = if writable {
            cut_torn_tail(dir, &file, &name, map.bytes(), &scan)?
        } else {
            // Reads stop where the intact records end; the bytes stay.
            describe_tail(&name, map.bytes(), &scan, None)
        };
        report.torn_tail_bytes_dropped += cut.bytes;
        report.tail_cut = Some(cut);
    }
    let file_len = file.metadata().context(|| format!("stat {name}"))?.len();
    let active =
        ActiveSegment::resume(id, file, scan.valid_end as u64, file_len, preallocate_bytes);
    Ok((active, records, map))
}

/// Puts the active segment's records into the hot index (they stay there:
/// the active segment has no metadata) and counts live keys and dead bytes.
pub(super) fn replay_active(
    storage: &Storage,
    map: &MappedSegment,
    records: &[ActiveRecord],
) -> Result<()> {
    let reads = &storage.reads;
    let segments = reads.segments();
    let active_id = reads.active_segment_id();
    let mut newest = reads.committed_version.load(Ordering::Relaxed);
    let mut live = reads.live_keys.load(Ordering::Relaxed) as i64;
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
        let old = reads.newest_record(key, &segments)?;
        if old.is_some_and(|old| old.version >= entry.version) {
            return Err(versions_backwards(active_id, old.map_or(0, |o| o.version)));
        }
        reads.index.upsert(key, entry, &*segments);
        let was_live = old.is_some_and(|old| !old.tombstone);
        live += i64::from(!entry.tombstone) - i64::from(was_live);
        segments.account_replacement(&entry, old);
        newest = newest.max(entry.version);
    }
    reads.live_keys.store(live.max(0) as u64, Ordering::Relaxed);
    reads.committed_version.store(newest, Ordering::Release);
    let mut writer = storage.writer.lock().expect("writer lock poisoned");
    writer.next_version = writer.next_version.max(newest + 1);
    writer.last_log_index = writer.last_log_index.max(last_log_index);
    Ok(())
}

pub(super) fn corruption_error(name: &str, scan: &ScanReport) -> Error {
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

/// Keeps the bytes after `valid_end` in a file beside the segment, then
/// truncates the segment there. Nothing of the tail is lost: if it was
/// damage to an acknowledged write, the bytes are still there to examine.
fn cut_torn_tail(
    dir: &DataDir,
    file: &File,
    name: &str,
    bytes: &[u8],
    scan: &ScanReport,
) -> Result<TailCut> {
    let valid_end = scan.valid_end as u64;
    // Described and kept before the truncation: `bytes` maps the file, and
    // what lies past its new end must not be read afterwards.
    let mut cut = describe_tail(name, bytes, scan, None);
    let dropped = cut.bytes;
    cut.kept_as = (dropped > 0)
        .then(|| {
            keep_cut_bytes(
                dir,
                name,
                valid_end,
                &bytes[scan.valid_end..][..dropped as usize],
            )
        })
        .transpose()?;
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
    Ok(cut)
}

fn describe_tail(name: &str, bytes: &[u8], scan: &ScanReport, kept_as: Option<String>) -> TailCut {
    TailCut {
        segment: name.to_string(),
        offset: scan.valid_end as u64,
        bytes: torn_tail_bytes(bytes, scan.valid_end),
        kept_as,
        kind: TailKind::of(scan.damage[0].reason),
        // Known once every segment is replayed: see `skip_cut_versions`.
        versions_skipped_to: 0,
    }
}

/// Writes `cut` as `NAME.cut-OFFSET` beside the segment, durably, before
/// the segment is truncated. Returns the file's name.
fn keep_cut_bytes(dir: &DataDir, name: &str, offset: u64, cut: &[u8]) -> Result<String> {
    let kept = format!("{name}.cut-{offset:010}");
    if dir.exists(&kept) {
        // An earlier open kept the same bytes and was interrupted before it
        // truncated the segment: they are already safe.
        return Ok(kept);
    }
    let temp = format!("{kept}.tmp");
    let out = dir.create_new(&temp)?;
    dir.faults()
        .check(IoOp::Write, &temp)
        .context(|| format!("write {temp}"))?;
    std::os::unix::fs::FileExt::write_all_at(&out, cut, 0).context(|| format!("write {temp}"))?;
    dir.faults()
        .check(IoOp::SyncFile, &temp)
        .context(|| format!("fsync {temp}"))?;
    out.sync_all().context(|| format!("fsync {temp}"))?;
    dir.rename(&temp, &kept)?;
    dir.sync()?;
    tracing::warn!(segment = name, kept = %kept, bytes = cut.len(), "the cut bytes are kept beside the segment");
    Ok(kept)
}
