//! Comparing MySQL/MariaDB tables: the server's own `CHECKSUM TABLE … EXTENDED`, and rows
//! in key order (binary protocol, decoded as docs/mysql-types.md says) for bisection.

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::schema::qualified;
use super::values::{self, at, decode_row, to_param};
use super::{MysqlEndpoint, ident};
use crate::connector::ConnectorError;
use crate::model::{Key, Row, TableName, TableSchema};

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
