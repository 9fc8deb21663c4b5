//! The ownership loop of one node: every second it renews the leases of the directions
//! it runs (stopping a direction at once when a renewal fails or is refused), and takes
//! free leases of directions it may run; a node at the target's site goes first, others
//! after a grace. It never takes a lease another node holds, so a node that comes back
//! does not fight for what it lost; directions move on request only ([`request_rebalance`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::lease::{self, Held, LeaseRecord};
use super::members::{self, Member};
use super::reach::Unreachable;
use super::{Candidate, ClusterError, Shared, paused};
use crate::engine::task::{DirectionSpec, prepare_target};
use crate::engine::{Engine, EngineError};
use crate::model::now_micros;

/// How often the loop looks at every direction.
const TICK: Duration = Duration::from_secs(1);
/// How long a node away from the target's site lets a node at that site go first.
const PREFER_GRACE: Duration = Duration::from_secs(3);
/// How long a direction that failed here waits before this node tries it again.
const FAILED_BACKOFF: Duration = Duration::from_secs(20);
/// How often this node's record is written (and the others' read).
const ANNOUNCE: Duration = Duration::from_secs(2);
/// A node whose record is older than this is taken for gone.
const GONE_AFTER: Duration = Duration::from_secs(15);
/// The key in the lease bucket that asks for a rebalance (lease keys have two dots).
const REBALANCE_KEY: &str = "rebalance";

/// What the loop starts with.
pub struct Setup {
    /// This node's record.
    pub me: Member,
    /// The lease bucket.
    pub leases: Store,
    /// The members bucket.
    pub members: Store,
    /// The paused-tasks bucket.
    pub paused: Store,
    /// The lease TTL (the bucket's max_age).
    pub ttl: Duration,
    /// Directions of the task file.
    pub candidates: Vec<Candidate>,
    /// Stops the loop and every direction.
    pub shutdown: CancellationToken,
    /// What readers see.
    pub(super) shared: Arc<Shared>,
    /// The endpoints this node cannot reach now.
    pub reach: Unreachable,
    /// The task keeping `reach` current (ends with `shutdown`).
    pub reach_task: Option<JoinHandle<()>>,
}

/// A direction held here.
struct Running {
    held: Held,
    renewed: Instant,
    /// `None` while the task is paused, or the lease lapsed: nothing runs.
    engine: Option<Engine>,
    /// Renewals went unanswered until the lease nearly ran out: the direction stopped,
    /// and starts again if a renewal on the same revision succeeds (nobody took it).
    lapsed: bool,
}

/// One direction's state on this node.
struct Slot {
    candidate: Candidate,
    key: String,
    running: Option<Running>,
    /// Since when its lease has been seen free (the grace for a node off-site).
    free_since: Option<Instant>,
    /// Not before this (it failed here).
    retry_at: Option<Instant>,
    /// This round's renewal, made with every other due one at once, when it did not
    /// succeed (a success is applied as it comes): `step` acts on it.
    renewal: Option<Result<Option<Held>, ClusterError>>,
}

/// The ownership loop.
pub struct Owner {
    setup: Setup,
    slots: Vec<Slot>,
    /// Directions stopped (lost, failed, moved) whose engines are still ending.
    stopping: Vec<Engine>,
    errors: Vec<EngineError>,
    peers: Vec<Member>,
    last_announce: Option<Instant>,
    /// The revision of the last rebalance request handled.
    rebalanced: u64,
    /// Tasks paused in the cluster, as last read.
    paused: HashSet<String>,
    /// A rebalance was asked: the next round hands directions over.
    rebalance_next: bool,
    /// A renewal of this round went unanswered (NATS out of reach).
    unanswered: bool,
}

