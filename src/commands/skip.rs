//! `ferry skip`: marks one source transaction to be skipped on purpose, audited. The next
//! `ferry run` leaves it out. The checks and the record are [`crate::control::skip`]'s,
//! shared with the node API and the console.

use std::path::Path;

use super::{CommandError, open_store, select_tasks};
use crate::config::Config;
use crate::control::ControlError;
use crate::control::skip::{SkipRequest, record};
use crate::store::actor;

/// `ferry skip --config FILE --task NAME --position POS [--direction a->b]`.
pub async fn skip(config_path: &Path, task: &str, position: &str, direction: Option<&str>) -> Result<u8, CommandError> {
    let config = Config::load(config_path)?;
    select_tasks(&config, Some(task))?;
    let store = open_store(&config).await?;
    let who = actor(&config.node.id);
    let req = SkipRequest { position: position.to_string(), direction: direction.map(str::to_string) };
    let recorded = record(&config, &store, &who, task, &req).await;
    store.close().await;
    let (chosen, pos) = recorded.map_err(|e| match e {
        ControlError::Store(e) => CommandError::Store(e),
        ControlError::BadRequest { message } => {
            let (problem, fix) = message.split_once("; ").unwrap_or((&message, "see `ferry skip --help`"));
            CommandError::Input { problem: problem.to_string(), fix: fix.to_string() }
        }
        other => CommandError::Input { problem: other.to_string(), fix: "see `ferry skip --help`".into() },
    })?;
    println!(
        "task {task} {chosen}: the transaction at {pos} will be skipped by the next `ferry run` (recorded in the audit log)"
    );
    Ok(0)
}
