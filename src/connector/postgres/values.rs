//! Values in PostgreSQL's text form, both ways. ferry reads rows as text (`col::text`,
//! and pgoutput's text tuples) in a UTC session with exact floats, and writes them back
//! as text parameters cast to the column's type, so nothing is lost on the way: numeric
//! stays its decimal text, timestamptz becomes µs since the epoch, bytea its bytes.

use super::arrays::{Elem, from_json, to_json};
use super::types::Types;
use crate::connector::typemap::{Canonical, TypeMap};
use crate::model::{Column, Value, civil_from_days, days_from_civil};

/// How a column's text decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// boolean: `t`/`f` -> 1/0.
    Bool,
    /// Integers.
    Int,
    /// real/double precision.
    Float,
    /// numeric.
    Decimal,
    /// bytea (`\x…`).
    Bytes,
    /// timestamptz -> µs UTC.
    Timestamp,
    /// timestamp without zone.
    DateTime,
    /// date.
    Date,
    /// time without zone.
    Time,
    /// json/jsonb.
    Json,
    /// An array: carried as a JSON array (`arrays.rs`).
    Array(Elem),
    /// Everything else: kept as its text (uuid, enums, intervals, …).
    Text,
}

impl Kind {
    /// The kind of a declared type.
    pub fn of_decl(decl: &str) -> Kind {
        if let Some(base) = decl.trim().strip_suffix("[]") {
            return Kind::Array(match Kind::of_decl(base) {
                Kind::Int | Kind::Float | Kind::Decimal => Elem::Number,
                Kind::Bool => Elem::Bool,
                Kind::Json => Elem::Json,
                _ => Elem::Text,
            });
        }
        match Types.canonical(decl) {
            Canonical::Bool => Kind::Bool,
            Canonical::Int { .. } => Kind::Int,
            Canonical::Float => Kind::Float,
            Canonical::Decimal(_) => Kind::Decimal,
            Canonical::Bytes => Kind::Bytes,
            Canonical::Timestamp => Kind::Timestamp,
            Canonical::DateTime => Kind::DateTime,
            Canonical::Date => Kind::Date,
            Canonical::Time => Kind::Time,
            Canonical::Json => Kind::Json,
            Canonical::Text | Canonical::Uuid | Canonical::Enum(_) => Kind::Text,
        }
    }

    /// The kinds of a table's columns.
    pub fn of_columns(cols: &[Column]) -> Vec<Kind> {
        cols.iter().map(|c| Kind::of_decl(&c.decl_type)).collect()
    }
}

/// A value from its PostgreSQL text; `Err` names what could not be read.
pub fn decode(kind: Kind, text: &str) -> Result<Value, String> {
    let bad = || format!("cannot read {text:?} as {kind:?}");
    Ok(match kind {
        Kind::Bool => match text {
            "t" | "true" => Value::Int(1),
            "f" | "false" => Value::Int(0),
            _ => return Err(bad()),
        },
        Kind::Int => match text.parse::<i64>() {
            Ok(v) => Value::Int(v),
            // numeric(20,0) from BIGINT UNSIGNED is a Decimal; a plain int never overflows.
            Err(_) => text.parse::<u64>().map(Value::UInt).map_err(|_| bad())?,
        },
        Kind::Float => Value::Float(match text {
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            _ => text.parse::<f64>().map_err(|_| bad())?,
        }),
        Kind::Decimal => Value::Decimal(text.to_string()),
        Kind::Bytes => {
            let hex = text.strip_prefix("\\x").ok_or_else(bad)?;
            Value::Bytes(hex_decode(hex).ok_or_else(bad)?)
        }
        Kind::Timestamp => Value::Timestamp(parse_timestamptz(text).ok_or_else(bad)?),
        Kind::DateTime => {
            let (d, t) = text.split_once(' ').ok_or_else(bad)?;
            let (year, month, day) = parse_date(d).ok_or_else(bad)?;
            let (hour, minute, second, micros) = parse_time(t).ok_or_else(bad)?;
            Value::DateTime { year, month, day, hour: hour as u8, minute, second, micros }
        }
        Kind::Date => {
            let (year, month, day) = parse_date(text).ok_or_else(bad)?;
            Value::Date { year, month, day }
        }
        Kind::Time => {
            let (hours, minutes, seconds, micros) = parse_time(text).ok_or_else(bad)?;
            Value::Time { negative: false, hours, minutes, seconds, micros }
        }
        Kind::Json => Value::Json(text.to_string()),
        Kind::Array(elem) => Value::Json(to_json(text, elem).ok_or_else(bad)?),
        Kind::Text => Value::Text(text.to_string()),
    })
}

