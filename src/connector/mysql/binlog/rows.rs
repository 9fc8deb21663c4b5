//! Rows events: their header, and their row images decoded into ferry's values and
//! [`Change`]s with full before and after images, by a loop over the table map's column
//! kinds straight from the event bytes (docs/mysql-types.md).

use mysql_common::binlog::consts::EventType;
use mysql_common::binlog::events::Event;

use super::table_map::{Charset, Kind, TableInfo, text_of};
use super::wire::{Cur, DecodeError};
use crate::model::{Change, Op, Prior, Row, Value};

/// A rows event (WRITE, UPDATE or DELETE, v1 or v2): its table, what it does, which
/// columns its images hold, and the images.
pub(super) struct RowsEvent<'a> {
    /// The table map id.
    pub(super) table_id: u64,
    /// Insert, update or delete.
    pub(super) op: Op,
    /// Columns of the table.
    pub(super) columns: usize,
    /// Which columns the images hold (updates: before, then after).
    present: [Option<&'a [u8]>; 2],
    /// The row images.
    pub(super) images: Cur<'a>,
}

impl<'a> RowsEvent<'a> {
    /// Reads the header of a rows event (types 23..=25 and 30..=32).
    pub(super) fn parse(ev: &'a Event) -> Result<Self, DecodeError> {
        let t = ev.header().event_type_raw();
        let et = match t {
            23 => EventType::WRITE_ROWS_EVENT_V1,
            24 => EventType::UPDATE_ROWS_EVENT_V1,
            25 => EventType::DELETE_ROWS_EVENT_V1,
            30 => EventType::WRITE_ROWS_EVENT,
            31 => EventType::UPDATE_ROWS_EVENT,
            _ => EventType::DELETE_ROWS_EVENT,
        };
        let op = match t {
            23 | 30 => Op::Insert,
            24 | 31 => Op::Update,
            _ => Op::Delete,
        };
        let ph = usize::from(ev.fde().get_event_type_header_length(et));
        let mut c = Cur::new(ev.data());
        let table_id = if ph == 6 { c.le(4)? } else { c.le(6)? };
        let _flags = c.le(2)?;
        if t >= 30 {
            let extra = c.le(2)? as usize;
            c.take(extra.saturating_sub(2))?;
        }
        let columns = c.lenenc()? as usize;
        let bitmap_len = columns.div_ceil(8);
        let first = c.take(bitmap_len)?;
        let second = if op == Op::Update { Some(c.take(bitmap_len)?) } else { None };
        Ok(RowsEvent { table_id, op, columns, present: [Some(first), second], images: Cur::new(c.rest()) })
    }

    /// True when every image holds every column (binlog_row_image=FULL).
    pub(super) fn full_images(&self) -> bool {
        self.present.iter().flatten().all(|bitmap| (0..self.columns).all(|i| bitmap[i / 8] & (1 << (i % 8)) != 0))
    }
}

/// Decodes the row images of a user table's rows event into changes.
pub(super) fn changes(info: &TableInfo, op: Op, rows: &mut Cur<'_>, out: &mut Vec<Change>) -> Result<(), DecodeError> {
    while !rows.is_empty() {
        let row = decode_row(info, rows)?;
        let key = info.schema.key_of(&row);
        let (before, after) = match op {
            Op::Insert => (None, Some(row)),
            Op::Delete => (Some(row), None),
            Op::Update => {
                let after = decode_row(info, rows)?;
                (Some(row), Some(after))
            }
        };
        out.push(Change {
            table: info.schema.clone(),
            op,
            key,
            before,
            after,
            prior: Prior::Unknown,
            seen: None,
            version: None,
        });
    }
    Ok(())
}

/// Decodes one row image (null bitmap, then the non-null values).
pub(super) fn decode_row(info: &TableInfo, c: &mut Cur<'_>) -> Result<Row, DecodeError> {
    let n = info.kinds.len();
    let nulls = c.take(n.div_ceil(8))?;
    let mut row = Vec::with_capacity(n);
    for (i, kind) in info.kinds.iter().enumerate() {
        if nulls[i / 8] & (1 << (i % 8)) != 0 {
            row.push(Value::Null);
            continue;
        }
        match decode_value(kind, c) {
            Ok(v) => row.push(v),
            Err(mut e) => {
                e.column = Some(i);
                return Err(e);
            }
        }
    }
    Ok(row)
}

