//! Damage on disk and failing I/O.
//!
//! Every test builds a store through the public API, then damages it the way
//! a crash, a disk or an operator would, and checks both what
//! `KvEngine::open` reports and exactly which data survives:
//!
//! - **Torn tail**: the last command (a multi-op batch) is cut at every byte
//!   offset, overwritten with garbage, or zeroed in front of preallocated
//!   zeros. The open succeeds, every earlier command is there with its
//!   version, the last command is entirely absent, the report counts the
//!   bytes dropped, and the next write lands where the torn command began.
//! - **Bit flips** in a sealed segment (record header, key, value, CRC, a
//!   batch's first/middle/last record, the last command of a segment) and in
//!   segment headers: a strict open names the file and the offset; a salvage
//!   open keeps every other command, drops the damaged command whole, keeps
//!   the original as `*.corrupt` and reports the dropped range; the next
//!   strict open succeeds.
//! - Refusals: a newer format version, a data dir that is a file, a store
//!   already open, and bad input (which must change nothing, not even a byte
//!   on disk).
//! - **Injected I/O faults** at every step of each kind the write path uses:
//!   the engine refuses writes after the first failure, keeps serving reads,
//!   and a reopen without faults has every acknowledged write and no partial
//!   batch.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hightower_engine::InputError;
use hightower_engine::testing::{FailNth, IoFaults, IoOp};
use hightower_engine::testing::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, segment_file_name};
use hightower_engine::{
    Command, Condition, Config, EngineOptions, Error, KvEngine, Op, Outcome, RecoveryMode,
    SyncMode, Versioned,
};
use hightower_engine::{SegmentVerdict, TailKind, verify_segments};
use tempfile::TempDir;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

// ---------------------------------------------------------------------------
// Helpers: deterministic randomness, commands, the store's contents.
// ---------------------------------------------------------------------------

#[path = "support/rng.rs"]
mod rng;
use rng::Rng;

/// A value of `len` bytes that depends on `key`, so a misplaced value shows.
fn value_for(key: &str, len: usize) -> Vec<u8> {
    let pattern = format!("<{key}>");
    pattern.bytes().cycle().take(len).collect()
}

fn set(key: &str, value: &[u8]) -> Command {
    Command::Set {
        key: key.into(),
        value: value.to_vec(),
    }
}

fn op_set(key: &str, value: &[u8]) -> Op {
    Op::Set {
        key: key.into(),
        value: value.to_vec(),
    }
}

fn op_del(key: &str) -> Op {
    Op::Delete { key: key.into() }
}

fn absent(key: &str) -> Condition {
    Condition::Absent { key: key.into() }
}

/// Applies a command to the model. Only `Absent` conditions are modelled.
fn apply_to_model(model: &mut Model, command: &Command) {
    match command {
        Command::Set { key, value } => {
            model.insert(key.clone(), value.clone());
        }
        Command::Delete { key } => {
            model.remove(key);
        }
        Command::Batch { conditions, ops } => {
            let holds = conditions.iter().all(|condition| match condition {
                Condition::Absent { key } => !model.contains_key(key),
                Condition::VersionIs { .. } => panic!("the model does not track versions"),
            });
            if holds {
                for op in ops {
                    match op {
                        Op::Set { key, value } => {
                            model.insert(key.clone(), value.clone());
                        }
                        Op::Delete { key } => {
                            model.remove(key);
                        }
                    }
                }
            }
        }
    }
}

fn contents(engine: &KvEngine) -> Model {
    engine
        .dump()
        .expect("dump")
        .into_iter()
        .map(|(key, versioned)| (key, versioned.value))
        .collect()
}

fn show(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

/// Panics naming the first difference between the store and the model.
fn assert_same(actual: &Model, expected: &Model, context: &str) {
    for (key, value) in expected {
        match actual.get(key) {
            None => panic!("{context}: key {} is missing", show(key)),
            Some(found) if found != value => panic!(
                "{context}: key {} has a wrong value ({} bytes, expected {})",
                show(key),
                found.len(),
                value.len()
            ),
            Some(_) => {}
        }
    }
    if let Some(extra) = actual.keys().find(|key| !expected.contains_key(*key)) {
        panic!("{context}: key {} should be absent", show(extra));
    }
}

// ---------------------------------------------------------------------------
// Helpers: the files of a store, parsed independently of the engine
// (following docs/format.md).
// ---------------------------------------------------------------------------

const FLAG_END_OF_COMMAND: u8 = 1;
const FLAG_START_OF_COMMAND: u8 = 2;
const KIND_PUT: u8 = 1;

#[derive(Clone, Debug)]
struct RawRecord {
    offset: usize,
    len: usize,
    version: u64,
    key: Vec<u8>,
    /// `None` for a tombstone.
    value: Option<Vec<u8>>,
}

#[derive(Clone, Debug)]
struct RawCommand {
    segment: u32,
    start: usize,
    end: usize,
    records: Vec<RawRecord>,
}

impl RawCommand {
    fn keys(&self) -> Vec<String> {
        self.records.iter().map(|r| show(&r.key)).collect()
    }
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(bytes[at..at + 2].try_into().unwrap())
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// Every command of an undamaged segment file, with its byte range.
fn parse_segment(bytes: &[u8], segment: u32) -> Vec<RawCommand> {
    let mut commands = Vec::new();
    let mut current: Option<RawCommand> = None;
    let mut pos = SEGMENT_HEADER_LEN;
    while pos + RECORD_HEADER_LEN <= bytes.len() {
        let header = &bytes[pos..pos + RECORD_HEADER_LEN];
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let (kind, flags) = (header[20], header[21]);
        let key_len = u16_at(header, 22) as usize;
        let value_len = u32_at(header, 24) as usize;
        let len = RECORD_HEADER_LEN + key_len + value_len;
        assert!(
            pos + len <= bytes.len(),
            "record at {pos} runs past the end"
        );
        assert_eq!(
            crc32fast::hash(&bytes[pos + 4..pos + len]),
            u32_at(header, 0),
            "record at {pos} of segment {segment} fails its checksum"
        );
        let key_end = pos + RECORD_HEADER_LEN + key_len;
        let record = RawRecord {
            offset: pos,
            len,
            version: u64_at(header, 4),
            key: bytes[pos + RECORD_HEADER_LEN..key_end].to_vec(),
            value: (kind == KIND_PUT).then(|| bytes[key_end..pos + len].to_vec()),
        };
        if flags & FLAG_START_OF_COMMAND != 0 {
            assert!(
                current.is_none(),
                "a command starts inside another at {pos}"
            );
            current = Some(RawCommand {
                segment,
                start: pos,
                end: pos,
                records: Vec::new(),
            });
        }
        let command = current
            .as_mut()
            .unwrap_or_else(|| panic!("record at {pos} continues no command"));
        command.records.push(record);
        command.end = pos + len;
        if flags & FLAG_END_OF_COMMAND != 0 {
            commands.push(current.take().unwrap());
        }
        pos += len;
    }
    assert!(current.is_none(), "segment {segment} ends inside a command");
    commands
}

fn segment_ids(dir: &Path) -> Vec<u32> {
    let mut ids: Vec<u32> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().ok()?;
            let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
            digits.parse().ok()
        })
        .collect();
    ids.sort_unstable();
    ids
}

fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(segment_file_name(id))
}

/// Every command of the store, in log order.
fn parse_store(dir: &Path) -> Vec<RawCommand> {
    segment_ids(dir)
        .into_iter()
        .flat_map(|id| parse_segment(&fs::read(segment_path(dir, id)).unwrap(), id))
        .collect()
}

/// A copy of a closed store (without its lock file) in a new temp dir.
fn copy_store(from: &Path) -> TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "LOCK" {
            fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
        }
    }
    tmp
}

fn with_dir(config: &Config, dir: &Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        ..config.clone()
    }
}

/// Every segment verifies clean.
fn assert_verifies_clean(config: &Config, context: &str) {
    for segment in verify_segments(config).expect("verify") {
        assert_eq!(
            segment.verdict,
            SegmentVerdict::Ok,
            "{context}: {} does not verify",
            segment.file
        );
    }
}

// ---------------------------------------------------------------------------
// Torn tails.
// ---------------------------------------------------------------------------

struct TornFixture {
    _tmp: TempDir,
    dir: PathBuf,
    config: Config,
    /// The store (values and versions) before the last command.
    before: Vec<(Vec<u8>, Versioned)>,
    last_log_index: u64,
    committed_version: u64,
    /// The active segment, its bytes, and where the last command lies in it.
    active: u32,
    original: Vec<u8>,
    start: usize,
    end: usize,
}

