//! Snapshots: a streaming, checksummed image of the whole state at a log
//! index, for backups and, later, for installing state on a replica.
//!
//! The image is taken from a consistent cut of the index (under the writer
//! lock, for as long as it takes to copy the index entries, not the data);
//! values are then streamed from the immutable log without blocking
//! writers. Records keep their versions and log indexes, so a restored
//! store continues exactly where the original was. The format is in
//! `docs/format.md`.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::config::Config;
use crate::error::{ConfigError, Corruption, Error, IoContext, Result};
use crate::fault::NoFaults;
use crate::log_segment::{MAX_FORMAT_KEY_BYTES, MAX_FORMAT_VALUE_BYTES};
use crate::metrics::Metrics;
use crate::storage::Storage;

/// The first eight bytes of every snapshot image.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"HTKVSNAP";
pub const SNAPSHOT_END_MAGIC: [u8; 8] = *b"HTKVEND\0";
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 48;
const ENTRY_HEADER_LEN: usize = 26;
/// Restored records are written out in chunks of about this size.
const RESTORE_WRITE_CHUNK_BYTES: u64 = 4 << 20;

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
pub(crate) fn write_snapshot(storage: &Storage, out: &mut dyn Write) -> Result<SnapshotInfo> {
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
    out.put(&encode_header(
        last_log_index,
        last_version,
        entries.len() as u64,
    ))?;
    let mut body_crc = crc32fast::Hasher::new();
    let mut buf = Vec::new();
    for entry in &entries {
        let record = cut.read(entry)?;
        buf.clear();
        encode_entry(
            &mut buf,
            record.version,
            record.log_index,
            record.key,
            record.value,
        );
        body_crc.update(&buf);
        out.put(&buf)?;
    }
    let mut trailer = Vec::with_capacity(12);
    trailer.extend_from_slice(&SNAPSHOT_END_MAGIC);
    trailer.extend_from_slice(&body_crc.finalize().to_le_bytes());
    out.put(&trailer)?;
    out.inner.flush().context(|| "flush snapshot")?;
    Ok(SnapshotInfo {
        last_log_index,
        last_version,
        keys: entries.len() as u64,
        bytes: out.bytes,
    })
}

/// Restores an image into `config.data_dir`, which must be missing or
/// empty. On any error — a damaged or truncated image included — every file
/// created is removed again, so the target is left as it was.
pub fn restore_snapshot(config: Config, input: &mut dyn Read) -> Result<SnapshotInfo> {
    config.validate()?;
    let created_dir = ensure_missing_or_empty(&config.data_dir)?;
    // A bad header is refused before anything is created.
    let mut input = CountingReader {
        inner: input,
        offset: 0,
    };
    let header = decode_header(&input.take::<HEADER_LEN>()?)?;
    let path = config.data_dir.clone();
    let storage = Storage::open(
        config,
        crate::data_dir::Access::ReadWrite,
        Arc::new(NoFaults),
        Arc::new(Metrics::new(None)),
    )?;
    let result = restore_into(&storage, header, &mut input);
    if result.is_err() {
        storage.remove_all_files();
        drop(storage);
        if created_dir {
            let _ = std::fs::remove_dir(&path);
        }
    }
    result
}

fn ensure_missing_or_empty(path: &Path) -> Result<bool> {
    if !path.exists() {
        return Ok(true);
    }
    let mut entries = std::fs::read_dir(path).context(|| format!("read {}", path.display()))?;
    if entries.next().is_some() {
        return Err(ConfigError {
            field: "data_dir",
            reason: format!(
                "{} is not empty; a snapshot is restored into an empty directory",
                path.display()
            ),
        }
        .into());
    }
    Ok(false)
}