/// Decodes one non-null value of a row image into ferry's [`Value`] (docs/mysql-types.md).
#[inline]
fn decode_value(kind: &Kind, c: &mut Cur<'_>) -> Result<Value, DecodeError> {
    Ok(match kind {
        Kind::Int(w, unsigned) => {
            let w = usize::from(*w);
            let raw = c.le(w)?;
            if *unsigned {
                Value::UInt(raw)
            } else {
                let shift = 64 - 8 * w as u32;
                Value::Int(((raw << shift) as i64) >> shift)
            }
        }
        Kind::Float => Value::Float(f64::from(f32::from_bits(c.le(4)? as u32))),
        Kind::Double => Value::Float(f64::from_bits(c.le(8)?)),
        Kind::Decimal(p, s) => Value::Decimal(decode_decimal(c, usize::from(*p), usize::from(*s))?),
        Kind::Year => {
            let y = c.le(1)?;
            Value::Int(if y == 0 { 0 } else { 1900 + y as i64 })
        }
        Kind::Date => {
            let v = c.le(3)?;
            Value::Date { year: (v >> 9) as u16, month: ((v >> 5) & 15) as u8, day: (v & 31) as u8 }
        }
        Kind::Time2(dec) => time_value(time2_packed(c, *dec)?),
        Kind::TimeOld => {
            let raw = c.le(3)?;
            let v = ((raw << 40) as i64) >> 40;
            let (negative, v) = (v < 0, v.unsigned_abs());
            Value::Time {
                negative,
                hours: (v / 10000) as u32,
                minutes: (v / 100 % 100) as u8,
                seconds: (v % 100) as u8,
                micros: 0,
            }
        }
        Kind::DateTime2(dec) => {
            let int = c.be(5)? as i64 - 0x80_0000_0000;
            let micros = frac_micros(c, *dec)?;
            let ymd = int >> 17;
            let hms = int & 0x1ffff;
            let ym = ymd >> 5;
            Value::DateTime {
                year: (ym / 13) as u16,
                month: (ym % 13) as u8,
                day: (ymd & 31) as u8,
                hour: (hms >> 12) as u8,
                minute: ((hms >> 6) & 63) as u8,
                second: (hms & 63) as u8,
                micros: micros.max(0) as u32,
            }
        }
        Kind::DateTimeOld => {
            let v = c.le(8)?;
            let (d, t) = (v / 1_000_000, v % 1_000_000);
            Value::DateTime {
                year: (d / 10000) as u16,
                month: (d / 100 % 100) as u8,
                day: (d % 100) as u8,
                hour: (t / 10000) as u8,
                minute: (t / 100 % 100) as u8,
                second: (t % 100) as u8,
                micros: 0,
            }
        }
        Kind::Timestamp2(dec) => {
            let secs = c.be(4)? as i64;
            let micros = frac_micros(c, *dec)?;
            Value::Timestamp(secs * 1_000_000 + micros)
        }
        Kind::TimestampOld => Value::Timestamp(c.le(4)? as i64 * 1_000_000),
        Kind::Bit(bytes) => Value::UInt(c.be(usize::from(*bytes))?),
        Kind::Enum(w, labels) => {
            let i = c.le(usize::from(*w))? as usize;
            match i {
                0 => Value::Text(String::new()),
                _ => match labels.get(i - 1) {
                    Some(l) => Value::Text(l.clone()),
                    None => return Err(bad(format!("ENUM index {i} beyond its {} labels", labels.len()))),
                },
            }
        }
        Kind::Set(w, labels) => {
            let bits = c.le(usize::from(*w))?;
            let mut s = String::new();
            for (i, l) in labels.iter().enumerate().take(64) {
                if bits & (1 << i) != 0 {
                    if !s.is_empty() {
                        s.push(',');
                    }
                    s.push_str(l);
                }
            }
            Value::Text(s)
        }
        Kind::Char(lb, cs, declared) => {
            let len = c.le(usize::from(*lb))? as usize;
            let bytes = c.take(len)?;
            if *cs == Charset::Binary && len < *declared {
                // BINARY(n) reads back padded with zero bytes.
                let mut v = Vec::with_capacity(*declared);
                v.extend_from_slice(bytes);
                v.resize(*declared, 0);
                Value::Bytes(v)
            } else {
                string_value(*cs, bytes, false)?
            }
        }
        Kind::VarChar(lb, cs) => {
            let len = c.le(usize::from(*lb))? as usize;
            string_value(*cs, c.take(len)?, false)?
        }
        Kind::Blob(lb, cs, json) => {
            let len = c.le(usize::from(*lb))? as usize;
            string_value(*cs, c.take(len)?, *json)?
        }
    })
}

