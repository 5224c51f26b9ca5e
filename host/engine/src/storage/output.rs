//! Segments written whole: compaction outputs and the segments of an
//! installed snapshot. Each is built in memory, written under a temporary
//! name, fsynced and renamed, then given its metadata (which scans it: every
//! record is checked once more before anything points at it). Until the
//! manifest lists it, an output is a leftover that open removes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::files::Files;
use super::segments::Segment;
use crate::error::{IoContext, Result};
use crate::fault::IoOp;
use crate::index::IndexEntry;
use crate::log_segment::{
    MappedSegment, RecordSpec, SEGMENT_HEADER_LEN, SegmentHeader, encode_header, encode_marker,
    encode_record, segment_file_name,
};
use crate::segment_meta::meta_file_name;

/// What every output of one batch of outputs shares.
pub(super) struct OutputSpec {
    /// Their place in the log's order (see `docs/format.md`).
    pub rank: u32,
    /// The store's live key count after them, for the next open.
    pub live_keys_after: u64,
}

/// One output segment being assembled in memory.
pub(super) struct OutputBuilder {
    bytes: Vec<u8>,
    /// (offset, len, the record's entry elsewhere) per record.
    placed: Vec<(u32, u32, IndexEntry)>,
    record_bytes: u64,
}

impl Default for OutputBuilder {
    fn default() -> Self {
        OutputBuilder {
            bytes: vec![0; SEGMENT_HEADER_LEN],
            placed: Vec::new(),
            record_bytes: 0,
        }
    }
}

impl OutputBuilder {
    pub fn is_empty(&self) -> bool {
        self.placed.is_empty()
    }

    /// Bytes so far, the segment header included.
    pub fn len_bytes(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Appends one record (`value` `None`: a tombstone) as a command of its
    /// own: batches are long committed, and a copy of a batch's middle
    /// record must not look like a torn batch to the scanner. `from` is
    /// the record's entry where it came from (its version and kind count);
    /// returns the record's length.
    pub fn push(
        &mut self,
        from: IndexEntry,
        log_index: u64,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> u32 {
        let offset = self.bytes.len() as u32;
        let len = encode_record(
            &mut self.bytes,
            &RecordSpec {
                version: from.version,
                log_index,
                key,
                value,
                start_of_command: true,
                end_of_command: true,
            },
        ) as u32;
        self.placed.push((offset, len, from));
        self.record_bytes += u64::from(len);
        len
    }
}

/// Writes `output` as a new segment with a fresh id, ending with a marker
/// for `counters` (version, log index) if given, and loads it back with its
/// metadata. Returns the segment and the new entry of every record, in the
/// order they were pushed. The id goes into `created` first, so a caller
/// can remove what a failure left.
pub(super) fn write(
    files: &Files,
    mut output: OutputBuilder,
    spec: &OutputSpec,
    counters: Option<(u64, u64)>,
    created: &mut Vec<u32>,
) -> Result<(Arc<Segment>, Vec<IndexEntry>)> {
    if let Some((version, log_index)) = counters {
        encode_marker(&mut output.bytes, version, log_index);
    }
    let id = files.allocate_segment_id()?;
    created.push(id);
    let header = SegmentHeader {
        id,
        rank: spec.rank,
        compacted: true,
    };
    output.bytes[..SEGMENT_HEADER_LEN].copy_from_slice(&encode_header(header));
    let name = segment_file_name(id);
    let temp = format!("{name}.tmp");
    let dir = &files.dir;
    let file = dir.create_new(&temp)?;
    dir.faults()
        .check(IoOp::Write, &temp)
        .context(|| format!("write {temp}"))?;
    std::os::unix::fs::FileExt::write_all_at(&file, &output.bytes, 0)
        .context(|| format!("write {temp}"))?;
    dir.faults()
        .check(IoOp::SyncFile, &temp)
        .context(|| format!("fsync {temp}"))?;
    file.sync_all().context(|| format!("fsync {temp}"))?;
    dir.rename(&temp, &name)?;
    dir.sync()?;
    let map = MappedSegment::map(&file, id, 0)?;
    let segment = Segment::new(map, header);
    segment
        .live_keys_after
        .store(spec.live_keys_after, Ordering::Relaxed);
    let meta = files.write_meta(&segment)?;
    let entries = output
        .placed
        .iter()
        .map(|&(offset, len, from)| IndexEntry {
            segment_id: id,
            offset,
            len,
            ..from
        })
        .collect();
    let tombstone_bytes = meta.header().tombstone_bytes;
    let map = MappedSegment::map(&file, id, 0)?;
    let segment = Arc::new(Segment::with_meta(map, header, Arc::new(meta)));
    segment.dead_bytes.store(
        segment.len() - SEGMENT_HEADER_LEN as u64 - (output.record_bytes - tombstone_bytes),
        Ordering::Relaxed,
    );
    segment.audited.store(true, Ordering::Relaxed);
    Ok((segment, entries))
}

/// After a failure before the outputs were listed: removes the files of
/// the outputs in `created` (never another file: the writer may be
/// creating a segment). Best effort: whatever stays is an unlisted
/// leftover the next open removes.
pub(super) fn remove_unswapped(files: &Files, created: &[u32]) {
    for &id in created {
        let segment = segment_file_name(id);
        let meta = meta_file_name(id);
        for name in [
            format!("{meta}.tmp"),
            meta,
            format!("{segment}.tmp"),
            segment,
        ] {
            if files.dir.exists(&name) {
                let _ = files.dir.remove(&name);
            }
        }
    }
    let _ = files.dir.sync();
}
