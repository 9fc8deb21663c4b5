//! The sync engine: tasks split into directions, each run by [`task::run_direction`]
//! under one shutdown token, with live metrics.

pub mod blob;
pub mod blob_lanes;
pub mod clock;
pub mod copy_progress;
pub mod lease;
pub mod map;
pub mod metrics;
pub mod preflight;
pub mod relay;
pub mod task;
pub mod throttle;

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Mode, Task};
use crate::connector::{ConflictRules, ConnectorError, DirectionId, ErrorKind, LeaseHolder};
use crate::model::Position;
use metrics::DirectionMetrics;
use task::{DirectionSpec, Tuning};

/// Errors that stop a direction.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// An endpoint failed.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// Another live process runs this direction.
    #[error(
        "task {dir} is already running: its lease is held by {holder}\n  fix: stop that process first; a crashed process's lease is taken over automatically"
    )]
    LeaseHeld {
        /// The direction.
        dir: DirectionId,
        /// Who holds it.
        holder: Box<LeaseHolder>,
    },
    /// Someone took the lease while this process ran (it was presumed dead: paused, hung
    /// or cut off longer than the lease lasts).
    #[error(
        "task {dir}: lost its lease to {holder} (this process did not renew it in time: it was paused, hung or cut off); stopping without applying anything more, so that two processes never apply the same changes\n  fix: nothing to do while that process runs the task; if it is gone, start ferry again"
    )]
    LeaseLost {
        /// The direction.
        dir: DirectionId,
        /// The new holder.
        holder: Box<LeaseHolder>,
    },
    /// A table's schema changed while it was being copied: the direction starts again
    /// from its checkpoint with the tables described anew (the copy goes on).
    #[error("task {dir}: table {table} changed its schema during its initial copy; reading the tables again")]
    Reload {
        /// The direction.
        dir: DirectionId,
        /// The table (source name).
        table: String,
    },
    /// The source cannot continue its stream from the checkpoint but can copy everything
    /// anew (a Redis full resync): every table was marked to be copied again, and the
    /// direction starts over from that checkpoint.
    #[error("task {dir}: {reason}; copying everything again (full resync)")]
    Resync {
        /// The direction.
        dir: DirectionId,
        /// Why the stream cannot go on.
        reason: String,
    },
}

impl EngineError {
    /// Whether a human must fix configuration or setup (exit 2) rather than a runtime failure (exit 3).
    pub fn is_setup(&self) -> bool {
        match self {
            EngineError::Connector(e) => e.kind() == ErrorKind::Setup,
            EngineError::LeaseHeld { .. }
            | EngineError::LeaseLost { .. }
            | EngineError::Reload { .. }
            | EngineError::Resync { .. } => false,
        }
    }
}

/// The directions of a task: one for one-way, two for two-way.
pub fn plan_task(config: &Config, task: &Task, skips: &[(String, Position)]) -> Vec<DirectionSpec> {
    let (Some(a), Some(b)) = (config.endpoint(&task.from), config.endpoint(&task.to)) else {
        return Vec::new();
    };
    let mut pairs = vec![(a, b)];
    if task.mode == Mode::TwoWay {
        pairs.push((b, a));
    }
    // Both directions share the task's clocks: each reads its source's.
    let clock = Arc::new(clock::TaskClock::new(&task.name, task.mode == Mode::TwoWay, task.clock_skew));
    pairs
        .into_iter()
        .map(|(from, to)| {
            let id = DirectionId { task: task.name.clone(), from: from.name.clone(), to: to.name.clone() };
            let conflicts = (task.mode == Mode::TwoWay).then(|| ConflictRules {
                policy: task.conflict,
                from_site: a.site.clone(),
                to_site: b.site.clone(),
                local_site: to.site.clone(),
                remote_site: from.site.clone(),
            });
            let dir = id.direction();
            DirectionSpec {
                skips: skips.iter().filter(|(d, _)| *d == dir).map(|(_, p)| p.clone()).collect(),
                id,
                source: from.clone(),
                target: to.clone(),
                tables: task.tables.clone(),
                snapshot: task.snapshot,
                conflicts,
                keep_transactions: task.keep_transactions,
                workers: task.workers,
                max_rows_per_sec: task.max_rows_per_sec,
                topic: task.topic.clone(),
                index: task.index.clone(),
                retention_alarm: task.retention_alarm,
                maps: if from.name == task.from { task.maps.clone() } else { Vec::new() },
                node_id: config.node.id.clone(),
                lease_floor: 0,
                tuning: Tuning::default(),
                clock: clock.clone(),
                once: false,
                rescan: task.rescan,
                quiet_seconds: task.cutover.quiet_seconds,
                max_bytes_per_sec: task.max_bytes_per_sec,
                transport: task.transport.clone(),
                relay: None,
            }
        })
        .collect()
}

/// Running directions, each an owned tokio task under one shutdown token.
pub struct Engine {
    shutdown: CancellationToken,
    running: Vec<(Arc<DirectionMetrics>, JoinHandle<Result<(), EngineError>>)>,
    /// How many directions are still running (each task counts itself out as it ends).
    left: tokio::sync::watch::Receiver<usize>,
}

/// Counts a direction's task out when it ends, however it ends (a panic too).
struct CountOut(tokio::sync::watch::Sender<usize>);

impl Drop for CountOut {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Engine {
    /// Starts every direction. A direction that fails cancels the other directions of its task.
    pub fn start(specs: Vec<DirectionSpec>, shutdown: CancellationToken) -> Engine {
        let mut task_tokens: Vec<(String, CancellationToken)> = Vec::new();
        let mut running = Vec::new();
        let (count, left) = tokio::sync::watch::channel(specs.len());
        for spec in specs {
            let token = match task_tokens.iter().find(|(t, _)| *t == spec.id.task) {
                Some((_, tok)) => tok.clone(),
                None => {
                    let tok = shutdown.child_token();
                    task_tokens.push((spec.id.task.clone(), tok.clone()));
                    tok
                }
            };
            let metrics = Arc::new(DirectionMetrics::new(spec.id.clone()));
            let m = metrics.clone();
            let out = CountOut(count.clone());
            let handle = tokio::spawn(async move {
                let _out = out;
                let r = task::run_direction(spec, m, token.clone()).await;
                if r.is_err() {
                    token.cancel();
                }
                r
            });
            running.push((metrics, handle));
        }
        Engine { shutdown, running, left }
    }

    /// Metrics of every direction.
    pub fn metrics(&self) -> Vec<Arc<DirectionMetrics>> {
        self.running.iter().map(|(m, _)| m.clone()).collect()
    }

    /// Whether every direction has ended.
    pub fn finished(&self) -> bool {
        *self.left.borrow() == 0
    }

    /// Resolves once every direction has ended (at once, not on a polling tick).
    pub async fn ended(&self) {
        let mut left = self.left.clone();
        // Each task counts itself out as it ends (`CountOut`): zero means all ended.
        let _ = left.wait_for(|n| *n == 0).await;
    }

    /// Asks every direction to stop after its in-flight batch.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    /// Waits for every direction; returns their errors.
    pub async fn join(self) -> Vec<EngineError> {
        let mut errors = Vec::new();
        for (m, h) in self.running {
            match h.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e),
                Err(join) => errors.push(EngineError::Connector(ConnectorError::Setup {
                    endpoint: m.id.to_string(),
                    problem: format!("the direction's task ended abnormally: {join}"),
                    fix: "report this as a bug with the log".into(),
                })),
            }
        }
        errors
    }
}
