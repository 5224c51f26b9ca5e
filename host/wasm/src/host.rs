//! The host side of `hightower:kv/store`: guest calls mapped onto
//! [`KvEngine`](crate::KvEngine) through the caller's namespace.
//!
//! Every function checks its input against the namespace's limits before
//! touching the store, so a guest gets the typed error the WIT promises and
//! the engine's own validation never fails for guest input. Host calls are
//! bounded (no waiting on anything a guest controls): epoch interruption
//! cannot stop a call that is inside the host.

use wasmtime::component::Resource;

use super::bindings::NamespaceHandle;
use super::bindings::store::{
    BatchLimits, Condition as WitCondition, Entry, Error as WitError, Host, HostNamespace, KeyPage,
    Limits, Op as WitOp,
};
use super::ctx::KvView;
use super::namespace::{KeyError, Namespace};
use hightower_engine::Outcome;
use hightower_engine::{Command, Condition, Op};
use hightower_engine::{Error, InputError};

type Res<T> = wasmtime::Result<Result<T, WitError>>;

impl From<KeyError> for WitError {
    fn from(err: KeyError) -> Self {
        match err {
            KeyError::Empty(what) => WitError::InvalidKey(format!("{what} is empty")),
            KeyError::TooLarge(limit) => WitError::KeyTooLarge(limit),
        }
    }
}

impl KvView<'_> {
    /// The namespace behind a handle. Handles are created only by `open`
    /// with an index into the grants, so a miss is a host bug: trap.
    fn namespace(&self, handle: &Resource<NamespaceHandle>) -> wasmtime::Result<&Namespace> {
        self.kv
            .grants
            .get(handle.rep() as usize)
            .ok_or_else(|| wasmtime::format_err!("unknown namespace handle {}", handle.rep()))
    }

    /// A storage failure as the guest sees it. The full error is logged.
    fn storage_error(&self, err: Error, namespace: &Namespace) -> WitError {
        let limits = namespace.limits();
        match err {
            // Guest input is checked before the engine sees it; these only
            // happen if the store's limits shrank underneath (a host bug).
            Error::Input(InputError::KeyTooLarge { .. }) => {
                WitError::KeyTooLarge(limits.max_key_bytes)
            }
            Error::Input(InputError::ValueTooLarge { .. }) => {
                WitError::ValueTooLarge(limits.max_value_bytes)
            }
            Error::Input(InputError::EmptyKey) => WitError::InvalidKey("key is empty".into()),
            Error::Input(
                InputError::BatchTooLarge { .. }
                | InputError::BatchTooManyOps { .. }
                | InputError::TooManyConditions { .. },
            ) => WitError::BatchTooLarge(batch_limits(namespace)),
            other => {
                tracing::warn!(namespace = namespace.name(), error = %other, "guest store call failed");
                WitError::StorageError(other.to_string())
            }
        }
    }
}

fn batch_limits(namespace: &Namespace) -> BatchLimits {
    let limits = namespace.limits();
    BatchLimits {
        max_ops: limits.max_batch_ops,
        max_bytes: limits.max_batch_bytes,
    }
}

impl Host for KvView<'_> {
    fn granted(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.kv.grants.names().map(str::to_string).collect())
    }
}

