//! Tables of a PostgreSQL database as ferry sees them: which match the task's
//! `schema.table` globs, their columns in order with their declared types
//! (`format_type`), primary, unique and foreign keys; and creating a table on a new
//! target.

use std::sync::Arc;

use sqlx::Row as _;
use sqlx::postgres::PgConnection;

use super::{FERRY_SCHEMA, PgEndpoint, ident, qualified};
use crate::connector::ConnectorError;
use crate::model::{Column, ForeignKey, TableName, TableSchema};

/// `schema.table` patterns (a bare pattern is in `public`).
pub fn qualified_patterns(ep: &PgEndpoint, patterns: &[String]) -> Result<Vec<glob::Pattern>, ConnectorError> {
    patterns
        .iter()
        .map(|p| {
            let full = if p.contains('.') { p.clone() } else { format!("public.{p}") };
            glob::Pattern::new(&full).map_err(|e| ConnectorError::Setup {
                endpoint: ep.name.clone(),
                problem: format!("table pattern {p:?} is invalid: {e}"),
                fix: "write schema.table patterns with * and ? wildcards, e.g. \"public.*\"".into(),
            })
        })
        .collect()
}

/// Every user table of the database (not ferry's, not the catalogs').
pub async fn all_tables(ep: &PgEndpoint, conn: &mut PgConnection) -> Result<Vec<TableName>, ConnectorError> {
    let rows = sqlx::query(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname NOT IN ('pg_catalog', 'information_schema', $1) \
         AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' ORDER BY 1, 2",
    )
    .bind(FERRY_SCHEMA)
    .fetch_all(&mut *conn)
    .await
    .map_err(ep.error("listing tables"))?;
    Ok(rows.iter().map(|r| TableName { schema: Some(r.get(0)), name: r.get(1) }).collect())
}

/// The tables matching the globs; a pattern without wildcards that names no table is
/// an error.
pub async fn matching_tables(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    patterns: &[String],
) -> Result<Vec<TableName>, ConnectorError> {
    let globs = qualified_patterns(ep, patterns)?;
    let all = all_tables(ep, conn).await?;
    for (p, g) in patterns.iter().zip(&globs) {
        let literal = !p.contains(['*', '?', '[']);
        if literal && !all.iter().any(|t| g.matches(&t.to_string())) {
            return Err(ConnectorError::Setup {
                endpoint: ep.name.clone(),
                problem: format!("table {p} does not exist in database {}", ep.database),
                fix: "create it, or correct the task's tables (schema.table)".into(),
            });
        }
    }
    Ok(all.into_iter().filter(|t| globs.iter().any(|g| g.matches(&t.to_string()))).collect())
}

/// Describes one table as it is (`None` when it does not exist), without judging it.
pub async fn describe_loose(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    table: &TableName,
) -> Result<Option<TableSchema>, ConnectorError> {
    let what = || format!("describing table {table}");
    let oid: Option<i64> = sqlx::query_scalar("SELECT to_regclass($1)::oid::bigint")
        .bind(qualified(table))
        .fetch_one(&mut *conn)
        .await
        .map_err(ep.error(what()))?;
    let Some(oid) = oid else { return Ok(None) };
    let cols = sqlx::query(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull FROM pg_attribute a \
         WHERE a.attrelid = $1::bigint::oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
    )
    .bind(oid)
    .fetch_all(&mut *conn)
    .await
    .map_err(ep.error(what()))?;
    let columns: Vec<Column> =
        cols.iter().map(|r| Column { name: r.get(0), decl_type: r.get(1), nullable: r.get(2) }).collect();
    let keys = sqlx::query(
        "SELECT i.indisprimary, (SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord) \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum) \
         FROM pg_index i WHERE i.indrelid = $1::bigint::oid AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL \
         ORDER BY NOT i.indisprimary, i.indexrelid",
    )
    .bind(oid)
    .fetch_all(&mut *conn)
    .await
    .map_err(ep.error(what()))?;
    let index = |names: &[String]| -> Option<Vec<usize>> {
        names.iter().map(|n| columns.iter().position(|c| &c.name == n)).collect()
    };
    let mut primary_key = Vec::new();
    let mut unique_keys = Vec::new();
    for r in &keys {
        let primary: bool = r.get(0);
        let names: Option<Vec<String>> = r.get(1);
        let Some(cols) = names.as_deref().and_then(index) else { continue };
        if primary {
            primary_key = cols;
        } else {
            unique_keys.push(cols);
        }
    }
    let foreign_keys = foreign_keys(ep, conn, oid, table, &columns).await?;
    Ok(Some(TableSchema { name: table.clone(), columns, primary_key, unique_keys, foreign_keys, create_sql: None }))
}

