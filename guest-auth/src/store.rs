//! The slice of `hightower:kv/store` the service uses, as a trait, so the
//! service runs on the real store inside the component and on an in-memory
//! one in the native tests.

/// A stored value with its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    pub version: u64,
}

#[derive(Clone, Debug)]
pub enum Condition {
    Absent(Vec<u8>),
    VersionIs(Vec<u8>, u64),
}

#[derive(Clone, Debug)]
pub enum Op {
    Set(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// A batch condition failed for this key; nothing was written.
    ConditionFailed(Vec<u8>),
    Other(String),
}

/// The slice of `hightower:kv/store` the service uses (keys are relative to
/// the `auth/` namespace).
pub trait KvStore {
    fn get(&self, key: &[u8]) -> Result<Option<Entry>, StoreError>;
    /// Keys under `prefix` after `cursor`, at most `page` of them, and the
    /// cursor of the next page.
    #[allow(clippy::type_complexity)]
    fn list_keys(
        &self,
        prefix: &[u8],
        cursor: Option<&[u8]>,
        page: u32,
    ) -> Result<(Vec<Vec<u8>>, Option<Vec<u8>>), StoreError>;
    /// Atomic: all of `ops` if every condition holds, else nothing.
    fn batch(&self, conditions: &[Condition], ops: &[Op]) -> Result<(), StoreError>;
}
