//! Per-segment metadata: a table of `key -> (offset, length, version,
//! tombstone)` sorted by key, block pointers with each block's first key
//! (the sparse index), and a Bloom filter. Written when a segment is sealed
//! or written by compaction, so that a key that is not in the hot index can
//! be found without the segment being scanned, and so that a restart need
//! not replay the log.
//!
//! The file is memory-mapped. Opening it checks the header, that it
//! describes this very segment file (length and a CRC of its tail), and the
//! CRC over the block pointers, first keys and Bloom filter; a table block is
//! checked when a lookup reads it. Metadata that is missing or fails a check
//! is rebuilt from the segment by the caller.

mod bloom;
mod layout;

use std::fs::File;

use memmap2::Mmap;

use layout::{
    BLOCK_POINTER_LEN, ENTRIES_PER_BLOCK, META_HEADER_LEN, decode_entry, decode_header,
    encode_entry, encode_header, segment_tail_crc, u32_at,
};
pub use layout::{MetaEntry, MetaHeader, UNKNOWN_LIVE_KEYS};

use crate::data_dir::DataDir;
use crate::error::{Corruption, Error, IoContext, Result};
use crate::log_segment::{RecordKind, SegmentHeader, scan_segment};

/// `seg-0000000042.meta`.
pub fn meta_file_name(segment_id: u32) -> String {
    format!("seg-{segment_id:010}.meta")
}

/// What to describe, and how.
pub struct BuildSpec<'a> {
    /// The whole sealed segment file.
    pub segment: &'a [u8],
    pub header: SegmentHeader,
    pub bloom_bits_per_key: u32,
    pub live_keys_after: u64,
}

/// Builds the metadata bytes of a sealed segment. Fails if the segment has
/// any damage: a sealed segment was verified (or written) whole.
pub fn build(spec: &BuildSpec<'_>) -> Result<Vec<u8>> {
    let file = crate::log_segment::segment_file_name(spec.header.id);
    let mut found: Vec<MetaEntry<'_>> = Vec::new();
    let (mut max_version, mut max_log_index) = (0, 0);
    let scan = scan_segment(spec.segment, |command| {
        for &(offset, record) in command {
            max_version = max_version.max(record.version);
            max_log_index = max_log_index.max(record.log_index);
            if record.kind == RecordKind::Marker {
                continue;
            }
            found.push(MetaEntry {
                key: record.key,
                offset: offset as u32,
                len: record.len as u32,
                version: record.version,
                tombstone: record.kind == RecordKind::Tombstone,
            });
        }
    });
    if let Some(damage) = scan.damage.first() {
        return Err(Error::Corruption(Corruption {
            file,
            offset: damage.offset as u64,
            reason: format!(
                "{} ({} damaged range(s) in a sealed segment; `hightower salvage` keeps every intact command)",
                damage.reason,
                scan.damage.len()
            ),
        }));
    }
    // Newest record per key: sort by key, newest first, keep the first.
    found.sort_unstable_by(|a, b| a.key.cmp(b.key).then(b.version.cmp(&a.version)));
    found.dedup_by(|later, first| later.key == first.key);
    Ok(encode(
        spec,
        &found,
        scan.records,
        max_version,
        max_log_index,
    ))
}

