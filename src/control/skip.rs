//! Skipping one source transaction on purpose: the one path `ferry skip`, the node API
//! (`POST /api/v1/tasks/{task}/skip`) and the console (`S`) share. It checks the task,
//! the direction and the position, records the skip in the store (the next start of
//! the direction leaves the transaction out) and audits it.

use serde::{Deserialize, Serialize};

use super::ControlError;
use crate::config::Config;
use crate::engine::plan_task;
use crate::model::Position;
use crate::store::Store;

/// What to skip (the body of `POST /api/v1/tasks/{task}/skip`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkipRequest {
    /// The source position of the transaction, as the error gave it.
    pub position: String,
    /// `a->b`; may be left out when the task has one direction, or when only one
    /// direction stopped at that position.
    #[serde(default)]
    pub direction: Option<String>,
}

/// A skip recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// Task.
    pub task: String,
    /// The direction it applies to.
    pub direction: String,
    /// The position skipped (normalised).
    pub position: String,
    /// Whether the task was started again to go on past it (console and API: a stopped
    /// task is resumed; `ferry skip`: the next `ferry run` does it).
    pub resumed: bool,
}

/// Checks a skip request against the task file and the store, records it and audits it
/// as `actor`; returns the direction and position recorded.
pub async fn record(
    config: &Config,
    store: &Store,
    actor: &str,
    task: &str,
    req: &SkipRequest,
) -> Result<(String, Position), ControlError> {
    let t = config.task(task).ok_or_else(|| ControlError::NotFound { what: format!("task {task:?}") })?;
    let pos: Position = crate::connector::registry::parse_position(&req.position).map_err(|e| {
        ControlError::BadRequest { message: format!("{e}; copy the position from the error message or `ferry status`") }
    })?;
    let directions: Vec<String> = plan_task(config, t, &[]).iter().map(|s| s.id.direction()).collect();
    let chosen = match req.direction.as_deref() {
        Some(d) if directions.iter().any(|x| x == d) => d.to_string(),
        Some(d) => {
            return Err(ControlError::BadRequest {
                message: format!("task {task} has no direction {d:?}; use one of: {}", directions.join(", ")),
            });
        }
        None if directions.len() == 1 => directions[0].clone(),
        None => {
            // Two-way: the direction that stopped at this position.
            let statuses = store.statuses(task).await?;
            let hits: Vec<String> = statuses
                .iter()
                .filter(|s| s.last_error.as_deref().is_some_and(|e| e.contains(&format!("position {pos}"))))
                .map(|s| s.direction.clone())
                .collect();
            match hits.as_slice() {
                [one] => one.clone(),
                _ => {
                    return Err(ControlError::BadRequest {
                        message: format!(
                            "task {task} is two-way and it is not clear which direction stopped at {pos}; name the direction, one of: {}",
                            directions.join(", ")
                        ),
                    });
                }
            }
        }
    };
    store.add_skip(task, &chosen, &pos, actor).await?;
    store
        .audit(actor, "skip", Some(task), &format!("direction {chosen}: skip the source transaction at {pos}"))
        .await?;
    Ok((chosen, pos))
}
