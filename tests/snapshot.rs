//! Snapshots against a model: random puts, deletes and batches on a store
//! and on a `BTreeMap`; the snapshot restored into a fresh directory must
//! hold exactly the model's keys, values and versions, continue with the
//! same next version, and a damaged copy must be refused.

use std::collections::BTreeMap;

use hightower_engine::restore_snapshot;
use hightower_engine::{Command, Config, KvEngine, Op, Outcome, SnapshotProvider, SyncMode};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    Put(u8, Vec<u8>),
    Delete(u8),
    Batch(Vec<(u8, Option<Vec<u8>>)>),
}

fn key(n: u8) -> Vec<u8> {
    format!("key-{n}").into_bytes()
}

fn step() -> impl Strategy<Value = Step> {
    let value = proptest::collection::vec(any::<u8>(), 0..300);
    prop_oneof![
        3 => (0..24u8, value.clone()).prop_map(|(k, v)| Step::Put(k, v)),
        1 => (0..24u8).prop_map(Step::Delete),
        1 => proptest::collection::vec((0..24u8, proptest::option::of(value)), 1..6).prop_map(Step::Batch),
    ]
}

fn config(dir: &std::path::Path) -> Config {
    Config {
        sync: SyncMode::Os,
        segment_size_bytes: 8192,
        ..Config::new(dir)
    }
}

/// Applies `step` to the engine and the model (key -> (value, version)).
fn apply(engine: &KvEngine, model: &mut BTreeMap<Vec<u8>, (Vec<u8>, u64)>, step: &Step) {
    match step {
        Step::Put(k, v) => {
            let version = engine.put(key(*k), v).unwrap();
            model.insert(key(*k), (v.clone(), version));
        }
        Step::Delete(k) => {
            let deleted = engine.delete(key(*k)).unwrap();
            assert_eq!(deleted.is_some(), model.remove(&key(*k)).is_some());
        }
        Step::Batch(ops) => {
            let ops: Vec<Op> = ops
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => Op::Set {
                        key: key(*k),
                        value: v.clone(),
                    },
                    None => Op::Delete { key: key(*k) },
                })
                .collect();
            let outcome = engine
                .apply(Command::Batch {
                    conditions: vec![],
                    ops: ops.clone(),
                })
                .unwrap()
                .outcome;
            let Outcome::Batch {
                applied_ops,
                last_version,
            } = outcome
            else {
                panic!("{outcome:?}")
            };
            // Versions are consecutive over the records the batch wrote.
            let mut version = last_version.map_or(0, |last| last + 1 - u64::from(applied_ops));
            for op in ops {
                match op {
                    Op::Set { key, value } => {
                        model.insert(key, (value, version));
                        version += 1;
                    }
                    Op::Delete { key } => {
                        if model.remove(&key).is_some() {
                            version += 1;
                        }
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn a_restored_snapshot_equals_the_model(steps in proptest::collection::vec(step(), 1..120)) {
        let tmp = tempfile::tempdir().unwrap();
        let engine = KvEngine::open(config(&tmp.path().join("source"))).unwrap();
        let mut model = BTreeMap::new();
        for step in &steps {
            apply(&engine, &mut model, step);
        }
        let mut image = Vec::new();
        let log_index = engine.serialize_snapshot(&mut image).unwrap();

        let target = tmp.path().join("restored");
        let info = restore_snapshot(config(&target), &mut image.as_slice()).unwrap();
        prop_assert_eq!(info.keys, model.len() as u64);
        prop_assert_eq!(info.last_log_index, log_index);
        let restored = KvEngine::open(config(&target)).unwrap();
        let state: BTreeMap<Vec<u8>, (Vec<u8>, u64)> = restored
            .dump()
            .unwrap()
            .into_iter()
            .map(|(key, versioned)| (key, (versioned.value, versioned.version)))
            .collect();
        prop_assert_eq!(&state, &model);
        prop_assert_eq!(restored.state().last_applied(), log_index);
        prop_assert_eq!(restored.put(b"next", b"x").unwrap(), engine.put(b"next", b"x").unwrap());

        let mut damaged = image.clone();
        let at = image.len() / 2;
        damaged[at] ^= 0x40;
        let elsewhere = tmp.path().join("damaged");
        prop_assert!(restore_snapshot(config(&elsewhere), &mut damaged.as_slice()).is_err());
        prop_assert!(!elsewhere.exists());
    }
}
