//! Comparing MySQL/MariaDB tables: the server's own `CHECKSUM TABLE … EXTENDED`, and rows
//! in key order (binary protocol, decoded as docs/mysql-types.md says) for bisection.

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::schema::qualified;
use super::values::{self, ColumnKind, at, decode_row, to_param};
use super::{MysqlEndpoint, ident};
use crate::connector::ConnectorError;
use crate::model::{Key, KeyRange, Row, TableName, TableSchema};

/// The server's checksum of a whole table (`None` when the table does not exist).
pub async fn checksum_table(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableName,
) -> Result<Option<u64>, ConnectorError> {
    let sql = format!("CHECKSUM TABLE {} EXTENDED", qualified(table));
    let row: Option<(String, Option<u64>)> =
        conn.query_first(sql).await.map_err(ep.error(format!("checksumming table {table}")))?;
    Ok(row.and_then(|(_, sum)| sum))
}

/// `WHERE` condition selecting keys after a bound key, written as
/// `a > ? OR (a = ? AND b > ?) …` (MariaDB does not use an index for row-value `>`),
/// with the key values to bind, in order.
pub fn after_key_condition(table: &TableSchema, after: &Key) -> (String, Vec<mysql_async::Value>) {
    let cols: Vec<String> = table.key_columns().iter().map(|c| ident(c)).collect();
    let mut ors = Vec::with_capacity(cols.len());
    let mut params = Vec::new();
    for i in 0..cols.len() {
        let mut ands: Vec<String> = Vec::with_capacity(i + 1);
        for (j, col) in cols.iter().enumerate().take(i) {
            ands.push(format!("{col} = ?"));
            params.push(to_param(&after[j]));
        }
        ands.push(format!("{} > ?", cols[i]));
        params.push(to_param(&after[i]));
        ors.push(if ands.len() == 1 { ands.remove(0) } else { format!("({})", ands.join(" AND ")) });
    }
    (ors.join(" OR "), params)
}

/// `ORDER BY` list of the primary key.
pub fn key_order(table: &TableSchema) -> String {
    table.key_columns().iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ")
}

/// Up to `limit` rows with keys after `after`, in key order (the server's collation).
pub async fn rows_after(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableSchema,
    after: Option<&Key>,
    limit: usize,
) -> Result<Vec<Row>, ConnectorError> {
    let kinds = values::kinds(ep, table)?;
    let cols: Vec<String> = table.columns.iter().map(|c| ident(&c.name)).collect();
    let (filter, params) = match after {
        Some(k) => {
            let (cond, params) = after_key_condition(table, k);
            (format!(" WHERE {cond}"), params)
        }
        None => (String::new(), Vec::new()),
    };
    let sql = format!(
        "SELECT {} FROM {}{filter} ORDER BY {} LIMIT {limit}",
        cols.join(", "),
        qualified(&table.name),
        key_order(table)
    );
    let params = if params.is_empty() { mysql_async::Params::Empty } else { mysql_async::Params::Positional(params) };
    let rows: Vec<mysql_async::Row> =
        conn.exec(sql, params).await.map_err(ep.error(format!("reading rows of {}", table.name)))?;
    rows.into_iter().map(|r| decode_row(table, &kinds, r).map_err(|e| at(ep, e))).collect()
}

/// How verify reads a MySQL table's keys: in the server's own collation order (both
/// sides MySQL), or in byte order (`CAST(.. AS BINARY)` on text key columns), which is
/// the order a SQLite peer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrder {
    /// The server's collation; indexes serve every range.
    Server,
    /// Byte order of text key columns (slower: the server sorts).
    Bytes,
}

/// The key column expressions in `order`.
fn key_exprs(ep: &MysqlEndpoint, table: &TableSchema, order: KeyOrder) -> Result<Vec<String>, ConnectorError> {
    let kinds = values::kinds(ep, table)?;
    Ok(table
        .primary_key
        .iter()
        .map(|&i| {
            let col = ident(&table.columns[i].name);
            let textual = matches!(kinds[i], ColumnKind::Text | ColumnKind::Enum(_) | ColumnKind::Set(_));
            if order == KeyOrder::Bytes && textual { format!("CAST({col} AS BINARY)") } else { col }
        })
        .collect())
}