/// A closed store whose last command is a five-op conditional batch that
/// sets new keys, overwrites one and deletes another.
fn torn_tail_fixture(sync: SyncMode) -> TornFixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let config = Config {
        sync,
        segment_size_bytes: 4096,
        ..Config::new(&dir)
    };
    let engine = KvEngine::open(config.clone()).unwrap();
    let mut rng = Rng::new(0x5EED_0001);
    for n in 0..120 {
        let key = format!("k{n:03}");
        let len = 10 + rng.below(120) as usize;
        engine.put(key.as_bytes(), value_for(&key, len)).unwrap();
    }
    engine.put(b"k001", b"overwritten").unwrap();
    assert!(engine.delete(b"k002").unwrap().is_some());
    assert_eq!(engine.delete(b"never-there").unwrap(), None);
    let applied = engine
        .apply(Command::Batch {
            conditions: vec![absent("b1")],
            ops: vec![op_set("b1", b"one"), op_set("b2", b"two"), op_del("k004")],
        })
        .unwrap();
    assert!(matches!(
        applied.outcome,
        Outcome::Batch { applied_ops: 3, .. }
    ));
    let refused = engine
        .apply(Command::Batch {
            conditions: vec![absent("k000")],
            ops: vec![op_set("refused", b"x")],
        })
        .unwrap();
    assert!(matches!(refused.outcome, Outcome::ConditionFailed { .. }));
    // A writing command right before the last one, so the recovered log
    // index is the one the engine had before the last command.
    engine.put(b"k010", b"just before the last").unwrap();
    let before = engine.dump().unwrap();
    let storage = engine.stats().storage;
    let k003 = engine.get_versioned(b"k003").unwrap().unwrap().version;

    let last = Command::Batch {
        conditions: vec![
            Condition::VersionIs {
                key: b"k003".to_vec(),
                version: k003,
            },
            absent("last-a"),
        ],
        ops: vec![
            op_set("last-a", b"A1"),
            op_set("last-b", b"B22"),
            op_set("k003", b"replaced"),
            op_del("k005"),
            op_set("last-c", b"C333"),
        ],
    };
    let applied = engine.apply(last).unwrap();
    assert!(matches!(
        applied.outcome,
        Outcome::Batch { applied_ops: 5, .. }
    ));
    engine.close().unwrap();

    let ids = segment_ids(&dir);
    assert!(
        ids.len() >= 3,
        "sealed segments precede the active one: {ids:?}"
    );
    let active = *ids.last().unwrap();
    let original = fs::read(segment_path(&dir, active)).unwrap();
    let commands = parse_segment(&original, active);
    let last = commands.last().expect("the active segment holds a command");
    assert_eq!(
        last.keys(),
        ["last-a", "last-b", "k003", "k005", "last-c"],
        "the last command of the active segment is the batch"
    );
    if sync == SyncMode::Always {
        assert!(
            original.len() > last.end + 256 && original[last.end..].iter().all(|&b| b == 0),
            "sync = always keeps preallocated zeros after the tail"
        );
    } else {
        assert_eq!(original.len(), last.end, "sync = os preallocates nothing");
    }
    TornFixture {
        before,
        last_log_index: storage.last_log_index,
        committed_version: storage.committed_version,
        active,
        start: last.start,
        end: last.end,
        original,
        _tmp: tmp,
        dir,
        config,
    }
}

#[derive(Clone, Copy, Debug)]
enum TailDamage {
    /// The file ends at the cut (a crash mid-append, no preallocation).
    Truncate,
    /// The bytes from the cut to the end of the command are zero and the
    /// file keeps its length (and its preallocated zeros after that).
    Zeros,
    /// The bytes from the cut to the end of the command, and 0, 40 or 80
    /// bytes beyond it, are non-zero garbage.
    Garbage,
}

/// Bytes from `start` to the last non-zero byte: what recovery counts as
/// dropped (zeros after a torn record cannot be told from preallocation).
fn nonzero_extent(bytes: &[u8], start: usize) -> u64 {
    bytes[start..]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |p| p as u64 + 1)
}

/// Smallest record on disk: a header and a one-byte key.
const MIN_RECORD_BYTES: u64 = RECORD_HEADER_LEN as u64 + 1;

fn check_torn_tail(sync: SyncMode, damage: TailDamage) {
    let fx = torn_tail_fixture(sync);
    let mut rng = Rng::new(0x6A7B_A6E0 ^ fx.start as u64);
    let mut cuts_with_damage = 0;
    for cut in fx.start..fx.end {
        let context = format!(
            "{sync:?}, {damage:?}: last command at {}..{}, damaged from {cut}",
            fx.start, fx.end
        );
        let tmp = copy_store(&fx.dir);
        let config = with_dir(&fx.config, tmp.path());
        let path = segment_path(tmp.path(), fx.active);
        let mut bytes = fx.original.clone();
        let expected_dropped = match damage {
            TailDamage::Truncate => {
                bytes.truncate(cut);
                let dropped = nonzero_extent(&bytes, fx.start);
                if bytes.last().is_some_and(|&b| b != 0) && cut > fx.start {
                    assert_eq!(dropped, (cut - fx.start) as u64, "{context}");
                }
                dropped
            }
            TailDamage::Zeros => {
                bytes[cut..fx.end].fill(0);
                nonzero_extent(&bytes, fx.start)
            }
            TailDamage::Garbage => {
                let stop = fx.end + (cut % 3) * 40;
                if bytes.len() < stop {
                    bytes.resize(stop, 0);
                }
                for byte in &mut bytes[cut..stop] {
                    *byte = rng.nonzero_byte();
                }
                (stop - fx.start) as u64
            }
        };
        fs::write(&path, &bytes).unwrap();

        let engine = KvEngine::open(config.clone())
            .unwrap_or_else(|err| panic!("{context}: open failed: {err}"));
        assert_eq!(engine.dump().unwrap(), fx.before, "{context}");
        let stats = engine.stats();
        assert_eq!(
            stats.recovery.torn_tail_bytes_dropped, expected_dropped,
            "{context}"
        );
        assert!(stats.recovery.salvaged.is_empty(), "{context}");
        assert_eq!(stats.storage.last_log_index, fx.last_log_index, "{context}");
        // Every version the cut bytes could have held (one per smallest
        // record) is skipped: none is given to another write.
        let skipped_to = fx.committed_version + expected_dropped.div_ceil(MIN_RECORD_BYTES);
        assert_eq!(stats.storage.committed_version, skipped_to, "{context}");
        // The marker that records the skip follows the intact records.
        let marker_len = if skipped_to > fx.committed_version {
            MIN_RECORD_BYTES as usize
        } else {
            0
        };
        if expected_dropped > 0 {
            cuts_with_damage += 1;
            let cut = stats
                .recovery
                .tail_cut
                .as_ref()
                .expect("the cut is reported");
            assert_eq!(
                (cut.offset, cut.bytes, cut.versions_skipped_to),
                (fx.start as u64, expected_dropped, skipped_to),
                "{context}"
            );
            let kept = tmp
                .path()
                .join(cut.kept_as.as_ref().expect("the bytes are kept"));
            assert_eq!(
                fs::read(kept).unwrap(),
                bytes[fx.start..fx.start + expected_dropped as usize],
                "{context}: the cut bytes are kept beside the segment"
            );
            let cut_file = fs::read(&path).unwrap();
            assert_eq!(
                &cut_file[..fx.start],
                &fx.original[..fx.start],
                "{context}: the intact records stay"
            );
            assert!(
                cut_file[fx.start + marker_len..].iter().all(|&b| b == 0),
                "{context}: the torn bytes are cut off the file (only the marker and preallocated zeros follow)"
            );
        }

        // The store recovered from a torn tail keeps working: the next
        // write takes the next version and lands where the torn command
        // began; a reopen finds it and nothing torn. (With fsyncs costing
        // milliseconds, checked at every third cut in sync = always.)
        if sync == SyncMode::Always && !(cut - fx.start).is_multiple_of(3) {
            continue;
        }
        let version = engine.put(b"after-recovery", b"fresh").unwrap();
        assert_eq!(version, skipped_to + 1, "{context}");
        engine.close().unwrap();
        let engine = KvEngine::open(config.clone()).unwrap();
        assert_eq!(
            engine.stats().recovery.torn_tail_bytes_dropped,
            0,
            "{context}"
        );
        let mut expected = fx.before.clone();
        expected.push((
            b"after-recovery".to_vec(),
            Versioned {
                value: b"fresh".to_vec(),
                version,
            },
        ));
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(engine.dump().unwrap(), expected, "{context}");
        drop(engine);
        let after = parse_store(tmp.path());
        let written = after.last().unwrap();
        assert_eq!(written.keys(), ["after-recovery"], "{context}");
        if written.segment == fx.active {
            assert_eq!(written.start, fx.start + marker_len, "{context}");
        } else {
            // The segment was full: it was sealed after the marker.
            assert_eq!(
                (written.segment, written.start),
                (fx.active + 1, SEGMENT_HEADER_LEN),
                "{context}"
            );
            assert_eq!(
                nonzero_extent(&fs::read(&path).unwrap(), fx.start),
                marker_len as u64
            );
        }
        assert_verifies_clean(&config, &context);
    }
    assert!(
        cuts_with_damage > (fx.end - fx.start) / 2,
        "most cuts leave torn bytes behind"
    );
}

