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

use crate::model::{Key, Row, TableSchema, cmp_keys};

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
            sum = sum.wrapping_add(fnv1a(text.as_bytes()));
        }
    }
    Ok((count, sum))
}

/// FNV-1a, 64-bit: stable across builds and platforms.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
