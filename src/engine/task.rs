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
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::EngineError;
use super::clock::{self, SkewLevel, TaskClock};
use super::copy_progress::CopyState;
use super::lease::{self, LEASE_TTL, Tenure};
use super::map::Renames;
use super::metrics::{DirectionMetrics, DirectionState, FailedChange};
use super::relay::{PublishRun, ReaderParts, RelayRole, RelayRun, Silent};
use super::throttle::Throttle;
use crate::config::{Endpoint, TableMap, Transport};
use crate::connector::dynamic;
use crate::connector::registry::{self, SinkOptions, SourceOptions};
use crate::connector::{
    ApplyBatch, ApplyReport, Checkpoint, Chunk, ConflictRules, ConnectorError, DirectionId, ErrorKind, ReadBatch,
    ReadRequest, Sink, SnapshotRows, Source, TableProgress,
};
use crate::connector::{HEARTBEAT_TABLE, SIGNAL_TABLE, typemap};
use crate::model::{
    Change, HashKey, Key, Op, Position, SchemaChangeKind, SiteId, TableSchema, Txn, Value, cmp_keys, now_micros,
};

/// Knobs with defaults that suit both the demo and production.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Changes read per batch (whole commit groups may exceed it); a store that reads
    /// best in bigger batches raises it ([`Source::batch_changes`]).
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
    /// A message-store target's topic template.
    pub topic: String,
    /// A search-store target's index template.
    pub index: String,
    /// Alarm over this much change history kept by the source for the direction (bytes).
    pub retention_alarm: u64,
    /// Renames.
    pub maps: Vec<TableMap>,
    /// `[node] id`, for the lease.
    pub node_id: String,
    /// In a cluster, the revision of this node's cluster lease on the direction: the
    /// least fencing token its tenure of the target's lease takes (0 outside a cluster).
    pub lease_floor: i64,
    /// Source transactions an operator chose to skip (`ferry skip`).
    pub skips: Vec<Position>,
    /// Batch sizes and intervals.
    pub tuning: Tuning,
    /// The task's clocks, shared by its directions (skew alarm and pause).
    pub clock: Arc<TaskClock>,
    /// Catch up to the source's head, then stop (`ferry run --once`).
    pub once: bool,
    /// Blob tasks: how often a full rescan runs between change hints.
    pub rescan: Duration,
    /// Blob tasks: bytes per second at most (0 = unthrottled).
    pub max_bytes_per_sec: u64,
    /// Blob tasks: while the source is frozen for a cutover, a drain pass waits until
    /// no change was carried for this long (`[task.cutover] quiet_seconds`).
    pub quiet_seconds: u64,
    /// `[[task]] transport = "nats"`: the stream's limits (`None`: direct).
    pub transport: Option<Transport>,
    /// In a cluster with a transport, which role this run is and its relay.
    pub relay: Option<RelayRun>,
}

impl DirectionSpec {
    /// The site a node should be at to run this: the target's, or the source's for the
    /// publishing role of a relayed direction.
    pub fn home_site(&self) -> &SiteId {
        match &self.relay {
            Some(r) if r.role == RelayRole::Publish => &self.source.site,
            _ => &self.target.site,
        }
    }

    /// Whether this run is the publishing role of a relayed direction (it never
    /// touches the target).
    pub fn publishes(&self) -> bool {
        self.relay.as_ref().is_some_and(|r| r.role == RelayRole::Publish)
    }
}

/// Runs a direction until `shutdown`, retrying endpoint failures with backoff.
pub async fn run_direction(
    spec: DirectionSpec,
    metrics: Arc<DirectionMetrics>,
    shutdown: CancellationToken,
) -> Result<(), EngineError> {
    let mut backoff = Backoff::default();
    let mut diagnose = false;
    // An earlier attempt held the lease: finding it held by another process now means
    // this process lost it (it was paused or cut off too long), not that it never ran.
    let held = AtomicBool::new(false);
    let progressed = AtomicBool::new(false);
    loop {
        let attempt = Attempt { diagnose, held: &held, progressed: &progressed, commits: None };
        let result = run_once(attempt, &spec, &metrics, &shutdown).await;
        // Changes committed since the last failure: that fault has passed, so a new one
        // is retried from the shortest wait again.
        if progressed.swap(false, AtomicOrdering::Relaxed) {
            backoff.reset();
        }
        diagnose = false;
        match result {
            Ok(()) => {
                metrics.set_state(DirectionState::Stopped);
                return Ok(());
            }
            Err(e @ EngineError::Reload { .. }) if !shutdown.is_cancelled() => {
                info!(direction = %spec.id, "{e}");
            }
            Err(e @ EngineError::Resync { .. }) if !shutdown.is_cancelled() => {
                warn!(direction = %spec.id, "{e}");
            }
            Err(e)
                if (e.retryable() || (held.load(AtomicOrdering::Relaxed) && e.unreachable()))
                    && !shutdown.is_cancelled() =>
            {
                // A refusal of data not pinned to its change yet: the next attempt goes
                // change by change to name it. Anything else is retried as it was.
                diagnose = e.refused();
                let wait = backoff.next_wait();
                warn!(direction = %spec.id, error = %e, retry_in_ms = wait.as_millis() as u64, "endpoint failed; retrying");
                metrics.error(e.to_string());
                metrics.set_state(DirectionState::Retrying);
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => {
                        metrics.set_state(DirectionState::Stopped);
                        return Ok(());
                    }
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Err(e) => {
                metrics.error(e.to_string());
                if let EngineError::Connector(ConnectorError::Apply(f)) = &e {
                    metrics.set_failed(Some(FailedChange {
                        position: f.position.to_string(),
                        table: f.table.to_string(),
                        key: f.key.clone(),
                        message: f.message.clone(),
                        skippable: !f.in_parts,
                    }));
                }
                metrics.set_state(DirectionState::Failed);
                return Err(e);
            }
        }
    }
}

/// Waits between attempts: 0.5 s doubling to 30 s, back to 0.5 s once changes commit.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Backoff::FIRST }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MOST: Duration = Duration::from_secs(30);

    /// The wait before the next attempt; the one after is twice as long, up to the most.
    fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MOST);
        wait
    }

    /// After a success: the next failure waits the shortest again.
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

