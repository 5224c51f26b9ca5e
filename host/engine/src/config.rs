//! Every knob of the engine, with its default, in one place.
//!
//! Units are last in the names (`_bytes`, `_ms`). The same struct is read
//! from the CLI's `--config FILE` (TOML); a missing field takes the default
//! below, an unknown field is an error (a typo must not be silently ignored).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::log_segment::{MAX_FORMAT_KEY_BYTES, MAX_FORMAT_VALUE_BYTES, SEGMENT_HEADER_LEN};

/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "hightower-data";

/// When appended bytes are forced to stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// A write is acknowledged only after an fsync covering it returned.
    /// Concurrent writers share one fsync (group commit).
    Always,
    /// A background flusher fsyncs every `sync_interval_ms`.
    Interval,
    /// No fsync on the write path; the kernel writes back when it likes.
    Os,
}

impl std::fmt::Display for SyncMode {
    /// The name used in config files: `always`, `interval`, `os`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SyncMode::Always => "always",
            SyncMode::Interval => "interval",
            SyncMode::Os => "os",
        })
    }
}

/// What to do when a checksum fails somewhere other than the active tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecoveryMode {
    /// Refuse to open, naming the file and the offset.
    Strict,
    /// Keep every intact command, move the damaged file aside as
    /// `*.corrupt`, and report what was dropped.
    Salvage,
}

/// Every knob of the store, with its default (see the field docs and the README); built by [`crate::KvEngine::builder`] or read from a config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory holding segments and the lock file. Default `hightower-data`.
    pub data_dir: PathBuf,
    /// Fsync cadence. Default `always`.
    pub sync: SyncMode,
    /// Period of the background flusher when `sync = "interval"`. Default
    /// 100 ms; at most an hour.
    pub sync_interval_ms: u64,
    /// A segment is sealed and a new one started once it would grow past this.
    /// Default 64 MiB; from 4 KiB to 2 GiB.
    pub segment_size_bytes: u64,
    /// Zeroed space written ahead of the log tail in the fsyncing modes, so an
    /// fdatasync does not also have to journal a new file size. Default 1 MiB;
    /// 0 disables; capped at a quarter of `segment_size_bytes`; at most 2 GiB.
    pub preallocate_bytes: u64,
    /// Largest key accepted. Default 4096; at most 65535 (the format's limit).
    pub max_key_bytes: u32,
    /// Largest value accepted. Default 16 MiB; at most 1 GiB.
    pub max_value_bytes: u32,
    /// Most operations (and most conditions) in one batch. Default 10,000;
    /// at most 2^24.
    pub max_batch_ops: u32,
    /// Largest encoded batch. Default 64 MiB; at most 1 GiB.
    pub max_batch_bytes: u64,
    /// Most bytes one group commit appends before it syncs and lets the next
    /// group start. Default 4 MiB; at most 1 GiB.
    pub max_commit_group_bytes: u64,
    /// How long a group commit's leader may wait for the writers of the
    /// previous group to queue up again before it commits, so they share
    /// one fsync. A lone writer never waits. Default 50 µs; 0 disables.
    pub group_commit_wait_us: u64,
    /// Keys the index has room for before it first grows (allocated at
    /// open). Default 0; at most 2^30.
    pub index_initial_capacity: usize,
    /// Occupancy at which the index doubles, in (0, 0.875]. Default 0.875
    /// (the ceiling of the underlying SwissTable).
    pub index_max_load_factor: f64,
    /// Recovery policy for corruption outside the active tail. Default `strict`.
    pub recovery: RecoveryMode,
    /// Most entries the hot index keeps in memory; keys beyond it are found
    /// through segment metadata. 0 (the default): no limit, every key stays
    /// hot. The keys of the active segment always stay hot, so the index may
    /// pass a budget smaller than the active segment's distinct keys. At
    /// most 2^40.
    pub hot_index_max_entries: u64,
    /// The same budget in bytes of hash tables (about 29 bytes per entry,
    /// rounded down to whole table sizes). 0 (the default): no limit. With
    /// both set, the smaller wins. At most 1 TiB.
    pub hot_index_max_bytes: u64,
    /// Bloom filter bits per key in segment metadata. Default 10 (about 1%
    /// false positives); 1..=32.
    pub bloom_bits_per_key: u32,
    /// Background compaction starts on a run of sealed segments when at
    /// least this fraction of its bytes is dead (overwritten or deleted).
    /// Default 0.5; in (0, 1].
    pub compaction_dead_ratio: f64,
    /// Period of the maintenance thread, which writes segment metadata,
    /// fills the hot index after a restart and starts compactions. Default
    /// 100 ms; at most an hour.
    pub maintenance_interval_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            sync: SyncMode::Always,
            sync_interval_ms: 100,
            segment_size_bytes: 64 << 20,
            preallocate_bytes: 1 << 20,
            max_key_bytes: 4096,
            max_value_bytes: 16 << 20,
            max_batch_ops: 10_000,
            max_batch_bytes: 64 << 20,
            max_commit_group_bytes: 4 << 20,
            group_commit_wait_us: 50,
            index_initial_capacity: 0,
            index_max_load_factor: 0.875,
            recovery: RecoveryMode::Strict,
            hot_index_max_entries: 0,
            hot_index_max_bytes: 0,
            bloom_bits_per_key: 10,
            compaction_dead_ratio: 0.5,
            maintenance_interval_ms: 100,
        }
    }
}

