//! `ferry check`: the task file and every endpoint, read-only. `ferry run` runs the same
//! preflight before it writes anything.

use std::path::Path;

use crate::config::{Config, Endpoint, EndpointUrl, Mode, Task};
use crate::connector::ConnectorError;
use crate::connector::mysql::MysqlEndpoint;
use crate::connector::mysql::check::{self as mysql_check, SNAPSHOT_ROWS_PER_SEC, SourceOptions};
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
            Err(found) => problems.extend(found),
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
            fix: "use SQLite or MySQL/MariaDB endpoints (PostgreSQL comes later)".into(),
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

/// Checks one task; every problem found (SQLite stops at the first).
async fn check_task(config: &Config, task: &Task) -> Result<String, Vec<Problem>> {
    let subject = format!("task {}", task.name);
    if let (Some(from), Some(to)) = (config.endpoint(&task.from), config.endpoint(&task.to))
        && let (EndpointUrl::Mysql(_), EndpointUrl::Mysql(_)) = (&from.url, &to.url)
    {
        return check_mysql_task(task, from, to).await.map_err(|found| {
            found.into_iter().map(|p| Problem { subject: subject.clone(), message: p.to_string() }).collect()
        });
    }
    if let (Some(from), Some(to)) = (config.endpoint(&task.from), config.endpoint(&task.to))
        && matches!(
            (&from.url, &to.url),
            (EndpointUrl::Mysql(_), EndpointUrl::Sqlite(_)) | (EndpointUrl::Sqlite(_), EndpointUrl::Mysql(_))
        )
    {
        return check_mixed_task(config, task, from, to)
            .await
            .map_err(|found| found.into_iter().map(|message| Problem { subject: subject.clone(), message }).collect());
    }
    check_sqlite_task(config, task).await.map_err(|e| vec![Problem { subject, message: e.to_string() }])
}

