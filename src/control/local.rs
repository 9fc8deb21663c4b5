//! [`LocalNode`]: the operator interface in-process, over running engines. `ferry node`
//! serves it over HTTP; `ferry console --config` and `ferry demo` use it directly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlx::Row as _;
use tokio::sync::Mutex as AsyncMutex;
use tokio_util::sync::CancellationToken;

use super::{
    ConflictEntry, Control, ControlError, EndpointView, NodeOverview, TaskView, VerifyProgress, VerifyRunner,
    VerifySummary,
};
use crate::commands::run::{plan, preflight_or_fail, start};
use crate::commands::{CommandError, open_store};
use crate::config::{Config, Endpoint, EndpointUrl, Task, mask_password};
use crate::connector::mysql::{self, MysqlEndpoint};
use crate::connector::sqlite::{self, Access, SqliteEndpoint};
use crate::cutover::{CutoverRequest, CutoverView};
use crate::engine::metrics::DirectionMetrics;
use crate::engine::{Engine, EngineError};
use crate::model::now_micros;
use crate::store::{AuditEntry, Store};

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
}

fn sqlite_endpoint(ep: &Endpoint) -> Option<SqliteEndpoint> {
    match &ep.url {
        EndpointUrl::Sqlite(path) => {
            Some(SqliteEndpoint { name: ep.name.clone(), site: ep.site.clone(), path: path.clone() })
        }
        _ => None,
    }
}

fn url_text(url: &EndpointUrl) -> String {
    match url {
        EndpointUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
        EndpointUrl::Mysql(u) | EndpointUrl::Postgres(u) => mask_password(u),
    }
}

async fn read_frozen(ep: &Endpoint) -> Option<i64> {
    if let EndpointUrl::Mysql(url) = &ep.url {
        let m = MysqlEndpoint::new(&ep.name, ep.site.clone(), url).ok()?;
        let mut conn = m.connect().await.ok()?;
        let since = mysql::freeze::frozen_since(&m, &mut conn).await.ok().flatten();
        let _ = conn.disconnect().await;
        return since;
    }
    let s = sqlite_endpoint(ep)?;
    let mut conn = s.connect(Access::ReadOnly).await.ok()?;
    let since = sqlite::freeze::frozen_since(&s, &mut conn).await.ok().flatten();
    sqlite::close(conn).await;
    since
}

fn task_error(task: &str, e: impl std::fmt::Display) -> ControlError {
    ControlError::Task { task: task.to_string(), message: e.to_string() }
}

impl LocalNode {
    /// Preflights every task of the file, opens the store and starts them all.
    pub async fn start(config: Config, verify: Box<dyn VerifyRunner>) -> Result<LocalNode, CommandError> {
        let tasks: Vec<&Task> = config.tasks.iter().collect();
        preflight_or_fail(&config, &tasks).await?;
        let store = open_store(&config).await?;
        let shutdown = CancellationToken::new();
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
        let mut frozen = HashMap::new();
        for ep in &config.endpoints {
            frozen.insert(ep.name.clone(), read_frozen(ep).await);
        }
        Ok(LocalNode { config, store, shutdown, slots: AsyncMutex::new(slots), frozen: Mutex::new(frozen), verify })
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
        self.slots.lock().await.iter().flat_map(|s| s.metrics.iter().cloned()).collect()
    }

    /// Whether every task that is not paused has stopped by itself (failed or ended).
    pub async fn finished(&self) -> bool {
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
        let mut errors = Vec::new();
        let engines: Vec<Engine> = self.slots.lock().await.iter_mut().filter_map(|s| s.engine.take()).collect();
        for e in engines {
            errors.extend(e.join().await);
        }
        self.save_statuses().await;
        errors
    }

    fn view(&self, slot: &TaskSlot) -> TaskView {
        // A one-way task runs the direction a cutover may have switched: show that one.
        let (from, to) = match (slot.task.mode, slot.metrics.first()) {
            (crate::config::Mode::OneWay, Some(m)) => (m.id.from.clone(), m.id.to.clone()),
            _ => (slot.task.from.clone(), slot.task.to.clone()),
        };
        TaskView {
            name: slot.task.name.clone(),
            from,
            to,
            mode: slot.task.mode,
            paused: slot.paused,
            directions: slot.metrics.iter().map(|m| m.status()).collect(),
            last_verify: self.verify.latest(&slot.task.name).map(|p| VerifySummary {
                id: p.id,
                state: p.state,
                differences: p.differences,
                finished_us: None,
            }),
        }
    }

