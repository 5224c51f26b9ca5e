//! [`StoreAccess`]: what a component instance may reach of the store, shared
//! by the host of `hightower:kv/store` and that of `wasi:keyvalue`.

use std::sync::Arc;

use hightower_engine::KvEngine;

use super::namespace::{Grants, Namespace};

/// The store and the namespaces one component was granted.
pub(crate) struct StoreAccess {
    pub kv: Arc<KvEngine>,
    pub grants: Arc<Grants>,
}

impl StoreAccess {
    /// The namespace behind a resource handle's representation. Handles are
    /// made only by the host's `open`, from an index into the grants, and
    /// the component model lets a guest pass back only handles it was given;
    /// so a miss is a host bug, and the call traps.
    pub fn granted(&self, rep: u32) -> wasmtime::Result<&Namespace> {
        self.grants
            .get(rep as usize)
            .ok_or_else(|| wasmtime::format_err!("unknown namespace handle {rep}"))
    }
}