/// A value's PostgreSQL text, for a parameter cast to the column's type; `None` is NULL.
pub fn encode(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) if f.is_nan() => "NaN".into(),
        Value::Float(f) if f.is_infinite() => (if *f > 0.0 { "Infinity" } else { "-Infinity" }).into(),
        // Debug prints the shortest text that reads back to the same bits (and -0.0).
        Value::Float(f) => format!("{f:?}"),
        Value::Decimal(t) | Value::Text(t) | Value::Json(t) => t.clone(),
        Value::Bytes(b) => {
            let mut s = String::with_capacity(2 + b.len() * 2);
            s.push_str("\\x");
            for x in b {
                s.push_str(&format!("{x:02x}"));
            }
            s
        }
        Value::Date { year, month, day } => format!("{year:04}-{month:02}-{day:02}"),
        Value::Time { negative, hours, minutes, seconds, micros } => {
            let sign = if *negative { "-" } else { "" };
            format!("{sign}{hours:02}:{minutes:02}:{seconds:02}.{micros:06}")
        }
        Value::DateTime { year, month, day, hour, minute, second, micros } => {
            format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}.{micros:06}")
        }
        Value::Timestamp(us) => timestamptz_text(*us),
    })
}

/// A value's PostgreSQL text for a column of type `decl`: a JSON array (how ferry
/// carries arrays) becomes an array literal for an array column.
pub fn encode_as(v: &Value, decl: &str) -> Option<String> {
    match v {
        Value::Json(t) | Value::Text(t) if decl.trim_end().ends_with("[]") => {
            Some(from_json(t).unwrap_or_else(|| t.clone()))
        }
        _ => encode(v),
    }
}

/// `YYYY-MM-DD HH:MM:SS.ffffff+00` of µs since the epoch.
pub fn timestamptz_text(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{micros:06}+00", sod / 3_600, sod % 3_600 / 60, sod % 60)
}

fn hex_decode(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

fn parse_date(s: &str) -> Option<(u16, u8, u8)> {
    let mut p = s.splitn(3, '-');
    let y = p.next()?.parse().ok()?;
    let m = p.next()?.parse().ok()?;
    let d = p.next()?.parse().ok()?;
    Some((y, m, d))
}

/// `HH:MM:SS[.ffffff]` -> (hours, minutes, seconds, µs).
fn parse_time(s: &str) -> Option<(u32, u8, u8, u32)> {
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut p = hms.splitn(3, ':');
    let h = p.next()?.parse().ok()?;
    let m = p.next()?.parse().ok()?;
    let sec = p.next()?.parse().ok()?;
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros = if frac.is_empty() { 0 } else { format!("{frac:0<6}").parse().ok()? };
    Some((h, m, sec, micros))
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]+00[:MM]` (a UTC session prints `+00`) -> µs.
fn parse_timestamptz(s: &str) -> Option<i64> {
    let (d, rest) = s.split_once(' ')?;
    let split = rest.rfind(['+', '-'])?;
    let (t, zone) = rest.split_at(split);
    let (y, mo, da) = parse_date(d)?;
    let (h, mi, se, us) = parse_time(t)?;
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let mut z = zone[1..].split(':');
    let zh: i64 = z.next()?.parse().ok()?;
    let zm: i64 = z.next().map_or(Some(0), |m| m.parse().ok())?;
    let days = days_from_civil(i64::from(y), i64::from(mo), i64::from(da));
    let secs =
        days * 86_400 + i64::from(h) * 3_600 + i64::from(mi) * 60 + i64::from(se) - sign * (zh * 3_600 + zm * 60);
    Some(secs * 1_000_000 + i64::from(us))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip_exactly() {
        let ts = decode(Kind::Timestamp, "2024-02-29 23:59:58.000123+00").expect("ts");
        assert_eq!(encode(&ts).as_deref(), Some("2024-02-29 23:59:58.000123+00"));
        assert_eq!(decode(Kind::Timestamp, "1969-12-31 23:00:00+00").expect("ts"), Value::Timestamp(-3_600_000_000));
        assert_eq!(
            decode(Kind::Timestamp, "2000-01-01 02:00:00+02").expect("ts"),
            decode(Kind::Timestamp, "2000-01-01 00:00:00+00").expect("ts")
        );
        assert_eq!(decode(Kind::Bytes, "\\xde00ff").expect("b"), Value::Bytes(vec![0xde, 0, 0xff]));
        assert_eq!(encode(&Value::Bytes(vec![0xde, 0, 0xff])).as_deref(), Some("\\xde00ff"));
        assert_eq!(decode(Kind::Bool, "t").expect("b"), Value::Int(1));
        let f = decode(Kind::Float, "-0").expect("f");
        assert_eq!(encode(&f).as_deref(), Some("-0.0"));
        assert_eq!(encode(&Value::Float(0.1)).as_deref(), Some("0.1"));
        assert_eq!(
            decode(Kind::DateTime, "2020-01-02 03:04:05.5").expect("dt"),
            Value::DateTime { year: 2020, month: 1, day: 2, hour: 3, minute: 4, second: 5, micros: 500_000 }
        );
        assert!(decode(Kind::Int, "x").is_err());
    }
}
