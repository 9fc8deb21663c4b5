//! `ferry check` on a MySQL/MariaDB endpoint through the registry: the checks of
//! check.rs (binlog, privileges, keys, globs, retention; write privileges; TRIGGER for
//! two-way), each problem with the statement or setting that fixes it.

use mysql_async::prelude::Queryable;

use super::MysqlEndpoint;
use super::check::{self, SNAPSHOT_ROWS_PER_SEC, SourceOptions};
use crate::connector::registry::{SourceCheck, SourceFindings, TargetTable};
use crate::model::TableName;

/// As a source.
pub async fn check_source(ep: &MysqlEndpoint, patterns: &[String], opts: &SourceCheck) -> SourceFindings {
    let rate =
        opts.snapshot_rows_per_sec.map(|n| if n == 0 { SNAPSHOT_ROWS_PER_SEC } else { n.min(SNAPSHOT_ROWS_PER_SEC) });
    let options = SourceOptions { require_match: opts.require_match, snapshot_rows_per_sec: rate };
    let report = check::preflight_source(ep, patterns, options).await;
    SourceFindings {
        tables: report
            .tables
            .into_iter()
            .map(|(db, t)| TargetTable { name: TableName { schema: Some(db), name: t }, columns: None })
            .collect(),
        problems: report.problems.iter().map(ToString::to_string).collect(),
        warnings: Vec::new(),
    }
}

/// As a target of these tables.
pub async fn check_target(ep: &MysqlEndpoint, tables: &[TargetTable]) -> Vec<String> {
    check::preflight_target(ep, &pairs(tables)).await.iter().map(ToString::to_string).collect()
}

/// Slower-than-possible settings of a target: `local_infile = OFF` makes snapshot chunks
/// go as INSERTs instead of `LOAD DATA LOCAL INFILE`.
pub async fn target_warnings(ep: &MysqlEndpoint) -> Vec<String> {
    let Ok(mut conn) = ep.connect().await else {
        // Unreachable: check_target has said so already.
        return Vec::new();
    };
    let on: Option<i64> = conn.query_first("SELECT @@local_infile").await.ok().flatten();
    let _ = conn.disconnect().await;
    match on {
        Some(0) => vec![format!(
            "endpoint {}: local_infile is OFF, so the first copy writes INSERTs instead of LOAD DATA LOCAL INFILE (about 15 % slower here); fix: SET GLOBAL local_infile = ON (and local_infile = 1 in my.cnf)",
            ep.name
        )],
        _ => Vec::new(),
    }
}

/// Two-way on these tables.
pub async fn check_two_way(ep: &MysqlEndpoint, tables: &[TargetTable]) -> Vec<String> {
    check::preflight_two_way(ep, &pairs(tables)).await.iter().map(ToString::to_string).collect()
}

/// A table name as this server names it: a bare name takes the URL's database.
pub fn qualify(ep: &MysqlEndpoint, name: &TableName) -> TableName {
    match &name.schema {
        Some(_) => name.clone(),
        None => TableName { schema: Some(ep.opts.db_name().unwrap_or_default().to_string()), name: name.name.clone() },
    }
}

fn pairs(tables: &[TargetTable]) -> Vec<(String, String)> {
    tables.iter().map(|t| (t.name.schema.clone().unwrap_or_default(), t.name.name.clone())).collect()
}
