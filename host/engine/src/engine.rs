//! [`KvEngine`]: the facade applications and the CLI use.
//!
//! Writes are validated, then group-committed through the [`CommitQueue`]
//! into the [`KvState`] state machine; reads go straight to storage through a
//! [`ReadContext`]. The engine is `Send + Sync`: share it with `Arc`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::command::Command;
use crate::commit_queue::{CommitQueue, Ticket};
use crate::config::{Config, SyncMode};
use crate::error::{IoContext, Result};
use crate::fault::{IoFaults, NoFaults};
use crate::metrics::{Counter, Latency, Metrics, MetricsHook, MetricsSnapshot};
use crate::periodic::PeriodicThread;
use crate::state::{KvState, Outcome};
use crate::storage::{OpenReport, StorageStats, Versioned};

/// What embedders may plug in besides the [`Config`].
#[derive(Clone)]
pub struct EngineOptions {
    /// Receives every metric event in addition to the built-in counters.
    pub metrics_hook: Option<Arc<dyn MetricsHook>>,
    /// Fault injection for tests; `None` in production.
    pub io_faults: Option<Arc<dyn IoFaults>>,
    /// Start background threads (the interval flusher). Tests may turn this
    /// off for determinism and call [`KvEngine::flush`] themselves; with
    /// `sync = "interval"` nothing is then fsynced until they do.
    pub background_threads: bool,
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
    pub log_index: u64,
    pub outcome: Outcome,
}

/// Everything `hightower stats` shows.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    pub data_dir: String,
    pub sync: SyncMode,
    pub storage: StorageStats,
    pub metrics: MetricsSnapshot,
    pub recovery: OpenReport,
}

struct Shared {
    state: KvState,
    queue: CommitQueue<Applied>,
    metrics: Arc<Metrics>,
}

pub struct KvEngine {
    shared: Arc<Shared>,
    flusher: Option<PeriodicThread>,
    /// Writes segment metadata, fills the hot index after a restart, and
    /// compacts (see `storage::maintenance`).
    maintenance: Option<PeriodicThread>,
    closed: bool,
}

impl KvEngine {
    pub fn open(config: Config) -> Result<Self> {
        Self::open_with(config, EngineOptions::default())
    }

    pub fn open_with(config: Config, options: EngineOptions) -> Result<Self> {
        let metrics = Arc::new(Metrics::new(options.metrics_hook));
        let faults = options.io_faults.unwrap_or_else(|| Arc::new(NoFaults));
        let interval = (config.sync == SyncMode::Interval).then(|| config.sync_interval());
        let queue = CommitQueue::new(config.max_commit_group_bytes, config.group_commit_wait());
        let state = KvState::open(config, faults, metrics.clone())?;
        let shared = Arc::new(Shared {
            state,
            queue,
            metrics,
        });
        let flusher = match interval {
            Some(period) if options.background_threads => {
                Some(start_flusher(shared.clone(), period)?)
            }
            _ => None,
        };
        let maintenance = if options.background_threads {
            shared.state.storage().set_background_maintenance(true);
            Some(start_maintenance(shared.clone())?)
        } else {
            None
        };
        Ok(KvEngine {
            shared,
            flusher,
            maintenance,
            closed: false,
        })
    }

    pub fn config(&self) -> &Config {
        self.shared.state.storage().config()
    }

