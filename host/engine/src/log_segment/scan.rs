//! Walks a segment's records, grouping them into commands and locating damage.
//!
//! The scan never stops at the first bad byte: it searches forward for the
//! next valid record, so the caller learns whether intact data follows the
//! damage. That is what tells a torn tail (nothing valid after it: a crash
//! mid-append) from corruption (valid records after it: acknowledged data
//! that must not be dropped silently).

use super::format::{Decoded, Record, SEGMENT_HEADER_LEN, decode_record, plausible_command_start};

/// A range of bytes the scan could not use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// First byte not used: the bad record, or the start of the batch it cut short.
    pub start: usize,
    /// Where the next valid record starts, or the end of the bytes.
    pub end: usize,
    /// Offset of the first invalid byte sequence (≥ `start`).
    pub offset: usize,
    pub reason: &'static str,
    /// Whether a valid record follows the damage.
    pub followed_by_valid: bool,
}

/// What a scan found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// End of the last complete command.
    pub valid_end: usize,
    pub records: u64,
    pub commands: u64,
    pub damage: Vec<Damage>,
}

impl ScanReport {
    /// Damage at the very end with nothing valid after it: a crash mid-append.
    /// Only meaningful for the active (newest) segment.
    pub fn is_torn_tail_only(&self) -> bool {
        matches!(self.damage.as_slice(), [only] if !only.followed_by_valid)
    }
}

/// One record of a command and its offset in the segment.
pub type Located<'a> = (usize, Record<'a>);

/// Scans `bytes` (a whole segment file, header included) and calls
/// `on_command` for every complete command in log order.
pub fn scan_segment<'a>(bytes: &'a [u8], mut on_command: impl FnMut(&[Located<'a>])) -> ScanReport {
    let mut report = ScanReport {
        valid_end: SEGMENT_HEADER_LEN.min(bytes.len()),
        ..ScanReport::default()
    };
    let mut pending: Vec<Located<'a>> = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    // Each iteration advances `pos` by at least one byte, so this terminates
    // within bytes.len() iterations.
    while pos <= bytes.len() {
        let bad_reason = match decode_record(bytes, pos) {
            Decoded::End if bytes[pos.min(bytes.len())..].iter().all(|&b| b == 0) => break,
            Decoded::End => "non-zero bytes after the end of the log",
            Decoded::Invalid(reason) => reason,
            Decoded::Record(record) if pending.is_empty() && !record.start_of_command => {
                "record continues a command whose start is missing"
            }
            // Neither the next record of the pending batch nor the start of
            // a command: it must not become the head of one.
            Decoded::Record(record)
                if !record.start_of_command
                    && pending
                        .last()
                        .is_some_and(|(_, last)| !continues(last, &record)) =>
            {
                "record continues a command whose start is missing"
            }
            Decoded::Record(record) => {
                // A command start after an unfinished batch: the batch was cut short.
                if pending
                    .last()
                    .is_some_and(|(_, last)| !continues(last, &record))
                {
                    report.damage.push(Damage {
                        start: pending[0].0,
                        end: pos,
                        offset: pos,
                        reason: "batch cut short",
                        followed_by_valid: true,
                    });
                    pending.clear();
                }
                report.records += 1;
                pending.push((pos, record));
                pos += record.len;
                if record.end_of_command {
                    on_command(&pending);
                    report.commands += 1;
                    report.valid_end = pos;
                    pending.clear();
                }
                continue;
            }
        };
        let start = pending.first().map_or(pos, |p| p.0);
        pending.clear();
        let next = find_next_record(bytes, pos + 1);
        report.damage.push(Damage {
            start,
            end: next.unwrap_or(bytes.len()),
            offset: pos,
            reason: bad_reason,
            followed_by_valid: next.is_some(),
        });
        match next {
            Some(next) => pos = next,
            None => return report,
        }
    }
    if let Some((start, _)) = pending.first() {
        report.damage.push(Damage {
            start: *start,
            end: bytes.len(),
            offset: pos.min(bytes.len()),
            reason: "batch without its final record",
            followed_by_valid: false,
        });
    }
    report
}

/// Whether `record` is the next record of the batch that `last` belongs to.
fn continues(last: &Record<'_>, record: &Record<'_>) -> bool {
    !record.start_of_command
        && record.log_index == last.log_index
        && last.version.checked_add(1) == Some(record.version)
}

/// The first offset at or after `from` where a valid first record of a command starts.
pub fn find_next_record(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len())
        .filter(|&at| plausible_command_start(bytes, at))
        .find(|&at| matches!(decode_record(bytes, at), Decoded::Record(r) if r.start_of_command))
}

#[cfg(test)]
mod tests {
    use super::super::format::{
        RECORD_HEADER_LEN, RecordSpec, encode_record, encode_segment_header,
    };
    use super::*;

