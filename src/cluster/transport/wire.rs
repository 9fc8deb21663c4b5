//! A change batch as it travels through the stream, cut into parts that fit the servers'
//! `max_payload`. The form is ferry's own compact binary one: a marker and format
//! version first (a batch written in another form fails with a clear error, not
//! garbage), the batch's tables once (as JSON: a few per batch), then each transaction
//! and change with values tagged by a byte, integers as LEB128 varints and strings and
//! bytes length-prefixed. JSON of every value cost the most CPU of the relay (profile in
//! docs/benchmarks.md, "cluster_transport"), and `Value`'s serde form (adjacently
//! tagged) does not read back from non-self-describing formats.

use std::collections::HashMap;
use std::sync::Arc;

use crate::connector::ReadBatch;
use crate::connector::registry;
use crate::model::{
    Change, Op, Position, PositionParseError, Prior, Row, SchemaChange, SchemaChangeKind, SiteId, TableName,
    TableSchema, Txn, Value,
};

/// What every batch begins with.
const MAGIC: &[u8; 4] = b"FRYB";
/// The form this release writes and reads; another one is refused by name.
pub const FORMAT: u8 = 1;

/// Why a message of the stream could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Not a batch ferry writes.
    #[error("a batch in the stream is not what ferry writes (it does not begin with ferry's marker)")]
    Foreign,
    /// A batch in a form of another ferry release.
    #[error("a batch in the stream is in ferry's transport format {found}; this release reads format {FORMAT}")]
    Format {
        /// The format the batch says it is in.
        found: u8,
    },
    /// The batch ends before its last field.
    #[error("a batch in the stream is cut short (at byte {0})")]
    Short(usize),
    /// A tag or length ferry never writes.
    #[error("a batch in the stream holds {what} at byte {at}, which ferry never writes")]
    Invalid {
        /// What was read.
        what: &'static str,
        /// Where.
        at: usize,
    },
    /// The tables' description did not serialize or read back.
    #[error("the tables of a batch in the stream: {0}")]
    Tables(#[from] serde_json::Error),
    /// A position of an unknown kind or form.
    #[error("a batch in the stream carries a position ferry cannot read: {0}")]
    Position(#[from] PositionParseError),
    /// A change names a table the batch does not describe.
    #[error("a change in the stream names table #{0}, which its batch does not describe")]
    Table(usize),
}

/// A batch read back from the stream.
#[derive(Debug)]
pub struct Batch {
    /// The position the batch follows.
    pub after: Position,
    /// The position after it.
    pub end: Position,
    /// The last commit group goes on in the next batch.
    pub continues: bool,
    /// Its transactions, oldest first.
    pub txns: Vec<Txn>,
}

// Value tags.
const NULL: u8 = 0;
const INT: u8 = 1;
const UINT: u8 = 2;
const FLOAT: u8 = 3;
const DECIMAL: u8 = 4;
const TEXT: u8 = 5;
const BYTES: u8 = 6;
const DATE: u8 = 7;
const TIME: u8 = 8;
const DATETIME: u8 = 9;
const TIMESTAMP: u8 = 10;
const JSON: u8 = 11;

/// Serializes the batch read after `after`.
pub fn encode(after: &Position, batch: &ReadBatch) -> Result<Vec<u8>, WireError> {
    let mut tables: Vec<&TableSchema> = Vec::new();
    let mut index: HashMap<*const TableSchema, usize> = HashMap::new();
    for c in batch.txns.iter().flat_map(|t| &t.changes) {
        index.entry(Arc::as_ptr(&c.table)).or_insert_with(|| {
            tables.push(&c.table);
            tables.len() - 1
        });
    }
    let mut w = Writer(Vec::with_capacity(4096));
    w.0.extend_from_slice(MAGIC);
    w.0.push(FORMAT);
    w.str(&after.to_string());
    w.str(&batch.position.to_string());
    w.0.push(u8::from(batch.continues));
    w.bytes(&serde_json::to_vec(&tables)?);
    w.uint(batch.txns.len() as u64);
    for txn in &batch.txns {
        w.str(txn.origin.as_str());
        w.int(txn.commit_ts);
        w.str(&txn.position.to_string());
        w.uint(txn.changes.len() as u64);
        for c in &txn.changes {
            w.uint(index[&Arc::as_ptr(&c.table)] as u64);
            w.0.push(match c.op {
                Op::Insert => 0,
                Op::Update => 1,
                Op::Delete => 2,
            });
            w.row(&c.key);
            w.opt_row(c.before.as_ref());
            w.opt_row(c.after.as_ref());
            match &c.prior {
                Prior::Unknown => w.0.push(0),
                Prior::Fresh => w.0.push(1),
                Prior::Deleted(site, us) => {
                    w.0.push(2);
                    w.version(site, *us);
                }
            }
            w.opt_version(c.seen.as_ref());
            w.opt_version(c.version.as_ref());
        }
        w.uint(txn.ddl.len() as u64);
        for d in &txn.ddl {
            match &d.table.schema {
                Some(s) => {
                    w.0.push(1);
                    w.str(s);
                }
                None => w.0.push(0),
            }
            w.str(&d.table.name);
            w.0.push(match d.kind {
                SchemaChangeKind::Create => 0,
                SchemaChangeKind::Alter => 1,
                SchemaChangeKind::Drop => 2,
                SchemaChangeKind::Truncate => 3,
                SchemaChangeKind::Index => 4,
            });
            w.str(&d.statement);
            w.uint(d.name_at.0 as u64);
            w.uint(d.name_at.1 as u64);
        }
    }
    Ok(w.0)
}

/// Reads a batch back.
pub fn decode(bytes: &[u8]) -> Result<Batch, WireError> {
    if bytes.len() < MAGIC.len() + 1 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(WireError::Foreign);
    }
    if bytes[MAGIC.len()] != FORMAT {
        return Err(WireError::Format { found: bytes[MAGIC.len()] });
    }
    let mut r = Reader { bytes, at: MAGIC.len() + 1 };
    let after = registry::parse_position(r.str()?)?;
    let end = registry::parse_position(r.str()?)?;
    let continues = r.flag("a continuation flag")?;
    let tables: Vec<TableSchema> = serde_json::from_slice(r.bytes()?)?;
    let tables: Vec<Arc<TableSchema>> = tables.into_iter().map(Arc::new).collect();
    let n = r.len()?;
    let mut txns = Vec::with_capacity(n);
    for _ in 0..n {
        let origin = SiteId::new(r.str()?);
        let commit_ts = r.int()?;
        let position = registry::parse_position(r.str()?)?;
        let n = r.len()?;
        let mut changes = Vec::with_capacity(n);
        for _ in 0..n {
            let t = r.len()?;
            let table = tables.get(t).ok_or(WireError::Table(t))?.clone();
            let op = match r.byte()? {
                0 => Op::Insert,
                1 => Op::Update,
                2 => Op::Delete,
                _ => return Err(r.invalid("an operation")),
            };
            let key = r.row()?;
            let before = r.opt_row()?;
            let after = r.opt_row()?;
            let prior = match r.byte()? {
                0 => Prior::Unknown,
                1 => Prior::Fresh,
                2 => {
                    let (site, us) = r.version()?;
                    Prior::Deleted(site, us)
                }
                _ => return Err(r.invalid("a prior state")),
            };
            let seen = r.opt_version()?;
            let version = r.opt_version()?;
            changes.push(Change { table, op, key, before, after, prior, seen, version });
        }
        let n = r.len()?;
        let mut ddl = Vec::with_capacity(n);
        for _ in 0..n {
            let schema = if r.flag("a schema flag")? { Some(r.str()?.to_string()) } else { None };
            let table = TableName { schema, name: r.str()?.to_string() };
            let kind = match r.byte()? {
                0 => SchemaChangeKind::Create,
                1 => SchemaChangeKind::Alter,
                2 => SchemaChangeKind::Drop,
                3 => SchemaChangeKind::Truncate,
                4 => SchemaChangeKind::Index,
                _ => return Err(r.invalid("a schema change kind")),
            };
            let statement = r.str()?.to_string();
            let name_at = (r.len()?, r.len()?);
            ddl.push(SchemaChange { table, kind, statement, name_at });
        }
        txns.push(Txn { origin, commit_ts, position, changes, ddl });
    }
    if r.at != bytes.len() {
        return Err(r.invalid("bytes after the batch's end"));
    }
    Ok(Batch { after, end, continues, txns })
}

