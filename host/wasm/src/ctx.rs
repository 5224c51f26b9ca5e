//! [`Ctx`]: what a component instance's `Store` holds, the WASI it gets,
//! and the one place every interface is linked, each through the view it
//! borrows from the `Ctx`.

use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::cli::StdoutStream;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::access::StoreAccess;
use super::keyvalue::{self, KeyValueState, KeyValueView};
use super::kv_store::{self, KvStoreView};
use super::limiter::SandboxLimiter;

/// The data of one instance's `Store`.
pub(crate) struct Ctx {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: SandboxLimiter,
    access: StoreAccess,
    /// `wasi:keyvalue` state: list cursors, open `cas` handles.
    keyvalue: KeyValueState,
}

impl Ctx {
    pub fn new(wasi: WasiCtx, access: StoreAccess, limiter: SandboxLimiter) -> Self {
        Ctx {
            wasi,
            table: ResourceTable::new(),
            limiter,
            access,
            keyvalue: KeyValueState::default(),
        }
    }
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
    kv_store::add_to_linker(linker, |ctx| KvStoreView {
        access: &ctx.access,
    })?;
    keyvalue::add_to_linker(linker, |ctx| KeyValueView {
        access: &ctx.access,
        table: &mut ctx.table,
        state: &mut ctx.keyvalue,
    })?;
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
