//! What `hightower inspect` shows: per segment, its size, records, live and
//! dead bytes and metadata; per record of one segment, what it is and
//! whether it is still its key's newest.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::Storage;
use super::segments::Segment;
use crate::error::{ConfigError, Result};
use crate::index::IndexEntry;
use crate::log_segment::{RecordKind, SEGMENT_HEADER_LEN, scan_segment, segment_file_name};

/// One segment, as `inspect` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SegmentInfo {
    pub file: String,
    pub id: u32,
    /// Position of its data in the log (see `docs/format.md`).
    pub rank: u32,
    pub compacted: bool,
    pub active: bool,
    pub bytes: u64,
    pub records: u64,
    /// Records that are their key's newest value (tombstones excluded).
    pub live_records: u64,
    pub live_bytes: u64,
    /// Everything else: overwritten records, tombstones, markers, headers.
    pub dead_bytes: u64,
    /// Size of `seg-N.meta` (0 for the active segment, which has none).
    pub metadata_bytes: u64,
    pub bloom_filter_bytes: u64,
}

/// One record of a segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordInfo {
    pub offset: u64,
    pub kind: &'static str,
    pub version: u64,
    pub log_index: u64,
    pub key: Vec<u8>,
    pub value_bytes: u64,
    /// Still its key's newest record (a put that has not been overwritten or deleted).
    pub live: bool,
}

impl Storage {
    /// Every open segment with exact live and dead bytes. Costs a lookup
    /// per record: an operator's tool, not for hot paths.
    pub fn inspect_segments(&self) -> Result<Vec<SegmentInfo>> {
        let segments: Vec<Arc<Segment>> = self.segments().iter().cloned().collect();
        segments.iter().map(|s| self.segment_info(s)).collect()
    }

    /// The records of segment `id`, in log order.
    pub fn inspect_records(&self, id: u32) -> Result<Vec<RecordInfo>> {
        let Some(segment) = self.segments().get(id).cloned() else {
            return Err(ConfigError {
                field: "segment",
                reason: format!("no segment {id} ({} does not exist)", segment_file_name(id)),
            }
            .into());
        };
        let bytes = self.segment_bytes(&segment);
        let mut records = Vec::new();
        let mut failure = None;
        scan_segment(bytes, |command| {
            for &(offset, record) in command {
                let live = match self.is_newest(&segment, record.key, offset, record.kind) {
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

    fn segment_info(&self, segment: &Segment) -> Result<SegmentInfo> {
        let bytes = self.segment_bytes(segment);
        let (mut records, mut live_records, mut live_bytes) = (0u64, 0u64, 0u64);
        let mut failure = None;
        scan_segment(bytes, |command| {
            for &(offset, record) in command {
                records += 1;
                match self.is_newest(segment, record.key, offset, record.kind) {
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

    /// The segment's written bytes (the active one's up to its tail).
    fn segment_bytes<'s>(&self, segment: &'s Segment) -> &'s [u8] {
        if segment.active {
            let written = self.active_bytes.load(Ordering::Acquire) as usize;
            segment.map.written_prefix(written.max(SEGMENT_HEADER_LEN))
        } else {
            segment.map.bytes()
        }
    }

    fn is_newest(
        &self,
        segment: &Segment,
        key: &[u8],
        offset: usize,
        kind: RecordKind,
    ) -> Result<bool> {
        if kind != RecordKind::Put {
            return Ok(false);
        }
        let table = self.segments();
        let newest: Option<IndexEntry> = self.newest_record(key, &table)?;
        Ok(newest.is_some_and(|n| n.segment_id == segment.id() && n.offset as usize == offset))
    }
}
