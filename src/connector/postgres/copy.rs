//! Snapshot chunks through `COPY`, both ways. A chunk is read with `COPY (SELECT … ORDER
//! BY key LIMIT n) TO STDOUT` inside the exported snapshot (`export.rs`); for a
//! PostgreSQL target its bytes go undecoded into `COPY … FROM STDIN` after the chunk's
//! key range is deleted, in the batch's transaction (binary chunks without the padding
//! of `char(n)` values, which the target adds back). Tables of built-in types go in
//! binary (`copy_binary.rs`); the others in text, which is exact for every type in a
//! UTC session with ferry's settings and carries no type OIDs (binary arrays do, and
//! enum OIDs differ between servers), so it loads into a target whose column types
//! differ as long as they take the text. For other targets the text lines are decoded
//! to canonical rows.

use bytes::{Bytes, BytesMut};
use futures_util::TryStreamExt;
use sqlx::postgres::PgConnection;

use super::source::text_columns;
use super::state::check_fence;
use super::values::{Kind, decode, encode};
use super::{PgEndpoint, ident, qualified, string_literal};
use crate::connector::{ConnectorError, DirectionId, NativeRows};
use crate::model::{Key, Row, TableSchema, Value};

/// The format of [`NativeRows`] this connector reads and writes.
pub const FORMAT: &str = "postgres-copy-text";

/// Bytes per CopyData message: the server reads a whole message before it parses any
/// of its rows, so a chunk sent as one message of megabytes left the target waiting for
/// every transfer (13 % of its COPY time in `ClientRead`); in pieces it parses one while
/// the next arrives. COPY data may be cut anywhere, rows and fields included.
const COPY_MESSAGE: usize = 128 * 1024;

/// How a chunk is read: decoded by ferry (text of every column), or kept in the
/// server's own form for a PostgreSQL target, as text or (see `copy_binary.rs`) binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `col::text` of every column, decoded to rows ([`rows`]).
    Decoded,
    /// Each column's own text output, loaded undecoded.
    Text,
    /// COPY binary, loaded undecoded.
    Binary,
}

impl Form {
    /// The form of `t`'s chunks for a PostgreSQL target (`native`) or another.
    pub fn of(t: &TableSchema, native: bool) -> Form {
        match native {
            false => Form::Decoded,
            true if super::copy_binary::eligible(t) => Form::Binary,
            true => Form::Text,
        }
    }
}

/// Reads up to `limit` rows of `t` after `after`, in key order, in `form` (for
/// [`Form::Binary`], the tuples without header and trailer). `expect` is the size in
/// bytes the chunk is likely to have (the previous chunk's): reserved at once, the
/// buffer is not grown and copied over and over.
pub async fn read(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    t: &TableSchema,
    after: Option<&Key>,
    limit: usize,
    form: Form,
    expect: usize,
) -> Result<Bytes, ConnectorError> {
    let cols = match form {
        Form::Text | Form::Binary => {
            t.columns.iter().map(|c| format!("t.{}", ident(&c.name))).collect::<Vec<_>>().join(", ")
        }
        Form::Decoded => text_columns(t),
    };
    let order: Vec<String> = t.primary_key.iter().map(|&i| format!("t.{}", ident(&t.columns[i].name))).collect();
    let filter = match after {
        Some(k) => format!("WHERE ({}) > ({})", order.join(", "), literals(k, &key_types(t))),
        None => String::new(),
    };
    let options = if form == Form::Binary { " (FORMAT binary)" } else { "" };
    let sql = format!(
        "COPY (SELECT {cols} FROM {} AS t {filter} ORDER BY {} LIMIT {limit}) TO STDOUT{options}",
        qualified(&t.name),
        order.join(", ")
    );
    let what = format!("copying rows of {} (COPY TO STDOUT)", t.name);
    let mut out = BytesMut::with_capacity(expect + expect / 8);
    let mut stream = conn.copy_out_raw(&sql).await.map_err(ep.error(what.clone()))?;
    while let Some(piece) = stream.try_next().await.map_err(ep.error(what.clone()))? {
        out.extend_from_slice(&piece);
    }
    match form {
        Form::Binary => super::copy_binary::tuples_of(ep, t, out),
        _ => Ok(out.freeze()),
    }
}

