//! Waiting until a task's directions have caught up with their sources, as every
//! database test does before comparing both sides.

use std::time::{Duration, Instant};

use ferry::config::{Config, Task};
use ferry::connector::{TableProgress, registry as probe};
use ferry::engine::{Engine, plan_task};

/// Waits until each direction of `task` has finished its snapshot and applied everything
/// its source's stream holds now (a SQLite source has a stream once ferry installed its
/// capture). A direction of `engines` that stopped, or the limit, fails the test with
/// the directions' last errors.
pub async fn task_caught_up(config: &Config, task: &Task, limit: Duration, engines: &[&Engine]) {
    let start = Instant::now();
    let errors = || -> Vec<String> {
        engines
            .iter()
            .flat_map(|e| e.metrics().iter().filter_map(|m| m.status().last_error).collect::<Vec<_>>())
            .collect()
    };
    for spec in plan_task(config, task, &[]) {
        let head = loop {
            if let Some(head) = probe::source_head(&spec.source).await.ok().flatten() {
                break head;
            }
            assert!(
                start.elapsed() < limit,
                "{} has no stream head within {limit:?}: {:?}",
                spec.source.name,
                errors()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        loop {
            let state = probe::target_state(&spec.target, &spec.id).await.expect("target state");
            if let Some(cp) = state.checkpoint
                && cp.tables.values().all(|t| *t == TableProgress::Done)
                && cp.position.is_some_and(|p| p.stream_cmp(&head).is_some_and(|o| o.is_ge()))
            {
                break;
            }
            assert!(!engines.iter().any(|e| e.finished()), "a direction stopped: {:?}", errors());
            assert!(
                start.elapsed() < limit,
                "{} did not reach the source head {head} within {limit:?}: {:?}",
                spec.id,
                errors()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// [`task_caught_up`] for the first task, run by `engine` (or by a `ferry` process).
pub async fn wait_caught_up(config: &Config, limit: Duration, engine: Option<&Engine>) {
    task_caught_up(config, &config.tasks[0], limit, engine.as_slice()).await
}
