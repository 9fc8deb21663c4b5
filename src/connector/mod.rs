//! The traits every data store implements, and the errors they share.
//!
//! Delivery is at-least-once: a source may hand the same transactions out again after a
//! restart, so a [`Sink`] applies idempotently and records the source position in the
//! same target transaction as the data. Together that gives an exactly-once effect.

pub mod mysql;
pub mod probe;
pub mod sqlite;
pub mod typemap;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::ConflictPolicy;
use crate::model::{Key, Position, Row, SiteId, TableName, TableSchema, Txn};

/// One direction of one task: `task` copying `from` -> `to` (endpoint names).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DirectionId {
    /// Task name.
    pub task: String,
    /// Source endpoint name.
    pub from: String,
    /// Target endpoint name.
    pub to: String,
}

impl DirectionId {
    /// The direction's key in ferry's tables: `a->b`.
    pub fn direction(&self) -> String {
        format!("{}->{}", self.from, self.to)
    }
}

impl fmt::Display for DirectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}->{}", self.task, self.from, self.to)
    }
}

/// Snapshot progress of one table in one direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TableProgress {
    /// Not copied yet.
    Pending,
    /// Copied up to and including this key.
    Copying {
        /// Last key copied.
        after: Key,
    },
    /// Fully copied; changes flow for every key.
    Done,
}

/// Where a direction stands, as its target recorded it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checkpoint {
    /// Last source position applied; `None` before the first batch.
    pub position: Option<Position>,
    /// Snapshot state per source table name.
    pub tables: BTreeMap<String, TableProgress>,
}

/// Rows of one snapshot chunk, applied together with a checkpoint.
#[derive(Debug, Clone)]
pub struct SnapshotRows {
    /// The target table (already renamed).
    pub table: Arc<TableSchema>,
    /// The rows, in key order.
    pub rows: Vec<Row>,
    /// Per row, the version (origin site, commit µs) of its last captured change, when
    /// asked for (two-way: conflict resolution compares it); `None` for rows unchanged
    /// since before capture.
    pub versions: Option<Vec<Option<(SiteId, i64)>>>,
}

/// How the sink treats a change that does not match the target's current row.
#[derive(Debug, Clone)]
pub struct ConflictRules {
    /// The policy from the task file.
    pub policy: ConflictPolicy,
    /// Site of the task's `from` endpoint (for prefer-from).
    pub from_site: SiteId,
    /// Site of the task's `to` endpoint (for prefer-to).
    pub to_site: SiteId,
    /// Site of the target this sink writes (the local side).
    pub local_site: SiteId,
    /// Site of the source of this direction (origin of snapshot rows).
    pub remote_site: SiteId,
}

/// One target transaction's worth of work.
#[derive(Debug, Clone)]
pub struct ApplyBatch {
    /// Whole source transactions, in source order (tables already renamed).
    pub txns: Vec<Txn>,
    /// A snapshot chunk applied after `txns`.
    pub snapshot: Option<SnapshotRows>,
    /// The checkpoint to record in the same transaction.
    pub checkpoint: Checkpoint,
    /// Conflict detection; `None` applies blindly by key (one-way).
    pub conflicts: Option<ConflictRules>,
    /// Apply change by change (slow) so a failure names the exact change.
    pub one_by_one: bool,
    /// `false` leaves the target transaction open for the next part of the same source
    /// commit group (a group too large to hold in memory is applied in parts); the
    /// checkpoint is written with the part that commits. A failure rolls back every part.
    pub commit: bool,
}

/// What one batch did.
#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    /// Row changes applied or found already applied.
    pub rows: u64,
    /// Conflicts detected (and recorded).
    pub conflicts: u64,
}

/// Who holds a direction's lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseHolder {
    /// `[node] id` of the process.
    pub node: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Lease end, microseconds since the epoch.
    pub expires_us: i64,
}

impl fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {:?} on host {:?}, pid {}", self.node, self.host, self.pid)
    }
}

/// Result of trying to take a lease.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseOutcome {
    /// Ours now.
    Acquired,
    /// Another live process holds it.
    HeldBy(LeaseHolder),
}

