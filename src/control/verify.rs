//! The seam to verification (issue 5, built separately): the node and the console start
//! a verify and read its progress through [`VerifyRunner`]. Until the real runner is
//! wired in, [`VerifyUnavailable`] answers every call with a clear "not available".

use serde::{Deserialize, Serialize};

use super::ControlError;
use crate::config::{Config, Task};

/// Progress of one table in a verify run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableVerify {
    /// Table name.
    pub table: String,
    /// Chunks compared.
    pub chunks_done: u64,
    /// Chunks planned.
    pub chunks_total: u64,
    /// Rows that differ: found so far while the run goes on, confirmed once it ended.
    pub differences: u64,
    /// Rows that differed while replication was behind and matched on a re-check (once
    /// the run ended): not a problem.
    #[serde(default)]
    pub transient: u64,
    /// Rows that kept changing through every re-check (once the run ended).
    #[serde(default)]
    pub unsettled: u64,
}

/// A verify run's progress and, once finished, its report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyProgress {
    /// Run id.
    pub id: String,
    /// Task verified.
    pub task: String,
    /// running, identical, different, failed.
    pub state: String,
    /// Per-table progress.
    pub tables: Vec<TableVerify>,
    /// Differences found so far, all tables; confirmed ones once the run ended.
    pub differences: u64,
    /// Transient differences, all tables (once the run ended).
    #[serde(default)]
    pub transient: u64,
    /// Unsettled differences, all tables (once the run ended).
    #[serde(default)]
    pub unsettled: u64,
    /// The direction checked (`a->b`: `a` is the source of truth).
    #[serde(default)]
    pub direction: String,
    /// The report (text) once finished.
    pub report: Option<String>,
    /// The first confirmed differences (at most [`ROWS_SHOWN`]) once finished, with both
    /// sides' values of the columns that differ.
    #[serde(default)]
    pub rows: Vec<DifferingRow>,
}

/// How many differing rows a run's progress carries (the report counts them all).
pub const ROWS_SHOWN: usize = 200;

/// One confirmed difference of a verify run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DifferingRow {
    /// Source table.
    pub table: String,
    /// `missing` (on the source only), `extra` (on the target only) or `different`.
    pub kind: String,
    /// The key, rendered.
    pub key: String,
    /// The columns that differ, with both values (kind `different`).
    pub columns: Vec<ColumnPair>,
}

/// One differing column: the source's value and the target's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnPair {
    /// Column (source name).
    pub column: String,
    /// The source's value.
    pub source: String,
    /// The target's value.
    pub target: String,
}

/// Starts verify runs and reports on them. A runner owns the tasks it starts and stops
/// them when dropped or shut down; `start` returns at once.
pub trait VerifyRunner: Send + Sync {
    /// Starts verifying `task` (and, with `repair`, making the target equal to the
    /// source) for `actor`; returns the new run's first progress (with its id). A run that
    /// ends records its verdict like the CLI's ([`crate::verify::record`]).
    fn start(&self, config: &Config, task: &Task, repair: bool, actor: &str) -> Result<VerifyProgress, ControlError>;
    /// The progress of a run.
    fn progress(&self, id: &str) -> Result<VerifyProgress, ControlError>;
    /// The newest run of a task, if any.
    fn latest(&self, task: &str) -> Option<VerifyProgress>;
}

/// The runner of a build without verification: every call answers 501.
#[derive(Debug, Default)]
pub struct VerifyUnavailable;

fn unavailable() -> ControlError {
    ControlError::Unavailable { what: "verify".into() }
}

impl VerifyRunner for VerifyUnavailable {
    fn start(
        &self,
        _config: &Config,
        _task: &Task,
        _repair: bool,
        _actor: &str,
    ) -> Result<VerifyProgress, ControlError> {
        Err(unavailable())
    }

    fn progress(&self, _id: &str) -> Result<VerifyProgress, ControlError> {
        Err(unavailable())
    }

    fn latest(&self, _task: &str) -> Option<VerifyProgress> {
        None
    }
}
