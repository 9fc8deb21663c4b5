//! Verification: proving both sides of a task hold the same rows (docs/verify.md).
//!
//! A table is walked in primary-key chunks ([`chunk`]); both sides checksum each chunk at
//! once, inside the database when both are MySQL with the same column types, otherwise
//! by hashing the canonical form of streamed rows in ferry ([`canonical`]). A differing
//! chunk is narrowed to rows ([`bisect`], [`diff`]); while the task runs, differences
//! are re-checked after replication caught up ([`live`]); confirmed ones can be repaired
//! ([`repair`]). [`compare`] is the demo's simple row-by-row check of SQLite pairs.

pub mod bisect;
pub mod blob;
mod blob_lanes;
pub mod canonical;
pub mod chunk;
pub mod diff;
pub mod error;
pub mod items;
pub mod live;
pub mod plan;
pub mod progress;
pub mod repair;
pub mod report;
pub mod rows;
pub mod span;
pub mod throttle;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::{Config, Task};
use crate::connector::registry::{self, SideOptions};
use crate::connector::verifier::{AnySide, Side};
use crate::model::{Key, key_text};
use crate::store::{Store, StoreError, actor};
use diff::{RowDiff, TablePair};
use live::{Rechecks, Settled};
use progress::Progress;
use report::{Extent, RepairSummary, Report, TableReport};
use throttle::Throttle;

pub use error::VerifyError;

/// What to verify and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// Narrows the task's tables (`--tables`).
    pub tables: Option<String>,
    /// Count and key extent only (`--quick`).
    pub quick: bool,
    /// Write repair SQL here (`--repair-sql`).
    pub repair_sql: Option<PathBuf>,
    /// Apply the repair to the target (`--repair`).
    pub repair: bool,
    /// Rows per second at most (0 = unthrottled).
    pub max_rows_per_sec: u64,
    /// Live re-check bounds.
    pub rechecks: Rechecks,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tables: None,
            quick: false,
            repair_sql: None,
            repair: false,
            max_rows_per_sec: 0,
            rechecks: Rechecks { rounds: 5, wait: Duration::from_secs(30) },
        }
    }
}