/// Whether an error is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration or data store setup is wrong; a human must fix it (exit 2).
    Setup,
    /// The endpoint failed or went away; retrying may help (exit 3).
    Runtime,
}

/// Errors of a connector, naming the endpoint and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The endpoint cannot be opened.
    #[error("endpoint {endpoint}: cannot open {target}: {source}\n  fix: {fix}")]
    Open {
        /// Endpoint name.
        endpoint: String,
        /// What was opened (path or masked URL).
        target: String,
        /// Why.
        #[source]
        source: sqlx::Error,
        /// What to do.
        fix: String,
    },
    /// A statement failed.
    #[error("endpoint {endpoint}: {what}: {source}")]
    Query {
        /// Endpoint name.
        endpoint: String,
        /// What ferry was doing.
        what: String,
        /// The server's error.
        #[source]
        source: sqlx::Error,
    },
    /// The endpoint is not set up the way ferry needs.
    #[error("endpoint {endpoint}: {problem}\n  fix: {fix}")]
    Setup {
        /// Endpoint name.
        endpoint: String,
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// A change the target refused.
    #[error(transparent)]
    Apply(Box<ApplyFailure>),
    /// A MySQL/MariaDB statement or connection failed.
    #[error("endpoint {endpoint}: {what}: {source}")]
    Mysql {
        /// Endpoint name.
        endpoint: String,
        /// What ferry was doing.
        what: String,
        /// The driver's or server's error.
        #[source]
        source: Box<mysql_async::Error>,
    },
}

/// A source transaction the target refused, with everything needed to fix or skip it.
#[derive(Debug, thiserror::Error)]
#[error(
    "endpoint {endpoint}: cannot apply the transaction at source position {position}: table {table}, key {key}: {message}\n  fix: correct the row or the target, then `ferry run` again; to skip this transaction on purpose: ferry skip --config FILE --task TASK --position {position}"
)]
pub struct ApplyFailure {
    /// Target endpoint name.
    pub endpoint: String,
    /// Position of the failing source transaction.
    pub position: Position,
    /// Target table.
    pub table: TableName,
    /// Key of the failing row, rendered.
    pub key: String,
    /// The server's message.
    pub message: String,
}

impl ConnectorError {
    /// Setup problems need a human; runtime ones may pass.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ConnectorError::Setup { .. } | ConnectorError::Open { .. } => ErrorKind::Setup,
            ConnectorError::Query { .. } | ConnectorError::Apply(_) => ErrorKind::Runtime,
            ConnectorError::Mysql { source, .. } => match source.as_ref() {
                // Access denied, unknown database/table, bad URL: a human must act.
                mysql_async::Error::Server(e) if matches!(e.code, 1044 | 1045 | 1049 | 1142 | 1146 | 1227) => {
                    ErrorKind::Setup
                }
                mysql_async::Error::Url(_) => ErrorKind::Setup,
                _ => ErrorKind::Runtime,
            },
        }
    }
}

/// A chunk of existing rows and the source position they are consistent with.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Rows in key order.
    pub rows: Vec<Row>,
    /// Stream position the rows are exactly consistent with, when the source can read
    /// both atomically (SQLite). The engine applies the stream up to it, then the rows.
    pub position: Option<Position>,
    /// Otherwise (MySQL, DBLog): the low and high watermark values the source wrote to
    /// its signal table before and after reading the rows. The engine applies the stream
    /// until the high watermark; changes to keys of the chunk seen after the low
    /// watermark are applied and those keys dropped from the chunk.
    pub marks: Option<(String, String)>,
    /// Versions of the rows, when asked for (see [`SnapshotRows::versions`]).
    pub versions: Option<Vec<Option<(SiteId, i64)>>>,
}

/// What to read from the change stream.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    /// Read changes after this position.
    pub after: Position,
    /// Stop at this position (inclusive), e.g. a snapshot chunk's position.
    pub until: Option<Position>,
    /// Upper bound on changes returned (whole commit groups may exceed it).
    pub max_changes: usize,
    /// Drop changes that originated here (they came from the target: loop prevention).
    pub exclude_origin: SiteId,
    /// Never end a batch inside a source commit group.
    pub keep_transactions: bool,
    /// Include whole before-images (conflict detection needs them); without, updates
    /// and deletes may carry only their key.
    pub before_images: bool,
}