/// `a OP1 ? OR (a = ? AND b OP2 ?)`: keys after (`>`,`>`) or up to (`<`,`<=`) a bound.
fn bound_condition(
    exprs: &[String],
    key: &Key,
    strict: &str,
    last: &str,
    params: &mut Vec<mysql_async::Value>,
) -> String {
    let mut ors = Vec::with_capacity(exprs.len());
    for i in 0..exprs.len() {
        let mut ands: Vec<String> = Vec::with_capacity(i + 1);
        for (j, e) in exprs.iter().enumerate().take(i) {
            ands.push(format!("{e} = ?"));
            params.push(to_param(&key[j]));
        }
        let op = if i + 1 == exprs.len() { last } else { strict };
        ands.push(format!("{} {op} ?", exprs[i]));
        params.push(to_param(&key[i]));
        ors.push(format!("({})", ands.join(" AND ")));
    }
    format!("({})", ors.join(" OR "))
}

/// `WHERE` text for a key range and its parameters.
fn range_filter(exprs: &[String], range: &KeyRange) -> (String, Vec<mysql_async::Value>) {
    let mut params = Vec::new();
    let mut conds = Vec::new();
    if let Some(k) = &range.after {
        conds.push(bound_condition(exprs, k, ">", ">", &mut params));
    }
    if let Some(k) = &range.upto {
        conds.push(bound_condition(exprs, k, "<", "<=", &mut params));
    }
    let filter = if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) };
    (filter, params)
}

fn params_of(p: Vec<mysql_async::Value>) -> mysql_async::Params {
    if p.is_empty() { mysql_async::Params::Empty } else { mysql_async::Params::Positional(p) }
}

/// A schema holding only the key columns of `table` (decodes key-only rows).
fn key_schema(table: &TableSchema) -> TableSchema {
    TableSchema {
        name: table.name.clone(),
        columns: table.primary_key.iter().map(|&i| table.columns[i].clone()).collect(),
        primary_key: (0..table.primary_key.len()).collect(),
        unique_keys: Vec::new(),
        foreign_keys: Vec::new(),
        create_sql: None,
    }
}

async fn fetch_rows(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableSchema,
    sql: String,
    params: Vec<mysql_async::Value>,
) -> Result<Vec<Row>, ConnectorError> {
    let kinds = values::kinds(ep, table)?;
    let rows: Vec<mysql_async::Row> =
        conn.exec(sql, params_of(params)).await.map_err(ep.error(format!("reading rows of {}", table.name)))?;
    rows.into_iter().map(|r| decode_row(table, &kinds, r).map_err(|e| at(ep, e))).collect()
}

/// Rows with keys in `range`, in key `order`, at most `limit` of them.
pub async fn rows_in_range(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableSchema,
    range: &KeyRange,
    order: KeyOrder,
    limit: Option<usize>,
) -> Result<Vec<Row>, ConnectorError> {
    let exprs = key_exprs(ep, table, order)?;
    let cols: Vec<String> = table.columns.iter().map(|c| ident(&c.name)).collect();
    let (filter, params) = range_filter(&exprs, range);
    let limit = limit.map(|l| format!(" LIMIT {l}")).unwrap_or_default();
    let sql = format!(
        "SELECT {} FROM {}{filter} ORDER BY {}{limit}",
        cols.join(", "),
        qualified(&table.name),
        exprs.join(", ")
    );
    fetch_rows(ep, conn, table, sql, params).await
}

/// The key `offset` rows past the start of `range` (0 = its first key), if there is one.
pub async fn key_at(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableSchema,
    range: &KeyRange,
    order: KeyOrder,
    offset: u64,
) -> Result<Option<Key>, ConnectorError> {
    let exprs = key_exprs(ep, table, order)?;
    let cols: Vec<String> = table.key_columns().iter().map(|c| ident(c)).collect();
    let (filter, params) = range_filter(&exprs, range);
    let sql = format!(
        "SELECT {} FROM {}{filter} ORDER BY {} LIMIT 1 OFFSET {offset}",
        cols.join(", "),
        qualified(&table.name),
        exprs.join(", ")
    );
    Ok(fetch_rows(ep, conn, &key_schema(table), sql, params).await?.into_iter().next())
}

/// The rows with these keys (missing keys are left out), in no particular order.
pub async fn rows_by_keys(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableSchema,
    keys: &[Key],
) -> Result<Vec<Row>, ConnectorError> {
    let cols: Vec<String> = table.columns.iter().map(|c| ident(&c.name)).collect();
    let conds: Vec<String> = table.key_columns().iter().map(|c| format!("{} = ?", ident(c))).collect();
    let sql = format!("SELECT {} FROM {} WHERE {}", cols.join(", "), qualified(&table.name), conds.join(" AND "));
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        out.extend(fetch_rows(ep, conn, table, sql.clone(), k.iter().map(to_param).collect()).await?);
    }
    Ok(out)
}