async fn run_once(
    attempt: Attempt<'_>,
    spec: &DirectionSpec,
    metrics: &Arc<DirectionMetrics>,
    shutdown: &CancellationToken,
) -> Result<(), EngineError> {
    if registry::is_blob(&spec.source) {
        if spec.relay.is_some() {
            return Err(ConnectorError::Setup {
                endpoint: spec.source.name.clone(),
                problem: format!("task {}: files and objects cannot travel through transport = \"nats\"", spec.id.task),
                fix: "remove transport from the task: blob tasks copy directly".into(),
            }
            .into());
        }
        return super::blob::run(spec, metrics, shutdown, attempt.held, attempt.progressed).await;
    }
    registry::check_pair(&spec.source, &spec.target)?;
    let stream = stream_name(spec);
    let Some(relay) = &spec.relay else {
        // Three sessions on two servers: opened at once, not one after another.
        let (heartbeat, source, sink) = tokio::try_join!(
            open_source(spec, format!("{stream}/heartbeat")),
            open_source(spec, stream),
            open_sink(spec)
        )?;
        return run_pair(attempt, spec, metrics, shutdown, source, heartbeat, sink).await;
    };
    match relay.role {
        RelayRole::Publish => {
            let heartbeat = open_source(spec, format!("{stream}/heartbeat")).await?;
            let source = open_source(spec, stream).await?;
            relay.relay.publish(PublishRun { spec, source, heartbeat, metrics, shutdown }).await
        }
        RelayRole::Apply => {
            let source = open_source(spec, stream).await?;
            let (tx, commits) = watch::channel(None);
            let parts = ReaderParts { spec, source, commits, shutdown: shutdown.clone() };
            let source = relay.relay.reader(parts).await?;
            let heartbeat: Box<dyn dynamic::DynSource> = Box::new(Silent { endpoint: spec.source.name.clone() });
            let sink = open_sink(spec).await?;
            let attempt = Attempt { commits: Some(tx), ..attempt };
            run_pair(attempt, spec, metrics, shutdown, source, heartbeat, sink).await
        }
    }
}

/// What one attempt at running a direction knows of the attempts before it, and tells
/// the next.
struct Attempt<'h> {
    /// Apply change by change until the next commit (an earlier attempt's batch was
    /// refused, and the change must be named).
    diagnose: bool,
    /// Set once this process holds the direction's lease.
    held: &'h AtomicBool,
    /// Set when a batch with changes commits.
    progressed: &'h AtomicBool,
    /// Told each position the target commits (a relay acknowledges up to it).
    commits: Option<watch::Sender<Option<Position>>>,
}

/// A reader of the direction's source; `stream` names its replica stream and signal row.
async fn open_source(spec: &DirectionSpec, stream: String) -> Result<Box<dyn dynamic::DynSource>, ConnectorError> {
    // The heartbeat writer's stream (`…/heartbeat`) never had history to carry over.
    let former_stream = (stream == stream_name(spec)).then(|| former_stream_of(&spec.node_id, &spec.id));
    let opts = SourceOptions {
        stream,
        former_stream,
        takeover: spec.lease_floor > 0,
        versions: spec.conflicts.is_some(),
        native_chunks: registry::same_store(&spec.source, &spec.target),
    };
    registry::open_source(&spec.source, &opts).await
}

/// The writer of the direction's target.
async fn open_sink(spec: &DirectionSpec) -> Result<Box<dyn dynamic::DynSink>, ConnectorError> {
    let opts = SinkOptions {
        workers: spec.workers as usize,
        two_way_from: spec.conflicts.as_ref().map(|_| spec.source.site.clone()),
        topic: spec.topic.clone(),
        index: spec.index.clone(),
    };
    registry::open_sink(&spec.target, &opts).await
}

/// The target's schemas of the direction's tables: renamed, and typed for the target's
/// store (through the canonical types) when it differs from the source's.
fn target_schemas(spec: &DirectionSpec, renames: &Renames) -> Result<Vec<Arc<TableSchema>>, ConnectorError> {
    let all = renames.all();
    if registry::same_store(&spec.source, &spec.target) {
        return Ok(all);
    }
    let (from, to) = (registry::store(&spec.source)?.types(), registry::store(&spec.target)?.types());
    Ok(all.iter().map(|t| Arc::new(typemap::for_target(t, from, to, false))).collect())
}

async fn run_pair<S: Source + 'static, H: Source + 'static, K: Sink>(
    attempt: Attempt<'_>,
    spec: &DirectionSpec,
    metrics: &Arc<DirectionMetrics>,
    shutdown: &CancellationToken,
    source: S,
    heartbeat: H,
    sink: K,
) -> Result<(), EngineError> {
    let batch_changes = source.batch_changes().unwrap_or(0).max(spec.tuning.batch_changes);
    let runner = Runner {
        spec,
        batch_changes,
        metrics,
        shutdown,
        source: Slot(Some(source)),
        sink,
        renames: Renames::default(),
        reload: None,
        checkpoint: Checkpoint::default(),
        open_group: false,
        diagnose: attempt.diagnose,
        progressed: attempt.progressed,
        group_rows: 0,
        committed: None,
        durable: None,
        unflushed: false,
        flushed_at: Instant::now(),
        tenure: Tenure::new(&spec.node_id, spec.lease_floor, attempt.held),
        commits: attempt.commits,
    };
    runner.run(heartbeat).await
}

