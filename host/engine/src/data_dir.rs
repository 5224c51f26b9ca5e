//! The data directory: every file the store touches is reached through one
//! `cap_std::fs::Dir`, so no key, file name or path component can escape it.
//!
//! The directory is locked for the lifetime of a [`DataDir`]: exclusively
//! by a writer ([`DataDir::open`]), shared by readers
//! ([`DataDir::open_read_only`]), so several readers may run at once but
//! never beside a writer. The store holds every value and the auth
//! service's password hashes, so a directory this module creates is `0700`
//! and every file it creates `0600`, whatever the umask.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};

use crate::error::{ConfigError, Error, IoContext, Result};
use crate::fault::{IoFaults, IoOp};
use crate::log_segment::parse_segment_file_name;

pub const LOCK_FILE_NAME: &str = "LOCK";
/// Present from the start of a snapshot restore into this directory until
/// the restored store is complete and durable. A directory holding it is
/// refused at open: its store is partial.
pub const RESTORE_MARKER_NAME: &str = "RESTORE-INCOMPLETE";
/// Where a snapshot restore builds the store before publishing it.
pub const RESTORE_STAGING_NAME: &str = "restore.staging";
/// Mode of every directory the store creates: owner only.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the store creates: owner only.
pub const FILE_MODE: u32 = 0o600;

/// How a [`DataDir`] was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Exclusive lock; files may be created, written, renamed and removed.
    ReadWrite,
    /// Shared lock (when the directory has a lock file); nothing is
    /// created or changed: every method that would write fails.
    ReadOnly,
}

/// An open, locked data directory.
pub struct DataDir {
    dir: Dir,
    /// The directory itself as a file, for fsync after create/rename/remove.
    dir_file: File,
    path: PathBuf,
    faults: Arc<dyn IoFaults>,
    access: Access,
    /// Held open for the flock; released when dropped (or when the process
    /// dies). `None` only for a read-only open of a directory that has no
    /// lock file (no writer ever opened it).
    _lock: Option<File>,
}

impl DataDir {
    /// Opens (creating if missing, mode `0700`) and exclusively locks
    /// `path`. Refuses a directory left by an interrupted snapshot restore.
    pub fn open(path: &Path, faults: Arc<dyn IoFaults>) -> Result<Self> {
        let dir = Self::open_for_restore(path, faults)?;
        dir.refuse_interrupted_restore()?;
        Ok(dir)
    }

    /// Like [`DataDir::open`], but a directory holding the restore marker is
    /// accepted: the snapshot restore that owns it uses this.
    pub(crate) fn open_for_restore(path: &Path, faults: Arc<dyn IoFaults>) -> Result<Self> {
        if path.exists() && !path.is_dir() {
            return Err(Error::NotADirectory {
                path: path.to_path_buf(),
            });
        }
        create_private_dir_all(path)?;
        let (dir, dir_file) = open_dir(path)?;
        let lock = acquire_exclusive_lock(&dir, path)?;
        Ok(DataDir {
            dir,
            dir_file,
            path: path.to_path_buf(),
            faults,
            access: Access::ReadWrite,
            _lock: Some(lock),
        })
    }