/// Row count and the lowest and highest key of a table, in key `order`.
pub async fn count_min_max(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableSchema,
    order: KeyOrder,
) -> Result<(u64, Option<Key>, Option<Key>), ConnectorError> {
    let n: Option<u64> = conn
        .query_first(format!("SELECT COUNT(*) FROM {}", qualified(&table.name)))
        .await
        .map_err(ep.error(format!("counting rows of {}", table.name)))?;
    let exprs = key_exprs(ep, table, order)?;
    let cols: Vec<String> = table.key_columns().iter().map(|c| ident(c)).collect();
    let desc: Vec<String> = exprs.iter().map(|e| format!("{e} DESC")).collect();
    let mut ends = Vec::new();
    for by in [exprs.join(", "), desc.join(", ")] {
        let sql = format!("SELECT {} FROM {} ORDER BY {by} LIMIT 1", cols.join(", "), qualified(&table.name));
        ends.push(fetch_rows(ep, conn, &key_schema(table), sql, Vec::new()).await?.into_iter().next());
    }
    let max = ends.pop().flatten();
    let min = ends.pop().flatten();
    Ok((n.unwrap_or(0), min, max))
}

/// The collation of each primary-key column (`None` for columns without one).
pub async fn key_collations(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableSchema,
) -> Result<Vec<Option<String>>, ConnectorError> {
    let cols: Vec<(String, Option<String>)> = conn
        .exec(
            "SELECT COLUMN_NAME, COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (table.name.schema.clone().unwrap_or_default(), &table.name.name),
        )
        .await
        .map_err(ep.error(format!("reading the collations of {}", table.name)))?;
    Ok(table
        .key_columns()
        .iter()
        .map(|k| cols.iter().find(|(c, _)| c == k).and_then(|(_, coll)| coll.clone()))
        .collect())
}

/// The server's estimate of a table's rows (information_schema), for progress.
pub async fn estimated_rows(ep: &MysqlEndpoint, conn: &mut Conn, table: &TableName) -> Result<u64, ConnectorError> {
    let n: Option<Option<u64>> = conn
        .exec_first(
            "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (table.schema.clone().unwrap_or_default(), &table.name),
        )
        .await
        .map_err(ep.error(format!("estimating the rows of {table}")))?;
    Ok(n.flatten().unwrap_or(0))
}

/// A key range's checksum computed by the server: row count and the XOR of the per-row
/// `CRC32(CONCAT_WS('#', columns…, NULL flags))`, as text (pt-table-checksum's form:
/// one pass over each row's text, MySQL and MariaDB alike; a second hash per row would
/// double the server's work). Both sides must be MySQL with the same column types (the
/// text of a value is the server's rendering of it). Rows are unique by key, so XOR
/// cannot cancel equal rows; a differing range checksums equal with odds of 2^-32.
pub async fn range_checksum(
    ep: &MysqlEndpoint,
    conn: &mut Conn,
    table: &TableSchema,
    range: &KeyRange,
    order: KeyOrder,
) -> Result<(u64, String), ConnectorError> {
    let exprs = key_exprs(ep, table, order)?;
    let cols: Vec<String> = table.columns.iter().map(|c| ident(&c.name)).collect();
    // NULL flags keep NULL apart from '' (CONCAT_WS skips NULLs).
    let nulls: Vec<String> =
        table.columns.iter().filter(|c| c.nullable).map(|c| format!("ISNULL({})", ident(&c.name))).collect();
    let mut parts = cols.clone();
    if !nulls.is_empty() {
        parts.push(format!("CONCAT({})", nulls.join(", ")));
    }
    let row = format!("CONCAT_WS('#', {})", parts.join(", "));
    let (filter, params) = range_filter(&exprs, range);
    let sql = format!("SELECT COUNT(*), COALESCE(BIT_XOR(CRC32({row})), 0) FROM {}{filter}", qualified(&table.name));
    let r: Option<(u64, u64)> = conn
        .exec_first(sql, params_of(params))
        .await
        .map_err(ep.error(format!("checksumming rows of {}", table.name)))?;
    let (n, hash) = r.unwrap_or((0, 0));
    Ok((n, format!("{hash:08x}")))
}