/// A table's first chunk in a run holds this part of `chunk_rows` (see `sync`).
const FIRST_CHUNK_PART: usize = 8;

/// The longest a stream backlog's commits go without one that waits for its flush.
const FLUSH_AT_LEAST: Duration = Duration::from_secs(1);

/// Names a direction's replica stream and snapshot signal row.
fn stream_name(spec: &DirectionSpec) -> String {
    stream_of(&spec.id)
}

/// The name of the replica stream direction `id` is read with (what a source keeps
/// history for: [`registry::source_retention`]). It names no node: every node of a
/// cluster that may own the direction reads the same stream, so a new owner goes on
/// from the target's checkpoint where the old one stopped.
pub fn stream_of(id: &DirectionId) -> String {
    format!("{}/{}", id.task, id.direction())
}

/// The name the stream of direction `id` had on node `node_id` before streams were
/// shared by a cluster's nodes (`{node}/{task}/{direction}`): a source carries over
/// what it kept under it ([`SourceOptions::former_stream`]).
pub fn former_stream_of(node_id: &str, id: &DirectionId) -> String {
    format!("{node_id}/{}/{}", id.task, id.direction())
}

struct Runner<'a, S: Source + 'static, K: Sink> {
    spec: &'a DirectionSpec,
    /// Changes per stream read: the task's, or more where the source reads best so.
    batch_changes: usize,
    /// Set when a batch with changes commits (across attempts: resets the backoff).
    progressed: &'a AtomicBool,
    /// Rows applied in the commit group being applied in parts.
    group_rows: u64,
    /// The last position committed on the target (the checkpoint's).
    committed: Option<Position>,
    /// The last position a commit flushed to the target's disk: the one the source and
    /// a relay are told (see [`ApplyBatch::flush`]).
    durable: Option<Position>,
    /// A commit after `durable` did not wait for its flush.
    unflushed: bool,
    /// When the last flushed commit was.
    flushed_at: Instant,
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
    /// This process as the lease holder, with the fencing token of its tenure once taken:
    /// every batch is applied under it.
    tenure: Tenure<'a>,
    /// Told each position the target commits (a relay acknowledges up to it).
    commits: Option<watch::Sender<Option<Position>>>,
}