/// A chunk read with [`read`] in [`Form::Text`] or [`Form::Binary`] as [`NativeRows`]
/// for a sink of this store.
pub fn native(
    ep: &PgEndpoint,
    t: &TableSchema,
    data: Bytes,
    form: Form,
    after: Option<&Key>,
    limit: usize,
) -> Result<NativeRows, ConnectorError> {
    let (format, count, last) = match form {
        Form::Binary => {
            let (count, at) = super::copy_binary::count_and_last(ep, t, &data)?;
            let last = at.map(|i| super::copy_binary::key_at(ep, t, &data, i)).transpose()?;
            (super::copy_binary::FORMAT, count, last)
        }
        _ => {
            let count = memchr::memchr_iter(b'\n', &data).count();
            let last = lines(&data).last().map(|line| key_of_line(ep, t, line)).transpose()?;
            (FORMAT, count, last)
        }
    };
    let upto = last.clone().filter(|_| count >= limit);
    Ok(NativeRows { format, data, count, after: after.cloned(), upto, last })
}

/// Decodes a chunk read with [`read`] (not `native`) to rows.
pub fn rows(ep: &PgEndpoint, t: &TableSchema, data: &[u8]) -> Result<Vec<Row>, ConnectorError> {
    let kinds = Kind::of_columns(&t.columns);
    lines(data)
        .map(|line| {
            let fields = fields(line);
            if fields.len() != kinds.len() {
                return Err(bad_line(ep, t, line));
            }
            fields
                .into_iter()
                .zip(&kinds)
                .enumerate()
                .map(|(i, (f, &k))| value(ep, t, i, k, f.as_deref()))
                .collect::<Result<Row, _>>()
        })
        .collect()
}

/// Where a chunk goes on the target.
pub struct Dest<'a> {
    /// The source's description (the one the chunk was read with).
    pub source: &'a TableSchema,
    /// The target's description.
    pub table: &'a TableSchema,
    /// The target's names of the source's columns, in the source's order (the order of
    /// the chunk's fields).
    pub columns: &'a [&'a str],
    /// The target's key columns.
    pub key: &'a [&'a str],
}

impl Dest<'_> {
    /// The target's declared types of the chunk's columns, in the chunk's order.
    fn target_types(&self) -> Vec<&str> {
        self.columns
            .iter()
            .map(|name| self.table.columns.iter().find(|c| c.name == *name).map(|c| c.decl_type.as_str()).unwrap_or(""))
            .collect()
    }
}

