//! The data directory: every file the store touches is reached through one
//! `cap_std::fs::Dir`, so no key, file name or path component can escape it.
//! The directory is locked for the lifetime of a [`DataDir`].

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};

use crate::error::{Error, IoContext, Result};
use crate::fault::{IoFaults, IoOp};
use crate::log_segment::parse_segment_file_name;

pub const LOCK_FILE_NAME: &str = "LOCK";

/// An open, locked data directory.
pub struct DataDir {
    dir: Dir,
    /// The directory itself as a file, for fsync after create/rename/remove.
    dir_file: File,
    path: PathBuf,
    faults: Arc<dyn IoFaults>,
    /// Held open for the flock; released when dropped (or when the process dies).
    _lock: File,
}

impl DataDir {
    /// Opens (creating if missing) and locks `path`.
    pub fn open(path: &Path, faults: Arc<dyn IoFaults>) -> Result<Self> {
        if path.exists() && !path.is_dir() {
            return Err(Error::NotADirectory {
                path: path.to_path_buf(),
            });
        }
        Dir::create_ambient_dir_all(path, ambient_authority())
            .context(|| format!("create data directory {}", path.display()))?;
        let dir = Dir::open_ambient_dir(path, ambient_authority())
            .context(|| format!("open data directory {}", path.display()))?;
        // Listing proves we can read it; a clear error now beats a confusing one later.
        dir.entries()
            .context(|| format!("read data directory {}", path.display()))?;
        // cap-std holds the directory as an O_PATH descriptor, which cannot be
        // fsynced; open it again for reading to get one that can.
        let dir_file = dir
            .open(".")
            .context(|| format!("open data directory {}", path.display()))?
            .into_std();
        let lock = acquire_lock(&dir, path)?;
        Ok(DataDir {
            dir,
            dir_file,
            path: path.to_path_buf(),
            faults,
            _lock: lock,
        })
    }

    pub(crate) fn faults(&self) -> &dyn IoFaults {
        &*self.faults
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

    /// Creates a new file for reading and writing; fails if it exists.
    pub fn create_new(&self, name: &str) -> Result<File> {
        self.faults
            .check(IoOp::Create, name)
            .context(|| format!("create {name}"))?;
        let mut options = OpenOptions::new();
        options.read(true).write(true).create_new(true);
        let file = self
            .dir
            .open_with(name, &options)
            .context(|| format!("create {name}"))?;
        Ok(file.into_std())
    }

    pub fn open_read_write(&self, name: &str) -> Result<File> {
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
        self.faults
            .check(IoOp::Rename, from)
            .context(|| format!("rename {from} to {to}"))?;
        self.dir
            .rename(from, &self.dir, to)
            .context(|| format!("rename {from} to {to}"))
    }

    /// A second name for `from`, e.g. to keep a damaged file for forensics.
    pub fn hard_link(&self, from: &str, to: &str) -> Result<()> {
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

    /// Makes creates, renames and removes durable.
    pub fn sync(&self) -> Result<()> {
        let what = || format!("fsync data directory {}", self.path.display());
        self.faults.check(IoOp::SyncDir, ".").context(what)?;
        self.dir_file.sync_all().context(what)
    }
}

/// How long a lock held by someone else is retried before it counts as held.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(200);
const LOCK_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(2);

/// An exclusive flock, retried for a short grace period. A flock belongs to
/// the open file description, and a thread of this process that forks (to
/// spawn a child) gives the child a copy of every descriptor until the
/// child execs and close-on-exec drops them: a store closed in that window
/// stays locked for a moment after its last handle here is gone. A real
/// holder still holds the lock after the grace period.
fn flock_with_grace(file: &File) -> Result<(), rustix::io::Errno> {
    let deadline = std::time::Instant::now() + LOCK_GRACE;
    loop {
        match rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                std::thread::sleep(LOCK_RETRY_INTERVAL);
            }
            other => return other,
        }
    }
}

/// Takes an exclusive, non-blocking flock on `LOCK` and records who holds it.
fn acquire_lock(dir: &Dir, path: &Path) -> Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true);
    let mut file = dir
        .open_with(LOCK_FILE_NAME, &options)
        .context(|| format!("open lock file in {}", path.display()))?
        .into_std();
    match flock_with_grace(&file) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() {
                "holder unknown".to_string()
            } else {
                holder.to_string()
            };
            return Err(Error::Locked {
                path: path.to_path_buf(),
                holder,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::NoFaults;

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
        let inherited = first._lock.try_clone().unwrap();
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
}
