//! One direction of one task: lease, capture, snapshot -> stream handoff, batching,
//! throttling, heartbeat, retries. Everything it applies goes through
//! [`Sink::apply`] with the checkpoint in the same target transaction.
//!
//! Snapshot and stream meet as in Vitess' copy phase: a chunk is read together with the
//! stream position it is consistent with; the stream is applied up to that position
//! (changes to keys not copied yet are left out: the chunk carries them), then the chunk
//! and the new copy progress are applied in one transaction.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::EngineError;
use super::map::Renames;
use super::metrics::{DirectionMetrics, DirectionState};
use crate::config::{Endpoint, EndpointUrl, TableMap};
use crate::connector::mysql::{MysqlEndpoint, apply::MysqlSink, source::MysqlSource};
use crate::connector::sqlite::schema::HEARTBEAT_TABLE;
use crate::connector::sqlite::{Access, SqliteEndpoint, apply::SqliteSink, capture::SqliteSource};
use crate::connector::{
    ApplyBatch, ApplyReport, Checkpoint, Chunk, ConflictRules, ConnectorError, DirectionId, ErrorKind, LeaseHolder,
    LeaseOutcome, ReadBatch, ReadRequest, Sink, SnapshotRows, Source, TableProgress,
};
use crate::connector::{SIGNAL_TABLE, typemap};
use crate::model::{Change, Key, Op, Position, SchemaChangeKind, TableSchema, Txn, Value, cmp_keys, now_micros};

/// How long a lease lasts without renewal.
const LEASE_TTL_US: i64 = 15_000_000;
/// How often the lease is renewed.
const LEASE_RENEW: Duration = Duration::from_secs(3);

/// Knobs with defaults that suit both the demo and production.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Changes read per batch (whole commit groups may exceed it).
    pub batch_changes: usize,
    /// Rows per snapshot chunk.
    pub chunk_rows: usize,
    /// Pause when the stream is idle.
    pub poll: Duration,
    /// Heartbeat interval.
    pub heartbeat: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            batch_changes: 20_000,
            chunk_rows: 50_000,
            poll: Duration::from_millis(20),
            heartbeat: Duration::from_millis(100),
        }
    }
}

/// Everything one direction needs.
#[derive(Debug, Clone)]
pub struct DirectionSpec {
    /// Which direction.
    pub id: DirectionId,
    /// Read from.
    pub source: Endpoint,
    /// Write to.
    pub target: Endpoint,
    /// Table globs.
    pub tables: Vec<String>,
    /// Copy existing rows first.
    pub snapshot: bool,
    /// Conflict detection (two-way); `None` applies blindly.
    pub conflicts: Option<ConflictRules>,
    /// Never split a source commit group across target commits.
    pub keep_transactions: bool,
    /// Target connections a snapshot chunk is spread over (`workers`).
    pub workers: u32,
    /// 0 = unthrottled.
    pub max_rows_per_sec: u64,
    /// Renames.
    pub maps: Vec<TableMap>,
    /// `[node] id`, for the lease.
    pub node_id: String,
    /// Source transactions an operator chose to skip (`ferry skip`).
    pub skips: Vec<Position>,
    /// Batch sizes and intervals.
    pub tuning: Tuning,
}

/// Runs a direction until `shutdown`, retrying endpoint failures with backoff.
pub async fn run_direction(
    spec: DirectionSpec,
    metrics: Arc<DirectionMetrics>,
    shutdown: CancellationToken,
) -> Result<(), EngineError> {
    let mut backoff = Duration::from_millis(500);
    let mut diagnose = false;
    loop {
        let result = run_once(diagnose, &spec, &metrics, &shutdown).await;
        diagnose = true;
        match result {
            Ok(()) => {
                metrics.set_state(DirectionState::Stopped);
                return Ok(());
            }
            Err(e @ EngineError::Reload { .. }) if !shutdown.is_cancelled() => {
                info!(direction = %spec.id, "{e}");
                diagnose = false;
            }
            Err(e) if e.retryable() && !shutdown.is_cancelled() => {
                warn!(direction = %spec.id, error = %e, retry_in_ms = backoff.as_millis() as u64, "endpoint failed; retrying");
                metrics.error(e.to_string());
                metrics.set_state(DirectionState::Retrying);
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => {
                        metrics.set_state(DirectionState::Stopped);
                        return Ok(());
                    }
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                metrics.error(e.to_string());
                metrics.set_state(DirectionState::Failed);
                return Err(e);
            }
        }
    }
}

async fn run_once(
    diagnose: bool,
    spec: &DirectionSpec,
    metrics: &Arc<DirectionMetrics>,
    shutdown: &CancellationToken,
) -> Result<(), EngineError> {
    match (&spec.source.url, &spec.target.url) {
        (EndpointUrl::Sqlite(src), EndpointUrl::Sqlite(dst)) => {
            let (source, heartbeat) = (sqlite_source(spec, src).await?, sqlite_source(spec, src).await?);
            run_pair(diagnose, spec, metrics, shutdown, source, heartbeat, sqlite_sink(spec, dst).await?).await
        }
        (EndpointUrl::Mysql(src), EndpointUrl::Mysql(dst)) => {
            let (source, heartbeat) = mysql_sources(spec, src).await?;
            run_pair(diagnose, spec, metrics, shutdown, source, heartbeat, mysql_sink(spec, dst).await?).await
        }
        (EndpointUrl::Sqlite(src), EndpointUrl::Mysql(dst)) => {
            let (source, heartbeat) = (sqlite_source(spec, src).await?, sqlite_source(spec, src).await?);
            run_pair(diagnose, spec, metrics, shutdown, source, heartbeat, mysql_sink(spec, dst).await?).await
        }
        (EndpointUrl::Mysql(src), EndpointUrl::Sqlite(dst)) => {
            let (source, heartbeat) = mysql_sources(spec, src).await?;
            run_pair(diagnose, spec, metrics, shutdown, source, heartbeat, sqlite_sink(spec, dst).await?).await
        }
        _ => Err(unsupported_pair(spec)),
    }
}

