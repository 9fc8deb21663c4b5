//! `ferry run`: preflight, then every selected task until SIGINT/SIGTERM; the in-flight
//! batch finishes and is checkpointed before exit. With `--once`, every direction
//! catches up to its source's head (a blob direction: one full pass) and the run exits 0.

use std::future::Future;
use std::path::Path;

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::{CommandError, every_second_until, open_store, select_tasks};
use crate::config::Config;
pub use crate::control::run::{plan, preflight_or_fail, start};
use crate::store::actor;

/// `ferry run --config FILE [--task NAME]`.
pub async fn run(
    config_path: &Path,
    task: Option<&str>,
    once: bool,
    signal: impl Future<Output = ()>,
) -> Result<u8, CommandError> {
    let mut config = Config::load(config_path)?;
    if config.cluster.is_some() {
        // Outside the node, nothing would hold the cluster's leases: two processes could
        // run a direction at once until the target's lease told them apart.
        return Err(CommandError::Input {
            problem: format!("{} has a [cluster] section: its tasks run on the cluster's nodes", config_path.display()),
            fix: "start `ferry node --config FILE` on each node (docs/cluster.md), or remove [cluster] to run the tasks here with `ferry run`".into(),
        });
    }
    // After a cutover the stored direction overrides the file's from/to.
    for (t, file) in crate::cutover::apply_stored_directions(&mut config).await? {
        info!(task = %t, file_direction = %file, "running in the direction a cutover set");
    }
    let tasks = select_tasks(&config, task)?;
    preflight_or_fail(&config, &tasks).await?;
    let store = open_store(&config).await?;
    let mut specs = plan(&config, &tasks, &store).await?;
    for s in &mut specs {
        s.once = once;
    }
    let who = actor(&config.node.id);
    let shutdown = CancellationToken::new();
    let engine = start(specs, shutdown.clone()).await?;
    let names: Vec<String> = engine.metrics().iter().map(|m| m.id.to_string()).collect();
    store.audit(&who, "run.start", task, &format!("directions: {}", names.join(", "))).await?;
    info!(directions = %names.join(", "), "running; stop with Ctrl-C or SIGTERM");

    let mut n = 0u64;
    // Directions that end by themselves (`--once`) end the run without waiting for a tick.
    let ended = engine.ended();
    let signal = async {
        tokio::select! {
            _ = signal => {}
            _ = ended => {}
        }
    };
    every_second_until(signal, async || {
        n += 1;
        for m in engine.metrics() {
            let s = m.status();
            if let Err(e) = store.save_status(&s).await {
                error!(error = %e, "could not save status");
            }
            if n.is_multiple_of(10) {
                info!(direction = %m.id, state = %s.state, position = s.position.as_deref().unwrap_or("-"),
                      lag_s = s.lag_seconds.unwrap_or(-1.0), behind = s.changes_behind.map_or(-1, |n| n as i64),
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
