//! [`Sandbox`]: what a [`WasmRuntime`](crate::WasmRuntime) and every
//! [`Extension`](crate::Extension) loaded from it share: the wasmtime engine,
//! the linker, the epoch ticker, the compiled-component cache and the limits;
//! and how a failed call is told apart (time, memory, data, trap).

use std::sync::Arc;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config as EngineConfig, Engine, Store};
use wasmtime_wasi::WasiCtx;

use super::access::StoreAccess;
use super::cache::{ArtifactCache, CompiledFrom, cache_key};
use super::config::SandboxConfig;
use super::ctx::{self, Ctx};
use super::error::WasmError;
use super::guest_log::GuestLog;
use super::limiter::{MemoryLimitExceeded, SandboxLimiter};
use super::namespace::Grants;
use super::ticker::EpochTicker;
use hightower_engine::KvEngine;

/// The state shared by a runtime and its extensions. The epoch ticker
/// thread lives as long as this does, and is stopped and joined with it.
pub(crate) struct Sandbox {
    pub engine: Engine,
    pub linker: Linker<Ctx>,
    pub kv: Arc<KvEngine>,
    pub config: SandboxConfig,
    cache: Option<ArtifactCache>,
    _ticker: EpochTicker,
}

impl Sandbox {
    pub fn new(kv: Arc<KvEngine>, config: SandboxConfig) -> Result<Self, WasmError> {
        config.validate()?;
        let engine = Engine::new(&engine_config(&config)).map_err(|err| WasmError::Io {
            context: "create the wasmtime engine".into(),
            source: std::io::Error::other(err.to_string()),
        })?;
        let mut linker = Linker::new(&engine);
        ctx::add_to_linker(&mut linker).map_err(|err| WasmError::Io {
            context: "link the host interfaces".into(),
            source: std::io::Error::other(err.to_string()),
        })?;
        let cache = if config.cache_compiled {
            let data_dir = &kv.config().data_dir;
            Some(
                ArtifactCache::open(data_dir, config.max_cached_components).map_err(|source| {
                    WasmError::Io {
                        context: format!(
                            "open the compiled-component cache in {}",
                            data_dir.display()
                        ),
                        source,
                    }
                })?,
            )
        } else {
            None
        };
        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick()).map_err(|source| {
            WasmError::Io {
                context: "start the epoch ticker thread".into(),
                source,
            }
        })?;
        Ok(Sandbox {
            engine,
            linker,
            kv,
            config,
            cache,
            _ticker: ticker,
        })
    }

    /// Compiles `wasm` (a component), or loads it from the cache.
    pub fn compile(&self, name: &str, wasm: &[u8]) -> Result<(Component, CompiledFrom), WasmError> {
        let engine = &self.engine;
        let Some(cache) = &self.cache else {
            return Ok((compile(engine, name, wasm)?, CompiledFrom::Compiled));
        };
        let key = cache_key(engine, wasm);
        let from = match cache.load(engine, &key) {
            Ok(Some(component)) => return Ok((component, CompiledFrom::Cache)),
            Ok(None) => CompiledFrom::Compiled,
            Err(reason) => {
                tracing::warn!(component = name, %reason, "ignoring an untrusted compiled-component cache file");
                CompiledFrom::Rebuilt(reason)
            }
        };
        let component = compile(engine, name, wasm)?;
        if let Err(err) = cache.store(&key, &component) {
            tracing::warn!(component = name, error = %err, "could not write the compiled-component cache");
        }
        Ok((component, from))
    }

    /// The name of `wasm`'s file in the cache directory.
    pub fn cache_file_name(&self, wasm: &[u8]) -> String {
        ArtifactCache::file_name(&cache_key(&self.engine, wasm))
    }

    /// Validated grants of `namespaces`, with the limits of this store and sandbox.
    pub fn grants(&self, namespaces: &[impl AsRef<str>]) -> Result<Grants, WasmError> {
        Ok(Grants::new(namespaces, self.kv.config(), &self.config)?)
    }

    /// A store for one instance with the sandbox's limits applied: memory
    /// and tables, data per host call, and time (instantiation may run the
    /// guest's initialisers, so the deadline is set already).
    pub fn new_store(
        &self,
        grants: Arc<Grants>,
        wasi: WasiCtx,
        max_hostcall_bytes: usize,
    ) -> Store<Ctx> {
        let access = StoreAccess {
            kv: self.kv.clone(),
            grants,
        };
        let limiter = SandboxLimiter {
            max_memory_bytes: self.config.max_memory_bytes,
            max_table_elements: self.config.max_table_elements as usize,
        };
        let mut store = Store::new(&self.engine, Ctx::new(wasi, access, limiter));
        store.limiter(|ctx| &mut ctx.limiter);
        store.set_hostcall_fuel(max_hostcall_bytes);
        store.set_epoch_deadline(self.config.deadline_ticks());
        store.epoch_deadline_trap();
        store
    }

    /// Turns a failed call of `component`'s `export` into the limit it hit,
    /// or a trap (quoting the guest's last lines on `stderr`).
    pub fn classify(
        &self,
        component: &str,
        export: &str,
        err: wasmtime::Error,
        stderr: &GuestLog,
        max_hostcall_bytes: usize,
    ) -> WasmError {
        let component = component.to_string();
        let export = export.to_string();
        if let Some(limit) = err.downcast_ref::<MemoryLimitExceeded>() {
            return WasmError::MemoryLimit {
                component,
                export,
                limit_bytes: limit.limit_bytes,
                desired_bytes: limit.desired_bytes,
            };
        }
        let trap = err.downcast_ref::<wasmtime::Trap>().copied();
        if trap == Some(wasmtime::Trap::Interrupt) {
            return WasmError::Timeout {
                component,
                export,
                limit_ms: self.config.call_timeout_ms,
            };
        }
        let text = format!("{err:#}");
        // wasmtime's error for this is private; its message is stable.
        if text.contains("fuel allocated for hostcalls has been exhausted") {
            return WasmError::HostcallDataLimit {
                component,
                export,
                limit_bytes: max_hostcall_bytes,
            };
        }
        WasmError::Trap {
            component,
            export,
            trap: match trap {
                Some(trap) => trap.to_string(),
                None => text.lines().next().unwrap_or_default().to_string(),
            },
            stderr: stderr.recent_lines(),
        }
    }

    /// [`Self::classify`] for a failed instantiation: a trap there means
    /// the component cannot start, which is reported as such.
    pub fn classify_instantiation(
        &self,
        component: &str,
        err: wasmtime::Error,
        stderr: &GuestLog,
        max_hostcall_bytes: usize,
    ) -> WasmError {
        match self.classify(
            component,
            "(instantiation)",
            err,
            stderr,
            max_hostcall_bytes,
        ) {
            WasmError::Trap { trap, .. } => WasmError::Instantiate {
                component: component.to_string(),
                message: trap,
            },
            other => other,
        }
    }
}

fn compile(engine: &Engine, name: &str, wasm: &[u8]) -> Result<Component, WasmError> {
    Component::new(engine, wasm).map_err(|err| WasmError::Compile {
        component: name.to_string(),
        message: format!("{err:#}"),
    })
}

/// The engine settings. They are part of the cache key (wasmtime hashes
/// them), so changing any of them recompiles every component once.
fn engine_config(config: &SandboxConfig) -> EngineConfig {
    let mut engine = EngineConfig::new();
    engine.wasm_component_model(true);
    engine.epoch_interruption(true);
    engine.max_wasm_stack(config.max_wasm_stack_bytes);
    engine
}
