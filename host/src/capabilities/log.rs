//! Guest output that becomes log lines: `host.log`, stdout and stderr.
//!
//! Everything is bounded: a per-invocation budget of bytes and of lines, after which
//! lines are dropped and one truncation notice is kept. Guest text is neutralised here, once, so no
//! consumer (terminal, JSON, SSE) ever sees raw control characters from a guest.

use serde::Serialize;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

/// Severity of a captured line, mirroring the WIT `level` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Very detailed.
    Trace,
    /// Developer detail.
    Debug,
    /// Normal.
    Info,
    /// Recovered problem.
    Warn,
    /// Failure.
    Error,
}

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `host.log`.
    Log,
    /// The guest's stdout.
    Stdout,
    /// The guest's stderr.
    Stderr,
    /// The host, about the guest (e.g. a refused request and the grant it lacks).
    Host,
}

/// One captured line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Severity.
    pub level: Level,
    /// Origin.
    pub source: Source,
    /// The text, with control characters escaped.
    pub message: String,
}

/// Something the guest reported while running, delivered live to an observer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestEvent {
    /// A log line.
    Log(LogLine),
    /// A progress report.
    Progress {
        /// 0..=100.
        percent: u8,
        /// What the guest is doing.
        label: String,
    },
    /// The log budget ran out; later lines are dropped.
    LogTruncated,
    /// An outbound HTTP request ended (or was refused).
    Http(super::http::HttpRecord),
}

/// Receives guest events as they happen (the run lifecycle turns them into run events).
pub type Observer = Arc<dyn Fn(GuestEvent) + Send + Sync>;

/// Longest single line kept; the rest of the line is cut.
const MAX_LINE: usize = 8 << 10;
/// Most lines kept per invocation, whatever their size (each becomes a stored event).
pub const MAX_LINES: usize = 10_000;
/// Longest progress label kept.
pub const MAX_LABEL: usize = 256;

/// The captured log of one invocation.
#[derive(Default)]
pub struct LogBuffer {
    lines: Vec<LogLine>,
    bytes: usize,
    budget: usize,
    truncated: bool,
    partial_stdout: Vec<u8>,
    partial_stderr: Vec<u8>,
    observer: Option<Observer>,
}

impl std::fmt::Debug for LogBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogBuffer")
            .field("lines", &self.lines.len())
            .field("bytes", &self.bytes)
            .field("truncated", &self.truncated)
            .finish()
    }
}

impl LogBuffer {
    /// A buffer that keeps at most `budget` bytes of lines.
    pub fn new(budget: usize, observer: Option<Observer>) -> Self {
        LogBuffer {
            budget,
            observer,
            ..LogBuffer::default()
        }
    }

    /// Adds one line (already a single line or not: newlines are escaped).
    pub fn push(&mut self, level: Level, source: Source, text: &str) {
        if self.truncated {
            return;
        }
        let message = neutralise(text, MAX_LINE);
        if self.bytes.saturating_add(message.len()) > self.budget || self.lines.len() >= MAX_LINES {
            self.truncated = true;
            self.notify(GuestEvent::LogTruncated);
            return;
        }
        self.bytes += message.len();
        let line = LogLine {
            level,
            source,
            message,
        };
        if let Some(observer) = &self.observer {
            observer(GuestEvent::Log(line.clone()));
        }
        self.lines.push(line);
    }

    /// Reports progress to the observer (progress is not stored in the log).
    pub fn progress(&mut self, percent: u8, label: &str) {
        let label = neutralise(label, MAX_LABEL);
        self.notify(GuestEvent::Progress {
            percent: percent.min(100),
            label,
        });
    }

    fn notify(&self, event: GuestEvent) {
        if let Some(observer) = &self.observer {
            observer(event);
        }
    }