impl<S: Source + 'static, K: Sink> Runner<'_, S, K> {
    /// Runs the direction, then ends its sessions and waits until they are closed (a
    /// store's files are let go of when the engine is joined).
    async fn run<H: Source + 'static>(mut self, heartbeat: H) -> Result<(), EngineError> {
        use futures_util::future::OptionFuture;
        let mut heartbeat = Some(heartbeat);
        let result = self.run_held(&mut heartbeat).await;
        // A source lent to a reader task that did not come back is dropped with it.
        let source = self.source.0.take();
        tokio::join!(
            OptionFuture::from(heartbeat.map(Source::close)),
            OptionFuture::from(source.map(Source::close)),
            self.sink.close()
        );
        result
    }

    async fn run_held<H: Source + 'static>(&mut self, heartbeat_slot: &mut Option<H>) -> Result<(), EngineError> {
        let id = self.spec.id.clone();
        self.metrics.set_state(DirectionState::Starting);
        self.sink.prepare().await?;
        if !self.take_lease().await? {
            return Ok(());
        }
        let result = async {
            // Parents before their children: a copied child row finds its parent there.
            let sources = parents_first(self.source.tables(&self.spec.tables).await?);
            self.renames = Renames::new(&sources, &self.spec.maps);
            self.sink.ensure_tables(&target_schemas(self.spec, &self.renames)?).await?;
            self.source.install_capture(&sources).await?;

            // Heartbeats start once capture is installed; the task owns and joins it, and
            // gets its source back.
            let Some(mut heartbeat) = heartbeat_slot.take() else { return Ok(()) };
            let hb_token = self.shutdown.child_token();
            let hb_every = self.spec.tuning.heartbeat;
            let hb_metrics = self.metrics.clone();
            let hb_stop = hb_token.clone();
            let hb_clock = self.spec.clock.clone();
            let hb = tokio::spawn(async move {
                let mut tick = tokio::time::interval(hb_every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut measured: Option<Instant> = None;
                let mut unsupported = false;
                loop {
                    tokio::select! {
                        biased;
                        _ = hb_stop.cancelled() => break,
                        _ = tick.tick() => {
                            if let Err(e) = heartbeat.heartbeat().await {
                                warn!(direction = %hb_metrics.id, error = %e, "heartbeat failed");
                            }
                            // The source's clock, once a second, on the heartbeat's session.
                            if !unsupported && measured.is_none_or(|m| m.elapsed() >= clock::MEASURE_EVERY) {
                                measured = Some(Instant::now());
                                unsupported = !measure_clock(&mut heartbeat, &hb_clock, &hb_metrics).await;
                            }
                        }
                    }
                }
                heartbeat
            });
            let result = self.sync(&sources).await;
            hb_token.cancel();
            if let Ok(h) = hb.await {
                *heartbeat_slot = Some(h);
            }
            result
        }
        .await;
        if std::mem::take(&mut self.open_group) {
            // Nothing of a source transaction may land without all of it.
            info!(direction = %id, position = %self.committed(), "stopping inside a source transaction applied in parts: its parts are rolled back, and it is applied again, whole, at the next start");
            if let Err(e) = self.sink.rollback().await {
                warn!(direction = %id, error = %e, "could not roll back the open commit group; the server does when the session ends");
            }
        }
        // While an endpoint failure is retried this process still owns the direction.
        let retrying = matches!(&result, Err(e) if e.retryable() && !self.shutdown.is_cancelled());
        let lost = matches!(&result, Err(EngineError::LeaseLost { .. }))
            || matches!(&result, Err(EngineError::Connector(ConnectorError::Fenced { .. })));
        if !retrying
            && !lost
            && let Err(e) = self.sink.release(&id, &self.tenure.me).await
        {
            warn!(direction = %id, error = %e, "could not release the lease; it expires by itself");
        }
        result
    }

    /// Takes the lease (a new tenure, with its fencing token); `false` when shut down
    /// while waiting.
    async fn take_lease(&mut self) -> Result<bool, EngineError> {
        self.tenure.begin();
        loop {
            let outcome = self.sink.lease(&self.spec.id, &self.tenure.me, LEASE_TTL).await?;
            if self.tenure.taken(&self.spec.id, outcome, self.metrics)? {
                return Ok(true);
            }
            if !lease::wait(self.shutdown).await {
                return Ok(false);
            }
        }
    }

    /// Renews the lease when it is due (every few seconds): called before every batch
    /// and while waiting, so no phase (snapshot, catch-up, stream) lets it run out.
    async fn keep_lease(&mut self) -> Result<(), EngineError> {
        if !self.tenure.due() {
            return Ok(());
        }
        let outcome = self.sink.lease(&self.spec.id, &self.tenure.me, LEASE_TTL).await?;
        self.tenure.renewed(&self.spec.id, outcome)
    }

    async fn sync(&mut self, sources: &[Arc<TableSchema>]) -> Result<(), EngineError> {
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
        self.plan_copy(sources).await;
        self.apply(Vec::new(), None).await?;
        info!(direction = %id, position = %self.position(), "started");

        let throttle = Throttle::new(self.spec.max_rows_per_sec);

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
                if let Err(e) = self.keep_lease().await {
                    self.join_prefetch(prefetched.take()).await?;
                    return Err(e);
                }
                match self.clock_gate().await {
                    Ok(true) => {}
                    Ok(false) => {
                        self.join_prefetch(prefetched.take()).await?;
                        return Ok(());
                    }
                    Err(e) => {
                        self.join_prefetch(prefetched.take()).await?;
                        return Err(e);
                    }
                }
                // A table's first read (nothing read ahead) asks for fewer rows: the
                // target starts on them while the next, full chunk is read, instead of
                // idling through a whole chunk's read.
                let (mut chunk, asked) = match self.join_prefetch(prefetched.take()).await? {
                    Some(c) => (c, limit),
                    None => {
                        let asked = (limit / FIRST_CHUNK_PART).max(1);
                        (self.source.read_chunk(t, after.as_ref(), asked, versions).await?, asked)
                    }
                };
                // Progress follows the rows as read, before the window drops any of them.
                let (count, last) = match &chunk.native {
                    Some(n) => (n.count, n.last.clone()),
                    None => (chunk.rows.len(), chunk.rows.last().map(|r| t.key_of(r))),
                };
                let upto = last.filter(|_| count >= asked);
                let progress = match &upto {
                    Some(last) => TableProgress::Copying { after: last.clone() },
                    None => TableProgress::Done,
                };
                match (chunk.position.clone(), chunk.marks.clone()) {
                    (Some(p), _) => self.catch_up(&p).await?,
                    (None, Some(_)) if chunk.native.is_some() => {
                        return Err(EngineError::Connector(ConnectorError::Setup {
                            endpoint: self.spec.source.name.clone(),
                            problem: "the source gave a snapshot chunk in its own format with watermarks".into(),
                            fix: "report this as a bug".into(),
                        }));
                    }
                    (None, Some((low, high))) => {
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
                            let keep: Vec<bool> =
                                chunk.rows.iter().map(|r| !window.seen.contains(&HashKey(t.key_of(r)))).collect();
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
                let n = match &chunk.native {
                    Some(native) => native.count as u64,
                    None => chunk.rows.len() as u64,
                };
                if let TableProgress::Copying { after: next } = &progress {
                    let mut source = self.source.take_for_read()?;
                    let (table, next) = (t.clone(), next.clone());
                    prefetched = Some(tokio::spawn(async move {
                        let r = source.read_chunk(&table, Some(&next), limit, versions).await;
                        (source, r)
                    }));
                }
                let last = progress == TableProgress::Done;
                self.checkpoint.tables.insert(name.clone(), progress);
                let rows = SnapshotRows {
                    table: self.renames.target(t),
                    rows: chunk.rows,
                    versions: chunk.versions,
                    native: chunk.native,
                    last,
                };
                if let Err(e) = self.apply(Vec::new(), Some(rows)).await {
                    self.join_prefetch(prefetched.take()).await?;
                    return Err(e);
                }
                self.metrics.copy.copied(&name, n, last, now_micros());
                throttle.wait(n, self.shutdown).await;
            }
        }

        // Stream.
        self.metrics.set_state(DirectionState::Streaming);
        let mut last_head = Instant::now() - Duration::from_secs(10);
        let mut last_consumed = Instant::now();
        let mut last_retention = Instant::now() - Duration::from_secs(10);
        // Reading batch N+1 overlaps applying batch N: the source and the target work on
        // their own connections (threads), so a stream is limited by the slower of the two.
        let mut pending: Option<ReadBatch> = None;
        // The batch applied last: freed by the next read's task, on the other core, not
        // between two applies (freeing a batch's rows took about as long as collapsing them).
        let mut spent: Option<ApplyBatch> = None;
        // `--once`: the head to catch up to before stopping.
        let once_head = if self.spec.once { Some(self.source.head().await?) } else { None };
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            self.keep_lease().await?;
            if !self.clock_gate().await? {
                break;
            }
            if last_head.elapsed() >= Duration::from_secs(1) {
                let head = self.source.head().await?;
                self.metrics.set_behind(self.position().changes_until(&head));
                last_head = Instant::now();
            }
            if last_retention.elapsed() >= Duration::from_secs(5) {
                self.watch_retention().await?;
                last_retention = Instant::now();
            }
            if last_consumed.elapsed() >= Duration::from_secs(5) {
                // Only what a flushed commit covers: a target server's crash could take
                // back the rest, and the source must still have it then.
                if let Some(pos) = self.durable.clone() {
                    self.source.consumed(&id.to_string(), &pos).await?;
                }
                last_consumed = Instant::now();
            }
            let batch = match pending.take() {
                Some(b) => b,
                None => match self.source.read_changes(&self.request(self.position(), None)).await {
                    Err(ConnectorError::Resync { reason, .. }) => return self.resync(reason).await,
                    r => r?,
                },
            };
            if batch.position == self.position() {
                // Idle: the last batch is freed here rather than held until changes come.
                spent = None;
                self.close_group().await?;
                // Caught up: what a backlog committed without its flush is flushed now.
                self.flush_commits().await?;
                if let Some(head) = &once_head
                    && self.position().stream_cmp(head) != Some(Ordering::Less)
                {
                    info!(direction = %id, position = %self.position(), "caught up with the source's head (--once)");
                    break;
                }
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
            // A full batch means a backlog: more follow at once, and the flush can wait
            // for the one that catches up (or for a second to pass). Two-way batches
            // always flush (the other direction reads this target).
            apply.flush = self.spec.conflicts.is_some()
                || rows < self.batch_changes
                || self.flushed_at.elapsed() >= FLUSH_AT_LEAST;
            // `--once`: the batch that reaches the head is the last; a read after it
            // would only wait for changes that are not coming.
            let last = !batch.continues
                && once_head.as_ref().is_some_and(|h| batch.position.stream_cmp(h) != Some(Ordering::Less));
            // The next read runs as its own task, so decoding it overlaps applying this
            // batch on the other core; the source comes back with the result.
            let reader = match last {
                true => None,
                false => {
                    let next = self.request(batch.position.clone(), None);
                    let mut source = self.source.take_for_read()?;
                    let spent = spent.take();
                    Some(tokio::spawn(async move {
                        // Freed first: at most two batches are held at once, as before.
                        drop(spent);
                        let r = source.read_changes(&next).await;
                        (source, r)
                    }))
                }
            };
            let applied = self.apply_batch(&mut apply).await;
            let read = self.join_reader(reader, "stream").await?;
            spent = Some(apply);
            applied?;
            self.checkpoint.position = Some(batch.position);
            self.reload_if_needed()?;
            self.metrics.clear_error();
            let Some(read) = read else {
                info!(direction = %id, position = %self.position(), "caught up with the source's head (--once)");
                break;
            };
            pending = Some(match read {
                Err(ConnectorError::Resync { reason, .. }) => return self.resync(reason).await,
                r => r?,
            });
            throttle.wait(rows as u64, self.shutdown).await;
        }
        // Stopping inside a source transaction applied in parts: `run` rolls its parts
        // back, and it is applied again, whole, at the next start.
        self.flush_commits().await?;
        let pos = self.committed();
        if let Some(durable) = self.durable.clone() {
            self.source.consumed(&id.to_string(), &durable).await?;
        }
        info!(direction = %id, position = %pos, "stopped");
        Ok(())
    }

    /// Declares the snapshot's tables to the metrics with the source's estimate of those
    /// still to copy (progress only: a failing estimate is logged and left out).
    async fn plan_copy(&mut self, sources: &[Arc<TableSchema>]) {
        if self.checkpoint.tables.values().all(|p| *p == TableProgress::Done) {
            return;
        }
        for t in sources {
            let name = t.name.to_string();
            let state = match self.checkpoint.tables.get(&name) {
                Some(TableProgress::Pending) => CopyState::Pending,
                Some(TableProgress::Copying { .. }) => CopyState::Copying,
                _ => CopyState::Done,
            };
            let estimate = match state {
                CopyState::Done => None,
                _ => self.source.estimate_rows(t).await.unwrap_or_else(|e| {
                    warn!(direction = %self.spec.id, table = %name, error = %e, "cannot estimate the rows to copy");
                    None
                }),
            };
            self.metrics.copy.plan(&name, state, estimate);
        }
    }

    /// The source cannot continue its stream from the checkpoint but can copy
    /// everything anew: every table is marked to be copied again in the checkpoint (so a
    /// restart copies too), and the direction starts over.
    async fn resync(&mut self, reason: String) -> Result<(), EngineError> {
        for progress in self.checkpoint.tables.values_mut() {
            *progress = TableProgress::Pending;
        }
        self.apply(Vec::new(), None).await?;
        Err(EngineError::Resync { dir: self.spec.id.clone(), reason })
    }

    /// Two-way: while the task's clocks are further apart than `clock_skew_pause`,
    /// last-writer-wins would pick wrong winners, so nothing is applied: waits (keeping
    /// the lease; the heartbeat writer goes on measuring) until the skew is back within
    /// the bound, saying so both ways. Never inside a commit group applied in parts.
    /// `false` when shut down while waiting.
    async fn clock_gate(&mut self) -> Result<bool, EngineError> {
        if self.spec.conflicts.is_none() || self.open_group {
            return Ok(true);
        }
        let clock = self.spec.clock.clone();
        let (from, to) = (self.spec.id.from.clone(), self.spec.id.to.clone());
        let view = clock.view(&from, &to);
        if view.level != SkewLevel::Paused {
            return Ok(true);
        }
        let before = self.metrics.state();
        self.metrics.set_state(DirectionState::ClockSkew);
        let size = view.skew_us.map(|s| clock::seconds(s.unsigned_abs())).unwrap_or_default();
        let bound = clock.bounds().pause.map(|p| clock::seconds(p.as_micros() as u64)).unwrap_or_default();
        warn!(
            direction = %self.spec.id,
            "applying paused: the clocks of {from} and {to} are {size} apart, above clock_skew_pause {bound}; last-writer-wins would pick wrong winners (fix: synchronise the servers' clocks)"
        );
        let resumed = loop {
            let view = clock.view(&from, &to);
            if view.level != SkewLevel::Paused {
                break view;
            }
            if let Err(e) = self.keep_lease().await {
                self.metrics.set_state(before);
                return Err(e);
            }
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    self.metrics.set_state(before);
                    return Ok(false);
                }
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        };
        let now = match resumed.skew_us {
            Some(s) => format!("{} apart", clock::seconds(s.unsigned_abs())),
            None => "not measured (a side's clock is not being read)".to_string(),
        };
        info!(direction = %self.spec.id, "applying resumed: the clocks of {from} and {to} are {now}, within clock_skew_pause");
        self.metrics.set_state(before);
        Ok(true)
    }

    /// Reads how much history the source keeps for this direction into the metrics, and
    /// warns once when it goes over the task's alarm (or the source says it is at risk).
    /// History the source already lost stops the direction with how to start over.
    async fn watch_retention(&mut self) -> Result<(), EngineError> {
        let Some(r) = self.source.retention().await? else { return Ok(()) };
        let alarm = r.bytes > self.spec.retention_alarm || r.at_risk;
        if self.metrics.set_retained(Some(r.bytes), alarm) {
            warn!(
                direction = %self.spec.id, retained_bytes = r.bytes, alarm_bytes = self.spec.retention_alarm, at_risk = r.at_risk,
                "the source keeps more change history for this direction than the task's retention_alarm (or is about to discard it): the target falls behind, or another reader of the source holds it back"
            );
        }
        Ok(())
    }

    /// Waits for a chunk read ahead (if any) and takes the source back.
    async fn join_prefetch(&mut self, prefetched: Option<Prefetch<S>>) -> Result<Option<Chunk>, EngineError> {
        Ok(self.join_reader(prefetched, "snapshot").await?.transpose()?)
    }

    /// Waits for a read running as its own task (if any; `what` names it in the error)
    /// and takes the source back; the read's own result is the caller's to judge.
    async fn join_reader<T>(
        &mut self,
        reader: Option<Reader<S, T>>,
        what: &str,
    ) -> Result<Option<Result<T, ConnectorError>>, EngineError> {
        let Some(handle) = reader else { return Ok(None) };
        let (source, read) = handle.await.map_err(|e| {
            EngineError::Connector(ConnectorError::Setup {
                endpoint: self.spec.source.name.clone(),
                problem: format!("the {what} reader ended abnormally: {e}"),
                fix: "report this as a bug with the log".into(),
            })
        })?;
        self.source.put_back(source);
        Ok(Some(read))
    }

    /// Where the direction stands; set from the checkpoint or the source's head before
    /// anything is read (an empty position, which compares with nothing, until then).
    fn position(&self) -> Position {
        self.checkpoint.position.clone().unwrap_or_else(|| Position::new(String::new(), Vec::new(), None))
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
                self.keep_lease().await?;
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
        // Per table of the batch: its copy progress and its target schema, looked up once
        // (a name formatted and a map searched per change showed in profiles).
        let mut tables: Vec<(Arc<TableSchema>, Option<TableProgress>, Arc<TableSchema>)> = Vec::new();
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
                // Only asked of tables still being copied (the key is compared in place).
                let removes = || c.op == Op::Delete || (c.op == Op::Update && c.moves_key());
                let i = match tables.iter().position(|(t, _, _)| Arc::ptr_eq(t, &c.table)) {
                    Some(i) => i,
                    None => {
                        let progress = self.checkpoint.tables.get(&c.table.name.to_string()).cloned();
                        tables.push((c.table.clone(), progress, self.renames.target(&c.table)));
                        tables.len() - 1
                    }
                };
                match &tables[i].1 {
                    Some(TableProgress::Done) => true,
                    None => false,
                    Some(TableProgress::Pending) => removes(),
                    Some(TableProgress::Copying { after }) => {
                        removes()
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
                c.table = match tables.iter().find(|(t, _, _)| Arc::ptr_eq(t, &c.table)) {
                    Some((_, _, target)) => target.clone(),
                    None => self.renames.target(&c.table),
                };
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
        // A one-way first-copy chunk moves no stream position: while the last flushed
        // commit recorded the same one, a crash could take back only chunks together
        // with their checkpoints, so it need not wait for its flush.
        let chunk_only = batch.txns.is_empty() && batch.snapshot.is_some() && self.spec.conflicts.is_none();
        batch.flush = !(chunk_only && self.durable.is_some() && self.durable == batch.checkpoint.position);
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
            fence: Some(self.tenure.me.fencing),
            flush: true,
        }
    }

    /// Applies a batch (diagnosing a failure change by change where that is safe) and
    /// counts it.
    async fn apply_batch(&mut self, batch: &mut ApplyBatch) -> Result<(), EngineError> {
        self.keep_lease().await?;
        let continuing = self.open_group;
        let in_group = continuing || !batch.commit;
        let report = match self.sink.apply(&self.spec.id, batch).await {
            Ok(r) => r,
            // Earlier parts of the group were rolled back with this one: only a restart
            // from the checkpoint (in diagnose mode) can apply the group again.
            Err(e) if in_group => {
                self.open_group = false;
                return Err(in_parts(e, batch, continuing).into());
            }
            // The target refused the data: go again change by change, so the error names
            // the change. Other failures (a full table, a lost connection) are retried.
            Err(e)
                if e.kind() == ErrorKind::Refused
                    && !batch.one_by_one
                    && (!batch.txns.is_empty() || batch.snapshot.is_some()) =>
            {
                batch.one_by_one = true;
                self.sink.apply(&self.spec.id, batch).await?
            }
            Err(e) => return Err(e.into()),
        };
        if !batch.commit && !self.open_group {
            info!(direction = %self.spec.id, position = %self.committed(), "a source transaction bigger than a batch: applying it in parts inside one target transaction, visible when its last part commits");
        }
        self.open_group = !batch.commit;
        self.group_rows += report.rows;
        if batch.commit {
            self.committed = batch.checkpoint.position.clone();
            match batch.flush {
                true => {
                    self.durable = self.committed.clone();
                    self.unflushed = false;
                    self.flushed_at = Instant::now();
                    if let Some(tx) = &self.commits {
                        tx.send_replace(self.durable.clone());
                    }
                }
                false => self.unflushed = true,
            }
            self.diagnose = false;
            if std::mem::take(&mut self.group_rows) > 0 {
                self.progressed.store(true, AtomicOrdering::Relaxed);
            }
        }
        self.record(batch, &report);
        Ok(())
    }

    /// The last position committed on the target (the checkpoint's, outside a commit
    /// group in parts).
    fn committed(&self) -> Position {
        self.committed.clone().unwrap_or_else(|| self.position())
    }

    /// Commits a commit group left open by its parts.
    async fn close_group(&mut self) -> Result<(), EngineError> {
        if self.open_group {
            let mut batch = self.batch(Vec::new(), None, true);
            self.apply_batch(&mut batch).await?;
        }
        Ok(())
    }

    /// Flushes what commits did not wait for (an empty batch that waits for its flush,
    /// which covers every earlier commit), so the position can be told to the source.
    async fn flush_commits(&mut self) -> Result<(), EngineError> {
        if self.unflushed && !self.open_group {
            let mut batch = self.batch(Vec::new(), None, true);
            self.apply_batch(&mut batch).await?;
        }
        Ok(())
    }

    /// Counts an applied batch in the metrics.
    fn record(&self, batch: &ApplyBatch, report: &ApplyReport) {
        let changes: u64 = batch.txns.iter().map(|t| t.changes.len() as u64).sum();
        let snap = batch.snapshot.as_ref().map(|s| s.native.as_ref().map_or(s.rows.len(), |n| n.count) as u64);
        let snap = snap.unwrap_or(0);
        // A part of a commit group is not on the target until the group commits: the
        // position shown stays at the last commit (whoever reads it may stop the task).
        let position = match &batch.checkpoint.position {
            Some(p) if batch.commit => p.clone(),
            _ => self.committed(),
        };
        self.metrics.applied(changes, batch.txns.len() as u64, snap, report.conflicts, &position);
    }

    /// A stream read after `after`.
    fn request(&self, after: Position, until: Option<Position>) -> ReadRequest {
        ReadRequest {
            after,
            until,
            max_changes: self.batch_changes,
            exclude_origin: self.spec.target.site.clone(),
            keep_transactions: self.spec.keep_transactions,
            before_images: self.spec.conflicts.is_some(),
        }
    }
}

