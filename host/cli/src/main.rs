//! `hightower`: the operator's command line for a Hightower KV data directory.
//!
//! Exit codes (stable, for scripts; README "Exit codes"):
//! 0 success · 1 key not found · 2 bad usage, input or configuration ·
//! 3 data directory locked by another process · 4 corruption or unsupported
//! format found · 5 any other I/O or internal error · 6 a component run by
//! `run` was stopped (trap, panic, time or memory limit) · 7 invalid
//! credentials or token (`auth`) · 8 username taken, conflict (`auth`) ·
//! 9 the output could not be written (stdout full or closed; a command
//! that changes the store had done so). `run` exits with the component's
//! own status (0 to 125), its own outcomes being 128 + these codes; see
//! [`run_cli`].

mod auth_cli;
mod config_file;
mod error;
mod input;
mod output;
mod print;
mod run_cli;
mod snapshot_file;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hightower_engine::Limits;
use hightower_engine::verify_segments;
use hightower_engine::{Config, Error, KvEngine, RecoveryMode};
use hightower_engine::{ConfigError, display_key};
use hightower_wasm::SandboxConfig;

use config_file::FileConfig;
use error::{CliError, EXIT_CORRUPT, EXIT_NOT_FOUND, EXIT_OTHER, EXIT_USAGE};
use input::{MAX_CONFIG_FILE_BYTES, read_file_at_most};
use output::{Stdout, note, outln};

/// `run`'s default time limit for the whole run.
const DEFAULT_RUN_TIMEOUT_MS: u64 = 30_000;

#[derive(Parser)]
#[command(
    name = "hightower",
    version,
    about = "Hightower KV: an embedded log-structured key-value store for worker nodes",
    after_help = "Exit codes: 0 ok, 1 key not found, 2 bad usage/input/config, 3 data directory locked, \
                  4 corruption or unsupported format, 5 other error, 6 component stopped (run),\n\
                  7 invalid credentials or token (auth), 8 username taken or conflict (auth),\n\
                  9 output could not be written (stdout full or closed).\n\
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
    /// Store VALUE under KEY and print the new version. VALUE is taken as
    /// it is (`-` too); `--value-file FILE` reads it from FILE, `-` meaning
    /// stdin (binary-safe, at most max_value_bytes).
    #[command(override_usage = "hightower put <KEY> (<VALUE> | --value-file <FILE>)")]
    Put {
        key: OsString,
        #[arg(required_unless_present = "value_file", conflicts_with = "value_file")]
        value: Option<OsString>,
        /// Read the value from FILE; `-` reads stdin.
        #[arg(long, value_name = "FILE")]
        value_file: Option<PathBuf>,
    },
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
    /// Write an image of the store to FILE (which must not exist yet; mode
    /// 0600), or to stdout for `-`. The file appears only once complete and
    /// fsynced; a FILE.partial left by a killed create is taken over.
    /// The key file auth.kek is not in the image: back it up beside it.
    Create { file: PathBuf },
    /// Restore FILE (`-`: stdin) into the data directory, which must be
    /// missing or empty. A damaged image is refused and leaves the
    /// directory as it was.
    Restore { file: PathBuf },
}

fn main() -> ExitCode {
    output::install_panic_hook();
    // A panic is a bug; the hook has named it. Exit 5 (133 for `run`), not
    // Rust's 101.
    std::panic::catch_unwind(real_main).unwrap_or_else(|_| match invoked_run() {
        true => run_cli::own_status(EXIT_OTHER),
        false => ExitCode::from(EXIT_OTHER),
    })
}

fn real_main() -> ExitCode {
    init_logging();
    // `run` keeps its exit statuses apart from its component's (run_cli).
    let exit = if invoked_run() {
        run_cli::own_status
    } else {
        ExitCode::from
    };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                exit(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            if !err.is_quiet() {
                note!("hightower: {err}");
            }
            exit(err.exit_code())
        }
    }
}

/// Whether the subcommand is `run`: the first argument that is neither an
/// option nor the value of a global option (`--data-dir`, `--config`).
fn invoked_run() -> bool {
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_bytes() {
            b"--data-dir" | b"--config" => {
                args.next();
            }
            bytes if bytes.starts_with(b"-") => {}
            bytes => return bytes == b"run",
        }
    }
    false
}

