//! Segment files: their byte format, the scanner that recovers them, the
//! writer of the active segment and the memory maps readers use.

mod active;
mod format;
mod mapped;
mod scan;

pub use active::{ActiveSegment, sync_file_data};
pub use format::{
    Decoded, FORMAT_VERSION, MARKER_KEY, MAX_COUNTER, MAX_FORMAT_KEY_BYTES, MAX_FORMAT_VALUE_BYTES,
    RECORD_HEADER_LEN, Record, RecordKind, RecordSpec, SEGMENT_HEADER_LEN, SEGMENT_MAGIC,
    SegmentHeader, check_segment_header, decode_record, encode_header, encode_marker,
    encode_record, encode_segment_header, encoded_record_len, parse_segment_file_name,
    segment_file_name,
};
pub use mapped::MappedSegment;
pub use scan::{Damage, Located, ScanReport, find_next_record, scan_segment};
