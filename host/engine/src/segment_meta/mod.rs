//! Per-segment metadata: the segment's keys in sorted order (as offsets of
//! their newest records), a sparse index of every 16th key, and a Bloom
//! filter. Written when a segment is sealed or written by compaction, so
//! that a key that is not in the hot index can be found without the
//! segment being scanned, and so that a restart need not replay the log.
//!
//! The table holds only record offsets: keys, versions and lengths are
//! read from the records themselves, whose checksums are verified on every
//! such read, so damage in the segment is an error, never a silent miss.
//! The file is memory-mapped; opening it checks the header, that it
//! describes this very segment file (length and a CRC of its tail), and one
//! CRC over everything after the header. Metadata that is missing or fails
//! a check is rebuilt from the segment by the caller.

mod bloom;
mod layout;

use std::fs::File;

use memmap2::Mmap;

use layout::{
    ENTRIES_PER_BLOCK, FENCE_POINTER_LEN, META_HEADER_LEN, TABLE_ENTRY_LEN, decode_header,
    encode_header, segment_tail_crc, u32_at,
};
pub use layout::{MetaEntry, MetaHeader, UNKNOWN_LIVE_KEYS};

use crate::data_dir::DataDir;
use crate::error::{Corruption, Error, IoContext, Result};
use crate::log_segment::{Decoded, RecordKind, SegmentHeader, decode_record, scan_segment};

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
    let mut table = Vec::with_capacity(entries.len() * TABLE_ENTRY_LEN);
    let mut fence_pointers = Vec::new();
    let mut fences = Vec::new();
    for block in entries.chunks(ENTRIES_PER_BLOCK as usize) {
        fence_pointers.extend_from_slice(&(fences.len() as u32).to_le_bytes());
        fences.extend_from_slice(&(block[0].key.len() as u16).to_le_bytes());
        fences.extend_from_slice(block[0].key);
        for entry in block {
            table.extend_from_slice(&entry.offset.to_le_bytes());
            bloom::insert(&mut bloom_bits, hash_count, bloom::key_hash(entry.key));
        }
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
    let mut body = crc32fast::Hasher::new();
    for part in [&table, &fence_pointers, &fences, &bloom_bits] {
        body.update(part);
    }
    let mut out = Vec::with_capacity(
        META_HEADER_LEN + table.len() + fence_pointers.len() + fences.len() + bloom_bits.len(),
    );
    out.extend_from_slice(&encode_header(&header, body.finalize()));
    for part in [&table, &fence_pointers, &fences, &bloom_bits] {
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

/// A loaded, checked metadata file. Its lookups take the bytes of the
/// segment it describes.
pub struct SegmentMeta {
    file: String,
    segment_file: String,
    bytes: Backing,
    header: MetaHeader,
    fence_pointers_start: usize,
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

    /// The encoded metadata, as its file holds (or will hold) it.
    pub fn raw_bytes(&self) -> &[u8] {
        match &self.bytes {
            Backing::Map(map) => &map[..],
            Backing::Heap(vec) => &vec[..],
        }
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
        let (header, body_crc) = decode_header(raw, &file).map_err(Error::Corruption)?;
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
        if crc32fast::hash(&raw[META_HEADER_LEN..]) != body_crc {
            return Err(corrupt(
                &file,
                META_HEADER_LEN as u64,
                "metadata checksum mismatch".into(),
            ));
        }
        let fence_pointers_start = META_HEADER_LEN + header.table_len as usize;
        let fences_start = fence_pointers_start + header.blocks as usize * FENCE_POINTER_LEN;
        let meta = SegmentMeta {
            segment_file: crate::log_segment::segment_file_name(expected.id),
            file,
            bloom_start: raw.len() - header.bloom_len as usize,
            bytes,
            header,
            fence_pointers_start,
            fences_start,
        };
        meta.check_structure(segment.len())?;
        Ok(meta)
    }

    /// The checksum holds, but a search also needs offsets inside the
    /// segment and fences in order.
    fn check_structure(&self, segment_len: usize) -> Result<()> {
        let bad = |at: usize, reason: &str| corrupt(&self.file, at as u64, reason.into());
        if self.fences_start > self.bloom_start {
            return Err(bad(self.fence_pointers_start, "metadata sections overlap"));
        }
        for entry in 0..self.header.entries as usize {
            if self.offset(entry) as usize >= segment_len {
                return Err(bad(
                    META_HEADER_LEN + entry * TABLE_ENTRY_LEN,
                    "record offset past the segment",
                ));
            }
        }
        let mut previous: Option<&[u8]> = None;
        for block in 0..self.header.blocks as usize {
            let fence = self.fence(block);
            if fence.is_none() || previous.is_some_and(|p| fence.is_some_and(|f| p >= f)) {
                return Err(bad(
                    self.fence_pointers_start + block * FENCE_POINTER_LEN,
                    "metadata fences out of order or range",
                ));
            }
            previous = fence;
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

    /// Size of the metadata file.
    pub fn file_len(&self) -> u64 {
        self.raw().len() as u64
    }

    /// Bytes a lookup keeps hot: fences and Bloom filter.
    pub fn index_bytes(&self) -> u64 {
        (self.raw().len() - self.fence_pointers_start) as u64
    }

    /// `false`: the key is certainly not in the segment.
    pub fn may_contain(&self, key_hash: u64) -> bool {
        bloom::may_contain(
            &self.raw()[self.bloom_start..],
            self.header.bloom_hash_count,
            key_hash,
        )
    }

    /// The newest record of `key` in `segment` (the file this describes).
    pub fn find<'s>(
        &self,
        segment: &'s [u8],
        key: &[u8],
        key_hash: u64,
    ) -> Result<Option<MetaEntry<'s>>> {
        if !self.may_contain(key_hash) {
            return Ok(None);
        }
        let Some(block) = self.block_for(key) else {
            return Ok(None);
        };
        // Binary search within the block (at most 16 entries, 4 reads).
        let (mut lo, mut hi) = self.block_entries(block);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let entry = self.entry(segment, mid)?;
            match entry.key.cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Equal => return Ok(Some(entry)),
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Ok(None)
    }

    /// Entries with keys `>= start`, in key order. Each record is read and
    /// checked; the iteration stops at the first damaged one with its error.
    pub fn entries_from<'s>(
        &'s self,
        segment: &'s [u8],
        start: &[u8],
    ) -> impl Iterator<Item = Result<MetaEntry<'s>>> + 's {
        let first = match self.block_for(start) {
            Some(block) => self.block_entries(block).0,
            None => 0,
        };
        let start = start.to_vec();
        (first..self.header.entries as usize)
            .map(move |i| self.entry(segment, i))
            .filter(move |entry| entry.as_ref().map_or(true, |e| e.key >= start.as_slice()))
    }

    /// Every entry in key order.
    pub fn entries<'s>(
        &'s self,
        segment: &'s [u8],
    ) -> impl Iterator<Item = Result<MetaEntry<'s>>> + 's {
        self.entries_from(segment, &[])
    }

    /// Reads every entry's record (what `verify` does; lookups read one
    /// block's worth).
    pub fn verify_entries(&self, segment: &[u8]) -> Result<()> {
        let mut previous: Option<&[u8]> = None;
        for entry in self.entries(segment) {
            let entry = entry?;
            if previous.is_some_and(|p| p >= entry.key) {
                return Err(corrupt(
                    &self.file,
                    META_HEADER_LEN as u64,
                    "metadata table out of key order".into(),
                ));
            }
            previous = Some(entry.key);
        }
        Ok(())
    }

    /// Entry `i`, completed from its record in `segment`.
    fn entry<'s>(&self, segment: &'s [u8], i: usize) -> Result<MetaEntry<'s>> {
        let offset = self.offset(i);
        match decode_record(segment, offset as usize) {
            Decoded::Record(record) if record.kind != RecordKind::Marker => Ok(MetaEntry {
                key: record.key,
                offset,
                len: record.len as u32,
                version: record.version,
                tombstone: record.kind == RecordKind::Tombstone,
            }),
            Decoded::Record(_) => Err(corrupt(
                &self.file,
                (META_HEADER_LEN + i * TABLE_ENTRY_LEN) as u64,
                "metadata names a marker record".into(),
            )),
            Decoded::End => Err(corrupt(
                &self.segment_file,
                u64::from(offset),
                "metadata names the end of the log".into(),
            )),
            Decoded::Invalid(reason) => Err(corrupt(
                &self.segment_file,
                u64::from(offset),
                reason.into(),
            )),
        }
    }

    fn offset(&self, i: usize) -> u32 {
        u32_at(self.raw(), META_HEADER_LEN + i * TABLE_ENTRY_LEN)
    }

    /// Entries `lo..hi` of a block.
    fn block_entries(&self, block: usize) -> (usize, usize) {
        let lo = block * ENTRIES_PER_BLOCK as usize;
        let hi = (lo + ENTRIES_PER_BLOCK as usize).min(self.header.entries as usize);
        (lo, hi)
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

    fn fence(&self, block: usize) -> Option<&[u8]> {
        let raw = self.raw();
        let fences = &raw[self.fences_start..self.bloom_start];
        let at = u32_at(raw, self.fence_pointers_start + block * FENCE_POINTER_LEN) as usize;
        let len = u16::from_le_bytes(fences.get(at..at + 2)?.try_into().ok()?) as usize;
        fences.get(at + 2..at + 2 + len)
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

    /// `key000`..`key039`, each set to `v`.
    fn forty_keys() -> Vec<u8> {
        let keys: Vec<Vec<u8>> = (0..40u32)
            .map(|i| format!("key{i:03}").into_bytes())
            .collect();
        let ops: Vec<(&[u8], Option<&[u8]>)> = keys
            .iter()
            .map(|k| (k.as_slice(), Some(&b"v"[..])))
            .collect();
        segment(&ops)
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

    fn find<'s>(meta: &SegmentMeta, segment: &'s [u8], key: &[u8]) -> Option<MetaEntry<'s>> {
        meta.find(segment, key, key_hash(key)).unwrap()
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
        let b = find(&meta, &seg, b"b").unwrap();
        assert_eq!((b.version, b.tombstone), (3, false));
        let record = crate::log_segment::decode_record(&seg, b.offset as usize);
        assert!(matches!(record, crate::log_segment::Decoded::Record(r) if r.value == b"3"));
        assert!(find(&meta, &seg, b"c").unwrap().tombstone);
        assert_eq!(find(&meta, &seg, b"d"), None);
        assert_eq!(find(&meta, &seg, b"0"), None);
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
        let seg = segment(&ops);
        let meta = built(&seg);
        for key in &keys {
            assert!(find(&meta, &seg, key).is_some());
        }
        assert_eq!(find(&meta, &seg, b"k01000"), None);
        let listed: Vec<Vec<u8>> = meta
            .entries(&seg)
            .map(|e| e.unwrap().key.to_vec())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(listed, sorted);
        let from: Vec<Vec<u8>> = meta
            .entries_from(&seg, b"k00995")
            .map(|e| e.unwrap().key.to_vec())
            .collect();
        assert_eq!(from.len(), 5);
        meta.verify_entries(&seg).unwrap();
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

    fn forty_keys_metadata(seg: &[u8]) -> Vec<u8> {
        build(&BuildSpec {
            segment: seg,
            header: header(),
            bloom_bits_per_key: 10,
            live_keys_after: 1,
        })
        .unwrap()
    }

    #[test]
    fn every_damaged_byte_is_detected_on_load() {
        let seg = forty_keys();
        let good = forty_keys_metadata(&seg);
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            assert!(
                SegmentMeta::from_built(bad, &seg, header()).is_err(),
                "a flip at byte {at} went unnoticed"
            );
        }
    }

    /// Sets a u64 header field of metadata `bytes` and makes its header
    /// checksum right again: a crafted file, not a damaged one.
    fn with_field(bytes: &[u8], at: usize, value: u64) -> Vec<u8> {
        let mut crafted = bytes.to_vec();
        crafted[at..at + 8].copy_from_slice(&value.to_le_bytes());
        let crc = crc32fast::hash(&crafted[0..120]);
        crafted[120..124].copy_from_slice(&crc.to_le_bytes());
        crafted
    }

    #[test]
    fn crafted_header_fields_are_refused_without_overflow() {
        let seg = forty_keys();
        let good = forty_keys_metadata(&seg);
        // entries (40), table_len (80), bloom_len (96): sizes whose
        // products and sums overflow; max_version (56), max_log_index (64):
        // counters no writer produces.
        for (at, value) in [
            (40, u64::MAX / 2),
            (80, u64::MAX - 64),
            (96, u64::MAX - 64),
            (56, u64::MAX),
            (64, crate::log_segment::MAX_COUNTER + 1),
        ] {
            let crafted = with_field(&good, at, value);
            let err = SegmentMeta::from_built(crafted, &seg, header()).err();
            assert!(
                matches!(&err, Some(Error::Corruption(c)) if c.reason.contains("inconsistent")),
                "field at {at} = {value}: {err:?}"
            );
        }
    }

    #[test]
    fn damage_in_the_segment_is_an_error_not_a_miss() {
        let mut seg = forty_keys();
        let meta = built(&seg);
        // Damage a record's key after the metadata was built: a lookup
        // that reads it reports the segment and the offset.
        let entry = find(&meta, &seg, b"key017").unwrap();
        let at = entry.offset as usize + crate::log_segment::RECORD_HEADER_LEN;
        seg[at] ^= 1;
        let err = meta.find(&seg, b"key017", key_hash(b"key017")).unwrap_err();
        assert!(err.to_string().contains("seg-0000000003.log"), "{err}");
        assert!(meta.verify_entries(&seg).is_err());
    }

    #[test]
    fn metadata_is_small() {
        let keys: Vec<Vec<u8>> = (0..1600u32)
            .map(|i| format!("{i:016}").into_bytes())
            .collect();
        let ops: Vec<(&[u8], Option<&[u8]>)> = keys
            .iter()
            .map(|k| (k.as_slice(), Some(&[7u8; 100][..])))
            .collect();
        let bytes = build(&BuildSpec {
            segment: &segment(&ops),
            header: header(),
            bloom_bits_per_key: 10,
            live_keys_after: 1,
        })
        .unwrap();
        let per_key = (bytes.len() - META_HEADER_LEN) as f64 / 1600.0;
        // 4 (offset) + 18/16 (fence) + 4/16 (fence pointer) + 10/8 (Bloom).
        assert!(per_key < 7.0, "{per_key} bytes per key");
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
        assert_eq!(find(&meta, &seg, b"a"), None);
        assert_eq!(meta.entries(&seg).count(), 0);
    }
}
