//! The harness of the tests that run the `hightower` binary (tests/cli.rs,
//! tests/auth_cli.rs), included by each with `#[path]`: every run is the
//! real executable in a temporary directory, with the variables it reads
//! cleared, and no run can hang: stdin is `/dev/null` unless a test supplies
//! bytes (then a pipe closed once they are written), stdout and stderr are
//! drained on threads, and a child is killed after [`TIMEOUT`].
#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_hightower");
pub const TIMEOUT: Duration = Duration::from_secs(120);

// The documented, stable exit codes (host/cli/src/error.rs, README).
pub const OK: i32 = 0;
pub const NOT_FOUND: i32 = 1;
pub const USAGE: i32 = 2;
pub const LOCKED: i32 = 3;
pub const CORRUPT: i32 = 4;
pub const OTHER: i32 = 5;
pub const DENIED: i32 = 7;
pub const TAKEN: i32 = 8;
pub const OUTPUT: i32 = 9;

/// Variables the binary reads; cleared so a developer's shell cannot change
/// what a test sees.
const CLEARED_ENV: [&str; 4] = [
    "HIGHTOWER_DATA_DIR",
    "HIGHTOWER_LOG",
    "RUST_LOG",
    "HIGHTOWER_AUTH_KEK",
];

/// What one run of the binary produced.
pub struct Output {
    pub cmdline: String,
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    /// Stdout as text; fails the test if it is not UTF-8.
    #[track_caller]
    pub fn stdout_text(&self) -> &str {
        std::str::from_utf8(&self.stdout)
            .unwrap_or_else(|_| panic!("{}: stdout is not UTF-8: {:?}", self.cmdline, self.stdout))
    }

    pub fn describe(&self) -> String {
        format!(
            "`{}` exited {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline,
            self.code,
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        )
    }

    /// Asserts the exit code only.
    #[track_caller]
    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "wrong exit code\n{}", self.describe());
        self
    }

    /// Asserts success; returns stdout as text.
    #[track_caller]
    pub fn ok(&self) -> &str {
        self.code(OK).stdout_text()
    }

    /// Asserts the exit code, the exact stdout and the exact stderr.
    #[track_caller]
    pub fn exactly(&self, code: i32, stdout: impl AsRef<[u8]>, stderr: &str) -> &Self {
        let stdout = stdout.as_ref();
        self.code(code);
        assert_eq!(
            self.stdout,
            stdout,
            "wrong stdout (expected {:?})\n{}",
            String::from_utf8_lossy(stdout),
            self.describe()
        );
        assert_eq!(self.stderr, stderr, "wrong stderr\n{}", self.describe());
        self
    }

    /// Asserts a failure: the exit code, nothing on stdout, and stderr
    /// containing every one of `needles`.
    #[track_caller]
    pub fn fails(&self, code: i32, needles: &[&str]) -> &Self {
        self.code(code);
        assert!(
            self.stdout.is_empty(),
            "a failure must print nothing on stdout\n{}",
            self.describe()
        );
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "stderr lacks {needle:?}\n{}",
                self.describe()
            );
        }
        self
    }
}

/// One invocation of the binary, built up like a `Command`.
pub struct Run {
    command: Command,
    args: Vec<OsString>,
    stdin: Input,
    stdout: Sink,
}

enum Input {
    Null,
    Bytes(Vec<u8>),
    File(PathBuf),
}

enum Sink {
    Capture,
    /// A file such as `/dev/full`; nothing is captured.
    File(PathBuf),
    /// A pipe whose reading end is closed at once (`| head` that exited).
    Closed,
}

