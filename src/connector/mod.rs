//! The traits every data store implements, and the errors they share.
//!
//! Delivery is at-least-once: a source may hand the same transactions out again after a
//! restart, so a [`Sink`] applies idempotently and records the source position in the
//! same target transaction as the data. Together that gives an exactly-once effect.

pub mod blob;
pub mod doris;
pub mod dynamic;
pub mod endpoint;
pub mod files;
pub mod host;
pub mod http_error;
pub mod items;
pub mod kafka;
pub mod mysql;
pub mod objects;
pub mod own_names;
pub mod parallel;
pub mod postgres;
pub mod preflight;
pub mod redis;
pub mod registry;
pub mod search;
pub mod sftp;
pub mod sqlite;
pub mod typemap;
pub mod verifier;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use crate::model::conflict::ConflictRules;
use crate::model::conflict::{Incoming, Stamp};
use crate::model::{Change, Key, Position, Row, SiteId, TableName, TableSchema, Txn};

/// Makes ring the process's TLS crypto provider (idempotent). The build links two
/// rustls providers (the change-stream transport of PostgreSQL asks for rustls's
/// default one, aws-lc-rs, besides the ring every other TLS user here is built with),
/// and rustls then has no default of its own: a driver that builds its TLS setup, or
/// part of it, without naming a provider (mysql_async; sqlx's certificate verifier)
/// needs this first, else rustls panics.
pub fn tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

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
    /// The rows in the source store's own bulk format instead of `rows` (see
    /// [`NativeRows`]); only handed to a sink of the same store.
    pub native: Option<NativeRows>,
    /// The table's last chunk: its copy is done once this batch commits.
    pub last: bool,
}

/// A snapshot chunk's rows in a store's own bulk format (PostgreSQL: `COPY` text), moved
/// from a source to a sink of the same store without being decoded. The sink replaces
/// the chunk's key range with them: it deletes what it holds in `(after, upto]` and
/// writes the rows, in one transaction with the checkpoint, so a chunk copied again
/// (after a crash, over rows already there) overwrites rather than doubles.
#[derive(Debug, Clone)]
pub struct NativeRows {
    /// Names the format, so a sink can refuse one that is not its own.
    pub format: &'static str,
    /// The rows, in key order, encoded.
    pub data: bytes::Bytes,
    /// How many rows `data` holds.
    pub count: usize,
    /// The key the chunk starts after (`None`: the table's start).
    pub after: Option<Key>,
    /// The key of the chunk's last row; `None` when the chunk runs to the table's end
    /// (the last chunk: its range takes every key after `after`).
    pub upto: Option<Key>,
    /// The key of the last row, whether or not the chunk is the table's last.
    pub last: Option<Key>,
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
    /// The lease tenure this batch is applied under (its fencing token): the batch
    /// commits only while the direction's lease still carries it, else nothing of it
    /// lands and the sink answers [`ConnectorError::Fenced`]. `None` for a checkpoint
    /// recorded while no process runs the direction (a cutover's starting position).
    pub fence: Option<i64>,
    /// The commit must be on the target's disk before `apply` returns. `false` (a
    /// stream backlog with more batches right behind, or a one-way first-copy chunk
    /// that moves no position past a flushed one): the engine tells no one this batch's
    /// position (the source may not release it, a relay may not acknowledge it) until
    /// a later flushed commit covers it, so a store may commit without waiting for its
    /// flush; a crash of the target server then loses the batch together with its
    /// checkpoint, and the stream is read again from the checkpoint that survived.
    /// Stores that cannot choose flush every commit.
    pub flush: bool,
}

