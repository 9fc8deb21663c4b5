//! `ferry cutover --config FILE --task NAME plan|start|status|next|rollback`: drives the
//! task's cutover where the task runs — through the node API at [node].listen when a
//! node serves it, in-process otherwise (this process then runs the task while it
//! drives the steps). Exit codes: 0 done, 1 verify found differences, 2 refused (nothing
//! changed), 3 a step failed (see `ferry cutover status`).

use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{CommandError, open_store, select_tasks};
use crate::cli::{CutoverCommand, EXIT_DATA, EXIT_INPUT, EXIT_OK, EXIT_RUNTIME};
use crate::client::NodeClient;
use crate::config::Config;
use crate::control::local::LocalNode;
use crate::control::{Control, ControlError, VerifyUnavailable};
use crate::cutover::machine::{Machine, TaskHost};
use crate::cutover::{CutoverAction, CutoverRequest, CutoverView, Step, StepRecord};
use crate::engine::EngineError;
use crate::store::{Store, actor};

/// A line on standard output; a closed pipe (`ferry cutover plan | head`) is not an error.
macro_rules! say {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// The command line of `ferry cutover`.
#[derive(Debug)]
pub struct CutoverArgs {
    /// The task file.
    pub config: PathBuf,
    /// The task.
    pub task: String,
    /// What to do.
    pub action: CutoverCommand,
    /// No confirmation questions.
    pub yes: bool,
    /// Print, change nothing.
    pub dry_run: bool,
    /// Quick verify only.
    pub quick_only: bool,
    /// Node API token.
    pub token: Option<String>,
    /// CA of the node's HTTPS certificate.
    pub ca: Option<PathBuf>,
}

/// Where the task runs when nothing runs it here: reading only (plan, status).
struct Idle;

impl TaskHost for Idle {
    async fn stop_task(&self, _actor: &str, _task: &str) -> Result<(), String> {
        Err("no process runs the task".into())
    }

    async fn start_task(&self, _actor: &str, _task: &str) -> Result<(), String> {
        Err("no process runs the task".into())
    }

    async fn lag_seconds(&self, _task: &str) -> Option<f64> {
        None
    }
}

fn refused(e: ControlError) -> CommandError {
    let input = match &e {
        ControlError::NotFound { .. } | ControlError::Conflict { .. } | ControlError::BadRequest { .. } => true,
        ControlError::Remote { status, .. } => matches!(status, 400 | 401 | 403 | 404 | 409),
        _ => false,
    };
    if !input {
        return CommandError::Runtime(e.to_string());
    }
    // A refusal names its own fix; say that nothing changed.
    let text = e.to_string();
    let (problem, fix) = match text.split_once("\n  fix: ") {
        Some((p, f)) => (p.to_string(), format!("{f} (nothing was changed)")),
        None => (text, "nothing was changed; see `ferry cutover status`".into()),
    };
    CommandError::Input { problem, fix }
}

/// The node serving this task file, when one answers at [node].listen.
async fn serving_node(
    config: &Config,
    token: Option<String>,
    ca: Option<&Path>,
) -> Result<Option<NodeClient>, CommandError> {
    // A node with [node] tls_cert serves HTTPS only: ask it over HTTPS.
    let base =
        if config.node.tls.is_some() { format!("https://{}", config.node.listen) } else { config.node.listen.clone() };
    let client = NodeClient::new(&base, token, ca).map_err(|e| CommandError::Input {
        problem: e.to_string(),
        fix: "pass --ca with the PEM file of the CA that signed the node's certificate".into(),
    })?;
    match client.overview().await {
        Ok(_) => Ok(Some(client)),
        Err(ControlError::Unreachable { .. }) => Ok(None),
        // A node that answers with a certificate we do not trust is there: driving the
        // cutover in-process beside it would be wrong.
        Err(e @ ControlError::Untrusted { .. }) => Err(CommandError::Input {
            problem: e.to_string(),
            fix: "pass --ca with the PEM file of the CA that signed [node] tls_cert".into(),
        }),
        Err(e) => Err(CommandError::Input {
            problem: format!("the node at {} refused: {e}", config.node.listen),
            fix: "pass a token with --token or FERRY_TOKEN whose role may do this (cutover steps: admin; docs/node-api.md)".into(),
        }),
    }
}

/// `ferry cutover ...`.
pub async fn cutover(args: CutoverArgs, signal: impl Future<Output = ()>) -> Result<u8, CommandError> {
    let mut config = Config::load(&args.config)?;
    select_tasks(&config, Some(&args.task))?;
    let node = serving_node(&config, args.token.clone(), args.ca.as_deref()).await?;
    let read_only = matches!(args.action, CutoverCommand::Plan | CutoverCommand::Status) || args.dry_run;
    if let Some(client) = node {
        say!("cutover of task {} through the node at {}", args.task, client.base());
        return drive(&client, &args, signal).await;
    }
    if read_only {
        // Reading changes nothing: without a store file there is no cutover to show, and
        // an empty in-memory store stands in (no file is created).
        let store = match Store::open_existing(&config.node.store.path()).await? {
            Some(s) => s,
            None => Store::open(Path::new(":memory:"), true).await?,
        };
        let view = Machine { config: &config, store: &store, host: &Idle }.view(&args.task).await;
        store.close().await;
        let view = view.map_err(|e| refused(e.into()))?;
        return Ok(show(&args, &view));
    }
    // Refuse before the task is started here: a refusal changes nothing.
    let store = open_store(&config).await?;
    let action = action_of(args.action);
    let admitted = Machine { config: &config, store: &store, host: &Idle }.check(&args.task, action).await;
    store.close().await;
    admitted.map_err(|e| refused(e.into()))?;
    // In-process: this process runs the task (only it) while it drives the steps.
    config.tasks.retain(|t| t.name == args.task);
    let local = match LocalNode::start(config, Box::new(VerifyUnavailable)).await {
        Ok(l) => l,
        Err(crate::control::run::StartError::Engine(e)) if matches!(e, EngineError::LeaseHeld { .. }) => {
            return Err(CommandError::Input {
                problem: e.to_string(),
                fix: "the task runs in another process: stop it, or run it with `ferry node` and drive the cutover through the node (nothing was changed)".into(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    say!("cutover of task {} in-process (no node answers at its [node] listen)", args.task);
    let result = drive(&local, &args, signal).await;
    for e in local.shutdown().await {
        tracing::warn!(task = %args.task, error = %e, "a direction ended with an error");
    }
    local.store().clone().close().await;
    result
}

/// The request a command makes.
fn action_of(command: CutoverCommand) -> CutoverAction {
    match command {
        CutoverCommand::Start => CutoverAction::Start,
        CutoverCommand::Rollback => CutoverAction::Rollback,
        _ => CutoverAction::Next,
    }
}

/// Prints the view for plan/status/--dry-run; the exit code.
fn show(args: &CutoverArgs, view: &CutoverView) -> u8 {
    print_view(view);
    if args.dry_run {
        match view.next_step() {
            Some(s) => say!("dry run: the next step would be {s}; nothing was changed"),
            None => say!("dry run: nothing is left to run; nothing was changed"),
        }
    }
    EXIT_OK
}

fn print_view(view: &CutoverView) {
    let live = &view.live;
    let lag = live.lag_seconds.map(|l| format!("{l:.2} s")).unwrap_or_else(|| "-".into());
    let pending = live.changes_pending.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
    say!("task {}: direction {}  lag {lag}  changes pending {pending}", view.task, live.direction);
    for (ep, since) in &live.frozen {
        say!("  endpoint {ep} frozen since {since} µs");
    }
    match &view.state {
        None => say!("no cutover started"),
        Some(s) => {
            say!("cutover {}->{}: next step {}", s.from, s.to, s.step);
            if let Some(e) = &s.last_error {
                say!("  last step failed: {e}");
            }
        }
    }
    for (i, step) in view.steps.iter().enumerate() {
        let took = step.millis.map(|ms| format!(" ({:.2} s)", ms as f64 / 1000.0)).unwrap_or_default();
        say!("{}. {} [{}]{took}", i + 1, step.title, step.state);
        for c in &step.checks {
            say!("     - {c}");
        }
    }
}

fn print_outcome(r: &StepRecord) {
    let verdict = if r.ok { "done" } else { "FAILED" };
    say!("step {}: {verdict} in {:.2} s — {}", r.step, r.millis as f64 / 1000.0, r.message);
    for c in &r.checks {
        say!("   [{}] {}: {}", if c.ok { "ok" } else { "!!" }, c.name, c.seen);
    }
}

/// Asks on the terminal; anything but y/yes (or no terminal) is no.
async fn confirm(question: String) -> bool {
    let mut out = std::io::stdout();
    let _ = write!(out, "{question} [y/N] ");
    let _ = out.flush();
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line).unwrap_or_default()
    })
    .await
    .unwrap_or_default();
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Exit code of a failed step.
fn failed_code(r: &StepRecord) -> u8 {
    match r.step {
        Step::Preflight => EXIT_INPUT,
        Step::Verify => EXIT_DATA,
        _ => EXIT_RUNTIME,
    }
}

async fn drive<C: Control>(c: &C, args: &CutoverArgs, signal: impl Future<Output = ()>) -> Result<u8, CommandError> {
    let task = args.task.as_str();
    let view = c.cutover_status(task).await.map_err(refused)?;
    if matches!(args.action, CutoverCommand::Plan | CutoverCommand::Status) || args.dry_run {
        return Ok(show(args, &view));
    }
    let who = actor("cli");
    let mut action = action_of(args.action);
    // start --yes and rollback run their whole path; next runs one step.
    let whole_path = !matches!(args.action, CutoverCommand::Next);
    let mut next = match action {
        CutoverAction::Start => Some(Step::Preflight),
        CutoverAction::Rollback => match &view.state {
            Some(s) if s.step.rolling_back() => view.next_step(),
            _ => Some(Step::RollbackFreezeTarget),
        },
        CutoverAction::Next => view.next_step(),
    };
    tokio::pin!(signal);
    loop {
        let Some(step) = next else {
            say!("nothing is left to run");
            return Ok(EXIT_OK);
        };
        let step_name = format!("step {step}");
        if !args.yes && !confirm(format!("run {step_name} of the cutover of task {task}?")).await {
            say!("stopped before {step_name}; nothing more was changed (continue with `ferry cutover next`)");
            return Ok(EXIT_OK);
        }
        let req = CutoverRequest { action, quick_only: args.quick_only };
        let view = tokio::select! {
            biased;
            _ = &mut signal => {
                return Err(CommandError::Runtime(format!(
                    "interrupted inside {step_name}; `ferry cutover --task {task} next` resumes it"
                )));
            }
            v = c.cutover(&who, task, req) => v.map_err(refused)?,
        };
        let Some(outcome) = &view.outcome else {
            return Err(CommandError::Runtime("the node answered without the step's outcome".into()));
        };
        print_outcome(outcome);
        if !outcome.ok {
            say!(
                "the cutover stays at step {}: fix the problem and run `ferry cutover next`, or `ferry cutover rollback`",
                outcome.step
            );
            return Ok(failed_code(outcome));
        }
        next = view.next_step();
        action = CutoverAction::Next;
        if next.is_none() {
            let end = view.state.as_ref().map(|s| s.step).unwrap_or(Step::Done);
            say!("cutover of task {task}: {end} (direction now {})", view.live.direction);
            return Ok(EXIT_OK);
        }
        if !whole_path {
            return Ok(EXIT_OK);
        }
    }
}
