//! Live metrics of a task direction, shared by the engine (writer) and the status line,
//! the store, the API and the console (readers).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::clock::{SkewLevel, SkewView};
use super::copy_progress::{CopyProgress, TableCopy};
use crate::connector::DirectionId;
use crate::model::{Position, now_micros};

/// What a direction is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectionState {
    /// Opening endpoints, installing capture.
    Starting,
    /// Another process holds the lease; waiting for it to expire.
    WaitingForLease,
    /// Copying existing rows (table name).
    Snapshotting(String),
    /// Following changes.
    Streaming,
    /// An endpoint failed; retrying after a pause.
    Retrying,
    /// Two-way: the two sides' clocks are further apart than `clock_skew_pause`;
    /// applying waits until they are back within it.
    ClockSkew,
    /// A relayed direction's publishing side: the stream is full (or holds a change older
    /// than `transport_max_age`), so reading the source waits until the applying side
    /// drains it; nothing is dropped.
    TransportFull,
    /// Stopped cleanly.
    Stopped,
    /// Stopped by an error that needs a human.
    Failed,
}

impl std::fmt::Display for DirectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DirectionState::Starting => f.write_str("starting"),
            DirectionState::WaitingForLease => f.write_str("waiting for lease"),
            DirectionState::Snapshotting(t) => write!(f, "snapshot {t}"),
            DirectionState::Streaming => f.write_str("streaming"),
            DirectionState::Retrying => f.write_str("retrying"),
            DirectionState::ClockSkew => f.write_str("clock skew"),
            DirectionState::TransportFull => f.write_str("transport full"),
            DirectionState::Stopped => f.write_str("stopped"),
            DirectionState::Failed => f.write_str("failed"),
        }
    }
}

/// Changes applied per second over the last minute, one bucket per second.
#[derive(Debug)]
struct RateWindow {
    buckets: [u64; 61],
    second: i64,
}

impl RateWindow {
    fn advance(&mut self, now_s: i64) {
        if self.second == 0 {
            self.second = now_s;
        }
        while self.second < now_s {
            self.second += 1;
            self.buckets[(self.second.rem_euclid(61)) as usize] = 0;
            if now_s - self.second > 61 {
                self.buckets = [0; 61];
                self.second = now_s;
            }
        }
    }

    fn add(&mut self, n: u64, now_s: i64) {
        self.advance(now_s);
        self.buckets[(now_s.rem_euclid(61)) as usize] += n;
    }

    /// Average over the last `secs` complete seconds.
    fn rate(&mut self, secs: i64, now_s: i64) -> f64 {
        self.advance(now_s);
        let sum: u64 = (1..=secs).map(|i| self.buckets[((now_s - i).rem_euclid(61)) as usize]).sum();
        sum as f64 / secs as f64
    }
}

/// Counters of one direction.
#[derive(Debug)]
pub struct DirectionMetrics {
    /// Which direction.
    pub id: DirectionId,
    state: Mutex<DirectionState>,
    position: Mutex<Option<Position>>,
    last_error: Mutex<Option<String>>,
    rate: Mutex<RateWindow>,
    changes: AtomicU64,
    txns: AtomicU64,
    snapshot_rows: AtomicU64,
    conflicts: AtomicU64,
    errors: AtomicU64,
    behind: AtomicU64,
    last_heartbeat_us: AtomicI64,
    caught_up_us: AtomicI64,
    clock: Mutex<Option<SkewView>>,
    retained: AtomicU64,
    retention_alarm: AtomicBool,
    /// Snapshot progress per table.
    pub copy: CopyProgress,
    failed: Mutex<Option<FailedChange>>,
}