#[test]
fn torn_tail_truncated_at_every_offset_of_the_last_batch() {
    check_torn_tail(SyncMode::Os, TailDamage::Truncate);
    check_torn_tail(SyncMode::Always, TailDamage::Truncate);
}

#[test]
fn torn_tail_overwritten_with_garbage() {
    check_torn_tail(SyncMode::Os, TailDamage::Garbage);
    check_torn_tail(SyncMode::Always, TailDamage::Garbage);
}

#[test]
fn torn_tail_followed_by_preallocated_zeros() {
    check_torn_tail(SyncMode::Always, TailDamage::Zeros);
    check_torn_tail(SyncMode::Os, TailDamage::Zeros);
}

// ---------------------------------------------------------------------------
// Bit flips and salvage.
// ---------------------------------------------------------------------------

struct FlipFixture {
    _tmp: TempDir,
    dir: PathBuf,
    config: Config,
    /// Every command that wrote something, in log order, as the engine got it.
    commands: Vec<Command>,
    /// Where each of them is on disk (same order).
    raw: Vec<RawCommand>,
}

impl FlipFixture {
    fn model_without(&self, dropped: Option<usize>) -> Model {
        let mut model = Model::new();
        for (i, command) in self.commands.iter().enumerate() {
            if Some(i) != dropped {
                apply_to_model(&mut model, command);
            }
        }
        model
    }

    /// Indexes (into `raw`) of the commands in `segment`.
    fn in_segment(&self, segment: u32) -> Vec<usize> {
        (0..self.raw.len())
            .filter(|&i| self.raw[i].segment == segment)
            .collect()
    }
}

/// A closed store over several 4 KiB segments: puts, overwrites, deletes
/// and batches (with deletes), every command writing at least one record.
fn flip_fixture() -> FlipFixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let config = Config {
        sync: SyncMode::Os,
        segment_size_bytes: 4096,
        // The fixture maps every command to its place on disk: a background
        // compaction (which a slow, loaded run gives time to start) would
        // rewrite batches as single-record commands. No segment reaches 1.
        compaction_dead_ratio: 1.0,
        ..Config::new(&dir)
    };
    let engine = KvEngine::open(config.clone()).unwrap();
    let mut rng = Rng::new(0xF11F);
    let mut model = Model::new();
    let mut commands = Vec::new();
    for n in 0..180u64 {
        let existing: Vec<String> = model.keys().map(|k| show(k)).collect();
        let pick = |rng: &mut Rng| existing[rng.below(existing.len() as u64) as usize].clone();
        let command = match rng.below(10) {
            0 | 1 if existing.len() > 5 => Command::Delete {
                key: pick(&mut rng).into_bytes(),
            },
            2 if !existing.is_empty() => {
                let key = pick(&mut rng);
                set(&key, &value_for(&format!("{key}@{n}"), 30))
            }
            3 | 4 => {
                let keys: Vec<String> =
                    (0..2 + rng.below(3)).map(|j| format!("b{n}.{j}")).collect();
                let mut ops: Vec<Op> = keys
                    .iter()
                    .map(|key| op_set(key, &value_for(key, 20 + rng.below(60) as usize)))
                    .collect();
                if existing.len() > 5 && rng.below(2) == 0 {
                    ops.insert(1, op_del(&pick(&mut rng)));
                }
                Command::Batch {
                    conditions: vec![absent(&keys[0])],
                    ops,
                }
            }
            _ => {
                let key = format!("p{n}");
                set(&key, &value_for(&key, 40 + rng.below(120) as usize))
            }
        };
        let applied = engine.apply(command.clone()).unwrap();
        match (&command, &applied.outcome) {
            (Command::Set { .. }, Outcome::Set { .. })
            | (Command::Delete { .. }, Outcome::Deleted { version: Some(_) }) => {}
            (Command::Batch { ops, .. }, Outcome::Batch { applied_ops, .. })
                if *applied_ops as usize == ops.len() => {}
            other => panic!("unexpected outcome {other:?}"),
        }
        apply_to_model(&mut model, &command);
        commands.push(command);
    }
    assert_same(&contents(&engine), &model, "before damage");
    engine.close().unwrap();
    let raw = parse_store(&dir);
    assert_eq!(raw.len(), commands.len(), "one command on disk per write");
    // The disk holds what was written: keys, values, tombstones, and
    // versions counting up by one per record.
    let mut version = 0;
    for (command, raw) in commands.iter().zip(&raw) {
        let ops: Vec<(Vec<u8>, Option<Vec<u8>>)> = match command {
            Command::Set { key, value } => vec![(key.clone(), Some(value.clone()))],
            Command::Delete { key } => vec![(key.clone(), None)],
            Command::Batch { ops, .. } => ops
                .iter()
                .map(|op| (op.key().to_vec(), op.value().map(<[u8]>::to_vec)))
                .collect(),
        };
        let on_disk: Vec<(Vec<u8>, Option<Vec<u8>>)> = raw
            .records
            .iter()
            .map(|r| (r.key.clone(), r.value.clone()))
            .collect();
        assert_eq!(on_disk, ops);
        for record in &raw.records {
            version += 1;
            assert_eq!(record.version, version);
        }
    }
    assert!(segment_ids(&dir).len() >= 5, "several sealed segments");
    FlipFixture {
        _tmp: tmp,
        dir,
        config,
        commands,
        raw,
    }
}

/// Where in a record a flip lands.
#[derive(Clone, Copy, Debug)]
enum Field {
    Crc,
    Version,
    LogIndex,
    Kind,
    Flags,
    KeyLen,
    /// The most significant byte of the key length.
    KeyLenTop,
    ValueLen,
    /// The most significant byte of the value length.
    ValueLenTop,
    Key,
    /// The last byte of the value (or of the key, for a tombstone).
    LastByte,
}

const FIELDS: [Field; 9] = [
    Field::Crc,
    Field::Version,
    Field::LogIndex,
    Field::Kind,
    Field::Flags,
    Field::KeyLen,
    Field::ValueLen,
    Field::Key,
    Field::LastByte,
];

impl Field {
    fn offset_in(self, record: &RawRecord) -> usize {
        match self {
            Field::Crc => 1,
            Field::Version => 4,
            Field::LogIndex => 12,
            Field::Kind => 20,
            Field::Flags => 21,
            Field::KeyLen => 22,
            Field::KeyLenTop => 23,
            Field::ValueLen => 24,
            Field::ValueLenTop => 27,
            Field::Key => RECORD_HEADER_LEN,
            Field::LastByte => record.len - 1,
        }
    }
}