async fn sqlite_source(spec: &DirectionSpec, path: &std::path::Path) -> Result<SqliteSource, ConnectorError> {
    SqliteSource::open(sqlite(&spec.source, path), Access::ReadWrite).await
}

async fn sqlite_sink(spec: &DirectionSpec, path: &std::path::Path) -> Result<SqliteSink, ConnectorError> {
    SqliteSink::open(sqlite(&spec.target, path), Access::ReadWrite).await
}

/// A session on the direction's MySQL source, its replica id and signal row keyed by `stream`.
async fn mysql_source(spec: &DirectionSpec, url: &str, stream: &str) -> Result<MysqlSource, ConnectorError> {
    let source =
        MysqlSource::open(MysqlEndpoint::new(&spec.source.name, spec.source.site.clone(), url)?, stream).await?;
    Ok(source.with_versions(spec.conflicts.is_some()))
}

/// The stream reader and the heartbeat writer (its own session and replica id).
async fn mysql_sources(spec: &DirectionSpec, url: &str) -> Result<(MysqlSource, MysqlSource), ConnectorError> {
    let stream = stream_name(spec);
    let heartbeat = mysql_source(spec, url, &format!("{stream}/heartbeat")).await?;
    Ok((mysql_source(spec, url, &stream).await?, heartbeat))
}

async fn mysql_sink(spec: &DirectionSpec, url: &str) -> Result<MysqlSink, ConnectorError> {
    let sink = MysqlSink::open(MysqlEndpoint::new(&spec.target.name, spec.target.site.clone(), url)?).await?;
    let sink = sink.with_workers(spec.workers as usize);
    Ok(match spec.conflicts {
        Some(_) => sink.with_two_way(spec.source.site.clone()),
        None => sink,
    })
}

/// The engine of an endpoint, for type mapping.
fn engine_of(url: &EndpointUrl) -> Option<typemap::Engine> {
    match url {
        EndpointUrl::Sqlite(_) => Some(typemap::Engine::Sqlite),
        EndpointUrl::Mysql(_) => Some(typemap::Engine::Mysql),
        EndpointUrl::Postgres(_) => None,
    }
}

/// The target's schemas of the direction's tables: renamed, and typed for the target's
/// engine when it differs from the source's.
fn target_schemas(spec: &DirectionSpec, renames: &Renames) -> Vec<Arc<TableSchema>> {
    let all = renames.all();
    match (engine_of(&spec.source.url), engine_of(&spec.target.url)) {
        (Some(from), Some(to)) if from != to => {
            all.iter().map(|t| Arc::new(typemap::for_target(t, from, to))).collect()
        }
        _ => all,
    }
}

async fn run_pair<S: Source + 'static, H: Source + 'static, K: Sink>(
    diagnose: bool,
    spec: &DirectionSpec,
    metrics: &Arc<DirectionMetrics>,
    shutdown: &CancellationToken,
    source: S,
    heartbeat: H,
    sink: K,
) -> Result<(), EngineError> {
    let runner = Runner {
        spec,
        metrics,
        shutdown,
        source: Slot(Some(source)),
        sink,
        renames: Renames::default(),
        reload: None,
        checkpoint: Checkpoint::default(),
        open_group: false,
        diagnose,
    };
    runner.run(heartbeat).await
}

fn sqlite(ep: &Endpoint, path: &std::path::Path) -> SqliteEndpoint {
    SqliteEndpoint { name: ep.name.clone(), site: ep.site.clone(), path: path.to_path_buf() }
}

/// Names a direction's replica stream and snapshot signal row: node and direction.
fn stream_name(spec: &DirectionSpec) -> String {
    format!("{}/{}/{}", spec.node_id, spec.id.task, spec.id.direction())
}

fn unsupported_pair(spec: &DirectionSpec) -> EngineError {
    let (a, b) = (&spec.source, &spec.target);
    if a.url.engine() == b.url.engine() {
        EngineError::Unsupported { endpoint: a.name.clone(), engine: a.url.engine() }
    } else {
        EngineError::Unsupported { endpoint: format!("{} -> {}", a.name, b.name), engine: "mixed-engine" }
    }
}

struct Runner<'a, S: Source + 'static, K: Sink> {
    spec: &'a DirectionSpec,
    metrics: &'a Arc<DirectionMetrics>,
    shutdown: &'a CancellationToken,
    source: Slot<S>,
    sink: K,
    renames: Renames,
    checkpoint: Checkpoint,
    /// A part of a source commit group was applied without committing.
    open_group: bool,
    /// Apply change by change until the next commit: set after a failure, so a change
    /// the target refuses is found and named instead of failing the same way forever.
    diagnose: bool,
    /// A table being copied changed its schema: start again once this batch is applied.
    reload: Option<String>,
}