impl Owner {
    /// The loop over `setup`, not yet running.
    pub fn new(mut setup: Setup) -> Owner {
        let slots = setup
            .candidates
            .drain(..)
            .map(|candidate| Slot {
                key: lease::key(&candidate.spec.id),
                candidate,
                running: None,
                free_since: None,
                retry_at: None,
                renewal: None,
            })
            .collect();
        Owner {
            setup,
            slots,
            stopping: Vec::new(),
            errors: Vec::new(),
            peers: Vec::new(),
            last_announce: None,
            rebalanced: 0,
            paused: HashSet::new(),
            rebalance_next: false,
            unanswered: false,
        }
    }

    /// Runs until shut down; then stops every direction, gives its lease back and leaves.
    pub async fn run(mut self) -> Vec<EngineError> {
        let shutdown = self.setup.shutdown.clone();
        // A rebalance asked before this node started is not for it.
        self.rebalanced = rebalance_revision(&self.setup.leases).await;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            self.round().await;
        }
        self.leave().await;
        if let Some(task) = self.setup.reach_task.take() {
            let _ = task.await;
        }
        self.errors
    }

    /// One look at everything.
    async fn round(&mut self) {
        // The leases first: a slow NATS (a server died) delays the reads below, not them.
        let rebalance = std::mem::take(&mut self.rebalance_next);
        self.renew_due().await;
        for i in 0..self.slots.len() {
            if let Err(e) = self.step(i, rebalance).await {
                warn!(direction = %self.slots[i].candidate.spec.id, error = %e, "cluster lease step failed");
            }
        }
        self.reap().await;
        self.publish_held();
        // A direction retrying an endpoint may have lost its way to it: probe soon, so a
        // node cut off from it hands the direction over in seconds, not at the next probe.
        let retrying = self
            .slots
            .iter()
            .filter_map(|s| s.running.as_ref()?.engine.as_ref())
            .any(|e| e.metrics().iter().any(|m| m.state() == crate::engine::metrics::DirectionState::Retrying));
        if retrying {
            self.setup.reach.probe_soon();
        }
        // NATS did not answer a renewal: the reads below would not be answered either,
        // and would only hold back the next attempt, which must come before the lease
        // runs out (or the direction must stop first).
        if std::mem::take(&mut self.unanswered) {
            return;
        }
        // What the next round acts on, bounded all together: listing a bucket's keys waits
        // for messages that a lost connection never brings, and a cut-off node's next
        // renewal must come in time to stop its directions before their leases run out.
        // A third of the TTL: with renewals every third, the next attempt still comes
        // well before the stop point on a busy machine, where four reads in one
        // request's time (a quarter) were seen to time out and leave the view stale.
        let limit = super::connect::request_timeout(self.setup.ttl).max(self.setup.ttl / 3);
        let reads = async {
            self.rebalance_next = self.rebalance_asked().await;
            match paused::all(&self.setup.paused).await {
                Ok(p) => self.paused = p.into_keys().collect(),
                // The last known pauses stand until the bucket answers again.
                Err(e) => warn!(error = %e, "could not read the paused tasks"),
            }
            // A rebalance judges by the nodes as they are now, not as last read.
            if self.rebalance_next || self.last_announce.is_none_or(|t| t.elapsed() >= ANNOUNCE) {
                self.announce().await;
            }
        };
        if tokio::time::timeout(limit, reads).await.is_err() {
            warn!(limit_ms = limit.as_millis(), "the cluster's buckets did not answer in time; the leases go first");
        }
    }

    /// Renews at once every lease due for its periodic renewal, each within its own
    /// budget: one after another, NATS not answering would make each wait its own
    /// timeout, and the last ones could pass their stop point before being tried.
    async fn renew_due(&mut self) {
        let ttl = self.setup.ttl;
        let stop_at = ttl - ttl / 6;
        let limit = super::connect::request_timeout(ttl);
        let leases = &self.setup.leases;
        let mut due = Vec::new();
        let mut asks = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(run) = &slot.running else { continue };
            // Lapsed, past the stop point, finished or not yet due: `step` decides.
            let left = stop_at.saturating_sub(run.renewed.elapsed());
            if run.lapsed
                || left.is_zero()
                || run.renewed.elapsed() < ttl / 3
                || run.engine.as_ref().is_some_and(Engine::finished)
            {
                continue;
            }
            due.push(i);
            let key = slot.key.clone();
            asks.push(async move {
                match tokio::time::timeout(left.min(limit), lease::renew(leases, &key, &run.held)).await {
                    Ok(r) => r,
                    Err(e) => Err(ClusterError::nats(format!("renewing lease {key}"), e)),
                }
            });
        }
        let answers = futures_util::future::join_all(asks).await;
        for (i, answer) in due.into_iter().zip(answers) {
            let slot = &mut self.slots[i];
            match (answer, slot.running.as_mut()) {
                (Ok(Some(held)), Some(run)) => {
                    run.held = held;
                    run.renewed = Instant::now();
                }
                (other, _) => slot.renewal = Some(other),
            }
        }
    }

    /// Tells readers (the pause API) which directions are held here, and which paused.
    fn publish_held(&self) {
        if let Ok(mut held) = self.setup.shared.held.lock() {
            *held = self
                .slots
                .iter()
                .filter_map(|s| {
                    let run = s.running.as_ref()?;
                    let paused = run.engine.is_none() && !run.lapsed;
                    Some((s.candidate.spec.id.to_string(), (s.candidate.spec.id.task.clone(), paused)))
                })
                .collect();
        }
    }

    async fn announce(&mut self) {
        let mut me = self.setup.me.clone();
        me.last_seen_us = now_micros();
        me.tasks = self.slots.iter().filter(|s| s.running.is_some()).map(|s| s.candidate.spec.id.to_string()).collect();
        me.unreachable = self.setup.reach.names().into_iter().collect();
        if let Err(e) = members::announce(&self.setup.members, &me).await {
            warn!(error = %e, "could not announce this node to the cluster");
        }
        // Bounded by the caller, with the round's other reads.
        match members::all(&self.setup.members).await {
            Ok(peers) => self.peers = peers,
            Err(e) => warn!(error = %e, "could not read the cluster's nodes"),
        }
        self.last_announce = Some(Instant::now());
    }

    /// Whether a rebalance was asked since the last one handled.
    async fn rebalance_asked(&mut self) -> bool {
        let rev = rebalance_revision(&self.setup.leases).await;
        if rev > self.rebalanced {
            self.rebalanced = rev;
            info!("a rebalance was asked: moving directions to their preferred nodes");
            return true;
        }
        false
    }

    /// Renews or gives up a running direction, or takes a free one.
    async fn step(&mut self, i: usize, rebalance: bool) -> Result<(), ClusterError> {
        let ttl = self.setup.ttl;
        let my_id = self.setup.me.id.clone();
        let cut_off = self.setup.reach.names();
        let slot = &mut self.slots[i];
        // This round's answer from `renew_due`, if it was tried there (and failed).
        let answered = slot.renewal.take();
        let task_paused = self.paused.contains(&slot.candidate.spec.id.task);
        if let Some(run) = &mut slot.running {
            if run.engine.as_ref().is_some_and(Engine::finished) {
                // The direction failed by itself (its errors are kept): free it for a
                // node that may do better, and try again here later.
                let run = slot.running.take().map(|r| (r.held, r.engine));
                if let Some((held, Some(engine))) = run {
                    let errors = engine.join().await;
                    let why: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    warn!(direction = %slot.candidate.spec.id, error = %why.join("; "), "the direction stopped here; giving its cluster lease up");
                    self.errors.extend(errors);
                    lease::release(&self.setup.leases, &slot.key, &held).await?;
                }
                slot.retry_at = Some(Instant::now() + FAILED_BACKOFF);
                return Ok(());
            }
            // A pause stops the direction after its in-flight batch and keeps the lease
            // (the task stays here, paused); a resume starts it again under that lease.
            let mut changed = false;
            if task_paused && let Some(engine) = run.engine.take() {
                info!(direction = %slot.candidate.spec.id, "the task was paused: stopping the direction, keeping its lease");
                engine.stop();
                self.errors.extend(engine.join().await);
                changed = true;
            } else if !task_paused && run.engine.is_none() && !run.lapsed {
                info!(direction = %slot.candidate.spec.id, "the task was resumed: starting the direction again");
                run.engine = Some(start_engine(&self.setup, &slot.candidate.spec, &run.held));
                changed = true;
            }
            run.held.record.paused = task_paused;
            // A node that lost its way to an endpoint hands the direction to one that
            // reaches both (if any: else it keeps it, and the direction retries).
            let stranded = !eligible(&slot.candidate, &my_id, cut_off.iter())
                && runnable_elsewhere(&self.peers, &slot.candidate, &my_id);
            let moving =
                stranded || (rebalance && preferred_elsewhere(&self.peers, &self.setup.me, &slot.candidate, &my_id));
            if moving {
                if stranded {
                    warn!(direction = %slot.candidate.spec.id, "this node cannot reach an endpoint of the direction: handing it to a node that can");
                } else {
                    info!(direction = %slot.candidate.spec.id, "rebalance: handing the direction to a node at its target's site");
                }
                if let Some(run) = slot.running.take() {
                    if let Some(engine) = run.engine {
                        engine.stop();
                        self.errors.extend(engine.join().await);
                    }
                    lease::release(&self.setup.leases, &slot.key, &run.held).await?;
                }
                // Let the preferred node take it first.
                slot.retry_at = Some(Instant::now() + PREFER_GRACE * 2);
                return Ok(());
            }
            // A changed pause is written at once, for the cluster view.
            if !changed && run.renewed.elapsed() < ttl / 3 {
                return Ok(());
            }
            // The direction must stop before its lease can run out on the servers (a TTL
            // after its last renewal): by `stop_at`, a sixth of the TTL earlier. No attempt
            // runs past that point, and one made after it stops the direction first.
            let stop_at = ttl - ttl / 6;
            let left = stop_at.saturating_sub(run.renewed.elapsed());
            if left.is_zero() {
                if let Some(engine) = run.engine.take() {
                    warn!(direction = %slot.candidate.spec.id, "the cluster lease could not be renewed in time; stopping the direction until it can");
                    engine.stop();
                    self.errors.extend(engine.join().await);
                }
                run.lapsed = true;
            }
            let limit = super::connect::request_timeout(ttl);
            let budget = if left.is_zero() { limit } else { left.min(limit) };
            let renewed = match answered {
                Some(answer) => answer,
                None => {
                    match tokio::time::timeout(budget, lease::renew(&self.setup.leases, &slot.key, &run.held)).await {
                        Ok(r) => r,
                        Err(e) => Err(ClusterError::nats(format!("renewing lease {}", slot.key), e)),
                    }
                }
            };
            self.unanswered |= renewed.is_err();
            match renewed {
                Ok(Some(held)) => {
                    run.held = held;
                    run.renewed = Instant::now();
                    if run.lapsed {
                        // Nobody took it meanwhile: the same tenure goes on.
                        info!(direction = %slot.candidate.spec.id, "the cluster lease answered again and is still ours");
                        run.lapsed = false;
                        if !task_paused {
                            run.engine = Some(start_engine(&self.setup, &slot.candidate.spec, &run.held));
                        }
                    }
                }
                // Not answered (NATS out of reach, or a NATS server died and its streams
                // elect a new leader): the lease still stands on the servers until a TTL
                // after its last renewal, so try again next round until `stop_at`.
                Err(e) if run.renewed.elapsed() < stop_at => {
                    warn!(direction = %slot.candidate.spec.id, error = %e, "could not renew the cluster lease; trying again while it lasts");
                }
                // Unanswered until the lease nearly ran out: stop the direction, but keep
                // asking for a while; JetStream expires nothing while it has no leader, so
                // the lease may still be ours when it answers again.
                Err(e) if run.renewed.elapsed() < ttl * 3 => {
                    if let Some(engine) = run.engine.take() {
                        warn!(direction = %slot.candidate.spec.id, error = %e, "the cluster lease could not be renewed in time; stopping the direction until it can");
                        engine.stop();
                        self.errors.extend(engine.join().await);
                    }
                    run.lapsed = true;
                }
                outcome => {
                    // Refused (taken over), or not answered until the lease nearly ran
                    // out: this node can no longer prove it owns the direction, so it
                    // stops now; the target's fencing
                    // refuses whatever it still had under way.
                    match outcome {
                        Err(e) => {
                            warn!(direction = %slot.candidate.spec.id, error = %e, "could not renew the cluster lease; stopping the direction")
                        }
                        _ => {
                            warn!(direction = %slot.candidate.spec.id, "the cluster lease was taken over; stopping the direction")
                        }
                    }
                    if let Some(engine) = slot.running.take().and_then(|r| r.engine) {
                        engine.stop();
                        self.stopping.push(engine);
                    }
                }
            }
            return Ok(());
        }
        if slot.retry_at.is_some_and(|t| Instant::now() < t) || !eligible(&slot.candidate, &my_id, cut_off.iter()) {
            return Ok(());
        }
        if lease::read(&self.setup.leases, &slot.key).await?.is_some() {
            slot.free_since = None;
            return Ok(());
        }
        let since = *slot.free_since.get_or_insert_with(Instant::now);
        if preferred_elsewhere(&self.peers, &self.setup.me, &slot.candidate, &my_id) && since.elapsed() < PREFER_GRACE {
            return Ok(());
        }
        let spec = &slot.candidate.spec;
        let record = LeaseRecord {
            task: spec.id.task.clone(),
            from: spec.id.from.clone(),
            to: spec.id.to.clone(),
            node: my_id,
            site: self.setup.me.site.clone(),
            since_us: now_micros(),
            fencing: 0,
            paused: task_paused,
        };
        let Some(held) = lease::take(&self.setup.leases, &slot.key, &record).await? else {
            slot.free_since = None;
            return Ok(());
        };
        slot.free_since = None;
        slot.retry_at = None;
        let mut spec = spec.clone();
        spec.lease_floor = i64::try_from(held.record.fencing).unwrap_or(i64::MAX);
        info!(direction = %spec.id, fencing = spec.lease_floor, "took the cluster lease; starting the direction");
        // Bounded: the lease must be renewed within its TTL.
        let prepared = tokio::time::timeout(ttl / 3, prepare_target(&spec)).await;
        let problem = match prepared {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("the target did not answer within {} s", (ttl / 3).as_secs())),
        };
        if let Some(problem) = problem {
            warn!(direction = %spec.id, error = %problem, "could not prepare the target; giving the cluster lease up");
            lease::release(&self.setup.leases, &slot.key, &held).await?;
            slot.retry_at = Some(Instant::now() + FAILED_BACKOFF);
            return Ok(());
        }
        // A paused task is held, not run: a pause outlives its owner.
        let engine = if task_paused {
            info!(direction = %spec.id, "the task is paused: holding its lease without running it");
            None
        } else {
            Some(start_engine(&self.setup, &spec, &held))
        };
        slot.running = Some(Running { held, renewed: Instant::now(), engine, lapsed: false });
        Ok(())
    }

    /// Joins the engines that have ended after being stopped.
    async fn reap(&mut self) {
        let (done, pending): (Vec<Engine>, Vec<Engine>) = self.stopping.drain(..).partition(Engine::finished);
        self.stopping = pending;
        for engine in done {
            self.errors.extend(engine.join().await);
        }
    }

    /// Stops every direction, gives the leases back (so other nodes take them at once)
    /// and removes this node's record.
    async fn leave(&mut self) {
        for slot in &mut self.slots {
            if let Some(run) = slot.running.take() {
                if let Some(engine) = run.engine {
                    engine.stop();
                    self.errors.extend(engine.join().await);
                }
                if let Err(e) = lease::release(&self.setup.leases, &slot.key, &run.held).await {
                    warn!(direction = %slot.candidate.spec.id, error = %e, "could not give the cluster lease back; it expires by itself");
                }
            }
        }
        for engine in self.stopping.drain(..) {
            self.errors.extend(engine.join().await);
        }
        if let Err(e) = members::leave(&self.setup.members, &self.setup.me.id).await {
            warn!(error = %e, "could not remove this node's record; it expires by itself");
        }
    }
}

