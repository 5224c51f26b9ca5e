//! A command that exercises every function of `wasi:keyvalue` in both drafts
//! the host implements, `@0.2.0-draft` and `@0.2.0-draft2`, checking every
//! result. A failed check panics: the run stops (`hightower run` exits 6)
//! and the message names the check.
//!
//! Usage (`hightower run keyvalue-suite.wasm --namespace app/ ...`):
//! - `draft` | `draft2`: every function of that draft in the default bucket,
//!   which must start empty, with a store configured with `[wasm]`
//!   `max_page_keys = 4` and `max_batch_ops = 16`. Prints one line per
//!   interface; leaves the keys `kept/<draft>/...` behind for the caller to
//!   check natively.
//! - `open ID...`: opens each bucket with both drafts (they must agree) and
//!   prints `ID: <value of its key "whoami">` (`-` if absent) or
//!   `ID: access-denied`.
//! - `count DRAFT KEY N`: adds 1 to KEY N times with `increment`, silently.
//! - `cas-count KEY N`: adds 1 to KEY N times with `cas`/`swap` (retrying on
//!   `cas-failed`), silently.
//! - `cas-hoard`: opens `cas` handles without dropping them until `new`
//!   fails; prints how many and the error.

wit_bindgen::generate!({
    path: ["../../../../wit", "../wit"],
    world: "hightower:test-guests/keyvalue-suite",
    generate_all,
    additional_derives: [PartialEq],
    // It holds a `cas` handle, which has no equality.
    additional_derives_ignore: ["cas-error"],
});

use std::collections::BTreeMap;

use wasi::keyvalue0_2_0_draft as d1;
use wasi::keyvalue0_2_0_draft2 as d2;

/// Panics with the check's description when `cond` is false.
macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            panic!("check failed: {}", format!($($msg)+));
        }
    };
}

/// Asserts `result` is `Err(Error::Other(message))` with `needle` in the message.
macro_rules! check_other {
    ($m:ident, $result:expr, $needle:expr) => {
        match $result {
            Err($m::store::Error::Other(message)) => check!(
                message.contains($needle),
                "{}: message {message:?} lacks {:?}",
                stringify!($result),
                $needle
            ),
            other => panic!(
                "check failed: {}: expected other(..{}..), got {other:?}",
                stringify!($result),
                $needle
            ),
        }
    };
}