    /// The value of `key`, or `None`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get_versioned(key)?.map(|v| v.value))
    }

    /// The value of `key` and the version that wrote it.
    pub fn get_versioned(&self, key: &[u8]) -> Result<Option<Versioned>> {
        self.shared.state.limits().check_key(key)?;
        let found = self.shared.state.get(key)?;
        self.shared.metrics.add(Counter::Gets, 1);
        if found.is_some() {
            self.shared.metrics.add(Counter::GetHits, 1);
        }
        Ok(found)
    }

    /// A context for reads; see [`ReadContext`].
    pub fn read(&self) -> ReadContext<'_> {
        ReadContext {
            engine: self,
            read_version: self.shared.state.storage().committed_version(),
        }
    }

    /// Stores `value` under `key`; returns the new version.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<u64> {
        match self
            .apply(Command::Set {
                key: key.to_vec(),
                value: value.to_vec(),
            })?
            .outcome
        {
            Outcome::Set { version } => Ok(version),
            other => unreachable!("a set yields Set, got {other:?}"),
        }
    }

    /// Deletes `key`; returns the tombstone's version, or `None` if it was absent.
    pub fn delete(&self, key: &[u8]) -> Result<Option<u64>> {
        match self.apply(Command::Delete { key: key.to_vec() })?.outcome {
            Outcome::Deleted { version } => Ok(version),
            other => unreachable!("a delete yields Deleted, got {other:?}"),
        }
    }

    /// Applies any command. A failed batch condition is an `Ok` outcome
    /// ([`Outcome::ConditionFailed`]): it is a deterministic result, not an error.
    pub fn apply(&self, command: Command) -> Result<Applied> {
        command.validate(self.shared.state.limits())?;
        let started = Instant::now();
        let shared = &*self.shared;
        let result = shared.queue.submit(command, |group| {
            commit_group(&shared.state, &shared.metrics, group)
        });
        shared.metrics.observe(Latency::Commit, started.elapsed());
        result
    }

    /// Fsyncs everything acknowledged so far, whatever the sync mode.
    pub fn flush(&self) -> Result<()> {
        self.shared.state.storage().flush()
    }

    pub fn stats(&self) -> Stats {
        let storage = self.shared.state.storage();
        Stats {
            data_dir: storage.config().data_dir.display().to_string(),
            sync: storage.config().sync,
            storage: storage.stats(),
            metrics: self.shared.metrics.snapshot(),
            recovery: storage.open_report().clone(),
        }
    }

    /// Compacts every sealed segment now: copies their live records into new
    /// segments and deletes them. Reads and writes go on meanwhile.
    pub fn compact(&self) -> Result<crate::storage::CompactionReport> {
        self.shared.state.storage().compact_all()
    }

    /// The state machine underneath, for replication and snapshots.
    pub fn state(&self) -> &KvState {
        &self.shared.state
    }

    /// Stops background threads, fsyncs, and releases the directory lock.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.closed, true) {
            return Ok(());
        }
        drop(self.flusher.take());
        drop(self.maintenance.take());
        // A clean close leaves every sealed segment with its metadata, so
        // the next open reads no segment (the maintenance thread may not
        // have had its turn in a short-lived process).
        if let Err(err) = self.shared.state.storage().build_pending_metas() {
            tracing::error!(error = %err, "writing segment metadata on close failed; the next open rebuilds it");
        }
        if self.config().sync == SyncMode::Os {
            Ok(())
        } else {
            self.flush()
        }
    }
}

impl Drop for KvEngine {
    fn drop(&mut self) {
        if let Err(err) = self.shutdown() {
            tracing::error!(error = %err, "final fsync on drop failed");
        }
    }
}

/// Leader side of the commit queue: number the group's commands and apply them together.
fn commit_group(state: &KvState, metrics: &Metrics, group: &[Arc<Ticket<Applied>>]) {
    let first_index = state.last_applied() + 1;
    let commands: Vec<(u64, &Command)> = group
        .iter()
        .enumerate()
        .map(|(i, ticket)| (first_index + i as u64, &ticket.command))
        .collect();
    let results = state.apply_group(&commands);
    metrics.add(Counter::CommitGroups, 1);
    for ((ticket, (log_index, _)), result) in group.iter().zip(&commands).zip(results) {
        ticket.complete(result.map(|outcome| Applied {
            log_index: *log_index,
            outcome,
        }));
    }
}

/// Reads through a context see every write acknowledged before the context
/// was created (and possibly later ones), and return each value's version.
/// It is where a replicated engine will check its read lease or read index;
/// on a single node the local state is authoritative.
pub struct ReadContext<'e> {
    engine: &'e KvEngine,
    read_version: u64,
}

impl ReadContext<'_> {
    /// Every write with a version up to this one is visible to this context.
    pub fn read_version(&self) -> u64 {
        self.read_version
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Versioned>> {
        self.engine.get_versioned(key)
    }

    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        Ok(self
            .engine
            .shared
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
            .shared
            .state
            .storage()
            .keys_with_prefix(prefix, after, limit)
    }
}

/// The `sync = "interval"` background flusher: fsyncs once per period.
/// A failure poisons the writer (and is logged there); the next write
/// reports it, so the flusher just carries on.
fn start_flusher(shared: Arc<Shared>, period: Duration) -> Result<PeriodicThread> {
    PeriodicThread::start("hightower-flusher", period, move || {
        let _ = shared.state.storage().sync_in_background();
    })
    .context(|| "start the flusher thread")
}

/// The maintenance thread: one round per `maintenance_interval_ms`. A
/// round that fails logs why and leaves the store as it was.
fn start_maintenance(shared: Arc<Shared>) -> Result<PeriodicThread> {
    let period = shared.state.storage().config().maintenance_interval();
    PeriodicThread::start("hightower-maintenance", period, move || {
        shared.state.storage().maintain();
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
        assert!(read.read_version() >= version);
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
        let faults = Arc::new(FailNth::new(IoOp::SyncFile, 3, false));
        let options = EngineOptions {
            io_faults: Some(faults.clone()),
            ..EngineOptions::default()
        };
        let engine = KvEngine::open_with(config(tmp.path(), SyncMode::Always), options).unwrap();
        // The segment's creation fsyncs once; puts 1 and 2 fsync next.
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
