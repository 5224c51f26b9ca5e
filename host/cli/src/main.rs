//! `hightower`: the operator's command line for a Hightower KV data directory.
//!
//! Exit codes (stable, for scripts):
//! 0 success · 1 key not found · 2 bad usage, input or configuration ·
//! 3 data directory locked by another process · 4 corruption or unsupported
//! format found · 5 any other I/O or internal error · 6 a component run by
//! `run` was stopped (trap, panic, time or memory limit). Otherwise `run`
//! exits with the component's own status. `auth` adds 7 (invalid
//! credentials or token) and 8 (username taken, conflict); see auth_cli.rs.

mod auth_cli;
mod config_file;
mod error;

use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use hightower_engine::command::Limits;
use hightower_engine::error::{ConfigError, display_key};
use hightower_engine::storage::{SegmentVerdict, verify_segments};
use hightower_engine::{Config, Error, KvEngine, RecoveryMode};
use hightower_wasm::{SandboxConfig, WasmError, WasmRuntime};

use config_file::FileConfig;
use error::{CliError, EXIT_CORRUPT, EXIT_GUEST_FAULT, EXIT_NOT_FOUND, EXIT_OTHER, EXIT_USAGE};

/// `run`'s default time limit for the whole run.
const DEFAULT_RUN_TIMEOUT_MS: u64 = 30_000;

#[derive(Parser)]
#[command(
    name = "hightower",
    version,
    about = "Hightower KV: an embedded log-structured key-value store for worker nodes",
    after_help = "Exit codes: 0 ok, 1 key not found, 2 bad usage/input/config, 3 data directory locked, \
                  4 corruption or unsupported format, 5 other error, 6 component stopped (run),\n\
                  7 invalid credentials or token (auth), 8 username taken or conflict (auth).\n\
                  Logs go to stderr; set HIGHTOWER_LOG (e.g. info, debug) for more."
)]
struct Cli {
    /// Data directory [default: ./hightower-data, or data_dir from --config].
    #[arg(long, global = true, env = "HIGHTOWER_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// TOML file with any field of the configuration (see README).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: CliCommand,
}

