//! Byte layout of a metadata file `seg-NNNNNNNNNN.meta` (see `docs/format.md`).
//!
//! ```text
//! header   128 bytes (below), CRC32 over bytes 0..120 at 120
//! table    one u32 per key, the offset of the key's newest record in the
//!          segment, sorted by the record's key
//! fences   per block of ENTRIES_PER_BLOCK entries, the offset (u32, within
//!          the fence keys) of its first key
//! keys     the first key of every block: key_len u16 | key
//! bloom    the Bloom filter's bits (see bloom.rs)
//! ```
//! The table holds no keys, versions or lengths: they are in the records,
//! read (and checksummed) from the segment when needed. That keeps the
//! metadata at about 7 bytes per key. The CRC at header byte 124 covers
//! everything after the header and is checked when the file is loaded.

use crate::error::Corruption;
use crate::log_segment::MAX_COUNTER;

pub const META_MAGIC: [u8; 8] = *b"HTKVMETA";
pub const META_FORMAT_VERSION: u32 = 2;
pub const META_HEADER_LEN: usize = 128;
/// Table entries per block: the sparse index has one key per block.
pub const ENTRIES_PER_BLOCK: u32 = 16;
pub const TABLE_ENTRY_LEN: usize = 4;
pub const FENCE_POINTER_LEN: usize = 4;
/// `live_keys_after` when it is not known (a file rebuilt after a crash).
pub const UNKNOWN_LIVE_KEYS: u64 = u64::MAX;

/// Everything in a metadata header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetaHeader {
    pub segment_id: u32,
    pub segment_rank: u32,
    pub segment_compacted: bool,
    /// Length of the segment file described; a different length means the
    /// file is not the one this metadata was built from.
    pub segment_len: u64,
    /// CRC32 of the segment's last `min(len, 4096)` bytes (same purpose).
    pub segment_tail_crc: u32,
    pub bloom_hash_count: u32,
    pub entries: u64,
    pub records: u64,
    /// Highest version and log index of any record, markers included.
    pub max_version: u64,
    pub max_log_index: u64,
    /// Live keys of the whole store just after this segment's last record,
    /// or [`UNKNOWN_LIVE_KEYS`].
    pub live_keys_after: u64,
    pub table_len: u64,
    pub blocks: u32,
    pub bloom_len: u64,
    /// Bytes of the records the table names, puts and tombstones.
    pub put_bytes: u64,
    pub tombstone_bytes: u64,
}

/// One table entry, completed from its record: the newest record of `key`
/// in the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetaEntry<'a> {
    pub key: &'a [u8],
    pub offset: u32,
    pub len: u32,
    pub version: u64,
    pub tombstone: bool,
}

pub fn segment_tail_crc(segment: &[u8]) -> u32 {
    crc32fast::hash(&segment[segment.len().saturating_sub(4096)..])
}

pub fn encode_header(h: &MetaHeader, body_crc: u32) -> [u8; META_HEADER_LEN] {
    let mut b = [0u8; META_HEADER_LEN];
    b[0..8].copy_from_slice(&META_MAGIC);
    b[8..12].copy_from_slice(&META_FORMAT_VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&u32::from(h.segment_compacted).to_le_bytes());
    b[16..20].copy_from_slice(&h.segment_id.to_le_bytes());
    b[20..24].copy_from_slice(&h.segment_rank.to_le_bytes());
    b[24..32].copy_from_slice(&h.segment_len.to_le_bytes());
    b[32..36].copy_from_slice(&h.segment_tail_crc.to_le_bytes());
    b[36..40].copy_from_slice(&h.bloom_hash_count.to_le_bytes());
    b[40..48].copy_from_slice(&h.entries.to_le_bytes());
    b[48..56].copy_from_slice(&h.records.to_le_bytes());
    b[56..64].copy_from_slice(&h.max_version.to_le_bytes());
    b[64..72].copy_from_slice(&h.max_log_index.to_le_bytes());
    b[72..80].copy_from_slice(&h.live_keys_after.to_le_bytes());
    b[80..88].copy_from_slice(&h.table_len.to_le_bytes());
    b[88..92].copy_from_slice(&h.blocks.to_le_bytes());
    b[92..96].copy_from_slice(&ENTRIES_PER_BLOCK.to_le_bytes());
    b[96..104].copy_from_slice(&h.bloom_len.to_le_bytes());
    b[104..112].copy_from_slice(&h.put_bytes.to_le_bytes());
    b[112..120].copy_from_slice(&h.tombstone_bytes.to_le_bytes());
    let crc = crc32fast::hash(&b[0..120]);
    b[120..124].copy_from_slice(&crc.to_le_bytes());
    b[124..128].copy_from_slice(&body_crc.to_le_bytes());
    b
}