impl<S: Source + 'static, K: Sink> Runner<'_, S, K> {
    async fn run<H: Source + 'static>(mut self, mut heartbeat: H) -> Result<(), EngineError> {
        let id = self.spec.id.clone();
        self.metrics.set_state(DirectionState::Starting);
        self.sink.prepare().await?;
        let me = holder(&self.spec.node_id);
        if !self.take_lease(&me).await? {
            return Ok(());
        }
        let result = async {
            // Parents before their children: a copied child row finds its parent there.
            let sources = parents_first(self.source.tables(&self.spec.tables).await?);
            self.renames = Renames::new(&sources, &self.spec.maps);
            self.sink.ensure_tables(&target_schemas(self.spec, &self.renames)).await?;
            self.source.install_capture(&sources).await?;

            // Heartbeats start once capture is installed; the task owns and joins it.
            let hb_token = self.shutdown.child_token();
            let hb_every = self.spec.tuning.heartbeat;
            let hb_metrics = self.metrics.clone();
            let hb_stop = hb_token.clone();
            let hb = tokio::spawn(async move {
                let mut tick = tokio::time::interval(hb_every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        biased;
                        _ = hb_stop.cancelled() => break,
                        _ = tick.tick() => {
                            if let Err(e) = heartbeat.heartbeat().await {
                                warn!(direction = %hb_metrics.id, error = %e, "heartbeat failed");
                            }
                        }
                    }
                }
            });
            let result = self.sync(&sources, &me).await;
            hb_token.cancel();
            let _ = hb.await;
            result
        }
        .await;
        // While an endpoint failure is retried this process still owns the direction.
        let retrying = matches!(&result, Err(e) if e.retryable() && !self.shutdown.is_cancelled());
        if !retrying && let Err(e) = self.sink.release(&id, &me).await {
            warn!(direction = %id, error = %e, "could not release the lease; it expires by itself");
        }
        result
    }

    /// Takes the lease; `false` when shut down while waiting.
    async fn take_lease(&mut self, me: &LeaseHolder) -> Result<bool, EngineError> {
        loop {
            let mut me = me.clone();
            me.expires_us = now_micros() + LEASE_TTL_US;
            match self.sink.lease(&self.spec.id, &me).await? {
                LeaseOutcome::Acquired => return Ok(true),
                LeaseOutcome::HeldBy(h) if h.host == me.host => {
                    return Err(EngineError::LeaseHeld { dir: self.spec.id.clone(), holder: Box::new(h) });
                }
                LeaseOutcome::HeldBy(h) => {
                    self.metrics.set_state(DirectionState::WaitingForLease);
                    info!(direction = %self.spec.id, holder = %h, expires_in_s = (h.expires_us - now_micros()) / 1_000_000, "waiting for the lease held by another host to expire");
                    tokio::select! {
                        biased;
                        _ = self.shutdown.cancelled() => return Ok(false),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    async fn renew_lease(&mut self, me: &LeaseHolder) -> Result<(), EngineError> {
        let mut me = me.clone();
        me.expires_us = now_micros() + LEASE_TTL_US;
        match self.sink.lease(&self.spec.id, &me).await? {
            LeaseOutcome::Acquired => Ok(()),
            LeaseOutcome::HeldBy(h) => Err(EngineError::LeaseLost { dir: self.spec.id.clone(), holder: Box::new(h) }),
        }
    }

    async fn sync(&mut self, sources: &[Arc<TableSchema>], me: &LeaseHolder) -> Result<(), EngineError> {
        let id = self.spec.id.clone();
        self.checkpoint = self.sink.load_checkpoint(&id).await?.unwrap_or_default();
        let head = self.source.head().await?;
        match &self.checkpoint.position {
            None => self.checkpoint.position = Some(head),
            // Applied changes the source no longer has: it was replaced or restored.
            Some(at) if at.stream_cmp(&head) == Some(Ordering::Greater) => {
                return Err(ConnectorError::Setup {
                    endpoint: self.spec.source.name.clone(),
                    problem: format!(
                        "task {id} has applied up to {at}, but the source's stream ends at {head}: the source database was replaced or restored from a backup since"
                    ),
                    fix: format!(
                        "to copy it again from scratch, delete the task's checkpoint on the target {} (ferry_checkpoint rows of task {:?}) and run the task again; the target's rows are kept and overwritten",
                        self.spec.target.name, id.task
                    ),
                }
                .into());
            }
            Some(_) => {}
        }
        for t in sources {
            let initial = if self.spec.snapshot { TableProgress::Pending } else { TableProgress::Done };
            self.checkpoint.tables.entry(t.name.to_string()).or_insert(initial);
        }
        self.apply(Vec::new(), None).await?;
        info!(direction = %id, position = %self.position(), "started");

        let mut last_renew = Instant::now();
        let mut throttle = Throttle::new(self.spec.max_rows_per_sec);

        // Snapshot: table by table, chunk by chunk, with the stream applied in between.
        // The next chunk is read (on the source's connection, in its own task) while this
        // one is applied: a chunk's rows depend only on the watermarks or position read
        // with it, and the stream up to them is applied after this chunk, as before.
        let versions = self.spec.conflicts.is_some();
        let limit = self.spec.tuning.chunk_rows;
        for t in sources {
            let name = t.name.to_string();
            let mut prefetched: Option<Prefetch<S>> = None;
            loop {
                if self.shutdown.is_cancelled() {
                    self.join_prefetch(prefetched.take()).await?;
                    return Ok(());
                }
                let after = match self.checkpoint.tables.get(&name) {
                    Some(TableProgress::Done) | None => {
                        // Dropped while copying (a schema change): the read-ahead is moot.
                        self.join_prefetch(prefetched.take()).await?;
                        break;
                    }
                    Some(TableProgress::Pending) => None,
                    Some(TableProgress::Copying { after }) => Some(after.clone()),
                };
                self.metrics.set_state(DirectionState::Snapshotting(name.clone()));
                if last_renew.elapsed() >= LEASE_RENEW {
                    if let Err(e) = self.renew_lease(me).await {
                        self.join_prefetch(prefetched.take()).await?;
                        return Err(e);
                    }
                    last_renew = Instant::now();
                }
                let mut chunk = match self.join_prefetch(prefetched.take()).await? {
                    Some(c) => c,
                    None => self.source.read_chunk(t, after.as_ref(), limit, versions).await?,
                };
                // Progress follows the rows as read, before the window drops any of them.
                let progress = match chunk.rows.last() {
                    Some(last) if chunk.rows.len() >= limit => TableProgress::Copying { after: t.key_of(last) },
                    _ => TableProgress::Done,
                };
                match (chunk.position.clone(), chunk.marks.clone()) {
                    (Some(p), _) => self.catch_up(&p).await?,
                    (None, Some((low, high))) => {
                        let upto = match chunk.rows.last() {
                            Some(last) if chunk.rows.len() >= limit => Some(t.key_of(last)),
                            _ => None,
                        };
                        let mut window = Window {
                            table: name.clone(),
                            after: after.clone(),
                            upto,
                            low,
                            high,
                            open: false,
                            seen: HashSet::new(),
                        };
                        if !self.catch_up_window(&mut window).await? {
                            return Ok(());
                        }
                        if !window.seen.is_empty() {
                            let keep: Vec<bool> = chunk
                                .rows
                                .iter()
                                .map(|r| !window.seen.contains(&format!("{:?}", t.key_of(r))))
                                .collect();
                            let mut flags = keep.iter();
                            chunk.rows.retain(|_| *flags.next().unwrap_or(&true));
                            if let Some(v) = chunk.versions.as_mut() {
                                let mut flags = keep.iter();
                                v.retain(|_| *flags.next().unwrap_or(&true));
                            }
                        }
                    }
                    (None, None) => {
                        return Err(EngineError::Connector(ConnectorError::Setup {
                            endpoint: self.spec.source.name.clone(),
                            problem: "the source gave a snapshot chunk without a position or watermarks".into(),
                            fix: "report this as a bug".into(),
                        }));
                    }
                }
                let n = chunk.rows.len() as u64;
                if let TableProgress::Copying { after: next } = &progress {
                    let mut source = self.source.take_for_read()?;
                    let (table, next) = (t.clone(), next.clone());
                    prefetched = Some(tokio::spawn(async move {
                        let r = source.read_chunk(&table, Some(&next), limit, versions).await;
                        (source, r)
                    }));
                }
                self.checkpoint.tables.insert(name.clone(), progress);
                let rows = SnapshotRows { table: self.renames.target(t), rows: chunk.rows, versions: chunk.versions };
                if let Err(e) = self.apply(Vec::new(), Some(rows)).await {
                    self.join_prefetch(prefetched.take()).await?;
                    return Err(e);
                }
                throttle.wait(n, self.shutdown).await;
            }
        }

        // Stream.
        self.metrics.set_state(DirectionState::Streaming);
        let mut last_head = Instant::now() - Duration::from_secs(10);
        let mut last_consumed = Instant::now();
        // Reading batch N+1 overlaps applying batch N: the source and the target work on
        // their own connections (threads), so a stream is limited by the slower of the two.
        let mut pending: Option<ReadBatch> = None;
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            if last_renew.elapsed() >= LEASE_RENEW {
                self.renew_lease(me).await?;
                last_renew = Instant::now();
            }
            if last_head.elapsed() >= Duration::from_secs(1) {
                let head = self.source.head().await?;
                self.metrics.set_behind(self.position().changes_until(&head).unwrap_or(0));
                last_head = Instant::now();
            }
            if last_consumed.elapsed() >= Duration::from_secs(5) {
                let pos = self.position();
                self.source.consumed(&id.to_string(), &pos).await?;
                last_consumed = Instant::now();
            }
            let batch = match pending.take() {
                Some(b) => b,
                None => self.source.read_changes(&self.request(self.position(), None)).await?,
            };
            if batch.position == self.position() {
                self.close_group().await?;
                tokio::select! {
                    biased;
                    _ = self.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(self.spec.tuning.poll) => {}
                }
                continue;
            }
            let rows: usize = batch.txns.iter().map(|t| t.changes.len()).sum::<usize>().max(1);
            let txns = self.prepare_txns(batch.txns, None)?;
            let mut apply = self.batch(txns, None, !batch.continues);
            apply.checkpoint.position = Some(batch.position.clone());
            let next = self.request(batch.position.clone(), None);
            // The next read runs as its own task, so decoding it overlaps applying this
            // batch on the other core; the source comes back with the result.
            let mut source = self.source.take_for_read()?;
            let reader = tokio::spawn(async move {
                let r = source.read_changes(&next).await;
                (source, r)
            });
            let applied = self.apply_batch(&mut apply).await;
            let (source, read) = reader.await.map_err(|e| {
                EngineError::Connector(ConnectorError::Setup {
                    endpoint: self.spec.source.name.clone(),
                    problem: format!("the stream reader ended abnormally: {e}"),
                    fix: "report this as a bug with the log".into(),
                })
            })?;
            self.source.put_back(source);
            applied?;
            self.checkpoint.position = Some(batch.position);
            self.reload_if_needed()?;
            self.metrics.clear_error();
            pending = Some(read?);
            throttle.wait(rows as u64, self.shutdown).await;
        }
        self.close_group().await?;
        let pos = self.position();
        self.source.consumed(&id.to_string(), &pos).await?;
        info!(direction = %id, position = %pos, "stopped");
        Ok(())
    }

    /// Waits for a chunk read ahead (if any) and takes the source back.
    async fn join_prefetch(&mut self, prefetched: Option<Prefetch<S>>) -> Result<Option<Chunk>, EngineError> {
        let Some(handle) = prefetched else { return Ok(None) };
        let (source, chunk) = handle.await.map_err(|e| {
            EngineError::Connector(ConnectorError::Setup {
                endpoint: self.spec.source.name.clone(),
                problem: format!("the snapshot reader ended abnormally: {e}"),
                fix: "report this as a bug with the log".into(),
            })
        })?;
        self.source.put_back(source);
        Ok(Some(chunk?))
    }

    fn position(&self) -> Position {
        self.checkpoint.position.clone().unwrap_or(Position::Sqlite { seq: 0 })
    }

    /// Applies the stream up to `until` (a snapshot chunk's position).
    async fn catch_up(&mut self, until: &Position) -> Result<(), EngineError> {
        while self.position().stream_cmp(until) == Some(Ordering::Less) {
            let before = self.position();
            self.step(Some(until.clone())).await?;
            if self.position() == before {
                // Nothing readable up to `until`: no changes lie in between.
                self.checkpoint.position = Some(until.clone());
                break;
            }
        }
        Ok(())
    }

    /// Applies the stream until the chunk's high watermark; returns `false` when shut down
    /// first. Changes to keys of the chunk seen after the low watermark are applied (the
    /// row events carry whole rows) and recorded in `window.seen`.
    async fn catch_up_window(&mut self, window: &mut Window) -> Result<bool, EngineError> {
        let started = Instant::now();
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(false);
            }
            let (rows, reached) = self.step_with(None, Some(window)).await?;
            if reached {
                return Ok(true);
            }
            if rows == 0 {
                if started.elapsed() > Duration::from_secs(300) {
                    return Err(EngineError::Connector(ConnectorError::Setup {
                        endpoint: self.spec.source.name.clone(),
                        problem: format!(
                            "the snapshot's high watermark of {} did not arrive through the change stream within 5 minutes",
                            window.table
                        ),
                        fix: "check that the binlog includes the ferry database (no binlog-ignore-db / replicate filters on it)".into(),
                    }));
                }
                tokio::select! {
                    biased;
                    _ = self.shutdown.cancelled() => return Ok(false),
                    _ = tokio::time::sleep(self.spec.tuning.poll) => {}
                }
            }
        }
    }

    /// Reads one batch and applies it; returns the number of changes read.
    async fn step(&mut self, until: Option<Position>) -> Result<usize, EngineError> {
        Ok(self.step_with(until, None).await?.0)
    }

    /// Reads one batch and applies it; returns the number of changes read and whether the
    /// window's high watermark was in it.
    async fn step_with(
        &mut self,
        until: Option<Position>,
        mut window: Option<&mut Window>,
    ) -> Result<(usize, bool), EngineError> {
        let req = self.request(self.position(), until);
        let batch = self.source.read_changes(&req).await?;
        if batch.position == req.after {
            self.close_group().await?;
            return Ok((0, false));
        }
        let read: usize = batch.txns.iter().map(|t| t.changes.len()).sum();
        let reached = match window.as_deref_mut() {
            Some(w) => w.observe(&batch.txns),
            None => false,
        };
        let txns = self.prepare_txns(batch.txns, window)?;
        self.checkpoint.position = Some(batch.position);
        let mut apply = self.batch(txns, None, !batch.continues);
        self.apply_batch(&mut apply).await?;
        self.reload_if_needed()?;
        Ok((read.max(1), reached))
    }

    /// Drops skipped transactions and changes to keys the snapshot has not reached,
    /// renames tables for the target, and notes heartbeats for lag.
    fn prepare_txns(&mut self, txns: Vec<Txn>, mut window: Option<&mut Window>) -> Result<Vec<Txn>, EngineError> {
        let source_site = self.spec.source.site.clone();
        let source_site = &source_site;
        let mut out = Vec::with_capacity(txns.len());
        for mut txn in txns {
            if self.spec.skips.contains(&txn.position) {
                warn!(direction = %self.spec.id, position = %txn.position, "skipping a transaction as an operator asked (ferry skip)");
                continue;
            }
            if !txn.ddl.is_empty() {
                self.schema_changes(&mut txn)?;
                out.push(txn);
                continue;
            }
            txn.changes.retain(|c| {
                if c.table.name.name == HEARTBEAT_TABLE {
                    return true;
                }
                if c.table.name.name == SIGNAL_TABLE {
                    return false;
                }
                if let Some(w) = window.as_deref_mut()
                    && w.claims(c)
                {
                    return true;
                }
                // A row not copied yet arrives with its chunk, but a chunk cannot carry a
                // row's absence: deletes (and key moves) always pass, since the target may
                // hold the row already (two-way: it may be where the row came from).
                let removes = c.op == Op::Delete || (c.op == Op::Update && c.new_key() != c.key);
                match self.checkpoint.tables.get(&c.table.name.to_string()) {
                    Some(TableProgress::Done) => true,
                    None => false,
                    Some(TableProgress::Pending) => removes,
                    Some(TableProgress::Copying { after }) => {
                        removes
                            || cmp_keys(&c.key, after) != Ordering::Greater
                            || cmp_keys(&c.new_key(), after) != Ordering::Greater
                    }
                }
            });
            for c in &mut txn.changes {
                if c.table.name.name == HEARTBEAT_TABLE {
                    if let (Some(row), true) = (&c.after, &txn.origin == source_site)
                        && let Some(Value::Int(ts)) = row.get(1)
                    {
                        self.metrics.heartbeat_applied(*ts);
                    }
                    continue;
                }
                c.table = self.renames.target(&c.table);
            }
            if !txn.changes.is_empty() {
                out.push(txn);
            }
        }
        Ok(out)
    }

    /// Gives a transaction's schema changes their target names and follows them in the
    /// checkpoint: a created table is followed from its first row (nothing to copy), a
    /// dropped one is forgotten, and one altered mid-copy makes the direction re-read the
    /// tables once the change is applied.
    fn schema_changes(&mut self, txn: &mut Txn) -> Result<(), EngineError> {
        for sc in &mut txn.ddl {
            let source = sc.table.to_string();
            let (target, renamed_columns) = self.renames.target_name(&sc.table);
            if renamed_columns && matches!(sc.kind, SchemaChangeKind::Alter | SchemaChangeKind::Index) {
                return Err(ConnectorError::Setup {
                    endpoint: self.spec.target.name.clone(),
                    problem: format!(
                        "{source} has renamed columns ([[task.map]] columns), so its schema change cannot be carried: {} (at {})",
                        sc.statement, txn.position
                    ),
                    fix: format!(
                        "run the same change on the target's {target} with the target's column names, then `ferry skip --position {}` this transaction",
                        txn.position
                    ),
                }
                .into());
            }
            match sc.kind {
                SchemaChangeKind::Create => {
                    self.checkpoint.tables.insert(source, TableProgress::Done);
                }
                SchemaChangeKind::Drop => {
                    self.checkpoint.tables.remove(&source);
                }
                _ => {
                    if !matches!(self.checkpoint.tables.get(&source), Some(TableProgress::Done) | None) {
                        self.reload = Some(source);
                    }
                }
            }
            sc.table = target;
        }
        Ok(())
    }

    /// After a batch: a copy interrupted by a schema change starts again.
    fn reload_if_needed(&mut self) -> Result<(), EngineError> {
        match self.reload.take() {
            Some(table) => Err(EngineError::Reload { dir: self.spec.id.clone(), table }),
            None => Ok(()),
        }
    }

    /// Applies transactions and/or a snapshot chunk with the current checkpoint. A failing
    /// batch is retried change by change, so the error names the exact row.
    async fn apply(&mut self, txns: Vec<Txn>, snapshot: Option<SnapshotRows>) -> Result<(), EngineError> {
        self.close_group().await?;
        let mut batch = self.batch(txns, snapshot, true);
        self.apply_batch(&mut batch).await
    }

    /// A batch carrying the current checkpoint.
    fn batch(&self, txns: Vec<Txn>, snapshot: Option<SnapshotRows>, commit: bool) -> ApplyBatch {
        ApplyBatch {
            txns,
            snapshot,
            checkpoint: self.checkpoint.clone(),
            conflicts: self.spec.conflicts.clone(),
            one_by_one: self.diagnose,
            commit,
        }
    }

    /// Applies a batch (diagnosing a failure change by change where that is safe) and
    /// counts it.
    async fn apply_batch(&mut self, batch: &mut ApplyBatch) -> Result<(), EngineError> {
        let in_group = self.open_group || !batch.commit;
        let report = match self.sink.apply(&self.spec.id, batch).await {
            Ok(r) => r,
            // Earlier parts of the group were rolled back with this one: only a restart
            // from the checkpoint (in diagnose mode) can apply the group again.
            Err(e) if in_group => {
                self.open_group = false;
                return Err(e.into());
            }
            Err(ConnectorError::Query { .. } | ConnectorError::Mysql { .. })
                if !batch.one_by_one && (!batch.txns.is_empty() || batch.snapshot.is_some()) =>
            {
                batch.one_by_one = true;
                self.sink.apply(&self.spec.id, batch).await?
            }
            Err(e) => return Err(e.into()),
        };
        self.open_group = !batch.commit;
        if batch.commit {
            self.diagnose = false;
        }
        self.record(batch, &report);
        Ok(())
    }

    /// Commits a commit group left open by its parts.
    async fn close_group(&mut self) -> Result<(), EngineError> {
        if self.open_group {
            let mut batch = self.batch(Vec::new(), None, true);
            self.apply_batch(&mut batch).await?;
        }
        Ok(())
    }

    /// Counts an applied batch in the metrics.
    fn record(&self, batch: &ApplyBatch, report: &ApplyReport) {
        let changes: u64 = batch.txns.iter().map(|t| t.changes.len() as u64).sum();
        let snap = batch.snapshot.as_ref().map(|s| s.rows.len() as u64).unwrap_or(0);
        let position = batch.checkpoint.position.clone().unwrap_or_else(|| self.position());
        self.metrics.applied(changes, batch.txns.len() as u64, snap, report.conflicts, &position);
    }

    /// A stream read after `after`.
    fn request(&self, after: Position, until: Option<Position>) -> ReadRequest {
        ReadRequest {
            after,
            until,
            max_changes: self.spec.tuning.batch_changes,
            exclude_origin: self.spec.target.site.clone(),
            keep_transactions: self.spec.keep_transactions,
            before_images: self.spec.conflicts.is_some(),
        }
    }
}

/// The source, lent to the stream's reader task while it reads the next batch.
/// A snapshot chunk being read ahead, with the source it borrowed.
type Prefetch<S> = tokio::task::JoinHandle<(S, Result<Chunk, ConnectorError>)>;

struct Slot<S>(Option<S>);

impl<S: Source> Slot<S> {
    fn lent() -> ConnectorError {
        ConnectorError::Setup {
            endpoint: "source".into(),
            problem: "the source was used while its reader task had it".into(),
            fix: "report this as a bug with the log".into(),
        }
    }

    /// Takes the source out for a reader task.
    fn take_for_read(&mut self) -> Result<S, ConnectorError> {
        self.0.take().ok_or_else(Self::lent)
    }

    /// Returns the source from its reader task.
    fn put_back(&mut self, source: S) {
        self.0 = Some(source);
    }

    fn get(&mut self) -> Result<&mut S, ConnectorError> {
        self.0.as_mut().ok_or_else(Self::lent)
    }
}

impl<S: Source> Source for Slot<S> {
    async fn tables(&mut self, patterns: &[String]) -> Result<Vec<Arc<TableSchema>>, ConnectorError> {
        self.get()?.tables(patterns).await
    }

    async fn install_capture(&mut self, tables: &[Arc<TableSchema>]) -> Result<(), ConnectorError> {
        self.get()?.install_capture(tables).await
    }

    async fn head(&mut self) -> Result<Position, ConnectorError> {
        self.get()?.head().await
    }

    async fn read_chunk(
        &mut self,
        table: &TableSchema,
        after: Option<&Key>,
        limit: usize,
        versions: bool,
    ) -> Result<Chunk, ConnectorError> {
        self.get()?.read_chunk(table, after, limit, versions).await
    }

    async fn read_changes(&mut self, req: &ReadRequest) -> Result<ReadBatch, ConnectorError> {
        self.get()?.read_changes(req).await
    }

    async fn heartbeat(&mut self) -> Result<(), ConnectorError> {
        self.get()?.heartbeat().await
    }

    async fn consumed(&mut self, consumer: &str, position: &Position) -> Result<(), ConnectorError> {
        self.get()?.consumed(consumer, position).await
    }
}

/// A snapshot chunk's watermark window (DBLog): between the low and the high watermark,
/// changes to keys in `(after, upto]` win over the chunk's copy of those rows.
struct Window {
    table: String,
    after: Option<Key>,
    upto: Option<Key>,
    low: String,
    high: String,
    open: bool,
    seen: HashSet<String>,
}

impl Window {
    /// Notes the watermarks in a batch (in order); true when the high one is there.
    /// Changes after the low watermark within this batch are claimed by `claims`, which
    /// runs afterwards in the same order, so the window opens at the batch start here:
    /// a batch ends right after a signal transaction, so a low watermark is always the
    /// last transaction of its batch and the changes that follow come in later batches.
    fn observe(&mut self, txns: &[Txn]) -> bool {
        let mut reached = false;
        for c in txns.iter().flat_map(|t| &t.changes) {
            if c.table.name.name != SIGNAL_TABLE {
                continue;
            }
            if let Some(Some(Value::Text(mark))) = c.after.as_ref().map(|r| r.get(1)) {
                if *mark == self.low {
                    self.open = true;
                } else if *mark == self.high {
                    reached = true;
                }
            }
        }
        reached
    }

    /// Whether the change touches a key of the chunk inside an open window (and records it).
    fn claims(&mut self, c: &Change) -> bool {
        if !self.open || c.table.name.to_string() != self.table {
            return false;
        }
        let in_range = |k: &Key| {
            self.after.as_ref().is_none_or(|a| cmp_keys(k, a) == Ordering::Greater)
                && self.upto.as_ref().is_none_or(|u| cmp_keys(k, u) != Ordering::Greater)
        };
        let (old, new) = (c.key.clone(), c.new_key());
        let hit = in_range(&old) || in_range(&new);
        if hit {
            self.seen.insert(format!("{old:?}"));
            self.seen.insert(format!("{new:?}"));
        }
        hit
    }
}

/// Orders tables so that a table comes after the tables its foreign keys reference
/// (among these; self-references and cycles keep the given order).
fn parents_first(tables: Vec<Arc<TableSchema>>) -> Vec<Arc<TableSchema>> {
    let mut left = tables;
    let mut out: Vec<Arc<TableSchema>> = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let waits = |t: &TableSchema, left: &[Arc<TableSchema>]| {
            t.foreign_keys.iter().any(|fk| fk.parent != t.name && left.iter().any(|o| o.name == fk.parent))
        };
        let ready = left.iter().position(|t| !waits(t, &left)).unwrap_or(0);
        out.push(left.remove(ready));
    }
    out
}

