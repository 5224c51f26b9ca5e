//! The standard `wasi:keyvalue` interfaces (`store`, `atomics`, `batch`) in
//! both drafts guests use: `@0.2.0-draft` ([`draft`], what wasmtime's own
//! key-value support targets) and `@0.2.0-draft2` ([`draft2`], Spin's; it
//! adds `cas` and `swap`). The component model treats two prereleases as
//! unrelated packages, so each draft has its own `bindgen!` and is linked
//! separately; both run on the operations here.
//!
//! A bucket is a namespace the component was granted ([`bucket_for`]): a
//! bucket's key `k` is the stored key `namespace ++ k`, exactly as with
//! `hightower:kv`, so both interfaces see the same keys. What the store adds
//! to the drafts' minimum (strong consistency, atomic `set-many` and
//! `delete-many`, stable cursors) is documented in `docs/extensions.md`.
//!
//! Host calls stay bounded: `increment` and `swap` retry a conditional write
//! a fixed number of times, `get-many` reads at most a batch's worth, and the
//! state kept per instance (list cursors of the first draft, open `cas`
//! handles) has fixed caps.

#[macro_use]
mod draft_shared;
mod draft;
mod draft2;

use std::collections::VecDeque;

use wasmtime::component::{HasData, Linker, ResourceTable};

use super::access::StoreAccess;
use super::namespace::{Grants, KeyError, Namespace};
use hightower_engine::Outcome;
use hightower_engine::{Command, Condition, Op};
use hightower_engine::{Error, InputError};

/// Cursors of the first draft's `list-keys` (a `u64`) kept per instance;
/// older ones expire.
pub const MAX_DRAFT_CURSORS: usize = 16;
/// Open `cas` handles one instance may hold at once.
pub const MAX_OPEN_CAS: usize = 1000;
/// Attempts of `increment`'s read-modify-write before it reports contention.
pub const INCREMENT_ATTEMPTS: usize = 32;

/// The bucket identifiers that name the component's own namespace (the
/// first one granted).
pub const DEFAULT_BUCKETS: [&str; 2] = ["", "default"];

/// The index in `grants` of the namespace a bucket identifier names, or
/// `None` (then `open` says `access-denied`):
///
/// - `""` and `"default"`: the first namespace granted (the component's own,
///   the first `--namespace` of `hightower run`);
/// - `"NAME"` or `"NAME/"`: the granted namespace `NAME/` (so bucket `cache`
///   is namespace `cache/`, and `tenant/cache` is `tenant/cache/`).
///
/// Nothing else: no prefix, extension or sub-namespace of a grant.
pub fn bucket_for(grants: &Grants, identifier: &str) -> Option<usize> {
    if DEFAULT_BUCKETS.contains(&identifier) {
        return grants.get(0).map(|_| 0);
    }
    if identifier.ends_with('/') {
        return grants.find(identifier);
    }
    grants.find(&format!("{identifier}/"))
}

/// Why a `wasi:keyvalue` call failed, before it becomes a draft's `error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeyValueError {
    AccessDenied,
    /// The draft's `other(string)`: the message names the problem.
    Other(String),
}

type KeyValueResult<T> = Result<T, KeyValueError>;

/// A key's value and version, if present.
type Found = Option<(Vec<u8>, u64)>;

/// `get-many`'s answer: a key and its value per key asked, `None` if absent.
pub(crate) type ManyValues = Vec<Option<(String, Vec<u8>)>>;

fn other(message: impl Into<String>) -> KeyValueError {
    KeyValueError::Other(message.into())
}

/// What one instance keeps between its `wasi:keyvalue` calls.
#[derive(Default)]
pub(crate) struct KeyValueState {
    /// The first draft's list cursors: token, bucket, last key listed.
    cursors: VecDeque<(u64, u32, Vec<u8>)>,
    next_cursor: u64,
    open_cas: usize,
}

/// A `cas` handle of the second draft, kept in the instance's resource table.
pub struct CasHandle {
    bucket: u32,
    /// The key relative to the bucket, as the guest named it.
    key: String,
    /// The version the handle last saw (`None`: absent); `swap` succeeds
    /// only if the key is still at it.
    pub(crate) expected: Option<u64>,
}

