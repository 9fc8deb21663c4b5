//! The data model every connector and the engine share: values, rows, keys, table
//! schemas, changes, source transactions, stream positions and sites. No I/O here.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub mod conflict;
pub mod finals;
pub mod item;
pub mod json;
pub mod schema_version;

pub use conflict::ConflictPolicy;

/// One column value with full fidelity: exact decimals, unsigned 64-bit, binary strings,
/// and NULL distinct from the empty string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", content = "v", rename_all = "snake_case")]
pub enum Value {
    /// SQL NULL.
    Null,
    /// Signed 64-bit integer.
    Int(i64),
    /// Unsigned 64-bit integer (MySQL BIGINT UNSIGNED above i64::MAX).
    UInt(u64),
    /// IEEE binary64, carried bit for bit (-0.0 and infinities included).
    Float(f64),
    /// Exact decimal, kept as its decimal text ("-12.3400").
    Decimal(String),
    /// Character string (UTF-8).
    Text(String),
    /// Binary string.
    Bytes(Vec<u8>),
    /// Calendar date; zero parts allowed (MySQL zero dates).
    Date { year: u16, month: u8, day: u8 },
    /// Time of day or duration (MySQL TIME may be negative or above 24h).
    Time { negative: bool, hours: u32, minutes: u8, seconds: u8, micros: u32 },
    /// Wall-clock date and time without a zone.
    DateTime { year: u16, month: u8, day: u8, hour: u8, minute: u8, second: u8, micros: u32 },
    /// An instant: microseconds since the Unix epoch, UTC.
    Timestamp(i64),
    /// JSON document text.
    Json(String),
}

impl Value {
    /// True for SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Same value bit for bit (floats compared by bits so -0.0 != 0.0 and NaN == NaN).
    pub fn same(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            _ => self == other,
        }
    }

    /// This value's part of a key's identity ([`HashKey`]).
    pub fn identity(&self) -> Identity<'_> {
        match self {
            Value::Null => Identity::Null,
            Value::Int(i) => Identity::Int(*i),
            Value::UInt(u) => Identity::UInt(*u),
            Value::Float(f) => Identity::Float(f.to_bits()),
            Value::Decimal(t) | Value::Text(t) | Value::Json(t) => Identity::Text(t),
            Value::Bytes(b) => Identity::Bytes(b),
            Value::Date { year, month, day } => Identity::Date(*year, *month, *day),
            Value::Time { negative, hours, minutes, seconds, micros } => {
                Identity::Time(*negative, *hours, *minutes, *seconds, *micros)
            }
            Value::DateTime { year, month, day, hour, minute, second, micros } => {
                Identity::DateTime(*year, *month, *day, *hour, *minute, *second, *micros)
            }
            Value::Timestamp(us) => Identity::Timestamp(*us),
        }
    }

    /// Ordering as SQLite's BINARY collation orders keys: NULL < numbers < text < blobs.
    pub fn cmp_key(&self, other: &Value) -> Ordering {
        fn class(v: &Value) -> u8 {
            match v {
                Value::Null => 0,
                Value::Int(_) | Value::UInt(_) | Value::Float(_) => 1,
                Value::Bytes(_) => 3,
                _ => 2,
            }
        }
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::UInt(a), Value::UInt(b)) => a.cmp(b),
            (Value::Int(a), Value::UInt(b)) => i128::from(*a).cmp(&i128::from(*b)),
            (Value::UInt(a), Value::Int(b)) => i128::from(*a).cmp(&i128::from(*b)),
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            (Value::Float(a), Value::Int(b)) => a.partial_cmp(&(*b as f64)).unwrap_or(Ordering::Equal),
            (Value::Int(a), Value::Float(b)) => (*a as f64).partial_cmp(b).unwrap_or(Ordering::Equal),
            (Value::Bytes(a), Value::Bytes(b)) => a.cmp(b),
            (Value::Text(a), Value::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
            _ => match class(self).cmp(&class(other)) {
                Ordering::Equal => self.to_string().cmp(&other.to_string()),
                o => o,
            },
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Int(v) => write!(f, "{v}"),
            Value::UInt(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v:?}"),
            Value::Decimal(v) | Value::Json(v) => f.write_str(v),
            Value::Text(v) => write!(f, "{v:?}"),
            Value::Bytes(v) => {
                f.write_str("x'")?;
                for b in v {
                    write!(f, "{b:02x}")?;
                }
                f.write_str("'")
            }
            Value::Date { year, month, day } => write!(f, "{year:04}-{month:02}-{day:02}"),
            Value::Time { negative, hours, minutes, seconds, micros } => {
                let sign = if *negative { "-" } else { "" };
                write!(f, "{sign}{hours:02}:{minutes:02}:{seconds:02}.{micros:06}")
            }
            Value::DateTime { year, month, day, hour, minute, second, micros } => {
                write!(f, "{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}.{micros:06}")
            }
            Value::Timestamp(us) => write!(f, "@{us}us"),
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A TIMESTAMP's UTC text, `YYYY-MM-DD HH:MM:SS[.ffffff]`; 0 is the zero timestamp.
pub fn timestamp_text(us: i64) -> String {
    if us == 0 {
        return "0000-00-00 00:00:00".to_string();
    }
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let base = format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", sod / 3_600, sod % 3_600 / 60, sod % 60);
    if micros == 0 { base } else { format!("{base}.{micros:06}") }
}

/// A row: one value per column, in the order of its [`TableSchema::columns`].
pub type Row = Vec<Value>;

/// A primary-key value: one value per primary-key column, in key order.
pub type Key = Vec<Value>;

/// True when two optional rows hold the same values bit for bit.
pub fn same_row(a: Option<&Row>, b: Option<&Row>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same(y)),
        _ => false,
    }
}

