//! What a component instance's `Store` holds, the borrowed view the host
//! functions work on, and the one place everything is linked.

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::cli::StdoutStream;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings;
use super::config::SandboxConfig;
use super::keyvalue::{self, KeyValueState};
use super::limiter::SandboxLimiter;
use super::namespace::Grants;
use hightower_engine::KvEngine;

/// The data of one instance's `Store`.
pub(crate) struct Ctx {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limiter: SandboxLimiter,
    pub kv: KvCtx,
    /// `wasi:keyvalue` state: list cursors, open `cas` handles.
    pub keyvalue: KeyValueState,
}

/// What the `hightower:kv/store` functions need: the engine and the grants.
pub(crate) struct KvCtx {
    pub engine: Arc<KvEngine>,
    pub grants: Arc<Grants>,
}

/// The borrowed view the store's host functions are implemented on.
pub(crate) struct KvView<'a> {
    pub kv: &'a KvCtx,
}

/// Marker tying [`KvView`] to `bindgen!`'s `add_to_linker`.
pub(crate) struct KvStore;

impl HasData for KvStore {
    type Data<'a> = KvView<'a>;
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Links everything a component may import: WASI p2 (synchronous bindings,
/// with what each instance's `WasiCtx` allows), `hightower:kv/store`, and
/// `wasi:keyvalue` in both drafts (on the same namespaces).
pub(crate) fn add_to_linker(linker: &mut Linker<Ctx>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    bindings::Extension::add_to_linker::<Ctx, KvStore>(linker, |ctx| KvView { kv: &ctx.kv })?;
    keyvalue::add_to_linker(linker)?;
    Ok(())
}

/// The WASI a guest gets: randomness, clocks, the given stdout/stderr and
/// arguments, and nothing else. No preopened directories (so no files), no
/// environment variables, no stdin, and every socket use denied: TCP, UDP
/// and name lookup are switched off (and no address is allowed anyway).
pub(crate) fn sandbox_wasi(
    stdout: impl StdoutStream + 'static,
    stderr: impl StdoutStream + 'static,
    args: &[String],
) -> WasiCtx {
    WasiCtxBuilder::new()
        .stdout(stdout)
        .stderr(stderr)
        .args(args)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

/// A store for one instance, with the sandbox's limits applied.
pub(crate) fn new_store(
    engine: &wasmtime::Engine,
    config: &SandboxConfig,
    kv: KvCtx,
    wasi: WasiCtx,
    max_hostcall_bytes: usize,
) -> Store<Ctx> {
    let limiter = SandboxLimiter {
        max_memory_bytes: config.max_memory_bytes,
        max_table_elements: config.max_table_elements as usize,
    };
    let mut store = Store::new(
        engine,
        Ctx {
            wasi,
            table: ResourceTable::new(),
            limiter,
            kv,
            keyvalue: KeyValueState::default(),
        },
    );
    store.limiter(|ctx| &mut ctx.limiter);
    store.set_hostcall_fuel(max_hostcall_bytes);
    // Instantiation may run the guest's initialisers: bound them too.
    store.set_epoch_deadline(config.deadline_ticks());
    store.epoch_deadline_trap();
    store
}
