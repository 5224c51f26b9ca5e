//! The byte format of a snapshot image and its checking reader.
//!
//! ```text
//! header   48 bytes: magic "HTKVSNAP" | format version u32 | flags u32 (0)
//!          | last log index u64 | last version u64 | entries u64
//!          | CRC32 of bytes 0..40 u32 | reserved u32 (0)
//! entry    per live key, in version order: CRC32 u32 (over the rest of the
//!          entry) | version u64 | log index u64 | key length u16
//!          | value length u32 | key | value
//! trailer  "HTKVEND\0" | CRC32 of every entry's bytes u32
//! ```
//!
//! An image may come from anywhere (a backup, a peer), so [`ImageReader`]
//! trusts no field: every length is checked against the format and the
//! target store's limits before anything is allocated for it, and memory
//! grows only with the bytes really read; versions must increase, log
//! indexes must not decrease, both must stay within the header's and leave
//! room for writes after a restore; the entry count must fit the header's
//! versions; every checksum must match; nothing may follow the trailer.

use std::io::{self, Read};

use crate::command::Limits;
use crate::error::{ConfigError, Corruption, Error, IoContext, Result};
use crate::log_segment::{MAX_COUNTER, MAX_FORMAT_KEY_BYTES, MAX_FORMAT_VALUE_BYTES};

/// The first eight bytes of every snapshot image.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"HTKVSNAP";
pub const SNAPSHOT_END_MAGIC: [u8; 8] = *b"HTKVEND\0";
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 48;
pub const ENTRY_HEADER_LEN: usize = 26;
pub const TRAILER_LEN: usize = 12;
/// The largest last version or last log index an image may carry: half
/// the format's range ([`MAX_COUNTER`]), so a restored store has at least
/// 2^62 versions and log indexes left for writes.
pub const MAX_IMAGE_COUNTER: u64 = MAX_COUNTER / 2 + 1;
/// Keys and values are read in pieces of at most this size, so a length
/// field that promises more than the input holds costs at most this much
/// memory before the input ends.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// What an image's header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    /// The state includes every command up to this log index.
    pub last_log_index: u64,
    /// Highest version the source store had assigned.
    pub last_version: u64,
    /// Entries (live keys) that follow.
    pub entries: u64,
}

/// The error for an entry at `at` over the target store's key or value
/// limit, if it is. (The batch limits do not apply: each entry is a
/// command of its own.)
fn excess(limits: &Limits, key_len: usize, value_len: usize, at: u64) -> Option<Error> {
    let over = |field: &'static str, what: &str, len: usize, max: usize| {
        Some(
            ConfigError {
                field,
                reason: format!(
                    "the snapshot holds a {what} of {len} bytes (entry at offset {at}), over this store's limit of {max} bytes"
                ),
            }
            .into(),
        )
    };
    if key_len > limits.max_key_bytes {
        return over("max_key_bytes", "key", key_len, limits.max_key_bytes);
    }
    if value_len > limits.max_value_bytes {
        return over(
            "max_value_bytes",
            "value",
            value_len,
            limits.max_value_bytes,
        );
    }
    None
}

/// (crc, key length, value length) of an entry header, the lengths checked
/// against the format's limits.
fn format_lengths(fixed: &[u8; ENTRY_HEADER_LEN], at: u64) -> Result<(u32, usize, usize)> {
    let key_len = u16::from_le_bytes([fixed[20], fixed[21]]) as usize;
    let value_len = u32_at(fixed, 22) as usize;
    if key_len == 0 || key_len > MAX_FORMAT_KEY_BYTES || value_len > MAX_FORMAT_VALUE_BYTES {
        return Err(damaged(at, "impossible key or value length"));
    }
    Ok((u32_at(fixed, 0), key_len, value_len))
}

/// One entry of an image (buffers reused from entry to entry).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageEntry {
    /// The version of the write that stored it.
    pub version: u64,
    /// The log index of the command that wrote it.
    pub log_index: u64,
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
}

