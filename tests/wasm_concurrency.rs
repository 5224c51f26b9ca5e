//! Components called from several threads at once while native writers use
//! the same engine: every acknowledged write is visible to both sides at
//! once, and conditional batches from guests stay atomic under contention.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use common::{Harness, call_ok, key_value};
use hightower_engine::SyncMode;

const WELL_BEHAVED: &str = hightower_test_guests::WELL_BEHAVED;
const GUEST_THREADS: usize = 4;
const NATIVE_THREADS: usize = 2;
const WRITES: usize = 60;
const CLAIMS: usize = 40;

#[test]
fn guests_and_native_writers_see_each_others_acknowledged_writes() {
    let h = Harness::with(|c| c.sync = SyncMode::Always, common::sandbox());
    let ext = Arc::new(h.load("well-behaved", WELL_BEHAVED, &["app/"]));
    // Keys acknowledged so far by native writers, for guests to read back.
    let native_acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let start = Arc::new(Barrier::new(GUEST_THREADS + NATIVE_THREADS));
    let mut threads = Vec::new();

    for t in 0..GUEST_THREADS {
        let (ext, kv, acked, start) = (
            ext.clone(),
            h.kv.clone(),
            native_acked.clone(),
            start.clone(),
        );
        threads.push(thread::spawn(move || {
            start.wait();
            let mut won = Vec::new();
            for i in 0..WRITES {
                let key = format!("g{t}/{i}");
                let value = format!("guest {t} write {i}");
                let version: u64 =
                    call_ok(&ext, "set", &key_value(key.as_bytes(), value.as_bytes()))
                        .parse()
                        .unwrap();
                // Acknowledged by the guest: the native side sees it now.
                let native = kv
                    .get_versioned(format!("app/{key}").as_bytes())
                    .unwrap()
                    .unwrap();
                assert_eq!(
                    (native.value, native.version),
                    (value.into_bytes(), version)
                );
                // The latest native write acknowledged so far: the guest sees it.
                let latest = acked.lock().unwrap().last().cloned();
                if let Some((key, value)) = latest {
                    assert_eq!(call_ok(&ext, "get", key.as_bytes()), value);
                }
                // Everyone races for the same unique keys.
                if i < CLAIMS {
                    let claim = format!("claim/{i}");
                    match call_ok(
                        &ext,
                        "claim",
                        &key_value(claim.as_bytes(), t.to_string().as_bytes()),
                    )
                    .as_str()
                    {
                        "won" => won.push(i),
                        "lost" => {}
                        other => panic!("claim: {other}"),
                    }
                }
            }
            won
        }));
    }
    for t in 0..NATIVE_THREADS {
        let (ext, kv, acked, start) = (
            ext.clone(),
            h.kv.clone(),
            native_acked.clone(),
            start.clone(),
        );
        threads.push(thread::spawn(move || {
            start.wait();
            for i in 0..WRITES {
                let key = format!("n{t}/{i}");
                let value = format!("native {t} write {i}");
                kv.put(format!("app/{key}").as_bytes(), value.as_bytes())
                    .unwrap();
                // Acknowledged natively: a guest sees it now.
                assert_eq!(call_ok(&ext, "get", key.as_bytes()), value);
                acked.lock().unwrap().push((key, value));
            }
            Vec::new()
        }));
    }
    let mut winners: BTreeMap<usize, usize> = BTreeMap::new();
    for thread in threads {
        for claim in thread.join().expect("a worker panicked") {
            *winners.entry(claim).or_default() += 1;
        }
    }

    // Each unique key was won exactly once, and holds its winner's value.
    assert_eq!(winners.len(), CLAIMS);
    assert!(winners.values().all(|&n| n == 1), "{winners:?}");
    // Everything is there, once, with distinct versions.
    let dump = h.kv.dump().unwrap();
    assert_eq!(
        dump.len(),
        (GUEST_THREADS + NATIVE_THREADS) * WRITES + CLAIMS
    );
    let mut versions: Vec<u64> = dump.iter().map(|(_, v)| v.version).collect();
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(versions.len(), dump.len());
    let listed = call_ok(&ext, "list", b"");
    assert_eq!(listed.lines().count(), dump.len());
    // Calls ran in parallel on separate instances; some were kept for reuse.
    assert!(ext.idle_instances() >= 1);
}