fn holder(node: &str) -> LeaseHolder {
    LeaseHolder {
        node: node.to_string(),
        host: crate::connector::sqlite::state::host_name(),
        pid: std::process::id(),
        expires_us: 0,
    }
}

/// Keeps a rows-per-second ceiling over the whole run.
struct Throttle {
    rate: u64,
    start: Instant,
    rows: u64,
}

impl Throttle {
    fn new(rate: u64) -> Self {
        Throttle { rate, start: Instant::now(), rows: 0 }
    }

    async fn wait(&mut self, rows: u64, shutdown: &CancellationToken) {
        if self.rate == 0 {
            return;
        }
        self.rows += rows;
        let due = Duration::from_secs_f64(self.rows as f64 / self.rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(due - elapsed) => {}
            }
        }
    }
}

impl EngineError {
    /// Endpoint failures are retried; setup problems, refused changes and lease conflicts stop.
    pub fn retryable(&self) -> bool {
        match self {
            EngineError::Connector(e) => e.kind() == ErrorKind::Runtime && !matches!(e, ConnectorError::Apply(_)),
            EngineError::Reload { .. } => true,
            _ => false,
        }
    }
}

/// Installs capture on the source, creates ferry's tables on the target and any of the
/// direction's tables missing there, before any direction starts: so the reverse
/// direction of a two-way task finds its tables, and no row is applied before the
/// target's own capture records it.
pub async fn prepare_target(spec: &DirectionSpec) -> Result<(), EngineError> {
    prepare_target_at(spec, None).await
}

