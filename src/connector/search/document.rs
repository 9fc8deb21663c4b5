//! A row as a document and back: the id is the primary key's canonical text (one key
//! column: its value as text; several: a JSON array of them), each column a field of
//! the same name, values encoded as docs/search.md lists (decimals as exact strings,
//! bytes as base64, instants as ISO-8601 UTC with microseconds, JSON columns as nested
//! JSON).

use base64::Engine as _;
use serde_json::{Map, Value as Json};

use crate::connector::typemap::Canonical;
use crate::model::json::value_json;
use crate::model::{Row, TableSchema, Value, days_from_civil};

/// A value as JSON in a document: as every JSON sink writes it
/// ([`crate::model::json::value_json`]), except a JSON column, which is nested JSON.
pub fn encode(v: &Value) -> Json {
    match v {
        Value::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| Json::String(s.clone())),
        other => value_json(other),
    }
}

/// A row as the document's source: every column by name.
pub fn source(table: &TableSchema, row: &Row) -> Json {
    let mut m = Map::new();
    for (c, v) in table.columns.iter().zip(row) {
        m.insert(c.name.clone(), encode(v));
    }
    Json::Object(m)
}

/// The document id of a key: its canonical text.
pub fn id_of(key: &[Value]) -> String {
    let text = |v: &Value| match encode(v) {
        Json::String(s) => s,
        other => other.to_string(),
    };
    match key {
        [one] => text(one),
        many => Json::Array(many.iter().map(encode).collect()).to_string(),
    }
}

/// A document's field back as a value of a column of canonical type `t` (verify reads
/// documents through this and compares canonical forms).
pub fn decode(t: &Canonical, j: &Json) -> Value {
    match (t, j) {
        (_, Json::Null) => Value::Null,
        (Canonical::Bool, Json::Bool(b)) => Value::Int(i64::from(*b)),
        (Canonical::Int { .. } | Canonical::Bool, Json::Number(n)) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::UInt(u),
            _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        (Canonical::Float, Json::Number(n)) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        (Canonical::Float, Json::String(s)) => Value::Float(match s.as_str() {
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            other => other.parse().unwrap_or(f64::NAN),
        }),
        (Canonical::Decimal(_), Json::String(s)) => Value::Decimal(s.clone()),
        (Canonical::Decimal(_), Json::Number(n)) => Value::Decimal(n.to_string()),
        (Canonical::Bytes, Json::String(s)) => {
            base64::engine::general_purpose::STANDARD.decode(s).map_or_else(|_| Value::Text(s.clone()), Value::Bytes)
        }
        (Canonical::Timestamp, Json::String(s)) => {
            timestamp_of(s).map_or_else(|| Value::Text(s.clone()), Value::Timestamp)
        }
        (Canonical::Json, other) => Value::Json(other.to_string()),
        (_, Json::String(s)) => Value::Text(s.clone()),
        (_, other) => Value::Text(other.to_string()),
    }
}

/// µs since the epoch of `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`.
fn timestamp_of(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, mi, sec) = (t.next()??, t.next()??, t.next()??);
    let micros: i64 = format!("{frac:0<6}").get(..6)?.parse().ok()?;
    let days = days_from_civil(y, m, day);
    Some(((days * 86_400 + h * 3_600 + mi * 60 + sec) * 1_000_000) + micros)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ids_are_the_keys_canonical_text() {
        assert_eq!(id_of(&[Value::Int(42)]), "42");
        assert_eq!(id_of(&[Value::Text("a b".into())]), "a b");
        assert_eq!(id_of(&[Value::Int(1), Value::Text("x".into())]), "[1,\"x\"]");
    }

    #[test]
    fn values_round_trip_through_documents() {
        let ts = Value::Timestamp(1_700_000_000_123_456);
        assert_eq!(decode(&Canonical::Timestamp, &encode(&ts)), ts);
        let d = Value::Decimal("-12.3400".into());
        assert_eq!(decode(&Canonical::Decimal(None), &encode(&d)), d);
        let b = Value::Bytes(vec![0, 255]);
        assert_eq!(decode(&Canonical::Bytes, &encode(&b)), b);
        assert_eq!(encode(&Value::Json("{\"a\":[1]}".into())), json!({"a": [1]}));
    }
}
