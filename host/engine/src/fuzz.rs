//! Entry points of the fuzz targets (`host/engine/fuzz`, cargo-fuzz) and
//! of their bounded runs inside the test suite (`tests/fuzz_inputs.rs`):
//! the record decoder, the metadata loader and the snapshot reader. Each
//! takes arbitrary bytes, must never panic, and checks what must hold of
//! whatever it accepts. Behind the `test-hooks` feature; not API.
//!
//! Checksums stop random bytes at the first check, so the first byte of an
//! input chooses a mode: odd means "fix every checksum first", which lets
//! a fuzzer reach the structure behind them (what a crafted file, rather
//! than a damaged one, looks like).

use std::sync::OnceLock;

use crate::command::Limits;
use crate::log_segment::{
    Decoded, RECORD_HEADER_LEN, RecordKind, RecordSpec, SEGMENT_HEADER_LEN, SegmentHeader,
    check_segment_header, decode_record, encode_marker, encode_record, encode_segment_header,
    find_next_record, scan_segment,
};
use crate::segment_meta::{BuildSpec, SegmentMeta, key_hash};
use crate::snapshot::{ENTRY_HEADER_LEN, HEADER_LEN, ImageEntry, ImageReader};

/// Decoded records and offsets visited at most per input, so that a large
/// input stays a fast one.
const MAX_OFFSETS_PROBED: usize = 512;

/// The mode byte and the rest.
fn split_mode(data: &[u8]) -> Option<(bool, &[u8])> {
    let (&mode, rest) = data.split_first()?;
    Some((mode & 1 == 1, rest))
}

// ---------------------------------------------------------------------------
// Record decoder: a segment file as recovery and `verify` scan it.
// ---------------------------------------------------------------------------

/// Scans `data` (after the mode byte) as a whole segment file.
pub fn record_decoder(data: &[u8]) {
    let Some((fix, rest)) = split_mode(data) else {
        return;
    };
    let mut bytes = rest.to_vec();
    if fix {
        fix_segment_checksums(&mut bytes);
    }
    check_scan(&bytes);
    let _ = check_segment_header(&bytes, 1, "fuzz");
    for offset in 0..bytes.len().min(MAX_OFFSETS_PROBED) {
        if let Decoded::Record(record) = decode_record(&bytes, offset) {
            check_round_trip(&bytes, offset, &record);
        }
    }
    if let Some(next) = find_next_record(&bytes, SEGMENT_HEADER_LEN.min(bytes.len())) {
        assert!(
            matches!(decode_record(&bytes, next), Decoded::Record(r) if r.start_of_command),
            "find_next_record returned {next}, where no command starts"
        );
    }
}

fn check_scan(bytes: &[u8]) {
    let mut records = 0u64;
    let mut last_end = 0usize;
    let report = scan_segment(bytes, |command| {
        assert!(!command.is_empty(), "an empty command");
        assert!(command[0].1.start_of_command, "a command without its start");
        assert!(
            command[command.len() - 1].1.end_of_command,
            "a command without its end"
        );
        for &(offset, record) in command {
            assert!(offset >= last_end, "records out of order");
            assert_eq!(decode_record(bytes, offset), Decoded::Record(record));
            last_end = offset + record.len;
            records += 1;
        }
    });
    assert!(report.valid_end <= bytes.len());
    assert!(report.valid_end >= last_end, "a command past the valid end");
    assert!(report.records >= records && report.commands <= records);
    for damage in &report.damage {
        let ordered = damage.start <= damage.offset && damage.offset <= damage.end;
        assert!(ordered && damage.end <= bytes.len(), "{damage:?}");
    }
}

/// A decoded put or tombstone encodes back to exactly its bytes.
fn check_round_trip(bytes: &[u8], offset: usize, record: &crate::log_segment::Record<'_>) {
    let mut again = Vec::new();
    match record.kind {
        RecordKind::Marker => {
            if record.key != crate::log_segment::MARKER_KEY
                || !(record.start_of_command && record.end_of_command)
            {
                return; // The decoder ignores a marker's key and flags.
            }
            encode_marker(&mut again, record.version, record.log_index);
        }
        RecordKind::Put | RecordKind::Tombstone => {
            let spec = RecordSpec {
                version: record.version,
                log_index: record.log_index,
                key: record.key,
                value: (record.kind == RecordKind::Put).then_some(record.value),
                start_of_command: record.start_of_command,
                end_of_command: record.end_of_command,
            };
            encode_record(&mut again, &spec);
        }
    }
    assert_eq!(&bytes[offset..offset + record.len], &again[..]);
}

/// Rewrites the segment header's checksum and, walking record by record,
/// each record's.
fn fix_segment_checksums(bytes: &mut [u8]) {
    if bytes.len() >= SEGMENT_HEADER_LEN {
        let crc = crc32fast::hash(&bytes[0..24]);
        bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    }
    let mut pos = SEGMENT_HEADER_LEN;
    while pos + RECORD_HEADER_LEN <= bytes.len() {
        let Some(end) = framed_end(bytes, pos, RECORD_HEADER_LEN, 22) else {
            return;
        };
        let crc = crc32fast::hash(&bytes[pos + 4..end]);
        bytes[pos..pos + 4].copy_from_slice(&crc.to_le_bytes());
        pos = end;
    }
}

