//! Restoring an image into an empty data directory, atomically.
//!
//! The steps on disk (`docs/format.md` has them too):
//!
//! 1. Lock the target (created `0700` if missing; it must hold nothing but
//!    its lock file) and create `RESTORE-INCOMPLETE` in it, fsynced with
//!    the directory. From here on, until step 5, any open of the target is
//!    refused with an error naming the interrupted restore.
//! 2. Build the store in the subdirectory `restore.staging/`: every entry
//!    checked by [`ImageReader`] before it is written, the store fsynced.
//! 3. Reopen the staged store: it must open cleanly and hold exactly as
//!    many distinct keys as the image has entries (no duplicate keys).
//! 4. Fsync every staged file and rename it into the target, fsync the
//!    target; remove the staging directory.
//! 5. Remove `RESTORE-INCOMPLETE` and fsync the target: the store is
//!    published.
//!
//! A failure removes everything the restore created (the marker last, so
//! a failed clean-up still leaves the store refused); a process killed at
//! any step leaves the target missing, empty, or refused at open.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use super::SnapshotInfo;
use super::image::{ImageEntry, ImageHeader, ImageReader, damaged};
use crate::command::Limits;
use crate::config::Config;
use crate::data_dir::{Access, DataDir, LOCK_FILE_NAME, RESTORE_MARKER_NAME, RESTORE_STAGING_NAME};
use crate::error::{ConfigError, IoContext, Result};
use crate::fault::{IoFaults, NoFaults};
use crate::metrics::Metrics;
use crate::storage::Storage;

/// Restored records are written out in chunks of about this size.
const RESTORE_WRITE_CHUNK_BYTES: u64 = 4 << 20;
/// Keys counted per step when the staged store is checked for duplicates.
const COUNT_PAGE_KEYS: usize = 4096;

/// Restores an image into `config.data_dir`, which must be missing or
/// empty, checking every field of the image against the format and against
/// `config`'s limits first. Atomic: on success the store is complete and
/// durable; on any error — a damaged, truncated or crafted image included —
/// every file created is removed again, so the target is left as it was;
/// if the process dies midway, opening the target fails with
/// [`crate::Error::RestoreIncomplete`] until its contents are deleted.
pub fn restore_snapshot(config: Config, input: &mut dyn Read) -> Result<SnapshotInfo> {
    restore(config, input, Arc::new(NoFaults))
}

/// [`restore_snapshot`] with I/O fault injection, for tests.
#[cfg(any(test, feature = "test-hooks"))]
pub fn restore_snapshot_with_faults(
    config: Config,
    input: &mut dyn Read,
    faults: Arc<dyn IoFaults>,
) -> Result<SnapshotInfo> {
    restore(config, input, faults)
}

fn restore(
    config: Config,
    input: &mut dyn Read,
    faults: Arc<dyn IoFaults>,
) -> Result<SnapshotInfo> {
    config.validate()?;
    let created_dir = !config.data_dir.exists();
    if !created_dir && !config.data_dir.is_dir() {
        return Err(crate::Error::NotADirectory {
            path: config.data_dir.clone(),
        });
    }
    if !created_dir {
        refuse_non_empty(&config.data_dir, |_| false)?;
    }
    // A bad header is refused before anything is created.
    let mut reader = ImageReader::new(input, Limits::from_config(&config))?;
    let target = DataDir::open_for_restore(&config.data_dir, faults.clone())?;
    // Checked again under the lock: no one else may have put files there.
    refuse_non_empty(&config.data_dir, |name| name == LOCK_FILE_NAME)?;
    let result = restore_staged(&target, &config, &mut reader, faults);
    if result.is_err() {
        discard(target, created_dir);
    }
    result
}

