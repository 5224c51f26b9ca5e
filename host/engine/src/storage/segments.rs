//! The open segments: their memory maps, headers, metadata and space
//! accounting, and the order in which a cold lookup searches them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::error::Result;
use crate::index::{IndexEntry, RecordKeys};
use crate::log_segment::{MappedSegment, SegmentHeader};
use crate::segment_meta::{SegmentMeta, UNKNOWN_LIVE_KEYS};

/// One segment file, open for reading.
pub struct Segment {
    pub map: MappedSegment,
    pub header: SegmentHeader,
    /// The writer's active segment: never given metadata (its records stay
    /// in the hot index). Sealing replaces the object with a sealed one.
    pub active: bool,
    /// Set once the metadata file is written (or loaded). Until then the
    /// segment's keys stay in the hot index.
    meta: OnceLock<Arc<SegmentMeta>>,
    /// Bytes of records known to be superseded, and of tombstones.
    pub dead_bytes: AtomicU64,
    /// Whether `dead_bytes` also counts records superseded by later segments
    /// (after a restart only what the metadata says is known until an audit).
    pub audited: AtomicBool,
    /// Compaction is replacing this segment: lookups must not copy its
    /// entries into the hot index any more.
    pub retiring: AtomicBool,
    /// Live keys of the store after this segment's last record, when the
    /// writer sealed it (for its metadata).
    pub live_keys_after: AtomicU64,
    /// The metadata is in its file, not only in memory (a read-only open,
    /// or a full disk at open, keep rebuilt metadata in memory; maintenance
    /// writes it when it can).
    pub meta_saved: AtomicBool,
}

impl Segment {
    /// A sealed segment (or a compaction output).
    pub fn new(map: MappedSegment, header: SegmentHeader) -> Self {
        Segment {
            map,
            header,
            active: false,
            meta: OnceLock::new(),
            dead_bytes: AtomicU64::new(0),
            audited: AtomicBool::new(false),
            retiring: AtomicBool::new(false),
            live_keys_after: AtomicU64::new(UNKNOWN_LIVE_KEYS),
            meta_saved: AtomicBool::new(false),
        }
    }

    /// The writer's active segment.
    pub fn new_active(map: MappedSegment, header: SegmentHeader) -> Self {
        Segment {
            active: true,
            ..Segment::new(map, header)
        }
    }

    /// A segment whose metadata is already built (a compaction output).
    pub fn with_meta(map: MappedSegment, header: SegmentHeader, meta: Arc<SegmentMeta>) -> Self {
        let segment = Segment::new(map, header);
        segment.meta_saved.store(true, Ordering::Relaxed);
        segment
            .meta
            .set(meta)
            .ok()
            .expect("a new segment has no metadata");
        segment
    }

    pub fn id(&self) -> u32 {
        self.header.id
    }

    pub fn meta(&self) -> Option<&Arc<SegmentMeta>> {
        self.meta.get()
    }

    /// Bytes of the file as mapped (the active segment's grow).
    pub fn len(&self) -> u64 {
        self.map.bytes().len() as u64
    }

    pub fn add_dead(&self, bytes: u32) {
        self.dead_bytes
            .fetch_add(u64::from(bytes), Ordering::Relaxed);
    }
}

/// Segments by id, and the sealed ones with metadata newest first.
#[derive(Clone, Default)]
pub struct SegmentTable {
    by_id: BTreeMap<u32, Arc<Segment>>,
    /// Sealed segments with metadata, by rank, highest first: the order of
    /// a cold lookup. Equal ranks hold no key in common with a different
    /// version, so their order among themselves does not matter.
    cold: Vec<Arc<Segment>>,
}

impl SegmentTable {
    pub fn get(&self, id: u32) -> Option<&Arc<Segment>> {
        self.by_id.get(&id)
    }

    pub fn insert(&mut self, segment: Arc<Segment>) {
        let id = segment.id();
        if segment.meta().is_some() {
            self.add_cold(&segment);
        }
        self.by_id.insert(id, segment);
    }

    /// Replaces the map of segment `id` (the active segment's, once sealed:
    /// the new map ends at the sealed length) and records the live key
    /// count after it. Entries keep pointing at the same file.
    pub fn replace_map(&mut self, id: u32, map: MappedSegment, live_keys_after: u64) {
        let old = self.by_id.get(&id).expect("the sealed segment is open");
        assert!(
            old.meta().is_none(),
            "only a segment without metadata is remapped"
        );
        let new = Segment::new(map, old.header);
        new.dead_bytes
            .store(old.dead_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
        new.audited.store(true, Ordering::Relaxed);
        new.live_keys_after
            .store(live_keys_after, Ordering::Relaxed);
        self.by_id.insert(id, Arc::new(new));
    }

    pub fn remove(&mut self, id: u32) -> Option<Arc<Segment>> {
        let removed = self.by_id.remove(&id)?;
        self.cold.retain(|s| s.id() != id);
        Some(removed)
    }

    /// Attaches metadata to segment `id`, making it searchable cold.
    /// Returns false if the segment is gone or already has metadata.
    pub fn attach_meta(&mut self, id: u32, meta: Arc<SegmentMeta>) -> bool {
        let Some(segment) = self.by_id.get(&id).cloned() else {
            return false;
        };
        assert!(!segment.active, "the active segment never gets metadata");
        if segment.meta.set(meta).is_err() {
            return false;
        }
        self.add_cold(&segment);
        true
    }

    fn add_cold(&mut self, segment: &Arc<Segment>) {
        let rank = segment.header.rank;
        let at = self.cold.partition_point(|s| s.header.rank > rank);
        self.cold.insert(at, segment.clone());
    }

    /// Sealed segments with metadata, newest rank first.
    pub fn cold(&self) -> &[Arc<Segment>] {
        &self.cold
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Segment>> {
        self.by_id.values()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The newest record of `key` in the cold segments (a tombstone
    /// included), searching by rank, newest first.
    pub fn find_cold(&self, key: &[u8]) -> Result<Option<IndexEntry>> {
        let hash = crate::segment_meta::key_hash(key);
        for segment in &self.cold {
            let meta = segment.meta().expect("cold segments have metadata");
            if let Some(found) = meta.find(segment.map.bytes(), key, hash)? {
                return Ok(Some(IndexEntry {
                    version: found.version,
                    segment_id: segment.id(),
                    offset: found.offset,
                    len: found.len,
                    tombstone: found.tombstone,
                }));
            }
        }
        Ok(None)
    }
}

impl SegmentTable {
    /// Dead bytes of a new record: the record it replaces (a tombstone was
    /// counted when written), and the record itself if it is a tombstone
    /// (it only exists to hide older records and goes once they are gone).
    pub fn account_replacement(&self, new: &IndexEntry, replaces: Option<IndexEntry>) {
        if let Some(old) = replaces.filter(|old| !old.tombstone)
            && let Some(segment) = self.get(old.segment_id)
        {
            segment.add_dead(old.len);
        }
        if new.tombstone
            && let Some(segment) = self.get(new.segment_id)
        {
            segment.add_dead(new.len);
        }
    }
}

impl RecordKeys for SegmentTable {
    fn key_of(&self, entry: &IndexEntry) -> Option<&[u8]> {
        self.by_id
            .get(&entry.segment_id)?
            .map
            .key_at(entry.offset, entry.len)
    }

    fn is_evictable(&self, segment_id: u32) -> bool {
        self.by_id
            .get(&segment_id)
            .is_some_and(|segment| segment.meta().is_some())
    }
}