#[derive(Subcommand)]
enum CliCommand {
    /// Store VALUE under KEY and print the new version. VALUE `-` reads stdin (binary-safe).
    Put { key: OsString, value: OsString },
    /// Print the raw value of KEY to stdout; exit 1 if it is absent.
    Get {
        key: OsString,
        /// Print the version on stderr as well.
        #[arg(long)]
        show_version: bool,
    },
    /// Delete KEY and print the tombstone's version; exit 1 if it was absent.
    Delete { key: OsString },
    /// Show key count, disk and index sizes, counters and latencies.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Check every record's checksum and report per segment (changes nothing).
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Write or restore a snapshot: a checksummed image of the whole store.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Compact everything now: seal the active segment, copy the live
    /// records of every segment into new ones, drop overwritten records and
    /// tombstones no longer needed, and delete the old files.
    Compact {
        #[arg(long)]
        json: bool,
    },
    /// List the segments with their sizes, records, live and dead bytes and
    /// metadata; `inspect segment ID` lists one segment's records.
    Inspect {
        #[command(subcommand)]
        what: Option<InspectCommand>,
        #[arg(long, global = true)]
        json: bool,
    },
    /// Open in salvage mode: keep every intact command of damaged segments,
    /// move the originals aside as *.corrupt, and report what was dropped.
    Salvage,
    /// Run a WebAssembly component (a WASI command importing hightower:kv)
    /// in the sandbox, with access to the granted namespaces only. Its
    /// stdout, stderr and exit status are passed through.
    Run {
        /// The component (.wasm) to run.
        component: PathBuf,
        /// A namespace to grant, such as `app/` (repeat for more).
        #[arg(long = "namespace", value_name = "NS", required = true)]
        namespaces: Vec<String>,
        /// Time limit for the whole run, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = DEFAULT_RUN_TIMEOUT_MS)]
        timeout_ms: u64,
        /// Largest size of each linear memory of the component, in bytes
        /// [default: wasm.max_memory_bytes of the configuration, 64 MiB].
        #[arg(long, value_name = "BYTES")]
        max_memory_bytes: Option<u64>,
        /// Arguments for the component (after `--` if they start with `-`).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },
    /// Users, passwords and API keys, kept by the sandboxed auth component
    /// in the namespace `auth/`. Passwords and tokens are read from the
    /// terminal or stdin, never from arguments.
    Auth(auth_cli::AuthArgs),
}

#[derive(Subcommand)]
enum InspectCommand {
    /// List the records of segment ID (the number in seg-ID.log) with
    /// their versions and whether each is still live.
    Segment { id: u32 },
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Write an image of the store to FILE (which must not exist yet). The
    /// file appears only once complete and fsynced.
    Create { file: PathBuf },
    /// Restore FILE into the data directory, which must be missing or empty.
    /// A damaged image is refused and leaves the directory as it was.
    Restore { file: PathBuf },
}

fn main() -> ExitCode {
    init_logging();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("hightower: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// wasmtime-wasi traces every WASI call with its result at `trace`,
/// including the numbers `wasi:random` hands a guest: the auth component
/// derives API-token secrets and data keys from them. Capped whatever
/// HIGHTOWER_LOG says (a later directive for the same target wins).
const WASI_CALL_TRACE_CAP: &str = "wasmtime_wasi=debug";

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HIGHTOWER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
        .add_directive(WASI_CALL_TRACE_CAP.parse().expect("a valid directive"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn load_config(cli: &Cli) -> Result<FileConfig, CliError> {
    let mut config = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
                field: "--config",
                reason: format!("cannot read config file {}: {err}", path.display()),
            })?;
            FileConfig::from_toml(&text)?
        }
        None => FileConfig::default(),
    };
    if let Some(dir) = &cli.data_dir {
        config.engine.data_dir = dir.clone();
    }
    config.engine.validate()?;
    Ok(config)
}

fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let FileConfig {
        engine: config,
        wasm: wasm_config,
        auth: auth_config,
    } = load_config(&cli)?;
    match cli.command {
        CliCommand::Put { key, value } => {
            let value = read_value(&value)?;
            // Refuse bad input before the data directory is created or opened.
            let limits = Limits::from_config(&config);
            limits.check_key(key.as_bytes())?;
            limits.check_value(&value)?;
            let engine = KvEngine::open(config)?;
            let version = engine.put(key.as_bytes(), &value)?;
            engine.close()?;
            println!("{version}");
        }
        CliCommand::Get { key, show_version } => {
            Limits::from_config(&config).check_key(key.as_bytes())?;
            let engine = KvEngine::open(config)?;
            let Some(found) = engine.get_versioned(key.as_bytes())? else {
                eprintln!("hightower: key not found: {}", display_key(key.as_bytes()));
                return Ok(ExitCode::from(EXIT_NOT_FOUND));
            };
            if show_version {
                eprintln!("version {}", found.version);
            }
            write_stdout(&found.value)?;
        }
        CliCommand::Delete { key } => {
            Limits::from_config(&config).check_key(key.as_bytes())?;
            let engine = KvEngine::open(config)?;
            let deleted = engine.delete(key.as_bytes())?;
            engine.close()?;
            match deleted {
                Some(version) => println!("{version}"),
                None => {
                    eprintln!("hightower: key not found: {}", display_key(key.as_bytes()));
                    return Ok(ExitCode::from(EXIT_NOT_FOUND));
                }
            }
        }
        CliCommand::Stats { json } => {
            let engine = KvEngine::open(config)?;
            let stats = engine.stats();
            if json {
                let text = serde_json::to_string_pretty(&stats).expect("stats serialize");
                println!("{text}");
            } else {
                print_stats(&stats);
            }
        }
        CliCommand::Verify { json } => return verify(&config, json),
        CliCommand::Compact { json } => {
            let engine = open_quiet(config)?;
            let report = engine.compact()?;
            engine.close()?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("report serializes")
                );
            } else if report.inputs.is_empty() {
                println!("nothing to compact: the store is empty");
            } else {
                println!(
                    "compacted {} segment(s) ({} bytes) into {} ({} bytes): {} records kept, {} tombstones dropped",
                    report.inputs.len(),
                    report.input_bytes,
                    report.outputs.len(),
                    report.output_bytes,
                    report.records_kept,
                    report.tombstones_dropped
                );
            }
        }
        CliCommand::Inspect { what, json } => {
            let engine = open_quiet(config)?;
            let storage = engine.state().storage();
            match what {
                None => print_segments(&storage.inspect_segments()?, json),
                Some(InspectCommand::Segment { id }) => {
                    print_records(&storage.inspect_records(id)?, json)
                }
            }
            engine.close()?;
        }
        CliCommand::Snapshot(SnapshotCommand::Create { file }) => {
            let engine = KvEngine::open(config)?;
            let info = create_snapshot_file(&engine, &file)?;
            println!(
                "snapshot {}: {} keys at log index {}, {} bytes",
                file.display(),
                info.keys,
                info.last_log_index,
                info.bytes
            );
        }
        CliCommand::Snapshot(SnapshotCommand::Restore { file }) => {
            let mut input = std::fs::File::open(&file)
                .map_err(|source| Error::io(format!("open snapshot {}", file.display()), source))?;
            let mut input = std::io::BufReader::new(&mut input);
            let info = hightower_engine::snapshot::restore_snapshot(config, &mut input)?;
            println!(
                "restored {} keys at log index {}",
                info.keys, info.last_log_index
            );
        }
        CliCommand::Run {
            component,
            namespaces,
            timeout_ms,
            max_memory_bytes,
            args,
        } => {
            // A command runs as one call: it gets the run's time limit, and
            // every other limit from the configuration's [wasm] table.
            let sandbox = SandboxConfig {
                call_timeout_ms: timeout_ms,
                max_memory_bytes: max_memory_bytes.unwrap_or(wasm_config.max_memory_bytes),
                ..wasm_config
            };
            sandbox.validate()?;
            return run_component(config, sandbox, &component, &namespaces, args);
        }
        CliCommand::Auth(args) => {
            return auth_cli::run(config, wasm_config, auth_config, args);
        }
        CliCommand::Salvage => {
            let engine = KvEngine::open(Config {
                recovery: RecoveryMode::Salvage,
                ..config
            })?;
            let report = engine.stats().recovery;
            if report.salvaged.is_empty() {
                println!("no damage found; nothing salvaged");
            }
            for note in &report.salvaged {
                println!(
                    "{}: kept {} commands; original kept as {}",
                    note.segment, note.commands_kept, note.original_kept_as
                );
                for (start, end, reason) in &note.dropped {
                    println!("  dropped bytes {start}..{end}: {reason}");
                }
            }
            engine.close()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `FILE.partial`, fsyncs it, renames it to `FILE`, fsyncs the directory.
fn create_snapshot_file(
    engine: &KvEngine,
    file: &std::path::Path,
) -> Result<hightower_engine::snapshot::SnapshotInfo, Error> {
    if file.exists() {
        return Err(ConfigError {
            field: "snapshot file",
            reason: format!("{} already exists", file.display()),
        }
        .into());
    }
    let partial = PathBuf::from(format!("{}.partial", file.display()));
    let io = |what: &str, path: &std::path::Path| {
        let what = format!("{what} {}", path.display());
        move |source| Error::io(what, source)
    };
    // Owner only, like the data directory: the image holds every value.
    let out = std::os::unix::fs::OpenOptionsExt::mode(
        std::fs::OpenOptions::new().write(true).create_new(true),
        0o600,
    )
    .open(&partial)
    .map_err(io("create", &partial))?;
    let mut writer = std::io::BufWriter::new(out);
    let info = hightower_engine::snapshot::write_snapshot(engine.state().storage(), &mut writer);
    let finished = info.and_then(|info| {
        let out = writer
            .into_inner()
            .map_err(|err| Error::io(format!("write {}", partial.display()), err.into_error()))?;
        out.sync_all().map_err(io("fsync", &partial))?;
        std::fs::rename(&partial, file).map_err(io("rename", &partial))?;
        let parent = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        std::fs::File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(io("fsync", parent))?;
        Ok(info)
    });
    if finished.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    finished
}

/// `hightower run`: the component's exit status, or ours for a failure.
fn run_component(
    config: Config,
    sandbox: SandboxConfig,
    path: &std::path::Path,
    namespaces: &[String],
    args: Vec<String>,
) -> Result<ExitCode, CliError> {
    let wasm = std::fs::read(path)
        .map_err(|source| Error::io(format!("read {}", path.display()), source))?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let engine = Arc::new(KvEngine::open(config)?);
    let mut argv = vec![name.clone()];
    argv.extend(args);
    let status = WasmRuntime::new(engine.clone(), sandbox)
        .and_then(|runtime| runtime.run_command(&name, &wasm, namespaces, &argv));
    // The runtime is gone; close the store cleanly (final fsync) if we can.
    if let Ok(engine) = Arc::try_unwrap(engine) {
        engine.close()?;
    }
    match status {
        Ok(code) => Ok(ExitCode::from(code as u8)),
        Err(err) => {
            eprintln!("hightower: {err}");
            Ok(ExitCode::from(match err {
                WasmError::Config(_)
                | WasmError::Compile { .. }
                | WasmError::Instantiate { .. } => EXIT_USAGE,
                err if err.is_guest_fault() => EXIT_GUEST_FAULT,
                _ => EXIT_OTHER,
            }))
        }
    }
}

/// The value argument, or stdin for `-`.
fn read_value(arg: &OsString) -> Result<Vec<u8>, Error> {
    if arg.as_bytes() != b"-" {
        return Ok(arg.as_bytes().to_vec());
    }
    let mut value = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut value)
        .map_err(|source| Error::io("read value from stdin", source))?;
    Ok(value)
}