/// The table that carries snapshot watermarks through the stream (DBLog). A source
/// ends a [`ReadBatch`] right after a transaction that changes it, so the engine sees a
/// high watermark before anything that follows it. Its rows are (id, mark, ts).
pub const SIGNAL_TABLE: &str = "ferry_signal";

/// Transactions read from a stream, to be applied in one target transaction (never split).
#[derive(Debug, Clone)]
pub struct ReadBatch {
    /// Whole transactions, oldest first (excluded origins already dropped).
    pub txns: Vec<Txn>,
    /// Position after everything read, including dropped transactions.
    pub position: Position,
    /// The last commit group goes on in the next read: apply this batch without
    /// committing (see [`ApplyBatch::commit`]).
    pub continues: bool,
}

/// A data store changes are read from.
pub trait Source: Send {
    /// Describes the tables matching the globs; an explicit name that matches nothing is an error.
    fn tables(
        &mut self,
        patterns: &[String],
    ) -> impl Future<Output = Result<Vec<Arc<TableSchema>>, ConnectorError>> + Send;
    /// Installs change capture for these tables (idempotent).
    fn install_capture(
        &mut self,
        tables: &[Arc<TableSchema>],
    ) -> impl Future<Output = Result<(), ConnectorError>> + Send;
    /// The newest position of the stream.
    fn head(&mut self) -> impl Future<Output = Result<Position, ConnectorError>> + Send;
    /// Reads up to `limit` rows with keys after `after`, with the position they are
    /// consistent with and, if `versions`, each row's last change version.
    fn read_chunk(
        &mut self,
        table: &TableSchema,
        after: Option<&Key>,
        limit: usize,
        versions: bool,
    ) -> impl Future<Output = Result<Chunk, ConnectorError>> + Send;
    /// Reads committed transactions after a position; empty when none are waiting.
    fn read_changes(&mut self, req: &ReadRequest) -> impl Future<Output = Result<ReadBatch, ConnectorError>> + Send;
    /// Writes this source's heartbeat row (flows through the stream for exact lag).
    fn heartbeat(&mut self) -> impl Future<Output = Result<(), ConnectorError>> + Send;
    /// Tells the source a consumer has durably applied up to `position` (allows pruning).
    fn consumed(
        &mut self,
        consumer: &str,
        position: &Position,
    ) -> impl Future<Output = Result<(), ConnectorError>> + Send;
}

/// A data store changes are applied to.
pub trait Sink: Send {
    /// Creates ferry's own tables (checkpoint, conflict, lease) if missing.
    fn prepare(&mut self) -> impl Future<Output = Result<(), ConnectorError>> + Send;
    /// Creates target tables that do not exist yet, and checks the columns of those that do.
    fn ensure_tables(&mut self, tables: &[Arc<TableSchema>])
    -> impl Future<Output = Result<(), ConnectorError>> + Send;
    /// The checkpoint recorded for a direction, if any.
    fn load_checkpoint(
        &mut self,
        dir: &DirectionId,
    ) -> impl Future<Output = Result<Option<Checkpoint>, ConnectorError>> + Send;
    /// Applies a batch and its checkpoint in one target transaction.
    fn apply(
        &mut self,
        dir: &DirectionId,
        batch: &ApplyBatch,
    ) -> impl Future<Output = Result<ApplyReport, ConnectorError>> + Send;
    /// Takes or renews the direction's lease for `holder`, unless a live process holds it.
    fn lease(
        &mut self,
        dir: &DirectionId,
        holder: &LeaseHolder,
    ) -> impl Future<Output = Result<LeaseOutcome, ConnectorError>> + Send;
    /// Gives the lease up (clean shutdown).
    fn release(
        &mut self,
        dir: &DirectionId,
        holder: &LeaseHolder,
    ) -> impl Future<Output = Result<(), ConnectorError>> + Send;
}
