//! The canonical form verify compares: every value turned into bytes that are equal
//! exactly when the two values are equal *by value*, whatever engine or [`Value`]
//! variant carried them (docs/verify.md lists the mapping). A column's class, derived
//! from the declared types on both sides, says which values are numbers or times.

use crate::model::timestamp_text;
use crate::model::{Column, Value};

/// How a column's values are compared, from the declared types of both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnClass {
    /// Integers, decimals, floats, BIT, YEAR, booleans: compared as numbers.
    Numeric,
    /// DATE, TIME, DATETIME, TIMESTAMP: compared as normalised `YYYY-MM-DD HH:MM:SS.ffffff` text.
    Temporal,
    /// BLOB, BINARY: text and bytes compared as bytes.
    Binary,
    /// Everything else (text, JSON, untyped): strict per value kind.
    Other,
}

impl ColumnClass {
    /// The class of a column pair: numeric wins over temporal over binary.
    pub fn of(a: &Column, b: &Column) -> ColumnClass {
        let (ca, cb) = (class_of_decl(&a.decl_type), class_of_decl(&b.decl_type));
        for c in [ColumnClass::Numeric, ColumnClass::Temporal, ColumnClass::Binary] {
            if ca == c || cb == c {
                return c;
            }
        }
        ColumnClass::Other
    }
}

/// The class one declared type suggests (SQLite affinity rules, MySQL type names).
fn class_of_decl(decl: &str) -> ColumnClass {
    let d = decl.to_ascii_lowercase();
    let base = d.split(['(', ' ']).next().unwrap_or("");
    if d.contains("int")
        || matches!(base, "decimal" | "numeric" | "dec" | "fixed" | "real" | "double" | "float" | "bit" | "year")
        || d.starts_with("bool")
    {
        return ColumnClass::Numeric;
    }
    if matches!(base, "date" | "time" | "datetime" | "timestamp") {
        return ColumnClass::Temporal;
    }
    if d.contains("blob") || matches!(base, "binary" | "varbinary") {
        return ColumnClass::Binary;
    }
    ColumnClass::Other
}

/// Appends the canonical bytes of one value of a column of `class` to `out`.
/// Each encoding starts with a tag byte and is length-prefixed, so concatenations of
/// different column lists never collide.
pub fn encode(class: ColumnClass, v: &Value, out: &mut Vec<u8>) {
    match canonical(class, v) {
        Canon::Null => out.push(b'N'),
        Canon::Number(s) => tagged(out, b'#', s.as_bytes()),
        Canon::Float(bits) => tagged(out, b'F', &bits.to_le_bytes()),
        Canon::Time(s) => tagged(out, b'@', s.as_bytes()),
        Canon::Text(s) => tagged(out, b'S', s.as_bytes()),
        Canon::Bytes(b) => tagged(out, b'B', b),
    }
}

fn tagged(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
}

enum Canon<'a> {
    Null,
    Number(String),
    Float(u64),
    Time(String),
    Text(&'a str),
    Bytes(&'a [u8]),
}

fn canonical(class: ColumnClass, v: &Value) -> Canon<'_> {
    match v {
        Value::Null => Canon::Null,
        Value::Int(i) => Canon::Number(i.to_string()),
        Value::UInt(u) => Canon::Number(u.to_string()),
        Value::Decimal(d) => normalize_number(d).map(Canon::Number).unwrap_or(Canon::Text(d)),
        Value::Float(f) => float(*f),
        Value::Text(s) => match class {
            ColumnClass::Numeric => normalize_number(s).map(Canon::Number).unwrap_or(Canon::Text(s)),
            ColumnClass::Temporal => normalize_time(s).map(Canon::Time).unwrap_or(Canon::Text(s)),
            ColumnClass::Binary => Canon::Bytes(s.as_bytes()),
            ColumnClass::Other => Canon::Text(s),
        },
        Value::Json(s) => Canon::Text(s),
        Value::Bytes(b) => match (class, std::str::from_utf8(b)) {
            (ColumnClass::Other, Ok(s)) => Canon::Text(s),
            _ => Canon::Bytes(b),
        },
        Value::Date { year, month, day } => Canon::Time(format!("{year:04}-{month:02}-{day:02}")),
        Value::Time { .. } => Canon::Time(v.to_string()),
        Value::DateTime { .. } => Canon::Time(v.to_string()),
        Value::Timestamp(us) => {
            let t = timestamp_text(*us);
            Canon::Time(normalize_time(&t).unwrap_or(t))
        }
    }
}

