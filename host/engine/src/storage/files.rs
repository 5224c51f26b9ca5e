//! What every part of the storage layer shares: the data directory, the
//! configuration, the metrics, the allocation of segment ids, and the
//! notice the writer leaves when it seals a segment (for maintenance to
//! pick up: the writer never calls up into maintenance).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::segments::Segment;
use crate::config::Config;
use crate::data_dir::DataDir;
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::metrics::Metrics;
use crate::segment_meta::{self, BuildSpec, SegmentMeta};

pub(crate) struct Files {
    pub dir: DataDir,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    /// The next segment id (ids are never reused; compaction outputs take
    /// fresh ones too).
    next_segment_id: AtomicU32,
    /// Segments sealed by the writer, counted; maintenance compares it with
    /// what it has handled.
    seals: AtomicU64,
    /// The segments that make up the store, as last made durable. The
    /// writer (starting a segment), compaction (swapping outputs in) and a
    /// snapshot install change it, one at a time.
    manifest: Mutex<Manifest>,
}

impl Files {
    pub fn new(
        dir: DataDir,
        config: Config,
        metrics: Arc<Metrics>,
        next_segment_id: u32,
        manifest: Manifest,
    ) -> Self {
        Files {
            dir,
            config,
            metrics,
            next_segment_id: AtomicU32::new(next_segment_id),
            seals: AtomicU64::new(0),
            manifest: Mutex::new(manifest),
        }
    }

    /// Makes `change` of the segment set durable (the manifest is
    /// rewritten atomically); on failure the set stays as it was.
    pub fn change_segments(&self, change: impl FnOnce(&mut BTreeSet<u32>)) -> Result<()> {
        let mut manifest = self
            .manifest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut segments = manifest.segments.clone();
        change(&mut segments);
        let next = manifest.with_segments(segments);
        next.store(&self.dir)?;
        *manifest = next;
        Ok(())
    }

    pub fn allocate_segment_id(&self) -> Result<u32> {
        let id = self.next_segment_id.fetch_add(1, Ordering::SeqCst);
        if id == u32::MAX {
            return Err(Error::Exhausted("segment ids (2^32 - 1 segments written)"));
        }
        Ok(id)
    }

    /// The writer sealed a segment.
    pub fn note_sealed(&self) {
        self.seals.fetch_add(1, Ordering::Release);
    }

    /// Segments sealed so far by this process's writer.
    pub fn seals(&self) -> u64 {
        self.seals.load(Ordering::Acquire)
    }

    /// Builds, writes and loads back the metadata of a sealed segment.
    pub fn write_meta(&self, segment: &Segment) -> Result<SegmentMeta> {
        let bytes = segment_meta::build(&BuildSpec {
            segment: segment.map.bytes(),
            header: segment.header,
            bloom_bits_per_key: self.config.bloom_bits_per_key,
            live_keys_after: segment.live_keys_after.load(Ordering::Relaxed),
        })?;
        segment_meta::write(&self.dir, segment.id(), &bytes)?;
        // Read back what is on disk: the check runs on the real file.
        SegmentMeta::load(&self.dir, segment.map.bytes(), segment.header)?.ok_or_else(|| {
            Error::Invariant(format!(
                "{} vanished right after it was written",
                segment_meta::meta_file_name(segment.id())
            ))
        })
    }
}
