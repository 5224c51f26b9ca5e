//! Everything the CLI prints goes through here, never through `print!` or
//! `eprint!` (which panic when the stream fails).
//!
//! - [`Stdout`]: the command's output. A write that fails (a full disk, a
//!   closed pipe) is an [`OutputError`], which ends the command with exit 9;
//!   a closed pipe ends it quietly, as Unix tools do (`... | head -1`).
//! - [`note!`]: a line on stderr (messages, progress). If stderr itself
//!   fails there is nobody left to tell, so the failure is ignored.

use std::fmt;
use std::io::{BufWriter, ErrorKind, StdoutLock, Write};

/// The command's stdout, buffered; [`Stdout::finish`] flushes it.
pub struct Stdout {
    out: BufWriter<StdoutLock<'static>>,
    /// What the command has done to the store, named by a later error.
    done: Option<String>,
}

/// Stdout could not be written.
#[derive(Debug)]
pub struct OutputError {
    pub source: std::io::Error,
    /// What the command had already done, for the message: a `put` that
    /// cannot print its version has still stored the value.
    pub done: Option<String>,
}

impl OutputError {
    /// The reader went away (EPIPE): end quietly.
    pub fn is_closed_pipe(&self) -> bool {
        self.source.kind() == ErrorKind::BrokenPipe
    }
}

impl fmt::Display for OutputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot write to stdout: {}", self.source)?;
        if let Some(done) = &self.done {
            write!(f, " (the command itself succeeded: {done})")?;
        }
        Ok(())
    }
}

impl std::error::Error for OutputError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl Stdout {
    pub fn new() -> Self {
        Stdout {
            out: BufWriter::new(std::io::stdout().lock()),
            done: None,
        }
    }

    /// Records what the command has done (stored a value, created a key):
    /// an output error from now on says so, since the command must not look
    /// as if it had failed as a whole.
    pub fn did(&mut self, what: impl Into<String>) {
        self.done = Some(what.into());
    }

    fn failed(&self, source: std::io::Error) -> OutputError {
        OutputError {
            source,
            done: self.done.clone(),
        }
    }

    pub fn bytes(&mut self, bytes: &[u8]) -> Result<(), OutputError> {
        self.out.write_all(bytes).map_err(|e| self.failed(e))
    }

    /// One line (`outln!` formats into it).
    pub fn line(&mut self, args: fmt::Arguments<'_>) -> Result<(), OutputError> {
        let written = self.out.write_fmt(args);
        written
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| self.failed(e))
    }

    /// `value` as pretty JSON and a newline.
    pub fn json<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> Result<(), OutputError> {
        // Our values are plain data: only the writer can fail (an I/O
        // error comes back as itself).
        let written = serde_json::to_writer_pretty(&mut self.out, value);
        written
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| self.failed(e))
    }

    /// Writes out what is buffered now (a token must be known to have
    /// been shown before the command goes on).
    pub fn flush(&mut self) -> Result<(), OutputError> {
        self.out.flush().map_err(|e| self.failed(e))
    }

    /// Flushes what is buffered; an error here is the output's too.
    pub fn finish(mut self) -> Result<(), OutputError> {
        self.flush()
    }

    /// Lets `write` stream into stdout (a snapshot image). If it fails
    /// because stdout did, that is an [`OutputError`], not its own.
    pub fn stream<T, E: Into<crate::error::CliError>>(
        &mut self,
        write: impl FnOnce(&mut dyn Write) -> Result<T, E>,
    ) -> Result<T, crate::error::CliError> {
        let mut recorder = Recorder {
            inner: &mut self.out,
            failed: None,
        };
        let result = write(&mut recorder);
        match (result, recorder.failed.take()) {
            (Ok(value), _) => Ok(value),
            (Err(_), Some(source)) => Err(self.failed(source).into()),
            (Err(err), None) => Err(err.into()),
        }
    }
}

/// A writer that keeps the first error of the one it wraps.
struct Recorder<'a, W: Write> {
    inner: &'a mut W,
    failed: Option<std::io::Error>,
}

impl<W: Write> Recorder<'_, W> {
    fn keep<T>(&mut self, result: std::io::Result<T>) -> std::io::Result<T> {
        result.inspect_err(|err| {
            if self.failed.is_none() {
                self.failed = Some(std::io::Error::new(err.kind(), err.to_string()));
            }
        })
    }
}

impl<W: Write> Write for Recorder<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let result = self.inner.write(buf);
        self.keep(result)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let result = self.inner.flush();
        self.keep(result)
    }
}

/// Writes a line to the command's [`Stdout`]: `outln!(out, "{x}")?`.
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {
        $out.line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// A line on stderr; a failing stderr is ignored (see the module docs).
pub fn note_line(args: fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// `note!("...")`: a line on stderr that can never panic.
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::output::note_line(format_args!($($arg)*))
    };
}
pub(crate) use note;

/// Text on stderr without a newline (a prompt), flushed.
pub fn prompt(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
}

/// Replaces Rust's panic message (and backtrace) with one line naming it
/// as a bug; `main` then exits 5. Nothing in the CLI is meant to panic:
/// this is the last guard. `RUST_BACKTRACE` set keeps the default report.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::env::var_os("RUST_BACKTRACE").is_some() {
            default(info);
        }
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let location = info
            .location()
            .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        note!("hightower: internal error: {message}{location}; please report this");
    }));
}
