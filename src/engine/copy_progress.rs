//! Snapshot progress per table: rows copied of the source's estimate, the rate and the
//! time left, for the API and the console. The engine writes it as chunks apply; the
//! estimate is the source's cheap guess ([`crate::connector::Source::estimate_rows`]),
//! so a table may copy more rows than estimated (the gauge then stops at 100%).

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Where a table's snapshot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyState {
    /// Not started.
    Pending,
    /// Being copied.
    Copying,
    /// Copied.
    Done,
}

/// One table's snapshot, as served (`snapshot_tables` of a direction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableCopy {
    /// Source table.
    pub table: String,
    /// pending, copying or done.
    pub state: CopyState,
    /// Rows copied over the task's life in this process (a table resumed after a
    /// restart counts from where it resumed).
    pub rows_copied: u64,
    /// The source's estimate of the table's rows; `None` where it cannot tell.
    pub rows_estimated: Option<u64>,
    /// Rows per second since this process started copying the table (while copying).
    pub rows_per_sec: Option<f64>,
    /// Seconds left at that rate, while copying with an estimate above the rows copied.
    pub eta_seconds: Option<f64>,
}

#[derive(Debug)]
struct Tracked {
    view: TableCopy,
    /// Rows copied before this run of the direction (carried over a pause).
    base: u64,
    /// When this run started copying it (µs).
    started_us: Option<i64>,
}

/// The tracker one direction writes.
#[derive(Debug, Default)]
pub struct CopyProgress {
    tables: Mutex<Vec<Tracked>>,
}

impl CopyProgress {
    /// Declares a table of the snapshot with its state and estimate; a table already
    /// known (carried over a pause) keeps its rows.
    pub fn plan(&self, table: &str, state: CopyState, rows_estimated: Option<u64>) {
        let Ok(mut tables) = self.tables.lock() else { return };
        match tables.iter_mut().find(|t| t.view.table == table) {
            Some(t) => {
                t.view.state = state;
                t.view.rows_estimated = rows_estimated.or(t.view.rows_estimated);
            }
            None => tables.push(Tracked {
                view: TableCopy {
                    table: table.to_string(),
                    state,
                    rows_copied: 0,
                    rows_estimated,
                    rows_per_sec: None,
                    eta_seconds: None,
                },
                base: 0,
                started_us: None,
            }),
        }
    }

    /// Counts `rows` copied of `table` at `now_us`; `done` when it was the last chunk.
    pub fn copied(&self, table: &str, rows: u64, done: bool, now_us: i64) {
        let Ok(mut tables) = self.tables.lock() else { return };
        let Some(t) = tables.iter_mut().find(|t| t.view.table == table) else { return };
        t.view.rows_copied += rows;
        if t.started_us.is_none() {
            // The first chunk's read time is unknown: the rate counts from its landing.
            t.started_us = Some(now_us);
            t.base = t.view.rows_copied;
        }
        t.view.state = if done { CopyState::Done } else { CopyState::Copying };
    }

    /// Takes over the rows an earlier run of the same direction copied (before a pause).
    pub fn carry_from(&self, earlier: &CopyProgress) {
        let Ok(old) = earlier.tables.lock() else { return };
        let Ok(mut tables) = self.tables.lock() else { return };
        for o in old.iter() {
            match tables.iter_mut().find(|t| t.view.table == o.view.table) {
                Some(t) => {
                    t.view.rows_copied += o.view.rows_copied;
                    t.base += o.view.rows_copied;
                    t.view.rows_estimated = t.view.rows_estimated.or(o.view.rows_estimated);
                }
                None => tables.push(Tracked {
                    view: TableCopy { rows_per_sec: None, eta_seconds: None, ..o.view.clone() },
                    base: o.view.rows_copied,
                    started_us: None,
                }),
            }
        }
    }

    /// Every table as of `now_us`, in copy order.
    pub fn view(&self, now_us: i64) -> Vec<TableCopy> {
        let Ok(tables) = self.tables.lock() else { return Vec::new() };
        tables
            .iter()
            .map(|t| {
                let mut v = t.view.clone();
                if v.state == CopyState::Copying
                    && let Some(start) = t.started_us
                {
                    let secs = (now_us - start) as f64 / 1e6;
                    let rate = (secs >= 0.5).then(|| (v.rows_copied - t.base) as f64 / secs);
                    v.rows_per_sec = rate;
                    v.eta_seconds = match (rate, v.rows_estimated) {
                        (Some(r), Some(est)) if r > 0.0 && est > v.rows_copied => {
                            Some((est - v.rows_copied) as f64 / r)
                        }
                        _ => None,
                    };
                }
                v
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_has_a_rate_and_an_eta_while_copying() {
        let p = CopyProgress::default();
        p.plan("orders", CopyState::Pending, Some(10_000));
        p.plan("items", CopyState::Pending, None);
        assert_eq!(p.view(0)[0].state, CopyState::Pending);
        p.copied("orders", 1000, false, 1_000_000);
        p.copied("orders", 1000, false, 3_000_000);
        let v = &p.view(3_000_000)[0];
        assert_eq!((v.state, v.rows_copied), (CopyState::Copying, 2000));
        // 1000 rows (those after the first chunk landed) in 2 s.
        assert_eq!(v.rows_per_sec, Some(500.0));
        assert_eq!(v.eta_seconds, Some(16.0), "8000 rows left at 500/s");
        p.copied("orders", 500, true, 4_000_000);
        let v = &p.view(4_000_000)[0];
        assert_eq!((v.state, v.rows_copied, v.eta_seconds), (CopyState::Done, 2500, None));
        assert_eq!(p.view(0)[1].rows_estimated, None, "no estimate: no ETA, never a guess");
    }

    #[test]
    fn rows_carry_over_a_pause_whichever_comes_first() {
        let before = CopyProgress::default();
        before.plan("t", CopyState::Pending, Some(100));
        before.copied("t", 40, false, 0);
        let planned_first = CopyProgress::default();
        planned_first.plan("t", CopyState::Copying, Some(100));
        planned_first.carry_from(&before);
        let carried_first = CopyProgress::default();
        carried_first.carry_from(&before);
        carried_first.plan("t", CopyState::Copying, Some(100));
        for p in [planned_first, carried_first] {
            p.copied("t", 10, false, 1_000_000);
            p.copied("t", 10, false, 2_000_000);
            let v = &p.view(2_000_000)[0];
            assert_eq!(v.rows_copied, 60);
            assert_eq!(v.rows_per_sec, Some(10.0), "the rate counts this run's rows only");
        }
    }
}