/// A finite float compares as the number its shortest round-trip decimal spells
/// (`1.5` equals DECIMAL `1.50`; 0.1+0.2 is 0.30000000000000004, not 0.3);
/// infinities and NaN compare by their bits.
fn float<'a>(f: f64) -> Canon<'a> {
    if f.is_finite() {
        let text = format!("{f:?}");
        if let Some(n) = normalize_number(&text) {
            return Canon::Number(n);
        }
    }
    Canon::Float(f.to_bits())
}

/// A decimal number's normal form: no `+`, no leading zeros, no trailing fraction
/// zeros, no `-0`; exponents expanded. `None` when `s` is not a plain number.
pub fn normalize_number(s: &str) -> Option<String> {
    let s = s.trim();
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], body[i + 1..].parse::<i32>().ok()?),
        None => (body, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int.is_empty() && frac.is_empty()) || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    if exp.unsigned_abs() > 400 {
        return None;
    }
    let digits: String = format!("{int}{frac}");
    // The decimal point sits after `point` digits of `digits`.
    let point = int.len() as i64 + i64::from(exp);
    let (mut int_part, mut frac_part) = if point <= 0 {
        (String::new(), format!("{}{digits}", "0".repeat(point.unsigned_abs() as usize)))
    } else if point as usize >= digits.len() {
        (format!("{digits}{}", "0".repeat(point as usize - digits.len())), String::new())
    } else {
        (digits[..point as usize].to_string(), digits[point as usize..].to_string())
    };
    let trimmed = int_part.trim_start_matches('0').len();
    int_part.drain(..int_part.len() - trimmed);
    while frac_part.ends_with('0') {
        frac_part.pop();
    }
    if int_part.is_empty() {
        int_part.push('0');
    }
    let zero = int_part == "0" && frac_part.is_empty();
    let mut out = String::with_capacity(int_part.len() + frac_part.len() + 2);
    if neg && !zero {
        out.push('-');
    }
    out.push_str(&int_part);
    if !frac_part.is_empty() {
        out.push('.');
        out.push_str(&frac_part);
    }
    Some(out)
}

/// A date/time text's normal form: `YYYY-MM-DD`, `[-]HH:MM:SS.ffffff` or
/// `YYYY-MM-DD HH:MM:SS.ffffff` (a `T` separator and a UTC `Z`/`+00:00` suffix are
/// accepted). `None` when `s` is not one of those.
pub fn normalize_time(s: &str) -> Option<String> {
    let s = s.trim();
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00")).unwrap_or(s);
    fn date(d: &str) -> Option<String> {
        let mut p = d.split('-');
        let (y, m, dd) = (p.next()?, p.next()?, p.next()?);
        if p.next().is_some() || y.len() != 4 {
            return None;
        }
        Some(format!("{:04}-{:02}-{:02}", y.parse::<u16>().ok()?, m.parse::<u8>().ok()?, dd.parse::<u8>().ok()?))
    }
    fn clock(t: &str) -> Option<String> {
        let (neg, t) = match t.strip_prefix('-') {
            Some(r) => ("-", r),
            None => ("", t),
        };
        let (hms, frac) = t.split_once('.').unwrap_or((t, ""));
        if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut p = hms.split(':');
        let (h, m, sec) =
            (p.next()?.parse::<u32>().ok()?, p.next()?.parse::<u8>().ok()?, p.next()?.parse::<u8>().ok()?);
        if p.next().is_some() {
            return None;
        }
        let micros = if frac.is_empty() { 0 } else { frac.parse::<u32>().ok()? * 10u32.pow(6 - frac.len() as u32) };
        Some(format!("{neg}{h:02}:{m:02}:{sec:02}.{micros:06}"))
    }
    match s.split_once([' ', 'T']) {
        Some((d, t)) => Some(format!("{} {}", date(d)?, clock(t)?)),
        None if s.contains(':') => clock(s),
        None => date(s),
    }
}

