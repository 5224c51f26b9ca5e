//! Work that keeps the store lean and fast, off the write path: segment
//! metadata for newly sealed segments, filling the hot index after a restart
//! (without a budget), auditing dead bytes, and starting compactions. The
//! engine's maintenance thread calls [`Storage::maintain`]; with no
//! background threads the writer builds metadata itself when it seals a
//! segment, and compaction runs when asked.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Storage;
use super::compaction::{SegmentUsage, plan_compaction};
use super::segments::Segment;
use crate::error::{Error, Result};
use crate::log_segment::SEGMENT_HEADER_LEN;
use crate::segment_meta::{self, BuildSpec, SegmentMeta};

impl Storage {
    pub(super) fn allocate_segment_id(&self) -> Result<u32> {
        let id = self.next_segment_id.fetch_add(1, Ordering::SeqCst);
        if id == u32::MAX {
            return Err(Error::Unsupported("segment ids exhausted"));
        }
        Ok(id)
    }

    /// The lock guards no data, only turns: a panic in one round must not
    /// stop every later one.
    pub(super) fn maintenance_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.maintenance
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn active_segment_id(&self) -> u32 {
        self.active_id.load(Ordering::SeqCst)
    }

    /// Called by the writer after a roll (holding the writer lock). Without
    /// a maintenance thread the writer writes the metadata itself, and a
    /// failure is the writer's own (it poisons, like a failed append);
    /// unless a compaction holds the maintenance lock: it builds pending
    /// metadata itself.
    pub(super) fn after_seal(&self) -> Result<()> {
        if self.background_maintenance.load(Ordering::SeqCst) {
            return Ok(());
        }
        match self.maintenance.try_lock() {
            Ok(_guard) => self.build_pending_metas_locked().map(drop),
            Err(_) => Ok(()),
        }
    }

    /// One round of background maintenance. Errors are logged; the next
    /// round retries.
    pub fn maintain(&self) {
        let _guard = self.maintenance_lock();
        if let Err(err) = self.build_pending_metas_locked() {
            tracing::error!(error = %err, "writing segment metadata failed; its keys stay in memory");
            return;
        }
        if !self.index.has_budget() && !self.hot_complete.load(Ordering::Acquire) {
            if let Err(err) = self.warm_up_locked() {
                tracing::error!(error = %err, "filling the hot index failed");
            }
            return;
        }
        if let Err(err) = self.audit_one_locked() {
            tracing::error!(error = %err, "auditing a segment's dead bytes failed");
            return;
        }
        let usage = self.segment_usage();
        let ratio = self.config.compaction_dead_ratio;
        let Some(plan) = plan_compaction(&usage, ratio, self.compaction_max_input_bytes()) else {
            return;
        };
        if let Err(err) = self.compact_locked(&plan) {
            tracing::error!(error = %err, "compaction failed; the store is unchanged");
        }
    }

    /// Writes metadata for every sealed segment that has none (oldest
    /// first). Returns how many it wrote.
    pub fn build_pending_metas(&self) -> Result<usize> {
        let _guard = self.maintenance_lock();
        self.build_pending_metas_locked()
    }

    pub(super) fn build_pending_metas_locked(&self) -> Result<usize> {
        // A segment object is active or sealed for good: sealing replaces
        // it. So this cannot catch a segment that is becoming active.
        let pending: Vec<Arc<Segment>> = self
            .segments()
            .iter()
            .filter(|s| !s.active && s.meta().is_none())
            .cloned()
            .collect();
        for segment in &pending {
            let meta = write_meta(self, segment)?;
            self.segments
                .write()
                .expect("segment table lock poisoned")
                .attach_meta(segment.id(), Arc::new(meta));
        }
        Ok(pending.len())
    }

    /// Copies every cold key's newest record into the hot index (no budget
    /// only), newest segment first, then declares the hot index complete.
    /// Runs under the maintenance lock, so no compaction changes the
    /// segments meanwhile; writes go on and always win (insert-if-absent).
    fn warm_up_locked(&self) -> Result<()> {
        let started = std::time::Instant::now();
        let segments = self.segments().clone();
        let mut copied = 0u64;
        for segment in segments.cold() {
            let meta = segment.meta().expect("cold segments have metadata");
            for found in meta.entries(segment.map.bytes()) {
                let found = found?;
                let entry = crate::index::IndexEntry {
                    version: found.version,
                    segment_id: segment.id(),
                    offset: found.offset,
                    len: found.len,
                    tombstone: found.tombstone,
                };
                let table = self.segments();
                if self.index.insert_if_absent(found.key, entry, &*table, || {
                    !segment.retiring.load(Ordering::SeqCst)
                }) {
                    copied += 1;
                }
            }
        }
        self.hot_complete.store(true, Ordering::Release);
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
    pub fn audit_all(&self) -> Result<()> {
        let _guard = self.maintenance_lock();
        for segment in self.segments().cold().to_vec() {
            self.audit_locked(&segment)?;
        }
        Ok(())
    }

    /// Counts the live bytes of one sealed segment not audited since open:
    /// a record is live if it is its key's newest.
    fn audit_one_locked(&self) -> Result<()> {
        let Some(segment) = self
            .segments()
            .cold()
            .iter()
            .find(|s| !s.audited.load(Ordering::Relaxed))
            .cloned()
        else {
            return Ok(());
        };
        self.audit_locked(&segment)
    }

    fn audit_locked(&self, segment: &Segment) -> Result<()> {
        let live = self.live_bytes_of(segment)?;
        let dead = segment.len() - SEGMENT_HEADER_LEN as u64 - live;
        segment.dead_bytes.store(dead, Ordering::Relaxed);
        segment.audited.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Bytes of the records of `segment` that are their key's newest
    /// (tombstones count as dead).
    pub(super) fn live_bytes_of(&self, segment: &Segment) -> Result<u64> {
        let meta = segment.meta().expect("audited segments have metadata");
        let mut live = 0;
        for found in meta.entries(segment.map.bytes()) {
            let found = found?;
            if found.tombstone {
                continue;
            }
            let table = self.segments();
            let newest = self.newest_record(found.key, &table)?;
            if newest.is_some_and(|n| n.segment_id == segment.id() && n.offset == found.offset) {
                live += u64::from(found.len);
            }
        }
        Ok(live)
    }

    /// What the compaction policy sees: sealed segments with metadata, by rank.
    pub fn segment_usage(&self) -> Vec<SegmentUsage> {
        let mut usage: Vec<SegmentUsage> = self
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
    pub(super) fn compaction_max_input_bytes(&self) -> u64 {
        self.config.segment_size_bytes.saturating_mul(4)
    }
}

/// Builds, writes and loads back the metadata of a sealed segment.
pub(super) fn write_meta(storage: &Storage, segment: &Segment) -> Result<SegmentMeta> {
    let bytes = segment_meta::build(&BuildSpec {
        segment: segment.map.bytes(),
        header: segment.header,
        bloom_bits_per_key: storage.config.bloom_bits_per_key,
        live_keys_after: segment.live_keys_after.load(Ordering::Relaxed),
    })?;
    segment_meta::write(&storage.dir, segment.id(), &bytes)?;
    // Read back what is on disk: the check runs on the real file.
    SegmentMeta::load(&storage.dir, segment.map.bytes(), segment.header)?.ok_or(Error::Unsupported(
        "a metadata file vanished right after it was written",
    ))
}