/// A key's identity: what ferry compares wherever it asks whether two keys are the
/// same key (hash maps and sets of keys, collapsing a batch to each key's final row,
/// pairing a change with its row version). Built on [`Value::identity`], one exact form
/// of each value: floats by their bits (-0.0 and 0.0 differ, a NaN is itself), and
/// text, decimals and JSON by their text alone.
///
/// That last rule is where a key's identity differs from [`Value::same`] (which compares
/// row images): every store binds text, decimals and JSON as the same string, so a
/// decimal key one side carries as text (SQLite) and the other reads back as a decimal
/// (MySQL) addresses the same row. Signed and unsigned integers stay apart, as they
/// always have.
#[derive(Debug, Clone)]
pub struct HashKey(pub Key);

impl PartialEq for HashKey {
    fn eq(&self, other: &Self) -> bool {
        same_identity(&self.0, &other.0)
    }
}

impl Eq for HashKey {}

impl std::hash::Hash for HashKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        hash_identity(&self.0, state);
    }
}

/// A [`HashKey`] that borrows its values where it can (a batch collapsed by key without
/// copying each change's key).
#[derive(Debug, Clone)]
pub struct HashKeyRef<'a>(pub std::borrow::Cow<'a, [Value]>);

impl PartialEq for HashKeyRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        same_identity(&self.0, &other.0)
    }
}

impl Eq for HashKeyRef<'_> {}

impl std::hash::Hash for HashKeyRef<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        hash_identity(&self.0, state);
    }
}

fn same_identity(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.identity() == b.identity())
}

fn hash_identity<H: std::hash::Hasher>(key: &[Value], state: &mut H) {
    for v in key {
        std::hash::Hash::hash(&v.identity(), state);
    }
}

/// A value as it identifies a key (see [`HashKey`]): the exact parts that tell two keys
/// apart, borrowed from the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Identity<'a> {
    /// SQL NULL.
    Null,
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A float's bits.
    Float(u64),
    /// Text, a decimal or JSON: the string a store is given.
    Text(&'a str),
    /// A binary string.
    Bytes(&'a [u8]),
    /// A date: year, month, day.
    Date(u16, u8, u8),
    /// A time: negative, hours, minutes, seconds, microseconds.
    Time(bool, u32, u8, u8, u32),
    /// A date and time: year, month, day, hour, minute, second, microseconds.
    DateTime(u16, u8, u8, u8, u8, u8, u32),
    /// An instant in microseconds.
    Timestamp(i64),
}

/// A fast, non-cryptographic hasher for keys ferry builds itself (FxHash's mixing).
#[derive(Debug, Default, Clone, Copy)]
pub struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(buf));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// Builds [`FastHasher`]s for hash maps keyed by [`HashKey`].
pub type FastHash = std::hash::BuildHasherDefault<FastHasher>;

/// Compares two keys column by column with [`Value::cmp_key`].
pub fn cmp_keys(a: &[Value], b: &[Value]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        match x.cmp_key(y) {
            Ordering::Equal => continue,
            o => return o,
        }
    }
    a.len().cmp(&b.len())
}

