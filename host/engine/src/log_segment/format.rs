//! Byte layout of segment headers and records (see `docs/format.md`).
//!
//! All integers are little-endian. Every record carries a CRC32 over all of
//! its bytes after the checksum field, so a reader can verify each record on
//! its own, and the scanner can tell a torn tail from corruption.

use crate::error::{Corruption, Error};

pub const SEGMENT_MAGIC: [u8; 8] = *b"HTKVSEG\0";
/// The newest segment format this build writes. Version 1 (no rank, no
/// flags) is still read.
pub const FORMAT_VERSION: u32 = 2;
/// Bytes of a segment file's header.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Bytes of a record's header (before its key and value).
pub const RECORD_HEADER_LEN: usize = 28;
/// The key length field is a u16.
pub const MAX_FORMAT_KEY_BYTES: usize = u16::MAX as usize;
/// Values over 1 GiB are refused by the format, whatever the config says.
pub const MAX_FORMAT_VALUE_BYTES: usize = 1 << 30;
/// The largest version or log index a record (or a snapshot image, or a
/// metadata file) may carry: 2^63 - 1, so the counters can never overflow
/// (the writer adds one to the highest it finds) and at least 2^63 versions
/// are left for writes after any store or image is opened. A larger value
/// is damage or a crafted file, never something the writer produced.
pub const MAX_COUNTER: u64 = i64::MAX as u64;

const KIND_PUT: u8 = 1;
const KIND_TOMBSTONE: u8 = 2;
/// A record that only carries a version and a log index (written by a
/// snapshot restore so the counters continue exactly where they were).
const KIND_MARKER: u8 = 3;
/// The key of every marker record: markers name no user key.
pub const MARKER_KEY: &[u8] = &[0];
/// Flag bit: this record is the last of its command (batch).
const FLAG_END_OF_COMMAND: u8 = 1;
/// Flag bit: this record is the first of its command. After damage the
/// scanner resumes only at such a record, so no partial batch survives.
const FLAG_START_OF_COMMAND: u8 = 2;
const KNOWN_FLAGS: u8 = FLAG_END_OF_COMMAND | FLAG_START_OF_COMMAND;

/// Segment file name for an id: `seg-0000000042.log`. Zero-padded so a
/// directory listing sorts in log order.
pub fn segment_file_name(id: u32) -> String {
    format!("seg-{id:010}.log")
}

/// The id in a segment file name, or `None` for any other file.
pub fn parse_segment_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What a segment header says about its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub id: u32,
    /// Position in the log's order: records in a segment of higher rank are
    /// newer than those in a segment of lower rank. A segment the writer
    /// filled has its own id as rank; a compaction output takes the rank of
    /// the newest segment it replaces, so ids stay unique while the order of
    /// the data is kept. Segments of equal rank hold no key in common with a
    /// different version.
    pub rank: u32,
    /// Written whole by compaction (never appended to): any damage in it is
    /// corruption, never a torn tail.
    pub compacted: bool,
}

/// Header flag bit: the segment is a compaction output.
const HEADER_FLAG_COMPACTED: u32 = 1;

/// The header of a segment the writer fills: rank = id.
pub fn encode_segment_header(segment_id: u32) -> [u8; SEGMENT_HEADER_LEN] {
    encode_header(SegmentHeader {
        id: segment_id,
        rank: segment_id,
        compacted: false,
    })
}