impl ApplyBatch {
    /// A two-way batch's snapshot rows as inserts with their versions (`None`: a row
    /// that predates capture), for [`ApplyBatch::incoming`] to borrow.
    pub fn snapshot_changes(&self) -> Vec<(Change, Option<Stamp>)> {
        let Some(snap) = &self.snapshot else { return Vec::new() };
        snap.rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let version = snap.versions.as_ref().and_then(|v| v.get(i).cloned().flatten());
                (
                    Change::snapshot_insert(&snap.table, row),
                    version.map(|(site, ts)| Stamp { site, ts, deleted: false }),
                )
            })
            .collect()
    }

    /// Every change of a two-way batch to judge, in order (its transactions', then the
    /// snapshot rows of [`ApplyBatch::snapshot_changes`]), each with the index of its
    /// transaction (`None`: a snapshot row). Rows of the `heartbeat` table, which each
    /// site writes for itself, are applied without judging.
    pub fn incoming<'a>(
        &'a self,
        snapshot: &'a [(Change, Option<Stamp>)],
        heartbeat: &str,
    ) -> (Vec<Incoming<'a>>, Vec<Option<usize>>) {
        let mut incoming = Vec::new();
        let mut txn_of = Vec::new();
        for (t, txn) in self.txns.iter().enumerate() {
            let position = txn.position.to_string();
            for change in &txn.changes {
                let (site, ts) = change.version.clone().unwrap_or_else(|| (txn.origin.clone(), txn.commit_ts));
                let stamp = Stamp { site, ts, deleted: change.after.is_none() };
                let free = change.table.name.name == heartbeat;
                incoming.push(Incoming { change, stamp: Some(stamp), position: position.clone(), free });
                txn_of.push(Some(t));
            }
        }
        for (change, stamp) in snapshot {
            incoming.push(Incoming { change, stamp: stamp.clone(), position: "snapshot".into(), free: false });
            txn_of.push(None);
        }
        (incoming, txn_of)
    }
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
    /// Lease end, microseconds since the epoch by the clock of the store that keeps the
    /// lease (a MySQL target: its server's clock), never by another host's.
    pub expires_us: i64,
    /// The lease had run out when it was read, judged by that same clock.
    #[serde(default)]
    pub expired: bool,
    /// The fencing token of this holder's tenure: it grows with each new holder, and every
    /// checkpoint write is conditional on it (see [`ApplyBatch::fence`]). In a request, the
    /// tenure being renewed; 0 takes the lease anew.
    #[serde(default)]
    pub fencing: i64,
    /// In a request for a new tenure, the least fencing token it may take: in a cluster,
    /// the token of the node's lease on the direction in the cluster's KV bucket (the
    /// revision of the create that took it; 0 outside a cluster). A holder whose token is below it was superseded by the
    /// cluster (its cluster lease ran out), so the lease is taken from it at once.
    #[serde(default)]
    pub floor: i64,
}

impl fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {:?} on host {:?}, pid {}", self.node, self.host, self.pid)
    }
}

impl LeaseHolder {
    /// The fencing token `self` (the process asking) holds the lease under, given who
    /// holds it now; `Err` with the holder that keeps it. The one rule every store's
    /// lease follows: a renewal stays ours only while nobody took it over; a new tenure
    /// takes a lease that is free, expired, ours, or held by a dead process of this host,
    /// under the next token.
    pub fn claim(&self, current: Option<&LeaseHolder>) -> Result<i64, LeaseHolder> {
        // A cluster lease (floor > 0) outranks a tenure taken under an older one: see `floor`.
        match current {
            Some(h) if self.fencing != 0 => {
                if h.fencing != self.fencing || h.pid == 0 {
                    return Err(h.clone());
                }
                Ok(self.fencing)
            }
            Some(h) => {
                let mine = h.host == self.host && h.pid == self.pid;
                let dead = h.host == self.host && !host::pid_alive(h.pid);
                if h.pid != 0 && !(mine || dead || h.expired || self.supersedes(h)) {
                    return Err(h.clone());
                }
                Ok((h.fencing + 1).max(self.floor))
            }
            None => Ok(self.floor.max(1)),
        }
    }

    /// Whether this request (a new tenure) carries a cluster lease newer than `h`'s
    /// tenure, so `h` may be taken over (and its sessions ended) before its lease runs out.
    pub fn supersedes(&self, h: &LeaseHolder) -> bool {
        self.fencing == 0 && self.floor > h.fencing
    }
}

