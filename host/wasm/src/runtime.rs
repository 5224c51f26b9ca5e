//! [`WasmRuntime`]: the wasmtime engine, the linker, the epoch ticker and
//! the compiled-component cache, shared by every component it loads.

use std::sync::Arc;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config as EngineConfig, Engine};

use super::cache::{ArtifactCache, CompiledFrom, cache_key};
use super::config::SandboxConfig;
use super::ctx::{Ctx, add_to_linker};
use super::error::WasmError;
use super::extension::Extension;
use super::namespace::Grants;
use super::ticker::EpochTicker;
use hightower_engine::KvEngine;

/// Runs untrusted WebAssembly components against one [`KvEngine`].
///
/// Cheap to clone (an `Arc`). The epoch ticker thread lives as long as the
/// runtime or any [`Extension`] loaded from it, and is stopped and joined
/// when the last of them is dropped.
#[derive(Clone)]
pub struct WasmRuntime {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub engine: Engine,
    pub linker: Linker<Ctx>,
    pub kv: Arc<KvEngine>,
    pub config: SandboxConfig,
    cache: Option<ArtifactCache>,
    _ticker: EpochTicker,
}

impl WasmRuntime {
    /// A runtime for `kv` with the given limits. With `cache_compiled`, the
    /// cache directory `wasm-cache/` is created in the store's data directory.
    pub fn new(kv: Arc<KvEngine>, config: SandboxConfig) -> Result<Self, WasmError> {
        config.validate()?;
        let engine = Engine::new(&engine_config(&config)).map_err(|err| WasmError::Io {
            context: "create the wasmtime engine".into(),
            source: std::io::Error::other(err.to_string()),
        })?;
        let mut linker = Linker::new(&engine);
        add_to_linker(&mut linker).map_err(|err| WasmError::Io {
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
        Ok(WasmRuntime {
            shared: Arc::new(Shared {
                engine,
                linker,
                kv,
                config,
                cache,
                _ticker: ticker,
            }),
        })
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.shared.config
    }

    /// Compiles `wasm` (a component), or loads it from the cache.
    pub fn compile(&self, name: &str, wasm: &[u8]) -> Result<(Component, CompiledFrom), WasmError> {
        let engine = &self.shared.engine;
        let Some(cache) = &self.shared.cache else {
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

    /// The name of `wasm`'s file in `<data_dir>/wasm-cache/` (whether or
    /// not it exists yet).
    pub fn cache_file_name(&self, wasm: &[u8]) -> String {
        ArtifactCache::file_name(&cache_key(&self.shared.engine, wasm))
    }

    /// Loads a component and grants it `namespaces` (e.g. `["auth/"]`).
    /// `name` identifies it in logs and errors. Fails if a namespace is
    /// invalid or the component imports anything the host does not provide.
    pub fn load(
        &self,
        name: &str,
        wasm: &[u8],
        namespaces: &[impl AsRef<str>],
    ) -> Result<Extension, WasmError> {
        let grants = Grants::new(namespaces, self.shared.kv.config(), &self.shared.config)?;
        let (component, from) = self.compile(name, wasm)?;
        Extension::new(self.shared.clone(), name, &component, grants, from)
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