/// Canonical bytes of a row's values (one class per column), appended to `out`.
pub fn encode_row(classes: &[ColumnClass], row: &[Value], out: &mut Vec<u8>) {
    for (class, v) in classes.iter().zip(row) {
        encode(*class, v, out);
    }
}

pub use crate::connector::verifier::hash_bytes;

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(class: ColumnClass, v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode(class, v, &mut out);
        out
    }

    #[test]
    fn numbers_compare_by_value_across_variants() {
        let n = ColumnClass::Numeric;
        assert_eq!(canon(n, &Value::Int(5)), canon(n, &Value::Decimal("5.000".into())));
        assert_eq!(canon(n, &Value::UInt(5)), canon(n, &Value::Text("5".into())));
        assert_eq!(canon(n, &Value::Float(1.5)), canon(n, &Value::Decimal("1.50".into())));
        assert_eq!(canon(n, &Value::Decimal("-0.00".into())), canon(n, &Value::Int(0)));
        assert_ne!(canon(n, &Value::Decimal("10.0001".into())), canon(n, &Value::Decimal("10.0000".into())));
        assert_ne!(canon(n, &Value::Text(String::new())), canon(n, &Value::Null));
        assert_eq!(normalize_number("1.25e2").as_deref(), Some("125"));
        assert_eq!(normalize_number("-0012.3400").as_deref(), Some("-12.34"));
        assert_eq!(normalize_number("1e-3").as_deref(), Some("0.001"));
        assert_eq!(normalize_number("abc"), None);
        assert_eq!(normalize_number("."), None);
    }

    #[test]
    fn times_compare_by_value_and_keep_microseconds() {
        let t = ColumnClass::Temporal;
        let dt = Value::DateTime { year: 2024, month: 1, day: 2, hour: 3, minute: 4, second: 5, micros: 0 };
        assert_eq!(canon(t, &dt), canon(t, &Value::Text("2024-01-02 03:04:05".into())));
        assert_eq!(canon(t, &dt), canon(t, &Value::Text("2024-01-02T03:04:05Z".into())));
        let us = Value::DateTime { year: 2024, month: 1, day: 2, hour: 3, minute: 4, second: 5, micros: 1 };
        assert_ne!(canon(t, &dt), canon(t, &us));
        assert_eq!(canon(t, &Value::Timestamp(1_000_000)), canon(t, &Value::Text("1970-01-01 00:00:01".into())));
        assert_eq!(
            canon(t, &Value::Date { year: 2024, month: 1, day: 2 }),
            canon(t, &Value::Text("2024-01-02".into()))
        );
    }

    #[test]
    fn text_keeps_trailing_spaces_and_null_differs_from_empty() {
        let o = ColumnClass::Other;
        assert_ne!(canon(o, &Value::Text("a".into())), canon(o, &Value::Text("a ".into())));
        assert_ne!(canon(o, &Value::Text(String::new())), canon(o, &Value::Null));
        assert_eq!(canon(o, &Value::Json("{}".into())), canon(o, &Value::Text("{}".into())));
        let b = ColumnClass::Binary;
        assert_eq!(canon(b, &Value::Text("ab".into())), canon(b, &Value::Bytes(b"ab".to_vec())));
        assert_ne!(canon(b, &Value::Bytes(vec![0, 1])), canon(b, &Value::Bytes(vec![0, 2])));
    }

    #[test]
    fn floats_compare_by_their_shortest_decimal() {
        let n = ColumnClass::Numeric;
        assert_ne!(canon(n, &Value::Float(0.1 + 0.2)), canon(n, &Value::Float(0.3)));
        assert_eq!(canon(n, &Value::Float(f64::NAN)), canon(n, &Value::Float(f64::NAN)));
        assert_ne!(canon(n, &Value::Float(f64::INFINITY)), canon(n, &Value::Float(f64::NEG_INFINITY)));
    }
}
