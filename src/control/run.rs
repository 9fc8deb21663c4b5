//! Starting tasks: preflight, the directions to run (with the skips and the direction a
//! cutover stored), their target tables, and the engine. Shared by `ferry run`, the node
//! and the console's in-process node.

use tokio_util::sync::CancellationToken;

use crate::config::{Config, Task};
use crate::connector::{ConnectorError, host, registry};
use crate::engine::preflight::preflight;
use crate::engine::task::{DirectionSpec, prepare_target};
use crate::engine::{Engine, EngineError, plan_task};
use crate::store::{Store, StoreError};

/// Why tasks could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Preflight found problems (already printed).
    #[error("preflight found {0} problem(s) (listed above); nothing was changed")]
    Preflight(usize),
    /// A direction could not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// An endpoint failed.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// The metadata store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The cluster could not be joined.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// Refuses early, before anything is written, when another live process on this host
/// runs one of the directions (its pid runs and its lease has not run out: a process
/// stopped or hung long enough loses it to this one).
async fn refuse_if_running(specs: &[DirectionSpec]) -> Result<(), StartError> {
    let host = host::host_name();
    for spec in specs {
        let holder = registry::target_state(&spec.target, &spec.id).await?.lease;
        if let Some(h) = holder {
            let live = h.host == host && h.pid != std::process::id() && host::pid_alive(h.pid) && !h.expired;
            if live {
                return Err(EngineError::LeaseHeld { dir: spec.id.clone(), holder: Box::new(h) }.into());
            }
        }
    }
    Ok(())
}

/// Runs preflight on the tasks; prints the problems and fails when there are any.
pub async fn preflight_or_fail(config: &Config, tasks: &[&Task]) -> Result<(), StartError> {
    let (_, problems) = preflight(config, tasks).await;
    if problems.is_empty() {
        return Ok(());
    }
    for p in &problems {
        eprintln!("PROBLEM  {}: {}", p.subject, p.message);
    }
    Err(StartError::Preflight(problems.len()))
}

/// The directions of the tasks, with the skips recorded in the store; a direction a
/// cutover stored overrides the task file's from/to.
pub async fn plan(config: &Config, tasks: &[&Task], store: &Store) -> Result<Vec<DirectionSpec>, StartError> {
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
pub async fn start(specs: Vec<DirectionSpec>, shutdown: CancellationToken) -> Result<Engine, StartError> {
    refuse_if_running(&specs).await?;
    for s in &specs {
        prepare_target(s).await?;
    }
    Ok(Engine::start(specs, shutdown))
}
