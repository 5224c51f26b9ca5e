//! A guest's stdout and stderr, routed to `tracing` line by line.
//!
//! Events have target `hightower::guest`, the component's name and the
//! stream; stdout lines are `info`, stderr lines `warn`. Lines are cut at
//! 4 KiB and control characters are escaped, so a guest cannot forge log
//! lines or terminal escapes. The last few stderr lines are kept to explain a
//! trap (a Rust guest prints its panic message there before aborting).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest line logged; the rest of a longer line is dropped.
pub const MAX_LINE_BYTES: usize = 4096;
/// Most lines one stream logs per second; a guest printing in a loop must
/// not flood the node's log. Lines over the rate are counted, and the count
/// is logged once the next second starts.
pub const MAX_LINES_PER_SECOND: u32 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// One of a guest's output streams; cheap to clone, clones share the line.
#[derive(Clone)]
pub(crate) struct GuestLog {
    inner: Arc<Mutex<Lines>>,
}

struct Lines {
    component: Arc<str>,
    stream: Stream,
    partial: Vec<u8>,
    /// Bytes of the current line dropped past [`MAX_LINE_BYTES`].
    dropped: usize,
    /// The last [`RECENT_LINES`] lines, oldest first.
    recent: VecDeque<String>,
    /// Start of the current one-second window and the lines logged in it.
    window_start: Instant,
    logged_in_window: u32,
    /// Lines not logged because of [`MAX_LINES_PER_SECOND`], not yet reported.
    suppressed: u64,
}

/// Lines kept to explain a trap.
const RECENT_LINES: usize = 4;

impl GuestLog {
    pub fn new(component: Arc<str>, stream: Stream) -> Self {
        GuestLog {
            inner: Arc::new(Mutex::new(Lines {
                component,
                stream,
                partial: Vec::new(),
                dropped: 0,
                recent: VecDeque::new(),
                window_start: Instant::now(),
                logged_in_window: 0,
                suppressed: 0,
            })),
        }
    }

    /// The last complete line written (escaped), if any.
    #[cfg(test)]
    pub fn last_line(&self) -> Option<String> {
        self.lock().recent.back().cloned()
    }

    /// The last few lines (escaped), joined with ` | `, if any.
    pub fn recent_lines(&self) -> Option<String> {
        let lines = self.lock();
        (!lines.recent.is_empty()).then(|| Vec::from(lines.recent.clone()).join(" | "))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lines> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, bytes: &[u8]) {
        self.lock().write(bytes);
    }

    fn flush(&self) {
        self.lock().emit_partial();
    }
}

impl Lines {
    fn write(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (piece, rest, newline) = match bytes.iter().position(|&b| b == b'\n') {
                Some(at) => (&bytes[..at], &bytes[at + 1..], true),
                None => (bytes, &[][..], false),
            };
            let room = MAX_LINE_BYTES - self.partial.len();
            let kept = piece.len().min(room);
            self.partial.extend_from_slice(&piece[..kept]);
            self.dropped += piece.len() - kept;
            if newline {
                self.emit();
            }
            bytes = rest;
        }
    }

    fn emit_partial(&mut self) {
        if !self.partial.is_empty() || self.dropped > 0 {
            self.emit();
        }
    }

    fn emit(&mut self) {
        let mut line = escape(&self.partial);
        if self.dropped > 0 {
            line.push_str(&format!(" … ({} more bytes dropped)", self.dropped));
        }
        if self.admit() {
            self.log(&line);
        }
        if self.recent.len() == RECENT_LINES {
            self.recent.pop_front();
        }
        self.recent.push_back(line);
        self.partial.clear();
        self.dropped = 0;
    }
}

impl Lines {
    /// Whether the rate allows one more line now; reports what a past
    /// window suppressed when a new one starts.
    fn admit(&mut self) -> bool {
        if self.window_start.elapsed() >= Duration::from_secs(1) {
            self.window_start = Instant::now();
            self.logged_in_window = 0;
            self.report_suppressed();
        }
        if self.logged_in_window >= MAX_LINES_PER_SECOND {
            self.suppressed += 1;
            return false;
        }
        self.logged_in_window += 1;
        true
    }

    fn report_suppressed(&mut self) {
        if self.suppressed > 0 {
            let line = format!(
                "({} lines not logged: over {MAX_LINES_PER_SECOND} lines per second)",
                self.suppressed
            );
            self.suppressed = 0;
            self.log(&line);
        }
    }

    fn log(&self, line: &str) {
        let component = &*self.component;
        match self.stream {
            Stream::Stdout => {
                tracing::info!(target: "hightower::guest", component, stream = "stdout", "{line}")
            }
            Stream::Stderr => {
                tracing::warn!(target: "hightower::guest", component, stream = "stderr", "{line}")
            }
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.emit_partial();
        self.report_suppressed();
    }
}

/// The bytes as text, invalid UTF-8 replaced and control characters
/// (other than tab) escaped.
fn escape(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.strip_suffix('\r').unwrap_or(&text);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestLog {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        GuestLog::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        GuestLog::flush(self);
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always ready; what cannot be logged is dropped.
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestLog {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestLog {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        GuestLog::write(&self, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        GuestLog::flush(&self);
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_cut_and_escaped() {
        let log = GuestLog::new("t".into(), Stream::Stderr);
        log.write(b"hello ");
        assert_eq!(log.last_line(), None, "no line before the newline");
        log.write(b"world\nsecond\x1b[31m line\r\n");
        assert_eq!(log.last_line().as_deref(), Some("second\\u{1b}[31m line"));
        let mut long = vec![b'x'; MAX_LINE_BYTES + 10];
        long.push(b'\n');
        log.write(&long);
        let line = log.last_line().unwrap();
        assert!(line.ends_with(" … (10 more bytes dropped)"), "{line}");
        log.write(b"partial");
        log.flush();
        assert_eq!(log.last_line().as_deref(), Some("partial"));
        log.write(b"\xff\n");
        assert_eq!(log.last_line().as_deref(), Some("\u{fffd}"));
        assert_eq!(
            log.recent_lines().unwrap(),
            format!("second\\u{{1b}}[31m line | {line} | partial | \u{fffd}")
        );
    }

    #[test]
    fn a_flood_is_cut_to_the_rate_and_counted() {
        let log = GuestLog::new("t".into(), Stream::Stdout);
        for n in 0..250 {
            log.write(format!("line {n}\n").as_bytes());
        }
        let lines = log.lock();
        // 250 in-memory writes take far less than the one-second window.
        assert_eq!(lines.logged_in_window, MAX_LINES_PER_SECOND);
        assert_eq!(lines.suppressed, 250 - u64::from(MAX_LINES_PER_SECOND));
        // Lines kept to explain a trap are the latest, logged or not.
        assert_eq!(lines.recent.back().map(String::as_str), Some("line 249"));
    }
}
