//! `ferry check`: the task file and every endpoint, read-only. `ferry run` runs the same
//! preflight before it writes anything.

use std::path::Path;

use crate::config::{Config, EndpointUrl, Mode, Task};
use crate::connector::ConnectorError;
use crate::connector::sqlite::schema::{describe, describe_matching};
use crate::connector::sqlite::{Access, SqliteEndpoint};

use super::{CommandError, store_path};

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
    let store = store_path(config);
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
            Err(e) => problems.push(Problem { subject: format!("task {}", task.name), message: e.to_string() }),
        }
    }
    (reports, problems)
}

fn sqlite_endpoint(config: &Config, name: &str) -> Result<SqliteEndpoint, ConnectorError> {
    let ep = config.endpoint(name).ok_or_else(|| ConnectorError::Setup {
        endpoint: name.into(),
        problem: "not defined".into(),
        fix: "define it as an [[endpoint]]".into(),
    })?;
    match &ep.url {
        EndpointUrl::Sqlite(path) => {
            Ok(SqliteEndpoint { name: ep.name.clone(), site: ep.site.clone(), path: path.clone() })
        }
        other => Err(ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!("{} endpoints ({other}) cannot be synced by this version of ferry yet", other.engine()),
            fix: "use SQLite endpoints for now (MySQL/MariaDB support is in progress)".into(),
        }),
    }
}

fn writable(ep: &SqliteEndpoint) -> Result<(), ConnectorError> {
    let meta = std::fs::metadata(&ep.path).map_err(|e| ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: format!("database file {} cannot be read: {e}", ep.path.display()),
        fix: "correct the endpoint url (relative paths are relative to the task file's folder) or create the database first".into(),
    })?;
    if meta.permissions().readonly() {
        return Err(ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!("database file {} is read-only", ep.path.display()),
            fix: "ferry installs capture triggers and writes its checkpoint there: give the user running ferry write access".into(),
        });
    }
    Ok(())
}

async fn check_task(config: &Config, task: &Task) -> Result<String, ConnectorError> {
    let from = sqlite_endpoint(config, &task.from)?;
    let to = sqlite_endpoint(config, &task.to)?;
    for ep in [&from, &to] {
        let mut conn = ep.connect(Access::ReadOnly).await?;
        let probe: Result<i64, sqlx::Error> =
            sqlx::query_scalar("SELECT count(*) FROM sqlite_schema").fetch_one(&mut conn).await;
        if let Err(e) = probe {
            return Err(ConnectorError::Setup {
                endpoint: ep.name.clone(),
                problem: format!("{} is not a readable SQLite database: {e}", ep.path.display()),
                fix: "point the endpoint url at a SQLite database file".into(),
            });
        }
        crate::connector::sqlite::close(conn).await;
        writable(ep)?;
    }
    let mut src = from.connect(Access::ReadOnly).await?;
    let tables = describe_matching(&from, &mut src, &task.tables).await?;
    crate::connector::sqlite::close(src).await;
    let mut dst = to.connect(Access::ReadOnly).await?;
    for t in &tables {
        let target_name = task
            .maps
            .iter()
            .find(|m| m.from == t.name.to_string())
            .map(|m| m.to.clone())
            .unwrap_or(t.name.name.clone());
        if let Some(existing) = describe(&to, &mut dst, &target_name).await? {
            let mut want: Vec<String> = t.columns.iter().map(|c| c.name.clone()).collect();
            if let Some(m) = task.maps.iter().find(|m| m.from == t.name.to_string()) {
                for c in &mut want {
                    if let Some(n) = m.columns.get(c) {
                        *c = n.clone();
                    }
                }
            }
            let have: Vec<String> = existing.columns.iter().map(|c| c.name.clone()).collect();
            if want != have {
                return Err(ConnectorError::Setup {
                    endpoint: to.name.clone(),
                    problem: format!("table {target_name} has columns {have:?} here but {want:?} on {}", from.name),
                    fix: "make the columns match (same names, same order), or map them with [[task.map]]".into(),
                });
            }
        }
    }
    if task.mode == Mode::TwoWay {
        // The reverse direction reads the target: its copies of the tables need keys too.
        for t in &tables {
            describe(&to, &mut dst, &t.name.name).await?;
        }
    }
    crate::connector::sqlite::close(dst).await;
    let names: Vec<String> = tables.iter().map(|t| t.name.to_string()).collect();
    Ok(format!(
        "{} {} -> {} ({}), {} table(s): {}",
        match task.mode {
            Mode::OneWay => "one-way",
            Mode::TwoWay => "two-way",
        },
        from.name,
        to.name,
        short(&from.path),
        names.len(),
        names.join(", ")
    ))
}

fn short(p: &Path) -> String {
    p.display().to_string()
}

/// `ferry check --config FILE`.
pub async fn check(config_path: &Path) -> Result<u8, CommandError> {
    let config = Config::load(config_path)?;
    let tasks: Vec<&Task> = config.tasks.iter().collect();
    let (reports, problems) = preflight(&config, &tasks).await;
    println!(
        "task file {}: valid ({} endpoint(s), {} task(s))",
        config.path.display(),
        config.endpoints.len(),
        config.tasks.len()
    );
    for r in &reports {
        println!("ok       task {}: {}", r.task, r.summary);
    }
    print_problems(&problems);
    if problems.is_empty() { Ok(0) } else { Err(CommandError::Preflight(problems.len())) }
}

/// Prints preflight problems to standard error.
pub fn print_problems(problems: &[Problem]) {
    for p in problems {
        eprintln!("PROBLEM  {}: {}", p.subject, p.message);
    }
}
