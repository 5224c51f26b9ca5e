//! Engine methods only the engine's own tests and benches call (the hidden
//! `test-hooks` feature): they drive work a background thread would do,
//! at a moment the test chooses.

use crate::command::Command;
use crate::engine::KvEngine;
use crate::error::Result;
use crate::state::Outcome;
use crate::storage::Versioned;

#[doc(hidden)]
impl KvEngine {
    /// One round of background maintenance, now.
    pub fn maintain_now(&self) {
        self.state().storage().maintain();
    }

    /// Writes metadata for every sealed segment without it; how many.
    pub fn build_pending_metas(&self) -> Result<usize> {
        self.state().storage().build_pending_metas()
    }

    /// Audits every sealed segment's dead bytes now.
    pub fn audit_all(&self) -> Result<()> {
        self.state().storage().audit_all()
    }

    /// Every live key with its value and version, sorted by key.
    pub fn dump(&self) -> Result<Vec<(Vec<u8>, Versioned)>> {
        self.state().dump()
    }

    /// Applies commands at the given log indexes as one group.
    pub fn apply_group(&self, commands: &[(u64, &Command)]) -> Vec<Result<Outcome>> {
        self.state().apply_group(commands)
    }
}
