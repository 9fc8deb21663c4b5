//! MySQL/MariaDB as one side of a verification: rows and ranges in the server's key
//! order (or bytes, against another store), checksums inside the server, repairs in its SQL.

use std::collections::HashMap;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::checksum::{self as my, KeyOrder, RowHash};
use super::{self as mysql, MysqlEndpoint};
use crate::connector::ConnectorError;
use crate::connector::verifier::{Dialect, Extent, Side};
use crate::model::{Key, KeyRange, Row, TableName, TableSchema};

/// A MySQL/MariaDB side: one session in UTC.
pub struct MysqlSide {
    pub(crate) ep: MysqlEndpoint,
    pub(crate) conn: Conn,
    pub(crate) order: KeyOrder,
    pub(crate) hash: RowHash,
    /// Each table's row text ([`my::row_text`]), built at its first checksum.
    pub(crate) rows: HashMap<TableName, String>,
}

impl MysqlSide {
    /// Opens a session in UTC that reads keys in the server's order.
    pub async fn open(ep: MysqlEndpoint) -> Result<MysqlSide, ConnectorError> {
        let mut conn = ep.connect().await?;
        let hash = RowHash::detect(&mut conn).await;
        Ok(MysqlSide { ep, conn, order: KeyOrder::Server, hash, rows: HashMap::new() })
    }
}

/// MySQL/MariaDB's SQL for repairs (a session in UTC, as every ferry session).
pub struct MysqlDialect;

impl Dialect for MysqlDialect {
    fn store(&self) -> &'static str {
        "MySQL/MariaDB"
    }
    fn quote_table(&self, t: &TableName) -> String {
        super::schema::qualified(t)
    }
    fn quote_ident(&self, name: &str) -> String {
        super::ident(name)
    }
    fn string(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len() + 2);
        out.push('\'');
        for c in s.chars() {
            match c {
                '\'' => out.push_str("''"),
                '\\' => out.push_str("\\\\"),
                '\0' => out.push_str("\\0"),
                c => out.push(c),
            }
        }
        out.push('\'');
        out
    }
    fn unsigned_above_i64_as_text(&self) -> bool {
        false
    }
    fn preamble(&self) -> Vec<String> {
        vec!["SET time_zone = '+00:00'".into(), "START TRANSACTION".into()]
    }
    fn target_name(&self, mapped: &TableName, default_db: Option<String>) -> Result<TableName, (String, String)> {
        match (&mapped.schema, default_db) {
            (Some(_), _) => Ok(mapped.clone()),
            (None, Some(db)) => Ok(TableName { schema: Some(db), name: mapped.name.clone() }),
            (None, None) => Err((
                format!("table {} has no database", mapped.name),
                "put the database in the endpoint's url (mysql://USER:PASSWORD@HOST:PORT/DB)".into(),
            )),
        }
    }
    fn native_method(&self, floats: bool) -> Option<&'static str> {
        // The server renders floats with fewer digits than they hold: two different
        // floats can look alike, so such tables are hashed in ferry from exact values.
        (!floats).then_some("in-database")
    }
}

impl Side for MysqlSide {
    fn name(&self) -> &str {
        &self.ep.name
    }
    fn dialect(&self) -> &'static dyn Dialect {
        &MysqlDialect
    }
    async fn describe(&mut self, table: &TableName) -> Result<Option<TableSchema>, ConnectorError> {
        mysql::schema::describe(&self.ep, &mut self.conn, table).await
    }
    async fn matching(&mut self, patterns: &[String]) -> Result<Vec<TableName>, ConnectorError> {
        mysql::schema::matching_tables(&self.ep, &mut self.conn, patterns).await
    }
    async fn estimate(&mut self, table: &TableSchema) -> Result<u64, ConnectorError> {
        my::estimated_rows(&self.ep, &mut self.conn, &table.name).await
    }
    async fn rows(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        limit: Option<usize>,
    ) -> Result<Vec<Row>, ConnectorError> {
        my::rows_in_range(&self.ep, &mut self.conn, table, range, self.order, limit).await
    }
    async fn key_at(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        offset: u64,
    ) -> Result<Option<Key>, ConnectorError> {
        my::key_at(&self.ep, &mut self.conn, table, range, self.order, offset).await
    }
    async fn rows_by_keys(&mut self, table: &TableSchema, keys: &[Key]) -> Result<Vec<Row>, ConnectorError> {
        my::rows_by_keys(&self.ep, &mut self.conn, table, keys).await
    }
    async fn native_checksum(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
    ) -> Result<Option<(u64, String)>, ConnectorError> {
        let row = match self.rows.get(&table.name) {
            Some(r) => r.clone(),
            None => {
                let may_hold = my::may_hold_separator(&self.ep, &mut self.conn, table).await?;
                let r = my::row_text(table, &may_hold);
                self.rows.insert(table.name.clone(), r.clone());
                r
            }
        };
        my::range_checksum(&self.ep, &mut self.conn, table, range, self.order, self.hash, &row).await.map(Some)
    }
    async fn extent(&mut self, table: &TableSchema) -> Result<Extent, ConnectorError> {
        my::count_min_max(&self.ep, &mut self.conn, table, self.order).await
    }
    async fn apply(&mut self, statements: &[String]) -> Result<(), ConnectorError> {
        let what = "applying repair statements";
        self.ep.exec(&mut self.conn, what, "START TRANSACTION").await?;
        for s in statements {
            if let Err(e) = self.conn.query_drop(s.as_str()).await {
                let _ = self.conn.query_drop("ROLLBACK").await;
                return Err(self.ep.error(format!("{what}: {s}"))(e));
            }
        }
        self.ep.exec(&mut self.conn, what, "COMMIT").await
    }
    async fn key_collations(&mut self, table: &TableSchema) -> Result<Option<Vec<Option<String>>>, ConnectorError> {
        my::key_collations(&self.ep, &mut self.conn, table).await.map(Some)
    }
    fn default_database(&self) -> Option<String> {
        self.ep.opts.db_name().map(str::to_string)
    }
    fn set_byte_order(&mut self) {
        self.order = KeyOrder::Bytes;
    }
    async fn close(self) {
        let _ = self.conn.disconnect().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::verifier::literal;
    use crate::model::Value;

    #[test]
    fn mysql_literals_are_exact_and_escaped() {
        assert_eq!(literal(&MysqlDialect, &Value::Text("it's \\ ok".into())), "'it''s \\\\ ok'");
        assert_eq!(literal(&MysqlDialect, &Value::Float(0.1)), "1e-1");
        assert_eq!(literal(&MysqlDialect, &Value::Null), "NULL");
    }
}