/// [`prepare_target`], and with `start` also records the direction's checkpoint at that
/// source position with every table copied: the direction then streams from there with
/// no snapshot (a cutover's switch and rollback start a direction this way).
pub async fn prepare_target_at(spec: &DirectionSpec, start: Option<&Position>) -> Result<(), EngineError> {
    let stream = stream_name(spec);
    match (&spec.source.url, &spec.target.url) {
        (EndpointUrl::Sqlite(src), EndpointUrl::Sqlite(dst)) => {
            prepare_pair(spec, sqlite_source(spec, src).await?, sqlite_sink(spec, dst).await?, start).await
        }
        (EndpointUrl::Mysql(src), EndpointUrl::Mysql(dst)) => {
            prepare_pair(spec, mysql_source(spec, src, &stream).await?, mysql_sink(spec, dst).await?, start).await
        }
        (EndpointUrl::Sqlite(src), EndpointUrl::Mysql(dst)) => {
            prepare_pair(spec, sqlite_source(spec, src).await?, mysql_sink(spec, dst).await?, start).await
        }
        (EndpointUrl::Mysql(src), EndpointUrl::Sqlite(dst)) => {
            prepare_pair(spec, mysql_source(spec, src, &stream).await?, sqlite_sink(spec, dst).await?, start).await
        }
        _ => Err(unsupported_pair(spec)),
    }
}

