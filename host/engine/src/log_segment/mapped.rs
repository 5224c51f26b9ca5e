//! Read-only memory maps of segment files.
//!
//! A get copies its record out of the map: no system call per read. The map
//! of the active segment reserves address space for the whole segment up
//! front; only offsets below the published tail are ever touched.

use std::fs::File;

use memmap2::{Mmap, MmapOptions};

use super::format::{Decoded, RECORD_HEADER_LEN, Record, decode_record, segment_file_name};
use crate::error::{Corruption, Error, IoContext, Result};

pub struct MappedSegment {
    id: u32,
    map: Mmap,
    /// Bytes known to exist in the file; `bytes()` never goes past them.
    file_len: usize,
}

impl MappedSegment {
    /// Maps `file`, reserving `capacity` bytes of address space (at least the file's length).
    pub fn map(file: &File, id: u32, capacity: u64) -> Result<Self> {
        let name = segment_file_name(id);
        let file_len = file.metadata().context(|| format!("stat {name}"))?.len();
        let map_len = capacity.max(file_len).max(1);
        // SAFETY: the file lives in the data directory this process holds
        // locked, so no other cooperating process writes it. This process
        // only appends past the published tail and only truncates the
        // preallocated zeros past it, so bytes a reader is allowed to reach
        // (offsets below the tail, or within `file_len`) stay valid.
        let map = unsafe { MmapOptions::new().len(map_len as usize).map(file) }
            .context(|| format!("mmap {name}"))?;
        Ok(MappedSegment {
            id,
            map,
            file_len: file_len as usize,
        })
    }

    /// The file's bytes as they were when mapped (header included).
    pub fn bytes(&self) -> &[u8] {
        &self.map[..self.file_len]
    }

    /// The first `len` bytes of the map, which the caller knows were
    /// written (the active segment's published tail).
    pub fn written_prefix(&self, len: usize) -> &[u8] {
        &self.map[..len.min(self.map.len())]
    }

    /// The key of the `len`-byte record at `offset`, unverified (the index
    /// uses it to tell entries apart; a read verifies the whole record).
    /// Never reads past `offset + len`, which the caller knows was written.
    pub fn key_at(&self, offset: u32, len: u32) -> Option<&[u8]> {
        let start = offset as usize;
        let end = start.checked_add(len as usize)?;
        let record = self.map.get(start..end)?;
        let key_len = u16::from_le_bytes(record.get(22..24)?.try_into().ok()?) as usize;
        record.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + key_len)
    }

    /// Reads and verifies the record an index entry points at (a put, or a
    /// tombstone when compaction copies it).
    pub fn read(&self, offset: u32, len: u32, key: &[u8], version: u64) -> Result<Record<'_>> {
        let (start, end) = (offset as usize, offset as usize + len as usize);
        let corrupt = |reason: String| {
            Error::Corruption(Corruption {
                file: segment_file_name(self.id),
                offset: u64::from(offset),
                reason,
            })
        };
        if end > self.map.len() {
            return Err(corrupt(format!(
                "index points past the mapped segment ({end} > {})",
                self.map.len()
            )));
        }
        match decode_record(&self.map[..end], start) {
            Decoded::Record(record)
                if record.len == len as usize && record.key == key && record.version == version =>
            {
                Ok(record)
            }
            Decoded::Record(_) => Err(corrupt("record does not match its index entry".into())),
            Decoded::End => Err(corrupt("index points at the end of the log".into())),
            Decoded::Invalid(reason) => Err(corrupt(reason.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::format::{
        RecordSpec, SEGMENT_HEADER_LEN, encode_record, encode_segment_header,
    };
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn reads_verified_records_and_sees_later_appends() {
        let tmp = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp.path().join("s"))
            .unwrap();
        file.write_all_at(&encode_segment_header(1), 0).unwrap();
        let map = MappedSegment::map(&file, 1, 1 << 20).unwrap();
        let mut buf = Vec::new();
        let spec = RecordSpec {
            version: 9,
            log_index: 1,
            key: b"k",
            value: Some(b"v1"),
            start_of_command: true,
            end_of_command: true,
        };
        let len = encode_record(&mut buf, &spec) as u32;
        // Appended after the map was made: visible through the shared map.
        file.write_all_at(&buf, SEGMENT_HEADER_LEN as u64).unwrap();
        let record = map.read(SEGMENT_HEADER_LEN as u32, len, b"k", 9).unwrap();
        assert_eq!(record.value, b"v1");
        assert_eq!(map.key_at(SEGMENT_HEADER_LEN as u32, len), Some(&b"k"[..]));
        assert_eq!(
            map.key_at(SEGMENT_HEADER_LEN as u32, 20),
            None,
            "shorter than its header"
        );
        assert_eq!(map.key_at(u32::MAX, len), None);
        assert!(matches!(
            map.read(SEGMENT_HEADER_LEN as u32, len, b"other", 9),
            Err(Error::Corruption(_))
        ));
        assert!(matches!(
            map.read(SEGMENT_HEADER_LEN as u32, len, b"k", 8),
            Err(Error::Corruption(_))
        ));
        assert!(matches!(
            map.read(u32::MAX - 8, len, b"k", 9),
            Err(Error::Corruption(_))
        ));
    }
}