/// Reads the source's clock (see [`clock`]), records it with the task's clocks, and
/// shows the direction's view of them; announces a change of the task's skew level in
/// the log. Returns false when the store cannot tell its time (never asked again).
async fn measure_clock<H: Source>(heartbeat: &mut H, clock: &TaskClock, metrics: &DirectionMetrics) -> bool {
    let id = &metrics.id;
    let t0 = now_micros();
    match heartbeat.clock().await {
        Ok(Some(server)) => {
            clock.record(&id.from, server, t0, now_micros());
        }
        Ok(None) => return false,
        Err(e) => warn!(direction = %id, error = %e, "reading the source's clock failed"),
    }
    let view = clock.view(&id.from, &id.to);
    if let Some(was) = clock.announce(view.level) {
        let size = view.skew_us.map(|s| clock::seconds(s.unsigned_abs())).unwrap_or_default();
        match (view.level, &view.message) {
            (SkewLevel::Alarm | SkewLevel::Paused, Some(m)) => warn!(task = %id.task, "clock skew: {m}"),
            (SkewLevel::Ok, _) if matches!(was, SkewLevel::Alarm | SkewLevel::Paused) => {
                info!(task = %id.task, "clock skew: task {}: the clocks of {} and {} are {size} apart again, within clock_skew_alarm", id.task, id.from, id.to)
            }
            _ => {}
        }
    }
    metrics.set_clock(view);
    true
}

