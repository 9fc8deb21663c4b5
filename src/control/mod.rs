//! The operator interface: list tasks with live metrics, act on them (pause, resume,
//! verify, freeze), read the conflict and audit logs. One trait, [`Control`],
//! implemented in-process over the engine ([`local::LocalNode`]) and over HTTP by
//! [`crate::client::NodeClient`], so the node API and every console screen work the
//! same both ways.

pub mod cutover;
pub mod local;
pub mod logs;
pub mod run;
pub mod skip;
pub mod verify;
pub mod verify_engine;

use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::config::Mode;
use crate::connector::ConnectorError;
use crate::cutover::{CutoverBrief, CutoverRequest, CutoverView};
use crate::engine::metrics::DirectionStatus;
use crate::store::{AuditEntry, StoreError};
pub use logs::LogLine;
pub use skip::{SkipRequest, Skipped};
pub use verify::{VerifyProgress, VerifyRunner, VerifyUnavailable};
pub use verify_engine::VerifyEngine;

/// Why an operator request failed. Each kind maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No such task, endpoint or verify run.
    #[error("{what} not found")]
    NotFound {
        /// What was asked for (`task "shop"`).
        what: String,
    },
    /// The request is malformed.
    #[error("bad request: {message}")]
    BadRequest {
        /// What is wrong with it.
        message: String,
    },
    /// The request conflicts with the current state (already paused, ...).
    #[error("{message}")]
    Conflict {
        /// Why.
        message: String,
    },
    /// In a cluster, another node runs the task: ask that one.
    #[error("task {task:?} runs on node {owner}{}: ask that node", api.as_deref().map(|a| format!(" (API {a})")).unwrap_or_default())]
    NotOwner {
        /// The task.
        task: String,
        /// `[node] id` of the node that holds its lease.
        owner: String,
        /// That node's API address, when known.
        api: Option<String>,
    },
    /// This build cannot do it (verify before it is wired in, MySQL freeze, ...).
    #[error("{what} is not available in this build")]
    Unavailable {
        /// The feature.
        what: String,
    },
    /// The caller may not do this.
    #[error("forbidden: {message}")]
    Forbidden {
        /// Which role is needed.
        message: String,
    },
    /// The caller is not authenticated.
    #[error("unauthorized: {message}")]
    Unauthorized {
        /// What is missing.
        message: String,
    },
    /// The metadata store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An endpoint failed.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// A task could not be (re)started.
    #[error("task {task}: {message}")]
    Task {
        /// The task.
        task: String,
        /// What failed, with its fix.
        message: String,
    },
    /// A remote node did not answer.
    #[error("node {node}: unreachable: {source}")]
    Unreachable {
        /// The node's URL.
        node: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// Too many failed authentications from this address: wait.
    #[error("{message}")]
    TooManyRequests {
        /// How long to wait.
        message: String,
    },
    /// A remote node's TLS certificate was not trusted (or TLS could not be set up).
    #[error("node {node}: {message}")]
    Untrusted {
        /// The node's URL.
        node: String,
        /// Why, with the fix.
        message: String,
    },
    /// A remote node answered with an error.
    #[error("node {node}: {endpoint}: HTTP {status}: {message}")]
    Remote {
        /// The node's URL.
        node: String,
        /// The API path.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// The node's message.
        message: String,
    },
}

impl ControlError {
    /// The HTTP status this error is served with.
    pub fn status(&self) -> u16 {
        match self {
            ControlError::NotFound { .. } => 404,
            ControlError::BadRequest { .. } => 400,
            ControlError::Conflict { .. } | ControlError::NotOwner { .. } => 409,
            ControlError::Unavailable { .. } => 501,
            ControlError::Forbidden { .. } => 403,
            ControlError::Unauthorized { .. } => 401,
            ControlError::TooManyRequests { .. } => 429,
            ControlError::Remote { status, .. } => *status,
            ControlError::Unreachable { .. } | ControlError::Untrusted { .. } => 502,
            ControlError::Store(_) | ControlError::Connector(_) | ControlError::Task { .. } => 500,
        }
    }
}

/// One endpoint of a node's task file; the URL's password is masked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointView {
    /// Endpoint name.
    pub name: String,
    /// Its site.
    pub site: String,
    /// Engine (SQLite, MySQL, ...).
    pub engine: String,
    /// URL with the password replaced by `***`.
    pub url: String,
    /// Frozen since (µs), when frozen.
    pub frozen_since_us: Option<i64>,
}

/// The outcome of the last verify of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifySummary {
    /// Verify run id.
    pub id: String,
    /// running, identical, different, failed.
    pub state: String,
    /// Differences found so far.
    pub differences: u64,
    /// When it ended (µs), if it did.
    pub finished_us: Option<i64>,
}

/// One task with its directions' live metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskView {
    /// Task name.
    pub name: String,
    /// Source endpoint.
    pub from: String,
    /// Target endpoint.
    pub to: String,
    /// One-way or two-way.
    pub mode: Mode,
    /// Paused by an operator.
    pub paused: bool,
    /// Live metrics of each direction.
    pub directions: Vec<DirectionStatus>,
    /// The last verify, if any.
    pub last_verify: Option<VerifySummary>,
    /// Its cutover, when one was ever started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutover: Option<CutoverBrief>,
}

impl TaskView {
    /// Conflicts detected by every direction in this run.
    pub fn conflicts(&self) -> u64 {
        self.directions.iter().map(|d| d.conflicts_total).sum()
    }

    /// The largest lag of its directions.
    pub fn max_lag(&self) -> Option<f64> {
        self.directions.iter().filter_map(|d| d.lag_seconds).reduce(f64::max)
    }