fn encode(
    spec: &BuildSpec<'_>,
    entries: &[MetaEntry<'_>],
    records: u64,
    max_version: u64,
    max_log_index: u64,
) -> Vec<u8> {
    let hash_count = bloom::hash_count(spec.bloom_bits_per_key);
    let mut bloom_bits = vec![0u8; bloom::filter_len(entries.len(), spec.bloom_bits_per_key)];
    let mut table = Vec::new();
    let mut pointers = Vec::new();
    let mut fences = Vec::new();
    for block in entries.chunks(ENTRIES_PER_BLOCK as usize) {
        let start = table.len();
        for entry in block {
            encode_entry(&mut table, entry);
            bloom::insert(&mut bloom_bits, hash_count, bloom::key_hash(entry.key));
        }
        pointers.extend_from_slice(&(start as u32).to_le_bytes());
        pointers.extend_from_slice(&crc32fast::hash(&table[start..]).to_le_bytes());
        pointers.extend_from_slice(&(fences.len() as u32).to_le_bytes());
        fences.extend_from_slice(&(block[0].key.len() as u16).to_le_bytes());
        fences.extend_from_slice(block[0].key);
    }
    let header = MetaHeader {
        segment_id: spec.header.id,
        segment_rank: spec.header.rank,
        segment_compacted: spec.header.compacted,
        segment_len: spec.segment.len() as u64,
        segment_tail_crc: segment_tail_crc(spec.segment),
        bloom_hash_count: hash_count,
        entries: entries.len() as u64,
        records,
        max_version,
        max_log_index,
        live_keys_after: spec.live_keys_after,
        table_len: table.len() as u64,
        blocks: entries.len().div_ceil(ENTRIES_PER_BLOCK as usize) as u32,
        bloom_len: bloom_bits.len() as u64,
        put_bytes: sum_len(entries, false),
        tombstone_bytes: sum_len(entries, true),
    };
    let mut sections = crc32fast::Hasher::new();
    for part in [&pointers, &fences, &bloom_bits] {
        sections.update(part);
    }
    let mut out = Vec::with_capacity(
        META_HEADER_LEN + table.len() + pointers.len() + fences.len() + bloom_bits.len(),
    );
    out.extend_from_slice(&encode_header(&header, sections.finalize()));
    for part in [&table, &pointers, &fences, &bloom_bits] {
        out.extend_from_slice(part);
    }
    out
}

fn sum_len(entries: &[MetaEntry<'_>], tombstone: bool) -> u64 {
    entries
        .iter()
        .filter(|e| e.tombstone == tombstone)
        .map(|e| u64::from(e.len))
        .sum()
}

/// Writes metadata bytes for segment `segment_id` atomically.
pub fn write(dir: &DataDir, segment_id: u32, bytes: &[u8]) -> Result<()> {
    dir.write_file_atomically(&meta_file_name(segment_id), bytes)
}

enum Backing {
    Map(Mmap),
    Heap(Vec<u8>),
}

/// A loaded, checked metadata file.
pub struct SegmentMeta {
    file: String,
    bytes: Backing,
    header: MetaHeader,
    pointers_start: usize,
    fences_start: usize,
    bloom_start: usize,
}

impl SegmentMeta {
    /// Loads the metadata of `segment`, the bytes of the sealed segment file
    /// with header `expected`. `Ok(None)`: there is no metadata file.
    /// `Err`: it exists but cannot be used (the reason says why).
    pub fn load(dir: &DataDir, segment: &[u8], expected: SegmentHeader) -> Result<Option<Self>> {
        let name = meta_file_name(expected.id);
        if !dir.exists(&name) {
            return Ok(None);
        }
        let file: File = dir.open_read(&name)?;
        let len = file.metadata().context(|| format!("stat {name}"))?.len();
        if len < META_HEADER_LEN as u64 {
            return Err(corrupt(&name, 0, "metadata file is truncated".into()));
        }
        // SAFETY: metadata files are written once (to a temporary name, then
        // renamed) and never modified; the data directory is locked.
        let map = unsafe { Mmap::map(&file) }.context(|| format!("mmap {name}"))?;
        Self::check(name, Backing::Map(map), segment, expected).map(Some)
    }

    /// Metadata built in memory (not read back from disk).
    pub fn from_built(bytes: Vec<u8>, segment: &[u8], expected: SegmentHeader) -> Result<Self> {
        Self::check(
            meta_file_name(expected.id),
            Backing::Heap(bytes),
            segment,
            expected,
        )
    }

    fn check(
        file: String,
        bytes: Backing,
        segment: &[u8],
        expected: SegmentHeader,
    ) -> Result<Self> {
        let raw = match &bytes {
            Backing::Map(map) => &map[..],
            Backing::Heap(vec) => &vec[..],
        };
        let (header, sections_crc) = decode_header(raw, &file).map_err(Error::Corruption)?;
        let describes_segment = header.segment_id == expected.id
            && header.segment_rank == expected.rank
            && header.segment_compacted == expected.compacted
            && header.segment_len == segment.len() as u64
            && header.segment_tail_crc == segment_tail_crc(segment);
        if !describes_segment {
            return Err(corrupt(
                &file,
                16,
                "metadata describes a different segment file (id, rank, length or tail differ)"
                    .into(),
            ));
        }
        let pointers_start = META_HEADER_LEN + header.table_len as usize;
        let fences_start = pointers_start + header.blocks as usize * BLOCK_POINTER_LEN;
        let bloom_start = raw.len() - header.bloom_len as usize;
        if fences_start > bloom_start || crc32fast::hash(&raw[pointers_start..]) != sections_crc {
            return Err(corrupt(
                &file,
                pointers_start as u64,
                "metadata index or Bloom filter checksum mismatch".into(),
            ));
        }
        let meta = SegmentMeta {
            file,
            bytes,
            header,
            pointers_start,
            fences_start,
            bloom_start,
        };
        meta.check_block_pointers()?;
        Ok(meta)
    }

    /// Block pointers and first keys are covered by a checksum, but they
    /// must also be in range and in order before a search trusts them.
    fn check_block_pointers(&self) -> Result<()> {
        let mut previous: Option<&[u8]> = None;
        let mut previous_start = 0;
        for block in 0..self.header.blocks as usize {
            let (start, end) = self.block_range(block);
            let fence = self.fence(block);
            let ordered = previous.is_none_or(|p| fence.is_some_and(|f| p < f));
            if start < previous_start
                || end > self.header.table_len as usize
                || start >= end
                || !ordered
            {
                return Err(corrupt(
                    &self.file,
                    (self.pointers_start + block * BLOCK_POINTER_LEN) as u64,
                    "metadata block pointers out of order or range".into(),
                ));
            }
            previous = fence;
            previous_start = start;
        }
        Ok(())
    }

    fn raw(&self) -> &[u8] {
        match &self.bytes {
            Backing::Map(map) => map,
            Backing::Heap(vec) => vec,
        }
    }

    pub fn header(&self) -> &MetaHeader {
        &self.header
    }

    pub fn file_name(&self) -> &str {
        &self.file
    }

    /// The encoded file, to write a repaired copy to disk.
    pub fn encoded(&self) -> &[u8] {
        self.raw()
    }

    /// Size of the metadata file.
    pub fn file_len(&self) -> u64 {
        self.raw().len() as u64
    }

    /// Bytes a lookup keeps hot: block pointers, first keys and Bloom filter.
    pub fn index_bytes(&self) -> u64 {
        (self.raw().len() - self.pointers_start) as u64
    }

    /// `false`: the key is certainly not in the segment.
    pub fn may_contain(&self, key_hash: u64) -> bool {
        bloom::may_contain(
            &self.raw()[self.bloom_start..],
            self.header.bloom_hash_count,
            key_hash,
        )
    }

    /// The newest record of `key` in the segment, if any.
    pub fn find(&self, key: &[u8], key_hash: u64) -> Result<Option<MetaEntry<'_>>> {
        if !self.may_contain(key_hash) {
            return Ok(None);
        }
        let Some(block) = self.block_for(key) else {
            return Ok(None);
        };
        for entry in self.block_entries(block)? {
            match entry.key.cmp(key) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Equal => return Ok(Some(entry)),
                std::cmp::Ordering::Greater => break,
            }
        }
        Ok(None)
    }

    /// Entries with keys `>= start`, in key order, each block checked before
    /// it is used. Stops at the first damaged block with its error.
    pub fn entries_from<'m>(
        &'m self,
        start: &[u8],
    ) -> impl Iterator<Item = Result<MetaEntry<'m>>> + 'm {
        let first_block = self.block_for(start).unwrap_or(0);
        let start = start.to_vec();
        (first_block..self.header.blocks as usize)
            .flat_map(move |block| match self.block_entries(block) {
                Ok(entries) => entries.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(err) => vec![Err(err)],
            })
            .filter(move |entry| entry.as_ref().map_or(true, |e| e.key >= start.as_slice()))
    }

    /// Every entry in key order.
    pub fn entries(&self) -> impl Iterator<Item = Result<MetaEntry<'_>>> + '_ {
        self.entries_from(&[])
    }

    /// Checks every table block (what `verify` does; lookups check lazily).
    pub fn verify_all_blocks(&self) -> Result<()> {
        (0..self.header.blocks as usize).try_for_each(|block| self.block_entries(block).map(drop))
    }

    /// The last block whose first key is `<= key`.
    fn block_for(&self, key: &[u8]) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.header.blocks as usize);
        // Invariant: blocks before `lo` start at or below `key`; from `hi` on, above.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.fence(mid).is_some_and(|fence| fence <= key) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1)
    }

    fn pointer(&self, block: usize) -> (usize, u32, usize) {
        let at = self.pointers_start + block * BLOCK_POINTER_LEN;
        let raw = self.raw();
        (
            u32_at(raw, at) as usize,
            u32_at(raw, at + 4),
            u32_at(raw, at + 8) as usize,
        )
    }

    fn block_range(&self, block: usize) -> (usize, usize) {
        let start = self.pointer(block).0;
        let end = if block + 1 < self.header.blocks as usize {
            self.pointer(block + 1).0
        } else {
            self.header.table_len as usize
        };
        (start, end)
    }

    fn fence(&self, block: usize) -> Option<&[u8]> {
        let fences = &self.raw()[self.fences_start..self.bloom_start];
        let at = self.pointer(block).2;
        let len = u16::from_le_bytes(fences.get(at..at + 2)?.try_into().ok()?) as usize;
        fences.get(at + 2..at + 2 + len)
    }

    fn block_entries(&self, block: usize) -> Result<Vec<MetaEntry<'_>>> {
        let (start, end) = self.block_range(block);
        let table = &self.raw()[META_HEADER_LEN..META_HEADER_LEN + self.header.table_len as usize];
        let expected_crc = self.pointer(block).1;
        let damaged =
            |reason: &str| corrupt(&self.file, (META_HEADER_LEN + start) as u64, reason.into());
        if crc32fast::hash(&table[start..end]) != expected_crc {
            return Err(damaged("metadata table block checksum mismatch"));
        }
        let mut entries = Vec::with_capacity(ENTRIES_PER_BLOCK as usize);
        let mut at = start;
        while at < end {
            let (entry, next) = decode_entry(&table[..end], at)
                .ok_or_else(|| damaged("malformed metadata table entry"))?;
            entries.push(entry);
            at = next;
        }
        Ok(entries)
    }
}

