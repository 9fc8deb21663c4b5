//! [`LocalNode`]: the operator interface in-process, over running engines. `ferry node`
//! serves it over HTTP; `ferry console --config` and `ferry demo` use it directly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Mutex as AsyncMutex;
use tokio_util::sync::CancellationToken;

use super::run::{StartError, plan, preflight_or_fail, start};
use super::{
    ConflictEntry, Control, ControlError, EndpointView, LogLine, NodeOverview, RowText, SkipRequest, Skipped, TaskView,
    VerifyProgress, VerifyRunner, VerifySummary,
};
use crate::cluster::{Candidate, Cluster, ClusterView, Ownership};
use crate::config::{Config, Endpoint, Task};
use crate::connector::registry::{self, FreezeRequest};
use crate::cutover::{CutoverBrief, CutoverRequest, CutoverState, CutoverView};
use crate::engine::metrics::{DirectionMetrics, DirectionState};
use crate::engine::{Engine, EngineError};
use crate::model::{FreezeMethod, now_micros};
use crate::store::{AuditEntry, Store};

/// How long a pause or resume on a cluster node waits for the ownership loop to act
/// (it looks every second; a pause waits for the in-flight batch).
const PAUSE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// One task of the file: its engine while running, its last metrics while paused.
struct TaskSlot {
    task: Task,
    engine: Option<Engine>,
    metrics: Vec<Arc<DirectionMetrics>>,
    paused: bool,
}

/// The task file's tasks running in this process, with pause/resume, freeze and the logs.
pub struct LocalNode {
    config: Config,
    store: Store,
    shutdown: CancellationToken,
    slots: AsyncMutex<Vec<TaskSlot>>,
    frozen: Mutex<HashMap<String, Option<i64>>>,
    verify: Box<dyn VerifyRunner>,
    /// When this node started (µs): its uptime in the overview.
    started_us: i64,
    /// `[cluster]`: the directions run here are those whose cluster lease this node
    /// holds, not the slots' engines (docs/cluster.md).
    cluster: Option<Cluster>,
}

async fn read_frozen(ep: &Endpoint) -> Option<i64> {
    registry::frozen_since(ep).await.ok().flatten()
}

fn task_error(task: &str, e: impl std::fmt::Display) -> ControlError {
    ControlError::Task { task: task.to_string(), message: e.to_string() }
}