pub fn encode_header(header: ImageHeader) -> [u8; HEADER_LEN] {
    let mut bytes = [0u8; HEADER_LEN];
    bytes[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
    bytes[8..12].copy_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    // 12..16: flags, zero.
    bytes[16..24].copy_from_slice(&header.last_log_index.to_le_bytes());
    bytes[24..32].copy_from_slice(&header.last_version.to_le_bytes());
    bytes[32..40].copy_from_slice(&header.entries.to_le_bytes());
    let crc = crc32fast::hash(&bytes[0..40]);
    bytes[40..44].copy_from_slice(&crc.to_le_bytes());
    bytes
}

pub fn encode_entry(out: &mut Vec<u8>, version: u64, log_index: u64, key: &[u8], value: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&log_index.to_le_bytes());
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

pub fn encode_trailer(body_crc: u32) -> [u8; TRAILER_LEN] {
    let mut trailer = [0u8; TRAILER_LEN];
    trailer[0..8].copy_from_slice(&SNAPSHOT_END_MAGIC);
    trailer[8..12].copy_from_slice(&body_crc.to_le_bytes());
    trailer
}

/// A whole image of `entries` (already in log order) under `header`.
#[cfg(any(test, feature = "test-hooks"))]
pub fn image_bytes(header: ImageHeader, entries: &[ImageEntry]) -> Vec<u8> {
    let mut image = encode_header(header).to_vec();
    let mut body = crc32fast::Hasher::new();
    let mut buf = Vec::new();
    for entry in entries {
        buf.clear();
        encode_entry(
            &mut buf,
            entry.version,
            entry.log_index,
            &entry.key,
            &entry.value,
        );
        body.update(&buf);
        image.extend_from_slice(&buf);
    }
    image.extend_from_slice(&encode_trailer(body.finalize()));
    image
}

/// Reads an image entry by entry, checking everything (see the module
/// documentation). An entry is returned only once its checksum matched
/// and it passed every check; the image as a whole is sound only once
/// [`ImageReader::next_entry`] returned `false` (the trailer checked).
pub struct ImageReader<'r> {
    input: CountingReader<'r>,
    header: ImageHeader,
    limits: Limits,
    entries_read: u64,
    previous_version: u64,
    previous_log_index: u64,
    body_crc: crc32fast::Hasher,
    finished: bool,
}

impl<'r> ImageReader<'r> {
    /// Reads and checks the header.
    pub fn new(input: &'r mut dyn Read, limits: Limits) -> Result<Self> {
        let mut input = CountingReader {
            inner: input,
            offset: 0,
        };
        let header = decode_header(&input.take::<HEADER_LEN>()?)?;
        Ok(ImageReader {
            input,
            header,
            limits,
            entries_read: 0,
            previous_version: 0,
            previous_log_index: 0,
            body_crc: crc32fast::Hasher::new(),
            finished: false,
        })
    }

    /// The image's header, checked.
    pub fn header(&self) -> ImageHeader {
        self.header
    }

    /// Bytes consumed so far (the whole image once finished).
    pub fn bytes_read(&self) -> u64 {
        self.input.offset
    }