/// Result of trying to take or renew a lease.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseOutcome {
    /// Ours now, under this fencing token (the same one when renewed).
    Acquired {
        /// The tenure's fencing token.
        fencing: i64,
    },
    /// Another live process holds it (for a renewal: took it over).
    HeldBy(LeaseHolder),
}

/// What an error calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration or data store setup is wrong; a human must fix it (exit 2).
    Setup,
    /// The endpoint failed, went away or ran short of a resource (a lost connection, a
    /// busy database, a full disk or table, a lock wait): retrying with backoff may
    /// help, and nothing is skipped meanwhile (exit 3 if it stops).
    Runtime,
    /// The target refused the data itself (a duplicate on a unique index, a value out of
    /// range, a foreign key, a check): retrying the same way cannot help. The change is
    /// found (change by change) and named; a human fixes the target or skips it on
    /// purpose (`ferry skip`).
    Refused,
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
    /// The direction's lease passed to another process: nothing of the batch was
    /// committed, and this process must stop.
    #[error(
        "endpoint {endpoint}: task {dir} lost its lease to {}: this process held fencing token {mine}, the lease now carries {}; nothing of this process's batch was committed, and it stops so that it never overwrites the newer holder's progress\n  fix: nothing to do while the other process runs the task; if that process is gone, start ferry again",
        holder.as_ref().map_or_else(|| "nobody (it was released)".to_string(), |h| h.to_string()),
        holder.as_ref().map_or(0, |h| h.fencing)
    )]
    Fenced {
        /// Target endpoint name.
        endpoint: String,
        /// The direction.
        dir: String,
        /// The token this process applied under.
        mine: i64,
        /// Who holds the lease now, if anyone.
        holder: Option<Box<LeaseHolder>>,
    },
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
    /// A PostgreSQL statement or connection failed.
    #[error("endpoint {endpoint}: {what}: {source}")]
    Postgres {
        /// Endpoint name.
        endpoint: String,
        /// What ferry was doing.
        what: String,
        /// The driver's or server's error.
        #[source]
        source: sqlx::Error,
    },
    /// A file or object could not be read or written.
    #[error("endpoint {endpoint}: {what} {path:?}: {source}{}", fix.as_ref().map(|f| format!("\n  fix: {f}")).unwrap_or_default())]
    Blob {
        /// Endpoint name.
        endpoint: String,
        /// What ferry was doing ("cannot read", "cannot list").
        what: Box<str>,
        /// The path or key, relative to the endpoint's root (or the root itself).
        path: String,
        /// The store's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
        /// What it calls for.
        kind: ErrorKind,
        /// What to do, when known.
        fix: Option<Box<str>>,
    },
    /// A change stream (a replication protocol session) failed.
    #[error("endpoint {endpoint}: {what}: {source}")]
    Stream {
        /// Endpoint name.
        endpoint: String,
        /// What ferry was doing.
        what: String,
        /// The stream's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
        /// What it calls for (a lost connection is retried; a refused login is not).
        kind: ErrorKind,
    },
    /// The source cannot continue its stream from the position asked for, but can copy
    /// everything anew (a Redis master whose backlog no longer holds it offers a full
    /// resync): the engine marks every table to be copied again and starts over.
    #[error("endpoint {endpoint}: {reason}")]
    Resync {
        /// Endpoint name.
        endpoint: String,
        /// Why, for the log.
        reason: String,
    },
}

/// A source transaction the target refused, with everything needed to fix or skip it.
#[derive(Debug, thiserror::Error)]
#[error(
    "endpoint {endpoint}: cannot apply the transaction at source position {position}: table {table}, key {key}: {message}\n  fix: {}",
    apply_fix(.position, *.in_parts)
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
    /// The change is inside a source transaction too big for one read, applied in parts:
    /// it has no position of its own to skip by.
    pub in_parts: bool,
}

/// What to do about a refused change.
fn apply_fix(position: &Position, in_parts: bool) -> String {
    if in_parts {
        return "correct the row or the target (it must accept this row), then `ferry run` again; the change is inside a source transaction too big for one read (applied in parts), which cannot be skipped by position".into();
    }
    format!(
        "correct the row or the target, then `ferry run` again; to skip this transaction on purpose: ferry skip --config FILE --task TASK --position {position}"
    )
}