pub fn encode_header(header: SegmentHeader) -> [u8; SEGMENT_HEADER_LEN] {
    assert!(header.rank <= header.id, "a rank never exceeds the id");
    let mut bytes = [0u8; SEGMENT_HEADER_LEN];
    bytes[0..8].copy_from_slice(&SEGMENT_MAGIC);
    bytes[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let flags = if header.compacted {
        HEADER_FLAG_COMPACTED
    } else {
        0
    };
    bytes[12..16].copy_from_slice(&flags.to_le_bytes());
    bytes[16..20].copy_from_slice(&header.id.to_le_bytes());
    bytes[20..24].copy_from_slice(&header.rank.to_le_bytes());
    let crc = crc32fast::hash(&bytes[0..24]);
    bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// Checks a segment header: magic, checksum, then version (a newer one is
/// reported as such), flags, reserved bytes and id.
pub fn check_segment_header(
    bytes: &[u8],
    expected_id: u32,
    file: &str,
) -> Result<SegmentHeader, Error> {
    let corrupt = |offset, reason: &str| {
        Error::Corruption(Corruption {
            file: file.to_string(),
            offset,
            reason: reason.to_string(),
        })
    };
    if bytes.len() < SEGMENT_HEADER_LEN {
        return Err(corrupt(0, "segment header is truncated"));
    }
    if bytes[0..8] != SEGMENT_MAGIC {
        return Err(corrupt(0, "not a Hightower segment (bad magic)"));
    }
    // The magic, the version and the checksum over bytes 0..24 keep their
    // places in every format version, so the checksum is checked first: a
    // damaged version field is corruption, not a "newer format".
    if crc32fast::hash(&bytes[0..24]) != u32_at(bytes, 24) {
        return Err(corrupt(24, "segment header checksum mismatch"));
    }
    let version = u32_at(bytes, 8);
    if version > FORMAT_VERSION {
        return Err(Error::UnsupportedFormat {
            file: file.to_string(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if version == 0 {
        return Err(corrupt(8, "format version 0"));
    }
    if u32_at(bytes, 28) != 0 {
        return Err(corrupt(28, "reserved header bytes are not zero"));
    }
    let flags = u32_at(bytes, 12);
    let known_flags = if version == 1 {
        0
    } else {
        HEADER_FLAG_COMPACTED
    };
    if flags & !known_flags != 0 {
        return Err(corrupt(12, "unknown segment flags"));
    }
    // Version 1 stored the id as a u64 and had no rank (rank = id).
    let (id, rank) = if version == 1 {
        (u64_at(bytes, 16), u64_at(bytes, 16))
    } else {
        (u64::from(u32_at(bytes, 16)), u64::from(u32_at(bytes, 20)))
    };
    if id != u64::from(expected_id) {
        return Err(corrupt(
            16,
            &format!("header names segment {id}, file name says {expected_id}"),
        ));
    }
    if rank > id {
        return Err(corrupt(20, &format!("rank {rank} exceeds the id {id}")));
    }
    Ok(SegmentHeader {
        id: expected_id,
        rank: rank as u32,
        compacted: flags & HEADER_FLAG_COMPACTED != 0,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Put,
    Tombstone,
    /// Sets the version and log index counters; names no key.
    Marker,
}

/// A decoded record, borrowing key and value from the segment bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub version: u64,
    pub log_index: u64,
    pub kind: RecordKind,
    pub start_of_command: bool,
    pub end_of_command: bool,
    pub key: &'a [u8],
    pub value: &'a [u8],
    /// Total bytes of the record, header included.
    pub len: usize,
}

/// What to write for one record.
#[derive(Clone, Copy, Debug)]
pub struct RecordSpec<'a> {
    pub version: u64,
    pub log_index: u64,
    pub key: &'a [u8],
    /// `None` writes a tombstone.
    pub value: Option<&'a [u8]>,
    pub start_of_command: bool,
    pub end_of_command: bool,
}

pub fn encoded_record_len(key_len: usize, value_len: usize) -> usize {
    RECORD_HEADER_LEN + key_len + value_len
}

/// Appends one record to `out` and returns its length.
pub fn encode_record(out: &mut Vec<u8>, spec: &RecordSpec<'_>) -> usize {
    let kind = if spec.value.is_some() {
        KIND_PUT
    } else {
        KIND_TOMBSTONE
    };
    encode_record_of_kind(out, spec, kind)
}

/// Appends a marker record: a command of its own that sets the version and
/// log index counters. Its version may equal the previous record's.
pub fn encode_marker(out: &mut Vec<u8>, version: u64, log_index: u64) -> usize {
    let spec = RecordSpec {
        version,
        log_index,
        key: MARKER_KEY,
        value: None,
        start_of_command: true,
        end_of_command: true,
    };
    encode_record_of_kind(out, &spec, KIND_MARKER)
}

fn encode_record_of_kind(out: &mut Vec<u8>, spec: &RecordSpec<'_>, kind: u8) -> usize {
    let value = spec.value.unwrap_or(&[]);
    assert!(
        !spec.key.is_empty() && spec.key.len() <= MAX_FORMAT_KEY_BYTES,
        "key length out of format range"
    );
    assert!(
        value.len() <= MAX_FORMAT_VALUE_BYTES,
        "value length out of format range"
    );
    assert!(
        spec.version > 0 || kind == KIND_MARKER,
        "version 0 is reserved for 'no record' (only a marker carries it)"
    );
    assert!(
        spec.version <= MAX_COUNTER && spec.log_index <= MAX_COUNTER,
        "version or log index over the format's limit"
    );
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&spec.version.to_le_bytes());
    out.extend_from_slice(&spec.log_index.to_le_bytes());
    out.push(kind);
    let first_flag = if spec.start_of_command {
        FLAG_START_OF_COMMAND
    } else {
        0
    };
    let last_flag = if spec.end_of_command {
        FLAG_END_OF_COMMAND
    } else {
        0
    };
    out.push(first_flag | last_flag);
    out.extend_from_slice(&(spec.key.len() as u16).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(spec.key);
    out.extend_from_slice(value);
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

/// The result of decoding at one offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    Record(Record<'a>),
    /// Zeros where a header would start: the end of the written log.
    End,
    /// Not a valid record; the reason names what failed.
    Invalid(&'static str),
}

/// Decodes the record at `offset`, verifying its checksum.
pub fn decode_record(bytes: &[u8], offset: usize) -> Decoded<'_> {
    let rest = &bytes[offset.min(bytes.len())..];
    if rest.len() < RECORD_HEADER_LEN {
        return if rest.iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Invalid("truncated record header")
        };
    }
    let header = &rest[..RECORD_HEADER_LEN];
    if header.iter().all(|&b| b == 0) {
        return Decoded::End;
    }
    let version = u64_at(header, 4);
    let log_index = u64_at(header, 12);
    let kind = match header[20] {
        KIND_PUT => RecordKind::Put,
        KIND_TOMBSTONE => RecordKind::Tombstone,
        KIND_MARKER => RecordKind::Marker,
        _ => return Decoded::Invalid("unknown record kind"),
    };
    let flags = header[21];
    if flags & !KNOWN_FLAGS != 0 {
        return Decoded::Invalid("unknown record flags");
    }
    let key_len = u16::from_le_bytes([header[22], header[23]]) as usize;
    let value_len = u32_at(header, 24) as usize;
    // A marker may carry version 0: it records a log index applied by a
    // store that has assigned no version yet (commands that wrote nothing).
    if (version == 0 && kind != RecordKind::Marker) || key_len == 0 {
        return Decoded::Invalid("zero version or empty key");
    }
    if version > MAX_COUNTER || log_index > MAX_COUNTER {
        return Decoded::Invalid("version or log index over the format's limit");
    }
    if value_len > MAX_FORMAT_VALUE_BYTES || (kind != RecordKind::Put && value_len != 0) {
        return Decoded::Invalid("impossible value length");
    }
    let len = encoded_record_len(key_len, value_len);
    if len > rest.len() {
        return Decoded::Invalid("record extends past the end of the file");
    }
    if crc32fast::hash(&rest[4..len]) != u32_at(header, 0) {
        return Decoded::Invalid("checksum mismatch");
    }
    let key = &rest[RECORD_HEADER_LEN..RECORD_HEADER_LEN + key_len];
    let value = &rest[RECORD_HEADER_LEN + key_len..len];
    Decoded::Record(Record {
        version,
        log_index,
        kind,
        start_of_command: flags & FLAG_START_OF_COMMAND != 0,
        end_of_command: flags & FLAG_END_OF_COMMAND != 0,
        key,
        value,
        len,
    })
}

/// Could the first record of a command start here? A cheap filter before [`decode_record`].
pub fn plausible_command_start(bytes: &[u8], offset: usize) -> bool {
    bytes.len() >= offset + RECORD_HEADER_LEN
        && matches!(bytes[offset + 20], KIND_PUT | KIND_TOMBSTONE | KIND_MARKER)
        && bytes[offset + 21] & !KNOWN_FLAGS == 0
        && bytes[offset + 21] & FLAG_START_OF_COMMAND != 0
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put<'a>(version: u64, key: &'a [u8], value: &'a [u8]) -> RecordSpec<'a> {
        RecordSpec {
            version,
            log_index: version + 100,
            key,
            value: Some(value),
            start_of_command: true,
            end_of_command: true,
        }
    }

    #[test]
    fn file_names_round_trip_and_reject_others() {
        assert_eq!(segment_file_name(42), "seg-0000000042.log");
        assert_eq!(parse_segment_file_name("seg-0000000042.log"), Some(42));
        for other in [
            "seg-42.log",
            "seg-0000000042.log.corrupt",
            "LOCK",
            "seg-00000000x2.log",
            "seg-9999999999.log",
        ] {
            assert_eq!(parse_segment_file_name(other), None, "{other}");
        }
    }

    #[test]
    fn header_round_trips_and_detects_damage() {
        let header = encode_segment_header(7);
        let parsed = check_segment_header(&header, 7, "f").unwrap();
        assert_eq!((parsed.id, parsed.rank, parsed.compacted), (7, 7, false));
        assert!(
            matches!(check_segment_header(&header, 8, "f"), Err(Error::Corruption(c)) if c.offset == 16)
        );
        let mut flipped = header;
        flipped[17] ^= 1;
        assert!(
            matches!(check_segment_header(&flipped, 7, "f"), Err(Error::Corruption(c)) if c.offset == 24)
        );
        let mut magic = header;
        magic[0] = b'X';
        assert!(
            matches!(check_segment_header(&magic, 7, "f"), Err(Error::Corruption(c)) if c.reason.contains("magic"))
        );
        assert!(matches!(
            check_segment_header(&header[..20], 7, "f"),
            Err(Error::Corruption(_))
        ));
    }

    #[test]
    fn newer_format_version_is_reported_as_such() {
        let mut header = encode_segment_header(1);
        header[8..12].copy_from_slice(&3u32.to_le_bytes());
        let crc = crc32fast::hash(&header[0..24]);
        header[24..28].copy_from_slice(&crc.to_le_bytes());
        match check_segment_header(&header, 1, "seg-0000000001.log") {
            Err(Error::UnsupportedFormat {
                found: 3,
                supported: 2,
                ..
            }) => {}
            other => panic!("expected UnsupportedFormat, got {other:?}"),
        }
    }

    #[test]
    fn a_damaged_version_field_is_corruption_not_a_newer_format() {
        let mut header = encode_segment_header(1);
        header[8] ^= 2;
        assert!(
            matches!(check_segment_header(&header, 1, "f"), Err(Error::Corruption(c)) if c.offset == 24)
        );
        let mut reserved = encode_segment_header(1);
        reserved[30] = 1;
        assert!(
            matches!(check_segment_header(&reserved, 1, "f"), Err(Error::Corruption(c)) if c.offset == 28)
        );
    }

    #[test]
    fn compaction_outputs_carry_their_rank_and_flag() {
        let header = encode_header(SegmentHeader {
            id: 12,
            rank: 5,
            compacted: true,
        });
        let parsed = check_segment_header(&header, 12, "f").unwrap();
        assert_eq!((parsed.rank, parsed.compacted), (5, true));
    }

    #[test]
    fn version_1_headers_are_still_read() {
        let mut header = [0u8; SEGMENT_HEADER_LEN];
        header[0..8].copy_from_slice(&SEGMENT_MAGIC);
        header[8..12].copy_from_slice(&1u32.to_le_bytes());
        header[16..24].copy_from_slice(&9u64.to_le_bytes());
        let crc = crc32fast::hash(&header[0..24]);
        header[24..28].copy_from_slice(&crc.to_le_bytes());
        let parsed = check_segment_header(&header, 9, "f").unwrap();
        assert_eq!((parsed.id, parsed.rank, parsed.compacted), (9, 9, false));
    }

    #[test]
    fn records_round_trip() {
        let mut buf = Vec::new();
        let len = encode_record(&mut buf, &put(5, b"key", b"value"));
        assert_eq!(len, RECORD_HEADER_LEN + 8);
        let tomb = RecordSpec {
            version: 6,
            log_index: 9,
            key: b"key",
            value: None,
            start_of_command: false,
            end_of_command: false,
        };
        encode_record(&mut buf, &tomb);
        let Decoded::Record(first) = decode_record(&buf, 0) else {
            panic!()
        };
        assert_eq!(
            (first.version, first.log_index, first.kind),
            (5, 105, RecordKind::Put)
        );
        assert_eq!(
            (first.key, first.value, first.end_of_command),
            (&b"key"[..], &b"value"[..], true)
        );
        let Decoded::Record(second) = decode_record(&buf, len) else {
            panic!()
        };
        assert_eq!(
            (second.kind, second.value, second.end_of_command),
            (RecordKind::Tombstone, &b""[..], false)
        );
        assert!(first.start_of_command && !second.start_of_command);
        assert_eq!(decode_record(&buf, buf.len()), Decoded::End);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode_record(&mut buf, &put(1, b"k", b"some value"));
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut damaged = buf.clone();
                damaged[byte] ^= 1 << bit;
                match decode_record(&damaged, 0) {
                    Decoded::Invalid(_) => {}
                    other => panic!("flip at byte {byte} bit {bit} gave {other:?}"),
                }
            }
        }
    }

    #[test]
    fn counters_over_the_limit_are_invalid_even_with_a_good_checksum() {
        for (version, log_index) in [(u64::MAX, 1), (1, u64::MAX), (MAX_COUNTER + 1, 1)] {
            let mut buf = Vec::new();
            encode_record(&mut buf, &put(1, b"k", b"v"));
            buf[4..12].copy_from_slice(&version.to_le_bytes());
            buf[12..20].copy_from_slice(&log_index.to_le_bytes());
            let crc = crc32fast::hash(&buf[4..]);
            buf[0..4].copy_from_slice(&crc.to_le_bytes());
            assert_eq!(
                decode_record(&buf, 0),
                Decoded::Invalid("version or log index over the format's limit"),
                "{version} {log_index}"
            );
        }
        let mut buf = Vec::new();
        let at_limit = RecordSpec {
            log_index: MAX_COUNTER,
            ..put(MAX_COUNTER, b"k", b"v")
        };
        encode_record(&mut buf, &at_limit);
        assert!(matches!(decode_record(&buf, 0), Decoded::Record(r) if r.version == MAX_COUNTER));
    }

    #[test]
    fn zeros_are_the_end_and_a_short_tail_is_invalid() {
        assert_eq!(decode_record(&[0; 40], 0), Decoded::End);
        assert_eq!(decode_record(&[0; 3], 0), Decoded::End);
        assert_eq!(
            decode_record(&[1, 0, 0], 0),
            Decoded::Invalid("truncated record header")
        );
        let mut buf = Vec::new();
        encode_record(&mut buf, &put(1, b"k", b"v"));
        buf.pop();
        assert_eq!(
            decode_record(&buf, 0),
            Decoded::Invalid("record extends past the end of the file")
        );
    }
}