/// Verifies one task: its `from` endpoint is the source of truth, `to` the target.
pub async fn verify_task(
    config: &Config,
    task: &Task,
    opts: &Options,
    store: &Store,
    progress: &Progress,
) -> Result<Report, VerifyError> {
    if items::is_items_task(config, task) {
        // Keys and values, not tables: compared by key (verify/items.rs).
        let how = items::ItemOptions { quick: opts.quick, repair: opts.repair };
        return Ok(items::verify_items_task(config, task, &how).await?.as_report());
    }
    let start = Instant::now();
    let endpoint = |name: &str| {
        config.endpoint(name).ok_or_else(|| VerifyError::Input {
            problem: format!("task {} names endpoint {name:?}, which is not defined", task.name),
            fix: "define it as an [[endpoint]]".into(),
        })
    };
    let read = SideOptions { write: false, index: task.index.clone() };
    let mut sides = Sides {
        source: registry::open_side(endpoint(&task.from)?, &read).await?,
        planner: registry::open_side(endpoint(&task.from)?, &read).await?,
        target: registry::open_side(endpoint(&task.to)?, &SideOptions { write: opts.repair, ..read.clone() }).await?,
    };
    if sides.source.dialect().store() != sides.target.dialect().store() {
        sides.source.set_byte_order();
        sides.planner.set_byte_order();
        sides.target.set_byte_order();
    }
    let result = verify_sides(config, task, opts, store, progress, &mut sides).await;
    sides.source.close().await;
    sides.planner.close().await;
    sides.target.close().await;
    let mut report = result?;
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// Records a finished run in the audit log as `verify.clean` or `verify.differs` with its
/// totals: the evidence cutover's Preflight reads. Every starter (the CLI, the node API
/// and console, the cutover's Verify step) records through here, so one verify counts
/// whoever started it. `context` says where it ran (`in cutover`), or is empty.
pub async fn record(store: &Store, actor: &str, report: &Report, context: &str) -> Result<(), StoreError> {
    let detail = format!(
        "{} verify of {} -> {}{}{}: {} ({} confirmed, {} transient, {} unsettled, {} rows, {:.1}s)",
        report.mode,
        report.source,
        report.target,
        if context.is_empty() { "" } else { " " },
        context,
        if report.identical { "identical" } else { "differences confirmed" },
        report.confirmed,
        report.transient,
        report.unsettled,
        report.rows_checked,
        report.seconds
    );
    let action = if report.identical { "verify.clean" } else { "verify.differs" };
    store.audit(actor, action, Some(&report.task), &detail).await
}

/// The sessions of one run: the source, a second source session that plans chunks
/// ahead, and the target.
struct Sides {
    source: AnySide,
    planner: AnySide,
    target: AnySide,
}

async fn verify_sides(
    config: &Config,
    task: &Task,
    opts: &Options,
    store: &Store,
    progress: &Progress,
    sides: &mut Sides,
) -> Result<Report, VerifyError> {
    let Sides { source, planner, target } = sides;
    let plan = plan::plan_tables(task, source, target, opts.tables.as_deref()).await?;
    if plan.byte_order {
        source.set_byte_order();
        planner.set_byte_order();
        target.set_byte_order();
    }
    let pairs = plan.pairs;
    let directions = live::running_directions(config, task).await;
    if let Some((direction, table)) = live::copying(&directions).await {
        return Err(VerifyError::Input {
            problem: format!("task {direction} is still copying table {table} (its snapshot is not done)"),
            fix: "verify once `ferry status` shows the snapshot done; until then rows not copied yet would show as missing".into(),
        });
    }
    let mut report = Report {
        task: task.name.clone(),
        source: task.from.clone(),
        target: task.to.clone(),
        mode: if opts.quick { "quick" } else { "full" }.into(),
        ..Default::default()
    };
    if opts.quick {
        for pair in &pairs {
            report.tables.push(quick_table(pair, source, target).await?);
        }
        report.total();
        return Ok(report);
    }
    let mut throttle = Throttle::new(opts.max_rows_per_sec);
    let mut found = Vec::new();
    for pair in &pairs {
        let walk = chunk::walk_table(pair, source, planner, target, progress, &mut throttle).await?;
        report.tables.push(TableReport {
            table: pair.source.name.to_string(),
            target_table: pair.target.name.to_string(),
            method: pair.method.into(),
            source_rows: walk.source_rows,
            target_rows: walk.target_rows,
            chunks: walk.chunks,
            chunks_differing: walk.chunks_differing,
            not_listed: walk.not_kept,
            seconds: walk.seconds,
            ..Default::default()
        });
        found.push(walk.diffs);
    }
    report.live = !directions.is_empty();
    let settled: Vec<Settled> = if directions.is_empty() {
        found.into_iter().map(|confirmed| Settled { confirmed, ..Default::default() }).collect()
    } else {
        let (s, rounds) = live::settle(&pairs, found, source, target, &directions, opts.rechecks, progress).await?;
        report.recheck_rounds = rounds;
        s
    };
    for ((t, pair), s) in report.tables.iter_mut().zip(&pairs).zip(&settled) {
        let sorted = |v: &[RowDiff]| {
            let mut d: Vec<_> = v.iter().map(|d| pair.describe(d)).collect();
            d.sort_by(|a, b| a.key.cmp(&b.key));
            d
        };
        t.confirmed = sorted(&s.confirmed);
        t.transient = sorted(&s.transient);
        t.unsettled = sorted(&s.unsettled);
    }
    report.total();
    if opts.repair || opts.repair_sql.is_some() {
        report.repair = Some(repair_all(config, task, opts, store, &pairs, &settled, target).await?);
    }
    Ok(report)
}

/// Row count and key extent on both sides (`--quick`).
async fn quick_table(pair: &TablePair, source: &mut AnySide, target: &mut AnySide) -> Result<TableReport, VerifyError> {
    let start = Instant::now();
    let (a, b) = tokio::join!(source.extent(&pair.source), target.extent(&pair.target));
    let ((na, mina, maxa), (nb, minb, maxb)) = (a?, b?);
    let key_bytes = |k: &Option<Key>| {
        k.as_ref().map(|k| {
            let mut out = Vec::new();
            for (n, &i) in pair.source.primary_key.iter().enumerate() {
                canonical::encode(pair.classes[i], &k[n], &mut out);
            }
            out
        })
    };
    let same = na == nb && key_bytes(&mina) == key_bytes(&minb) && key_bytes(&maxa) == key_bytes(&maxb);
    let extent = |n, min: &Option<Key>, max: &Option<Key>| Extent {
        rows: n,
        min_key: min.as_deref().map(key_text),
        max_key: max.as_deref().map(key_text),
    };
    let mut problems = Vec::new();
    if !same {
        problems.push(format!(
            "row count or key extent differs: source {na} rows, target {nb} rows (run a full verify to find the rows)"
        ));
    }
    Ok(TableReport {
        table: pair.source.name.to_string(),
        target_table: pair.target.name.to_string(),
        method: "quick".into(),
        source_rows: na,
        target_rows: nb,
        quick: Some((extent(na, &mina, &maxa), extent(nb, &minb, &maxb))),
        problems,
        seconds: start.elapsed().as_secs_f64(),
        ..Default::default()
    })
}

/// Writes and/or applies the repair of every confirmed difference; audits each applied row.
async fn repair_all(
    config: &Config,
    task: &Task,
    opts: &Options,
    store: &Store,
    pairs: &[TablePair],
    settled: &[Settled],
    target: &mut AnySide,
) -> Result<RepairSummary, VerifyError> {
    let dialect = target.dialect();
    let mut file = repair::preamble(dialect);
    let mut summary =
        RepairSummary { file: opts.repair_sql.as_ref().map(|p| p.display().to_string()), ..Default::default() };
    let who = actor(&config.node.id);
    for (pair, s) in pairs.iter().zip(settled) {
        let statements = repair::statements(pair, dialect, &s.confirmed);
        if statements.is_empty() {
            continue;
        }
        summary.statements += statements.len() as u64;
        if opts.repair {
            target.apply(&statements).await?;
            // Keys and counts only: a viewer reads the audit log, and row contents are
            // the data ferry protects.
            for d in &s.confirmed {
                let detail = format!("table {} key {} ({:?})", pair.target.name, key_text(&d.key), d.kind);
                store.audit(&who, "verify.repair", Some(&task.name), &detail).await?;
            }
            summary.applied = true;
        }
        file.extend(statements);
    }
    file.push("COMMIT".into());
    if let Some(path) = &opts.repair_sql {
        let text: String = file.iter().map(|s| format!("{s};\n")).collect();
        // 0600: the statements hold row contents.
        crate::store::write_private(path, text.as_bytes())
            .map_err(|source| VerifyError::RepairFile { path: path.clone(), source })?;
    }
    Ok(summary)
}
