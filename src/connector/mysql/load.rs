//! Snapshot chunks written with `LOAD DATA LOCAL INFILE`: the chunk streams to the server
//! as tab-separated text from memory (no file), about 1.7x the rate of multi-row INSERTs
//! on one session, in pieces so encoding overlaps the server's parsing. LOCAL implies
//! IGNORE (the server cannot stop the transfer), so a duplicate key or a value the column
//! does not take only becomes a warning: any warning, or fewer rows than sent, rolls every
//! piece back to the chunk's savepoint and the caller writes the chunk with upserts, which
//! overwrite by key and refuse what must be refused.

use bytes::{BufMut, Bytes, BytesMut};
use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::apply::upsert_on;
use super::ident;
use super::values::ColumnKind;
use crate::model::{Row, TableSchema, Value, timestamp_text};

/// Errors that mean `LOAD DATA LOCAL` is off on the server or in the client: 1148 "not
/// allowed with this version", 4166 (MariaDB 10.5+) and 3948 (MySQL 8) "local infile
/// disabled", 2068 (client).
const LOCAL_INFILE_OFF: [u16; 4] = [1148, 4166, 3948, 2068];

/// What happened to a chunk sent with `LOAD DATA`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Loaded {
    /// Every row is in, without a warning.
    All,
    /// Rolled back: the rows are to be written with upserts (the reason, for the log).
    Refused(String),
    /// `local_infile` is off: never try again on this target.
    Off,
}

/// Chunks smaller than this go as upserts (a savepoint and a transfer cost more than
/// they gain).
const MIN_LOAD_ROWS: usize = 64;

/// Writes snapshot rows in the session's open transaction: with `LOAD DATA` when `load`
/// (the target table takes it and the server allows it), else, or when refused, with
/// upserts. Returns whether `LOAD DATA` may still be used on this server.
pub(super) async fn copy_on(
    conn: &mut Conn,
    budget: usize,
    target: &str,
    table: &TableSchema,
    rows: &[&Row],
    load: Option<&[ColumnKind]>,
) -> Result<bool, mysql_async::Error> {
    if let Some(kinds) = load.filter(|_| rows.len() >= MIN_LOAD_ROWS) {
        match load_on(conn, target, table, kinds, rows).await? {
            Loaded::All => return Ok(true),
            Loaded::Refused(why) => {
                tracing::debug!(table = %table.name, "LOAD DATA of a snapshot chunk rolled back ({why}); writing it with upserts");
            }
            Loaded::Off => {
                upsert_on(conn, budget, target, table, rows).await?;
                return Ok(false);
            }
        }
    }
    upsert_on(conn, budget, target, table, rows).await?;
    Ok(true)
}

/// The target table's column kinds, in `table`'s column order, when every column takes
/// its text form from a `LOAD DATA` field exactly (BIT and spatial columns do not).
pub(super) fn loadable(target: &TableSchema, table: &TableSchema) -> Option<Vec<ColumnKind>> {
    table
        .columns
        .iter()
        .map(|c| {
            let own = target.columns.iter().find(|t| t.name == c.name)?;
            ColumnKind::from_decl(&own.decl_type).filter(|k| {
                matches!(
                    k,
                    ColumnKind::Int { .. }
                        | ColumnKind::Decimal
                        | ColumnKind::Float
                        | ColumnKind::Double
                        | ColumnKind::Text
                        | ColumnKind::Bytes
                        | ColumnKind::Date
                        | ColumnKind::Time
                        | ColumnKind::DateTime
                        | ColumnKind::Timestamp
                        | ColumnKind::Year
                        | ColumnKind::Json
                        | ColumnKind::Enum(_)
                        | ColumnKind::Set(_)
                )
            })
        })
        .collect()
}

/// Rows per `LOAD DATA` statement: the next piece is encoded while the server parses
/// this one, so the target does not wait for a whole chunk's encoding.
const PIECE_ROWS: usize = 8_192;
/// Rows encoded between two yields to the load in flight (so it keeps feeding the server).
const YIELD_ROWS: usize = 512;

