//! Progress of a verify run as events (for the node API and console later) and their
//! rendering on standard error: an indicatif bar with rows/s and ETA on a terminal,
//! plain lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// One thing that happened during a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ProgressEvent {
    /// A table starts; `estimated_rows` is the source's estimate.
    TableStarted {
        /// Source table.
        table: String,
        /// Rows expected.
        estimated_rows: u64,
    },
    /// A chunk of a table was compared.
    Chunk {
        /// Source table.
        table: String,
        /// Source rows in the chunk.
        rows: u64,
        /// Whether its checksums differed.
        differs: bool,
    },
    /// A table is done.
    TableDone {
        /// Source table.
        table: String,
        /// Differences found (before re-checks).
        differences: u64,
    },
    /// Live re-check round: waiting for replication, then re-reading `pending` rows.
    Recheck {
        /// Round number, from 1.
        round: u32,
        /// Rows still differing.
        pending: u64,
    },
}

/// Where a run sends its events; cloning is cheap, a closed receiver is ignored.
#[derive(Debug, Clone, Default)]
pub struct Progress(Option<mpsc::UnboundedSender<ProgressEvent>>);

impl Progress {
    /// Events go nowhere.
    pub fn none() -> Self {
        Progress(None)
    }

    /// A sender and its receiver.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<ProgressEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Progress(Some(tx)), rx)
    }

    /// Sends an event.
    pub fn send(&self, e: ProgressEvent) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(e);
        }
    }
}

/// Renders events on standard error until the sender side is dropped; the caller owns
/// and awaits the returned task.
pub fn render(mut rx: mpsc::UnboundedReceiver<ProgressEvent>) -> JoinHandle<()> {
    let tty = std::io::stderr().is_terminal();
    tokio::spawn(async move {
        let mut bar: Option<ProgressBar> = None;
        let mut done_rows = 0u64;
        let mut started = Instant::now();
        let mut last_line = Instant::now();
        while let Some(e) = rx.recv().await {
            match e {
                ProgressEvent::TableStarted { table, estimated_rows } => {
                    done_rows = 0;
                    started = Instant::now();
                    if tty {
                        let b = ProgressBar::with_draw_target(Some(estimated_rows), ProgressDrawTarget::stderr());
                        let style = ProgressStyle::with_template(
                            "{msg} [{bar:30}] {human_pos}/{human_len} rows {rate} ETA {eta}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .with_key(
                            "rate",
                            |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                                let _ = write!(w, "{:.0} rows/s", s.per_sec());
                            },
                        );
                        b.set_style(style);
                        b.set_message(table);
                        bar = Some(b);
                    } else {
                        eprintln!("verify: {table}: started (about {estimated_rows} rows)");
                    }
                }
                ProgressEvent::Chunk { table, rows, .. } => {
                    done_rows += rows;
                    if let Some(b) = &bar {
                        if b.length().is_some_and(|l| l < done_rows) {
                            b.set_length(done_rows);
                        }
                        b.set_position(done_rows);
                    } else if last_line.elapsed() > Duration::from_secs(5) {
                        last_line = Instant::now();
                        let rate = done_rows as f64 / started.elapsed().as_secs_f64().max(0.001);
                        eprintln!("verify: {table}: {done_rows} rows, {rate:.0} rows/s");
                    }
                }
                ProgressEvent::TableDone { table, differences } => {
                    if let Some(b) = bar.take() {
                        b.finish_and_clear();
                    }
                    let secs = started.elapsed().as_secs_f64();
                    eprintln!("verify: {table}: {done_rows} rows in {secs:.2}s, {differences} difference(s)");
                }
                ProgressEvent::Recheck { round, pending } => {
                    eprintln!("verify: re-check round {round}: {pending} row(s) still differ; waiting for replication");
                }
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_reach_the_receiver_and_serialise_with_their_kind() {
        let (p, mut rx) = Progress::channel();
        p.send(ProgressEvent::Chunk { table: "t".into(), rows: 5, differs: false });
        drop(p);
        let e = rx.recv().await.expect("an event");
        let json = serde_json::to_value(&e).expect("json");
        assert_eq!(json["event"], "chunk");
        assert_eq!(json["rows"], 5);
        assert!(rx.recv().await.is_none(), "the channel closes with its last sender");
        Progress::none().send(e); // no receiver: ignored
    }
}