// ---------------------------------------------------------------------------
// Metadata loader: a metadata file describing a fixed, sound segment.
// ---------------------------------------------------------------------------

/// The segment every metadata input is loaded against: 40 puts over two
/// blocks, an overwrite, a tombstone and a marker.
fn meta_segment() -> &'static (Vec<u8>, SegmentHeader) {
    static SEGMENT: OnceLock<(Vec<u8>, SegmentHeader)> = OnceLock::new();
    SEGMENT.get_or_init(|| {
        let mut bytes = encode_segment_header(7).to_vec();
        let mut version = 0;
        let mut put = |bytes: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>| {
            version += 1;
            let spec = RecordSpec {
                version,
                log_index: version,
                key,
                value,
                start_of_command: true,
                end_of_command: true,
            };
            encode_record(bytes, &spec);
        };
        for i in 0..40u32 {
            put(&mut bytes, format!("key{i:03}").as_bytes(), Some(b"value"));
        }
        put(&mut bytes, b"key007", Some(b"newer"));
        put(&mut bytes, b"key011", None);
        encode_marker(&mut bytes, 60, 70);
        let header = SegmentHeader {
            id: 7,
            rank: 7,
            compacted: false,
        };
        (bytes, header)
    })
}

/// Loads `data` (after the mode byte) as the metadata of [`meta_segment`],
/// then looks up, lists and verifies through it.
pub fn metadata_loader(data: &[u8]) {
    let Some((fix, rest)) = split_mode(data) else {
        return;
    };
    let (segment, header) = meta_segment();
    let mut bytes = rest.to_vec();
    if fix {
        fix_meta_checksums(&mut bytes, segment, *header);
    }
    let Ok(meta) = SegmentMeta::from_built(bytes, segment, *header) else {
        return;
    };
    let _ = (meta.file_len(), meta.index_bytes(), meta.header());
    for i in 0..42u32 {
        let key = format!("key{i:03}");
        if let Ok(Some(entry)) = meta.find(segment, key.as_bytes(), key_hash(key.as_bytes())) {
            assert_eq!(entry.key, key.as_bytes(), "find returned another key");
        }
    }
    for key in [&b""[..], b"a", b"key0", b"key999", b"\xff"] {
        let _ = meta.find(segment, key, key_hash(key));
        for entry in meta.entries_from(segment, key).take(MAX_OFFSETS_PROBED) {
            if entry.is_err() {
                break;
            }
        }
    }
    let _ = meta.verify_entries(segment);
}

/// Makes the header describe `segment` and rewrites both checksums.
fn fix_meta_checksums(bytes: &mut [u8], segment: &[u8], header: SegmentHeader) {
    if bytes.len() < 128 {
        return;
    }
    bytes[12..16].copy_from_slice(&u32::from(header.compacted).to_le_bytes());
    bytes[16..20].copy_from_slice(&header.id.to_le_bytes());
    bytes[20..24].copy_from_slice(&header.rank.to_le_bytes());
    bytes[24..32].copy_from_slice(&(segment.len() as u64).to_le_bytes());
    let tail = crc32fast::hash(&segment[segment.len().saturating_sub(4096)..]);
    bytes[32..36].copy_from_slice(&tail.to_le_bytes());
    let body = crc32fast::hash(&bytes[128..]);
    bytes[124..128].copy_from_slice(&body.to_le_bytes());
    let head = crc32fast::hash(&bytes[0..120]);
    bytes[120..124].copy_from_slice(&head.to_le_bytes());
}

// ---------------------------------------------------------------------------
// Snapshot reader.
// ---------------------------------------------------------------------------

/// The limits images are read with: small, so inputs can exceed them.
pub const FUZZ_IMAGE_LIMITS: Limits = Limits {
    max_key_bytes: 64,
    max_value_bytes: 4096,
    // Not used by the reader: each entry is a command of its own.
    max_batch_ops: 1,
    max_batch_bytes: 1,
};