/// The checks both drafts share: `store`, `batch` and access. `$m` is the
/// draft's module, `$cursor_arg` passes a list cursor back.
macro_rules! store_and_batch {
    ($m:ident, $label:literal, $cursor_arg:path) => {{
        use $m::batch;
        use $m::store::{self, Error};

        let b = store::open("").expect("open \"\"");
        let d = store::open("default").expect("open \"default\"");

        // get, exists, set, delete.
        check!(b.get("k") == Ok(None), "get of a missing key");
        check!(b.exists("k") == Ok(false), "exists of a missing key");
        b.set("k", b"v1").expect("set");
        check!(
            d.get("k") == Ok(Some(b"v1".to_vec())),
            "\"\" and \"default\" are one bucket"
        );
        check!(b.exists("k") == Ok(true), "exists after set");
        b.set("k", b"v2").expect("overwrite");
        check!(
            b.get("k") == Ok(Some(b"v2".to_vec())),
            "get after overwrite"
        );
        b.delete("k").expect("delete");
        check!(b.get("k") == Ok(None), "get after delete");
        check!(b.exists("k") == Ok(false), "exists after delete");
        b.delete("k").expect("delete of an absent key is ok");
        b.set("bin", &[0, 255, 10]).expect("set binary");
        check!(b.get("bin") == Ok(Some(vec![0, 255, 10])), "binary value");
        b.set("empty-value", b"").expect("set empty value");
        check!(b.get("empty-value") == Ok(Some(Vec::new())), "empty value");
        b.delete("empty-value").unwrap();
        b.delete("bin").unwrap();

        // Bad keys and values are errors that say why.
        check_other!($m, b.get(""), "empty");
        check_other!($m, b.set("", b"x"), "empty");
        check_other!($m, b.exists(""), "empty");
        check_other!($m, b.delete(""), "empty");
        check_other!($m, b.set(&"k".repeat(5000), b"x"), "key too large");
        check_other!(
            $m,
            b.set("big", &vec![7u8; (1 << 20) + 1]),
            "value too large"
        );
        check!(
            b.exists("big") == Ok(false),
            "an oversized value wrote nothing"
        );

        // Access: only granted buckets open.
        for denied in ["not-granted", "app/x", "..", "/"] {
            check!(
                matches!(store::open(denied), Err(Error::AccessDenied)),
                "open({denied:?}) must be access-denied"
            );
        }
        println!("{} store: ok", $label);

        // batch: get-many keeps the order and says none for absent keys.
        let pairs = |items: &[(&str, &str)]| -> Vec<(String, Vec<u8>)> {
            items
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect()
        };
        let names =
            |items: &[&str]| -> Vec<String> { items.iter().map(|k| k.to_string()).collect() };
        batch::set_many(
            &b,
            &pairs(&[("m1", "1"), ("m2", "2"), ("m3", "3"), ("m1", "one")]),
        )
        .expect("set-many");
        check!(
            batch::get_many(&b, &names(&["m1", "nope", "m3"]))
                == Ok(vec![
                    Some(("m1".to_string(), b"one".to_vec())),
                    None,
                    Some(("m3".to_string(), b"3".to_vec())),
                ]),
            "get-many (a later pair of set-many wins)"
        );
        check!(
            batch::get_many(&b, &[]) == Ok(Vec::new()),
            "get-many of nothing"
        );
        batch::delete_many(&b, &names(&["m1", "m3", "nope"])).expect("delete-many");
        check!(
            batch::get_many(&b, &names(&["m1", "m2", "m3"]))
                == Ok(vec![None, Some(("m2".to_string(), b"2".to_vec())), None]),
            "delete-many removed exactly its keys"
        );
        batch::set_many(&b, &[]).expect("set-many of nothing");
        batch::delete_many(&b, &[]).expect("delete-many of nothing");
        // Atomic here: one bad key, and nothing of the batch is written.
        check_other!(
            $m,
            batch::set_many(&b, &pairs(&[("a1", "x"), ("", "y")])),
            "empty"
        );
        check!(
            b.exists("a1") == Ok(false),
            "a failed set-many wrote nothing"
        );
        check_other!($m, batch::delete_many(&b, &names(&["m2", ""])), "empty");
        check!(
            b.exists("m2") == Ok(true),
            "a failed delete-many deleted nothing"
        );
        // Over max_batch_ops = 16.
        let many: Vec<String> = (0..17).map(|i| format!("many{i}")).collect();
        let many_pairs: Vec<(String, Vec<u8>)> =
            many.iter().map(|k| (k.clone(), b"v".to_vec())).collect();
        check_other!($m, batch::set_many(&b, &many_pairs), "batch too large");
        check_other!($m, batch::get_many(&b, &many), "batch too large");
        check_other!($m, batch::delete_many(&b, &many), "batch too large");
        check!(
            b.exists("many0") == Ok(false),
            "an oversized set-many wrote nothing"
        );
        batch::set_many(&b, &many_pairs[..16]).expect("set-many of 16");
        batch::delete_many(&b, &many[..16]).expect("delete-many of 16");
        b.delete("m2").unwrap();
        println!("{} batch: ok", $label);

        // list-keys: pages of max_page_keys = 4, a cursor stable across them.
        for i in 0..10 {
            b.set(&format!("list/{i:02}"), b"x").unwrap();
        }
        b.set("a", b"x").unwrap();
        let mut seen: Vec<String> = Vec::new();
        let mut pages = 0;
        let mut cursor = None;
        loop {
            let page = b
                .list_keys(cursor.as_ref().map(|c| $cursor_arg(c)))
                .expect("list-keys");
            pages += 1;
            check!(
                page.keys.len() <= 4,
                "a page has at most max_page_keys keys"
            );
            seen.extend(page.keys);
            if pages == 1 {
                // Between pages: a listed key goes, two keys come (one before
                // the cursor, one after).
                b.delete("list/00").unwrap();
                b.set("0-new", b"x").unwrap();
                b.set("list/10", b"x").unwrap();
            }
            cursor = page.cursor;
            if cursor.is_none() {
                break;
            }
            check!(pages < 100, "list-keys never ends");
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for key in &seen {
            *counts.entry(key.as_str()).or_default() += 1;
        }
        check!(
            counts.values().all(|&n| n == 1),
            "a key listed twice: {seen:?}"
        );
        for i in 1..10 {
            let key = format!("list/{i:02}");
            check!(
                counts.contains_key(key.as_str()),
                "{key} present throughout but not listed: {seen:?}"
            );
        }
        check!(counts.contains_key("a"), "a not listed: {seen:?}");
        check!(
            seen.iter()
                .all(|k| k == "a" || k == "0-new" || k.starts_with("list/")),
            "foreign keys listed: {seen:?}"
        );
        println!("{} list-keys: {} keys in {pages} pages", $label, seen.len());
        b.delete("0-new").unwrap();
        b.delete("a").unwrap();
        let all: Vec<String> = (0..=10).map(|i| format!("list/{i:02}")).collect();
        batch::delete_many(&b, &all).unwrap();
        let left = b.list_keys(None).expect("list-keys");
        check!(
            left.keys.is_empty() && left.cursor.is_none(),
            "empty bucket lists nothing: {:?}",
            left.keys
        );
        b
    }};
}

fn draft() {
    use d1::atomics::increment;
    use d1::store::Error;

    let b = store_and_batch!(d1, "draft", u64::clone);
    check_other!(d1, b.list_keys(Some(u64::MAX)), "invalid cursor");
    // This draft's cursors are tokens kept by the instance: the 16 newest.
    for i in 0..5 {
        b.set(&format!("c{i}"), b"x").unwrap();
    }
    let oldest = b.list_keys(None).unwrap().cursor.expect("a second page");
    let mut newest = oldest;
    for _ in 0..16 {
        newest = b.list_keys(None).unwrap().cursor.expect("a second page");
    }
    check_other!(d1, b.list_keys(Some(oldest)), "expired");
    check!(
        b.list_keys(Some(newest)).map(|page| page.keys) == Ok(vec!["c4".to_string()]),
        "the newest cursor still works"
    );
    for i in 0..5 {
        b.delete(&format!("c{i}")).unwrap();
    }

    // increment: a missing key starts at 0; the counter is ASCII decimal.
    check!(
        increment(&b, "hits", 5) == Ok(5),
        "increment of a missing key"
    );
    check!(increment(&b, "hits", 3) == Ok(8), "increment");
    check!(
        b.get("hits") == Ok(Some(b"8".to_vec())),
        "the counter is stored as \"8\""
    );
    check!(
        increment(&b, "zero", 0) == Ok(0),
        "increment by 0 creates the key"
    );
    b.set("word", b"abc").unwrap();
    check_other!(d1, increment(&b, "word", 1), "not a number");
    check!(
        b.get("word") == Ok(Some(b"abc".to_vec())),
        "a failed increment wrote nothing"
    );
    b.set("negative", b"-1").unwrap();
    check_other!(d1, increment(&b, "negative", 1), "not a number");
    b.set("max", u64::MAX.to_string().as_bytes()).unwrap();
    check_other!(d1, increment(&b, "max", 1), "out of range");
    check_other!(d1, increment(&b, "", 1), "empty");
    check!(
        !matches!(increment(&b, "max", 0), Err(Error::AccessDenied)),
        "no denial"
    );
    println!("draft atomics: ok");

    for key in ["hits", "zero", "word", "negative", "max"] {
        b.delete(key).unwrap();
    }
    b.set("kept/draft/value", b"written by draft").unwrap();
    increment(&b, "kept/draft/counter", 41).unwrap();
    increment(&b, "kept/draft/counter", 1).unwrap();
}

fn draft2() {
    use d2::atomics::{Cas, CasError, increment, swap};
    use d2::store::Error;

    let b = store_and_batch!(d2, "draft2", String::as_str);
    check_other!(d2, b.list_keys(Some("zz")), "invalid cursor");

    // increment is signed here.
    check!(
        increment(&b, "n", -3) == Ok(-3),
        "increment of a missing key"
    );
    check!(increment(&b, "n", 10) == Ok(7), "increment");
    check!(
        b.get("n") == Ok(Some(b"7".to_vec())),
        "the counter is stored as \"7\""
    );
    check!(increment(&b, "n", -10) == Ok(-3), "below zero");
    check!(b.get("n") == Ok(Some(b"-3".to_vec())), "stored as \"-3\"");
    b.set("word", b"12 apples").unwrap();
    check_other!(d2, increment(&b, "word", 1), "not a number");
    check!(
        b.get("word") == Ok(Some(b"12 apples".to_vec())),
        "a failed increment wrote nothing"
    );
    b.set("max", i64::MAX.to_string().as_bytes()).unwrap();
    check_other!(d2, increment(&b, "max", 1), "out of range");
    check!(
        increment(&b, "max", -1) == Ok(i64::MAX - 1),
        "increment near the top"
    );

    // cas on a missing key creates it.
    let c = Cas::new(&b, "cas").expect("cas new");
    check!(c.current() == Ok(None), "current of a missing key");
    check!(swap(c, b"v1").is_ok(), "swap on a missing key");
    check!(b.get("cas") == Ok(Some(b"v1".to_vec())), "swap wrote");

    // Two handles on one key: the second swap fails with cas-failed, whose
    // handle has seen the winner's write and can retry.
    let c1 = Cas::new(&b, "cas").unwrap();
    let c2 = Cas::new(&b, "cas").unwrap();
    check!(c1.current() == Ok(Some(b"v1".to_vec())), "c1 current");
    check!(c2.current() == Ok(Some(b"v1".to_vec())), "c2 current");
    check!(swap(c1, b"v2").is_ok(), "the first swap wins");
    let c3 = match swap(c2, b"v3") {
        Err(CasError::CasFailed(c3)) => c3,
        other => panic!("check failed: the second swap: expected cas-failed, got {other:?}"),
    };
    check!(
        b.get("cas") == Ok(Some(b"v2".to_vec())),
        "the failed swap wrote nothing"
    );
    check!(
        c3.current() == Ok(Some(b"v2".to_vec())),
        "cas-failed's handle sees the latest value"
    );
    check!(swap(c3, b"v3").is_ok(), "the retry wins");
    check!(b.get("cas") == Ok(Some(b"v3".to_vec())), "the retry wrote");

    // A blind swap (no current) conflicts with any write since `new`...
    let c = Cas::new(&b, "cas").unwrap();
    b.set("cas", b"other").unwrap();
    match swap(c, b"lost") {
        Err(CasError::CasFailed(again)) => {
            // ...and the returned handle expects the latest version.
            check!(swap(again, b"after").is_ok(), "swap on the returned handle");
        }
        other => panic!("check failed: swap after a write: expected cas-failed, got {other:?}"),
    }
    check!(
        b.get("cas") == Ok(Some(b"after".to_vec())),
        "the retried swap wrote"
    );
    // ...including a delete, an increment, and a create of an absent key.
    let c = Cas::new(&b, "cas").unwrap();
    b.delete("cas").unwrap();
    check!(
        matches!(swap(c, b"x"), Err(CasError::CasFailed(_))),
        "swap after a delete"
    );
    check!(b.get("cas") == Ok(None), "nothing written after a delete");
    let c = Cas::new(&b, "cas").unwrap();
    b.set("cas", b"created").unwrap();
    check!(
        matches!(swap(c, b"x"), Err(CasError::CasFailed(_))),
        "swap after a create"
    );
    let c = Cas::new(&b, "n").unwrap();
    increment(&b, "n", 1).unwrap();
    check!(
        matches!(swap(c, b"x"), Err(CasError::CasFailed(_))),
        "swap after an increment"
    );
    // Errors: a bad key at new, an oversized value at swap (handle consumed).
    check_other!(d2, Cas::new(&b, ""), "empty");
    let c = Cas::new(&b, "cas").unwrap();
    match swap(c, &vec![0u8; (1 << 20) + 1]) {
        Err(CasError::StoreError(Error::Other(message))) => {
            check!(message.contains("value too large"), "{message}")
        }
        other => panic!("check failed: oversized swap: got {other:?}"),
    }
    check!(
        b.get("cas") == Ok(Some(b"created".to_vec())),
        "an oversized swap wrote nothing"
    );
    // Dropped handles are released: many more than the per-instance cap.
    for _ in 0..1500 {
        drop(Cas::new(&b, "cas").expect("cas new after drops"));
    }
    println!("draft2 atomics: ok");

    for key in ["n", "word", "max", "cas"] {
        b.delete(key).unwrap();
    }
    b.set("kept/draft2/value", b"written by draft2").unwrap();
    increment(&b, "kept/draft2/counter", -2).unwrap();
}

fn open(identifiers: &[String]) {
    for id in identifiers {
        let first = d1::store::open(id);
        let second = d2::store::open(id);
        let line = match (first, second) {
            (Ok(b1), Ok(b2)) => {
                let v1 = b1.get("whoami").expect("get whoami");
                let v2 = b2.get("whoami").expect("get whoami");
                check!(v1 == v2, "{id:?}: the drafts opened different buckets");
                match v1 {
                    Some(v) => String::from_utf8_lossy(&v).into_owned(),
                    None => "-".into(),
                }
            }
            (Err(d1::store::Error::AccessDenied), Err(d2::store::Error::AccessDenied)) => {
                "access-denied".into()
            }
            (a, b) => panic!("check failed: {id:?}: {:?} / {:?}", a.err(), b.err()),
        };
        println!("{id:?}: {line}");
    }
}

fn count(draft: &str, key: &str, n: u32) {
    for _ in 0..n {
        match draft {
            "draft" => {
                d1::atomics::increment(&d1::store::open("").unwrap(), key, 1).expect("increment");
            }
            "draft2" => {
                d2::atomics::increment(&d2::store::open("").unwrap(), key, 1).expect("increment");
            }
            other => panic!("unknown draft {other}"),
        }
    }
}

fn cas_count(key: &str, n: u32) {
    use d2::atomics::{Cas, CasError, swap};
    let b = d2::store::open("").unwrap();
    for _ in 0..n {
        let mut cas = Cas::new(&b, key).expect("cas new");
        loop {
            let current = cas.current().expect("current");
            let value: u64 = current
                .map(|v| String::from_utf8(v).unwrap().parse().unwrap())
                .unwrap_or(0);
            match swap(cas, (value + 1).to_string().as_bytes()) {
                Ok(()) => break,
                Err(CasError::CasFailed(again)) => cas = again,
                Err(CasError::StoreError(err)) => panic!("swap: {err:?}"),
            }
        }
    }
}

/// Opens `cas` handles on one key, keeping them all, until `new` fails.
fn cas_hoard() {
    let b = d2::store::open("").unwrap();
    let mut handles = Vec::new();
    loop {
        match d2::atomics::Cas::new(&b, "hoard") {
            Ok(cas) => handles.push(cas),
            Err(err) => {
                println!("{} handles, then: {err:?}", handles.len());
                break;
            }
        }
        check!(handles.len() <= 100_000, "no limit on cas handles");
    }
    // Swapping one frees a place.
    check!(
        d2::atomics::swap(handles.pop().unwrap(), b"x").is_ok(),
        "swap"
    );
    check!(
        d2::atomics::Cas::new(&b, "hoard").is_ok(),
        "a place was freed"
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |s: &str| s.parse::<u32>().expect("a count");
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["draft"] => draft(),
        ["draft2"] => draft2(),
        ["open", ..] => open(&args[1..]),
        ["count", draft, key, n] => count(draft, key, number(n)),
        ["cas-count", key, n] => cas_count(key, number(n)),
        ["cas-hoard"] => cas_hoard(),
        _ => {
            eprintln!(
                "usage: keyvalue-suite draft|draft2|open ID...|count DRAFT KEY N|cas-count KEY N|cas-hoard"
            );
            std::process::exit(1);
        }
    }
}