fn write_stdout(bytes: &[u8]) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|source| Error::io("write to stdout", source))
}

/// Opens without background threads: a one-shot command does its work
/// itself, and the outcome does not depend on a thread's timing.
fn open_quiet(config: Config) -> Result<KvEngine, Error> {
    let options = hightower_engine::EngineOptions {
        background_threads: false,
        ..hightower_engine::EngineOptions::default()
    };
    KvEngine::open_with(config, options)
}

fn print_segments(segments: &[hightower_engine::storage::SegmentInfo], json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(segments).expect("segments serialize")
        );
        return;
    }
    println!(
        "{:<20} {:>6} {:>12} {:>9} {:>9} {:>12} {:>12} {:>10} {:>10}  kind",
        "segment", "rank", "bytes", "records", "live", "live bytes", "dead bytes", "meta", "bloom"
    );
    for s in segments {
        let kind = match (s.active, s.compacted) {
            (true, _) => "active",
            (false, true) => "compacted",
            (false, false) => "sealed",
        };
        println!(
            "{:<20} {:>6} {:>12} {:>9} {:>9} {:>12} {:>12} {:>10} {:>10}  {kind}",
            s.file,
            s.rank,
            s.bytes,
            s.records,
            s.live_records,
            s.live_bytes,
            s.dead_bytes,
            s.metadata_bytes,
            s.bloom_filter_bytes
        );
    }
    let total =
        |f: fn(&hightower_engine::storage::SegmentInfo) -> u64| segments.iter().map(f).sum::<u64>();
    println!(
        "{} segment(s), {} bytes, {} live bytes, {} dead bytes, {} metadata bytes",
        segments.len(),
        total(|s| s.bytes),
        total(|s| s.live_bytes),
        total(|s| s.dead_bytes),
        total(|s| s.metadata_bytes)
    );
}

