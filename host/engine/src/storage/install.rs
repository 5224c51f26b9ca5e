//! Installing another store's state into this running one (a replica that
//! fell behind installs its leader's snapshot). The image is checked
//! completely before anything changes, readers see the old state or the
//! new one, never a mix, and a crash at any step leaves one or the other.
//!
//! Steps (`docs/format.md` has them too):
//!
//! 1. Stream the image into new segments written whole (compacted, all of
//!    one rank reserved below every id used from here on), each fsynced and
//!    given its metadata. They are not in the manifest: a crash now leaves
//!    leftovers that open removes, and the old state.
//! 2. Check that they hold one key per image entry (a duplicate key means a
//!    damaged image). The image's trailer was checked when its last entry
//!    was read. Any failure so far removes the new files: the store is
//!    unchanged.
//! 3. Holding the maintenance turn and the writer lock (no compaction, no
//!    commit meanwhile), create a new, empty active segment, then rewrite
//!    the manifest to the new segments and it: the commit point.
//! 4. Switch what readers and the writer use at once (the read path's
//!    table, hot index and counters; the writer's segment and counters).
//!    The image's last log index becomes the applied index.
//! 5. Delete the old segments' files. Readers still holding them (a
//!    snapshot being written) keep their maps; the space is freed when the
//!    last one goes.

use std::sync::Arc;

use super::maintenance::Maintainer;
use super::merge;
use super::output::{self, OutputBuilder, OutputSpec};
use super::read::Published;
use super::segments::{Segment, SegmentTable};
use super::writer::preallocate_bytes_for;
use crate::error::{Corruption, Error, Result};
use crate::index::IndexEntry;
use crate::log_segment::{
    ActiveSegment, MappedSegment, SegmentHeader, encoded_record_len, segment_file_name,
};
use crate::segment_meta::meta_file_name;

/// One record of the state being installed; the source refills it.
#[derive(Debug, Default)]
pub(crate) struct InstallRecord {
    pub version: u64,
    pub log_index: u64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// The counters of the state being installed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InstallCounters {
    /// Highest version the source had assigned.
    pub last_version: u64,
    /// Every command up to this log index is in the state.
    pub last_log_index: u64,
    /// Records (one per key) the source will give.
    pub entries: u64,
}

