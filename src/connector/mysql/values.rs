//! MySQL/MariaDB values <-> [`Value`], exactly as docs/mysql-types.md lays down.
//!
//! Reading goes through the binary protocol (prepared statements), so FLOAT, DOUBLE,
//! dates and times arrive as binary values, never as rounded text. Binding sends
//! integers and doubles as such and everything else as its exact text: decimals, dates,
//! times, timestamps (UTC; the session runs in UTC) and JSON.

use mysql_async::Value as MyValue;

use super::MysqlEndpoint;
use crate::connector::ConnectorError;
use crate::model::{Row, TableSchema, Value, days_from_civil, timestamp_text};

/// How a column's values are read and written, derived from its declared type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnKind {
    /// TINYINT … BIGINT; unsigned ones always become [`Value::UInt`].
    Int {
        /// Declared UNSIGNED.
        unsigned: bool,
    },
    /// DECIMAL/NUMERIC, carried as its text.
    Decimal,
    /// FLOAT (binary32, widened exactly).
    Float,
    /// DOUBLE (binary64).
    Double,
    /// Character strings (CHAR, VARCHAR, TEXT …).
    Text,
    /// Binary strings (BINARY, VARBINARY, BLOB …).
    Bytes,
    /// DATE.
    Date,
    /// TIME.
    Time,
    /// DATETIME.
    DateTime,
    /// TIMESTAMP: an instant, microseconds since the epoch.
    Timestamp,
    /// YEAR, as an integer (0000 is 0).
    Year,
    /// BIT(n), as a big-endian unsigned integer.
    Bit,
    /// ENUM with its labels in definition order.
    Enum(Vec<String>),
    /// SET with its labels in definition order.
    Set(Vec<String>),
    /// JSON (MariaDB: LONGTEXT with a json_valid CHECK), as its stored text.
    Json,
}

impl ColumnKind {
    /// The kind of a declared type as information_schema.COLUMNS.COLUMN_TYPE prints it
    /// (`bigint(20) unsigned`, `enum('a','b')`, or `json`); `None` for types ferry cannot
    /// carry exactly (GEOMETRY, UUID, INET4/6 …).
    pub fn from_decl(decl: &str) -> Option<ColumnKind> {
        let lower = decl.trim().to_ascii_lowercase();
        let end = lower.find(['(', ' ']).unwrap_or(lower.len());
        let base = &lower[..end];
        Some(match base {
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" => {
                ColumnKind::Int { unsigned: lower.contains(" unsigned") }
            }
            "bool" | "boolean" => ColumnKind::Int { unsigned: false },
            "decimal" | "numeric" | "dec" | "fixed" => ColumnKind::Decimal,
            "float" => ColumnKind::Float,
            "double" | "real" => ColumnKind::Double,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => ColumnKind::Text,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => ColumnKind::Bytes,
            "date" => ColumnKind::Date,
            "time" => ColumnKind::Time,
            "datetime" => ColumnKind::DateTime,
            "timestamp" => ColumnKind::Timestamp,
            "year" => ColumnKind::Year,
            "bit" => ColumnKind::Bit,
            "json" => ColumnKind::Json,
            "enum" => ColumnKind::Enum(parse_labels(&decl.trim()[end..])?),
            "set" => ColumnKind::Set(parse_labels(&decl.trim()[end..])?),
            _ => return None,
        })
    }
}

/// Labels of `('a','b''c')` as COLUMN_TYPE prints them (quotes doubled, backslashes escaped).
fn parse_labels(list: &str) -> Option<Vec<String>> {
    let inner = list.trim().strip_prefix('(')?.strip_suffix(')')?;
    let mut labels = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == ',') {
            chars.next();
        }
        match chars.next() {
            None => return Some(labels),
            Some('\'') => {}
            Some(_) => return None,
        }
        let mut label = String::new();
        loop {
            match chars.next()? {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    label.push('\'');
                }
                '\'' => break,
                '\\' => match chars.next()? {
                    'n' => label.push('\n'),
                    't' => label.push('\t'),
                    'r' => label.push('\r'),
                    '0' => label.push('\0'),
                    'Z' => label.push('\u{1a}'),
                    c => label.push(c),
                },
                c => label.push(c),
            }
        }
        labels.push(label);
    }
}

