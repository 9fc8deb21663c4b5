//! Table discovery: globs to tables, columns, primary and unique keys. ferry's own
//! tables are created and moved forward by `migrate`.

use std::sync::Arc;

use sqlx::Row as _;
use sqlx::sqlite::SqliteConnection;

use super::SqliteEndpoint;
use crate::connector::ConnectorError;
use crate::model::{Column, TableName, TableSchema};

/// The heartbeat table: one row per site, flowing through the stream like any change.
pub const HEARTBEAT_TABLE: &str = crate::connector::HEARTBEAT_TABLE;

/// `ferry_changelog.op` of an incoming delete that found the row already deleted here:
/// kept so inserts made here afterwards show the delete as seen (`model::Prior`), never
/// read as a change, and not the row's version (this site's own delete is).
pub const OP_ALREADY_DELETED: i64 = 4;

/// `ferry_changelog.op` of an incoming insert or update that found the row already as it
/// makes it (a no-op update, or equal values written on both sides): kept so a change
/// made here afterwards carries it as the version it replaced (`Change::seen`); never
/// read as a change.
pub const OP_ALREADY_EQUAL: i64 = 5;

/// Whether a changelog row only records what an incoming change found (ops 4 and 5),
/// rather than a write to carry.
pub fn record_only(op: i64) -> bool {
    op == OP_ALREADY_DELETED || op == OP_ALREADY_EQUAL
}

/// Names of user tables (not sqlite_* or ferry_*), sorted.
pub async fn user_tables(ep: &SqliteEndpoint, conn: &mut SqliteConnection) -> Result<Vec<String>, ConnectorError> {
    let rows = sqlx::query(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
         AND name NOT LIKE 'ferry\\_%' ESCAPE '\\' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(ep.query_error("listing tables"))?;
    Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
}

/// Resolves globs to tables; a pattern that matches nothing is an error naming it.
pub async fn matching_tables(
    ep: &SqliteEndpoint,
    conn: &mut SqliteConnection,
    patterns: &[String],
) -> Result<Vec<String>, ConnectorError> {
    let all = user_tables(ep, conn).await?;
    let mut picked: Vec<String> = Vec::new();
    for p in patterns {
        let pat = glob::Pattern::new(p).map_err(|e| ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!("table pattern {p:?} is invalid: {e}"),
            fix: "use * and ? wildcards".into(),
        })?;
        let hits: Vec<&String> = all.iter().filter(|t| pat.matches(t)).collect();
        if hits.is_empty() {
            return Err(ConnectorError::Setup {
                endpoint: ep.name.clone(),
                problem: format!("no table matches {p:?} in {} (tables there: {})", ep.path.display(), list(&all)),
                fix: "correct the task's `tables` list or create the table first".into(),
            });
        }
        for h in hits {
            if !picked.contains(h) {
                picked.push(h.clone());
            }
        }
    }
    picked.sort();
    Ok(picked)
}

fn list(names: &[String]) -> String {
    if names.is_empty() { "none".to_string() } else { names.join(", ") }
}

/// Describes one table; a table without a primary key is an error with the fix.
pub async fn describe(
    ep: &SqliteEndpoint,
    conn: &mut SqliteConnection,
    table: &str,
) -> Result<Option<TableSchema>, ConnectorError> {
    let cols = sqlx::query("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1) ORDER BY cid")
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .map_err(ep.query_error(format!("describing table {table}")))?;
    if cols.is_empty() {
        return Ok(None);
    }
    let mut columns = Vec::new();
    let mut pk: Vec<(i64, usize)> = Vec::new();
    for (i, r) in cols.iter().enumerate() {
        let name: String = r.get(0);
        let decl: String = r.get(1);
        let notnull: i64 = r.get(2);
        let pkpos: i64 = r.get(3);
        if pkpos > 0 {
            pk.push((pkpos, i));
        }
        columns.push(Column { name, decl_type: decl, nullable: notnull == 0 });
    }
    if pk.is_empty() {
        return Err(ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!("table {table} has no primary key"),
            fix: format!(
                "give {table} a primary key (SQLite cannot add one in place: create a new table with PRIMARY KEY, copy the rows, rename it), or leave it out of the task's tables; ferry needs a key to apply changes exactly once"
            ),
        });
    }
    pk.sort();
    let primary_key: Vec<usize> = pk.into_iter().map(|(_, i)| i).collect();
    let unique_keys = unique_keys(ep, conn, table, &columns).await?;
    Ok(Some(TableSchema {
        name: TableName::bare(table),
        columns,
        primary_key,
        unique_keys,
        foreign_keys: Vec::new(),
        create_sql: None,
    }))
}