/// Cuts an encoded batch into parts of at most `most` bytes (at least one part).
pub fn parts(bytes: &[u8], most: usize) -> Vec<&[u8]> {
    if bytes.is_empty() {
        return vec![bytes];
    }
    bytes.chunks(most.max(1)).collect()
}

/// Appends the binary form.
struct Writer(Vec<u8>);

impl Writer {
    /// An unsigned LEB128 varint.
    fn uint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    /// A signed integer, zigzag-mapped so small negatives stay short.
    fn int(&mut self, v: i64) {
        self.uint(((v << 1) ^ (v >> 63)) as u64);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.uint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    fn version(&mut self, site: &SiteId, us: i64) {
        self.str(site.as_str());
        self.int(us);
    }

    fn opt_version(&mut self, v: Option<&(SiteId, i64)>) {
        match v {
            Some((site, us)) => {
                self.0.push(1);
                self.version(site, *us);
            }
            None => self.0.push(0),
        }
    }

    fn row(&mut self, row: &[Value]) {
        self.uint(row.len() as u64);
        for v in row {
            self.value(v);
        }
    }

    fn opt_row(&mut self, row: Option<&Row>) {
        match row {
            Some(r) => {
                self.0.push(1);
                self.row(r);
            }
            None => self.0.push(0),
        }
    }

    fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.0.push(NULL),
            Value::Int(i) => {
                self.0.push(INT);
                self.int(*i);
            }
            Value::UInt(u) => {
                self.0.push(UINT);
                self.uint(*u);
            }
            Value::Float(f) => {
                self.0.push(FLOAT);
                self.0.extend_from_slice(&f.to_bits().to_le_bytes());
            }
            Value::Decimal(s) => {
                self.0.push(DECIMAL);
                self.str(s);
            }
            Value::Text(s) => {
                self.0.push(TEXT);
                self.str(s);
            }
            Value::Bytes(b) => {
                self.0.push(BYTES);
                self.bytes(b);
            }
            Value::Date { year, month, day } => {
                self.0.push(DATE);
                self.uint(u64::from(*year));
                self.0.extend_from_slice(&[*month, *day]);
            }
            Value::Time { negative, hours, minutes, seconds, micros } => {
                self.0.push(TIME);
                self.0.push(u8::from(*negative));
                self.uint(u64::from(*hours));
                self.0.extend_from_slice(&[*minutes, *seconds]);
                self.uint(u64::from(*micros));
            }
            Value::DateTime { year, month, day, hour, minute, second, micros } => {
                self.0.push(DATETIME);
                self.uint(u64::from(*year));
                self.0.extend_from_slice(&[*month, *day, *hour, *minute, *second]);
                self.uint(u64::from(*micros));
            }
            Value::Timestamp(us) => {
                self.0.push(TIMESTAMP);
                self.int(*us);
            }
            Value::Json(s) => {
                self.0.push(JSON);
                self.str(s);
            }
        }
    }
}

