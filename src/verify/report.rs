//! What verify found, per table and in total: the JSON report (`--format json`) and its
//! text rendering. Field names are a contract (docs/verify.md).

use std::fmt::Write as _;

use serde::Serialize;

/// How a row differs between source and target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// On the source, not on the target.
    Missing,
    /// On the target, not on the source.
    Extra,
    /// On both, with different values.
    Different,
}

/// One column that differs, with both values rendered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnDiff {
    /// Column name (source name).
    pub column: String,
    /// The source's value.
    pub source: String,
    /// The target's value.
    pub target: String,
}

/// One differing row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    /// Missing, extra or different.
    pub kind: DiffKind,
    /// The primary key, rendered: `(1, "x")`.
    pub key: String,
    /// The differing columns (kind `different` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<ColumnDiff>,
}

/// Row count and key extent of one side (`--quick`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Extent {
    /// Rows.
    pub rows: u64,
    /// Lowest key, rendered.
    pub min_key: Option<String>,
    /// Highest key, rendered.
    pub max_key: Option<String>,
}

/// How one table compares.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableReport {
    /// Source table.
    pub table: String,
    /// Target table (differs under `[[task.map]]` or between engines).
    pub target_table: String,
    /// `in-database` (server-side checksums), `sqlite-text` (SQLite's exact row text
    /// hashed as it streams), `in-ferry` (canonical row hashing) or `quick`.
    pub method: String,
    /// Rows read on the source.
    pub source_rows: u64,
    /// Rows read on the target.
    pub target_rows: u64,
    /// Key-range chunks compared.
    pub chunks: u64,
    /// Chunks whose checksums differed.
    pub chunks_differing: u64,
    /// Differences still there after replication caught up (or with no task running).
    pub confirmed: Vec<Difference>,
    /// Differing rows beyond the first 100,000 of the table: counted as confirmed, not
    /// listed, re-checked or repaired (run verify again after a repair).
    pub not_listed: u64,
    /// Differences replication fixed while verify waited.
    pub transient: Vec<Difference>,
    /// Differences on rows that kept changing through every re-check round.
    pub unsettled: Vec<Difference>,
    /// Table-level differences (`--quick`: count or key extent).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// `--quick`: each side's count and key extent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quick: Option<(Extent, Extent)>,
    /// Seconds spent on this table.
    pub seconds: f64,
}

impl TableReport {
    /// True when nothing confirmed differs.
    pub fn clean(&self) -> bool {
        self.confirmed.is_empty() && self.not_listed == 0 && self.problems.is_empty()
    }
}

/// The whole run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Task name.
    pub task: String,
    /// Source endpoint.
    pub source: String,
    /// Target endpoint.
    pub target: String,
    /// `full` or `quick`.
    pub mode: String,
    /// Whether a process ran the task (differences were re-checked after replication).
    pub live: bool,
    /// Re-check rounds made.
    pub recheck_rounds: u32,
    /// True when no confirmed difference was found.
    pub identical: bool,
    /// Confirmed differences, all tables.
    pub confirmed: u64,
    /// Transient differences, all tables.
    pub transient: u64,
    /// Unsettled differences, all tables.
    pub unsettled: u64,
    /// Rows read on both sides.
    pub rows_checked: u64,
    /// Wall time.
    pub seconds: f64,
    /// Repair: statements written or applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairSummary>,
    /// Per table.
    pub tables: Vec<TableReport>,
}

/// What repair did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairSummary {
    /// Statements generated.
    pub statements: u64,
    /// Written to this file (`--repair-sql`).
    pub file: Option<String>,
    /// Applied to the target (`--repair`).
    pub applied: bool,
}

impl Report {
    /// Fills the totals from the tables.
    pub fn total(&mut self) {
        self.confirmed = self.tables.iter().map(|t| t.confirmed.len() as u64 + t.not_listed).sum();
        self.transient = self.tables.iter().map(|t| t.transient.len() as u64).sum();
        self.unsettled = self.tables.iter().map(|t| t.unsettled.len() as u64).sum();
        self.rows_checked = self.tables.iter().map(|t| t.source_rows + t.target_rows).sum();
        self.identical = self.tables.iter().all(TableReport::clean);
    }

    /// The report for people.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "task {} ({} -> {}), {} verify{}:",
            self.task,
            self.source,
            self.target,
            self.mode,
            if self.live { format!(", live: {} re-check round(s)", self.recheck_rounds) } else { String::new() }
        );
        for t in &self.tables {
            let verdict = if t.clean() { "identical" } else { "DIFFERS" };
            let _ = writeln!(
                s,
                "  {} -> {}: {verdict} ({} / {} rows, {} chunks, {} differing, {}, {:.2}s)",
                t.table,
                t.target_table,
                t.source_rows,
                t.target_rows,
                t.chunks,
                t.chunks_differing,
                t.method,
                t.seconds
            );
            if let Some((a, b)) = &t.quick {
                let _ = writeln!(
                    s,
                    "    source: {} rows, keys {} .. {}\n    target: {} rows, keys {} .. {}",
                    a.rows,
                    a.min_key.as_deref().unwrap_or("-"),
                    a.max_key.as_deref().unwrap_or("-"),
                    b.rows,
                    b.min_key.as_deref().unwrap_or("-"),
                    b.max_key.as_deref().unwrap_or("-")
                );
            }
            for p in &t.problems {
                let _ = writeln!(s, "    {p}");
            }
            if t.not_listed > 0 {
                let _ = writeln!(
                    s,
                    "    {} more differing rows not listed (only the first 100,000 per table are kept)",
                    t.not_listed
                );
            }
            for (label, list) in [("confirmed", &t.confirmed), ("transient", &t.transient), ("unsettled", &t.unsettled)]
            {
                for d in list {
                    let _ = write!(s, "    {label} {:?} key {}", d.kind, d.key);
                    for c in &d.columns {
                        let _ = write!(s, "; {}: source {} target {}", c.column, c.source, c.target);
                    }
                    s.push('\n');
                }
            }
        }
        let _ = writeln!(
            s,
            "{}: {} confirmed, {} transient, {} unsettled difference(s); {} rows checked in {:.2}s",
            if self.identical { "IDENTICAL" } else { "DIFFERENT" },
            self.confirmed,
            self.transient,
            self.unsettled,
            self.rows_checked,
            self.seconds
        );
        if let Some(r) = &self.repair {
            let _ = writeln!(
                s,
                "repair: {} statement(s){}{}",
                r.statements,
                r.file.as_ref().map(|f| format!(", written to {f}")).unwrap_or_default(),
                if r.applied { ", applied to the target (audited)" } else { "" }
            );
        }
        s
    }
}
