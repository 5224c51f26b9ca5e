//! Hightower KV's storage engine: an embedded, log-structured key-value
//! store for the nodes of a container orchestration platform.
//!
//! Start with [`KvEngine`]; the on-disk format is described in
//! `docs/format.md`, the durability promises in the README.

pub mod command;
pub mod commit_queue;
pub mod config;
pub mod data_dir;
pub mod engine;
pub mod error;
pub mod fault;
#[cfg(any(test, feature = "test-hooks"))]
#[doc(hidden)]
pub mod fuzz;
pub mod index;
pub mod log_segment;
pub mod metrics;
pub mod periodic;
pub mod replication;
pub mod segment_meta;
pub mod snapshot;
pub mod state;
pub mod storage;

pub use command::{Command, Condition, Op};
pub use config::{Config, RecoveryMode, SyncMode};
pub use engine::{Applied, EngineOptions, KvEngine, ReadContext, Stats};
pub use error::{Error, Result};
pub use replication::{CommandSubmitter, SnapshotProvider};
pub use state::{KvState, Outcome};
pub use storage::Versioned;
