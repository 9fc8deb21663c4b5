//! The `Verifier` capability: one side of a comparison, an endpoint that can describe a
//! table, read rows of a key range in key order, find chunk boundaries, checksum a range
//! inside the store where it can, and apply repair statements in its SQL. A store
//! implements [`Side`] in its folder; the registry opens it as an [`AnySide`].

use std::future::Future;
use std::hash::Hasher;

use futures_util::future::BoxFuture;

use crate::connector::ConnectorError;
use crate::model::{Key, KeyRange, Row, TableName, TableSchema, Value, timestamp_text};

/// 64-bit hash of canonical bytes: SipHash keyed with a random key drawn once per
/// process. Both sides of a comparison are hashed by the same process, so the hash only
/// needs to be stable within one run; a secret key means no one can prepare rows that
/// collide (with a known key, 2^32 tries find a 64-bit collision).
///
/// The rule every [`Side::native_checksum`] and in-ferry digest follows: hash an
/// unambiguous encoding of the row (values length-prefixed, tagged, or quoted so that
/// no two different rows share it), use at least 64 bits per row, and combine rows
/// with a non-linear sum rather than XOR of a linear hash such as a CRC (the XOR of
/// CRCs of equal-length rows is the CRC of their XOR, so swapped values cancel).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    static KEY: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    let mut h = KEY.get_or_init(std::hash::RandomState::new).build_hasher();
    h.write(bytes);
    h.finish()
}

/// The SQL a side speaks: repair statements are written in it, and a pair of sides of
/// the same store may compare checksums computed inside the store.
pub trait Dialect: Sync {
    /// The store's name; two sides of the same store compare native checksums.
    fn store(&self) -> &'static str;
    /// A table name as this SQL writes it.
    fn quote_table(&self, t: &TableName) -> String;
    /// A column name as this SQL writes it.
    fn quote_ident(&self, name: &str) -> String;
    /// A string literal.
    fn string(&self, s: &str) -> String;
    /// Whether unsigned integers above i64::MAX are written as text.
    fn unsigned_above_i64_as_text(&self) -> bool;
    /// Lines that start a repair file.
    fn preamble(&self) -> Vec<String>;
    /// The target's name of a (mapped) table; `default_db` is the endpoint's own.
    /// `Err((problem, fix))` when it cannot be named.
    fn target_name(&self, mapped: &TableName, default_db: Option<String>) -> Result<TableName, (String, String)>;
    /// The name of the in-store checksum method for tables of identical types, if the
    /// store has one that is exact for them (`floats`: the table has float columns).
    fn native_method(&self, floats: bool) -> Option<&'static str>;
    /// A value's literal for a column declared `decl` here, where the column's type
    /// decides it (a PostgreSQL array column takes a JSON array as an array literal);
    /// `None` keeps [`literal`]'s.
    fn typed_literal(&self, _v: &Value, _decl: &str) -> Option<String> {
        None
    }
    /// A value's literal where the store writes it its own way (PostgreSQL's bytea and
    /// timestamptz); `None` keeps [`literal`]'s common form.
    fn own_literal(&self, _v: &Value) -> Option<String> {
        None
    }
}

/// A value as an exact SQL literal of `dialect` for a column declared `decl` on the
/// target (an array column takes a JSON array as its own literal).
pub fn literal_for(dialect: &dyn Dialect, v: &Value, decl: &str) -> String {
    dialect.typed_literal(v, decl).unwrap_or_else(|| literal(dialect, v))
}

/// A value as an exact SQL literal of `dialect` (what ferry's apply would bind).
pub fn literal(dialect: &dyn Dialect, v: &Value) -> String {
    if let Some(own) = dialect.own_literal(v) {
        return own;
    }
    match v {
        Value::Null => "NULL".into(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) if i64::try_from(*u).is_err() && dialect.unsigned_above_i64_as_text() => {
            dialect.string(&u.to_string())
        }
        Value::UInt(u) => u.to_string(),
        Value::Float(f) if f.is_nan() => "NULL".into(),
        Value::Float(f) if f.is_infinite() => if *f > 0.0 { "9e999" } else { "-9e999" }.into(),
        Value::Float(f) => format!("{f:e}"),
        Value::Decimal(s) | Value::Text(s) | Value::Json(s) => dialect.string(s),
        Value::Bytes(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
            format!("X'{hex}'")
        }
        Value::Timestamp(us) => dialect.string(&timestamp_text(*us)),
        other => dialect.string(&other.to_string()),
    }
}

