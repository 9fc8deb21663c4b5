//! Snapshot chunks in COPY's binary format, for PostgreSQL -> PostgreSQL first copies of
//! tables whose every column is a built-in type with a portable binary form: the servers
//! neither print nor parse the values' text (a fifth less work for the loading server
//! here, and less for the reading one). Arrays, enums, domains and other types whose
//! binary form names type OIDs (which differ between servers) stay in text (`copy.rs`).
//!
//! A chunk's bytes are the tuples only (header and trailer stripped), so chunks and
//! their parts concatenate; [`framed`] puts the header and trailer back for a load. A
//! tuple is a 16-bit field count, then per field a 32-bit length (-1: NULL) and the
//! bytes; every number big-endian.
//!
//! The trailing spaces of a `character(n)` value outside the key are not carried: the
//! server stores every such value padded to n characters and pads what it loads the
//! same way, so the stored bytes are identical, while counting the characters of the
//! padding cost the loading server a quarter of its COPY time on pgbench's `char(84)`.

use bytes::{Bytes, BytesMut};

use super::PgEndpoint;
use crate::connector::ConnectorError;
use crate::model::{Key, TableSchema};

/// The format of [`crate::connector::NativeRows`] read and written in binary.
pub const FORMAT: &str = "postgres-copy-binary";

/// COPY binary's signature, flags (none) and header extension length (none).
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The signature alone (what a header starts with).
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// The file trailer: a field count of -1.
const TRAILER: &[u8] = b"\xff\xff";

/// Built-in types whose binary form holds no OID (typmods stripped before the match).
const PORTABLE: &[&str] = &[
    "boolean",
    "smallint",
    "integer",
    "bigint",
    "real",
    "double precision",
    "numeric",
    "text",
    "character varying",
    "character",
    "bytea",
    "date",
    "time without time zone",
    "time with time zone",
    "timestamp without time zone",
    "timestamp with time zone",
    "interval",
    "uuid",
    "json",
    "jsonb",
];

/// Key types this module turns back into a key (the chunk's last key).
const KEY_TYPES: &[&str] = &["smallint", "integer", "bigint", "text", "character varying", "character", "uuid"];

/// A declared type without its typmods: `numeric(10,2)` -> `numeric`,
/// `timestamp(3) with time zone` -> `timestamp with time zone`.
fn base_type(decl: &str) -> String {
    let mut out = String::with_capacity(decl.len());
    let mut depth = 0;
    for c in decl.trim().chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether a table's chunks can travel in binary: every column portable, every key
/// column one this module can read back.
pub fn eligible(t: &TableSchema) -> bool {
    !t.primary_key.is_empty()
        && t.columns.iter().all(|c| PORTABLE.contains(&base_type(&c.decl_type).as_str()))
        && t.primary_key.iter().all(|&i| KEY_TYPES.contains(&base_type(&t.columns[i].decl_type).as_str()))
}

/// Whether a target table takes a binary chunk as is: the same base types with the same
/// typmods, column for column (`target` in the order of the chunk's fields).
pub fn same_types(source: &TableSchema, target: &[&str]) -> bool {
    source.columns.len() == target.len()
        && source.columns.iter().zip(target).all(|(c, t)| c.decl_type.trim() == t.trim())
}

/// The tuples of a whole COPY binary output (header and trailer stripped), without the
/// padding of `character(n)` values outside the key (see the module header).
pub fn tuples_of(ep: &PgEndpoint, t: &TableSchema, mut raw: BytesMut) -> Result<Bytes, ConnectorError> {
    if raw.is_empty() {
        return Ok(raw.freeze());
    }
    let bad = |why: &str| bad_data(ep, t, why);
    if !raw.starts_with(SIGNATURE) || raw.len() < 19 {
        return Err(bad("no COPY binary header"));
    }
    let ext = u32::from_be_bytes(raw[15..19].try_into().map_err(|_| bad("short header"))?) as usize;
    let start = 19 + ext;
    if raw.len() < start + 2 || !raw.ends_with(TRAILER) {
        return Err(bad("no COPY binary trailer"));
    }
    let end = raw.len() - 2;
    let kept = unpad(ep, t, &mut raw[start..end])?;
    Ok(raw.freeze().slice(start..start + kept))
}

/// Per column of `t`, whether its values' trailing spaces are padding a load adds back:
/// `character(n)` (not `character varying`, where they are data) outside the key (a
/// chunk's keys are read back and compared as they were read).
fn padded(t: &TableSchema) -> Vec<bool> {
    t.columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            !t.primary_key.contains(&i) && base_type(&c.decl_type) == "character" && c.decl_type.contains('(')
        })
        .collect()
}

