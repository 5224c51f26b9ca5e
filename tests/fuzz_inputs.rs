//! Bounded runs of the fuzz targets inside the test suite: random bytes,
//! mutations of sound inputs, and a replay of the committed corpus
//! (`host/engine/fuzz/seeds/<target>/`: the seeds plus every input a fuzzer
//! ever found failing), each through the same entry point the cargo-fuzz
//! targets call. A target must never panic, and no input may make a
//! decoder ask for much more memory than the input's size. The real
//! fuzzers, and how to run them: `docs/fuzzing.md`.

use std::path::PathBuf;

use hightower_engine::fuzz::{TARGETS, metadata_loader, record_decoder, seeds, snapshot_reader};
use proptest::prelude::*;

#[path = "support/largest_alloc.rs"]
mod largest_alloc;
use largest_alloc::{LargestAllocation, take_largest_allocation};

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

/// Every input may cost a few copies of itself plus one read chunk
/// (64 KiB) and the harness's own buffers; anything near what a length
/// field can claim (up to 1 GiB) is far above this.
const ALLOWANCE_BYTES: usize = 1 << 20;

fn run(target: &str, input: &[u8]) {
    take_largest_allocation();
    match target {
        "record_decoder" => record_decoder(input),
        "metadata_loader" => metadata_loader(input),
        "snapshot_reader" => snapshot_reader(input),
        other => panic!("no fuzz target {other}"),
    }
    let largest = take_largest_allocation();
    assert!(
        largest <= ALLOWANCE_BYTES + 8 * input.len(),
        "{target}: an input of {} bytes led to an allocation of {largest} bytes",
        input.len()
    );
}

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target)
}

#[test]
fn the_committed_corpus_replays_cleanly() {
    for target in TARGETS {
        let dir = corpus_dir(target);
        let mut replayed = 0;
        for entry in
            std::fs::read_dir(&dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        {
            let path = entry.unwrap().path();
            run(target, &std::fs::read(&path).unwrap());
            replayed += 1;
        }
        assert!(replayed >= 2, "{}: the seeds are missing", dir.display());
    }
}

#[test]
fn the_seeds_are_sound_and_accepted() {
    // A seed that fails its own checks would make every mutation of it
    // test nothing but the first check.
    let mut reader_input = &seeds("snapshot_reader")[0][1..];
    let mut reader = hightower_engine::testing::ImageReader::new(
        &mut reader_input,
        hightower_engine::fuzz::FUZZ_IMAGE_LIMITS,
    )
    .unwrap();
    let mut entry = hightower_engine::testing::ImageEntry::default();
    let mut entries = 0;
    while reader.next_entry(&mut entry).unwrap() {
        entries += 1;
    }
    assert_eq!(entries, 3);
    let segment = &seeds("record_decoder")[0][1..];
    let mut commands = 0;
    let report = hightower_engine::testing::scan_segment(segment, |_| commands += 1);
    assert!(
        report.damage.is_empty() && commands == 44,
        "{report:?} {commands}"
    );
}

/// A sound input with a few bytes changed, inserted or cut.
fn mutated(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds(target);
    (
        0..seeds.len(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..4u8), 1..6),
        proptest::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(move |(which, edits, cut)| {
            let mut input = seeds[which].clone();
            for (at, byte, kind) in edits {
                let at = at.index(input.len());
                match kind {
                    0 => input[at] ^= byte | 1,
                    1 => input.insert(at, byte),
                    2 if input.len() > 1 => {
                        input.remove(at);
                    }
                    _ => input[at] = byte,
                }
            }
            if let Some(cut) = cut {
                let keep = cut.index(input.len() + 1);
                input.truncate(keep.max(1));
            }
            input
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(target in 0..3usize, input in proptest::collection::vec(any::<u8>(), 0..2048)) {
        run(TARGETS[target], &input);
    }

    #[test]
    fn mutated_segments_never_panic(input in mutated("record_decoder")) {
        run("record_decoder", &input);
    }

    #[test]
    fn mutated_metadata_never_panics(input in mutated("metadata_loader")) {
        run("metadata_loader", &input);
    }

    #[test]
    fn mutated_images_never_panic(input in mutated("snapshot_reader")) {
        run("snapshot_reader", &input);
    }
}

/// Writes the seeds into the corpus directories (run by hand after a
/// format change: `cargo test -p hightower-engine --test fuzz_inputs --
/// --ignored write_seed_corpus`), then checks they read back.
#[test]
#[ignore = "rewrites host/engine/fuzz/seeds; run by hand after a format change"]
fn write_seed_corpus() {
    for target in TARGETS {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (n, seed) in seeds(target).into_iter().enumerate() {
            let path = dir.join(format!("seed-{n}"));
            std::fs::write(&path, &seed).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), seed);
        }
    }
}
