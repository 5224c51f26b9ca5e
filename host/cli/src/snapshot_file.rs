//! `snapshot create FILE`: the image is written to `FILE.partial` (mode
//! 0600), fsynced, linked to `FILE` (which must not exist) and the partial
//! name removed, so `FILE` appears only complete.
//!
//! `FILE.partial` is ours while we hold an exclusive `flock` on it. One
//! left by a killed `snapshot create` is held by nobody: the next create
//! takes it over and writes it anew, provided it is empty or starts with the
//! snapshot magic (anything else under that name is not ours and is left
//! alone). A create that finds the lock held is refused (exit 3).

use std::fs::File;
use std::io::{BufWriter, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hightower_engine::ConfigError;
use hightower_engine::{Error, KvEngine};
use hightower_engine::{SNAPSHOT_MAGIC, SnapshotInfo};

use crate::error::CliError;

/// How often opening `FILE.partial` is retried when another create
/// replaced it between our open and our lock.
const OPEN_ATTEMPTS: usize = 3;

pub fn create(engine: &KvEngine, file: &Path) -> Result<SnapshotInfo, CliError> {
    if file.symlink_metadata().is_ok() {
        return Err(exists(file));
    }
    let partial = PathBuf::from(format!("{}.partial", file.display()));
    let out = lock_partial(&partial)?;
    let written = write_and_publish(engine, &out, &partial, file);
    if written.is_err() {
        // Still ours: we hold the lock on this very file.
        let _ = std::fs::remove_file(&partial);
    }
    written
}

fn exists(file: &Path) -> CliError {
    ConfigError {
        field: "snapshot file",
        reason: format!("{} already exists", file.display()),
    }
    .into()
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let what = format!("{what} {}", path.display());
    move |source| Error::io(what, source)
}

/// Opens `partial` (creating it, mode 0600, links not followed) and locks
/// it; checks that a file found there is a partial snapshot.
fn lock_partial(partial: &Path) -> Result<File, CliError> {
    for _ in 0..OPEN_ATTEMPTS {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(partial)
            .map_err(io("open", partial))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(CliError::Busy(format!(
                    "{} is being written by another snapshot create",
                    partial.display()
                )));
            }
            Err(err) => {
                return Err(Error::io(format!("lock {}", partial.display()), err.into()).into());
            }
        }
        // The create we waited for may have finished and removed the name
        // (or another taken it over): the lock must be on what it names.
        let ours = file.metadata().map_err(io("stat", partial))?;
        match partial.symlink_metadata() {
            Ok(named) if (named.dev(), named.ino()) == (ours.dev(), ours.ino()) => {
                check_is_partial_snapshot(&file, partial)?;
                // A file taken over keeps the mode it was created with.
                file.set_permissions(std::fs::Permissions::from_mode(0o600))
                    .map_err(io("chmod", partial))?;
                return Ok(file);
            }
            _ => continue,
        }
    }
    Err(CliError::Busy(format!(
        "{} keeps being replaced by other snapshot creates",
        partial.display()
    )))
}

/// Empty, or starting with (a prefix of) the snapshot magic: written by us.
fn check_is_partial_snapshot(file: &File, partial: &Path) -> Result<(), CliError> {
    let mut head = Vec::with_capacity(SNAPSHOT_MAGIC.len());
    file.take(SNAPSHOT_MAGIC.len() as u64)
        .read_to_end(&mut head)
        .map_err(io("read", partial))?;
    if SNAPSHOT_MAGIC.starts_with(&head) {
        return Ok(());
    }
    Err(ConfigError {
        field: "snapshot file",
        reason: format!(
            "{} exists and is not a partial snapshot; remove it or choose another name",
            partial.display()
        ),
    }
    .into())
}

fn write_and_publish(
    engine: &KvEngine,
    out: &File,
    partial: &Path,
    file: &Path,
) -> Result<SnapshotInfo, CliError> {
    out.set_len(0).map_err(io("truncate", partial))?;
    let mut handle = out;
    handle.rewind().map_err(io("seek", partial))?;
    let mut writer = BufWriter::new(out);
    let info = engine.write_snapshot(&mut writer)?;
    writer.flush().map_err(io("write", partial))?;
    drop(writer);
    out.sync_all().map_err(io("fsync", partial))?;
    // A link fails if FILE appeared meanwhile: nothing is overwritten.
    std::fs::hard_link(partial, file).map_err(|err| match err.kind() {
        std::io::ErrorKind::AlreadyExists => exists(file),
        _ => Error::io(
            format!("link {} to {}", partial.display(), file.display()),
            err,
        )
        .into(),
    })?;
    std::fs::remove_file(partial).map_err(io("remove", partial))?;
    let parent = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(io("fsync", parent))?;
    Ok(info)
}
