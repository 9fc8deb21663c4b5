//! Where the console's data comes from: one poller per node over the [`Control`] trait
//! (remote nodes through the API, or the engine in-process), each writing into a shared
//! [`NodeFeed`]. A node that stops answering keeps its last data, is marked stale with
//! its last-seen time, and is polled again every second, so it reconnects by itself.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cluster::ClusterView;
use crate::cluster::lease::LeaseRecord;
use crate::config::Role;
use crate::control::{
    Access, ConflictEntry, Control, ControlError, LogLine, NodeOverview, SkipRequest, VerifyProgress,
};
use crate::cutover::{CutoverAction, CutoverRequest, CutoverView};
use crate::model::now_micros;
use crate::store::AuditEntry;

/// Seconds of history the charts show (10 minutes).
pub const HISTORY_SECONDS: usize = 600;
/// The audit and conflict logs are read every this many polls.
const LOG_EVERY: u64 = 3;
/// The label of the feed of the engine running inside this process.
pub const IN_PROCESS: &str = "in-process";
/// The node's log lines the console keeps per node (the oldest go first).
pub const LOG_LINES: usize = 2000;
/// A node that has not answered for this long is stale.
pub const STALE_AFTER_US: i64 = 3_000_000;

/// Lag and throughput of one direction, one sample per poll.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// (µs, lag seconds).
    pub lag: VecDeque<(i64, f64)>,
    /// (µs, rows per second over the last second).
    pub rate: VecDeque<(i64, f64)>,
}

impl History {
    fn push(&mut self, at_us: i64, lag: Option<f64>, rate: f64) {
        if let Some(l) = lag {
            self.lag.push_back((at_us, l));
        }
        self.rate.push_back((at_us, rate));
        let oldest = at_us.saturating_sub(HISTORY_SECONDS as i64 * 1_000_000);
        while self.lag.front().is_some_and(|(t, _)| *t < oldest) {
            self.lag.pop_front();
        }
        while self.rate.front().is_some_and(|(t, _)| *t < oldest) {
            self.rate.pop_front();
        }
    }
}

/// What the console knows about one node.
#[derive(Debug, Clone, Default)]
pub struct NodeFeed {
    /// The node's URL, or `in-process`.
    pub label: String,
    /// The last overview received.
    pub overview: Option<NodeOverview>,
    /// When the node last answered (µs).
    pub last_ok_us: Option<i64>,
    /// The last failure to reach it, while it fails.
    pub error: Option<String>,
    /// The node refused the token (HTTP 401): it is not asked again, since every retry
    /// would be refused the same way.
    pub token_rejected: bool,
    /// Cutover steps this console asked the node for that are still running
    /// (`rollback of t`): quitting stops them (in-process: half-way; a node finishes the
    /// step under way).
    pub acting: Vec<String>,
    /// Newest audit entries.
    pub audit: Vec<AuditEntry>,
    /// Newest conflicts.
    pub conflicts: Vec<ConflictEntry>,
    /// History per `task/direction`.
    pub history: HashMap<String, History>,
    /// The verify run the console follows on this node.
    pub verify: Option<VerifyProgress>,
    /// The outcome of the last action sent to this node.
    pub message: Option<String>,
    /// The task whose cutover the console follows on this node (the Cutover screen's).
    pub cutover_task: Option<String>,
    /// That task's cutover, as of the last poll.
    pub cutover: Option<CutoverView>,
    /// Who the console is to this node (role, TLS), once it told.
    pub access: Option<Access>,
    /// The node process's newest log lines (`FERRY_LOG`), oldest first.
    pub logs: VecDeque<LogLine>,
    /// The cluster as this node sees it (nodes, owners); `None` outside a cluster.
    pub cluster: Option<ClusterView>,
    /// Directions seen moving between nodes since the console started, newest last.
    pub moves: VecDeque<Move>,
}

/// A direction that changed owner between two polls.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    /// `task from->to`.
    pub direction: String,
    /// The owner before (`None`: it had none).
    pub from: Option<String>,
    /// The owner after (`None`: none now).
    pub to: Option<String>,
    /// When the console saw it (µs).
    pub at_us: i64,
}

