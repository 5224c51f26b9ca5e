//! A guest that uses every function of `hightower:kv/store` as documented.
//!
//! Commands (`arg` encodings in parentheses):
//! - `ping`: `pong`, without calling the host.
//! - `exercise`: runs every function with its edge cases in the first granted
//!   namespace, which must start empty; `Err` names the first surprise.
//! - `set` (`u32 LE key length, key, value`): the new version, decimal.
//! - `get` (key): the value; `Err("absent")` if there is none.
//! - `list` (prefix): every key under the prefix, one per line.
//! - `claim` (`u32 LE key length, key, value`): sets the key only if it is
//!   absent, atomically; `won` or `lost`.
//! - `get-loop` (`u32 LE iterations, key`): gets the key that many times;
//!   returns how many were hits, decimal. For benchmarks.
//! - `batch-loop` (`u32 LE iterations, key`): that many compare-and-set
//!   batches on the key; returns the last version. For benchmarks.

wit_bindgen::generate!({
    path: ["../../../../wit", "../wit"],
    world: "hightower:test-guests/guest",
    generate_all,
    additional_derives: [PartialEq, Eq],
});

use hightower::kv::store::{
    self, Condition, Entry, Error, KeyPage, KeyValue, KeyVersion, Namespace, Op,
};

struct WellBehaved;

impl Guest for WellBehaved {
    fn call(command: String, arg: Vec<u8>) -> Result<Vec<u8>, String> {
        // Before any host call: the benchmarks time an empty call with it.
        if command == "ping" {
            return Ok(b"pong".to_vec());
        }
        let ns = open_first()?;
        match command.as_str() {
            "exercise" => exercise(&ns).map(|()| b"ok".to_vec()),
            "set" => {
                let (key, value) = split(&arg)?;
                let version = ns.set(key, value).map_err(|e| format!("{e:?}"))?;
                Ok(version.to_string().into_bytes())
            }
            "claim" => {
                let (key, value) = split(&arg)?;
                match ns.batch(
                    &[Condition::Absent(key.to_vec())],
                    &[Op::Set(KeyValue {
                        key: key.to_vec(),
                        value: value.to_vec(),
                    })],
                ) {
                    Ok(_) => Ok(b"won".to_vec()),
                    Err(Error::ConditionFailed(_)) => Ok(b"lost".to_vec()),
                    Err(e) => Err(format!("{e:?}")),
                }
            }
            "get" => match ns.get(&arg).map_err(|e| format!("{e:?}"))? {
                Some(entry) => Ok(entry.value),
                None => Err("absent".into()),
            },
            "list" => {
                let mut out = Vec::new();
                for key in list_all(&ns, &arg, 0)? {
                    out.extend_from_slice(&key);
                    out.push(b'\n');
                }
                Ok(out)
            }
            "get-loop" => {
                let (iterations, key) = split_u32(&arg)?;
                let mut hits = 0u32;
                for _ in 0..iterations {
                    if ns.get(key).map_err(|e| format!("{e:?}"))?.is_some() {
                        hits += 1;
                    }
                }
                Ok(hits.to_string().into_bytes())
            }
            "batch-loop" => {
                let (iterations, key) = split_u32(&arg)?;
                let mut version = match ns.get(key).map_err(|e| format!("{e:?}"))? {
                    Some(entry) => entry.version,
                    None => ns.set(key, b"0").map_err(|e| format!("{e:?}"))?,
                };
                for _ in 0..iterations {
                    version = ns
                        .batch(
                            &[Condition::VersionIs(KeyVersion {
                                key: key.to_vec(),
                                version,
                            })],
                            &[Op::Set(KeyValue {
                                key: key.to_vec(),
                                value: vec![7; 100],
                            })],
                        )
                        .map_err(|e| format!("{e:?}"))?
                        .ok_or("the batch wrote nothing")?;
                }
                Ok(version.to_string().into_bytes())
            }
            other => Err(format!("unknown command {other}")),
        }
    }
}

export!(WellBehaved);

fn open_first() -> Result<Namespace, String> {
    let name = store::granted()
        .into_iter()
        .next()
        .ok_or("no namespace granted")?;
    Namespace::open(&name).map_err(|e| format!("open {name}: {e:?}"))
}

