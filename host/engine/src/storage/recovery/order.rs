//! The order every run of records keeps: versions grow, log indexes never
//! go back. Anything else is corruption (a segment from another store, or
//! damage the checksums missed).

use crate::error::{Corruption, Error, Result};
use crate::log_segment::{Located, RecordKind};

/// Checks that versions only grow within a run of records.
pub(super) struct VersionOrder {
    last_version: u64,
    last_log_index: u64,
    backwards_at: Option<(u64, u64)>,
}

impl VersionOrder {
    pub fn new() -> Self {
        VersionOrder {
            last_version: 0,
            last_log_index: 0,
            backwards_at: None,
        }
    }

    pub fn command(&mut self, records: &[Located<'_>]) {
        for &(offset, record) in records {
            // A marker may repeat the last version (it only moves the log index on).
            let backwards = match record.kind {
                RecordKind::Marker => record.version < self.last_version,
                _ => record.version <= self.last_version,
            };
            if backwards || record.log_index < self.last_log_index {
                self.backwards_at
                    .get_or_insert((offset as u64, record.version));
                return;
            }
            self.last_version = record.version;
            self.last_log_index = record.log_index;
        }
    }

    /// Versions must increase; anything else is corruption.
    pub fn check(&mut self, file: &str) -> Result<()> {
        match self.backwards_at.take() {
            None => Ok(()),
            Some((offset, version)) => Err(Error::Corruption(Corruption {
                file: file.to_string(),
                offset,
                reason: format!(
                    "version {version} does not follow version {}",
                    self.last_version
                ),
            })),
        }
    }
}