    /// Opens `path` for reading only: nothing is created (a missing
    /// directory is an error naming it) and nothing is written, so it works
    /// on a read-only mount. Takes a shared lock on the lock file, so any
    /// number of readers may hold the directory at once while a writer is
    /// refused (and a reader is refused while a writer holds it). A
    /// directory without a lock file was never opened by a writer; it is
    /// read without a lock (with a warning), as nothing can be written to
    /// make one.
    pub fn open_read_only(path: &Path, faults: Arc<dyn IoFaults>) -> Result<Self> {
        match std::fs::metadata(path) {
            Ok(meta) if !meta.is_dir() => {
                return Err(Error::NotADirectory {
                    path: path.to_path_buf(),
                });
            }
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(ConfigError {
                    field: "data_dir",
                    reason: format!("{} does not exist", path.display()),
                }
                .into());
            }
            Err(err) => return Err(Error::io(format!("stat {}", path.display()), err)),
        }
        let (dir, dir_file) = open_dir(path)?;
        let lock = acquire_shared_lock(&dir, path)?;
        let data_dir = DataDir {
            dir,
            dir_file,
            path: path.to_path_buf(),
            faults,
            access: Access::ReadOnly,
            _lock: lock,
        };
        data_dir.refuse_interrupted_restore()?;
        Ok(data_dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn access(&self) -> Access {
        self.access
    }

    pub(crate) fn faults(&self) -> &dyn IoFaults {
        &*self.faults
    }

    fn refuse_interrupted_restore(&self) -> Result<()> {
        if self.exists(RESTORE_MARKER_NAME) {
            return Err(Error::RestoreIncomplete {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    /// Fails with a read-only file system error if this is a read-only open:
    /// a read path that tries to write is a bug, and must not change the store.
    fn check_writable(&self, what: &str, name: &str) -> Result<()> {
        match self.access {
            Access::ReadWrite => Ok(()),
            Access::ReadOnly => Err(Error::io(
                format!("{what} {name}"),
                io::Error::new(
                    io::ErrorKind::ReadOnlyFilesystem,
                    format!("data directory {} is open read-only", self.path.display()),
                ),
            )),
        }
    }

    /// Segment ids present, ascending.
    pub fn segment_ids(&self) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for entry in self.dir.entries().context(|| "list data directory")? {
            let entry = entry.context(|| "list data directory")?;
            if let Some(id) = entry.file_name().to_str().and_then(parse_segment_file_name) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Creates a new file (mode `0600`) for reading and writing; fails if it exists.
    pub fn create_new(&self, name: &str) -> Result<File> {
        self.check_writable("create", name)?;
        self.faults
            .check(IoOp::Create, name)
            .context(|| format!("create {name}"))?;
        let mut options = OpenOptions::new();
        options
            .read(true)
            .write(true)
            .create_new(true)
            .mode(FILE_MODE);
        let file = self
            .dir
            .open_with(name, &options)
            .context(|| format!("create {name}"))?
            .into_std();
        // The umask may have taken bits away (never added any): set exactly.
        set_mode(&file, FILE_MODE).context(|| format!("chmod {name}"))?;
        Ok(file)
    }

    /// Creates a subdirectory (mode `0700`); fails if it exists.
    pub(crate) fn create_dir(&self, name: &str) -> Result<()> {
        self.check_writable("create directory", name)?;
        self.faults
            .check(IoOp::Create, name)
            .context(|| format!("create directory {name}"))?;
        let mut builder = cap_std::fs::DirBuilder::new();
        cap_std::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
        self.dir
            .create_dir_with(name, &builder)
            .context(|| format!("create directory {name}"))?;
        self.dir
            .set_permissions(
                name,
                cap_std::fs::Permissions::from_std(std::fs::Permissions::from_mode(DIR_MODE)),
            )
            .context(|| format!("chmod {name}"))
    }

    /// Removes a subdirectory and everything in it.
    pub(crate) fn remove_dir_all(&self, name: &str) -> Result<()> {
        self.check_writable("remove directory", name)?;
        self.faults
            .check(IoOp::Remove, name)
            .context(|| format!("remove directory {name}"))?;
        self.dir
            .remove_dir_all(name)
            .context(|| format!("remove directory {name}"))
    }

    pub fn open_read_write(&self, name: &str) -> Result<File> {
        self.check_writable("open for writing", name)?;
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        Ok(self
            .dir
            .open_with(name, &options)
            .context(|| format!("open {name}"))?
            .into_std())
    }

    pub fn open_read(&self, name: &str) -> Result<File> {
        Ok(self
            .dir
            .open(name)
            .context(|| format!("open {name}"))?
            .into_std())
    }

    pub fn exists(&self, name: &str) -> bool {
        self.dir.exists(name)
    }

    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.move_to(from, self, to)
    }

    /// Renames `from` in this directory to `to` in `target` (on the same
    /// file system: a snapshot restore publishes its staging files so).
    pub(crate) fn move_to(&self, from: &str, target: &DataDir, to: &str) -> Result<()> {
        self.check_writable("rename", from)?;
        target.check_writable("rename to", to)?;
        self.faults
            .check(IoOp::Rename, from)
            .context(|| format!("rename {from} to {to}"))?;
        self.dir
            .rename(from, &target.dir, to)
            .context(|| format!("rename {from} to {to}"))
    }

    /// A second name for `from`, e.g. to keep a damaged file for forensics.
    pub fn hard_link(&self, from: &str, to: &str) -> Result<()> {
        self.check_writable("link", to)?;
        self.faults
            .check(IoOp::Create, to)
            .context(|| format!("link {from} as {to}"))?;
        self.dir
            .hard_link(from, &self.dir, to)
            .context(|| format!("link {from} as {to}"))
    }

    /// Names of every entry, for clean-up of leftovers.
    pub fn file_names(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in self.dir.entries().context(|| "list data directory")? {
            let entry = entry.context(|| "list data directory")?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    pub fn remove(&self, name: &str) -> Result<()> {
        self.check_writable("remove", name)?;
        self.faults
            .check(IoOp::Remove, name)
            .context(|| format!("remove {name}"))?;
        self.dir
            .remove_file(name)
            .context(|| format!("remove {name}"))
    }

    /// Writes `bytes` as file `name`, atomically: a temporary file
    /// (`name.tmp`) is written and fsynced, renamed over `name`, and the
    /// directory fsynced. A crash leaves the old file or the new one (and
    /// perhaps a `.tmp` leftover, which the next write replaces).
    pub fn write_file_atomically(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let temp = format!("{name}.tmp");
        if self.exists(&temp) {
            self.remove(&temp)?;
        }
        let file = self.create_new(&temp)?;
        self.faults
            .check(IoOp::Write, &temp)
            .context(|| format!("write {temp}"))?;
        std::os::unix::fs::FileExt::write_all_at(&file, bytes, 0)
            .context(|| format!("write {temp}"))?;
        self.faults
            .check(IoOp::SyncFile, &temp)
            .context(|| format!("fsync {temp}"))?;
        file.sync_all().context(|| format!("fsync {temp}"))?;
        self.rename(&temp, name)?;
        self.sync()
    }

    /// Fsyncs the file `name` (data and metadata).
    pub(crate) fn sync_file(&self, name: &str) -> Result<()> {
        self.check_writable("fsync", name)?;
        self.faults
            .check(IoOp::SyncFile, name)
            .context(|| format!("fsync {name}"))?;
        self.open_read(name)?
            .sync_all()
            .context(|| format!("fsync {name}"))
    }

    /// Makes creates, renames and removes durable.
    pub fn sync(&self) -> Result<()> {
        self.check_writable("fsync", ".")?;
        let what = || format!("fsync data directory {}", self.path.display());
        self.faults.check(IoOp::SyncDir, ".").context(what)?;
        self.dir_file.sync_all().context(what)
    }
}

/// Creates `path` and any missing parent with mode `0700`. The data
/// directory itself is then set to exactly `0700` (the umask may have
/// taken bits away). An existing directory is left as it is (opening it
/// warns if others may read it).
fn create_private_dir_all(path: &Path) -> Result<()> {
    let what = || format!("create data directory {}", path.display());
    if path.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .context(what)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(DIR_MODE)).context(what)
}

/// Group or other permission bits of a data directory: anyone they admit
/// can read every value (and the auth service's password hashes).
fn warn_if_shared(path: &Path) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if let Some(access) = shared_access(mode) {
        tracing::warn!(
            path = %path.display(),
            mode = %format!("{mode:o}"),
            "data directory is {access}; it holds every value and the auth service's password hashes: `chmod 700` it"
        );
    }
}

/// What group or other users may do with a directory of `mode`, if anything.
fn shared_access(mode: u32) -> Option<&'static str> {
    if mode & 0o044 != 0 {
        Some("readable by other users")
    } else if mode & 0o077 != 0 {
        Some("open to other users")
    } else {
        None
    }
}

/// Opens the directory, checks it can be listed, and opens it again as a
/// file that can be fsynced (cap-std holds it as an `O_PATH` descriptor).
fn open_dir(path: &Path) -> Result<(Dir, File)> {
    let dir = Dir::open_ambient_dir(path, ambient_authority())
        .context(|| format!("open data directory {}", path.display()))?;
    // Listing proves we can read it; a clear error now beats a confusing one later.
    dir.entries()
        .context(|| format!("read data directory {}", path.display()))?;
    let dir_file = dir
        .open(".")
        .context(|| format!("open data directory {}", path.display()))?
        .into_std();
    warn_if_shared(path);
    Ok((dir, dir_file))
}

fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

/// How long a lock held by someone else is retried before it counts as held.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(200);
const LOCK_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(2);

/// A non-blocking flock, retried for a short grace period. A flock belongs
/// to the open file description, and a thread of this process that forks
/// (to spawn a child) gives the child a copy of every descriptor until the
/// child execs and close-on-exec drops them: a store closed in that window
/// stays locked for a moment after its last handle here is gone. A real
/// holder still holds the lock after the grace period.
fn flock_with_grace(
    file: &File,
    operation: rustix::fs::FlockOperation,
) -> Result<(), rustix::io::Errno> {
    let deadline = std::time::Instant::now() + LOCK_GRACE;
    loop {
        match rustix::fs::flock(file, operation) {
            Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                std::thread::sleep(LOCK_RETRY_INTERVAL);
            }
            other => return other,
        }
    }
}

/// Takes an exclusive, non-blocking flock on `LOCK` (created `0600` if
/// missing) and records who holds it.
fn acquire_exclusive_lock(dir: &Dir, path: &Path) -> Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).mode(FILE_MODE);
    let mut file = dir
        .open_with(LOCK_FILE_NAME, &options)
        .context(|| format!("open lock file in {}", path.display()))?
        .into_std();
    match flock_with_grace(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            return Err(Error::Locked {
                path: path.to_path_buf(),
                holder: holder_of_refused_exclusive_lock(&mut file),
            });
        }
        Err(errno) => {
            return Err(Error::io(format!("lock {}", path.display()), errno.into()));
        }
    }
    let program = std::env::args().next().unwrap_or_default();
    let holder = format!("pid {} ({program})", std::process::id());
    file.set_len(0).context(|| "truncate lock file")?;
    file.seek(SeekFrom::Start(0))
        .context(|| "write lock file")?;
    file.write_all(holder.as_bytes())
        .context(|| "write lock file")?;
    Ok(file)
}