/// Flips `mask` at `record_index` of command `target`: a strict open fails
/// naming the file and the damaged record; a salvage open drops exactly that
/// command; a later strict open is clean.
fn check_record_flip(fx: &FlipFixture, target: usize, record_index: usize, field: Field, mask: u8) {
    let command = &fx.raw[target];
    let record = &command.records[record_index];
    let at = record.offset + field.offset_in(record);
    let name = segment_file_name(command.segment);
    let context = format!(
        "flip {mask:#04x} at {name}:{at} ({field:?} of record {record_index} of command {target}, \
         bytes {}..{})",
        command.start, command.end
    );
    let tmp = copy_store(&fx.dir);
    let config = with_dir(&fx.config, tmp.path());
    let path = segment_path(tmp.path(), command.segment);
    let pristine = fs::read(&path).unwrap();
    let mut damaged = pristine.clone();
    damaged[at] ^= mask;
    fs::write(&path, &damaged).unwrap();

    // Strict: refused, naming the file and the damaged record.
    match KvEngine::open(config.clone()) {
        Err(Error::Corruption(c)) => {
            assert_eq!(c.file, name, "{context}");
            assert_eq!(c.offset, record.offset as u64, "{context}: {c}");
            let message = Error::Corruption(c.clone()).to_string();
            assert!(
                message.contains(&name) && message.contains(&record.offset.to_string()),
                "{context}: {message}"
            );
        }
        Err(other) => panic!("{context}: expected corruption, got {other}"),
        Ok(_) => panic!("{context}: a damaged sealed segment was accepted"),
    }
    assert_eq!(
        fs::read(&path).unwrap(),
        damaged,
        "{context}: strict open wrote"
    );
    let verdicts = verify_segments(&config).unwrap();
    for verdict in &verdicts {
        if verdict.file == name {
            assert!(
                matches!(&verdict.verdict, SegmentVerdict::Corrupt { offset, .. }
                    if *offset == record.offset as u64),
                "{context}: {verdict:?}"
            );
        } else {
            assert_eq!(
                verdict.verdict,
                SegmentVerdict::Ok,
                "{context}: {verdict:?}"
            );
        }
    }

    // Salvage: everything but the damaged command.
    let salvage = Config {
        recovery: RecoveryMode::Salvage,
        ..config.clone()
    };
    let engine = KvEngine::open(salvage)
        .unwrap_or_else(|err| panic!("{context}: salvage open failed: {err}"));
    assert_same(
        &contents(&engine),
        &fx.model_without(Some(target)),
        &context,
    );
    let report = engine.stats().recovery;
    assert_eq!(report.salvaged.len(), 1, "{context}: {report:?}");
    let note = &report.salvaged[0];
    assert_eq!(note.segment, name, "{context}");
    assert_eq!(
        note.original_kept_as,
        format!("{name}.corrupt"),
        "{context}"
    );
    let in_segment = fx.in_segment(command.segment);
    assert_eq!(note.commands_kept, in_segment.len() as u64 - 1, "{context}");
    assert_eq!(note.dropped.len(), 1, "{context}: {note:?}");
    let (start, end, reason) = &note.dropped[0];
    assert_eq!(
        (*start, *end),
        (command.start as u64, command.end as u64),
        "{context}: {reason}"
    );
    assert!(!reason.is_empty());
    // A write after salvage works and survives.
    engine.put(b"after-salvage", b"ok").unwrap();
    engine.close().unwrap();

    assert_eq!(
        fs::read(tmp.path().join(format!("{name}.corrupt"))).unwrap(),
        damaged,
        "{context}: the original is kept untouched"
    );
    // The rewritten segment is the original minus the damaged command.
    let mut rewritten = pristine[..SEGMENT_HEADER_LEN].to_vec();
    for &i in &in_segment {
        if i != target {
            rewritten.extend_from_slice(&pristine[fx.raw[i].start..fx.raw[i].end]);
        }
    }
    let on_disk = fs::read(&path).unwrap();
    if fx.raw.last().unwrap().segment == command.segment {
        // The active segment also holds the write made after salvage.
        assert_eq!(&on_disk[..rewritten.len()], &rewritten[..], "{context}");
    } else {
        assert_eq!(on_disk, rewritten, "{context}");
    }

    // A strict open afterwards is clean and has the same data.
    let engine = KvEngine::open(config.clone())
        .unwrap_or_else(|err| panic!("{context}: strict open after salvage failed: {err}"));
    let mut expected = fx.model_without(Some(target));
    expected.insert(b"after-salvage".to_vec(), b"ok".to_vec());
    assert_same(&contents(&engine), &expected, &context);
    assert!(engine.stats().recovery.salvaged.is_empty());
    drop(engine);
    assert_verifies_clean(&config, &context);
}

#[test]
fn bit_flips_in_a_sealed_segment_are_refused_then_salvaged() {
    let fx = flip_fixture();
    let ids = segment_ids(&fx.dir);
    let sealed = ids[1];
    let commands = fx.in_segment(sealed);
    assert!(commands.len() >= 4, "{commands:?}");
    // The first, a middle and the last command of a sealed segment, in
    // every field of their first record.
    let single = |i: &usize| fx.raw[*i].records.len() == 1;
    let middle = *commands[1..commands.len() - 1]
        .iter()
        .find(|i| single(i))
        .expect("a single-record command in the middle");
    for target in [commands[0], middle, *commands.last().unwrap()] {
        for field in FIELDS {
            check_record_flip(&fx, target, 0, field, 0x01);
        }
    }
    // High bits too: a huge key or value length, an unknown kind or flag.
    for field in [
        Field::KeyLenTop,
        Field::ValueLenTop,
        Field::Kind,
        Field::Flags,
    ] {
        check_record_flip(&fx, middle, 0, field, 0x80);
    }
    check_record_flip(&fx, middle, 0, Field::ValueLen, 0x10);
}

#[test]
fn a_bit_flip_inside_a_batch_drops_the_whole_batch() {
    let fx = flip_fixture();
    let ids = segment_ids(&fx.dir);
    let last_segment = *ids.last().unwrap();
    let batches: Vec<usize> = (0..fx.raw.len())
        .filter(|&i| fx.raw[i].records.len() >= 3 && fx.raw[i].segment != last_segment)
        .collect();
    assert!(batches.len() >= 2, "batches in sealed segments");
    for &target in &batches[..2] {
        let records = fx.raw[target].records.len();
        check_record_flip(&fx, target, 0, Field::Key, 0x04);
        check_record_flip(&fx, target, 1, Field::Version, 0x01);
        check_record_flip(&fx, target, 1, Field::Flags, 0x02);
        check_record_flip(&fx, target, records - 1, Field::LastByte, 0x20);
        check_record_flip(&fx, target, records - 1, Field::Flags, 0x01);
    }
}

#[test]
fn damage_in_the_active_segment_with_valid_data_after_is_not_a_torn_tail() {
    let fx = flip_fixture();
    let last_segment = *segment_ids(&fx.dir).last().unwrap();
    let commands = fx.in_segment(last_segment);
    assert!(commands.len() >= 2, "{commands:?}");
    check_record_flip(&fx, commands[0], 0, Field::Key, 0x01);
}

/// Flips a segment header byte: what a strict open says.
fn check_header_flip(fx: &FlipFixture, at: usize, mask: u8, expect: impl Fn(&Error) -> bool) {
    let id = segment_ids(&fx.dir)[2];
    let name = segment_file_name(id);
    let context = format!("flip {mask:#04x} at byte {at} of the header of {name}");
    let tmp = copy_store(&fx.dir);
    let config = with_dir(&fx.config, tmp.path());
    let path = segment_path(tmp.path(), id);
    let pristine = fs::read(&path).unwrap();
    let mut damaged = pristine.clone();
    damaged[at] ^= mask;
    fs::write(&path, &damaged).unwrap();
    let err = match KvEngine::open(config.clone()) {
        Err(err) => err,
        Ok(_) => panic!("{context}: accepted"),
    };
    assert!(expect(&err), "{context}: got {err:?}");
    let verdicts = verify_segments(&config).unwrap();
    let verdict = verdicts.iter().find(|v| v.file == name).unwrap();
    assert!(verdict.verdict.is_corrupt(), "{context}: {verdict:?}");
    let salvage = Config {
        recovery: RecoveryMode::Salvage,
        ..config.clone()
    };
    if let Error::UnsupportedFormat { .. } = err {
        // As far as the engine can tell this is not damage: salvage
        // refuses too, and nothing is rewritten.
        assert!(
            matches!(
                KvEngine::open(salvage),
                Err(Error::UnsupportedFormat { .. })
            ),
            "{context}"
        );
        assert_eq!(fs::read(&path).unwrap(), damaged, "{context}");
        assert!(!tmp.path().join(format!("{name}.corrupt")).exists());
        return;
    }
    // Salvage rewrites the header and keeps every record.
    let engine = KvEngine::open(salvage).unwrap_or_else(|err| panic!("{context}: {err}"));
    assert_same(&contents(&engine), &fx.model_without(None), &context);
    let report = engine.stats().recovery;
    assert_eq!(report.salvaged.len(), 1, "{context}");
    let note = &report.salvaged[0];
    assert_eq!(note.segment, name);
    assert_eq!(note.dropped.len(), 1, "{context}: {note:?}");
    assert_eq!(
        (note.dropped[0].0, note.dropped[0].1),
        (0, SEGMENT_HEADER_LEN as u64)
    );
    assert!(note.dropped[0].2.contains("header"), "{note:?}");
    drop(engine);
    assert_eq!(
        fs::read(&path).unwrap(),
        pristine,
        "{context}: the header is rewritten as it was"
    );
    assert_eq!(
        fs::read(tmp.path().join(format!("{name}.corrupt"))).unwrap(),
        damaged
    );
    let engine = KvEngine::open(config.clone()).unwrap();
    assert_same(&contents(&engine), &fx.model_without(None), &context);
    drop(engine);
    assert_verifies_clean(&config, &context);
}

