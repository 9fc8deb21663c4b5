//! Runs cutover steps: loads the task's state from the store, marks the step running,
//! runs it, records what it checked and saw (state, audit log), advances. Every step is
//! idempotent, so a step a crash interrupted is simply run again.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{
    Check, CutoverAction, CutoverRequest, CutoverState, CutoverView, FORWARD, LiveValues, ROLLBACK, Running, Step,
    StepRecord, StepView, endpoint,
};
use crate::config::{Config, Endpoint, Mode, Task};
use crate::connector::host::{host_name, pid_alive};
use crate::connector::{DirectionId, registry};
use crate::engine::plan_task;
use crate::engine::task::{DirectionSpec, prepare_target, prepare_target_at};
use crate::model::{Position, now_micros};
use crate::store::{Store, StoreError};
use crate::verify::blob::{BlobOptions, is_blob_task, verify_blob_task};
use crate::verify::progress::Progress;
use crate::verify::{Options, verify_task};

/// How long Drain (and the rollback's drain) waits before the step fails.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);
/// The test hook: Drain's limit in seconds instead of [`DRAIN_LIMIT`].
pub const DRAIN_LIMIT_ENV: &str = "FERRY_TEST_DRAIN_LIMIT";

fn drain_limit() -> Duration {
    std::env::var(DRAIN_LIMIT_ENV).ok().and_then(|v| v.parse().ok()).map(Duration::from_secs).unwrap_or(DRAIN_LIMIT)
}
/// How long Preflight waits for a freshly started direction to measure its lag.
const LAG_WAIT: Duration = Duration::from_secs(20);
/// The test hook: the name of a step inside which the process stops and waits to be
/// killed (tests SIGKILL it there, then resume).
pub const PAUSE_ENV: &str = "FERRY_CUTOVER_PAUSE_IN";

/// A cutover request that cannot be served; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum CutoverError {
    /// No such task in the task file.
    #[error("task {task:?} is not in the task file")]
    UnknownTask {
        /// The name asked for.
        task: String,
    },
    /// The request does not fit the task or the cutover's state.
    #[error("cutover of task {task}: {problem}\n  fix: {fix}")]
    Refused {
        /// The task.
        task: String,
        /// Why.
        problem: String,
        /// What to do.
        fix: String,
    },
    /// The metadata store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where the task runs: the machine stops and starts its directions through this.
pub trait TaskHost: Send + Sync {
    /// Stops the task's directions after their in-flight batch (nothing when stopped).
    fn stop_task(&self, actor: &str, task: &str) -> impl Future<Output = Result<(), String>> + Send;
    /// Starts the task in its current (stored) direction (nothing when running).
    fn start_task(&self, actor: &str, task: &str) -> impl Future<Output = Result<(), String>> + Send;
    /// Seconds behind of the task's running direction, once measured.
    fn lag_seconds(&self, task: &str) -> impl Future<Output = Option<f64>> + Send;
}

/// Tasks with a step running in this process: a second request is refused, not queued.
static BUSY: Mutex<Option<HashSet<String>>> = Mutex::new(None);

struct Busy(String);

impl Busy {
    fn take(task: &str) -> Option<Busy> {
        let mut busy = BUSY.lock().unwrap_or_else(|e| e.into_inner());
        busy.get_or_insert_with(HashSet::new).insert(task.to_string()).then(|| Busy(task.to_string()))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(set) = BUSY.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            set.remove(&self.0);
        }
    }
}

/// A step that did not complete: what it saw, and why.
struct Failed {
    checks: Vec<Check>,
    message: String,
}

type StepResult = Result<(Vec<Check>, String), Failed>;

fn check(name: impl Into<String>, seen: impl Into<String>, ok: bool) -> Check {
    Check { name: name.into(), seen: seen.into(), ok }
}

fn fail(checks: Vec<Check>, message: impl std::fmt::Display) -> Failed {
    Failed { checks, message: message.to_string() }
}

/// Stops here, forever, when the test hook names this step.
async fn pause_hook(step: Step) {
    if std::env::var(PAUSE_ENV).is_ok_and(|s| s == step.name()) {
        eprintln!("ferry: test hook: paused inside step {step}");
        std::future::pending::<()>().await;
    }
}

fn parse_position(text: &Option<String>, what: &str) -> Result<Position, String> {
    let text = text.as_deref().ok_or_else(|| format!("{what} was not recorded"))?;
    crate::connector::registry::parse_position(text).map_err(|e| e.to_string())
}

