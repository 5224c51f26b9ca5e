//! [`KvEngine`]: the facade applications and the CLI use.
//!
//! Writes are validated, then group-committed through the commit queue into
//! the [`KvState`] state machine; reads go straight to storage through a
//! [`ReadContext`]. A `KvEngine` is a cheap handle: clone it to share the
//! store between threads; the store closes when the last handle goes.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::command::Command;
use crate::commit_queue::{CommitQueue, Ticket};
use crate::config::{Config, RecoveryMode, SyncMode};
use crate::data_dir::Access;
use crate::error::{Error, IoContext, Result};
use crate::fault::{IoFaults, NoFaults};
use crate::metrics::{Counter, Latency, Metrics, MetricsHook, MetricsSnapshot};
use crate::periodic::PeriodicThread;
use crate::snapshot::SnapshotInfo;
use crate::state::{KvState, Outcome};
use crate::storage::{
    CompactionReport, OpenReport, RecordInfo, SegmentInfo, StorageStats, Versioned,
};

/// What embedders may plug in besides the [`Config`].
#[derive(Clone)]
pub struct EngineOptions {
    /// Receives every metric event in addition to the built-in counters.
    pub metrics_hook: Option<Arc<dyn MetricsHook>>,
    /// Start background threads (the interval flusher and maintenance).
    /// Tests may turn this off for determinism and call [`KvEngine::flush`]
    /// themselves; with `sync = "interval"` nothing is then fsynced until
    /// they do, and sealed segments get their metadata after the commit that
    /// sealed them.
    pub background_threads: bool,
    /// Fault injection for the engine's own tests.
    #[doc(hidden)]
    pub io_faults: Option<Arc<dyn IoFaults>>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            metrics_hook: None,
            io_faults: None,
            background_threads: true,
        }
    }
}

/// A command's log index and outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// The log index the command was applied at.
    pub log_index: u64,
    /// What it did.
    pub outcome: Outcome,
}

/// Everything `hightower stats` shows.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// The data directory, as configured.
    pub data_dir: String,
    /// The fsync cadence.
    pub sync: SyncMode,
    /// Sizes of the store.
    pub storage: StorageStats,
    /// Counters and latencies of this process.
    pub metrics: MetricsSnapshot,
    /// What recovery did when the store was opened.
    pub recovery: OpenReport,
}

/// What the handles, the commit leader and the background threads share.
struct EngineCore {
    state: KvState,
    queue: CommitQueue<Applied>,
    metrics: Arc<Metrics>,
}

/// The background threads, stopped and joined when the last handle goes
/// (or by [`KvEngine::close`]).
struct EngineInner {
    core: Arc<EngineCore>,
    threads: Mutex<Vec<PeriodicThread>>,
    closed: AtomicBool,
}

/// An open store. Cheap to clone (an `Arc` inside); `Send + Sync`.
///
/// ```no_run
/// use hightower_engine::{KvEngine, SyncMode};
///
/// let engine = KvEngine::builder("/var/lib/app/kv")
///     .sync(SyncMode::Always)
///     .segment_size_bytes(64 << 20)
///     .open()?;
/// let version = engine.put("greeting", "hello")?;
/// assert_eq!(engine.get("greeting")?.as_deref(), Some(&b"hello"[..]));
/// # let _ = version;
/// # Ok::<(), hightower_engine::Error>(())
/// ```
#[derive(Clone)]
pub struct KvEngine {
    inner: Arc<EngineInner>,
}

/// Builds a [`Config`] field by field and opens the engine; every field
/// not set keeps the default documented on [`Config`].
#[must_use = "a builder does nothing until `open` is called"]
pub struct EngineBuilder {
    config: Config,
    options: EngineOptions,
}

macro_rules! config_setters {
    ($($(#[$doc:meta])* $field:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $field(mut self, value: $ty) -> Self {
                self.config.$field = value;
                self
            }
        )*
    };
}