#[test]
fn bit_flips_in_a_segment_header() {
    let fx = flip_fixture();
    let name = segment_file_name(segment_ids(&fx.dir)[2]);
    let corrupt_at = |offset: u64, words: &'static str| {
        let name = name.clone();
        move |err: &Error| {
            matches!(err, Error::Corruption(c)
                if c.file == name && c.offset == offset && c.reason.contains(words))
        }
    };
    check_header_flip(&fx, 0, 0x01, corrupt_at(0, "magic"));
    check_header_flip(&fx, 7, 0x40, corrupt_at(0, "magic"));
    // The version, flags, segment id and the checksum itself are covered by
    // the checksum, which is checked before the version: a damaged version
    // is corruption, not a newer format.
    check_header_flip(&fx, 8, 0x01, corrupt_at(24, "checksum"));
    check_header_flip(&fx, 8, 0x02, corrupt_at(24, "checksum"));
    check_header_flip(&fx, 13, 0x01, corrupt_at(24, "checksum"));
    check_header_flip(&fx, 16, 0x01, corrupt_at(24, "checksum"));
    check_header_flip(&fx, 21, 0x10, corrupt_at(24, "checksum"));
    check_header_flip(&fx, 25, 0x08, corrupt_at(24, "checksum"));
    // The reserved bytes are not covered by the checksum but must be zero.
    check_header_flip(&fx, 29, 0x04, corrupt_at(28, "reserved"));
}

// ---------------------------------------------------------------------------
// Refusals.
// ---------------------------------------------------------------------------

/// Rewrites a segment header as a newer format would write it.
fn set_format_version(path: &Path, version: u32) {
    let mut bytes = fs::read(path).unwrap();
    bytes[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32fast::hash(&bytes[0..24]);
    bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_newer_format_version_is_refused_naming_the_file() {
    let fx = flip_fixture();
    let ids = segment_ids(&fx.dir);
    for id in [ids[0], ids[3], *ids.last().unwrap()] {
        let name = segment_file_name(id);
        let tmp = copy_store(&fx.dir);
        let config = with_dir(&fx.config, tmp.path());
        let path = segment_path(tmp.path(), id);
        set_format_version(&path, 3);
        let before = fs::read(&path).unwrap();
        for recovery in [RecoveryMode::Strict, RecoveryMode::Salvage] {
            let config = Config {
                recovery,
                ..config.clone()
            };
            match KvEngine::open(config) {
                Err(
                    err @ Error::UnsupportedFormat {
                        found: 3,
                        supported: 2,
                        ..
                    },
                ) => {
                    let message = err.to_string();
                    assert!(
                        message.contains(&name) && message.contains("format version 3"),
                        "{message}"
                    );
                    let Error::UnsupportedFormat { file, .. } = err else {
                        unreachable!()
                    };
                    assert_eq!(file, name);
                }
                Err(other) => {
                    panic!("{name}, {recovery:?}: expected UnsupportedFormat, got {other}")
                }
                Ok(_) => panic!("{name}, {recovery:?}: a newer format was accepted"),
            }
        }
        assert_eq!(fs::read(&path).unwrap(), before, "nothing is rewritten");
        assert_eq!(segment_ids(tmp.path()), ids, "no segment added or removed");
        assert!(!tmp.path().join(format!("{name}.corrupt")).exists());
        let verdicts = verify_segments(&config).unwrap();
        let verdict = verdicts.iter().find(|v| v.file == name).unwrap();
        assert!(
            matches!(&verdict.verdict, SegmentVerdict::Corrupt { reason, .. }
                if reason.contains("format version 3")),
            "{verdict:?}"
        );
    }
}

#[test]
fn a_data_dir_that_is_a_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    fs::write(&file, b"precious").unwrap();
    match KvEngine::open(Config::new(&file)) {
        Err(err @ Error::NotADirectory { .. }) => {
            assert!(
                err.to_string().contains(&file.display().to_string()),
                "{err}"
            );
            let Error::NotADirectory { path } = err else {
                unreachable!()
            };
            assert_eq!(path, file);
        }
        Err(other) => panic!("expected NotADirectory, got {other}"),
        Ok(_) => panic!("a regular file was opened as a store"),
    }
    assert_eq!(
        fs::read(&file).unwrap(),
        b"precious",
        "the file is untouched"
    );
}

#[test]
fn a_second_open_is_refused_naming_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let config = Config::new(tmp.path());
    let engine = KvEngine::open(config.clone()).unwrap();
    engine.put(b"k", b"v").unwrap();
    let pid = format!("pid {}", std::process::id());
    for recovery in [RecoveryMode::Strict, RecoveryMode::Salvage] {
        let second = Config {
            recovery,
            ..config.clone()
        };
        match KvEngine::open(second) {
            Err(err @ Error::Locked { .. }) => {
                let message = err.to_string();
                assert!(message.contains(&pid), "{message}");
                assert!(
                    message.contains(&tmp.path().display().to_string()),
                    "{message}"
                );
                let Error::Locked { holder, path } = err else {
                    unreachable!()
                };
                assert!(holder.contains(&pid), "{holder}");
                assert_eq!(path, tmp.path());
            }
            Err(other) => panic!("expected Locked, got {other}"),
            Ok(_) => panic!("a store was opened twice"),
        }
    }
    // The refused open disturbed nothing.
    engine.put(b"k2", b"v2").unwrap();
    assert_eq!(engine.get(b"k").unwrap().unwrap(), b"v");
    drop(engine);
    let engine = KvEngine::open(config).unwrap();
    assert_eq!(engine.get(b"k2").unwrap().unwrap(), b"v2");
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let config = Config {
        max_key_bytes: 16,
        max_value_bytes: 64,
        max_batch_ops: 4,
        max_batch_bytes: 256,
        ..Config::new(tmp.path())
    };
    let engine = KvEngine::open(config.clone()).unwrap();
    engine.put(b"present", b"value").unwrap();
    engine
        .apply(Command::Batch {
            conditions: vec![],
            ops: vec![op_set("a", b"1"), op_set("b", b"2")],
        })
        .unwrap();
    let files = |dir: &Path| -> Vec<(u32, Vec<u8>)> {
        segment_ids(dir)
            .into_iter()
            .map(|id| (id, fs::read(segment_path(dir, id)).unwrap()))
            .collect()
    };
    let before = engine.stats();
    let files_before = files(tmp.path());
    let contents_before = contents(&engine);

    let key17 = "k".repeat(17);
    let big = |key: &str| op_set(key, &[7; 64]);
    let cases: Vec<(Command, InputError)> = vec![
        (set("", b"v"), InputError::EmptyKey),
        (Command::Delete { key: vec![] }, InputError::EmptyKey),
        (
            set(&key17, b"v"),
            InputError::KeyTooLarge { len: 17, max: 16 },
        ),
        (
            Command::Delete {
                key: key17.clone().into_bytes(),
            },
            InputError::KeyTooLarge { len: 17, max: 16 },
        ),
        (
            set("present", &[0; 65]),
            InputError::ValueTooLarge { len: 65, max: 64 },
        ),
        (
            Command::Batch {
                conditions: vec![],
                ops: (0..5).map(|i| op_set(&format!("n{i}"), b"x")).collect(),
            },
            InputError::BatchTooManyOps { ops: 5, max: 4 },
        ),
        (
            Command::Batch {
                conditions: (0..5).map(|i| absent(&format!("c{i}"))).collect(),
                ops: vec![op_set("new", b"x")],
            },
            InputError::TooManyConditions {
                conditions: 5,
                max: 4,
            },
        ),
        (
            Command::Batch {
                conditions: vec![],
                ops: vec![big("x1"), big("x2"), big("x3")],
            },
            InputError::BatchTooLarge {
                bytes: 3 * (RECORD_HEADER_LEN as u64 + 2 + 64),
                max: 256,
            },
        ),
        (
            Command::Batch {
                conditions: vec![],
                ops: vec![op_set("fine", b"x"), op_del("")],
            },
            InputError::EmptyKey,
        ),
        (
            Command::Batch {
                conditions: vec![absent("")],
                ops: vec![op_set("fine", b"x")],
            },
            InputError::EmptyKey,
        ),
        (
            Command::Batch {
                conditions: vec![],
                ops: vec![op_set("fine", b"x"), op_set("present", &[1; 65])],
            },
            InputError::ValueTooLarge { len: 65, max: 64 },
        ),
    ];
    for (command, expected) in cases {
        match engine.apply(command.clone()) {
            Err(Error::Input(err)) => assert_eq!(err, expected, "{command:?}"),
            Err(other) => panic!("{command:?}: expected {expected:?}, got {other}"),
            Ok(applied) => panic!("{command:?} was accepted: {applied:?}"),
        }
    }
    // The convenience calls validate the same way.
    assert!(matches!(
        engine.put(b"", b"v"),
        Err(Error::Input(InputError::EmptyKey))
    ));
    assert!(matches!(
        engine.put(b"k", [0; 65]),
        Err(Error::Input(InputError::ValueTooLarge { .. }))
    ));
    assert!(matches!(
        engine.delete(key17.as_bytes()),
        Err(Error::Input(InputError::KeyTooLarge { .. }))
    ));

    let after = engine.stats();
    assert_eq!(after.storage, before.storage, "storage stats changed");
    assert_eq!(after.metrics, before.metrics, "metrics changed");
    assert_eq!(files(tmp.path()), files_before, "bytes were appended");
    assert_eq!(contents(&engine), contents_before);
    assert!(
        after.storage.poisoned.is_none(),
        "bad input does not poison"
    );

    // Still writable, and the refused commands left nothing behind.
    engine.put(b"later", b"fine").unwrap();
    drop(engine);
    let engine = KvEngine::open(config).unwrap();
    let mut expected = contents_before;
    expected.insert(b"later".to_vec(), b"fine".to_vec());
    assert_same(&contents(&engine), &expected, "after reopen");
}