const MIN_SEGMENT_BYTES: u64 = 4 << 10;
const MAX_SEGMENT_BYTES: u64 = 2 << 30;
const MAX_BATCH_BYTES: u64 = 1 << 30;
const MAX_LOAD_FACTOR: f64 = 0.875;
const MAX_GROUP_COMMIT_WAIT_US: u64 = 10_000;
/// The smallest byte budget: a few buckets per index shard.
const MIN_HOT_INDEX_BYTES: u64 = 64 << 10;
/// Longest period of the flusher and of the maintenance thread: an hour.
const MAX_PERIOD_MS: u64 = 3_600_000;
/// Most operations of a batch: far more than fit `max_batch_bytes` at its
/// ceiling with the smallest records.
const MAX_BATCH_OPS: u32 = 1 << 24;
const MAX_COMMIT_GROUP_BYTES: u64 = 1 << 30;
/// Most keys the index is sized for at open (about 31 GiB of tables, all
/// allocated at once); a bigger index grows to it by itself.
const MAX_INDEX_INITIAL_CAPACITY: usize = 1 << 30;
/// Ceilings of the hot-index budgets, far above any real store: a bigger
/// number is a typo, not a budget (0 means no limit).
const MAX_HOT_INDEX_ENTRIES: u64 = 1 << 40;
const MAX_HOT_INDEX_BYTES: u64 = 1 << 40;

