//! The sandbox's knobs, with their defaults, in one place.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use hightower_engine::ConfigError;

/// Limits and settings of the WebAssembly host. Every component loaded by one
/// [`WasmRuntime`](crate::WasmRuntime) gets these. Key, value and batch
/// limits for guests are the store's ([`hightower_engine::Config`]) capped by
/// the values below. The `[wasm]` table of a config file has these names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// Wall-clock time one call into a component may take, host calls
    /// included, before it is stopped (epoch interruption). The call is
    /// stopped between `call_timeout_ms` and `call_timeout_ms +
    /// epoch_tick_ms` after it started. Default 1000 ms.
    pub call_timeout_ms: u64,
    /// Period of the runtime's epoch ticker thread, the granularity of
    /// `call_timeout_ms`. Default 10 ms.
    pub epoch_tick_ms: u64,
    /// Largest size of each linear memory of an instance. Growing past it
    /// stops the call. Default 64 MiB.
    pub max_memory_bytes: u64,
    /// Most elements of each table of an instance. Default 20,000.
    pub max_table_elements: u32,
    /// Largest value a guest may write; the store's `max_value_bytes`
    /// applies if smaller. Default 1 MiB.
    pub max_value_bytes: u32,
    /// Most operations (and most conditions) in a guest's batch; the store's
    /// `max_batch_ops` applies if smaller. Default 1000.
    pub max_batch_ops: u32,
    /// Most bytes of keys and values in a guest's batch; the store's
    /// `max_batch_bytes` (less its per-record overhead) applies if smaller.
    /// Default 4 MiB.
    pub max_batch_bytes: u64,
    /// Most keys one `list-keys` call returns. Default 1000.
    pub max_page_keys: u32,
    /// Most bytes of wasm stack. Default 512 KiB.
    pub max_wasm_stack_bytes: usize,
    /// Instances of one component kept ready for later calls (each holds its
    /// memory). Default 4.
    pub max_idle_instances: usize,
    /// Keep compiled components in `<data_dir>/wasm-cache/`. Default true.
    pub cache_compiled: bool,
    /// Most compiled components kept in the cache; the oldest files go
    /// first. Default 32.
    pub max_cached_components: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            call_timeout_ms: 1000,
            epoch_tick_ms: 10,
            max_memory_bytes: 64 << 20,
            max_table_elements: 20_000,
            max_value_bytes: 1 << 20,
            max_batch_ops: 1000,
            max_batch_bytes: 4 << 20,
            max_page_keys: 1000,
            max_wasm_stack_bytes: 512 << 10,
            max_idle_instances: 4,
            cache_compiled: true,
            max_cached_components: 32,
        }
    }
}

/// A wasm page; memories grow in these.
const WASM_PAGE_BYTES: u64 = 64 << 10;

impl SandboxConfig {
    /// `call_timeout_ms` as a duration.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }

    /// `epoch_tick_ms` as a duration.
    pub fn epoch_tick(&self) -> Duration {
        Duration::from_millis(self.epoch_tick_ms)
    }

    /// Epoch ticks a call may run: enough that it is never stopped before
    /// `call_timeout_ms` (the current tick may end at once).
    pub(crate) fn deadline_ticks(&self) -> u64 {
        self.call_timeout_ms.div_ceil(self.epoch_tick_ms) + 1
    }

    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |field, reason: &str| {
            Err(ConfigError {
                field,
                reason: reason.to_string(),
            })
        };
        if self.epoch_tick_ms == 0 {
            return fail("epoch_tick_ms", "must be at least 1");
        }
        if self.call_timeout_ms < self.epoch_tick_ms {
            return fail("call_timeout_ms", "must be at least epoch_tick_ms");
        }
        if self.max_memory_bytes < WASM_PAGE_BYTES {
            return fail("max_memory_bytes", "must be at least one wasm page (65536)");
        }
        if self.max_batch_ops == 0 {
            return fail("max_batch_ops", "must be at least 1");
        }
        if self.max_page_keys == 0 {
            return fail("max_page_keys", "must be at least 1");
        }
        if self.max_cached_components == 0 {
            return fail(
                "max_cached_components",
                "must be at least 1 (turn the cache off with cache_compiled = false)",
            );
        }
        if self.max_wasm_stack_bytes < 64 << 10 {
            return fail("max_wasm_stack_bytes", "must be at least 65536");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        SandboxConfig::default().validate().unwrap();
    }

    #[test]
    fn a_call_is_never_stopped_early() {
        let config = SandboxConfig {
            call_timeout_ms: 95,
            epoch_tick_ms: 10,
            ..SandboxConfig::default()
        };
        // 10 full ticks cover 95 ms; one more for the tick already under way.
        assert_eq!(config.deadline_ticks(), 11);
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            (
                SandboxConfig {
                    epoch_tick_ms: 0,
                    ..SandboxConfig::default()
                },
                "epoch_tick_ms",
            ),
            (
                SandboxConfig {
                    call_timeout_ms: 5,
                    ..SandboxConfig::default()
                },
                "call_timeout_ms",
            ),
            (
                SandboxConfig {
                    max_memory_bytes: 1000,
                    ..SandboxConfig::default()
                },
                "max_memory_bytes",
            ),
        ];
        for (config, field) in cases {
            assert_eq!(config.validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn toml_takes_the_same_names() {
        let config: SandboxConfig = toml::from_str("call_timeout_ms = 50\n").unwrap();
        assert_eq!(config.call_timeout(), Duration::from_millis(50));
        assert!(toml::from_str::<SandboxConfig>("timeout = 5\n").is_err());
    }
}