/// Replaces the chunk's key range of the target table with the rows: deletes `(after,
/// upto]` (unless `append`: the range is known to be empty), then loads them with
/// `COPY … FROM STDIN`. A binary chunk whose target columns are not of the source's
/// types goes through a temporary table of the source's types, and the server casts
/// its rows into the target's as it would their text. Runs inside the caller's
/// transaction.
pub async fn write(
    ep: &PgEndpoint,
    conn: &mut PgConnection,
    dest: &Dest<'_>,
    rows: &NativeRows,
    append: bool,
) -> Result<(), ConnectorError> {
    let t = dest.table;
    if rows.format != FORMAT && rows.format != super::copy_binary::FORMAT {
        return Err(ConnectorError::Setup {
            endpoint: ep.name.clone(),
            problem: format!("a snapshot chunk of {} came in format {}, not {FORMAT}", t.name, rows.format),
            fix: "report this as a bug".into(),
        });
    }
    if !append {
        let types = super::sink::column_types(ep, t, dest.key)?;
        let cols: Vec<String> = dest.key.iter().map(|c| ident(c)).collect();
        let tuple = format!("({})", cols.join(", "));
        let mut cond = Vec::new();
        if let Some(a) = &rows.after {
            cond.push(format!("{tuple} > ({})", literals(a, &types)));
        }
        if let Some(u) = &rows.upto {
            cond.push(format!("{tuple} <= ({})", literals(u, &types)));
        }
        let filter = if cond.is_empty() { String::new() } else { format!(" WHERE {}", cond.join(" AND ")) };
        let delete = format!("DELETE FROM {}{filter}", qualified(&t.name));
        ep.exec(conn, &format!("clearing the chunk's key range of {} before copying it", t.name), &delete).await?;
    }
    if rows.count == 0 {
        return Ok(());
    }
    let what = format!("copying rows into {} (COPY FROM STDIN)", t.name);
    let columns = dest.columns.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
    if rows.format == FORMAT {
        let sql = format!("COPY {} ({columns}) FROM STDIN", qualified(&t.name));
        let mut copy = conn.copy_in_raw(&sql).await.map_err(ep.error(what.clone()))?;
        for message in rows.data.chunks(COPY_MESSAGE) {
            copy.send(message).await.map_err(ep.error(what.clone()))?;
        }
        copy.finish().await.map_err(ep.error(what))?;
        return Ok(());
    }
    let direct = super::copy_binary::same_types(dest.source, &dest.target_types());
    let into = match direct {
        true => format!("{} ({columns})", qualified(&t.name)),
        false => {
            let defs: Vec<String> = dest
                .columns
                .iter()
                .zip(&dest.source.columns)
                .map(|(name, c)| format!("{} {}", ident(name), c.decl_type))
                .collect();
            let sql = format!(
                "DROP TABLE IF EXISTS pg_temp.ferry_chunk; CREATE TEMP TABLE ferry_chunk ({}) ON COMMIT DROP",
                defs.join(", ")
            );
            ep.exec(conn, &format!("making a table of the source's types for a chunk of {}", t.name), &sql).await?;
            "pg_temp.ferry_chunk".to_string()
        }
    };
    let sql = format!("COPY {into} FROM STDIN (FORMAT binary)");
    let mut copy = conn.copy_in_raw(&sql).await.map_err(ep.error(what.clone()))?;
    for message in super::copy_binary::framed(&rows.data).into_iter().flat_map(|p| p.chunks(COPY_MESSAGE)) {
        copy.send(message).await.map_err(ep.error(what.clone()))?;
    }
    copy.finish().await.map_err(ep.error(what))?;
    if !direct {
        let sql = format!("INSERT INTO {} ({columns}) SELECT {columns} FROM pg_temp.ferry_chunk", qualified(&t.name));
        ep.exec(conn, &format!("casting a chunk into the column types of {}", t.name), &sql).await?;
    }
    Ok(())
}