// ---------------------------------------------------------------------------
// Injected I/O faults.
// ---------------------------------------------------------------------------

/// Counts every I/O step by kind, failing none.
#[derive(Default)]
struct CountSteps(Mutex<HashMap<IoOp, u64>>);

impl IoFaults for CountSteps {
    fn check(&self, op: IoOp, _file: &str) -> io::Result<()> {
        *self.0.lock().unwrap().entry(op).or_default() += 1;
        Ok(())
    }
}

fn fault_config(dir: &Path) -> Config {
    Config {
        sync: SyncMode::Always,
        segment_size_bytes: 4096,
        ..Config::new(dir)
    }
}

const FAULT_GROUPS: u64 = 40;

/// What a workload under faults did.
struct FaultRun {
    /// The state every acknowledged write implies.
    acked: Model,
    /// The commands of the group that failed first, in order: each may or
    /// may not have reached the disk.
    unacknowledged: Vec<Command>,
    failed: bool,
}

/// A deterministic workload: groups of 1–4 commands (puts, overwrites,
/// deletes, conditional batches with a delete, batches whose condition
/// fails), each group committed together: single commands through
/// `KvEngine::apply`, larger groups through `KvState::apply_group` (what the
/// commit queue's leader calls). Segments are 4 KiB, so groups straddle
/// segment rolls.
fn fault_workload(engine: &KvEngine, context: &str) -> FaultRun {
    let mut rng = Rng::new(2);
    let mut run = FaultRun {
        acked: Model::new(),
        unacknowledged: Vec::new(),
        failed: false,
    };
    for g in 0..FAULT_GROUPS {
        let mut touched: Vec<Vec<u8>> = Vec::new();
        let mut group = Vec::new();
        for c in 0..1 + rng.below(4) {
            let candidates: Vec<Vec<u8>> = run
                .acked
                .keys()
                .filter(|k| !touched.contains(k))
                .cloned()
                .collect();
            let mut pick = |rng: &mut Rng| -> Option<Vec<u8>> {
                if candidates.len() < 4 {
                    return None;
                }
                let key = candidates[rng.below(candidates.len() as u64) as usize].clone();
                touched.push(key.clone());
                Some(key)
            };
            let name = format!("g{g}c{c}");
            let command = match rng.below(8) {
                0 => match pick(&mut rng) {
                    Some(key) => Command::Delete { key },
                    None => set(&name, b"small"),
                },
                1 => match pick(&mut rng) {
                    Some(key) => {
                        let value = value_for(&name, rng.below(300) as usize);
                        Command::Set { key, value }
                    }
                    None => set(&name, b"small"),
                },
                2 | 3 => {
                    let mut ops: Vec<Op> = (0..2 + rng.below(3))
                        .map(|j| {
                            let key = format!("{name}.{j}");
                            op_set(&key, &value_for(&key, 20 + rng.below(200) as usize))
                        })
                        .collect();
                    if let Some(key) = pick(&mut rng) {
                        ops.push(Op::Delete { key });
                    }
                    Command::Batch {
                        conditions: vec![absent(&format!("{name}.0"))],
                        ops,
                    }
                }
                4 => match pick(&mut rng) {
                    // Condition fails: writes nothing.
                    Some(key) => Command::Batch {
                        conditions: vec![Condition::Absent { key }],
                        ops: vec![op_set(&name, b"never")],
                    },
                    None => set(&name, b"small"),
                },
                _ => set(&name, &value_for(&name, 30 + rng.below(500) as usize)),
            };
            group.push(command);
        }
        let results: Vec<Result<Outcome, Error>> = if group.len() == 1 {
            vec![engine.apply(group[0].clone()).map(|a| a.outcome)]
        } else {
            let first = engine.state().last_applied() + 1;
            let numbered: Vec<(u64, &Command)> = group
                .iter()
                .enumerate()
                .map(|(i, command)| (first + i as u64, command))
                .collect();
            engine.apply_group(&numbered)
        };
        if results.iter().all(Result::is_ok) {
            for (command, result) in group.iter().zip(results) {
                let outcome = result.unwrap();
                let mut after = run.acked.clone();
                apply_to_model(&mut after, command);
                let wrote = after != run.acked;
                match (command, outcome) {
                    (Command::Set { .. }, Outcome::Set { .. })
                    | (Command::Delete { .. }, Outcome::Deleted { version: Some(_) }) => {}
                    (Command::Batch { ops, .. }, Outcome::Batch { applied_ops, .. })
                        if wrote && applied_ops as usize == ops.len() => {}
                    (Command::Batch { .. }, Outcome::ConditionFailed { .. }) if !wrote => {}
                    (command, outcome) => {
                        panic!("{context}: {command:?} gave {outcome:?}")
                    }
                }
                run.acked = after;
            }
            continue;
        }
        // The first failure: the whole group is unacknowledged.
        for result in &results {
            match result {
                Err(err @ (Error::Io { .. } | Error::Poisoned { .. })) => assert!(
                    err.to_string().contains("injected"),
                    "{context}: the error names the failed step: {err}"
                ),
                Err(other) => panic!("{context}: unexpected error {other}"),
                Ok(outcome) => {
                    panic!("{context}: {outcome:?} acknowledged in a group whose I/O failed")
                }
            }
        }
        run.unacknowledged = group;
        run.failed = true;
        return run;
    }
    run
}

/// A failed step that belonged to writing a sealed segment's metadata
/// (after the commit that sealed it), or to writing zeros ahead of the tail
/// after a write's bytes were appended, fails no write: the writes were
/// applied and acknowledged, the failure is counted, and the store keeps
/// accepting writes (metadata is written again later, or rebuilt on open).
fn check_non_fatal_failure_did_not_fail_writes(
    engine: &KvEngine,
    run: &FaultRun,
    sticky: bool,
    context: &str,
) {
    let stats = engine.stats();
    assert!(
        stats.metrics.non_fatal_io_failures > 0,
        "{context}: no write failed, so the failed step must have been a non-fatal one"
    );
    assert!(stats.storage.poisoned.is_none(), "{context}: poisoned");
    for (key, value) in &run.acked {
        assert_eq!(
            engine.get(key).unwrap().as_ref(),
            Some(value),
            "{context}: {key:?} acknowledged"
        );
    }
    if sticky {
        // Every later step of this kind fails too: the next write may.
        return;
    }
    engine
        .put(b"after-non-fatal-failure", b"x")
        .unwrap_or_else(|err| panic!("{context}: a write after a non-fatal failure: {err}"));
    engine.delete(b"after-non-fatal-failure").unwrap();
}