/// Renders a key for messages and logs: `(1, "x")`.
pub fn key_text(key: &[Value]) -> String {
    let parts: Vec<String> = key.iter().map(ToString::to_string).collect();
    format!("({})", parts.join(", "))
}

/// A range of primary keys: after `after` (exclusive) up to `upto` (inclusive); an open
/// end is `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KeyRange {
    /// Lower bound, exclusive.
    pub after: Option<Key>,
    /// Upper bound, inclusive.
    pub upto: Option<Key>,
}

/// A table's qualified name: database (MySQL) or none (SQLite), and table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableName {
    /// Database or schema; `None` for SQLite.
    pub schema: Option<String>,
    /// Table name.
    pub name: String,
}

impl TableName {
    /// A name without a database part (SQLite).
    pub fn bare(name: impl Into<String>) -> Self {
        TableName { schema: None, name: name.into() }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Declared type as the engine reports it ("INTEGER", "decimal(10,2)").
    pub decl_type: String,
    /// Whether NULL is allowed.
    pub nullable: bool,
}

/// A table's shape: columns in order and which of them form the primary key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSchema {
    /// Qualified name.
    pub name: TableName,
    /// Columns in table order.
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the primary-key columns, in key order.
    pub primary_key: Vec<usize>,
    /// Column index sets of other unique keys (they constrain apply order).
    pub unique_keys: Vec<Vec<usize>>,
    /// Foreign keys of this table (they constrain apply order too); empty where the
    /// source does not report them.
    #[serde(default)]
    pub foreign_keys: Vec<ForeignKey>,
    /// The source's own CREATE TABLE statement, when it can give one (MySQL `SHOW CREATE
    /// TABLE`); a target of the same engine creates a missing table from it.
    pub create_sql: Option<String>,
}

/// A foreign key: columns of this table that reference a parent table's columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignKey {
    /// Indexes into the child's `columns`, in constraint order.
    pub columns: Vec<usize>,
    /// The referenced (parent) table.
    pub parent: TableName,
    /// The referenced columns' names, in constraint order.
    pub parent_columns: Vec<String>,
    /// ON DELETE or ON UPDATE changes child rows (CASCADE, SET NULL, SET DEFAULT): rows
    /// a row-based binlog does not carry, which the target changes by itself.
    #[serde(default)]
    pub cascades: bool,
}

impl TableSchema {
    /// Extracts the primary key of a row of this table.
    pub fn key_of(&self, row: &[Value]) -> Key {
        self.primary_key.iter().map(|&i| row[i].clone()).collect()
    }

    /// Whether a row of this table has the primary key `key` (without building the
    /// row's key).
    pub fn has_key(&self, row: &[Value], key: &[Value]) -> bool {
        self.primary_key.len() == key.len() && self.primary_key.iter().zip(key).all(|(&i, k)| row[i] == *k)
    }

    /// Names of the primary-key columns.
    pub fn key_columns(&self) -> Vec<&str> {
        self.primary_key.iter().map(|&i| self.columns[i].name.as_str()).collect()
    }

    /// A schema holding only the key columns (decodes key-only rows).
    pub fn key_only(&self) -> TableSchema {
        TableSchema {
            name: self.name.clone(),
            columns: self.primary_key.iter().map(|&i| self.columns[i].clone()).collect(),
            primary_key: (0..self.primary_key.len()).collect(),
            unique_keys: Vec::new(),
            foreign_keys: Vec::new(),
            create_sql: None,
        }
    }

    /// Position of a column by name.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// What a change did to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A new row.
    Insert,
    /// A changed row (the key may change too).
    Update,
    /// A removed row.
    Delete,
}

/// One row change, with both images where the source has them.
#[derive(Debug, Clone)]
pub struct Change {
    /// The table, as the source described it when the change was read.
    pub table: Arc<TableSchema>,
    /// Insert, update or delete.
    pub op: Op,
    /// The primary key the change addresses (the old key for a key-changing update).
    pub key: Key,
    /// Row before the change (updates and deletes).
    pub before: Option<Row>,
    /// Row after the change (inserts and updates).
    pub after: Option<Row>,
    /// For an insert read in two-way mode: the deletion the source had seen of this key.
    pub prior: Prior,
    /// Two-way reads: the version (origin site, commit µs) of the row state this change
    /// replaced at its source, when the source still has it. Equal images can hide a
    /// write the source never saw (a row set back to a value it had); versions cannot.
    pub seen: Option<(SiteId, i64)>,
    /// The version (origin site, µs) this change's write left at its source, where the
    /// source versions each row on its own (MySQL two-way); `None`: the transaction's
    /// origin and commit time.
    pub version: Option<(SiteId, i64)>,
}

