//! `ferry skip`: marks one source transaction to be skipped on purpose, audited. The next
//! `ferry run` leaves it out.

use std::path::Path;

use super::{CommandError, open_store, select_tasks};
use crate::config::Config;
use crate::engine::plan_task;
use crate::model::Position;
use crate::store::actor;

/// `ferry skip --config FILE --task NAME --position POS [--direction a->b]`.
pub async fn skip(config_path: &Path, task: &str, position: &str, direction: Option<&str>) -> Result<u8, CommandError> {
    let config = Config::load(config_path)?;
    let t = select_tasks(&config, Some(task))?[0];
    let pos: Position = crate::connector::registry::parse_position(position).map_err(|e| CommandError::Input {
        problem: e.to_string(),
        fix: "copy the position from the error message or `ferry status`".into(),
    })?;
    let directions: Vec<String> = plan_task(&config, t, &[]).iter().map(|s| s.id.direction()).collect();
    let store = open_store(&config).await?;
    let chosen = match direction {
        Some(d) if directions.iter().any(|x| x == d) => d.to_string(),
        Some(d) => {
            return Err(CommandError::Input {
                problem: format!("task {task} has no direction {d:?}"),
                fix: format!("use one of: {}", directions.join(", ")),
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
                    return Err(CommandError::Input {
                        problem: format!("task {task} is two-way and it is not clear which direction stopped at {pos}"),
                        fix: format!("add --direction with one of: {}", directions.join(", ")),
                    });
                }
            }
        }
    };
    let who = actor(&config.node.id);
    store.add_skip(task, &chosen, &pos, &who).await?;
    store.audit(&who, "skip", Some(task), &format!("direction {chosen}: skip the source transaction at {pos}")).await?;
    store.close().await;
    println!(
        "task {task} {chosen}: the transaction at {pos} will be skipped by the next `ferry run` (recorded in the audit log)"
    );
    Ok(0)
}