    /// Raw bytes written to stdout or stderr: split into lines, keep partial lines
    /// (bounded) until their newline arrives.
    fn write_stream(&mut self, source: Source, bytes: &[u8]) {
        if self.truncated {
            return;
        }
        let level = if source == Source::Stderr {
            Level::Warn
        } else {
            Level::Info
        };
        let mut rest = bytes;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(pos);
            rest = tail.get(1..).unwrap_or_default();
            let mut pending = std::mem::take(self.partial(source));
            pending.extend_from_slice(line);
            let text = String::from_utf8_lossy(&pending).into_owned();
            self.push(level, source, text.trim_end_matches('\r'));
            if self.truncated {
                return;
            }
        }
        let partial = self.partial(source);
        let room = MAX_LINE.saturating_sub(partial.len());
        partial.extend_from_slice(rest.get(..room.min(rest.len())).unwrap_or_default());
    }

    fn partial(&mut self, source: Source) -> &mut Vec<u8> {
        if source == Source::Stderr {
            &mut self.partial_stderr
        } else {
            &mut self.partial_stdout
        }
    }

    /// Flushes unterminated lines and returns everything captured.
    pub fn finish(&mut self) -> (Vec<LogLine>, bool) {
        for source in [Source::Stdout, Source::Stderr] {
            let pending = std::mem::take(self.partial(source));
            if !pending.is_empty() {
                let level = if source == Source::Stderr {
                    Level::Warn
                } else {
                    Level::Info
                };
                self.push(level, source, &String::from_utf8_lossy(&pending));
            }
        }
        (std::mem::take(&mut self.lines), self.truncated)
    }

    /// The last few stderr lines: a trapping guest's panic message is usually there.
    pub fn stderr_tail(&self, n: usize) -> Vec<String> {
        let mut tail: Vec<String> = self
            .lines
            .iter()
            .rev()
            .filter(|l| l.source == Source::Stderr)
            .take(n)
            .map(|l| l.message.clone())
            .collect();
        if tail.len() < n && !self.partial_stderr.is_empty() {
            tail.insert(
                0,
                neutralise(&String::from_utf8_lossy(&self.partial_stderr), MAX_LINE),
            );
        }
        tail.reverse();
        tail
    }
}

/// Escapes control characters (including ESC, CR, LF and NUL) and cuts to `max` bytes
/// on a character boundary, so guest text can never forge lines, terminal sequences
/// or stream events.
pub fn neutralise(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        if out.len() >= max {
            out.push('…');
            break;
        }
        match c {
            '\t' => out.push(c),
            c if c.is_control() || is_bidi_control(c) => {
                out.extend(c.escape_default());
            }
            c => out.push(c),
        }
    }
    out
}

/// Unicode bidirectional overrides can make a terminal show text in another order
/// than it is stored ("Trojan Source"); they are escaped like control characters.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}

/// The guest's stdout or stderr: an `AsyncWrite` that feeds the shared log buffer.
/// Writes never fail and never block: past the budget, bytes are counted and dropped.
#[derive(Clone)]
pub struct CapturedStream {
    buffer: Arc<Mutex<LogBuffer>>,
    source: Source,
}

impl CapturedStream {
    /// A stream writing into `buffer` as `source`.
    pub fn new(buffer: Arc<Mutex<LogBuffer>>, source: Source) -> Self {
        CapturedStream { buffer, source }
    }
}

impl tokio::io::AsyncWrite for CapturedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut log = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        log.write_stream(self.source, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl wasmtime_wasi::cli::IsTerminal for CapturedStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for CapturedStream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbx_10_control_characters_are_escaped() {
        let s = neutralise("ok\r\ndata: {\"type\":\"forged\"}\n\x1b[31mred\x00", 1000);
        assert!(!s.contains('\n') && !s.contains('\r') && !s.contains('\x1b') && !s.contains('\0'));
        assert!(
            s.contains("\\r\\n") && s.contains("\\u{1b}") && s.contains("\\u{0}"),
            "{s}"
        );
    }

    #[test]
    fn lines_are_split_and_budget_truncates() {
        let mut log = LogBuffer::new(20, None);
        log.write_stream(Source::Stdout, b"one\ntwo\nthr");
        log.write_stream(Source::Stdout, b"ee\n");
        log.write_stream(Source::Stdout, &[b'x'; 100]);
        log.write_stream(Source::Stdout, b"\nafter\n");
        let (lines, truncated) = log.finish();
        let msgs: Vec<_> = lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(msgs, ["one", "two", "three"]);
        assert!(truncated);
    }

    #[test]
    fn long_partial_lines_stay_bounded() {
        let mut log = LogBuffer::new(1 << 20, None);
        for _ in 0..100 {
            log.write_stream(Source::Stderr, &[b'y'; 4096]);
        }
        assert!(log.partial_stderr.len() <= MAX_LINE);
        let (lines, _) = log.finish();
        assert_eq!(lines.len(), 1);
    }
}