impl EngineBuilder {
    config_setters! {
        /// When appended bytes are forced to stable storage.
        sync: SyncMode,
        /// Period of the background flusher with [`SyncMode::Interval`].
        sync_interval_ms: u64,
        /// Size at which a segment is sealed.
        segment_size_bytes: u64,
        /// Zeros written ahead of the tail in the fsyncing modes.
        preallocate_bytes: u64,
        /// Largest key accepted.
        max_key_bytes: u32,
        /// Largest value accepted.
        max_value_bytes: u32,
        /// Most operations (and conditions) in one batch.
        max_batch_ops: u32,
        /// Largest encoded batch.
        max_batch_bytes: u64,
        /// Most bytes one group commit appends before its fsync.
        max_commit_group_bytes: u64,
        /// How long a group commit's leader waits for more writers.
        group_commit_wait_us: u64,
        /// Keys the index has room for before it first grows.
        index_initial_capacity: usize,
        /// Occupancy at which the index doubles.
        index_max_load_factor: f64,
        /// What to do when a checksum fails outside the active tail.
        recovery: RecoveryMode,
        /// Most entries the hot index keeps in memory (0: no limit).
        hot_index_max_entries: u64,
        /// The same budget in bytes (0: no limit).
        hot_index_max_bytes: u64,
        /// Bloom filter bits per key in segment metadata.
        bloom_bits_per_key: u32,
        /// Dead fraction at which background compaction starts.
        compaction_dead_ratio: f64,
        /// Period of the maintenance thread.
        maintenance_interval_ms: u64,
    }

    /// Replaces every field with `config`'s (the data directory included).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Receives every metric event in addition to the built-in counters.
    pub fn metrics_hook(mut self, hook: Arc<dyn MetricsHook>) -> Self {
        self.options.metrics_hook = Some(hook);
        self
    }

    /// Whether to start background threads (see [`EngineOptions`]).
    pub fn background_threads(mut self, on: bool) -> Self {
        self.options.background_threads = on;
        self
    }

    /// Validates the configuration and opens (or creates) the store.
    pub fn open(self) -> Result<KvEngine> {
        KvEngine::open_with(self.config, self.options)
    }

    /// Opens an existing store for reading only; see
    /// [`KvEngine::open_read_only`].
    pub fn open_read_only(self) -> Result<KvEngine> {
        KvEngine::open_as(self.config, self.options, Access::ReadOnly)
    }
}

impl KvEngine {
    /// A builder for a store in `data_dir`.
    pub fn builder(data_dir: impl Into<PathBuf>) -> EngineBuilder {
        EngineBuilder {
            config: Config::new(data_dir),
            options: EngineOptions::default(),
        }
    }

    /// Opens (or creates) the store `config` describes.
    pub fn open(config: Config) -> Result<Self> {
        Self::open_with(config, EngineOptions::default())
    }

    /// Opens with options besides the configuration.
    pub fn open_with(config: Config, options: EngineOptions) -> Result<Self> {
        Self::open_as(config, options, Access::ReadWrite)
    }

    /// Opens an existing store for reading only: nothing is created (a
    /// missing data directory is an error naming it) and nothing is
    /// written, so it works on a read-only mount and on a full disk. Any
    /// number of read-only opens may hold the directory at once (a shared
    /// lock); a writer is refused meanwhile, and they are refused while a
    /// writer holds it. A damaged tail is not cut (reads stop before it)
    /// and metadata that must be rebuilt stays in memory. Writes fail with
    /// [`Error::ReadOnly`].
    pub fn open_read_only(config: Config) -> Result<Self> {
        let options = EngineOptions {
            background_threads: false,
            ..EngineOptions::default()
        };
        Self::open_as(config, options, Access::ReadOnly)
    }

    fn open_as(config: Config, options: EngineOptions, access: Access) -> Result<Self> {
        let metrics = Arc::new(Metrics::new(options.metrics_hook));
        let faults = options.io_faults.unwrap_or_else(|| Arc::new(NoFaults));
        let interval = (config.sync == SyncMode::Interval).then(|| config.sync_interval());
        let queue = CommitQueue::new(config.max_commit_group_bytes, config.group_commit_wait());
        let state = KvState::open(config, access, faults, metrics.clone())?;
        let core = Arc::new(EngineCore {
            state,
            queue,
            metrics,
        });
        let mut threads = Vec::new();
        if options.background_threads && access == Access::ReadWrite {
            if let Some(period) = interval {
                threads.push(start_flusher(core.clone(), period)?);
            }
            core.state.storage().set_background_maintenance(true);
            threads.push(start_maintenance(core.clone())?);
        }
        Ok(KvEngine {
            inner: Arc::new(EngineInner {
                core,
                threads: Mutex::new(threads),
                closed: AtomicBool::new(false),
            }),
        })
    }

