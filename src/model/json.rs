//! The JSON form of values and rows that the JSON-speaking sinks share (Kafka's
//! envelope, search documents): integers as numbers, decimals as exact strings, bytes as
//! base64, times as ISO-8601 with microseconds, instants in UTC.

use base64::Engine as _;
use serde_json::{Map, Value as Json, json};

use super::{Row, TableSchema, Value, timestamp_text};

/// A value as JSON: integers as numbers, decimals as strings, bytes as base64, times as
/// ISO-8601 with microseconds, JSON documents as their text.
pub fn value_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Int(i) => json!(i),
        Value::UInt(u) => json!(u),
        Value::Float(f) if f.is_finite() => json!(f),
        Value::Float(f) if f.is_nan() => json!("NaN"),
        Value::Float(f) => json!(if *f > 0.0 { "Infinity" } else { "-Infinity" }),
        Value::Decimal(s) | Value::Text(s) | Value::Json(s) => json!(s),
        Value::Bytes(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::Date { year, month, day } => json!(format!("{year:04}-{month:02}-{day:02}")),
        Value::Time { negative, hours, minutes, seconds, micros } => {
            let sign = if *negative { "-" } else { "" };
            json!(format!("{sign}{hours:02}:{minutes:02}:{seconds:02}.{micros:06}"))
        }
        Value::DateTime { year, month, day, hour, minute, second, micros } => {
            json!(format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{micros:06}"))
        }
        Value::Timestamp(us) => {
            let text = timestamp_text(*us).replacen(' ', "T", 1);
            let text = if text.contains('.') { text } else { format!("{text}.000000") };
            json!(format!("{text}Z"))
        }
    }
}

/// A row as a JSON object of its columns.
pub fn row_json(table: &TableSchema, row: &Row) -> Json {
    let mut m = Map::new();
    for (c, v) in table.columns.iter().zip(row) {
        m.insert(c.name.clone(), value_json(v));
    }
    Json::Object(m)
}
