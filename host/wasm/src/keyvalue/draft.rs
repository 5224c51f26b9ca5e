//! `wasi:keyvalue@0.2.0-draft` (`wit/deps/keyvalue-0.2.0-draft/`): what
//! wasmtime's own key-value support and its test programs target. Its
//! `list-keys` cursor is a `u64`: a token for the last key of the page,
//! kept by the instance (see [`super::MAX_DRAFT_CURSORS`]).

use wasmtime::component::Resource;

use super::{CounterType, KeyValueError, KeyValueView, ManyValues};

/// Host-side type of a bucket: its representation is the index of the
/// namespace in the component's grants (nothing is allocated per handle).
pub struct Bucket;

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "wasi:keyvalue/imports@0.2.0-draft",
    imports: { default: trappable },
    with: {
        "wasi:keyvalue/store.bucket": Bucket,
    },
});

use self::wasi::keyvalue0_2_0_draft::{atomics, batch, store};

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
        cursor: Option<u64>,
    ) -> DraftResult<store::KeyResponse> {
        let bucket = bucket.rep();
        let after = match cursor {
            Some(token) => match self.load_cursor(bucket, token) {
                Ok(after) => Some(after),
                Err(err) => return Ok(Err(err.into())),
            },
            None => None,
        };
        let page = match self.list_page(bucket, after.as_deref())? {
            Ok(page) => page,
            Err(err) => return Ok(Err(err.into())),
        };
        let cursor = page.after.map(|after| self.save_cursor(bucket, after));
        Ok(Ok(store::KeyResponse {
            keys: page.keys,
            cursor,
        }))
    }

    fn drop(&mut self, _bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        // Nothing is allocated per handle.
        Ok(())
    }
}

impl atomics::Host for KeyValueView<'_> {
    fn increment(&mut self, bucket: Resource<Bucket>, key: String, delta: u64) -> DraftResult<u64> {
        let result =
            self.increment_counter(bucket.rep(), &key, i128::from(delta), CounterType::U64);
        convert(result.map(|r| r.map(|n| n as u64)))
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