/// Since when (µs) a frozen files or objects endpoint is frozen: the time recorded by
/// an earlier run of the step, else the freezer's, else now.
async fn frozen_at(ep: &Endpoint, recorded: Option<i64>) -> i64 {
    if let Some(r) = recorded {
        return r;
    }
    endpoint::frozen_since(ep).await.ok().flatten().filter(|s| *s > 0).unwrap_or_else(now_micros)
}

/// The refusal of a step or rollback when no cutover was started.
fn unreachable_state<T>(task: &str) -> Result<T, CutoverError> {
    Err(CutoverError::Refused {
        task: task.to_string(),
        problem: "no cutover was started".into(),
        fix: "start one with `ferry cutover start` (see `ferry cutover plan`)".into(),
    })
}

/// The cutover of the tasks of one task file, over a store and where the tasks run.
pub struct Machine<'a, H: TaskHost> {
    /// The task file as written (the machine swaps directions itself).
    pub config: &'a Config,
    /// The metadata store.
    pub store: &'a Store,
    /// Where the tasks run.
    pub host: &'a H,
}

impl<H: TaskHost> Machine<'_, H> {
    fn task(&self, name: &str) -> Result<&Task, CutoverError> {
        self.config.task(name).ok_or_else(|| CutoverError::UnknownTask { task: name.to_string() })
    }

    fn refused(task: &str, problem: impl Into<String>, fix: impl Into<String>) -> CutoverError {
        CutoverError::Refused { task: task.to_string(), problem: problem.into(), fix: fix.into() }
    }

    async fn load(&self, task: &str) -> Result<Option<CutoverState>, CutoverError> {
        let Some(text) = self.store.load_cutover(task).await? else {
            return Ok(None);
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            Self::refused(
                task,
                format!("its saved state cannot be read: {e}"),
                "report this as a bug with the store file",
            )
        })
    }

    async fn save(&self, state: &CutoverState) -> Result<(), CutoverError> {
        let text = serde_json::to_string(state).unwrap_or_default();
        Ok(self.store.save_cutover(&state.task, &text).await?)
    }

    fn endpoint(&self, name: &str) -> Result<&Endpoint, String> {
        self.config.endpoint(name).ok_or_else(|| format!("endpoint {name:?} is not in the task file"))
    }

    /// The spec of the direction `from -> to` of the task (one-way, no snapshot).
    fn spec(&self, task: &Task, from: &str, to: &str) -> Result<DirectionSpec, String> {
        let mut t = task.clone();
        t.from = from.to_string();
        t.to = to.to_string();
        t.mode = Mode::OneWay;
        t.snapshot = false;
        plan_task(self.config, &t, &[])
            .into_iter()
            .next()
            .ok_or_else(|| format!("direction {from}->{to} cannot be planned"))
    }

    /// The task's cutover as it stands, with live values.
    pub async fn view(&self, task: &str) -> Result<CutoverView, CutoverError> {
        let t = self.task(task)?;
        let state = self.load(task).await?;
        Ok(self.build_view(t, state, None).await)
    }

    async fn build_view(&self, t: &Task, state: Option<CutoverState>, outcome: Option<StepRecord>) -> CutoverView {
        let (from, to) =
            state.as_ref().map(|s| (s.from.clone(), s.to.clone())).unwrap_or((t.from.clone(), t.to.clone()));
        let path: &[Step] = match &state {
            Some(s) if s.step.rolling_back() => &ROLLBACK,
            _ => &FORWARD,
        };
        let current = state.as_ref().map(|s| s.step).unwrap_or(Step::Preflight);
        let at = path.iter().position(|s| *s == current).unwrap_or(path.len());
        let steps = path
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let (title, checks) = step.describe(&from, &to);
                let last = state.as_ref().and_then(|s| s.history.iter().rev().find(|r| r.step == *step));
                let status = if i < at {
                    "done"
                } else if i > at {
                    "pending"
                } else if state.as_ref().is_some_and(|s| s.running.is_some()) {
                    "running"
                } else if state.as_ref().is_some_and(|s| s.last_error.is_some()) {
                    "failed"
                } else {
                    "next"
                };
                StepView {
                    step: *step,
                    title: title.to_string(),
                    checks,
                    state: status.to_string(),
                    millis: last.map(|r| r.millis),
                    confirm: step.needs_typed_confirmation(),
                }
            })
            .collect();
        let live = self.live(t).await;
        CutoverView { task: t.name.clone(), state, steps, live, outcome }
    }

    async fn live(&self, t: &Task) -> LiveValues {
        let (from, to) = match self.store.direction(&t.name).await {
            Ok(Some(d)) => d,
            _ => (t.from.clone(), t.to.clone()),
        };
        let mut live = LiveValues {
            direction: format!("{from}->{to}"),
            lag_seconds: self.host.lag_seconds(&t.name).await,
            ..LiveValues::default()
        };
        if let (Ok(src), Ok(dst)) = (self.endpoint(&from), self.endpoint(&to)) {
            let dir = DirectionId { task: t.name.clone(), from: from.clone(), to: to.clone() };
            let applied =
                registry::target_state(dst, &dir).await.ok().and_then(|s| s.checkpoint).and_then(|c| c.position);
            let head = registry::source_head(src).await.ok().flatten();
            if let (Some(a), Some(h)) = (applied, head) {
                live.changes_pending = a.changes_until(&h);
            }
            for ep in [src, dst] {
                if let Ok(Some(since)) = endpoint::frozen_since(ep).await {
                    live.frozen.push((ep.name.clone(), since));
                }
            }
        }
        live
    }

    /// Runs what the operator asked: begin (Preflight), the next step, or the rollback's
    /// next step. A step that fails is recorded and returned in the view's outcome; a
    /// request that does not fit is refused with nothing changed.
    pub async fn act(&self, actor: &str, task: &str, req: CutoverRequest) -> Result<CutoverView, CutoverError> {
        let t = self.task(task)?;
        let Some(_busy) = Busy::take(task) else {
            return Err(Self::refused(
                task,
                "a cutover step of this task is running in this process",
                "wait for it to finish (`ferry cutover status`)",
            ));
        };
        let state = self.load(task).await?;
        Self::admit(t, state.as_ref(), req.action)?;
        let mut state = match (req.action, state) {
            (CutoverAction::Start, _) => CutoverState {
                task: task.to_string(),
                from: t.from.clone(),
                to: t.to.clone(),
                step: Step::Preflight,
                quick_only: req.quick_only,
                started_us: now_micros(),
                source_head: None,
                target_head: None,
                reversed: None,
                rollback_target_head: None,
                restore_head: None,
                frozen_us: None,
                rollback_frozen_us: None,
                history: Vec::new(),
                running: None,
                last_error: None,
            },
            (CutoverAction::Rollback, Some(mut s)) if !s.step.rolling_back() => {
                // Whether the reverse direction may have run decides what there is to undo.
                s.reversed = Some(self.store.direction(task).await?.is_some());
                s.step = Step::RollbackFreezeTarget;
                s.last_error = None;
                self.save(&s).await?;
                self.store
                    .audit(actor, "cutover.rollback", Some(task), &format!("rollback requested by {actor}"))
                    .await?;
                s
            }
            (_, Some(s)) => s,
            (_, None) => unreachable_state(task)?,
        };
        let record = self.run_step(actor, t, &mut state).await?;
        Ok(self.build_view(t, Some(state), Some(record)).await)
    }

    /// Refuses, with nothing changed, a request that does not fit the task or the state.
    pub async fn check(&self, task: &str, action: CutoverAction) -> Result<(), CutoverError> {
        let t = self.task(task)?;
        let state = self.load(task).await?;
        Self::admit(t, state.as_ref(), action)
    }

    fn admit(t: &Task, state: Option<&CutoverState>, action: CutoverAction) -> Result<(), CutoverError> {
        let task = t.name.as_str();
        if t.mode == Mode::TwoWay {
            return Err(Self::refused(
                task,
                "it is two-way: both sides already take writes, there is nothing to cut over",
                "cut over one-way tasks; to stop writes on one side of a two-way task, freeze that endpoint",
            ));
        }
        if !t.maps.is_empty() {
            return Err(Self::refused(
                task,
                "it renames tables ([[task.map]]), and the reverse direction cannot undo renames",
                "cut over a task without [[task.map]]",
            ));
        }
        if let Some(r) = state.and_then(|s| s.running.as_ref()) {
            let me = r.host == host_name() && r.pid == std::process::id();
            let alive = if r.host == host_name() { pid_alive(r.pid) } else { true };
            if alive && !me {
                return Err(Self::refused(
                    task,
                    format!("step {} is being run by pid {} on {}", r.step, r.pid, r.host),
                    "wait for it to finish, or stop that process; a dead process's step is resumed",
                ));
            }
        }
        match (action, state) {
            (CutoverAction::Start, Some(s)) if !s.step.terminal() => Err(Self::refused(
                task,
                format!("a cutover is already in progress (next step: {})", s.step),
                "continue it with `ferry cutover next` or undo it with `ferry cutover rollback`",
            )),
            (CutoverAction::Start, Some(s)) if s.step == Step::Done => Err(Self::refused(
                task,
                format!("it was cut over already: it runs {}->{}", s.to, s.from),
                "`ferry cutover rollback` moves it back",
            )),
            (CutoverAction::Start, _) => Ok(()),
            (_, None) => unreachable_state(task),
            (CutoverAction::Rollback, Some(s)) if !s.step.rolling_back() => Ok(()),
            (_, Some(s)) if s.step.terminal() => Err(Self::refused(
                task,
                format!("the cutover has ended ({}); nothing is left to run", s.step),
                if s.step == Step::Done {
                    "`ferry cutover rollback` moves the task back"
                } else {
                    "start a new one with `ferry cutover start`"
                },
            )),
            (_, Some(_)) => Ok(()),
        }
    }

    async fn run_step(&self, actor: &str, t: &Task, state: &mut CutoverState) -> Result<StepRecord, CutoverError> {
        let step = state.step;
        let started_us = now_micros();
        let clock = Instant::now();
        // Preflight changes nothing: a refused start leaves no state behind.
        if step != Step::Preflight {
            state.running = Some(Running { step, host: host_name(), pid: std::process::id(), since_us: started_us });
            self.save(state).await?;
        }
        let result = match step {
            Step::Preflight => self.preflight(t, state).await,
            Step::Freeze => self.freeze(t, state).await,
            Step::Drain => self.drain(actor, t, state).await,
            Step::Verify => self.verify(actor, t, state).await,
            Step::Switch => self.switch(actor, t, state).await,
            Step::OpenTarget => self.open_target(state).await,
            Step::RollbackFreezeTarget => self.rollback_freeze(t, state).await,
            Step::RollbackDrain => self.rollback_drain(actor, t, state).await,
            Step::RollbackReopenSource => self.rollback_reopen(actor, t, state).await,
            Step::RollbackRestore => self.rollback_restore(actor, t, state).await,
            Step::Done | Step::RolledBack => Ok((Vec::new(), "nothing to do".into())),
        };
        let (ok, checks, message) = match result {
            Ok((checks, message)) => (true, checks, message),
            Err(f) => (false, f.checks, f.message),
        };
        let record = StepRecord {
            step,
            actor: actor.to_string(),
            started_us,
            millis: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
            ok,
            checks,
            message: message.clone(),
        };
        state.running = None;
        state.history.push(record.clone());
        if ok {
            state.step = step.next();
            state.last_error = None;
        } else {
            state.last_error = Some(message);
        }
        if ok || step != Step::Preflight {
            self.save(state).await?;
        }
        let action = format!("cutover.{}{}", step.name(), if ok { "" } else { ".failed" });
        let detail = serde_json::to_string(&record).unwrap_or_default();
        self.store.audit(actor, &action, Some(&t.name), &detail).await?;
        Ok(record)
    }

    async fn preflight(&self, t: &Task, state: &CutoverState) -> StepResult {
        let mut checks = Vec::new();
        for name in [&state.from, &state.to] {
            match self.endpoint(name) {
                Ok(ep) => match endpoint::reachable(ep).await {
                    Ok(()) => checks.push(check(format!("endpoint {name} reachable"), "answers", true)),
                    Err(e) => checks.push(check(format!("endpoint {name} reachable"), e.to_string(), false)),
                },
                Err(e) => checks.push(check(format!("endpoint {name} reachable"), e, false)),
            }
        }
        let max = t.cutover.max_lag_seconds as f64;
        let waited = Instant::now();
        let mut lag = self.host.lag_seconds(&t.name).await;
        while lag.is_none() && waited.elapsed() < LAG_WAIT {
            tokio::time::sleep(Duration::from_millis(200)).await;
            lag = self.host.lag_seconds(&t.name).await;
        }
        checks.push(match lag {
            Some(l) => check(
                format!("lag under max_lag_seconds = {}", t.cutover.max_lag_seconds),
                format!("{l:.2} s"),
                l < max,
            ),
            None => check("lag under max_lag_seconds", "not measured: the task does not stream here", false),
        });
        match self.store.last_verify(&t.name).await {
            Ok(Some(v)) => {
                let age = Duration::from_micros(u64::try_from(now_micros() - v.at_us).unwrap_or(0));
                let clean = v.action == "verify.clean";
                let young = age <= t.cutover.verify_max_age;
                checks.push(check(
                    format!("last verify clean and younger than {}s", t.cutover.verify_max_age.as_secs()),
                    format!("{} {}s ago: {}", if clean { "clean" } else { "NOT clean" }, age.as_secs(), v.detail),
                    clean && young,
                ));
            }
            Ok(None) => checks.push(check("last verify clean", "no verify recorded: run `ferry verify` first", false)),
            Err(e) => checks.push(check("last verify clean", e.to_string(), false)),
        }
        let mut reverse = t.clone();
        reverse.from = state.to.clone();
        reverse.to = state.from.clone();
        let (_, problems) = crate::engine::preflight::preflight(self.config, &[&reverse]).await;
        let seen = if problems.is_empty() {
            "possible".to_string()
        } else {
            problems.iter().map(|p| format!("{}: {}", p.subject, p.message)).collect::<Vec<_>>().join("; ")
        };
        checks.push(check(
            format!("reverse direction {}->{} possible", state.to, state.from),
            seen,
            problems.is_empty(),
        ));
        pause_hook(Step::Preflight).await;
        let failed: Vec<String> = checks.iter().filter(|c| !c.ok).map(|c| format!("{}: {}", c.name, c.seen)).collect();
        if failed.is_empty() {
            Ok((checks, "every check passed".into()))
        } else {
            let message = format!("preflight refused: {}", failed.join("; "));
            Err(fail(checks, message))
        }
    }

    async fn freeze(&self, t: &Task, state: &mut CutoverState) -> StepResult {
        let mut checks = Vec::new();
        let ep = self.endpoint(&state.from).map_err(|e| fail(Vec::new(), e))?;
        let frozen = endpoint::freeze(ep, t, &format!("cutover of task {}", t.name))
            .await
            .map_err(|e| fail(Vec::new(), format!("freeze of {} failed: {e}", ep.name)))?;
        checks.push(check(
            format!("application writes on {} stopped", ep.name),
            format!("{} sessions ended / tables guarded", frozen.count),
            true,
        ));
        checks.push(check("probe write as an application account refused", frozen.probe.clone(), true));
        pause_hook(Step::Freeze).await;
        if registry::is_blob(ep) {
            let since = frozen_at(ep, state.frozen_us).await;
            state.frozen_us = Some(since);
            checks.push(check(format!("freeze time of {} recorded", ep.name), since.to_string(), true));
            return Ok((checks, format!("{} frozen since {since} µs", ep.name)));
        }
        let head = endpoint::head(ep).await.map_err(|e| fail(checks.clone(), e))?;
        checks.push(check(format!("head of {} recorded", ep.name), head.to_string(), true));
        state.source_head = Some(head.to_string());
        Ok((checks, format!("{} frozen at {head}", ep.name)))
    }

    /// Waits until `dir`'s target has applied `until`; the checks say what it saw.
    async fn wait_applied(&self, dir: &DirectionId, until: &Position, checks: &mut Vec<Check>) -> Result<(), Failed> {
        let target = self.endpoint(&dir.to).map_err(|e| fail(checks.clone(), e))?;
        let start = Instant::now();
        loop {
            let applied =
                registry::target_state(target, dir).await.ok().and_then(|s| s.checkpoint).and_then(|c| c.position);
            let reached = applied.as_ref().and_then(|a| a.stream_cmp(until)).is_some_and(|o| o.is_ge());
            if reached {
                let seen = applied.map(|a| a.to_string()).unwrap_or_default();
                checks.push(check(format!("{dir} applied up to {until}"), seen, true));
                return Ok(());
            }
            if start.elapsed() > drain_limit() {
                let seen = applied.map(|a| a.to_string()).unwrap_or_else(|| "nothing".into());
                checks.push(check(format!("{dir} applied up to {until}"), seen.clone(), false));
                return Err(fail(
                    checks.clone(),
                    format!(
                        "{dir} has applied up to {seen} after {}s, not {until}; is the task running? run the step again",
                        drain_limit().as_secs()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Files and objects: waits until `dir`'s target recorded a full pass that began
    /// after the freeze (and `quiet` seconds after the last change it carried) and
    /// found nothing to carry. Changes that keep appearing (a writer the freeze cannot
    /// stop) fail the step when the limit is reached.
    async fn wait_drained(
        &self,
        dir: &DirectionId,
        frozen_us: i64,
        quiet: u64,
        checks: &mut Vec<Check>,
    ) -> Result<(), Failed> {
        let target = self.endpoint(&dir.to).map_err(|e| fail(checks.clone(), e))?;
        let quiet_us = i64::try_from(quiet).unwrap_or(0).saturating_mul(1_000_000);
        let name = format!(
            "{dir}: a full pass begun after the freeze and {quiet}s after the last change found nothing to carry"
        );
        let start = Instant::now();
        loop {
            let cp = registry::target_state(target, dir).await.ok().and_then(|s| s.blob);
            if cp.as_ref().is_some_and(|cp| cp.drained(frozen_us, quiet_us)) {
                let passes = cp.map(|c| c.passes).unwrap_or(0);
                checks.push(check(name, format!("pass {passes} clean"), true));
                return Ok(());
            }
            if start.elapsed() > drain_limit() {
                let seen = match cp {
                    Some(cp) => format!(
                        "last change carried {} after the freeze; last pass carried {} change(s), {} unreadable",
                        cp.changed_us
                            .map_or("nothing".to_string(), |c| format!("{:.1}s", (c - frozen_us) as f64 / 1e6)),
                        cp.done_changes,
                        cp.done_failed
                    ),
                    None => "no pass recorded".into(),
                };
                checks.push(check(name, seen.clone(), false));
                return Err(fail(
                    checks.clone(),
                    format!(
                        "{dir}: changes still appear {}s after the freeze ({seen}): a writer the freeze cannot stop (a file held open since before it, another mount, an NFS client) is still writing, or a path cannot be read; stop it, then run the step again (`ferry cutover next`), or roll back",
                        drain_limit().as_secs()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn drain(&self, actor: &str, t: &Task, state: &mut CutoverState) -> StepResult {
        let mut checks = Vec::new();
        // A paused task never drains.
        self.host.start_task(actor, &t.name).await.map_err(|e| fail(Vec::new(), e))?;
        if let Some(frozen) = state.frozen_us {
            let dir = DirectionId { task: t.name.clone(), from: state.from.clone(), to: state.to.clone() };
            self.wait_drained(&dir, frozen, t.cutover.quiet_seconds, &mut checks).await?;
            pause_hook(Step::Drain).await;
            let reverse = self.spec(t, &state.to, &state.from).map_err(|e| fail(checks.clone(), e))?;
            prepare_target(&reverse)
                .await
                .map_err(|e| fail(checks.clone(), format!("preparing {}: {e}", reverse.id)))?;
            checks.push(check(format!("{} possible", reverse.id), "its endpoints pair", true));
            return Ok((checks, format!("drained; {} starts with a full pass", reverse.id)));
        }
        let until = parse_position(&state.source_head, "the source head at freeze").map_err(|e| fail(Vec::new(), e))?;
        let dir = DirectionId { task: t.name.clone(), from: state.from.clone(), to: state.to.clone() };
        self.wait_applied(&dir, &until, &mut checks).await?;
        pause_hook(Step::Drain).await;
        // Capture on the target before its head is read: the reverse direction starts there.
        let reverse = self.spec(t, &state.to, &state.from).map_err(|e| fail(checks.clone(), e))?;
        prepare_target(&reverse).await.map_err(|e| fail(checks.clone(), format!("preparing {}: {e}", reverse.id)))?;
        if state.target_head.is_none() {
            let to = self.endpoint(&state.to).map_err(|e| fail(checks.clone(), e))?;
            let head = endpoint::head(to).await.map_err(|e| fail(checks.clone(), e))?;
            state.target_head = Some(head.to_string());
        }
        let head = state.target_head.clone().unwrap_or_default();
        checks.push(check(format!("head of {} recorded for {}", state.to, reverse.id), head.clone(), true));
        Ok((checks, format!("drained; {} starts at {head}", reverse.id)))
    }

    async fn verify(&self, actor: &str, t: &Task, state: &CutoverState) -> StepResult {
        let mut checks = Vec::new();
        let mut task = t.clone();
        task.from = state.from.clone();
        task.to = state.to.clone();
        let modes: &[bool] = if state.quick_only { &[true] } else { &[true, false] };
        if is_blob_task(self.config, &task) {
            return self.verify_blob(actor, &task, modes).await;
        }
        for &quick in modes {
            let opts = Options { quick, ..Options::default() };
            let name = if quick { "verify --quick identical" } else { "full verify identical" };
            let report = verify_task(self.config, &task, &opts, self.store, &Progress::none())
                .await
                .map_err(|e| fail(checks.clone(), format!("{name}: {e}")))?;
            let seen = format!(
                "{} ({} confirmed differences, {} rows, {:.1}s)",
                if report.identical { "identical" } else { "DIFFERENT" },
                report.confirmed,
                report.rows_checked,
                report.seconds
            );
            crate::verify::record(self.store, actor, &report, "in cutover")
                .await
                .map_err(|e| fail(checks.clone(), e))?;
            checks.push(check(name, seen, report.identical));
            if !report.identical {
                return Err(fail(checks, format!("differences: {}", report.text().trim())));
            }
            pause_hook(Step::Verify).await;
        }
        Ok((checks, "both sides identical".into()))
    }

    /// The Verify step of a files or objects task: quick (size and mtime/ETag), then
    /// full (content compared, a bucket's matching ETag standing for its bytes) unless quick-only.
    async fn verify_blob(&self, actor: &str, task: &Task, modes: &[bool]) -> StepResult {
        let mut checks = Vec::new();
        for &quick in modes {
            let name = if quick { "verify --quick identical" } else { "full verify identical" };
            let opts = BlobOptions { quick, repair: false, manifest: None, node_id: self.config.node.id.clone() };
            let report = verify_blob_task(self.config, task, &opts)
                .await
                .map_err(|e| fail(checks.clone(), format!("{name}: {e}")))?;
            crate::verify::record(self.store, actor, &report.as_report(), "in cutover")
                .await
                .map_err(|e| fail(checks.clone(), e))?;
            let seen = format!(
                "{} ({} differing paths, {} paths)",
                if report.identical() { "identical" } else { "DIFFERENT" },
                report.differences.len(),
                report.checked
            );
            checks.push(check(name, seen, report.identical()));
            if !report.identical() {
                return Err(fail(checks, format!("differences: {}", report.text().trim())));
            }
            pause_hook(Step::Verify).await;
        }
        Ok((checks, "both sides identical".into()))
    }

    async fn switch(&self, actor: &str, t: &Task, state: &CutoverState) -> StepResult {
        let mut checks = Vec::new();
        // Files and objects have no head: the reverse direction starts with a full pass
        // (compare mode: nothing differs after Verify, so nothing is copied).
        let at = match state.frozen_us {
            Some(_) => None,
            None => {
                Some(parse_position(&state.target_head, "the target head at drain").map_err(|e| fail(Vec::new(), e))?)
            }
        };
        self.host.stop_task(actor, &t.name).await.map_err(|e| fail(Vec::new(), e))?;
        checks.push(check(format!("{}->{} stopped", state.from, state.to), "stopped", true));
        let reverse = self.spec(t, &state.to, &state.from).map_err(|e| fail(checks.clone(), e))?;
        prepare_target_at(&reverse, at.as_ref())
            .await
            .map_err(|e| fail(checks.clone(), format!("{}: {e}", reverse.id)))?;
        let start = at.as_ref().map_or("a full pass".to_string(), |a| a.to_string());
        checks.push(check(format!("{} starts at", reverse.id), start.clone(), true));
        self.store.set_direction(&t.name, Some((&state.to, &state.from))).await.map_err(|e| fail(checks.clone(), e))?;
        checks.push(check("task direction stored", reverse.id.direction(), true));
        pause_hook(Step::Switch).await;
        self.host.start_task(actor, &t.name).await.map_err(|e| fail(checks.clone(), e))?;
        checks.push(check(format!("{} started", reverse.id), "running", true));
        Ok((checks, format!("the task runs {} from {start}", reverse.id.direction())))
    }

    async fn open_target(&self, state: &CutoverState) -> StepResult {
        let ep = self.endpoint(&state.to).map_err(|e| fail(Vec::new(), e))?;
        endpoint::unfreeze(ep).await.map_err(|e| fail(Vec::new(), format!("unfreezing {}: {e}", ep.name)))?;
        pause_hook(Step::OpenTarget).await;
        let since = endpoint::frozen_since(ep).await.map_err(|e| fail(Vec::new(), e))?;
        let checks = vec![check(
            format!("{} takes application writes", ep.name),
            if since.is_none() { "not frozen" } else { "STILL FROZEN" },
            since.is_none(),
        )];
        if since.is_some() {
            return Err(fail(checks, format!("{} is still frozen", ep.name)));
        }
        Ok((checks, format!("{} is open", ep.name)))
    }

    async fn rollback_freeze(&self, t: &Task, state: &mut CutoverState) -> StepResult {
        if state.reversed != Some(true) {
            let c = check("reverse direction ran", "no: nothing was written to the target", true);
            return Ok((vec![c], "nothing to freeze".into()));
        }
        let ep = self.endpoint(&state.to).map_err(|e| fail(Vec::new(), e))?;
        let frozen = endpoint::freeze(ep, t, &format!("rollback of the cutover of task {}", t.name))
            .await
            .map_err(|e| fail(Vec::new(), format!("freeze of {} failed: {e}", ep.name)))?;
        let mut checks = vec![
            check(
                format!("application writes on {} stopped", ep.name),
                format!("{} sessions ended / tables guarded", frozen.count),
                true,
            ),
            check("probe write as an application account refused", frozen.probe, true),
        ];
        pause_hook(Step::RollbackFreezeTarget).await;
        if registry::is_blob(ep) {
            let since = frozen_at(ep, state.rollback_frozen_us).await;
            state.rollback_frozen_us = Some(since);
            checks.push(check(format!("freeze time of {} recorded", ep.name), since.to_string(), true));
            return Ok((checks, format!("{} frozen since {since} µs", ep.name)));
        }
        if state.rollback_target_head.is_none() {
            let head = endpoint::head(ep).await.map_err(|e| fail(checks.clone(), e))?;
            state.rollback_target_head = Some(head.to_string());
        }
        let head = state.rollback_target_head.clone().unwrap_or_default();
        checks.push(check(format!("head of {} recorded", ep.name), head.clone(), true));
        Ok((checks, format!("{} frozen at {head}", ep.name)))
    }

    async fn rollback_drain(&self, actor: &str, t: &Task, state: &CutoverState) -> StepResult {
        if state.reversed != Some(true) {
            return Ok((vec![check("reverse direction ran", "no", true)], "nothing to drain".into()));
        }
        let mut checks = Vec::new();
        self.host.start_task(actor, &t.name).await.map_err(|e| fail(Vec::new(), e))?;
        if let Some(frozen) = state.rollback_frozen_us {
            let dir = DirectionId { task: t.name.clone(), from: state.to.clone(), to: state.from.clone() };
            self.wait_drained(&dir, frozen, t.cutover.quiet_seconds, &mut checks).await?;
            pause_hook(Step::RollbackDrain).await;
            return Ok((checks, format!("{} has every write made on {}", state.from, state.to)));
        }
        let until = parse_position(&state.rollback_target_head, "the target head at the rollback's freeze")
            .map_err(|e| fail(Vec::new(), e))?;
        let dir = DirectionId { task: t.name.clone(), from: state.to.clone(), to: state.from.clone() };
        self.wait_applied(&dir, &until, &mut checks).await?;
        pause_hook(Step::RollbackDrain).await;
        Ok((checks, format!("{} has every write made on {}", state.from, state.to)))
    }

    async fn rollback_reopen(&self, actor: &str, t: &Task, state: &mut CutoverState) -> StepResult {
        let mut checks = Vec::new();
        let ep = self.endpoint(&state.from).map_err(|e| fail(Vec::new(), e))?;
        if state.reversed == Some(true) {
            self.host.stop_task(actor, &t.name).await.map_err(|e| fail(Vec::new(), e))?;
            checks.push(check(format!("{}->{} stopped", state.to, state.from), "stopped", true));
            // Files and objects have no head: the original direction starts with a full pass.
            let blob = registry::is_blob(ep);
            if !blob && state.restore_head.is_none() {
                let head = endpoint::head(ep).await.map_err(|e| fail(checks.clone(), e))?;
                state.restore_head = Some(head.to_string());
                // Saved before the source opens: writes after this head must be carried.
                self.save(state).await.map_err(|e| fail(checks.clone(), e))?;
            }
            let at = match blob {
                true => None,
                false => {
                    Some(parse_position(&state.restore_head, "the source head").map_err(|e| fail(checks.clone(), e))?)
                }
            };
            let forward = self.spec(t, &state.from, &state.to).map_err(|e| fail(checks.clone(), e))?;
            prepare_target_at(&forward, at.as_ref())
                .await
                .map_err(|e| fail(checks.clone(), format!("{}: {e}", forward.id)))?;
            let start = at.as_ref().map_or("a full pass".to_string(), |a| a.to_string());
            checks.push(check(format!("{} starts at", forward.id), start, true));
        }
        pause_hook(Step::RollbackReopenSource).await;
        endpoint::unfreeze(ep).await.map_err(|e| fail(checks.clone(), format!("unfreezing {}: {e}", ep.name)))?;
        checks.push(check(format!("{} takes application writes", ep.name), "not frozen", true));
        Ok((checks, format!("{} is open", ep.name)))
    }

    async fn rollback_restore(&self, actor: &str, t: &Task, state: &CutoverState) -> StepResult {
        let mut checks = Vec::new();
        self.store.set_direction(&t.name, None).await.map_err(|e| fail(Vec::new(), e))?;
        checks.push(check("task direction", format!("{}->{} (the task file's)", state.from, state.to), true));
        pause_hook(Step::RollbackRestore).await;
        self.host.start_task(actor, &t.name).await.map_err(|e| fail(checks.clone(), e))?;
        checks.push(check(format!("{}->{} started", state.from, state.to), "running", true));
        Ok((checks, format!("the task runs {}->{} again", state.from, state.to)))
    }
}
