//! What both drafts' host functions share to the letter, written once.
//!
//! Each draft's `bindgen!` makes types and traits of its own (the component
//! model treats the two prereleases as unrelated packages), so the shared
//! part cannot be one impl; this macro writes it into each draft's module,
//! against that draft's `store`, `batch`, `Bucket` and `DraftResult`:
//!
//! - `store::Error` from a [`super::KeyValueError`], and `convert`;
//! - `store.open`, and a bucket's `get`, `set`, `delete`, `exists`, `drop`;
//! - all of `batch`.
//!
//! What differs stays in the draft's own module, written out: the
//! `list-keys` cursor (`$cursor`; the module's `list_keys` function answers
//! the call), `increment`'s integer type, and the second draft's `cas`.

macro_rules! shared_draft_host {
    (list_keys cursor: $cursor:ty) => {
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
            fn get(
                &mut self,
                bucket: Resource<Bucket>,
                key: String,
            ) -> DraftResult<Option<Vec<u8>>> {
                convert(self.get_value(bucket.rep(), &key))
            }

            fn set(
                &mut self,
                bucket: Resource<Bucket>,
                key: String,
                value: Vec<u8>,
            ) -> DraftResult<()> {
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
                cursor: Option<$cursor>,
            ) -> DraftResult<store::KeyResponse> {
                list_keys(self, bucket.rep(), cursor)
            }

            fn drop(&mut self, _bucket: Resource<Bucket>) -> wasmtime::Result<()> {
                // Nothing is allocated per handle.
                Ok(())
            }
        }

        impl batch::Host for KeyValueView<'_> {
            fn get_many(
                &mut self,
                bucket: Resource<Bucket>,
                keys: Vec<String>,
            ) -> DraftResult<ManyValues> {
                convert(self.read_many(bucket.rep(), keys))
            }

            fn set_many(
                &mut self,
                bucket: Resource<Bucket>,
                key_values: Vec<(String, Vec<u8>)>,
            ) -> DraftResult<()> {
                convert(self.write_many(bucket.rep(), key_values))
            }

            fn delete_many(
                &mut self,
                bucket: Resource<Bucket>,
                keys: Vec<String>,
            ) -> DraftResult<()> {
                convert(self.delete_keys(bucket.rep(), keys))
            }
        }
    };
}