    /// Reads the next entry into `entry`; `false` once every entry was read
    /// and the trailer checked (nothing may follow it).
    pub fn next_entry(&mut self, entry: &mut ImageEntry) -> Result<bool> {
        if self.finished {
            return Ok(false);
        }
        if self.entries_read == self.header.entries {
            self.check_trailer()?;
            self.finished = true;
            return Ok(false);
        }
        let at = self.input.offset;
        let fixed = self.input.take::<ENTRY_HEADER_LEN>()?;
        let (crc, key_len, value_len) = format_lengths(&fixed, at)?;
        if let Some(over) = excess(&self.limits, key_len, value_len, at) {
            // A damaged length field looks just like an entry over the
            // limit: blame the limit only if the entry's checksum holds
            // (checked in passing, without keeping the bytes).
            let crc_holds = self.input.hash_through(&fixed[4..], key_len + value_len)? == crc;
            return Err(if crc_holds {
                over
            } else {
                damaged(at, "entry checksum mismatch")
            });
        }
        entry.version = u64_at(&fixed, 4);
        entry.log_index = u64_at(&fixed, 12);
        self.input.read_bounded(&mut entry.key, key_len)?;
        self.input.read_bounded(&mut entry.value, value_len)?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&fixed[4..]);
        hasher.update(&entry.key);
        hasher.update(&entry.value);
        if hasher.finalize() != crc {
            return Err(damaged(at, "entry checksum mismatch"));
        }
        self.check_order(entry, at)?;
        self.body_crc.update(&fixed);
        self.body_crc.update(&entry.key);
        self.body_crc.update(&entry.value);
        self.entries_read += 1;
        Ok(true)
    }

    /// Log order, within the header's counters: versions increase, log
    /// indexes do not decrease (a batch's records share one).
    fn check_order(&mut self, entry: &ImageEntry, at: u64) -> Result<()> {
        let (version, log_index) = (entry.version, entry.log_index);
        if version <= self.previous_version || log_index < self.previous_log_index {
            return Err(damaged(at, "entries out of log order"));
        }
        if version > self.header.last_version || log_index > self.header.last_log_index {
            return Err(damaged(
                at,
                "entry version or log index beyond the header's last",
            ));
        }
        (self.previous_version, self.previous_log_index) = (version, log_index);
        Ok(())
    }

    fn check_trailer(&mut self) -> Result<()> {
        let at = self.input.offset;
        let trailer = self.input.take::<TRAILER_LEN>()?;
        if trailer[0..8] != SNAPSHOT_END_MAGIC {
            return Err(damaged(at, "missing end marker"));
        }
        let body_crc = std::mem::take(&mut self.body_crc).finalize();
        if u32_at(&trailer, 8) != body_crc {
            return Err(damaged(at, "checksum over all entries does not match"));
        }
        let mut extra = [0u8; 1];
        loop {
            match self.input.inner.read(&mut extra) {
                Ok(0) => return Ok(()),
                Ok(_) => return Err(damaged(self.input.offset, "bytes after the end marker")),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(Error::io("read snapshot", err)),
            }
        }
    }
}

/// Checks a header: magic, checksum, then version (a newer one is reported
/// as such), flags, reserved bytes, and the counters: they leave room for
/// writes after a restore, and there are no more entries than versions.
pub fn decode_header(bytes: &[u8; HEADER_LEN]) -> Result<ImageHeader> {
    if bytes[0..8] != SNAPSHOT_MAGIC {
        return Err(damaged(0, "not a Hightower snapshot (bad magic)"));
    }
    if crc32fast::hash(&bytes[0..40]) != u32_at(bytes, 40) {
        return Err(damaged(40, "header checksum mismatch"));
    }
    let version = u32_at(bytes, 8);
    if version > SNAPSHOT_FORMAT_VERSION {
        return Err(Error::UnsupportedFormat {
            file: "snapshot".into(),
            found: version,
            supported: SNAPSHOT_FORMAT_VERSION,
        });
    }
    if version == 0 || u32_at(bytes, 12) != 0 || u32_at(bytes, 44) != 0 {
        return Err(damaged(8, "bad version, flags or reserved bytes"));
    }
    let header = ImageHeader {
        last_log_index: u64_at(bytes, 16),
        last_version: u64_at(bytes, 24),
        entries: u64_at(bytes, 32),
    };
    if header.last_log_index > MAX_IMAGE_COUNTER || header.last_version > MAX_IMAGE_COUNTER {
        return Err(damaged(
            16,
            &format!(
                "last log index or version over {MAX_IMAGE_COUNTER} (it would leave a restored store too few for writes)"
            ),
        ));
    }
    // Each entry has its own version in 1..=last_version.
    if header.entries > header.last_version {
        return Err(damaged(32, "more entries than versions"));
    }
    Ok(header)
}

pub(super) fn damaged(offset: u64, reason: &str) -> Error {
    Error::Corruption(Corruption {
        file: "snapshot".into(),
        offset,
        reason: reason.into(),
    })
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

struct CountingReader<'r> {
    inner: &'r mut dyn Read,
    offset: u64,
}