/// What the `wasi:keyvalue` host functions work on, borrowed from the
/// store's data for one call.
pub(crate) struct KeyValueView<'a> {
    pub access: &'a StoreAccess,
    /// Where the second draft's `cas` handles live.
    pub table: &'a mut ResourceTable,
    pub state: &'a mut KeyValueState,
}

/// Ties [`KeyValueView`] to both drafts' `add_to_linker`.
struct HasKeyValue;

impl HasData for HasKeyValue {
    type Data<'a> = KeyValueView<'a>;
}

/// Links both drafts' `store`, `atomics` and `batch`; `view` borrows what
/// they need from a store's data.
pub(crate) fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> KeyValueView<'_>,
) -> wasmtime::Result<()> {
    draft::Imports::add_to_linker::<T, HasKeyValue>(linker, view)?;
    draft2::Imports::add_to_linker::<T, HasKeyValue>(linker, view)?;
    Ok(())
}

fn key_error(err: KeyError) -> KeyValueError {
    match err {
        KeyError::Empty(what) => other(format!("invalid key: the {what} is empty")),
        KeyError::TooLarge(limit) => other(format!("key too large: at most {limit} bytes")),
    }
}

fn batch_too_large(ns: &Namespace) -> KeyValueError {
    let l = ns.limits();
    other(format!(
        "batch too large: at most {} keys and {} bytes of keys and values",
        l.max_batch_ops, l.max_batch_bytes
    ))
}

/// `bytes` as lowercase hex; the second draft's opaque list cursor.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// A counter's value: ASCII decimal (an optional sign, then digits), as
/// `increment` writes it and as wasmtime's own implementation does.
fn parse_counter(value: &[u8]) -> Option<i128> {
    let text = std::str::from_utf8(value).ok()?;
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The integer type of a draft's `increment`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum CounterType {
    U64,
    S64,
}

impl CounterType {
    fn range(self) -> (&'static str, std::ops::RangeInclusive<i128>) {
        match self {
            CounterType::U64 => ("u64", 0..=i128::from(u64::MAX)),
            CounterType::S64 => ("s64", i128::from(i64::MIN)..=i128::from(i64::MAX)),
        }
    }
}

/// One page of `list-keys`: the keys (those that are UTF-8) and, when more
/// may follow, the last key scanned (the next page starts after it).
pub(crate) struct Page {
    pub keys: Vec<String>,
    pub after: Option<Vec<u8>>,
}