/// Reads the binary form back.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn invalid(&self, what: &'static str) -> WireError {
        WireError::Invalid { what, at: self.at }
    }

    fn byte(&mut self) -> Result<u8, WireError> {
        let b = *self.bytes.get(self.at).ok_or(WireError::Short(self.at))?;
        self.at += 1;
        Ok(b)
    }

    fn flag(&mut self, what: &'static str) -> Result<bool, WireError> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.invalid(what)),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or(WireError::Short(self.at))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn uint(&mut self) -> Result<u64, WireError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.invalid("an integer longer than 64 bits"))
    }

    fn int(&mut self) -> Result<i64, WireError> {
        let z = self.uint()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    /// A count or index, bounded by what the batch could hold (no huge allocation on a
    /// damaged length).
    fn len(&mut self) -> Result<usize, WireError> {
        let n = self.uint()?;
        usize::try_from(n).ok().filter(|&n| n <= self.bytes.len()).ok_or_else(|| self.invalid("a length"))
    }

    fn narrow<T: TryFrom<u64>>(&mut self, what: &'static str) -> Result<T, WireError> {
        let v = self.uint()?;
        T::try_from(v).map_err(|_| self.invalid(what))
    }

    fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.len()?;
        self.take(n)
    }

    fn str(&mut self) -> Result<&'a str, WireError> {
        let b = self.bytes()?;
        std::str::from_utf8(b).map_err(|_| self.invalid("text that is not UTF-8"))
    }

    fn version(&mut self) -> Result<(SiteId, i64), WireError> {
        let site = SiteId::new(self.str()?);
        Ok((site, self.int()?))
    }

    fn opt_version(&mut self) -> Result<Option<(SiteId, i64)>, WireError> {
        if self.flag("a version flag")? { Ok(Some(self.version()?)) } else { Ok(None) }
    }

    fn row(&mut self) -> Result<Row, WireError> {
        let n = self.len()?;
        let mut row = Vec::with_capacity(n);
        for _ in 0..n {
            row.push(self.value()?);
        }
        Ok(row)
    }

    fn opt_row(&mut self) -> Result<Option<Row>, WireError> {
        if self.flag("a row flag")? { Ok(Some(self.row()?)) } else { Ok(None) }
    }

    fn value(&mut self) -> Result<Value, WireError> {
        Ok(match self.byte()? {
            NULL => Value::Null,
            INT => Value::Int(self.int()?),
            UINT => Value::UInt(self.uint()?),
            FLOAT => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Value::Float(f64::from_bits(u64::from_le_bytes(a)))
            }
            DECIMAL => Value::Decimal(self.str()?.to_string()),
            TEXT => Value::Text(self.str()?.to_string()),
            BYTES => Value::Bytes(self.bytes()?.to_vec()),
            DATE => {
                let year = self.narrow("a year")?;
                let [month, day] = [self.byte()?, self.byte()?];
                Value::Date { year, month, day }
            }
            TIME => {
                let negative = self.flag("a sign")?;
                let hours = self.narrow("hours")?;
                let [minutes, seconds] = [self.byte()?, self.byte()?];
                let micros = self.narrow("microseconds")?;
                Value::Time { negative, hours, minutes, seconds, micros }
            }
            DATETIME => {
                let year = self.narrow("a year")?;
                let [month, day, hour, minute, second] =
                    [self.byte()?, self.byte()?, self.byte()?, self.byte()?, self.byte()?];
                let micros = self.narrow("microseconds")?;
                Value::DateTime { year, month, day, hour, minute, second, micros }
            }
            TIMESTAMP => Value::Timestamp(self.int()?),
            JSON => Value::Json(self.str()?.to_string()),
            _ => return Err(self.invalid("a value tag")),
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::model::{Column, Value};

    /// A SQLite position, for tests.
    pub(in crate::cluster::transport) fn sqlite(n: i64) -> Position {
        registry::parse_position(&format!("sqlite:{n}")).expect("a sqlite position")
    }

    /// Table `items (id INTEGER PRIMARY KEY, v BLOB)`, for tests.
    pub(in crate::cluster::transport) fn items() -> Arc<TableSchema> {
        Arc::new(TableSchema {
            name: TableName::bare("items"),
            columns: vec![
                Column { name: "id".into(), decl_type: "INTEGER".into(), nullable: false },
                Column { name: "v".into(), decl_type: "BLOB".into(), nullable: true },
            ],
            primary_key: vec![0],
            unique_keys: Vec::new(),
            foreign_keys: Vec::new(),
            create_sql: None,
        })
    }

    #[test]
    fn a_batch_comes_back_as_it_went() {
        let table = items();
        let change = Change {
            table: table.clone(),
            op: Op::Update,
            key: vec![Value::Int(7)],
            before: Some(vec![Value::Int(7), Value::Null]),
            after: Some(vec![Value::Int(7), Value::Bytes(vec![0, 255])]),
            prior: Prior::Deleted(SiteId::new("b"), 5),
            seen: Some((SiteId::new("a"), 3)),
            version: None,
        };
        let txn = Txn {
            origin: SiteId::new("a"),
            commit_ts: 42,
            position: sqlite(11),
            changes: vec![change.clone(), change],
            ddl: Vec::new(),
        };
        let batch = ReadBatch { txns: vec![txn], position: sqlite(12), continues: false };
        let bytes = encode(&sqlite(10), &batch).expect("encodes");
        let back = decode(&bytes).expect("decodes");
        assert_eq!((back.after, back.end, back.continues), (sqlite(10), sqlite(12), false));
        let t = &back.txns[0];
        assert_eq!((t.commit_ts, &t.position, t.changes.len()), (42, &sqlite(11), 2));
        let c = &t.changes[1];
        assert_eq!(c.after, Some(vec![Value::Int(7), Value::Bytes(vec![0, 255])]));
        assert_eq!(c.prior, Prior::Deleted(SiteId::new("b"), 5));
        assert_eq!(*c.table, *table);
        assert!(Arc::ptr_eq(&t.changes[0].table, &t.changes[1].table), "one schema per table and batch");
    }

    #[test]
    fn every_value_comes_back_bit_for_bit() {
        let values = vec![
            Value::Null,
            Value::Int(i64::MIN),
            Value::Int(-1),
            Value::Int(i64::MAX),
            Value::UInt(u64::MAX),
            Value::Float(-0.0),
            Value::Float(f64::NEG_INFINITY),
            Value::Float(f64::NAN),
            Value::Decimal("-12.3400".into()),
            Value::Text("emoji 😀 ünï".into()),
            Value::Text(String::new()),
            Value::Bytes(vec![0, 255, 10]),
            Value::Date { year: 0, month: 0, day: 0 },
            Value::Time { negative: true, hours: 838, minutes: 59, seconds: 59, micros: 999_999 },
            Value::DateTime { year: 9999, month: 12, day: 31, hour: 23, minute: 59, second: 59, micros: 1 },
            Value::Timestamp(-1),
            Value::Json("{\"a\": [1, 2.50]}".into()),
        ];
        let change = Change {
            table: items(),
            op: Op::Insert,
            key: vec![Value::Int(1)],
            before: None,
            after: Some(values.clone()),
            prior: Prior::Fresh,
            seen: None,
            version: Some((SiteId::new("b"), i64::MIN)),
        };
        let txn =
            Txn { origin: SiteId::new(""), commit_ts: 0, position: sqlite(1), changes: vec![change], ddl: Vec::new() };
        let batch = ReadBatch { txns: vec![txn], position: sqlite(1), continues: true };
        let back = decode(&encode(&sqlite(0), &batch).expect("encodes")).expect("decodes");
        let c = &back.txns[0].changes[0];
        let after = c.after.as_ref().expect("an after image");
        assert!(crate::model::same_row(Some(after), Some(&values)), "{after:?}");
        assert_eq!((c.prior.clone(), c.version.clone()), (Prior::Fresh, Some((SiteId::new("b"), i64::MIN))));
        assert!(back.continues);
    }

    #[test]
    fn a_batch_of_another_form_is_refused_by_name() {
        let batch = ReadBatch { txns: Vec::new(), position: sqlite(2), continues: false };
        let mut bytes = encode(&sqlite(1), &batch).expect("encodes");
        bytes[MAGIC.len()] = FORMAT + 1;
        let e = decode(&bytes).expect_err("another format");
        assert!(e.to_string().contains(&format!("format {}", FORMAT + 1)), "{e}");
        assert!(matches!(decode(b"{\"after\":\"sqlite:1\"}"), Err(WireError::Foreign)));
        let whole = encode(&sqlite(1), &batch).expect("encodes");
        assert!(matches!(decode(&whole[..whole.len() - 1]), Err(WireError::Short(_))));
    }

    #[test]
    fn parts_cut_at_the_size_and_join_back() {
        let bytes: Vec<u8> = (0..=255).collect();
        let cut = parts(&bytes, 100);
        assert_eq!(cut.iter().map(|p| p.len()).collect::<Vec<_>>(), [100, 100, 56]);
        assert_eq!(cut.concat(), bytes);
        assert_eq!(parts(&[], 100).len(), 1);
    }
}
