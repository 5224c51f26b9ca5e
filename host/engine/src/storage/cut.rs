//! A consistent cut: the store frozen at one log index, for snapshots.

use std::sync::atomic::Ordering;

use super::merge;
use super::read::{ReadPath, read_value};
use super::segments::SegmentTable;
use crate::error::{Corruption, Error, Result};
use crate::index::{IndexEntry, RecordKeys};
use crate::log_segment::{Record, segment_file_name};

/// A frozen view of the store; see [`super::Storage::consistent_cut`].
/// Holds a copy of the hot index's entries (24 bytes each) and the
/// segments' maps, which stay readable (and their files' space allocated)
/// until the cut is dropped.
pub struct ConsistentCut {
    hot: Vec<IndexEntry>,
    segments: SegmentTable,
    hot_complete: bool,
    /// Every command up to this log index is in the cut.
    pub last_log_index: u64,
    /// Highest version assigned.
    pub last_version: u64,
    /// Keys with a live value in the cut.
    pub live_keys: u64,
}

impl ConsistentCut {
    /// Copies what the cut needs; the caller holds the writer lock so that
    /// nothing is published meanwhile.
    pub(super) fn take(reads: &ReadPath, last_log_index: u64, last_version: u64) -> Self {
        let mut hot = Vec::with_capacity(reads.index.len() as usize);
        reads.index.for_each(|entry| hot.push(entry));
        ConsistentCut {
            hot,
            segments: reads.segments().clone(),
            hot_complete: reads.hot_complete.load(Ordering::Acquire),
            last_log_index,
            last_version,
            live_keys: reads.live_keys.load(Ordering::Relaxed),
        }
    }

    /// The whole record an entry of this cut names, verified.
    pub fn read(&self, entry: &IndexEntry) -> Result<Record<'_>> {
        let unreadable = |reason: &str| {
            Error::Corruption(Corruption {
                file: segment_file_name(entry.segment_id),
                offset: u64::from(entry.offset),
                reason: reason.into(),
            })
        };
        let segment = self
            .segments
            .get(entry.segment_id)
            .ok_or_else(|| unreadable("an entry names a segment missing from the cut"))?;
        let key = self
            .segments
            .key_of(entry)
            .ok_or_else(|| unreadable("unreadable key"))?;
        segment
            .map
            .read(entry.offset, entry.len, key, entry.version)
    }

    /// Calls `visit` with every live key, its entry and its value, in key
    /// order.
    pub fn for_each_live(
        &self,
        mut visit: impl FnMut(&[u8], IndexEntry, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut failure = None;
        merge::live_entries(
            &self.hot,
            &self.segments,
            self.hot_complete,
            merge::Range {
                prefix: &[],
                after: None,
            },
            usize::MAX,
            |key, entry| {
                if failure.is_some() {
                    return;
                }
                let result = read_value(&self.segments, &entry, key)
                    .and_then(|value| visit(key, entry, value));
                if let Err(err) = result {
                    failure = Some(err);
                }
            },
        )?;
        failure.map_or(Ok(()), Err)
    }
}