    fn core(&self) -> &EngineCore {
        &self.inner.core
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &Config {
        self.core().state.storage().config()
    }

    /// The value of `key`, or `None`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        Ok(self.get_versioned(key)?.map(|v| v.value))
    }

    /// The value of `key` and the version that wrote it.
    pub fn get_versioned(&self, key: impl AsRef<[u8]>) -> Result<Option<Versioned>> {
        let key = key.as_ref();
        let core = self.core();
        core.state.limits().check_key(key)?;
        let found = core.state.get(key)?;
        core.metrics.add(Counter::Gets, 1);
        if found.is_some() {
            core.metrics.add(Counter::GetHits, 1);
        }
        Ok(found)
    }

    /// The highest version published: every write acknowledged so far has
    /// a version up to this one, and reads see all of them.
    pub fn committed_version(&self) -> u64 {
        self.core().state.storage().committed_version()
    }

    /// A context for reads; see [`ReadContext`].
    pub fn read(&self) -> ReadContext<'_> {
        ReadContext { engine: self }
    }

    /// Stores `value` under `key`; returns the new version.
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<u64> {
        let command = Command::Set {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
        };
        match self.apply(command)?.outcome {
            Outcome::Set { version } => Ok(version),
            other => Err(unexpected_outcome("set", &other)),
        }
    }

    /// Deletes `key`; returns the tombstone's version, or `None` if it was absent.
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<Option<u64>> {
        let command = Command::Delete {
            key: key.as_ref().to_vec(),
        };
        match self.apply(command)?.outcome {
            Outcome::Deleted { version } => Ok(version),
            other => Err(unexpected_outcome("delete", &other)),
        }
    }

    /// Applies any command. A failed batch condition is an `Ok` outcome
    /// ([`Outcome::ConditionFailed`]): it is a deterministic result, not an error.
    pub fn apply(&self, command: Command) -> Result<Applied> {
        let core = self.core();
        command.validate(core.state.limits())?;
        let started = Instant::now();
        let result = core
            .queue
            .submit(command, |group| commit_group(core, group));
        core.metrics.observe(Latency::Commit, started.elapsed());
        result
    }

    /// Fsyncs everything acknowledged so far, whatever the sync mode.
    pub fn flush(&self) -> Result<()> {
        self.core().state.storage().flush()
    }

    /// Sizes, counters, latencies and the recovery report.
    pub fn stats(&self) -> Stats {
        let storage = self.core().state.storage();
        Stats {
            data_dir: storage.config().data_dir.display().to_string(),
            sync: storage.config().sync,
            storage: storage.stats(),
            metrics: self.core().metrics.snapshot(),
            recovery: storage.open_report().clone(),
        }
    }

    /// Compacts every sealed segment now: copies their live records into new
    /// segments and deletes them. Reads and writes go on meanwhile.
    pub fn compact(&self) -> Result<CompactionReport> {
        self.core().state.storage().compact_all()
    }

    /// Every open segment with its records, live and dead bytes and
    /// metadata. Reads every record: an operator's tool.
    pub fn inspect_segments(&self) -> Result<Vec<SegmentInfo>> {
        self.core().state.storage().inspect_segments()
    }

    /// The records of segment `id` (the number in `seg-ID.log`), in log
    /// order, each with whether it is still its key's newest.
    pub fn inspect_segment(&self, id: u32) -> Result<Vec<RecordInfo>> {
        self.core().state.storage().inspect_records(id)
    }

    /// Writes a consistent, checksummed image of the store to `out`
    /// (format: `docs/format.md`). Writes go on meanwhile; the image holds
    /// exactly the commands up to the log index it reports.
    pub fn write_snapshot(&self, out: &mut dyn Write) -> Result<SnapshotInfo> {
        crate::snapshot::write_snapshot(self.core().state.storage(), out)
    }

    /// Replaces the whole state with the image read from `input` (written by
    /// [`KvEngine::write_snapshot`] here or on another node), while the
    /// store runs: a replica that fell behind installs its leader's
    /// snapshot this way. The image is checked completely before anything
    /// changes (a damaged, truncated or crafted one is refused and the store
    /// stays as it was); then readers switch from the old state to the new
    /// one at once, the image's last log index becomes the applied index,
    /// and the old state's space is freed. A crash at any step leaves the
    /// old state or the new one.
    pub fn install_snapshot(&self, input: &mut dyn std::io::Read) -> Result<SnapshotInfo> {
        crate::snapshot::install_snapshot(self.core().state.storage(), input)
    }

    /// The state machine underneath, for a replication layer.
    pub fn state(&self) -> &KvState {
        &self.core().state
    }

    /// Stops background threads, fsyncs, writes missing segment metadata,
    /// and releases the directory lock, reporting any failure. Only the
    /// last handle can close the store: with other handles alive this
    /// handle is dropped and [`Error::InUse`] says how many remain.
    pub fn close(self) -> Result<()> {
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner.shutdown(),
            Err(shared) => Err(Error::InUse {
                handles: Arc::strong_count(&shared) - 1,
            }),
        }
    }
}