/// How many moves a feed keeps.
const MOVES: usize = 50;

impl NodeFeed {
    /// A feed with nothing received yet.
    pub fn new(label: &str) -> NodeFeed {
        NodeFeed { label: label.to_string(), ..NodeFeed::default() }
    }

    /// Whether the node stopped answering (or never answered).
    pub fn stale(&self, now_us: i64) -> bool {
        self.error.is_some() || self.last_ok_us.is_none_or(|t| now_us.saturating_sub(t) > STALE_AFTER_US)
    }

    /// The node's name: its id once known, else its label.
    pub fn name(&self) -> &str {
        self.overview.as_ref().map(|o| o.node.as_str()).unwrap_or(&self.label)
    }

    /// Key of a direction's history.
    pub fn history_key(task: &str, direction: &str) -> String {
        format!("{task}/{direction}")
    }

    /// Takes in a new cluster view, noting every direction whose owner changed.
    pub fn absorb_cluster(&mut self, view: Option<ClusterView>, now_us: i64) {
        if let (Some(old), Some(new)) = (&self.cluster, &view) {
            let key = |o: &LeaseRecord| format!("{} {}->{}", o.task, o.from, o.to);
            let owner_in = |v: &ClusterView, k: &str| v.owners.iter().find(|o| key(o) == k).map(|o| o.node.clone());
            let mut keys: Vec<String> = old.owners.iter().chain(&new.owners).map(key).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let (from, to) = (owner_in(old, &k), owner_in(new, &k));
                if from != to {
                    self.moves.push_back(Move { direction: k, from, to, at_us: now_us });
                }
            }
            while self.moves.len() > MOVES {
                self.moves.pop_front();
            }
        }
        self.cluster = view;
    }

    fn absorb(&mut self, o: NodeOverview) {
        // A restarted node numbers its log lines from 1 again: read them from the start.
        if self.overview.as_ref().is_some_and(|old| old.started_us != o.started_us) {
            self.logs.clear();
        }
        for t in &o.tasks {
            for d in &t.directions {
                self.history.entry(NodeFeed::history_key(&t.name, &d.direction)).or_default().push(
                    o.at_us,
                    d.lag_seconds,
                    d.rows_per_sec[0],
                );
            }
        }
        self.last_ok_us = Some(now_micros());
        self.error = None;
        self.overview = Some(o);
    }
}

/// An action the operator asked a node to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Pause a task.
    Pause(String),
    /// Resume a task.
    Resume(String),
    /// Start a verify of a task.
    Verify(String),
    /// Start a verify of a task that repairs its target.
    Repair(String),
    /// Freeze an endpoint.
    Freeze(String),
    /// Unfreeze an endpoint.
    Unfreeze(String),
    /// A cutover action on a task (runs in the background; the screen follows it).
    Cutover(String, CutoverAction),
    /// A rollback of a task's cutover, every step to its end (or to the first failure).
    Rollback(String),
    /// Skip the source transaction a stopped task failed on (and start it again).
    Skip(String, SkipRequest),
}

impl Request {
    /// The role a node requires for it (docs/node-api.md).
    pub fn role(&self) -> Role {
        match self {
            Request::Pause(_) | Request::Resume(_) | Request::Verify(_) => Role::Operator,
            Request::Repair(_)
            | Request::Freeze(_)
            | Request::Unfreeze(_)
            | Request::Cutover(..)
            | Request::Rollback(_)
            | Request::Skip(..) => Role::Admin,
        }
    }

    /// What it does, for messages.
    pub fn what(&self) -> &'static str {
        match self {
            Request::Pause(_) => "pausing a task",
            Request::Resume(_) => "resuming a task",
            Request::Verify(_) => "starting a verify",
            Request::Repair(_) => "repairing a target",
            Request::Freeze(_) => "freezing an endpoint",
            Request::Unfreeze(_) => "unfreezing an endpoint",
            Request::Cutover(..) => "a cutover step",
            Request::Rollback(_) => "a cutover rollback",
            Request::Skip(..) => "skipping a transaction",
        }
    }
}