fn bad(message: String) -> DecodeError {
    DecodeError { message, column: None, invalid_text: false }
}

#[inline]
fn string_value(cs: Charset, bytes: &[u8], json: bool) -> Result<Value, DecodeError> {
    if cs == Charset::Binary {
        return Ok(Value::Bytes(bytes.to_vec()));
    }
    let text = text_of(cs, bytes).map_err(|message| DecodeError { message, column: None, invalid_text: true })?;
    Ok(if json { Value::Json(text) } else { Value::Text(text) })
}

/// Fractional seconds of DATETIME2/TIMESTAMP2 in microseconds (big-endian, signed).
#[inline]
fn frac_micros(c: &mut Cur<'_>, dec: u8) -> Result<i64, DecodeError> {
    Ok(match dec {
        1 | 2 => i64::from(c.take(1)?[0] as i8) * 10_000,
        3 | 4 => {
            let b = c.take(2)?;
            i64::from(i16::from_be_bytes([b[0], b[1]])) * 100
        }
        5 | 6 => {
            let v = c.be(3)? as i64;
            (v << 40) >> 40
        }
        _ => 0,
    })
}

/// TIME2 as MySQL's packed integer: (hms << 24) + microseconds, negative for negative times.
#[inline]
fn time2_packed(c: &mut Cur<'_>, dec: u8) -> Result<i64, DecodeError> {
    const INT_OFS: i64 = 0x80_0000;
    Ok(match dec {
        1 | 2 => {
            let mut int = c.be(3)? as i64 - INT_OFS;
            let mut frac = i64::from(c.take(1)?[0]);
            if int < 0 && frac > 0 {
                int += 1;
                frac -= 0x100;
            }
            (int << 24) + frac * 10_000
        }
        3 | 4 => {
            let mut int = c.be(3)? as i64 - INT_OFS;
            let mut frac = c.be(2)? as i64;
            if int < 0 && frac > 0 {
                int += 1;
                frac -= 0x10000;
            }
            (int << 24) + frac * 100
        }
        5 | 6 => c.be(6)? as i64 - 0x8000_0000_0000,
        _ => (c.be(3)? as i64 - INT_OFS) << 24,
    })
}

fn time_value(packed: i64) -> Value {
    let negative = packed < 0;
    let v = packed.unsigned_abs();
    let hms = v >> 24;
    Value::Time {
        negative,
        hours: ((hms >> 12) & 0x3ff) as u32,
        minutes: ((hms >> 6) & 63) as u8,
        seconds: (hms & 63) as u8,
        micros: (v & 0xff_ffff) as u32,
    }
}

/// DECIMAL(p,s) from MySQL's binary format, as the server prints it (scale kept).
fn decode_decimal(c: &mut Cur<'_>, precision: usize, scale: usize) -> Result<String, DecodeError> {
    const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
    if scale > precision || precision > 65 {
        return Err(bad(format!("DECIMAL({precision},{scale}) out of range")));
    }
    let intg = precision - scale;
    let (intg0, intg0x) = (intg / 9, intg % 9);
    let (frac0, frac0x) = (scale / 9, scale % 9);
    let size = intg0 * 4 + DIG2BYTES[intg0x] + frac0 * 4 + DIG2BYTES[frac0x];
    let raw = c.take(size)?;
    if raw.is_empty() {
        return Ok("0".into());
    }
    let mut buf = [0u8; 32];
    buf[..size].copy_from_slice(raw);
    let negative = buf[0] & 0x80 == 0;
    buf[0] ^= 0x80;
    if negative {
        for b in &mut buf[..size] {
            *b = !*b;
        }
    }
    // All digits in order (at most 65 plus group padding), then trimmed and signed.
    let mut digits = [0u8; 96];
    let mut n = 0usize;
    let mut cur = Cur::new(&buf[..size]);
    let mut push = |v: u64, width: usize| {
        let mut x = v;
        for k in (0..width).rev() {
            digits[n + k] = b'0' + (x % 10) as u8;
            x /= 10;
        }
        n += width;
    };
    if intg0x > 0 {
        push(cur.be(DIG2BYTES[intg0x])?, intg0x);
    }
    for _ in 0..intg0 {
        push(cur.be(4)?, 9);
    }
    let int_end = intg;
    for _ in 0..frac0 {
        push(cur.be(4)?, 9);
    }
    if frac0x > 0 {
        push(cur.be(DIG2BYTES[frac0x])?, frac0x);
    }
    let first = digits[..int_end].iter().position(|&d| d != b'0').unwrap_or(int_end);
    let zero = first == int_end && digits[int_end..int_end + scale].iter().all(|&d| d == b'0');
    let mut out = String::with_capacity(precision + 3);
    if negative && !zero {
        out.push('-');
    }
    if first == int_end {
        out.push('0');
    }
    out.extend(digits[first..int_end].iter().map(|&d| char::from(d)));
    if scale > 0 {
        out.push('.');
        out.extend(digits[int_end..int_end + scale].iter().map(|&d| char::from(d)));
    }
    Ok(out)
}