fn corrupt(file: &str, offset: u64, reason: String) -> Error {
    Error::Corruption(Corruption {
        file: file.to_string(),
        offset,
        reason,
    })
}

pub use bloom::key_hash;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_segment::{RecordSpec, encode_marker, encode_record, encode_segment_header};

    /// A segment with `ops` as single-record commands; version = position + 1.
    fn segment(ops: &[(&[u8], Option<&[u8]>)]) -> Vec<u8> {
        let mut bytes = encode_segment_header(3).to_vec();
        for (i, &(key, value)) in ops.iter().enumerate() {
            let version = i as u64 + 1;
            encode_record(
                &mut bytes,
                &RecordSpec {
                    version,
                    log_index: version,
                    key,
                    value,
                    start_of_command: true,
                    end_of_command: true,
                },
            );
        }
        bytes
    }

    fn header() -> SegmentHeader {
        SegmentHeader {
            id: 3,
            rank: 3,
            compacted: false,
        }
    }

    fn built(segment: &[u8]) -> SegmentMeta {
        let bytes = build(&BuildSpec {
            segment,
            header: header(),
            bloom_bits_per_key: 10,
            live_keys_after: 7,
        })
        .unwrap();
        SegmentMeta::from_built(bytes, segment, header()).unwrap()
    }

    fn find<'m>(meta: &'m SegmentMeta, key: &[u8]) -> Option<MetaEntry<'m>> {
        meta.find(key, key_hash(key)).unwrap()
    }

    #[test]
    fn the_newest_record_of_each_key_is_found() {
        let seg = segment(&[
            (b"b", Some(b"1")),
            (b"a", Some(b"2")),
            (b"b", Some(b"3")),
            (b"c", None),
        ]);
        let meta = built(&seg);
        assert_eq!(meta.header().entries, 3);
        assert_eq!(meta.header().records, 4);
        assert_eq!(
            (meta.header().max_version, meta.header().live_keys_after),
            (4, 7)
        );
        let b = find(&meta, b"b").unwrap();
        assert_eq!((b.version, b.tombstone), (3, false));
        let record = crate::log_segment::decode_record(&seg, b.offset as usize);
        assert!(matches!(record, crate::log_segment::Decoded::Record(r) if r.value == b"3"));
        assert!(find(&meta, b"c").unwrap().tombstone);
        assert_eq!(find(&meta, b"d"), None);
        assert_eq!(find(&meta, b"0"), None);
    }

    #[test]
    fn many_keys_across_blocks_are_found_and_listed_in_order() {
        let keys: Vec<Vec<u8>> = (0..1000u32)
            .map(|i| format!("k{:05}", i * 7 % 1000).into_bytes())
            .collect();
        let ops: Vec<(&[u8], Option<&[u8]>)> = keys
            .iter()
            .map(|k| (k.as_slice(), Some(&b"v"[..])))
            .collect();
        let meta = built(&segment(&ops));
        for key in &keys {
            assert!(find(&meta, key).is_some());
        }
        assert_eq!(find(&meta, b"k01000"), None);
        let listed: Vec<Vec<u8>> = meta.entries().map(|e| e.unwrap().key.to_vec()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(listed, sorted);
        let from: Vec<Vec<u8>> = meta
            .entries_from(b"k00995")
            .map(|e| e.unwrap().key.to_vec())
            .collect();
        assert_eq!(from.len(), 5);
        meta.verify_all_blocks().unwrap();
    }

    #[test]
    fn markers_count_for_the_counters_but_name_no_key() {
        let mut seg = segment(&[(b"a", Some(b"1"))]);
        encode_marker(&mut seg, 50, 60);
        let meta = built(&seg);
        assert_eq!(meta.header().entries, 1);
        assert_eq!(
            (meta.header().max_version, meta.header().max_log_index),
            (50, 60)
        );
    }

    #[test]
    fn metadata_of_another_segment_file_is_refused() {
        let seg = segment(&[(b"a", Some(b"1"))]);
        let bytes = build(&BuildSpec {
            segment: &seg,
            header: header(),
            bloom_bits_per_key: 10,
            live_keys_after: UNKNOWN_LIVE_KEYS,
        })
        .unwrap();
        let other = segment(&[(b"a", Some(b"2"))]);
        let err = SegmentMeta::from_built(bytes, &other, header())
            .err()
            .unwrap();
        assert!(err.to_string().contains("different segment"), "{err}");
    }

    #[test]
    fn every_damaged_byte_is_detected_on_load_or_on_read() {
        let keys: Vec<Vec<u8>> = (0..40u32)
            .map(|i| format!("key{i:03}").into_bytes())
            .collect();
        let ops: Vec<(&[u8], Option<&[u8]>)> = keys
            .iter()
            .map(|k| (k.as_slice(), Some(&b"v"[..])))
            .collect();
        let seg = segment(&ops);
        let good = build(&BuildSpec {
            segment: &seg,
            header: header(),
            bloom_bits_per_key: 10,
            live_keys_after: 1,
        })
        .unwrap();
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            let Ok(meta) = SegmentMeta::from_built(bad, &seg, header()) else {
                continue;
            };
            assert!(
                meta.verify_all_blocks().is_err(),
                "a flip at byte {at} went unnoticed"
            );
        }
    }

    #[test]
    fn a_damaged_segment_is_not_described() {
        let mut seg = segment(&[(b"a", Some(b"1")), (b"b", Some(b"2"))]);
        let last = seg.len() - 1;
        seg[last] ^= 1;
        let err = build(&BuildSpec {
            segment: &seg,
            header: header(),
            bloom_bits_per_key: 10,
            live_keys_after: 0,
        })
        .unwrap_err();
        assert!(matches!(err, Error::Corruption(_)), "{err}");
    }

    #[test]
    fn an_empty_segment_has_empty_metadata() {
        let seg = segment(&[]);
        let meta = built(&seg);
        assert_eq!(meta.header().entries, 0);
        assert_eq!(find(&meta, b"a"), None);
        assert_eq!(meta.entries().count(), 0);
    }
}