/// The shared feeds, their pollers, and the channels to send them requests.
pub struct Feeds {
    shared: Arc<Mutex<Vec<NodeFeed>>>,
    senders: Vec<mpsc::Sender<Request>>,
    pollers: Vec<JoinHandle<()>>,
    shutdown: CancellationToken,
}

impl Default for Feeds {
    fn default() -> Self {
        Feeds::new()
    }
}

impl Feeds {
    /// No nodes yet.
    pub fn new() -> Feeds {
        Feeds {
            shared: Arc::new(Mutex::new(Vec::new())),
            senders: Vec::new(),
            pollers: Vec::new(),
            shutdown: CancellationToken::new(),
        }
    }

    /// Starts polling a node every second.
    pub fn add<C: Control>(&mut self, label: &str, control: Arc<C>, actor: String) {
        let index = match self.shared.lock() {
            Ok(mut feeds) => {
                feeds.push(NodeFeed::new(label));
                feeds.len() - 1
            }
            Err(_) => return,
        };
        let (tx, rx) = mpsc::channel(16);
        self.senders.push(tx);
        let poller = Poller { control, index, shared: self.shared.clone(), actor };
        self.pollers.push(tokio::spawn(poller.run(rx, self.shutdown.clone())));
    }

    /// A copy of every node's feed, for one frame.
    pub fn snapshot(&self) -> Vec<NodeFeed> {
        self.shared.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// Sends a request to node `node`; false when that node's poller is gone or busy.
    pub fn send(&self, node: usize, request: Request) -> bool {
        self.senders.get(node).is_some_and(|s| s.try_send(request).is_ok())
    }

    /// Follows the cutover of a task on a node (the Cutover screen's), or none.
    pub fn follow_cutover(&self, target: Option<(usize, &str)>) {
        if let Ok(mut feeds) = self.shared.lock() {
            for (i, f) in feeds.iter_mut().enumerate() {
                let want = target.filter(|(node, _)| *node == i).map(|(_, task)| task.to_string());
                if f.cutover_task != want {
                    f.cutover_task = want;
                    f.cutover = None;
                }
            }
        }
    }

    /// Stops every poller and waits for them.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for p in self.pollers {
            let _ = p.await;
        }
    }
}

struct Poller<C> {
    control: Arc<C>,
    index: usize,
    shared: Arc<Mutex<Vec<NodeFeed>>>,
    actor: String,
}

impl<C: Control> Poller<C> {
    fn update(&self, f: impl FnOnce(&mut NodeFeed)) {
        if let Ok(mut feeds) = self.shared.lock()
            && let Some(feed) = feeds.get_mut(self.index)
        {
            f(feed);
        }
    }