impl Config {
    /// A config for `data_dir` with every other field at its default.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            ..Config::default()
        }
    }

    /// `group_commit_wait_us` as a duration.
    pub fn group_commit_wait(&self) -> Duration {
        Duration::from_micros(self.group_commit_wait_us)
    }

    /// `sync_interval_ms` as a duration.
    pub fn sync_interval(&self) -> Duration {
        Duration::from_millis(self.sync_interval_ms)
    }

    /// Checks every field against its range; the error names the field.
    /// Every size and period has an upper bound, so that no value can make
    /// the store allocate without bound, overflow or wait forever.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |field, reason: String| Err(ConfigError { field, reason });
        if self.data_dir.as_os_str().is_empty() {
            return fail("data_dir", "must not be empty".into());
        }
        self.validate_ceilings()?;
        if self.sync == SyncMode::Interval && self.sync_interval_ms == 0 {
            return fail(
                "sync_interval_ms",
                "must be at least 1 with sync = \"interval\"".into(),
            );
        }
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_size_bytes) {
            return fail(
                "segment_size_bytes",
                format!(
                    "{} is outside {MIN_SEGMENT_BYTES}..={MAX_SEGMENT_BYTES}",
                    self.segment_size_bytes
                ),
            );
        }
        if self.max_key_bytes == 0 || self.max_key_bytes as usize > MAX_FORMAT_KEY_BYTES {
            return fail(
                "max_key_bytes",
                format!("must be in 1..={MAX_FORMAT_KEY_BYTES}"),
            );
        }
        if self.max_value_bytes as usize > MAX_FORMAT_VALUE_BYTES {
            return fail(
                "max_value_bytes",
                format!("must be at most {MAX_FORMAT_VALUE_BYTES}"),
            );
        }
        if self.max_batch_ops == 0 {
            return fail("max_batch_ops", "must be at least 1".into());
        }
        let largest_single_record = crate::log_segment::RECORD_HEADER_LEN as u64
            + u64::from(self.max_key_bytes)
            + u64::from(self.max_value_bytes);
        if self.max_batch_bytes < largest_single_record || self.max_batch_bytes > MAX_BATCH_BYTES {
            return fail(
                "max_batch_bytes",
                format!(
                    "must hold one largest record ({largest_single_record} bytes) and be at most {MAX_BATCH_BYTES}"
                ),
            );
        }
        if self.group_commit_wait_us > MAX_GROUP_COMMIT_WAIT_US {
            return fail(
                "group_commit_wait_us",
                format!(
                    "{} is over {MAX_GROUP_COMMIT_WAIT_US}",
                    self.group_commit_wait_us
                ),
            );
        }
        if self.max_commit_group_bytes == 0 {
            return fail("max_commit_group_bytes", "must be at least 1".into());
        }
        if !(self.index_max_load_factor > 0.0 && self.index_max_load_factor <= MAX_LOAD_FACTOR) {
            return fail(
                "index_max_load_factor",
                format!(
                    "{} is outside (0, {MAX_LOAD_FACTOR}]",
                    self.index_max_load_factor
                ),
            );
        }
        if !(1..=32).contains(&self.bloom_bits_per_key) {
            return fail(
                "bloom_bits_per_key",
                format!("{} is outside 1..=32", self.bloom_bits_per_key),
            );
        }
        if !(self.compaction_dead_ratio > 0.0 && self.compaction_dead_ratio <= 1.0) {
            return fail(
                "compaction_dead_ratio",
                format!("{} is outside (0, 1]", self.compaction_dead_ratio),
            );
        }
        if self.maintenance_interval_ms == 0 {
            return fail("maintenance_interval_ms", "must be at least 1".into());
        }
        if self.hot_index_max_bytes != 0 && self.hot_index_max_bytes < MIN_HOT_INDEX_BYTES {
            return fail(
                "hot_index_max_bytes",
                format!("must be 0 (no limit) or at least {MIN_HOT_INDEX_BYTES}"),
            );
        }
        Ok(())
    }

    /// The upper bounds that the range checks of [`Config::validate`] do
    /// not already imply.
    fn validate_ceilings(&self) -> Result<(), ConfigError> {
        let capacity = u64::try_from(self.index_initial_capacity).unwrap_or(u64::MAX);
        let ceilings: [(&'static str, u64, u64); 8] = [
            ("sync_interval_ms", self.sync_interval_ms, MAX_PERIOD_MS),
            (
                "maintenance_interval_ms",
                self.maintenance_interval_ms,
                MAX_PERIOD_MS,
            ),
            (
                "preallocate_bytes",
                self.preallocate_bytes,
                MAX_SEGMENT_BYTES,
            ),
            (
                "max_batch_ops",
                u64::from(self.max_batch_ops),
                u64::from(MAX_BATCH_OPS),
            ),
            (
                "max_commit_group_bytes",
                self.max_commit_group_bytes,
                MAX_COMMIT_GROUP_BYTES,
            ),
            (
                "index_initial_capacity",
                capacity,
                MAX_INDEX_INITIAL_CAPACITY as u64,
            ),
            (
                "hot_index_max_entries",
                self.hot_index_max_entries,
                MAX_HOT_INDEX_ENTRIES,
            ),
            (
                "hot_index_max_bytes",
                self.hot_index_max_bytes,
                MAX_HOT_INDEX_BYTES,
            ),
        ];
        for (field, value, max) in ceilings {
            if value > max {
                return Err(ConfigError {
                    field,
                    reason: format!("{value} is over the limit of {max}"),
                });
            }
        }
        Ok(())
    }

    /// `maintenance_interval_ms` as a duration.
    pub fn maintenance_interval(&self) -> Duration {
        Duration::from_millis(self.maintenance_interval_ms)
    }

    /// Most entries one hot-index shard keeps, or `None` without a budget.
    pub(crate) fn hot_index_shard_max_entries(&self) -> Option<usize> {
        let shards = crate::index::SHARDS as u64;
        let by_entries = (self.hot_index_max_entries > 0)
            .then(|| (self.hot_index_max_entries / shards).max(1) as usize);
        let by_bytes = (self.hot_index_max_bytes > 0).then(|| {
            crate::index::shard_entries_for_bytes(
                self.hot_index_max_bytes,
                self.index_max_load_factor,
            )
        });
        match (by_entries, by_bytes) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Address space reserved for the active segment's memory map: a full
    /// segment plus one oversized batch (a batch never spans two segments).
    pub(crate) fn active_map_bytes(&self) -> u64 {
        SEGMENT_HEADER_LEN as u64 + self.segment_size_bytes + self.max_batch_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let cases: Vec<(Config, &str)> = vec![
            (
                Config {
                    segment_size_bytes: 10,
                    ..Config::default()
                },
                "segment_size_bytes",
            ),
            (
                Config {
                    max_key_bytes: 70_000,
                    ..Config::default()
                },
                "max_key_bytes",
            ),
            (
                Config {
                    max_key_bytes: 0,
                    ..Config::default()
                },
                "max_key_bytes",
            ),
            (
                Config {
                    index_max_load_factor: 0.95,
                    ..Config::default()
                },
                "index_max_load_factor",
            ),
            (
                Config {
                    max_batch_bytes: 10,
                    ..Config::default()
                },
                "max_batch_bytes",
            ),
            (
                Config {
                    sync: SyncMode::Interval,
                    sync_interval_ms: 0,
                    ..Config::default()
                },
                "sync_interval_ms",
            ),
            (
                Config {
                    data_dir: PathBuf::new(),
                    ..Config::default()
                },
                "data_dir",
            ),
        ];
        for (config, field) in cases {
            assert_eq!(config.validate().unwrap_err().field, field);
        }
    }

    /// Every size and period has a ceiling: the largest values a config
    /// file can hold are refused by name, and the ceilings themselves pass.
    #[test]
    fn every_size_and_period_has_a_ceiling() {
        type Set = fn(&mut Config, u64);
        let fields: [(&str, Set, u64); 9] = [
            (
                "sync_interval_ms",
                |c, v| c.sync_interval_ms = v,
                MAX_PERIOD_MS,
            ),
            (
                "maintenance_interval_ms",
                |c, v| c.maintenance_interval_ms = v,
                MAX_PERIOD_MS,
            ),
            (
                "preallocate_bytes",
                |c, v| c.preallocate_bytes = v,
                MAX_SEGMENT_BYTES,
            ),
            (
                "max_batch_ops",
                |c, v| c.max_batch_ops = v as u32,
                u64::from(MAX_BATCH_OPS),
            ),
            (
                "max_commit_group_bytes",
                |c, v| c.max_commit_group_bytes = v,
                MAX_COMMIT_GROUP_BYTES,
            ),
            (
                "index_initial_capacity",
                |c, v| c.index_initial_capacity = v as usize,
                MAX_INDEX_INITIAL_CAPACITY as u64,
            ),
            (
                "hot_index_max_entries",
                |c, v| c.hot_index_max_entries = v,
                MAX_HOT_INDEX_ENTRIES,
            ),
            (
                "hot_index_max_bytes",
                |c, v| c.hot_index_max_bytes = v,
                MAX_HOT_INDEX_BYTES,
            ),
            (
                "group_commit_wait_us",
                |c, v| c.group_commit_wait_us = v,
                MAX_GROUP_COMMIT_WAIT_US,
            ),
        ];
        for (field, set, max) in fields {
            let mut config = Config::default();
            set(&mut config, max);
            assert_eq!(config.validate(), Ok(()), "{field} at its ceiling");
            for too_big in [max + 1, 99_999_999_999_999, i64::MAX as u64, u64::MAX] {
                let mut config = Config::default();
                set(&mut config, too_big);
                // `max_batch_ops` is a u32: only values that fit it are tried.
                if field == "max_batch_ops" && too_big > u64::from(u32::MAX) {
                    continue;
                }
                let err = config.validate().unwrap_err();
                assert_eq!(err.field, field, "{too_big}: {err}");
            }
        }
        // The values of issue 17: an abort and a panic before.
        for too_big in [99_999_999_999_999usize, usize::MAX] {
            let config = Config {
                index_initial_capacity: too_big,
                ..Config::default()
            };
            let err = config.validate().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "invalid configuration: index_initial_capacity: {too_big} is over the limit of {}",
                    MAX_INDEX_INITIAL_CAPACITY
                )
            );
        }
    }
}
