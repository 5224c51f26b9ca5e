//! Salvage: a damaged segment rewritten with only its intact commands, the
//! original kept beside it, and every dropped byte range reported.

use std::os::unix::fs::FileExt;

use super::{OpenReport, SalvageNote};
use crate::data_dir::DataDir;
use crate::error::{Error, IoContext, Result};
use crate::fault::IoOp;
use crate::log_segment::{
    MappedSegment, SEGMENT_HEADER_LEN, SegmentHeader, check_segment_header, encode_header,
    scan_segment, segment_file_name,
};
use crate::segment_meta::meta_file_name;

/// Rewrites segment `id` with only its intact commands if it has damage
/// other than a torn tail of the newest segment.
pub(super) fn salvage_if_damaged(
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
