//! Sealed segments at open: loaded with their metadata, which is rebuilt
//! from the segment when missing or unusable.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::OpenReport;
use crate::config::Config;
use crate::data_dir::DataDir;
use crate::error::Result;
use crate::log_segment::{MappedSegment, SEGMENT_HEADER_LEN, SegmentHeader, segment_file_name};
use crate::segment_meta::{SegmentMeta, UNKNOWN_LIVE_KEYS};
use crate::storage::segments::{Segment, SegmentTable};

/// Opens a sealed segment with its metadata, rebuilding the metadata from
/// the segment (a full, checking scan) if it is missing or unusable.
pub(super) fn open_sealed(
    dir: &DataDir,
    config: &Config,
    header: SegmentHeader,
    report: &mut OpenReport,
    writable: bool,
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
    let mut saved = loaded.is_some();
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
            if !writable {
                report.metadata_unsaved += 1;
            } else {
                // Opening must not depend on room to write: on a full disk
                // the rebuilt metadata serves from memory, and maintenance
                // writes it once it can.
                match crate::segment_meta::write(dir, header.id, &bytes) {
                    Ok(()) => saved = true,
                    Err(err) => {
                        report.metadata_unsaved += 1;
                        tracing::warn!(segment = %name, error = %err, "rebuilt segment metadata kept in memory: writing it failed");
                    }
                }
            }
            let meta = SegmentMeta::from_built(bytes, segment.map.bytes(), header)?;
            report.records += meta.header().records;
            meta
        }
    };
    segment.meta_saved.store(saved, Ordering::Relaxed);
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