    fn endpoint_view(&self, ep: &Endpoint) -> EndpointView {
        let frozen = self.frozen.lock().ok().and_then(|f| f.get(&ep.name).copied().flatten());
        EndpointView {
            name: ep.name.clone(),
            site: ep.site.to_string(),
            engine: ep.url.engine().to_string(),
            url: url_text(&ep.url),
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
        let since = match &ep.url {
            EndpointUrl::Mysql(url) => {
                // Accounts that keep writing: those the endpoint's tasks exempt.
                let exempt: Vec<String> = self
                    .config
                    .tasks
                    .iter()
                    .filter(|t| t.from == ep.name || t.to == ep.name)
                    .flat_map(|t| t.cutover.exempt_users.iter().cloned())
                    .collect();
                let m = MysqlEndpoint::new(&ep.name, ep.site.clone(), url)?;
                let mut conn = m.connect().await?;
                let result = if freeze {
                    mysql::freeze::freeze(&m, &mut conn, &exempt, &format!("frozen by {actor}")).await.map(|_| ())
                } else {
                    mysql::freeze::unfreeze(&m, &mut conn).await
                };
                let since = mysql::freeze::frozen_since(&m, &mut conn).await.ok().flatten();
                let _ = conn.disconnect().await;
                result?;
                since
            }
            _ => {
                let Some(s) = sqlite_endpoint(ep) else {
                    return Err(ControlError::Unavailable { what: format!("freezing a {} endpoint", ep.url.engine()) });
                };
                let mut conn = s.connect(Access::ReadWrite).await?;
                let result = if freeze {
                    sqlite::freeze::freeze(&s, &mut conn, &format!("frozen by {actor}")).await.map(|_| ())
                } else {
                    sqlite::freeze::unfreeze(&s, &mut conn).await
                };
                let since = sqlite::freeze::frozen_since(&s, &mut conn).await.ok().flatten();
                sqlite::close(conn).await;
                result?;
                since
            }
        };
        if let Ok(mut f) = self.frozen.lock() {
            f.insert(name.to_string(), since);
        }
        let action = if freeze { "endpoint.freeze" } else { "endpoint.unfreeze" };
        self.store.audit(actor, action, None, &format!("endpoint {name}")).await?;
        Ok(self.endpoint_view(ep))
    }
}

impl Control for LocalNode {
    async fn overview(&self) -> Result<NodeOverview, ControlError> {
        let tasks = self.slots.lock().await.iter().map(|s| self.view(s)).collect();
        Ok(NodeOverview {
            node: self.config.node.id.clone(),
            tasks,
            endpoints: self.config.endpoints.iter().map(|e| self.endpoint_view(e)).collect(),
            at_us: now_micros(),
        })
    }

    async fn pause(&self, actor: &str, task: &str) -> Result<TaskView, ControlError> {
        self.find_task(task)?;
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
        let progress = self.verify.start(&self.config, t, repair)?;
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

    async fn cutover(&self, actor: &str, task: &str, req: CutoverRequest) -> Result<CutoverView, ControlError> {
        self.cutover_act(actor, task, req).await
    }
}

/// The newest conflicts a SQLite target logged; none when it never ran two-way.
async fn read_conflicts(ep: &Endpoint, task: Option<&str>, limit: usize) -> Result<Vec<ConflictEntry>, ControlError> {
    let Some(s) = sqlite_endpoint(ep) else {
        return Ok(Vec::new());
    };
    let mut conn = s.connect(Access::ReadOnly).await?;
    let rows = sqlx::query(
        "SELECT id, task, direction, tbl, pk, policy, winner, incoming_site, local_site, detected_us \
         FROM ferry_conflict WHERE (?1 IS NULL OR task = ?1) ORDER BY id DESC LIMIT ?2",
    )
    .bind(task)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&mut conn)
    .await;
    sqlite::close(conn).await;
    // A target that never ran two-way has no ferry_conflict table: an empty log.
    let Ok(rows) = rows else {
        return Ok(Vec::new());
    };
    Ok(rows
        .iter()
        .map(|r| ConflictEntry {
            id: r.get(0),
            endpoint: ep.name.clone(),
            task: r.get(1),
            direction: r.get(2),
            table: r.get(3),
            key: r.get(4),
            policy: r.get(5),
            winner: r.get(6),
            incoming_site: r.get(7),
            local_site: r.get(8),
            detected_us: r.get(9),
        })
        .collect())
}