    /// Reads the overview, and the logs when `logs`. The conflict log is read again only
    /// when the node's conflict counters moved: reading it opens every target.
    async fn poll(&self, followed_verify: Option<String>, logs: bool, conflicts_seen: &mut Option<u64>) {
        let known = self.shared.lock().ok().and_then(|f| f.get(self.index).map(|f| f.access.is_some()));
        if known == Some(false) {
            // Asked once per (re)connection: a role does not change while a node runs.
            if let Ok(a) = self.control.access().await {
                self.update(|f| f.access = Some(a));
            }
        }
        let total = match self.control.overview().await {
            Ok(o) => {
                let total = o.tasks.iter().map(|t| t.conflicts()).sum::<u64>();
                self.update(|f| f.absorb(o));
                total
            }
            Err(e) => {
                let rejected = rejected(&e);
                self.update(|f| {
                    f.error = Some(e.to_string());
                    f.token_rejected = rejected;
                    // The node may come back with other tokens: ask again then.
                    f.access = None;
                });
                return;
            }
        };
        let audit = if logs { Some(self.control.audit(100).await) } else { None };
        let conflicts = if logs && *conflicts_seen != Some(total) {
            let c = self.control.conflicts(None, 100).await;
            if c.is_ok() {
                *conflicts_seen = Some(total);
            }
            Some(c)
        } else {
            None
        };
        // The node's own log lines, only those not read yet (a node older than the log
        // endpoint answers 404: nothing shown).
        let after = self.shared.lock().ok().and_then(|f| f.get(self.index)?.logs.back().map(|l| l.seq)).unwrap_or(0);
        let lines = self.control.logs(after, 500).await.unwrap_or_default();
        let verify = match followed_verify {
            Some(id) => self.control.verify_progress(&id).await.ok(),
            None => None,
        };
        let cluster = self.control.cluster().await;
        let followed_cutover = self.shared.lock().ok().and_then(|f| f.get(self.index)?.cutover_task.clone());
        let cutover = match &followed_cutover {
            Some(t) => self.control.cutover_status(t).await.ok(),
            None => None,
        };
        self.update(|f| {
            // A failed read keeps the last view: the nodes' records say who went away.
            if let Ok(view) = cluster {
                f.absorb_cluster(view, now_micros());
            }
            f.logs.extend(lines);
            while f.logs.len() > LOG_LINES {
                f.logs.pop_front();
            }
            if let Some(Ok(a)) = audit {
                f.audit = a;
            }
            if let Some(Ok(c)) = conflicts {
                f.conflicts = c;
            }
            if verify.is_some() {
                f.verify = verify;
            }
            if cutover.is_some() && f.cutover_task == followed_cutover {
                f.cutover = cutover;
            }
        });
    }

    async fn act(&self, request: Request) -> Result<String, String> {
        let c = &self.control;
        let who = self.actor.as_str();
        let result = match &request {
            Request::Pause(t) => c.pause(who, t).await.map(|_| format!("paused task {t}")),
            Request::Resume(t) => c.resume(who, t).await.map(|_| format!("resumed task {t}")),
            Request::Verify(t) | Request::Repair(t) => {
                let repair = matches!(request, Request::Repair(_));
                c.verify_start(who, t, repair).await.map(|p| {
                    let id = p.id.clone();
                    self.update(|f| f.verify = Some(p));
                    let what = if repair { "verify with repair" } else { "verify" };
                    format!("{what} {id} of task {t} started")
                })
            }
            Request::Freeze(e) => c.freeze(who, e).await.map(|_| format!("froze endpoint {e}")),
            Request::Unfreeze(e) => c.unfreeze(who, e).await.map(|_| format!("unfroze endpoint {e}")),
            Request::Cutover(t, action) => {
                let req = CutoverRequest { action: *action, quick_only: false };
                c.cutover(who, t, req).await.map(|v| step_message(t, &v))
            }
            Request::Rollback(t) => self.rollback_to_end(t).await,
            Request::Skip(t, req) => c.skip(who, t, req.clone()).await.map(|s| {
                let then = if s.resumed { "the task runs again" } else { "resume the task (r) to go on" };
                format!("task {t} {}: skipped the transaction at {} (audited); {then}", s.direction, s.position)
            }),
        };
        result.map_err(|e| e.to_string())
    }

    /// Runs a rollback step after step until it ends or a step fails, saying after each
    /// where it stands.
    async fn rollback_to_end(&self, t: &str) -> Result<String, ControlError> {
        let mut action = CutoverAction::Rollback;
        loop {
            let req = CutoverRequest { action, quick_only: false };
            let view = self.control.cutover(&self.actor, t, req).await?;
            let message = step_message(t, &view);
            let failed = view.outcome.as_ref().is_none_or(|r| !r.ok);
            let step = view.state.as_ref().map(|s| s.step);
            if failed || step.is_none_or(|s| s.terminal() || !s.rolling_back()) {
                return Ok(match step {
                    Some(s) if s.terminal() && !failed => format!("rollback of {t} done: {message}"),
                    _ => message,
                });
            }
            self.update(|f| f.message = Some(format!("rolling back {t}: {message}")));
            action = CutoverAction::Next;
        }
    }