/// Refuses a directory holding anything but what `allowed` accepts.
fn refuse_non_empty(path: &Path, allowed: impl Fn(&str) -> bool) -> Result<()> {
    let entries = std::fs::read_dir(path).context(|| format!("read {}", path.display()))?;
    for entry in entries {
        let entry = entry.context(|| format!("read {}", path.display()))?;
        let name = entry.file_name();
        if name.to_str().is_some_and(&allowed) {
            continue;
        }
        let interrupted = name == RESTORE_MARKER_NAME;
        return Err(if interrupted {
            crate::Error::RestoreIncomplete {
                path: path.to_path_buf(),
            }
        } else {
            ConfigError {
                field: "data_dir",
                reason: format!(
                    "{} is not empty; a snapshot is restored into an empty directory",
                    path.display()
                ),
            }
            .into()
        });
    }
    Ok(())
}

fn restore_staged(
    target: &DataDir,
    config: &Config,
    reader: &mut ImageReader<'_>,
    faults: Arc<dyn IoFaults>,
) -> Result<SnapshotInfo> {
    write_marker(target)?;
    target.create_dir(RESTORE_STAGING_NAME)?;
    target.sync()?;
    let staging = Config {
        data_dir: target.path().join(RESTORE_STAGING_NAME),
        ..config.clone()
    };
    let info = {
        let storage = Storage::open(
            staging.clone(),
            Access::ReadWrite,
            faults.clone(),
            Arc::new(Metrics::new(None)),
        )?;
        write_image(&storage, reader)?
    };
    check_staged(&staging, &faults, info.keys)?;
    publish(target, &staging.data_dir, faults)?;
    Ok(info)
}

/// Creates the marker that makes every open refuse the target, durably,
/// before anything of the store exists.
fn write_marker(target: &DataDir) -> Result<()> {
    let mut file = target.create_new(RESTORE_MARKER_NAME)?;
    let text = format!(
        "A snapshot restore (pid {}) is building the store in this directory.\n\
         If this file is still here, the restore never completed and the store is partial:\n\
         delete this directory's contents and run the restore again.\n",
        std::process::id()
    );
    target
        .faults()
        .check(crate::fault::IoOp::Write, RESTORE_MARKER_NAME)
        .context(|| format!("write {RESTORE_MARKER_NAME}"))?;
    file.write_all(text.as_bytes())
        .context(|| format!("write {RESTORE_MARKER_NAME}"))?;
    target.sync_file(RESTORE_MARKER_NAME)?;
    target.sync()
}

/// Streams every entry of the image into `storage` and syncs it.
fn write_image(storage: &Storage, reader: &mut ImageReader<'_>) -> Result<SnapshotInfo> {
    let ImageHeader {
        last_log_index,
        last_version,
        entries,
    } = reader.header();
    let mut writer = storage.lock_writer();
    let mut entry = ImageEntry::default();
    let (mut previous_version, mut previous_log_index) = (0, 0);
    while reader.next_entry(&mut entry)? {
        writer.stage_restored(entry.log_index, entry.version, &entry.key, &entry.value)?;
        (previous_version, previous_log_index) = (entry.version, entry.log_index);
        if writer.staged_bytes() >= RESTORE_WRITE_CHUNK_BYTES {
            writer.write_staged(false)?;
        }
    }
    // The counters continue where the original's were, even if its newest
    // records (deletes, overwritten values) are not in the image.
    if last_version > previous_version || last_log_index > previous_log_index {
        writer.stage_marker(last_log_index, last_version)?;
    }
    writer.write_staged(true)?;
    writer.sync()?;
    drop(writer);
    // Sealed segments get their metadata now, so the published store opens
    // without rebuilding it.
    storage.build_pending_metas()?;
    Ok(SnapshotInfo {
        last_log_index,
        last_version,
        keys: entries,
        bytes: reader.bytes_read(),
    })
}

