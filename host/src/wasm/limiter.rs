//! Memory and table limits of one instance.

use std::fmt;

/// The error a call fails with when a guest grows a memory past the limit.
/// Growing traps (instead of `memory.grow` returning -1) so that the caller
/// learns which limit was hit rather than seeing the guest's own
/// out-of-memory abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimitExceeded {
    pub limit_bytes: u64,
    pub desired_bytes: u64,
}

impl fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "linear memory would grow to {} bytes, over the limit of {} bytes (max_memory_bytes)",
            self.desired_bytes, self.limit_bytes
        )
    }
}

impl std::error::Error for MemoryLimitExceeded {}

/// A [`wasmtime::ResourceLimiter`] with the sandbox's memory and table
/// limits. Instance, table and memory counts keep wasmtime's defaults
/// (10,000 each), which a component cannot grow at run time.
pub(crate) struct SandboxLimiter {
    pub max_memory_bytes: u64,
    pub max_table_elements: usize,
}

impl wasmtime::ResourceLimiter for SandboxLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.max_memory_bytes {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                limit_bytes: self.max_memory_bytes,
                desired_bytes: desired as u64,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.max_table_elements)
    }
}