/// Fuzzing entry (fuzz/fuzz_targets/binlog_rows.rs and the corpus replay test): the
/// first byte picks up to eight column kinds from a fixed list, the rest is decoded as
/// row images until they end or fail. Returns the rows decoded; it must never panic.
pub fn fuzz_row_images(data: &[u8]) -> usize {
    use std::sync::Arc;

    use super::table_map::{Charset, Kind, TableInfo};
    use crate::model::{Column, TableName, TableSchema};
    let labels: Arc<[String]> = Arc::from(vec!["a".to_string(), "b".to_string()]);
    let all = [
        Kind::Int(8, true),
        Kind::Int(3, false),
        Kind::Float,
        Kind::Double,
        Kind::Decimal(20, 6),
        Kind::Year,
        Kind::Date,
        Kind::Time2(6),
        Kind::TimeOld,
        Kind::DateTime2(6),
        Kind::DateTimeOld,
        Kind::Timestamp2(3),
        Kind::TimestampOld,
        Kind::Bit(9),
        Kind::Enum(1, labels.clone()),
        Kind::Set(1, labels),
        Kind::Char(1, Charset::Utf8, 40),
        Kind::Char(1, Charset::Binary, 4),
        Kind::VarChar(2, Charset::Latin1),
        Kind::VarChar(1, Charset::Utf8),
        Kind::Blob(2, Charset::Binary, false),
        Kind::Blob(4, Charset::Utf8, true),
    ];
    let Some((&pick, rest)) = data.split_first() else { return 0 };
    let kinds: Vec<Kind> = (0..8)
        .map(|i| all[(usize::from(pick).wrapping_mul(i + 7) + i * 3) % all.len()].clone())
        .take(1 + usize::from(pick % 8))
        .collect();
    let columns =
        (0..kinds.len()).map(|i| Column { name: format!("c{i}"), decl_type: String::new(), nullable: true }).collect();
    let schema = TableSchema {
        name: TableName { schema: Some("fuzz".into()), name: "t".into() },
        columns,
        primary_key: vec![0],
        unique_keys: Vec::new(),
        foreign_keys: Vec::new(),
        create_sql: None,
    };
    let info = TableInfo { schema: Arc::new(schema), kinds, signal: false, version_of: None, marker: false };
    let mut out = Vec::new();
    let _ = changes(&info, Op::Update, &mut Cur::new(rest), &mut out);
    out.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(bytes: &[u8], p: usize, s: usize) -> String {
        decode_decimal(&mut Cur::new(bytes), p, s).expect("decimal")
    }

    #[test]
    fn decimals_decode_with_their_scale() {
        // 1234567890.1234 as DECIMAL(14,4), from MySQL's decimal2bin documentation.
        assert_eq!(dec(&[0x81, 0x0D, 0xFB, 0x38, 0xD2, 0x04, 0xD2], 14, 4), "1234567890.1234");
        // -1234567890.1234
        assert_eq!(dec(&[0x7E, 0xF2, 0x04, 0xC7, 0x2D, 0xFB, 0x2D], 14, 4), "-1234567890.1234");
        // 0.50 as DECIMAL(5,2): int part 3 digits (2 bytes), frac 2 digits (1 byte).
        assert_eq!(dec(&[0x80, 0x00, 0x32], 5, 2), "0.50");
        assert_eq!(dec(&[0x80, 0x00, 0x00], 5, 2), "0.00");
    }

    #[test]
    fn time2_handles_negative_fractions() {
        // -00:00:00.5 with TIME(1): int part -1 + offset, fraction byte 0xCE (-50).
        let bytes = [0x7f, 0xff, 0xff, 0xce];
        let v = time_value(time2_packed(&mut Cur::new(&bytes), 1).expect("time"));
        assert_eq!(v, Value::Time { negative: true, hours: 0, minutes: 0, seconds: 0, micros: 500_000 });
    }
}