/// The source transaction a target refused, which stopped the direction: what an
/// operator needs to decide to fix the target or skip it (`ferry skip`, the console's
/// `S`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedChange {
    /// The source position of the transaction (what a skip names).
    pub position: String,
    /// The target table of the refused change.
    pub table: String,
    /// The key of the refused row.
    pub key: String,
    /// The target's message.
    pub message: String,
    /// Whether it can be skipped by position (not inside a transaction applied in parts).
    pub skippable: bool,
}

/// `behind` when the source cannot count changes.
const UNKNOWN: u64 = u64::MAX;

/// A point-in-time copy of a direction's metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirectionStatus {
    /// Task name.
    pub task: String,
    /// `a->b`.
    pub direction: String,
    /// State.
    pub state: DirectionState,
    /// Last applied source position.
    pub position: Option<String>,
    /// Seconds since the last applied source heartbeat was written (None before the first).
    pub lag_seconds: Option<f64>,
    /// Changes the source has that are not applied yet; `None` where the source cannot
    /// count them (a binlog or WAL position is an offset, not a change count).
    pub changes_behind: Option<u64>,
    /// Rows per second over 1, 10 and 60 seconds.
    pub rows_per_sec: [f64; 3],
    /// Row changes applied (stream).
    pub changes_total: u64,
    /// Source transactions applied.
    pub txns_total: u64,
    /// Snapshot rows copied.
    pub snapshot_rows_total: u64,
    /// Conflicts detected.
    pub conflicts_total: u64,
    /// Errors seen (retried or fatal).
    pub errors_total: u64,
    /// The last error, with its fix.
    pub last_error: Option<String>,
    /// The source's clock minus ferry's, in seconds (measured each second by the
    /// heartbeat writer); `None` where the store cannot tell its time.
    #[serde(default)]
    pub clock_offset_seconds: Option<f64>,
    /// Two-way: the source's clock minus the target's, in seconds: what last-writer-wins
    /// is off by. `None` for one-way tasks and while a side is not measured.
    #[serde(default)]
    pub clock_skew_seconds: Option<f64>,
    /// `ok`, `alarm` (above `clock_skew_alarm`), `paused` (above `clock_skew_pause`:
    /// applying waits) or `unknown`.
    #[serde(default)]
    pub clock_skew: SkewLevel,
    /// The alarm or pause in words, with its fix.
    #[serde(default)]
    pub clock_message: Option<String>,
    /// When this was taken (µs).
    pub at_us: i64,
    /// Bytes of change history the source keeps for this direction (a PostgreSQL slot's
    /// retained WAL); `None` where the source keeps none per reader.
    #[serde(default)]
    pub retained_bytes: Option<u64>,
    /// The retained history is over the task's `retention_alarm`, or the source says it
    /// is about to discard it.
    #[serde(default)]
    pub retention_alarm: bool,
    /// Snapshot progress per table (empty when the direction takes no snapshot).
    #[serde(default)]
    pub snapshot_tables: Vec<TableCopy>,
    /// The transaction the target refused, while that stops the direction.
    #[serde(default)]
    pub failed_change: Option<FailedChange>,
}

impl DirectionMetrics {
    /// Fresh counters.
    pub fn new(id: DirectionId) -> Self {
        DirectionMetrics {
            id,
            state: Mutex::new(DirectionState::Starting),
            position: Mutex::new(None),
            last_error: Mutex::new(None),
            rate: Mutex::new(RateWindow { buckets: [0; 61], second: 0 }),
            changes: AtomicU64::new(0),
            txns: AtomicU64::new(0),
            snapshot_rows: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            behind: AtomicU64::new(UNKNOWN),
            last_heartbeat_us: AtomicI64::new(0),
            caught_up_us: AtomicI64::new(0),
            clock: Mutex::new(None),
            retained: AtomicU64::new(UNKNOWN),
            retention_alarm: AtomicBool::new(false),
            copy: CopyProgress::default(),
            failed: Mutex::new(None),
        }
    }

    /// Sets the state.
    pub fn set_state(&self, s: DirectionState) {
        if let Ok(mut g) = self.state.lock() {
            *g = s;
        }
    }