impl KeyValueView<'_> {
    fn storage_error(&self, err: Error, ns: &Namespace) -> KeyValueError {
        match err {
            Error::Input(InputError::KeyTooLarge { .. }) => {
                key_error(KeyError::TooLarge(ns.limits().max_key_bytes))
            }
            Error::Input(InputError::ValueTooLarge { .. }) => other(format!(
                "value too large: at most {} bytes",
                ns.limits().max_value_bytes
            )),
            Error::Input(InputError::EmptyKey) => key_error(KeyError::Empty("key")),
            Error::Input(
                InputError::BatchTooLarge { .. }
                | InputError::BatchTooManyOps { .. }
                | InputError::TooManyConditions { .. },
            ) => batch_too_large(ns),
            other_error => {
                tracing::warn!(namespace = ns.name(), error = %other_error, "guest wasi:keyvalue call failed");
                other(format!("storage error: {other_error}"))
            }
        }
    }

    /// `open`: the bucket's handle representation (the grant's index).
    pub(crate) fn open_bucket(&self, identifier: &str) -> KeyValueResult<u32> {
        match bucket_for(&self.access.grants, identifier) {
            Some(index) => Ok(index as u32),
            None => {
                tracing::debug!(bucket = %identifier.escape_debug(), "guest opened an ungranted bucket");
                Err(KeyValueError::AccessDenied)
            }
        }
    }

    /// The namespace behind a bucket handle.
    pub(crate) fn bucket(&self, rep: u32) -> wasmtime::Result<&Namespace> {
        self.access.granted(rep)
    }

    fn check_value(ns: &Namespace, value: &[u8]) -> KeyValueResult<()> {
        let max = ns.limits().max_value_bytes;
        if value.len() > max as usize {
            return Err(other(format!("value too large: at most {max} bytes")));
        }
        Ok(())
    }

    /// The value of `key` and its version.
    fn read(&self, ns: &Namespace, key: &str) -> KeyValueResult<Found> {
        let stored = ns.key(key.as_bytes(), "key").map_err(key_error)?;
        match self.access.kv.read().get(&stored) {
            Ok(found) => Ok(found.map(|v| (v.value, v.version))),
            Err(err) => Err(self.storage_error(err, ns)),
        }
    }

    pub(crate) fn get_value(
        &self,
        bucket: u32,
        key: &str,
    ) -> wasmtime::Result<KeyValueResult<Option<Vec<u8>>>> {
        let ns = self.bucket(bucket)?;
        Ok(self
            .read(ns, key)
            .map(|found| found.map(|(value, _)| value)))
    }

    pub(crate) fn key_exists(
        &self,
        bucket: u32,
        key: &str,
    ) -> wasmtime::Result<KeyValueResult<bool>> {
        let ns = self.bucket(bucket)?;
        let stored = match ns.key(key.as_bytes(), "key") {
            Ok(stored) => stored,
            Err(err) => return Ok(Err(key_error(err))),
        };
        Ok(self
            .access
            .kv
            .read()
            .contains(&stored)
            .map_err(|err| self.storage_error(err, ns)))
    }

    /// Applies a batch the caller has checked; `Ok(false)` if a condition
    /// failed (nothing was written).
    fn apply(
        &self,
        ns: &Namespace,
        conditions: Vec<Condition>,
        ops: Vec<Op>,
    ) -> KeyValueResult<bool> {
        let command = Command::Batch { conditions, ops };
        command
            .validate(&ns.limits().as_store_limits(ns.prefix().len()))
            .map_err(|_| batch_too_large(ns))?;
        match self.access.kv.apply(command) {
            Ok(applied) => match applied.outcome {
                Outcome::Batch { .. } => Ok(true),
                Outcome::ConditionFailed { .. } => Ok(false),
                unexpected => Err(other(format!(
                    "storage error: unexpected outcome {unexpected:?}"
                ))),
            },
            Err(err) => Err(self.storage_error(err, ns)),
        }
    }

    /// A single set or delete; the version it wrote does not matter here.
    fn apply_one(&self, ns: &Namespace, command: Command) -> KeyValueResult<()> {
        match self.access.kv.apply(command) {
            Ok(_) => Ok(()),
            Err(err) => Err(self.storage_error(err, ns)),
        }
    }

    pub(crate) fn set_value(
        &self,
        bucket: u32,
        key: &str,
        value: Vec<u8>,
    ) -> wasmtime::Result<KeyValueResult<()>> {
        let ns = self.bucket(bucket)?;
        if let Err(err) = Self::check_value(ns, &value) {
            return Ok(Err(err));
        }
        Ok(match ns.key(key.as_bytes(), "key") {
            Ok(key) => self.apply_one(ns, Command::Set { key, value }),
            Err(err) => Err(key_error(err)),
        })
    }

    pub(crate) fn delete_key(
        &self,
        bucket: u32,
        key: &str,
    ) -> wasmtime::Result<KeyValueResult<()>> {
        let ns = self.bucket(bucket)?;
        Ok(ns
            .key(key.as_bytes(), "key")
            .map_err(key_error)
            .and_then(|key| self.apply_one(ns, Command::Delete { key })))
    }

    /// One page of keys after `after` (a key relative to the bucket; `None`
    /// to start), at most `max-page-keys` of them, in ascending byte order
    /// (which the drafts do not promise). Keys that are not UTF-8 (written
    /// through `hightower:kv` or natively) cannot be named as a `string`
    /// and are skipped; the cursor still moves past them.
    pub(crate) fn list_page(
        &self,
        bucket: u32,
        after: Option<&[u8]>,
    ) -> wasmtime::Result<KeyValueResult<Page>> {
        let ns = self.bucket(bucket)?;
        let after = match after {
            Some(after) => match ns.key(after, "cursor") {
                Ok(stored) => stored,
                Err(err) => return Ok(Err(key_error(err))),
            },
            // A key equal to the namespace itself is the empty key: not listed.
            None => ns.prefix().to_vec(),
        };
        let page_size = ns.limits().max_page_keys as usize;
        let listed =
            self.access
                .kv
                .read()
                .keys_with_prefix(ns.prefix(), Some(&after), page_size + 1);
        let mut stored = match listed {
            Ok(stored) => stored,
            Err(err) => return Ok(Err(self.storage_error(err, ns))),
        };
        let more = stored.len() > page_size;
        stored.truncate(page_size);
        let after = if more {
            stored.last().map(|k| ns.relative(k).to_vec())
        } else {
            None
        };
        let keys = stored
            .iter()
            .filter_map(|k| String::from_utf8(ns.relative(k).to_vec()).ok())
            .collect();
        Ok(Ok(Page { keys, after }))
    }

    /// The first draft's `u64` cursor for a page that ended at `after`.
    pub(crate) fn save_cursor(&mut self, bucket: u32, after: Vec<u8>) -> u64 {
        self.state.next_cursor += 1;
        let token = self.state.next_cursor;
        if self.state.cursors.len() == MAX_DRAFT_CURSORS {
            self.state.cursors.pop_front();
        }
        self.state.cursors.push_back((token, bucket, after));
        token
    }

    /// The key a first-draft cursor stands for.
    pub(crate) fn load_cursor(&self, bucket: u32, token: u64) -> KeyValueResult<Vec<u8>> {
        self.state
            .cursors
            .iter()
            .find(|(t, b, _)| *t == token && *b == bucket)
            .map(|(_, _, after)| after.clone())
            .ok_or_else(|| {
                other(format!(
                    "invalid cursor {token}: not returned by list-keys on this bucket, or expired \
                     (a cursor lasts for the instance's {MAX_DRAFT_CURSORS} most recent pages)"
                ))
            })
    }

    /// The second draft's string cursor for a page that ended at `after`.
    pub(crate) fn cursor_string(after: &[u8]) -> String {
        hex(after)
    }

    pub(crate) fn parse_cursor_string(cursor: &str) -> KeyValueResult<Vec<u8>> {
        unhex(cursor).filter(|key| !key.is_empty()).ok_or_else(|| {
            other("invalid cursor: pass back a cursor that list-keys returned".to_string())
        })
    }

    /// Adds `delta` to the counter at `key`, stored as ASCII decimal; an
    /// absent key counts as 0. Old and new value must be `counter`s (the
    /// draft's integer type). Read, then write guarded by the version read;
    /// retried if another write came between.
    pub(crate) fn increment_counter(
        &self,
        bucket: u32,
        key: &str,
        delta: i128,
        counter: CounterType,
    ) -> wasmtime::Result<KeyValueResult<i128>> {
        let ns = self.bucket(bucket)?;
        Ok(self.increment_in(ns, key, delta, counter))
    }

    fn increment_in(
        &self,
        ns: &Namespace,
        key: &str,
        delta: i128,
        counter: CounterType,
    ) -> KeyValueResult<i128> {
        let (name, range) = counter.range();
        let stored = ns.key(key.as_bytes(), "key").map_err(key_error)?;
        for _ in 0..INCREMENT_ATTEMPTS {
            let (current, condition) = match self.read(ns, key)? {
                None => (
                    0,
                    Condition::Absent {
                        key: stored.clone(),
                    },
                ),
                Some((value, version)) => {
                    let Some(current) = parse_counter(&value).filter(|n| range.contains(n)) else {
                        return Err(other(format!(
                            "increment: the value of {key:?} is not a number (counters are \
                             {name} values in ASCII decimal)"
                        )));
                    };
                    (
                        current,
                        Condition::VersionIs {
                            key: stored.clone(),
                            version,
                        },
                    )
                }
            };
            let new = current + delta;
            if !range.contains(&new) {
                return Err(other(format!(
                    "increment: {current} + {delta} is out of range for {name}"
                )));
            }
            let op = Op::Set {
                key: stored.clone(),
                value: new.to_string().into_bytes(),
            };
            if self.apply(ns, vec![condition], vec![op])? {
                return Ok(new);
            }
        }
        Err(other(format!(
            "increment: {key:?} kept changing under concurrent writes; gave up after \
             {INCREMENT_ATTEMPTS} attempts (retry)"
        )))
    }

    /// `get-many`: at most `max-batch-ops` keys, whose values add up to at
    /// most `max-batch-bytes`. Each key is read in turn (not a snapshot).
    pub(crate) fn read_many(
        &self,
        bucket: u32,
        keys: Vec<String>,
    ) -> wasmtime::Result<KeyValueResult<ManyValues>> {
        let ns = self.bucket(bucket)?;
        let limits = ns.limits();
        if keys.len() > limits.max_batch_ops as usize {
            return Ok(Err(batch_too_large(ns)));
        }
        let mut bytes = 0u64;
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            match self.read(ns, &key) {
                Ok(Some((value, _))) => {
                    bytes += (key.len() + value.len()) as u64;
                    if bytes > limits.max_batch_bytes {
                        return Ok(Err(other(format!(
                            "get-many: the values add up to more than {} bytes; ask for fewer keys",
                            limits.max_batch_bytes
                        ))));
                    }
                    found.push(Some((key, value)));
                }
                Ok(None) => found.push(None),
                Err(err) => return Ok(Err(err)),
            }
        }
        Ok(Ok(found))
    }

    /// `set-many`: one atomic batch (the drafts do not require atomicity).
    pub(crate) fn write_many(
        &self,
        bucket: u32,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<KeyValueResult<()>> {
        let ns = self.bucket(bucket)?;
        let ops = pairs
            .into_iter()
            .map(|(key, value)| {
                Self::check_value(ns, &value)?;
                Ok(Op::Set {
                    key: ns.key(key.as_bytes(), "key").map_err(key_error)?,
                    value,
                })
            })
            .collect::<KeyValueResult<Vec<_>>>();
        Ok(ops.and_then(|ops| self.write_all(ns, ops)))
    }

    /// `delete-many`: one atomic batch; absent keys are skipped.
    pub(crate) fn delete_keys(
        &self,
        bucket: u32,
        keys: Vec<String>,
    ) -> wasmtime::Result<KeyValueResult<()>> {
        let ns = self.bucket(bucket)?;
        let ops = keys
            .into_iter()
            .map(|key| {
                Ok(Op::Delete {
                    key: ns.key(key.as_bytes(), "key").map_err(key_error)?,
                })
            })
            .collect::<KeyValueResult<Vec<_>>>();
        Ok(ops.and_then(|ops| self.write_all(ns, ops)))
    }

    /// Unconditional writes, all or none, within the guest's batch limits
    /// (counted as `hightower:kv` counts them: keys, relative, and values).
    fn write_all(&self, ns: &Namespace, ops: Vec<Op>) -> KeyValueResult<()> {
        let limits = ns.limits();
        let prefix = ns.prefix().len() as u64;
        let bytes: u64 = ops
            .iter()
            .map(|op| op.key().len() as u64 - prefix + op.value().map_or(0, |v| v.len() as u64))
            .sum();
        if ops.len() > limits.max_batch_ops as usize || bytes > limits.max_batch_bytes {
            return Err(batch_too_large(ns));
        }
        if ops.is_empty() {
            return Ok(());
        }
        self.apply(ns, Vec::new(), ops).map(|_| ())
    }

    /// `cas.new`: a handle on `key` that remembers the version it sees now.
    pub(crate) fn cas_new(
        &mut self,
        bucket: u32,
        key: String,
    ) -> wasmtime::Result<KeyValueResult<CasHandle>> {
        let ns = self.bucket(bucket)?;
        if self.state.open_cas >= MAX_OPEN_CAS {
            return Ok(Err(other(format!(
                "cas: {MAX_OPEN_CAS} handles are open in this instance; swap or drop some first"
            ))));
        }
        Ok(self.read(ns, &key).map(|found| CasHandle {
            bucket,
            key,
            expected: found.map(|(_, version)| version),
        }))
    }

    /// Counts a handle put in the table (see [`Self::cas_closed`]).
    pub(crate) fn cas_opened(&mut self) {
        self.state.open_cas += 1;
    }

    pub(crate) fn cas_closed(&mut self) {
        self.state.open_cas = self.state.open_cas.saturating_sub(1);
    }

    /// `cas.current`: the key's value now and its version, which the
    /// handle expects from then on.
    pub(crate) fn cas_current(&self, cas: &CasHandle) -> wasmtime::Result<KeyValueResult<Found>> {
        let ns = self.bucket(cas.bucket)?;
        Ok(self.read(ns, &cas.key))
    }

    /// `swap`: writes `value` if the key is still at the version the handle
    /// saw. `Ok(Err(now))` if it was not: `now` is the key's current version
    /// (the draft's `cas-failed` hands back a handle expecting it).
    pub(crate) fn cas_swap(
        &self,
        cas: &CasHandle,
        value: Vec<u8>,
    ) -> wasmtime::Result<KeyValueResult<Result<(), Option<u64>>>> {
        let ns = self.bucket(cas.bucket)?;
        Ok(self.cas_swap_in(ns, cas, value))
    }

    fn cas_swap_in(
        &self,
        ns: &Namespace,
        cas: &CasHandle,
        value: Vec<u8>,
    ) -> KeyValueResult<Result<(), Option<u64>>> {
        Self::check_value(ns, &value)?;
        let key = ns.key(cas.key.as_bytes(), "key").map_err(key_error)?;
        let condition = match cas.expected {
            None => Condition::Absent { key: key.clone() },
            Some(version) => Condition::VersionIs {
                key: key.clone(),
                version,
            },
        };
        if self.apply(ns, vec![condition], vec![Op::Set { key, value }])? {
            return Ok(Ok(()));
        }
        Ok(Err(self.read(ns, &cas.key)?.map(|(_, version)| version)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SandboxConfig;
    use hightower_engine::Config;

    fn grants(names: &[&str]) -> Grants {
        Grants::new(names, &Config::default(), &SandboxConfig::default()).unwrap()
    }

    #[test]
    fn buckets_name_granted_namespaces_only() {
        let g = grants(&["app/", "shared/", "tenant/cache/", "default/"]);
        for (identifier, expected) in [
            ("", Some(0)),
            ("default", Some(0)),
            ("app", Some(0)),
            ("app/", Some(0)),
            ("shared", Some(1)),
            ("shared/", Some(1)),
            ("tenant/cache", Some(2)),
            ("default/", Some(3)),
            ("tenant", None),
            ("tenant/", None),
            ("shared//", None),
            ("Shared", None),
            ("other", None),
            ("/", None),
            ("app/x", None),
        ] {
            assert_eq!(bucket_for(&g, identifier), expected, "{identifier:?}");
        }
        // Without a grant there is no default bucket either.
        let none = grants(&[]);
        assert_eq!(bucket_for(&none, ""), None);
        assert_eq!(bucket_for(&none, "default"), None);
    }

    #[test]
    fn counters_are_ascii_decimal() {
        assert_eq!(parse_counter(b"0"), Some(0));
        assert_eq!(parse_counter(b"42"), Some(42));
        assert_eq!(parse_counter(b"-7"), Some(-7));
        assert_eq!(parse_counter(b"+7"), Some(7));
        assert_eq!(parse_counter(b"007"), Some(7));
        assert_eq!(
            parse_counter(b"18446744073709551615"),
            Some(u64::MAX as i128)
        );
        for bad in [
            &b""[..],
            b"-",
            b" 1",
            b"1 ",
            b"1.5",
            b"0x10",
            b"abc",
            b"\xff",
            b"--1",
            b"1e3",
        ] {
            assert_eq!(
                parse_counter(bad),
                None,
                "{:?}",
                bad.escape_ascii().to_string()
            );
        }
        // More digits than i128 holds is not a number either.
        assert_eq!(parse_counter(&[b'9'; 60]), None);
    }

    #[test]
    fn string_cursors_round_trip_any_key() {
        for key in [&b"a"[..], b"\x00\xff/..", "é".as_bytes()] {
            let cursor = KeyValueView::cursor_string(key);
            assert!(cursor.bytes().all(|b| b.is_ascii_hexdigit()), "{cursor}");
            assert_eq!(KeyValueView::parse_cursor_string(&cursor).unwrap(), key);
        }
        for bad in ["", "a", "zz", "0g", "é1"] {
            assert!(
                KeyValueView::parse_cursor_string(bad).is_err(),
                "{bad:?} accepted"
            );
        }
    }
}
