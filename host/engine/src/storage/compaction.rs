//! Compaction: copies the live records of a run of sealed segments into new
//! segments and swaps them in, without blocking reads or writes.
//!
//! The policy ([`plan_compaction`]) is a pure function of the segments'
//! sizes and dead bytes. The worker ([`Storage::compact_all`] on demand,
//! the maintenance round otherwise):
//!
//! 1. keeps each input record that is still its key's newest (a tombstone
//!    only if a segment outside the run, not newer than it, may hold the
//!    key), and each record replaced only from the active segment;
//! 2. writes them, in version order, to new segments with fresh ids, the
//!    run's highest rank and the compacted flag (temporary name, fsync,
//!    rename, directory fsync), ending with a marker that carries the run's
//!    highest version and log index, and writes their metadata;
//! 3. marks the inputs retiring (lookups stop copying their entries into the
//!    hot index), adds the outputs to the segment table, and redirects each
//!    hot entry that still points at a copied record (a write since then
//!    wins); entries of dropped tombstones are removed;
//! 4. fsyncs the active segment, without holding the writer lock (a record
//!    was dropped because a newer one exists: that one must be durable
//!    first), removes the inputs from the table, and deletes their files
//!    oldest first, fsyncing the directory after each. A reader still
//!    holding an input's map keeps reading it: the file's space is freed
//!    when the last map goes.
//!
//! Crash safety comes from the order: until the renames, the outputs are
//! temporary files that open removes; afterwards every key's newest record
//! exists in the outputs or in a remaining input, and the inputs that
//! remain are the newest ones, so a tombstone that was dropped can only
//! have shadowed records in inputs already deleted.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::maintenance::Maintainer;
use super::output::{self, OutputBuilder, OutputSpec};
use super::segments::{Segment, SegmentTable};
use crate::error::{Error, Result};
use crate::index::{IndexEntry, RecordKeys};
use crate::log_segment::segment_file_name;
use crate::metrics::{Counter, MetricsHook};
use crate::segment_meta::{key_hash, meta_file_name};

/// A sealed segment as the policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SegmentUsage {
    pub id: u32,
    pub rank: u32,
    pub bytes: u64,
    pub dead_bytes: u64,
}

/// Segments to compact together: consecutive in rank order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactionPlan {
    pub inputs: Vec<u32>,
}

/// Picks the run of consecutive sealed segments (`sealed` sorted by rank)
/// that reclaims the most bytes, among runs of at most `max_input_bytes`
/// (or a single segment) whose dead fraction is at least `dead_ratio`.
/// `None` if no run qualifies. Pure: no I/O, no clock.
pub fn plan_compaction(
    sealed: &[SegmentUsage],
    dead_ratio: f64,
    max_input_bytes: u64,
) -> Option<CompactionPlan> {
    let mut best: Option<(u64, usize, usize)> = None;
    for start in 0..sealed.len() {
        let (mut bytes, mut dead) = (0u64, 0u64);
        for (end, segment) in sealed.iter().enumerate().skip(start) {
            bytes += segment.bytes;
            dead += segment.dead_bytes;
            if end > start && bytes > max_input_bytes {
                break;
            }
            let qualifies = dead > 0 && dead as f64 >= dead_ratio * bytes as f64;
            if qualifies && best.is_none_or(|(most, _, _)| dead > most) {
                best = Some((dead, start, end));
            }
        }
    }
    best.map(|(_, start, end)| CompactionPlan {
        inputs: sealed[start..=end].iter().map(|s| s.id).collect(),
    })
}

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CompactionReport {
    /// Ids of the segments compacted (now deleted).
    pub inputs: Vec<u32>,
    /// Ids of the segments written.
    pub outputs: Vec<u32>,
    /// Bytes of the inputs.
    pub input_bytes: u64,
    /// Bytes of the outputs.
    pub output_bytes: u64,
    /// Records copied.
    pub records_kept: u64,
    /// Tombstones no longer needed, dropped.
    pub tombstones_dropped: u64,
}