/// Loads `rows` into `target` (its column kinds: `kinds`) inside the session's open
/// transaction, in pieces of [`PIECE_ROWS`] under one savepoint.
pub(super) async fn load_on(
    conn: &mut Conn,
    target: &str,
    table: &TableSchema,
    kinds: &[ColumnKind],
    rows: &[&Row],
) -> Result<Loaded, mysql_async::Error> {
    let width = table.columns.len();
    if let Some(r) = rows.iter().find(|r| r.len() != width) {
        return Ok(Loaded::Refused(format!("a row has {} values for {width} columns", r.len())));
    }
    let cols: Vec<String> = table.columns.iter().map(|c| ident(&c.name)).collect();
    let sql = format!(
        "LOAD DATA LOCAL INFILE 'ferry-chunk' INTO TABLE {target} CHARACTER SET utf8mb4 \
         FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({})",
        cols.join(",")
    );
    conn.query_drop("SAVEPOINT ferry_load").await?;
    let mut pieces = rows.chunks(PIECE_ROWS);
    let mut next = pieces.next().map(|p| encode(kinds, p));
    let (mut warnings, mut affected) = (0u64, 0u64);
    while let Some(data) = next.take() {
        conn.set_infile_handler(async move {
            let piece: mysql_async::InfileData = Box::pin(futures_util::stream::once(async move { Ok(data) }));
            Ok(piece)
        });
        let (loaded, following) = tokio::join!(conn.query_drop(&sql), encode_yielding(kinds, pieces.next()));
        match loaded {
            Ok(()) => {}
            Err(mysql_async::Error::Server(e)) if LOCAL_INFILE_OFF.contains(&e.code) => {
                conn.query_drop("ROLLBACK TO SAVEPOINT ferry_load").await?;
                return Ok(Loaded::Off);
            }
            Err(e) => return Err(e),
        }
        warnings += u64::from(conn.get_warnings());
        affected += conn.affected_rows();
        next = following;
    }
    if warnings > 0 || affected != rows.len() as u64 {
        conn.query_drop("ROLLBACK TO SAVEPOINT ferry_load").await?;
        return Ok(Loaded::Refused(format!("{affected} of {} rows loaded, {warnings} warnings", rows.len())));
    }
    conn.query_drop("RELEASE SAVEPOINT ferry_load").await?;
    Ok(Loaded::All)
}

/// [`encode`] of the next piece, yielding every [`YIELD_ROWS`] rows so the load it runs
/// beside (same task) keeps sending its piece to the server.
async fn encode_yielding(kinds: &[ColumnKind], rows: Option<&[&Row]>) -> Option<Bytes> {
    let rows = rows?;
    let mut out = BytesMut::with_capacity(capacity(rows));
    for part in rows.chunks(YIELD_ROWS) {
        tokio::task::yield_now().await;
        encode_into(&mut out, kinds, part);
    }
    Some(out.freeze())
}

/// The rows as `LOAD DATA` input: fields separated by tabs, rows ended by newlines, `\N`
/// for NULL, and the four bytes that would end a field early escaped.
fn encode(kinds: &[ColumnKind], rows: &[&Row]) -> Bytes {
    let mut out = BytesMut::with_capacity(capacity(rows));
    encode_into(&mut out, kinds, rows);
    out.freeze()
}

/// A first guess at the encoded size of `rows`.
fn capacity(rows: &[&Row]) -> usize {
    rows.iter().map(|r| r.len() * 12).sum()
}

/// Appends `rows` to `out` as [`encode`] writes them.
fn encode_into(out: &mut BytesMut, kinds: &[ColumnKind], rows: &[&Row]) {
    for row in rows {
        for (i, (v, kind)) in row.iter().zip(kinds).enumerate() {
            if i > 0 {
                out.put_u8(b'\t');
            }
            match (kind, v) {
                // As text, YEAR reads 0 as 2000: the zero year is written as four digits.
                (ColumnKind::Year, Value::Int(0)) => out.put_slice(b"0000"),
                _ => field(out, v),
            }
        }
        out.put_u8(b'\n');
    }
}

fn field(out: &mut BytesMut, v: &Value) {
    use std::fmt::Write as _;
    match v {
        Value::Null => out.put_slice(b"\\N"),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::UInt(u) => {
            let _ = write!(out, "{u}");
        }
        // Debug prints the shortest text that reads back to the same double.
        Value::Float(f) => {
            let _ = write!(out, "{f:?}");
        }
        Value::Decimal(s) | Value::Text(s) | Value::Json(s) => escaped(out, s.as_bytes()),
        Value::Bytes(b) => escaped(out, b),
        Value::Date { year, month, day } => {
            let _ = write!(out, "{year:04}-{month:02}-{day:02}");
        }
        Value::Time { negative, hours, minutes, seconds, micros } => {
            let sign = if *negative { "-" } else { "" };
            let _ = write!(out, "{sign}{hours:02}:{minutes:02}:{seconds:02}.{micros:06}");
        }
        Value::DateTime { year, month, day, hour, minute, second, micros } => {
            let _ = write!(out, "{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}.{micros:06}");
        }
        Value::Timestamp(us) => out.put_slice(timestamp_text(*us).as_bytes()),
    }
}

fn escaped(out: &mut BytesMut, bytes: &[u8]) {
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            0 => b"\\0",
            _ => continue,
        };
        out.put_slice(&bytes[start..i]);
        out.put_slice(esc);
        start = i + 1;
    }
    out.put_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_escaped_and_null_differs_from_empty() {
        let row: Row = vec![
            Value::Int(-3),
            Value::Null,
            Value::Text(String::new()),
            Value::Text("a\tb\nc\\N".into()),
            Value::Bytes(vec![0, 0xff, b'\r']),
            Value::Float(0.1),
            Value::Float(-0.0),
        ];
        let kinds = vec![ColumnKind::Int { unsigned: false }; row.len()];
        assert_eq!(&encode(&kinds, &[&row])[..], b"-3\t\\N\t\ta\\tb\\nc\\\\N\t\\0\xff\\r\t0.1\t-0.0\n".as_slice());
    }
}