/// After the first failure: writes are refused, reads still work, and
/// nothing unacknowledged became visible.
fn check_poisoned(engine: &KvEngine, run: &FaultRun, context: &str) {
    assert!(
        engine.stats().storage.poisoned.is_some(),
        "{context}: not poisoned"
    );
    let refusals = [
        engine.put(b"after-failure", b"x").map(|_| ()),
        engine
            .delete(run.acked.keys().next().map_or(&b"x"[..], |k| k.as_slice()))
            .map(|_| ()),
        engine
            .apply(Command::Batch {
                conditions: vec![],
                ops: vec![op_set("after-1", b"1"), op_set("after-2", b"2")],
            })
            .map(|_| ()),
        engine.flush(),
    ];
    for refused in refusals {
        match refused {
            Err(err @ Error::Poisoned { .. }) => assert!(
                err.to_string().contains("injected"),
                "{context}: the refusal names the first failure: {err}"
            ),
            Err(other) => panic!("{context}: expected Poisoned, got {other}"),
            Ok(()) => panic!("{context}: a write was accepted after an I/O failure"),
        }
    }
    for (key, value) in &run.acked {
        assert_eq!(
            engine.get(key).unwrap().as_ref(),
            Some(value),
            "{context}: read of {}",
            show(key)
        );
    }
    assert_same(&contents(engine), &run.acked, context);
}

/// Reopened without faults: every acknowledged write, plus some prefix of
/// the failed group's commands, each whole.
fn check_recovered(dir: &Path, run: &FaultRun, context: &str) {
    let config = fault_config(dir);
    let engine = KvEngine::open(config.clone())
        .unwrap_or_else(|err| panic!("{context}: reopen without faults failed: {err}"));
    let actual = contents(&engine);
    let mut candidate = run.acked.clone();
    let mut matched = actual == candidate;
    for command in &run.unacknowledged {
        if matched {
            break;
        }
        apply_to_model(&mut candidate, command);
        matched = actual == candidate;
    }
    if !matched {
        assert_same(&actual, &run.acked, context);
    }
    engine.put(b"after-reopen", b"writable").unwrap();
    engine.close().unwrap();
    assert_verifies_clean(&config, context);
}

fn fault_step_counts() -> HashMap<IoOp, u64> {
    let tmp = tempfile::tempdir().unwrap();
    let counter = Arc::new(CountSteps::default());
    let options = EngineOptions {
        io_faults: Some(counter.clone()),
        // Deterministic steps: segment metadata is written after the
        // commit that sealed its segment, not by a maintenance thread.
        background_threads: false,
        ..EngineOptions::default()
    };
    let engine = KvEngine::open_with(fault_config(tmp.path()), options).unwrap();
    let run = fault_workload(&engine, "counting run");
    assert!(!run.failed);
    let segments = segment_ids(tmp.path()).len();
    assert!(segments >= 5, "the workload rolls segments: {segments}");
    // Counted before the engine closes: only the workload's steps.
    let counts = counter.0.lock().unwrap().clone();
    drop(engine);
    counts
}

/// How many steps of `op` opening an empty store takes.
fn steps_to_open(op: IoOp) -> u64 {
    let tmp = tempfile::tempdir().unwrap();
    let counter = Arc::new(CountSteps::default());
    let options = EngineOptions {
        io_faults: Some(counter.clone()),
        // Deterministic steps: segment metadata is written after the
        // commit that sealed its segment, not by a maintenance thread.
        background_threads: false,
        ..EngineOptions::default()
    };
    let engine = KvEngine::open_with(fault_config(tmp.path()), options).unwrap();
    let steps = counter.0.lock().unwrap().get(&op).copied().unwrap_or(0);
    drop(engine);
    steps
}

/// Fails step `nth` of `op` (once, or from then on if `sticky`) during the
/// workload and checks everything above.
fn check_fault(op: IoOp, nth: u64, sticky: bool) {
    let context = format!(
        "{op:?} step {nth} fails{}",
        if sticky { " (sticky)" } else { "" }
    );
    let tmp = tempfile::tempdir().unwrap();
    let faults = Arc::new(FailNth::new(op, nth, sticky));
    let options = EngineOptions {
        io_faults: Some(faults.clone()),
        // Deterministic steps: segment metadata is written after the
        // commit that sealed its segment, not by a maintenance thread.
        background_threads: false,
        ..EngineOptions::default()
    };
    let run = match KvEngine::open_with(fault_config(tmp.path()), options) {
        Ok(engine) => {
            let run = fault_workload(&engine, &context);
            if run.failed {
                check_poisoned(&engine, &run, &context);
            } else {
                check_non_fatal_failure_did_not_fail_writes(&engine, &run, sticky, &context);
            }
            run
        }
        Err(err) => {
            // The step belonged to creating the first segment.
            assert!(err.to_string().contains("injected"), "{context}: {err}");
            FaultRun {
                acked: Model::new(),
                unacknowledged: Vec::new(),
                failed: true,
            }
        }
    };
    assert!(faults.seen() > nth, "{context}: the step was reached");
    check_recovered(tmp.path(), &run, &context);
}

fn check_fault_steps(op: IoOp) {
    let total = fault_step_counts()[&op];
    assert!(total >= 5, "{op:?} happens {total} times");
    for nth in 0..total {
        check_fault(op, nth, false);
        check_fault(op, nth, true);
    }
}

#[test]
fn failed_writes_poison_and_reopen_recovers() {
    check_fault_steps(IoOp::Write);
}

#[test]
fn failed_file_syncs_poison_and_reopen_recovers() {
    check_fault_steps(IoOp::SyncFile);
}

#[test]
fn failed_directory_syncs_creates_and_truncates_poison_and_reopen_recovers() {
    check_fault_steps(IoOp::SyncDir);
    check_fault_steps(IoOp::Create);
    check_fault_steps(IoOp::Truncate);
}

// ---------------------------------------------------------------------------
// Engine bugs found by the tests above, reduced to their smallest form.
// ---------------------------------------------------------------------------

/// A transient write error while a segment roll flushes the group's earlier
/// commands (the preallocation after the data write fails) once left those
/// bytes in the writer's buffer although they were written; the group then
/// wrote the buffer again. The records appeared twice, versions went
/// backwards, and every later open — strict or salvage — refused the store.
/// Now a failed preallocation after the bytes are written fails nothing:
/// both commands are acknowledged and recorded exactly once.
#[test]
fn a_failed_preallocation_during_a_roll_does_not_duplicate_records() {
    let tmp = tempfile::tempdir().unwrap();
    let config = fault_config(tmp.path());
    // After the writes that create segment 1 (its header and preallocated
    // zeros) come the roll's write of command "a", then the zeros after it:
    // that one fails, once.
    let nth = steps_to_open(IoOp::Write) + 1;
    let faults = Arc::new(FailNth::new(IoOp::Write, nth, false));
    let options = EngineOptions {
        io_faults: Some(faults.clone()),
        background_threads: false,
        ..EngineOptions::default()
    };
    let engine = KvEngine::open_with(config.clone(), options).unwrap();
    // "a" takes 629 bytes (past half the 1 KiB preallocated); "b" does not
    // fit in the rest of the 4 KiB segment, so staging it rolls first.
    let a = set("a", &[b'a'; 600]);
    let b = set("b", &[b'b'; 3500]);
    let results = engine.apply_group(&[(1, &a), (2, &b)]);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(faults.seen() > nth, "the failing step was reached");
    assert_eq!(engine.stats().metrics.non_fatal_io_failures, 1);
    drop(engine);

    for recovery in [RecoveryMode::Strict, RecoveryMode::Salvage] {
        let engine = KvEngine::open(Config {
            recovery,
            ..config.clone()
        })
        .unwrap_or_else(|err| panic!("{recovery:?} reopen failed: {err}"));
        assert_eq!(engine.get(b"a").unwrap().unwrap(), [b'a'; 600]);
        assert_eq!(engine.get(b"b").unwrap().unwrap(), [b'b'; 3500]);
        assert!(engine.stats().recovery.salvaged.is_empty());
    }
    let records: usize = segment_ids(tmp.path())
        .iter()
        .map(|&id| parse_segment(&fs::read(segment_path(tmp.path(), id)).unwrap(), id).len())
        .sum();
    assert_eq!(records, 2, "each command is recorded once");
    assert_verifies_clean(&config, "after the failed preallocation");
}

