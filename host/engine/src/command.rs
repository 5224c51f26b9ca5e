//! The commands a replicated log would carry: set, delete and a conditional batch.
//!
//! A command is plain data (serde), validated against the configured limits
//! before it reaches the log. Applying it is [`crate::state::KvState`]'s job.

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::InputError;
use crate::log_segment::RECORD_HEADER_LEN;

/// One write to the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Stores `value` under `key`.
    Set {
        /// The key, 1 to `max_key_bytes` bytes.
        key: Vec<u8>,
        /// The value, up to `max_value_bytes` bytes (empty is allowed).
        value: Vec<u8>,
    },
    /// Removes `key` (writes a tombstone if it had a value, nothing otherwise).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// All operations apply, in order, or none do: if any condition fails
    /// nothing is written. A later operation on the same key wins.
    Batch {
        /// Checked together, against the state just before the batch.
        conditions: Vec<Condition>,
        /// Applied in order if every condition holds.
        ops: Vec<Op>,
    },
}

/// One operation of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Stores `value` under `key`.
    Set {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

/// A guard evaluated against the state just before the batch applies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// The key holds no value.
    Absent {
        /// The key.
        key: Vec<u8>,
    },
    /// The key holds a value written at exactly this version.
    VersionIs {
        /// The key.
        key: Vec<u8>,
        /// The version its value must have.
        version: u64,
    },
}

impl Condition {
    /// The key the condition is about.
    pub fn key(&self) -> &[u8] {
        match self {
            Condition::Absent { key } | Condition::VersionIs { key, .. } => key,
        }
    }

    /// Does a key currently at `version` (None: absent) satisfy this guard?
    pub fn holds(&self, version: Option<u64>) -> bool {
        match self {
            Condition::Absent { .. } => version.is_none(),
            Condition::VersionIs {
                version: wanted, ..
            } => version == Some(*wanted),
        }
    }
}

impl Op {
    /// The key the operation writes.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Set { key, .. } | Op::Delete { key } => key,
        }
    }

    /// The value written, or `None` for a delete.
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            Op::Set { value, .. } => Some(value),
            Op::Delete { .. } => None,
        }
    }

    /// Bytes this op takes in the log.
    pub fn encoded_len(&self) -> u64 {
        (RECORD_HEADER_LEN + self.key().len() + self.value().map_or(0, <[u8]>::len)) as u64
    }
}

impl Command {
    /// Upper bound of the bytes this command appends.
    pub fn encoded_len(&self) -> u64 {
        match self {
            Command::Set { key, value } => (RECORD_HEADER_LEN + key.len() + value.len()) as u64,
            Command::Delete { key } => (RECORD_HEADER_LEN + key.len()) as u64,
            Command::Batch { ops, .. } => ops.iter().map(Op::encoded_len).sum(),
        }
    }

    /// Checks keys, values and batch sizes against the limits. Changes nothing.
    pub fn validate(&self, limits: &Limits) -> Result<(), InputError> {
        match self {
            Command::Set { key, value } => {
                limits.check_key(key)?;
                limits.check_value(value)
            }
            Command::Delete { key } => limits.check_key(key),
            Command::Batch { conditions, ops } => {
                if ops.len() > limits.max_batch_ops {
                    return Err(InputError::BatchTooManyOps {
                        ops: ops.len(),
                        max: limits.max_batch_ops,
                    });
                }
                if conditions.len() > limits.max_batch_ops {
                    return Err(InputError::TooManyConditions {
                        conditions: conditions.len(),
                        max: limits.max_batch_ops,
                    });
                }
                for condition in conditions {
                    limits.check_key(condition.key())?;
                }
                for op in ops {
                    limits.check_key(op.key())?;
                    if let Some(value) = op.value() {
                        limits.check_value(value)?;
                    }
                }
                let bytes = self.encoded_len();
                if bytes > limits.max_batch_bytes {
                    return Err(InputError::BatchTooLarge {
                        bytes,
                        max: limits.max_batch_bytes,
                    });
                }
                Ok(())
            }
        }
    }
}

/// The input limits of [`Config`], copied out for the hot path.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest key.
    pub max_key_bytes: usize,
    /// Largest value.
    pub max_value_bytes: usize,
    /// Most operations, and most conditions, in a batch.
    pub max_batch_ops: usize,
    /// Largest encoded batch.
    pub max_batch_bytes: u64,
}

