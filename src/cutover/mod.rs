//! Cutover and rollback (docs/cutover.md): a persisted, resumable, audited state machine
//! per task, run where the task runs. Preflight -> Freeze source -> Drain -> Verify ->
//! Switch -> Open target -> Done, and from any step a rollback: freeze the target,
//! drain the reverse direction, reopen the source, restore the original direction.
//!
//! The state lives in the metadata store and is saved before and after every step, so a
//! process killed inside a step resumes by running that step again: every step is
//! idempotent. After Switch the task's direction lives in the store too and overrides
//! `from`/`to` of the task file ([`apply_directions`]).

pub mod endpoint;
pub mod machine;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::store::{Store, StoreError};

/// One step of a cutover or of its rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Checks only: lag, last verify, endpoints, reverse direction.
    Preflight,
    /// Stop application writes on the source.
    Freeze,
    /// Wait until the target applied everything up to the source head at freeze time.
    Drain,
    /// Quick verify, and a full one unless quick-only.
    Verify,
    /// Start the reverse direction from the target's position recorded by Drain.
    Switch,
    /// Lift any freeze on the target.
    OpenTarget,
    /// The cutover is complete.
    Done,
    /// Rollback: freeze the target.
    RollbackFreezeTarget,
    /// Rollback: wait until the reverse direction applied the target's head.
    RollbackDrain,
    /// Rollback: the original direction is set to start at the source's head; the source takes writes again.
    RollbackReopenSource,
    /// Rollback: the original direction runs again.
    RollbackRestore,
    /// The rollback is complete.
    RolledBack,
}

/// The forward steps, in order.
pub const FORWARD: [Step; 6] =
    [Step::Preflight, Step::Freeze, Step::Drain, Step::Verify, Step::Switch, Step::OpenTarget];

/// The rollback steps, in order.
pub const ROLLBACK: [Step; 4] =
    [Step::RollbackFreezeTarget, Step::RollbackDrain, Step::RollbackReopenSource, Step::RollbackRestore];

impl Step {
    /// The step's name as the CLI, API and test hook spell it.
    pub fn name(self) -> &'static str {
        match self {
            Step::Preflight => "preflight",
            Step::Freeze => "freeze",
            Step::Drain => "drain",
            Step::Verify => "verify",
            Step::Switch => "switch",
            Step::OpenTarget => "open-target",
            Step::Done => "done",
            Step::RollbackFreezeTarget => "rollback-freeze-target",
            Step::RollbackDrain => "rollback-drain",
            Step::RollbackReopenSource => "rollback-reopen-source",
            Step::RollbackRestore => "rollback-restore",
            Step::RolledBack => "rolled-back",
        }
    }

    /// Whether nothing is left to run.
    pub fn terminal(self) -> bool {
        matches!(self, Step::Done | Step::RolledBack)
    }

    /// Whether this step belongs to a rollback.
    pub fn rolling_back(self) -> bool {
        ROLLBACK.contains(&self) || self == Step::RolledBack
    }

    /// Whether the console asks for the task's name before running it.
    pub fn needs_typed_confirmation(self) -> bool {
        matches!(self, Step::Freeze | Step::Switch | Step::RollbackFreezeTarget)
    }

    /// The step after this one.
    pub fn next(self) -> Step {
        let after = |steps: &[Step], done: Step| {
            steps.iter().position(|s| *s == self).and_then(|i| steps.get(i + 1).copied()).unwrap_or(done)
        };
        if self.rolling_back() { after(&ROLLBACK, Step::RolledBack) } else { after(&FORWARD, Step::Done) }
    }

    /// What the step does and checks, for `plan` and the console.
    pub fn describe(self, from: &str, to: &str) -> (&'static str, Vec<String>) {
        match self {
            Step::Preflight => (
                "Preflight",
                vec![
                    "lag under [task.cutover] max_lag_seconds".into(),
                    "last verify clean and younger than verify_max_age".into(),
                    format!("endpoints {from} and {to} reachable"),
                    format!("reverse direction {to}->{from} possible (privileges, capture on {to})"),
                ],
            ),
            Step::Freeze => (
                "Freeze source",
                vec![
                    format!("application writes on {from} stopped ([task.cutover] freeze), their sessions ended"),
                    "a probe write as an application account is refused (else the freeze is undone)".into(),
                    format!("head of {from} recorded"),
                ],
            ),
            Step::Drain => (
                "Drain",
                vec![
                    format!("{to} has applied everything up to the head of {from} recorded at freeze"),
                    format!("capture on {to} ready; its head recorded for the reverse direction"),
                ],
            ),
            Step::Verify => (
                "Verify",
                vec!["verify --quick identical".into(), "full verify identical (unless --quick-only)".into()],
            ),
            Step::Switch => (
                "Switch",
                vec![
                    format!("{from}->{to} stopped"),
                    format!("{to}->{from} starts at the head of {to} recorded by Drain"),
                    format!("the task's direction is {to}->{from} from now on (stored)"),
                ],
            ),
            Step::OpenTarget => ("Open target", vec![format!("freeze on {to} lifted: applications write there")]),
            Step::Done => ("Done", Vec::new()),
            Step::RollbackFreezeTarget => (
                "Rollback: freeze target",
                vec![format!("application writes on {to} stopped (if the reverse direction ran); head recorded")],
            ),
            Step::RollbackDrain => (
                "Rollback: drain",
                vec![format!("{from} has applied everything up to the head of {to} recorded at freeze")],
            ),
            Step::RollbackReopenSource => (
                "Rollback: reopen source",
                vec![format!("{from}->{to} set to start at the head of {from}"), format!("freeze on {from} lifted")],
            ),
            Step::RollbackRestore => {
                ("Rollback: restore direction", vec![format!("the task runs {from}->{to} again, as the file says")])
            }
            Step::RolledBack => ("Rolled back", Vec::new()),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One check a step made: what it expected and what it saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// What was seen.
    pub seen: String,
    /// Whether it passed.
    pub ok: bool,
}

/// One run of a step, as the audit log and `status` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step.
    pub step: Step,
    /// Who ran it (`user@node`).
    pub actor: String,
    /// When it started (µs).
    pub started_us: i64,
    /// How long it took (ms).
    pub millis: u64,
    /// Whether it completed.
    pub ok: bool,
    /// What it checked and saw.
    pub checks: Vec<Check>,
    /// Its outcome in words.
    pub message: String,
}