/// Decodes and checks a header; returns it with the body's CRC.
pub fn decode_header(bytes: &[u8], file: &str) -> Result<(MetaHeader, u32), Corruption> {
    let bad = |offset: u64, reason: String| Corruption {
        file: file.to_string(),
        offset,
        reason,
    };
    if bytes.len() < META_HEADER_LEN {
        return Err(bad(0, "metadata header is truncated".into()));
    }
    if bytes[0..8] != META_MAGIC {
        return Err(bad(0, "not a Hightower metadata file (bad magic)".into()));
    }
    if crc32fast::hash(&bytes[0..120]) != u32_at(bytes, 120) {
        return Err(bad(120, "metadata header checksum mismatch".into()));
    }
    let version = u32_at(bytes, 8);
    if version != META_FORMAT_VERSION {
        return Err(bad(
            8,
            format!("metadata format version {version} is not {META_FORMAT_VERSION}"),
        ));
    }
    let flags = u32_at(bytes, 12);
    if flags > 1 {
        return Err(bad(12, format!("unknown metadata flags {flags:#x}")));
    }
    if u32_at(bytes, 92) != ENTRIES_PER_BLOCK {
        return Err(bad(92, "unexpected entries per block".into()));
    }
    let header = MetaHeader {
        segment_id: u32_at(bytes, 16),
        segment_rank: u32_at(bytes, 20),
        segment_compacted: flags == 1,
        segment_len: u64_at(bytes, 24),
        segment_tail_crc: u32_at(bytes, 32),
        bloom_hash_count: u32_at(bytes, 36),
        entries: u64_at(bytes, 40),
        records: u64_at(bytes, 48),
        max_version: u64_at(bytes, 56),
        max_log_index: u64_at(bytes, 64),
        live_keys_after: u64_at(bytes, 72),
        table_len: u64_at(bytes, 80),
        blocks: u32_at(bytes, 88),
        bloom_len: u64_at(bytes, 96),
        put_bytes: u64_at(bytes, 104),
        tombstone_bytes: u64_at(bytes, 112),
    };
    // The fence keys have no length field: at least 2 bytes per block.
    // Every field may be anything (a crafted file whose checksums hold):
    // the sums are checked, an overflow is an inconsistent header.
    let min_len = (META_HEADER_LEN as u64)
        .checked_add(header.table_len)
        .and_then(|n| n.checked_add(u64::from(header.blocks) * (FENCE_POINTER_LEN as u64 + 2)))
        .and_then(|n| n.checked_add(header.bloom_len));
    let consistent = header.entries.checked_mul(TABLE_ENTRY_LEN as u64) == Some(header.table_len)
        && u64::from(header.blocks) == header.entries.div_ceil(u64::from(ENTRIES_PER_BLOCK))
        && (1..=30).contains(&header.bloom_hash_count)
        && header.bloom_len >= 8
        && header.max_version <= MAX_COUNTER
        && header.max_log_index <= MAX_COUNTER;
    match min_len {
        Some(min_len) if consistent && min_len <= bytes.len() as u64 => {}
        _ => {
            return Err(bad(
                36,
                format!(
                    "inconsistent metadata header ({} bytes in the file, {} described)",
                    bytes.len(),
                    min_len.map_or("more than 2^64".to_string(), |n| format!("at least {n}")),
                ),
            ));
        }
    }
    Ok((header, u32_at(bytes, 124)))
}

pub fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

pub fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}
