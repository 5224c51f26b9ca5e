//! The manifest (`MANIFEST`): which segment files make up the store.
//!
//! Without it a store cannot tell a segment that went missing from one that
//! never existed: a deleted `seg-N.log` would silently take its keys with
//! it. The manifest is rewritten atomically (temporary file, fsync, rename,
//! directory fsync) whenever the set changes: when the writer starts a new
//! active segment (before anything is written to it), when a compaction
//! swaps its outputs in (after they are durable, before its inputs are
//! deleted), and when a snapshot is installed. A crash leaves the old set
//! or the new one, so open can treat a listed file that is missing as
//! corruption and an unlisted one as the leftover of an interrupted
//! operation.
//!
//! Layout (little endian), `docs/format.md` has the table:
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 8 | magic `HTKVMANF` |
//! | 8 | 4 | format version (1) |
//! | 12 | 4 | number of segments `n` |
//! | 16 | 8 | generation (one more at every rewrite) |
//! | 24 | 4·n | segment ids, strictly ascending |
//! | 24 + 4·n | 4 | CRC32 of every byte before it |

use std::collections::BTreeSet;

use crate::data_dir::DataDir;
use crate::error::{Corruption, Error, IoContext, Result};

/// The file's name inside the data directory.
pub const MANIFEST_FILE_NAME: &str = "MANIFEST";
const MAGIC: [u8; 8] = *b"HTKVMANF";
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 24;
const CRC_LEN: usize = 4;
/// More segments than this means the file is not ours (at the default
/// 64 MiB per segment it is 64 TiB of log).
const MAX_SEGMENTS: usize = 1 << 20;

/// The segments of a store, as last made durable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Incremented at every rewrite.
    pub generation: u64,
    /// Ids of the segment files that make up the store.
    pub segments: BTreeSet<u32>,
}

impl Manifest {
    /// Reads the manifest; `None` if the store has none (a new store, or one
    /// written before manifests existed).
    pub fn load(dir: &DataDir) -> Result<Option<Self>> {
        if !dir.exists(MANIFEST_FILE_NAME) {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        let file = dir.open_read(MANIFEST_FILE_NAME)?;
        // Read at most one byte more than the largest manifest: a bigger
        // file is refused by `decode` without being read whole.
        let limit = (HEADER_LEN + 4 * MAX_SEGMENTS + CRC_LEN) as u64 + 1;
        std::io::Read::read_to_end(&mut std::io::Read::take(&file, limit), &mut bytes)
            .context(|| format!("read {MANIFEST_FILE_NAME}"))?;
        Self::decode(&bytes).map(Some)
    }

    /// Makes this set durable, replacing the previous one.
    pub fn store(&self, dir: &DataDir) -> Result<()> {
        dir.write_file_atomically(MANIFEST_FILE_NAME, &self.encode())
    }

    /// The next generation with `segments`.
    pub fn with_segments(&self, segments: BTreeSet<u32>) -> Self {
        Manifest {
            generation: self.generation + 1,
            segments,
        }
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 4 * self.segments.len() + CRC_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.segments.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.generation.to_le_bytes());
        for id in &self.segments {
            out.extend_from_slice(&id.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses and checks the file's bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let corrupt = |offset: usize, reason: String| {
            Error::Corruption(Corruption {
                file: MANIFEST_FILE_NAME.into(),
                offset: offset as u64,
                reason,
            })
        };
        if bytes.len() < HEADER_LEN + CRC_LEN || bytes[..8] != MAGIC {
            return Err(corrupt(0, "not a manifest (bad magic or too short)".into()));
        }
        let version = u32_at(bytes, 8);
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedFormat {
                file: MANIFEST_FILE_NAME.into(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let count = u32_at(bytes, 12) as usize;
        if count > MAX_SEGMENTS || bytes.len() != HEADER_LEN + 4 * count + CRC_LEN {
            return Err(corrupt(
                12,
                format!("claims {count} segments but is {} bytes long", bytes.len()),
            ));
        }
        let body_end = bytes.len() - CRC_LEN;
        let (stored, computed) = (u32_at(bytes, body_end), crc32fast::hash(&bytes[..body_end]));
        if stored != computed {
            return Err(corrupt(
                body_end,
                format!("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"),
            ));
        }
        let mut segments = BTreeSet::new();
        let mut previous = None;
        for i in 0..count {
            let at = HEADER_LEN + 4 * i;
            let id = u32_at(bytes, at);
            if previous.is_some_and(|p| p >= id) || id == 0 {
                return Err(corrupt(at, format!("segment id {id} out of order")));
            }
            previous = Some(id);
            segments.insert(id);
        }
        Ok(Manifest {
            generation: u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")),
            segments,
        })
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(ids: &[u32]) -> Manifest {
        Manifest {
            generation: 7,
            segments: ids.iter().copied().collect(),
        }
    }

    #[test]
    fn round_trips() {
        for ids in [&[][..], &[1], &[1, 2, 9, 4_000_000_000]] {
            let m = manifest(ids);
            assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn every_damaged_byte_is_refused() {
        let bytes = manifest(&[3, 5, 8]).encode();
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            assert!(Manifest::decode(&damaged).is_err(), "byte {at}");
        }
        for len in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..len]).is_err(), "cut at {len}");
        }
    }

    #[test]
    fn a_huge_count_is_refused_before_anything_is_allocated() {
        let mut bytes = manifest(&[1]).encode();
        bytes[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = Manifest::decode(&bytes).unwrap_err();
        assert!(
            err.to_string().contains("claims 4294967295 segments"),
            "{err}"
        );
    }

    #[test]
    fn stores_and_loads_through_the_data_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path(), std::sync::Arc::new(crate::fault::NoFaults)).unwrap();
        assert_eq!(Manifest::load(&dir).unwrap(), None);
        let m = manifest(&[1, 2]);
        m.store(&dir).unwrap();
        assert_eq!(Manifest::load(&dir).unwrap(), Some(m.clone()));
        let next = m.with_segments([2, 3].into());
        next.store(&dir).unwrap();
        assert_eq!(Manifest::load(&dir).unwrap().unwrap().generation, 8);
    }
}