    /// The state.
    pub fn state(&self) -> DirectionState {
        self.state.lock().map(|g| g.clone()).unwrap_or(DirectionState::Failed)
    }

    /// Records an applied batch.
    pub fn applied(&self, changes: u64, txns: u64, snapshot_rows: u64, conflicts: u64, position: &Position) {
        self.changes.fetch_add(changes, Ordering::Relaxed);
        self.txns.fetch_add(txns, Ordering::Relaxed);
        self.snapshot_rows.fetch_add(snapshot_rows, Ordering::Relaxed);
        self.conflicts.fetch_add(conflicts, Ordering::Relaxed);
        if let Ok(mut r) = self.rate.lock() {
            r.add(changes + snapshot_rows, now_micros() / 1_000_000);
        }
        if let Ok(mut p) = self.position.lock() {
            *p = Some(position.clone());
        }
    }

    /// Adds the counters of `earlier`, the same direction before a pause: the totals
    /// count over the task's life in this process, not since the last resume.
    pub fn carry_from(&self, earlier: &DirectionMetrics) {
        for (mine, theirs) in [
            (&self.changes, &earlier.changes),
            (&self.txns, &earlier.txns),
            (&self.snapshot_rows, &earlier.snapshot_rows),
            (&self.conflicts, &earlier.conflicts),
            (&self.errors, &earlier.errors),
        ] {
            mine.fetch_add(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.copy.carry_from(&earlier.copy);
    }

    /// Records the commit time of the newest source heartbeat applied.
    pub fn heartbeat_applied(&self, ts_us: i64) {
        self.last_heartbeat_us.fetch_max(ts_us, Ordering::Relaxed);
    }

    /// Records how many changes the source has beyond the applied position.
    pub fn set_behind(&self, n: Option<u64>) {
        self.behind.store(n.unwrap_or(UNKNOWN), Ordering::Relaxed);
        if n == Some(0) {
            self.caught_up_us.store(now_micros(), Ordering::Relaxed);
        }
    }

    /// Records the history the source keeps for this direction and whether it is too
    /// much; returns whether the alarm just went on.
    pub fn set_retained(&self, bytes: Option<u64>, alarm: bool) -> bool {
        self.retained.store(bytes.unwrap_or(UNKNOWN), Ordering::Relaxed);
        !self.retention_alarm.swap(alarm, Ordering::Relaxed) && alarm
    }

    /// Records an error (retried or fatal).
    pub fn error(&self, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(message);
        }
    }

    /// Clears the last error once things work again.
    pub fn clear_error(&self) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = None;
        }
        self.set_failed(None);
    }

    /// Records (or clears) the refused transaction that stops the direction.
    pub fn set_failed(&self, failed: Option<FailedChange>) {
        if let Ok(mut g) = self.failed.lock() {
            *g = failed;
        }
    }

    /// Records the latest view of the task's clocks.
    pub fn set_clock(&self, view: SkewView) {
        if let Ok(mut g) = self.clock.lock() {
            *g = Some(view);
        }
    }

    /// The last applied position.
    pub fn position(&self) -> Option<Position> {
        self.position.lock().ok().and_then(|g| g.clone())
    }

    /// A copy of everything, now.
    pub fn status(&self) -> DirectionStatus {
        let now = now_micros();
        let hb = self.last_heartbeat_us.load(Ordering::Relaxed);
        let rates = match self.rate.lock() {
            Ok(mut r) => [r.rate(1, now / 1_000_000), r.rate(10, now / 1_000_000), r.rate(60, now / 1_000_000)],
            Err(_) => [0.0; 3],
        };
        let clock = self.clock.lock().ok().and_then(|g| g.clone());
        let secs = |us: Option<i64>| us.map(|u| u as f64 / 1e6);
        DirectionStatus {
            clock_offset_seconds: secs(clock.as_ref().and_then(|c| c.offset_us)),
            clock_skew_seconds: secs(clock.as_ref().and_then(|c| c.skew_us)),
            clock_skew: clock.as_ref().map_or(SkewLevel::Unknown, |c| c.level),
            clock_message: clock.and_then(|c| c.message),
            task: self.id.task.clone(),
            direction: self.id.direction(),
            state: self.state(),
            position: self.position().map(|p| p.to_string()),
            lag_seconds: (hb > 0).then(|| ((now - hb).max(0)) as f64 / 1e6),
            changes_behind: Some(self.behind.load(Ordering::Relaxed)).filter(|&n| n != UNKNOWN),
            rows_per_sec: rates,
            changes_total: self.changes.load(Ordering::Relaxed),
            txns_total: self.txns.load(Ordering::Relaxed),
            snapshot_rows_total: self.snapshot_rows.load(Ordering::Relaxed),
            conflicts_total: self.conflicts.load(Ordering::Relaxed),
            errors_total: self.errors.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|g| g.clone()),
            at_us: now,
            retained_bytes: Some(self.retained.load(Ordering::Relaxed)).filter(|&n| n != UNKNOWN),
            retention_alarm: self.retention_alarm.load(Ordering::Relaxed),
            snapshot_tables: self.copy.view(now),
            failed_change: self.failed.lock().ok().and_then(|g| g.clone()),
        }
    }
}

