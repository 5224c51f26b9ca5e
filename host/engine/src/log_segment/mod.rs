//! Segment files: their byte format, the scanner that recovers them, the
//! writer of the active segment and the memory maps readers use.

mod active;
mod format;
mod mapped;
mod scan;

pub use active::{ActiveSegment, sync_file_data};
pub use format::{
    Decoded, MAX_COUNTER, MAX_FORMAT_KEY_BYTES, MAX_FORMAT_VALUE_BYTES, RECORD_HEADER_LEN, Record,
    RecordKind, RecordSpec, SEGMENT_HEADER_LEN, SegmentHeader, check_segment_header, decode_record,
    encode_header, encode_marker, encode_record, encoded_record_len, parse_segment_file_name,
    segment_file_name,
};
#[cfg(any(test, feature = "test-hooks"))]
pub use format::{MARKER_KEY, encode_segment_header};
pub use mapped::MappedSegment;
#[cfg(any(test, feature = "test-hooks"))]
pub use scan::find_next_record;
pub use scan::{Located, ScanReport, scan_segment};
