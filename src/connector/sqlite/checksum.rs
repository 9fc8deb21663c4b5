//! Reading rows in key order for comparison, and checksums of key ranges computed in
//! ferry over a canonical row form (the quote() literal list).

use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Row as _};

use super::SqliteEndpoint;
use super::literal::{ident, parse_row, row_expr};
use super::snapshot::{after_key_clause, key_order};
use super::values::bind_all;
use crate::connector::ConnectorError;
use std::cmp::Ordering;

use crate::model::{Key, KeyRange, Row, TableSchema, cmp_keys};

/// Up to `limit` rows with keys after `after`, in key order, each with its canonical text.
pub async fn rows_after(
    ep: &SqliteEndpoint,
    conn: &mut SqliteConnection,
    table: &TableSchema,
    after: Option<&Key>,
    limit: usize,
) -> Result<Vec<(Row, String)>, ConnectorError> {
    let cols: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
    let filter = if after.is_some() { format!("WHERE {}", after_key_clause(table)) } else { String::new() };
    let sql = format!(
        "SELECT {} FROM {} {filter} ORDER BY {} LIMIT {limit}",
        row_expr("", &cols),
        ident(&table.name.name),
        key_order(table)
    );
    let mut q = sqlx::query(AssertSqlSafe(sql));
    if let Some(k) = after {
        q = bind_all(q, k).map_err(|e| ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: e.to_string(),
            fix: "the key cannot be compared on this endpoint".into(),
        })?;
    }
    let rows = q.fetch_all(&mut *conn).await.map_err(ep.query_error(format!("reading rows of {}", table.name)))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let text: String = r.get(0);
        let row = parse_row(&text).map_err(|e| ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!("a row of {} could not be read: {e}", table.name),
            fix: "report this as a bug with the row's content".into(),
        })?;
        out.push((row, text));
    }
    Ok(out)
}

/// Row count and an order-independent 64-bit checksum of the canonical rows with keys
/// in `(after, upto]` (either bound open when `None`).
pub async fn range_checksum(
    ep: &SqliteEndpoint,
    conn: &mut SqliteConnection,
    table: &TableSchema,
    after: Option<&Key>,
    upto: Option<&Key>,
) -> Result<(u64, u64), ConnectorError> {
    let mut cursor: Option<Key> = after.cloned();
    let (mut count, mut sum) = (0u64, 0u64);
    loop {
        let rows = rows_after(ep, conn, table, cursor.as_ref(), 10_000).await?;
        let Some((last, _)) = rows.last() else { break };
        cursor = Some(table.key_of(last));
        for (row, text) in &rows {
            if let Some(hi) = upto
                && cmp_keys(&table.key_of(row), hi) == Ordering::Greater
            {
                return Ok((count, sum));
            }
            count += 1;
            sum = sum.wrapping_add(crate::connector::own_names::fnv1a64(text.bytes()));
        }
    }
    Ok((count, sum))
}

/// `WHERE` text and the key values to bind for a range (row-value comparisons).
fn range_filter(table: &TableSchema, range: &KeyRange) -> (String, Vec<crate::model::Value>) {
    let cols: Vec<String> = table.key_columns().iter().map(|c| ident(c)).collect();
    let lhs = format!("({})", cols.join(", "));
    let mut conds = Vec::new();
    let mut binds = Vec::new();
    for (op, key) in [(">", &range.after), ("<=", &range.upto)] {
        if let Some(k) = key {
            let marks: Vec<String> = (binds.len() + 1..=binds.len() + k.len()).map(|i| format!("?{i}")).collect();
            conds.push(format!("{lhs} {op} ({})", marks.join(", ")));
            binds.extend(k.iter().cloned());
        }
    }
    let filter = if conds.is_empty() { String::new() } else { format!("WHERE {}", conds.join(" AND ")) };
    (filter, binds)
}

async fn fetch_literal_rows(
    ep: &SqliteEndpoint,
    conn: &mut SqliteConnection,
    table: &TableSchema,
    sql: String,
    binds: &[crate::model::Value],
) -> Result<Vec<Row>, ConnectorError> {
    let q = bind_all(sqlx::query(AssertSqlSafe(sql)), binds).map_err(|e| ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: format!("a key of {} cannot be compared on this endpoint: {e}", table.name),
        fix: "verify tables whose keys SQLite can hold exactly".into(),
    })?;
    let rows = q.fetch_all(&mut *conn).await.map_err(ep.query_error(format!("reading rows of {}", table.name)))?;
    rows.iter()
        .map(|r| {
            parse_row(r.get::<&str, _>(0)).map_err(|e| ConnectorError::Setup {
                endpoint: ep.name.clone(),
                problem: format!("a row of {} could not be read: {e}", table.name),
                fix: "report this as a bug with the row's content".into(),
            })
        })
        .collect()
}