impl Run {
    /// Runs in `cwd` (so the default `./hightower-data` lands in a temp dir).
    pub fn new(cwd: &Path) -> Self {
        let mut command = Command::new(BIN);
        command.current_dir(cwd);
        for var in CLEARED_ENV {
            command.env_remove(var);
        }
        Run {
            command,
            args: Vec::new(),
            stdin: Input::Null,
            stdout: Sink::Capture,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        for arg in args {
            self = self.arg(arg);
        }
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    /// Feeds `bytes` on stdin, then closes it.
    pub fn stdin(mut self, bytes: impl AsRef<[u8]>) -> Self {
        self.stdin = Input::Bytes(bytes.as_ref().to_vec());
        self
    }

    /// Stdin read from a file, e.g. `/dev/zero`.
    pub fn stdin_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.stdin = Input::File(path.into());
        self
    }

    /// Stdout written to a file, e.g. `/dev/full` (not captured).
    pub fn stdout_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.stdout = Sink::File(path.into());
        self
    }

    /// Stdout a pipe nobody reads: its reading end is closed at once.
    pub fn stdout_closed(mut self) -> Self {
        self.stdout = Sink::Closed;
        self
    }

    /// The command with its arguments, to spawn by hand.
    pub fn into_command(mut self) -> Command {
        self.command.args(&self.args);
        self.command
    }

    pub fn run(mut self) -> Output {
        let cmdline = std::iter::once(OsStr::new("hightower"))
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let stdin = match &self.stdin {
            Input::Null => Stdio::null(),
            Input::Bytes(_) => Stdio::piped(),
            Input::File(path) => Stdio::from(
                std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path:?}: {e}")),
            ),
        };
        let stdout = match &self.stdout {
            Sink::Capture => Stdio::piped(),
            // The reading end is closed before the child starts, so its
            // very first write fails (closing it after the spawn raced with
            // a fast child, whose output then fit in the pipe's buffer).
            Sink::Closed => {
                let (reader, writer) = std::io::pipe().expect("create a pipe");
                drop(reader);
                Stdio::from(writer)
            }
            Sink::File(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .unwrap_or_else(|e| panic!("open {path:?}: {e}")),
            ),
        };
        let mut child = self
            .command
            .args(&self.args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {BIN}: {err}"));
        let feeder = match std::mem::replace(&mut self.stdin, Input::Null) {
            Input::Bytes(bytes) => {
                let mut pipe = child.stdin.take().expect("piped stdin");
                // Dropping `pipe` at the end of the thread closes stdin. An
                // error (the child exited without reading) is its business.
                Some(thread::spawn(move || {
                    let _ = pipe.write_all(&bytes);
                }))
            }
            _ => None,
        };
        let drain = |mut source: Box<dyn Read + Send>| {
            thread::spawn(move || {
                let mut bytes = Vec::new();
                source.read_to_end(&mut bytes).expect("read child output");
                bytes
            })
        };
        let stdout = child.stdout.take().map(|pipe| drain(Box::new(pipe)));
        let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for hightower") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`{cmdline}` did not finish within {TIMEOUT:?}; killed it");
            }
            thread::sleep(Duration::from_millis(1));
        };
        if let Some(feeder) = feeder {
            feeder.join().expect("stdin feeder");
        }
        let stdout = stdout.map_or_else(Vec::new, |reader| reader.join().expect("stdout reader"));
        let stderr = stderr.join().expect("stderr reader");
        let code = status
            .code()
            .unwrap_or_else(|| panic!("`{cmdline}` was killed by a signal: {status:?}"));
        Output {
            cmdline,
            code,
            stdout,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }
}

/// A temporary directory with a data directory path inside it (not yet
/// created: the first command that opens the store creates it).
pub struct Store {
    pub tmp: TempDir,
    pub data: PathBuf,
}

impl Store {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        Store { tmp, data }
    }

    /// A run with no `--data-dir`, in the temp directory.
    pub fn bare(&self) -> Run {
        Run::new(self.tmp.path())
    }

    /// A run with `--data-dir DATA`.
    pub fn cli(&self) -> Run {
        self.bare().arg("--data-dir").arg(&self.data)
    }

    /// `hightower --data-dir DATA ARGS...`
    pub fn run<S: AsRef<OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Output {
        self.cli().args(args).run()
    }

    /// Writes a file into the temp directory; returns its path.
    pub fn file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.tmp.path().join(name);
        std::fs::write(&path, contents).expect("write test file");
        path
    }
}
