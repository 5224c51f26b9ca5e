//! Snapshots: a streaming, checksummed image of the whole state at a log
//! index, for backups and, later, for installing state on a replica.
//!
//! The image is taken from a consistent cut of the index (under the writer
//! lock, for as long as it takes to copy the index entries, not the data);
//! values are then streamed from the immutable log without blocking
//! writers. Records keep their versions and log indexes, so a restored
//! store continues exactly where the original was. The format is in
//! `docs/format.md` and [`image`]; restoring is atomic ([`restore_snapshot`]).

mod image;
mod restore;

use std::io::{Read, Write};

use serde::Serialize;

use crate::error::{IoContext, Result};
use crate::storage::{InstallCounters, InstallRecord, Storage};

pub use image::SNAPSHOT_MAGIC;
// The image format's pieces, for the fuzz entry points and test hooks.
#[cfg(any(test, feature = "test-hooks"))]
pub use image::image_bytes;
#[allow(unused_imports)]
pub use image::{
    ENTRY_HEADER_LEN, HEADER_LEN, ImageEntry, ImageHeader, ImageReader, MAX_IMAGE_COUNTER,
    SNAPSHOT_END_MAGIC, SNAPSHOT_FORMAT_VERSION, TRAILER_LEN,
};
pub use restore::restore_snapshot;
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub use restore::restore_snapshot_with_faults;

/// What a snapshot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    /// The state includes every command up to this log index.
    pub last_log_index: u64,
    /// Highest version the store had assigned (also to records that are
    /// not in the image any more: overwritten values and deletes), so a
    /// restored store continues with the same next version. 0 if none.
    pub last_version: u64,
    /// Keys in the image.
    pub keys: u64,
    /// Bytes of the image.
    pub bytes: u64,
}

/// Writes an image of `storage` to `out`.
pub fn write_snapshot(storage: &Storage, out: &mut dyn Write) -> Result<SnapshotInfo> {
    let cut = storage.consistent_cut();
    let (last_log_index, last_version) = (cut.last_log_index, cut.last_version);
    // Log order: restore replays the records as they were written. Only the
    // entries are sorted (the values are streamed from the log afterwards).
    let mut entries = Vec::with_capacity(cut.live_keys as usize);
    cut.for_each_live(|_, entry, _| {
        entries.push(entry);
        Ok(())
    })?;
    entries.sort_unstable_by_key(|entry| entry.version);
    let mut out = CountingWriter {
        inner: out,
        bytes: 0,
    };
    out.put(&image::encode_header(ImageHeader {
        last_log_index,
        last_version,
        entries: entries.len() as u64,
    }))?;
    let mut body_crc = crc32fast::Hasher::new();
    let mut buf = Vec::new();
    for entry in &entries {
        let record = cut.read(entry)?;
        buf.clear();
        image::encode_entry(
            &mut buf,
            record.version,
            record.log_index,
            record.key,
            record.value,
        );
        body_crc.update(&buf);
        out.put(&buf)?;
    }
    out.put(&image::encode_trailer(body_crc.finalize()))?;
    out.inner.flush().context(|| "flush snapshot")?;
    Ok(SnapshotInfo {
        last_log_index,
        last_version,
        keys: entries.len() as u64,
        bytes: out.bytes,
    })
}

struct CountingWriter<'w> {
    inner: &'w mut dyn Write,
    bytes: u64,
}

impl CountingWriter<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.inner.write_all(bytes).context(|| "write snapshot")?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }
}