    /// A segment with commands of the given sizes; returns bytes and command start offsets.
    fn segment(commands: &[usize]) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = encode_segment_header(1).to_vec();
        let mut starts = Vec::new();
        let mut version = 1;
        for (index, &ops) in commands.iter().enumerate() {
            starts.push(bytes.len());
            for op in 0..ops {
                let key = format!("key-{version}");
                let spec = RecordSpec {
                    version,
                    log_index: index as u64 + 1,
                    key: key.as_bytes(),
                    value: Some(b"value"),
                    start_of_command: op == 0,
                    end_of_command: op + 1 == ops,
                };
                encode_record(&mut bytes, &spec);
                version += 1;
            }
        }
        (bytes, starts)
    }

    fn scan(bytes: &[u8]) -> (ScanReport, Vec<usize>) {
        let mut sizes = Vec::new();
        let report = scan_segment(bytes, |cmd| sizes.push(cmd.len()));
        (report, sizes)
    }

    #[test]
    fn clean_segment_yields_every_command() {
        let (mut bytes, _) = segment(&[1, 3, 1]);
        let end = bytes.len();
        bytes.extend_from_slice(&[0; 4096]); // preallocated zeros
        let (report, sizes) = scan(&bytes);
        assert_eq!(sizes, vec![1, 3, 1]);
        assert_eq!(
            (report.records, report.commands, report.valid_end),
            (5, 3, end)
        );
        assert!(report.damage.is_empty());
    }

    #[test]
    fn a_truncated_last_batch_is_a_torn_tail() {
        let (bytes, starts) = segment(&[1, 3]);
        for cut in starts[1] + 1..bytes.len() {
            let (report, sizes) = scan(&bytes[..cut]);
            assert_eq!(sizes, vec![1], "cut at {cut}");
            assert_eq!(report.valid_end, starts[1]);
            assert!(
                report.is_torn_tail_only(),
                "cut at {cut}: {:?}",
                report.damage
            );
            assert_eq!(report.damage[0].start, starts[1]);
        }
    }

    #[test]
    fn damage_followed_by_valid_records_is_corruption() {
        let (mut bytes, starts) = segment(&[1, 2, 1]);
        bytes[starts[1] + 30] ^= 0x40; // inside the first record of the batch
        let (report, sizes) = scan(&bytes);
        assert_eq!(sizes, vec![1, 1], "the damaged batch is dropped whole");
        assert!(!report.is_torn_tail_only());
        let damage = &report.damage[0];
        assert_eq!(
            (damage.start, damage.end, damage.offset),
            (starts[1], starts[2], starts[1])
        );
        assert_eq!(damage.reason, "checksum mismatch");
    }

    #[test]
    fn damage_in_the_last_record_of_a_batch_drops_the_whole_batch() {
        let (mut bytes, starts) = segment(&[1, 3, 1]);
        let last_record_of_batch = starts[2] - 10;
        bytes[last_record_of_batch] ^= 1;
        let (report, sizes) = scan(&bytes);
        assert_eq!(sizes, vec![1, 1]);
        assert_eq!(report.damage[0].start, starts[1]);
        assert!(report.damage[0].followed_by_valid);
    }

    #[test]
    fn a_record_that_neither_continues_nor_starts_a_command_is_never_a_command() {
        // A batch of three whose middle record is replaced by the last
        // record of some other batch (valid on its own, with the END flag):
        // neither the pieces before it nor it may be taken as a command.
        let (mut bytes, starts) = segment(&[1, 3, 1]);
        let middle = starts[1] + RECORD_HEADER_LEN + "key-2".len() + 5;
        let mut stray = Vec::new();
        let spec = RecordSpec {
            version: 90,
            log_index: 40,
            key: b"key-3",
            value: Some(b"value"),
            start_of_command: false,
            end_of_command: true,
        };
        encode_record(&mut stray, &spec);
        bytes[middle..middle + stray.len()].copy_from_slice(&stray);
        let mut delivered = Vec::new();
        let report = scan_segment(&bytes, |command| {
            delivered.push(command.iter().map(|(_, r)| r.version).collect::<Vec<_>>())
        });
        assert_eq!(delivered, vec![vec![1], vec![5]], "{:?}", report.damage);
        assert!(!report.damage.is_empty());
    }

    #[test]
    fn garbage_after_the_zero_end_is_reported() {
        let (mut bytes, _) = segment(&[1]);
        let end = bytes.len();
        bytes.extend_from_slice(&[0; 100]);
        bytes[end + 60] = 7;
        let (report, _) = scan(&bytes);
        assert_eq!(report.damage.len(), 1);
        assert_eq!(
            report.damage[0].reason,
            "non-zero bytes after the end of the log"
        );
        assert!(report.is_torn_tail_only());
    }
}
