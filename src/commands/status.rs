//! `ferry status`: each direction's state, position, lag and totals, read from the
//! targets (checkpoint, lease), the sources (head) and the metadata store (last live
//! metrics of a running process). Never writes.

use std::path::Path;

use serde::Serialize;

use super::CommandError;
use crate::cli::Format;
use crate::config::Config;
use crate::connector::host::{host_name, pid_alive};
use crate::connector::{DirectionId, registry};
use crate::cutover::{CutoverBrief, CutoverState};
use crate::engine::metrics::{DirectionStatus, size_text};
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
    /// While running: the source's clock minus ferry's, in seconds.
    pub clock_offset_seconds: Option<f64>,
    /// While running, two-way: the source's clock minus the target's, in seconds.
    pub clock_skew_seconds: Option<f64>,
    /// While running: `ok`, `alarm`, `paused` or `unknown` (see docs/security.md).
    pub clock_skew: Option<String>,
    /// The skew alarm or pause in words, with its fix.
    pub clock_message: Option<String>,
    /// Bytes of change history the source keeps for the direction (a PostgreSQL slot's
    /// retained WAL), read from the source: also while nothing runs.
    pub retained_bytes: Option<u64>,
    /// The retained history is over the task's retention_alarm, or the source is about
    /// to discard it.
    pub retention_alarm: bool,
    /// Totals of the last or current run.
    pub totals: Option<DirectionStatus>,
    /// The last error, if the direction stopped on one.
    pub last_error: Option<String>,
    /// Problems reading the endpoints.
    pub problems: Vec<String>,
    /// The task's cutover, when one was ever started.
    pub cutover: Option<CutoverBrief>,
    /// This direction's endpoints that are frozen (application writes refused), with
    /// since when (µs).
    pub frozen: Vec<(String, i64)>,
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
        clock_offset_seconds: None,
        clock_skew_seconds: None,
        clock_skew: None,
        clock_message: None,
        retained_bytes: None,
        retention_alarm: false,
        totals: None,
        last_error: None,
        problems: Vec::new(),
        cutover: None,
        frozen: Vec::new(),
    };
    let saved = match store {
        Some(s) => s.statuses(&id.task).await.ok().and_then(|v| v.into_iter().find(|d| d.direction == r.direction)),
        None => None,
    };
    let mut position = None;
    if let Some(to) = config.endpoint(&id.to) {
        match registry::target_state(to, id).await {
            Ok(state) => {
                if let Some(cp) = state.checkpoint {
                    position = cp.position.clone();
                    r.position = cp.position.map(|p| p.to_string());
                    r.state = "stopped".into();
                }
                if let Some(h) = state.lease {
                    // A lease that ran out (by the target's clock) is nobody's; on this host the
                    // pid must run too.
                    let alive = !h.expired && (h.host != host_name() || pid_alive(h.pid));
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
        match registry::source_head(from).await {
            Ok(Some(head)) => {
                r.changes_behind = position.as_ref().and_then(|p| p.changes_until(&head));
                r.head = Some(head.to_string());
            }
            Ok(None) => {}
            Err(e) => r.problems.push(e.to_string()),
        }
        let stream = crate::engine::task::stream_of(id);
        match registry::source_retention(from, &stream).await {
            Ok(Some(kept)) => {
                let alarm = config.task(&id.task).map_or(u64::MAX, |t| t.retention_alarm);
                r.retained_bytes = Some(kept.bytes);
                r.retention_alarm = kept.bytes > alarm || kept.at_risk;
                if r.retention_alarm {
                    r.problems.push(format!(
                        "endpoint {}: the source keeps {} of change history for this direction{}, over the task's retention_alarm ({})\n  fix: let ferry catch up (start it if it is stopped); if it cannot, the source's disk fills or, past max_slot_wal_keep_size, the history is discarded and the direction must be copied anew",
                        from.name,
                        size_text(kept.bytes),
                        if kept.at_risk { ", and is about to discard it" } else { "" },
                        size_text(alarm)
                    ));
                }
            }
            Ok(None) => {}
            Err(e) => r.problems.push(e.to_string()),
        }
    }
    if let Some(s) = saved {
        if r.state == "running" {
            r.state = s.state.to_string();
            r.lag_seconds = s.lag_seconds;
            r.clock_offset_seconds = s.clock_offset_seconds;
            r.clock_skew_seconds = s.clock_skew_seconds;
            r.clock_skew = Some(s.clock_skew.as_str().to_string());
            r.clock_message = s.clock_message.clone();
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
    let store = Store::open_existing(&config.node.store.path()).await?;
    // Each endpoint's freeze, read once: several directions may share an endpoint.
    let mut frozen: Vec<(String, i64)> = Vec::new();
    let mut frozen_problems: Vec<String> = Vec::new();
    for ep in &config.endpoints {
        match registry::frozen_since(ep).await {
            Ok(Some(since)) => frozen.push((ep.name.clone(), since)),
            Ok(None) => {}
            Err(e) => frozen_problems.push(format!("endpoint {}: freeze state unknown: {e}", ep.name)),
        }
    }
    let mut reports = Vec::new();
    for t in &config.tasks {
        let cutover = match &store {
            Some(s) => s
                .load_cutover(&t.name)
                .await
                .ok()
                .flatten()
                .and_then(|json| serde_json::from_str::<CutoverState>(&json).ok())
                .map(|state| CutoverBrief::from(&state)),
            None => None,
        };
        for spec in plan_task(&config, t, &[]) {
            let mut r = report(&config, &spec.id, store.as_ref()).await;
            r.cutover = cutover.clone();
            r.frozen = frozen.iter().filter(|(ep, _)| *ep == spec.id.from || *ep == spec.id.to).cloned().collect();
            reports.push(r);
        }
    }
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&reports).unwrap_or_else(|_| "[]".into())),
        Format::Text => {
            let now = now_micros();
            for (ep, since) in &frozen {
                let age = now.saturating_sub(*since).max(0) / 1_000_000;
                println!("endpoint {ep}: FROZEN for {age}s: application writes are refused");
            }
            for p in &frozen_problems {
                println!("{p}");
            }
            for (task, file) in &switched {
                println!("task {task}: direction set by a cutover (the task file says {file})");
            }
            let mut shown: Vec<&str> = Vec::new();
            for r in reports.iter().filter(|r| r.cutover.is_some()) {
                if shown.contains(&r.task.as_str()) {
                    continue;
                }
                shown.push(&r.task);
                if let Some(c) = &r.cutover {
                    println!(
                        "task {}: cutover {}->{}: {}{}",
                        r.task,
                        c.from,
                        c.to,
                        c.describe(),
                        c.last_error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
                    );
                }
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
                if r.clock_offset_seconds.is_some() || r.clock_skew_seconds.is_some() {
                    let secs = |v: Option<f64>| v.map(|v| format!("{v:+.3}s")).unwrap_or("-".into());
                    println!(
                        "  clock offset {}  skew {}  ({})",
                        secs(r.clock_offset_seconds),
                        secs(r.clock_skew_seconds),
                        r.clock_skew.as_deref().unwrap_or("unknown")
                    );
                }
                if let Some(m) = &r.clock_message {
                    println!("  clock skew: {m}");
                }
                if let Some(b) = r.retained_bytes {
                    println!(
                        "  source keeps {} of change history for it{}",
                        size_text(b),
                        if r.retention_alarm { " (ALARM: over retention_alarm)" } else { "" }
                    );
                }
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
