//! `ferry uninstall`: after a migration, removes everything ferry added to the user's
//! stores (each store's own list: capture and version triggers, ferry's tables or
//! database, the freeze probe account), after a typed confirmation or `--yes`. Refused
//! while any task touching the endpoints runs; audited.

use std::io::Write;
use std::path::Path;

use super::{CommandError, open_store};
use crate::config::{Config, Endpoint};
use crate::connector::{LeaseHolder, host, registry};
use crate::engine::EngineError;
use crate::engine::plan_task;
use crate::store::actor;

/// What to remove: every endpoint of the file, a task's two, or one.
#[derive(Debug, Clone, Default)]
pub struct UninstallArgs {
    /// Only the endpoints of this task.
    pub task: Option<String>,
    /// Only this endpoint.
    pub endpoint: Option<String>,
    /// Skip the typed confirmation.
    pub yes: bool,
}

/// `ferry uninstall --config FILE [--task T] [--endpoint E] [--yes]`.
pub async fn uninstall(config_path: &Path, args: &UninstallArgs) -> Result<u8, CommandError> {
    let config = Config::load(config_path)?;
    let endpoints = chosen(&config, args)?;
    refuse_if_running(&config, &endpoints).await?;

    let mut plan = Vec::new();
    for ep in &endpoints {
        let found = registry::installed(ep).await?;
        println!("endpoint {} ({}):", ep.name, ep.url);
        if found.is_empty() {
            println!("  nothing of ferry's");
        }
        for f in &found {
            println!("  {f}");
        }
        plan.push((ep, found));
    }
    if plan.iter().all(|(_, found)| found.is_empty()) {
        println!("nothing to remove");
        return Ok(0);
    }
    if !args.yes && !confirmed().await {
        return Err(CommandError::Input {
            problem: "not confirmed: nothing was removed".into(),
            fix: "type `uninstall` at the prompt, or pass --yes".into(),
        });
    }
    let store = open_store(&config).await?;
    let who = actor(&config.node.id);
    for (ep, found) in plan {
        if found.is_empty() {
            continue;
        }
        let removed = registry::uninstall(ep).await?;
        println!("endpoint {}: removed {} item(s)", ep.name, removed.len());
        let detail = format!("endpoint {}: removed {}", ep.name, removed.join("; "));
        store.audit(&who, "uninstall", args.task.as_deref(), &detail).await?;
    }
    store.close().await;
    Ok(0)
}

/// The endpoints to clean, checked against the file.
fn chosen<'a>(config: &'a Config, args: &UninstallArgs) -> Result<Vec<&'a Endpoint>, CommandError> {
    let names: Vec<String> = config.endpoints.iter().map(|e| e.name.clone()).collect();
    if let Some(name) = &args.endpoint {
        let ep = config.endpoint(name).ok_or_else(|| CommandError::Input {
            problem: format!("the task file has no endpoint {name:?}"),
            fix: format!("use one of: {}", names.join(", ")),
        })?;
        return Ok(vec![ep]);
    }
    if let Some(name) = &args.task {
        let task = config.task(name).ok_or_else(|| CommandError::Input {
            problem: format!("the task file has no task {name:?}"),
            fix: format!("use one of: {}", config.tasks.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")),
        })?;
        return Ok([&task.from, &task.to].iter().filter_map(|n| config.endpoint(n)).collect());
    }
    Ok(config.endpoints.iter().collect())
}

/// Refuses while a process holds a live lease of any direction touching the endpoints:
/// on this host while its pid runs and the lease holds, elsewhere until it expires.
async fn refuse_if_running(config: &Config, endpoints: &[&Endpoint]) -> Result<(), CommandError> {
    let here = host::host_name();
    let live = |h: &LeaseHolder| {
        // Expiry is judged by the target's clock, as the lease row says.
        if h.host == here { h.pid != std::process::id() && host::pid_alive(h.pid) && !h.expired } else { !h.expired }
    };
    for task in &config.tasks {
        for spec in plan_task(config, task, &[]) {
            let touches = endpoints.iter().any(|e| e.name == spec.source.name || e.name == spec.target.name);
            if !touches {
                continue;
            }
            // A target that cannot be read holds no lease this command could honour.
            let Ok(state) = registry::target_state(&spec.target, &spec.id).await else { continue };
            if let Some(holder) = state.lease.filter(|h| live(h)) {
                return Err(EngineError::LeaseHeld { dir: spec.id.clone(), holder: Box::new(holder) }.into());
            }
        }
    }
    Ok(())
}

/// Asks for the word `uninstall`; anything else (or no terminal) is a no.
async fn confirmed() -> bool {
    let mut out = std::io::stdout();
    let _ = write!(out, "Type `uninstall` to remove all of the above: ");
    let _ = out.flush();
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line).unwrap_or_default()
    })
    .await
    .unwrap_or_default();
    answer.trim() == "uninstall"
}