fn print_records(records: &[hightower_engine::storage::RecordInfo], json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(records).expect("records serialize")
        );
        return;
    }
    println!(
        "{:>10} {:<9} {:>10} {:>10} {:>8} {:<4}  key",
        "offset", "kind", "version", "log index", "value", "live"
    );
    for r in records {
        println!(
            "{:>10} {:<9} {:>10} {:>10} {:>8} {:<4}  {}",
            r.offset,
            r.kind,
            r.version,
            r.log_index,
            r.value_bytes,
            if r.live { "yes" } else { "no" },
            display_key(&r.key)
        );
    }
    println!("{} record(s)", records.len());
}

fn print_stats(stats: &hightower_engine::Stats) {
    let s = &stats.storage;
    let m = &stats.metrics;
    println!("data directory:      {}", stats.data_dir);
    println!("sync mode:           {}", stats.sync);
    println!("keys:                {}", s.keys);
    println!("segments:            {}", s.segments);
    println!("disk bytes:          {}", s.disk_bytes);
    println!("live bytes:          {}", s.live_bytes);
    println!("index memory bytes:  {}", s.index_memory_bytes);
    println!(
        "hot index:           {} entries ({} tombstones), {} evicted, {}",
        s.hot_entries,
        s.hot_tombstones,
        s.hot_evictions,
        if s.hot_index_complete {
            "holds every key"
        } else {
            "misses read segment metadata"
        }
    );
    println!("last version:        {}", s.committed_version);
    println!("last log index:      {}", s.last_log_index);
    println!("recovered records:   {}", stats.recovery.records);
    println!(
        "torn tail dropped:   {} bytes",
        stats.recovery.torn_tail_bytes_dropped
    );
    println!(
        "this process:        {} puts, {} deletes, {} batches, {} gets, {} fsyncs",
        m.puts, m.deletes, m.batches, m.gets, m.fsyncs
    );
    if let Some(reason) = &s.poisoned {
        println!("WRITES REFUSED:      {reason}");
    }
}

fn verify(config: &Config, json: bool) -> Result<ExitCode, CliError> {
    let results = verify_segments(config)?;
    let corrupt = results.iter().any(|r| r.verdict.is_corrupt());
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&results).expect("verification serializes")
        );
    } else {
        for r in &results {
            let verdict = match &r.verdict {
                SegmentVerdict::Ok => "ok".to_string(),
                SegmentVerdict::TornTail { offset, bytes } => {
                    format!("torn tail at offset {offset} ({bytes} bytes; cut on next open)")
                }
                SegmentVerdict::Corrupt {
                    offset,
                    reason,
                    damaged_ranges,
                } => {
                    format!(
                        "CORRUPT at offset {offset}: {reason} ({damaged_ranges} damaged range(s))"
                    )
                }
            };
            println!(
                "{}: {} bytes, {} records, {} commands: {verdict}",
                r.file, r.bytes, r.records, r.commands
            );
        }
        println!(
            "{} segment(s) checked, {}",
            results.len(),
            if corrupt {
                "corruption found"
            } else {
                "no corruption"
            }
        );
    }
    Ok(if corrupt {
        ExitCode::from(EXIT_CORRUPT)
    } else {
        ExitCode::SUCCESS
    })
}
