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
) -> Result<(ActiveSegment, Vec<ActiveRecord>, MappedSegment)> {
    let name = segment_file_name(id);
    let file = dir.open_read_write(&name)?;
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

/// Truncates the torn tail at `valid_end`; returns the non-zero bytes dropped.
pub(super) fn cut_torn_tail(
    dir: &DataDir,
    file: &File,
    name: &str,
    bytes: &[u8],
    valid_end: u64,
) -> Result<u64> {
    let dropped = torn_tail_bytes(bytes, valid_end as usize);
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