impl ConnectorError {
    /// Setup problems need a human; runtime ones may pass; refused data needs its change
    /// found and a decision.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ConnectorError::Setup { .. } | ConnectorError::Open { .. } => ErrorKind::Setup,
            ConnectorError::Apply(_) => ErrorKind::Refused,
            ConnectorError::Fenced { .. } | ConnectorError::Resync { .. } => ErrorKind::Runtime,
            ConnectorError::Query { source, .. } => sqlite::error_kind(source),
            ConnectorError::Mysql { source, .. } => mysql::error_kind(source),
            ConnectorError::Postgres { source, .. } => postgres::error_kind(source),
            ConnectorError::Stream { kind, .. } | ConnectorError::Blob { kind, .. } => *kind,
        }
    }

    /// A blob task of ferry's own (`what`: a copy lane, a listing) that ended without
    /// its answer: a runtime error on `endpoint`, retried by whoever runs the work.
    pub fn blob_task_stopped(endpoint: &str, what: &str, fix: Option<&str>) -> ConnectorError {
        ConnectorError::Blob {
            endpoint: endpoint.to_string(),
            what: format!("{what} stopped:").into(),
            path: String::new(),
            source: Box::new(std::io::Error::other("its task ended without an answer")),
            kind: ErrorKind::Runtime,
            fix: fix.map(Into::into),
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
    /// The rows in the store's own bulk format instead of `rows`, when the source was
    /// opened for a sink of the same store ([`registry::SourceOptions::native_chunks`])
    /// and reads chunks at a position (never with watermarks: the engine cannot drop
    /// single rows from them).
    pub native: Option<NativeRows>,
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

/// The table every source writes its heartbeat to (every 100 ms, as pt-heartbeat does):
/// it flows through the stream like any change, so lag is exact even when idle. Its
/// rows are (site, ts µs).
pub const HEARTBEAT_TABLE: &str = "ferry_heartbeat";

/// How much change history a source keeps for one reader (a PostgreSQL replication
/// slot's retained WAL): what a stopped or slow reader costs the source's disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Bytes of history kept for the reader (from where it must resume to the end).
    pub bytes: u64,
    /// Bytes the reader has not confirmed yet (from its confirmed position to the end).
    pub unconfirmed_bytes: u64,
    /// The source warns that this history is about to be discarded (past its limit).
    pub at_risk: bool,
}

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
    /// Installs change capture for these tables (idempotent), first creating or moving
    /// forward ferry's own tables as [`Sink::prepare`] does.
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
    /// The clock that stamps this store's row versions (its server's, for a SQLite file
    /// its host's), µs since the epoch, read now: the engine compares it with its own
    /// clock and the other side's (clock skew, which last-writer-wins depends on).
    /// `None`: the store cannot tell its time (the capability's default).
    fn clock(&mut self) -> impl Future<Output = Result<Option<i64>, ConnectorError>> + Send {
        async { Ok(None) }
    }
    /// The history the source keeps for this reader, where it keeps some per reader;
    /// `None` where it does not. History the source already discarded (changes lost for
    /// this reader) is a setup error saying how to start over.
    fn retention(&mut self) -> impl Future<Output = Result<Option<Retention>, ConnectorError>> + Send {
        async { Ok(None) }
    }
    /// About how many rows the table holds, read cheaply (server statistics where the
    /// store keeps them), for snapshot progress: never used to decide what to copy.
    /// `None`: the store cannot tell (the capability's default).
    fn estimate_rows(
        &mut self,
        table: &TableSchema,
    ) -> impl Future<Output = Result<Option<u64>, ConnectorError>> + Send {
        let _ = table;
        async { Ok(None) }
    }
    /// How many changes a stream read of this store should hold at least, where it
    /// applies better in bigger batches than the task's default; `None` (the default):
    /// the task's.
    fn batch_changes(&self) -> Option<usize> {
        None
    }
    /// Ends its sessions and waits until they are closed (the engine calls it when a
    /// direction stops, so a store's files are let go of when the engine is joined);
    /// by default it is dropped, which a store whose driver closes on another thread
    /// (SQLite) overrides.
    fn close(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        async move { drop(self) }
    }
}