/// Splits a chunk into at most `parts` consecutive chunks of about equal row counts,
/// each with its own key range: part `i` runs from part `i-1`'s last key up to its own
/// last key, and the last part ends where the whole chunk ends (`upto`). `t` is the
/// source's description (the one the lines were read with).
pub fn split(
    ep: &PgEndpoint,
    t: &TableSchema,
    rows: &NativeRows,
    parts: usize,
) -> Result<Vec<NativeRows>, ConnectorError> {
    let binary = rows.format == super::copy_binary::FORMAT;
    // Where each row starts and ends.
    let bounds: Vec<(usize, usize)> = match binary {
        true => {
            let at = super::copy_binary::offsets(ep, t, &rows.data)?;
            let ends = at.iter().skip(1).copied().chain(std::iter::once(rows.data.len()));
            at.iter().copied().zip(ends).collect()
        }
        false => {
            let ends: Vec<usize> = memchr::memchr_iter(b'\n', &rows.data).map(|i| i + 1).collect();
            let starts = std::iter::once(0).chain(ends.iter().copied());
            starts.zip(ends.iter().copied()).collect()
        }
    };
    let key_of = |(start, end): (usize, usize)| match binary {
        true => super::copy_binary::key_at(ep, t, &rows.data, start),
        false => key_of_line(ep, t, &rows.data[start..end - 1]),
    };
    let per = rows.count.div_ceil(parts.max(1)).max(1);
    let mut out = Vec::with_capacity(parts);
    let (mut start, mut after, mut n) = (0usize, rows.after.clone(), 0usize);
    for &row in &bounds {
        n += 1;
        if n < per || out.len() + 1 == parts {
            continue;
        }
        let last = Some(key_of(row)?);
        out.push(NativeRows {
            format: rows.format,
            data: rows.data.slice(start..row.1),
            count: n,
            after: after.clone(),
            upto: last.clone(),
            last: last.clone(),
        });
        (start, after, n) = (row.1, last, 0);
    }
    if n > 0 || out.is_empty() {
        out.push(NativeRows {
            format: rows.format,
            data: rows.data.slice(start..),
            count: n,
            after,
            upto: rows.upto.clone(),
            last: rows.last.clone(),
        });
    } else if let Some(final_part) = out.last_mut() {
        // The rows divided evenly: the last part takes the chunk's own end.
        final_part.upto = rows.upto.clone();
    }
    Ok(out)
}

/// Writes the parts of a chunk ([`split`]) at once: the first on `main`, inside the
/// caller's transaction (which records the checkpoint), each other on a session of
/// `helpers` in a transaction of its own, committed before the caller's. A part
/// committed by a helper but not followed by the caller's commit is harmless: the chunk
/// is copied again after a restart, and [`write`] replaces its key range. Each helper
/// checks the lease's `fence` in its transaction, as the caller's does.
pub async fn write_spread(
    ep: &PgEndpoint,
    main: &mut PgConnection,
    helpers: &mut [PgConnection],
    dir: &DirectionId,
    fence: Option<i64>,
    dest: &Dest<'_>,
    parts: &[NativeRows],
) -> Result<(), ConnectorError> {
    let t = dest.table;
    let (first, rest) = parts.split_first().ok_or_else(|| ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: format!("a snapshot chunk of {} was split into no parts", t.name),
        fix: "report this as a bug".into(),
    })?;
    let on_helpers = helpers.iter_mut().zip(rest).map(|(conn, part)| async move {
        ep.exec(conn, "starting a helper's copy transaction", "BEGIN").await?;
        let r = async {
            if let Some(fence) = fence
                && let Some(holder) =
                    check_fence(conn, dir, fence).await.map_err(ep.error(format!("checking the lease of {dir}")))?
            {
                return Err(ConnectorError::Fenced {
                    endpoint: ep.name.clone(),
                    dir: dir.to_string(),
                    mine: fence,
                    holder: (holder.pid != 0).then(|| Box::new(holder)),
                });
            }
            write(ep, conn, dest, part, false).await
        }
        .await;
        match r {
            // The caller commits after this, and its flush covers this commit's WAL.
            Ok(()) => {
                ep.exec(conn, "committing a helper's copy transaction", "SET LOCAL synchronous_commit = off; COMMIT")
                    .await
            }
            Err(e) => {
                let _ = ep.exec(conn, "rolling back a helper's copy transaction", "ROLLBACK").await;
                Err(e)
            }
        }
    });
    let (mine, theirs) = tokio::join!(write(ep, main, dest, first, false), futures_util::future::join_all(on_helpers));
    mine?;
    theirs.into_iter().collect()
}

/// The declared types of a table's key columns.
fn key_types(t: &TableSchema) -> Vec<String> {
    t.primary_key.iter().map(|&i| t.columns[i].decl_type.clone()).collect()
}

