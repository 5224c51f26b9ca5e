//! `wasi:keyvalue@0.2.0-draft2` (`wit/deps/keyvalue-0.2.0-draft2/`): what
//! Spin targets. Over the first draft it has a `string` list cursor (here
//! the last key of the page, hex-encoded: stateless, valid in any
//! instance), a signed `increment`, and compare-and-swap (`cas`, `swap`).

use wasmtime::component::Resource;

pub use super::CasHandle;
use super::{CounterType, KeyValueError, KeyValueView, ManyValues};

/// Host-side type of a bucket: its representation is the index of the
/// namespace in the component's grants (nothing is allocated per handle).
pub struct Bucket;

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "wasi:keyvalue/imports@0.2.0-draft2",
    imports: { default: trappable },
    with: {
        "wasi:keyvalue/store.bucket": Bucket,
        "wasi:keyvalue/atomics.cas": CasHandle,
    },
});

use self::wasi::keyvalue0_2_0_draft2::{atomics, batch, store};

type DraftResult<T> = wasmtime::Result<Result<T, store::Error>>;

impl From<KeyValueError> for store::Error {
    fn from(err: KeyValueError) -> Self {
        match err {
            KeyValueError::AccessDenied => store::Error::AccessDenied,
            KeyValueError::Other(message) => store::Error::Other(message),
        }
    }
}

fn convert<T>(result: wasmtime::Result<Result<T, KeyValueError>>) -> DraftResult<T> {
    result.map(|r| r.map_err(store::Error::from))
}

impl store::Host for KeyValueView<'_> {
    fn open(&mut self, identifier: String) -> DraftResult<Resource<Bucket>> {
        Ok(self
            .open_bucket(&identifier)
            .map(Resource::new_own)
            .map_err(store::Error::from))
    }
}

impl store::HostBucket for KeyValueView<'_> {
    fn get(&mut self, bucket: Resource<Bucket>, key: String) -> DraftResult<Option<Vec<u8>>> {
        convert(self.get_value(bucket.rep(), &key))
    }

    fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> DraftResult<()> {
        convert(self.set_value(bucket.rep(), &key, value))
    }

    fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> DraftResult<()> {
        convert(self.delete_key(bucket.rep(), &key))
    }

    fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> DraftResult<bool> {
        convert(self.key_exists(bucket.rep(), &key))
    }

    fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> DraftResult<store::KeyResponse> {
        let after = match cursor.as_deref().map(KeyValueView::parse_cursor_string) {
            Some(Ok(after)) => Some(after),
            Some(Err(err)) => return Ok(Err(err.into())),
            None => None,
        };
        let page = match self.list_page(bucket.rep(), after.as_deref())? {
            Ok(page) => page,
            Err(err) => return Ok(Err(err.into())),
        };
        Ok(Ok(store::KeyResponse {
            keys: page.keys,
            cursor: page.after.as_deref().map(KeyValueView::cursor_string),
        }))
    }

    fn drop(&mut self, _bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        // Nothing is allocated per handle.
        Ok(())
    }
}

impl atomics::HostCas for KeyValueView<'_> {
    fn new(&mut self, bucket: Resource<Bucket>, key: String) -> DraftResult<Resource<CasHandle>> {
        let cas = match self.cas_new(bucket.rep(), key)? {
            Ok(cas) => cas,
            Err(err) => return Ok(Err(err.into())),
        };
        let handle = self.table.push(cas)?;
        self.cas_opened();
        Ok(Ok(handle))
    }

    fn current(&mut self, cas: Resource<CasHandle>) -> DraftResult<Option<Vec<u8>>> {
        let found = match self.cas_current(self.table.get(&cas)?)? {
            Ok(found) => found,
            Err(err) => return Ok(Err(err.into())),
        };
        self.table.get_mut(&cas)?.expected = found.as_ref().map(|(_, version)| *version);
        Ok(Ok(found.map(|(value, _)| value)))
    }

    fn drop(&mut self, cas: Resource<CasHandle>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        self.cas_closed();
        Ok(())
    }
}

impl atomics::Host for KeyValueView<'_> {
    fn increment(&mut self, bucket: Resource<Bucket>, key: String, delta: i64) -> DraftResult<i64> {
        let result =
            self.increment_counter(bucket.rep(), &key, i128::from(delta), CounterType::S64);
        convert(result.map(|r| r.map(|n| n as i64)))
    }

    fn swap(
        &mut self,
        cas: Resource<CasHandle>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let outcome = self.cas_swap(self.table.get(&cas)?, value)?;
        match outcome {
            Ok(Ok(())) => {
                atomics::HostCas::drop(self, cas)?;
                Ok(Ok(()))
            }
            // The handle goes back to the guest, expecting the version now.
            Ok(Err(now)) => {
                self.table.get_mut(&cas)?.expected = now;
                Ok(Err(atomics::CasError::CasFailed(cas)))
            }
            Err(err) => {
                atomics::HostCas::drop(self, cas)?;
                Ok(Err(atomics::CasError::StoreError(err.into())))
            }
        }
    }
}

impl batch::Host for KeyValueView<'_> {
    fn get_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> DraftResult<ManyValues> {
        convert(self.read_many(bucket.rep(), keys))
    }

    fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> DraftResult<()> {
        convert(self.write_many(bucket.rep(), key_values))
    }

    fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> DraftResult<()> {
        convert(self.delete_keys(bucket.rep(), keys))
    }
}
