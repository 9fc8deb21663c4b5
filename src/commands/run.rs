//! `ferry run`: preflight, then every selected task until SIGINT/SIGTERM; the in-flight
//! batch finishes and is checkpointed before exit.

use std::future::Future;
use std::path::Path;

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::check::{preflight, print_problems};
use super::{CommandError, every_second_until, open_store, select_tasks};
use crate::config::{Config, Task};
use crate::connector::probe;
use crate::connector::sqlite::state;
use crate::engine::task::{DirectionSpec, prepare_target};
use crate::engine::{Engine, EngineError, plan_task};
use crate::store::{Store, actor};

/// Refuses early, before anything is written, when another live process on this host
/// runs one of the directions.
async fn refuse_if_running(specs: &[DirectionSpec]) -> Result<(), CommandError> {
    let host = state::host_name();
    for spec in specs {
        let holder = probe::target_state(&spec.target, &spec.id).await?.lease;
        if let Some(h) = holder {
            let live = h.host == host && h.pid != std::process::id() && state::pid_alive(h.pid);
            if live {
                return Err(EngineError::LeaseHeld { dir: spec.id.clone(), holder: Box::new(h) }.into());
            }
        }
    }
    Ok(())
}

/// Runs preflight on the tasks; prints the problems and fails when there are any.
pub async fn preflight_or_fail(config: &Config, tasks: &[&Task]) -> Result<(), CommandError> {
    let (_, problems) = preflight(config, tasks).await;
    if problems.is_empty() {
        return Ok(());
    }
    print_problems(&problems);
    Err(CommandError::Preflight(problems.len()))
}

/// The directions of the tasks, with the skips recorded in the store; a direction a
/// cutover stored overrides the task file's from/to.
pub async fn plan(config: &Config, tasks: &[&Task], store: &Store) -> Result<Vec<DirectionSpec>, CommandError> {
    let mut specs = Vec::new();
    for t in tasks {
        let skips = store.skips(&t.name).await?;
        let mut t = (*t).clone();
        if let Some((from, to)) = store.direction(&t.name).await? {
            (t.from, t.to) = (from, to);
        }
        specs.extend(plan_task(config, &t, &skips));
    }
    Ok(specs)
}

/// Starts the planned directions after creating missing target tables.
pub async fn start(specs: Vec<DirectionSpec>, shutdown: CancellationToken) -> Result<Engine, CommandError> {
    refuse_if_running(&specs).await?;
    for s in &specs {
        prepare_target(s).await?;
    }
    Ok(Engine::start(specs, shutdown))
}

/// `ferry run --config FILE [--task NAME]`.
pub async fn run(config_path: &Path, task: Option<&str>, signal: impl Future<Output = ()>) -> Result<u8, CommandError> {
    let mut config = Config::load(config_path)?;
    // After a cutover the stored direction overrides the file's from/to.
    for (t, file) in crate::cutover::apply_stored_directions(&mut config).await? {
        info!(task = %t, file_direction = %file, "running in the direction a cutover set");
    }
    let tasks = select_tasks(&config, task)?;
    preflight_or_fail(&config, &tasks).await?;
    let store = open_store(&config).await?;
    let specs = plan(&config, &tasks, &store).await?;
    let who = actor(&config.node.id);
    let shutdown = CancellationToken::new();
    let engine = start(specs, shutdown.clone()).await?;
    let names: Vec<String> = engine.metrics().iter().map(|m| m.id.to_string()).collect();
    store.audit(&who, "run.start", task, &format!("directions: {}", names.join(", "))).await?;
    info!(directions = %names.join(", "), "running; stop with Ctrl-C or SIGTERM");

    let mut n = 0u64;
    every_second_until(signal, async || {
        n += 1;
        for m in engine.metrics() {
            let s = m.status();
            if let Err(e) = store.save_status(&s).await {
                error!(error = %e, "could not save status");
            }
            if n.is_multiple_of(10) {
                info!(direction = %m.id, state = %s.state, position = s.position.as_deref().unwrap_or("-"),
                      lag_s = s.lag_seconds.unwrap_or(-1.0), behind = s.changes_behind,
                      rows_per_s_10s = s.rows_per_sec[1], changes = s.changes_total, conflicts = s.conflicts_total, "status");
            }
        }
        !engine.finished()
    })
    .await;
    engine.stop();
    let metrics = engine.metrics();
    let errors = engine.join().await;
    for m in &metrics {
        let _ = store.save_status(&m.status()).await;
    }
    let detail =
        if errors.is_empty() { "clean stop".to_string() } else { format!("{} error(s): {}", errors.len(), errors[0]) };
    store.audit(&who, "run.stop", task, &detail).await?;
    store.close().await;
    match errors.into_iter().next() {
        None => Ok(0),
        Some(e) => Err(e.into()),
    }
}
