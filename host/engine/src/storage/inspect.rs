//! What `hightower inspect` shows: per segment, its size, records, live and
//! dead bytes and metadata; per record of one segment, what it is and
//! whether it is still its key's newest.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::read::ReadPath;
use super::segments::Segment;
use crate::error::{ConfigError, Result};
use crate::index::IndexEntry;
use crate::log_segment::{RecordKind, SEGMENT_HEADER_LEN, scan_segment, segment_file_name};

/// One segment, as `inspect` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SegmentInfo {
    /// Its file name.
    pub file: String,
    /// Its id (the number in the file name).
    pub id: u32,
    /// Position of its data in the log (see `docs/format.md`).
    pub rank: u32,
    /// Written by compaction (not by the writer).
    pub compacted: bool,
    /// The writer's active segment.
    pub active: bool,
    /// Bytes of the file (the active one's up to its tail).
    pub bytes: u64,
    /// Records in it.
    pub records: u64,
    /// Records that are their key's newest value (tombstones excluded).
    pub live_records: u64,
    /// Bytes of those records.
    pub live_bytes: u64,
    /// Everything else: overwritten records, tombstones, markers, headers.
    pub dead_bytes: u64,
    /// Size of `seg-N.meta` (0 for the active segment, which has none).
    pub metadata_bytes: u64,
    /// Size of the Bloom filter in its metadata.
    pub bloom_filter_bytes: u64,
}

/// One record of a segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordInfo {
    /// Where the record starts in the segment.
    pub offset: u64,
    /// `put`, `tombstone` or `marker`.
    pub kind: &'static str,
    /// Its version.
    pub version: u64,
    /// The log index of the command that wrote it.
    pub log_index: u64,
    /// Its key.
    pub key: Vec<u8>,
    /// Length of its value.
    pub value_bytes: u64,
    /// Still its key's newest record (a put that has not been overwritten or deleted).
    pub live: bool,
}

/// Every open segment with exact live and dead bytes.
pub(super) fn segments(reads: &ReadPath) -> Result<Vec<SegmentInfo>> {
    let segments: Vec<Arc<Segment>> = reads.segments().iter().cloned().collect();
    segments.iter().map(|s| segment_info(reads, s)).collect()
}

/// The records of segment `id`, in log order.
pub(super) fn records(reads: &ReadPath, id: u32) -> Result<Vec<RecordInfo>> {
    {
        let Some(segment) = reads.segments().get(id).cloned() else {
            return Err(ConfigError {
                field: "segment",
                reason: format!("no segment {id} ({} does not exist)", segment_file_name(id)),
            }
            .into());
        };
        let bytes = segment_bytes(reads, &segment);
        let mut records = Vec::new();
        let mut failure = None;
        scan_segment(bytes, |command| {
            for &(offset, record) in command {
                let live = match is_newest(reads, &segment, record.key, offset, record.kind) {
                    Ok(live) => live,
                    Err(err) => {
                        failure.get_or_insert(err);
                        false
                    }
                };
                records.push(RecordInfo {
                    offset: offset as u64,
                    kind: match record.kind {
                        RecordKind::Put => "put",
                        RecordKind::Tombstone => "tombstone",
                        RecordKind::Marker => "marker",
                    },
                    version: record.version,
                    log_index: record.log_index,
                    key: record.key.to_vec(),
                    value_bytes: record.value.len() as u64,
                    live,
                });
            }
        });
        failure.map_or(Ok(records), Err)
    }
}

fn segment_info(reads: &ReadPath, segment: &Segment) -> Result<SegmentInfo> {
    {
        let bytes = segment_bytes(reads, segment);
        let (mut records, mut live_records, mut live_bytes) = (0u64, 0u64, 0u64);
        let mut failure = None;
        scan_segment(bytes, |command| {
            for &(offset, record) in command {
                records += 1;
                match is_newest(reads, segment, record.key, offset, record.kind) {
                    Ok(true) => {
                        live_records += 1;
                        live_bytes += record.len as u64;
                    }
                    Ok(false) => {}
                    Err(err) => {
                        failure.get_or_insert(err);
                    }
                }
            }
        });
        if let Some(err) = failure {
            return Err(err);
        }
        let meta = segment.meta();
        Ok(SegmentInfo {
            file: segment_file_name(segment.id()),
            id: segment.id(),
            rank: segment.header.rank,
            compacted: segment.header.compacted,
            active: segment.active,
            bytes: bytes.len() as u64,
            records,
            live_records,
            live_bytes,
            dead_bytes: (bytes.len() as u64).saturating_sub(live_bytes),
            metadata_bytes: meta.map_or(0, |m| m.file_len()),
            bloom_filter_bytes: meta.map_or(0, |m| m.header().bloom_len),
        })
    }
}

/// The segment's written bytes (the active one's up to its tail).
fn segment_bytes<'s>(reads: &ReadPath, segment: &'s Segment) -> &'s [u8] {
    {
        if segment.active {
            let written = reads.active_bytes.load(Ordering::Acquire) as usize;
            segment.map.written_prefix(written.max(SEGMENT_HEADER_LEN))
        } else {
            segment.map.bytes()
        }
    }
}

fn is_newest(
    reads: &ReadPath,
    segment: &Segment,
    key: &[u8],
    offset: usize,
    kind: RecordKind,
) -> Result<bool> {
    if kind != RecordKind::Put {
        return Ok(false);
    }
    let table = reads.segments();
    let newest: Option<IndexEntry> = reads.newest_record(key, &table)?;
    Ok(newest.is_some_and(|n| n.segment_id == segment.id() && n.offset as usize == offset))
}
