//! Unfinished work of an earlier process, removed at open.

use super::headers::read_header;
use crate::data_dir::DataDir;
use std::os::unix::fs::FileExt;

use crate::error::{IoContext, Result};
use crate::log_segment::{SEGMENT_HEADER_LEN, segment_file_name};
use crate::segment_meta::meta_file_name;

/// Removes unfinished work of an earlier process: salvage rewrites,
/// temporary metadata and compaction outputs, and metadata whose segment
/// is gone (compaction deletes a segment before its metadata).
pub(super) fn remove_leftovers(dir: &DataDir) -> Result<()> {
    let segment_ids = dir.segment_ids()?;
    let mut removed = false;
    for name in dir.file_names()? {
        let orphan_meta = name
            .strip_prefix("seg-")
            .and_then(|rest| rest.strip_suffix(".meta"))
            .and_then(|digits| digits.parse::<u32>().ok())
            .is_some_and(|id| name == meta_file_name(id) && !segment_ids.contains(&id));
        if name.ends_with(".salvage") || name.ends_with(".tmp") || orphan_meta {
            tracing::warn!(file = %name, "removing a file left by an interrupted operation");
            dir.remove(&name)?;
            removed = true;
        }
    }
    if removed {
        dir.sync()?;
    }
    Ok(())
}

/// A crash between creating a segment and syncing its header leaves an
/// empty or all-zero file that never held a record. Such a file is removed
/// when it is newer than every segment the writer filled (compaction
/// outputs, written whole, may have higher ids).
/// A read-only open (`writable` false) leaves them, and ignores them.
pub(super) fn remove_unfinished_creations(
    dir: &DataDir,
    mut ids: Vec<u32>,
    writable: bool,
) -> Result<Vec<u32>> {
    let mut kept = Vec::with_capacity(ids.len());
    while let Some(id) = ids.pop() {
        let name = segment_file_name(id);
        let file = dir.open_read(&name)?;
        let mut head = [0u8; SEGMENT_HEADER_LEN];
        let len = file
            .read_at(&mut head, 0)
            .context(|| format!("read {name}"))?;
        let unfinished = len < SEGMENT_HEADER_LEN || head.iter().all(|&b| b == 0);
        let newer_all_compacted = kept
            .iter()
            .all(|&newer: &u32| read_header(dir, newer).is_ok_and(|h| h.compacted));
        if unfinished && newer_all_compacted {
            if writable {
                tracing::warn!(segment = %name, "removing a segment whose creation a crash interrupted");
                dir.remove(&name)?;
                dir.sync()?;
            }
            continue;
        }
        kept.push(id);
    }
    kept.reverse();
    Ok(kept)
}