impl Limits {
    /// The limits `config` sets.
    pub fn from_config(config: &Config) -> Self {
        Limits {
            max_key_bytes: config.max_key_bytes as usize,
            max_value_bytes: config.max_value_bytes as usize,
            max_batch_ops: config.max_batch_ops as usize,
            max_batch_bytes: config.max_batch_bytes,
        }
    }

    /// Refuses an empty or oversized key.
    pub fn check_key(&self, key: &[u8]) -> Result<(), InputError> {
        if key.is_empty() {
            return Err(InputError::EmptyKey);
        }
        if key.len() > self.max_key_bytes {
            return Err(InputError::KeyTooLarge {
                len: key.len(),
                max: self.max_key_bytes,
            });
        }
        Ok(())
    }

    /// Refuses an oversized value (an empty one is fine).
    pub fn check_value(&self, value: &[u8]) -> Result<(), InputError> {
        if value.len() > self.max_value_bytes {
            return Err(InputError::ValueTooLarge {
                len: value.len(),
                max: self.max_value_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_key_bytes: 8,
            max_value_bytes: 16,
            max_batch_ops: 2,
            max_batch_bytes: 200,
        }
    }

    #[test]
    fn rejects_empty_and_oversized_keys_and_values() {
        let l = limits();
        let set = |k: &[u8], v: &[u8]| {
            Command::Set {
                key: k.to_vec(),
                value: v.to_vec(),
            }
            .validate(&l)
        };
        assert_eq!(set(b"", b"v"), Err(InputError::EmptyKey));
        assert_eq!(
            set(b"123456789", b"v"),
            Err(InputError::KeyTooLarge { len: 9, max: 8 })
        );
        assert_eq!(
            set(b"k", &[0; 17]),
            Err(InputError::ValueTooLarge { len: 17, max: 16 })
        );
        assert_eq!(set(b"12345678", &[0; 16]), Ok(()));
        assert_eq!(
            Command::Delete { key: vec![] }.validate(&l),
            Err(InputError::EmptyKey)
        );
    }

    #[test]
    fn rejects_oversized_batches() {
        let l = limits();
        let op = |k: &[u8]| Op::Set {
            key: k.to_vec(),
            value: vec![1; 16],
        };
        let three = Command::Batch {
            conditions: vec![],
            ops: vec![op(b"a"), op(b"b"), op(b"c")],
        };
        assert_eq!(
            three.validate(&l),
            Err(InputError::BatchTooManyOps { ops: 3, max: 2 })
        );
        let big = Command::Batch {
            conditions: vec![],
            ops: vec![op(b"aaaaaaaa"), op(b"bbbbbbbb")],
        };
        assert_eq!(big.validate(&l), Ok(()));
        let tight = Limits {
            max_batch_bytes: 100,
            ..l
        };
        assert!(matches!(
            big.validate(&tight),
            Err(InputError::BatchTooLarge {
                bytes: 104,
                max: 100
            })
        ));
        let bad_condition = Command::Batch {
            conditions: vec![Condition::Absent { key: vec![] }],
            ops: vec![],
        };
        assert_eq!(bad_condition.validate(&l), Err(InputError::EmptyKey));
    }

    #[test]
    fn conditions_hold_on_the_right_versions() {
        let absent = Condition::Absent { key: b"k".to_vec() };
        assert!(absent.holds(None));
        assert!(!absent.holds(Some(3)));
        let at3 = Condition::VersionIs {
            key: b"k".to_vec(),
            version: 3,
        };
        assert!(at3.holds(Some(3)));
        assert!(!at3.holds(Some(4)));
        assert!(!at3.holds(None));
    }

    #[test]
    fn commands_round_trip_through_serde() {
        let cmd = Command::Batch {
            conditions: vec![Condition::VersionIs {
                key: b"a".to_vec(),
                version: 7,
            }],
            ops: vec![
                Op::Set {
                    key: b"a".to_vec(),
                    value: b"\x00\xff".to_vec(),
                },
                Op::Delete { key: b"b".to_vec() },
            ],
        };
        let json = serde_json::to_string(&cmd).unwrap();
        assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), cmd);
    }
}