impl EngineInner {
    fn shutdown(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.threads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
        let storage = self.core.state.storage();
        if storage.is_read_only() {
            return Ok(());
        }
        // A clean close leaves every sealed segment with its metadata, so
        // the next open reads no segment (the maintenance thread may not
        // have had its turn in a short-lived process).
        if let Err(err) = storage.build_pending_metas() {
            tracing::error!(error = %err, "writing segment metadata on close failed; the next open rebuilds it");
        }
        if storage.config().sync == SyncMode::Os {
            Ok(())
        } else {
            storage.flush()
        }
    }
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        if let Err(err) = self.shutdown() {
            tracing::error!(error = %err, "final fsync on drop failed");
        }
    }
}

fn unexpected_outcome(command: &str, outcome: &Outcome) -> Error {
    Error::Invariant(format!("a {command} command yielded {outcome:?}"))
}

/// Leader side of the commit queue: number the group's commands and apply them together.
fn commit_group(core: &EngineCore, group: &[Arc<Ticket<Applied>>]) {
    let state = &core.state;
    let first_index = state.last_applied() + 1;
    let commands: Vec<(u64, &Command)> = group
        .iter()
        .enumerate()
        .map(|(i, ticket)| (first_index + i as u64, &ticket.command))
        .collect();
    let results = state.apply_group(&commands);
    core.metrics.add(Counter::CommitGroups, 1);
    for ((ticket, (log_index, _)), result) in group.iter().zip(&commands).zip(results) {
        ticket.complete(result.map(|outcome| Applied {
            log_index: *log_index,
            outcome,
        }));
    }
}

/// Reads through a context see every write acknowledged before the context
/// was created (and possibly later ones). It is where a replicated engine
/// checks its read lease or read index; on a single node the local state
/// is authoritative.
pub struct ReadContext<'e> {
    engine: &'e KvEngine,
}

impl ReadContext<'_> {
    /// The value of `key` and its version.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Versioned>> {
        self.engine.get_versioned(key)
    }

    /// Whether `key` has a value.
    pub fn contains(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let key = key.as_ref();
        self.engine.core().state.limits().check_key(key)?;
        Ok(self
            .engine
            .core()
            .state
            .storage()
            .version_of(key)?
            .is_some())
    }

    /// Up to `limit` keys starting with `prefix`, in byte order, after
    /// `after` (a cursor: the last key of the previous page). Each call
    /// passes over the whole hot index (O(hot keys)) and, unless every key is
    /// hot, merges the segment metadata from the cursor on.
    pub fn keys_with_prefix(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>> {
        self.engine
            .core()
            .state
            .storage()
            .keys_with_prefix(prefix, after, limit)
    }
}

/// The `sync = "interval"` background flusher: fsyncs once per period.
/// A failure poisons the writer (and is logged there); the next write
/// reports it, so the flusher just carries on.
fn start_flusher(core: Arc<EngineCore>, period: Duration) -> Result<PeriodicThread> {
    PeriodicThread::start("hightower-flusher", period, move || {
        let _ = core.state.storage().sync_in_background();
    })
    .context(|| "start the flusher thread")
}