/// Changes grouped by table: tables in the order they first appear, each group in
/// source order.
pub fn by_table<'a>(changes: impl IntoIterator<Item = &'a Change>) -> Vec<Vec<&'a Change>> {
    let mut groups: Vec<Vec<&Change>> = Vec::new();
    let mut index: std::collections::HashMap<&TableName, usize> = std::collections::HashMap::new();
    for change in changes {
        let i = *index.entry(&change.table.name).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[i].push(change);
    }
    groups
}

/// What the source knew of a key when an insert wrote it (DESIGN.md "Two-way"): an
/// absent row looks the same whoever deleted it, so the deletion's version tells an
/// insert that follows a delete the source saw from one racing a delete it never saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Prior {
    /// Not tracked (one-way reads, snapshots, engines without a changelog).
    #[default]
    Unknown,
    /// The last change of the key from the target's site that the source applied was
    /// not a deletion, or there was none.
    Fresh,
    /// The last change of the key from the target's site that the source applied (or
    /// found already done) was this deletion (site, commit µs).
    Deleted(SiteId, i64),
}

impl Change {
    /// A snapshot row as an insert (two-way targets judge it like one).
    pub fn snapshot_insert(table: &Arc<TableSchema>, row: &Row) -> Change {
        Change {
            table: table.clone(),
            op: Op::Insert,
            key: table.key_of(row),
            before: None,
            after: Some(row.clone()),
            prior: Prior::Unknown,
            seen: None,
            version: None,
        }
    }

    /// Whether this change moves its row to another key (an update of the key): the old
    /// key's row goes. Compared in place, without building the new key.
    pub fn moves_key(&self) -> bool {
        self.after.as_ref().is_some_and(|row| !self.table.has_key(row, &self.key))
    }

    /// The key of the row after this change (differs from `key` when an update moves it).
    pub fn new_key(&self) -> Key {
        match &self.after {
            Some(row) => self.table.key_of(row),
            None => self.key.clone(),
        }
    }
}

/// The site (data center) where an application write happened.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SiteId(pub Arc<str>);

impl SiteId {
    /// Makes a site id from its name.
    pub fn new(name: &str) -> Self {
        SiteId(Arc::from(name))
    }

    /// The site's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A source transaction, kept whole.
#[derive(Debug, Clone)]
pub struct Txn {
    /// Where the application wrote it.
    pub origin: SiteId,
    /// Commit time in microseconds since the Unix epoch.
    pub commit_ts: i64,
    /// Stream position just after this transaction.
    pub position: Position,
    /// Its row changes in source order.
    pub changes: Vec<Change>,
    /// Schema changes (a transaction holding them holds no rows).
    pub ddl: Vec<SchemaChange>,
}

/// What a schema change does to its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaChangeKind {
    /// `CREATE TABLE`.
    Create,
    /// `ALTER TABLE` (columns, keys, options).
    Alter,
    /// `DROP TABLE`.
    Drop,
    /// `TRUNCATE TABLE`.
    Truncate,
    /// `CREATE INDEX` / `DROP INDEX`.
    Index,
}

/// A schema change of one table, as the source ran it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaChange {
    /// The table, with its database.
    pub table: TableName,
    /// What it does.
    pub kind: SchemaChangeKind,
    /// The statement in the source's dialect.
    pub statement: String,
    /// Byte range of the table's name in `statement`.
    pub name_at: (usize, usize),
}

impl SchemaChange {
    /// The statement with the table's name replaced (a target's quoted name).
    pub fn retarget(&self, quoted_name: &str) -> String {
        let (a, b) = self.name_at;
        format!("{}{quoted_name}{}", &self.statement[..a], &self.statement[b..])
    }
}

/// Where a source's stream stands, opaque to the engine: the store's own text
/// (`sqlite:42`, `mysql:bin.000003:1234:1-1-10`, `pg:0/16B3748`) and an order key the
/// store derives from it, so positions of one stream compare without the engine knowing
/// the store. The text before the first `:` names the stream's kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    text: String,
    order: Vec<u8>,
    count: Option<i64>,
}

impl Position {
    /// A position from its store: `text` as `ferry status` prints it (`kind:…`),
    /// `order` bytes whose lexicographic order is stream order, and `count`, a change
    /// counter where the stream numbers its changes (lag in changes).
    pub fn new(text: String, order: Vec<u8>, count: Option<i64>) -> Self {
        Position { text, order, count }
    }

