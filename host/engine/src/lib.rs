//! Hightower KV's storage engine: an embedded, log-structured key-value
//! store for the nodes of a container orchestration platform.
//!
//! Start with [`KvEngine`] (open one with [`KvEngine::builder`] or
//! [`KvEngine::open`] and a [`Config`]). Writes are [`Command`]s applied by
//! the deterministic state machine [`KvState`] and group-committed with the
//! fsync cadence of [`SyncMode`]; a replication layer plugs in through
//! [`CommandSubmitter`] and [`SnapshotProvider`]. The on-disk format is
//! described byte by byte in `docs/format.md`, the durability promises in
//! the README.
//!
//! This crate has no async runtime and no WebAssembly: the sandbox
//! (`hightower-wasm`), the server and the command line are layers above it.

#![deny(missing_docs)]

mod command;
mod commit_queue;
mod config;
mod data_dir;
mod engine;
mod error;
// Public only through `testing` (the hidden test-hooks feature).
#[allow(missing_docs)]
mod fault;
/// Entry points for the fuzz targets (`host/engine/fuzz`) and the suite's
/// bounded random-input tests.
#[cfg(any(test, feature = "test-hooks"))]
#[doc(hidden)]
#[allow(missing_docs)]
pub mod fuzz;
mod index;
mod log_segment;
mod manifest;
mod metrics;
mod periodic;
mod replication;
mod segment_meta;
mod snapshot;
mod state;
mod storage;
#[cfg(feature = "test-hooks")]
mod test_hooks;

pub use command::{Command, Condition, Limits, Op};
pub use config::{Config, DEFAULT_DATA_DIR, RecoveryMode, SyncMode};
pub use engine::{Applied, EngineBuilder, EngineOptions, KvEngine, ReadContext, Stats};
pub use error::{ConfigError, Corruption, Error, InputError, Result, display_key};
pub use metrics::{Counter, Latency, LatencySummary, MetricsHook, MetricsSnapshot};
pub use replication::{CommandSubmitter, SnapshotProvider};
pub use snapshot::{SNAPSHOT_MAGIC, SnapshotInfo, restore_snapshot};
pub use state::{KvState, Outcome};
pub use storage::{
    CompactionReport, OpenReport, RecordInfo, SalvageNote, SegmentInfo, SegmentVerdict,
    SegmentVerification, StorageStats, TailCut, TailKind, Versioned, verify_segments,
};

/// Bytes a record takes on disk besides its key and value (its header):
/// an operation of a batch encodes to key + value + this many bytes, which
/// is what `max_batch_bytes` and `max_commit_group_bytes` count.
pub const RECORD_OVERHEAD_BYTES: usize = log_segment::RECORD_HEADER_LEN;
/// The largest key the format can hold (`max_key_bytes` is at most this).
pub const MAX_FORMAT_KEY_BYTES: usize = log_segment::MAX_FORMAT_KEY_BYTES;
/// The largest value the format can hold (`max_value_bytes` is at most this).
pub const MAX_FORMAT_VALUE_BYTES: usize = log_segment::MAX_FORMAT_VALUE_BYTES;

/// Hooks for this crate's own tests and benches (fault injection, driving
/// maintenance by hand, format internals). Not part of the public API:
/// enabled by the hidden `test-hooks` feature.
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod testing {
    pub use crate::fault::{FailNth, IoFaults, IoOp, NoFaults};
    pub use crate::log_segment::{
        RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, scan_segment, segment_file_name,
    };
    pub use crate::segment_meta::meta_file_name;
    pub use crate::snapshot::{ImageEntry, ImageReader, restore_snapshot_with_faults};
}
