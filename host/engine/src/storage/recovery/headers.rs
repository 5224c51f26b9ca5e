//! Segment headers, and which segment is the writer's active one: what
//! opening and verifying a store both need to know first.

use std::os::unix::fs::FileExt;

use super::OpenReport;
use super::salvage::salvage_if_damaged;
use crate::config::{Config, RecoveryMode};
use crate::data_dir::DataDir;
use crate::error::{IoContext, Result};
use crate::log_segment::{
    SEGMENT_HEADER_LEN, SegmentHeader, check_segment_header, segment_file_name,
};

/// Reads and checks the header of segment `id`.
pub(super) fn read_header(dir: &DataDir, id: u32) -> Result<SegmentHeader> {
    let name = segment_file_name(id);
    let file = dir.open_read(&name)?;
    let mut head = [0u8; SEGMENT_HEADER_LEN];
    let len = file
        .read_at(&mut head, 0)
        .context(|| format!("read {name}"))?;
    check_segment_header(&head[..len], id, &name)
}

/// The writer's active segment: the newest segment the writer created.
/// Compaction outputs, which may have higher ids, never are.
pub(super) fn active_segment_id<'h>(
    headers: impl IntoIterator<Item = &'h SegmentHeader>,
) -> Option<u32> {
    headers
        .into_iter()
        .filter(|h| !h.compacted)
        .map(|h| h.id)
        .max()
}

/// Checks every segment header (salvaging damaged segments first in
/// salvage mode).
pub(super) fn read_headers(
    dir: &DataDir,
    ids: &[u32],
    config: &Config,
    report: &mut OpenReport,
) -> Result<Vec<SegmentHeader>> {
    let mut headers = Vec::with_capacity(ids.len());
    let newest_normal = ids.last().copied();
    for &id in ids {
        if config.recovery == RecoveryMode::Salvage {
            // Only the newest id can be the active segment; a compaction
            // output never has a torn tail, but salvage treats both alike.
            salvage_if_damaged(dir, id, Some(id) == newest_normal, report)?;
        }
        headers.push(read_header(dir, id)?);
    }
    Ok(headers)
}