/// Installs an image into the running store behind `storage`, checking
/// every field of it against the format and the store's limits (see
/// `storage/install.rs` for the steps and what a crash leaves).
pub(crate) fn install_snapshot(storage: &Storage, input: &mut dyn Read) -> Result<SnapshotInfo> {
    let limits = crate::command::Limits::from_config(storage.config());
    let mut reader = ImageReader::new(input, limits)?;
    let header = reader.header();
    let counters = InstallCounters {
        last_version: header.last_version,
        last_log_index: header.last_log_index,
        entries: header.entries,
    };
    let mut entry = ImageEntry::default();
    storage.install(counters, &mut |record: &mut InstallRecord| {
        if !reader.next_entry(&mut entry)? {
            return Ok(false);
        }
        record.version = entry.version;
        record.log_index = entry.log_index;
        // The buffers change hands: no copy, and both are reused.
        std::mem::swap(&mut record.key, &mut entry.key);
        std::mem::swap(&mut record.value, &mut entry.value);
        Ok(true)
    })?;
    Ok(SnapshotInfo {
        last_log_index: header.last_log_index,
        last_version: header.last_version,
        keys: header.entries,
        bytes: reader.bytes_read(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::command::{Command, Condition, Op};
    use crate::config::{Config, SyncMode};
    use crate::engine::KvEngine;
    use crate::error::Error;
    use crate::replication::SnapshotProvider;

    fn config(dir: &Path) -> Config {
        Config {
            sync: SyncMode::Os,
            segment_size_bytes: 8192,
            ..Config::new(dir)
        }
    }

    /// A store with overwrites, deletes and batches, and its snapshot.
    fn populated() -> (tempfile::TempDir, KvEngine, Vec<u8>) {
        let tmp = tempfile::tempdir().unwrap();
        let engine = KvEngine::open(config(&tmp.path().join("src"))).unwrap();
        for i in 0..300u32 {
            let key = format!("key-{}", i % 70);
            match i % 5 {
                0 => {
                    engine.delete(key.as_bytes()).unwrap();
                }
                1 => {
                    let ops = vec![
                        Op::Set {
                            key: key.clone().into_bytes(),
                            value: vec![i as u8; 40],
                        },
                        Op::Set {
                            key: format!("b-{i}").into_bytes(),
                            value: vec![],
                        },
                    ];
                    let conditions = vec![Condition::Absent {
                        key: b"never".to_vec(),
                    }];
                    engine.apply(Command::Batch { conditions, ops }).unwrap();
                }
                _ => {
                    engine
                        .put(key.as_bytes(), vec![i as u8; (i % 200) as usize])
                        .unwrap();
                }
            }
        }
        let mut image = Vec::new();
        let info = engine.serialize_snapshot(&mut image).unwrap();
        assert_eq!(info, engine.state().last_applied());
        (tmp, engine, image)
    }

    #[test]
    fn restore_gives_an_identical_state_that_continues_where_it_was() {
        let (tmp, engine, image) = populated();
        let target = tmp.path().join("restored");
        let info = restore_snapshot(config(&target), &mut image.as_slice()).unwrap();
        assert_eq!(info.bytes, image.len() as u64);
        assert_eq!(info.keys, engine.stats().storage.keys);
        let restored = KvEngine::open(config(&target)).unwrap();
        assert_eq!(
            restored.state().dump().unwrap(),
            engine.state().dump().unwrap()
        );
        assert_eq!(
            restored.state().last_applied(),
            engine.state().last_applied()
        );
        // Both continue with the same next version.
        assert_eq!(
            restored.put(b"next", b"x").unwrap(),
            engine.put(b"next", b"x").unwrap()
        );
        // A snapshot of the restored store is byte-identical to the original's.
        let mut again = Vec::new();
        restored.serialize_snapshot(&mut again).unwrap();
        let mut original = Vec::new();
        engine.serialize_snapshot(&mut original).unwrap();
        assert_eq!(again, original);
    }

    #[test]
    fn an_empty_store_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = KvEngine::open(config(&tmp.path().join("a"))).unwrap();
        let mut image = Vec::new();
        engine.serialize_snapshot(&mut image).unwrap();
        let info = restore_snapshot(config(&tmp.path().join("b")), &mut image.as_slice()).unwrap();
        assert_eq!((info.keys, info.last_log_index), (0, 0));
    }

    fn assert_rejected_and_untouched(image: &[u8], what: &str, also_into_empty_dir: bool) {
        // Many restores: on tmpfs where there is one (fsyncs cost nothing).
        let tmp = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap();
        let missing = tmp.path().join("missing");
        let err = restore_snapshot(config(&missing), &mut &image[..]).unwrap_err();
        assert!(
            matches!(err, Error::Corruption(_) | Error::UnsupportedFormat { .. }),
            "{what}: {err}"
        );
        assert!(
            !missing.exists(),
            "{what}: a directory the restore created is removed"
        );
        if !also_into_empty_dir {
            return;
        }
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        restore_snapshot(config(&empty), &mut &image[..]).unwrap_err();
        assert_eq!(
            std::fs::read_dir(&empty).unwrap().count(),
            0,
            "{what}: left files behind"
        );
    }

    #[test]
    fn every_damaged_byte_and_every_truncation_is_rejected() {
        let (_tmp, _engine, image) = populated();
        // Every byte of the header, the first entry and the trailer, and a
        // sample of the rest.
        let first_entries = HEADER_LEN + 2 * ENTRY_HEADER_LEN;
        let body = (first_entries..image.len() - 12).step_by(211);
        let positions = (0..first_entries)
            .chain(body)
            .chain(image.len() - 12..image.len());
        for (n, at) in positions.enumerate() {
            let mut damaged = image.clone();
            damaged[at] ^= 0x10;
            assert_rejected_and_untouched(&damaged, &format!("flip at {at}"), n % 8 == 0);
        }
        for len in [
            0,
            10,
            HEADER_LEN,
            HEADER_LEN + 5,
            image.len() / 2,
            image.len() - 1,
        ] {
            assert_rejected_and_untouched(&image[..len], &format!("truncated to {len}"), true);
        }
        let mut longer = image.clone();
        longer.push(0);
        assert_rejected_and_untouched(&longer, "trailing byte", true);
    }

    #[test]
    fn a_non_empty_target_is_refused_before_reading() {
        let (tmp, _engine, image) = populated();
        let err =
            restore_snapshot(config(&tmp.path().join("src")), &mut image.as_slice()).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
    }
}
