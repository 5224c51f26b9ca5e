//! `hightower verify`: every record of every segment checked, nothing
//! changed.

use std::sync::Arc;

use serde::Serialize;

use super::active::{TailKind, torn_tail_bytes};
use super::headers::{active_segment_id, read_header};
use super::order::VersionOrder;
use crate::config::Config;
use crate::data_dir::DataDir;
use crate::error::{ConfigError, Error, Result};
use crate::log_segment::{
    MappedSegment, SegmentHeader, check_segment_header, scan_segment, segment_file_name,
};
use crate::manifest::{MANIFEST_FILE_NAME, Manifest};
use crate::segment_meta::SegmentMeta;

/// The health of one segment file, as `hightower verify` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SegmentVerification {
    /// The segment's file.
    pub file: String,
    /// Its size.
    pub bytes: u64,
    /// Intact records.
    pub records: u64,
    /// Intact commands.
    pub commands: u64,
    /// What was found.
    pub verdict: SegmentVerdict,
    /// The state of the segment's metadata file.
    pub metadata: String,
}

/// The health of one segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SegmentVerdict {
    /// Every record intact.
    Ok,
    /// The active segment ends in damage with nothing valid after it; open
    /// cuts it (keeping the bytes beside the segment).
    TornTail {
        /// Where the intact records end.
        offset: u64,
        /// Bytes after it that held data.
        bytes: u64,
        /// Whether it is an incomplete write or cannot be told from damage.
        kind: TailKind,
    },
    /// A file the manifest does not list: left by an interrupted operation
    /// (a compaction output not swapped in, a segment created but not yet
    /// used); the next open removes it.
    Unlisted,
    /// Damage open refuses (salvage drops the listed ranges).
    Corrupt {
        /// Where the first damage starts.
        offset: u64,
        /// What the first damage is.
        reason: String,
        /// How many separate damaged ranges the segment has.
        damaged_ranges: u64,
    },
}

impl SegmentVerdict {
    /// Damage a strict open refuses.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, SegmentVerdict::Corrupt { .. })
    }
}

fn missing(id: u32, generation: u64) -> SegmentVerification {
    SegmentVerification {
        file: segment_file_name(id),
        bytes: 0,
        records: 0,
        commands: 0,
        verdict: SegmentVerdict::Corrupt {
            offset: 0,
            reason: format!(
                "missing: listed in {MANIFEST_FILE_NAME} (generation {generation}); its records are lost unless the file is restored"
            ),
            damaged_ranges: 1,
        },
        metadata: String::new(),
    }
}

fn unreadable_manifest(err: crate::error::Error) -> SegmentVerification {
    SegmentVerification {
        file: MANIFEST_FILE_NAME.into(),
        bytes: 0,
        records: 0,
        commands: 0,
        verdict: SegmentVerdict::Corrupt {
            offset: 0,
            reason: format!("cannot tell which segments make up the store: {err}"),
            damaged_ranges: 1,
        },
        metadata: String::new(),
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
    let dir = DataDir::open_read_only(&config.data_dir, Arc::new(crate::fault::NoFaults))?;
    let present = dir.segment_ids()?;
    let mut results = Vec::with_capacity(present.len());
    let manifest = match Manifest::load(&dir) {
        Ok(manifest) => manifest,
        Err(err) => {
            results.push(unreadable_manifest(err));
            None
        }
    };
    let listed = |id: &u32| manifest.as_ref().is_none_or(|m| m.segments.contains(id));
    if let Some(manifest) = &manifest {
        for &id in manifest
            .segments
            .iter()
            .filter(|id| present.binary_search(id).is_err())
        {
            results.push(missing(id, manifest.generation));
        }
    }
    for &id in present.iter().filter(|id| !listed(id)) {
        results.push(SegmentVerification {
            file: segment_file_name(id),
            bytes: 0,
            records: 0,
            commands: 0,
            verdict: SegmentVerdict::Unlisted,
            metadata: String::new(),
        });
    }
    let ids: Vec<u32> = present.iter().copied().filter(listed).collect();
    let headers: Vec<SegmentHeader> = ids
        .iter()
        .filter_map(|&id| read_header(&dir, id).ok())
        .collect();
    let active_id = active_segment_id(&headers);
    // Versions grow through the writer's segments in id order, and within
    // each compaction output.
    let mut order = VersionOrder::new();
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
        let mut own_order = VersionOrder::new();
        let order = if header.compacted {
            &mut own_order
        } else {
            &mut order
        };
        let scan = scan_segment(bytes, |command| order.command(command));
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
        if let Err(Error::Corruption(c)) = order.check(&name) {
            result.verdict = SegmentVerdict::Corrupt {
                offset: c.offset,
                reason: c.reason,
                damaged_ranges: 1,
            };
        } else if let Some(first) = scan.damage.first() {
            result.verdict = if is_last && scan.is_torn_tail_only() {
                SegmentVerdict::TornTail {
                    offset: scan.valid_end as u64,
                    bytes: torn_tail_bytes(bytes, scan.valid_end),
                    kind: TailKind::of(first.reason),
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