/// Reopens the staged store: it must open cleanly and hold one key per
/// entry of the image (entries are in version order, so a key that occurs
/// twice shows only here, as one key fewer).
fn check_staged(staging: &Config, faults: &Arc<dyn IoFaults>, entries: u64) -> Result<()> {
    let storage = Storage::open(
        staging.clone(),
        Access::ReadWrite,
        faults.clone(),
        Arc::new(Metrics::new(None)),
    )?;
    let mut distinct = 0u64;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = storage.keys_with_prefix(&[], after.as_deref(), COUNT_PAGE_KEYS)?;
        distinct += page.len() as u64;
        if page.len() < COUNT_PAGE_KEYS {
            break;
        }
        after = page.into_iter().next_back();
    }
    if distinct != entries {
        return Err(damaged(
            super::HEADER_LEN as u64,
            &format!("{entries} entries but {distinct} distinct keys: a key occurs more than once"),
        ));
    }
    Ok(())
}

/// Moves the staged store's files into the target, durably, then removes
/// the marker: the store appears complete or not at all.
fn publish(target: &DataDir, staging_path: &Path, faults: Arc<dyn IoFaults>) -> Result<()> {
    {
        let staging = DataDir::open(staging_path, faults)?;
        for name in staging.file_names()? {
            if name == LOCK_FILE_NAME {
                continue;
            }
            staging.sync_file(&name)?;
            staging.move_to(&name, target, &name)?;
        }
        target.sync()?;
    }
    target.remove_dir_all(RESTORE_STAGING_NAME)?;
    target.sync()?;
    target.remove(RESTORE_MARKER_NAME)?;
    target.sync()
}