/// Rows with keys in `range`, in key order, at most `limit` of them.
pub async fn rows_in_range(
    ep: &SqliteEndpoint,
    conn: &mut SqliteConnection,
    table: &TableSchema,
    range: &KeyRange,
    limit: Option<usize>,
) -> Result<Vec<Row>, ConnectorError> {
    let cols: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
    let (filter, binds) = range_filter(table, range);
    let limit = limit.map(|l| format!(" LIMIT {l}")).unwrap_or_default();
    let sql = format!(
        "SELECT {} FROM {} {filter} ORDER BY {}{limit}",
        row_expr("", &cols),
        ident(&table.name.name),
        key_order(table)
    );
    fetch_literal_rows(ep, conn, table, sql, &binds).await
}

/// The key `offset` rows past the start of `range` (0 = its first key), if there is one.
pub async fn key_at(
    ep: &SqliteEndpoint,
    conn: &mut SqliteConnection,
    table: &TableSchema,
    range: &KeyRange,
    offset: u64,
) -> Result<Option<Key>, ConnectorError> {
    let (filter, binds) = range_filter(table, range);
    let sql = format!(
        "SELECT {} FROM {} {filter} ORDER BY {} LIMIT 1 OFFSET {offset}",
        row_expr("", &table.key_columns()),
        ident(&table.name.name),
        key_order(table)
    );
    Ok(fetch_literal_rows(ep, conn, table, sql, &binds).await?.into_iter().next())
}

/// The rows with these keys (missing keys are left out), in no particular order.
pub async fn rows_by_keys(
    ep: &SqliteEndpoint,
    conn: &mut SqliteConnection,
    table: &TableSchema,
    keys: &[Key],
) -> Result<Vec<Row>, ConnectorError> {
    let cols: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
    let key_cols: Vec<String> = table.key_columns().iter().map(|c| ident(c)).collect();
    let marks: Vec<String> = (1..=key_cols.len()).map(|i| format!("?{i}")).collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE ({}) = ({})",
        row_expr("", &cols),
        ident(&table.name.name),
        key_cols.join(", "),
        marks.join(", ")
    );
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        out.extend(fetch_literal_rows(ep, conn, table, sql.clone(), k).await?);
    }
    Ok(out)
}

/// Row count and the lowest and highest key of a table.
pub async fn count_min_max(
    ep: &SqliteEndpoint,
    conn: &mut SqliteConnection,
    table: &TableSchema,
) -> Result<(u64, Option<Key>, Option<Key>), ConnectorError> {
    let sql = format!("SELECT count(*) FROM {}", ident(&table.name.name));
    let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
        .fetch_one(&mut *conn)
        .await
        .map_err(ep.query_error(format!("counting rows of {}", table.name)))?;
    let keys = row_expr("", &table.key_columns());
    let desc: Vec<String> = table.key_columns().iter().map(|c| format!("{} DESC", ident(c))).collect();
    let mut ends = Vec::new();
    for order in [key_order(table), desc.join(", ")] {
        let sql = format!("SELECT {keys} FROM {} ORDER BY {order} LIMIT 1", ident(&table.name.name));
        ends.push(fetch_literal_rows(ep, conn, table, sql, &[]).await?.into_iter().next());
    }
    let max = ends.pop().flatten();
    let min = ends.pop().flatten();
    Ok((u64::try_from(n).unwrap_or(0), min, max))
}

/// Row count and the wrapping sum of a 64-bit hash of each row's `quote()` text over a
/// key range, streamed (nothing held in memory). SQLite's `quote()` text is exact for
/// every storage class, so two SQLite sides with the same column types compare equal
/// exactly when their rows are the same values of the same classes. `hash` is the
/// caller's, so both sides of a comparison use the same one.
pub async fn range_text_digest(
    ep: &SqliteEndpoint,
    conn: &mut SqliteConnection,
    table: &TableSchema,
    range: &KeyRange,
    hash: fn(&[u8]) -> u64,
) -> Result<(u64, u64), ConnectorError> {
    use futures_util::TryStreamExt;
    let cols: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
    let (filter, binds) = range_filter(table, range);
    // No ORDER BY: the sum does not depend on the order rows come in.
    let sql = format!("SELECT {} FROM {} {filter}", row_expr("", &cols), ident(&table.name.name));
    let q = bind_all(sqlx::query(AssertSqlSafe(sql)), &binds).map_err(|e| ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: format!("a key of {} cannot be compared on this endpoint: {e}", table.name),
        fix: "verify tables whose keys SQLite can hold exactly".into(),
    })?;
    let what = format!("checksumming rows of {}", table.name);
    let mut rows = q.fetch(&mut *conn);
    let (mut count, mut sum) = (0u64, 0u64);
    while let Some(r) = rows.try_next().await.map_err(ep.query_error(what.clone()))? {
        count += 1;
        sum = sum.wrapping_add(hash(r.get::<&str, _>(0).as_bytes()));
    }
    Ok((count, sum))
}
