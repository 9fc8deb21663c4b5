//! One side of a comparison: an endpoint that can describe a table, read rows of a key
//! range in key order, find chunk boundaries, checksum a range inside the database where
//! it can, and apply repair statements. A new engine (PostgreSQL) implements [`Side`]
//! and gets a variant of [`AnySide`].

use std::future::Future;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use sqlx::sqlite::SqliteConnection;

use super::canonical::hash_bytes;
use crate::config::{Endpoint, EndpointUrl};
use crate::connector::ConnectorError;
use crate::connector::mysql::checksum::{self as my, KeyOrder};
use crate::connector::mysql::{self, MysqlEndpoint};
use crate::connector::sqlite::checksum as lite;
use crate::connector::sqlite::{self, Access, SqliteEndpoint};
use crate::model::{Key, KeyRange, Row, TableName, TableSchema};

/// Which SQL a side speaks (repair statements are written in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite.
    Sqlite,
    /// MySQL/MariaDB.
    Mysql,
}

/// Row count and lowest/highest key of a table.
pub type Extent = (u64, Option<Key>, Option<Key>);

/// What a side of a comparison can do. Ranges are read in the same key order on both
/// sides of a pair (see [`Side::set_byte_order`]).
pub trait Side: Send {
    /// Endpoint name.
    fn name(&self) -> &str;
    /// SQL dialect of repairs.
    fn dialect(&self) -> Dialect;
    /// Describes a table (`None` if it does not exist); no primary key is a setup error.
    fn describe(
        &mut self,
        table: &TableName,
    ) -> impl Future<Output = Result<Option<TableSchema>, ConnectorError>> + Send;
    /// Names of the tables matching the task's globs on this side (sources only).
    fn matching(&mut self, patterns: &[String]) -> impl Future<Output = Result<Vec<TableName>, ConnectorError>> + Send;
    /// Rough row count for progress.
    fn estimate(&mut self, table: &TableSchema) -> impl Future<Output = Result<u64, ConnectorError>> + Send;
    /// Rows of a range in key order, at most `limit`.
    fn rows(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        limit: Option<usize>,
    ) -> impl Future<Output = Result<Vec<Row>, ConnectorError>> + Send;
    /// The key `offset` rows into a range.
    fn key_at(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        offset: u64,
    ) -> impl Future<Output = Result<Option<Key>, ConnectorError>> + Send;
    /// The rows with these keys.
    fn rows_by_keys(
        &mut self,
        table: &TableSchema,
        keys: &[Key],
    ) -> impl Future<Output = Result<Vec<Row>, ConnectorError>> + Send;
    /// Row count and two aggregates of a range computed inside the database; only
    /// comparable with the same engine's result for the same column types.
    fn native_checksum(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
    ) -> impl Future<Output = Result<Option<(u64, String)>, ConnectorError>> + Send;
    /// Row count, lowest and highest key.
    fn extent(&mut self, table: &TableSchema) -> impl Future<Output = Result<Extent, ConnectorError>> + Send;
    /// Runs repair statements in one transaction.
    fn apply(&mut self, statements: &[String]) -> impl Future<Output = Result<(), ConnectorError>> + Send;
    /// Reads text keys in byte order (a pair of different engines must agree on order).
    fn set_byte_order(&mut self);
    /// Closes the connection.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// A SQLite side: one connection; SQLite orders text keys by bytes already.
pub struct SqliteSide {
    ep: SqliteEndpoint,
    conn: SqliteConnection,
}

/// A MySQL/MariaDB side: one session in UTC.
pub struct MysqlSide {
    ep: MysqlEndpoint,
    conn: Conn,
    order: KeyOrder,
}

/// Every kind of side, dispatched without boxing.
pub enum AnySide {
    /// SQLite.
    Sqlite(SqliteSide),
    /// MySQL/MariaDB.
    Mysql(MysqlSide),
}

impl AnySide {
    /// Opens an endpoint of the task file; `write` when repairs will be applied to it.
    pub async fn open(ep: &Endpoint, write: bool) -> Result<AnySide, ConnectorError> {
        match &ep.url {
            EndpointUrl::Sqlite(path) => {
                let ep = SqliteEndpoint { name: ep.name.clone(), site: ep.site.clone(), path: path.clone() };
                let conn = ep.connect(if write { Access::ReadWrite } else { Access::ReadOnly }).await?;
                Ok(AnySide::Sqlite(SqliteSide { ep, conn }))
            }
            EndpointUrl::Mysql(url) => {
                let ep = MysqlEndpoint::new(&ep.name, ep.site.clone(), url)?;
                let conn = ep.connect().await?;
                Ok(AnySide::Mysql(MysqlSide { ep, conn, order: KeyOrder::Server }))
            }
            EndpointUrl::Postgres(_) => Err(ConnectorError::Setup {
                endpoint: ep.name.clone(),
                problem: "PostgreSQL endpoints cannot be verified by this version of ferry yet".into(),
                fix: "verify SQLite and MySQL/MariaDB endpoints for now".into(),
            }),
        }
    }

