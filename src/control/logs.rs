//! The process's own log lines (`FERRY_LOG`), kept in memory for the node API
//! (`GET /api/v1/logs`) and the console's Log view: the newest [`KEEP`] lines, each with
//! a sequence number so that a reader asks only for what is new. `main` installs
//! [`LogTail::global`] as a second tracing writer; without it the tail stays empty.

use std::collections::VecDeque;
use std::io;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use tracing_subscriber::fmt::MakeWriter;

use crate::model::now_micros;

/// Lines kept (the oldest go first).
pub const KEEP: usize = 2000;

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Its number in the process (1, 2, ...): ask for those after the last one read.
    pub seq: u64,
    /// When it was written (µs).
    pub at_us: i64,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    /// The message with its fields (`started direction=t:a->b position=…`).
    pub message: String,
}

/// The newest log lines of the process.
#[derive(Debug, Default)]
pub struct LogTail {
    lines: Mutex<(u64, VecDeque<LogLine>)>,
}

impl LogTail {
    /// The process's tail, the one `main` writes to.
    pub fn global() -> &'static LogTail {
        static TAIL: OnceLock<LogTail> = OnceLock::new();
        TAIL.get_or_init(LogTail::default)
    }

    /// Appends a line.
    pub fn push(&self, level: &str, message: &str) {
        let Ok(mut g) = self.lines.lock() else { return };
        g.0 += 1;
        let line = LogLine {
            seq: g.0,
            at_us: now_micros(),
            level: level.to_string(),
            message: message.trim_end().to_string(),
        };
        g.1.push_back(line);
        if g.1.len() > KEEP {
            g.1.pop_front();
        }
    }

    /// Up to `limit` lines after sequence number `after`, oldest first: the newest ones
    /// when more are waiting (a reader far behind skips to the end, as `tail` does).
    pub fn after(&self, after: u64, limit: usize) -> Vec<LogLine> {
        let Ok(g) = self.lines.lock() else { return Vec::new() };
        let newer: Vec<&LogLine> = g.1.iter().filter(|l| l.seq > after).collect();
        newer[newer.len().saturating_sub(limit)..].iter().map(|l| (*l).clone()).collect()
    }
}

/// Writes one formatted event into the tail (tracing's fmt layer formats each event
/// into one buffer and writes it once).
pub struct TailWriter {
    tail: &'static LogTail,
    level: &'static str,
}

impl io::Write for TailWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tail.push(self.level, &String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for &'static LogTail {
    type Writer = TailWriter;

    fn make_writer(&'a self) -> TailWriter {
        TailWriter { tail: self, level: "INFO" }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> TailWriter {
        TailWriter { tail: self, level: meta.level().as_str() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_serves_what_is_new_and_keeps_the_newest() {
        let tail = LogTail::default();
        for i in 0..(KEEP + 5) {
            tail.push("INFO", &format!("line {i}\n"));
        }
        let last = tail.after(0, 3);
        assert_eq!(
            last.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(),
            ["line 2002", "line 2003", "line 2004"]
        );
        assert_eq!(last[2].seq, (KEEP + 5) as u64);
        assert!(tail.after(last[2].seq, 10).is_empty(), "nothing new");
        assert_eq!(tail.after(0, usize::MAX).len(), KEEP, "the oldest went");
    }

    #[test]
    fn the_writer_records_the_events_level() {
        use std::io::Write as _;
        let tail: &'static LogTail = Box::leak(Box::default());
        let mut w = TailWriter { tail, level: "WARN" };
        w.write_all(b"endpoint failed; retrying\n").expect("write");
        let l = &tail.after(0, 1)[0];
        assert_eq!((l.level.as_str(), l.message.as_str()), ("WARN", "endpoint failed; retrying"));
    }
}