/// Starts `spec` under the lease `held` (its token is the fencing floor); the newest
/// run of a direction replaces an older one's metrics.
fn start_engine(setup: &Setup, spec: &DirectionSpec, held: &Held) -> Engine {
    let mut spec = spec.clone();
    spec.lease_floor = i64::try_from(held.record.fencing).unwrap_or(i64::MAX);
    let engine = Engine::start(vec![spec], setup.shutdown.child_token());
    if let Ok(mut m) = setup.shared.metrics.lock() {
        let fresh = engine.metrics();
        m.retain(|old| !fresh.iter().any(|f| f.id == old.id));
        m.extend(fresh);
    }
    engine
}

/// Whether `node` may run the direction: `[[task]] nodes` names it (or names nobody), and
/// it reaches both endpoints (`unreachable`: the endpoint names it could not reach).
fn eligible<'a>(c: &Candidate, node: &str, mut unreachable: impl Iterator<Item = &'a String>) -> bool {
    let listed = c.nodes.is_empty() || c.nodes.iter().any(|n| n == node);
    listed && !unreachable.any(|n| *n == c.spec.source.name || *n == c.spec.target.name)
}

/// Whether a live node other than this one may run the direction (by its record).
fn runnable_elsewhere(peers: &[Member], c: &Candidate, my_id: &str) -> bool {
    let gone = i64::try_from(GONE_AFTER.as_micros()).unwrap_or(i64::MAX);
    let now = now_micros();
    peers.iter().any(|p| p.id != my_id && now - p.last_seen_us < gone && eligible(c, &p.id, p.unreachable.iter()))
}