    /// The collation of each key column where the engine has per-column collations
    /// (MySQL); `None` where keys always sort by bytes (SQLite).
    pub async fn key_collations(&mut self, table: &TableSchema) -> Result<Option<Vec<Option<String>>>, ConnectorError> {
        match self {
            AnySide::Sqlite(_) => Ok(None),
            AnySide::Mysql(s) => my::key_collations(&s.ep, &mut s.conn, table).await.map(Some),
        }
    }

    /// The database a MySQL side's URL names, for bare table names.
    pub fn default_database(&self) -> Option<String> {
        match self {
            AnySide::Sqlite(_) => None,
            AnySide::Mysql(s) => s.ep.opts.db_name().map(str::to_string),
        }
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $body:expr) => {
        match $self {
            AnySide::Sqlite($s) => $body,
            AnySide::Mysql($s) => $body,
        }
    };
}

impl Side for AnySide {
    fn name(&self) -> &str {
        each!(self, s => s.name())
    }
    fn dialect(&self) -> Dialect {
        each!(self, s => s.dialect())
    }
    async fn describe(&mut self, table: &TableName) -> Result<Option<TableSchema>, ConnectorError> {
        each!(self, s => s.describe(table).await)
    }
    async fn matching(&mut self, patterns: &[String]) -> Result<Vec<TableName>, ConnectorError> {
        each!(self, s => s.matching(patterns).await)
    }
    async fn estimate(&mut self, table: &TableSchema) -> Result<u64, ConnectorError> {
        each!(self, s => s.estimate(table).await)
    }
    async fn rows(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        limit: Option<usize>,
    ) -> Result<Vec<Row>, ConnectorError> {
        each!(self, s => s.rows(table, range, limit).await)
    }
    async fn key_at(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        offset: u64,
    ) -> Result<Option<Key>, ConnectorError> {
        each!(self, s => s.key_at(table, range, offset).await)
    }
    async fn rows_by_keys(&mut self, table: &TableSchema, keys: &[Key]) -> Result<Vec<Row>, ConnectorError> {
        each!(self, s => s.rows_by_keys(table, keys).await)
    }
    async fn native_checksum(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
    ) -> Result<Option<(u64, String)>, ConnectorError> {
        each!(self, s => s.native_checksum(table, range).await)
    }
    async fn extent(&mut self, table: &TableSchema) -> Result<Extent, ConnectorError> {
        each!(self, s => s.extent(table).await)
    }
    async fn apply(&mut self, statements: &[String]) -> Result<(), ConnectorError> {
        each!(self, s => s.apply(statements).await)
    }
    fn set_byte_order(&mut self) {
        each!(self, s => s.set_byte_order())
    }
    async fn close(self) {
        each!(self, s => s.close().await)
    }
}

impl Side for SqliteSide {
    fn name(&self) -> &str {
        &self.ep.name
    }
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }
    async fn describe(&mut self, table: &TableName) -> Result<Option<TableSchema>, ConnectorError> {
        sqlite::schema::describe(&self.ep, &mut self.conn, &table.name).await
    }
    async fn matching(&mut self, patterns: &[String]) -> Result<Vec<TableName>, ConnectorError> {
        let names = sqlite::schema::matching_tables(&self.ep, &mut self.conn, patterns).await?;
        Ok(names.into_iter().map(TableName::bare).collect())
    }
    async fn estimate(&mut self, table: &TableSchema) -> Result<u64, ConnectorError> {
        let sql = format!("SELECT count(*) FROM {}", sqlite::literal::ident(&table.name.name));
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut self.conn)
            .await
            .map_err(self.ep.query_error(format!("counting rows of {}", table.name)))?;
        Ok(u64::try_from(n).unwrap_or(0))
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

impl Side for MysqlSide {
    fn name(&self) -> &str {
        &self.ep.name
    }
    fn dialect(&self) -> Dialect {
        Dialect::Mysql
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
        my::range_checksum(&self.ep, &mut self.conn, table, range, self.order).await.map(Some)
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
    fn set_byte_order(&mut self) {
        self.order = KeyOrder::Bytes;
    }
    async fn close(self) {
        let _ = self.conn.disconnect().await;
    }
}