/// A byte count for people: `512 B`, `3.2 MB`, `10.0 GB` (1024-based).
pub fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_window_averages_complete_seconds() {
        let mut w = RateWindow { buckets: [0; 61], second: 0 };
        w.add(100, 1000);
        w.add(50, 1001);
        assert_eq!(w.rate(1, 1002), 50.0);
        assert_eq!(w.rate(10, 1002), 15.0);
        assert_eq!(w.rate(1, 1100), 0.0);
    }

    #[test]
    fn changes_behind_is_absent_where_the_source_cannot_count() {
        let id = DirectionId { task: "t".into(), from: "a".into(), to: "b".into() };
        let m = DirectionMetrics::new(id);
        assert_eq!(m.status().changes_behind, None, "unknown before the first head");
        m.set_behind(Some(7));
        assert_eq!(m.status().changes_behind, Some(7));
        m.set_behind(None);
        assert_eq!(m.status().changes_behind, None, "a binlog offset is not a count");
    }

    #[test]
    fn counters_carry_over_a_pause() {
        let id = DirectionId { task: "t".into(), from: "a".into(), to: "b".into() };
        let before = DirectionMetrics::new(id.clone());
        before.applied(579, 100, 10, 86, &Position::new(String::new(), Vec::new(), None));
        let after = DirectionMetrics::new(id);
        after.applied(1, 1, 0, 2, &Position::new(String::new(), Vec::new(), None));
        after.carry_from(&before);
        let s = after.status();
        assert_eq!((s.changes_total, s.txns_total, s.snapshot_rows_total, s.conflicts_total), (580, 101, 10, 88));
    }

    #[test]
    fn sizes_read_for_people() {
        assert_eq!(size_text(512), "512 B");
        assert_eq!(size_text(3 << 20), "3.0 MB");
        assert_eq!(size_text(10 << 30), "10.0 GB");
    }

    #[test]
    fn the_retention_alarm_reports_when_it_goes_on() {
        let id = DirectionId { task: "t".into(), from: "a".into(), to: "b".into() };
        let m = DirectionMetrics::new(id);
        assert_eq!((m.status().retained_bytes, m.status().retention_alarm), (None, false));
        assert!(!m.set_retained(Some(10), false));
        assert!(m.set_retained(Some(100), true), "went on");
        assert!(!m.set_retained(Some(200), true), "stays on: reported once");
        assert_eq!((m.status().retained_bytes, m.status().retention_alarm), (Some(200), true));
    }
}