async fn prepare_pair<S: Source, K: Sink>(
    spec: &DirectionSpec,
    mut source: S,
    mut sink: K,
    start: Option<&Position>,
) -> Result<(), EngineError> {
    let tables = source.tables(&spec.tables).await?;
    source.install_capture(&tables).await?;
    sink.prepare().await?;
    sink.ensure_tables(&target_schemas(spec, &Renames::new(&tables, &spec.maps))).await?;
    if let Some(position) = start {
        let checkpoint = Checkpoint {
            position: Some(position.clone()),
            tables: tables.iter().map(|t| (t.name.to_string(), TableProgress::Done)).collect(),
        };
        let batch = ApplyBatch {
            txns: Vec::new(),
            snapshot: None,
            checkpoint,
            conflicts: None,
            one_by_one: false,
            commit: true,
        };
        sink.apply(&spec.id, &batch).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ForeignKey, TableName};

    fn table(name: &str, parents: &[&str]) -> Arc<TableSchema> {
        let fk = |p: &&str| ForeignKey {
            columns: vec![0],
            parent: TableName::bare(*p),
            parent_columns: vec!["id".into()],
            cascades: false,
        };
        Arc::new(TableSchema {
            name: TableName::bare(name),
            columns: Vec::new(),
            primary_key: vec![0],
            unique_keys: Vec::new(),
            foreign_keys: parents.iter().map(fk).collect(),
            create_sql: None,
        })
    }

    #[test]
    fn snapshots_parents_before_children() {
        let tables =
            vec![table("a_child", &["c_parent"]), table("b_note", &["c_parent", "b_note"]), table("c_parent", &[])];
        let order: Vec<String> = parents_first(tables).iter().map(|t| t.name.name.clone()).collect();
        assert_eq!(order, ["c_parent", "a_child", "b_note"]);
    }
}