/// A data store changes are applied to.
pub trait Sink: Send {
    /// Creates ferry's own tables (checkpoint, conflict, lease), or moves them forward to
    /// this release's schema version; a schema newer than this release is a setup error.
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
    /// Takes the direction's lease for `holder` (`holder.fencing` 0), unless a live
    /// process holds it: one whose lease has not run out by the store's clock and, on the
    /// same host, whose pid still runs. A new holder gets a fencing token greater than any
    /// before it. Or renews the tenure `holder.fencing`, unless another process took the
    /// lease over since. Either way the lease then lasts `ttl` by the store's clock. Runs
    /// apart from an open commit group (never commits it).
    fn lease(
        &mut self,
        dir: &DirectionId,
        holder: &LeaseHolder,
        ttl: std::time::Duration,
    ) -> impl Future<Output = Result<LeaseOutcome, ConnectorError>> + Send;
    /// Drops a commit group left open by its parts (see [`ApplyBatch::commit`]): nothing
    /// of it lands. A no-op when none is open. (Stopping inside a big source transaction:
    /// it is applied again, whole, at the next start.)
    fn rollback(&mut self) -> impl Future<Output = Result<(), ConnectorError>> + Send;
    /// Gives the lease up (clean shutdown), if `holder.fencing` is still its tenure; the
    /// fencing token stays recorded for the next holder to go past.
    fn release(
        &mut self,
        dir: &DirectionId,
        holder: &LeaseHolder,
    ) -> impl Future<Output = Result<(), ConnectorError>> + Send;
    /// Ends its sessions and waits until they are closed, as [`Source::close`].
    fn close(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        async move { drop(self) }
    }
}

#[cfg(test)]
mod lease_rule_tests {
    use super::LeaseHolder;

    fn holder(host: &str, pid: u32, fencing: i64, expired: bool) -> LeaseHolder {
        LeaseHolder { node: "n".into(), host: host.into(), pid, expires_us: 0, expired, fencing, floor: 0 }
    }

    #[test]
    fn a_lease_is_claimed_free_expired_or_from_a_dead_process_and_renewed_only_while_unchanged() {
        let me = holder("h", std::process::id(), 0, false);
        assert_eq!(me.claim(None), Ok(1));
        assert_eq!(me.claim(Some(&holder("other", 1, 4, true))), Ok(5), "expired");
        assert_eq!(me.claim(Some(&holder("h", u32::MAX - 1, 4, false))), Ok(5), "a dead process of this host");
        let live = holder("other", 1, 4, false);
        assert_eq!(me.claim(Some(&live)), Err(live.clone()), "a live holder elsewhere keeps it");
        let renewing = holder("h", std::process::id(), 4, false);
        assert_eq!(renewing.claim(Some(&holder("h", std::process::id(), 4, false))), Ok(4));
        assert_eq!(renewing.claim(Some(&holder("other", 1, 5, false))).map_err(|h| h.fencing), Err(5), "taken over");
        assert!(renewing.claim(Some(&holder("h", 0, 4, false))).is_err(), "released (pid 0) is no longer ours");
    }

    #[test]
    fn a_newer_cluster_lease_takes_a_live_tenure_over_under_its_revision() {
        let live = holder("other", 1, 4, false);
        let newer = LeaseHolder { floor: 9, ..holder("h", std::process::id(), 0, false) };
        assert_eq!(newer.claim(Some(&live)), Ok(9), "superseded by the cluster lease's revision");
        assert_eq!(newer.claim(None), Ok(9));
        let older = LeaseHolder { floor: 3, ..holder("h", std::process::id(), 0, false) };
        assert_eq!(older.claim(Some(&live)), Err(live.clone()), "an older cluster lease does not");
        let renewing = LeaseHolder { floor: 9, ..holder("h", std::process::id(), 4, false) };
        assert!(renewing.claim(Some(&holder("other", 1, 9, false))).is_err(), "a renewal never takes over");
    }
}