/// Takes a shared, non-blocking flock on `LOCK`, opened read-only (so it
/// works on a read-only mount). `None` if there is no lock file.
fn acquire_shared_lock(dir: &Dir, path: &Path) -> Result<Option<File>> {
    let mut file = match dir.open(LOCK_FILE_NAME) {
        Ok(file) => file.into_std(),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            tracing::warn!(
                path = %path.display(),
                "data directory has no lock file (no writer ever opened it here); reading it without a lock"
            );
            return Ok(None);
        }
        Err(err) => {
            return Err(Error::io(
                format!("open lock file in {}", path.display()),
                err,
            ));
        }
    };
    match flock_with_grace(&file, rustix::fs::FlockOperation::NonBlockingLockShared) {
        Ok(()) => Ok(Some(file)),
        // Only an exclusive lock blocks a shared one: a writer holds it,
        // and wrote its name into the file.
        Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::Locked {
            path: path.to_path_buf(),
            holder: recorded_holder(&mut file),
        }),
        Err(errno) => Err(Error::io(format!("lock {}", path.display()), errno.into())),
    }
}

/// Who holds a lock that an exclusive request was refused: readers (a
/// shared request succeeds; they write nothing, so the file names the last
/// writer, not them) or the writer the file names.
fn holder_of_refused_exclusive_lock(file: &mut File) -> String {
    use rustix::fs::FlockOperation;
    if rustix::fs::flock(&*file, FlockOperation::NonBlockingLockShared).is_ok() {
        let _ = rustix::fs::flock(&*file, FlockOperation::Unlock);
        return "shared by one or more read-only processes".to_string();
    }
    recorded_holder(file)
}