impl HostNamespace for KvView<'_> {
    fn open(&mut self, name: String) -> Res<Resource<NamespaceHandle>> {
        Ok(match self.kv.grants.find(&name) {
            Some(index) => Ok(Resource::new_own(index as u32)),
            None => {
                tracing::debug!(namespace = %name.escape_debug(), "guest opened an ungranted namespace");
                Err(WitError::AccessDenied)
            }
        })
    }

    fn name(&mut self, handle: Resource<NamespaceHandle>) -> wasmtime::Result<String> {
        Ok(self.namespace(&handle)?.name().to_string())
    }

    fn limits(&mut self, handle: Resource<NamespaceHandle>) -> wasmtime::Result<Limits> {
        let l = self.namespace(&handle)?.limits();
        Ok(Limits {
            max_key_bytes: l.max_key_bytes,
            max_value_bytes: l.max_value_bytes,
            max_batch_ops: l.max_batch_ops,
            max_batch_bytes: l.max_batch_bytes,
            max_page_keys: l.max_page_keys,
        })
    }

    fn get(&mut self, handle: Resource<NamespaceHandle>, key: Vec<u8>) -> Res<Option<Entry>> {
        let ns = self.namespace(&handle)?;
        let key = match ns.key(&key, "key") {
            Ok(key) => key,
            Err(err) => return Ok(Err(err.into())),
        };
        Ok(match self.kv.engine.read().get(&key) {
            Ok(found) => Ok(found.map(|v| Entry {
                value: v.value,
                version: v.version,
            })),
            Err(err) => Err(self.storage_error(err, ns)),
        })
    }

    fn exists(&mut self, handle: Resource<NamespaceHandle>, key: Vec<u8>) -> Res<bool> {
        let ns = self.namespace(&handle)?;
        let key = match ns.key(&key, "key") {
            Ok(key) => key,
            Err(err) => return Ok(Err(err.into())),
        };
        Ok(self
            .kv
            .engine
            .read()
            .contains(&key)
            .map_err(|err| self.storage_error(err, ns)))
    }

    fn set(&mut self, handle: Resource<NamespaceHandle>, key: Vec<u8>, value: Vec<u8>) -> Res<u64> {
        let ns = self.namespace(&handle)?;
        let key = match ns.key(&key, "key") {
            Ok(key) => key,
            Err(err) => return Ok(Err(err.into())),
        };
        let max_value = ns.limits().max_value_bytes;
        if value.len() > max_value as usize {
            return Ok(Err(WitError::ValueTooLarge(max_value)));
        }
        Ok(match self.kv.engine.apply(Command::Set { key, value }) {
            Ok(applied) => match applied.outcome {
                Outcome::Set { version } => Ok(version),
                other => return Err(unexpected(&other)),
            },
            Err(err) => Err(self.storage_error(err, ns)),
        })
    }

    fn delete(&mut self, handle: Resource<NamespaceHandle>, key: Vec<u8>) -> Res<Option<u64>> {
        let ns = self.namespace(&handle)?;
        let key = match ns.key(&key, "key") {
            Ok(key) => key,
            Err(err) => return Ok(Err(err.into())),
        };
        Ok(match self.kv.engine.apply(Command::Delete { key }) {
            Ok(applied) => match applied.outcome {
                Outcome::Deleted { version } => Ok(version),
                other => return Err(unexpected(&other)),
            },
            Err(err) => Err(self.storage_error(err, ns)),
        })
    }

    fn list_keys(
        &mut self,
        handle: Resource<NamespaceHandle>,
        prefix: Vec<u8>,
        cursor: Option<Vec<u8>>,
        page_size: u32,
    ) -> Res<KeyPage> {
        let ns = self.namespace(&handle)?;
        let prefix = match ns.key_prefix(&prefix) {
            Ok(prefix) => prefix,
            Err(err) => return Ok(Err(err.into())),
        };
        // Without a cursor, start after the namespace's own prefix: a key
        // equal to it (written natively) is the empty key to the guest, which
        // no guest call accepts, so it is not listed.
        let after = match cursor {
            Some(cursor) => match ns.key(&cursor, "cursor") {
                Ok(after) => after,
                Err(err) => return Ok(Err(err.into())),
            },
            None => ns.prefix().to_vec(),
        };
        let max = ns.limits().max_page_keys;
        let page_size = if page_size == 0 || page_size > max {
            max
        } else {
            page_size
        } as usize;
        // One more than asked tells whether another page follows.
        let listed = self
            .kv
            .engine
            .read()
            .keys_with_prefix(&prefix, Some(&after), page_size + 1);
        let mut keys = match listed {
            Ok(keys) => keys,
            Err(err) => return Ok(Err(self.storage_error(err, ns))),
        };
        let more = keys.len() > page_size;
        keys.truncate(page_size);
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| ns.relative(k).to_vec()).collect();
        let next_cursor = if more { keys.last().cloned() } else { None };
        Ok(Ok(KeyPage { keys, next_cursor }))
    }

    fn batch(
        &mut self,
        handle: Resource<NamespaceHandle>,
        conditions: Vec<WitCondition>,
        ops: Vec<WitOp>,
    ) -> Res<Option<u64>> {
        let ns = self.namespace(&handle)?;
        let command = match batch_command(ns, conditions, ops) {
            Ok(command) => command,
            Err(err) => return Ok(Err(err)),
        };
        Ok(match self.kv.engine.apply(command) {
            Ok(applied) => match applied.outcome {
                Outcome::Batch { last_version, .. } => Ok(last_version),
                Outcome::ConditionFailed { key, .. } => {
                    Err(WitError::ConditionFailed(ns.relative(&key).to_vec()))
                }
                other => return Err(unexpected(&other)),
            },
            Err(err) => Err(self.storage_error(err, ns)),
        })
    }

    fn drop(&mut self, _handle: Resource<NamespaceHandle>) -> wasmtime::Result<()> {
        // Nothing is allocated per handle.
        Ok(())
    }
}

/// The guest's batch in the store's terms, or the first limit it breaks:
/// counts first, then each key and value, then the total size.
fn batch_command(
    ns: &Namespace,
    conditions: Vec<WitCondition>,
    ops: Vec<WitOp>,
) -> Result<Command, WitError> {
    let limits = ns.limits();
    let max_ops = limits.max_batch_ops as usize;
    if ops.len() > max_ops || conditions.len() > max_ops {
        return Err(WitError::BatchTooLarge(batch_limits(ns)));
    }
    let conditions = conditions
        .into_iter()
        .map(|condition| {
            Ok(match condition {
                WitCondition::Absent(key) => Condition::Absent {
                    key: ns.key(&key, "condition key")?,
                },
                WitCondition::VersionIs(kv) => Condition::VersionIs {
                    key: ns.key(&kv.key, "condition key")?,
                    version: kv.version,
                },
            })
        })
        .collect::<Result<Vec<_>, KeyError>>()?;
    let mut bytes = 0u64;
    let ops = ops
        .into_iter()
        .map(|op| match op {
            WitOp::Set(kv) => {
                if kv.value.len() > limits.max_value_bytes as usize {
                    return Err(WitError::ValueTooLarge(limits.max_value_bytes));
                }
                bytes += (kv.key.len() + kv.value.len()) as u64;
                Ok(Op::Set {
                    key: ns.key(&kv.key, "key")?,
                    value: kv.value,
                })
            }
            WitOp::Delete(key) => {
                bytes += key.len() as u64;
                Ok(Op::Delete {
                    key: ns.key(&key, "key")?,
                })
            }
        })
        .collect::<Result<Vec<_>, WitError>>()?;
    if bytes > limits.max_batch_bytes {
        return Err(WitError::BatchTooLarge(batch_limits(ns)));
    }
    let command = Command::Batch { conditions, ops };
    // Cannot fail after the checks above; kept as a guard for the store.
    command
        .validate(&limits.as_store_limits(ns.prefix().len()))
        .map_err(|_| WitError::BatchTooLarge(batch_limits(ns)))?;
    Ok(command)
}

fn unexpected(outcome: &Outcome) -> wasmtime::Error {
    wasmtime::format_err!("the store returned an unexpected outcome: {outcome:?}")
}