impl CountingReader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut bytes = [0u8; N];
        self.read_exact(&mut bytes)?;
        Ok(bytes)
    }

    /// Reads exactly `len` bytes into `buf`, growing it a chunk at a time:
    /// its capacity stays within twice what was really read (plus a chunk).
    fn read_bounded(&mut self, buf: &mut Vec<u8>, len: usize) -> Result<()> {
        buf.clear();
        while buf.len() < len {
            let start = buf.len();
            let chunk = (len - start).min(READ_CHUNK_BYTES);
            buf.resize(start + chunk, 0);
            self.read_exact(&mut buf[start..])?;
        }
        Ok(())
    }

    /// The CRC32 of `prefix` followed by the next `len` bytes of the input,
    /// read a chunk at a time into a fixed buffer.
    fn hash_through(&mut self, prefix: &[u8], len: usize) -> Result<u32> {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(prefix);
        let mut chunk = vec![0u8; READ_CHUNK_BYTES.min(len)];
        let mut left = len;
        while left > 0 {
            let piece = &mut chunk[..left.min(READ_CHUNK_BYTES)];
            self.read_exact(piece)?;
            hasher.update(piece);
            left -= piece.len();
        }
        Ok(hasher.finalize())
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.offset += buf.len() as u64;
                Ok(())
            }
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                Err(damaged(self.offset, "snapshot ends early (truncated)"))
            }
            Err(err) => Err(err).context(|| "read snapshot"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An entry of a crafted image: version, log index, key, value.
    pub(crate) type Crafted<'a> = (u64, u64, &'a [u8], &'a [u8]);

    /// An image of `entries` (version, log index, key, value) under
    /// `header`, with every checksum right: what a crafted file looks like.
    pub(crate) fn crafted(header: ImageHeader, entries: &[Crafted<'_>]) -> Vec<u8> {
        let entries: Vec<ImageEntry> = entries
            .iter()
            .map(|&(version, log_index, key, value)| ImageEntry {
                version,
                log_index,
                key: key.to_vec(),
                value: value.to_vec(),
            })
            .collect();
        image_bytes(header, &entries)
    }

    pub(crate) fn header(last_log_index: u64, last_version: u64, entries: u64) -> ImageHeader {
        ImageHeader {
            last_log_index,
            last_version,
            entries,
        }
    }

    fn limits(max_key_bytes: usize, max_value_bytes: usize) -> Limits {
        Limits {
            max_key_bytes,
            max_value_bytes,
            max_batch_ops: 1,
            max_batch_bytes: 1,
        }
    }

    const LIMITS: Limits = Limits {
        max_key_bytes: 8,
        max_value_bytes: 16,
        max_batch_ops: 1,
        max_batch_bytes: 1,
    };

    fn read_all(image: &[u8], limits: Limits) -> Result<Vec<ImageEntry>> {
        let mut input = image;
        let mut reader = ImageReader::new(&mut input, limits)?;
        let mut entries = Vec::new();
        let mut entry = ImageEntry::default();
        while reader.next_entry(&mut entry)? {
            entries.push(entry.clone());
        }
        assert_eq!(reader.bytes_read(), image.len() as u64);
        Ok(entries)
    }

    fn corruption(result: Result<Vec<ImageEntry>>) -> Corruption {
        match result {
            Err(Error::Corruption(c)) => c,
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn a_sound_image_reads_back() {
        let image = crafted(header(9, 7, 2), &[(2, 3, b"a", b"one"), (5, 3, b"b", b"")]);
        let entries = read_all(&image, LIMITS).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            (
                entries[1].version,
                entries[1].log_index,
                &entries[1].key[..]
            ),
            (5, 3, &b"b"[..])
        );
    }

    #[test]
    fn counters_that_leave_no_room_for_writes_are_refused() {
        let over = MAX_IMAGE_COUNTER + 1;
        for (log_index, version) in [(u64::MAX, u64::MAX), (over, 5), (5, over), (MAX_COUNTER, 5)] {
            let image = crafted(
                header(log_index, version, 1),
                &[(version, log_index, b"k", b"v")],
            );
            let c = corruption(read_all(&image, LIMITS));
            assert!(c.reason.contains("over"), "{}", c.reason);
            assert_eq!(c.offset, 16);
        }
        let at_limit = crafted(
            header(MAX_IMAGE_COUNTER, MAX_IMAGE_COUNTER, 1),
            &[(MAX_IMAGE_COUNTER, MAX_IMAGE_COUNTER, b"k", b"v")],
        );
        assert_eq!(read_all(&at_limit, LIMITS).unwrap().len(), 1);
    }

    #[test]
    fn entries_must_fit_the_header_and_come_in_log_order() {
        let more_entries_than_versions = crafted(header(5, 1, 2), &[]);
        assert_eq!(
            corruption(read_all(&more_entries_than_versions, LIMITS)).offset,
            32
        );
        let cases: [(&str, ImageHeader, &[Crafted<'_>]); 4] = [
            (
                "version beyond the header",
                header(9, 4, 1),
                &[(5, 1, b"k", b"v")],
            ),
            (
                "log index beyond the header",
                header(9, 9, 1),
                &[(5, 10, b"k", b"v")],
            ),
            (
                "versions not increasing",
                header(9, 9, 2),
                &[(5, 1, b"a", b"v"), (5, 1, b"b", b"v")],
            ),
            (
                "log index going back",
                header(9, 9, 2),
                &[(5, 2, b"a", b"v"), (6, 1, b"b", b"v")],
            ),
        ];
        for (what, header, entries) in cases {
            let c = corruption(read_all(&crafted(header, entries), LIMITS));
            assert!(c.offset >= HEADER_LEN as u64, "{what}: {c}");
        }
    }

    #[test]
    fn keys_and_values_over_the_stores_limits_name_the_limit() {
        let cases: [(&[u8], &[u8], &str); 2] = [
            (b"123456789", b"v", "max_key_bytes"),
            (b"k", &[7; 17], "max_value_bytes"),
        ];
        for (key, value, field) in cases {
            let image = crafted(header(1, 1, 1), &[(1, 1, key, value)]);
            match read_all(&image, LIMITS) {
                Err(Error::Config(err)) => {
                    assert_eq!(err.field, field);
                    assert!(err.reason.contains("offset 48"), "{}", err.reason);
                }
                other => panic!("{field}: expected a config error, got {other:?}"),
            }
            // The same entry within the limits reads.
            assert_eq!(read_all(&image, limits(9, 17)).unwrap().len(), 1);
        }
    }

    #[test]
    fn a_damaged_length_is_damage_even_when_it_is_over_a_limit() {
        let mut image = crafted(header(1, 1, 1), &[(1, 1, b"k", b"value")]);
        // Value length 5 -> 13: over the limit of 8, and the checksum fails.
        image[HEADER_LEN + 22] ^= 8;
        let c = corruption(read_all(&image, limits(8, 8)));
        assert!(
            c.reason.contains("checksum") || c.reason.contains("truncated"),
            "{}",
            c.reason
        );
    }

    #[test]
    fn a_length_promising_more_than_the_input_holds_is_truncation() {
        // The 75-byte file of the bug report: a header and an entry header
        // claiming a 1 GiB value, then one byte.
        let mut image = encode_header(header(1, 1, 1)).to_vec();
        let mut entry = Vec::new();
        encode_entry(&mut entry, 1, 1, b"k", b"");
        entry[22..26].copy_from_slice(&(1u32 << 30).to_le_bytes());
        image.extend_from_slice(&entry);
        assert_eq!(image.len(), 75);
        let c = corruption(read_all(&image, limits(8, 1 << 30)));
        assert!(c.reason.contains("truncated"), "{}", c.reason);
    }

    #[test]
    fn reading_stops_at_the_trailer_and_refuses_what_follows() {
        let mut image = crafted(header(1, 1, 1), &[(1, 1, b"k", b"v")]);
        image.push(0);
        let c = corruption(read_all(&image, LIMITS));
        assert!(c.reason.contains("after the end marker"), "{}", c.reason);
    }
}