/// Drops the trailing spaces of the [`padded`] columns' values from the tuples in
/// `data`, moving what lies between them down in place; returns the tuples' new length.
/// A table with such columns has every tuple checked here as [`offsets`] checks them
/// (the others are checked when the chunk is counted).
fn unpad(ep: &PgEndpoint, t: &TableSchema, data: &mut [u8]) -> Result<usize, ConnectorError> {
    let pad = padded(t);
    if !pad.contains(&true) {
        return Ok(data.len());
    }
    // `run` starts the bytes read but not yet moved down to `w`: moved once per value
    // trimmed, not once per field.
    let (mut r, mut w, mut run) = (0, 0, 0);
    while r < data.len() {
        tuple_end(ep, t, data, r)?;
        r += 2;
        for &p in &pad {
            let len = i32::from_be_bytes([data[r], data[r + 1], data[r + 2], data[r + 3]]);
            let body = usize::try_from(len).unwrap_or(0);
            let keep = if p { unpadded_len(&data[r + 4..r + 4 + body]) } else { body };
            if keep < body {
                let n = r + 4 + keep - run;
                data.copy_within(run..run + n, w);
                let at = w + (r - run);
                data[at..at + 4].copy_from_slice(&(keep as i32).to_be_bytes());
                (w, run) = (w + n, r + 4 + body);
            }
            r += 4 + body;
        }
    }
    data.copy_within(run..r, w);
    Ok(w + (r - run))
}

/// The length of `b` without its trailing spaces.
fn unpadded_len(b: &[u8]) -> usize {
    let mut n = b.len();
    while n >= 16 && b[n - 16..n] == [b' '; 16] {
        n -= 16;
    }
    while n > 0 && b[n - 1] == b' ' {
        n -= 1;
    }
    n
}

/// The start offset of every tuple in `data` (tuples only), checked against the table's
/// column count.
pub fn offsets(ep: &PgEndpoint, t: &TableSchema, data: &[u8]) -> Result<Vec<usize>, ConnectorError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        out.push(at);
        at = tuple_end(ep, t, data, at)?;
    }
    Ok(out)
}

/// How many tuples `data` holds and where the last one starts, checked as [`offsets`]
/// checks them (without keeping every offset: a chunk needs only its count and last key).
pub fn count_and_last(ep: &PgEndpoint, t: &TableSchema, data: &[u8]) -> Result<(usize, Option<usize>), ConnectorError> {
    let (mut count, mut last, mut at) = (0, None, 0);
    while at < data.len() {
        (count, last) = (count + 1, Some(at));
        at = tuple_end(ep, t, data, at)?;
    }
    Ok((count, last))
}