/// The process running a step right now (a crash leaves it behind; a restart resumes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Running {
    /// The step.
    pub step: Step,
    /// Host of the process.
    pub host: String,
    /// Its pid.
    pub pid: u32,
    /// Since when (µs).
    pub since_us: i64,
}

/// The persisted state of a task's cutover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CutoverState {
    /// The task.
    pub task: String,
    /// The task file's source (the cutover moves writes away from it).
    pub from: String,
    /// The task file's target.
    pub to: String,
    /// The next step to run (the current one while `running`).
    pub step: Step,
    /// Only the quick verify in the Verify step.
    pub quick_only: bool,
    /// When the cutover started (µs).
    pub started_us: i64,
    /// Head of `from` recorded right after the freeze.
    pub source_head: Option<String>,
    /// Head of `to` recorded when Drain finished (where the reverse direction starts).
    pub target_head: Option<String>,
    /// Rollback: whether the reverse direction had been set when the rollback began.
    pub reversed: Option<bool>,
    /// Rollback: head of `to` recorded right after its freeze.
    pub rollback_target_head: Option<String>,
    /// Rollback: head of `from` where the original direction starts again.
    pub restore_head: Option<String>,
    /// Files and objects (no change stream, no head): since when `from` is frozen (µs);
    /// Drain waits for a full pass begun after it.
    #[serde(default)]
    pub frozen_us: Option<i64>,
    /// Files and objects, rollback: since when `to` is frozen (µs).
    #[serde(default)]
    pub rollback_frozen_us: Option<i64>,
    /// Every step run so far.
    pub history: Vec<StepRecord>,
    /// A step in progress.
    pub running: Option<Running>,
    /// The last step's failure, until a step succeeds.
    pub last_error: Option<String>,
}

/// Where a task's cutover stands, in a line: what the Overview, the node API's task list
/// and `ferry status` show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CutoverBrief {
    /// The next step to run (the current one while `running`).
    pub step: Step,
    /// The task file's source.
    pub from: String,
    /// The task file's target.
    pub to: String,
    /// When the cutover started (µs).
    pub started_us: i64,
    /// Whether a process is running `step` right now.
    pub running: bool,
    /// The last step's failure, until a step succeeds.
    pub last_error: Option<String>,
}

impl CutoverBrief {
    /// Whether the cutover is under way: past Preflight and not ended. Quitting a console
    /// then leaves endpoints frozen or a step half-run.
    pub fn in_progress(&self) -> bool {
        !self.step.terminal() && (self.step != Step::Preflight || self.running)
    }