/// The kinds of a table's columns, in column order; an unsupported type is a setup
/// error naming the column.
pub fn kinds(ep: &MysqlEndpoint, table: &TableSchema) -> Result<Vec<ColumnKind>, ConnectorError> {
    table
        .columns
        .iter()
        .map(|c| {
            ColumnKind::from_decl(&c.decl_type).ok_or_else(|| ConnectorError::Setup {
                endpoint: ep.name.clone(),
                problem: format!(
                    "column {}.{} has type {}, which ferry cannot carry exactly",
                    table.name, c.name, c.decl_type
                ),
                fix: "leave the table out of the task's tables, or change the column to a supported type (see docs/mysql-types.md)".into(),
            })
        })
        .collect()
}

/// Converts one driver value of a column of `kind` to a [`Value`]. Accepts the binary
/// protocol's shapes (and the text protocol's for integers, decimals and text), the
/// binlog's ENUM index and SET bitmask, and corrects a YEAR 1900 (the binlog decoder's
/// 0000) to 0.
pub fn decode_value(kind: &ColumnKind, v: MyValue) -> Result<Value, String> {
    use ColumnKind as K;
    let bad = |v: &MyValue| format!("unexpected {v:?} for a {kind:?} column");
    Ok(match (kind, v) {
        (_, MyValue::NULL) => Value::Null,
        (K::Int { unsigned: false }, MyValue::Int(i)) => Value::Int(i),
        (K::Int { unsigned: false }, MyValue::UInt(u)) => Value::Int(i64::try_from(u).map_err(|e| e.to_string())?),
        (K::Int { unsigned: true }, MyValue::UInt(u)) => Value::UInt(u),
        (K::Int { unsigned: true }, MyValue::Int(i)) => Value::UInt(u64::try_from(i).map_err(|e| e.to_string())?),
        (K::Int { unsigned: false }, MyValue::Bytes(b)) => Value::Int(text(b)?.parse().map_err(|e| format!("{e}"))?),
        (K::Int { unsigned: true }, MyValue::Bytes(b)) => Value::UInt(text(b)?.parse().map_err(|e| format!("{e}"))?),
        (K::Year, MyValue::Int(i)) => Value::Int(if i == 1900 { 0 } else { i }),
        (K::Year, MyValue::UInt(u)) => {
            Value::Int(if u == 1900 { 0 } else { i64::try_from(u).map_err(|e| e.to_string())? })
        }
        (K::Year, MyValue::Bytes(b)) => Value::Int(text(b)?.parse().map_err(|e| format!("{e}"))?),
        (K::Decimal, MyValue::Bytes(b)) => Value::Decimal(text(b)?),
        (K::Float, MyValue::Float(f)) => Value::Float(f64::from(f)),
        (K::Float | K::Double, MyValue::Double(d)) => Value::Float(d),
        (K::Text, MyValue::Bytes(b)) => Value::Text(text(b)?),
        (K::Enum(_) | K::Set(_), MyValue::Bytes(b)) => Value::Text(text(b)?),
        (K::Enum(labels), MyValue::Int(i)) => Value::Text(enum_label(labels, i)?),
        (K::Enum(labels), MyValue::UInt(u)) => {
            Value::Text(enum_label(labels, i64::try_from(u).map_err(|e| e.to_string())?)?)
        }
        (K::Set(labels), MyValue::Int(i)) => Value::Text(set_labels(labels, i as u64)),
        (K::Set(labels), MyValue::UInt(u)) => Value::Text(set_labels(labels, u)),
        (K::Json, MyValue::Bytes(b)) => Value::Json(text(b)?),
        (K::Bytes, MyValue::Bytes(b)) => Value::Bytes(b),
        (K::Bit, MyValue::Bytes(b)) => {
            if b.len() > 8 {
                return Err(format!("a BIT value of {} bytes does not fit 64 bits", b.len()));
            }
            Value::UInt(b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
        }
        (K::Bit, MyValue::UInt(u)) => Value::UInt(u),
        (K::Bit, MyValue::Int(i)) => Value::UInt(i as u64),
        (K::Date, MyValue::Date(year, month, day, ..)) => Value::Date { year, month, day },
        (K::DateTime, MyValue::Date(year, month, day, hour, minute, second, micros)) => {
            Value::DateTime { year, month, day, hour, minute, second, micros }
        }
        (K::Timestamp, MyValue::Date(y, mo, d, h, mi, s, us)) => {
            Value::Timestamp(timestamp_micros(y, mo, d, h, mi, s, us))
        }
        (K::Time, MyValue::Time(negative, days, h, minutes, seconds, micros)) => {
            Value::Time { negative, hours: days * 24 + u32::from(h), minutes, seconds, micros }
        }
        (K::Date | K::DateTime | K::Timestamp | K::Time, MyValue::Bytes(b)) => {
            let s = text(b)?;
            parse_temporal(kind, &s).ok_or_else(|| format!("{s:?} is not a valid {kind:?} value"))?
        }
        (_, v) => return Err(bad(&v)),
    })
}

fn text(b: Vec<u8>) -> Result<String, String> {
    String::from_utf8(b).map_err(|e| format!("text that is not UTF-8: {e}"))
}

fn enum_label(labels: &[String], index: i64) -> Result<String, String> {
    match index {
        0 => Ok(String::new()),
        i => usize::try_from(i - 1)
            .ok()
            .and_then(|i| labels.get(i))
            .cloned()
            .ok_or_else(|| format!("ENUM index {index} is out of range")),
    }
}

fn set_labels(labels: &[String], bits: u64) -> String {
    let picked: Vec<&str> =
        labels.iter().enumerate().filter(|(i, _)| *i < 64 && bits & (1 << i) != 0).map(|(_, l)| l.as_str()).collect();
    picked.join(",")
}

/// Microseconds since the epoch of a UTC date and time; the zero date is 0.
pub fn timestamp_micros(year: u16, month: u8, day: u8, hour: u8, minute: u8, second: u8, micros: u32) -> i64 {
    if year == 0 && month == 0 && day == 0 {
        return 0;
    }
    let days = days_from_civil(i64::from(year), i64::from(month), i64::from(day));
    let secs = days * 86_400 + i64::from(hour) * 3_600 + i64::from(minute) * 60 + i64::from(second);
    secs * 1_000_000 + i64::from(micros)
}

/// Parses the text forms of DATE, DATETIME, TIMESTAMP (UTC) and TIME.
fn parse_temporal(kind: &ColumnKind, s: &str) -> Option<Value> {
    fn frac(s: &str) -> Option<(&str, u32)> {
        match s.split_once('.') {
            None => Some((s, 0)),
            Some((a, f)) if !f.is_empty() && f.len() <= 6 && f.bytes().all(|b| b.is_ascii_digit()) => {
                Some((a, f.parse::<u32>().ok()? * 10u32.pow(6 - f.len() as u32)))
            }
            _ => None,
        }
    }
    fn date(s: &str) -> Option<(u16, u8, u8)> {
        let mut p = s.split('-');
        let r = (p.next()?.parse().ok()?, p.next()?.parse().ok()?, p.next()?.parse().ok()?);
        p.next().is_none().then_some(r)
    }
    fn clock(s: &str) -> Option<(u32, u8, u8, u32)> {
        let (s, micros) = frac(s)?;
        let mut p = s.split(':');
        let r = (p.next()?.parse().ok()?, p.next()?.parse().ok()?, p.next()?.parse().ok()?, micros);
        p.next().is_none().then_some(r)
    }
    match kind {
        ColumnKind::Date => date(s).map(|(year, month, day)| Value::Date { year, month, day }),
        ColumnKind::Time => {
            let (negative, rest) = match s.strip_prefix('-') {
                Some(r) => (true, r),
                None => (false, s),
            };
            let (hours, minutes, seconds, micros) = clock(rest)?;
            Some(Value::Time { negative, hours, minutes, seconds, micros })
        }
        ColumnKind::DateTime | ColumnKind::Timestamp => {
            let (d, t) = s.split_once(' ')?;
            let (year, month, day) = date(d)?;
            let (h, minute, second, micros) = clock(t)?;
            let hour = u8::try_from(h).ok()?;
            Some(if *kind == ColumnKind::Timestamp {
                Value::Timestamp(timestamp_micros(year, month, day, hour, minute, second, micros))
            } else {
                Value::DateTime { year, month, day, hour, minute, second, micros }
            })
        }
        _ => None,
    }
}

/// Decodes a binary-protocol row of `table` (its columns in table order). An error names
/// the table and column; its endpoint is left empty for the caller to fill ([`at`]).
pub fn decode_row(table: &TableSchema, kinds: &[ColumnKind], row: mysql_async::Row) -> Result<Row, ConnectorError> {
    let values = row.unwrap_raw();
    if values.len() != kinds.len() {
        return Err(ConnectorError::Setup {
            endpoint: String::new(),
            problem: format!("a row of {} has {} columns, expected {}", table.name, values.len(), kinds.len()),
            fix: "the table changed while ferry read it; run ferry again so it describes the table anew".into(),
        });
    }
    let mut out = Vec::with_capacity(values.len());
    for (i, (v, kind)) in values.into_iter().zip(kinds).enumerate() {
        let v = v.unwrap_or(MyValue::NULL);
        out.push(decode_value(kind, v).map_err(|why| ConnectorError::Setup {
            endpoint: String::new(),
            problem: format!(
                "column {}.{} holds a value ferry cannot read: {why}",
                table.name,
                table.columns.get(i).map(|c| c.name.as_str()).unwrap_or("?")
            ),
            fix: "report this as a bug with the column's type and value".into(),
        })?);
    }
    Ok(out)
}

/// Names the endpoint in an error that left it empty ([`decode_row`]).
pub fn at(ep: &MysqlEndpoint, mut e: ConnectorError) -> ConnectorError {
    if let ConnectorError::Setup { endpoint, .. } = &mut e
        && endpoint.is_empty()
    {
        endpoint.clone_from(&ep.name);
    }
    e
}

/// The statement parameter for a value: integers and doubles as such, everything else
/// as its exact text or bytes.
pub fn to_param(v: &Value) -> MyValue {
    match v {
        Value::Null => MyValue::NULL,
        Value::Int(i) => MyValue::Int(*i),
        Value::UInt(u) => MyValue::UInt(*u),
        Value::Float(f) => MyValue::Double(*f),
        Value::Decimal(s) | Value::Text(s) | Value::Json(s) => MyValue::Bytes(s.as_bytes().to_vec()),
        Value::Bytes(b) => MyValue::Bytes(b.clone()),
        Value::Date { year, month, day } => MyValue::Bytes(format!("{year:04}-{month:02}-{day:02}").into_bytes()),
        Value::Time { negative, hours, minutes, seconds, micros } => {
            let sign = if *negative { "-" } else { "" };
            let mut s = format!("{sign}{hours:02}:{minutes:02}:{seconds:02}");
            if *micros != 0 {
                s.push_str(&format!(".{micros:06}"));
            }
            MyValue::Bytes(s.into_bytes())
        }
        Value::DateTime { year, month, day, hour, minute, second, micros } => {
            let mut s = format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}");
            if *micros != 0 {
                s.push_str(&format!(".{micros:06}"));
            }
            MyValue::Bytes(s.into_bytes())
        }
        Value::Timestamp(us) => MyValue::Bytes(timestamp_text(*us).into_bytes()),
    }
}