/// Where the tuple starting at `at` ends.
fn tuple_end(ep: &PgEndpoint, t: &TableSchema, data: &[u8], at: usize) -> Result<usize, ConnectorError> {
    let bad = || bad_data(ep, t, "a tuple runs past the end of the chunk");
    let n = i16::from_be_bytes(data.get(at..at + 2).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
    if n < 0 || n as usize != t.columns.len() {
        return Err(bad_data(ep, t, &format!("a tuple has {n} fields, not the table's {}", t.columns.len())));
    }
    let mut p = at + 2;
    for _ in 0..n {
        let len = i32::from_be_bytes(data.get(p..p + 4).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
        p += 4;
        if len > 0 {
            p += len as usize;
        }
    }
    if p > data.len() {
        return Err(bad());
    }
    Ok(p)
}

/// The fields of the tuple starting at `at` (`None`: NULL).
fn fields(data: &[u8], at: usize) -> Vec<Option<&[u8]>> {
    let n = i16::from_be_bytes([data[at], data[at + 1]]).max(0) as usize;
    let mut p = at + 2;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = i32::from_be_bytes([data[p], data[p + 1], data[p + 2], data[p + 3]]);
        p += 4;
        if len < 0 {
            out.push(None);
        } else {
            out.push(Some(&data[p..p + len as usize]));
            p += len as usize;
        }
    }
    out
}

/// The key of the tuple starting at `at` (offsets from [`offsets`], so well formed).
pub fn key_at(ep: &PgEndpoint, t: &TableSchema, data: &[u8], at: usize) -> Result<Key, ConnectorError> {
    let fields = fields(data, at);
    t.primary_key
        .iter()
        .map(|&i| {
            let text = match fields.get(i).copied().flatten() {
                Some(bytes) => Some(key_text(ep, t, i, bytes)?),
                None => None,
            };
            super::copy::field_value(ep, t, i, text.as_deref().map(str::as_bytes))
        })
        .collect()
}

/// A key field's binary form as the text its type prints.
fn key_text(ep: &PgEndpoint, t: &TableSchema, i: usize, b: &[u8]) -> Result<String, ConnectorError> {
    let bad = || bad_data(ep, t, &format!("key column {} holds {} bytes", t.columns[i].name, b.len()));
    Ok(match base_type(&t.columns[i].decl_type).as_str() {
        "smallint" => i16::from_be_bytes(b.try_into().map_err(|_| bad())?).to_string(),
        "integer" => i32::from_be_bytes(b.try_into().map_err(|_| bad())?).to_string(),
        "bigint" => i64::from_be_bytes(b.try_into().map_err(|_| bad())?).to_string(),
        "uuid" => {
            let b: [u8; 16] = b.try_into().map_err(|_| bad())?;
            let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
        }
        _ => String::from_utf8(b.to_vec()).map_err(|_| bad_data(ep, t, "a text key is not UTF-8"))?,
    })
}

/// The pieces a load sends: header, the tuples, trailer.
pub fn framed(data: &[u8]) -> [&[u8]; 3] {
    [HEADER, data, TRAILER]
}

fn bad_data(ep: &PgEndpoint, t: &TableSchema, why: &str) -> ConnectorError {
    ConnectorError::Setup {
        endpoint: ep.name.clone(),
        problem: format!("a COPY binary chunk of {} is malformed: {why}", t.name),
        fix: "report this as a bug".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Column, TableName, Value};

    fn table(types: &[&str]) -> TableSchema {
        TableSchema {
            name: TableName::bare("t"),
            columns: types
                .iter()
                .enumerate()
                .map(|(i, ty)| Column { name: format!("c{i}"), decl_type: ty.to_string(), nullable: true })
                .collect(),
            primary_key: vec![0],
            unique_keys: Vec::new(),
            foreign_keys: Vec::new(),
            create_sql: None,
        }
    }

    fn tuple(fields: &[Option<&[u8]>]) -> Vec<u8> {
        let mut out = (fields.len() as i16).to_be_bytes().to_vec();
        for f in fields {
            match f {
                Some(b) => {
                    out.extend((b.len() as i32).to_be_bytes());
                    out.extend(*b);
                }
                None => out.extend((-1i32).to_be_bytes()),
            }
        }
        out
    }

    #[test]
    fn built_in_types_go_in_binary_and_arrays_enums_and_odd_keys_do_not() {
        assert!(eligible(&table(&["integer", "numeric(10,2)", "character(84)", "timestamp(3) with time zone"])));
        assert!(eligible(&table(&["uuid", "jsonb", "bytea", "character varying(20)"])));
        assert!(!eligible(&table(&["integer", "integer[]"])));
        assert!(!eligible(&table(&["integer", "mood"])));
        assert!(!eligible(&table(&["numeric", "text"])), "a numeric key is not read back from binary");
        assert_eq!(base_type(" timestamp(6)  without time zone"), "timestamp without time zone");
    }

    #[test]
    fn tuples_are_walked_and_their_keys_read_back() {
        let ep = PgEndpoint::new("t", crate::model::SiteId::new("a"), "postgres://u@h/db").expect("endpoint");
        let t = table(&["bigint", "text"]);
        let mut raw = HEADER.to_vec();
        raw.extend(tuple(&[Some(&7i64.to_be_bytes()), Some(b"x")]));
        raw.extend(tuple(&[Some(&(-9i64).to_be_bytes()), None]));
        raw.extend(TRAILER);
        let data = tuples_of(&ep, &t, BytesMut::from(&raw[..])).expect("tuples");
        let at = offsets(&ep, &t, &data).expect("offsets");
        assert_eq!(at.len(), 2);
        assert_eq!(key_at(&ep, &t, &data, at[1]).expect("key"), vec![Value::Int(-9)]);
        let framed: Vec<u8> = framed(&data).concat();
        assert!(framed.starts_with(SIGNATURE) && framed.ends_with(TRAILER));
        // A tuple cut short, or with the wrong field count, is refused.
        assert!(offsets(&ep, &t, &data[..data.len() - 1]).is_err());
        assert!(offsets(&ep, &table(&["bigint"]), &data).is_err());
        let u = table(&["uuid"]);
        let id: Vec<u8> = (0u8..16).collect();
        let one = tuple(&[Some(&id)]);
        assert_eq!(
            key_at(&ep, &u, &one, 0).expect("uuid"),
            vec![Value::Text("00010203-0405-0607-0809-0a0b0c0d0e0f".into())]
        );
    }

    #[test]
    fn the_padding_of_character_values_outside_the_key_is_not_carried() {
        let ep = PgEndpoint::new("t", crate::model::SiteId::new("a"), "postgres://u@h/db").expect("endpoint");
        let t = table(&["character(4)", "character(40)", "character varying(6)", "character(3)", "integer"]);
        let mut raw = HEADER.to_vec();
        raw.extend(tuple(&[
            Some(b"k   "),
            Some(format!("é b{}", " ".repeat(37)).as_bytes()),
            Some(b"v  "),
            None,
            Some(&1i32.to_be_bytes()),
        ]));
        raw.extend(tuple(&[Some(b"k2  "), Some(b"      "), Some(b""), Some(b"x  "), None]));
        raw.extend(TRAILER);
        let data = tuples_of(&ep, &t, BytesMut::from(&raw[..])).expect("tuples");
        let want = [
            tuple(&[Some(b"k   "), Some("é b".as_bytes()), Some(b"v  "), None, Some(&1i32.to_be_bytes())]),
            tuple(&[Some(b"k2  "), Some(b""), Some(b""), Some(b"x"), None]),
        ]
        .concat();
        assert_eq!(&data[..], &want[..], "key and varchar kept whole, character(n) trimmed, NULL kept");
        assert_eq!(offsets(&ep, &t, &data).expect("offsets").len(), 2);
        // A table without such columns passes through untouched; a cut tuple is refused.
        let plain = table(&["bigint", "text"]);
        let one = [HEADER, &tuple(&[Some(&7i64.to_be_bytes()), Some(b"x  ")]), TRAILER].concat();
        assert_eq!(&tuples_of(&ep, &plain, BytesMut::from(&one[..])).expect("plain")[..], &one[19..one.len() - 2]);
        let cut = [&raw[..raw.len() - 4], TRAILER].concat();
        assert!(tuples_of(&ep, &t, BytesMut::from(&cut[..])).is_err());
    }
}