/// Row count and lowest/highest key of a table.
pub type Extent = (u64, Option<Key>, Option<Key>);

/// What a side of a comparison can do. Ranges are read in the same key order on both
/// sides of a pair (see [`Side::set_byte_order`]).
pub trait Side: Send {
    /// Endpoint name.
    fn name(&self) -> &str;
    /// SQL dialect of repairs.
    fn dialect(&self) -> &'static dyn Dialect;
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
    /// Row count and an aggregate of a range computed inside the database; only
    /// comparable with the same engine's result for the same column types. The
    /// aggregate follows the rule of [`hash_bytes`]: unambiguous row encoding, at least
    /// 64 bits per row, a non-linear combination.
    fn native_checksum(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
    ) -> impl Future<Output = Result<Option<(u64, String)>, ConnectorError>> + Send;
    /// Row count, lowest and highest key.
    fn extent(&mut self, table: &TableSchema) -> impl Future<Output = Result<Extent, ConnectorError>> + Send;
    /// Runs repair statements in one transaction.
    fn apply(&mut self, statements: &[String]) -> impl Future<Output = Result<(), ConnectorError>> + Send;
    /// The collation of each key column where the store has per-column collations
    /// (MySQL); `None` where keys always sort by bytes.
    fn key_collations(
        &mut self,
        _table: &TableSchema,
    ) -> impl Future<Output = Result<Option<Vec<Option<String>>>, ConnectorError>> + Send {
        async { Ok(None) }
    }
    /// The database or schema the endpoint's URL names, for bare table names.
    fn default_database(&self) -> Option<String> {
        None
    }
    /// Reads text keys in byte order (a pair of different engines must agree on order).
    fn set_byte_order(&mut self);
    /// Closes the connection.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// Any store's side, as the registry opens it.
pub struct AnySide(Box<dyn DynSide>);

impl AnySide {
    /// Wraps a store's side.
    pub fn new(side: impl Side + 'static) -> AnySide {
        AnySide(Box::new(side))
    }
}

/// [`Side`] with boxed futures, so any store's side fits in an [`AnySide`].
trait DynSide: Send {
    fn name(&self) -> &str;
    fn dialect(&self) -> &'static dyn Dialect;
    fn describe<'a>(&'a mut self, t: &'a TableName) -> BoxFuture<'a, Result<Option<TableSchema>, ConnectorError>>;
    fn matching<'a>(&'a mut self, p: &'a [String]) -> BoxFuture<'a, Result<Vec<TableName>, ConnectorError>>;
    fn estimate<'a>(&'a mut self, t: &'a TableSchema) -> BoxFuture<'a, Result<u64, ConnectorError>>;
    fn rows<'a>(
        &'a mut self,
        t: &'a TableSchema,
        r: &'a KeyRange,
        limit: Option<usize>,
    ) -> BoxFuture<'a, Result<Vec<Row>, ConnectorError>>;
    fn key_at<'a>(
        &'a mut self,
        t: &'a TableSchema,
        r: &'a KeyRange,
        offset: u64,
    ) -> BoxFuture<'a, Result<Option<Key>, ConnectorError>>;
    fn rows_by_keys<'a>(
        &'a mut self,
        t: &'a TableSchema,
        k: &'a [Key],
    ) -> BoxFuture<'a, Result<Vec<Row>, ConnectorError>>;
    fn native_checksum<'a>(
        &'a mut self,
        t: &'a TableSchema,
        r: &'a KeyRange,
    ) -> BoxFuture<'a, Result<Option<(u64, String)>, ConnectorError>>;
    fn extent<'a>(&'a mut self, t: &'a TableSchema) -> BoxFuture<'a, Result<Extent, ConnectorError>>;
    fn apply<'a>(&'a mut self, s: &'a [String]) -> BoxFuture<'a, Result<(), ConnectorError>>;
    fn key_collations<'a>(
        &'a mut self,
        t: &'a TableSchema,
    ) -> BoxFuture<'a, Result<Option<Vec<Option<String>>>, ConnectorError>>;
    fn default_database(&self) -> Option<String>;
    fn set_byte_order(&mut self);
    fn close(self: Box<Self>) -> BoxFuture<'static, ()>;
}

