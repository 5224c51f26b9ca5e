//! [`Extension`]: one loaded component with its grants, and the instances
//! that serve calls into it.

use std::sync::{Arc, Mutex};

use wasmtime::Store;
use wasmtime::component::{Component, ComponentNamedList, Instance, InstancePre, Lift, Lower};

use super::cache::CompiledFrom;
use super::ctx::{Ctx, sandbox_wasi};
use super::error::WasmError;
use super::guest_log::{GuestLog, Stream};
use super::namespace::Grants;
use super::sandbox::Sandbox;

/// A loaded component, linked and ready to instantiate, with the namespaces
/// it was granted. `Send + Sync`: call it from any number of threads.
///
/// Each call runs in an instance of its own for the duration of the call.
/// Idle instances are kept (up to `max_idle_instances`) and reused, so a
/// guest must not rely on memory state between calls, nor on it being
/// cleared. An instance whose call failed (time or memory limit, too much
/// data, trap or panic) is discarded; the next call gets a fresh one from
/// the [`InstancePre`].
pub struct Extension {
    sandbox: Arc<Sandbox>,
    name: Arc<str>,
    pre: InstancePre<Ctx>,
    grants: Arc<Grants>,
    max_hostcall_bytes: usize,
    compiled_from: CompiledFrom,
    idle: Mutex<Vec<GuestInstance>>,
}

impl std::fmt::Debug for Extension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extension")
            .field("name", &self.name)
            .field("namespaces", &self.grants.names().collect::<Vec<_>>())
            .field("compiled_from", &self.compiled_from)
            .field("idle_instances", &self.idle_instances())
            .finish_non_exhaustive()
    }
}

/// One instance and its store, idle in the pool or serving a call.
struct GuestInstance {
    store: Store<Ctx>,
    instance: Instance,
    stderr: GuestLog,
}

impl Extension {
    pub(crate) fn new(
        sandbox: Arc<Sandbox>,
        name: &str,
        component: &Component,
        grants: Grants,
        compiled_from: CompiledFrom,
    ) -> Result<Self, WasmError> {
        let pre =
            sandbox
                .linker
                .instantiate_pre(component)
                .map_err(|err| WasmError::Instantiate {
                    component: name.to_string(),
                    message: format!("{err:#}"),
                })?;
        let max_hostcall_bytes = grants.max_hostcall_bytes();
        let extension = Extension {
            sandbox,
            name: name.into(),
            pre,
            grants: Arc::new(grants),
            max_hostcall_bytes,
            compiled_from,
            idle: Mutex::new(Vec::new()),
        };
        // Instantiate once now, so that a component that cannot start fails
        // at load time rather than on its first call.
        let instance = extension.instantiate()?;
        extension.check_in(instance);
        Ok(extension)
    }

    /// The name it was loaded with, as in logs and errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether loading compiled the component or used the cache.
    pub fn compiled_from(&self) -> &CompiledFrom {
        &self.compiled_from
    }

    /// Bytes a guest may pass into one host call before the call is stopped
    /// ([`WasmError::HostcallDataLimit`]): the largest legal request.
    pub fn max_hostcall_bytes(&self) -> usize {
        self.max_hostcall_bytes
    }

    /// Calls the exported function `export` (a top-level function of the
    /// component) with the sandbox's limits. The result type `R` is a tuple
    /// of the function's results, e.g. `(Result<Vec<u8>, String>,)`.
    pub fn call<P, R>(&self, export: &str, params: P) -> Result<R, WasmError>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        R: ComponentNamedList + Lift + Send + Sync,
    {
        let mut guest = match self.check_out() {
            Some(guest) => guest,
            None => self.instantiate()?,
        };
        let func = match guest
            .instance
            .get_typed_func::<P, R>(&mut guest.store, export)
        {
            Ok(func) => func,
            Err(err) => {
                self.check_in(guest);
                return Err(WasmError::Export {
                    component: self.name.to_string(),
                    export: export.to_string(),
                    message: format!("{err:#}"),
                });
            }
        };
        guest
            .store
            .set_epoch_deadline(self.sandbox.config.deadline_ticks());
        match func.call(&mut guest.store, params) {
            Ok(results) => {
                self.check_in(guest);
                Ok(results)
            }
            Err(err) => {
                let error = self.sandbox.classify(
                    &self.name,
                    export,
                    err,
                    &guest.stderr,
                    self.max_hostcall_bytes,
                );
                tracing::warn!(component = &*self.name, %error, "guest call failed; instance discarded");
                Err(error)
            }
        }
    }

    /// Instantiates until `count` instances are idle (at most
    /// `max_idle_instances` are kept), so that the next calls need not.
    /// Instantiates at least once (with no room in the pool, the instance
    /// is dropped: a way to measure instantiation).
    pub fn warm(&self, count: usize) -> Result<(), WasmError> {
        let wanted = count.min(self.sandbox.config.max_idle_instances);
        loop {
            let instance = self.instantiate()?;
            self.check_in(instance);
            if self.idle_instances() >= wanted {
                return Ok(());
            }
        }
    }

    /// Instances kept idle right now (for tests and metrics).
    pub fn idle_instances(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn instantiate(&self) -> Result<GuestInstance, WasmError> {
        let stdout = GuestLog::new(self.name.clone(), Stream::Stdout);
        let stderr = GuestLog::new(self.name.clone(), Stream::Stderr);
        let wasi = sandbox_wasi(stdout, stderr.clone(), &[]);
        let mut store = self
            .sandbox
            .new_store(self.grants.clone(), wasi, self.max_hostcall_bytes);
        match self.pre.instantiate(&mut store) {
            Ok(instance) => Ok(GuestInstance {
                store,
                instance,
                stderr,
            }),
            Err(err) => Err(self.sandbox.classify_instantiation(
                &self.name,
                err,
                &stderr,
                self.max_hostcall_bytes,
            )),
        }
    }

    fn check_out(&self) -> Option<GuestInstance> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn check_in(&self, instance: GuestInstance) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.sandbox.config.max_idle_instances {
            idle.push(instance);
        }
    }
}