impl Maintainer<'_> {
    /// Installs the state `next` yields (records in log order, `false` once
    /// the source is exhausted and checked) with `counters`.
    pub fn install(
        &self,
        counters: InstallCounters,
        next: &mut dyn FnMut(&mut InstallRecord) -> Result<bool>,
    ) -> Result<()> {
        // A poisoned or read-only store refuses before anything is written.
        self.lock_writer().check_writable()?;
        let mut created = Vec::new();
        let staged = self
            .write_state(counters, next, &mut created)
            .and_then(|outputs| {
                check_one_key_per_entry(&outputs, counters.entries).map(|()| outputs)
            });
        let outputs = match staged {
            Ok(outputs) => outputs,
            Err(err) => {
                output::remove_unswapped(self.files, &created);
                return Err(err);
            }
        };
        self.switch_to(outputs, counters, &mut created)
    }

    /// Step 1: the state as new segments, not yet in the manifest.
    fn write_state(
        &self,
        counters: InstallCounters,
        next: &mut dyn FnMut(&mut InstallRecord) -> Result<bool>,
        created: &mut Vec<u32>,
    ) -> Result<Vec<Arc<Segment>>> {
        // One rank for them all, below the new active segment's: an id
        // reserved (and never used for a file) gives it.
        let spec = OutputSpec {
            rank: self.files.allocate_segment_id()?,
            live_keys_after: counters.entries,
        };
        let segment_size = self.files.config.segment_size_bytes;
        let mut outputs = Vec::new();
        let mut pending = OutputBuilder::default();
        let mut record = InstallRecord::default();
        while next(&mut record)? {
            let len = encoded_record_len(record.key.len(), record.value.len()) as u64;
            if !pending.is_empty() && pending.len_bytes() + len > segment_size {
                let full = std::mem::take(&mut pending);
                outputs.push(output::write(self.files, full, &spec, None, created)?.0);
            }
            let from = IndexEntry {
                version: record.version,
                segment_id: 0,
                offset: 0,
                len: 0,
                tombstone: false,
            };
            pending.push(from, record.log_index, &record.key, Some(&record.value));
        }
        // The last segment carries the counters: the versions of deleted
        // and overwritten records, and commands that wrote nothing, are not
        // in the state, but the store continues after them.
        let counters = (counters.last_version, counters.last_log_index);
        if !pending.is_empty() || counters != (0, 0) {
            outputs.push(output::write(self.files, pending, &spec, Some(counters), created)?.0);
        }
        Ok(outputs)
    }

    /// Steps 3 to 5.
    fn switch_to(
        &self,
        outputs: Vec<Arc<Segment>>,
        counters: InstallCounters,
        created: &mut Vec<u32>,
    ) -> Result<()> {
        let mut writer = self.lock_writer();
        writer.check_writable()?;
        let prepared = self.prepare_active(created);
        let (active, active_map) = match prepared {
            Ok(prepared) => prepared,
            Err(err) => {
                output::remove_unswapped(self.files, created);
                return Err(err);
            }
        };
        let old: Vec<u32> = self.reads.segments().iter().map(|s| s.id()).collect();
        let committed = self.files.change_segments(|set| {
            set.clear();
            set.extend(outputs.iter().map(|s| s.id()));
            set.insert(active.id());
        });
        if let Err(err) = committed {
            // The new manifest may or may not have reached the disk (a
            // failed fsync after the rename): whichever did decides at the
            // next open which files are leftovers, so none is removed now,
            // and nothing more is written to a state that may be gone.
            writer.poison(&err);
            return Err(err);
        }
        let mut table = SegmentTable::default();
        for segment in outputs {
            table.insert(segment);
        }
        let header = SegmentHeader {
            id: active.id(),
            rank: active.id(),
            compacted: false,
        };
        table.insert(Arc::new(Segment::new_active(active_map, header)));
        let published = Published {
            committed_version: counters.last_version,
            hot_complete: table.cold().is_empty()
                && self.files.config.hot_index_shard_max_entries().is_none(),
            active_id: active.id(),
            active_bytes: active.write_pos(),
        };
        self.reads.install(table, published, counters.entries);
        writer.install(active, counters.last_version, counters.last_log_index);
        drop(writer);
        tracing::info!(
            keys = counters.entries,
            last_log_index = counters.last_log_index,
            "snapshot installed"
        );
        self.remove_old(&old);
        Ok(())
    }

    /// The new active segment and its map, before the commit point (so
    /// nothing after it can fail for want of them). Its id goes into
    /// `created`: until the manifest lists it, it is a leftover.
    fn prepare_active(&self, created: &mut Vec<u32>) -> Result<(ActiveSegment, MappedSegment)> {
        let id = self.files.allocate_segment_id()?;
        created.push(id);
        let config = &self.files.config;
        let active = ActiveSegment::create(&self.files.dir, id, preallocate_bytes_for(config))?;
        let map = MappedSegment::map(active.file(), id, config.active_map_bytes())?;
        Ok((active, map))
    }

    /// Step 5, best effort: a file that stays is an unlisted leftover the
    /// next open removes.
    fn remove_old(&self, old: &[u32]) {
        let dir = &self.files.dir;
        for &id in old {
            for name in [segment_file_name(id), meta_file_name(id)] {
                if dir.exists(&name)
                    && let Err(err) = dir.remove(&name)
                {
                    tracing::warn!(file = %name, error = %err, "removing a replaced segment failed; the next open removes it");
                }
            }
        }
        if let Err(err) = dir.sync() {
            tracing::warn!(error = %err, "fsync of the data directory after removing replaced segments failed");
        }
    }
}

/// Step 2: as many distinct keys as the state had entries.
fn check_one_key_per_entry(outputs: &[Arc<Segment>], entries: u64) -> Result<()> {
    let mut table = SegmentTable::default();
    for segment in outputs {
        table.insert(segment.clone());
    }
    let mut distinct = 0u64;
    merge::live_entries(
        &[],
        &table,
        false,
        merge::Range {
            prefix: &[],
            after: None,
        },
        usize::MAX,
        |_, _| distinct += 1,
    )?;
    if distinct != entries {
        return Err(Error::Corruption(Corruption {
            file: "snapshot image".into(),
            offset: 0,
            reason: format!(
                "{entries} entries but {distinct} distinct keys: a key appears more than once"
            ),
        }));
    }
    Ok(())
}