/// SQLite <-> MySQL/MariaDB (one-way or two-way): the MySQL side as a source or a target, the
/// SQLite side readable and writable, the SQLite source's tables keyed.
async fn check_mixed_task(config: &Config, task: &Task, from: &Endpoint, to: &Endpoint) -> Result<String, Vec<String>> {
    let mut problems: Vec<String> = Vec::new();
    let names: Vec<String> = match (&from.url, &to.url) {
        (EndpointUrl::Mysql(_), _) => {
            let src = mysql_endpoint(from).map_err(|p| vec![p.to_string()])?;
            let forward = SourceOptions { require_match: true, snapshot_rows_per_sec: None };
            let fwd = mysql_check::preflight_source(&src, &task.tables, forward).await;
            problems.extend(fwd.problems.iter().map(ToString::to_string));
            if let Err(e) = sqlite_side(config, &task.to).await {
                problems.push(e.to_string());
            }
            if task.mode == Mode::TwoWay {
                // The reverse direction writes back into the MySQL tables.
                problems.extend(mysql_check::preflight_target(&src, &fwd.tables).await.iter().map(ToString::to_string));
                problems
                    .extend(mysql_check::preflight_two_way(&src, &fwd.tables).await.iter().map(ToString::to_string));
            }
            fwd.tables.iter().map(|(d, t)| format!("{d}.{t}")).collect()
        }
        _ => {
            let dst = mysql_endpoint(to).map_err(|p| vec![p.to_string()])?;
            let tables = match sqlite_source_tables(config, task).await {
                Ok(t) => t,
                Err(e) => return Err(vec![e.to_string()]),
            };
            let db = dst.opts.db_name().unwrap_or_default().to_string();
            let targets: Vec<(String, String)> =
                tables.iter().map(|t| mapped(task, &(db.clone(), t.clone()))).collect();
            problems.extend(mysql_check::preflight_target(&dst, &targets).await.iter().map(ToString::to_string));
            if task.mode == Mode::TwoWay {
                // The reverse direction reads the MySQL copies (which the snapshot may not
                // have made yet) from the binlog.
                let patterns: Vec<String> = targets.iter().map(|(d, t)| format!("{d}.{t}")).collect();
                let reverse = SourceOptions { require_match: false, snapshot_rows_per_sec: None };
                let rev = mysql_check::preflight_source(&dst, &patterns, reverse).await;
                problems.extend(rev.problems.iter().map(ToString::to_string));
                problems.extend(mysql_check::preflight_two_way(&dst, &targets).await.iter().map(ToString::to_string));
            }
            tables
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let mode = if task.mode == Mode::TwoWay { "two-way" } else { "one-way" };
    Ok(format!("{mode} {} -> {} ({} table(s): {})", from.name, to.name, names.len(), names.join(", ")))
}

/// A SQLite endpoint that is a readable, writable database.
async fn sqlite_side(config: &Config, name: &str) -> Result<SqliteEndpoint, ConnectorError> {
    let ep = sqlite_endpoint(config, name)?;
    let mut conn = ep.connect(Access::ReadOnly).await?;
    let probe: Result<i64, sqlx::Error> =
        sqlx::query_scalar("SELECT count(*) FROM sqlite_schema").fetch_one(&mut conn).await;
    crate::connector::sqlite::close(conn).await;
    if let Err(e) = probe {
        return Err(ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!("{} is not a readable SQLite database: {e}", ep.path.display()),
            fix: "point the endpoint url at a SQLite database file".into(),
        });
    }
    writable(&ep)?;
    Ok(ep)
}

/// The SQLite source's tables matching the task (each with a primary key).
async fn sqlite_source_tables(config: &Config, task: &Task) -> Result<Vec<String>, ConnectorError> {
    let from = sqlite_side(config, &task.from).await?;
    let mut src = from.connect(Access::ReadOnly).await?;
    let tables = describe_matching(&from, &mut src, &task.tables).await;
    crate::connector::sqlite::close(src).await;
    Ok(tables?.iter().map(|t| t.name.name.clone()).collect())
}

/// A MySQL/MariaDB endpoint of the task file.
fn mysql_endpoint(ep: &Endpoint) -> Result<MysqlEndpoint, mysql_check::Problem> {
    let EndpointUrl::Mysql(url) = &ep.url else { unreachable!("only called for MySQL endpoints") };
    MysqlEndpoint::new(&ep.name, ep.site.clone(), url).map_err(|e| match e {
        ConnectorError::Setup { endpoint, problem, fix } => mysql_check::Problem { endpoint, problem, fix },
        other => mysql_check::Problem {
            endpoint: ep.name.clone(),
            problem: other.to_string(),
            fix: "correct the endpoint's url".into(),
        },
    })
}

/// `db.table` renamed by the task's maps (a map's `to` without a database keeps the database).
fn mapped(task: &Task, (db, table): &(String, String)) -> (String, String) {
    let full = format!("{db}.{table}");
    match task.maps.iter().find(|m| m.from == full || m.from == *table) {
        Some(m) => match m.to.split_once('.') {
            Some((d, t)) => (d.to_string(), t.to_string()),
            None => (db.clone(), m.to.clone()),
        },
        None => (db.clone(), table.clone()),
    }
}

/// MySQL -> MySQL: the source side of each direction (binlog, privileges, keys, globs,
/// retention) and its target side (write privileges); every problem, each once.
async fn check_mysql_task(task: &Task, from: &Endpoint, to: &Endpoint) -> Result<String, Vec<mysql_check::Problem>> {
    let (src, dst) = match (mysql_endpoint(from), mysql_endpoint(to)) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => return Err([a.err(), b.err()].into_iter().flatten().collect()),
    };
    let rate = match task.max_rows_per_sec {
        0 => SNAPSHOT_ROWS_PER_SEC,
        n => n.min(SNAPSHOT_ROWS_PER_SEC),
    };
    let forward = SourceOptions { require_match: true, snapshot_rows_per_sec: task.snapshot.then_some(rate) };
    let fwd = mysql_check::preflight_source(&src, &task.tables, forward).await;
    let mut problems = fwd.problems;
    let targets: Vec<(String, String)> = fwd.tables.iter().map(|t| mapped(task, t)).collect();
    problems.extend(mysql_check::preflight_target(&dst, &targets).await);
    if task.mode == Mode::TwoWay {
        // The reverse direction reads the target's copies (which the snapshot may not have
        // made yet) and writes back into the source's tables.
        let patterns: Vec<String> = task
            .tables
            .iter()
            .map(|p| task.maps.iter().find(|m| m.from == *p).map(|m| m.to.clone()).unwrap_or_else(|| p.clone()))
            .collect();
        let reverse = SourceOptions { require_match: false, snapshot_rows_per_sec: None };
        problems.extend(mysql_check::preflight_source(&dst, &patterns, reverse).await.problems);
        problems.extend(mysql_check::preflight_target(&src, &fwd.tables).await);
        problems.extend(mysql_check::preflight_two_way(&src, &fwd.tables).await);
        problems.extend(mysql_check::preflight_two_way(&dst, &targets).await);
    }
    let mut seen = std::collections::HashSet::new();
    problems.retain(|p| seen.insert(p.clone()));
    if !problems.is_empty() {
        return Err(problems);
    }
    let names: Vec<String> = fwd.tables.iter().map(|(d, t)| format!("{d}.{t}")).collect();
    Ok(format!(
        "{} {} -> {} ({} -> {}), {} table(s): {}",
        match task.mode {
            Mode::OneWay => "one-way",
            Mode::TwoWay => "two-way",
        },
        src.name,
        dst.name,
        src.display,
        dst.display,
        names.len(),
        names.join(", ")
    ))
}

async fn check_sqlite_task(config: &Config, task: &Task) -> Result<String, ConnectorError> {
    let from = sqlite_endpoint(config, &task.from)?;
    let to = sqlite_endpoint(config, &task.to)?;
    for ep in [&task.from, &task.to] {
        sqlite_side(config, ep).await?;
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
