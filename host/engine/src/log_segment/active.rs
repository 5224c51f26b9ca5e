//! The segment being appended to.
//!
//! Appends are positioned writes at `write_pos`. In the fsyncing modes the
//! file is kept `preallocate_bytes` of written zeros ahead of the tail: an
//! fdatasync of a write inside the file's size and allocated blocks has no
//! metadata to journal, which is what makes a durable put cheap. Recovery
//! reads the zeros as "end of log".

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::format::{SEGMENT_HEADER_LEN, encode_segment_header, segment_file_name};
use crate::data_dir::DataDir;
use crate::error::{IoContext, Result};
use crate::fault::IoOp;

static ZERO_CHUNK: [u8; 64 << 10] = [0; 64 << 10];

/// What an append did.
#[derive(Debug)]
pub struct Appended {
    /// Where the bytes start.
    pub offset: u64,
    /// Zeros could not be written ahead of the tail after the bytes were
    /// (the log grows without them; the next append tries again).
    pub preallocation: Option<crate::error::Error>,
}

pub struct ActiveSegment {
    id: u32,
    name: String,
    file: Arc<File>,
    /// End of the last appended record.
    write_pos: u64,
    /// Bytes the file holds (records plus preallocated zeros).
    file_len: u64,
    /// Everything below this offset has been fsynced.
    synced_pos: u64,
    preallocate_bytes: u64,
}

impl ActiveSegment {
    /// Creates segment `id` with its header, durably (file and directory fsynced).
    pub fn create(dir: &DataDir, id: u32, preallocate_bytes: u64) -> Result<Self> {
        let name = segment_file_name(id);
        let file = dir.create_new(&name)?;
        let header = encode_segment_header(id);
        dir.faults()
            .check(IoOp::Write, &name)
            .context(|| format!("write header of {name}"))?;
        file.write_all_at(&header, 0)
            .context(|| format!("write header of {name}"))?;
        let mut segment = ActiveSegment {
            id,
            name,
            file: Arc::new(file),
            write_pos: SEGMENT_HEADER_LEN as u64,
            file_len: SEGMENT_HEADER_LEN as u64,
            synced_pos: 0,
            preallocate_bytes,
        };
        segment.preallocate(dir)?;
        dir.faults()
            .check(IoOp::SyncFile, &segment.name)
            .context(|| format!("fsync {}", segment.name))?;
        segment
            .file
            .sync_all()
            .context(|| format!("fsync {}", segment.name))?;
        segment.synced_pos = segment.write_pos;
        dir.sync()?;
        Ok(segment)
    }

