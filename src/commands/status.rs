//! `ferry status`: each direction's state, position, lag and totals, read from the
//! targets (checkpoint, lease), the sources (head) and the metadata store (last live
//! metrics of a running process). Never writes.

use std::path::Path;

use serde::Serialize;

use super::{CommandError, store_path};
use crate::cli::Format;
use crate::config::Config;
use crate::connector::sqlite::state::{host_name, pid_alive};
use crate::connector::{DirectionId, probe};
use crate::engine::metrics::DirectionStatus;
use crate::engine::plan_task;
use crate::model::now_micros;
use crate::store::Store;

/// What status reports per direction.
#[derive(Debug, Serialize)]
pub struct DirectionReport {
    /// Task name.
    pub task: String,
    /// `a->b`.
    pub direction: String,
    /// running, stopped, failed, ...
    pub state: String,
    /// Who runs it, when running.
    pub holder: Option<String>,
    /// Last applied source position (from the target's checkpoint).
    pub position: Option<String>,
    /// Source head.
    pub head: Option<String>,
    /// Changes between position and head.
    pub changes_behind: Option<u64>,
    /// Seconds behind (from the heartbeat) while running.
    pub lag_seconds: Option<f64>,
    /// Totals of the last or current run.
    pub totals: Option<DirectionStatus>,
    /// The last error, if the direction stopped on one.
    pub last_error: Option<String>,
    /// Problems reading the endpoints.
    pub problems: Vec<String>,
}

async fn report(config: &Config, id: &DirectionId, store: Option<&Store>) -> DirectionReport {
    let mut r = DirectionReport {
        task: id.task.clone(),
        direction: id.direction(),
        state: "never run".into(),
        holder: None,
        position: None,
        head: None,
        changes_behind: None,
        lag_seconds: None,
        totals: None,
        last_error: None,
        problems: Vec::new(),
    };
    let saved = match store {
        Some(s) => s.statuses(&id.task).await.ok().and_then(|v| v.into_iter().find(|d| d.direction == r.direction)),
        None => None,
    };
    let mut position = None;
    if let Some(to) = config.endpoint(&id.to) {
        match probe::target_state(to, id).await {
            Ok(state) => {
                if let Some(cp) = state.checkpoint {
                    position = cp.position.clone();
                    r.position = cp.position.map(|p| p.to_string());
                    r.state = "stopped".into();
                }
                if let Some(h) = state.lease {
                    // On this host the pid tells; elsewhere the lease's expiry does.
                    let alive = if h.host == host_name() { pid_alive(h.pid) } else { h.expires_us > now_micros() };
                    if alive {
                        r.state = "running".into();
                        r.holder = Some(h.to_string());
                    }
                }
            }
            Err(e) => r.problems.push(e.to_string()),
        }
    }
    if let Some(from) = config.endpoint(&id.from) {
        match probe::source_head(from).await {
            Ok(Some(head)) => {
                r.changes_behind = position.as_ref().and_then(|p| p.changes_until(&head));
                r.head = Some(head.to_string());
            }
            Ok(None) => {}
            Err(e) => r.problems.push(e.to_string()),
        }
    }
    if let Some(s) = saved {
        if r.state == "running" {
            r.state = s.state.to_string();
            r.lag_seconds = s.lag_seconds;
        } else if s.state == crate::engine::metrics::DirectionState::Failed {
            r.state = "failed".into();
        }
        r.last_error = s.last_error.clone();
        r.totals = Some(s);
    }
    r
}

/// `ferry status --config FILE [--format json]`.
pub async fn status(config_path: &Path, format: Format) -> Result<u8, CommandError> {
    let mut config = Config::load(config_path)?;
    // After a cutover the stored direction overrides the file's from/to.
    let switched = crate::cutover::apply_stored_directions(&mut config).await?;
    let store = Store::open_existing(&store_path(&config)).await?;
    let mut reports = Vec::new();
    for t in &config.tasks {
        for spec in plan_task(&config, t, &[]) {
            reports.push(report(&config, &spec.id, store.as_ref()).await);
        }
    }
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&reports).unwrap_or_else(|_| "[]".into())),
        Format::Text => {
            for (task, file) in &switched {
                println!("task {task}: direction set by a cutover (the task file says {file})");
            }
            for r in &reports {
                println!(
                    "task {} {}: {}{}",
                    r.task,
                    r.direction,
                    r.state,
                    r.holder.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
                );
                println!(
                    "  position {}  head {}  behind {}  lag {}",
                    r.position.as_deref().unwrap_or("-"),
                    r.head.as_deref().unwrap_or("-"),
                    r.changes_behind.map(|n| n.to_string()).unwrap_or("-".into()),
                    r.lag_seconds.map(|l| format!("{l:.2}s")).unwrap_or("-".into())
                );
                if let Some(t) = &r.totals {
                    println!(
                        "  changes {}  transactions {}  snapshot rows {}  conflicts {}  errors {}",
                        t.changes_total, t.txns_total, t.snapshot_rows_total, t.conflicts_total, t.errors_total
                    );
                }
                if let Some(e) = &r.last_error {
                    println!("  last error: {e}");
                }
                for p in &r.problems {
                    println!("  problem: {p}");
                }
            }
        }
    }
    if let Some(s) = store {
        s.close().await;
    }
    Ok(0)
}
