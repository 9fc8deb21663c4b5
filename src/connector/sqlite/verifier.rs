//! SQLite as one side of a verification: rows and ranges in key order (SQLite orders
//! text keys by bytes already), SQLite's exact row text hashed in ferry, repairs in its SQL.

use sqlx::sqlite::SqliteConnection;

use super::{self as sqlite, SqliteEndpoint, checksum as lite};
use crate::connector::ConnectorError;
use crate::connector::verifier::{Dialect, Extent, Side, hash_bytes};
use crate::model::{Key, KeyRange, Row, TableName, TableSchema};

/// A SQLite side: one connection; SQLite orders text keys by bytes already.
pub struct SqliteSide {
    pub(crate) ep: SqliteEndpoint,
    pub(crate) conn: SqliteConnection,
}

impl SqliteSide {
    /// Opens a connection; `write` when repairs will be applied.
    pub async fn open(ep: SqliteEndpoint, write: bool) -> Result<SqliteSide, ConnectorError> {
        let conn = ep.connect(if write { super::Access::ReadWrite } else { super::Access::ReadOnly }).await?;
        Ok(SqliteSide { ep, conn })
    }
}

/// SQLite's SQL for repairs.
pub struct SqliteDialect;

impl Dialect for SqliteDialect {
    fn store(&self) -> &'static str {
        "SQLite"
    }
    fn quote_table(&self, t: &TableName) -> String {
        super::literal::ident(&t.name)
    }
    fn quote_ident(&self, name: &str) -> String {
        super::literal::ident(name)
    }
    fn string(&self, s: &str) -> String {
        super::literal::string(s)
    }
    fn unsigned_above_i64_as_text(&self) -> bool {
        // SQLite integers are signed 64-bit.
        true
    }
    fn preamble(&self) -> Vec<String> {
        vec!["BEGIN".into()]
    }
    fn target_name(&self, mapped: &TableName, _default_db: Option<String>) -> Result<TableName, (String, String)> {
        Ok(TableName::bare(mapped.name.clone()))
    }
    fn native_method(&self, _floats: bool) -> Option<&'static str> {
        // SQLite's quote() text of a REAL is exact, so floats need no care here.
        Some("sqlite-text")
    }
}

impl Side for SqliteSide {
    fn name(&self) -> &str {
        &self.ep.name
    }
    fn dialect(&self) -> &'static dyn Dialect {
        &SqliteDialect
    }
    async fn describe(&mut self, table: &TableName) -> Result<Option<TableSchema>, ConnectorError> {
        sqlite::schema::describe(&self.ep, &mut self.conn, &table.name).await
    }
    async fn matching(&mut self, patterns: &[String]) -> Result<Vec<TableName>, ConnectorError> {
        let names = sqlite::schema::matching_tables(&self.ep, &mut self.conn, patterns).await?;
        Ok(names.into_iter().map(TableName::bare).collect())
    }
    async fn estimate(&mut self, table: &TableSchema) -> Result<u64, ConnectorError> {
        sqlite::schema::count_rows(&self.ep, &mut self.conn, &table.name.name).await
    }
    async fn rows(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        limit: Option<usize>,
    ) -> Result<Vec<Row>, ConnectorError> {
        lite::rows_in_range(&self.ep, &mut self.conn, table, range, limit).await
    }
    async fn key_at(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        offset: u64,
    ) -> Result<Option<Key>, ConnectorError> {
        lite::key_at(&self.ep, &mut self.conn, table, range, offset).await
    }
    async fn rows_by_keys(&mut self, table: &TableSchema, keys: &[Key]) -> Result<Vec<Row>, ConnectorError> {
        lite::rows_by_keys(&self.ep, &mut self.conn, table, keys).await
    }
    async fn native_checksum(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
    ) -> Result<Option<(u64, String)>, ConnectorError> {
        // SQLite has no aggregate hash function: ferry hashes SQLite's exact text of
        // each row as it streams by, without parsing it into values.
        let (n, sum) = lite::range_text_digest(&self.ep, &mut self.conn, table, range, hash_bytes).await?;
        Ok(Some((n, format!("{sum:016x}"))))
    }
    async fn extent(&mut self, table: &TableSchema) -> Result<Extent, ConnectorError> {
        lite::count_min_max(&self.ep, &mut self.conn, table).await
    }
    async fn apply(&mut self, statements: &[String]) -> Result<(), ConnectorError> {
        let what = "applying repair statements";
        sqlite::begin_immediate(&mut self.conn).await.map_err(self.ep.query_error(what))?;
        for s in statements {
            if let Err(e) = sqlite::exec_batch(&mut self.conn, s.clone()).await {
                sqlite::rollback(&mut self.conn).await;
                return Err(self.ep.query_error(format!("{what}: {s}"))(e));
            }
        }
        sqlite::commit(&mut self.conn).await.map_err(self.ep.query_error(what))
    }
    fn set_byte_order(&mut self) {}
    async fn close(self) {
        sqlite::close(self.conn).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::verifier::literal;
    use crate::model::Value;

    #[test]
    fn sqlite_literals_are_exact_and_escaped() {
        assert_eq!(literal(&SqliteDialect, &Value::Text("it's \\".into())), "'it''s \\'");
        assert_eq!(literal(&SqliteDialect, &Value::Bytes(vec![0, 255])), "X'00FF'");
        assert_eq!(literal(&SqliteDialect, &Value::UInt(u64::MAX)), "'18446744073709551615'");
    }
}