    /// Continues appending to a recovered segment whose valid data ends at `write_pos`.
    pub fn resume(
        id: u32,
        file: File,
        write_pos: u64,
        file_len: u64,
        preallocate_bytes: u64,
    ) -> Self {
        assert!(write_pos >= SEGMENT_HEADER_LEN as u64 && write_pos <= file_len);
        ActiveSegment {
            id,
            name: segment_file_name(id),
            file: Arc::new(file),
            write_pos,
            file_len,
            // Recovered bytes may still sit only in the page cache: the first sync covers them.
            synced_pos: SEGMENT_HEADER_LEN as u64,
            preallocate_bytes,
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Offset where the next record goes; also the segment's logical length.
    pub fn write_pos(&self) -> u64 {
        self.write_pos
    }

    pub fn is_dirty(&self) -> bool {
        self.write_pos > self.synced_pos
    }

    /// Writes `bytes` at the tail and returns the offset they start at.
    /// Once the bytes are written the append has happened: a failure to
    /// write zeros ahead of the tail afterwards (a full disk) is returned
    /// beside the offset, not as the append's error, because the caller
    /// must not report as failed a write that is in the file.
    pub fn append(&mut self, dir: &DataDir, bytes: &[u8]) -> Result<Appended> {
        let offset = self.write_pos;
        dir.faults()
            .check(IoOp::Write, &self.name)
            .context(|| format!("append to {}", self.name))?;
        self.file
            .write_all_at(bytes, offset)
            .context(|| format!("append to {}", self.name))?;
        self.write_pos += bytes.len() as u64;
        self.file_len = self.file_len.max(self.write_pos);
        Ok(Appended {
            offset,
            preallocation: self.preallocate(dir).err(),
        })
    }

    /// Keeps at least half of `preallocate_bytes` of zeros ahead of the tail.
    fn preallocate(&mut self, dir: &DataDir) -> Result<()> {
        if self.preallocate_bytes == 0
            || self.file_len >= self.write_pos + self.preallocate_bytes / 2
        {
            return Ok(());
        }
        let target = self.write_pos + self.preallocate_bytes;
        dir.faults()
            .check(IoOp::Write, &self.name)
            .context(|| format!("preallocate {}", self.name))?;
        while self.file_len < target {
            let chunk = (target - self.file_len).min(ZERO_CHUNK.len() as u64) as usize;
            self.file
                .write_all_at(&ZERO_CHUNK[..chunk], self.file_len)
                .context(|| format!("preallocate {}", self.name))?;
            self.file_len += chunk as u64;
        }
        Ok(())
    }

    /// fdatasync: every appended byte is durable when this returns Ok.
    pub fn sync_data(&mut self, dir: &DataDir) -> Result<()> {
        let pos = self.write_pos;
        sync_file_data(dir, &self.file, &self.name)?;
        self.synced_pos = self.synced_pos.max(pos);
        Ok(())
    }

    /// Records that a sync made outside the writer lock covered `pos`.
    pub fn mark_synced(&mut self, pos: u64) {
        self.synced_pos = self.synced_pos.max(pos);
    }

    /// Cuts the preallocated zeros and fsyncs: the file becomes immutable.
    pub fn seal(&mut self, dir: &DataDir) -> Result<()> {
        dir.faults()
            .check(IoOp::Truncate, &self.name)
            .context(|| format!("truncate {}", self.name))?;
        self.file
            .set_len(self.write_pos)
            .context(|| format!("truncate {}", self.name))?;
        self.file_len = self.write_pos;
        dir.faults()
            .check(IoOp::SyncFile, &self.name)
            .context(|| format!("fsync {}", self.name))?;
        self.file
            .sync_all()
            .context(|| format!("fsync {}", self.name))?;
        self.synced_pos = self.write_pos;
        Ok(())
    }
}

/// fdatasync through the fault hook.
pub fn sync_file_data(dir: &DataDir, file: &File, name: &str) -> Result<()> {
    dir.faults()
        .check(IoOp::SyncFile, name)
        .context(|| format!("fsync {name}"))?;
    file.sync_data().context(|| format!("fsync {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::NoFaults;

    fn data_dir() -> (tempfile::TempDir, DataDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path(), Arc::new(NoFaults)).unwrap();
        (tmp, dir)
    }

    #[test]
    fn appends_land_at_the_tail_with_zeros_ahead() {
        let (tmp, dir) = data_dir();
        let mut segment = ActiveSegment::create(&dir, 3, 4096).unwrap();
        assert!(!segment.is_dirty());
        assert_eq!(
            segment.append(&dir, b"hello").unwrap().offset,
            SEGMENT_HEADER_LEN as u64
        );
        assert_eq!(
            segment.append(&dir, b"world").unwrap().offset,
            SEGMENT_HEADER_LEN as u64 + 5
        );
        assert!(segment.is_dirty());
        segment.sync_data(&dir).unwrap();
        assert!(!segment.is_dirty());
        let bytes = std::fs::read(tmp.path().join("seg-0000000003.log")).unwrap();
        assert_eq!(
            &bytes[SEGMENT_HEADER_LEN..SEGMENT_HEADER_LEN + 10],
            b"helloworld"
        );
        assert!(
            bytes.len() as u64 >= segment.write_pos() + 2048,
            "zeros kept ahead"
        );
        assert!(bytes[SEGMENT_HEADER_LEN + 10..].iter().all(|&b| b == 0));
    }

    #[test]
    fn sealing_cuts_the_zeros() {
        let (tmp, dir) = data_dir();
        let mut segment = ActiveSegment::create(&dir, 1, 4096).unwrap();
        segment.append(&dir, b"abc").unwrap();
        segment.seal(&dir).unwrap();
        let len = std::fs::metadata(tmp.path().join("seg-0000000001.log"))
            .unwrap()
            .len();
        assert_eq!(len, SEGMENT_HEADER_LEN as u64 + 3);
    }

    #[test]
    fn without_preallocation_the_file_is_exactly_the_log() {
        let (tmp, dir) = data_dir();
        let mut segment = ActiveSegment::create(&dir, 1, 0).unwrap();
        segment.append(&dir, b"abc").unwrap();
        let len = std::fs::metadata(tmp.path().join("seg-0000000001.log"))
            .unwrap()
            .len();
        assert_eq!(len, SEGMENT_HEADER_LEN as u64 + 3);
    }
}
