//! Chunked snapshot of existing rows. SQLite runs one writer at a time, so a chunk and
//! the changelog head read in one read transaction are exactly consistent: the engine
//! applies the stream up to that head, then the chunk (no lock on the application).

use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Row as _};

use super::literal::{ident, parse_row, row_expr, string};
use super::values::bind_all;
use super::{SqliteEndpoint, rollback};
use crate::connector::{Chunk, ConnectorError};
use crate::model::{Key, SiteId, TableSchema};

/// `WHERE` clause selecting keys after a bound key (row-value comparison).
pub fn after_key_clause(table: &TableSchema) -> String {
    let cols: Vec<String> = table.key_columns().iter().map(|c| ident(c)).collect();
    let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
    format!("({}) > ({})", cols.join(", "), marks.join(", "))
}

/// `ORDER BY` of the primary key.
pub fn key_order(table: &TableSchema) -> String {
    let cols: Vec<String> = table.key_columns().iter().map(|c| ident(c)).collect();
    cols.join(", ")
}

/// Reads up to `limit` rows after `after`, and the changelog head, in one read transaction.
pub async fn read_chunk(
    ep: &SqliteEndpoint,
    conn: &mut SqliteConnection,
    table: &TableSchema,
    after: Option<&Key>,
    limit: usize,
    versions: bool,
) -> Result<Chunk, ConnectorError> {
    let cols: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
    let filter = if after.is_some() { format!("WHERE {}", after_key_clause(table)) } else { String::new() };
    let version = if versions {
        format!(
            ", (SELECT origin || ' ' || ts FROM ferry_changelog WHERE tbl = {} AND pk = {} ORDER BY seq DESC LIMIT 1)",
            string(&table.name.name),
            row_expr("", &table.key_columns())
        )
    } else {
        String::new()
    };
    let sql = format!(
        "SELECT {}{version} FROM {} {filter} ORDER BY {} LIMIT {limit}",
        row_expr("", &cols),
        ident(&table.name.name),
        key_order(table)
    );
    let what = format!("reading a snapshot chunk of {}", table.name);
    sqlx::query("BEGIN").execute(&mut *conn).await.map_err(ep.query_error(what.clone()))?;
    let result = async {
        let head: Option<i64> =
            sqlx::query_scalar("SELECT max(seq) FROM ferry_changelog").fetch_one(&mut *conn).await?;
        let mut q = sqlx::query(AssertSqlSafe(sql));
        if let Some(k) = after {
            q = bind_all(q, k).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        }
        let rows = q.fetch_all(&mut *conn).await?;
        sqlx::query("COMMIT").execute(&mut *conn).await?;
        Ok::<_, sqlx::Error>((head.unwrap_or(0), rows))
    }
    .await;
    let (head, rows) = match result {
        Ok(v) => v,
        Err(e) => {
            rollback(conn).await;
            return Err(ConnectorError::Query { endpoint: ep.name.clone(), what, source: e });
        }
    };
    let mut out = Vec::with_capacity(rows.len());
    let mut vers = Vec::new();
    for r in rows {
        if versions {
            let v: Option<String> = r.get(1);
            vers.push(v.and_then(|v| {
                let (site, ts) = v.rsplit_once(' ')?;
                Some((SiteId::new(site), ts.parse().ok()?))
            }));
        }
        let text: String = r.get(0);
        let row = parse_row(&text).map_err(|e| ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!("a row of {} could not be read: {e}", table.name),
            fix: "report this as a bug with the row's content".into(),
        })?;
        out.push(row);
    }
    Ok(Chunk {
        rows: out,
        position: Some(super::position::at(head)),
        marks: None,
        versions: versions.then_some(vers),
        native: None,
    })
}
