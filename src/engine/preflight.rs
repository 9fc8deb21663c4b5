//! Preflight: what `ferry check` asks of every selected task's endpoints, through each
//! store's checks in the registry, before `ferry run`, a node or a cutover writes
//! anything. Read-only.

use crate::config::{Config, Mode, Task};
use crate::connector::registry::PreflightTask;

/// One thing preflight found wrong.
#[derive(Debug, Clone)]
pub struct Problem {
    /// Which task or endpoint.
    pub subject: String,
    /// The problem and its fix, as one message.
    pub message: String,
}

/// What preflight saw per task.
#[derive(Debug, Clone)]
pub struct TaskReport {
    /// Task name.
    pub task: String,
    /// One line on the task.
    pub summary: String,
}

/// Checks every selected task's endpoints and tables without writing anything.
pub async fn preflight(config: &Config, tasks: &[&Task]) -> (Vec<TaskReport>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut reports = Vec::new();
    let store = config.node.store.path();
    if let Some(dir) = store.parent()
        && !dir.as_os_str().is_empty()
        && !dir.is_dir()
    {
        {
            problems.push(Problem {
                subject: "[node] store".into(),
                message: format!(
                    "the folder of the metadata store {} does not exist\n  fix: create it or point [node] store elsewhere",
                    store.display()
                ),
            });
        }
    }
    for task in tasks {
        match check_task(config, task).await {
            Ok(summary) => reports.push(TaskReport { task: task.name.clone(), summary }),
            Err(found) => problems.extend(found),
        }
    }
    (reports, problems)
}

/// Checks one task; every problem found (SQLite stops at the first).
async fn check_task(config: &Config, task: &Task) -> Result<String, Vec<Problem>> {
    let subject = format!("task {}", task.name);
    let found = |message: String| vec![Problem { subject: subject.clone(), message }];
    let endpoint = |name: &str| {
        config
            .endpoint(name)
            .ok_or_else(|| found(format!("endpoint {name}: not defined\n  fix: define it as an [[endpoint]]")))
    };
    let (from, to) = (endpoint(&task.from)?, endpoint(&task.to)?);
    let ask = PreflightTask {
        tables: task.tables.clone(),
        two_way: task.mode == Mode::TwoWay,
        snapshot: task.snapshot,
        max_rows_per_sec: task.max_rows_per_sec,
        maps: task.maps.clone(),
    };
    crate::connector::preflight::preflight(from, to, &ask)
        .await
        .map_err(|messages| messages.into_iter().map(|message| Problem { subject: subject.clone(), message }).collect())
}