impl LocalNode {
    /// Preflights every task of the file, opens the store and starts them all.
    pub async fn start(config: Config, verify: Box<dyn VerifyRunner>) -> Result<LocalNode, StartError> {
        let mut tasks: Vec<&Task> = config.tasks.iter().collect();
        // A cluster node need not reach every endpoint: the tasks it cannot reach are
        // left to nodes that can (cluster/reach.rs), the rest must pass preflight.
        let mut unreachable = std::collections::BTreeSet::new();
        if config.cluster.is_some() {
            let used: Vec<Endpoint> = (config.endpoints.iter())
                .filter(|e| config.tasks.iter().any(|t| t.from == e.name || t.to == e.name))
                .cloned()
                .collect();
            unreachable = crate::cluster::reach::probe(&used).await;
            tasks.retain(|t| {
                let cut = [&t.from, &t.to].into_iter().find(|n| unreachable.contains(*n));
                if let Some(name) = cut {
                    eprintln!(
                        "WARNING  task {}: this node cannot reach endpoint {name}; other nodes of the cluster run it",
                        t.name
                    );
                }
                cut.is_none()
            });
        }
        preflight_or_fail(&config, &tasks).await?;
        let store = Store::open(&config.node.store.path(), true).await?;
        let shutdown = CancellationToken::new();
        if config.cluster.is_some() {
            return Self::join_cluster(config, store, shutdown, verify, unreachable).await;
        }
        let mut slots: Vec<TaskSlot> = Vec::new();
        for task in &config.tasks {
            let started = match plan(&config, &[task], &store).await {
                Ok(specs) => start(specs, shutdown.child_token()).await,
                Err(e) => Err(e),
            };
            match started {
                Ok(engine) => slots.push(TaskSlot {
                    task: task.clone(),
                    metrics: engine.metrics(),
                    engine: Some(engine),
                    paused: false,
                }),
                Err(e) => {
                    // Stop the tasks already started: none may outlive this failed start.
                    shutdown.cancel();
                    for engine in slots.into_iter().filter_map(|s| s.engine) {
                        engine.join().await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(Self::with(config, store, shutdown, slots, verify, None).await)
    }

    /// In a cluster: no task starts here by itself; the cluster's ownership loop runs
    /// the directions whose leases this node takes.
    /// `unreachable`: the endpoints the start-up probe could not reach.
    async fn join_cluster(
        config: Config,
        store: Store,
        shutdown: CancellationToken,
        verify: Box<dyn VerifyRunner>,
        unreachable: std::collections::BTreeSet<String>,
    ) -> Result<LocalNode, StartError> {
        let mut candidates = Vec::new();
        let mut slots = Vec::new();
        for task in &config.tasks {
            for spec in plan(&config, &[task], &store).await? {
                candidates.push(Candidate { spec, nodes: task.nodes.clone() });
            }
            slots.push(TaskSlot { task: task.clone(), engine: None, metrics: Vec::new(), paused: false });
        }
        let cluster = Cluster::join(&config, candidates, unreachable, shutdown.child_token()).await?;
        Ok(Self::with(config, store, shutdown, slots, verify, Some(cluster)).await)
    }

    async fn with(
        config: Config,
        store: Store,
        shutdown: CancellationToken,
        slots: Vec<TaskSlot>,
        verify: Box<dyn VerifyRunner>,
        cluster: Option<Cluster>,
    ) -> LocalNode {
        let mut frozen = HashMap::new();
        for ep in &config.endpoints {
            frozen.insert(ep.name.clone(), read_frozen(ep).await);
        }
        LocalNode {
            config,
            store,
            shutdown,
            slots: AsyncMutex::new(slots),
            frozen: Mutex::new(frozen),
            verify,
            started_us: now_micros(),
            cluster,
        }
    }

    /// The whole cluster (nodes, owners); `None` without `[cluster]`.
    pub async fn cluster_view(&self) -> Result<Option<ClusterView>, ControlError> {
        let Some(cluster) = &self.cluster else { return Ok(None) };
        cluster
            .view()
            .await
            .map(Some)
            .map_err(|e| ControlError::Task { task: "cluster".into(), message: e.to_string() })
    }

    /// Asks every node of the cluster to move directions to their preferred nodes.
    pub async fn cluster_rebalance(&self) -> Result<(), ControlError> {
        let Some(cluster) = &self.cluster else {
            return Err(ControlError::Conflict {
                message: "this node is not in a cluster (no [cluster] in its task file)".into(),
            });
        };
        cluster.rebalance().await.map_err(|e| ControlError::Task { task: "cluster".into(), message: e.to_string() })
    }

    /// A slot's metrics: in a cluster, those of its directions that ran on this node.
    fn slot_metrics(&self, slot: &TaskSlot) -> Vec<Arc<DirectionMetrics>> {
        match &self.cluster {
            Some(c) => c.metrics().into_iter().filter(|m| m.id.task == slot.task.name).collect(),
            None => slot.metrics.clone(),
        }
    }

    /// Pauses or resumes a task in the cluster, only on the node that holds its leases
    /// (409 naming the owner elsewhere): the pause is kept in the cluster, so the task
    /// stays paused when another node takes it over.
    async fn cluster_pause(
        &self,
        cluster: &Cluster,
        actor: &str,
        task: &str,
        pause: bool,
    ) -> Result<TaskView, ControlError> {
        let what = if pause { "pause" } else { "resume" };
        let cluster_error = |e: crate::cluster::ClusterError| task_error(task, e);
        match cluster.owner_of(task).await.map_err(cluster_error)? {
            Ownership::Here => {}
            Ownership::Elsewhere { node, listen } => {
                return Err(ControlError::NotOwner { task: task.to_string(), owner: node, api: listen });
            }
            Ownership::Nobody => {
                return Err(ControlError::Conflict {
                    message: format!(
                        "no node runs task {task:?} right now (its lease is free): {what} it on its next owner in a few seconds (ferry cluster status)"
                    ),
                });
            }
        }
        if cluster.held_paused(task) == Some(pause) {
            let state = if pause { "already paused" } else { "running, not paused" };
            return Err(ControlError::Conflict { message: format!("task {task:?} is {state}") });
        }
        let done = cluster.set_paused(task, actor, pause, PAUSE_WAIT).await.map_err(cluster_error)?;
        if !done {
            return Err(task_error(
                task,
                format!(
                    "the {what} is recorded in the cluster, but this node did not {what} the task within {} s; see its log",
                    PAUSE_WAIT.as_secs()
                ),
            ));
        }
        let (action, detail) = if pause {
            ("task.pause", "paused in the cluster after the in-flight batch")
        } else {
            ("task.resume", "started again")
        };
        self.store.audit(actor, action, Some(task), detail).await?;
        let slots = self.slots.lock().await;
        let slot = slots
            .iter()
            .find(|s| s.task.name == task)
            .ok_or_else(|| ControlError::NotFound { what: format!("task {task:?}") })?;
        Ok(self.view(slot))
    }

    /// The task file.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The metadata store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Metrics of every direction, paused ones included.
    pub async fn directions(&self) -> Vec<Arc<DirectionMetrics>> {
        self.slots.lock().await.iter().flat_map(|s| self.slot_metrics(s)).collect()
    }

    /// Whether every task that is not paused has stopped by itself (failed or ended).
    pub async fn finished(&self) -> bool {
        // A cluster node runs until stopped: its directions come and go.
        if self.cluster.is_some() {
            return false;
        }
        self.slots.lock().await.iter().all(|s| s.engine.as_ref().is_none_or(Engine::finished))
    }

    /// Saves every direction's live status in the store (for `ferry status`).
    pub async fn save_statuses(&self) {
        for m in self.directions().await {
            if let Err(e) = self.store.save_status(&m.status()).await {
                tracing::warn!(error = %e, "could not save status");
            }
        }
    }

    /// Stops every task after its in-flight batch; returns the directions' errors.
    pub async fn shutdown(&self) -> Vec<EngineError> {
        self.shutdown.cancel();
        let mut errors = match &self.cluster {
            Some(c) => c.stop().await,
            None => Vec::new(),
        };
        let engines: Vec<Engine> = self.slots.lock().await.iter_mut().filter_map(|s| s.engine.take()).collect();
        for e in engines {
            errors.extend(e.join().await);
        }
        self.save_statuses().await;
        errors
    }

    fn view(&self, slot: &TaskSlot) -> TaskView {
        // A one-way task runs the direction a cutover may have switched: show that one.
        let metrics = self.slot_metrics(slot);
        let (from, to) = match (slot.task.mode, metrics.first()) {
            (crate::config::Mode::OneWay, Some(m)) => (m.id.from.clone(), m.id.to.clone()),
            _ => (slot.task.from.clone(), slot.task.to.clone()),
        };
        TaskView {
            name: slot.task.name.clone(),
            from,
            to,
            mode: slot.task.mode,
            paused: match &self.cluster {
                Some(c) => c.held_paused(&slot.task.name).unwrap_or(false),
                None => slot.paused,
            },
            directions: metrics.iter().map(|m| m.status()).collect(),
            last_verify: self.verify.latest(&slot.task.name).map(|p| VerifySummary {
                id: p.id,
                state: p.state,
                differences: p.differences,
                finished_us: None,
            }),
            cutover: None,
        }
    }

    /// Every task's cutover as the store holds it (one read: the overview is polled every
    /// second). A cutover run by another process on the same store shows too.
    async fn cutover_briefs(&self) -> HashMap<String, CutoverBrief> {
        match self.store.cutovers().await {
            Ok(rows) => rows
                .into_iter()
                .filter_map(|(task, json)| {
                    let state: CutoverState = serde_json::from_str(&json).ok()?;
                    Some((task, CutoverBrief::from(&state)))
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the cutover states");
                HashMap::new()
            }
        }
    }

    /// Takes in what a cutover saw of its endpoints' freezes: the cutover freezes and
    /// lifts them itself, not through [`Control::freeze`], and the endpoints list (API,
    /// Overview) must not say "not frozen" about a frozen source.
    pub(super) fn note_frozen(&self, endpoints: &[&str], frozen: &[(String, i64)]) {
        if let Ok(mut f) = self.frozen.lock() {
            for ep in endpoints {
                let since = frozen.iter().find(|(name, _)| name == ep).map(|(_, since)| *since);
                f.insert((*ep).to_string(), since);
            }
        }
    }

    fn endpoint_view(&self, ep: &Endpoint) -> EndpointView {
        let frozen = self.frozen.lock().ok().and_then(|f| f.get(&ep.name).copied().flatten());
        EndpointView {
            name: ep.name.clone(),
            site: ep.site.to_string(),
            engine: registry::store_name(ep).to_string(),
            url: ep.url.to_string(),
            frozen_since_us: frozen,
        }
    }

    fn find_task(&self, name: &str) -> Result<&Task, ControlError> {
        self.config.task(name).ok_or_else(|| ControlError::NotFound { what: format!("task {name:?}") })
    }

    fn find_endpoint(&self, name: &str) -> Result<&Endpoint, ControlError> {
        self.config.endpoint(name).ok_or_else(|| ControlError::NotFound { what: format!("endpoint {name:?}") })
    }

    async fn set_frozen(&self, actor: &str, name: &str, freeze: bool) -> Result<EndpointView, ControlError> {
        let ep = self.find_endpoint(name)?;
        // Accounts that keep writing: those the endpoint's tasks exempt.
        let exempt_users: Vec<String> = self
            .config
            .tasks
            .iter()
            .filter(|t| t.from == ep.name || t.to == ep.name)
            .flat_map(|t| t.cutover.exempt_users.iter().cloned())
            .collect();
        if freeze {
            // A watched freeze (objects, SFTP) watches as long as the longest quiet time
            // of the endpoint's tasks asks.
            let watch = self
                .config
                .tasks
                .iter()
                .filter(|t| t.from == ep.name || t.to == ep.name)
                .map(|t| t.cutover.quiet_seconds)
                .max()
                .unwrap_or(5);
            let how = FreezeRequest {
                method: FreezeMethod::ReadOnly,
                exempt_users,
                reason: format!("frozen by {actor}"),
                watch: std::time::Duration::from_secs(watch),
            };
            crate::cutover::endpoint::freeze_with(ep, &how).await?;
        } else {
            registry::unfreeze(ep).await?;
        }
        let since = read_frozen(ep).await;
        if let Ok(mut f) = self.frozen.lock() {
            f.insert(name.to_string(), since);
        }
        let action = if freeze { "endpoint.freeze" } else { "endpoint.unfreeze" };
        self.store.audit(actor, action, None, &format!("endpoint {name}")).await?;
        Ok(self.endpoint_view(ep))
    }
}

impl Control for LocalNode {
    async fn cluster(&self) -> Result<Option<ClusterView>, ControlError> {
        self.cluster_view().await
    }

    async fn overview(&self) -> Result<NodeOverview, ControlError> {
        let cutovers = self.cutover_briefs().await;
        let tasks = self
            .slots
            .lock()
            .await
            .iter()
            .map(|s| TaskView { cutover: cutovers.get(&s.task.name).cloned(), ..self.view(s) })
            .collect();
        Ok(NodeOverview {
            node: self.config.node.id.clone(),
            tasks,
            endpoints: self.config.endpoints.iter().map(|e| self.endpoint_view(e)).collect(),
            at_us: now_micros(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_us: Some(self.started_us),
        })
    }

    async fn pause(&self, actor: &str, task: &str) -> Result<TaskView, ControlError> {
        self.find_task(task)?;
        if let Some(cluster) = &self.cluster {
            return self.cluster_pause(cluster, actor, task, true).await;
        }
        let mut slots = self.slots.lock().await;
        let Some(slot) = slots.iter_mut().find(|s| s.task.name == task) else {
            return Err(ControlError::NotFound { what: format!("task {task:?}") });
        };
        if slot.paused {
            return Err(ControlError::Conflict { message: format!("task {task:?} is already paused") });
        }
        if let Some(engine) = slot.engine.take() {
            engine.stop();
            for e in engine.join().await {
                tracing::warn!(task, error = %e, "direction ended with an error while pausing");
            }
        }
        slot.paused = true;
        for m in &slot.metrics {
            let _ = self.store.save_status(&m.status()).await;
        }
        let view = self.view(slot);
        drop(slots);
        self.store.audit(actor, "task.pause", Some(task), "paused after the in-flight batch").await?;
        Ok(view)
    }

    async fn resume(&self, actor: &str, task: &str) -> Result<TaskView, ControlError> {
        let t = self.find_task(task)?;
        if let Some(cluster) = &self.cluster {
            return self.cluster_pause(cluster, actor, task, false).await;
        }
        let mut slots = self.slots.lock().await;
        let Some(slot) = slots.iter_mut().find(|s| s.task.name == task) else {
            return Err(ControlError::NotFound { what: format!("task {task:?}") });
        };
        // A task that stopped by itself (failed) may be resumed like a paused one.
        let running = slot.engine.as_ref().is_some_and(|e| !e.finished());
        if running {
            return Err(ControlError::Conflict { message: format!("task {task:?} is running, not paused") });
        }
        if let Some(ended) = slot.engine.take() {
            for e in ended.join().await {
                tracing::warn!(task, error = %e, "the task had stopped with an error; resuming it");
            }
        }
        let specs = plan(&self.config, &[t], &self.store).await.map_err(|e| task_error(task, e))?;
        let engine = start(specs, self.shutdown.child_token()).await.map_err(|e| task_error(task, e))?;
        // Counters are per task life: the new directions go on from the old totals.
        for m in engine.metrics() {
            if let Some(old) = slot.metrics.iter().find(|o| o.id == m.id) {
                m.carry_from(old);
            }
        }
        slot.metrics = engine.metrics();
        slot.engine = Some(engine);
        slot.paused = false;
        let view = self.view(slot);
        drop(slots);
        self.store.audit(actor, "task.resume", Some(task), "started again").await?;
        Ok(view)
    }

    async fn verify_start(&self, actor: &str, task: &str, repair: bool) -> Result<VerifyProgress, ControlError> {
        let t = self.find_task(task)?;
        let progress = self.verify.start(&self.config, t, repair, actor)?;
        let action = if repair { "verify.repair_start" } else { "verify.start" };
        self.store.audit(actor, action, Some(task), &format!("verify run {}", progress.id)).await?;
        Ok(progress)
    }

    async fn verify_progress(&self, id: &str) -> Result<VerifyProgress, ControlError> {
        self.verify.progress(id)
    }

    async fn conflicts(&self, task: Option<&str>, limit: usize) -> Result<Vec<ConflictEntry>, ControlError> {
        if let Some(t) = task {
            self.find_task(t)?;
        }
        let mut targets: Vec<&Endpoint> = Vec::new();
        for t in self.config.tasks.iter().filter(|t| task.is_none_or(|n| n == t.name)) {
            for name in [&t.from, &t.to] {
                if let Some(ep) = self.config.endpoint(name)
                    && !targets.iter().any(|e| e.name == ep.name)
                {
                    targets.push(ep);
                }
            }
        }
        let mut out = Vec::new();
        for ep in targets {
            out.extend(read_conflicts(ep, task, limit).await?);
        }
        out.sort_by_key(|c| std::cmp::Reverse(c.detected_us));
        out.truncate(limit);
        Ok(out)
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, ControlError> {
        Ok(self.store.audit_log(i64::try_from(limit).unwrap_or(i64::MAX)).await?)
    }

    async fn freeze(&self, actor: &str, endpoint: &str) -> Result<EndpointView, ControlError> {
        self.set_frozen(actor, endpoint, true).await
    }

    async fn unfreeze(&self, actor: &str, endpoint: &str) -> Result<EndpointView, ControlError> {
        self.set_frozen(actor, endpoint, false).await
    }

    async fn cutover_status(&self, task: &str) -> Result<CutoverView, ControlError> {
        self.cutover_view(task).await
    }

    async fn skip(&self, actor: &str, task: &str, req: SkipRequest) -> Result<Skipped, ControlError> {
        self.find_task(task)?;
        // A running task would not see the skip until its next start: refused, so that
        // nobody believes a transaction skipped that the running direction still applies.
        let running = {
            let slots = self.slots.lock().await;
            slots.iter().find(|s| s.task.name == task).is_some_and(|s| {
                s.engine.as_ref().is_some_and(|e| !e.finished())
                    && !s.metrics.iter().any(|m| m.status().state == DirectionState::Failed)
            })
        };
        if running {
            return Err(ControlError::Conflict {
                message: format!(
                    "task {task:?} is running: only the transaction a stopped task failed on can be skipped"
                ),
            });
        }
        let mut req = req;
        if req.direction.is_none() {
            // The direction that stopped at this position, as the live metrics say (the
            // store's statuses are only saved now and then).
            let slots = self.slots.lock().await;
            req.direction = slots.iter().find(|s| s.task.name == task).and_then(|s| {
                s.metrics
                    .iter()
                    .map(|m| m.status())
                    .find_map(|st| st.failed_change.filter(|f| f.position == req.position.trim()).map(|_| st.direction))
            });
        }
        let (direction, position) = super::skip::record(&self.config, &self.store, actor, task, &req).await?;
        let (paused, alive) = {
            let slots = self.slots.lock().await;
            let slot = slots.iter().find(|s| s.task.name == task);
            (slot.is_some_and(|s| s.paused), slot.is_some_and(|s| s.engine.as_ref().is_some_and(|e| !e.finished())))
        };
        // A failed task goes on past it at once (a two-way task whose other direction
        // still runs is stopped and started again); a paused one when it is resumed.
        if alive && !paused {
            self.pause(actor, task).await?;
        }
        let resumed = !paused && self.resume(actor, task).await.is_ok();
        Ok(Skipped { task: task.to_string(), direction, position: position.to_string(), resumed })
    }

    async fn logs(&self, after: u64, limit: usize) -> Result<Vec<LogLine>, ControlError> {
        Ok(super::logs::LogTail::global().after(after, limit))
    }

    async fn cutover(&self, actor: &str, task: &str, req: CutoverRequest) -> Result<CutoverView, ControlError> {
        self.cutover_act(actor, task, req).await
    }
}

/// The newest conflicts a target logged; none when it never ran two-way or keeps no log.
async fn read_conflicts(ep: &Endpoint, task: Option<&str>, limit: usize) -> Result<Vec<ConflictEntry>, ControlError> {
    let records = registry::conflicts(ep, task, limit).await?.unwrap_or_default();
    Ok(records
        .into_iter()
        .map(|r| ConflictEntry {
            id: r.id,
            endpoint: ep.name.clone(),
            task: r.task,
            direction: r.direction,
            table: r.table,
            key: r.key,
            policy: r.policy,
            winner: r.winner,
            incoming_site: r.incoming_site,
            local_site: r.local_site,
            detected_us: r.detected_us,
            incoming_ts: r.incoming_ts,
            local_ts: r.local_ts,
            incoming_row: r.incoming_row.as_deref().and_then(row_text),
            local_row: r.local_row.as_deref().and_then(row_text),
        })
        .collect())
}

/// A logged row (a JSON object of column to ferry value) as text per column; `None`
/// when it does not parse (a log written by another release).
fn row_text(json: &str) -> Option<RowText> {
    let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).ok()?;
    Some(
        obj.into_iter()
            .map(|(column, v)| {
                let text = match serde_json::from_value::<crate::model::Value>(v.clone()) {
                    Ok(crate::model::Value::Null) => None,
                    Ok(value) => Some(value.to_string()),
                    Err(_) => Some(v.to_string()),
                };
                (column, text)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::row_text;

    #[test]
    fn a_logged_row_reads_as_text_per_column_with_null_apart() {
        let json = r#"{"id":{"t":"int","v":10},"name":{"t":"text","v":"Ada"},"note":{"t":"null"}}"#;
        let row = row_text(json).expect("parses");
        // Text quoted as verify reports it: the text 'NULL' never reads as a NULL.
        assert_eq!(
            row,
            vec![("id".into(), Some("10".into())), ("name".into(), Some("\"Ada\"".into())), ("note".into(), None)]
        );
        assert_eq!(row_text("not json"), None, "an unreadable log entry shows no versions, never a wrong one");
    }
}