fn restore_into(
    storage: &Storage,
    (last_log_index, last_version, count): (u64, u64, u64),
    input: &mut CountingReader<'_>,
) -> Result<SnapshotInfo> {
    let mut writer = storage.lock_writer();
    let mut body_crc = crc32fast::Hasher::new();
    let (mut previous_version, mut previous_log_index) = (0, 0);
    let mut key = Vec::new();
    let mut value = Vec::new();
    for _ in 0..count {
        let at = input.offset;
        let fixed = input.take::<ENTRY_HEADER_LEN>()?;
        let (crc, version, log_index, key_len, value_len) = decode_entry_header(&fixed, at)?;
        input.fill(&mut key, key_len)?;
        input.fill(&mut value, value_len)?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&fixed[4..]);
        hasher.update(&key);
        hasher.update(&value);
        if hasher.finalize() != crc {
            return Err(damaged(at, "entry checksum mismatch"));
        }
        let beyond_header = version > last_version || log_index > last_log_index;
        if version <= previous_version || log_index < previous_log_index || beyond_header {
            return Err(damaged(at, "entries out of log order"));
        }
        (previous_version, previous_log_index) = (version, log_index);
        body_crc.update(&fixed);
        body_crc.update(&key);
        body_crc.update(&value);
        writer.stage_restored(log_index, version, &key, &value)?;
        if writer.staged_bytes() >= RESTORE_WRITE_CHUNK_BYTES {
            writer.write_staged(false)?;
        }
    }
    let at = input.offset;
    let trailer = input.take::<12>()?;
    if trailer[0..8] != SNAPSHOT_END_MAGIC {
        return Err(damaged(at, "missing end marker"));
    }
    if u32::from_le_bytes(trailer[8..12].try_into().expect("4 bytes")) != body_crc.finalize() {
        return Err(damaged(at, "checksum over all entries does not match"));
    }
    let mut extra = [0u8; 1];
    if input.inner.read(&mut extra).context(|| "read snapshot")? != 0 {
        return Err(damaged(input.offset, "bytes after the end marker"));
    }
    // The counters continue where the original's were, even if its newest
    // records (deletes, overwritten values) are not in the image.
    if last_version > 0 && (last_version > previous_version || last_log_index > previous_log_index)
    {
        writer.stage_marker(last_log_index, last_version)?;
    }
    writer.write_staged(true)?;
    writer.sync()?;
    Ok(SnapshotInfo {
        last_log_index,
        last_version,
        keys: count,
        bytes: input.offset,
    })
}

fn encode_header(last_log_index: u64, last_version: u64, count: u64) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
    header[8..12].copy_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    // 12..16: flags, zero.
    header[16..24].copy_from_slice(&last_log_index.to_le_bytes());
    header[24..32].copy_from_slice(&last_version.to_le_bytes());
    header[32..40].copy_from_slice(&count.to_le_bytes());
    let crc = crc32fast::hash(&header[0..40]);
    header[40..44].copy_from_slice(&crc.to_le_bytes());
    header
}

fn decode_header(header: &[u8; HEADER_LEN]) -> Result<(u64, u64, u64)> {
    if header[0..8] != SNAPSHOT_MAGIC {
        return Err(damaged(0, "not a Hightower snapshot (bad magic)"));
    }
    if crc32fast::hash(&header[0..40]) != u32_at(header, 40) {
        return Err(damaged(40, "header checksum mismatch"));
    }
    let version = u32_at(header, 8);
    if version > SNAPSHOT_FORMAT_VERSION {
        return Err(Error::UnsupportedFormat {
            file: "snapshot".into(),
            found: version,
            supported: SNAPSHOT_FORMAT_VERSION,
        });
    }
    if version == 0 || u32_at(header, 12) != 0 || u32_at(header, 44) != 0 {
        return Err(damaged(8, "bad version, flags or reserved bytes"));
    }
    Ok((u64_at(header, 16), u64_at(header, 24), u64_at(header, 32)))
}

fn encode_entry(out: &mut Vec<u8>, version: u64, log_index: u64, key: &[u8], value: &[u8]) {
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

/// (crc, version, log index, key length, value length), lengths checked
/// against the format's limits before anything is allocated for them.
fn decode_entry_header(
    fixed: &[u8; ENTRY_HEADER_LEN],
    at: u64,
) -> Result<(u32, u64, u64, usize, usize)> {
    let key_len = u16::from_le_bytes([fixed[20], fixed[21]]) as usize;
    let value_len = u32_at(fixed, 22) as usize;
    if key_len == 0 || key_len > MAX_FORMAT_KEY_BYTES || value_len > MAX_FORMAT_VALUE_BYTES {
        return Err(damaged(at, "impossible key or value length"));
    }
    Ok((
        u32_at(fixed, 0),
        u64_at(fixed, 4),
        u64_at(fixed, 12),
        key_len,
        value_len,
    ))
}

fn damaged(offset: u64, reason: &str) -> Error {
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

    fn fill(&mut self, buf: &mut Vec<u8>, len: usize) -> Result<()> {
        buf.resize(len, 0);
        self.read_exact(buf)
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
            Err(err) => Err(Error::io("read snapshot", err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Condition, Op};
    use crate::config::SyncMode;
    use crate::engine::KvEngine;
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
        let tmp = tempfile::tempdir().unwrap();
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
