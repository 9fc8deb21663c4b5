//! The [`VerifyRunner`] that verifies: each run is `verify::verify_task` in a task of
//! its own, its progress events folded into the [`VerifyProgress`] the node API and the
//! console read. Unfinished runs are aborted when the runner is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use super::ControlError;
use super::verify::{ColumnPair, DifferingRow, ROWS_SHOWN, TableVerify, VerifyProgress, VerifyRunner};
use crate::config::{Config, Task};
use crate::store::Store;
use crate::verify::progress::{Progress, ProgressEvent};
use crate::verify::report::DiffKind;
use crate::verify::{Options, record, verify_task};

type Runs = Arc<Mutex<HashMap<String, VerifyProgress>>>;

/// Runs verifies in the background, one task each.
#[derive(Default)]
pub struct VerifyEngine {
    runs: Runs,
    handles: Mutex<Vec<JoinHandle<()>>>,
    next: AtomicU64,
}

impl Drop for VerifyEngine {
    fn drop(&mut self) {
        for h in self.handles.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            h.abort();
        }
    }
}

fn update(runs: &Runs, id: &str, f: impl FnOnce(&mut VerifyProgress)) {
    if let Some(p) = runs.lock().unwrap_or_else(|e| e.into_inner()).get_mut(id) {
        f(p);
    }
}

/// Folds one event into a run's progress.
fn apply_event(p: &mut VerifyProgress, e: ProgressEvent) {
    match e {
        ProgressEvent::TableStarted { table, .. } => {
            p.tables.push(TableVerify {
                table,
                chunks_done: 0,
                chunks_total: 1,
                differences: 0,
                transient: 0,
                unsettled: 0,
            });
        }
        ProgressEvent::Chunk { table, .. } => {
            if let Some(t) = p.tables.iter_mut().find(|t| t.table == table) {
                t.chunks_done += 1;
                // The number of chunks is known only at the end: one more while running.
                t.chunks_total = t.chunks_done + 1;
            }
        }
        ProgressEvent::TableDone { table, differences } => {
            if let Some(t) = p.tables.iter_mut().find(|t| t.table == table) {
                t.chunks_total = t.chunks_done;
                t.differences = differences;
            }
            p.differences = p.tables.iter().map(|t| t.differences).sum();
        }
        ProgressEvent::Recheck { pending, .. } => p.differences = pending,
    }
}

/// The first confirmed differences of a report, for the console's side-by-side view.
fn differing_rows(report: &crate::verify::report::Report) -> Vec<DifferingRow> {
    let kind = |k: DiffKind| match k {
        DiffKind::Missing => "missing",
        DiffKind::Extra => "extra",
        DiffKind::Different => "different",
    };
    report
        .tables
        .iter()
        .flat_map(|t| t.confirmed.iter().map(move |d| (t, d)))
        .take(ROWS_SHOWN)
        .map(|(t, d)| DifferingRow {
            table: t.table.clone(),
            kind: kind(d.kind).into(),
            key: d.key.clone(),
            columns: d
                .columns
                .iter()
                .map(|c| ColumnPair { column: c.column.clone(), source: c.source.clone(), target: c.target.clone() })
                .collect(),
        })
        .collect()
}

impl VerifyRunner for VerifyEngine {
    fn start(&self, config: &Config, task: &Task, repair: bool, actor: &str) -> Result<VerifyProgress, ControlError> {
        let id = format!("{}-{}", task.name, self.next.fetch_add(1, Ordering::Relaxed) + 1);
        let first = VerifyProgress {
            id: id.clone(),
            task: task.name.clone(),
            state: "running".into(),
            tables: Vec::new(),
            differences: 0,
            transient: 0,
            unsettled: 0,
            direction: format!("{}->{}", task.from, task.to),
            report: None,
            rows: Vec::new(),
        };
        self.runs.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), first.clone());
        let (progress, mut rx) = Progress::channel();
        let (runs, config, task, actor) = (self.runs.clone(), config.clone(), task.clone(), actor.to_string());
        let handle = tokio::spawn(async move {
            let events = {
                let (runs, id) = (runs.clone(), id.clone());
                async move {
                    while let Some(e) = rx.recv().await {
                        update(&runs, &id, |p| apply_event(p, e));
                    }
                }
            };
            let work = async move {
                let result = match Store::open(&config.node.store.path(), true).await {
                    Ok(store) => {
                        let opts = Options { repair, ..Options::default() };
                        let result = verify_task(&config, &task, &opts, &store, &progress).await;
                        // The same evidence the CLI writes: cutover's Preflight counts it.
                        let recorded = match &result {
                            Ok(report) => record(&store, &actor, report, "").await.map_err(|e| e.to_string()),
                            Err(_) => Ok(()),
                        };
                        store.close().await;
                        match (result, recorded) {
                            (Ok(report), Ok(())) => Ok(report),
                            (Ok(_), Err(e)) => Err(format!("the verify ended but could not be recorded: {e}")),
                            (Err(e), _) => Err(e.to_string()),
                        }
                    }
                    Err(e) => Err(e.to_string()),
                };
                drop(progress);
                result
            };
            let (result, ()) = tokio::join!(work, events);
            update(&runs, &id, |p| match result {
                Ok(report) => {
                    p.state = if report.identical { "identical" } else { "different" }.into();
                    p.differences = report.confirmed;
                    p.transient = report.transient;
                    p.unsettled = report.unsettled;
                    // Per table, what the re-checks settled: confirmed apart from transient.
                    for t in &report.tables {
                        if let Some(row) = p.tables.iter_mut().find(|r| r.table == t.table) {
                            row.differences = t.confirmed.len() as u64 + t.not_listed;
                            row.transient = t.transient.len() as u64;
                            row.unsettled = t.unsettled.len() as u64;
                        }
                    }
                    p.rows = differing_rows(&report);
                    p.report = Some(report.text());
                }
                Err(message) => {
                    p.state = "failed".into();
                    p.report = Some(message);
                }
            });
        });
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        handles.retain(|h| !h.is_finished());
        handles.push(handle);
        Ok(first)
    }

    fn progress(&self, id: &str) -> Result<VerifyProgress, ControlError> {
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| ControlError::NotFound { what: format!("verify run {id:?}") })
    }

    fn latest(&self, task: &str) -> Option<VerifyProgress> {
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        let n = |id: &str| id.rsplit('-').next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        runs.values().filter(|p| p.task == task).max_by_key(|p| n(&p.id)).cloned()
    }
}