/// The foreign keys of a table (its oid): columns, parent and parent columns, and
/// whether ON DELETE/UPDATE changes child rows (CASCADE, SET NULL, SET DEFAULT).
async fn foreign_keys(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    oid: i64,
    table: &TableName,
    columns: &[Column],
) -> Result<Vec<ForeignKey>, ConnectorError> {
    let names = |rel: &str, keys: &str| {
        format!(
            "(SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(c.{keys}) WITH ORDINALITY k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = c.{rel} AND a.attnum = k.attnum)"
        )
    };
    let sql = format!(
        "SELECT {}, pn.nspname::text, pc.relname::text, {}, \
         c.confdeltype NOT IN ('a', 'r') OR c.confupdtype NOT IN ('a', 'r') \
         FROM pg_constraint c JOIN pg_class pc ON pc.oid = c.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace \
         WHERE c.conrelid = $1::bigint::oid AND c.contype = 'f' ORDER BY c.conname",
        names("conrelid", "conkey"),
        names("confrelid", "confkey")
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(oid)
        .fetch_all(&mut *conn)
        .await
        .map_err(ep.error(format!("reading the foreign keys of {table}")))?;
    let mut out = Vec::new();
    for r in &rows {
        let own: Option<Vec<String>> = r.get(0);
        let parent_columns: Option<Vec<String>> = r.get(3);
        let idx: Option<Vec<usize>> =
            own.unwrap_or_default().iter().map(|n| columns.iter().position(|c| &c.name == n)).collect();
        let (Some(idx), Some(parent_columns)) = (idx, parent_columns) else { continue };
        out.push(ForeignKey {
            columns: idx,
            parent: TableName { schema: Some(r.get(1)), name: r.get(2) },
            parent_columns,
            cascades: r.get(4),
        });
    }
    Ok(out)
}

/// Describes one table (`None` when it does not exist); a table without a primary key
/// is a setup error with its fix.
pub async fn describe(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    table: &TableName,
) -> Result<Option<TableSchema>, ConnectorError> {
    let Some(schema) = describe_loose(ep, conn, table).await? else { return Ok(None) };
    if schema.primary_key.is_empty() {
        return Err(ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!("table {table} has no primary key, so its rows cannot be told apart in the change stream"),
            fix: format!(
                "add one (ALTER TABLE {} ADD PRIMARY KEY (…)), or leave the table out of the task's tables",
                qualified(table)
            ),
        });
    }
    Ok(Some(schema))
}

/// Describes every table matching the globs.
pub async fn describe_matching(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    patterns: &[String],
) -> Result<Vec<Arc<TableSchema>>, ConnectorError> {
    let mut out = Vec::new();
    for name in matching_tables(ep, conn, patterns).await? {
        if let Some(s) = describe(ep, conn, &name).await? {
            out.push(Arc::new(s));
        }
    }
    Ok(out)
}

/// `CREATE TABLE` of a schema in PostgreSQL (types already PostgreSQL's), with its
/// schema created when missing; `keys` false leaves out its primary and unique keys
/// (added later with [`key_clauses`]).
pub fn create_sql(t: &TableSchema, keys: bool) -> String {
    let mut cols: Vec<String> = t
        .columns
        .iter()
        .map(|c| format!("{} {}{}", ident(&c.name), c.decl_type, if c.nullable { "" } else { " NOT NULL" }))
        .collect();
    if keys {
        cols.extend(key_clauses(t));
    }
    format!(
        "CREATE SCHEMA IF NOT EXISTS {}; CREATE TABLE IF NOT EXISTS {} ({})",
        ident(t.name.schema.as_deref().unwrap_or("public")),
        qualified(&t.name),
        cols.join(", ")
    )
}

/// The table's primary and unique keys as clauses of CREATE TABLE or (with `ADD`)
/// ALTER TABLE; PostgreSQL names them the same either way (`<table>_pkey`, …).
pub fn key_clauses(t: &TableSchema) -> Vec<String> {
    let names = |k: &[usize]| -> String {
        k.iter().filter_map(|&i| t.columns.get(i)).map(|c| ident(&c.name)).collect::<Vec<_>>().join(", ")
    };
    let mut out = Vec::new();
    if !t.primary_key.is_empty() {
        out.push(format!("PRIMARY KEY ({})", names(&t.primary_key)));
    }
    for k in &t.unique_keys {
        out.push(format!("UNIQUE ({})", names(k)));
    }
    out
}

/// The planner's estimate of a table's rows; `None` until the table was first analysed
/// or vacuumed (PostgreSQL says -1 then).
pub async fn estimated_rows(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    table: &TableName,
) -> Result<Option<u64>, ConnectorError> {
    let n: Option<f32> = sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = to_regclass($1)")
        .bind(qualified(table))
        .fetch_optional(&mut *conn)
        .await
        .map_err(ep.error(format!("estimating the rows of {table}")))?;
    Ok(n.filter(|n| *n >= 0.0).map(|n| n as u64))
}