async fn unique_keys(
    ep: &SqliteEndpoint,
    conn: &mut SqliteConnection,
    table: &str,
    columns: &[Column],
) -> Result<Vec<Vec<usize>>, ConnectorError> {
    let idx = sqlx::query("SELECT name FROM pragma_index_list(?1) WHERE \"unique\" = 1 AND origin <> 'pk'")
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .map_err(ep.query_error(format!("listing unique indexes of {table}")))?;
    let mut keys = Vec::new();
    for r in idx {
        let name: String = r.get(0);
        let cols = sqlx::query("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")
            .bind(&name)
            .fetch_all(&mut *conn)
            .await
            .map_err(ep.query_error(format!("reading unique index {name} of {table}")))?;
        let key: Vec<usize> = cols
            .iter()
            .filter_map(|c| c.get::<Option<String>, _>(0))
            .filter_map(|c| columns.iter().position(|x| x.name == c))
            .collect();
        if !key.is_empty() {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// Describes every table matching the globs, plus the heartbeat table.
pub async fn describe_matching(
    ep: &SqliteEndpoint,
    conn: &mut SqliteConnection,
    patterns: &[String],
) -> Result<Vec<Arc<TableSchema>>, ConnectorError> {
    let mut out = Vec::new();
    for t in matching_tables(ep, conn, patterns).await? {
        if let Some(s) = describe(ep, conn, &t).await? {
            out.push(Arc::new(s));
        }
    }
    Ok(out)
}

/// The heartbeat table's schema (fixed).
pub fn heartbeat_schema() -> TableSchema {
    TableSchema {
        name: TableName::bare(HEARTBEAT_TABLE),
        columns: vec![
            Column { name: "site".into(), decl_type: "TEXT".into(), nullable: false },
            Column { name: "ts".into(), decl_type: "INTEGER".into(), nullable: false },
        ],
        primary_key: vec![0],
        unique_keys: vec![],
        foreign_keys: vec![],
        create_sql: None,
    }
}

/// CREATE TABLE for a target table from a source schema.
pub fn create_table_sql(schema: &TableSchema) -> String {
    use super::literal::ident;
    let cols: Vec<String> = schema
        .columns
        .iter()
        .map(|c| {
            let mut s = ident(&c.name);
            if !c.decl_type.is_empty() {
                s.push(' ');
                s.push_str(&c.decl_type);
            }
            if !c.nullable {
                s.push_str(" NOT NULL");
            }
            s
        })
        .collect();
    let pk: Vec<String> = schema.key_columns().iter().map(|c| ident(c)).collect();
    let mut uniques = String::new();
    for u in &schema.unique_keys {
        let names: Vec<String> = u.iter().map(|&i| ident(&schema.columns[i].name)).collect();
        uniques.push_str(&format!(", UNIQUE ({})", names.join(", ")));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}){uniques})",
        ident(&schema.name.name),
        cols.join(", "),
        pk.join(", ")
    )
}

/// A table's rows, counted: SQLite keeps no row statistics (a b-tree walk).
pub async fn count_rows(ep: &SqliteEndpoint, conn: &mut SqliteConnection, table: &str) -> Result<u64, ConnectorError> {
    let sql = format!("SELECT count(*) FROM {}", super::literal::ident(table));
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut *conn)
        .await
        .map_err(ep.query_error(format!("counting the rows of {table}")))?;
    Ok(u64::try_from(n).unwrap_or(0))
}