/// Removes everything a failed restore created, the marker last (so a
/// clean-up that fails too still leaves the target refused at open), and
/// the directory itself if the restore created it. Best effort: the error
/// that made the restore fail is the one reported.
fn discard(target: DataDir, created_dir: bool) {
    if target.exists(RESTORE_STAGING_NAME) {
        let _ = target.remove_dir_all(RESTORE_STAGING_NAME);
    }
    for name in target.file_names().unwrap_or_default() {
        if name != LOCK_FILE_NAME && name != RESTORE_MARKER_NAME {
            let _ = target.remove(&name);
        }
    }
    if target.sync().is_err() {
        return;
    }
    if target.exists(RESTORE_MARKER_NAME)
        && (target.remove(RESTORE_MARKER_NAME).is_err() || target.sync().is_err())
    {
        return;
    }
    let _ = target.remove(LOCK_FILE_NAME);
    let _ = target.sync();
    let path = target.path().to_path_buf();
    drop(target);
    if created_dir {
        let _ = std::fs::remove_dir(&path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SyncMode;
    use crate::engine::KvEngine;
    use crate::error::Error;
    use crate::fault::{FailNth, IoOp};
    use crate::replication::SnapshotProvider;
    use crate::snapshot::MAX_IMAGE_COUNTER;
    use crate::snapshot::image::tests::{Crafted, crafted, header};

    fn config(dir: &Path) -> Config {
        Config {
            sync: SyncMode::Os,
            segment_size_bytes: 4096,
            ..Config::new(dir)
        }
    }

    type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

    /// Every key and value of `engine`, in key order.
    fn contents(engine: &KvEngine) -> Pairs {
        let dump = engine.state().dump().unwrap().into_iter();
        dump.map(|(key, versioned)| (key, versioned.value))
            .collect()
    }

    /// 60 keys over several segments, and their image.
    fn image() -> (tempfile::TempDir, Pairs, Vec<u8>) {
        let tmp = tempfile::tempdir().unwrap();
        let engine = KvEngine::open(config(&tmp.path().join("source"))).unwrap();
        for i in 0..80u32 {
            engine
                .put(format!("key-{}", i % 60).as_bytes(), [i as u8; 150])
                .unwrap();
        }
        let dump = contents(&engine);
        let mut image = Vec::new();
        engine.serialize_snapshot(&mut image).unwrap();
        (tmp, dump, image)
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[test]
    fn a_restore_publishes_only_the_store() {
        let (tmp, dump, image) = image();
        let target = tmp.path().join("target");
        restore_snapshot(config(&target), &mut image.as_slice()).unwrap();
        let names = entries(&target);
        assert!(
            names
                .iter()
                .all(|n| n == LOCK_FILE_NAME || n == "MANIFEST" || n.starts_with("seg-")),
            "{names:?}"
        );
        assert!(
            names.iter().filter(|n| n.ends_with(".log")).count() > 2,
            "{names:?}"
        );
        let restored = KvEngine::open(config(&target)).unwrap();
        assert_eq!(contents(&restored), dump);
    }

    #[test]
    fn a_file_is_not_a_target() {
        let (tmp, _dump, image) = image();
        let file = tmp.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        let err = restore_snapshot(config(&file), &mut image.as_slice()).unwrap_err();
        assert!(matches!(err, Error::NotADirectory { .. }), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
    }

    #[test]
    fn duplicate_keys_are_refused_and_leave_nothing() {
        for (first, second) in [(b"a", b"a"), (b"k", b"k")] {
            let image = crafted(
                header(3, 3, 3),
                &[
                    (1, 1, first, b"1"),
                    (2, 2, b"other", b"2"),
                    (3, 3, second, b"3"),
                ],
            );
            let tmp = tempfile::tempdir().unwrap();
            let target = tmp.path().join("t");
            let err = restore_snapshot(config(&target), &mut image.as_slice()).unwrap_err();
            assert!(err.to_string().contains("more than once"), "{err}");
            assert!(!target.exists());
        }
    }

    #[test]
    fn duplicate_keys_in_different_segments_are_refused() {
        let value = [1u8; 1500];
        let mut records: Vec<Crafted<'_>> = Vec::new();
        let keys: Vec<Vec<u8>> = (0..10).map(|i| format!("k{i}").into_bytes()).collect();
        for (i, key) in keys.iter().enumerate() {
            records.push((i as u64 + 1, i as u64 + 1, key, &value));
        }
        records.push((11, 11, b"k0", b"again"));
        let image = crafted(header(11, 11, 11), &records);
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("t");
        std::fs::create_dir(&target).unwrap();
        let err = restore_snapshot(config(&target), &mut image.as_slice()).unwrap_err();
        assert!(err.to_string().contains("more than once"), "{err}");
        assert_eq!(entries(&target), Vec::<String>::new());
    }

    #[test]
    fn counters_at_the_limit_restore_and_writes_continue() {
        let image = crafted(
            header(MAX_IMAGE_COUNTER, MAX_IMAGE_COUNTER, 1),
            &[(MAX_IMAGE_COUNTER - 1, MAX_IMAGE_COUNTER - 1, b"k", b"v")],
        );
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("t");
        restore_snapshot(config(&target), &mut image.as_slice()).unwrap();
        let engine = KvEngine::open(config(&target)).unwrap();
        assert_eq!(engine.put(b"next", b"x").unwrap(), MAX_IMAGE_COUNTER + 1);
        drop(engine);
        // And the store reopens with the write.
        let engine = KvEngine::open(config(&target)).unwrap();
        assert_eq!(
            engine.get_versioned(b"next").unwrap().unwrap().version,
            MAX_IMAGE_COUNTER + 1
        );
    }

    #[test]
    fn an_image_over_the_targets_limits_is_refused_naming_the_limit() {
        let image = crafted(header(1, 1, 1), &[(1, 1, b"k", &[5; 100])]);
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("t");
        let small = Config {
            max_value_bytes: 99,
            ..config(&target)
        };
        let err = restore_snapshot(small, &mut image.as_slice()).unwrap_err();
        assert!(
            matches!(err, Error::Config(ref c) if c.field == "max_value_bytes"),
            "{err}"
        );
        assert!(!target.exists());
        restore_snapshot(config(&target), &mut image.as_slice()).unwrap();
    }

    /// What opening a target after a restore attempt may find: nothing of
    /// the store, the whole store, or a refusal naming the interrupted
    /// restore. Never part of the store.
    fn check_all_or_nothing(
        target: &Path,
        dump: &[(Vec<u8>, Vec<u8>)],
        context: &str,
    ) -> &'static str {
        let has_segments = entries(target).iter().any(|n| n.starts_with("seg-"));
        match KvEngine::open(config(target)) {
            Ok(engine) => {
                let got = contents(&engine);
                if got.is_empty() {
                    assert!(
                        !has_segments || dump.is_empty(),
                        "{context}: an empty store from segments"
                    );
                    "empty"
                } else {
                    assert_eq!(got, dump, "{context}: a partial store opened");
                    "complete"
                }
            }
            Err(Error::RestoreIncomplete { .. }) => "refused",
            Err(err) => panic!("{context}: unexpected open error {err}"),
        }
    }

    #[test]
    fn a_fault_at_any_step_leaves_all_or_nothing() {
        let (_source, dump, image) = image();
        // A hundred restores: on tmpfs where there is one (fsync costs
        // nothing there; what is tested is the order of the steps).
        let tmp = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap();
        let ops = [
            IoOp::Create,
            IoOp::Write,
            IoOp::SyncFile,
            IoOp::SyncDir,
            IoOp::Rename,
            IoOp::Remove,
        ];
        let mut outcomes = std::collections::BTreeMap::new();
        let mut run = 0;
        for op in ops {
            for sticky in [false, true] {
                for nth in 0.. {
                    run += 1;
                    let target = tmp.path().join(format!("t{run}"));
                    let faults = Arc::new(FailNth::new(op, nth, sticky));
                    let result = restore_snapshot_with_faults(
                        config(&target),
                        &mut image.as_slice(),
                        faults.clone(),
                    );
                    let context =
                        format!("{op:?} #{nth} sticky {sticky}: {:?}", result.as_ref().err());
                    if result.is_err() && !sticky {
                        // Without a failing clean-up the target is as it was.
                        assert!(!target.exists(), "{context}: {:?}", entries(&target));
                    }
                    let outcome = check_all_or_nothing(&target, &dump, &context);
                    match &result {
                        Ok(_) => assert_eq!(outcome, "complete", "{context}"),
                        Err(_) => assert_ne!(outcome, "complete", "{context}"),
                    }
                    if outcome == "refused" {
                        // What the error says to do works.
                        std::fs::remove_dir_all(&target).unwrap();
                        restore_snapshot(config(&target), &mut image.as_slice()).unwrap();
                        assert_eq!(check_all_or_nothing(&target, &dump, &context), "complete");
                    }
                    *outcomes.entry(outcome).or_insert(0) += 1;
                    if faults.seen() <= nth {
                        break; // The restore never reached the step that would fail.
                    }
                }
            }
        }
        eprintln!("{run} restores: {outcomes:?}");
        // Sticky failures of removals leave the marker: refused.
        assert!(
            outcomes.get("refused").copied().unwrap_or(0) > 0,
            "{outcomes:?}"
        );
    }

    #[test]
    fn a_leftover_of_a_killed_restore_is_refused_until_deleted() {
        let (tmp, dump, image) = image();
        let target = tmp.path().join("t");
        // What a kill between steps 1 and 5 leaves behind.
        {
            let dir = DataDir::open_for_restore(&target, Arc::new(NoFaults)).unwrap();
            write_marker(&dir).unwrap();
            dir.create_dir(RESTORE_STAGING_NAME).unwrap();
        }
        let err = KvEngine::open(config(&target)).err().unwrap();
        assert!(matches!(err, Error::RestoreIncomplete { .. }), "{err}");
        assert!(
            err.to_string().contains(&target.display().to_string()),
            "{err}"
        );
        let err = restore_snapshot(config(&target), &mut image.as_slice()).unwrap_err();
        assert!(matches!(err, Error::RestoreIncomplete { .. }), "{err}");
        std::fs::remove_dir_all(&target).unwrap();
        restore_snapshot(config(&target), &mut image.as_slice()).unwrap();
        assert_eq!(check_all_or_nothing(&target, &dump, "retry"), "complete");
    }
}