fn recorded_holder(file: &mut File) -> String {
    let mut holder = String::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.take(256).read_to_string(&mut holder);
    match holder.trim() {
        "" => "holder unknown".to_string(),
        named => named.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::NoFaults;

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_missing_directory_and_lists_segments() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a/b");
        let dir = DataDir::open(&path, Arc::new(NoFaults)).unwrap();
        for name in [
            "seg-0000000002.log",
            "seg-0000000001.log",
            "other.txt",
            "seg-0000000003.log.corrupt",
        ] {
            dir.create_new(name).unwrap();
        }
        assert_eq!(dir.segment_ids().unwrap(), vec![1, 2]);
    }

    #[test]
    fn directories_and_files_are_private_even_with_an_open_umask() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a/b");
        // The umask is per process; 0 only widens what other tests create.
        let old = rustix::process::umask(rustix::fs::Mode::empty());
        let opened = DataDir::open(&path, Arc::new(NoFaults));
        let created = opened.as_ref().map(|dir| {
            dir.create_new("seg-0000000001.log").unwrap();
            dir.write_file_atomically("seg-0000000001.meta", b"m")
                .unwrap();
            dir.create_dir("sub").unwrap();
        });
        rustix::process::umask(old);
        created.unwrap();
        assert_eq!(mode_of(&path), 0o700);
        assert_eq!(mode_of(&tmp.path().join("a")), 0o700);
        for file in ["LOCK", "seg-0000000001.log", "seg-0000000001.meta"] {
            assert_eq!(mode_of(&path.join(file)), 0o600, "{file}");
        }
        assert_eq!(mode_of(&path.join("sub")), 0o700);
    }

    #[test]
    fn an_existing_directory_keeps_its_mode_and_one_open_to_others_is_warned_about() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("shared");
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let logs = capture_warnings(|| drop(DataDir::open(&path, Arc::new(NoFaults)).unwrap()));
        assert!(logs.contains("readable by other users"), "{logs}");
        assert!(logs.contains("chmod 700"), "{logs}");
        assert_eq!(mode_of(&path), 0o755, "an operator's choice is not changed");
        let logs =
            capture_warnings(|| drop(DataDir::open_read_only(&path, Arc::new(NoFaults)).unwrap()));
        assert!(logs.contains("readable by other users"), "{logs}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        let logs = capture_warnings(|| drop(DataDir::open(&path, Arc::new(NoFaults)).unwrap()));
        assert!(!logs.contains("other users"), "{logs}");
    }

    #[test]
    fn shared_access_names_what_others_may_do() {
        assert_eq!(shared_access(0o700), None);
        assert_eq!(shared_access(0o750), Some("readable by other users"));
        assert_eq!(shared_access(0o704), Some("readable by other users"));
        assert_eq!(shared_access(0o711), Some("open to other users"));
        assert_eq!(shared_access(0o720), Some("open to other users"));
    }

    /// Runs `f` with a tracing subscriber that keeps warnings; returns them.
    fn capture_warnings(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn a_second_open_names_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let _first = DataDir::open(tmp.path(), Arc::new(NoFaults)).unwrap();
        // flock locks are per open file description, so a second open in the
        // same process conflicts just as another process would.
        match DataDir::open(tmp.path(), Arc::new(NoFaults)) {
            Err(Error::Locked { holder, .. }) => {
                assert!(
                    holder.contains(&format!("pid {}", std::process::id())),
                    "{holder}"
                );
            }
            other => panic!("expected Locked, got {:?}", other.err()),
        }
    }

    #[test]
    fn a_lock_briefly_kept_by_a_copied_descriptor_is_waited_for() {
        let tmp = tempfile::tempdir().unwrap();
        let first = DataDir::open(tmp.path(), Arc::new(NoFaults)).unwrap();
        // What a forked child holds until it execs: the same open file description.
        let inherited = first._lock.as_ref().unwrap().try_clone().unwrap();
        drop(first);
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(40));
            drop(inherited);
        });
        DataDir::open(tmp.path(), Arc::new(NoFaults)).unwrap();
        release.join().unwrap();
    }

    #[test]
    fn lock_is_released_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        drop(DataDir::open(tmp.path(), Arc::new(NoFaults)).unwrap());
        DataDir::open(tmp.path(), Arc::new(NoFaults)).unwrap();
    }

    #[test]
    fn a_file_is_not_a_data_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            DataDir::open(&file, Arc::new(NoFaults)),
            Err(Error::NotADirectory { .. })
        ));
        assert!(matches!(
            DataDir::open_read_only(&file, Arc::new(NoFaults)),
            Err(Error::NotADirectory { .. })
        ));
    }

    #[test]
    fn names_cannot_escape_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let inner = tmp.path().join("inner");
        let dir = DataDir::open(&inner, Arc::new(NoFaults)).unwrap();
        assert!(dir.create_new("../escaped").is_err());
        assert!(dir.create_new("/tmp/escaped-hightower").is_err());
        assert!(!tmp.path().join("escaped").exists());
    }

    #[test]
    fn a_missing_directory_is_not_created_by_a_reader_and_the_error_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("mistyped");
        let err = DataDir::open_read_only(&missing, Arc::new(NoFaults))
            .err()
            .unwrap();
        assert!(matches!(err, Error::Config(_)), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("{} does not exist", missing.display())),
            "{err}"
        );
        assert!(!missing.exists());
    }

    #[test]
    fn readers_share_the_directory_and_exclude_a_writer() {
        let tmp = tempfile::tempdir().unwrap();
        drop(DataDir::open(tmp.path(), Arc::new(NoFaults)).unwrap());
        let first = DataDir::open_read_only(tmp.path(), Arc::new(NoFaults)).unwrap();
        let second = DataDir::open_read_only(tmp.path(), Arc::new(NoFaults)).unwrap();
        assert_eq!(first.access(), Access::ReadOnly);
        match DataDir::open(tmp.path(), Arc::new(NoFaults)) {
            Err(Error::Locked { holder, .. }) => {
                assert!(holder.contains("read-only"), "{holder}");
            }
            other => panic!("expected Locked, got {:?}", other.err()),
        }
        drop(first);
        assert!(matches!(
            DataDir::open(tmp.path(), Arc::new(NoFaults)),
            Err(Error::Locked { .. })
        ));
        drop(second);
        DataDir::open(tmp.path(), Arc::new(NoFaults)).unwrap();
    }

    #[test]
    fn a_writer_excludes_readers_and_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let _writer = DataDir::open(tmp.path(), Arc::new(NoFaults)).unwrap();
        match DataDir::open_read_only(tmp.path(), Arc::new(NoFaults)) {
            Err(Error::Locked { holder, .. }) => {
                assert!(
                    holder.contains(&format!("pid {}", std::process::id())),
                    "{holder}"
                );
            }
            other => panic!("expected Locked, got {:?}", other.err()),
        }
    }

    /// Every entry's name, length, mode and modification time.
    fn listing(path: &Path) -> Vec<(String, u64, u32, std::time::SystemTime)> {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let meta = entry.metadata().unwrap();
                (
                    entry.file_name().to_string_lossy().into_owned(),
                    meta.len(),
                    meta.permissions().mode(),
                    meta.modified().unwrap(),
                )
            })
            .collect();
        entries.sort();
        entries
    }

    #[test]
    fn a_reader_writes_nothing_and_every_write_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let writer = DataDir::open(tmp.path(), Arc::new(NoFaults)).unwrap();
            writer.create_new("seg-0000000001.log").unwrap();
        }
        let before = listing(tmp.path());
        let lock_before = std::fs::read(tmp.path().join(LOCK_FILE_NAME)).unwrap();
        let reader = DataDir::open_read_only(tmp.path(), Arc::new(NoFaults)).unwrap();
        assert_eq!(reader.segment_ids().unwrap(), vec![1]);
        reader.open_read("seg-0000000001.log").unwrap();
        let refusals = [
            reader.create_new("x").err(),
            reader.create_dir("d").err(),
            reader.open_read_write("seg-0000000001.log").err(),
            reader.rename("seg-0000000001.log", "y").err(),
            reader.hard_link("seg-0000000001.log", "z").err(),
            reader.remove("seg-0000000001.log").err(),
            reader.write_file_atomically("m", b"m").err(),
            reader.sync_file("seg-0000000001.log").err(),
            reader.sync().err(),
        ];
        for err in refusals {
            match err {
                Some(Error::Io { source, .. }) => {
                    assert_eq!(source.kind(), io::ErrorKind::ReadOnlyFilesystem, "{source}");
                }
                other => panic!("expected a read-only refusal, got {other:?}"),
            }
        }
        drop(reader);
        assert_eq!(listing(tmp.path()), before);
        assert_eq!(
            std::fs::read(tmp.path().join(LOCK_FILE_NAME)).unwrap(),
            lock_before
        );
    }

    #[test]
    fn a_directory_without_a_lock_file_is_read_without_one() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("seg-0000000001.log"), b"").unwrap();
        let reader = DataDir::open_read_only(tmp.path(), Arc::new(NoFaults)).unwrap();
        assert!(reader._lock.is_none());
        assert!(!tmp.path().join(LOCK_FILE_NAME).exists());
    }

    #[test]
    fn an_interrupted_restore_is_refused_by_writers_and_readers() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let dir = DataDir::open_for_restore(tmp.path(), Arc::new(NoFaults)).unwrap();
            dir.create_new(RESTORE_MARKER_NAME).unwrap();
        }
        for err in [
            DataDir::open(tmp.path(), Arc::new(NoFaults)).err(),
            DataDir::open_read_only(tmp.path(), Arc::new(NoFaults)).err(),
        ] {
            let err = err.expect("refused");
            assert!(matches!(err, Error::RestoreIncomplete { .. }), "{err}");
            let text = err.to_string();
            assert!(text.contains("restore") && text.contains("again"), "{text}");
        }
    }
}
