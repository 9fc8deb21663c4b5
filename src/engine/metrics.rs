//! Live metrics of a task direction, shared by the engine (writer) and the status line,
//! the store, the API and the console (readers).

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

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
}

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
    /// Changes the source has that are not applied yet.
    pub changes_behind: u64,
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
    /// When this was taken (µs).
    pub at_us: i64,
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
            behind: AtomicU64::new(0),
            last_heartbeat_us: AtomicI64::new(0),
            caught_up_us: AtomicI64::new(0),
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

    /// Records the commit time of the newest source heartbeat applied.
    pub fn heartbeat_applied(&self, ts_us: i64) {
        self.last_heartbeat_us.fetch_max(ts_us, Ordering::Relaxed);
    }

    /// Records how many changes the source has beyond the applied position.
    pub fn set_behind(&self, n: u64) {
        self.behind.store(n, Ordering::Relaxed);
        if n == 0 {
            self.caught_up_us.store(now_micros(), Ordering::Relaxed);
        }
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
        DirectionStatus {
            task: self.id.task.clone(),
            direction: self.id.direction(),
            state: self.state(),
            position: self.position().map(|p| p.to_string()),
            lag_seconds: (hb > 0).then(|| ((now - hb).max(0)) as f64 / 1e6),
            changes_behind: self.behind.load(Ordering::Relaxed),
            rows_per_sec: rates,
            changes_total: self.changes.load(Ordering::Relaxed),
            txns_total: self.txns.load(Ordering::Relaxed),
            snapshot_rows_total: self.snapshot_rows.load(Ordering::Relaxed),
            conflicts_total: self.conflicts.load(Ordering::Relaxed),
            errors_total: self.errors.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|g| g.clone()),
            at_us: now,
        }
    }
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
}