/// Reads `data` (after the mode byte) as a snapshot image; an image that
/// reads to the end must satisfy every promise of the format and encode
/// back to the same bytes.
pub fn snapshot_reader(data: &[u8]) {
    let Some((fix, rest)) = split_mode(data) else {
        return;
    };
    let mut bytes = rest.to_vec();
    if fix {
        fix_image_checksums(&mut bytes);
    }
    let mut input = bytes.as_slice();
    let Ok(mut reader) = ImageReader::new(&mut input, FUZZ_IMAGE_LIMITS) else {
        return;
    };
    let header = reader.header();
    let mut entries = Vec::new();
    let mut entry = ImageEntry::default();
    loop {
        match reader.next_entry(&mut entry) {
            Ok(true) => entries.push(entry.clone()),
            Ok(false) => break,
            Err(_) => {
                assert!(reader.bytes_read() <= bytes.len() as u64);
                return;
            }
        }
    }
    assert_eq!(reader.bytes_read(), bytes.len() as u64);
    assert_eq!(entries.len() as u64, header.entries);
    let mut previous = (0, 0);
    for entry in &entries {
        assert!(entry.version > previous.0 && entry.log_index >= previous.1);
        assert!(entry.version <= header.last_version && entry.log_index <= header.last_log_index);
        assert!(!entry.key.is_empty() && entry.key.len() <= FUZZ_IMAGE_LIMITS.max_key_bytes);
        assert!(entry.value.len() <= FUZZ_IMAGE_LIMITS.max_value_bytes);
        previous = (entry.version, entry.log_index);
    }
    let again = crate::snapshot::image_bytes(header, &entries);
    assert!(
        again == bytes,
        "an accepted image does not encode back to itself"
    );
}

/// Rewrites the header's, every entry's and the trailer's checksums.
fn fix_image_checksums(bytes: &mut [u8]) {
    if bytes.len() < HEADER_LEN {
        return;
    }
    let crc = crc32fast::hash(&bytes[0..40]);
    bytes[40..44].copy_from_slice(&crc.to_le_bytes());
    let entries = u64::from_le_bytes(bytes[32..40].try_into().expect("8 bytes"));
    let mut body = crc32fast::Hasher::new();
    let mut pos = HEADER_LEN;
    let mut done = 0u64;
    while done < entries && pos + ENTRY_HEADER_LEN <= bytes.len() {
        let Some(end) = framed_end(bytes, pos, ENTRY_HEADER_LEN, 20) else {
            return;
        };
        let crc = crc32fast::hash(&bytes[pos + 4..end]);
        bytes[pos..pos + 4].copy_from_slice(&crc.to_le_bytes());
        body.update(&bytes[pos..end]);
        pos = end;
        done += 1;
    }
    if done == entries && pos + 12 <= bytes.len() {
        bytes[pos + 8..pos + 12].copy_from_slice(&body.finalize().to_le_bytes());
    }
}

/// The end of the record or entry at `pos` whose `header_len`-byte header
/// holds a u16 key length at `lengths_at` and a u32 value length after it,
/// if it lies within `bytes`.
fn framed_end(bytes: &[u8], pos: usize, header_len: usize, lengths_at: usize) -> Option<usize> {
    let at = pos + lengths_at;
    let key_len = u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
    let value_len = u32_at(bytes, at + 2) as usize;
    (pos + header_len)
        .checked_add(key_len)?
        .checked_add(value_len)
        .filter(|&end| end <= bytes.len())
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

// ---------------------------------------------------------------------------
// Seeds: one sound input per target, to start fuzzers and mutations from.
// ---------------------------------------------------------------------------

/// Sound inputs (mode byte included) for each target: a segment with a
/// batch, a tombstone and a marker; the metadata of [`meta_segment`]; an
/// image of three entries.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let sound = match target {
        "record_decoder" => {
            let mut bytes = meta_segment().0.clone();
            for (i, key) in [&b"a"[..], b"b", b"c"].into_iter().enumerate() {
                let spec = RecordSpec {
                    version: 100 + i as u64,
                    log_index: 100,
                    key,
                    value: Some(b"batch"),
                    start_of_command: i == 0,
                    end_of_command: i == 2,
                };
                encode_record(&mut bytes, &spec);
            }
            bytes.extend_from_slice(&[0; 64]);
            bytes
        }
        "metadata_loader" => {
            let (segment, header) = meta_segment();
            crate::segment_meta::build(&BuildSpec {
                segment,
                header: *header,
                bloom_bits_per_key: 10,
                live_keys_after: 39,
            })
            .expect("a sound segment")
        }
        "snapshot_reader" => {
            let entries = [
                entry(3, 2, b"alpha", b"one"),
                entry(4, 2, b"beta", b""),
                entry(9, 5, b"gamma", &[7; 100]),
            ];
            let header = crate::snapshot::ImageHeader {
                last_log_index: 6,
                last_version: 10,
                entries: 3,
            };
            crate::snapshot::image_bytes(header, &entries)
        }
        other => panic!("no fuzz target {other}"),
    };
    // As is (checksums checked), and with the fix-up mode on.
    [0u8, 1]
        .into_iter()
        .map(|mode| {
            let mut input = vec![mode];
            input.extend_from_slice(&sound);
            input
        })
        .collect()
}

fn entry(version: u64, log_index: u64, key: &[u8], value: &[u8]) -> ImageEntry {
    ImageEntry {
        version,
        log_index,
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

/// The names of the targets, as `seeds` and the fuzz crate know them.
pub const TARGETS: [&str; 3] = ["record_decoder", "metadata_loader", "snapshot_reader"];