    /// Rows per second over the last second, all directions.
    pub fn rows_per_sec(&self) -> f64 {
        self.directions.iter().map(|d| d.rows_per_sec[0]).sum()
    }
}

/// Everything a node runs, at one moment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeOverview {
    /// The node's id ([node].id).
    pub node: String,
    /// Its tasks.
    pub tasks: Vec<TaskView>,
    /// Its endpoints.
    pub endpoints: Vec<EndpointView>,
    /// When this was taken (µs).
    pub at_us: i64,
    /// The ferry version the node runs (empty from a node older than this field).
    #[serde(default)]
    pub version: String,
    /// When the node's process started its tasks (µs), for its uptime.
    #[serde(default)]
    pub started_us: Option<i64>,
}

/// One entry of a target's conflict log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictEntry {
    /// Id in its target's log.
    pub id: i64,
    /// The target endpoint holding the entry.
    pub endpoint: String,
    /// Task.
    pub task: String,
    /// `a->b`.
    pub direction: String,
    /// Table.
    pub table: String,
    /// Key of the row.
    pub key: String,
    /// Policy applied.
    pub policy: String,
    /// Which version won (incoming or local).
    pub winner: String,
    /// Site of the incoming change.
    pub incoming_site: String,
    /// Site of the local row.
    pub local_site: String,
    /// When it was detected (µs).
    pub detected_us: i64,
    /// Commit time of the incoming change (µs; 0 from a node older than this field).
    #[serde(default)]
    pub incoming_ts: i64,
    /// Commit time of the local row's version (µs).
    #[serde(default)]
    pub local_ts: i64,
    /// The incoming row, column by column as text (`None`: a delete, or not logged).
    #[serde(default)]
    pub incoming_row: Option<RowText>,
    /// The local row as it was (`None`: absent, or not logged).
    #[serde(default)]
    pub local_row: Option<RowText>,
}

/// A row for people: column name to its value as text (`None`: NULL), in column order.
pub type RowText = Vec<(String, Option<String>)>;

/// Who the console or client is to a node: the role its actions are judged by and
/// whether the link is encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// The token's name (`local` for loopback clients of a node without tokens, and
    /// for the in-process engine).
    pub name: String,
    /// The role.
    pub role: crate::config::Role,
    /// Whether the node serves HTTPS; `None` in-process (no network).
    pub tls: Option<bool>,
}

impl Access {
    /// The in-process engine: the console's own user, every action.
    pub fn in_process() -> Access {
        Access { name: "local".into(), role: crate::config::Role::Admin, tls: None }
    }
}

/// The operator interface. Methods that change something take the acting user's name
/// for the audit log; a remote implementation ignores it (the node audits the token's
/// name instead).
pub trait Control: Send + Sync + 'static {
    /// Every task with live metrics, and the endpoints.
    fn overview(&self) -> impl Future<Output = Result<NodeOverview, ControlError>> + Send;
    /// The whole cluster (nodes, owners) as this node sees it; `None` outside a cluster.
    fn cluster(&self) -> impl Future<Output = Result<Option<crate::cluster::ClusterView>, ControlError>> + Send {
        async { Ok(None) }
    }
    /// Who the caller is to this node (in-process: everything allowed).
    fn access(&self) -> impl Future<Output = Result<Access, ControlError>> + Send {
        async { Ok(Access::in_process()) }
    }
    /// Stops a task's directions after their in-flight batch (audited).
    fn pause(&self, actor: &str, task: &str) -> impl Future<Output = Result<TaskView, ControlError>> + Send;
    /// Starts a paused or failed task again (audited).
    fn resume(&self, actor: &str, task: &str) -> impl Future<Output = Result<TaskView, ControlError>> + Send;
    /// Starts a verify of a task, with `repair` applying the repair too (audited).
    fn verify_start(
        &self,
        actor: &str,
        task: &str,
        repair: bool,
    ) -> impl Future<Output = Result<VerifyProgress, ControlError>> + Send;
    /// Progress and, once done, the report of a verify run.
    fn verify_progress(&self, id: &str) -> impl Future<Output = Result<VerifyProgress, ControlError>> + Send;
    /// The newest conflict log entries, of one task or all.
    fn conflicts(
        &self,
        task: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ConflictEntry>, ControlError>> + Send;
    /// The newest audit entries.
    fn audit(&self, limit: usize) -> impl Future<Output = Result<Vec<AuditEntry>, ControlError>> + Send;
    /// Refuses application writes on an endpoint (audited).
    fn freeze(&self, actor: &str, endpoint: &str) -> impl Future<Output = Result<EndpointView, ControlError>> + Send;
    /// Lifts a freeze (audited).
    fn unfreeze(&self, actor: &str, endpoint: &str) -> impl Future<Output = Result<EndpointView, ControlError>> + Send;
    /// A task's cutover: persisted state, steps with their checks, live values.
    fn cutover_status(&self, task: &str) -> impl Future<Output = Result<CutoverView, ControlError>> + Send;
    /// Skips one source transaction of a task on purpose (audited), and starts a
    /// stopped task again past it.
    fn skip(
        &self,
        actor: &str,
        task: &str,
        req: SkipRequest,
    ) -> impl Future<Output = Result<Skipped, ControlError>> + Send;
    /// The node process's newest log lines after sequence number `after`, oldest first.
    fn logs(&self, after: u64, limit: usize) -> impl Future<Output = Result<Vec<LogLine>, ControlError>> + Send;
    /// Starts a cutover, runs its next step, or rolls it back (audited; docs/cutover.md).
    fn cutover(
        &self,
        actor: &str,
        task: &str,
        req: CutoverRequest,
    ) -> impl Future<Output = Result<CutoverView, ControlError>> + Send;
}