/// Bytes a value takes in a statement, roughly (for sizing multi-row statements).
pub fn param_len(v: &Value) -> usize {
    match v {
        Value::Null => 1,
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => 9,
        Value::Decimal(s) | Value::Text(s) | Value::Json(s) => s.len() + 5,
        Value::Bytes(b) => b.len() + 5,
        _ => 32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_declared_types() {
        assert_eq!(ColumnKind::from_decl("bigint(20) unsigned"), Some(ColumnKind::Int { unsigned: true }));
        assert_eq!(ColumnKind::from_decl("int(11)"), Some(ColumnKind::Int { unsigned: false }));
        assert_eq!(ColumnKind::from_decl("decimal(65,30)"), Some(ColumnKind::Decimal));
        assert_eq!(ColumnKind::from_decl("varbinary(10)"), Some(ColumnKind::Bytes));
        assert_eq!(ColumnKind::from_decl("timestamp(6)"), Some(ColumnKind::Timestamp));
        assert_eq!(
            ColumnKind::from_decl(r"enum('a''b','c\\d','x,y')"),
            Some(ColumnKind::Enum(vec!["a'b".into(), r"c\d".into(), "x,y".into()]))
        );
        assert_eq!(ColumnKind::from_decl("set('p','q')"), Some(ColumnKind::Set(vec!["p".into(), "q".into()])));
        assert_eq!(ColumnKind::from_decl("point"), None);
        assert_eq!(ColumnKind::from_decl("geometry"), None);
    }

    #[test]
    fn timestamps_round_trip_through_text() {
        for us in [1i64, 1_000_000, 1_700_000_000_123_456, 2_147_483_647_999_999, 951_782_400_000_000] {
            let text = timestamp_text(us);
            assert_eq!(parse_temporal(&ColumnKind::Timestamp, &text), Some(Value::Timestamp(us)), "{text}");
        }
        assert_eq!(timestamp_text(0), "0000-00-00 00:00:00");
        assert_eq!(timestamp_text(1_000_000), "1970-01-01 00:00:01");
        assert_eq!(timestamp_micros(2000, 2, 29, 0, 0, 0, 0), 951_782_400_000_000);
    }

    #[test]
    fn binary_values_decode_as_documented() {
        let v = decode_value(&ColumnKind::Bit, MyValue::Bytes(vec![0xff; 8]));
        assert_eq!(v, Ok(Value::UInt(u64::MAX)));
        let v = decode_value(&ColumnKind::Time, MyValue::Time(true, 34, 22, 59, 59, 0));
        assert_eq!(v, Ok(Value::Time { negative: true, hours: 838, minutes: 59, seconds: 59, micros: 0 }));
        assert_eq!(decode_value(&ColumnKind::Timestamp, MyValue::Date(0, 0, 0, 0, 0, 0, 0)), Ok(Value::Timestamp(0)));
        assert_eq!(decode_value(&ColumnKind::Year, MyValue::Int(1900)), Ok(Value::Int(0)));
        assert_eq!(decode_value(&ColumnKind::Int { unsigned: true }, MyValue::Int(5)), Ok(Value::UInt(5)));
        let set = ColumnKind::Set(vec!["a".into(), "b".into(), "c".into()]);
        assert_eq!(decode_value(&set, MyValue::UInt(5)), Ok(Value::Text("a,c".into())));
        assert_eq!(
            to_param(&Value::Time { negative: true, hours: 838, minutes: 59, seconds: 59, micros: 500_000 }),
            MyValue::Bytes(b"-838:59:59.500000".to_vec())
        );
    }
}