    /// The stream kind (`sqlite`, `mysql`, …): positions of different kinds never compare.
    pub fn kind(&self) -> &str {
        self.text.split_once(':').map_or(self.text.as_str(), |(k, _)| k)
    }

    /// The store's part after `kind:`.
    pub fn detail(&self) -> &str {
        self.text.split_once(':').map_or("", |(_, d)| d)
    }

    /// Order of two positions of the same kind of stream; `None` across kinds.
    pub fn stream_cmp(&self, other: &Position) -> Option<Ordering> {
        (self.kind() == other.kind()).then(|| self.order.cmp(&other.order))
    }

    /// Number of changes between `self` (behind) and `head`, where the source can tell.
    pub fn changes_until(&self, head: &Position) -> Option<u64> {
        match (self.count, head.count) {
            (Some(a), Some(b)) if self.kind() == head.kind() => Some(u64::try_from(b.saturating_sub(a)).unwrap_or(0)),
            _ => None,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A position string that could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid position {text:?}: {expected}, as `ferry status` prints it")]
pub struct PositionParseError {
    /// The text given.
    pub text: String,
    /// What a position of that kind looks like.
    pub expected: String,
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// How a cutover stops application writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FreezeMethod {
    /// Global read-only; exempt accounts keep writing.
    #[default]
    ReadOnly,
    /// Revoke write grants of application accounts.
    Revoke,
}

/// `[[task.map]]`: a table rename with column renames.
#[derive(Debug, Clone)]
pub struct TableMap {
    /// Source table.
    pub from: String,
    /// Target table.
    pub to: String,
    /// Source column -> target column.
    pub columns: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_counts_and_dates_convert_both_ways() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 28), 2, "2000 is a leap year");
        assert_eq!(days_from_civil(1900, 3, 1) - days_from_civil(1900, 2, 28), 1, "1900 is not");
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for z in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn positions_compare_within_their_kind_only() {
        let a = Position::new("x:1".into(), vec![1], Some(1));
        let b = Position::new("x:2".into(), vec![2], Some(5));
        let other = Position::new("y:9".into(), vec![0], Some(0));
        assert_eq!(a.stream_cmp(&b), Some(Ordering::Less));
        assert_eq!(a.changes_until(&b), Some(4));
        assert_eq!(a.stream_cmp(&other), None);
        assert_eq!(a.changes_until(&other), None);
        assert_eq!((b.kind(), b.detail()), ("x", "2"));
    }

    #[test]
    fn floats_compare_by_bits() {
        assert!(!Value::Float(0.0).same(&Value::Float(-0.0)));
        assert!(Value::Float(1.5).same(&Value::Float(1.5)));
    }

    #[test]
    fn key_identity_is_exact_and_text_forms_agree() {
        use std::collections::HashSet;
        let id = |k: Vec<Value>| HashKey(k);
        assert_ne!(id(vec![Value::Float(0.0)]), id(vec![Value::Float(-0.0)]));
        assert_eq!(id(vec![Value::Float(f64::NAN)]), id(vec![Value::Float(f64::NAN)]));
        assert_ne!(id(vec![Value::Int(5)]), id(vec![Value::UInt(5)]));
        assert_ne!(id(vec![Value::Text("a".into())]), id(vec![Value::Bytes(b"a".to_vec())]));
        assert_ne!(id(vec![Value::Decimal("1.5".into())]), id(vec![Value::Decimal("1.50".into())]));
        let keys: HashSet<HashKey> =
            [vec![Value::Decimal("1.50".into())], vec![Value::Text("1.50".into())]].into_iter().map(id).collect();
        assert_eq!(keys.len(), 1);
        let when = |micros| Value::Time { negative: false, hours: 1, minutes: 2, seconds: 3, micros };
        assert_eq!(id(vec![when(4)]), id(vec![when(4)]));
        assert_ne!(id(vec![when(4)]), id(vec![when(5)]));
    }

    #[test]
    fn keys_order_like_sqlite() {
        assert_eq!(Value::Null.cmp_key(&Value::Int(1)), Ordering::Less);
        assert_eq!(Value::Int(2).cmp_key(&Value::Text("1".into())), Ordering::Less);
        assert_eq!(Value::Text("b".into()).cmp_key(&Value::Bytes(vec![0])), Ordering::Less);
        assert_eq!(cmp_keys(&[Value::Int(1), Value::Int(3)], &[Value::Int(1), Value::Int(2)]), Ordering::Greater);
    }
}
