//! What `ferry check` asks of a SQLite file: a readable database the user running ferry
//! may write (capture triggers, checkpoint), keyed tables as a source, and existing
//! target tables with the source's columns.

use std::sync::Arc;

use super::schema::{describe, describe_matching, user_tables};
use super::{Access, SqliteEndpoint, close};
use crate::connector::ConnectorError;
use crate::connector::registry::{SourceFindings, TargetTable};
use crate::model::{TableName, TableSchema};

/// As a source: the keyed tables the globs match.
pub async fn check_source(ep: &SqliteEndpoint, patterns: &[String], require_match: bool) -> SourceFindings {
    match source_tables(ep, patterns, require_match).await {
        Ok(tables) => SourceFindings {
            tables: tables
                .iter()
                .map(|t| TargetTable {
                    name: t.name.clone(),
                    columns: Some(t.columns.iter().map(|c| c.name.clone()).collect()),
                })
                .collect(),
            problems: Vec::new(),
            warnings: Vec::new(),
        },
        Err(e) => SourceFindings { tables: Vec::new(), problems: vec![e.to_string()], warnings: Vec::new() },
    }
}

async fn source_tables(
    ep: &SqliteEndpoint,
    patterns: &[String],
    require_match: bool,
) -> Result<Vec<Arc<TableSchema>>, ConnectorError> {
    usable(ep).await?;
    let mut conn = ep.connect(Access::ReadOnly).await?;
    let tables = if require_match {
        describe_matching(ep, &mut conn, patterns).await
    } else {
        // The reverse direction of a two-way task: its tables may not exist yet.
        existing_matching(ep, &mut conn, patterns).await
    };
    close(conn).await;
    tables
}

async fn existing_matching(
    ep: &SqliteEndpoint,
    conn: &mut sqlx::sqlite::SqliteConnection,
    patterns: &[String],
) -> Result<Vec<Arc<TableSchema>>, ConnectorError> {
    let globs: Vec<glob::Pattern> = patterns.iter().filter_map(|p| glob::Pattern::new(p).ok()).collect();
    let mut out = Vec::new();
    for name in user_tables(ep, conn).await? {
        if globs.iter().any(|g| g.matches(&name))
            && let Some(s) = describe(ep, conn, &name).await?
        {
            out.push(Arc::new(s));
        }
    }
    Ok(out)
}

/// As a target: usable, and the tables that exist have the (renamed) source columns.
pub async fn check_target(ep: &SqliteEndpoint, source: &str, tables: &[TargetTable]) -> Vec<String> {
    match target_problem(ep, source, tables).await {
        Ok(()) => Vec::new(),
        Err(e) => vec![e.to_string()],
    }
}

async fn target_problem(ep: &SqliteEndpoint, source: &str, tables: &[TargetTable]) -> Result<(), ConnectorError> {
    usable(ep).await?;
    let mut conn = ep.connect(Access::ReadOnly).await?;
    let mut result = Ok(());
    for t in tables {
        let (Some(want), name) = (&t.columns, &t.name.name) else { continue };
        match describe(ep, &mut conn, name).await {
            Ok(Some(existing)) => {
                let have: Vec<String> = existing.columns.iter().map(|c| c.name.clone()).collect();
                if *want != have {
                    result = Err(ConnectorError::Setup {
                        endpoint: ep.name.clone(),
                        problem: format!("table {name} has columns {have:?} here but {want:?} on {source}"),
                        fix: "make the columns match (same names, same order), or map them with [[task.map]]".into(),
                    });
                    break;
                }
            }
            Ok(None) => {}
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    close(conn).await;
    result
}

/// A table name as this store writes it: SQLite names are bare.
pub fn qualify(name: &TableName) -> TableName {
    TableName::bare(name.name.clone())
}

/// A readable SQLite database the user running ferry may write.
async fn usable(ep: &SqliteEndpoint) -> Result<(), ConnectorError> {
    let mut conn = ep.connect(Access::ReadOnly).await?;
    let probe: Result<i64, sqlx::Error> =
        sqlx::query_scalar("SELECT count(*) FROM sqlite_schema").fetch_one(&mut conn).await;
    close(conn).await;
    if let Err(e) = probe {
        return Err(ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!("{} is not a readable SQLite database: {e}", ep.path.display()),
            fix: "point the endpoint url at a SQLite database file".into(),
        });
    }
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
