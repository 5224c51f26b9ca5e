//! Work that keeps the store lean and fast, off the write path: segment
//! metadata for newly sealed segments, filling the hot index after a restart
//! (without a budget), auditing dead bytes, and starting compactions.
//!
//! One maintainer at a time: [`Maintenance::turn`] hands out a
//! [`Maintainer`], which holds the turn for as long as it lives (so its
//! methods need no "locked" variants). The engine's maintenance thread calls
//! [`Maintenance::round`]; without background threads, the segments the
//! writer sealed get their metadata in [`Maintenance::after_commit`] (the
//! writer itself only leaves a notice), and compaction runs when asked.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::Storage;
use super::compaction::{CompactionPlan, CompactionReport, SegmentUsage, plan_compaction};
use super::files::Files;
use super::read::ReadPath;
use super::segments::Segment;
use super::writer::{Writer, WriterGuard};
use crate::error::Result;
use crate::index::IndexEntry;
use crate::log_segment::SEGMENT_HEADER_LEN;
use crate::metrics::{Counter, MetricsHook};

#[derive(Default)]
pub(super) struct Maintenance {
    /// Guards no data, only turns: a panic in one round must not stop
    /// every later one.
    turn: Mutex<()>,
    /// The engine runs a maintenance thread.
    background: AtomicBool,
    /// The writer's seal notices (`Files::seals`) handled so far.
    seals_handled: AtomicU64,
}

/// One maintainer's turn, with access to every part of the store.
pub(super) struct Maintainer<'s> {
    pub files: &'s Files,
    pub reads: &'s ReadPath,
    writer: &'s Mutex<Writer>,
    _turn: MutexGuard<'s, ()>,
}

impl Maintenance {
    pub fn set_background(&self, on: bool) {
        self.background.store(on, Ordering::SeqCst);
    }

    /// Waits for the turn.
    pub fn turn<'s>(&'s self, storage: &'s Storage) -> Maintainer<'s> {
        let turn = self
            .turn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Maintainer::new(storage, turn)
    }

    /// The turn if nobody holds it.
    fn try_turn<'s>(&'s self, storage: &'s Storage) -> Option<Maintainer<'s>> {
        let turn = match self.turn.try_lock() {
            Ok(turn) => turn,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(Maintainer::new(storage, turn))
    }

    /// See [`Storage::after_commit`]. A failure is the committer's own: the
    /// write is durable, but its caller learns that metadata could not be
    /// written (the next open rebuilds it).
    pub fn after_commit(&self, storage: &Storage) -> Result<()> {
        if self.background.load(Ordering::SeqCst) {
            return Ok(());
        }
        let seals = storage.files.seals();
        if self.seals_handled.load(Ordering::Acquire) == seals {
            return Ok(());
        }
        // A busy maintainer (a compaction) builds pending metadata itself.
        let Some(maintainer) = self.try_turn(storage) else {
            return Ok(());
        };
        maintainer
            .build_pending_metas()
            .inspect_err(|_| storage.files.metrics.add(Counter::NonFatalIoFailures, 1))?;
        self.seals_handled.fetch_max(seals, Ordering::AcqRel);
        Ok(())
    }

    /// One round of background maintenance. Errors are logged; the next
    /// round retries.
    pub fn round(&self, storage: &Storage) {
        let seals = storage.files.seals();
        let maintainer = self.turn(storage);
        if let Err(err) = maintainer.build_pending_metas() {
            storage.files.metrics.add(Counter::NonFatalIoFailures, 1);
            tracing::error!(error = %err, "writing segment metadata failed; its keys stay in memory");
            return;
        }
        self.seals_handled.fetch_max(seals, Ordering::AcqRel);
        maintainer.round()
    }
}

impl<'s> Maintainer<'s> {
    fn new(storage: &'s Storage, turn: MutexGuard<'s, ()>) -> Self {
        Maintainer {
            files: &storage.files,
            reads: &storage.reads,
            writer: &storage.writer,
            _turn: turn,
        }
    }

    /// Exclusive access to the append path (maintenance seals the active
    /// segment before an on-demand compaction).
    pub fn lock_writer(&self) -> WriterGuard<'s> {
        WriterGuard::new(
            self.files,
            self.reads,
            self.writer.lock().expect("writer lock poisoned"),
        )
    }

    /// Fsyncs the active segment without holding the writer lock.
    pub fn sync_active_in_background(&self) -> Result<()> {
        super::writer::sync_without_blocking_appends(self.files, self.writer)
    }

    /// What a round does once pending metadata is written: warm the hot
    /// index, or audit a segment, or compact what the policy picks.
    fn round(&self) {
        if !self.reads.index.has_budget() && !self.reads.hot_complete.load(Ordering::Acquire) {
            if let Err(err) = self.warm_up() {
                tracing::error!(error = %err, "filling the hot index failed");
            }
            return;
        }
        if let Err(err) = self.audit_one() {
            tracing::error!(error = %err, "auditing a segment's dead bytes failed");
            return;
        }
        let usage = self.segment_usage();
        let ratio = self.files.config.compaction_dead_ratio;
        let Some(plan) = plan_compaction(&usage, ratio, self.compaction_max_input_bytes()) else {
            return;
        };
        if let Err(err) = self.compact(&plan) {
            tracing::error!(error = %err, "compaction failed; the store is unchanged");
        }
    }

