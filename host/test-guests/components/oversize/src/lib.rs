//! A guest that sends requests over the limits.
//!
//! - `value`: a value one byte over `max-value-bytes` (expects the typed error).
//! - `key`: a key one byte over `max-key-bytes`.
//! - `batch-ops`: one operation more than `max-batch-ops`.
//! - `batch-conditions`: one condition more than `max-batch-ops`.
//! - `batch-bytes`: operations whose keys and values add up to one byte over
//!   `max-batch-bytes`.
//! - `huge` (`u32 LE size`): a value of that many bytes, far over any legal
//!   request: the host must stop the call before copying it.
//! - `ping`: writes and reads a key.
//!
//! Each typed outcome is returned as its debug text.

wit_bindgen::generate!({
    path: ["../../../../wit", "../wit"],
    world: "hightower:test-guests/guest",
    generate_all,
});

use hightower::kv::store::{self, Condition, KeyValue, Namespace, Op};

struct Oversize;

impl Guest for Oversize {
    fn call(command: String, arg: Vec<u8>) -> Result<Vec<u8>, String> {
        let name = store::granted().remove(0);
        let ns = Namespace::open(&name).map_err(|e| format!("{e:?}"))?;
        let limits = ns.limits();
        let set = |key: Vec<u8>, value: Vec<u8>| Op::Set(KeyValue { key, value });
        let outcome = match command.as_str() {
            "ping" => {
                ns.set(b"ping", b"pong").map_err(|e| format!("{e:?}"))?;
                return Ok(ns
                    .get(b"ping")
                    .map_err(|e| format!("{e:?}"))?
                    .ok_or("absent")?
                    .value);
            }
            "value" => format!(
                "{:?}",
                ns.set(b"big", &vec![1; limits.max_value_bytes as usize + 1])
            ),
            "key" => format!(
                "{:?}",
                ns.set(&vec![b'k'; limits.max_key_bytes as usize + 1], b"v")
            ),
            "batch-ops" => {
                let ops: Vec<Op> = (0..=limits.max_batch_ops)
                    .map(|i| set(format!("op/{i}").into_bytes(), Vec::new()))
                    .collect();
                format!("{:?}", ns.batch(&[], &ops))
            }
            "batch-conditions" => {
                let conditions: Vec<Condition> = (0..=limits.max_batch_ops)
                    .map(|i| Condition::Absent(format!("c/{i}").into_bytes()))
                    .collect();
                format!("{:?}", ns.batch(&conditions, &[]))
            }
            "batch-bytes" => {
                // Values of at most max-value-bytes, keys of one byte.
                let mut left = limits.max_batch_bytes + 1;
                let mut ops = Vec::new();
                let mut i = 0u8;
                while left > 0 {
                    let value_len = (left - 1).min(u64::from(limits.max_value_bytes));
                    ops.push(set(vec![b'a' + i], vec![0; value_len as usize]));
                    left -= 1 + value_len;
                    i += 1;
                }
                format!("{:?}", ns.batch(&[], &ops))
            }
            "huge" => {
                let size = u32::from_le_bytes(arg[..4].try_into().unwrap()) as usize;
                format!("{:?}", ns.set(b"huge", &vec![2; size]))
            }
            other => return Err(format!("unknown command {other}")),
        };
        Ok(outcome.into_bytes())
    }
}

export!(Oversize);