impl<T: Side + 'static> DynSide for T {
    fn name(&self) -> &str {
        Side::name(self)
    }
    fn dialect(&self) -> &'static dyn Dialect {
        Side::dialect(self)
    }
    fn describe<'a>(&'a mut self, t: &'a TableName) -> BoxFuture<'a, Result<Option<TableSchema>, ConnectorError>> {
        Box::pin(Side::describe(self, t))
    }
    fn matching<'a>(&'a mut self, p: &'a [String]) -> BoxFuture<'a, Result<Vec<TableName>, ConnectorError>> {
        Box::pin(Side::matching(self, p))
    }
    fn estimate<'a>(&'a mut self, t: &'a TableSchema) -> BoxFuture<'a, Result<u64, ConnectorError>> {
        Box::pin(Side::estimate(self, t))
    }
    fn rows<'a>(
        &'a mut self,
        t: &'a TableSchema,
        r: &'a KeyRange,
        limit: Option<usize>,
    ) -> BoxFuture<'a, Result<Vec<Row>, ConnectorError>> {
        Box::pin(Side::rows(self, t, r, limit))
    }
    fn key_at<'a>(
        &'a mut self,
        t: &'a TableSchema,
        r: &'a KeyRange,
        offset: u64,
    ) -> BoxFuture<'a, Result<Option<Key>, ConnectorError>> {
        Box::pin(Side::key_at(self, t, r, offset))
    }
    fn rows_by_keys<'a>(
        &'a mut self,
        t: &'a TableSchema,
        k: &'a [Key],
    ) -> BoxFuture<'a, Result<Vec<Row>, ConnectorError>> {
        Box::pin(Side::rows_by_keys(self, t, k))
    }
    fn native_checksum<'a>(
        &'a mut self,
        t: &'a TableSchema,
        r: &'a KeyRange,
    ) -> BoxFuture<'a, Result<Option<(u64, String)>, ConnectorError>> {
        Box::pin(Side::native_checksum(self, t, r))
    }
    fn extent<'a>(&'a mut self, t: &'a TableSchema) -> BoxFuture<'a, Result<Extent, ConnectorError>> {
        Box::pin(Side::extent(self, t))
    }
    fn apply<'a>(&'a mut self, s: &'a [String]) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(Side::apply(self, s))
    }
    fn key_collations<'a>(
        &'a mut self,
        t: &'a TableSchema,
    ) -> BoxFuture<'a, Result<Option<Vec<Option<String>>>, ConnectorError>> {
        Box::pin(Side::key_collations(self, t))
    }
    fn default_database(&self) -> Option<String> {
        Side::default_database(self)
    }
    fn set_byte_order(&mut self) {
        Side::set_byte_order(self)
    }
    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(Side::close(*self))
    }
}

impl Side for AnySide {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn dialect(&self) -> &'static dyn Dialect {
        self.0.dialect()
    }
    async fn describe(&mut self, table: &TableName) -> Result<Option<TableSchema>, ConnectorError> {
        self.0.describe(table).await
    }
    async fn matching(&mut self, patterns: &[String]) -> Result<Vec<TableName>, ConnectorError> {
        self.0.matching(patterns).await
    }
    async fn estimate(&mut self, table: &TableSchema) -> Result<u64, ConnectorError> {
        self.0.estimate(table).await
    }
    async fn rows(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        limit: Option<usize>,
    ) -> Result<Vec<Row>, ConnectorError> {
        self.0.rows(table, range, limit).await
    }
    async fn key_at(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        offset: u64,
    ) -> Result<Option<Key>, ConnectorError> {
        self.0.key_at(table, range, offset).await
    }
    async fn rows_by_keys(&mut self, table: &TableSchema, keys: &[Key]) -> Result<Vec<Row>, ConnectorError> {
        self.0.rows_by_keys(table, keys).await
    }
    async fn native_checksum(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
    ) -> Result<Option<(u64, String)>, ConnectorError> {
        self.0.native_checksum(table, range).await
    }
    async fn extent(&mut self, table: &TableSchema) -> Result<Extent, ConnectorError> {
        self.0.extent(table).await
    }
    async fn apply(&mut self, statements: &[String]) -> Result<(), ConnectorError> {
        self.0.apply(statements).await
    }
    async fn key_collations(&mut self, table: &TableSchema) -> Result<Option<Vec<Option<String>>>, ConnectorError> {
        self.0.key_collations(table).await
    }
    fn default_database(&self) -> Option<String> {
        self.0.default_database()
    }
    fn set_byte_order(&mut self) {
        self.0.set_byte_order()
    }
    async fn close(self) {
        self.0.close().await
    }
}