    /// Compacts everything written so far: seals the active segment (if it
    /// holds records) so that no record is kept only because the active
    /// segment replaced it, then compacts every sealed segment.
    pub fn compact_all(&self) -> Result<CompactionReport> {
        self.lock_writer().seal_active()?;
        self.build_pending_metas()?;
        let inputs: Vec<u32> = self.segment_usage().iter().map(|u| u.id).collect();
        if inputs.is_empty() {
            return Ok(CompactionReport::default());
        }
        self.compact(&CompactionPlan { inputs })
    }

    /// Writes metadata for every sealed segment that has none (oldest
    /// first). Returns how many it wrote.
    pub fn build_pending_metas(&self) -> Result<usize> {
        // A segment object is active or sealed for good: sealing replaces
        // it. So this cannot catch a segment that is becoming active.
        let pending: Vec<Arc<Segment>> = self
            .reads
            .segments()
            .iter()
            .filter(|s| !s.active && !s.meta_saved.load(Ordering::Relaxed))
            .cloned()
            .collect();
        for segment in &pending {
            match segment.meta() {
                // Built at open but not written then (read-only, or no room).
                Some(meta) => {
                    crate::segment_meta::write(&self.files.dir, segment.id(), meta.raw_bytes())?;
                }
                None => {
                    let meta = self.files.write_meta(segment)?;
                    self.reads
                        .segments_mut()
                        .attach_meta(segment.id(), Arc::new(meta));
                }
            }
            segment.meta_saved.store(true, Ordering::Relaxed);
        }
        Ok(pending.len())
    }

    /// Copies every cold key's newest record into the hot index (no budget
    /// only), newest segment first, then declares the hot index complete.
    /// Runs under the maintenance lock, so no compaction changes the
    /// segments meanwhile; writes go on and always win (insert-if-absent).
    fn warm_up(&self) -> Result<()> {
        let started = std::time::Instant::now();
        let segments = self.reads.segments().clone();
        let mut copied = 0u64;
        for segment in segments.cold() {
            let meta = segment.meta().expect("cold segments have metadata");
            for found in meta.entries(segment.map.bytes()) {
                let found = found?;
                let entry = IndexEntry {
                    version: found.version,
                    segment_id: segment.id(),
                    offset: found.offset,
                    len: found.len,
                    tombstone: found.tombstone,
                };
                let table = self.reads.segments();
                if self
                    .reads
                    .index
                    .insert_if_absent(found.key, entry, &*table, || {
                        !segment.retiring.load(Ordering::SeqCst)
                    })
                {
                    copied += 1;
                }
            }
        }
        self.reads.hot_complete.store(true, Ordering::Release);
        tracing::info!(
            entries = copied,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "hot index filled"
        );
        Ok(())
    }

    /// Audits every sealed segment now, so `stats().live_bytes` is exact
    /// (after a restart it counts only what metadata knows until the
    /// background audits are done). Costs a lookup per key.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn audit_all(&self) -> Result<()> {
        for segment in self.reads.segments().cold().to_vec() {
            self.audit(&segment)?;
        }
        Ok(())
    }

    /// Counts the live bytes of one sealed segment not audited since open:
    /// a record is live if it is its key's newest.
    fn audit_one(&self) -> Result<()> {
        let Some(segment) = self
            .reads
            .segments()
            .cold()
            .iter()
            .find(|s| !s.audited.load(Ordering::Relaxed))
            .cloned()
        else {
            return Ok(());
        };
        self.audit(&segment)
    }

    fn audit(&self, segment: &Segment) -> Result<()> {
        let live = self.live_bytes_of(segment)?;
        let dead = segment.len() - SEGMENT_HEADER_LEN as u64 - live;
        segment.dead_bytes.store(dead, Ordering::Relaxed);
        segment.audited.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Bytes of the records of `segment` that are their key's newest
    /// (tombstones count as dead).
    fn live_bytes_of(&self, segment: &Segment) -> Result<u64> {
        let meta = segment.meta().expect("audited segments have metadata");
        let mut live = 0;
        for found in meta.entries(segment.map.bytes()) {
            let found = found?;
            if found.tombstone {
                continue;
            }
            let table = self.reads.segments();
            let newest = self.reads.newest_record(found.key, &table)?;
            if newest.is_some_and(|n| n.segment_id == segment.id() && n.offset == found.offset) {
                live += u64::from(found.len);
            }
        }
        Ok(live)
    }

    /// What the compaction policy sees: sealed segments with metadata, by rank.
    pub fn segment_usage(&self) -> Vec<SegmentUsage> {
        let mut usage: Vec<SegmentUsage> = self
            .reads
            .segments()
            .cold()
            .iter()
            .map(|s| SegmentUsage {
                id: s.id(),
                rank: s.header.rank,
                bytes: s.len(),
                dead_bytes: s.dead_bytes.load(Ordering::Relaxed).min(s.len()),
            })
            .collect();
        usage.sort_by_key(|u| (u.rank, u.id));
        usage
    }

    /// Largest run one background compaction takes: four segments' worth.
    fn compaction_max_input_bytes(&self) -> u64 {
        self.files.config.segment_size_bytes.saturating_mul(4)
    }
}