fn split(arg: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let (len, rest) = split_u32(arg)?;
    let len = len as usize;
    if rest.len() < len {
        return Err("key length past the end".into());
    }
    Ok(rest.split_at(len))
}

fn split_u32(arg: &[u8]) -> Result<(u32, &[u8]), String> {
    let (head, rest) = arg.split_at_checked(4).ok_or("argument too short")?;
    Ok((u32::from_le_bytes(head.try_into().unwrap()), rest))
}

fn list_all(ns: &Namespace, prefix: &[u8], page_size: u32) -> Result<Vec<Vec<u8>>, String> {
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let KeyPage {
            keys: page,
            next_cursor,
        } = ns
            .list_keys(prefix, cursor.as_deref(), page_size)
            .map_err(|e| format!("list-keys: {e:?}"))?;
        keys.extend(page);
        match next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(keys),
        }
    }
}

macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn exercise(ns: &Namespace) -> Result<(), String> {
    let e = |e: Error| format!("{e:?}");
    let granted = store::granted();
    check!(ns.name() == granted[0], "name() is {}", ns.name());
    let limits = ns.limits();
    check!(limits.max_page_keys > 0, "limits: {limits:?}");

    // Empty namespace.
    check!(ns.get(b"a").map_err(e)?.is_none(), "a present at start");
    check!(!ns.exists(b"a").map_err(e)?, "a exists at start");
    check!(
        ns.delete(b"a").map_err(e)?.is_none(),
        "deleting absent a wrote"
    );

    // set / get / exists / overwrite.
    let v1 = ns.set(b"a", b"one").map_err(e)?;
    check!(v1 > 0, "version 0");
    let got = ns.get(b"a").map_err(e)?;
    check!(
        got == Some(Entry {
            value: b"one".to_vec(),
            version: v1
        }),
        "get a: {got:?}"
    );
    check!(ns.exists(b"a").map_err(e)?, "a missing");
    let v2 = ns.set(b"a", b"two").map_err(e)?;
    check!(v2 > v1, "versions do not grow: {v1} then {v2}");
    let empty = ns.set(b"empty", b"").map_err(e)?;
    check!(
        ns.get(b"empty").map_err(e)?
            == Some(Entry {
                value: vec![],
                version: empty
            }),
        "empty value"
    );
    let binary_key = [0u8, 0xff, b'/', 0xfe];
    ns.set(&binary_key, &[1, 2, 3]).map_err(e)?;
    check!(
        ns.get(&binary_key).map_err(e)?.map(|x| x.value) == Some(vec![1, 2, 3]),
        "binary key"
    );

    // delete.
    let deleted = ns.delete(b"empty").map_err(e)?;
    check!(deleted.is_some_and(|v| v > empty), "delete: {deleted:?}");
    check!(!ns.exists(b"empty").map_err(e)?, "empty still there");

    // list-keys with paging.
    for i in 0..25u32 {
        ns.set(format!("list/{i:02}").as_bytes(), b"x").map_err(e)?;
    }
    let all = list_all(ns, b"list/", 10)?;
    let expected: Vec<Vec<u8>> = (0..25u32)
        .map(|i| format!("list/{i:02}").into_bytes())
        .collect();
    check!(all == expected, "paged listing: {} keys", all.len());
    let page = ns.list_keys(b"list/", None, 25).map_err(e)?;
    check!(
        page.keys.len() == 25 && page.next_cursor.is_none(),
        "exact page: {} keys, cursor {:?}",
        page.keys.len(),
        page.next_cursor
    );
    let page = ns.list_keys(b"list/", Some(b"list/23"), 10).map_err(e)?;
    check!(
        page.keys == vec![b"list/24".to_vec()] && page.next_cursor.is_none(),
        "after cursor: {page:?}"
    );
    let everything = list_all(ns, b"", 0)?;
    check!(
        everything.len() == 27 && everything[0] == binary_key && everything[1] == b"a",
        "whole namespace: {everything:?}"
    );
    check!(
        ns.list_keys(b"nothing/", None, 5)
            .map_err(e)?
            .keys
            .is_empty(),
        "empty prefix listing"
    );

    // Conditional batches: a unique index kept correct.
    let user = ns
        .batch(
            &[Condition::Absent(b"idx/alice".to_vec())],
            &[
                Op::Set(KeyValue {
                    key: b"user/1".to_vec(),
                    value: b"alice".to_vec(),
                }),
                Op::Set(KeyValue {
                    key: b"idx/alice".to_vec(),
                    value: b"1".to_vec(),
                }),
            ],
        )
        .map_err(e)?;
    let user = user.ok_or("batch wrote nothing")?;
    check!(
        ns.get(b"idx/alice").map_err(e)?.map(|x| x.version) == Some(user),
        "last version of the batch"
    );
    check!(
        ns.get(b"user/1").map_err(e)?.map(|x| x.version) == Some(user - 1),
        "consecutive versions"
    );
    let taken = ns.batch(
        &[Condition::Absent(b"idx/alice".to_vec())],
        &[
            Op::Set(KeyValue {
                key: b"user/2".to_vec(),
                value: b"alice".to_vec(),
            }),
            Op::Set(KeyValue {
                key: b"idx/alice".to_vec(),
                value: b"2".to_vec(),
            }),
        ],
    );
    check!(
        matches!(&taken, Err(Error::ConditionFailed(key)) if key == b"idx/alice"),
        "duplicate insert: {taken:?}"
    );
    check!(
        !ns.exists(b"user/2").map_err(e)?,
        "a failed batch wrote user/2"
    );

    // Compare-and-set on a version, then a stale version.
    let current = ns.get(b"a").map_err(e)?.ok_or("a vanished")?.version;
    let cas = ns
        .batch(
            &[Condition::VersionIs(KeyVersion {
                key: b"a".to_vec(),
                version: current,
            })],
            &[Op::Set(KeyValue {
                key: b"a".to_vec(),
                value: b"three".to_vec(),
            })],
        )
        .map_err(e)?;
    check!(cas.is_some_and(|v| v > current), "cas: {cas:?}");
    let stale = ns.batch(
        &[Condition::VersionIs(KeyVersion {
            key: b"a".to_vec(),
            version: current,
        })],
        &[Op::Delete(b"a".to_vec())],
    );
    check!(
        matches!(&stale, Err(Error::ConditionFailed(key)) if key == b"a"),
        "stale cas: {stale:?}"
    );
    check!(
        ns.get(b"a").map_err(e)?.map(|x| x.value) == Some(b"three".to_vec()),
        "stale cas wrote"
    );
    // Empty batch, and deletes of absent keys, write nothing.
    check!(ns.batch(&[], &[]).map_err(e)?.is_none(), "empty batch");
    check!(
        ns.batch(&[], &[Op::Delete(b"never".to_vec())])
            .map_err(e)?
            .is_none(),
        "delete of an absent key in a batch"
    );
    // A later op on the same key wins.
    ns.batch(
        &[],
        &[
            Op::Set(KeyValue {
                key: b"twice".to_vec(),
                value: b"1".to_vec(),
            }),
            Op::Delete(b"twice".to_vec()),
            Op::Set(KeyValue {
                key: b"twice".to_vec(),
                value: b"2".to_vec(),
            }),
        ],
    )
    .map_err(e)?;
    check!(
        ns.get(b"twice").map_err(e)?.map(|x| x.value) == Some(b"2".to_vec()),
        "last op wins"
    );

    // Errors the guest can act on.
    check!(
        matches!(ns.get(b""), Err(Error::InvalidKey(_))),
        "empty key accepted"
    );
    let too_long = vec![b'k'; limits.max_key_bytes as usize + 1];
    check!(
        matches!(ns.set(&too_long, b"v"), Err(Error::KeyTooLarge(l)) if l == limits.max_key_bytes),
        "long key"
    );
    let longest = vec![b'k'; limits.max_key_bytes as usize];
    ns.set(&longest, b"v").map_err(e)?;
    check!(ns.delete(&longest).map_err(e)?.is_some(), "longest key");
    check!(
        matches!(Namespace::open("not-granted/"), Err(Error::AccessDenied)),
        "open of an ungranted namespace"
    );
    Ok(())
}