    async fn run(self, mut requests: mpsc::Receiver<Request>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        let mut conflicts_seen = None;
        let mut background: Vec<JoinHandle<()>> = Vec::new();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    for b in background {
                        let _ = b.await;
                    }
                    return;
                }
                Some(request) = requests.recv() => {
                    if let Request::Cutover(..) | Request::Rollback(_) = request {
                        self.spawn_cutover(request, &shutdown, &mut background);
                        continue;
                    }
                    let message = match self.act(request).await {
                        Ok(m) => m,
                        Err(e) => format!("error: {e}"),
                    };
                    self.update(|f| f.message = Some(message));
                    let followed = self.followed_verify();
                    self.poll(followed, true, &mut conflicts_seen).await;
                }
                _ = tick.tick() => {
                    if self.token_rejected() {
                        continue;
                    }
                    let followed = self.followed_verify();
                    // Logs on the first poll, then every LOG_EVERY seconds.
                    self.poll(followed, n.is_multiple_of(LOG_EVERY), &mut conflicts_seen).await;
                    n += 1;
                }
            }
        }
    }

    /// Runs a cutover step in its own task (a drain or a full verify takes a while) while
    /// the poller goes on showing live values; it stops with the console.
    fn spawn_cutover(&self, request: Request, shutdown: &CancellationToken, background: &mut Vec<JoinHandle<()>>) {
        background.retain(|b| !b.is_finished());
        let me = Poller {
            control: self.control.clone(),
            index: self.index,
            shared: self.shared.clone(),
            actor: self.actor.clone(),
        };
        let stop = shutdown.clone();
        let what = match &request {
            Request::Rollback(t) => format!("the rollback of {t}"),
            Request::Cutover(t, _) => format!("a cutover step of {t}"),
            other => format!("{other:?}"),
        };
        self.update(|f| f.acting.push(what.clone()));
        background.push(tokio::spawn(async move {
            tokio::select! {
                biased;
                _ = stop.cancelled() => {}
                r = me.act(request) => {
                    let message = r.unwrap_or_else(|e| format!("error: {e}"));
                    me.update(|f| f.message = Some(message));
                }
            }
            me.update(|f| {
                if let Some(i) = f.acting.iter().position(|a| *a == what) {
                    f.acting.remove(i);
                }
            });
        }));
    }

    /// Whether the node refused the token: polling stops until the console restarts.
    fn token_rejected(&self) -> bool {
        self.shared.lock().ok().and_then(|f| f.get(self.index).map(|f| f.token_rejected)).unwrap_or(false)
    }

    /// The verify run still running on this node, if the console started one.
    fn followed_verify(&self) -> Option<String> {
        let feeds = self.shared.lock().ok()?;
        let v = feeds.get(self.index)?.verify.as_ref()?;
        (v.state == "running").then(|| v.id.clone())
    }
}

/// Whether an error is the node refusing the token (HTTP 401).
fn rejected(e: &ControlError) -> bool {
    matches!(e, ControlError::Unauthorized { .. } | ControlError::Remote { status: 401, .. })
}

/// One step's outcome in the footer's words.
fn step_message(t: &str, v: &CutoverView) -> String {
    match &v.outcome {
        Some(r) if r.ok => {
            format!("cutover of {t}: step {} done in {:.1} s — {}", r.step, r.millis as f64 / 1000.0, r.message)
        }
        Some(r) => format!("error: cutover of {t}: step {} failed: {}", r.step, r.message),
        None => format!("cutover of {t}: nothing ran"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_ten_minutes() {
        let mut h = History::default();
        for s in 0..700i64 {
            h.push(s * 1_000_000, Some(s as f64), 1.0);
        }
        assert_eq!(h.rate.len(), HISTORY_SECONDS + 1);
        assert_eq!(h.lag.front().map(|(t, _)| *t), Some(99_000_000));
    }

    #[test]
    fn a_feed_without_answers_is_stale() {
        let mut f = NodeFeed::new("http://x");
        assert!(f.stale(0));
        f.last_ok_us = Some(10_000_000);
        assert!(!f.stale(11_000_000));
        assert!(f.stale(20_000_000));
    }
}