/// `'v1'::t1, 'v2'::t2` of a key (COPY and the range delete take no parameters).
fn literals(k: &Key, types: &[String]) -> String {
    k.iter()
        .zip(types)
        .map(|(v, ty)| match encode(v) {
            Some(text) => format!("{}::{ty}", string_literal(&text)),
            None => format!("NULL::{ty}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The lines of COPY text (each row ends with a newline; one inside a value is escaped).
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    data.split(|&b| b == b'\n').filter(move |_| !data.is_empty())
}

/// The fields of a line, unescaped; `None` is NULL (`\N`).
fn fields(line: &[u8]) -> Vec<Option<Vec<u8>>> {
    line.split(|&b| b == b'\t').map(|f| if f == b"\\N" { None } else { Some(unescape(f)) }).collect()
}

/// Undoes COPY text escapes: `\b \f \n \r \t \v \\`, `\ooo` octal, `\xhh` hex, and any
/// other escaped character as itself.
fn unescape(f: &[u8]) -> Vec<u8> {
    if !f.contains(&b'\\') {
        return f.to_vec();
    }
    let mut out = Vec::with_capacity(f.len());
    let mut i = 0;
    while i < f.len() {
        let b = f[i];
        i += 1;
        if b != b'\\' || i >= f.len() {
            out.push(b);
            continue;
        }
        let c = f[i];
        i += 1;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match f.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            b'x' if f.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut v = 0u32;
                for _ in 0..2 {
                    match f.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                        }
                        None => break,
                    }
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    out
}

/// The key of one line of a native chunk.
fn key_of_line(ep: &PgEndpoint, t: &TableSchema, line: &[u8]) -> Result<Key, ConnectorError> {
    let fields = fields(line);
    if fields.len() != t.columns.len() {
        return Err(bad_line(ep, t, line));
    }
    t.primary_key
        .iter()
        .map(|&i| value(ep, t, i, Kind::of_decl(&t.columns[i].decl_type), fields[i].as_deref()))
        .collect()
}

/// Column `i`'s value from its text (`None`: NULL), as the row reader gives it.
pub(super) fn field_value(
    ep: &PgEndpoint,
    t: &TableSchema,
    i: usize,
    f: Option<&[u8]>,
) -> Result<Value, ConnectorError> {
    value(ep, t, i, Kind::of_decl(&t.columns[i].decl_type), f)
}

fn value(ep: &PgEndpoint, t: &TableSchema, i: usize, kind: Kind, f: Option<&[u8]>) -> Result<Value, ConnectorError> {
    let Some(bytes) = f else { return Ok(Value::Null) };
    let bad = |why: String| ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: format!("column {}.{} ({}): {why}", t.name, t.columns[i].name, t.columns[i].decl_type),
        fix: "leave the table out of the task's tables, or report the value as a bug".into(),
    };
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
    decode(kind, text).map_err(bad)
}

fn bad_line(ep: &PgEndpoint, t: &TableSchema, line: &[u8]) -> ConnectorError {
    ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: format!(
            "a COPY line of {} has not the table's {} columns: {:?}",
            t.name,
            t.columns.len(),
            String::from_utf8_lossy(&line[..line.len().min(200)])
        ),
        fix: "report this as a bug".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_undo_exactly() {
        assert_eq!(unescape(b"a\\tb\\nc\\\\d\\r\\b\\f\\v"), b"a\tb\nc\\d\r\x08\x0c\x0b");
        assert_eq!(unescape(b"\\101\\x41\\7"), b"AA\x07");
        assert_eq!(unescape(b"plain"), b"plain");
        let f = fields(b"1\t\\N\tx\\ty");
        assert_eq!(f, vec![Some(b"1".to_vec()), None, Some(b"x\ty".to_vec())]);
        assert_eq!(lines(b"a\nb\n").collect::<Vec<_>>(), vec![&b"a"[..], &b"b"[..]]);
        assert_eq!(lines(b"").count(), 0);
    }

    fn table() -> TableSchema {
        let column = |name: &str, decl_type: &str| crate::model::Column {
            name: name.into(),
            decl_type: decl_type.into(),
            nullable: false,
        };
        TableSchema {
            name: crate::model::TableName::bare("t"),
            columns: vec![column("id", "integer"), column("v", "text")],
            primary_key: vec![0],
            unique_keys: Vec::new(),
            foreign_keys: Vec::new(),
            create_sql: None,
        }
    }

    fn chunk(ids: std::ops::RangeInclusive<i64>, after: Option<i64>, upto: Option<i64>) -> NativeRows {
        let data: String = ids.clone().map(|i| format!("{i}\tv{i}\n")).collect();
        let count = ids.clone().count();
        let key = |i: i64| vec![Value::Int(i)];
        NativeRows {
            format: FORMAT,
            data: Bytes::from(data),
            count,
            after: after.map(key),
            upto: upto.map(key),
            last: Some(key(*ids.end())),
        }
    }

    #[test]
    fn a_chunk_splits_into_parts_whose_key_ranges_tile_the_chunks() {
        let ep = PgEndpoint::new("t", crate::model::SiteId::new("a"), "postgres://u@h/db").expect("endpoint");
        let key = |i: i64| Some(vec![Value::Int(i)]);
        // 10 rows after key 0, up to key 10, in 3 parts: 4 + 4 + 2 rows.
        let parts = split(&ep, &table(), &chunk(1..=10, Some(0), Some(10)), 3).expect("split");
        let ranges: Vec<_> = parts.iter().map(|p| (p.after.clone(), p.upto.clone(), p.count)).collect();
        assert_eq!(ranges, vec![(key(0), key(4), 4), (key(4), key(8), 4), (key(8), key(10), 2)]);
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.data.to_vec()).collect();
        assert_eq!(joined, chunk(1..=10, None, None).data.to_vec());
        // The table's last chunk (open-ended) divided evenly: the last part stays open.
        let parts = split(&ep, &table(), &chunk(1..=8, None, None), 2).expect("split");
        let ranges: Vec<_> = parts.iter().map(|p| (p.after.clone(), p.upto.clone(), p.count)).collect();
        assert_eq!(ranges, vec![(None, key(4), 4), (key(4), None, 4)]);
        // Fewer rows than parts: one row per part, nothing lost.
        let parts = split(&ep, &table(), &chunk(1..=2, None, Some(2)), 4).expect("split");
        assert_eq!(parts.iter().map(|p| p.count).collect::<Vec<_>>(), vec![1, 1]);
        assert_eq!(parts[1].upto, key(2));
    }

    #[test]
    fn a_binary_chunk_splits_by_tuple_into_parts_that_load_on_their_own() {
        let ep = PgEndpoint::new("t", crate::model::SiteId::new("a"), "postgres://u@h/db").expect("endpoint");
        let key = |i: i64| Some(vec![Value::Int(i)]);
        // Tuples of (integer id, text v) for ids 1..=5, the chunk ending at key 5.
        let data: Vec<u8> = (1..=5i32)
            .flat_map(|i| {
                let v = format!("v{i}");
                let mut t = 2i16.to_be_bytes().to_vec();
                t.extend(4i32.to_be_bytes());
                t.extend(i.to_be_bytes());
                t.extend((v.len() as i32).to_be_bytes());
                t.extend(v.as_bytes());
                t
            })
            .collect();
        let rows = NativeRows {
            format: super::super::copy_binary::FORMAT,
            data: Bytes::from(data.clone()),
            count: 5,
            after: key(0),
            upto: key(5),
            last: key(5),
        };
        let parts = split(&ep, &table(), &rows, 2).expect("split");
        let ranges: Vec<_> = parts.iter().map(|p| (p.after.clone(), p.upto.clone(), p.count)).collect();
        assert_eq!(ranges, vec![(key(0), key(3), 3), (key(3), key(5), 2)]);
        assert!(parts.iter().all(|p| p.format == super::super::copy_binary::FORMAT));
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.data.to_vec()).collect();
        assert_eq!(joined, data);
    }
}