/// wasmtime-wasi traces every WASI call with its result at `trace`,
/// including the numbers `wasi:random` hands a guest: the auth component
/// derives API-token secrets and data keys from them. Capped whatever
/// HIGHTOWER_LOG says (a later directive for the same target wins).
const WASI_CALL_TRACE_CAP: &str = "wasmtime_wasi=debug";

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HIGHTOWER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let filter = match WASI_CALL_TRACE_CAP.parse() {
        Ok(cap) => filter.add_directive(cap),
        Err(_) => filter,
    };
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
            let bytes = read_file_at_most(path, MAX_CONFIG_FILE_BYTES, "config file", "1 MiB")
                .map_err(|err| config_read_error(path, err))?;
            let text = String::from_utf8(bytes).map_err(|_| ConfigError {
                field: "--config",
                reason: format!("config file {} is not UTF-8", path.display()),
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

/// A config file that cannot be read is bad configuration (exit 2), named.
fn config_read_error(path: &Path, err: CliError) -> CliError {
    let reason = match err {
        CliError::Engine(Error::Io { source, .. }) => {
            format!("cannot read config file {}: {source}", path.display())
        }
        other => other.to_string(),
    };
    ConfigError {
        field: "--config",
        reason,
    }
    .into()
}

fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let FileConfig {
        engine: config,
        wasm: wasm_config,
        auth: auth_config,
    } = load_config(&cli)?;
    let mut out = Stdout::new();
    match cli.command {
        CliCommand::Put {
            key,
            value,
            value_file,
        } => {
            // Refuse bad input before the data directory is created or opened.
            let limits = Limits::from_config(&config);
            limits.check_key(key.as_bytes())?;
            let value = match (value, value_file) {
                (_, Some(path)) => read_file_at_most(
                    &path,
                    u64::from(config.max_value_bytes),
                    "value",
                    "max_value_bytes",
                )?,
                (Some(value), None) => value.as_bytes().to_vec(),
                (None, None) => {
                    return Err(CliError::Usage("put: give VALUE or --value-file".into()));
                }
            };
            limits.check_value(&value)?;
            let engine = KvEngine::open(config)?;
            let version = engine.put(key.as_bytes(), &value)?;
            engine.close()?;
            out.did(format!("stored as version {version}"));
            outln!(out, "{version}")?;
        }
        CliCommand::Get { key, show_version } => {
            Limits::from_config(&config).check_key(key.as_bytes())?;
            let engine = KvEngine::open_read_only(config)?;
            let Some(found) = engine.get_versioned(key.as_bytes())? else {
                note!("hightower: key not found: {}", display_key(key.as_bytes()));
                return Ok(ExitCode::from(EXIT_NOT_FOUND));
            };
            if show_version {
                note!("version {}", found.version);
            }
            out.bytes(&found.value)?;
        }
        CliCommand::Delete { key } => {
            Limits::from_config(&config).check_key(key.as_bytes())?;
            let engine = KvEngine::open(config)?;
            let deleted = engine.delete(key.as_bytes())?;
            engine.close()?;
            match deleted {
                Some(version) => {
                    out.did(format!("deleted at version {version}"));
                    outln!(out, "{version}")?;
                }
                None => {
                    note!("hightower: key not found: {}", display_key(key.as_bytes()));
                    return Ok(ExitCode::from(EXIT_NOT_FOUND));
                }
            }
        }
        CliCommand::Stats { json } => {
            let engine = KvEngine::open_read_only(config)?;
            print::stats(&mut out, &engine.stats(), json)?;
        }
        CliCommand::Verify { json } => {
            let results = verify_segments(&config)?;
            let corrupt = print::verification(&mut out, &results, json)?;
            out.finish()?;
            return Ok(if corrupt {
                ExitCode::from(EXIT_CORRUPT)
            } else {
                ExitCode::SUCCESS
            });
        }
        CliCommand::Compact { json } => {
            let engine = open_quiet(config)?;
            let report = engine.compact()?;
            engine.close()?;
            out.did("the compaction finished");
            if json {
                out.json(&report)?;
            } else if report.inputs.is_empty() {
                outln!(out, "nothing to compact: the store is empty")?;
            } else {
                outln!(
                    out,
                    "compacted {} segment(s) ({} bytes) into {} ({} bytes): {} records kept, {} tombstones dropped",
                    report.inputs.len(),
                    report.input_bytes,
                    report.outputs.len(),
                    report.output_bytes,
                    report.records_kept,
                    report.tombstones_dropped
                )?;
            }
        }
        CliCommand::Inspect { what, json } => {
            let engine = KvEngine::open_read_only(config)?;
            match what {
                None => print::segments(&mut out, &engine.inspect_segments()?, json)?,
                Some(InspectCommand::Segment { id }) => {
                    print::records(&mut out, &engine.inspect_segment(id)?, json)?
                }
            }
            engine.close()?;
        }
        CliCommand::Snapshot(SnapshotCommand::Create { file }) => {
            let engine = KvEngine::open_read_only(config)?;
            if file.as_os_str() == "-" {
                // The image is the output; its summary goes to stderr.
                let info = out.stream(|w| engine.write_snapshot(w))?;
                out.finish()?;
                note!(
                    "snapshot to stdout: {} keys at log index {}, {} bytes",
                    info.keys,
                    info.last_log_index,
                    info.bytes
                );
                return Ok(ExitCode::SUCCESS);
            }
            let info = snapshot_file::create(&engine, &file)?;
            out.did(format!("wrote {}", file.display()));
            outln!(
                out,
                "snapshot {}: {} keys at log index {}, {} bytes",
                file.display(),
                info.keys,
                info.last_log_index,
                info.bytes
            )?;
        }
        CliCommand::Snapshot(SnapshotCommand::Restore { file }) => {
            let info = if file.as_os_str() == "-" {
                let mut input = std::io::stdin().lock();
                hightower_engine::restore_snapshot(config, &mut input)?
            } else {
                let input = std::fs::File::open(&file).map_err(|source| {
                    Error::io(format!("open snapshot {}", file.display()), source)
                })?;
                let mut input = std::io::BufReader::new(input);
                hightower_engine::restore_snapshot(config, &mut input)?
            };
            out.did("the snapshot was restored");
            outln!(
                out,
                "restored {} keys at log index {}",
                info.keys,
                info.last_log_index
            )?;
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
            let request = run_cli::RunArgs {
                component: &component,
                namespaces: &namespaces,
                args,
            };
            return Ok(run_cli::run(config, sandbox, request));
        }
        CliCommand::Auth(args) => {
            auth_cli::run(config, wasm_config, auth_config, args)?;
        }
        CliCommand::Salvage => {
            let engine = KvEngine::open(Config {
                recovery: RecoveryMode::Salvage,
                ..config
            })?;
            let report = engine.stats().recovery;
            engine.close()?;
            out.did("the salvage finished");
            if report.salvaged.is_empty()
                && report.missing_segments.is_empty()
                && report.tail_cut.is_none()
            {
                outln!(out, "no damage found; nothing salvaged")?;
            }
            for missing in &report.missing_segments {
                outln!(
                    out,
                    "{missing}: missing; the store was opened without it (its records are lost)"
                )?;
            }
            if let Some(cut) = &report.tail_cut {
                outln!(
                    out,
                    "{}: {} bytes cut at offset {} (kept as {}): {}",
                    cut.segment,
                    cut.bytes,
                    cut.offset,
                    cut.kept_as.as_deref().unwrap_or("-"),
                    cut.kind.explain()
                )?;
            }
            for note in &report.salvaged {
                outln!(
                    out,
                    "{}: kept {} commands; original kept as {}",
                    note.segment,
                    note.commands_kept,
                    note.original_kept_as
                )?;
                for (start, end, reason) in &note.dropped {
                    outln!(out, "  dropped bytes {start}..{end}: {reason}")?;
                }
            }
        }
    }
    out.finish()?;
    Ok(ExitCode::SUCCESS)
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