/// A tombstone compaction drops: its key and its entry.
type Dropped = (Vec<u8>, IndexEntry);

/// A record to copy: where it is now and what it is.
struct Kept {
    from: IndexEntry,
    key_range: (usize, usize),
    value_range: (usize, usize),
    log_index: u64,
    input: usize,
}

impl Maintainer<'_> {
    /// Runs one compaction plan.
    pub fn compact(&self, plan: &CompactionPlan) -> Result<CompactionReport> {
        let inputs = self.inputs_of(plan)?;
        let run_rank = inputs
            .iter()
            .map(|s| s.header.rank)
            .max()
            .expect("a plan has inputs");
        let kept = self.live_records(&inputs, run_rank)?;
        let mut created = Vec::new();
        let (outputs, tombstones_dropped) = (
            self.write_outputs(&inputs, &kept.0, run_rank, &mut created),
            kept.1,
        );
        let outputs = match outputs {
            Ok(outputs) => outputs,
            Err(err) => {
                output::remove_unswapped(self.files, &created);
                return Err(err);
            }
        };
        let report = CompactionReport {
            inputs: plan.inputs.clone(),
            outputs: outputs.iter().map(|(s, _)| s.id()).collect(),
            input_bytes: inputs.iter().map(|s| s.len()).sum(),
            output_bytes: outputs.iter().map(|(s, _)| s.len()).sum(),
            records_kept: kept.0.len() as u64,
            tombstones_dropped: tombstones_dropped.len() as u64,
        };
        self.swap_in(&inputs, &outputs, &kept.0, &tombstones_dropped)?;
        self.files.metrics.add(Counter::Compactions, 1);
        self.files.metrics.add(
            Counter::CompactionBytesReclaimed,
            report.input_bytes.saturating_sub(report.output_bytes),
        );
        tracing::info!(
            inputs = ?report.inputs,
            outputs = ?report.outputs,
            input_bytes = report.input_bytes,
            output_bytes = report.output_bytes,
            "compaction done"
        );
        Ok(report)
    }

    fn inputs_of(&self, plan: &CompactionPlan) -> Result<Vec<Arc<Segment>>> {
        let segments = self.reads.segments();
        let mut inputs = Vec::with_capacity(plan.inputs.len());
        for &id in &plan.inputs {
            let segment = segments
                .get(id)
                .filter(|s| s.meta().is_some() && !s.active)
                .ok_or_else(|| {
                    Error::Invariant(format!(
                        "compaction input {id} is not a sealed segment with metadata"
                    ))
                })?;
            inputs.push(segment.clone());
        }
        inputs.sort_by_key(|s| (s.header.rank, s.id()));
        Ok(inputs)
    }

    /// The records of `inputs` that are their key's newest, in version
    /// order, and the tombstones that can go (no segment outside the run
    /// and not newer than it may hold their key).
    fn live_records(
        &self,
        inputs: &[Arc<Segment>],
        run_rank: u32,
    ) -> Result<(Vec<Kept>, Vec<Dropped>)> {
        let input_ids: Vec<u32> = inputs.iter().map(|s| s.id()).collect();
        let table = self.reads.segments().clone();
        let older_unsearchable = table.iter().any(|s| {
            !input_ids.contains(&s.id())
                && s.meta().is_none()
                && s.header.rank <= run_rank
                && !s.active
        });
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        for (input, segment) in inputs.iter().enumerate() {
            let meta = segment.meta().expect("inputs have metadata");
            for found in meta.entries(segment.map.bytes()) {
                let found = found?;
                let this = IndexEntry {
                    version: found.version,
                    segment_id: segment.id(),
                    offset: found.offset,
                    len: found.len,
                    tombstone: found.tombstone,
                };
                let newest = self.reads.newest_record(found.key, &table)?;
                if !newest.is_some_and(|n| n.same_record(&this)) {
                    // Dead only if what replaced it is in a sealed segment.
                    // A record replaced from the active segment stays until
                    // that segment is sealed: the live key count recorded at
                    // each seal, and the replay of the active segment on
                    // open, both count it as the key's previous record.
                    let replaced_in_sealed = newest.is_some_and(|n| {
                        table.get(n.segment_id).is_some_and(|s| s.meta().is_some())
                    });
                    if replaced_in_sealed {
                        continue;
                    }
                } else if this.tombstone
                    && !older_unsearchable
                    && !held_outside(&table, &input_ids, run_rank, found.key)?
                {
                    dropped.push((found.key.to_vec(), this));
                    continue;
                }
                let newest = this;
                let record = segment
                    .map
                    .read(found.offset, found.len, found.key, found.version)?;
                let key_start = found.offset as usize + crate::log_segment::RECORD_HEADER_LEN;
                let value_start = key_start + record.key.len();
                kept.push(Kept {
                    from: newest,
                    key_range: (key_start, value_start),
                    value_range: (value_start, value_start + record.value.len()),
                    log_index: record.log_index,
                    input,
                });
            }
        }
        kept.sort_unstable_by_key(|k| k.from.version);
        // After a crash between a compaction's renames and the deletion of
        // its newest input, a record exists twice with one rank (the output
        // and the input). A twin that is the key's newest is kept once (the
        // other is replaced by it); twins replaced from the active segment
        // are both kept above: one copy is enough. A version names exactly
        // one record.
        kept.dedup_by_key(|k| k.from.version);
        Ok((kept, dropped))
    }

    /// Writes the outputs; returns each with the new entry of every record.
    fn write_outputs(
        &self,
        inputs: &[Arc<Segment>],
        kept: &[Kept],
        run_rank: u32,
        created: &mut Vec<u32>,
    ) -> Result<Vec<(Arc<Segment>, Vec<IndexEntry>)>> {
        // The outputs stand where the run's newest segment stood: so does
        // the store's live key count after them (for the next open).
        let live_keys_after = inputs
            .iter()
            .filter(|s| s.header.rank == run_rank)
            .map(|s| s.meta().unwrap().header().live_keys_after)
            .find(|&count| count != crate::segment_meta::UNKNOWN_LIVE_KEYS)
            .unwrap_or(crate::segment_meta::UNKNOWN_LIVE_KEYS);
        let spec = OutputSpec {
            rank: run_rank,
            live_keys_after,
        };
        let max_version = inputs
            .iter()
            .map(|s| s.meta().unwrap().header().max_version)
            .max()
            .unwrap_or(0);
        let max_log_index = inputs
            .iter()
            .map(|s| s.meta().unwrap().header().max_log_index)
            .max()
            .unwrap_or(0);
        let mut outputs = Vec::new();
        let mut pending = OutputBuilder::default();
        for record in kept {
            let bytes = inputs[record.input].map.bytes();
            let key = &bytes[record.key_range.0..record.key_range.1];
            let value = (!record.from.tombstone)
                .then(|| &bytes[record.value_range.0..record.value_range.1]);
            let len =
                crate::log_segment::encoded_record_len(key.len(), value.map_or(0, <[u8]>::len))
                    as u64;
            if !pending.is_empty()
                && pending.len_bytes() + len > self.files.config.segment_size_bytes
            {
                let full = std::mem::take(&mut pending);
                outputs.push(output::write(self.files, full, &spec, None, created)?);
            }
            let placed = pending.push(record.from, record.log_index, key, value);
            assert_eq!(placed, record.from.len, "a copied record keeps its length");
        }
        // The last output carries the run's counters, so they survive even
        // if its newest records were dropped.
        let counters = (max_version > 0).then_some((max_version, max_log_index));
        outputs.push(output::write(
            self.files, pending, &spec, counters, created,
        )?);
        Ok(outputs)
    }

    fn swap_in(
        &self,
        inputs: &[Arc<Segment>],
        outputs: &[(Arc<Segment>, Vec<IndexEntry>)],
        kept: &[Kept],
        dropped: &[Dropped],
    ) -> Result<()> {
        for input in inputs {
            input.retiring.store(true, Ordering::SeqCst);
        }
        {
            let mut table = self.reads.segments_mut();
            for (segment, _) in outputs {
                table.insert(segment.clone());
            }
        }
        let moved = outputs.iter().flat_map(|(_, entries)| entries.iter());
        {
            let table = self.reads.segments();
            for (record, to) in kept.iter().zip(moved) {
                let key = table.key_of(to).expect("the output holds the key");
                self.reads.index.redirect(key, &record.from, *to, &*table);
            }
            for (key, entry) in dropped {
                self.reads.index.remove_if(key, entry, &*table);
            }
        }
        // Every record dropped was superseded by a published one, so it is
        // already written: only the fsync is left, and it runs without the
        // writer lock (as the interval flusher's does), so puts do not wait
        // for the disk to take the active segment's unsynced bytes.
        self.sync_active_in_background()?;
        // The commit point: from here on the store consists of the outputs
        // and not the inputs (a crash before it leaves the outputs as
        // unlisted leftovers that open removes).
        self.files.change_segments(|set| {
            for input in inputs {
                set.remove(&input.id());
            }
            set.extend(outputs.iter().map(|(segment, _)| segment.id()));
        })?;
        {
            let mut table = self.reads.segments_mut();
            for input in inputs {
                table.remove(input.id());
            }
        }
        for input in inputs {
            self.files.dir.remove(&segment_file_name(input.id()))?;
            self.files.dir.sync()?;
            self.files.dir.remove(&meta_file_name(input.id()))?;
        }
        self.files.dir.sync()
    }
}