/// The refusal after a failure repeats its own prefix:
/// "writes are refused until the store is reopened: writes are refused
/// until the store is reopened: fsync …".
#[test]
fn the_poisoned_error_message_has_one_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    // The first put's fsync fails.
    let nth = steps_to_open(IoOp::SyncFile);
    let faults = Arc::new(FailNth::new(IoOp::SyncFile, nth, false));
    let options = EngineOptions {
        io_faults: Some(faults),
        // Deterministic steps: segment metadata is written after the
        // commit that sealed its segment, not by a maintenance thread.
        background_threads: false,
        ..EngineOptions::default()
    };
    let engine = KvEngine::open_with(fault_config(tmp.path()), options).unwrap();
    let failed = engine.put(b"a", b"1").unwrap_err().to_string();
    let refused = engine.put(b"b", b"2").unwrap_err().to_string();
    for message in [failed, refused] {
        assert!(message.contains("injected SyncFile failure"), "{message}");
        assert_eq!(
            message.matches("writes are refused").count(),
            1,
            "{message}"
        );
    }
}

// ---------------------------------------------------------------------------
// Segment metadata
// ---------------------------------------------------------------------------

/// A store whose sealed segments all have metadata, closed; with a budget
/// of one hot entry per shard, so reads after a reopen go through metadata.
fn store_with_metadata(dir: &Path) -> (Config, BTreeMap<Vec<u8>, Vec<u8>>) {
    let config = Config {
        sync: SyncMode::Os,
        segment_size_bytes: 8 << 10,
        hot_index_max_entries: 32,
        ..Config::new(dir)
    };
    let engine = KvEngine::open(config.clone()).unwrap();
    let mut model = BTreeMap::new();
    for i in 0..600u32 {
        let key = format!("meta-key-{i:05}").into_bytes();
        let value = format!("value-{i}").into_bytes();
        engine.put(&key, &value).unwrap();
        model.insert(key, value);
    }
    engine.close().unwrap();
    (config, model)
}

fn meta_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "meta"))
        .collect();
    files.sort();
    files
}

#[test]
fn damaged_metadata_is_reported_by_verify_and_rebuilt_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, model) = store_with_metadata(tmp.path());
    let metas = meta_files(tmp.path());
    assert!(metas.len() >= 3, "{metas:?}");
    // A byte of the offset table, of the first keys, and of the Bloom filter.
    for (meta, at) in [(&metas[0], 130usize), (&metas[1], 0), (&metas[2], 1)] {
        let mut bytes = fs::read(meta).unwrap();
        let at = if at == 0 {
            bytes.len() - 20
        } else if at == 1 {
            bytes.len() - 1
        } else {
            at
        };
        bytes[at] ^= 0x40;
        fs::write(meta, &bytes).unwrap();
    }
    let verdicts = verify_segments(&config).unwrap();
    let unusable = verdicts
        .iter()
        .filter(|v| v.metadata.starts_with("unusable"))
        .count();
    assert_eq!(unusable, 3, "verify reports each file: {verdicts:?}");

    let engine = KvEngine::open(config.clone()).unwrap();
    assert_eq!(engine.stats().recovery.metadata_rebuilt, 3);
    for (key, value) in &model {
        assert_eq!(engine.get(key).unwrap().as_ref(), Some(value), "{key:?}");
    }
    let listed = engine
        .read()
        .keys_with_prefix(b"meta-key-", None, 10_000)
        .unwrap();
    assert_eq!(listed.len(), model.len());
    engine.close().unwrap();
    let verdicts = verify_segments(&config).unwrap();
    assert!(
        verdicts
            .iter()
            .all(|v| v.metadata == "ok" || v.metadata.starts_with("none")),
        "rebuilt files are sound: {verdicts:?}"
    );
}

#[test]
fn damage_in_a_sealed_segment_behind_its_metadata_is_an_error_not_a_miss() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, model) = store_with_metadata(tmp.path());
    // A byte in the middle of the first segment: its metadata still loads
    // (the tail CRC covers the last 4 KiB only) and open does not read it.
    let path = segment_path(tmp.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    assert!(
        bytes.len() > 4096 + 200,
        "the segment is larger than its checked tail"
    );
    bytes[200] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    let engine = KvEngine::open(config).unwrap();
    let mut errors = 0;
    for (key, value) in &model {
        match engine.get(key) {
            Ok(found) => assert_eq!(found.as_ref(), Some(value), "{key:?}"),
            Err(Error::Corruption(c)) => {
                assert_eq!(c.file, "seg-0000000001.log");
                errors += 1;
            }
            Err(other) => panic!("{key:?}: {other}"),
        }
    }
    assert!(errors >= 1, "the damaged record was reported, not skipped");
}

#[test]
fn missing_or_garbled_metadata_is_rebuilt_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, model) = store_with_metadata(tmp.path());
    let metas = meta_files(tmp.path());
    fs::remove_file(&metas[0]).unwrap();
    fs::write(&metas[1], b"not metadata at all").unwrap();
    let mut header_flip = fs::read(&metas[2]).unwrap();
    header_flip[60] ^= 1;
    fs::write(&metas[2], &header_flip).unwrap();
    let engine = KvEngine::open(config).unwrap();
    assert_eq!(engine.stats().recovery.metadata_rebuilt, 3);
    for (key, value) in &model {
        assert_eq!(engine.get(key).unwrap().as_ref(), Some(value), "{key:?}");
    }
    assert_eq!(
        engine.stats().storage.keys,
        model.len() as u64,
        "counted again"
    );
}

/// A flipped byte inside the last record's value: the record is complete
/// but fails its checksum. That may be damage to an acknowledged write, so
/// it is never dropped silently: verify names it as unverifiable, open cuts
/// it but keeps its bytes beside the segment and reports the cut, and its
/// version is never given to another write.
#[test]
fn a_damaged_last_record_is_kept_reported_and_its_version_never_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let config = Config {
        sync: SyncMode::Always,
        ..Config::new(tmp.path())
    };
    let engine = KvEngine::open(config.clone()).unwrap();
    engine.put(b"a", b"first value").unwrap();
    engine.put(b"b", b"second value").unwrap();
    let c_version = engine.put(b"c", b"third value").unwrap();
    engine.close().unwrap();

    let path = segment_path(tmp.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    let c = parse_segment(&bytes, 1).last().unwrap().clone();
    let original_c = bytes[c.start..c.end].to_vec();
    bytes[c.end - 3] ^= 0x01;
    fs::write(&path, &bytes).unwrap();

    let verdicts = verify_segments(&config).unwrap();
    match &verdicts[0].verdict {
        SegmentVerdict::TornTail {
            offset,
            bytes,
            kind,
        } => {
            assert_eq!((*offset, *bytes), (c.start as u64, original_c.len() as u64));
            assert_eq!(*kind, TailKind::Unverifiable);
            assert!(
                kind.explain()
                    .contains("damage to the last acknowledged write")
            );
        }
        other => panic!("the damaged record is reported, not {other:?}"),
    }

    let engine = KvEngine::open(config.clone()).unwrap();
    assert_eq!(engine.get(b"c").unwrap(), None);
    assert_eq!(engine.get(b"b").unwrap().unwrap(), b"second value");
    let cut = engine
        .stats()
        .recovery
        .tail_cut
        .expect("the cut is reported");
    assert_eq!(cut.kind, TailKind::Unverifiable);
    let kept = fs::read(tmp.path().join(cut.kept_as.unwrap())).unwrap();
    let mut damaged_c = original_c.clone();
    damaged_c[original_c.len() - 3] ^= 0x01;
    assert_eq!(kept, damaged_c, "the damaged record's bytes are kept");
    assert!(cut.versions_skipped_to >= c_version);
    let next = engine.put(b"d", b"fourth").unwrap();
    assert!(
        next > c_version,
        "version {c_version} was cut: {next} is new"
    );
    engine.close().unwrap();
    // The skip survives a reopen (it is recorded in the log).
    let engine = KvEngine::open(config).unwrap();
    assert!(engine.put(b"e", b"fifth").unwrap() > next);
}