/// Whether another live node that may run the direction sits at its target's site while
/// this one does not.
fn preferred_elsewhere(peers: &[Member], me: &Member, c: &Candidate, my_id: &str) -> bool {
    let target_site = c.spec.home_site().to_string();
    if me.site.as_deref() == Some(target_site.as_str()) {
        return false;
    }
    let now = now_micros();
    let gone = i64::try_from(GONE_AFTER.as_micros()).unwrap_or(i64::MAX);
    peers.iter().any(|p| {
        p.id != my_id
            && p.site.as_deref() == Some(target_site.as_str())
            && now - p.last_seen_us < gone
            && eligible(c, &p.id, p.unreachable.iter())
    })
}

/// The revision of the latest rebalance request (0: none).
async fn rebalance_revision(leases: &Store) -> u64 {
    match leases.entry(REBALANCE_KEY).await {
        Ok(Some(e)) => e.revision,
        _ => 0,
    }
}

/// Asks every node to hand each direction it runs to a live node at the direction's
/// target site (the request lasts one lease TTL in the bucket).
pub async fn request_rebalance(leases: &Store) -> Result<(), ClusterError> {
    let body = now_micros().to_string();
    leases
        .put(REBALANCE_KEY, body.into_bytes().into())
        .await
        .map_err(|e| ClusterError::nats("asking for a rebalance".into(), e))?;
    Ok(())
}
