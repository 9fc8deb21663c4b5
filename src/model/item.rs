//! Items of stores that are not tables — a Redis value, a Kafka message, a document —
//! carried in the same `Change`/`Txn` envelope as rows: an item is a row of the fixed
//! [`item_schema`] (key, value, headers, TTL, type tag), so the engine, batching,
//! checkpoints and verification treat both alike and stay unaware of the difference.

use serde::{Deserialize, Serialize};

use super::{Column, Row, TableName, TableSchema, Value};

/// One item, opaque to the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Its key in the collection (Redis key, Kafka message key, document id).
    pub key: Vec<u8>,
    /// Its value; `None` for a tombstone (a Kafka null value).
    pub value: Option<Vec<u8>>,
    /// Headers in order (Kafka headers; empty elsewhere).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Time to live in milliseconds, where the store expires items.
    pub ttl_ms: Option<i64>,
    /// The store's type tag (`string`, `hash`, `zset`, `message`, `document`).
    pub kind: String,
}

/// Column order of [`item_schema`].
const COLUMNS: [(&str, &str, bool); 5] = [
    ("key", "bytes", false),
    ("value", "bytes", true),
    ("headers", "json", false),
    ("ttl_ms", "int", true),
    ("kind", "text", false),
];

/// The schema every item collection shares; `name` is the collection (a key pattern's
/// prefix, a topic, an index).
pub fn item_schema(name: TableName) -> TableSchema {
    TableSchema {
        name,
        columns: COLUMNS
            .iter()
            .map(|(n, t, nullable)| Column { name: (*n).into(), decl_type: (*t).into(), nullable: *nullable })
            .collect(),
        primary_key: vec![0],
        unique_keys: Vec::new(),
        foreign_keys: Vec::new(),
        create_sql: None,
    }
}

/// A row that is not an item of [`item_schema`].
#[derive(Debug, thiserror::Error)]
#[error("not an item row: {0}")]
pub struct ItemRowError(String);

impl Item {
    /// The item as a row of [`item_schema`].
    pub fn to_row(&self) -> Row {
        vec![
            Value::Bytes(self.key.clone()),
            self.value.clone().map_or(Value::Null, Value::Bytes),
            Value::Json(self.headers_json()),
            self.ttl_ms.map_or(Value::Null, Value::Int),
            Value::Text(self.kind.clone()),
        ]
    }

    /// The item as a row of [`item_schema`], its key and value moved rather than copied
    /// (a snapshot carries millions).
    pub fn into_row(self) -> Row {
        let headers = self.headers_json();
        vec![
            Value::Bytes(self.key),
            self.value.map_or(Value::Null, Value::Bytes),
            Value::Json(headers),
            self.ttl_ms.map_or(Value::Null, Value::Int),
            Value::Text(self.kind),
        ]
    }

    /// The headers column: names and hex values.
    fn headers_json(&self) -> String {
        if self.headers.is_empty() {
            return "[]".into();
        }
        let headers: Vec<(&str, String)> =
            self.headers.iter().map(|(n, v)| (n.as_str(), v.iter().map(|b| format!("{b:02x}")).collect())).collect();
        serde_json::to_string(&headers).unwrap_or_else(|_| "[]".into())
    }

    /// The item a row of [`item_schema`] holds.
    pub fn from_row(row: &Row) -> Result<Item, ItemRowError> {
        let [key, value, headers, ttl, kind] = row.as_slice() else {
            return Err(ItemRowError(format!("{} columns, expected 5", row.len())));
        };
        let Value::Bytes(key) = key else { return Err(ItemRowError(format!("key {key}"))) };
        let value = match value {
            Value::Null => None,
            Value::Bytes(b) => Some(b.clone()),
            other => return Err(ItemRowError(format!("value {other}"))),
        };
        let Value::Json(headers) = headers else { return Err(ItemRowError(format!("headers {headers}"))) };
        let pairs: Vec<(String, String)> = if headers == "[]" {
            Vec::new()
        } else {
            serde_json::from_str(headers).map_err(|e| ItemRowError(format!("headers {headers}: {e}")))?
        };
        let headers = pairs
            .into_iter()
            .map(|(n, hex)| {
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                    .collect::<Option<Vec<u8>>>()
                    .ok_or_else(|| ItemRowError(format!("header {n}: not hex")))?;
                Ok((n, bytes))
            })
            .collect::<Result<_, ItemRowError>>()?;
        let ttl_ms = match ttl {
            Value::Null => None,
            Value::Int(t) => Some(*t),
            other => return Err(ItemRowError(format!("ttl {other}"))),
        };
        let Value::Text(kind) = kind else { return Err(ItemRowError(format!("kind {kind}"))) };
        Ok(Item { key: key.clone(), value, headers, ttl_ms, kind: kind.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip_through_rows() {
        let item = Item {
            key: b"user:1".to_vec(),
            value: Some(vec![0, 255, 10]),
            headers: vec![("trace".into(), vec![1, 2]), ("empty".into(), Vec::new())],
            ttl_ms: Some(5_000),
            kind: "string".into(),
        };
        assert_eq!(Item::from_row(&item.to_row()).ok(), Some(item));
        let tombstone =
            Item { key: b"k".to_vec(), value: None, headers: Vec::new(), ttl_ms: None, kind: "message".into() };
        assert_eq!(Item::from_row(&tombstone.to_row()).ok(), Some(tombstone));
        assert!(Item::from_row(&vec![Value::Int(1)]).is_err());
        let schema = item_schema(TableName::bare("users"));
        assert_eq!(schema.key_of(&item_row()), vec![Value::Bytes(b"k".to_vec())]);
    }

    fn item_row() -> Row {
        Item { key: b"k".to_vec(), value: None, headers: Vec::new(), ttl_ms: None, kind: "string".into() }.to_row()
    }
}