/// A read running as its own task, handing the source it borrowed back with its result.
type Reader<S, T> = tokio::task::JoinHandle<(S, Result<T, ConnectorError>)>;
/// A snapshot chunk being read ahead.
type Prefetch<S> = Reader<S, Chunk>;

/// The source, lent to a reader task while it reads the next batch or chunk.
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

    async fn retention(&mut self) -> Result<Option<crate::connector::Retention>, ConnectorError> {
        self.get()?.retention().await
    }

    async fn consumed(&mut self, consumer: &str, position: &Position) -> Result<(), ConnectorError> {
        self.get()?.consumed(consumer, position).await
    }

    async fn clock(&mut self) -> Result<Option<i64>, ConnectorError> {
        self.get()?.clock().await
    }

    async fn estimate_rows(&mut self, table: &TableSchema) -> Result<Option<u64>, ConnectorError> {
        self.get()?.estimate_rows(table).await
    }

    fn batch_changes(&self) -> Option<usize> {
        self.0.as_ref().and_then(Source::batch_changes)
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
    seen: HashSet<HashKey>,
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
            self.seen.insert(HashKey(old));
            self.seen.insert(HashKey(new));
        }
        hit
    }
}

/// A refused change inside a source transaction applied in parts (the last one of a
/// batch that goes on, or the first of one that continues an open group) has no
/// position of its own to skip by: its failure says so instead of offering `ferry skip`.
fn in_parts(e: ConnectorError, batch: &ApplyBatch, continuing: bool) -> ConnectorError {
    match e {
        ConnectorError::Apply(mut f) => {
            let last = !batch.commit && batch.txns.last().is_some_and(|t| t.position == f.position);
            let first = continuing && batch.txns.first().is_some_and(|t| t.position == f.position);
            f.in_parts = last || first;
            ConnectorError::Apply(f)
        }
        e => e,
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

impl EngineError {
    /// A refusal of data that a change-by-change attempt must pin to its change.
    pub fn refused(&self) -> bool {
        matches!(self, EngineError::Connector(e) if e.kind() == ErrorKind::Refused && !matches!(e, ConnectorError::Apply(_)))
    }

    /// A server that refuses connections or cannot be reached: at the first start a
    /// setup problem (wrong host or port), but once the direction ran, a server
    /// restarting or away for a while, retried like any endpoint failure.
    pub fn unreachable(&self) -> bool {
        matches!(self, EngineError::Connector(ConnectorError::Open { source: sqlx::Error::Io(_), .. }))
    }

    /// Endpoint failures (connections, resources) are retried, and so is a refusal not
    /// yet pinned to its change (to pin it); setup problems, a named refused change and
    /// lease conflicts stop.
    pub fn retryable(&self) -> bool {
        match self {
            EngineError::Connector(e) => match e.kind() {
                ErrorKind::Runtime => !matches!(e, ConnectorError::Fenced { .. }),
                // Refused data not pinned to its change yet: run again change by change.
                ErrorKind::Refused => !matches!(e, ConnectorError::Apply(_)),
                ErrorKind::Setup => false,
            },
            EngineError::Reload { .. } | EngineError::Resync { .. } => true,
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
    if spec.publishes() {
        // The publishing role reads the source only; the applying role prepares.
        return Ok(());
    }
    if registry::is_blob(&spec.source) {
        // A blob direction prepares its target when it starts (nothing to create first).
        registry::check_blob_pair(&spec.source, &spec.target)?;
        return Ok(());
    }
    registry::check_pair(&spec.source, &spec.target)?;
    let (source, sink) = tokio::try_join!(open_source(spec, stream_name(spec)), open_sink(spec))?;
    prepare_pair(spec, source, sink, start).await
}

async fn prepare_pair<S: Source, K: Sink>(
    spec: &DirectionSpec,
    mut source: S,
    mut sink: K,
    start: Option<&Position>,
) -> Result<(), EngineError> {
    let result = prepare_with(spec, &mut source, &mut sink, start).await;
    tokio::join!(source.close(), sink.close());
    result
}

async fn prepare_with<S: Source, K: Sink>(
    spec: &DirectionSpec,
    source: &mut S,
    sink: &mut K,
    start: Option<&Position>,
) -> Result<(), EngineError> {
    // The source's side and ferry's own tables on the target are independent: both at
    // once (the target's tables need the source's schemas).
    let capture = async {
        let tables = source.tables(&spec.tables).await?;
        // A relayed direction's publishing role installs capture under its own stream
        // name; installing it here too would leave a replication slot nobody reads, and
        // PostgreSQL keeps WAL for it forever.
        if spec.relay.is_none() {
            source.install_capture(&tables).await?;
        }
        Ok::<_, ConnectorError>(tables)
    };
    let (tables, ()) = tokio::try_join!(capture, sink.prepare())?;
    sink.ensure_tables(&target_schemas(spec, &Renames::new(&tables, &spec.maps))?).await?;
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
            // Written while no process runs the direction (a cutover's switch).
            fence: None,
            flush: true,
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
    fn backoff_doubles_to_thirty_seconds_and_starts_over_after_a_success() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..9).map(|_| b.next_wait().as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(500));
    }

    #[test]
    fn snapshots_parents_before_children() {
        let tables =
            vec![table("a_child", &["c_parent"]), table("b_note", &["c_parent", "b_note"]), table("c_parent", &[])];
        let order: Vec<String> = parents_first(tables).iter().map(|t| t.name.name.clone()).collect();
        assert_eq!(order, ["c_parent", "a_child", "b_note"]);
    }
}
