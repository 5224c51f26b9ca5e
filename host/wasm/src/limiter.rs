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

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    fn limiter() -> SandboxLimiter {
        SandboxLimiter {
            max_memory_bytes: 1 << 20,
            max_table_elements: 100,
        }
    }

    #[test]
    fn memory_may_grow_up_to_the_limit_and_not_past_it() {
        let mut limiter = limiter();
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        let err = limiter
            .memory_growing(1 << 20, (1 << 20) + 65536, None)
            .unwrap_err();
        let exceeded = err
            .downcast_ref::<MemoryLimitExceeded>()
            .expect("typed error");
        assert_eq!(
            *exceeded,
            MemoryLimitExceeded {
                limit_bytes: 1 << 20,
                desired_bytes: (1 << 20) + 65536
            }
        );
        assert!(exceeded.to_string().contains("max_memory_bytes"));
    }

    #[test]
    fn tables_may_grow_up_to_the_limit() {
        let mut limiter = limiter();
        assert!(limiter.table_growing(0, 100, None).unwrap());
        assert!(!limiter.table_growing(100, 101, None).unwrap());
    }
}