/// Does any cold segment outside the run, not newer than it, hold `key`?
fn held_outside(table: &SegmentTable, inputs: &[u32], run_rank: u32, key: &[u8]) -> Result<bool> {
    let hash = key_hash(key);
    for segment in table.cold() {
        if inputs.contains(&segment.id()) || segment.header.rank > run_rank {
            continue;
        }
        let meta = segment.meta().expect("cold segments have metadata");
        if meta.find(segment.map.bytes(), key, hash)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(id: u32, bytes: u64, dead_bytes: u64) -> SegmentUsage {
        SegmentUsage {
            id,
            rank: id,
            bytes,
            dead_bytes,
        }
    }

    #[test]
    fn nothing_qualifies_below_the_threshold() {
        let sealed = [usage(1, 100, 10), usage(2, 100, 40)];
        assert_eq!(plan_compaction(&sealed, 0.5, 1000), None);
        assert_eq!(plan_compaction(&[], 0.5, 1000), None);
    }

    #[test]
    fn the_run_that_reclaims_most_is_chosen() {
        let sealed = [
            usage(1, 100, 90),
            usage(2, 100, 80),
            usage(3, 100, 0),
            usage(4, 100, 60),
        ];
        assert_eq!(
            plan_compaction(&sealed, 0.5, 1000),
            Some(CompactionPlan {
                inputs: vec![1, 2, 3, 4]
            }),
            "230 of 400 bytes dead"
        );
        assert_eq!(
            plan_compaction(&sealed, 0.5, 250),
            Some(CompactionPlan { inputs: vec![1, 2] }),
            "the input cap limits the run"
        );
        assert_eq!(
            plan_compaction(&sealed, 0.8, 1000),
            Some(CompactionPlan { inputs: vec![1, 2] }),
        );
    }

    #[test]
    fn a_single_segment_over_the_cap_may_still_be_compacted() {
        let sealed = [usage(7, 5000, 4000)];
        assert_eq!(
            plan_compaction(&sealed, 0.5, 1000),
            Some(CompactionPlan { inputs: vec![7] })
        );
    }

    #[test]
    fn segments_without_dead_bytes_are_left_alone() {
        let sealed = [usage(1, 100, 0), usage(2, 100, 0)];
        assert_eq!(plan_compaction(&sealed, 0.01, 1000), None);
    }
}