/// The maintenance thread: one round per `maintenance_interval_ms`. A
/// round that fails logs why and leaves the store as it was.
fn start_maintenance(core: Arc<EngineCore>) -> Result<PeriodicThread> {
    let period = core.state.storage().config().maintenance_interval();
    PeriodicThread::start("hightower-maintenance", period, move || {
        core.state.storage().maintain();
    })
    .context(|| "start the maintenance thread")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::{FailNth, IoOp};

    fn config(dir: &std::path::Path, sync: SyncMode) -> Config {
        Config {
            sync,
            sync_interval_ms: 5,
            segment_size_bytes: 64 << 10,
            ..Config::new(dir)
        }
    }

    #[test]
    fn put_get_delete_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = KvEngine::open(config(tmp.path(), SyncMode::Always)).unwrap();
        let version = engine.put(b"k", b"v").unwrap();
        assert_eq!(engine.get(b"k").unwrap().unwrap(), b"v");
        let read = engine.read();
        assert_eq!(read.get(b"k").unwrap().unwrap().version, version);
        assert!(read.contains(b"k").unwrap());
        for key in [&b"p/b"[..], b"p/a", b"q/a", b"p/c"] {
            engine.put(key, b"x").unwrap();
        }
        let read = engine.read();
        assert_eq!(
            read.keys_with_prefix(b"p/", None, 2).unwrap(),
            vec![b"p/a".to_vec(), b"p/b".to_vec()]
        );
        assert_eq!(
            read.keys_with_prefix(b"p/", Some(b"p/b"), 2).unwrap(),
            vec![b"p/c".to_vec()]
        );
        assert!(
            read.keys_with_prefix(b"p/", Some(b"p/c"), 2)
                .unwrap()
                .is_empty()
        );
        assert_eq!(engine.delete(b"k").unwrap(), Some(version + 5));
        assert_eq!(engine.delete(b"k").unwrap(), None);
        assert_eq!(engine.get(b"k").unwrap(), None);
        let stats = engine.stats();
        assert_eq!((stats.metrics.puts, stats.metrics.deletes), (5, 2));
        assert!(stats.metrics.fsyncs >= 2);
        assert_eq!(
            stats.metrics.bytes_appended,
            stats.storage.disk_bytes - 32,
            "every record after the header"
        );
        engine.close().unwrap();
    }

    #[test]
    fn bad_input_is_refused_before_the_queue() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = KvEngine::open(Config {
            max_value_bytes: 8,
            ..config(tmp.path(), SyncMode::Os)
        })
        .unwrap();
        assert!(engine.put(b"", b"v").is_err());
        let err = engine.put(b"k", b"123456789").unwrap_err();
        assert_eq!(
            err.to_string(),
            "value is 9 bytes, over the limit of 8 bytes (max_value_bytes)"
        );
        assert_eq!(engine.stats().storage.keys, 0);
        assert_eq!(engine.stats().metrics.bytes_appended, 0);
    }

    #[test]
    fn interval_mode_fsyncs_in_the_background() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = KvEngine::open(config(tmp.path(), SyncMode::Interval)).unwrap();
        engine.put(b"k", b"v").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while engine.stats().metrics.fsyncs == 0 {
            assert!(Instant::now() < deadline, "the flusher never synced");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn without_background_threads_nothing_syncs_until_flush() {
        let tmp = tempfile::tempdir().unwrap();
        let options = EngineOptions {
            background_threads: false,
            ..EngineOptions::default()
        };
        let engine = KvEngine::open_with(config(tmp.path(), SyncMode::Interval), options).unwrap();
        engine.put(b"k", b"v").unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(engine.stats().metrics.fsyncs, 0);
        engine.flush().unwrap();
        assert_eq!(engine.stats().metrics.fsyncs, 1);
    }

    #[test]
    fn a_failed_fsync_refuses_further_writes_and_reopen_recovers() {
        let tmp = tempfile::tempdir().unwrap();
        let faults = Arc::new(FailNth::new(IoOp::SyncFile, 4, false));
        let options = EngineOptions {
            io_faults: Some(faults.clone()),
            ..EngineOptions::default()
        };
        let engine = KvEngine::open_with(config(tmp.path(), SyncMode::Always), options).unwrap();
        // The segment's creation and the manifest fsync once each; puts 1
        // and 2 fsync next.
        engine.put(b"a", b"1").unwrap();
        engine.put(b"b", b"2").unwrap();
        let err = engine.put(b"c", b"3").unwrap_err();
        assert!(
            err.to_string().contains("injected SyncFile failure"),
            "{err}"
        );
        assert_eq!(
            engine.get(b"c").unwrap(),
            None,
            "an unacknowledged write is not published"
        );
        let refused = engine.put(b"d", b"4").unwrap_err();
        assert!(
            refused
                .to_string()
                .starts_with("writes are refused until the store is reopened"),
            "{refused}"
        );
        assert!(engine.stats().storage.poisoned.is_some());
        assert_eq!(engine.get(b"a").unwrap().unwrap(), b"1", "reads still work");
        drop(engine);
        let engine = KvEngine::open(config(tmp.path(), SyncMode::Always)).unwrap();
        assert_eq!(engine.get(b"a").unwrap().unwrap(), b"1");
        assert_eq!(engine.get(b"b").unwrap().unwrap(), b"2");
        engine.put(b"e", b"5").unwrap();
    }

    #[test]
    fn concurrent_writers_are_group_committed() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = Arc::new(KvEngine::open(config(tmp.path(), SyncMode::Always)).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let engine = engine.clone();
                std::thread::spawn(move || {
                    for i in 0..40 {
                        engine.put(format!("{t}-{i}").as_bytes(), b"v").unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let stats = engine.stats();
        assert_eq!(stats.storage.keys, 320);
        assert!(
            stats.metrics.commit_groups < 320,
            "groups: {}",
            stats.metrics.commit_groups
        );
        assert!(stats.metrics.fsyncs <= stats.metrics.commit_groups + stats.storage.segments);
    }

    #[test]
    fn a_reader_never_sees_half_a_batch() {
        use crate::command::Op;
        let tmp = tempfile::tempdir().unwrap();
        let engine = Arc::new(KvEngine::open(config(tmp.path(), SyncMode::Os)).unwrap());
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (engine, done) = (engine.clone(), done.clone());
            std::thread::spawn(move || {
                let value = |key: &[u8]| {
                    engine
                        .get(key)
                        .unwrap()
                        .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()))
                };
                let mut checks = 0u64;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    // The batch writes "first" before "second": seeing a new
                    // "first" and then an older "second" would be half a batch.
                    let first = value(b"first");
                    let second = value(b"second");
                    assert!(
                        second >= first,
                        "saw first={first} but then second={second}"
                    );
                    checks += 1;
                }
                checks
            })
        };
        for n in 1..=3000u64 {
            let ops = vec![
                Op::Set {
                    key: b"first".to_vec(),
                    value: n.to_le_bytes().to_vec(),
                },
                Op::Set {
                    key: b"second".to_vec(),
                    value: n.to_le_bytes().to_vec(),
                },
            ];
            engine
                .apply(Command::Batch {
                    conditions: vec![],
                    ops,
                })
                .unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    }

    #[test]
    fn prefix_pages_walk_every_matching_key_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = KvEngine::open(config(tmp.path(), SyncMode::Os)).unwrap();
        let mut expected = Vec::new();
        for i in (0..500u32).map(|i| (i * 7919) % 500) {
            let key = format!("p/{i:03}").into_bytes();
            engine.put(&key, b"v").unwrap();
            engine.put(format!("q/{i}").as_bytes(), b"v").unwrap();
            expected.push(key);
        }
        expected.sort();
        let read = engine.read();
        let mut seen = Vec::new();
        let mut cursor: Option<Vec<u8>> = None;
        for _ in 0..100 {
            let page = read.keys_with_prefix(b"p/", cursor.as_deref(), 7).unwrap();
            assert!(page.len() <= 7);
            let Some(last) = page.last().cloned() else {
                break;
            };
            seen.extend(page);
            cursor = Some(last);
        }
        assert_eq!(seen, expected);
        assert!(read.keys_with_prefix(b"p/", None, 0).unwrap().is_empty());
    }
}