    /// `next step drain`, `step drain running`, `step drain failed`, `done`, `rolled-back`.
    pub fn describe(&self) -> String {
        if self.step.terminal() {
            return self.step.to_string();
        }
        match (self.running, &self.last_error) {
            (true, _) => format!("step {} running", self.step),
            (false, Some(_)) => format!("step {} failed", self.step),
            (false, None) => format!("next step {}", self.step),
        }
    }
}

impl From<&CutoverState> for CutoverBrief {
    fn from(s: &CutoverState) -> Self {
        CutoverBrief {
            step: s.step,
            from: s.from.clone(),
            to: s.to.clone(),
            started_us: s.started_us,
            running: s.running.is_some(),
            last_error: s.last_error.clone(),
        }
    }
}

/// Live values a step's checks look at.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveValues {
    /// The task's current direction (`a->b`).
    pub direction: String,
    /// Seconds behind, from the heartbeat, while the direction runs here.
    pub lag_seconds: Option<f64>,
    /// Changes between the target's checkpoint and the source's head.
    pub changes_pending: Option<u64>,
    /// Frozen endpoints, with since when (µs).
    pub frozen: Vec<(String, i64)>,
}

/// A step as `plan`, `status` and the console show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepView {
    /// The step.
    pub step: Step,
    /// Its title.
    pub title: String,
    /// What it checks / does.
    pub checks: Vec<String>,
    /// pending, running, done, failed, skipped.
    pub state: String,
    /// Duration of its last run (ms).
    pub millis: Option<u64>,
    /// The console asks for the task's name before running it.
    pub confirm: bool,
}

/// A task's cutover: its persisted state, its steps, live values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CutoverView {
    /// The task.
    pub task: String,
    /// The persisted state; `None` when no cutover was started.
    pub state: Option<CutoverState>,
    /// The steps of the path being run (forward or rollback).
    pub steps: Vec<StepView>,
    /// Live values.
    pub live: LiveValues,
    /// The outcome of the step just run (actions only).
    pub outcome: Option<StepRecord>,
}

impl CutoverView {
    /// The next step to run, if any.
    pub fn next_step(&self) -> Option<Step> {
        match &self.state {
            None => Some(Step::Preflight),
            Some(s) if s.step.terminal() => None,
            Some(s) => Some(s.step),
        }
    }
}

/// What an operator asks of a cutover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CutoverAction {
    /// Begin a cutover: run Preflight.
    Start,
    /// Run the next step.
    Next,
    /// Switch to the rollback path and run its next step.
    Rollback,
}

/// An action with its options (`POST /api/v1/tasks/{task}/cutover`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CutoverRequest {
    /// What to do.
    pub action: CutoverAction,
    /// Skip the full verify in the Verify step (set at start).
    #[serde(default)]
    pub quick_only: bool,
}

/// Applies the directions cutovers stored to the task file's tasks: after a Switch the
/// task runs `to -> from` until a rollback. Returns the tasks it changed, with the
/// file's direction. A store without the table changes nothing.
pub async fn apply_directions(config: &mut Config, store: &Store) -> Result<Vec<(String, String)>, StoreError> {
    let mut changed = Vec::new();
    for t in &mut config.tasks {
        if let Some((from, to)) = store.direction(&t.name).await?
            && (from != t.from || to != t.to)
        {
            changed.push((t.name.clone(), format!("{}->{}", t.from, t.to)));
            t.from = from;
            t.to = to;
        }
    }
    Ok(changed)
}

/// [`apply_directions`] with the store at the file's [node] store, when it exists.
pub async fn apply_stored_directions(config: &mut Config) -> Result<Vec<(String, String)>, StoreError> {
    match Store::open_existing(&config.node.store.path()).await? {
        Some(store) => {
            let changed = apply_directions(config, &store).await;
            store.close().await;
            changed
        }
        None => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_follow_their_path_and_end() {
        let mut s = Step::Preflight;
        let mut seen = vec![s];
        while !s.terminal() {
            s = s.next();
            seen.push(s);
        }
        assert_eq!(seen.last(), Some(&Step::Done));
        assert_eq!(seen.len(), FORWARD.len() + 1);
        assert_eq!(Step::RollbackRestore.next(), Step::RolledBack);
        assert!(Step::RollbackDrain.rolling_back() && !Step::Done.rolling_back());
        assert!(Step::Freeze.needs_typed_confirmation() && !Step::Drain.needs_typed_confirmation());
    }

    #[test]
    fn names_are_the_serde_names() {
        for s in FORWARD.iter().chain(ROLLBACK.iter()).chain([Step::Done, Step::RolledBack].iter()) {
            assert_eq!(serde_json::to_string(s).ok(), Some(format!("\"{}\"", s.name())));
        }
    }
}
